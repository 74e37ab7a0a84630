/* test_tls.c - the OpenSSL layer against itself: real handshakes over a
 * socketpair (server in a thread, blocking sockets) with a CA, a server
 * certificate and a self-signed one generated at test time into a temp
 * directory; protocol lists, key errors, policy tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/util/buf.h"
#include "common/mail/conf.h"
#include "common/glue/dict.h"
#include "common/glue/tls.h"

static char dir[64];
static char path_ca[128], path_crt[128], path_key[128], path_chain[128], path_self[128],
    path_other[128];

/* ---- certificates made at test time ---- */

static EVP_PKEY *keygen(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(k);
    return k;
}

static void add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    assert_non_null(e);
    assert_int_equal(X509_add_ext(x, e, -1), 1);
    X509_EXTENSION_free(e);
}

/* issuer == NULL: self-signed. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, const char *san, X509 *issuer, EVP_PKEY *ikey,
                       int ca)
{
    static long serial = 1;
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    add_ext(x, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
    if (ca)
        add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
    if (san)
        add_ext(x, &v3, NID_subject_alt_name, san);
    assert_true(X509_sign(x, ikey ? ikey : key, EVP_sha256()) > 0);
    return x;
}

/* Write any of key, cert, cert2 (NULL to skip) into path, in that order. */
static void write_pem(const char *path, EVP_PKEY *key, X509 *cert, X509 *cert2)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    if (key)
        assert_int_equal(PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL), 1);
    if (cert)
        assert_int_equal(PEM_write_X509(fp, cert), 1);
    if (cert2)
        assert_int_equal(PEM_write_X509(fp, cert2), 1);
    fclose(fp);
}

static void set_path(char *out, const char *name)
{
    snprintf(out, 128, "%s/%s", dir, name);
}

static int setup(void **state)
{
    str_lcpy(dir, "/tmp/test_tls.XXXXXX", sizeof(dir));
    if (mkdtemp(dir) == NULL)
        return -1;
    set_path(path_ca, "ca.pem");
    set_path(path_crt, "server.crt");
    set_path(path_key, "server.key");
    set_path(path_chain, "chain.pem");
    set_path(path_self, "self.pem");
    set_path(path_other, "other.key");
    EVP_PKEY *cakey = keygen(), *skey = keygen(), *selfkey = keygen(), *okey = keygen();
    X509 *ca = make_cert(cakey, "Test CA", NULL, NULL, NULL, 1);
    X509 *srv = make_cert(skey, "mx.example.test", "DNS:mx.example.test", ca, cakey, 0);
    X509 *self = make_cert(selfkey, "mx.example.test", "DNS:mx.example.test", NULL, NULL, 0);
    write_pem(path_ca, NULL, ca, NULL);
    write_pem(path_crt, NULL, srv, NULL);
    write_pem(path_key, skey, NULL, NULL);
    write_pem(path_chain, skey, srv, ca);
    write_pem(path_self, selfkey, self, NULL);
    write_pem(path_other, okey, NULL, NULL);
    X509_free(ca);
    X509_free(srv);
    X509_free(self);
    EVP_PKEY_free(cakey);
    EVP_PKEY_free(skey);
    EVP_PKEY_free(selfkey);
    EVP_PKEY_free(okey);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    tls_policy_reset();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Every test starts from the declared defaults plus the CA-signed cert. */
static int reset_conf(void **state)
{
    for (size_t i = 0; i < param_count; i++)
        if (strstr(param_table[i].name, "tls_"))
            conf_set(param_table[i].name, param_table[i].defval);
    conf_set("smtpd_tls_cert_file", path_crt);
    conf_set("smtpd_tls_key_file", path_key);
    return 0;
}

/* ---- handshakes over a socketpair ---- */

struct hs {
    SSL *s, *c;
    int fd[2];
    pthread_t th;
    int srv_rc, cli_rc;
};

static void *server_main(void *arg)
{
    struct hs *h = arg;
    h->srv_rc = SSL_accept(h->s);
    return NULL;
}

static void handshake(struct hs *h, const char *sni, tls_level_t level)
{
    buf_t err = BUF_INIT;
    SSL_CTX *sctx = tls_server_ctx_new(0, &err);
    if (sctx == NULL)
        fail_msg("server ctx: %s", err.data);
    SSL_CTX *cctx = tls_client_ctx_new(&err);
    if (cctx == NULL)
        fail_msg("client ctx: %s", err.data);
    memset(h, 0, sizeof(*h));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, h->fd), 0);
    h->s = tls_server_ssl_new(sctx);
    h->c = tls_client_ssl_new(cctx, sni, level);
    SSL_CTX_free(sctx); /* the SSLs hold references */
    SSL_CTX_free(cctx);
    SSL_set_fd(h->s, h->fd[0]);
    SSL_set_fd(h->c, h->fd[1]);
    assert_int_equal(pthread_create(&h->th, NULL, server_main, h), 0);
    h->cli_rc = SSL_connect(h->c);
    if (h->cli_rc != 1)
        shutdown(h->fd[1], SHUT_RDWR); /* unblock the server */
    pthread_join(h->th, NULL);
    buf_destroy(&err);
}

