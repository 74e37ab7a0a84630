/* test_anvil.c - anvil's counting (windows, expiry, the size cap,
 * per-owner release), its request protocol, the CIDR matcher and limit
 * decisions, and the non-blocking client against a real in-process
 * service (a UNIX socket in a temp dir served by anvil_serve.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smtpd/smtpd_anvil.h"
#include "anvil/anvil.h"
#include "anvil/anvil_rate.h"
#include "smtpd/smtpd_cidr.h"
#include "common/mail/conf.h"
#include "common/util/ipc.h"
#include "common/util/log.h"

#define W 2000 /* window, ms */

static void test_window_counting(void **state)
{
    struct anvil_table *t = anvil_table_new(W, 100);
    struct anvil_counts c;
    for (int k = 1; k <= 3; k++) {
        anvil_table_connect(t, "smtp:192.0.2.1", 1, 100 * k, &c);
        assert_int_equal(c.count, k);
        assert_int_equal(c.rate[ANVIL_EV_CONN], k);
    }
    assert_int_equal(anvil_table_event(t, "smtp:192.0.2.1", ANVIL_EV_MSG, 500, NULL), 1);
    assert_int_equal(anvil_table_event(t, "smtp:192.0.2.1", ANVIL_EV_MSG, 600, NULL), 2);
    assert_int_equal(anvil_table_event(t, "smtp:192.0.2.1", ANVIL_EV_RCPT, 700, &c), 1);
    assert_int_equal(c.rate[ANVIL_EV_MSG], 2);
    /* another client, another service: independent */
    anvil_table_connect(t, "smtp:192.0.2.2", 1, 800, &c);
    assert_int_equal(c.count, 1);
    anvil_table_lookup(t, "submission:192.0.2.1", 800, &c);
    assert_int_equal(c.count, 0);
    assert_int_equal(c.rate[ANVIL_EV_CONN], 0);
    assert_int_equal(anvil_table_size(t), 2); /* lookups create nothing */
    anvil_table_free(t);
}

static void test_window_expiry(void **state)
{
    struct anvil_table *t = anvil_table_new(W, 100);
    struct anvil_counts c;
    const char *id = "smtp:192.0.2.1";
    anvil_table_connect(t, id, 1, 0, &c);
    anvil_table_connect(t, id, 1, 1000, &c);
    assert_int_equal(c.rate[ANVIL_EV_CONN], 2);
    assert_int_equal(anvil_table_event(t, id, ANVIL_EV_AUTH_FAIL, 1999, NULL), 1);
    /* the fixed window opened at 0 ends at 2000: rates start over, the
     * concurrent count does not */
    anvil_table_lookup(t, id, 2000, &c);
    assert_int_equal(c.rate[ANVIL_EV_CONN], 0);
    assert_int_equal(c.rate[ANVIL_EV_AUTH_FAIL], 0);
    assert_int_equal(c.count, 2);
    anvil_table_connect(t, id, 1, 2500, &c);
    assert_int_equal(c.rate[ANVIL_EV_CONN], 1);
    assert_int_equal(c.count, 3);
    /* the new window opened at 2000 */
    assert_int_equal(anvil_table_event(t, id, ANVIL_EV_MSG, 3999, NULL), 1);
    assert_int_equal(anvil_table_event(t, id, ANVIL_EV_MSG, 4000, NULL), 1);
    anvil_table_free(t);
}

static void test_disconnect(void **state)
{
    struct anvil_table *t = anvil_table_new(W, 100);
    const char *id = "smtp:192.0.2.1";
    anvil_table_connect(t, id, 1, 0, NULL);
    anvil_table_connect(t, id, 2, 0, NULL);
    assert_int_equal(anvil_table_disconnect(t, id, 1, 10), 1);
    /* owner 1 has nothing left here: ignored, never below zero */
    assert_int_equal(anvil_table_disconnect(t, id, 1, 10), 1);
    assert_int_equal(anvil_table_disconnect(t, id, 3, 10), 1);
    assert_int_equal(anvil_table_disconnect(t, id, 2, 10), 0);
    assert_int_equal(anvil_table_disconnect(t, id, 2, 10), 0);
    assert_int_equal(anvil_table_disconnect(t, "smtp:unknown", 2, 10), 0);
    anvil_table_free(t);
}

