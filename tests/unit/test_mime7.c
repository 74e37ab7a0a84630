/* test_mime7.c - cmocka tests for the 8-bit to 7-bit MIME converter
 * (common/mail/mime7.c): exact output for the basic cases, every chunk
 * split gives the same result, multipart/nested/message-rfc822/digest,
 * quoted-printable line rules, what cannot be converted, and that the
 * output is 7 bit and decodes back to the input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/buf.h"
#include "common/mail/mime7.h"

/* Feed s in pieces of `step` bytes (0: whole). */
static void feed(struct mime7 *m, const char *s, size_t n, size_t step, buf_t *out)
{
    size_t off = 0;
    if (step == 0)
        step = n ? n : 1;
    while (off < n) {
        size_t k = n - off < step ? n - off : step;
        mime7_feed(m, s + off, k, out);
        off += k;
    }
    mime7_end(m, out);
}

/* Scan and convert s, each pass fed in `step`-byte pieces. Returns the
 * scan result; out gets the conversion (even when nothing needed it). */
static int run(const char *s, size_t n, size_t step, buf_t *out)
{
    struct mime7 *m = mime7_new();
    int r;
    feed(m, s, n, step, NULL);
    r = mime7_result(m);
    mime7_convert_begin(m);
    buf_reset(out);
    feed(m, s, n, step, out);
    mime7_free(m);
    return r;
}

static int convert(const char *s, buf_t *out)
{
    return run(s, strlen(s), 0, out);
}

static void assert_7bit_lines(const buf_t *b)
{
    size_t i, col = 0;
    for (i = 0; i < b->len; i++) {
        assert_true((unsigned char)b->data[i] < 0x80);
        if (b->data[i] == '\n')
            col = 0;
        else if (++col > 998)
            fail_msg("line longer than 998 at %zu", i);
    }
}

/* Decode quoted-printable text (RFC 2045: "=XX", soft break "=\r\n"). */
static void qp_decode(const char *p, size_t n, buf_t *out)
{
    size_t i = 0;
    buf_reset(out);
    while (i < n) {
        if (p[i] == '=' && i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') {
            i += 3;
        } else if (p[i] == '=' && i + 2 < n) {
            buf_putc(out, str_hexval(p[i + 1]) * 16 + str_hexval(p[i + 2]));
            i += 3;
        } else {
            buf_putc(out, p[i++]);
        }
    }
}

/* The body of the part whose header contains `marker`, up to `end` (the
 * CRLF of the next delimiter; NULL: "\r\n--" or the end), decoded. */
static void part_body_to(const buf_t *conv, const char *marker, const char *end, buf_t *out)
{
    const char *p = strstr(conv->data, marker), *b, *e;
    assert_non_null(p);
    b = strstr(p, "\r\n\r\n");
    assert_non_null(b);
    b += 4;
    e = strstr(b, end ? end : "\r\n--");
    if (!e)
        e = conv->data + conv->len;
    qp_decode(b, (size_t)(e - b), out);
}

static void part_body(const buf_t *conv, const char *marker, buf_t *out)
{
    part_body_to(conv, marker, NULL, out);
}

/* ---- exact output ---- */

static void test_seven_bit_untouched(void **state)
{
    const char *msg = "Received: from x\r\nSubject: plain\r\nMIME-Version: 1.0\r\n"
                      "Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
                      "Content-Transfer-Encoding: 8bit\r\n\r\npreamble\r\n--b1\r\n"
                      "Content-Type: text/plain\r\n\r\nhello =  \r\n--b1--\r\nepilogue\r\n";
    const char *plain = "Subject: plain\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
                        "--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=E9 \r\n"
                        "--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\ny\r\n"
                        "--b--\r\n";
    buf_t out = BUF_INIT;
    assert_int_equal(convert(msg, &out), 0); /* nothing 8-bit: no conversion needed */
    /* without 8bit labels even a forced conversion copies every byte */
    assert_int_equal(convert(plain, &out), 0);
    assert_string_equal(out.data, plain);
    buf_destroy(&out);
}

static void test_non_mime_text(void **state)
{
    const char *msg = "Subject: hi\r\n\r\nGr\xc3\xbc\xc3\x9f"
                      "e\r\n";
    const char *want = "Subject: hi\r\nContent-Transfer-Encoding: quoted-printable\r\n"
                       "Content-Type: text/plain; charset=unknown-8bit\r\nMIME-Version: 1.0\r\n"
                       "\r\nGr=C3=BC=C3=9Fe\r\n";
    buf_t out = BUF_INIT;
    assert_int_equal(convert(msg, &out), MIME7_BODY8);
    assert_string_equal(out.data, want);
    buf_destroy(&out);
}