static void hs_done(struct hs *h)
{
    SSL_free(h->s);
    SSL_free(h->c);
    close(h->fd[0]);
    close(h->fd[1]);
}

static void test_may_handshake(void **state)
{
    struct hs h;
    buf_t s = BUF_INIT, why = BUF_INIT;
    handshake(&h, "mx.example.test", TLS_LEV_MAY);
    assert_int_equal(h.cli_rc, 1);
    assert_int_equal(h.srv_rc, 1);
    tls_summary(h.c, &s);
    assert_non_null(strstr(s.data, "TLSv1.3 with cipher TLS_"));
    assert_non_null(strstr(s.data, " (256/256 bits)"));
    buf_reset(&s);
    tls_received_text(h.s, &s);
    assert_true(strncmp(s.data, "(using TLSv1.3 with cipher TLS_", 31) == 0);
    assert_true(s.data[s.len - 1] == ')');
    /* SNI reached the server */
    assert_string_equal(SSL_get_servername(h.s, TLSEXT_NAMETYPE_host_name), "mx.example.test");
    /* no CA file: encrypted but untrusted, which "may" accepts */
    struct tls_policy pol = { TLS_LEV_MAY, NULL };
    tls_trust_t t;
    assert_int_equal(tls_client_check(h.c, &pol, "example.test", "mx.example.test",
                                      "mx.example.test[127.0.0.1]:25", &t, &why),
                     0);
    assert_int_equal(t, TLS_TRUST_UNTRUSTED);
    assert_string_equal(tls_trust_name(t), "Untrusted");
    assert_non_null(strstr(why.data, "untrusted issuer /CN=Test CA"));
    tls_log_established(h.c, t, 0, "mx.example.test[127.0.0.1]:25");
    hs_done(&h);
    buf_destroy(&s);
    buf_destroy(&why);
}

static void test_no_sni_for_ip(void **state)
{
    struct hs h;
    handshake(&h, "127.0.0.1", TLS_LEV_MAY);
    assert_int_equal(h.cli_rc, 1);
    assert_null(SSL_get_servername(h.s, TLSEXT_NAMETYPE_host_name));
    hs_done(&h);
    handshake(&h, "[mx.example.test]", TLS_LEV_MAY);
    assert_int_equal(h.cli_rc, 1);
    assert_null(SSL_get_servername(h.s, TLSEXT_NAMETYPE_host_name));
    hs_done(&h);
}

