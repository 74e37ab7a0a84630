/* test_dkim.c - the DKIM signer (common/glue/dkim.c, dkim_key.c):
 * canonicalisation against RFC 6376's example and body hashes computed
 * by dkimpy, split invariance, header selection and over-signing, the
 * key checks that refuse bad files, the key table with 10,000 domains. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/glue/dict.h"
#include "common/glue/dkim.h"
#include "common/util/buf.h"
#include "common/util/log.h"

static char dir[64];
static buf_t rsa_path, ed_path;

static int setup(void **state)
{
    buf_t txt = BUF_INIT, err = BUF_INIT;
    log_init("test_dkim");
    log_open("/dev/null");
    str_lcpy(dir, "/tmp/test_dkim.XXXXXX", sizeof(dir));
    if (!mkdtemp(dir))
        return -1;
    buf_printf(&rsa_path, "%s/rsa.key", dir);
    buf_printf(&ed_path, "%s/ed.key", dir);
    int rc = dkim_key_generate(rsa_path.data, DKIM_RSA_SHA256, 0, &txt, &err);
    if (rc == 0)
        rc = dkim_key_generate(ed_path.data, DKIM_ED25519_SHA256, 0, &txt, &err);
    buf_destroy(&txt);
    buf_destroy(&err);
    return rc;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    buf_destroy(&rsa_path);
    buf_destroy(&ed_path);
    return system(cmd) == 0 ? 0 : -1;
}

/* RFC 6376 3.4.5, both canonicalisations of header and body. */
static void test_rfc6376_example(void **state)
{
    buf_t out = BUF_INIT;
    const char *h1 = "A: X", *h2 = "B : Y\t\r\n\tZ  ";
    const char *body = " C \r\nD \t E\r\n\r\n\r\n";
    dkim_canon_header(DKIM_RELAXED, h1, strlen(h1), &out);
    dkim_canon_header(DKIM_RELAXED, h2, strlen(h2), &out);
    assert_string_equal(buf_str(&out), "a:X\r\nb:Y Z\r\n");
    buf_reset(&out);
    dkim_canon_header(DKIM_SIMPLE, h2, strlen(h2), &out);
    assert_string_equal(buf_str(&out), "B : Y\t\r\n\tZ  \r\n");
    buf_reset(&out);
    dkim_canon_body(DKIM_RELAXED, body, strlen(body), &out);
    assert_string_equal(buf_str(&out), " C\r\nD E\r\n");
    buf_reset(&out);
    dkim_canon_body(DKIM_SIMPLE, body, strlen(body), &out);
    assert_string_equal(buf_str(&out), " C \r\nD \t E\r\n");
    buf_reset(&out);
    dkim_canon_body(DKIM_SIMPLE, "", 0, &out);
    assert_string_equal(buf_str(&out), "\r\n");
    buf_reset(&out);
    dkim_canon_body(DKIM_RELAXED, "\r\n\r\n", 4, &out);
    assert_string_equal(buf_str(&out), "");
    buf_destroy(&out);
}

static char *signed_headers[] = { "From", "To", "Subject", "Date", "Message-ID", "Reply-To", NULL };
static char *oversigned[] = { "From", NULL };

static struct dkim_sign_config config(enum dkim_canon h, enum dkim_canon b)
{
    struct dkim_sign_config cf = { h, b, signed_headers, oversigned, 0, 100000 };
    return cf;
}

static struct dkim_key *key(enum dkim_alg a)
{
    buf_t err = BUF_INIT;
    struct dkim_key *k =
        dkim_key_load(a == DKIM_RSA_SHA256 ? rsa_path.data : ed_path.data, a, "sel", &err);
    if (!k)
        fail_msg("%s", buf_str(&err));
    buf_destroy(&err);
    return k;
}

/* Sign msg fed in pieces of `step` bytes (0: whole). */
static void sign(const struct dkim_sign_config *cf, const struct dkim_key *k, const char *msg,
                 size_t len, size_t step, buf_t *sig)
{
    buf_t err = BUF_INIT;
    struct dkim_msg *m = dkim_msg_new(cf);
    for (size_t off = 0; off < len;) {
        size_t n = step == 0 || step > len - off ? len - off : step;
        dkim_msg_feed(m, msg + off, n);
        off += n;
    }
    dkim_msg_end(m);
    buf_reset(sig);
    assert_int_equal(dkim_msg_sign(m, k, "example.com", 1700000000, sig, &err), 0);
    dkim_msg_free(m);
    buf_destroy(&err);
}

