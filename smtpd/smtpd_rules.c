/* smtpd_rules.c - the restrictions of the smtpd_*_restrictions lists.
 *
 * Each restriction is one table entry: name, whether it takes a lookup
 * table as the next list element, and a function returning DUNNO, PERMIT,
 * REJECT (reply composed) or PENDING (a DNS lookup was started; the whole
 * command is evaluated again once the answer is cached). Reply codes and
 * texts are Postfix's so that clients and log tools see what they know. */
#include "smtpd/smtpd_restrict.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common/mail/addr.h"
#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/glue/dict.h"
#include "common/glue/dns.h"
#include "common/util/log.h"

static const char *const obj_label[] = {
    [OBJ_CLIENT] = "Client host rejected",
    [OBJ_HELO] = "Helo command rejected",
    [OBJ_SENDER] = "Sender address rejected",
    [OBJ_RCPT] = "Recipient address rejected",
};

static const char *obj_text(struct smtpd_rctx *c, enum smtpd_object obj)
{
    switch (obj) {
    case OBJ_CLIENT:
        return smtpd_client(c->s);
    case OBJ_HELO:
        return c->s->helo ? c->s->helo : "";
    case OBJ_SENDER:
        return c->s->env.sender ? c->s->env.sender : "";
    case OBJ_RCPT:
        return c->rcpt ? c->rcpt : "";
    }
    return "";
}

void smtpd_reject_obj(struct smtpd_rctx *c, enum smtpd_object obj, const char *code,
                      const char *dsn, const char *text)
{
    buf_reset(c->reply);
    buf_printf(c->reply, "%s %s <%s>: %s: %s", code, dsn, obj_text(c, obj), obj_label[obj], text);
}

static enum smtpd_verdict config_error(struct smtpd_rctx *c)
{
    buf_reset(c->reply);
    buf_printf(c->reply, "451 4.3.5 Server configuration error");
    return V_REJECT;
}

/* ---- generic ---- */

static enum smtpd_verdict r_permit(struct smtpd_rctx *c, const char *t)
{
    return V_PERMIT;
}

static enum smtpd_verdict r_reject(struct smtpd_rctx *c, const char *t)
{
    smtpd_reject_obj(c, c->obj, "554", "5.7.1", "Access denied");
    return V_REJECT;
}

static enum smtpd_verdict r_defer(struct smtpd_rctx *c, const char *t)
{
    smtpd_reject_obj(c, c->obj, "450", "4.7.1", "Try again later");
    return V_REJECT;
}

static enum smtpd_verdict r_mynetworks(struct smtpd_rctx *c, const char *t)
{
    return smtpd_check_mynetworks(c->s->addr) ? V_PERMIT : V_DUNNO;
}

static enum smtpd_verdict r_sasl(struct smtpd_rctx *c, const char *t)
{
    return c->s->sasl_username ? V_PERMIT : V_DUNNO;
}

/* ---- relay control ---- */

static enum smtpd_verdict unauth_dest(struct smtpd_rctx *c, const char *code, const char *dsn)
{
    if (!c->rcpt)
        return V_DUNNO;
    buf_t domain = BUF_INIT;
    addr_domain(c->rcpt, &domain);
    int tricky = c->source_routed || smtpd_check_tricky(c->rcpt);
    int ours = !tricky && smtpd_check_local_domain(buf_str(&domain));
    buf_destroy(&domain);
    if (ours)
        return V_DUNNO;
    buf_reset(c->reply);
    /* 550 for address tricks: a permanent "no" whatever the code setting */
    buf_printf(c->reply, "%s %s <%s>: Relay access denied", tricky ? "550" : code,
               tricky ? "5.7.1" : dsn, c->rcpt);
    return V_REJECT;
}

static enum smtpd_verdict r_unauth_dest(struct smtpd_rctx *c, const char *t)
{
    return unauth_dest(c, "554", "5.7.1");
}

static enum smtpd_verdict r_defer_unauth_dest(struct smtpd_rctx *c, const char *t)
{
    return unauth_dest(c, "450", "4.7.1");
}

/* ---- access tables ---- */

