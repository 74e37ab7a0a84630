/* test_shared.c - shaping counters shared through a real redis-server
 * (qmgr/qmgr_shared.c): the Lua GCRA gives qmgr_gcra_take()'s answers, two nodes
 * hold one joint rate, a node without Redis keeps to its share and says so
 * once, and connection leases hold a joint limit (an expired lease of a
 * crashed node does not count). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>

#include "tests/unit/redis_server.h"

#include "common/glue/redis.h"
#include "qmgr/qmgr_gcra.h"
#include "common/util/log.h"
#include "qmgr/qmgr_shared.h"

static struct event_base *base;
static struct test_redis srv;
static char logpath[96];
static const struct redis_opts fast = { 500, 300, 20, 100 };

/* One node sending as fast as its tokens allow. */
struct node {
    struct qmgr_shared *sh;
    struct event *ev;
    double per_sec;
    int sent, running;
};

static void drive(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    double wait;
    struct timeval tv;

    if (!n->running)
        return;
    while (qmgr_shared_rate_take(n->sh, "gmail", n->per_sec, 1, test_now(), &wait) == 1)
        n->sent++;
    tv.tv_sec = (time_t)wait;
    tv.tv_usec = (suseconds_t)((wait - (double)tv.tv_sec) * 1e6);
    event_add(n->ev, &tv);
}

static void wake(void *arg, const char *site)
{
    struct node *n = arg;
    assert_string_equal(site, "gmail");
    event_active(n->ev, EV_TIMEOUT, 0);
}

static void node_init(struct node *n, const char *id, double per_sec, int node_count)
{
    buf_t err = BUF_INIT;
    char spec[64];

    snprintf(spec, sizeof(spec), "redis:127.0.0.1:%d", srv.port);
    memset(n, 0, sizeof(*n));
    n->per_sec = per_sec;
    n->ev = evtimer_new(base, drive, n);
    n->sh = qmgr_shared_new(base, spec, node_count, id, &fast, wake, n, &err);
    assert_non_null(n->sh);
    buf_destroy(&err);
}

static void node_free(struct node *n)
{
    qmgr_shared_free(n->sh);
    event_free(n->ev);
}

static int nodes_up(struct node *a, struct node *b)
{
    static int up;
    up = 0;
    for (int i = 0; i < 500 && !up; i++) {
        int never = 0;
        test_loop_until(base, &never, 0.01);
        up = qmgr_shared_is_up(a->sh) && (!b || qmgr_shared_is_up(b->sh));
    }
    return up;
}

static void run_for(double secs)
{
    int never = 0;
    test_loop_until(base, &never, secs);
}

static int log_count(const char *what)
{
    FILE *f = fopen(logpath, "r");
    char line[1024];
    int n = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, what) != NULL;
    fclose(f);
    return n;
}

static int setup(void **state)
{
    if (!test_redis_have())
        return 0;
    base = event_base_new();
    memset(&srv, 0, sizeof(srv));
    if (test_redis_start(&srv) < 0)
        return -1;
    snprintf(logpath, sizeof(logpath), "%s/maillog", srv.dir);
    return log_open(logpath);
}

static int teardown(void **state)
{
    test_redis_stop(&srv);
    if (base)
        event_base_free(base);
    base = NULL;
    return 0;
}

