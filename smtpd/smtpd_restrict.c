/* smtpd_restrict.c - Postfix restriction lists: parsed once, evaluated per
 * command.
 *
 * smtpd_client/helo/sender/relay/recipient_restrictions are each a list of
 * restriction names (some followed by a table). A list is evaluated in
 * order; the first PERMIT ends that list (the next list still runs), the
 * first REJECT ends the whole check. With smtpd_delay_reject=yes (the
 * default) all five lists run at RCPT time, like Postfix, so a client
 * learns nothing before it names a recipient and permit_sasl_authenticated
 * works in every list. An unknown name is a configuration error at start.
 *
 * reject_unknown_*_domain needs DNS: the lookup runs asynchronously and the
 * command is evaluated again from the start once the answer is in the
 * session's small cache (smtpd_dns_status). */
#include "smtpd/smtpd_restrict.h"

#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/glue/dns.h"
#include "common/util/log.h"

struct relem {
    const struct smtpd_rule *rule; /* NULL: warn_if_reject */
    char *table;
};

struct rlist {
    const char *param;
    enum smtpd_object obj;
    struct relem *e;
    size_t n;
};

enum { L_CLIENT, L_HELO, L_SENDER, L_RELAY, L_RCPT, L_COUNT };

static struct rlist lists[L_COUNT] = {
    [L_CLIENT] = { "smtpd_client_restrictions", OBJ_CLIENT, NULL, 0 },
    [L_HELO] = { "smtpd_helo_restrictions", OBJ_HELO, NULL, 0 },
    [L_SENDER] = { "smtpd_sender_restrictions", OBJ_SENDER, NULL, 0 },
    [L_RELAY] = { "smtpd_relay_restrictions", OBJ_RCPT, NULL, 0 },
    [L_RCPT] = { "smtpd_recipient_restrictions", OBJ_RCPT, NULL, 0 },
};

static const struct smtpd_rule *rule_find(const char *name)
{
    for (const struct smtpd_rule *r = smtpd_rules; r->name; r++)
        if (str_ieq(r->name, name))
            return r;
    return NULL;
}

static void list_parse(struct rlist *l)
{
    char **v = conf_list(l->param);
    size_t n = 0;
    while (v[n])
        n++;
    l->e = xcalloc(n + 1, sizeof(*l->e));
    l->n = 0;
    for (size_t i = 0; v[i]; i++) {
        struct relem *e = &l->e[l->n++];
        if (str_ieq(v[i], "warn_if_reject"))
            continue;
        if (!(e->rule = rule_find(v[i])))
            log_fatal("parameter %s: unknown restriction \"%s\"", l->param, v[i]);
        if (e->rule->takes_table) {
            if (!v[i + 1] || strchr(v[i + 1], ':') == NULL)
                log_fatal("parameter %s: restriction \"%s\" needs a table argument "
                          "(e.g. %s hash:/etc/postino/access)",
                          l->param, v[i], v[i]);
            e->table = xstrdup(v[++i]);
        }
    }
    strv_free(v);
}

void smtpd_restrict_init(void)
{
    for (int i = 0; i < L_COUNT; i++)
        list_parse(&lists[i]);
}

static const char *stage_of(const struct smtpd_rctx *c)
{
    return c->rcpt                               ? "RCPT"
           : c->s->have_mail || c->s->env.sender ? "MAIL"
           : c->s->helo                          ? "HELO"
                                                 : "CONNECT";
}

static void log_warning(struct smtpd_rctx *c)
{
    log_info("NOQUEUE: reject_warning: %s from %s: %s; from=<%s> to=<%s> proto=%s helo=<%s>",
             stage_of(c), smtpd_client(c->s), buf_str(c->reply),
             c->s->env.sender ? c->s->env.sender : "", c->rcpt ? c->rcpt : "",
             c->s->esmtp ? "ESMTP" : "SMTP", c->s->helo ? c->s->helo : "");
    buf_reset(c->reply);
}

/* One list: PERMIT/DUNNO both mean "go on" to the caller. */
static enum smtpd_verdict list_eval(struct rlist *l, struct smtpd_rctx *c)
{
    c->list = l->param;
    c->obj = l->obj;
    int warn = 0;
    for (size_t i = 0; i < l->n; i++) {
        const struct relem *e = &l->e[i];
        if (!e->rule) {
            warn = 1;
            continue;
        }
        enum smtpd_verdict v = e->rule->fn(c, e->table);
        if (v == V_REJECT && warn) {
            log_warning(c);
            v = V_DUNNO;
        }
        warn = 0;
        if (v != V_DUNNO)
            return v;
    }
    return V_DUNNO;
}