static void test_cte_replaced_in_place(void **state)
{
    const char *msg = "MIME-Version: 1.0\r\nContent-Transfer-Encoding:\r\n 8bit\r\n"
                      "Content-Type: text/plain; charset=utf-8\r\nX-After: 1\r\n"
                      "Content-Transfer-Encoding: 8bit\r\n\r\n\xe2\x82\xac 5\r\n";
    const char *want = "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n"
                       "Content-Type: text/plain; charset=utf-8\r\nX-After: 1\r\n"
                       "\r\n=E2=82=AC 5\r\n";
    buf_t out = BUF_INIT;
    assert_int_equal(convert(msg, &out), MIME7_BODY8);
    assert_string_equal(out.data, want);
    buf_destroy(&out);
}

static void test_qp_rules(void **state)
{
    /* trailing space and tab, '=', bare CR, a last line without CRLF */
    const char *msg = "Content-Type: text/plain\r\n\r\n\xe9t\xe9 \r\na\t\r\nx=y\ra\r\nend \xff";
    const char *want = "Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n"
                       "MIME-Version: 1.0\r\n\r\n=E9t=E9=20\r\na=09\r\nx=3Dy=0Da\r\nend =FF=\r\n";
    buf_t out = BUF_INIT;
    assert_int_equal(convert(msg, &out), MIME7_BODY8);
    assert_string_equal(out.data, want);
    buf_destroy(&out);
}

static void test_long_lines_soft_breaks(void **state)
{
    buf_t msg = BUF_INIT, out = BUF_INIT, dec = BUF_INIT, body = BUF_INIT;
    size_t i, col = 0, maxcol = 0;
    for (i = 0; i < 3000; i++) /* longer than the parser's line buffer */
        buf_puts(&body, i % 7 == 0 ? "\xc3\xa9" : i % 13 == 0 ? " " : "x");
    buf_puts(&body, "\r\nshort\r\n");
    buf_printf(&msg, "Content-Type: text/plain; charset=utf-8\r\n\r\n%s", body.data);
    assert_int_equal(convert(msg.data, &out), MIME7_BODY8);
    assert_7bit_lines(&out);
    for (i = 0; i < out.len; i++) {
        if (out.data[i] == '\r')
            continue;
        col = out.data[i] == '\n' ? 0 : col + 1;
        if (col > maxcol)
            maxcol = col;
    }
    assert_true(maxcol <= 76);
    part_body(&out, "Content-Type", &dec);
    assert_int_equal(dec.len, body.len);
    assert_memory_equal(dec.data, body.data, body.len);
    buf_destroy(&msg);
    buf_destroy(&out);
    buf_destroy(&dec);
    buf_destroy(&body);
}

/* ---- structure ---- */

static const char nested[] =
    "Received: by x\r\nMIME-Version: 1.0\r\nSubject: nested\r\n"
    "Content-Type: multipart/mixed;\r\n boundary=\"outer (x)\" ; x=y\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\nThis is MIME.\r\n"
    "--outer (x)\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\nPART1 K\xc3\xb6ln\r\nline 2\r\n"
    "--outer (x)\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "PART2 only ascii\r\n"
    "--outer (x)\r\nContent-Type: application/octet-stream\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\nAAECAwQ=\r\n"
    "--outer (x)\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
    "--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>PART3 \xc3\xa0 la</p>\r\n"
    "--inner  \r\nContent-Type: text/plain\r\n\r\nPART4 plain\r\n"
    "--outer (x)\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Subject: inner message\r\n\r\nPART5 \xe6\x97\xa5\xe6\x9c\xac\r\n"
    "--outer (x)--\r\nepilogue\r\n";