static void test_release_owner(void **state)
{
    struct anvil_table *t = anvil_table_new(W, 100);
    struct anvil_counts c;
    anvil_table_connect(t, "smtp:a", 1, 0, NULL);
    anvil_table_connect(t, "smtp:a", 1, 0, NULL);
    anvil_table_connect(t, "smtp:b", 1, 0, NULL);
    anvil_table_connect(t, "smtp:a", 2, 0, NULL);
    assert_int_equal(anvil_table_release(t, 1), 3);
    anvil_table_lookup(t, "smtp:a", 1, &c);
    assert_int_equal(c.count, 1);
    assert_int_equal(c.rate[ANVIL_EV_CONN], 3); /* rates stay */
    anvil_table_lookup(t, "smtp:b", 1, &c);
    assert_int_equal(c.count, 0);
    assert_int_equal(anvil_table_release(t, 1), 0);
    /* a disconnect from the released owner arriving late changes nothing */
    assert_int_equal(anvil_table_disconnect(t, "smtp:a", 1, 2), 1);
    assert_int_equal(anvil_table_release(t, 2), 1);
    anvil_table_lookup(t, "smtp:a", 3, &c);
    assert_int_equal(c.count, 0);
    anvil_table_free(t);
}

static void test_expire(void **state)
{
    struct anvil_table *t = anvil_table_new(W, 100);
    anvil_table_event(t, "smtp:idle", ANVIL_EV_MSG, 0, NULL);
    anvil_table_connect(t, "smtp:busy", 1, 0, NULL);
    anvil_table_event(t, "smtp:recent", ANVIL_EV_MSG, 1500, NULL);
    assert_int_equal(anvil_table_expire(t, 1999), 0);
    assert_int_equal(anvil_table_size(t), 3);
    /* idle is gone; busy still has a connection; recent is in its window */
    assert_int_equal(anvil_table_expire(t, 2000), 1);
    assert_int_equal(anvil_table_size(t), 2);
    assert_int_equal(anvil_table_expire(t, 3499), 0);
    assert_int_equal(anvil_table_expire(t, 3500), 1);
    assert_int_equal(anvil_table_disconnect(t, "smtp:busy", 1, 3600), 0);
    assert_int_equal(anvil_table_expire(t, 5599), 0);
    assert_int_equal(anvil_table_expire(t, 5600), 1);
    assert_int_equal(anvil_table_size(t), 0);
    anvil_table_free(t);
}

