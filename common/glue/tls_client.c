/* tls_client.c - the delivery side's TLS decisions: which security level
 * applies to a destination (smtp_tls_security_level, smtp_tls_policy_maps),
 * which names its certificate must carry, and whether a finished
 * handshake meets the level, with reasons an admin understands. */
#include "common/glue/tls.h"
#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/glue/dict.h"
#include "common/util/log.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* ---- policy tables, opened once per process ---- */

struct policy_table {
    char *spec;
    struct dict *d;
};
static struct policy_table *tables;
static size_t ntables, captables;

void tls_policy_reset(void)
{
    for (size_t i = 0; i < ntables; i++) {
        dict_close(tables[i].d);
        free(tables[i].spec);
    }
    free(tables);
    tables = NULL;
    ntables = captables = 0;
}

static struct dict *policy_table(const char *spec, buf_t *err)
{
    for (size_t i = 0; i < ntables; i++)
        if (strcmp(tables[i].spec, spec) == 0)
            return tables[i].d;
    buf_t why = BUF_INIT;
    struct dict *d = dict_open(spec, &why);
    if (d == NULL) {
        buf_reset(err);
        buf_printf(err, "smtp_tls_policy_maps: %s", buf_str(&why));
        buf_destroy(&why);
        return NULL;
    }
    buf_destroy(&why);
    tables = xgrow(tables, &captables, ntables + 1, sizeof(*tables));
    tables[ntables].spec = xstrdup(spec);
    tables[ntables].d = d;
    ntables++;
    return d;
}

/* Look key up in every table (DICT_ERROR with err). */
static enum dict_result policy_find(char **specs, const char *key, buf_t *value, buf_t *err)
{
    for (char **s = specs; *s; s++) {
        struct dict *d = policy_table(*s, err);
        if (d == NULL)
            return DICT_ERROR;
        enum dict_result found = dict_lookup(d, key, value);
        if (found == DICT_ERROR) {
            buf_reset(err);
            buf_printf(err, "smtp_tls_policy_maps: %s: lookup of \"%s\" failed", *s, key);
        }
        if (found != DICT_NOTFOUND)
            return found;
    }
    return DICT_NOTFOUND;
}

/* "LEVEL [match=a:b] [other=...]" -> policy. */
static int policy_parse(const char *key, const char *value, struct tls_policy *out, buf_t *err)
{
    char **tok = str_split(value, " \t", NULL);
    int rc = 0;
    if (tok[0] == NULL || tls_level_parse(tok[0], &out->level) < 0) {
        buf_reset(err);
        buf_printf(err,
                   "smtp_tls_policy_maps: destination \"%s\": unknown TLS security level \"%s\" "
                   "(use none, may, encrypt, verify or secure)",
                   key, tok[0] ? tok[0] : "");
        rc = -1;
    }
    for (char **t = tok + (tok[0] != NULL); rc == 0 && *t; t++) {
        if (str_nieq(*t, "match=", 6)) {
            strv_free(out->match);
            out->match = str_split(*t + 6, ":", NULL);
        } else {
            log_warn(
                "smtp_tls_policy_maps: destination \"%s\": ignoring unsupported attribute \"%s\"",
                key, *t);
        }
    }
    strv_free(tok);
    return rc;
}

int tls_client_policy(const char *nexthop, struct tls_policy *out, buf_t *err)
{
    memset(out, 0, sizeof(*out));
    const char *deflt = conf_str("smtp_tls_security_level");
    if (tls_level_parse(deflt, &out->level) < 0) {
        buf_reset(err);
        buf_printf(err,
                   "smtp_tls_security_level: unknown level \"%s\" "
                   "(use none, may, encrypt, verify or secure)",
                   deflt);
        return -1;
    }
    char **specs = conf_list("smtp_tls_policy_maps");
    buf_t val = BUF_INIT, key = BUF_INIT;
    enum dict_result found = policy_find(specs, nexthop, &val, err);
    /* A domain also matches ".parent" entries, like Postfix's tables. */
    for (const char *p = strchr(nexthop, '.'); found == DICT_NOTFOUND && nexthop[0] != '[' && p;
         p = strchr(p + 1, '.')) {
        buf_set(&key, p);
        found = policy_find(specs, key.data, &val, err);
    }
    int rc = found == DICT_ERROR ? -1 : 0;
    if (found == DICT_FOUND)
        rc = policy_parse(nexthop, val.data, out, err);
    strv_free(specs);
    buf_destroy(&val);
    buf_destroy(&key);
    if (rc < 0)
        tls_policy_destroy(out);
    return rc < 0 ? -1 : 0;
}

void tls_policy_destroy(struct tls_policy *p)
{
    strv_free(p->match);
    p->match = NULL;
}

/* ---- match names ---- */

/* "[host]:port" -> "host", "example.com:587" -> "example.com", no final dot. */
static char *nexthop_host(const char *nexthop)
{
    const char *s = nexthop ? nexthop : "";
    size_t n;
    if (s[0] == '[') {
        s++;
        const char *end = strchr(s, ']');
        n = end ? (size_t)(end - s) : strlen(s);
    } else {
        const char *colon = strchr(s, ':');
        n = colon ? (size_t)(colon - s) : strlen(s);
    }
    if (n > 0 && s[n - 1] == '.')
        n--;
    return xstrndup(s, n);
}

