/* test_attr.c - the inter-daemon record protocol: round trips, partial
 * input, strict rejection of malformed records, limits, fd and evbuffer
 * glue over a real socketpair. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/util/attr.h"

static void test_round_trip_escapes(void **state)
{
    attr_t a = ATTR_INIT, b = ATTR_INIT;
    attr_add(&a, "proto", "1");
    attr_add(&a, "reason", "50% off\nline2\r\ttab\x7f end");
    attr_add(&a, "empty", "");
    attr_add(&a, "utf8",
             "r\xc3\xa9"
             "ception@b\xc3\xbc"
             "cher.example \xff\x80");
    attr_add_ll(&a, "count", -42);
    attr_addf(&a, "fmt", "%s-%d", "x", 7);
    buf_t enc = BUF_INIT;
    attr_encode(&a, &enc);
    assert_string_equal(enc.data, "proto=1\nreason=50%25 off%0Aline2%0D%09tab%7F end\n"
                                  "empty=\nutf8=r\xc3\xa9"
                                  "ception@b\xc3\xbc"
                                  "cher.example \xff\x80\n"
                                  "count=-42\nfmt=x-7\n\n");
    size_t used = 0;
    const char *err = NULL;
    assert_int_equal(attr_decode(enc.data, enc.len, &b, &used, &err), ATTR_DECODED);
    assert_int_equal(used, enc.len);
    assert_int_equal(b.n, 6);
    /* bytes >= 0x80 pass through unescaped both ways */
    assert_string_equal(attr_get(&b, "utf8"), "r\xc3\xa9"
                                              "ception@b\xc3\xbc"
                                              "cher.example \xff\x80");
    assert_string_equal(attr_get(&b, "reason"), "50% off\nline2\r\ttab\x7f end");
    assert_string_equal(attr_get(&b, "empty"), "");
    long long v = 0;
    assert_int_equal(attr_get_ll(&b, "count", &v), 0);
    assert_int_equal(v, -42);
    assert_int_equal(attr_get_ll(&b, "reason", &v), -1);
    assert_int_equal(attr_get_ll(&b, "absent", &v), -1);
    assert_null(attr_get(&b, "absent"));
    assert_string_equal(attr_get_def(&b, "absent", "dflt"), "dflt");
    buf_destroy(&enc);
    attr_destroy(&a);
    attr_destroy(&b);
}

static void test_repeated_names_and_two_records(void **state)
{
    const char *in = "request=deliver\nrcpt=0\nrcpt=1\nx=y\nrcpt=5\n\nnext=1\n\n";
    attr_t a = ATTR_INIT;
    size_t used = 0, pos = 0;
    assert_int_equal(attr_decode(in, strlen(in), &a, &used, NULL), ATTR_DECODED);
    const char *want[] = { "0", "1", "5" };
    for (int k = 0; k < 3; k++)
        assert_string_equal(attr_next(&a, "rcpt", &pos), want[k]);
    assert_null(attr_next(&a, "rcpt", &pos));
    assert_string_equal(attr_get(&a, "rcpt"), "0");
    assert_int_equal(attr_decode(in + used, strlen(in) - used, &a, &used, NULL), ATTR_DECODED);
    assert_int_equal(a.n, 1);
    assert_string_equal(attr_get(&a, "next"), "1");
    attr_destroy(&a);
}

static void test_partial_input(void **state)
{
    const char *in = "a=1\nb=2%41\n\n";
    attr_t a = ATTR_INIT;
    size_t used = 0;
    for (size_t n = 0; n < strlen(in); n++)
        assert_int_equal(attr_decode(in, n, &a, &used, NULL), ATTR_INCOMPLETE);
    assert_int_equal(attr_decode(in, strlen(in), &a, &used, NULL), ATTR_DECODED);
    assert_string_equal(attr_get(&a, "b"), "2A");
    attr_destroy(&a);
}

static void test_malformed(void **state)
{
    static const char *bad[] = {
        "\n",          /* empty record */
        "novalue\n\n", /* no '=' */
        "=x\n\n",      /* empty name */
        "Upper=x\n\n", /* upper case name */
        "a-b=x\n\n",   /* '-' in name */
        "a=%4\n\n",    /* short escape */
        "a=%zz\n\n",   /* bad hex */
        "a=%00\n\n",   /* NUL */
        "a=x%\n\n",    /* lone % */
        "ok=1\nbad line\n\n",
        "a b=1\n\n",
    };
    attr_t a = ATTR_INIT;
    size_t u0;
    assert_int_equal(attr_decode("a=x\0y\n\n", 7, &a, &u0, NULL), ATTR_MALFORMED);
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        size_t used = 0;
        const char *err = NULL;
        enum attr_decoded r = attr_decode(bad[k], strlen(bad[k]), &a, &used, &err);
        if (r != ATTR_MALFORMED)
            fail_msg("accepted malformed record %zu: %s", k, bad[k]);
        assert_non_null(err);
        assert_int_equal(a.n, 0);
    }
    attr_destroy(&a);
}