static void test_verify_names(void **state)
{
    struct hs h;
    buf_t why = BUF_INIT;
    tls_trust_t t;
    conf_set("smtp_tls_CAfile", path_ca);
    handshake(&h, "mx.example.test", TLS_LEV_VERIFY);
    assert_int_equal(h.cli_rc, 1);
    const char *peer = "mx.example.test[127.0.0.1]:25";
    struct tls_policy verify = { TLS_LEV_VERIFY, NULL }, secure = { TLS_LEV_SECURE, NULL };
    assert_int_equal(
        tls_client_check(h.c, &verify, "example.test", "mx.example.test", peer, &t, &why), 0);
    assert_int_equal(t, TLS_TRUST_VERIFIED);
    /* the wrong MX name */
    assert_int_equal(tls_client_check(h.c, &verify, "example.test", "other.example.test",
                                      "other.example.test[127.0.0.1]:25", &t, &why),
                     -1);
    assert_int_equal(t, TLS_TRUST_TRUSTED);
    assert_non_null(strstr(why.data, "name mismatch"));
    assert_non_null(strstr(why.data, "expected other.example.test"));
    if (!strstr(why.data, "certificate names mx.example.test"))
        fail_msg("why: %s", why.data);
    assert_string_equal(tls_check_status(t), "Server certificate not verified");
    /* secure: nexthop and its subdomains */
    assert_int_equal(tls_client_check(h.c, &secure, "example.test", "whatever", peer, &t, &why), 0);
    assert_int_equal(
        tls_client_check(h.c, &secure, "[example.test]:25", "whatever", peer, &t, &why), 0);
    assert_int_equal(
        tls_client_check(h.c, &secure, "other.test", "mx.example.test", peer, &t, &why), -1);
    assert_non_null(strstr(why.data, "expected other.test, .other.test"));
    /* encrypt ignores names but still reports the trust */
    struct tls_policy enc = { TLS_LEV_ENCRYPT, NULL };
    assert_int_equal(tls_client_check(h.c, &enc, "other.test", "x", peer, &t, &why), 0);
    assert_int_equal(t, TLS_TRUST_TRUSTED);
    hs_done(&h);
    buf_destroy(&why);
}

static void test_untrusted(void **state)
{
    struct hs h;
    buf_t why = BUF_INIT;
    tls_trust_t t;
    struct tls_policy verify = { TLS_LEV_VERIFY, NULL };
    const char *peer = "mx.example.test[127.0.0.2]:25";
    conf_set("smtp_tls_CAfile", path_ca);
    /* self-signed cert; key comes from the cert file (the default) */
    conf_set("smtpd_tls_cert_file", path_self);
    conf_set("smtpd_tls_key_file", "$smtpd_tls_cert_file");
    handshake(&h, "mx.example.test", TLS_LEV_VERIFY);
    assert_int_equal(h.cli_rc, 1);
    assert_int_equal(
        tls_client_check(h.c, &verify, "example.test", "mx.example.test", peer, &t, &why), -1);
    assert_int_equal(t, TLS_TRUST_UNTRUSTED);
    assert_string_equal(why.data,
                        "certificate verification failed for mx.example.test[127.0.0.2]:25: "
                        "self-signed certificate");
    assert_string_equal(tls_check_status(t), "Server certificate not trusted");
    hs_done(&h);
    /* CA-signed cert, but the client trusts another CA */
    reset_conf(state);
    conf_set("smtp_tls_CAfile", path_self);
    handshake(&h, "mx.example.test", TLS_LEV_VERIFY);
    assert_int_equal(h.cli_rc, 1);
    assert_int_equal(
        tls_client_check(h.c, &verify, "example.test", "mx.example.test", peer, &t, &why), -1);
    assert_string_equal(why.data,
                        "certificate verification failed for mx.example.test[127.0.0.2]:25: "
                        "untrusted issuer /CN=Test CA");
    hs_done(&h);
    buf_destroy(&why);
}

