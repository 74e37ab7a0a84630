/* test_qmgr_route.c - qmgr's pure routing and back-off helpers (common/route.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "common/route.h"

static void test_split_full(void **state)
{
    buf_t t = BUF_INIT, n = BUF_INIT;

    assert_int_equal(route_split("smtp:[127.0.0.1]:2526", "example.com", &t, &n), 0);
    assert_string_equal(buf_str(&t), "smtp");
    assert_string_equal(buf_str(&n), "[127.0.0.1]:2526");
    assert_int_equal(route_split("relay:mx.example.net", "example.com", &t, &n), 0);
    assert_string_equal(buf_str(&t), "relay");
    assert_string_equal(buf_str(&n), "mx.example.net");
    buf_free(&t);
    buf_free(&n);
}

static void test_split_defaults(void **state)
{
    buf_t t = BUF_INIT, n = BUF_INIT;

    assert_int_equal(route_split(":[10.0.0.1]", "example.com", &t, &n), 0);
    assert_string_equal(buf_str(&t), "smtp");
    assert_string_equal(buf_str(&n), "[10.0.0.1]");
    assert_int_equal(route_split("lmtp:", "example.com", &t, &n), 0);
    assert_string_equal(buf_str(&t), "lmtp");
    assert_string_equal(buf_str(&n), "example.com");
    assert_int_equal(route_split("smtp", "example.com", &t, &n), 0);
    assert_string_equal(buf_str(&n), "example.com");
    /* a transport that could escape private/ is refused */
    assert_int_equal(route_split("../x:host", "example.com", &t, &n), -1);
    buf_free(&t);
    buf_free(&n);
}

static void test_domain(void **state)
{
    buf_t d = BUF_INIT;

    route_domain("User@Example.COM", &d);
    assert_string_equal(buf_str(&d), "example.com");
    route_domain("\"a@b\"@x.org", &d);
    assert_string_equal(buf_str(&d), "x.org");
    route_domain("postmaster", &d);
    assert_string_equal(buf_str(&d), "");
    buf_free(&d);
}

static void test_keys(void **state)
{
    buf_t k = BUF_INIT;
    size_t st = 0;
    const char *want[] = { "a.b.example.com", ".b.example.com", ".example.com", ".com" };

    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(route_next_key("a.b.example.com", &st, &k), 1);
        assert_string_equal(buf_str(&k), want[i]);
    }
    assert_int_equal(route_next_key("a.b.example.com", &st, &k), 0);
    st = 0;
    assert_int_equal(route_next_key("", &st, &k), 0);
    buf_free(&k);
}

static void test_backoff(void **state)
{
    assert_int_equal(route_backoff(300, 4000, 0), 300);
    assert_int_equal(route_backoff(300, 4000, 1), 300);
    assert_int_equal(route_backoff(300, 4000, 2), 600);
    assert_int_equal(route_backoff(300, 4000, 4), 2400);
    assert_int_equal(route_backoff(300, 4000, 5), 4000);
    assert_int_equal(route_backoff(300, 4000, 1000), 4000);
    assert_int_equal(route_backoff(5000, 4000, 1), 4000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_full), cmocka_unit_test(test_split_defaults),
        cmocka_unit_test(test_domain),     cmocka_unit_test(test_keys),
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