/* Lists first..last in order; a rejection is logged. */
static enum smtpd_outcome eval_range(struct smtpd_session *s, int first, int last, const char *rcpt,
                                     int source_routed, buf_t *reply)
{
    struct smtpd_rctx c = { s, NULL, OBJ_CLIENT, rcpt, source_routed, reply };
    for (int i = first; i <= last; i++) {
        /* A local submission (smtpd_local.c) is no network client and may
         * relay: only the envelope lists judge it. */
        if (s->local && i != L_SENDER && i != L_RCPT)
            continue;
        enum smtpd_verdict v = list_eval(&lists[i], &c);
        if (v == V_PENDING)
            return SMTPD_LATER;
        if (v == V_REJECT) {
            smtpd_log_reject(s, stage_of(&c), buf_str(reply), rcpt);
            return SMTPD_REFUSED;
        }
    }
    return SMTPD_PASS;
}

enum smtpd_outcome smtpd_restrict_connect(struct smtpd_session *s, buf_t *reply)
{
    if (conf_bool("smtpd_delay_reject"))
        return SMTPD_PASS;
    /* No DNS restriction applies to the client; LATER cannot happen. */
    return eval_range(s, L_CLIENT, L_CLIENT, NULL, 0, reply) == SMTPD_REFUSED ? SMTPD_REFUSED
                                                                              : SMTPD_PASS;
}

enum smtpd_outcome smtpd_restrict_helo(struct smtpd_session *s, buf_t *reply)
{
    if (conf_bool("smtpd_delay_reject"))
        return SMTPD_PASS;
    return eval_range(s, L_HELO, L_HELO, NULL, 0, reply);
}

enum smtpd_outcome smtpd_restrict_mail(struct smtpd_session *s, buf_t *reply)
{
    if (conf_bool("smtpd_delay_reject"))
        return SMTPD_PASS;
    return eval_range(s, L_SENDER, L_SENDER, NULL, 0, reply);
}

enum smtpd_outcome smtpd_restrict_rcpt(struct smtpd_session *s, const char *rcpt, int source_routed,
                                       buf_t *reply)
{
    int first = conf_bool("smtpd_delay_reject") ? L_CLIENT : L_RELAY;
    return eval_range(s, first, L_RCPT, rcpt, source_routed, reply);
}

/* ---- DNS for reject_unknown_*_domain ---- */

struct smtpd_dns_req {
    struct smtpd_session *s; /* NULL once the session is gone */
    char *domain;
};

static void cache_put(struct smtpd_session *s, const char *domain, int status)
{
    int i = 0;
    while (i < SMTPD_DNS_CACHE && s->dnsc[i].domain)
        i++;
    if (i == SMTPD_DNS_CACHE) { /* full: drop the oldest */
        free(s->dnsc[0].domain);
        memmove(&s->dnsc[0], &s->dnsc[1], sizeof(s->dnsc[0]) * (SMTPD_DNS_CACHE - 1));
        i = SMTPD_DNS_CACHE - 1;
    }
    s->dnsc[i].domain = xstrdup(domain);
    s->dnsc[i].status = status;
}

static void dns_done(struct dns_result *res, void *arg)
{
    struct smtpd_dns_req *q = arg;
    struct smtpd_session *s = q->s;
    if (s) {
        s->dns_req = NULL;
        if (res->status == DNS_TEMPFAIL && log_verbose())
            log_debug("%s: %s", q->domain, buf_str(&res->errtext));
        cache_put(s, q->domain, res->status);
    }
    dns_result_free(res);
    free(q->domain);
    free(q);
    if (s)
        smtpd_wait_end(s);
}

int smtpd_dns_status(struct smtpd_session *s, const char *domain)
{
    for (int i = 0; i < SMTPD_DNS_CACHE; i++)
        if (s->dnsc[i].domain && str_ieq(s->dnsc[i].domain, domain))
            return s->dnsc[i].status;
    if (!s->d->dns)
        return DNS_TEMPFAIL;
    if (s->dns_req)
        log_panic("%s: second DNS lookup while one is running", smtpd_client(s));
    struct smtpd_dns_req *q = xcalloc(1, sizeof(*q));
    q->s = s;
    q->domain = xstrdup(domain);
    s->dns_req = q;
    dns_resolve_mx(s->d->dns, domain, dns_done, q);
    return -1;
}

void smtpd_restrict_release(struct smtpd_session *s)
{
    if (s->dns_req)
        s->dns_req->s = NULL; /* the callback only frees the request */
    s->dns_req = NULL;
    for (int i = 0; i < SMTPD_DNS_CACHE; i++) {
        free(s->dnsc[i].domain);
        s->dnsc[i].domain = NULL;
    }
}