static void names_add(char ***v, size_t *n, size_t *cap, const char *prefix, const char *name)
{
    if (name == NULL || name[0] == 0)
        return;
    *v = xgrow(*v, cap, *n + 2, sizeof(**v));
    buf_t b = BUF_INIT;
    buf_printf(&b, "%s%s", prefix, name);
    (*v)[(*n)++] = buf_detach(&b);
    (*v)[*n] = NULL;
}

char **tls_match_names(const struct tls_policy *pol, const char *nexthop, const char *mxhost)
{
    if (pol->level < TLS_LEV_VERIFY)
        return NULL;
    char *host = nexthop_host(nexthop);
    char **v = NULL;
    size_t n = 0, cap = 0;
    v = xgrow(v, &cap, 1, sizeof(*v)); /* room for the terminator */
    v[0] = NULL;
    if (pol->match) {
        for (char **m = pol->match; *m; m++) {
            if (str_ieq(*m, "hostname"))
                names_add(&v, &n, &cap, "", mxhost ? mxhost : host);
            else if (str_ieq(*m, "nexthop"))
                names_add(&v, &n, &cap, "", host);
            else if (str_ieq(*m, "dot-nexthop"))
                names_add(&v, &n, &cap, ".", host);
            else
                names_add(&v, &n, &cap, "", *m);
        }
    } else if (pol->level == TLS_LEV_VERIFY) {
        names_add(&v, &n, &cap, "", mxhost && mxhost[0] ? mxhost : host);
    } else {
        names_add(&v, &n, &cap, "", host);
        names_add(&v, &n, &cap, ".", host);
    }
    free(host);
    return v;
}

/* ---- peer verification ---- */

/* Append the certificate's DNS names (or its CN when it has none). */
static void cert_names(X509 *cert, buf_t *out)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int found = 0;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && found < 8; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS)
            continue;
        const unsigned char *p = ASN1_STRING_get0_data(g->d.dNSName);
        buf_printf(out, "%s%.*s", found++ ? ", " : "", ASN1_STRING_length(g->d.dNSName),
                   (const char *)p);
    }
    GENERAL_NAMES_free(gens);
    if (found == 0) {
        char cn[256];
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn)) >
            0)
            buf_puts(out, cn);
        else
            buf_puts(out, "(none)");
    }
}

/* Postfix's words for the common chain failures. */
static void verify_reason(SSL *ssl, X509 *cert, long vr, buf_t *why)
{
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
    X509 *top =
        chain && sk_X509_num(chain) > 0 ? sk_X509_value(chain, sk_X509_num(chain) - 1) : cert;
    char issuer[256];
    switch (vr) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
        X509_NAME_oneline(X509_get_issuer_name(top), issuer, sizeof(issuer));
        buf_printf(why, "untrusted issuer %s", issuer);
        break;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        buf_puts(why, "self-signed certificate");
        break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        buf_puts(why, "certificate not yet valid");
        break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
        buf_puts(why, "certificate has expired");
        break;
    default:
        buf_printf(why, "num=%ld:%s", vr, X509_verify_cert_error_string(vr));
        break;
    }
}

static void join_names(char *const *names, buf_t *out)
{
    for (char *const *n = names; *n; n++)
        buf_printf(out, "%s%s", n == names ? "" : ", ", *n);
}

tls_trust_t tls_peer_trust(SSL *ssl, char *const *names, const char *peer, buf_t *why)
{
    buf_t tmp = BUF_INIT, *w = why ? why : &tmp;
    buf_reset(w);
    X509 *cert = SSL_get0_peer_certificate(ssl);
    tls_trust_t t;
    if (cert == NULL) {
        buf_printf(w, "no certificate presented by %s", peer);
        t = TLS_TRUST_ANONYMOUS;
    } else if (SSL_get_verify_result(ssl) != X509_V_OK) {
        buf_printf(w, "certificate verification failed for %s: ", peer);
        verify_reason(ssl, cert, SSL_get_verify_result(ssl), w);
        t = TLS_TRUST_UNTRUSTED;
    } else if (names == NULL) {
        t = TLS_TRUST_TRUSTED;
    } else {
        t = TLS_TRUST_TRUSTED;
        for (char *const *n = names; *n && t != TLS_TRUST_VERIFIED; n++)
            if (X509_check_host(cert, *n, 0, 0, NULL) == 1)
                t = TLS_TRUST_VERIFIED;
        if (t != TLS_TRUST_VERIFIED) {
            buf_printf(w, "server certificate name mismatch for %s: certificate names ", peer);
            cert_names(cert, w);
            buf_puts(w, ", expected ");
            join_names(names, w);
        }
    }
    buf_destroy(&tmp);
    return t;
}

int tls_client_check(SSL *ssl, const struct tls_policy *pol, const char *nexthop,
                     const char *mxhost, const char *peer, tls_trust_t *trust, buf_t *why)
{
    char **names = tls_match_names(pol, nexthop, mxhost);
    tls_trust_t t = tls_peer_trust(ssl, names, peer, why);
    strv_free(names);
    if (trust)
        *trust = t;
    if (pol->level < TLS_LEV_VERIFY)
        return 0;
    return t == TLS_TRUST_VERIFIED ? 0 : -1;
}

const char *tls_check_status(tls_trust_t trust)
{
    return trust <= TLS_TRUST_UNTRUSTED ? "Server certificate not trusted"
                                        : "Server certificate not verified";
}