/* The script and qmgr_gcra_take() answer alike, step by step. */
static void test_lua_matches_c(void **state)
{
    if (!test_redis_have())
        skip();
    static const struct {
        double rate;
        int burst;
    } limits[] = { { 10, 1 }, { 100.0 / 60, 1 }, { 3, 4 }, { 0, 1 } };
    unsigned seed = 7;

    for (size_t l = 0; l < sizeof(limits) / sizeof(limits[0]); l++) {
        struct gcra g;
        double now = 1.7e9 + l * 1000; /* epoch-sized times, as in Redis */
        char key[32], rate[32], burst[16], at[32];

        qmgr_gcra_init(&g, limits[l].rate, limits[l].burst);
        snprintf(key, sizeof(key), "postino:rate:t%zu", l);
        snprintf(rate, sizeof(rate), "%.17g", limits[l].rate);
        snprintf(burst, sizeof(burst), "%d", limits[l].burst);
        for (int i = 0; i < 200; i++) {
            double wait_c;
            snprintf(at, sizeof(at), "%.6f", now);
            now = strtod(at, NULL); /* both see the same double */
            int ok_c = qmgr_gcra_take(&g, now, &wait_c);
            redisReply *r = test_redis_cmd(&srv, "EVAL %s 1 %s %s %s %s", qmgr_shared_gcra_lua, key,
                                           rate, burst, at);
            assert_non_null(r);
            assert_int_equal(r->type, REDIS_REPLY_ARRAY);
            assert_int_equal(r->element[0]->integer, ok_c);
            /* a grant says "go after 0 s" (within the slack), a refusal
             * the very wait qmgr_gcra_take() computed */
            assert_true(fabs(strtod(r->element[1]->str, NULL) - wait_c) < (ok_c ? 2e-6 : 1e-9));
            freeReplyObject(r);
            seed = seed * 1103515245 + 12345;
            now += (seed >> 16) % 400 / 1000.0; /* 0 .. 0.4 s apart */
        }
    }
}

/* Two nodes at full demand hold 40/s between them; each is configured as
 * if alone (shaping_node_count 1), so only the shared counter holds it. */
static void test_two_nodes_joint_rate(void **state)
{
    if (!test_redis_have())
        skip();
    struct node a, b;
    node_init(&a, "node-a", 40, 1);
    node_init(&b, "node-b", 40, 1);
    assert_true(nodes_up(&a, &b));
    double t0 = test_now();
    a.running = b.running = 1;
    drive(-1, 0, &a);
    drive(-1, 0, &b);
    run_for(2.5);
    a.running = b.running = 0;
    double secs = test_now() - t0;
    int total = a.sent + b.sent, want = 1 + (int)(40 * secs);
    print_message("joint rate: a=%d b=%d total=%d want %d in %.2fs\n", a.sent, b.sent, total, want,
                  secs);
    assert_true(total >= want * 0.95 && total <= want * 1.05 + 1);
    assert_true(a.sent > total / 4 && b.sent > total / 4); /* both send */
    node_free(&a);
    node_free(&b);
}

/* Two nodes sharing 40/s, configured as two (shaping_node_count 2): Redis
 * stops mid-run; both go on sending, each within its share (20/s). */
static void test_two_nodes_redis_stops(void **state)
{
    if (!test_redis_have())
        skip();
    struct node a, b;
    node_init(&a, "node-a", 40, 2);
    node_init(&b, "node-b", 40, 2);
    assert_true(nodes_up(&a, &b));
    a.running = b.running = 1;
    drive(-1, 0, &a);
    drive(-1, 0, &b);
    run_for(1.0);
    test_redis_stop(&srv);
    for (int i = 0; i < 300 && (qmgr_shared_is_up(a.sh) || qmgr_shared_is_up(b.sh)); i++)
        run_for(0.01);
    int a0 = a.sent, b0 = b.sent;
    double t0 = test_now();
    run_for(2.0);
    double secs = test_now() - t0;
    a.running = b.running = 0;
    int da = a.sent - a0, db = b.sent - b0;
    print_message("without Redis: a=%d b=%d in %.2fs (share %.0f each)\n", da, db, secs, 20 * secs);
    assert_true(da > 0 && db > 0);                           /* never stops sending */
    assert_true(da <= 20 * secs + 2 && db <= 20 * secs + 2); /* within its share */
    node_free(&a);
    node_free(&b);
}

/* Redis gone: the node's own share (40/s / 2 nodes) on the caller's clock,
 * "unreachable" logged once; Redis back: shared again, logged once. */
