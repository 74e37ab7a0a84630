/* test_gcra.c - the GCRA limiter: exact spacing, bursts, the wait it
 * reports, no catch-up burst after idling, and rate changes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>

#include "common/mail/gcra.h"

static void test_spacing(void **state)
{
    (void)state;
    struct gcra g;
    double wait = -1;
    gcra_init(&g, 10, 1); /* one every 0.1 s */
    assert_int_equal(gcra_take(&g, 100.0, &wait), 1);
    assert_true(wait == 0);
    assert_int_equal(gcra_take(&g, 100.0, &wait), 0);
    assert_true(fabs(wait - 0.1) < 1e-9);
    assert_int_equal(gcra_take(&g, 100.05, &wait), 0);
    assert_true(fabs(wait - 0.05) < 1e-9);
    /* due after ten additions of 0.1, rounding or not */
    for (int i = 1; i <= 10; i++)
        assert_int_equal(gcra_take(&g, 100.0 + i * 0.1, &wait), 1);
    /* from 0: the TAT becomes 0.30000000000000004 while now is 0.3 */
    gcra_init(&g, 10, 1);
    const double at[] = { 0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7 };
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++)
        assert_int_equal(gcra_take(&g, at[i], NULL), 1);
}

static void test_count_over_time(void **state)
{
    (void)state;
    struct gcra g;
    int sent = 0;
    gcra_init(&g, 100.0 / 60, 1); /* 6000/h */
    /* poll every 10 ms for a minute: 100 messages, one per 0.6 s */
    for (int t = 0; t < 6000; t++)
        sent += gcra_take(&g, 5000.0 + t * 0.01, NULL);
    assert_int_equal(sent, 100);
}

static void test_burst_then_spacing(void **state)
{
    (void)state;
    struct gcra g;
    double wait;
    gcra_init(&g, 1, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(gcra_take(&g, 10.0, NULL), 1);
    assert_int_equal(gcra_take(&g, 10.0, &wait), 0);
    assert_true(fabs(wait - 1.0) < 1e-9);
    assert_int_equal(gcra_take(&g, 11.0, NULL), 1);
    assert_int_equal(gcra_take(&g, 11.0, NULL), 0);
}

static void test_idle_gives_no_catch_up(void **state)
{
    (void)state;
    struct gcra g;
    gcra_init(&g, 1, 2);
    assert_int_equal(gcra_take(&g, 0, NULL), 1);
    /* an hour idle: still only the burst of 2, not 3600 */
    assert_int_equal(gcra_take(&g, 3600, NULL), 1);
    assert_int_equal(gcra_take(&g, 3600, NULL), 1);
    assert_int_equal(gcra_take(&g, 3600, NULL), 0);
}

static void test_unlimited_and_set_rate(void **state)
{
    (void)state;
    struct gcra g;
    gcra_init(&g, 0, 1);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(gcra_take(&g, 1.0, NULL), 1);
    gcra_init(&g, 10, 1);
    assert_int_equal(gcra_take(&g, 1.0, NULL), 1);
    /* slowed to 1/s: the TAT already set still holds, then 1 s spacing */
    gcra_set_rate(&g, 1, 1);
    assert_int_equal(gcra_take(&g, 1.1, NULL), 1);
    double wait;
    assert_int_equal(gcra_take(&g, 1.1, &wait), 0);
    assert_true(fabs(wait - 1.0) < 1e-9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spacing),
        cmocka_unit_test(test_count_over_time),
        cmocka_unit_test(test_burst_then_spacing),
        cmocka_unit_test(test_idle_gives_no_catch_up),
        cmocka_unit_test(test_unlimited_and_set_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
