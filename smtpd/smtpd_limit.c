/* smtpd_limit.c - per-client limits, counted by the anvil service.
 *
 * Counts live in anvil so that they hold across all smtpd processes; this
 * file asks and decides. Nothing blocks: the session waits (reads no
 * command) until anvil answers, and the command that asked is then run
 * again and consumes the stored verdict. anvil being down never stops
 * mail (smtpd_anvil answers "unavailable", which exceeds nothing).
 * Clients in smtpd_client_event_limit_exceptions (default $mynetworks) and
 * limits set to 0 cost no anvil round trip at all. */
#include "smtpd/smtpd.h"

#include <stdlib.h>

#include "smtpd/smtpd_anvil.h"
#include "common/mail/conf.h"
#include "common/util/log.h"
#include "common/mail/server.h"

static const struct {
    enum anvil_event anvil_ev;
    const char *param, *param2; /* the limits; 0 in both = nothing to ask */
} evmap[SMTPD_EV_N] = {
    [SMTPD_EV_MSG] = { ANVIL_EV_MSG, "smtpd_client_message_rate_limit", NULL },
    [SMTPD_EV_RCPT] = { ANVIL_EV_RCPT, "smtpd_client_recipient_rate_limit", NULL },
    [SMTPD_EV_AUTH] = { ANVIL_EV_AUTH, "smtpd_client_auth_rate_limit",
                        "smtpd_client_auth_failure_limit" },
};

/* Postfix's warning texts, by limit. */
static const char *const limit_what[] = {
    [SMTPD_ANVIL_LIMIT_NONE] = "",
    [SMTPD_ANVIL_LIMIT_CONN_COUNT] = "Connection concurrency limit exceeded",
    [SMTPD_ANVIL_LIMIT_CONN_RATE] = "Connection rate limit exceeded",
    [SMTPD_ANVIL_LIMIT_MSG_RATE] = "Message delivery request rate limit exceeded",
    [SMTPD_ANVIL_LIMIT_RCPT_RATE] = "Recipient address rate limit exceeded",
    [SMTPD_ANVIL_LIMIT_AUTH_RATE] = "AUTH command rate limit exceeded",
    [SMTPD_ANVIL_LIMIT_AUTH_FAIL] = "AUTH failure limit exceeded",
};

static const char *service(const struct smtpd_session *s)
{
    const char *svc = s->d->srv->service;
    return svc && *svc ? svc : "smtp";
}

void smtpd_limit_init(struct smtpd *d)
{
    buf_t path = BUF_INIT;
    server_spool_path(d->srv, ANVIL_SOCK, &path);
    d->anvil = smtpd_anvil_new(d->srv->base, buf_str(&path));
    buf_destroy(&path);
}

static void warn_limit(struct smtpd_session *s, enum smtpd_anvil_limit l, long value)
{
    log_warn("%s: %ld from %s for service %s", limit_what[l], value, smtpd_client(s), service(s));
}

static void on_connect(const struct anvil_counts *c, void *arg)
{
    struct smtpd_session *s = arg;
    enum smtpd_anvil_limit l = smtpd_anvil_limit_exceeded(ANVIL_EV_CONN, c);
    if (l == SMTPD_ANVIL_LIMIT_NONE) {
        smtpd_session_start(s);
        return;
    }
    warn_limit(s, l, l == SMTPD_ANVIL_LIMIT_CONN_COUNT ? c->count : c->rate[ANVIL_EV_CONN]);
    s->waiting = 0;
    smtpd_reply(s, "421 4.7.0 %s Error: too many connections from %s", smtpd_hostname(), s->addr);
    smtpd_close_after(s);
}

void smtpd_limit_connect(struct smtpd_session *s)
{
    /* Local users all come from "127.0.0.1": per-client limits are
     * about network clients. */
    s->anvil_exempt = s->local || smtpd_anvil_exempt(s->addr);
    if (s->anvil_exempt || !s->d->anvil ||
        (conf_int("smtpd_client_connection_count_limit") == 0 &&
         conf_int("smtpd_client_connection_rate_limit") == 0)) {
        smtpd_session_start(s);
        return;
    }
    s->anvil_counted = 1;
    smtpd_anvil_connect(s->d->anvil, service(s), s->addr, on_connect, s);
}

static void on_event(const struct anvil_counts *c, void *arg)
{
    struct smtpd_session *s = arg;
    int ev = s->limit_pending;
    enum anvil_event aev = evmap[ev].anvil_ev;
    enum smtpd_anvil_limit l = smtpd_anvil_limit_exceeded(aev, c);
    if (l != SMTPD_ANVIL_LIMIT_NONE)
        warn_limit(s, l,
                   l == SMTPD_ANVIL_LIMIT_AUTH_FAIL ? c->rate[ANVIL_EV_AUTH_FAIL] : c->rate[aev]);
    s->limit_verdict[ev] = (int)l;
    s->limit_answered[ev] = 1;
    smtpd_wait_end(s);
}

static void limit_reply(struct smtpd_session *s, enum smtpd_anvil_limit l)
{
    switch (l) {
    case SMTPD_ANVIL_LIMIT_MSG_RATE:
        smtpd_reply(s, "450 4.7.1 Error: too much mail from %s", s->addr);
        break;
    case SMTPD_ANVIL_LIMIT_RCPT_RATE:
        smtpd_reply(s, "452 4.5.3 Error: too many recipients from %s", s->addr);
        break;
    case SMTPD_ANVIL_LIMIT_AUTH_FAIL:
        smtpd_reply(s, "503 5.7.0 Error: too many AUTH failures from %s", s->addr);
        break;
    default:
        smtpd_reply(s, "503 5.7.0 Error: too many AUTH commands from %s", s->addr);
        break;
    }
}

enum smtpd_outcome smtpd_limit_event(struct smtpd_session *s, int ev, const char *arg)
{
    if (s->limit_answered[ev]) { /* the answer to our question: consume it */
        enum smtpd_anvil_limit l = (enum smtpd_anvil_limit)s->limit_verdict[ev];
        s->limit_answered[ev] = 0;
        if (l == SMTPD_ANVIL_LIMIT_NONE)
            return SMTPD_PASS;
        limit_reply(s, l);
        return SMTPD_REFUSED;
    }
    if (s->anvil_exempt || !s->d->anvil ||
        (conf_int(evmap[ev].param) == 0 && (!evmap[ev].param2 || conf_int(evmap[ev].param2) == 0)))
        return SMTPD_PASS;
    s->limit_pending = ev;
    smtpd_anvil_event(s->d->anvil, evmap[ev].anvil_ev, service(s), s->addr, on_event, s);
    return SMTPD_LATER;
}

void smtpd_limit_auth_failed(struct smtpd_session *s)
{
    if (s->anvil_exempt || !s->d->anvil || conf_int("smtpd_client_auth_failure_limit") == 0)
        return;
    smtpd_anvil_event(s->d->anvil, ANVIL_EV_AUTH_FAIL, service(s), s->addr, NULL, NULL);
}

void smtpd_limit_disconnect(struct smtpd_session *s)
{
    if (!s->d->anvil)
        return;
    smtpd_anvil_cancel(s->d->anvil, s);
    if (s->anvil_counted)
        smtpd_anvil_disconnect(s->d->anvil, service(s), s->addr);
    s->anvil_counted = 0;
}
