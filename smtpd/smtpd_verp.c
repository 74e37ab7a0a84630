/* smtpd_verp.c - VERP decided at MAIL FROM (see common/mail/verp.h).
 *
 * A client in smtpd_authorized_verp_clients may ask with Postfix's XVERP:
 * the return address is then the sender itself. Otherwise
 * sender_verp_maps may name a return address for the SASL login
 * ("sasl:LOGIN"), the sender address, the sender's domain ("@domain"), or
 * the source pool sender_dependent_source_pool_maps gives the sender
 * ("pool:NAME"; a pool named by the injector's header is known only after
 * DATA, too late for MAIL FROM), tried in that order (the first key found
 * in any table wins). The
 * decision goes into the queue file as verp= (the delimiters) and
 * verp_return= (the address from the map); the envelope sender stays the
 * original one, so DSNs still go to it. The null sender never gets VERP. */
#include "smtpd/smtpd.h"

#include <string.h>

#include "common/glue/dict.h"
#include "common/mail/addr.h"
#include "smtpd/smtpd_cidr.h"
#include "common/mail/conf.h"
#include "common/mail/verp.h"
#include "common/util/log.h"
#include "smtpd/smtpd_cmdparse.h"

#define VERP_KEYS 4

void smtpd_verp_init(void)
{
    buf_t err = BUF_INIT;
    if (smtpd_cidr_list_validate("smtpd_authorized_verp_clients", &err) < 0)
        log_fatal("%s", buf_str(&err));
    buf_destroy(&err);
    if (!verp_delims_valid(conf_str("verp_delimiters"), conf_str("verp_delimiter_filter")))
        log_fatal("verp_delimiters = %s: need two characters from verp_delimiter_filter (%s)",
                  conf_str("verp_delimiters"), conf_str("verp_delimiter_filter"));
}

int smtpd_verp_allowed(const struct smtpd_session *s)
{
    return s->addr && smtpd_cidr_list_match("smtpd_authorized_verp_clients", s->addr);
}

const struct smtp_xverp *smtpd_verp_xverp(const struct smtpd_session *s)
{
    static struct smtp_xverp xv;
    if (!smtpd_verp_allowed(s))
        return NULL;
    xv.defaults = conf_str("verp_delimiters");
    xv.filter = conf_str("verp_delimiter_filter");
    return &xv;
}

/* The pool sender_dependent_source_pool_maps names for the first of keys
 * found (the same keys, in the same order, as qmgr looks it up). */
static enum smtpd_lookup sender_pool(const buf_t *keys, size_t nkeys, buf_t *pool)
{
    char **maps = conf_list("sender_dependent_source_pool_maps");
    enum smtpd_lookup rc = SMTPD_LOOKUP_NONE;
    for (size_t k = 0; k < nkeys && rc == SMTPD_LOOKUP_NONE; k++)
        for (size_t i = 0; maps[i] && rc == SMTPD_LOOKUP_NONE; i++) {
            struct dict *t = smtpd_table(maps[i]);
            rc = t ? smtpd_lookup(t, buf_str(&keys[k]), pool) : SMTPD_LOOKUP_ERROR;
        }
    strv_free(maps);
    return rc;
}

/* The keys of this transaction, most specific first; returns how many. */
static size_t verp_keys(const struct smtpd_session *s, buf_t keys[VERP_KEYS])
{
    size_t n = 0;
    buf_t domain = BUF_INIT;
    if (s->sasl_username && *s->sasl_username)
        buf_printf(&keys[n++], "sasl:%s", s->sasl_username);
    buf_puts(&keys[n++], s->env.sender);
    addr_domain(s->env.sender, &domain);
    if (domain.len)
        buf_printf(&keys[n++], "@%s", buf_str(&domain));
    buf_destroy(&domain);
    buf_t pool = BUF_INIT;
    if (sender_pool(keys, n, &pool) == SMTPD_LOOKUP_FOUND && pool.len)
        buf_printf(&keys[n++], "pool:%s", buf_str(&pool));
    buf_destroy(&pool);
    return n;
}

static enum smtpd_lookup verp_lookup(const struct smtpd_session *s, buf_t *value, buf_t *key)
{
    char **maps = conf_list("sender_verp_maps");
    buf_t keys[VERP_KEYS] = { BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT };
    size_t nkeys = maps[0] ? verp_keys(s, keys) : 0;
    enum smtpd_lookup rc = SMTPD_LOOKUP_NONE;
    for (size_t k = 0; k < nkeys && rc == SMTPD_LOOKUP_NONE; k++) {
        for (size_t i = 0; maps[i] && rc == SMTPD_LOOKUP_NONE; i++) {
            struct dict *t = smtpd_table(maps[i]);
            rc = t ? smtpd_lookup(t, buf_str(&keys[k]), value) : SMTPD_LOOKUP_ERROR;
            if (rc == SMTPD_LOOKUP_ERROR)
                log_warn("sender_verp_maps: %s: table lookup problem", maps[i]);
        }
        if (rc == SMTPD_LOOKUP_FOUND)
            buf_set(key, buf_str(&keys[k]));
    }
    for (size_t k = 0; k < VERP_KEYS; k++)
        buf_destroy(&keys[k]);
    strv_free(maps);
    return rc;
}

/* A return address from the table: "local@domain", one word, ASCII (it
 * goes into every MAIL FROM, SMTPUTF8 or not). */
static int return_valid(const char *ret)
{
    buf_t local = BUF_INIT, domain = BUF_INIT;
    int ok = strlen(ret) <= 254 && strcspn(ret, " \t<>") == strlen(ret) && addr_is_ascii(ret) &&
             addr_split(ret, &local, &domain) == 0 && local.len > 0 &&
             addr_domain_valid(buf_str(&domain));
    buf_destroy(&local);
    buf_destroy(&domain);
    return ok;
}

int smtpd_verp_mail(struct smtpd_session *s, const char *xverp)
{
    if (xverp && *xverp) {
        qenv_set(&s->env.verp, xverp);
        return 0;
    }
    if (!s->env.sender || !*s->env.sender)
        return 0;
    buf_t ret = BUF_INIT, key = BUF_INIT;
    enum smtpd_lookup rc = verp_lookup(s, &ret, &key);
    int bad = rc == SMTPD_LOOKUP_FOUND && !return_valid(buf_str(&ret));
    if (bad)
        log_warn("sender_verp_maps: %s: bad return address \"%s\" (want local@domain)",
                 buf_str(&key), buf_str(&ret));
    if (bad || rc == SMTPD_LOOKUP_ERROR) {
        smtpd_reply(s, "451 4.3.5 Server configuration error");
    } else if (rc == SMTPD_LOOKUP_FOUND) {
        qenv_set(&s->env.verp, conf_str("verp_delimiters"));
        qenv_set(&s->env.verp_return, buf_str(&ret));
        log_debug("%s: sender=<%s> VERP return address <%s> (key %s)", smtpd_client(s),
                  s->env.sender, buf_str(&ret), buf_str(&key));
    }
    buf_destroy(&ret);
    buf_destroy(&key);
    return bad || rc == SMTPD_LOOKUP_ERROR ? -1 : 0;
}