/* The value of tag t= in a signature (unfolded), into out. */
static void tag(const char *sig, const char *t, buf_t *out)
{
    size_t n = strlen(t);
    const char *p = sig;
    while ((p = strstr(p, t)) != NULL) {
        if (p > sig && (p[-1] == ' ' || p[-1] == '\t') && p[n] == '=')
            break;
        p++;
    }
    assert_non_null(p);
    buf_reset(out);
    for (p += n + 1; *p && *p != ';'; p++)
        if (*p != '\r' && *p != '\n' && *p != '\t' && *p != ' ')
            buf_putc(out, *p);
}

/* bh= against dkimpy's canonicalize_body + SHA-256 (python3-dkim). */
static void test_body_hash_dkimpy(void **state)
{
    static const struct {
        const char *body;
        const char *simple, *relaxed;
    } v[] = {
        { "", "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=",
          "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" },
        { "\r\n\r\n", "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=",
          "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" },
        { " C \r\nD \t E\r\n\r\n\r\n", "NOeivbQlDH9TmNKJUw7D53wZfsk8YMZ/hTuVVwTgi8s=",
          "unak6JHq0wL+Q1HP7dW1tjBx9FLA6DffoZ0qrLwbbpo=" },
        { "Hello  world \t\r\n\r\nline2\r\n", "t+QC3mQmJO57jMmggcUocTiYRFTbbQVEphjdpPoagdY=",
          "zPtavfoXuGYdzjuUm6d7pusM1hMk8fWSf8k8LcU1pgM=" },
        /* delivery adds the CRLF a last line lacks; so does DKIM */
        { "no newline at end", "m0HzRsjJ9ocCkcnD1VrVsrsQXDddbX6X1Nt9Nsvdmkk=",
          "m0HzRsjJ9ocCkcnD1VrVsrsQXDddbX6X1Nt9Nsvdmkk=" },
        { "a\r\n \r\n\t\r\n", "AO5jBkZ1qJv2wL9RXTvXnWmvcTCqrDicq2oXizsopgQ=",
          "jkYhN5eG70Kk/sFVzVJcKR3X2zwf3jR4Ui9PYcA/0b0=" },
        /* bare LF is sent as CRLF, so it is hashed as CRLF */
        { "Hello  world \t\n\nline2\n", "t+QC3mQmJO57jMmggcUocTiYRFTbbQVEphjdpPoagdY=",
          "zPtavfoXuGYdzjuUm6d7pusM1hMk8fWSf8k8LcU1pgM=" },
    };
    struct dkim_key *k = key(DKIM_RSA_SHA256);
    buf_t msg = BUF_INIT, sig = BUF_INIT, bh = BUF_INIT;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        buf_reset(&msg);
        buf_printf(&msg, "From: a@example.com\r\n\r\n%s", v[i].body);
        for (size_t step = 0; step < 8; step++) {
            struct dkim_sign_config cs = config(DKIM_SIMPLE, DKIM_SIMPLE);
            struct dkim_sign_config cr = config(DKIM_RELAXED, DKIM_RELAXED);
            sign(&cs, k, msg.data, msg.len, step, &sig);
            tag(sig.data, "bh", &bh);
            assert_string_equal(bh.data, v[i].simple);
            sign(&cr, k, msg.data, msg.len, step, &sig);
            tag(sig.data, "bh", &bh);
            assert_string_equal(bh.data, v[i].relaxed);
        }
    }
    dkim_key_free(k);
    buf_destroy(&msg);
    buf_destroy(&sig);
    buf_destroy(&bh);
}

/* Any split of the same content gives the same signature (RSA PKCS#1
 * v1.5 and Ed25519 are deterministic); a changed byte changes it. */
static void test_split_invariance(void **state)
{
    const char *msg = "Received: from x\r\n\tby y\r\nFrom: \"A\" <a@Example.COM>\r\n"
                      "To: b@example.net\r\nSubject:  hi \r\n\tthere\r\n\r\n"
                      ".dot\r\n  spaced   line  \r\nbare\nlf\rcr\r\n\r\n\r\n";
    size_t len = strlen(msg);
    for (int a = 0; a < 2; a++) {
        struct dkim_key *k = key(a ? DKIM_ED25519_SHA256 : DKIM_RSA_SHA256);
        struct dkim_sign_config cf = config(DKIM_RELAXED, DKIM_RELAXED);
        buf_t whole = BUF_INIT, part = BUF_INIT;
        sign(&cf, k, msg, len, 0, &whole);
        for (size_t step = 1; step <= 9; step++) {
            sign(&cf, k, msg, len, step, &part);
            assert_string_equal(whole.data, part.data);
        }
        char *changed = strdup(msg);
        changed[len - 10] = 'X';
        sign(&cf, k, changed, len, 0, &part);
        assert_string_not_equal(whole.data, part.data);
        free(changed);
        dkim_key_free(k);
        buf_destroy(&whole);
        buf_destroy(&part);
    }
}