static void test_fallback_share(void **state)
{
    if (!test_redis_have())
        skip();
    struct node a;
    double wait;
    int port = srv.port;

    node_init(&a, "node-a", 40, 2);
    assert_true(nodes_up(&a, NULL));
    test_redis_stop(&srv);
    for (int i = 0; i < 300 && qmgr_shared_is_up(a.sh); i++)
        run_for(0.01);
    assert_false(qmgr_shared_is_up(a.sh));
    run_for(0.5); /* several reconnects fail meanwhile */
    assert_int_equal(log_count("unreachable"), 1);
    assert_int_equal(qmgr_shared_rate_take(a.sh, "gmail", 40, 1, 5000.0, &wait), 1);
    assert_int_equal(qmgr_shared_rate_take(a.sh, "gmail", 40, 1, 5000.0, &wait), 0);
    assert_true(fabs(wait - 0.05) < 1e-9); /* 20/s, not 40/s */
    assert_int_equal(qmgr_shared_rate_take(a.sh, "gmail", 40, 1, 5000.05, &wait), 1);
    srv.port = port;
    assert_int_equal(test_redis_start(&srv), 0);
    assert_true(nodes_up(&a, NULL));
    assert_int_equal(log_count("reachable: per-site limits are joint"), 2); /* start, return */
    /* shared again: the token comes from Redis (asked, then woken) */
    a.running = 1;
    drive(-1, 0, &a);
    run_for(0.3);
    a.running = 0;
    assert_true(a.sent > 0);
    redisReply *r = test_redis_cmd(&srv, "EXISTS postino:rate:gmail");
    assert_non_null(r);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    assert_int_equal(log_count("unreachable"), 1);
    node_free(&a);
}

static int grants, refusals, locals, answers;
static long last_lease;

static void on_conn(void *arg, enum qmgr_shared_grant g, long lease)
{
    answers++;
    if (g == QMGR_SHARED_GRANTED) {
        grants++;
        last_lease = lease;
    } else if (g == QMGR_SHARED_REFUSED)
        refusals++;
    else
        locals++;
}

static void acquire(struct node *n, int want_answers)
{
    qmgr_shared_conn_acquire(n->sh, "gmail", 3, on_conn, NULL);
    static int done;
    done = 0;
    for (int i = 0; i < 500 && answers < want_answers; i++)
        run_for(0.01);
    assert_int_equal(answers, want_answers);
    (void)done;
}

static void test_conn_leases(void **state)
{
    if (!test_redis_have())
        skip();
    struct node a, b;
    node_init(&a, "node-a", 1, 2);
    node_init(&b, "node-b", 1, 2);
    assert_true(nodes_up(&a, &b));
    /* a crashed node's lease, expired long ago, does not count */
    redisReply *r = test_redis_cmd(&srv, "ZADD postino:conn:gmail 1 ghost:1");
    freeReplyObject(r);
    grants = refusals = locals = answers = 0;
    acquire(&a, 1);
    long a1 = last_lease;
    acquire(&a, 2);
    acquire(&b, 3);
    acquire(&b, 4);
    assert_int_equal(grants, 3);
    assert_int_equal(refusals, 1);
    r = test_redis_cmd(&srv, "ZCARD postino:conn:gmail");
    assert_int_equal(r->integer, 3);
    freeReplyObject(r);
    assert_int_equal(qmgr_shared_conn_held(a.sh, "gmail"), 2);
    qmgr_shared_conn_release(a.sh, "gmail", a1);
    assert_int_equal(qmgr_shared_conn_held(a.sh, "gmail"), 1);
    acquire(&b, 5);
    assert_int_equal(grants, 4);
    assert_int_equal(qmgr_shared_conn_held(b.sh, "gmail"), 2);
    /* release_one gives back one lease: room for another */
    qmgr_shared_conn_release_one(b.sh, "gmail");
    assert_int_equal(qmgr_shared_conn_held(b.sh, "gmail"), 1);
    assert_int_equal(qmgr_shared_conn_held(b.sh, "yahoo"), 0);
    acquire(&a, 6);
    assert_int_equal(grants, 5);
    /* without Redis: the answer is "use your local share" */
    test_redis_stop(&srv);
    acquire(&b, 7);
    assert_int_equal(locals, 1);
    assert_int_equal(qmgr_shared_local_share(b.sh, 3), 1);
    assert_int_equal(qmgr_shared_local_share(b.sh, 20), 10);
    node_free(&a);
    node_free(&b);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lua_matches_c, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_nodes_joint_rate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_nodes_redis_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fallback_share, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_leases, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
