/* test_sendmail_msg.c - the message sendmail reads (cli/cli_sendmail_msg.c):
 * -t recipients from address lists, Bcc: removed, fields added, the body's
 * line ends, dot-stuffing and the lone-dot rule, long lines and NULs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cli/cli_sendmail.h"

static int collect(void *arg, const char *p, size_t n)
{
    buf_append(arg, p, n);
    return 0;
}

/* Header section and body of input (len bytes) as sendmail sends them. */
static int run(const char *input, size_t len, int extract, int dot_ends, struct sm_msg *m,
               buf_t *body)
{
    struct sm_head_opts o = { "me@origin.test", "Jane Doe", "origin.test", "host.test",
                              extract,          dot_ends,   4096 };
    FILE *in = fmemopen((void *)input, len, "r");
    assert_non_null(in);
    memset(m, 0, sizeof(*m));
    int rc = sm_msg_head(in, m, &o);
    if (rc == 0)
        rc = sm_msg_body(in, m, dot_ends, collect, body);
    fclose(in);
    return rc;
}

static void test_address_lists(void **state)
{
    char **v = NULL;
    size_t n = 0;
    sm_msg_addrs("Ann <a@x.test>, \"Doe, J\" <j@x.test>, plain@x.test, bare, "
                 "team: g1@x.test, g2@x.test;, (note) c@x.test (more), A@X.test",
                 "origin.test", &v, &n);
    const char *want[] = { "a@x.test",  "j@x.test",  "plain@x.test", "bare@origin.test",
                           "g1@x.test", "g2@x.test", "c@x.test" };
    assert_int_equal(n, sizeof(want) / sizeof(want[0])); /* A@X.test: a duplicate */
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(v[i], want[i]);
        free(v[i]);
    }
    assert_null(v[n]);
    free(v);
}

static void test_extract_and_bcc(void **state)
{
    const char in[] = "To: a@x.test\nBcc: b@x.test,\n c@x.test\nSubject: s\n\nbody\n";
    struct sm_msg m;
    buf_t body = BUF_INIT;
    assert_int_equal(run(in, sizeof(in) - 1, 1, 0, &m, &body), 0);
    assert_int_equal(m.nrcpt, 3);
    assert_string_equal(m.rcpts[2], "c@x.test");
    const char *h = buf_str(&m.head);
    assert_non_null(strstr(h, "To: a@x.test\r\nSubject: s\r\n"));
    assert_null(strstr(h, "Bcc"));
    assert_null(strstr(h, "c@x.test"));
    assert_non_null(strstr(h, "From: Jane Doe <me@origin.test>\r\n"));
    assert_non_null(strstr(h, "\r\nDate: "));
    assert_non_null(strstr(h, "@host.test>\r\n\r\n"));
    assert_string_equal(buf_str(&body), "body\r\n");
    sm_msg_destroy(&m);
    buf_destroy(&body);
}

static void test_dots(void **state)
{
    const char in[] = "From: x@y.test\n\none\n.\n..two\n.three\nlast";
    struct sm_msg m;
    buf_t body = BUF_INIT;
    /* -i: the dot line is text; every leading dot stuffed; the last line ended */
    assert_int_equal(run(in, sizeof(in) - 1, 0, 0, &m, &body), 0);
    assert_string_equal(buf_str(&body), "one\r\n..\r\n...two\r\n..three\r\nlast\r\n");
    assert_null(strstr(buf_str(&m.head), "From: Jane"));
    sm_msg_destroy(&m);
    /* without -i the dot line ends the input */
    buf_reset(&body);
    assert_int_equal(run(in, sizeof(in) - 1, 0, 1, &m, &body), 0);
    assert_string_equal(buf_str(&body), "one\r\n");
    sm_msg_destroy(&m);
    buf_destroy(&body);
}

static void test_no_header_mbox_line_long_lines(void **state)
{
    size_t big = 20000;
    buf_t in = BUF_INIT, body = BUF_INIT, want = BUF_INIT;
    buf_puts(&in, "From someone Mon Nov 30 12:00:00 2026\nhello\r\n.");
    for (size_t i = 0; i < big; i++)
        buf_putc(&in, i == 9000 ? '\0' : 'x');
    buf_puts(&in, "\n");
    struct sm_msg m;
    assert_int_equal(run(in.data, in.len, 0, 1, &m, &body), 0);
    buf_puts(&want, "hello\r\n..");
    for (size_t i = 0; i < big; i++)
        buf_putc(&want, i == 9000 ? '\0' : 'x');
    buf_puts(&want, "\r\n");
    assert_int_equal(body.len, want.len);
    assert_memory_equal(body.data, want.data, want.len);
    assert_null(strstr(buf_str(&m.head), "someone"));
    sm_msg_destroy(&m);
    buf_destroy(&in);
    buf_destroy(&body);
    buf_destroy(&want);
}

static void test_header_limit(void **state)
{
    buf_t in = BUF_INIT, body = BUF_INIT;
    for (int i = 0; i < 200; i++)
        buf_printf(&in, "X-Filler-%d: %s\n", i, "0123456789012345678901234567890123456789");
    struct sm_msg m;
    assert_int_equal(run(in.data, in.len, 0, 1, &m, &body), SM_EX_DATAERR);
    sm_msg_destroy(&m);
    buf_destroy(&in);
    buf_destroy(&body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_address_lists), cmocka_unit_test(test_extract_and_bcc),
        cmocka_unit_test(test_dots),          cmocka_unit_test(test_no_header_mbox_line_long_lines),
        cmocka_unit_test(test_header_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
