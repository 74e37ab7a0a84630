/* test_json.c - the events daemon's record -> JSON line (events_json.c)
 * and the emitters' field helpers (common/mail/mevent.c): types and
 * fields it knows, numbers, escaping, UTF-8, and what it refuses. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/mail/mevent.h"
#include "events/events.h"

static void rec(attr_t *a, const char *type, const char *time)
{
    attr_clear(a);
    attr_add(a, "proto", "1");
    attr_add(a, "request", "event");
    if (type)
        attr_add(a, "type", type);
    if (time)
        attr_add(a, "time", time);
}

static void test_line(void **state)
{
    attr_t a = ATTR_INIT;
    buf_t out = BUF_INIT;
    const char *why = NULL;
    rec(&a, "delivery", "1796065323.456");
    attr_add(&a, "queue_id", "6B0DC89D5489D1C8B");
    attr_add(&a, "recipient", "a@example.test");
    attr_add(&a, "reply_code", "250");
    attr_add(&a, "delay", "0.25");
    attr_add(&a, "reply", "250 \"ok\" \\ done");
    assert_int_equal(events_json(&a, &out, &why), 0);
    assert_string_equal(buf_str(&out),
                        "{\"type\":\"delivery\",\"timestamp\":\"2026-11-30T19:02:03.456Z\","
                        "\"queue_id\":\"6B0DC89D5489D1C8B\",\"recipient\":\"a@example.test\","
                        "\"reply_code\":250,\"delay\":0.25,"
                        "\"reply\":\"250 \\\"ok\\\" \\\\ done\"}\n");
    attr_destroy(&a);
    buf_destroy(&out);
}

static void test_bytes_made_valid(void **state)
{
    attr_t a = ATTR_INIT;
    buf_t out = BUF_INIT;
    const char *why = NULL;
    rec(&a, "bounce", "0");
    attr_add(&a, "reply", "bad \xff byte\ttab \xc3\xa9");
    assert_int_equal(events_json(&a, &out, &why), 0);
    assert_non_null(strstr(buf_str(&out), "\"reply\":\"bad ? byte?tab \xc3\xa9\""));
    attr_destroy(&a);
    buf_destroy(&out);
}

static void test_refused(void **state)
{
    static const struct {
        const char *type, *time, *name, *value;
    } bad[] = {
        { NULL, "1", NULL, NULL },           { "delivery", NULL, NULL, NULL },
        { "nonsense", "1", NULL, NULL },     { "delivery", "x", NULL, NULL },
        { "delivery", "1", "color", "red" }, { "delivery", "1", "size", "12a" },
        { "delivery", "1", "size", "-1" },   { "delivery", "1", "delay", "1." },
        { "delivery", "1", "size", "" },     { "delivery", "1", "attempt", "01" },
    };
    attr_t a = ATTR_INIT;
    buf_t out = BUF_INIT;
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        const char *why = NULL;
        rec(&a, bad[k].type, bad[k].time);
        if (bad[k].name)
            attr_add(&a, bad[k].name, bad[k].value);
        buf_reset(&out);
        if (events_json(&a, &out, &why) != -1 || why == NULL || out.len != 0)
            fail_msg("case %zu accepted: %s", k, buf_str(&out));
    }
    attr_destroy(&a);
    buf_destroy(&out);
}

static void test_helpers(void **state)
{
    attr_t a = ATTR_INIT;
    mevent_add_relay(&a, "mx1.example.test[127.0.0.2]:25");
    mevent_add_relay(&a, "none");
    mevent_add_reply(&a, "5.1.1",
                     "host mx1.example.test[127.0.0.2] said: 550 5.1.1 unknown (in reply to RCPT "
                     "TO command)");
    mevent_add_tls(&a, "TLSv1.3:TLS_AES_256_GCM_SHA384");
    mevent_add(&a, "sender", "");
    assert_string_equal(attr_get(&a, "remote_host"), "mx1.example.test");
    assert_string_equal(attr_get(&a, "remote_ip"), "127.0.0.2");
    assert_string_equal(attr_get(&a, "reply_code"), "550");
    assert_string_equal(attr_get(&a, "dsn"), "5.1.1");
    assert_string_equal(attr_get(&a, "tls_version"), "TLSv1.3");
    assert_string_equal(attr_get(&a, "tls_cipher"), "TLS_AES_256_GCM_SHA384");
    assert_null(attr_get(&a, "sender"));
    attr_clear(&a);
    mevent_add_reply(&a, "2.0.0", "250 2.0.0 Ok: queued as X");
    assert_string_equal(attr_get(&a, "reply_code"), "250");
    attr_clear(&a);
    mevent_add_reply(&a, "4.4.1", "connect to x[1.2.3.4]:25: Connection refused");
    assert_null(attr_get(&a, "reply_code"));
    assert_string_equal(mevent_result_type(1 /* QR_SENT */), "delivery");
    attr_destroy(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line),
        cmocka_unit_test(test_bytes_made_valid),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