/* "REJECT text", "DEFER", "550 5.7.0 text", "OK", "DUNNO", or the name
 * of a restriction without a table. */
static enum smtpd_verdict access_action(struct smtpd_rctx *c, enum smtpd_object obj,
                                        const char *table, char *v)
{
    char *text = v;
    while (*text && !isspace((unsigned char)*text))
        text++;
    if (*text)
        *text++ = '\0';
    text = str_trim(text);
    if (str_ieq(v, "OK") || str_ieq(v, "PERMIT"))
        return V_PERMIT;
    if (str_ieq(v, "DUNNO"))
        return V_DUNNO;
    if (str_ieq(v, "REJECT") || str_ieq(v, "DEFER")) {
        int rej = str_ieq(v, "REJECT");
        smtpd_reject_obj(c, obj, rej ? "554" : "450", rej ? "5.7.1" : "4.7.1",
                         *text ? text : "Access denied");
        return V_REJECT;
    }
    if (strlen(v) == 3 && (v[0] == '4' || v[0] == '5') && isdigit((unsigned char)v[1]) &&
        isdigit((unsigned char)v[2])) {
        char dsn[16] = "";
        const char *rest = text;
        if (text[0] == v[0] && text[1] == '.' && isdigit((unsigned char)text[2])) {
            size_t n = strcspn(text, " ");
            if (n < sizeof(dsn)) {
                memcpy(dsn, text, n);
                dsn[n] = '\0';
                rest = str_trim(text + n);
            }
        }
        if (!dsn[0])
            str_lcpy(dsn, v[0] == '4' ? "4.7.1" : "5.7.1", sizeof(dsn));
        smtpd_reject_obj(c, obj, v, dsn, *rest ? rest : "Access denied");
        return V_REJECT;
    }
    for (const struct smtpd_rule *r = smtpd_rules; r->name; r++)
        if (!r->takes_table && str_ieq(r->name, v))
            return r->fn(c, NULL);
    log_warn(
        "%s: unknown action \"%s\" in access table (use OK, REJECT, DEFER, DUNNO or 4xx/5xx text)",
        table, v);
    return config_error(c);
}

/* Look up obj in table; key forms by object kind. */
static enum smtpd_verdict check_access(struct smtpd_rctx *c, enum smtpd_object obj,
                                       const char *table)
{
    struct dict *t = smtpd_table(table);
    if (!t)
        return config_error(c);
    buf_t v = BUF_INIT;
    enum smtpd_lookup rc = SMTPD_LOOKUP_NONE;
    switch (obj) {
    case OBJ_CLIENT:
        rc = smtpd_access_client(t, c->s->name, c->s->addr, &v);
        break;
    case OBJ_HELO:
        rc = c->s->helo ? smtpd_access_addr(t, c->s->helo, &v) : SMTPD_LOOKUP_NONE;
        break;
    case OBJ_SENDER:
        rc = c->s->env.sender ? smtpd_access_addr(t, c->s->env.sender, &v) : SMTPD_LOOKUP_NONE;
        break;
    case OBJ_RCPT:
        rc = c->rcpt ? smtpd_access_addr(t, c->rcpt, &v) : SMTPD_LOOKUP_NONE;
        break;
    }
    enum smtpd_verdict verdict = V_DUNNO;
    if (rc == SMTPD_LOOKUP_ERROR) {
        log_warn("%s: table lookup problem", table);
        verdict = config_error(c);
    } else if (rc == SMTPD_LOOKUP_FOUND) {
        verdict = access_action(c, obj, table, v.data);
    }
    buf_destroy(&v);
    return verdict;
}

static enum smtpd_verdict r_client_access(struct smtpd_rctx *c, const char *t)
{
    return check_access(c, OBJ_CLIENT, t);
}

static enum smtpd_verdict r_helo_access(struct smtpd_rctx *c, const char *t)
{
    return check_access(c, OBJ_HELO, t);
}

static enum smtpd_verdict r_sender_access(struct smtpd_rctx *c, const char *t)
{
    return check_access(c, OBJ_SENDER, t);
}