/* h= lists each present field once per instance, From once more; tags. */
static void test_header_list(void **state)
{
    const char *msg = "From: a@example.com\r\nTo: x@y\r\nTo: z@y\r\nX-Other: 1\r\n\r\nbody\r\n";
    struct dkim_key *k = key(DKIM_ED25519_SHA256);
    struct dkim_sign_config cf = config(DKIM_RELAXED, DKIM_SIMPLE);
    buf_t sig = BUF_INIT, v = BUF_INIT;
    sign(&cf, k, msg, strlen(msg), 0, &sig);
    assert_true(strncmp(sig.data, "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/simple;", 56) ==
                0);
    tag(sig.data, "h", &v);
    assert_string_equal(v.data, "From:From:To:To");
    tag(sig.data, "t", &v);
    assert_string_equal(v.data, "1700000000");
    tag(sig.data, "s", &v);
    assert_string_equal(v.data, "sel");
    assert_null(strstr(sig.data, " l="));
    assert_null(strstr(sig.data, " x="));
    /* every line of the field ends CRLF and stays under 80 columns */
    for (const char *p = sig.data; *p;) {
        const char *e = strstr(p, "\r\n");
        assert_non_null(e);
        assert_true(e - p < 80);
        p = e + 2;
    }
    cf.ttl = 3600;
    sign(&cf, k, msg, strlen(msg), 0, &sig);
    tag(sig.data, "x", &v);
    assert_string_equal(v.data, "1700003600");
    dkim_key_free(k);
    buf_destroy(&sig);
    buf_destroy(&v);
}

static void test_from_domain(void **state)
{
    static const struct {
        const char *hdr, *dom;
    } v[] = {
        { "From: a@Example.COM\r\n\r\n", "example.com" },
        { "Subject: x\r\nfrom :\"Name, with <comma>\" <b@sub.example.org>\r\n\r\n",
          "sub.example.org" },
        { "From: Name\r\n <c@folded.example>\r\n\r\nb", "folded.example" },
        { "From: no address\r\n\r\n", NULL },
        { "To: a@b.example\r\n\r\n", NULL },
    };
    struct dkim_sign_config cf = config(DKIM_RELAXED, DKIM_RELAXED);
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        struct dkim_msg *m = dkim_msg_new(&cf);
        dkim_msg_feed(m, v[i].hdr, strlen(v[i].hdr));
        dkim_msg_end(m);
        if (v[i].dom)
            assert_string_equal(dkim_msg_from_domain(m), v[i].dom);
        else
            assert_null(dkim_msg_from_domain(m));
        dkim_msg_free(m);
    }
}

static void write_pem(const char *path, EVP_PKEY *pk, mode_t mode)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_true(PEM_write_PrivateKey(fp, pk, NULL, NULL, 0, NULL, NULL));
    fclose(fp);
    chmod(path, mode);
}

static void expect_refused(const char *path, enum dkim_alg a, const char *why)
{
    buf_t err = BUF_INIT;
    assert_null(dkim_key_load(path, a, "s", &err));
    assert_non_null(strstr(buf_str(&err), path));
    if (!strstr(buf_str(&err), why))
        fail_msg("\"%s\" lacks \"%s\"", buf_str(&err), why);
    buf_destroy(&err);
}

static void test_bad_keys(void **state)
{
    buf_t p = BUF_INIT, txt = BUF_INIT, err = BUF_INIT;
    EVP_PKEY *short_rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    buf_printf(&p, "%s/short.key", dir);
    write_pem(p.data, short_rsa, 0600);
    expect_refused(p.data, DKIM_RSA_SHA256, "too short");
    EVP_PKEY_free(short_rsa);
    expect_refused(ed_path.data, DKIM_RSA_SHA256, "not an RSA key");
    expect_refused(rsa_path.data, DKIM_ED25519_SHA256, "not an Ed25519 key");
    chmod(rsa_path.data, 0644);
    expect_refused(rsa_path.data, DKIM_RSA_SHA256, "group or others");
    chmod(rsa_path.data, 0640);
    expect_refused(rsa_path.data, DKIM_RSA_SHA256, "group or others");
    chmod(rsa_path.data, 0600);
    buf_reset(&p);
    buf_printf(&p, "%s/missing.key", dir);
    expect_refused(p.data, DKIM_RSA_SHA256, "No such file");
    buf_reset(&p);
    buf_printf(&p, "%s/text.key", dir);
    FILE *fp = fopen(p.data, "w");
    fputs("hello\n", fp);
    fclose(fp);
    chmod(p.data, 0600);
    expect_refused(p.data, DKIM_RSA_SHA256, "not a PEM private key");
    /* keygen never overwrites; too short is refused */
    assert_int_equal(dkim_key_generate(rsa_path.data, DKIM_RSA_SHA256, 2048, &txt, &err), -1);
    assert_non_null(strstr(buf_str(&err), "File exists"));
    buf_reset(&p);
    buf_printf(&p, "%s/new.key", dir);
    assert_int_equal(dkim_key_generate(p.data, DKIM_RSA_SHA256, 1024, &txt, &err), -1);
    assert_int_equal(access(p.data, F_OK), -1);
    buf_destroy(&p);
    buf_destroy(&txt);
    buf_destroy(&err);
}

