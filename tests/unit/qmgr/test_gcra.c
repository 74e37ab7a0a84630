/* test_gcra.c - cmocka tests for the GCRA rate limiter (qmgr/qmgr_gcra.c):
 * even spacing, no burst after an idle hour, the configured burst, rate
 * changes, and the rate syntax of shaping_maps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "qmgr/qmgr_gcra.h"

/* Take as soon as allowed for span seconds from t0; count takes. */
static int drain(struct gcra *g, double t0, double span, double *last)
{
    double now = t0, wait;
    int n = 0;
    while (now < t0 + span) {
        if (qmgr_gcra_take(g, now, &wait)) {
            n++;
            *last = now;
        } else {
            assert_true(wait > 0);
            now += wait;
        }
    }
    return n;
}

static void test_spacing(void **state)
{
    struct gcra g;
    double wait, last = 0;
    qmgr_gcra_init(&g, 6000.0 / 3600, 1); /* 6000/h: one every 0.6 s */
    assert_true(qmgr_gcra_take(&g, 1000, &wait));
    assert_false(qmgr_gcra_take(&g, 1000, &wait));
    assert_true(fabs(wait - 0.6) < 1e-9);
    assert_false(qmgr_gcra_take(&g, 1000.3, &wait));
    assert_true(fabs(wait - 0.3) < 1e-9);
    assert_true(qmgr_gcra_take(&g, 1000.6, &wait));
    /* one minute at 6000/h: 100 units, never two within 0.6 s */
    qmgr_gcra_init(&g, 6000.0 / 3600, 1);
    assert_int_equal(drain(&g, 5000, 60, &last), 100);
}

static void test_no_burst_after_idle(void **state)
{
    struct gcra g;
    double wait;
    qmgr_gcra_init(&g, 300.0 / 3600, 1); /* 300/h */
    assert_true(qmgr_gcra_take(&g, 0, &wait));
    /* an hour of silence banks nothing: one now, then wait 12 s */
    assert_true(qmgr_gcra_take(&g, 3600, &wait));
    assert_false(qmgr_gcra_take(&g, 3600, &wait));
    assert_true(fabs(wait - 12) < 1e-9);
}

static void test_burst(void **state)
{
    struct gcra g;
    double wait;
    qmgr_gcra_init(&g, 1, 5);
    for (int i = 0; i < 5; i++)
        assert_true(qmgr_gcra_take(&g, 10, &wait));
    assert_false(qmgr_gcra_take(&g, 10, &wait));
    assert_true(fabs(wait - 1) < 1e-9);
    assert_true(qmgr_gcra_peek(&g, 11, &wait));
    assert_true(qmgr_gcra_peek(&g, 11, &wait)); /* peek takes nothing */
    assert_true(qmgr_gcra_take(&g, 11, &wait));
    assert_false(qmgr_gcra_take(&g, 11, &wait));
}

static void test_unlimited_and_change(void **state)
{
    struct gcra g;
    double wait;
    qmgr_gcra_init(&g, 0, 1);
    for (int i = 0; i < 1000; i++)
        assert_true(qmgr_gcra_take(&g, 1, &wait));
    assert_true(qmgr_gcra_rate(&g) == 0);
    qmgr_gcra_init(&g, 10, 1);
    assert_true(qmgr_gcra_take(&g, 1, &wait));
    qmgr_gcra_set(&g, 1, 1); /* throttled: the next unit 1 s after this one */
    assert_true(qmgr_gcra_take(&g, 1.1, &wait));
    assert_false(qmgr_gcra_take(&g, 1.5, &wait));
    assert_true(fabs(qmgr_gcra_rate(&g) - 1) < 1e-9);
}

static void test_parse(void **state)
{
    double r;
    assert_int_equal(qmgr_gcra_parse_rate("300/h", &r), 0);
    assert_true(fabs(r - 300.0 / 3600) < 1e-12);
    assert_int_equal(qmgr_gcra_parse_rate("20/s", &r), 0);
    assert_true(fabs(r - 20) < 1e-12);
    assert_int_equal(qmgr_gcra_parse_rate("600/m", &r), 0);
    assert_true(fabs(r - 10) < 1e-12);
    assert_int_equal(qmgr_gcra_parse_rate("1000/d", &r), 0);
    assert_int_equal(qmgr_gcra_parse_rate("0", &r), 0);
    assert_true(r == 0);
    assert_int_equal(qmgr_gcra_parse_rate("unlimited", &r), 0);
    assert_int_equal(qmgr_gcra_parse_rate("300", &r), -1);
    assert_int_equal(qmgr_gcra_parse_rate("300/x", &r), -1);
    assert_int_equal(qmgr_gcra_parse_rate("300/hh", &r), -1);
    assert_int_equal(qmgr_gcra_parse_rate("-3/s", &r), -1);
    assert_int_equal(qmgr_gcra_parse_rate("/s", &r), -1);
    assert_int_equal(qmgr_gcra_parse_rate("0/s", &r), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spacing), cmocka_unit_test(test_no_burst_after_idle),
        cmocka_unit_test(test_burst),   cmocka_unit_test(test_unlimited_and_change),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
