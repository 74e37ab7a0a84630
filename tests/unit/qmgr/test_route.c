/* test_route.c - qmgr's pure routing and back-off helpers (qmgr/qmgr_route.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "qmgr/qmgr_route.h"

static void test_split_full(void **state)
{
    buf_t t = BUF_INIT, n = BUF_INIT;

    assert_int_equal(qmgr_route_split("smtp:[127.0.0.1]:2526", "example.com", &t, &n), 0);
    assert_string_equal(buf_str(&t), "smtp");
    assert_string_equal(buf_str(&n), "[127.0.0.1]:2526");
    assert_int_equal(qmgr_route_split("relay:mx.example.net", "example.com", &t, &n), 0);
    assert_string_equal(buf_str(&t), "relay");
    assert_string_equal(buf_str(&n), "mx.example.net");
    buf_destroy(&t);
    buf_destroy(&n);
}

static void test_split_defaults(void **state)
{
    buf_t t = BUF_INIT, n = BUF_INIT;

    assert_int_equal(qmgr_route_split(":[10.0.0.1]", "example.com", &t, &n), 0);
    assert_string_equal(buf_str(&t), "smtp");
    assert_string_equal(buf_str(&n), "[10.0.0.1]");
    assert_int_equal(qmgr_route_split("lmtp:", "example.com", &t, &n), 0);
    assert_string_equal(buf_str(&t), "lmtp");
    assert_string_equal(buf_str(&n), "example.com");
    assert_int_equal(qmgr_route_split("smtp", "example.com", &t, &n), 0);
    assert_string_equal(buf_str(&n), "example.com");
    /* a transport that could escape private/ is refused */
    assert_int_equal(qmgr_route_split("../x:host", "example.com", &t, &n), -1);
    buf_destroy(&t);
    buf_destroy(&n);
}

static void test_domain(void **state)
{
    buf_t d = BUF_INIT;

    qmgr_route_domain("User@Example.COM", &d);
    assert_string_equal(buf_str(&d), "example.com");
    qmgr_route_domain("\"a@b\"@x.org", &d);
    assert_string_equal(buf_str(&d), "x.org");
    qmgr_route_domain("postmaster", &d);
    assert_string_equal(buf_str(&d), "");
    buf_destroy(&d);
}

static void test_keys(void **state)
{
    buf_t k = BUF_INIT;
    size_t st = 0;
    const char *want[] = { "a.b.example.com", ".b.example.com", ".example.com", ".com" };

    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(qmgr_route_next_key("a.b.example.com", &st, &k), 1);
        assert_string_equal(buf_str(&k), want[i]);
    }
    assert_int_equal(qmgr_route_next_key("a.b.example.com", &st, &k), 0);
    st = 0;
    assert_int_equal(qmgr_route_next_key("", &st, &k), 0);
    buf_destroy(&k);
}

static void test_backoff(void **state)
{
    assert_int_equal(qmgr_route_backoff(300, 4000, 0), 300);
    assert_int_equal(qmgr_route_backoff(300, 4000, 1), 300);
    assert_int_equal(qmgr_route_backoff(300, 4000, 2), 600);
    assert_int_equal(qmgr_route_backoff(300, 4000, 4), 2400);
    assert_int_equal(qmgr_route_backoff(300, 4000, 5), 4000);
    assert_int_equal(qmgr_route_backoff(300, 4000, 1000), 4000);
    assert_int_equal(qmgr_route_backoff(5000, 4000, 1), 4000);
}

/* Attempts and next attempt survive an index rebuild. */
static void test_rebuild_retry(void **state)
{
    struct qenv env;
    int att;
    long long next;
    const char *why;

    qenv_init(&env);
    qenv_add_rcpt(&env, "a@x.example", NULL, 0);
    qenv_add_rcpt(&env, "b@x.example", NULL, 0);
    qenv_add_rcpt(&env, "c@x.example", NULL, 0);
    /* never tried: due at once */
    qmgr_route_rebuild_retry(&env, 300, 4000, &att, &next, &why);
    assert_int_equal(att, 0);
    assert_int_equal(next, 0);
    assert_null(why);
    /* a: deferred 3 times, last at 1000; b: deferred once at 1200;
     * c: deferred 5 times but since delivered: it does not count. */
    env.rcpt[0].status = QR_DEFERRED;
    env.rcpt[0].deferrals = 3;
    env.rcpt[0].when = 1000;
    qenv_set(&env.rcpt[0].reason, "old reason");
    env.rcpt[1].status = QR_DEFERRED;
    env.rcpt[1].deferrals = 1;
    env.rcpt[1].when = 1200;
    qenv_set(&env.rcpt[1].reason, "451 try later");
    env.rcpt[2].status = QR_SENT;
    env.rcpt[2].deferrals = 5;
    env.rcpt[2].when = 5000;
    qmgr_route_rebuild_retry(&env, 300, 4000, &att, &next, &why);
    assert_int_equal(att, 3);
    assert_int_equal(next, 1200 + 1200); /* last deferral + 300 * 2^2 */
    assert_string_equal(why, "451 try later");
    /* pending but only crashed/never answered: due at once */
    env.rcpt[0].status = QR_PENDING;
    env.rcpt[0].deferrals = 0;
    env.rcpt[1].status = QR_BOUNCED;
    qmgr_route_rebuild_retry(&env, 300, 4000, &att, &next, &why);
    assert_int_equal(att, 0);
    assert_int_equal(next, 0);
    qenv_destroy(&env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_full), cmocka_unit_test(test_split_defaults),
        cmocka_unit_test(test_domain),     cmocka_unit_test(test_keys),
        cmocka_unit_test(test_backoff),    cmocka_unit_test(test_rebuild_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
