/* smtpd_param.c - ESMTP parameters of MAIL FROM and RCPT TO.
 *
 * MAIL: SIZE (RFC 1870), BODY (RFC 6152), RET and ENVID (RFC 3461), AUTH
 * (RFC 4954: accepted; the queue file records the SASL login itself).
 * RCPT: NOTIFY and ORCPT (RFC 3461); decoded ENVID/ORCPT values with
 * control characters are refused so they can never become header lines. Each keyword is handled by an entry in a table; an
 * unknown keyword is "555 5.5.4 Unsupported option". */
#include "smtpd/smtpd.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common/addr.h"
#include "common/alloc.h"
#include "common/conf.h"

#define ENVID_MAX 100  /* RFC 3461 4.4 */
#define ORCPT_MAX 500

struct rcpt_opts {
    char **orcpt;
    int *notify;
};

struct param_handler {
    const char *name;
    /* 0 ok, -1 after a reply */
    int (*fn)(struct smtpd_session *s, const char *value, void *arg);
};

static int mail_size(struct smtpd_session *s, const char *v, void *arg)
{
    char *end;
    if (!isdigit((unsigned char)*v)) {
        smtpd_reply(s, "501 5.5.4 Bad message size syntax");
        return -1;
    }
    unsigned long long n = strtoull(v, &end, 10);
    if (*end) {
        smtpd_reply(s, "501 5.5.4 Bad message size syntax");
        return -1;
    }
    long long limit = conf_int("message_size_limit");
    if (limit > 0 && n > (unsigned long long)limit) {
        smtpd_reply(s, "552 5.3.4 Message size exceeds fixed limit");
        return -1;
    }
    return 0;
}

static int mail_body(struct smtpd_session *s, const char *v, void *arg)
{
    if (str_ieq(v, "7BIT") || str_ieq(v, "8BITMIME"))
        return 0;
    smtpd_reply(s, "501 5.5.4 Error: Unsupported BODY parameter");
    return -1;
}

static int mail_ret(struct smtpd_session *s, const char *v, void *arg)
{
    if (s->env.ret != RET_NONE) {
        smtpd_reply(s, "501 5.5.4 Error: Duplicate RET parameter");
        return -1;
    }
    if (str_ieq(v, "FULL")) {
        s->env.ret = RET_FULL;
    } else if (str_ieq(v, "HDRS")) {
        s->env.ret = RET_HDRS;
    } else {
        smtpd_reply(s, "501 5.5.4 Error: Bad RET parameter syntax");
        return -1;
    }
    return 0;
}

/* Decoded ENVID must be printable US-ASCII (RFC 3461 4.4). */
static int mail_envid(struct smtpd_session *s, const char *v, void *arg)
{
    buf_t dec = BUF_INIT;
    int ok = !s->env.envid && *v && strlen(v) <= ENVID_MAX && xtext_decode(v, &dec) == 0;
    for (size_t i = 0; ok && i < dec.len; i++)
        if (dec.data[i] < 0x20 || dec.data[i] > 0x7e)
            ok = 0;
    if (ok)
        qenv_set(&s->env.envid, buf_str(&dec));
    buf_free(&dec);
    if (!ok)
        smtpd_reply(s, "501 5.5.4 Error: Bad ENVID parameter syntax");
    return ok ? 0 : -1;
}

static int mail_auth(struct smtpd_session *s, const char *v, void *arg)
{
    return 0;
}

static const struct param_handler mail_params[] = {
    { "SIZE", mail_size },
    { "BODY", mail_body },
    { "RET", mail_ret },
    { "ENVID", mail_envid },
    { "AUTH", mail_auth },
    { NULL, NULL },
};

static int rcpt_notify(struct smtpd_session *s, const char *v, void *arg)
{
    struct rcpt_opts *o = arg;
    int bits = 0;
    if (*o->notify || notify_parse(v, &bits) < 0 || bits == 0 ||
        ((bits & NOTIFY_NEVER) && bits != NOTIFY_NEVER)) {
        smtpd_reply(s, "501 5.5.4 Error: Bad NOTIFY parameter syntax");
        return -1;
    }
    *o->notify = bits;
    return 0;
}

/* "addr-type;xtext": an atom, a semicolon, valid xtext. */
static int rcpt_orcpt(struct smtpd_session *s, const char *v, void *arg)
{
    struct rcpt_opts *o = arg;
    const char *semi = strchr(v, ';');
    int ok = !*o->orcpt && semi && semi > v && strlen(v) <= ORCPT_MAX && semi[1];
    for (const char *p = v; ok && p < semi; p++)
        if (!isalnum((unsigned char)*p) && *p != '-')
            ok = 0;
    buf_t dec = BUF_INIT;
    if (ok && xtext_decode(semi + 1, &dec) < 0)
        ok = 0;
    /* A decoded CR/LF could become a line of its own in a DSN. */
    for (size_t i = 0; ok && i < dec.len; i++)
        if ((unsigned char)dec.data[i] < 0x20 || (unsigned char)dec.data[i] == 0x7f)
            ok = 0;
    buf_free(&dec);
    if (!ok) {
        smtpd_reply(s, "501 5.5.4 Error: Bad ORCPT parameter syntax");
        return -1;
    }
    *o->orcpt = xstrdup(v);
    return 0;
}

static const struct param_handler rcpt_params[] = {
    { "NOTIFY", rcpt_notify },
    { "ORCPT", rcpt_orcpt },
    { NULL, NULL },
};

static int run_params(struct smtpd_session *s, const struct param_handler *tab,
                      const char *params, void *arg)
{
    buf_t name = BUF_INIT, value = BUF_INIT;
    const char *p = params;
    int rc = 0, r;
    while (rc == 0 && (r = addr_next_param(&p, &name, &value)) != 0) {
        if (r < 0) {
            smtpd_reply(s, "501 5.5.4 Error: Bad parameter syntax");
            rc = -1;
            break;
        }
        const struct param_handler *h = tab;
        while (h->name && !str_ieq(h->name, buf_str(&name)))
            h++;
        if (!h->name) {
            for (size_t i = 0; i < name.len; i++) /* echo printable text only */
                if (name.data[i] <= ' ' || name.data[i] >= 0x7f)
                    name.data[i] = '?';
            smtpd_reply(s, "555 5.5.4 Unsupported option: %s", buf_str(&name));
            rc = -1;
        } else {
            rc = h->fn(s, buf_str(&value), arg);
        }
    }
    buf_free(&name);
    buf_free(&value);
    return rc;
}

int smtpd_mail_params(struct smtpd_session *s, const char *params)
{
    return run_params(s, mail_params, params, NULL);
}

int smtpd_rcpt_params(struct smtpd_session *s, const char *params, char **orcpt, int *notify)
{
    struct rcpt_opts o = { orcpt, notify };
    return run_params(s, rcpt_params, params, &o);
}