static void test_chain_file(void **state)
{
    struct hs h;
    buf_t why = BUF_INIT;
    conf_set("smtpd_tls_cert_file", "");
    conf_set("smtpd_tls_chain_files", path_chain);
    conf_set("smtp_tls_CAfile", path_ca);
    handshake(&h, "mx.example.test", TLS_LEV_VERIFY);
    assert_int_equal(h.cli_rc, 1);
    /* the server sent its chain (leaf + CA) */
    assert_int_equal(sk_X509_num(SSL_get_peer_cert_chain(h.c)), 2);
    struct tls_policy verify = { TLS_LEV_VERIFY, NULL };
    assert_int_equal(
        tls_client_check(h.c, &verify, "example.test", "mx.example.test", "p", NULL, &why), 0);
    hs_done(&h);
    buf_destroy(&why);
}

static void test_protocol_parse(void **state)
{
    struct tls_protos p;
    buf_t err = BUF_INIT;
    assert_int_equal(tls_parse_protocols(">=TLSv1.2", &p, &err), 0);
    assert_int_equal(p.min, TLS1_2_VERSION);
    assert_int_equal(p.max, TLS1_3_VERSION);
    assert_int_equal(tls_parse_protocols("!SSLv2, !SSLv3, !TLSv1", &p, &err), 0);
    assert_int_equal(p.min, TLS1_1_VERSION);
    assert_int_equal(p.max, TLS1_3_VERSION);
    assert_true(p.no == 0);
    assert_int_equal(tls_parse_protocols("TLSv1.2 TLSv1.3", &p, &err), 0);
    assert_int_equal(p.min, TLS1_2_VERSION);
    assert_int_equal(p.max, TLS1_3_VERSION);
    assert_int_equal(tls_parse_protocols("<=TLSv1.2", &p, &err), 0);
    assert_int_equal(p.min, TLS1_VERSION);
    assert_int_equal(p.max, TLS1_2_VERSION);
    assert_int_equal(tls_parse_protocols("", &p, &err), 0);
    assert_int_equal(p.min, TLS1_2_VERSION);
    assert_int_equal(tls_parse_protocols("!TLSv1.1", &p, &err), 0);
    assert_int_equal(p.min, TLS1_VERSION);
    assert_true(p.no == SSL_OP_NO_TLSv1_1);
    assert_int_equal(tls_parse_protocols("TLSv9", &p, &err), -1);
    assert_non_null(strstr(err.data, "\"TLSv9\""));
    assert_int_equal(tls_parse_protocols(">=TLSv1.3, <=TLSv1.2", &p, &err), -1);
    assert_non_null(strstr(err.data, "no usable TLS protocol"));
    buf_destroy(&err);
}

static void test_protocol_handshake(void **state)
{
    struct hs h;
    buf_t s = BUF_INIT;
    /* a TLS 1.3-only server and a client capped at 1.2 cannot talk */
    conf_set("smtpd_tls_protocols", ">=TLSv1.3");
    conf_set("smtp_tls_protocols", "<=TLSv1.2");
    handshake(&h, "mx.example.test", TLS_LEV_MAY);
    assert_int_not_equal(h.cli_rc, 1);
    assert_int_not_equal(h.srv_rc, 1);
    hs_done(&h);
    /* encrypt uses the mandatory list, not smtp_tls_protocols */
    conf_set("smtp_tls_mandatory_protocols", ">=TLSv1.3");
    handshake(&h, "mx.example.test", TLS_LEV_ENCRYPT);
    assert_int_equal(h.cli_rc, 1);
    hs_done(&h);
    /* both allow 1.2 only -> a TLS 1.2 summary */
    conf_set("smtpd_tls_protocols", "TLSv1.2");
    conf_set("smtpd_tls_ciphers", "high");
    handshake(&h, "mx.example.test", TLS_LEV_MAY);
    assert_int_equal(h.cli_rc, 1);
    tls_summary(h.c, &s);
    assert_string_equal(s.data, "TLSv1.2 with cipher ECDHE-ECDSA-AES256-GCM-SHA384 (256/256 bits)");
    hs_done(&h);
    /* an excluded cipher is not chosen */
    conf_set("smtpd_tls_exclude_ciphers",
             "ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-ECDSA-CHACHA20-POLY1305");
    handshake(&h, "mx.example.test", TLS_LEV_MAY);
    assert_int_equal(h.cli_rc, 1);
    tls_summary(h.c, &s);
    assert_null(strstr(s.data, "ECDHE-ECDSA-AES256-GCM-SHA384"));
    hs_done(&h);
    buf_destroy(&s);
}

