/* test_reply.c - cmocka tests for the SMTP reply parser (delivery/delivery_reply.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "common/util/buf.h"
#include "delivery/delivery_reply.h"

/* Feed a whole string; returns the parser result and the bytes used. */
static enum dlv_rparser_result feed(struct smtp_rparser *p, const char *s, size_t *used)
{
    return dlv_rparser_feed(p, s, strlen(s), used);
}

static void test_single_line(void **state)
{
    struct smtp_rparser p;
    size_t used;
    char dsn[16];
    dlv_rparser_init(&p);
    assert_int_equal(feed(&p, "250 2.0.0 Ok: queued as ABC\r\n", &used), SMTP_RP_REPLY);
    assert_int_equal(used, 29);
    assert_int_equal(p.reply.code, 250);
    assert_string_equal(p.reply.enh, "2.0.0");
    assert_string_equal(buf_str(&p.reply.text), "250 2.0.0 Ok: queued as ABC");
    dlv_reply_dsn(&p.reply, dsn, sizeof(dsn));
    assert_string_equal(dsn, "2.0.0");
    dlv_rparser_destroy(&p);
}

static void test_multi_line_and_split_feed(void **state)
{
    struct smtp_rparser p;
    size_t used;
    const char *s =
        "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 DSN\r\n221 bye\r\n";
    size_t i, off = 0;
    enum dlv_rparser_result rc = SMTP_RP_MORE;
    dlv_rparser_init(&p);
    /* byte by byte: the parser must keep state across calls */
    for (i = 0; i < strlen(s) && rc == SMTP_RP_MORE; i++) {
        rc = dlv_rparser_feed(&p, s + i, 1, &used);
        off = i + used;
    }
    assert_int_equal(rc, SMTP_RP_REPLY);
    assert_int_equal(p.reply.code, 250);
    assert_int_equal(p.reply.nlines, 4);
    assert_string_equal(buf_str(&p.reply.lines), "mx.example.com\nPIPELINING\nSIZE 1000\nDSN");
    assert_string_equal(buf_str(&p.reply.text),
                        "250-mx.example.com 250-PIPELINING 250-SIZE 1000 250 DSN");
    assert_string_equal(p.reply.enh, "");
    assert_int_equal(feed(&p, s + off, &used), SMTP_RP_REPLY);
    assert_int_equal(p.reply.code, 221);
    assert_int_equal(p.reply.nlines, 1);
    dlv_rparser_destroy(&p);
}

static void test_mismatched_codes(void **state)
{
    struct smtp_rparser p;
    size_t used;
    dlv_rparser_init(&p);
    assert_int_equal(feed(&p, "250-hello\r\n251 other\r\n", &used), SMTP_RP_ERROR);
    assert_non_null(p.err);
    /* once broken, always broken */
    assert_int_equal(feed(&p, "250 ok\r\n", &used), SMTP_RP_ERROR);
    dlv_rparser_destroy(&p);
}

static void test_overlong_line(void **state)
{
    struct smtp_rparser p;
    size_t used;
    buf_t b = BUF_INIT;
    size_t i;
    buf_puts(&b, "250 ");
    for (i = 0; i < SMTP_REPLY_LINE_MAX; i++)
        buf_putc(&b, 'x');
    dlv_rparser_init(&p);
    assert_int_equal(dlv_rparser_feed(&p, b.data, b.len, &used), SMTP_RP_ERROR);
    assert_string_equal(p.err, "reply line too long");
    dlv_rparser_destroy(&p);
    /* exactly at the limit is fine */
    buf_truncate(&b, SMTP_REPLY_LINE_MAX);
    buf_puts(&b, "\r\n");
    dlv_rparser_init(&p);
    assert_int_equal(dlv_rparser_feed(&p, b.data, b.len, &used), SMTP_RP_REPLY);
    dlv_rparser_destroy(&p);
    buf_destroy(&b);
}

static void test_missing_final_line(void **state)
{
    struct smtp_rparser p;
    size_t used;
    dlv_rparser_init(&p);
    assert_int_equal(feed(&p, "250-one\r\n250-two\r\n", &used), SMTP_RP_MORE);
    assert_int_equal(used, 18);
    assert_true(dlv_rparser_pending(&p));
    dlv_rparser_destroy(&p);
}

static void test_too_many_lines(void **state)
{
    struct smtp_rparser p;
    size_t used;
    int i;
    enum dlv_rparser_result rc = SMTP_RP_MORE;
    dlv_rparser_init(&p);
    for (i = 0; i < SMTP_REPLY_LINES_MAX + 5 && rc == SMTP_RP_MORE; i++)
        rc = feed(&p, "250-x\r\n", &used);
    assert_int_equal(rc, SMTP_RP_ERROR);
    dlv_rparser_destroy(&p);
}

static void test_enhanced_codes(void **state)
{
    struct smtp_rparser p;
    size_t used;
    char dsn[16];
    dlv_rparser_init(&p);
    assert_int_equal(feed(&p, "550 5.1.1 <u@d>: Recipient address rejected\r\n", &used),
                     SMTP_RP_REPLY);
    assert_string_equal(p.reply.enh, "5.1.1");
    /* class must match the reply code */
    assert_int_equal(feed(&p, "450 5.1.1 mismatch\r\n", &used), SMTP_RP_REPLY);
    assert_string_equal(p.reply.enh, "");
    dlv_reply_dsn(&p.reply, dsn, sizeof(dsn));
    assert_string_equal(dsn, "4.0.0");
    assert_int_equal(feed(&p, "554 no enhanced code\r\n", &used), SMTP_RP_REPLY);
    dlv_reply_dsn(&p.reply, dsn, sizeof(dsn));
    assert_string_equal(dsn, "5.0.0");
    assert_int_equal(feed(&p, "421 4.7.0123 too many digits\r\n", &used), SMTP_RP_REPLY);
    assert_string_equal(p.reply.enh, "");
    assert_int_equal(dlv_reply_enh_code_len("2.10.100 x", '2'), 8);
    assert_int_equal(dlv_reply_enh_code_len("2.1 x", '2'), 0);
    dlv_rparser_destroy(&p);
}