static enum smtpd_verdict r_rcpt_access(struct smtpd_rctx *c, const char *t)
{
    return check_access(c, OBJ_RCPT, t);
}

/* ---- address and host name syntax ---- */

static int addr_fqdn(const char *addr)
{
    buf_t domain = BUF_INIT;
    addr_domain(addr, &domain);
    int ok = addr_domain_fqdn(buf_str(&domain)) ||
             (domain.data && domain.data[0] == '[' && addr_domain_valid(domain.data));
    buf_destroy(&domain);
    return ok;
}

static enum smtpd_verdict r_nonfqdn_sender(struct smtpd_rctx *c, const char *t)
{
    const char *snd = c->s->env.sender;
    if (!snd || !*snd || addr_fqdn(snd))
        return V_DUNNO;
    smtpd_reject_obj(c, OBJ_SENDER, "504", "5.5.2", "need fully-qualified address");
    return V_REJECT;
}

static enum smtpd_verdict r_nonfqdn_rcpt(struct smtpd_rctx *c, const char *t)
{
    if (!c->rcpt || addr_fqdn(c->rcpt))
        return V_DUNNO;
    smtpd_reject_obj(c, OBJ_RCPT, "504", "5.5.2", "need fully-qualified address");
    return V_REJECT;
}

static enum smtpd_verdict r_nonfqdn_helo(struct smtpd_rctx *c, const char *t)
{
    const char *h = c->s->helo;
    if (!h || addr_domain_fqdn(h) || (h[0] == '[' && addr_domain_valid(h)))
        return V_DUNNO;
    smtpd_reject_obj(c, OBJ_HELO, "504", "5.5.2", "need fully-qualified hostname");
    return V_REJECT;
}

static enum smtpd_verdict r_invalid_helo(struct smtpd_rctx *c, const char *t)
{
    const char *h = c->s->helo;
    if (!h || addr_domain_valid(h))
        return V_DUNNO;
    smtpd_reject_obj(c, OBJ_HELO, "501", "5.5.2", "Invalid name");
    return V_REJECT;
}

/* ---- DNS ---- */

struct unknown_codes {
    const char *nx_dsn, *temp_dsn, *nullmx_code, *nullmx_dsn;
};

static enum smtpd_verdict unknown_domain(struct smtpd_rctx *c, enum smtpd_object obj,
                                         const char *addr, const struct unknown_codes *k)
{
    if (!addr || !*addr)
        return V_DUNNO;
    buf_t domain = BUF_INIT, text = BUF_INIT;
    addr_domain(addr, &domain);
    const char *d = buf_str(&domain);
    enum smtpd_verdict v = V_DUNNO;
    /* A U-label domain would need IDNA (A-label) conversion before a DNS
     * lookup, which postino does not do: not knowing is no reason to
     * refuse, so it is not checked. */
    if (!*d || d[0] == '[' || !addr_is_ascii(d) || smtpd_check_local_domain(d))
        goto out;
    int st = smtpd_dns_status(c->s, d);
    if (st < 0) {
        v = V_PENDING;
    } else if (st == DNS_NOTFOUND) {
        smtpd_reject_obj(c, obj, "550", k->nx_dsn, "Domain not found");
        v = V_REJECT;
    } else if (st == DNS_TEMPFAIL) {
        smtpd_reject_obj(c, obj, "450", k->temp_dsn, "Domain not found");
        v = V_REJECT;
    } else if (st == DNS_NULLMX) {
        buf_printf(&text, "Domain %s does not accept mail (nullMX)", d);
        smtpd_reject_obj(c, obj, k->nullmx_code, k->nullmx_dsn, buf_str(&text));
        v = V_REJECT;
    }
out:
    buf_destroy(&domain);
    buf_destroy(&text);
    return v;
}

static enum smtpd_verdict r_unknown_sender(struct smtpd_rctx *c, const char *t)
{
    static const struct unknown_codes k = { "5.1.8", "4.1.8", "550", "5.7.27" };
    return unknown_domain(c, OBJ_SENDER, c->s->env.sender, &k);
}