static void test_cap(void **state)
{
    struct anvil_table *t = anvil_table_new(W, 3);
    struct anvil_counts c;
    anvil_table_event(t, "smtp:1", ANVIL_EV_MSG, 0, NULL);
    anvil_table_event(t, "smtp:2", ANVIL_EV_MSG, 1, NULL);
    anvil_table_event(t, "smtp:3", ANVIL_EV_MSG, 2, NULL);
    anvil_table_event(t, "smtp:1", ANVIL_EV_MSG, 3, NULL); /* 2 is now the oldest */
    anvil_table_event(t, "smtp:4", ANVIL_EV_MSG, 4, NULL);
    assert_int_equal(anvil_table_size(t), 3);
    assert_int_equal(anvil_table_stats(t)->evicted, 1);
    anvil_table_lookup(t, "smtp:2", 5, &c);
    assert_int_equal(c.rate[ANVIL_EV_MSG], 0);
    anvil_table_lookup(t, "smtp:1", 5, &c);
    assert_int_equal(c.rate[ANVIL_EV_MSG], 2);
    /* Clients with connections open are never evicted (that would reset
     * their concurrency count): the idle entries go, then the table grows
     * with the live ones, and the hash table keeps working. */
    char id[32];
    for (int k = 0; k < 5000; k++) {
        snprintf(id, sizeof id, "smtp:10.0.%d.%d", k / 256, k % 256);
        anvil_table_connect(t, id, 7, 10 + k, NULL);
    }
    assert_int_equal(anvil_table_size(t), 5000);
    anvil_table_lookup(t, "smtp:10.0.0.0", 6000, &c); /* k = 0, the oldest */
    assert_int_equal(c.count, 1);
    anvil_table_lookup(t, "smtp:10.0.19.135", 6000, &c); /* k = 4999 */
    assert_int_equal(c.count, 1);
    assert_int_equal(anvil_table_release(t, 7), 5000);
    /* Idle again: the next new client evicts instead of growing. */
    anvil_table_event(t, "smtp:new", ANVIL_EV_MSG, 6001, NULL);
    assert_int_equal(anvil_table_size(t), 5000);
    anvil_table_free(t);

    t = anvil_table_new(W, 20000);
    for (int k = 0; k < 20000; k++) {
        snprintf(id, sizeof id, "smtp:10.1.%d.%d", k / 256, k % 256);
        anvil_table_event(t, id, ANVIL_EV_RCPT, k, NULL);
    }
    assert_int_equal(anvil_table_size(t), 20000);
    anvil_table_lookup(t, "smtp:10.1.0.0", 19999, &c);
    assert_int_equal(c.rate[ANVIL_EV_RCPT], 0); /* window passed */
    assert_int_equal(anvil_table_expire(t, 30000), 20000);
    anvil_table_free(t);
}

static void test_stats(void **state)
{
    struct anvil_table *t = anvil_table_new(W, 100);
    anvil_table_connect(t, "smtp:a", 1, 0, NULL);
    anvil_table_connect(t, "smtp:b", 1, 5, NULL);
    anvil_table_connect(t, "smtp:b", 1, 7, NULL);
    anvil_table_event(t, "smtp:a", ANVIL_EV_RCPT, 9, NULL);
    const struct anvil_stats *st = anvil_table_stats(t);
    assert_int_equal(st->count.value, 2);
    assert_string_equal(st->count.ident, "smtp:b");
    assert_int_equal(st->count.at, 7);
    assert_int_equal(st->rate[ANVIL_EV_RCPT].value, 1);
    assert_int_equal(st->max_size, 2);
    anvil_table_stats_reset(t);
    assert_int_equal(st->count.value, 0);
    anvil_table_free(t);
}

/* Run one request record given as "name=value" pairs. */
static enum anvil_req_result req(struct anvil_table *t, unsigned long owner, attr_t *reply,
                                 const char *const *kv)
{
    attr_t a = ATTR_INIT;
    const char *why = "unset";
    for (; kv[0]; kv += 2)
        attr_add(&a, kv[0], kv[1]);
    enum anvil_req_result rc = anvil_table_request(t, owner, &a, reply, 100, &why);
    attr_destroy(&a);
    if (rc == ANVIL_REQ_OK)
        assert_null(why);
    else
        assert_true(why != NULL && *why != '\0');
    return rc;
}

#define REQ(t, o, r, ...) req(t, o, r, (const char *const[]){ __VA_ARGS__, NULL })