static void test_multipart_nested(void **state)
{
    buf_t out = BUF_INIT, dec = BUF_INIT;
    assert_int_equal(convert(nested, &out), MIME7_BODY8);
    assert_7bit_lines(&out);
    /* the top level and the message part are relabelled 7bit */
    assert_non_null(strstr(out.data, "boundary=\"outer (x)\" ; x=y\r\n"
                                     "Content-Transfer-Encoding: 7bit\r\n\r\nThis is MIME.\r\n"));
    assert_non_null(strstr(out.data, "Content-Type: message/rfc822\r\n"
                                     "Content-Transfer-Encoding: 7bit\r\n\r\n"));
    /* 8-bit leaves become quoted-printable and decode to the input */
    part_body(&out, "charset=utf-8\r\nContent-Transfer-Encoding: quoted", &dec);
    assert_string_equal(dec.data, "PART1 K\xc3\xb6ln\r\nline 2");
    part_body(&out, "text/html", &dec);
    assert_string_equal(dec.data, "<p>PART3 \xc3\xa0 la</p>");
    assert_non_null(strstr(out.data, "Content-Type: text/html; charset=utf-8\r\n"
                                     "Content-Transfer-Encoding: quoted-printable\r\n\r\n"));
    /* the nested message: its body converted, MIME-Version added there */
    assert_non_null(strstr(out.data, "Subject: inner message\r\n"
                                     "Content-Transfer-Encoding: quoted-printable\r\n"
                                     "Content-Type: text/plain; charset=unknown-8bit\r\n"
                                     "MIME-Version: 1.0\r\n\r\nPART5 =E6=97=A5=E6=9C=AC\r\n"));
    /* 7-bit parts as they were, except the stale 8bit label */
    assert_non_null(strstr(out.data, "Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit"
                                     "\r\n\r\nPART2 only ascii\r\n"));
    assert_non_null(strstr(out.data, "Content-Transfer-Encoding: base64\r\n\r\nAAECAwQ=\r\n"));
    assert_non_null(
        strstr(out.data, "--inner  \r\nContent-Type: text/plain\r\n\r\nPART4 plain\r\n"));
    assert_non_null(strstr(out.data, "--outer (x)--\r\nepilogue\r\n"));
    buf_destroy(&out);
    buf_destroy(&dec);
}

static void test_digest_and_outer_boundary(void **state)
{
    /* digest parts default to message/rfc822; the inner multipart is
     * never closed: the outer boundary ends it */
    const char *msg = "Content-Type: multipart/mixed; boundary=o\r\n\r\n"
                      "--o\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n"
                      "--d\r\n\r\nSubject: one\r\n\r\nd\xc3\xa9j\xc3\xa0\r\n"
                      "--d\r\nContent-Type: text/plain\r\n\r\nnot a message \xc2\xa7\r\n"
                      "--o\r\nContent-Type: text/plain\r\n\r\nafter \xc2\xa9\r\n--o--\r\n";
    buf_t out = BUF_INIT, dec = BUF_INIT;
    assert_int_equal(convert(msg, &out), MIME7_BODY8);
    assert_7bit_lines(&out);
    assert_non_null(strstr(out.data,
                           "--d\r\n\r\nSubject: one\r\nContent-Transfer-Encoding: "
                           "quoted-printable\r\nContent-Type: text/plain; charset=unknown-8bit"
                           "\r\nMIME-Version: 1.0\r\n\r\nd=C3=A9j=C3=A0\r\n--d\r\n"));
    part_body(&out, "--d\r\nContent-Type: text/plain", &dec);
    assert_string_equal(dec.data, "not a message \xc2\xa7");
    part_body(&out, "--o\r\nContent-Type: text/plain", &dec);
    assert_string_equal(dec.data, "after \xc2\xa9");
    buf_destroy(&out);
    buf_destroy(&dec);
}

static void test_structure_corners(void **state)
{
    buf_t out = BUF_INIT, dec = BUF_INIT;
    /* a multipart without a boundary is a leaf; so is one whose only
     * Content-Type is the second (the first counts) */
    assert_int_equal(convert("Content-Type: multipart/mixed\r\n\r\n\xe9\r\n", &out), MIME7_BODY8);
    assert_non_null(strstr(out.data, "\r\n\r\n=E9\r\n"));
    assert_int_equal(
        convert("Content-Type: text/plain\r\nContent-Type: multipart/mixed; boundary=b\r\n"
                "\r\n--b\r\n\xe9\r\n--b--\r\n",
                &out),
        MIME7_BODY8);
    assert_non_null(strstr(out.data, "\r\n\r\n--b\r\n=E9\r\n--b--\r\n"));
    /* once an outer boundary closed the inner multipart, the inner
     * boundary is text */
    assert_int_equal(
        convert("Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n"
                "Content-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\n\r\nx\r\n"
                "--o\r\nContent-Type: text/plain\r\n\r\n\xe9\r\n--i\r\nz=1 \r\n--o--\r\n",
                &out),
        MIME7_BODY8);
    part_body_to(&out, "--o\r\nContent-Type: text/plain", "\r\n--o--", &dec);
    assert_string_equal(dec.data, "\xe9\r\n--i\r\nz=1 ");
    buf_destroy(&out);
    buf_destroy(&dec);
}