static void expect_server_error(const char *want1, const char *want2)
{
    buf_t err = BUF_INIT;
    SSL_CTX *ctx = tls_server_ctx_new(0, &err);
    assert_null(ctx);
    if (!strstr(err.data, want1) || (want2 && !strstr(err.data, want2)))
        fail_msg("error \"%s\" lacks \"%s\"/\"%s\"", err.data, want1, want2 ? want2 : "");
    buf_destroy(&err);
}

static void test_key_errors(void **state)
{
    buf_t missing = BUF_INIT;
    buf_printf(&missing, "%s/nosuch.pem", dir);
    conf_set("smtpd_tls_cert_file", missing.data);
    expect_server_error("smtpd_tls_cert_file: cannot open ", missing.data);
    conf_set("smtpd_tls_cert_file", path_crt);
    conf_set("smtpd_tls_key_file", missing.data);
    expect_server_error("smtpd_tls_key_file: cannot open ", missing.data);
    conf_set("smtpd_tls_key_file", path_other);
    expect_server_error("does not match the certificate", path_other);
    conf_set("smtpd_tls_key_file", path_crt); /* no key in it */
    expect_server_error("smtpd_tls_key_file: no usable PEM private key in ", path_crt);
    conf_set("smtpd_tls_cert_file", path_key); /* no cert in it */
    expect_server_error("smtpd_tls_cert_file: cannot load certificate chain from ", path_key);
    conf_set("smtpd_tls_cert_file", "");
    expect_server_error("smtpd_tls_cert_file: no server certificate", NULL);
    reset_conf(state);
    conf_set("smtpd_tls_ciphers", "bogus");
    expect_server_error("smtpd_tls_ciphers: unknown cipher grade \"bogus\"", NULL);
    reset_conf(state);
    conf_set("smtpd_tls_protocols", "TLSv1.2 SSLv4");
    expect_server_error("smtpd_tls_protocols: unknown TLS protocol \"SSLv4\"", NULL);
    reset_conf(state);
    conf_set("smtp_tls_CAfile", missing.data);
    buf_t err = BUF_INIT;
    assert_null(tls_client_ctx_new(&err));
    assert_non_null(strstr(err.data, "smtp_tls_CAfile: cannot open "));
    buf_destroy(&err);
    buf_destroy(&missing);
}

