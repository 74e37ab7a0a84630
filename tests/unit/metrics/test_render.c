/* test_render.c - the metrics service's series store and its Prometheus
 * text: label escaping, histogram buckets (cumulative, +Inf, _sum,
 * _count), zero samples for label-less metrics, qmgr's gauges, and the
 * records the store refuses (unknown metric, a gauge from a daemon,
 * wrong label count, negative or non-numeric value). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "metrics/metrics.h"

static enum metrics_add_result add(const char *metric, const char *value, const char *l1,
                                   const char *l2)
{
    attr_t r = ATTR_INIT;
    const char *why = NULL;

    attr_add(&r, "request", "add");
    attr_add(&r, "metric", metric);
    attr_add(&r, "value", value);
    if (l1)
        attr_add(&r, "label", l1);
    if (l2)
        attr_add(&r, "label", l2);
    enum metrics_add_result res = metrics_store_add(&r, &why);
    attr_destroy(&r);
    return res;
}

static void render(buf_t *out, const attr_t *g, size_t ng, int up)
{
    buf_reset(out);
    metrics_render(out, g, ng, up);
}

static void test_counters_and_escaping(void **state)
{
    buf_t out = BUF_INIT;

    assert_int_equal(add("postino_messages_delivered_total", "1", "mx.a.test", NULL),
                     METRICS_ADDED);
    assert_int_equal(add("postino_messages_delivered_total", "2", "mx.a.test", NULL),
                     METRICS_ADDED);
    assert_int_equal(add("postino_messages_deferred_total", "1", "we\"ird\\site\nx", "greylisted"),
                     METRICS_ADDED);
    render(&out, NULL, 0, 0);
    assert_non_null(strstr(buf_str(&out), "# TYPE postino_messages_delivered_total counter\n"));
    assert_non_null(
        strstr(buf_str(&out), "postino_messages_delivered_total{site=\"mx.a.test\"} 3\n"));
    assert_non_null(strstr(buf_str(&out),
                           "postino_messages_deferred_total{site=\"we\\\"ird\\\\site\\nx\","
                           "category=\"greylisted\"} 1\n"));
    /* label-less counters are there at 0; qmgr down */
    assert_non_null(strstr(buf_str(&out), "\npostino_auth_failures_total 0\n"));
    assert_non_null(strstr(buf_str(&out), "\npostino_qmgr_up 0\n"));
    buf_destroy(&out);
    metrics_store_free();
}

static void test_histogram(void **state)
{
    buf_t out = BUF_INIT;

    assert_int_equal(add("postino_delivery_latency_seconds", "0.05", NULL, NULL), METRICS_ADDED);
    assert_int_equal(add("postino_delivery_latency_seconds", "2", NULL, NULL), METRICS_ADDED);
    assert_int_equal(add("postino_delivery_latency_seconds", "1e9", NULL, NULL), METRICS_ADDED);
    render(&out, NULL, 0, 0);
    const char *t = buf_str(&out);
    assert_non_null(strstr(t, "postino_delivery_latency_seconds_bucket{le=\"0.1\"} 1\n"));
    assert_non_null(strstr(t, "postino_delivery_latency_seconds_bucket{le=\"1\"} 1\n"));
    assert_non_null(strstr(t, "postino_delivery_latency_seconds_bucket{le=\"5\"} 2\n"));
    assert_non_null(strstr(t, "postino_delivery_latency_seconds_bucket{le=\"259200\"} 2\n"));
    assert_non_null(strstr(t, "postino_delivery_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(t, "postino_delivery_latency_seconds_count 3\n"));
    assert_non_null(strstr(t, "postino_delivery_latency_seconds_sum 1000000002.05\n"));
    buf_destroy(&out);
    metrics_store_free();
}

static void test_refused(void **state)
{
    assert_int_equal(add("postino_no_such_metric", "1", NULL, NULL), METRICS_REFUSED);
    assert_int_equal(add("postino_queue_messages", "1", "active", NULL), METRICS_REFUSED);
    assert_int_equal(add("postino_messages_delivered_total", "1", NULL, NULL), METRICS_REFUSED);
    assert_int_equal(add("postino_messages_delivered_total", "1", "a", "b"), METRICS_REFUSED);
    assert_int_equal(add("postino_messages_delivered_total", "-1", "a", NULL), METRICS_REFUSED);
    assert_int_equal(add("postino_messages_delivered_total", "1x", "a", NULL), METRICS_REFUSED);
    assert_int_equal(add("postino_messages_delivered_total", "nan", "a", NULL), METRICS_REFUSED);
    assert_null(metrics_store_first(METRIC_DELIVERED));
    metrics_store_free();
}

static void test_gauges(void **state)
{
    attr_t g[3] = { ATTR_INIT, ATTR_INIT, ATTR_INIT };
    buf_t out = BUF_INIT;

    attr_add(&g[0], "metric", "postino_queue_messages");
    attr_add(&g[0], "value", "7");
    attr_add(&g[0], "label", "deferred");
    attr_add(&g[1], "metric", "postino_active_deliveries");
    attr_add(&g[1], "value", "2");
    attr_add(&g[2], "metric", "postino_messages_received_total"); /* not a gauge */
    attr_add(&g[2], "value", "2");
    assert_true(metrics_gauge_ok(&g[0]));
    assert_true(metrics_gauge_ok(&g[1]));
    assert_false(metrics_gauge_ok(&g[2]));
    render(&out, g, 2, 1);
    assert_non_null(strstr(buf_str(&out), "postino_queue_messages{state=\"deferred\"} 7\n"));
    assert_non_null(strstr(buf_str(&out), "\npostino_active_deliveries 2\n"));
    assert_non_null(strstr(buf_str(&out), "\npostino_qmgr_up 1\n"));
    for (size_t i = 0; i < 3; i++)
        attr_destroy(&g[i]);
    buf_destroy(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_and_escaping),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_gauges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
