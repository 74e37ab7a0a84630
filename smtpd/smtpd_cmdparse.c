/* smtpd_cmdparse.c - pure parsing of SMTP server commands for smtpd (and for the
 * unit tests and the fuzzer, which need it without a session).
 *
 * MAIL: SIZE (RFC 1870), BODY (RFC 6152), RET and ENVID (RFC 3461), AUTH
 * (RFC 4954: accepted; the queue file records the SASL login itself),
 * SMTPUTF8 (RFC 6531: without it a UTF-8 address gets 553 5.6.7), XVERP
 * (Postfix's, for the clients smtpd allows).
 * RCPT: NOTIFY and ORCPT (RFC 3461). Decoded ENVID/ORCPT values with
 * control characters are refused so they can never become header lines of
 * a DSN. Each keyword is an entry in a table; an unknown one is "555 5.5.4
 * Unsupported option". The reply texts are Postfix's, so clients and log
 * tooling see what they know. */
#include "smtpd/smtpd_cmdparse.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/mail/addr.h"
#include "common/util/alloc.h"
#include "common/mail/qfile.h"
#include "common/mail/verp.h"

#define ENVID_MAX 100 /* RFC 3461 4.4 */
#define ORCPT_MAX 500

static const char *const verb_names[SMTP_VERB_COUNT] = {
    "HELO", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP",
    "VRFY", "EXPN", "ETRN",     "TURN", "ATRN", "SEND", "SOML", "SAML", "HELP", "QUIT",
};

void smtpd_cmd_reply_destroy(struct smtpd_cmd_reply *r)
{
    buf_destroy(&r->text);
    r->code = 0;
    r->enh[0] = '\0';
}

void smtpd_cmd_reply_format(const struct smtpd_cmd_reply *r, buf_t *out)
{
    buf_reset(out);
    buf_printf(out, "%d %s %s", r->code, r->enh, buf_str(&r->text));
}

/* Fill the error reply; returns -1 for the caller to pass on. */
static int fail(struct smtpd_cmd_reply *r, int code, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct smtpd_cmd_reply *r, int code, const char *enh, const char *fmt, ...)
{
    va_list ap;
    r->code = code;
    str_lcpy(r->enh, enh, sizeof(r->enh));
    buf_reset(&r->text);
    va_start(ap, fmt);
    buf_vprintf(&r->text, fmt, ap);
    va_end(ap);
    return -1;
}

int smtpd_cmd_verb(const char *verb)
{
    for (int i = 0; i < SMTP_VERB_COUNT; i++)
        if (str_ieq(verb, verb_names[i]))
            return i;
    return -1;
}

const char *smtpd_cmd_verb_name(int verb)
{
    return verb >= 0 && verb < SMTP_VERB_COUNT ? verb_names[verb] : NULL;
}

/* NUL, bare CR or other control bytes in a command are refused, so that
 * nothing a client says can reach a header line or a log line as a line
 * break (HELO goes into Received:). */
static int has_control(const char *line, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
            return 1;
    return 0;
}

int smtpd_cmd_split(char *line, size_t len, size_t limit, char **verb, char **arg,
                    struct smtpd_cmd_reply *err)
{
    if (len > limit || has_control(line, len)) {
        fail(err, 500, "5.5.2", len > limit ? "Error: line too long" : "Error: bad syntax");
        return -2;
    }
    char *a = line;
    while (*a && *a != ' ')
        a++;
    if (*a)
        *a++ = '\0';
    while (*a == ' ')
        a++;
    *verb = line;
    *arg = a;
    return smtpd_cmd_verb(line);
}

/* ---- ESMTP parameters ---- */

struct param_handler {
    const char *name;
    /* 0 ok, -1 with err set */
    int (*fn)(const char *value, void *ctx, struct smtpd_cmd_reply *err);
};

/* What the MAIL parameter handlers work on. */
struct mail_ctx {
    struct smtp_mail_args *m;
    long long size_limit;
    int utf8_enable;
    const struct smtp_xverp *xverp; /* NULL: XVERP not allowed */
};