static void test_policy_map(void **state)
{
    buf_t spec = BUF_INIT, err = BUF_INIT;
    buf_printf(&spec, "%s/tls_policy", dir);
    FILE *fp = fopen(spec.data, "w");
    assert_non_null(fp);
    fputs("example.com   secure match=.example.com:example.net\n"
          ".parent.test  verify\n"
          "[mx.relay.test]:587 encrypt\n"
          "plain.test none\n"
          "bad.test bogus\n",
          fp);
    fclose(fp);
    assert_int_equal(dict_build(spec.data, &err), 0);
    buf_t hspec = BUF_INIT;
    buf_printf(&hspec, "hash:%s", spec.data);
    conf_set("smtp_tls_policy_maps", hspec.data);
    struct tls_policy p;
    assert_int_equal(tls_client_policy("example.com", &p, &err), 0);
    assert_int_equal(p.level, TLS_LEV_SECURE);
    assert_non_null(p.match);
    assert_string_equal(p.match[0], ".example.com");
    assert_string_equal(p.match[1], "example.net");
    assert_null(p.match[2]);
    char **names = tls_match_names(&p, "example.com", "mx.example.com");
    assert_string_equal(names[0], ".example.com");
    strv_free(names);
    tls_policy_destroy(&p);
    assert_int_equal(tls_client_policy("mx.sub.parent.test", &p, &err), 0);
    assert_int_equal(p.level, TLS_LEV_VERIFY);
    assert_null(p.match);
    names = tls_match_names(&p, "sub.parent.test", "mx.sub.parent.test");
    assert_string_equal(names[0], "mx.sub.parent.test");
    assert_null(names[1]);
    strv_free(names);
    assert_int_equal(tls_client_policy("[mx.relay.test]:587", &p, &err), 0);
    assert_int_equal(p.level, TLS_LEV_ENCRYPT);
    assert_null(tls_match_names(&p, "[mx.relay.test]:587", "mx.relay.test"));
    assert_int_equal(tls_client_policy("plain.test", &p, &err), 0);
    assert_int_equal(p.level, TLS_LEV_NONE);
    assert_int_equal(tls_client_policy("unlisted.test", &p, &err), 0);
    assert_int_equal(p.level, TLS_LEV_MAY);
    assert_int_equal(tls_client_policy("bad.test", &p, &err), -1);
    assert_non_null(strstr(err.data, "unknown TLS security level \"bogus\""));
    conf_set("smtp_tls_security_level", "encrypt");
    assert_int_equal(tls_client_policy("unlisted.test", &p, &err), 0);
    assert_int_equal(p.level, TLS_LEV_ENCRYPT);
    conf_set("smtp_tls_security_level", "paranoid");
    assert_int_equal(tls_client_policy("unlisted.test", &p, &err), -1);
    assert_non_null(strstr(err.data, "smtp_tls_security_level"));
    buf_destroy(&spec);
    buf_destroy(&hspec);
    buf_destroy(&err);
}

/* ---- cipher grades and the *_ciphers parameters ---- */

/* The TLS 1.2-and-below ciphers an SSL_CTX / SSL offers, ":"-joined. */
static void cipher_names(STACK_OF(SSL_CIPHER) * sk, buf_t *out)
{
    buf_reset(out);
    for (int i = 0; i < sk_SSL_CIPHER_num(sk); i++) {
        const char *n = SSL_CIPHER_get_name(sk_SSL_CIPHER_value(sk, i));
        if (strncmp(n, "TLS_", 4) != 0) /* TLS 1.3 suites are not graded */
            buf_printf(out, "%s%s", out->len ? ":" : "", n);
    }
}

static void test_cipher_grades(void **state)
{
    buf_t out = BUF_INIT, err = BUF_INIT;
    char *excl[] = { "AES128-SHA", "kRSA", NULL };
    /* the grades are the tls_*_cipherlist values */
    assert_int_equal(tls_cipher_list("medium", NULL, &out, &err), 0);
    assert_string_equal(out.data, "HIGH:MEDIUM:!aNULL:!eNULL:!MD5:!RC4:!3DES:!IDEA:@STRENGTH");
    conf_set("tls_high_cipherlist", "ECDHE-ECDSA-AES128-GCM-SHA256");
    assert_int_equal(tls_cipher_list("HIGH", excl, &out, &err), 0);
    assert_string_equal(out.data, "ECDHE-ECDSA-AES128-GCM-SHA256:!AES128-SHA:!kRSA");
    conf_set("tls_medium_cipherlist", "");
    assert_int_equal(tls_cipher_list("medium", NULL, &out, &err), -1);
    assert_non_null(strstr(err.data, "tls_medium_cipherlist is empty"));
    assert_int_equal(tls_cipher_list("export", NULL, &out, &err), -1);
    assert_non_null(strstr(err.data, "unknown cipher grade \"export\""));
    buf_destroy(&out);
    buf_destroy(&err);
}

