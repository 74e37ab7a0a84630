/* tls.c - OpenSSL contexts for smtpd and delivery: protocol lists in
 * Postfix syntax, cipher grades, certificate/key loading with errors an
 * admin can act on, per-connection SSL objects and summary strings.
 * Policy lookup and peer verification live in tls_client.c. */
#include "common/glue/tls.h"
#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/util/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/* ---- protocols ---- */

/* Index order is version order; SSLv2/SSLv3 are known names but never
 * enabled (OpenSSL 3 has no SSLv2 and SSLv3 is insecure). */
static const struct {
    const char *name;
    int version;
    unsigned long no_op;
} protos[] = {
    { "SSLv2", 0, 0 },
    { "SSLv3", SSL3_VERSION, 0 },
    { "TLSv1", TLS1_VERSION, SSL_OP_NO_TLSv1 },
    { "TLSv1.1", TLS1_1_VERSION, SSL_OP_NO_TLSv1_1 },
    { "TLSv1.2", TLS1_2_VERSION, SSL_OP_NO_TLSv1_2 },
    { "TLSv1.3", TLS1_3_VERSION, SSL_OP_NO_TLSv1_3 },
};
#define NPROTOS      ((int)(sizeof(protos) / sizeof(protos[0])))
#define FIRST_USABLE 2 /* TLSv1 */

static int proto_index(const char *name)
{
    for (int i = 0; i < NPROTOS; i++)
        if (str_ieq(protos[i].name, name))
            return i;
    return -1;
}

/* Fold one token into the include/exclude masks and the >=/<= bounds. */
static int proto_token(const char *tok, unsigned *incl, unsigned *excl, int *lo, int *hi,
                       buf_t *err)
{
    int op = 0; /* 0 plain, '!' exclude, '>' at least, '<' at most */
    const char *name = tok;
    if (tok[0] == '!')
        op = '!', name = tok + 1;
    else if ((tok[0] == '>' || tok[0] == '<') && tok[1] == '=')
        op = tok[0], name = tok + 2;
    int i = proto_index(name);
    if (i < 0) {
        buf_reset(err);
        buf_printf(err,
                   "unknown TLS protocol \"%s\" (use SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3 "
                   "with optional !, >= or <=)",
                   name);
        return -1;
    }
    if (op == '!')
        *excl |= 1u << i;
    else if (op == '>')
        *lo = i > *lo ? i : *lo;
    else if (op == '<')
        *hi = i < *hi ? i : *hi;
    else
        *incl |= 1u << i;
    return 0;
}

int tls_parse_protocols(const char *spec, struct tls_protos *out, buf_t *err)
{
    unsigned incl = 0, excl = 0;
    int lo = FIRST_USABLE, hi = NPROTOS - 1;
    char **tok = str_split(spec ? spec : "", ", \t:", NULL);
    if (tok[0] == NULL)
        lo = proto_index("TLSv1.2");
    for (char **t = tok; *t; t++) {
        if (proto_token(*t, &incl, &excl, &lo, &hi, err) < 0) {
            strv_free(tok);
            return -1;
        }
    }
    strv_free(tok);
    unsigned set = incl ? incl : ~0u;
    int first = -1, last = -1;
    memset(out, 0, sizeof(*out));
    for (int i = FIRST_USABLE; i < NPROTOS; i++) {
        if (i < lo || i > hi || !(set & (1u << i)) || (excl & (1u << i)))
            continue;
        if (first < 0)
            first = i;
        last = i;
    }
    if (first < 0) {
        buf_reset(err);
        buf_printf(err, "no usable TLS protocol left in \"%s\"", spec);
        return -1;
    }
    out->min = protos[first].version;
    out->max = protos[last].version;
    for (int i = first + 1; i < last; i++)
        if (!(set & (1u << i)) || (excl & (1u << i)))
            out->no |= protos[i].no_op;
    return 0;
}

