/* test_slowstart.c - the AIMD concurrency controller (qmgr/qmgr_slowstart.c):
 * growth while deliveries succeed, one halving per round of failures,
 * linear growth after a cut, never above the cap nor below one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "qmgr/qmgr_slowstart.h"

static void succeed(struct qmgr_slowstart *ss, int n)
{
    while (n-- > 0)
        qmgr_slowstart_success(ss);
}

static void test_init_clamps(void **state)
{
    struct qmgr_slowstart ss;
    qmgr_slowstart_init(&ss, 5, 20);
    assert_int_equal(qmgr_slowstart_limit(&ss), 5);
    qmgr_slowstart_init(&ss, 50, 20);
    assert_int_equal(qmgr_slowstart_limit(&ss), 20);
    qmgr_slowstart_init(&ss, 0, 20);
    assert_int_equal(qmgr_slowstart_limit(&ss), 1);
    qmgr_slowstart_init(&ss, 3, 0);
    assert_int_equal(qmgr_slowstart_limit(&ss), 1);
}

/* Below the threshold every success adds one: a round of `limit`
 * successes doubles the limit; it stops at the cap. */
static void test_slow_start_growth(void **state)
{
    struct qmgr_slowstart ss;
    qmgr_slowstart_init(&ss, 2, 20);
    succeed(&ss, 2);
    assert_int_equal(qmgr_slowstart_limit(&ss), 4);
    succeed(&ss, 4);
    assert_int_equal(qmgr_slowstart_limit(&ss), 8);
    succeed(&ss, 8);
    assert_int_equal(qmgr_slowstart_limit(&ss), 16);
    succeed(&ss, 1000);
    assert_int_equal(qmgr_slowstart_limit(&ss), 20);
}

/* A failure halves once; the rest of that round does not cut again. */
static void test_one_cut_per_round(void **state)
{
    struct qmgr_slowstart ss;
    qmgr_slowstart_init(&ss, 16, 20);
    for (int i = 0; i < 16; i++) /* all sixteen under way get a 421 */
        qmgr_slowstart_failure(&ss);
    assert_int_equal(qmgr_slowstart_limit(&ss), 8);
    /* the next round's failures do cut */
    qmgr_slowstart_failure(&ss);
    assert_int_equal(qmgr_slowstart_limit(&ss), 4);
    for (int i = 0; i < 20; i++)
        qmgr_slowstart_failure(&ss);
    assert_true(qmgr_slowstart_limit(&ss) >= 1);
    /* repeated failures end at one, never zero */
    for (int i = 0; i < 200; i++)
        qmgr_slowstart_failure(&ss);
    assert_int_equal(qmgr_slowstart_limit(&ss), 1);
}

/* After a cut growth is linear: one more per round of `limit` successes. */
static void test_linear_after_cut(void **state)
{
    struct qmgr_slowstart ss;
    qmgr_slowstart_init(&ss, 8, 20);
    qmgr_slowstart_failure(&ss);
    assert_int_equal(qmgr_slowstart_limit(&ss), 4);
    succeed(&ss, 7); /* the seven still under way at the cut */
    succeed(&ss, 3);
    assert_int_equal(qmgr_slowstart_limit(&ss), 4);
    succeed(&ss, 1);
    assert_int_equal(qmgr_slowstart_limit(&ss), 4 + 1);
    /* the grace ran out with those successes: a new failure cuts */
    qmgr_slowstart_failure(&ss);
    assert_int_equal(qmgr_slowstart_limit(&ss), 2);
}

/* Successes of a cut round use up the grace too: a failure after a full
 * round cuts again. */
static void test_grace_spent_by_successes(void **state)
{
    struct qmgr_slowstart ss;
    qmgr_slowstart_init(&ss, 4, 4);
    qmgr_slowstart_failure(&ss); /* 4 -> 2, three still under way */
    succeed(&ss, 2);
    qmgr_slowstart_failure(&ss); /* third of those: no cut */
    assert_int_equal(qmgr_slowstart_limit(&ss), 2);
    qmgr_slowstart_failure(&ss); /* a new round: cut */
    assert_int_equal(qmgr_slowstart_limit(&ss), 1);
}

/* A lower cap (reload, a rule's connections=N) applies at once; a higher
 * one lets the limit grow to it. */
static void test_set_cap(void **state)
{
    struct qmgr_slowstart ss;
    qmgr_slowstart_init(&ss, 10, 10);
    qmgr_slowstart_set_cap(&ss, 2);
    assert_int_equal(qmgr_slowstart_limit(&ss), 2);
    succeed(&ss, 100);
    assert_int_equal(qmgr_slowstart_limit(&ss), 2);
    qmgr_slowstart_set_cap(&ss, 10);
    succeed(&ss, 100);
    assert_int_equal(qmgr_slowstart_limit(&ss), 10);
    qmgr_slowstart_set_cap(&ss, 0);
    assert_int_equal(qmgr_slowstart_limit(&ss), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_clamps),
        cmocka_unit_test(test_slow_start_growth),
        cmocka_unit_test(test_one_cut_per_round),
        cmocka_unit_test(test_linear_after_cut),
        cmocka_unit_test(test_grace_spent_by_successes),
        cmocka_unit_test(test_set_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