static int mail_size(const char *v, void *ctx, struct smtpd_cmd_reply *err)
{
    struct mail_ctx *c = ctx;
    char *end;
    if (!isdigit((unsigned char)*v))
        return fail(err, 501, "5.5.4", "Bad message size syntax");
    unsigned long long n = strtoull(v, &end, 10);
    if (*end)
        return fail(err, 501, "5.5.4", "Bad message size syntax");
    if (c->size_limit > 0 && n > (unsigned long long)c->size_limit)
        return fail(err, 552, "5.3.4", "Message size exceeds fixed limit");
    c->m->has_size = 1;
    c->m->size = n;
    return 0;
}

static int mail_body(const char *v, void *ctx, struct smtpd_cmd_reply *err)
{
    struct smtp_mail_args *m = ((struct mail_ctx *)ctx)->m;
    if (str_ieq(v, "7BIT"))
        m->body = QBODY_7BIT;
    else if (str_ieq(v, "8BITMIME"))
        m->body = QBODY_8BITMIME;
    else /* BINARYMIME too: we offer no CHUNKING-only body type */
        return fail(err, 501, "5.5.4", "Error: Unsupported BODY parameter");
    return 0;
}

static int mail_ret(const char *v, void *ctx, struct smtpd_cmd_reply *err)
{
    struct smtp_mail_args *m = ((struct mail_ctx *)ctx)->m;
    if (m->ret != RET_NONE)
        return fail(err, 501, "5.5.4", "Error: Duplicate RET parameter");
    if (str_ieq(v, "FULL"))
        m->ret = RET_FULL;
    else if (str_ieq(v, "HDRS"))
        m->ret = RET_HDRS;
    else
        return fail(err, 501, "5.5.4", "Error: Bad RET parameter syntax");
    return 0;
}

/* Decoded ENVID must be printable US-ASCII (RFC 3461 4.4). */
static int mail_envid(const char *v, void *ctx, struct smtpd_cmd_reply *err)
{
    struct smtp_mail_args *m = ((struct mail_ctx *)ctx)->m;
    buf_t dec = BUF_INIT;
    int ok = !m->envid && *v && strlen(v) <= ENVID_MAX && xtext_decode(v, &dec) == 0;
    for (size_t i = 0; ok && i < dec.len; i++)
        if ((unsigned char)dec.data[i] < 0x20 || (unsigned char)dec.data[i] > 0x7e)
            ok = 0;
    if (ok)
        m->envid = xstrdup(buf_str(&dec));
    buf_destroy(&dec);
    return ok ? 0 : fail(err, 501, "5.5.4", "Error: Bad ENVID parameter syntax");
}

static int mail_auth(const char *v, void *ctx, struct smtpd_cmd_reply *err)
{
    struct smtp_mail_args *m = ((struct mail_ctx *)ctx)->m;
    m->has_auth = 1;
    return 0;
}

/* RFC 6531 3.4: a keyword without a value, once. */
static int mail_smtputf8(const char *v, void *ctx, struct smtpd_cmd_reply *err)
{
    struct mail_ctx *c = ctx;
    if (!c->utf8_enable)
        return fail(err, 555, "5.5.4", "Unsupported option: SMTPUTF8");
    if (*v || c->m->smtputf8)
        return fail(err, 501, "5.5.4", "Error: Bad SMTPUTF8 parameter syntax");
    c->m->smtputf8 = 1;
    return 0;
}

/* Postfix's XVERP: "XVERP" (v "", the default delimiters, when given
 * from the table) or "XVERP=xy" (xverp_word); the last one given wins. */
static int xverp_set(struct mail_ctx *c, const char *v, int explicit, struct smtpd_cmd_reply *err)
{
    if (!c->xverp)
        return fail(err, 555, "5.5.4", "Unsupported option: XVERP");
    const char *d = explicit ? v : c->xverp->defaults;
    if (!verp_delims_valid(d, c->xverp->filter))
        return fail(err, 501, "5.5.4", "Error: XVERP needs two characters from %s",
                    c->xverp->filter);
    str_lcpy(c->m->verp, d, sizeof(c->m->verp));
    return 0;
}

static int mail_xverp(const char *v, void *ctx, struct smtpd_cmd_reply *err)
{
    return xverp_set(ctx, v, *v != '\0', err);
}