/* ---- chunking ---- */

static void check_splits(const char *msg)
{
    buf_t whole = BUF_INIT, piece = BUF_INIT;
    size_t n = strlen(msg), step, cut;
    int r = run(msg, n, 0, &whole);
    for (step = 1; step <= 7; step++) {
        assert_int_equal(run(msg, n, step, &piece), r);
        assert_int_equal(piece.len, whole.len);
        assert_memory_equal(piece.data, whole.data, whole.len);
    }
    /* every split into two pieces, for both passes */
    for (cut = 0; cut <= n; cut++) {
        struct mime7 *m = mime7_new();
        mime7_feed(m, msg, cut, NULL);
        mime7_feed(m, msg + cut, n - cut, NULL);
        mime7_end(m, NULL);
        assert_int_equal(mime7_result(m), r);
        mime7_convert_begin(m);
        buf_reset(&piece);
        mime7_feed(m, msg, cut, &piece);
        mime7_feed(m, msg + cut, n - cut, &piece);
        mime7_end(m, &piece);
        assert_int_equal(piece.len, whole.len);
        assert_memory_equal(piece.data, whole.data, whole.len);
        mime7_free(m);
    }
    buf_destroy(&whole);
    buf_destroy(&piece);
}

static void test_every_split_same_output(void **state)
{
    buf_t longmsg = BUF_INIT;
    size_t i;
    check_splits(nested);
    check_splits("Subject: hi\r\n\r\nGr\xc3\xbc\xc3\x9f"
                 "e  \r\n\r\nx\r");
    check_splits("Content-Type: text/plain\r\n\r\n\xe9t\xe9 \r\na\t\r\nx=y\ra\r\nend \xff");
    /* a header line and a body line longer than the line buffer, and a
     * boundary-looking line right after a long line */
    buf_puts(&longmsg, "Content-Type: multipart/mixed; boundary=zz\r\nX-Long: ");
    for (i = 0; i < 1100; i++)
        buf_putc(&longmsg, 'h');
    buf_puts(&longmsg, "\r\n\r\n--zz\r\n\r\n");
    for (i = 0; i < 1100; i++)
        buf_puts(&longmsg, i == 998 ? "\r" : "\xc3\xa4");
    buf_puts(&longmsg, "\r\n--zz\r\n\r\ntail \xc3\xa4\r\n--zz--\r\n");
    check_splits(longmsg.data);
    buf_destroy(&longmsg);
}

/* ---- what cannot be converted ---- */

static int scan(const char *msg, const char **why)
{
    struct mime7 *m = mime7_new();
    int r;
    mime7_feed(m, msg, strlen(msg), NULL);
    mime7_end(m, NULL);
    r = mime7_result(m);
    *why = mime7_why(m);
    mime7_free(m);
    return r;
}

static void test_unconvertible(void **state)
{
    const char *why;
    buf_t deep = BUF_INIT;
    int i;

    assert_int_equal(scan("Subject: Gr\xc3\xbc\xc3\x9f"
                          "e\r\n\r\nascii\r\n",
                          &why),
                     MIME7_HDR8);
    assert_null(why);
    assert_int_equal(
        scan("Content-Type: multipart/mixed; boundary=b\r\n\r\n"
             "--b\r\nContent-Type: text/plain\r\n"
             "Content-Disposition: attachment; filename=\"\xc3\xa4.txt\"\r\n\r\nx\r\n--b--\r\n",
             &why),
        MIME7_HDR8);
    assert_int_equal(scan("Content-Transfer-Encoding: base64\r\n\r\nAAA\xff\r\n", &why),
                     MIME7_BODY8 | MIME7_STUCK);
    assert_non_null(strstr(why, "encoding"));
    assert_int_equal(scan("Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9\xe9\r\n", &why),
                     MIME7_BODY8 | MIME7_STUCK);
    assert_int_equal(scan("Content-Type: multipart/mixed; boundary=b\r\n\r\npre \xe9\r\n"
                          "--b\r\n\r\nx\r\n--b--\r\n",
                          &why),
                     MIME7_BODY8 | MIME7_STUCK);
    assert_non_null(strstr(why, "preamble"));
    assert_int_equal(scan("Content-Type: message/partial; id=x; number=1\r\n\r\n\xe9\r\n", &why),
                     MIME7_BODY8 | MIME7_STUCK);
    assert_non_null(strstr(why, "message/partial"));
    /* a message/rfc822 claiming base64 is opaque: its 8-bit is stuck */
    assert_int_equal(
        scan("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
             "\xe9\r\n",
             &why),
        MIME7_BODY8 | MIME7_STUCK);
    /* 8-bit past the line buffer of a long header line is a header's */
    buf_puts(&deep, "X-Long: ");
    for (i = 0; i < 1200; i++)
        buf_putc(&deep, 'a');
    buf_puts(&deep, "\xc3\xa9\r\n\r\nascii\r\n");
    assert_int_equal(scan(deep.data, &why), MIME7_HDR8);
    buf_reset(&deep);
    /* nesting deeper than the limit, with 8-bit content inside */
    for (i = 0; i < 120; i++)
        buf_printf(&deep, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i);
    buf_puts(&deep, "\r\n\xe9\r\n");
    assert_int_equal(scan(deep.data, &why), MIME7_BODY8 | MIME7_STUCK);
    assert_non_null(strstr(why, "nesting"));
    buf_destroy(&deep);
}