static void write_table(const char *name, const char *text, buf_t *spec)
{
    buf_reset(spec);
    buf_printf(spec, "%s/%s", dir, name);
    FILE *fp = fopen(spec->data, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    buf_t err = BUF_INIT;
    assert_int_equal(dict_build(spec->data, &err), 0);
    buf_destroy(&err);
    buf_reset(spec);
    buf_printf(spec, "hash:%s/%s", dir, name);
}

/* 10,000 domains sharing two key files load once each; lookups work. */
static void test_keyring_10000(void **state)
{
    buf_t text = BUF_INIT, spec = BUF_INIT, err = BUF_INIT;
    for (int i = 0; i < 10000; i++)
        buf_printf(&text, "d%d.example s%d:%s:%s%s\n", i, i, i % 2 ? "ed25519" : "rsa",
                   i % 2 ? ed_path.data : rsa_path.data, ""); /* one key each */
    buf_printf(&text, "both.example a:rsa-sha256:%s, b:ed25519-sha256:%s\n", rsa_path.data,
               ed_path.data);
    write_table("keys", text.data, &spec);
    struct dkim_keyring *kr = dkim_keyring_load(spec.data, &err);
    if (!kr)
        fail_msg("%s", buf_str(&err));
    assert_int_equal(dkim_keyring_count(kr), 10001);
    const struct dkim_key *k[DKIM_MAX_KEYS];
    assert_int_equal(dkim_keyring_find(kr, "D4711.Example", k), 1);
    assert_string_equal(dkim_key_selector(k[0]), "s4711");
    assert_int_equal(dkim_key_alg(k[0]), DKIM_ED25519_SHA256);
    assert_int_equal(dkim_keyring_find(kr, "both.example", k), 2);
    assert_int_equal(dkim_key_alg(k[0]), DKIM_RSA_SHA256);
    assert_int_equal(dkim_key_alg(k[1]), DKIM_ED25519_SHA256);
    assert_int_equal(dkim_keyring_find(kr, "other.example", k), 0);
    dkim_keyring_free(kr);
    buf_destroy(&text);
    buf_destroy(&spec);
    buf_destroy(&err);
}

/* A bad entry names the table's source line and the key file. */
static void test_keyring_errors(void **state)
{
    buf_t spec = BUF_INIT, err = BUF_INIT, text = BUF_INIT;
    chmod(rsa_path.data, 0644);
    buf_printf(&text, "# keys\nok.example s:ed25519:%s\nbad.example s:rsa:%s\n", ed_path.data,
               rsa_path.data);
    write_table("bad", text.data, &spec);
    assert_null(dkim_keyring_load(spec.data, &err));
    assert_non_null(strstr(buf_str(&err), "/bad, line 3"));
    assert_non_null(strstr(buf_str(&err), rsa_path.data));
    chmod(rsa_path.data, 0600);
    write_table("syntax", "x.example s:sha1:/k\n", &spec);
    assert_null(dkim_keyring_load(spec.data, &err));
    assert_non_null(strstr(buf_str(&err), "unknown algorithm"));
    write_table("syntax2", "x.example selector-only\n", &spec);
    assert_null(dkim_keyring_load(spec.data, &err));
    assert_non_null(strstr(buf_str(&err), "line 1"));
    buf_reset(&text);
    buf_printf(&text, "x.example a:rsa:%s b:rsa:%s c:ed25519:%s\n", rsa_path.data, rsa_path.data,
               ed_path.data);
    write_table("three", text.data, &spec);
    assert_null(dkim_keyring_load(spec.data, &err));
    assert_non_null(strstr(buf_str(&err), "more than 2 keys"));
    struct dkim_keyring *kr = dkim_keyring_load("", &err);
    assert_non_null(kr);
    assert_int_equal(dkim_keyring_count(kr), 0);
    dkim_keyring_free(kr);
    buf_destroy(&spec);
    buf_destroy(&err);
    buf_destroy(&text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc6376_example),  cmocka_unit_test(test_body_hash_dkimpy),
        cmocka_unit_test(test_split_invariance), cmocka_unit_test(test_header_list),
        cmocka_unit_test(test_from_domain),      cmocka_unit_test(test_bad_keys),
        cmocka_unit_test(test_keyring_10000),    cmocka_unit_test(test_keyring_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