static void test_server_mandatory_ciphers(void **state)
{
    buf_t err = BUF_INIT, names = BUF_INIT;
    conf_set("tls_high_cipherlist", "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384");
    conf_set("smtpd_tls_mandatory_ciphers", "high");
    conf_set("smtpd_tls_mandatory_exclude_ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384");
    SSL_CTX *ctx = tls_server_ctx_new(1, &err);
    if (ctx == NULL)
        fail_msg("mandatory server ctx: %s", err.data);
    cipher_names(SSL_CTX_get_ciphers(ctx), &names);
    assert_string_equal(names.data, "ECDHE-ECDSA-AES128-GCM-SHA256");
    SSL_CTX_free(ctx);
    /* not mandatory: smtpd_tls_ciphers (medium), mandatory exclusions unused */
    ctx = tls_server_ctx_new(0, &err);
    assert_non_null(ctx);
    cipher_names(SSL_CTX_get_ciphers(ctx), &names);
    assert_non_null(strstr(names.data, "ECDHE-ECDSA-AES256-GCM-SHA384"));
    assert_non_null(strstr(names.data, "ECDHE-RSA-AES128-SHA"));
    SSL_CTX_free(ctx);
    /* smtpd_tls_exclude_ciphers applies to mandatory contexts too */
    conf_set("smtpd_tls_exclude_ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256");
    assert_null(tls_server_ctx_new(1, &err));
    assert_non_null(strstr(err.data, "smtpd_tls_mandatory_ciphers/smtpd_tls_exclude_ciphers/"
                                     "smtpd_tls_mandatory_exclude_ciphers: no cipher left"));
    conf_set("smtpd_tls_mandatory_ciphers", "low");
    assert_null(tls_server_ctx_new(1, &err));
    assert_non_null(strstr(err.data, "smtpd_tls_mandatory_ciphers: unknown cipher grade \"low\""));
    buf_destroy(&err);
    buf_destroy(&names);
}

/* The default grades (issue #7): where TLS is mandatory (submission) every
 * TLS 1.2 suite has forward secrecy (ECDHE/DHE) and an AEAD cipher - no
 * static RSA, no CBC, no HMAC-SHA1 (LUCKY13); the opportunistic grade
 * (port 25) keeps static RSA and CBC but never NULL, anonymous, RC4, 3DES
 * or IDEA. */
static void test_default_grades(void **state)
{
    buf_t err = BUF_INIT;
    SSL_CTX *ctx = tls_server_ctx_new(1, &err);
    if (ctx == NULL)
        fail_msg("mandatory server ctx: %s", err.data);
    STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(ctx);
    int n12 = 0;
    for (int i = 0; i < sk_SSL_CIPHER_num(sk); i++) {
        const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);
        if (strncmp(SSL_CIPHER_get_name(c), "TLS_", 4) == 0) /* TLS 1.3: not graded */
            continue;
        n12++;
        int kx = SSL_CIPHER_get_kx_nid(c);
        if ((kx != NID_kx_ecdhe && kx != NID_kx_dhe) || !SSL_CIPHER_is_aead(c) ||
            SSL_CIPHER_get_auth_nid(c) == NID_auth_null)
            fail_msg("mandatory grade offers %s", SSL_CIPHER_get_name(c));
    }
    assert_true(n12 >= 4);
    SSL_CTX_free(ctx);
    ctx = tls_server_ctx_new(0, &err);
    assert_non_null(ctx);
    sk = SSL_CTX_get_ciphers(ctx);
    int krsa = 0, cbc = 0;
    for (int i = 0; i < sk_SSL_CIPHER_num(sk); i++) {
        const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);
        int enc = SSL_CIPHER_get_cipher_nid(c);
        if (enc == NID_undef || enc == NID_rc4 || enc == NID_des_ede3_cbc || enc == NID_idea_cbc ||
            SSL_CIPHER_get_auth_nid(c) == NID_auth_null)
            fail_msg("opportunistic grade offers %s", SSL_CIPHER_get_name(c));
        krsa += SSL_CIPHER_get_kx_nid(c) == NID_kx_rsa;
        cbc += !SSL_CIPHER_is_aead(c);
    }
    assert_true(krsa > 0 && cbc > 0); /* still broad for old MTAs */
    SSL_CTX_free(ctx);
    buf_destroy(&err);
}