void tls_apply_protocols(SSL_CTX *ctx, const struct tls_protos *p)
{
    SSL_CTX_set_min_proto_version(ctx, p->min);
    SSL_CTX_set_max_proto_version(ctx, p->max);
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 | SSL_OP_NO_TLSv1_2 |
                                   SSL_OP_NO_TLSv1_3);
    if (p->no)
        SSL_CTX_set_options(ctx, p->no);
}

void tls_apply_protocols_ssl(SSL *ssl, const struct tls_protos *p)
{
    SSL_set_min_proto_version(ssl, p->min);
    SSL_set_max_proto_version(ssl, p->max);
    SSL_clear_options(ssl,
                      SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 | SSL_OP_NO_TLSv1_2 | SSL_OP_NO_TLSv1_3);
    if (p->no)
        SSL_set_options(ssl, p->no);
}

/* Parse parameter `param` and apply it; err names the parameter. */
static int ctx_protocols(SSL_CTX *ctx, const char *param, struct tls_protos *p, buf_t *err)
{
    buf_t why = BUF_INIT;
    int rc = tls_parse_protocols(conf_str(param), p, &why);
    if (rc < 0) {
        buf_reset(err);
        buf_printf(err, "%s: %s", param, buf_str(&why));
    } else if (ctx) {
        tls_apply_protocols(ctx, p);
    }
    buf_destroy(&why);
    return rc;
}

/* ---- levels, trust words ---- */

static const char *const level_names[] = { "none", "may", "encrypt", "verify", "secure" };
static const char *const trust_names[] = { "Anonymous", "Untrusted", "Trusted", "Verified" };

int tls_level_parse(const char *word, tls_level_t *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (str_ieq(word, level_names[i])) {
            *out = (tls_level_t)i;
            return 0;
        }
    }
    return -1;
}

const char *tls_level_name(tls_level_t level)
{
    return (unsigned)level < 5 ? level_names[level] : "unknown";
}

const char *tls_trust_name(tls_trust_t trust)
{
    return (unsigned)trust < 4 ? trust_names[trust] : "Unknown";
}

/* ---- ciphers ---- */

/* Each grade is the OpenSSL string in its tls_<grade>_cipherlist
 * parameter (Postfix's names), so an admin can tighten a grade. */
static const struct {
    const char *grade;
    const char *param;
} grades[] = {
    { "high", "tls_high_cipherlist" },
    { "medium", "tls_medium_cipherlist" },
};

int tls_cipher_list(const char *grade, char *const *exclude, buf_t *out, buf_t *err)
{
    buf_reset(out);
    for (size_t i = 0; i < sizeof(grades) / sizeof(grades[0]); i++)
        if (str_ieq(grade, grades[i].grade)) {
            const char *list = conf_str(grades[i].param);
            if (list[0] == 0) {
                buf_reset(err);
                buf_printf(err, "cipher grade \"%s\": %s is empty", grade, grades[i].param);
                return -1;
            }
            buf_puts(out, list);
        }
    if (out->len == 0) {
        buf_reset(err);
        buf_printf(err, "unknown cipher grade \"%s\" (use high or medium)", grade);
        return -1;
    }
    for (char *const *e = exclude; e && *e; e++)
        buf_printf(out, ":!%s", *e);
    return 0;
}

/* Both exclusion lists (the second: extra ones at mandatory levels, may be
 * NULL), joined into one NULL-terminated vector. */
static char **exclusions(const char *excl_param, const char *excl2_param)
{
    char **a = conf_list(excl_param), **b = excl2_param ? conf_list(excl2_param) : NULL;
    size_t na = 0, nb = 0;
    while (a[na])
        na++;
    while (b && b[nb])
        nb++;
    a = xrealloc(a, (na + nb + 1) * sizeof(*a));
    for (size_t i = 0; i < nb; i++)
        a[na + i] = b[i];
    a[na + nb] = NULL;
    free(b); /* the strings moved into a */
    return a;
}

/* The OpenSSL list for a grade parameter and its exclusions; err names
 * the parameters. Checks that OpenSSL knows at least one cipher in it
 * (on ctx, whose list it therefore sets). */
