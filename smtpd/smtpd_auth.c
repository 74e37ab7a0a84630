/* smtpd_auth.c - SMTP AUTH (RFC 4954) over the asynchronous SASL layer.
 *
 * Cyrus steps run in common/sasl's worker pool; the session is `waiting`
 * while one runs, so pipelined input stays buffered and nothing blocks the
 * loop. A failed attempt is answered only after smtpd_sasl_failure_delay
 * (a timer, not a sleep) and counted by anvil. With smtpd_tls_auth_only
 * (default) AUTH is neither offered nor accepted before STARTTLS. A new
 * SASL session is made after TLS (RFC 4954 forgets the state there). */
#include "smtpd/smtpd.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/mail/metric.h"
#include "common/util/log.h"
#include "common/glue/sasl.h"
#include "common/mail/server.h"

#define SASL_THREADS 2

void smtpd_auth_pre_drop(struct smtpd *d)
{
    if (!conf_bool("smtpd_sasl_auth_enable"))
        return;
    buf_t err = BUF_INIT;
    if (psasl_init(&err) < 0)
        log_fatal("SASL set-up failed: %s", buf_str(&err));
    buf_destroy(&err);
}

void smtpd_auth_post_drop(struct smtpd *d)
{
    if (conf_bool("smtpd_sasl_auth_enable"))
        d->sasl_pool = psasl_pool_new(d->srv->base, SASL_THREADS);
}

void smtpd_auth_reset(struct smtpd_session *s)
{
    if (s->sasl)
        psasl_session_free(s->sasl);
    s->sasl = NULL;
    free(s->sasl_method);
    free(s->sasl_username);
    s->sasl_method = s->sasl_username = NULL;
    if (s->state == SS_AUTH)
        s->state = SS_CMD;
    if (!s->d->sasl_pool)
        return;
    unsigned ssf = s->tls && s->ssl ? (unsigned)SSL_get_cipher_bits((SSL *)s->ssl, NULL) : 0;
    s->sasl = psasl_session_new(s->d->sasl_pool, NULL, NULL, ssf);
}

void smtpd_auth_release(struct smtpd_session *s)
{
    if (s->sasl)
        psasl_session_free(s->sasl);
    s->sasl = NULL;
    if (s->auth_delay_ev)
        event_free(s->auth_delay_ev);
    s->auth_delay_ev = NULL;
    buf_destroy(&s->auth_reply);
    free(s->sasl_method);
    free(s->sasl_username);
    s->sasl_method = s->sasl_username = NULL;
}

static int auth_allowed_now(const struct smtpd_session *s)
{
    return s->sasl && (s->tls || !conf_bool("smtpd_tls_auth_only"));
}

const char *smtpd_auth_mechs(struct smtpd_session *s)
{
    return auth_allowed_now(s) ? psasl_mechanisms(s->sasl) : NULL;
}

static void delayed_reply(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_session *s = arg;
    if (!s->closing)
        smtpd_reply(s, "%s", buf_str(&s->auth_reply));
    buf_reset(&s->auth_reply);
    smtpd_wait_end(s);
}

/* Answer a failure after smtpd_sasl_failure_delay, as Postfix does. */
static void fail_later(struct smtpd_session *s, const char *reply)
{
    long long secs = conf_int("smtpd_sasl_failure_delay");
    if (secs <= 0) {
        smtpd_reply(s, "%s", reply);
        smtpd_wait_end(s);
        return;
    }
    buf_set(&s->auth_reply, reply);
    if (!s->auth_delay_ev)
        s->auth_delay_ev = evtimer_new(bufferevent_get_base(s->bev), delayed_reply, s);
    struct timeval tv = { (time_t)secs, 0 };
    evtimer_add(s->auth_delay_ev, &tv);
}