/* "XVERP=xy" as a whole word: its value holds '=' in Postfix's own
 * delimiters ("+="), which RFC 5321's esmtp-value does not allow, so the
 * generic parameter syntax would refuse it. 1 when the next word was one
 * (*rc its result, *pp past it), else 0. */
static int xverp_word(const char **pp, struct mail_ctx *c, struct smtpd_cmd_reply *err, int *rc)
{
    const char *p = *pp;
    while (*p == ' ')
        p++;
    if (!str_nieq(p, "XVERP=", 6))
        return 0;
    size_t n = strcspn(p + 6, " ");
    char *v = xstrndup(p + 6, n);
    *rc = xverp_set(c, v, 1, err);
    free(v);
    *pp = p + 6 + n;
    return 1;
}

static const struct param_handler mail_params[] = {
    { "SIZE", mail_size },   { "BODY", mail_body }, { "RET", mail_ret },
    { "ENVID", mail_envid }, { "AUTH", mail_auth }, { "SMTPUTF8", mail_smtputf8 },
    { "XVERP", mail_xverp }, { NULL, NULL },
};

static int rcpt_notify(const char *v, void *ctx, struct smtpd_cmd_reply *err)
{
    struct smtp_rcpt_args *r = ctx;
    int bits = 0;
    if (r->notify || notify_parse(v, &bits) < 0 || bits == 0 ||
        ((bits & NOTIFY_NEVER) && bits != NOTIFY_NEVER))
        return fail(err, 501, "5.5.4", "Error: Bad NOTIFY parameter syntax");
    r->notify = bits;
    return 0;
}

/* "addr-type;xtext": an atom, a semicolon, valid xtext. */
static int rcpt_orcpt(const char *v, void *ctx, struct smtpd_cmd_reply *err)
{
    struct smtp_rcpt_args *r = ctx;
    const char *semi = strchr(v, ';');
    int ok = !r->orcpt && semi && semi > v && strlen(v) <= ORCPT_MAX && semi[1];
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
    buf_destroy(&dec);
    if (!ok)
        return fail(err, 501, "5.5.4", "Error: Bad ORCPT parameter syntax");
    r->orcpt = xstrdup(v);
    return 0;
}

static const struct param_handler rcpt_params[] = {
    { "NOTIFY", rcpt_notify },
    { "ORCPT", rcpt_orcpt },
    { NULL, NULL },
};

static int unknown_param(buf_t *name, struct smtpd_cmd_reply *err)
{
    for (size_t i = 0; i < name->len; i++) /* echo printable text only */
        if (name->data[i] <= ' ' || name->data[i] >= 0x7f)
            name->data[i] = '?';
    return fail(err, 555, "5.5.4", "Unsupported option: %s", buf_str(name));
}

/* Left to right; the first bad parameter decides the reply. MAIL's
 * context (mail non-NULL) also takes "XVERP=xy" words. */
static int run_params(const struct param_handler *tab, const char *params, void *ctx,
                      struct mail_ctx *mail, struct smtpd_cmd_reply *err)
{
    buf_t name = BUF_INIT, value = BUF_INIT;
    const char *p = params;
    int rc = 0, r;
    while (rc == 0) {
        if (mail && xverp_word(&p, mail, err, &rc))
            continue;
        if ((r = addr_next_param(&p, &name, &value)) == 0)
            break;
        if (r < 0) {
            rc = fail(err, 501, "5.5.4", "Error: Bad parameter syntax");
            break;
        }
        const struct param_handler *h = tab;
        while (h->name && !str_ieq(h->name, buf_str(&name)))
            h++;
        rc = h->name ? h->fn(buf_str(&value), ctx, err) : unknown_param(&name, err);
    }
    buf_destroy(&name);
    buf_destroy(&value);
    return rc;
}

/* ---- MAIL FROM ---- */

void smtpd_mail_args_destroy(struct smtp_mail_args *m)
{
    buf_destroy(&m->sender);
    free(m->envid);
    struct smtp_mail_args z = SMTP_MAIL_ARGS_INIT;
    *m = z;
}

/* A UTF-8 address is only for SMTPUTF8 transactions (RFC 6531 3.4);
 * Postfix's reply text. */