static enum smtpd_verdict r_unknown_rcpt(struct smtpd_rctx *c, const char *t)
{
    static const struct unknown_codes k = { "5.1.2", "4.1.2", "556", "5.1.10" };
    return unknown_domain(c, OBJ_RCPT, c->rcpt, &k);
}

/* ---- SASL login vs. sender ---- */

/* Owners of sender in smtpd_sender_login_maps ("full address", then
 * "@domain"). */
static enum smtpd_lookup sender_owners(const char *sender, buf_t *owners)
{
    char **maps = conf_list("smtpd_sender_login_maps");
    buf_t domain = BUF_INIT, key = BUF_INIT;
    addr_domain(sender, &domain);
    buf_printf(&key, "@%s", buf_str(&domain));
    enum smtpd_lookup rc = SMTPD_LOOKUP_NONE;
    for (size_t i = 0; maps[i] && rc == SMTPD_LOOKUP_NONE; i++) {
        struct dict *t = smtpd_table(maps[i]);
        if (!t) {
            rc = SMTPD_LOOKUP_ERROR;
            break;
        }
        rc = smtpd_lookup(t, sender, owners);
        if (rc == SMTPD_LOOKUP_NONE && domain.len)
            rc = smtpd_lookup(t, buf_str(&key), owners);
    }
    strv_free(maps);
    buf_destroy(&domain);
    buf_destroy(&key);
    return rc;
}

static int owner_listed(const char *owners, const char *login)
{
    char **v = str_split(owners, ", \t", NULL);
    int found = 0;
    for (size_t i = 0; v[i] && !found; i++)
        found = str_ieq(v[i], login);
    strv_free(v);
    return found;
}

static enum smtpd_verdict r_login_mismatch(struct smtpd_rctx *c, const char *t)
{
    const char *snd = c->s->env.sender, *login = c->s->sasl_username;
    if (!snd || !*snd)
        return V_DUNNO;
    buf_t owners = BUF_INIT, text = BUF_INIT;
    enum smtpd_lookup rc = sender_owners(snd, &owners);
    enum smtpd_verdict v = V_DUNNO;
    if (rc == SMTPD_LOOKUP_ERROR) {
        v = config_error(c);
    } else if (login && (rc == SMTPD_LOOKUP_NONE || !owner_listed(buf_str(&owners), login))) {
        buf_printf(&text, "not owned by user %s", login);
        smtpd_reject_obj(c, OBJ_SENDER, "553", "5.7.1", buf_str(&text));
        v = V_REJECT;
    } else if (!login && rc == SMTPD_LOOKUP_FOUND) {
        smtpd_reject_obj(c, OBJ_SENDER, "553", "5.7.1", "not logged in");
        v = V_REJECT;
    }
    buf_destroy(&owners);
    buf_destroy(&text);
    return v;
}

const struct smtpd_rule smtpd_rules[] = {
    { "permit", 0, r_permit },
    { "reject", 0, r_reject },
    { "defer", 0, r_defer },
    { "permit_mynetworks", 0, r_mynetworks },
    { "permit_sasl_authenticated", 0, r_sasl },
    { "reject_unauth_destination", 0, r_unauth_dest },
    { "defer_unauth_destination", 0, r_defer_unauth_dest },
    { "check_client_access", 1, r_client_access },
    { "check_helo_access", 1, r_helo_access },
    { "check_sender_access", 1, r_sender_access },
    { "check_recipient_access", 1, r_rcpt_access },
    { "reject_non_fqdn_sender", 0, r_nonfqdn_sender },
    { "reject_non_fqdn_recipient", 0, r_nonfqdn_rcpt },
    { "reject_non_fqdn_helo_hostname", 0, r_nonfqdn_helo },
    { "reject_non_fqdn_hostname", 0, r_nonfqdn_helo },
    { "reject_invalid_helo_hostname", 0, r_invalid_helo },
    { "reject_unknown_sender_domain", 0, r_unknown_sender },
    { "reject_unknown_recipient_domain", 0, r_unknown_rcpt },
    { "reject_sender_login_mismatch", 0, r_login_mismatch },
    { NULL, 0, NULL },
};