static int cipher_string(SSL_CTX *ctx, const char *grade_param, const char *excl_param,
                         const char *excl2_param, buf_t *list, buf_t *err)
{
    buf_t why = BUF_INIT;
    char **excl = exclusions(excl_param, excl2_param);
    int rc = tls_cipher_list(conf_str(grade_param), excl, list, &why);
    if (rc < 0) {
        buf_reset(err);
        buf_printf(err, "%s: %s", grade_param, buf_str(&why));
    } else if (SSL_CTX_set_cipher_list(ctx, list->data) != 1) {
        buf_reset(err);
        buf_printf(err, "%s/%s%s%s: no cipher left in \"%s\": ", grade_param, excl_param,
                   excl2_param ? "/" : "", excl2_param ? excl2_param : "", list->data);
        tls_append_ssl_error(err);
        rc = -1;
    }
    strv_free(excl);
    buf_destroy(&why);
    return rc;
}

static int ctx_ciphers(SSL_CTX *ctx, const char *grade_param, const char *excl_param,
                       const char *excl2_param, buf_t *err)
{
    buf_t list = BUF_INIT;
    int rc = cipher_string(ctx, grade_param, excl_param, excl2_param, &list, err);
    buf_destroy(&list);
    return rc;
}

/* ---- errors ---- */

void tls_append_ssl_error(buf_t *out)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0) {
        buf_puts(out, "unknown OpenSSL error");
    } else {
        const char *r = ERR_reason_error_string(e);
        if (r) {
            buf_puts(out, r);
        } else {
            char tmp[256];
            ERR_error_string_n(e, tmp, sizeof(tmp));
            buf_puts(out, tmp);
        }
    }
    ERR_clear_error();
}

/* ---- certificates and keys ---- */

static int file_readable(const char *param, const char *path, buf_t *err)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        buf_reset(err);
        buf_printf(err, "%s: cannot open %s: %s", param, path, strerror(errno));
        return -1;
    }
    fclose(fp);
    return 0;
}

static EVP_PKEY *read_key(const char *param, const char *path, buf_t *err)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        buf_reset(err);
        buf_printf(err, "%s: cannot open %s: %s", param, path, strerror(errno));
        return NULL;
    }
    EVP_PKEY *k = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
    fclose(fp);
    if (k == NULL) {
        buf_reset(err);
        buf_printf(err, "%s: no usable PEM private key in %s: ", param, path);
        tls_append_ssl_error(err);
    }
    return k;
}

/* Certificate chain from certfile, key from keyfile; they must match. */
static int load_keypair(SSL_CTX *ctx, const char *certparam, const char *certfile,
                        const char *keyparam, const char *keyfile, buf_t *err)
{
    if (file_readable(certparam, certfile, err) < 0)
        return -1;
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, certfile) != 1) {
        buf_reset(err);
        buf_printf(err, "%s: cannot load certificate chain from %s: ", certparam, certfile);
        tls_append_ssl_error(err);
        return -1;
    }
    EVP_PKEY *key = read_key(keyparam, keyfile, err);
    if (key == NULL)
        return -1;
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    int rc = -1;
    if (cert == NULL || X509_check_private_key(cert, key) != 1) {
        ERR_clear_error();
        buf_reset(err);
        buf_printf(err, "%s: private key in %s does not match the certificate in %s (%s)", keyparam,
                   keyfile, certfile, certparam);
    } else if (SSL_CTX_use_PrivateKey(ctx, key) != 1) {
        buf_reset(err);
        buf_printf(err, "%s: cannot use private key in %s: ", keyparam, keyfile);
        tls_append_ssl_error(err);
    } else {
        rc = 0;
    }
    EVP_PKEY_free(key);
    return rc;
}

