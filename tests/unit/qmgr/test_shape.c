/* test_shape.c - qshape's age buckets and the summary table's order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "qmgr/qmgr_shape.h"

static void test_bucket_edges(void **state)
{
    assert_int_equal(qmgr_qshape_bucket(-10), 0); /* clock skew: the youngest */
    assert_int_equal(qmgr_qshape_bucket(0), 0);
    assert_int_equal(qmgr_qshape_bucket(5 * 60 - 1), 0);
    assert_int_equal(qmgr_qshape_bucket(5 * 60), 1);
    assert_int_equal(qmgr_qshape_bucket(10 * 60 - 1), 1);
    assert_int_equal(qmgr_qshape_bucket(10 * 60), 2);
    assert_int_equal(qmgr_qshape_bucket(39 * 60), 3);
    assert_int_equal(qmgr_qshape_bucket(40 * 60), 4);
    assert_int_equal(qmgr_qshape_bucket(1279 * 60 + 59), 8);
    assert_int_equal(qmgr_qshape_bucket(1280 * 60), 9);
    assert_int_equal(qmgr_qshape_bucket(400LL * 86400), 9);
}

static void test_labels(void **state)
{
    static const char *const want[] = { "5",   "10",  "20",  "40",   "80",
                                        "160", "320", "640", "1280", "1280+" };
    for (int b = 0; b < QSHAPE_NBUCKETS; b++)
        assert_string_equal(qmgr_qshape_label(b), want[b]);
    assert_string_equal(qmgr_qshape_label(QSHAPE_NBUCKETS), "?");
}

static void test_rows_sorted(void **state)
{
    struct qshape q;
    struct qmgr_qshape_row **v;
    size_t n;

    qmgr_qshape_init(&q);
    qmgr_qshape_count(qmgr_qshape_row(&q, "small.example"), 0);
    for (int i = 0; i < 3; i++)
        qmgr_qshape_count(qmgr_qshape_row(&q, "big.example"), i);
    qmgr_qshape_count(qmgr_qshape_row(&q, "b.example"), 9);
    qmgr_qshape_count(qmgr_qshape_row(&q, "a.example"), 12); /* out of range: the oldest */
    assert_ptr_equal(qmgr_qshape_row(&q, "big.example"), qmgr_qshape_row(&q, "big.example"));
    v = qmgr_qshape_sorted(&q, &n);
    assert_int_equal(n, 4);
    assert_string_equal(v[0]->name, "big.example");
    assert_int_equal(v[0]->total, 3);
    assert_int_equal(v[0]->n[0] + v[0]->n[1] + v[0]->n[2], 3);
    /* ties: by name */
    assert_string_equal(v[1]->name, "a.example");
    assert_int_equal(v[1]->n[9], 1);
    assert_string_equal(v[2]->name, "b.example");
    assert_string_equal(v[3]->name, "small.example");
    free(v);
    qmgr_qshape_destroy(&q);
}

static void test_empty(void **state)
{
    struct qshape q;
    size_t n = 99;

    qmgr_qshape_init(&q);
    struct qmgr_qshape_row **v = qmgr_qshape_sorted(&q, &n);
    assert_int_equal(n, 0);
    assert_int_equal(q.all.total, 0);
    assert_string_equal(q.all.name, "TOTAL");
    free(v);
    qmgr_qshape_destroy(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_edges),
        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_rows_sorted),
        cmocka_unit_test(test_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