static void auth_done(struct psasl_session *ss, const struct psasl_result *r, void *arg)
{
    struct smtpd_session *s = arg;
    buf_t b = BUF_INIT;
    s->state = r->status == PSASL_CONTINUE ? SS_AUTH : SS_CMD;
    switch (r->status) {
    case PSASL_OK:
        s->sasl_username = xstrdup(r->username ? r->username : "");
        s->sasl_method = xstrdup(r->mechanism ? r->mechanism : "");
        smtpd_reply(s, "235 2.7.0 Authentication successful");
        s->cmd_ok[smtpd_cmd_lookup("AUTH")]++; /* answered after dispatch counted */
        break;
    case PSASL_CONTINUE:
        smtpd_reply_line(s, "334 %s", r->challenge ? r->challenge : "");
        break;
    case PSASL_FAIL:
        log_warn("%s: SASL %s authentication failed: %s", smtpd_client(s),
                 r->mechanism ? r->mechanism : "", r->detail ? r->detail : "");
        smtpd_limit_auth_failed(s);
        metric_add(METRIC_AUTH_FAIL, 1, NULL, NULL);
        buf_printf(&b, "535 5.7.8 Error: authentication failed: %s",
                   r->reason ? r->reason : "authentication failure");
        fail_later(s, buf_str(&b));
        buf_destroy(&b);
        return;
    case PSASL_TEMPFAIL:
        log_warn("%s: SASL %s authentication problem: %s", smtpd_client(s),
                 r->mechanism ? r->mechanism : "", r->detail ? r->detail : "");
        smtpd_reply(s, "454 4.7.0 Temporary authentication failure: %s",
                    r->reason ? r->reason : "");
        break;
    case PSASL_CANCELLED:
        smtpd_reply(s, "501 5.7.0 Authentication aborted");
        break;
    case PSASL_BADPROT:
        smtpd_reply(s, "501 5.5.2 Cannot decode response");
        break;
    case PSASL_NOMECH:
        smtpd_reply(s, "504 5.5.4 Unsupported authentication mechanism");
        break;
    }
    smtpd_wait_end(s);
}

/* The reason AUTH cannot be used now, or NULL. */
static const char *auth_refusal(struct smtpd_session *s)
{
    if (!s->d->sasl_pool)
        return "503 5.5.1 Error: authentication not enabled";
    if (smtpd_tls_required(s))
        return "530 5.7.0 Must issue a STARTTLS command first";
    if (!auth_allowed_now(s))
        return "503 5.5.1 Error: authentication not enabled";
    if (!s->helo)
        return "503 5.5.1 Error: send HELO/EHLO first";
    if (s->sasl_username)
        return "503 5.5.1 Error: already authenticated";
    if (s->have_mail)
        return "503 5.5.1 Error: MAIL transaction in progress";
    return NULL;
}

void smtpd_auth_cmd(struct smtpd_session *s, char *arg)
{
    const char *no = auth_refusal(s);
    if (no) {
        smtpd_reply(s, "%s", no);
        return;
    }
    char *copy = xstrdup(arg);
    char *mech = str_trim(arg), *initial = mech;
    while (*initial && *initial != ' ')
        initial++;
    if (*initial)
        *initial++ = '\0';
    initial = str_trim(initial);
    enum smtpd_outcome rc = *mech ? smtpd_limit_event(s, SMTPD_EV_AUTH, copy) : SMTPD_REFUSED;
    if (!*mech)
        smtpd_reply(s, "501 5.5.4 Syntax: AUTH mechanism");
    else if (rc == SMTPD_LATER)
        smtpd_redo_later(s, copy);
    else if (rc == SMTPD_PASS) {
        smtpd_wait_begin(s);
        psasl_start(s->sasl, mech, *initial ? initial : NULL, auth_done, s);
    }
    free(copy);
}

void smtpd_auth_line(struct smtpd_session *s, char *line)
{
    smtpd_wait_begin(s);
    psasl_step(s->sasl, line, auth_done, s);
}