static int utf8_allowed(const char *addr, int utf8, struct smtpd_cmd_reply *err)
{
    if (utf8 == SMTP_UTF8_DECLARED || addr_is_ascii(addr))
        return 0;
    if (utf8 == SMTP_UTF8_UNDECLARED)
        return fail(err, 553, "5.6.7", "Must declare SMTPUTF8 to send unicode address");
    return fail(err, 553, "5.6.7", "Unicode addresses are not supported here");
}

int smtpd_cmd_mail(const char *arg, long long size_limit, int utf8_enable, struct smtp_mail_args *m,
                   struct smtpd_cmd_reply *err)
{
    return smtpd_cmd_mail_xverp(arg, size_limit, utf8_enable, NULL, m, err);
}

int smtpd_cmd_mail_xverp(const char *arg, long long size_limit, int utf8_enable,
                         const struct smtp_xverp *xverp, struct smtp_mail_args *m,
                         struct smtpd_cmd_reply *err)
{
    smtpd_mail_args_destroy(m);
    if (!str_nieq(arg, "FROM:", 5))
        return fail(err, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
    const char *params = "", *why = "Bad sender address syntax";
    if (addr_parse_path(arg + 5, 1, 0, &m->sender, &params, &why) < 0)
        return fail(err, 501, "5.1.7", "%s", why);
    struct mail_ctx c = { m, size_limit, utf8_enable, xverp };
    if (run_params(mail_params, params, &c, &c, err) < 0)
        return -1;
    if (m->verp[0] && m->sender.len == 0)
        return fail(err, 503, "5.5.4", "Error: XVERP requires non-null sender");
    int utf8 = !utf8_enable  ? SMTP_UTF8_OFF
               : m->smtputf8 ? SMTP_UTF8_DECLARED
                             : SMTP_UTF8_UNDECLARED;
    return utf8_allowed(buf_str(&m->sender), utf8, err);
}

/* ---- RCPT TO ---- */

void smtpd_rcpt_args_destroy(struct smtp_rcpt_args *r)
{
    buf_destroy(&r->addr);
    free(r->orcpt);
    struct smtp_rcpt_args z = SMTP_RCPT_ARGS_INIT;
    *r = z;
}

/* RFC 5321 source route "<@a,@b:u@d>": the raw argument starts with "<@". */
static int source_routed(const char *p)
{
    while (*p == ' ')
        p++;
    return p[0] == '<' && p[1] == '@';
}

int smtpd_cmd_rcpt_addr(const char *arg, const char *origin, int utf8, struct smtp_rcpt_args *r,
                        struct smtpd_cmd_reply *err)
{
    smtpd_rcpt_args_destroy(r);
    r->params = "";
    if (!str_nieq(arg, "TO:", 3))
        return fail(err, 501, "5.5.4", "Syntax: RCPT TO:<address>");
    const char *p = arg + 3, *why = "Bad recipient address syntax";
    if (addr_parse_path(p, 0, 0, &r->addr, &r->params, &why) < 0 || r->addr.len == 0)
        return fail(err, 501, "5.1.3", "%s", why);
    if (utf8_allowed(buf_str(&r->addr), utf8, err) < 0)
        return -1;
    r->source_routed = source_routed(p);
    buf_t local = BUF_INIT, domain = BUF_INIT;
    int has_domain = addr_split(buf_str(&r->addr), &local, &domain) == 0 && domain.len > 0;
    buf_destroy(&local);
    buf_destroy(&domain);
    if (has_domain)
        return 0;
    if (str_ieq(buf_str(&r->addr), "postmaster")) {
        buf_printf(&r->addr, "@%s", origin);
        return 0;
    }
    return fail(err, 501, "5.1.3", "Bad recipient address syntax");
}

int smtpd_cmd_rcpt_params(struct smtp_rcpt_args *r, struct smtpd_cmd_reply *err)
{
    return run_params(rcpt_params, r->params ? r->params : "", r, NULL, err);
}

int smtpd_cmd_rcpt(const char *arg, const char *origin, int utf8, struct smtp_rcpt_args *r,
                   struct smtpd_cmd_reply *err)
{
    if (smtpd_cmd_rcpt_addr(arg, origin, utf8, r, err) < 0)
        return -1;
    return smtpd_cmd_rcpt_params(r, err);
}