/* The cipher the client and a TLS 1.2-only server agree on at a level. */
static void negotiated(tls_level_t level, buf_t *summary)
{
    struct hs h;
    handshake(&h, "mx.example.test", level);
    assert_int_equal(h.cli_rc, 1);
    tls_summary(h.c, summary);
    hs_done(&h);
}

static void test_client_ciphers_by_level(void **state)
{
    buf_t s = BUF_INIT, err = BUF_INIT;
    conf_set("smtpd_tls_protocols", "TLSv1.2");
    /* the server prefers the strongest; the client's list decides */
    conf_set("tls_high_cipherlist", "ECDHE-ECDSA-AES128-GCM-SHA256");
    conf_set("smtp_tls_mandatory_ciphers", "high");
    negotiated(TLS_LEV_MAY, &s);
    assert_non_null(strstr(s.data, "ECDHE-ECDSA-AES256-GCM-SHA384"));
    negotiated(TLS_LEV_ENCRYPT, &s);
    assert_non_null(strstr(s.data, "ECDHE-ECDSA-AES128-GCM-SHA256"));
    /* opportunistic grade and exclusions */
    reset_conf(state);
    conf_set("smtpd_tls_protocols", "TLSv1.2");
    conf_set("smtp_tls_exclude_ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384");
    conf_set("smtp_tls_mandatory_exclude_ciphers", "ECDHE-ECDSA-CHACHA20-POLY1305");
    negotiated(TLS_LEV_MAY, &s);
    assert_null(strstr(s.data, "ECDHE-ECDSA-AES256-GCM-SHA384"));
    negotiated(TLS_LEV_VERIFY, &s); /* handshake only: the name is judged later */
    assert_null(strstr(s.data, "ECDHE-ECDSA-AES256-GCM-SHA384"));
    assert_null(strstr(s.data, "ECDHE-ECDSA-CHACHA20-POLY1305"));
    /* a list with nothing left is a configuration error naming the parameters */
    conf_set("smtp_tls_mandatory_exclude_ciphers", "ALL");
    assert_null(tls_client_ctx_new(&err));
    assert_non_null(strstr(err.data, "smtp_tls_mandatory_ciphers/smtp_tls_exclude_ciphers/"
                                     "smtp_tls_mandatory_exclude_ciphers: no cipher left"));
    reset_conf(state);
    conf_set("smtp_tls_ciphers", "bogus");
    assert_null(tls_client_ctx_new(&err));
    assert_non_null(strstr(err.data, "smtp_tls_ciphers: unknown cipher grade \"bogus\""));
    buf_destroy(&s);
    buf_destroy(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_may_handshake, reset_conf),
        cmocka_unit_test_setup(test_no_sni_for_ip, reset_conf),
        cmocka_unit_test_setup(test_verify_names, reset_conf),
        cmocka_unit_test_setup(test_untrusted, reset_conf),
        cmocka_unit_test_setup(test_chain_file, reset_conf),
        cmocka_unit_test_setup(test_protocol_parse, reset_conf),
        cmocka_unit_test_setup(test_protocol_handshake, reset_conf),
        cmocka_unit_test_setup(test_key_errors, reset_conf),
        cmocka_unit_test_setup(test_policy_map, reset_conf),
        cmocka_unit_test_setup(test_cipher_grades, reset_conf),
        cmocka_unit_test_setup(test_server_mandatory_ciphers, reset_conf),
        cmocka_unit_test_setup(test_default_grades, reset_conf),
        cmocka_unit_test_setup(test_client_ciphers_by_level, reset_conf),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
