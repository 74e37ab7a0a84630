/* test_qp.c - cmocka tests for the streaming quoted-printable encoder
 * (common/mail/qp.c): RFC 2045 rules, line lengths, and the same output for
 * every way of splitting the input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "common/util/buf.h"
#include "common/mail/qp.h"

/* Encode s in pieces of step bytes (0: whole) into out. */
static void enc(const char *s, size_t step, buf_t *out)
{
    struct qp_enc q;
    size_t n = strlen(s), off = 0;
    qp_enc_init(&q);
    buf_reset(out);
    if (step == 0)
        step = n ? n : 1;
    while (off < n) {
        size_t k = n - off < step ? n - off : step;
        qp_enc_feed(&q, s + off, k, out);
        off += k;
    }
    qp_enc_end(&q, out);
}

static void assert_enc(const char *in, const char *want)
{
    buf_t out = BUF_INIT;
    size_t step;
    for (step = 0; step <= 4; step++) {
        enc(in, step, &out);
        assert_string_equal(buf_str(&out), want);
    }
    buf_destroy(&out);
}

static void test_rules(void **state)
{
    assert_enc("plain text\r\n", "plain text\r\n");
    assert_enc("caf\xc3\xa9 = 1\r\n", "caf=C3=A9 =3D 1\r\n");
    assert_enc("space \r\ntab\t\r\n", "space=20\r\ntab=09\r\n"); /* rule 3 */
    assert_enc("a  b\t c\r\n", "a  b\t c\r\n");                  /* not at the end */
    assert_enc("bare\rcr \rx\r\n", "bare=0Dcr =0Dx\r\n");
    assert_enc("lf only\nnext", "lf only\r\nnext=\r\n"); /* LF: a line break */
    assert_enc("no newline ", "no newline=20=\r\n");
    assert_enc("ends in cr\r", "ends in cr=0D=\r\n");
    assert_enc("", "");
    assert_enc("\x7f\x01~!", "=7F=01~!=\r\n");
}

static void test_soft_breaks(void **state)
{
    buf_t in = BUF_INIT, out = BUF_INIT;
    size_t i, col = 0;
    for (i = 0; i < 500; i++)
        buf_puts(&in, i % 3 ? "x" : "\xe9");
    buf_puts(&in, "\r\n");
    enc(in.data, 0, &out);
    for (i = 0; i < out.len; i++) {
        if (out.data[i] == '\r')
            continue;
        if (out.data[i] == '\n') {
            col = 0;
            continue;
        }
        assert_true(++col <= 76);
        /* "=XX" is never cut by a soft break */
        if (out.data[i] == '=' && out.data[i + 1] != '\r')
            assert_true(out.data[i + 1] != '\r' && out.data[i + 2] != '\r');
    }
    /* exactly 75 characters, then "=" */
    assert_memory_equal(out.data + 75, "=\r\n", 3);
    buf_destroy(&in);
    buf_destroy(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_soft_breaks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