static int server_keys(SSL_CTX *ctx, buf_t *err)
{
    char **chain = conf_list("smtpd_tls_chain_files");
    int rc = 0;
    for (char **f = chain; *f && rc == 0; f++)
        rc = load_keypair(ctx, "smtpd_tls_chain_files", *f, "smtpd_tls_chain_files", *f, err);
    int have_chain = chain[0] != NULL;
    strv_free(chain);
    if (have_chain)
        return rc;
    const char *cert = conf_str("smtpd_tls_cert_file");
    const char *key = conf_str("smtpd_tls_key_file");
    if (cert[0] == 0) {
        buf_reset(err);
        buf_puts(err, "smtpd_tls_cert_file: no server certificate configured "
                      "(set smtpd_tls_cert_file or smtpd_tls_chain_files to use TLS)");
        return -1;
    }
    return load_keypair(ctx, "smtpd_tls_cert_file", cert, "smtpd_tls_key_file", key[0] ? key : cert,
                        err);
}

/* ---- contexts ---- */

SSL_CTX *tls_server_ctx_new(int mandatory, buf_t *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    struct tls_protos p;
    if (ctx == NULL) {
        buf_reset(err);
        buf_puts(err, "cannot create the TLS server context: ");
        tls_append_ssl_error(err);
        return NULL;
    }
    if (server_keys(ctx, err) < 0 ||
        ctx_protocols(ctx, mandatory ? "smtpd_tls_mandatory_protocols" : "smtpd_tls_protocols", &p,
                      err) < 0 ||
        (mandatory
             ? ctx_ciphers(ctx, "smtpd_tls_mandatory_ciphers", "smtpd_tls_exclude_ciphers",
                           "smtpd_tls_mandatory_exclude_ciphers", err)
             : ctx_ciphers(ctx, "smtpd_tls_ciphers", "smtpd_tls_exclude_ciphers", NULL, err)) < 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_NO_COMPRESSION);
    /* No stateful cache: N processes cannot share it. Tickets stay on;
     * their keys are per process, a miss costs one full handshake. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return ctx;
}

SSL *tls_server_ssl_new(SSL_CTX *ctx)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        log_fatal("cannot create a TLS server session (out of memory?)");
    SSL_set_accept_state(ssl);
    return ssl;
}

/* The client context remembers both protocol ranges and both cipher
 * lists (may / mandatory); each SSL gets those of its level. */
struct client_protos {
    struct tls_protos may, mandatory;
    char *may_ciphers, *mandatory_ciphers;
};
static int client_ex_index = -1;

static void client_protos_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                               void *argp)
{
    struct client_protos *cp = ptr;
    if (cp) {
        free(cp->may_ciphers);
        free(cp->mandatory_ciphers);
    }
    free(ptr);
}

static int client_setup(SSL_CTX *ctx, struct client_protos *cp, buf_t *err)
{
    const char *cafile = conf_str("smtp_tls_CAfile"), *capath = conf_str("smtp_tls_CApath");
    if (cafile[0] && file_readable("smtp_tls_CAfile", cafile, err) < 0)
        return -1;
    if ((cafile[0] || capath[0]) && SSL_CTX_load_verify_locations(ctx, cafile[0] ? cafile : NULL,
                                                                  capath[0] ? capath : NULL) != 1) {
        buf_reset(err);
        buf_printf(err, "%s: cannot load CA certificates from %s: ",
                   cafile[0] ? "smtp_tls_CAfile" : "smtp_tls_CApath", cafile[0] ? cafile : capath);
        tls_append_ssl_error(err);
        return -1;
    }
    const char *cert = conf_str("smtp_tls_cert_file"), *key = conf_str("smtp_tls_key_file");
    if (cert[0] && load_keypair(ctx, "smtp_tls_cert_file", cert, "smtp_tls_key_file",
                                key[0] ? key : cert, err) < 0)
        return -1;
    if (ctx_protocols(NULL, "smtp_tls_mandatory_protocols", &cp->mandatory, err) < 0 ||
        ctx_protocols(ctx, "smtp_tls_protocols", &cp->may, err) < 0)
        return -1;
    /* The mandatory list is checked first; the may list stays on ctx. */
    buf_t list = BUF_INIT;
    int rc = cipher_string(ctx, "smtp_tls_mandatory_ciphers", "smtp_tls_exclude_ciphers",
                           "smtp_tls_mandatory_exclude_ciphers", &list, err);
    if (rc == 0) {
        cp->mandatory_ciphers = buf_detach(&list);
        rc = cipher_string(ctx, "smtp_tls_ciphers", "smtp_tls_exclude_ciphers", NULL, &list, err);
        if (rc == 0)
            cp->may_ciphers = buf_detach(&list);
    }
    buf_destroy(&list);
    return rc;
}

