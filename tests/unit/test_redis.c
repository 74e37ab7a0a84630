/* test_redis.c - the asynchronous Redis client against a real
 * redis-server: replies, answers from the loop when the server is away,
 * "unreachable" told once, a stalled server timed out, reconnecting after a
 * restart, and scripts surviving SCRIPT FLUSH (EVALSHA falls back to EVAL). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "tests/unit/redis_server.h"

#include "common/glue/redis.h"
#include "common/util/log.h"

static struct event_base *base;
static struct test_redis srv;
static int ups, downs, answered;
static enum redis_answer last_ans;
static long long last_int;
static char last_str[128];

static void on_state(void *arg, int up)
{
    if (up)
        ups++;
    else
        downs++;
}

static void on_answer(void *arg, enum redis_answer ans, const struct redisReply *rep)
{
    answered++;
    last_ans = ans;
    last_int = 0;
    last_str[0] = 0;
    if (rep && rep->type == REDIS_REPLY_INTEGER)
        last_int = rep->integer;
    if (rep && rep->str)
        snprintf(last_str, sizeof(last_str), "%s", rep->str);
}

static const struct redis_opts fast = { 500, 300, 20, 100 };

static struct redis *client(void)
{
    struct redis *r = redis_new(base, "127.0.0.1", srv.port, &fast);
    redis_on_state(r, on_state, NULL);
    ups = downs = answered = 0;
    return r;
}

static void command(struct redis *r, int argc, const char *const *argv)
{
    answered = 0;
    redis_command(r, argc, argv, NULL, on_answer, NULL);
    assert_int_equal(answered, 0); /* never from inside the call */
    assert_true(test_loop_until(base, &answered, 5));
}

static int setup(void **state)
{
    if (!test_redis_have())
        return 0;
    base = event_base_new();
    memset(&srv, 0, sizeof(srv));
    return test_redis_start(&srv);
}

static int teardown(void **state)
{
    test_redis_stop(&srv);
    if (base)
        event_base_free(base);
    base = NULL;
    return 0;
}

static void test_commands(void **state)
{
    if (!test_redis_have())
        skip();
    struct redis *r = client();
    const char *incr[] = { "INCRBY", "postino:test", "5" };
    const char *bad[] = { "NOSUCHCOMMAND" };

    assert_true(test_loop_until(base, &ups, 5));
    assert_true(redis_is_up(r));
    command(r, 3, incr);
    assert_int_equal(last_ans, REDIS_ANSWER_OK);
    assert_int_equal(last_int, 5);
    command(r, 3, incr);
    assert_int_equal(last_int, 10);
    command(r, 1, bad);
    assert_int_equal(last_ans, REDIS_ANSWER_ERROR);
    assert_int_equal(downs, 0);
    redis_free(r);
}

static void test_unreachable(void **state)
{
    if (!test_redis_have())
        skip();
    int port = srv.port;
    const char *ping[] = { "PING" };
    test_redis_stop(&srv);
    struct redis *r = client();

    assert_true(test_loop_until(base, &downs, 5));
    command(r, 1, ping);
    assert_int_equal(last_ans, REDIS_ANSWER_NONE);
    /* many failed retries later: told once */
    int never = 0;
    test_loop_until(base, &never, 0.5);
    assert_int_equal(downs, 1);
    assert_int_equal(ups, 0);
    /* the server comes: connected without being asked */
    srv.port = port;
    assert_int_equal(test_redis_start(&srv), 0);
    assert_true(test_loop_until(base, &ups, 5));
    command(r, 1, ping);
    assert_int_equal(last_ans, REDIS_ANSWER_OK);
    assert_string_equal(last_str, "PONG");
    redis_free(r);
}

static void test_stalled_server_times_out(void **state)
{
    if (!test_redis_have())
        skip();
    struct redis *r = client();
    const char *ping[] = { "PING" };

    assert_true(test_loop_until(base, &ups, 5));
    kill(srv.pid, SIGSTOP); /* accepts nothing, answers nothing */
    command(r, 1, ping);
    assert_int_equal(last_ans, REDIS_ANSWER_NONE);
    assert_int_equal(downs, 1);
    assert_false(redis_is_up(r));
    /* reconnects get through the kernel's backlog but no PONG: still down */
    int never = 0;
    ups = 0;
    test_loop_until(base, &never, 1.0);
    assert_int_equal(ups, 0);
    assert_int_equal(downs, 1);
    assert_false(redis_is_up(r));
    kill(srv.pid, SIGCONT);
    assert_true(test_loop_until(base, &ups, 5));
    command(r, 1, ping);
    assert_int_equal(last_ans, REDIS_ANSWER_OK);
    redis_free(r);
}

static void test_restart_and_scripts(void **state)
{
    if (!test_redis_have())
        skip();
    struct redis *r = client();
    int s = redis_script_add(r, "return tonumber(ARGV[1]) + #KEYS");
    const char *args[] = { "k1", "k2", "40" };
    const char *flush[] = { "SCRIPT", "FLUSH" };

    assert_true(test_loop_until(base, &ups, 5));
    answered = 0;
    redis_eval(r, s, 2, 3, args, on_answer, NULL);
    assert_true(test_loop_until(base, &answered, 5));
    assert_int_equal(last_ans, REDIS_ANSWER_OK);
    assert_int_equal(last_int, 42);
    /* the server forgets its scripts: EVALSHA says NOSCRIPT, EVAL runs */
    command(r, 2, flush);
    answered = 0;
    redis_eval(r, s, 2, 3, args, on_answer, NULL);
    assert_true(test_loop_until(base, &answered, 5));
    assert_int_equal(last_ans, REDIS_ANSWER_OK);
    assert_int_equal(last_int, 42);
    /* a restart: connection lost, told; back, and the script still runs */
    int port = srv.port;
    test_redis_stop(&srv);
    assert_true(test_loop_until(base, &downs, 5));
    srv.port = port;
    ups = 0;
    assert_int_equal(test_redis_start(&srv), 0);
    assert_true(test_loop_until(base, &ups, 5));
    answered = 0;
    redis_eval(r, s, 2, 3, args, on_answer, NULL);
    assert_true(test_loop_until(base, &answered, 5));
    assert_int_equal(last_int, 42);
    redis_free(r);
}

static void test_parse_spec(void **state)
{
    char *host = NULL;
    int port = 0;
    buf_t err = BUF_INIT;

    assert_int_equal(redis_parse_spec("redis:127.0.0.1:6380", &host, &port, &err), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6380);
    free(host);
    assert_int_equal(redis_parse_spec("redis:[::1]:6379", &host, &port, &err), 0);
    assert_string_equal(host, "::1");
    free(host);
    assert_int_equal(redis_parse_spec("redis:host", &host, &port, &err), -1);
    assert_int_equal(redis_parse_spec("redis:host:0", &host, &port, &err), -1);
    assert_int_equal(redis_parse_spec("redis:host:70000", &host, &port, &err), -1);
    assert_int_equal(redis_parse_spec("redis::6379", &host, &port, &err), -1);
    assert_int_equal(redis_parse_spec("memcache:host:1", &host, &port, &err), -1);
    buf_destroy(&err);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    log_open(getenv("TEST_LOG") ? getenv("TEST_LOG") : "/dev/null");
    log_set_verbose(getenv("TEST_LOG") ? 1 : 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_spec),
        cmocka_unit_test_setup_teardown(test_commands, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stalled_server_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_and_scripts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