static void test_protocol(void **state)
{
    struct anvil_table *t = anvil_table_new(W, 100);
    attr_t r = ATTR_INIT;
    assert_int_equal(REQ(t, 1, &r, "proto", "1", "request", "connect", "ident", "smtp:1.2.3.4"),
                     ANVIL_REQ_OK);
    assert_string_equal(attr_get(&r, "status"), "ok");
    assert_string_equal(attr_get(&r, "count"), "1");
    assert_string_equal(attr_get(&r, "rate"), "1");
    assert_int_equal(REQ(t, 1, &r, "proto", "1", "request", "auth_fail", "ident", "smtp:1.2.3.4"),
                     ANVIL_REQ_OK);
    assert_string_equal(attr_get(&r, "rate"), "1");
    assert_int_equal(REQ(t, 1, &r, "proto", "1", "request", "auth", "ident", "smtp:1.2.3.4"),
                     ANVIL_REQ_OK);
    assert_string_equal(attr_get(&r, "rate"), "1");
    assert_string_equal(attr_get(&r, "auth_fail_rate"), "1");
    assert_int_equal(REQ(t, 1, &r, "proto", "1", "request", "lookup", "ident", "smtp:1.2.3.4"),
                     ANVIL_REQ_OK);
    assert_string_equal(attr_get(&r, "count"), "1");
    assert_string_equal(attr_get(&r, "message_rate"), "0");
    assert_string_equal(attr_get(&r, "auth_rate"), "1");
    assert_int_equal(REQ(t, 1, &r, "proto", "1", "request", "disconnect", "ident", "smtp:1.2.3.4"),
                     ANVIL_REQ_OK);
    assert_string_equal(attr_get(&r, "status"), "ok");
    assert_string_equal(attr_get(&r, "count"), "0");
    assert_int_equal(REQ(t, 1, &r, "proto", "1", "request", "status"), ANVIL_REQ_OK);
    assert_string_equal(attr_get(&r, "size"), "1");

    /* declined: answered, the connection goes on */
    assert_int_equal(REQ(t, 1, &r, "proto", "1", "request", "explode", "ident", "smtp:1.2.3.4"),
                     ANVIL_REQ_REFUSED);
    assert_string_equal(attr_get(&r, "status"), "fail");
    assert_string_equal(attr_get(&r, "reason"), "unknown request");
    /* malformed: nothing applied, the server drops the peer */
    static const char *const bad[][8] = {
        /* NULL-terminated pairs */
        { "proto", "1", "ident", "smtp:1.2.3.4", NULL, NULL }, /* no request */
        { "proto", "1", "request", "connect", NULL, NULL },
        { "proto", "1", "request", "connect", "ident", "" },
        { "proto", "1", "request", "connect", "ident", "1.2.3.4" },
        { "proto", "1", "request", "connect", "ident", "smtp:" },
        { "proto", "1", "request", "connect", "ident", ":1.2.3.4" },
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        assert_int_equal(req(t, 1, &r, bad[k]), ANVIL_REQ_MALFORMED);
    char longid[ANVIL_IDENT_MAX + 10];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    longid[4] = ':';
    assert_int_equal(REQ(t, 1, &r, "proto", "1", "request", "message", "ident", longid),
                     ANVIL_REQ_MALFORMED);
    assert_int_equal(anvil_table_size(t), 1);
    attr_destroy(&r);
    anvil_table_free(t);
}

static void test_cidr(void **state)
{
    static const struct {
        const char *net, *addr;
        int match;
    } cases[] = {
        { "127.0.0.0/8", "127.1.2.3", 1 },
        { "127.0.0.0/8", "128.0.0.1", 0 },
        { "192.0.2.7", "192.0.2.7", 1 },
        { "192.0.2.7", "192.0.2.8", 0 },
        { "10.0.0.0/9", "10.127.255.255", 1 },
        { "10.0.0.0/9", "10.128.0.0", 0 },
        { "0.0.0.0/0", "203.0.113.9", 1 },
        { "[::1]/128", "::1", 1 },
        { "[2001:db8::]/32", "2001:db8:ffff::1", 1 },
        { "[2001:db8::]/32", "2001:db9::1", 0 },
        { "127.0.0.0/8", "::ffff:127.0.0.1", 1 }, /* v4-mapped */
        { "127.0.0.0/8", "::1", 0 },
        { "[::1]/128", "127.0.0.1", 0 },
        { "127.0.0.0/8", "localhost", 0 },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct cidr c;
        unsigned char a[16];
        assert_int_equal(smtpd_cidr_parse(cases[k].net, &c), 0);
        int fam = smtpd_cidr_addr_bytes(cases[k].addr, a);
        int m = fam > 0 && smtpd_cidr_match(&c, fam, a);
        if (m != cases[k].match)
            fail_msg("%s in %s: %d", cases[k].addr, cases[k].net, m);
    }
    static const char *const badnets[] = { "",          "/8",         "10.0.0.0/33", "[::1]/129",
                                           "10.0.0.0/", "10.0.0.0/x", "example.com", "[]",
                                           "1.2.3" };
    for (size_t k = 0; k < sizeof badnets / sizeof badnets[0]; k++) {
        struct cidr c;
        if (smtpd_cidr_parse(badnets[k], &c) == 0)
            fail_msg("\"%s\" parsed", badnets[k]);
    }
    buf_t err = BUF_INIT;
    conf_set("smtpd_client_event_limit_exceptions", "10.0.0.0/8, [2001:db8::]/32 hash:/x");
    assert_int_equal(smtpd_cidr_list_validate("smtpd_client_event_limit_exceptions", &err), 0);
    assert_true(smtpd_anvil_exempt("10.9.8.7"));
    assert_true(smtpd_anvil_exempt("2001:db8::5"));
    assert_false(smtpd_anvil_exempt("192.0.2.1"));
    conf_set("smtpd_client_event_limit_exceptions", "10.0.0.0/8 bogus/3");
    assert_int_equal(smtpd_cidr_list_validate("smtpd_client_event_limit_exceptions", &err), -1);
    assert_non_null(strstr(buf_str(&err), "bogus/3"));
    conf_set("smtpd_client_event_limit_exceptions", "$mynetworks");
    assert_true(smtpd_anvil_exempt("127.0.0.1"));
    assert_false(smtpd_anvil_exempt("192.0.2.1"));
    buf_destroy(&err);
}

static void test_limits(void **state)
{
    struct anvil_counts c;
    memset(&c, 0, sizeof c);
    conf_set("smtpd_client_connection_count_limit", "2");
    conf_set("smtpd_client_connection_rate_limit", "0");
    conf_set("smtpd_client_message_rate_limit", "5");
    conf_set("smtpd_client_recipient_rate_limit", "0");
    conf_set("smtpd_client_auth_rate_limit", "3");
    conf_set("smtpd_client_auth_failure_limit", "2");
    c.count = 2;
    c.rate[ANVIL_EV_CONN] = 1000;
    assert_int_equal(smtpd_anvil_limit_exceeded(ANVIL_EV_CONN, &c), SMTPD_ANVIL_LIMIT_NONE);
    c.count = 3;
    assert_int_equal(smtpd_anvil_limit_exceeded(ANVIL_EV_CONN, &c), SMTPD_ANVIL_LIMIT_CONN_COUNT);
    assert_string_equal(smtpd_anvil_limit_param(SMTPD_ANVIL_LIMIT_CONN_COUNT),
                        "smtpd_client_connection_count_limit");
    conf_set("smtpd_client_connection_rate_limit", "999");
    c.count = 1;
    assert_int_equal(smtpd_anvil_limit_exceeded(ANVIL_EV_CONN, &c), SMTPD_ANVIL_LIMIT_CONN_RATE);
    c.rate[ANVIL_EV_MSG] = 5;
    assert_int_equal(smtpd_anvil_limit_exceeded(ANVIL_EV_MSG, &c), SMTPD_ANVIL_LIMIT_NONE);
    c.rate[ANVIL_EV_MSG] = 6;
    assert_int_equal(smtpd_anvil_limit_exceeded(ANVIL_EV_MSG, &c), SMTPD_ANVIL_LIMIT_MSG_RATE);
    c.rate[ANVIL_EV_RCPT] = 1000000;
    assert_int_equal(smtpd_anvil_limit_exceeded(ANVIL_EV_RCPT, &c), SMTPD_ANVIL_LIMIT_NONE);
    c.rate[ANVIL_EV_AUTH] = 1;
    c.rate[ANVIL_EV_AUTH_FAIL] = 1;
    assert_int_equal(smtpd_anvil_limit_exceeded(ANVIL_EV_AUTH, &c), SMTPD_ANVIL_LIMIT_NONE);
    c.rate[ANVIL_EV_AUTH_FAIL] = 2;
    assert_int_equal(smtpd_anvil_limit_exceeded(ANVIL_EV_AUTH, &c), SMTPD_ANVIL_LIMIT_AUTH_FAIL);
    assert_int_equal(smtpd_anvil_limit_exceeded(ANVIL_EV_AUTH_FAIL, &c),
                     SMTPD_ANVIL_LIMIT_AUTH_FAIL);
    c.rate[ANVIL_EV_AUTH] = 4;
    assert_int_equal(smtpd_anvil_limit_exceeded(ANVIL_EV_AUTH, &c), SMTPD_ANVIL_LIMIT_AUTH_RATE);
    c.unavailable = 1; /* fail open */
    assert_int_equal(smtpd_anvil_limit_exceeded(ANVIL_EV_AUTH, &c), SMTPD_ANVIL_LIMIT_NONE);
    assert_int_equal(smtpd_anvil_limit_exceeded(ANVIL_EV_MSG, &c), SMTPD_ANVIL_LIMIT_NONE);
}

/* ---- the client against a real in-process service ---- */

/* anvil's own serving code (anvil_serve.c) on a listener of the test's. */
struct tsrv {
    struct event_base *base;
    char path[256];
    int lfd;
    struct event *lev;
    struct anvil_table *t;
};

static void tsrv_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct tsrv *s = arg;
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0)
        anvil_serve_accept(s->base, fd, s->t);
}