SSL_CTX *tls_client_ctx_new(buf_t *err)
{
    if (client_ex_index < 0)
        client_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, client_protos_free);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        buf_reset(err);
        buf_puts(err, "cannot create the TLS client context: ");
        tls_append_ssl_error(err);
        return NULL;
    }
    struct client_protos *cp = xcalloc(1, sizeof(*cp));
    SSL_CTX_set_ex_data(ctx, client_ex_index, cp); /* freed with ctx */
    if (client_setup(ctx, cp, err) < 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* Verify during the handshake but never abort it: the level decides
     * afterwards (tls_client_check), so "may" still gets encryption. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return ctx;
}

/* A host name worth sending as SNI: not empty, no [literal], not an IP. */
static int sni_name(const char *s, char *out, size_t size)
{
    unsigned char tmp[16];
    if (s == NULL || s[0] == 0 || s[0] == '[' || strlen(s) >= size)
        return 0;
    str_lcpy(out, s, size);
    size_t n = strlen(out);
    if (n > 0 && out[n - 1] == '.')
        out[n - 1] = 0;
    if (out[0] == 0 || inet_pton(AF_INET, out, tmp) == 1 || inet_pton(AF_INET6, out, tmp) == 1)
        return 0;
    return 1;
}

SSL *tls_client_ssl_new(SSL_CTX *ctx, const char *sni, tls_level_t level)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        log_fatal("cannot create a TLS client session (out of memory?)");
    struct client_protos *cp =
        client_ex_index < 0 ? NULL : SSL_CTX_get_ex_data(ctx, client_ex_index);
    if (cp == NULL)
        log_panic("tls_client_ssl_new: context not made by tls_client_ctx_new");
    int mandatory = level >= TLS_LEV_ENCRYPT;
    tls_apply_protocols_ssl(ssl, mandatory ? &cp->mandatory : &cp->may);
    /* Validated when the context was built: cannot fail here. */
    if (SSL_set_cipher_list(ssl, mandatory ? cp->mandatory_ciphers : cp->may_ciphers) != 1)
        log_panic("tls_client_ssl_new: cipher list rejected after validation");
    char name[256];
    if (sni_name(sni, name, sizeof(name)))
        SSL_set_tlsext_host_name(ssl, name);
    SSL_set_connect_state(ssl);
    return ssl;
}

/* ---- summaries ---- */

void tls_summary(SSL *ssl, buf_t *out)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
    int alg = 0, bits = c ? SSL_CIPHER_get_bits(c, &alg) : 0;
    buf_reset(out);
    buf_printf(out, "%s with cipher %s (%d/%d bits)", SSL_get_version(ssl),
               c ? SSL_CIPHER_get_name(c) : "none", bits, alg);
}

void tls_received_text(SSL *ssl, buf_t *out)
{
    buf_t s = BUF_INIT;
    tls_summary(ssl, &s);
    buf_printf(out, "(using %s)", s.data);
    buf_destroy(&s);
}

void tls_log_established(SSL *ssl, tls_trust_t trust, int is_server, const char *peer)
{
    buf_t s = BUF_INIT;
    tls_summary(ssl, &s);
    log_info("%s TLS connection established %s %s: %s", tls_trust_name(trust),
             is_server ? "from" : "to", peer, s.data);
    buf_destroy(&s);
}