static void test_garbage(void **state)
{
    struct smtp_rparser p;
    size_t used;
    static const char nul_reply[] = "220 a\0b\n"; /* NUL and bare LF tolerated */
    dlv_rparser_init(&p);
    assert_int_equal(dlv_rparser_feed(&p, nul_reply, sizeof(nul_reply) - 1, &used), SMTP_RP_REPLY);
    assert_int_equal(p.reply.code, 220);
    assert_string_equal(buf_str(&p.reply.text), "220 a b");
    assert_int_equal(feed(&p, "hello there\r\n", &used), SMTP_RP_ERROR);
    dlv_rparser_destroy(&p);
    dlv_rparser_init(&p);
    assert_int_equal(feed(&p, "25\r\n", &used), SMTP_RP_ERROR);
    dlv_rparser_destroy(&p);
    dlv_rparser_init(&p);
    assert_int_equal(feed(&p, "250x\r\n", &used), SMTP_RP_ERROR);
    dlv_rparser_destroy(&p);
    dlv_rparser_init(&p);
    assert_int_equal(feed(&p, "250\r\n", &used), SMTP_RP_REPLY); /* bare code is legal */
    assert_int_equal(p.reply.code, 250);
    dlv_rparser_destroy(&p);
}

/* Lines longer than RFC 5321's 512 bytes are accepted up to the limit;
 * control bytes never reach the reply text (it goes into logs). */
static void test_long_and_control_bytes(void **state)
{
    struct smtp_rparser p;
    size_t used;
    buf_t b = BUF_INIT;
    size_t i;
    buf_puts(&b, "451 4.7.1 ");
    for (i = 0; i < 600; i++)
        buf_putc(&b, 'y');
    buf_puts(&b, "\r\n");
    dlv_rparser_init(&p);
    assert_int_equal(dlv_rparser_feed(&p, b.data, b.len, &used), SMTP_RP_REPLY);
    assert_int_equal(p.reply.text.len, 610);
    assert_string_equal(p.reply.enh, "4.7.1");
    assert_int_equal(feed(&p, "250 a\rb\x1b[31mc\x7f\td\r\n", &used), SMTP_RP_REPLY);
    assert_string_equal(buf_str(&p.reply.text), "250 a b [31mc \td");
    /* bare LF inside a multi-line reply */
    assert_int_equal(feed(&p, "250-one\n250-two\r\n250 three\n", &used), SMTP_RP_REPLY);
    assert_int_equal(p.reply.nlines, 3);
    assert_string_equal(buf_str(&p.reply.lines), "one\ntwo\nthree");
    dlv_rparser_destroy(&p);
    buf_destroy(&b);
}

/* Only the codes a command allows count as success; every other 2xx/3xx
 * (250 to DATA, 354 to end of data, 220 to MAIL...) is a protocol error,
 * whatever its class would suggest. */
static void test_verdict(void **state)
{
    static const short data[] = { 354, 0 }, rcpt[] = { 250, 251, 0 }, greet[] = { 220, 0 };
    static const short none[] = { 0 };
    static const struct {
        int code;
        const short *ok;
        enum smtp_verdict want;
    } cases[] = {
        { 354, data, SMTP_V_OK },     { 250, data, SMTP_V_PROTO }, { 220, data, SMTP_V_PROTO },
        { 251, data, SMTP_V_PROTO },  { 334, data, SMTP_V_PROTO }, { 421, data, SMTP_V_TEMP },
        { 451, data, SMTP_V_TEMP },   { 554, data, SMTP_V_PERM },  { 150, data, SMTP_V_PROTO },
        { 250, rcpt, SMTP_V_OK },     { 251, rcpt, SMTP_V_OK },    { 252, rcpt, SMTP_V_PROTO },
        { 354, rcpt, SMTP_V_PROTO },  { 550, rcpt, SMTP_V_PERM },  { 220, greet, SMTP_V_OK },
        { 250, greet, SMTP_V_PROTO }, { 554, greet, SMTP_V_PERM }, { 221, none, SMTP_V_PROTO },
        { 0, data, SMTP_V_PROTO },    { 600, data, SMTP_V_PROTO },
    };
    size_t k;
    buf_t t = BUF_INIT;
    for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++)
        if (dlv_reply_verdict(cases[k].code, cases[k].ok) != cases[k].want)
            fail_msg("code %d: verdict %d, want %d", cases[k].code,
                     dlv_reply_verdict(cases[k].code, cases[k].ok), cases[k].want);
    dlv_reply_ok_text(data, &t);
    assert_string_equal(buf_str(&t), "354");
    buf_reset(&t);
    dlv_reply_ok_text(rcpt, &t);
    assert_string_equal(buf_str(&t), "250 or 251");
    buf_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_line),
        cmocka_unit_test(test_multi_line_and_split_feed),
        cmocka_unit_test(test_mismatched_codes),
        cmocka_unit_test(test_overlong_line),
        cmocka_unit_test(test_missing_final_line),
        cmocka_unit_test(test_too_many_lines),
        cmocka_unit_test(test_enhanced_codes),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_long_and_control_bytes),
        cmocka_unit_test(test_verdict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