static void tsrv_start(struct tsrv *s)
{
    s->lfd = ipc_listen_unix(s->path, 0600, 16);
    assert_true(s->lfd >= 0);
    s->lev = event_new(s->base, s->lfd, EV_READ | EV_PERSIST, tsrv_accept, s);
    event_add(s->lev, NULL);
    s->t = anvil_table_new(60000, 100);
}

/* The service dies: listener and connections gone. */
static void tsrv_stop(struct tsrv *s)
{
    anvil_serve_close_all();
    event_free(s->lev);
    close(s->lfd);
    unlink(s->path);
    anvil_table_free(s->t);
}

struct result {
    int n;
    struct anvil_counts c[16];
    void *arg[16];
};

static void on_counts(const struct anvil_counts *c, void *arg)
{
    struct result *r = *(struct result **)arg;
    assert_true(r->n < 16);
    r->arg[r->n] = arg;
    r->c[r->n++] = *c;
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
}

/* Run the loop until r->n reaches n (or 5 s pass). */
static void run_until(struct event_base *base, struct result *r, int n)
{
    struct timeval tv = { 0, 50000 };
    struct event *t = event_new(base, -1, EV_PERSIST, tick, NULL);
    event_add(t, &tv);
    for (int k = 0; k < 100 && r->n < n; k++)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    assert_int_equal(r->n, n);
}