/* 8-bit headers are left alone (SMTPUTF8 sessions), bodies converted. */
static void test_hdr8_passes_through(void **state)
{
    const char *msg = "Subject: \xc3\xa9t\xc3\xa9\r\nMIME-Version: 1.0\r\n"
                      "Content-Type: text/plain; charset=utf-8\r\n\r\n\xc3\xa9\r\n";
    buf_t out = BUF_INIT;
    assert_int_equal(convert(msg, &out), MIME7_HDR8 | MIME7_BODY8);
    assert_string_equal(out.data, "Subject: \xc3\xa9t\xc3\xa9\r\nMIME-Version: 1.0\r\n"
                                  "Content-Type: text/plain; charset=utf-8\r\n"
                                  "Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9\r\n");
    buf_destroy(&out);
}

/* A pseudo-random leaf decodes back to exactly its bytes. */
static void test_random_leaf_round_trip(void **state)
{
    unsigned seed = 12345;
    int round;
    for (round = 0; round < 50; round++) {
        buf_t body = BUF_INIT, msg = BUF_INIT, out = BUF_INIT, dec = BUF_INIT;
        int i, n = 1 + (int)(seed % 4000);
        static const char alphabet[] = "ab =\t.\xc3\xa9\xff-\r\n";
        for (i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            buf_putc(&body, alphabet[(seed >> 16) % (sizeof(alphabet) - 1)]);
        }
        /* CR and LF only as CRLF pairs (the queue holds CRLF lines), and a
         * bare CR as data: replace lone LF by CRLF */
        buf_puts(&msg, "Content-Type: multipart/mixed; boundary=\"=_r\"\r\n\r\n--=_r\r\n"
                       "Content-Type: application/x-test\r\n\r\n");
        for (i = 0; i < (int)body.len; i++) {
            if (body.data[i] == '\n' && (i == 0 || body.data[i - 1] != '\r'))
                buf_putc(&msg, '\r');
            buf_putc(&msg, body.data[i]);
        }
        buf_puts(&msg, "\r\n--=_r--\r\n");
        {
            const char *b = strstr(msg.data, "x-test\r\n\r\n") + 10;
            const char *e = strstr(b, "\r\n--=_r--");
            /* the expected decoding: the part body up to the delimiter's CRLF */
            buf_t want = BUF_INIT;
            buf_append(&want, b, (size_t)(e - b));
            assert_int_equal(convert(msg.data, &out) & MIME7_STUCK, 0);
            assert_7bit_lines(&out);
            part_body_to(&out, "x-test", "\r\n--=_r--", &dec);
            /* a CR at the very end of the body is pending before the
             * delimiter's CRLF: it must come back too */
            assert_int_equal(dec.len, want.len);
            assert_memory_equal(dec.data, want.data, want.len);
            buf_destroy(&want);
        }
        check_splits(msg.data);
        buf_destroy(&body);
        buf_destroy(&msg);
        buf_destroy(&out);
        buf_destroy(&dec);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seven_bit_untouched),
        cmocka_unit_test(test_non_mime_text),
        cmocka_unit_test(test_cte_replaced_in_place),
        cmocka_unit_test(test_qp_rules),
        cmocka_unit_test(test_long_lines_soft_breaks),
        cmocka_unit_test(test_multipart_nested),
        cmocka_unit_test(test_digest_and_outer_boundary),
        cmocka_unit_test(test_structure_corners),
        cmocka_unit_test(test_every_split_same_output),
        cmocka_unit_test(test_unconvertible),
        cmocka_unit_test(test_hdr8_passes_through),
        cmocka_unit_test(test_random_leaf_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
