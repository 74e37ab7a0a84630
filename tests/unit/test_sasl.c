/* test_sasl.c - SMTP AUTH through real Cyrus SASL and a real sasldb.
 *
 * The group setup builds, in a temp directory, a sasldb with Debian's
 * saslpasswd2 and an smtpd.conf pointing at it (auxprop/sasldb, PLAIN LOGIN
 * CRAM-MD5), then initialises Cyrus from it via cyrus_sasl_config_path.
 * Every exchange runs through the asynchronous API: worker threads, the
 * eventfd hand-back and a real libevent loop. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/util/buf.h"
#include "common/mail/conf.h"
#include "common/util/log.h"
#include "common/glue/sasl.h"

#define REALM "example.test"
#define USER  "alice"
#define PASS  "s3cret pass"

static char tmpdir[] = "/tmp/postino-test-sasl-XXXXXX";

struct waiter {
    int done;
    psasl_status_t st;
    char challenge[1024];
    char user[256];
    char mech[32];
    char reason[256];
};

struct ctx {
    struct event_base *base;
    struct psasl_pool *pool;
};

/* ---- fixtures ---- */

static void write_file(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static int make_sasldb(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "/usr/sbin/saslpasswd2 -f %s/sasldb2 -c -p -u %s %s", tmpdir, REALM,
             USER);
    FILE *fp = popen(cmd, "w");
    if (fp == NULL)
        return -1;
    fputs(PASS, fp);
    int st = pclose(fp);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static void set_defaults(void)
{
    conf_set("cyrus_sasl_config_path", tmpdir);
    conf_set("smtpd_sasl_path", "smtpd");
    conf_set("smtpd_sasl_local_domain", REALM);
    conf_set("myhostname", "mx.example.test");
    conf_set("smtpd_sasl_security_options", "noanonymous");
    conf_set("smtpd_sasl_tls_security_options", "$smtpd_sasl_security_options");
    conf_set("smtpd_sasl_max_line", "12288");
}

static int group_setup(void **state)
{
    log_init("test_sasl");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    char conf[1024];
    snprintf(conf, sizeof(conf),
             "pwcheck_method: auxprop\n"
             "auxprop_plugin: sasldb\n"
             "sasldb_path: %s/sasldb2\n"
             "mech_list: PLAIN LOGIN CRAM-MD5\n",
             tmpdir);
    write_file("smtpd.conf", conf);
    if (make_sasldb() != 0)
        return -1;
    set_defaults();
    buf_t err = BUF_INIT;
    int rc = psasl_init(&err);
    if (rc != 0)
        fprintf(stderr, "psasl_init: %s\n", buf_str(&err));
    buf_destroy(&err);
    return rc;
}

static int group_teardown(void **state)
{
    psasl_shutdown();
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static int setup(void **state)
{
    set_defaults();
    struct ctx *c = calloc(1, sizeof(*c));
    c->base = event_base_new();
    c->pool = psasl_pool_new(c->base, 3);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    psasl_pool_free(c->pool);
    event_base_free(c->base);
    free(c);
    return 0;
}

/* ---- driving the loop ---- */

static int g_total; /* callbacks run, all sessions */

static void on_done(struct psasl_session *ss, const struct psasl_result *r, void *arg)
{
    struct waiter *w = arg;
    w->done++;
    g_total++;
    w->st = r->status;
    snprintf(w->challenge, sizeof(w->challenge), "%s", r->challenge);
    snprintf(w->user, sizeof(w->user), "%s", r->username);
    snprintf(w->mech, sizeof(w->mech), "%s", r->mechanism);
    snprintf(w->reason, sizeof(w->reason), "%s", r->reason);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(arg);
}

/* Run the loop until *done reaches want or 10 s pass. */
static void loop_until(struct ctx *c, const int *done, int want)
{
    struct event *t = evtimer_new(c->base, on_timeout, c->base);
    struct timeval tv = { 0, 20000 };
    for (int i = 0; i < 500 && *done < want; i++) {
        evtimer_add(t, &tv);
        event_base_loop(c->base, EVLOOP_ONCE);
    }
    event_free(t);
}

/* Run the loop for about ms milliseconds. */
static void spin(struct ctx *c, int ms)
{
    struct event *t = evtimer_new(c->base, on_timeout, c->base);
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(t, &tv);
    event_base_dispatch(c->base);
    event_free(t);
}

static psasl_status_t do_start(struct ctx *c, struct psasl_session *ss, struct waiter *w,
                               const char *mech, const char *initial)
{
    memset(w, 0, sizeof(*w));
    psasl_start(ss, mech, initial, on_done, w);
    assert_int_equal(w->done, 0); /* never called from inside psasl_start */
    assert_true(psasl_busy(ss));
    loop_until(c, &w->done, 1);
    assert_int_equal(w->done, 1);
    assert_false(psasl_busy(ss));
    return w->st;
}

static psasl_status_t do_step(struct ctx *c, struct psasl_session *ss, struct waiter *w,
                              const char *line)
{
    memset(w, 0, sizeof(*w));
    psasl_step(ss, line, on_done, w);
    assert_int_equal(w->done, 0);
    loop_until(c, &w->done, 1);
    assert_int_equal(w->done, 1);
    return w->st;
}

static void b64(const void *data, size_t len, buf_t *out)
{
    buf_reset(out);
    psasl_b64_encode(data, len, out);
}

static const char *plain_response(const char *user, const char *pass, buf_t *out)
{
    buf_t raw = BUF_INIT;
    buf_putc(&raw, 0);
    buf_puts(&raw, user);
    buf_putc(&raw, 0);
    buf_puts(&raw, pass);
    b64(raw.data, raw.len, out);
    buf_destroy(&raw);
    return buf_str(out);
}

static struct psasl_session *new_session(struct ctx *c, unsigned ssf)
{
    struct psasl_session *ss = psasl_session_new(c->pool, "127.0.0.1;25", "127.0.0.1;40000", ssf);
    assert_non_null(ss);
    return ss;
}

static int has_mech(const char *list, const char *mech)
{
    char **v = str_split(list, " ", NULL);
    int found = 0;
    for (size_t i = 0; v[i]; i++)
        found |= strcmp(v[i], mech) == 0;
    strv_free(v);
    return found;
}

/* ---- tests ---- */

static void test_mechanism_list(void **state)
{
    struct ctx *c = *state;
    struct psasl_session *ss = new_session(c, 0);
    const char *m = psasl_mechanisms(ss);
    assert_true(has_mech(m, "PLAIN"));
    assert_true(has_mech(m, "LOGIN"));
    assert_true(has_mech(m, "CRAM-MD5"));
    assert_false(has_mech(m, "ANONYMOUS")); /* not in mech_list, and noanonymous */
    assert_null(strchr(m, ','));
    psasl_session_free(ss);
}

static void test_plain_initial_ok(void **state)
{
    struct ctx *c = *state;
    struct psasl_session *ss = new_session(c, 0);
    struct waiter w;
    buf_t r = BUF_INIT;
    assert_int_equal(do_start(c, ss, &w, "plain", plain_response(USER, PASS, &r)), PSASL_OK);
    assert_string_equal(w.user, USER "@" REALM); /* Cyrus adds the realm */
    assert_string_equal(w.mech, "PLAIN");
    buf_destroy(&r);
    psasl_session_free(ss);
}

static void test_plain_wrong_password(void **state)
{
    struct ctx *c = *state;
    struct psasl_session *ss = new_session(c, 0);
    struct waiter w;
    buf_t r = BUF_INIT;
    assert_int_equal(do_start(c, ss, &w, "PLAIN", plain_response(USER, "wrong", &r)), PSASL_FAIL);
    assert_string_equal(w.user, "");
    assert_true(strlen(w.reason) > 0);
    /* unknown user fails the same way */
    assert_int_equal(do_start(c, ss, &w, "PLAIN", plain_response("bob", PASS, &r)), PSASL_FAIL);
    /* and a correct retry on the same session still works */
    assert_int_equal(do_start(c, ss, &w, "PLAIN", plain_response(USER, PASS, &r)), PSASL_OK);
    buf_destroy(&r);
    psasl_session_free(ss);
}

static void test_plain_without_initial(void **state)
{
    struct ctx *c = *state;
    struct psasl_session *ss = new_session(c, 0);
    struct waiter w;
    buf_t r = BUF_INIT;
    assert_int_equal(do_start(c, ss, &w, "PLAIN", NULL), PSASL_CONTINUE);
    assert_string_equal(w.challenge, ""); /* "334 " */
    assert_int_equal(do_step(c, ss, &w, plain_response(USER, PASS, &r)), PSASL_OK);
    assert_string_equal(w.user, USER "@" REALM); /* Cyrus adds the realm */
    buf_destroy(&r);
    psasl_session_free(ss);
}

static void test_login_two_steps(void **state)
{
    struct ctx *c = *state;
    struct psasl_session *ss = new_session(c, 0);
    struct waiter w;
    buf_t r = BUF_INIT;
    assert_int_equal(do_start(c, ss, &w, "LOGIN", NULL), PSASL_CONTINUE);
    assert_string_equal(w.challenge, "VXNlcm5hbWU6"); /* "Username:" */
    b64(USER, strlen(USER), &r);
    assert_int_equal(do_step(c, ss, &w, buf_str(&r)), PSASL_CONTINUE);
    assert_string_equal(w.challenge, "UGFzc3dvcmQ6"); /* "Password:" */
    b64(PASS, strlen(PASS), &r);
    assert_int_equal(do_step(c, ss, &w, buf_str(&r)), PSASL_OK);
    assert_string_equal(w.user, USER "@" REALM); /* Cyrus adds the realm */
    assert_string_equal(w.mech, "LOGIN");
    buf_destroy(&r);
    psasl_session_free(ss);
}

static void test_login_wrong_password(void **state)
{
    struct ctx *c = *state;
    struct psasl_session *ss = new_session(c, 0);
    struct waiter w;
    buf_t r = BUF_INIT;
    b64(USER, strlen(USER), &r);
    assert_int_equal(do_start(c, ss, &w, "LOGIN", buf_str(&r)), PSASL_CONTINUE);
    assert_string_equal(w.challenge, "UGFzc3dvcmQ6");
    b64("nope", 4, &r);
    assert_int_equal(do_step(c, ss, &w, buf_str(&r)), PSASL_FAIL);
    buf_destroy(&r);
    psasl_session_free(ss);
}

static void test_cancel(void **state)
{
    struct ctx *c = *state;
    struct psasl_session *ss = new_session(c, 0);
    struct waiter w;
    buf_t r = BUF_INIT;
    assert_int_equal(do_start(c, ss, &w, "LOGIN", NULL), PSASL_CONTINUE);
    assert_int_equal(do_step(c, ss, &w, "*"), PSASL_CANCELLED);
    /* a new exchange after the cancel starts from scratch */
    assert_int_equal(do_start(c, ss, &w, "LOGIN", NULL), PSASL_CONTINUE);
    assert_string_equal(w.challenge, "VXNlcm5hbWU6");
    assert_int_equal(do_step(c, ss, &w, "*"), PSASL_CANCELLED);
    assert_int_equal(do_start(c, ss, &w, "PLAIN", plain_response(USER, PASS, &r)), PSASL_OK);
    buf_destroy(&r);
    psasl_session_free(ss);
}

static void test_bad_base64_and_long_line(void **state)
{
    struct ctx *c = *state;
    conf_set("smtpd_sasl_max_line", "600");
    struct psasl_session *ss = new_session(c, 0);
    struct waiter w;
    static const char *const bad[] = { "!!!!", "abc", "ab=c", "a===", "YWJj\r\n", "YW Jj", "*" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(do_start(c, ss, &w, "PLAIN", bad[i]), PSASL_BADPROT);
    assert_int_equal(do_start(c, ss, &w, "LOGIN", NULL), PSASL_CONTINUE);
    assert_int_equal(do_step(c, ss, &w, "not base64"), PSASL_BADPROT);
    /* over-long line, even if it is valid base64 */
    char longline[605];
    memset(longline, 'A', 604);
    longline[604] = '\0';
    assert_int_equal(do_start(c, ss, &w, "LOGIN", NULL), PSASL_CONTINUE);
    assert_int_equal(do_step(c, ss, &w, longline), PSASL_BADPROT);
    assert_int_equal(do_start(c, ss, &w, "PLAIN", longline), PSASL_BADPROT);
    /* garbage that is valid base64 reaches Cyrus and fails cleanly */
    assert_int_equal(do_start(c, ss, &w, "PLAIN", "AAAAAAAA"), PSASL_FAIL);
    assert_int_equal(do_start(c, ss, &w, "PLAIN", "YWxpY2U="), PSASL_FAIL);
    psasl_session_free(ss);
}

static void test_empty_initial_response(void **state)
{
    struct ctx *c = *state;
    struct psasl_session *ss = new_session(c, 0);
    struct waiter w;
    buf_t r = BUF_INIT;
    /* "=" is an empty initial response: LOGIN then asks for the user name */
    assert_int_equal(do_start(c, ss, &w, "LOGIN", "="), PSASL_CONTINUE);
    assert_string_equal(w.challenge, "VXNlcm5hbWU6");
    b64(USER, strlen(USER), &r);
    assert_int_equal(do_step(c, ss, &w, buf_str(&r)), PSASL_CONTINUE);
    b64(PASS, strlen(PASS), &r);
    assert_int_equal(do_step(c, ss, &w, buf_str(&r)), PSASL_OK);
    /* PLAIN with an empty message is an authentication failure, not a crash */
    struct psasl_session *s2 = new_session(c, 0);
    psasl_status_t st = do_start(c, s2, &w, "PLAIN", "=");
    assert_int_equal(st, PSASL_FAIL);
    buf_destroy(&r);
    psasl_session_free(s2);
    psasl_session_free(ss);
}

static void test_unknown_mechanism(void **state)
{
    struct ctx *c = *state;
    struct psasl_session *ss = new_session(c, 0);
    struct waiter w;
    static const char *const bad[] = { "FOO",     "ANONYMOUS",   "DIGEST-MD5",
                                       "",        "PLAIN LOGIN", "TOOLONGMECHANISMNAME1",
                                       "PL\x01IN" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(do_start(c, ss, &w, bad[i], NULL), PSASL_NOMECH);
    assert_int_equal(do_start(c, ss, &w, NULL, NULL), PSASL_NOMECH);
    psasl_session_free(ss);
}

static void test_noplaintext(void **state)
{
    struct ctx *c = *state;
    conf_set("smtpd_sasl_security_options", "noanonymous, noplaintext");
    struct psasl_session *ss = new_session(c, 0);
    const char *m = psasl_mechanisms(ss);
    assert_false(has_mech(m, "PLAIN"));
    assert_false(has_mech(m, "LOGIN"));
    assert_true(has_mech(m, "CRAM-MD5"));
    struct waiter w;
    buf_t r = BUF_INIT;
    assert_int_equal(do_start(c, ss, &w, "PLAIN", plain_response(USER, PASS, &r)), PSASL_NOMECH);
    psasl_session_free(ss);
    /* over TLS the same options allow PLAIN (external SSF), like Postfix */
    ss = new_session(c, 256);
    assert_true(has_mech(psasl_mechanisms(ss), "PLAIN"));
    assert_int_equal(do_start(c, ss, &w, "PLAIN", plain_response(USER, PASS, &r)), PSASL_OK);
    psasl_session_free(ss);
    /* and smtpd_sasl_tls_security_options is what applies with TLS */
    conf_set("smtpd_sasl_security_options", "noanonymous");
    conf_set("smtpd_sasl_tls_security_options", "noanonymous, nodictionary");
    ss = new_session(c, 256);
    assert_false(has_mech(psasl_mechanisms(ss), "PLAIN"));
    assert_false(has_mech(psasl_mechanisms(ss), "LOGIN"));
    psasl_session_free(ss);
    buf_destroy(&r);
}

static void test_cram_md5(void **state)
{
    struct ctx *c = *state;
    struct psasl_session *ss = new_session(c, 0);
    struct waiter w;
    assert_int_equal(do_start(c, ss, &w, "CRAM-MD5", NULL), PSASL_CONTINUE);
    buf_t chal = BUF_INIT, resp = BUF_INIT, out = BUF_INIT;
    assert_int_equal(psasl_b64_decode(w.challenge, strlen(w.challenge), &chal), 0);
    assert_true(chal.len > 0 && chal.data[0] == '<');
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    HMAC(EVP_md5(), PASS, (int)strlen(PASS), (const unsigned char *)chal.data, chal.len, mac,
         &maclen);
    buf_printf(&resp, "%s ", USER);
    for (unsigned i = 0; i < maclen; i++)
        buf_printf(&resp, "%02x", mac[i]);
    b64(resp.data, resp.len, &out);
    assert_int_equal(do_step(c, ss, &w, buf_str(&out)), PSASL_OK);
    assert_string_equal(w.user, USER "@" REALM); /* Cyrus adds the realm */
    assert_string_equal(w.mech, "CRAM-MD5");
    buf_destroy(&chal);
    buf_destroy(&resp);
    buf_destroy(&out);
    psasl_session_free(ss);
}

/* Owner goes away while the step is queued or running in a worker: no
 * callback may run afterwards, and the session is reclaimed. */
static void test_free_while_busy(void **state)
{
    struct ctx *c = *state;
    struct waiter w[8];
    buf_t r = BUF_INIT;
    plain_response(USER, PASS, &r);
    for (int i = 0; i < 8; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        struct psasl_session *ss = new_session(c, 0);
        psasl_start(ss, "PLAIN", buf_str(&r), on_done, &w[i]);
        if (i % 2)
            usleep(20000); /* let a worker pick it up first */
        psasl_session_free(ss);
    }
    /* a synchronous result pending in the done queue, then freed */
    struct psasl_session *ss = new_session(c, 0);
    struct waiter wx;
    memset(&wx, 0, sizeof(wx));
    psasl_start(ss, "NOSUCH", NULL, on_done, &wx);
    psasl_session_free(ss);
    spin(c, 300);
    for (int i = 0; i < 8; i++)
        assert_int_equal(w[i].done, 0);
    assert_int_equal(wx.done, 0);
    buf_destroy(&r);
}

/* The callback frees its own session (smtpd dropping the client). */
static void free_in_callback(struct psasl_session *ss, const struct psasl_result *r, void *arg)
{
    on_done(ss, r, arg);
    psasl_session_free(ss);
}

static void test_free_in_callback(void **state)
{
    struct ctx *c = *state;
    struct waiter w;
    memset(&w, 0, sizeof(w));
    buf_t r = BUF_INIT;
    struct psasl_session *ss = new_session(c, 0);
    psasl_start(ss, "PLAIN", plain_response(USER, PASS, &r), free_in_callback, &w);
    loop_until(c, &w.done, 1);
    assert_int_equal(w.done, 1);
    assert_int_equal(w.st, PSASL_OK);
    buf_destroy(&r);
}

/* Many sessions in flight at once across the worker threads. */
#define NCONC 24
static void test_concurrent_sessions(void **state)
{
    struct ctx *c = *state;
    struct psasl_session *ss[NCONC];
    struct waiter w[NCONC];
    buf_t good = BUF_INIT, bad = BUF_INIT;
    plain_response(USER, PASS, &good);
    plain_response(USER, "wrong", &bad);
    g_total = 0;
    for (int i = 0; i < NCONC; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        ss[i] = new_session(c, 0);
        psasl_start(ss[i], "PLAIN", buf_str(i % 3 ? &good : &bad), on_done, &w[i]);
    }
    loop_until(c, &g_total, NCONC);
    assert_int_equal(g_total, NCONC);
    for (int i = 0; i < NCONC; i++) {
        assert_int_equal(w[i].done, 1);
        assert_int_equal(w[i].st, i % 3 ? PSASL_OK : PSASL_FAIL);
        psasl_session_free(ss[i]);
    }
    buf_destroy(&good);
    buf_destroy(&bad);
}

/* Random client text as mechanism, initial response and steps: every call
 * ends in a defined status, never a crash (ASan build checks memory). */
static void test_random_input(void **state)
{
    struct ctx *c = *state;
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789+/=*- \t\x01\xff";
    unsigned seed = 12345;
    char text[64];
    struct waiter w;
    memset(&w, 0, sizeof(w));
    struct psasl_session *ss = new_session(c, 0);
    static const char *const mechs[] = { "PLAIN", "LOGIN", "CRAM-MD5", "XYZ" };
    for (int i = 0; i < 300; i++) {
        size_t n = (size_t)(rand_r(&seed) % 40);
        for (size_t k = 0; k < n; k++)
            text[k] = alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
        text[n] = '\0';
        /* valid base64 of random bytes half of the time */
        buf_t enc = BUF_INIT;
        if (i % 2)
            psasl_b64_encode(text, n, &enc);
        const char *line = i % 2 ? buf_str(&enc) : text;
        if (psasl_busy(ss) == 0 && w.st == PSASL_CONTINUE && i % 3)
            do_step(c, ss, &w, line);
        else
            do_start(c, ss, &w, mechs[i % 4], i % 5 ? line : NULL);
        assert_true(w.st >= PSASL_OK && w.st <= PSASL_NOMECH);
        buf_destroy(&enc);
    }
    psasl_session_free(ss);
}

static void test_security_flags(void **state)
{
    buf_t err = BUF_INIT;
    unsigned f = 0;
    conf_set("smtpd_sasl_security_options", "noanonymous, noplaintext nodictionary,noactive");
    assert_int_equal(psasl_security_flags("smtpd_sasl_security_options", &f, &err), 0);
    assert_int_equal(f, 0x0010 | 0x0001 | 0x0004 | 0x0002);
    conf_set("smtpd_sasl_security_options", "mutual_auth forward_secrecy");
    assert_int_equal(psasl_security_flags("smtpd_sasl_security_options", &f, &err), 0);
    assert_int_equal(f, 0x0040 | 0x0008);
    conf_set("smtpd_sasl_security_options", "");
    assert_int_equal(psasl_security_flags("smtpd_sasl_security_options", &f, &err), 0);
    assert_int_equal(f, 0);
    conf_set("smtpd_sasl_security_options", "noanonymous, bogus");
    assert_int_equal(psasl_security_flags("smtpd_sasl_security_options", &f, &err), -1);
    assert_non_null(strstr(buf_str(&err), "\"bogus\""));
    assert_non_null(strstr(buf_str(&err), "smtpd_sasl_security_options"));
    buf_destroy(&err);
}

static void test_base64(void **state)
{
    buf_t out = BUF_INIT;
    static const struct {
        const char *plain, *enc;
    } v[] = { { "", "" },
              { "f", "Zg==" },
              { "fo", "Zm8=" },
              { "foo", "Zm9v" },
              { "foob", "Zm9vYg==" },
              { "fooba", "Zm9vYmE=" },
              { "foobar", "Zm9vYmFy" } };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        buf_reset(&out);
        psasl_b64_encode(v[i].plain, strlen(v[i].plain), &out);
        assert_string_equal(buf_str(&out), v[i].enc);
        buf_reset(&out);
        assert_int_equal(psasl_b64_decode(v[i].enc, strlen(v[i].enc), &out), 0);
        assert_int_equal(out.len, strlen(v[i].plain));
        assert_memory_equal(buf_str(&out), v[i].plain, out.len);
    }
    static const char *const bad[] = { "Zg",     "Zg=",  "Z===", "====", "Zg==Zg==",
                                       "Zm9v\n", "Zm 9", "Zm9-", "Z=g=" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        buf_set(&out, "keep");
        assert_int_equal(psasl_b64_decode(bad[i], strlen(bad[i]), &out), -1);
        assert_string_equal(buf_str(&out), "keep"); /* nothing appended on error */
    }
    buf_destroy(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_security_flags),
        cmocka_unit_test_setup_teardown(test_mechanism_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_initial_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_wrong_password, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_without_initial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_two_steps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_wrong_password, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_base64_and_long_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_initial_response, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_mechanism, setup, teardown),
        cmocka_unit_test_setup_teardown(test_noplaintext, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cram_md5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_while_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_input, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