static void make_tmp(char *dir, size_t size, struct tsrv *s)
{
    snprintf(dir, size, "/tmp/test_anvil.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(s->path, sizeof s->path, "%s/anvil", dir);
}

static void test_client_counts(void **state)
{
    char dir[64];
    struct tsrv s = { .base = event_base_new() };
    make_tmp(dir, sizeof dir, &s);
    tsrv_start(&s);
    struct result r = { 0 };
    struct result *a = &r, *b = &r, *x = &r;
    struct smtpd_anvil *ac = smtpd_anvil_new(s.base, s.path);
    smtpd_anvil_connect(ac, "smtp", "192.0.2.1", on_counts, &a);
    smtpd_anvil_connect(ac, "smtp", "192.0.2.1", on_counts, &b);
    smtpd_anvil_event(ac, ANVIL_EV_MSG, "smtp", "192.0.2.1", on_counts, &a);
    smtpd_anvil_event(ac, ANVIL_EV_AUTH, "smtp", "192.0.2.1", on_counts, &b);
    assert_int_equal(r.n, 0); /* never from inside the call */
    run_until(s.base, &r, 4);
    assert_true(smtpd_anvil_up(ac));
    assert_ptr_equal(r.arg[0], &a);
    assert_int_equal(r.c[0].count, 1);
    assert_int_equal(r.c[1].count, 2);
    assert_int_equal(r.c[1].rate[ANVIL_EV_CONN], 2);
    assert_int_equal(r.c[1].unavailable, 0);
    assert_ptr_equal(r.arg[2], &a);
    assert_int_equal(r.c[2].rate[ANVIL_EV_MSG], 1);
    assert_int_equal(r.c[3].rate[ANVIL_EV_AUTH], 1);
    /* a cancelled callback is skipped, the FIFO stays in step */
    smtpd_anvil_disconnect(ac, "smtp", "192.0.2.1");
    smtpd_anvil_lookup(ac, "smtp", "192.0.2.1", on_counts, &x);
    smtpd_anvil_cancel(ac, &x);
    smtpd_anvil_lookup(ac, "smtp", "192.0.2.1", on_counts, &b);
    run_until(s.base, &r, 5);
    assert_ptr_equal(r.arg[4], &b);
    assert_int_equal(r.c[4].count, 1);
    assert_int_equal(r.c[4].rate[ANVIL_EV_CONN], 2);
    assert_int_equal(r.c[4].rate[ANVIL_EV_MSG], 1);
    assert_int_equal(r.c[4].unavailable, 0);
    smtpd_anvil_free(ac);
    tsrv_stop(&s);
    event_base_free(s.base);
    rmdir(dir);
}

static void test_client_fail_open(void **state)
{
    char dir[64];
    struct tsrv s = { .base = event_base_new() };
    make_tmp(dir, sizeof dir, &s);
    struct result r = { 0 };
    struct result *a = &r;
    struct smtpd_anvil *ac = smtpd_anvil_new(s.base, s.path);
    smtpd_anvil_set_retry(ac, 0);
    /* nobody listens */
    smtpd_anvil_connect(ac, "smtp", "192.0.2.1", on_counts, &a);
    smtpd_anvil_event(ac, ANVIL_EV_RCPT, "smtp", "192.0.2.1", on_counts, &a);
    assert_int_equal(r.n, 0);
    run_until(s.base, &r, 2);
    assert_int_equal(r.c[0].unavailable, 1);
    assert_int_equal(r.c[0].count, 0);
    assert_int_equal(r.c[1].unavailable, 1);
    assert_false(smtpd_anvil_up(ac));
    /* the service comes up: the next request reconnects */
    tsrv_start(&s);
    smtpd_anvil_connect(ac, "smtp", "192.0.2.1", on_counts, &a);
    run_until(s.base, &r, 3);
    assert_int_equal(r.c[2].unavailable, 0);
    assert_int_equal(r.c[2].count, 1);
    /* it dies: what is pending or new completes fail-open */
    tsrv_stop(&s);
    smtpd_anvil_connect(ac, "smtp", "192.0.2.1", on_counts, &a);
    run_until(s.base, &r, 4);
    assert_int_equal(r.c[3].unavailable, 1);
    /* and back again, with its counts released by the restart */
    tsrv_start(&s);
    run_until(s.base, &r, 4);
    smtpd_anvil_connect(ac, "smtp", "192.0.2.1", on_counts, &a);
    run_until(s.base, &r, 5);
    assert_int_equal(r.c[4].unavailable, 0);
    assert_int_equal(r.c[4].count, 1);
    smtpd_anvil_free(ac);
    tsrv_stop(&s);
    event_base_free(s.base);
    rmdir(dir);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as server_main does in every daemon */
    log_init("test_anvil_rate");
    log_open("/dev/null");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_counting),
        cmocka_unit_test(test_window_expiry),
        cmocka_unit_test(test_disconnect),
        cmocka_unit_test(test_release_owner),
        cmocka_unit_test(test_expire),
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_protocol),
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_client_counts),
        cmocka_unit_test(test_client_fail_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