static void test_limits(void **state)
{
    attr_t a = ATTR_INIT;
    size_t used;
    const char *err = NULL;
    /* name of 64 ok, 65 bad */
    char name[70];
    memset(name, 'n', sizeof(name));
    buf_t in = BUF_INIT;
    buf_append(&in, name, 64);
    buf_puts(&in, "=1\n\n");
    assert_int_equal(attr_decode(in.data, in.len, &a, &used, &err), ATTR_DECODED);
    buf_reset(&in);
    buf_append(&in, name, 65);
    buf_puts(&in, "=1\n\n");
    assert_int_equal(attr_decode(in.data, in.len, &a, &used, &err), ATTR_MALFORMED);
    /* over-long line, even before it is complete */
    buf_reset(&in);
    buf_puts(&in, "v=");
    for (int k = 0; k < ATTR_LINE_MAX; k++)
        buf_putc(&in, 'x');
    assert_int_equal(attr_decode(in.data, in.len, &a, &used, &err), ATTR_MALFORMED);
    /* too many attributes */
    buf_reset(&in);
    for (int k = 0; k <= ATTR_COUNT_MAX; k++)
        buf_puts(&in, "r=1\n");
    buf_puts(&in, "\n");
    assert_int_equal(attr_decode(in.data, in.len, &a, &used, &err), ATTR_MALFORMED);
    /* exactly the maximum is fine */
    buf_reset(&in);
    for (int k = 0; k < ATTR_COUNT_MAX; k++)
        buf_puts(&in, "r=1\n");
    buf_puts(&in, "\n");
    assert_int_equal(attr_decode(in.data, in.len, &a, &used, &err), ATTR_DECODED);
    assert_int_equal(a.n, ATTR_COUNT_MAX);
    buf_destroy(&in);
    attr_destroy(&a);
}

static void test_fd_round_trip(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    attr_t a = ATTR_INIT, b = ATTR_INIT;
    attr_add(&a, "proto", "1");
    attr_add(&a, "request", "new");
    assert_int_equal(attr_write_fd(sv[0], &a), 0);
    attr_clear(&a);
    attr_add(&a, "second", "2");
    assert_int_equal(attr_write_fd(sv[0], &a), 0);
    buf_t inbuf = BUF_INIT;
    const char *err = NULL;
    assert_int_equal(attr_read_fd(sv[1], &inbuf, &b, 1000, &err), 0);
    assert_string_equal(attr_get(&b, "request"), "new");
    assert_int_equal(attr_read_fd(sv[1], &inbuf, &b, 1000, &err), 0);
    assert_string_equal(attr_get(&b, "second"), "2");
    /* nothing more: times out */
    assert_int_equal(attr_read_fd(sv[1], &inbuf, &b, 50, &err), -1);
    assert_string_equal(err, "timeout");
    /* half a record then EOF */
    assert_int_equal(write(sv[0], "a=1\n", 4), 4);
    close(sv[0]);
    assert_int_equal(attr_read_fd(sv[1], &inbuf, &b, 1000, &err), -1);
    close(sv[1]);
    buf_destroy(&inbuf);
    attr_destroy(&a);
    attr_destroy(&b);
}

static void test_evbuffer(void **state)
{
    struct evbuffer *eb = evbuffer_new();
    attr_t a = ATTR_INIT, b = ATTR_INIT;
    const char *err = NULL;
    attr_add(&a, "status", "ok");
    attr_add(&a, "reason", "a\nb");
    attr_to_evbuffer(eb, &a);
    evbuffer_add(eb, "x=1\n", 4);
    assert_int_equal(attr_from_evbuffer(eb, &b, &err), ATTR_DECODED);
    assert_string_equal(attr_get(&b, "reason"), "a\nb");
    assert_int_equal(evbuffer_get_length(eb), 4);
    assert_int_equal(attr_from_evbuffer(eb, &b, &err), ATTR_INCOMPLETE);
    evbuffer_add(eb, "\n", 1);
    assert_int_equal(attr_from_evbuffer(eb, &b, &err), ATTR_DECODED);
    assert_string_equal(attr_get(&b, "x"), "1");
    assert_int_equal(attr_from_evbuffer(eb, &b, &err), ATTR_INCOMPLETE);
    evbuffer_add(eb, "\nx=1\n\n", 6);
    assert_int_equal(attr_from_evbuffer(eb, &b, &err), ATTR_MALFORMED);
    evbuffer_drain(eb, evbuffer_get_length(eb));
    evbuffer_add(eb, "bad\n\n", 5);
    assert_int_equal(attr_from_evbuffer(eb, &b, &err), ATTR_MALFORMED);
    evbuffer_drain(eb, evbuffer_get_length(eb));
    /* endless garbage without a record end */
    char junk[4096];
    memset(junk, 'a', sizeof(junk));
    junk[sizeof(junk) - 1] = '\n';
    enum attr_decoded r = ATTR_INCOMPLETE;
    for (int k = 0; k < 100 && r == ATTR_INCOMPLETE; k++) {
        evbuffer_add(eb, junk, sizeof(junk));
        r = attr_from_evbuffer(eb, &b, &err);
    }
    assert_int_equal(r, ATTR_MALFORMED);
    evbuffer_free(eb);
    attr_destroy(&a);
    attr_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_escapes),
        cmocka_unit_test(test_repeated_names_and_two_records),
        cmocka_unit_test(test_partial_input),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_fd_round_trip),
        cmocka_unit_test(test_evbuffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
