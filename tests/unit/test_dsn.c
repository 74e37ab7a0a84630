/* test_dsn.c - the RFC 3464 report builder: structure, NOTIFY rules,
 * status codes, and above all that nothing from the envelope or a remote
 * reply can inject a header line or DSN field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/mail/dsn.h"
#include "common/mail/qfile.h"

static const char content[] = "Received: from x by y\r\n"
                              "From: a@example.com\r\n"
                              "Subject: hello\r\n"
                              "\r\n"
                              "body line 1\r\n"
                              "--not-a-boundary\r\n";

struct fixture {
    struct qenv env;
    struct qrcpt r[3];
    size_t idx[3];
    struct dsn_report rep;
    buf_t out;
};

static void fixture_init(struct fixture *f, int kind)
{
    memset(f, 0, sizeof *f);
    str_lcpy(f->env.id, "65A1B2C3D4E5F0001", sizeof f->env.id);
    f->env.arrival.tv_sec = 1700000000;
    f->env.sender = "sender@example.com";
    f->env.rcpt = f->r;
    f->env.nrcpt = 3;
    f->r[0] =
        (struct qrcpt){ .addr = "u1@example.net",
                        .status = QR_BOUNCED,
                        .dsn = "5.1.1",
                        .relay = "mx.example.net[192.0.2.1]:25",
                        .reason = "host mx.example.net[192.0.2.1] said: 550 5.1.1 no such user "
                                  "(in reply to RCPT TO command)",
                        .category = "bad-mailbox",
                        .when = 1700000100 };
    f->r[1] = (struct qrcpt){ .addr = "u2@example.net",
                              .status = QR_DEFERRED,
                              .dsn = "4.2.0",
                              .relay = "none",
                              .reason = "connect to x: Connection refused",
                              .when = 1700000200 };
    f->r[2] = (struct qrcpt){ .addr = "u3@example.net",
                              .category = "other", /* never shown for a success */
                              .status = QR_SENT,
                              .dsn = "2.0.0",
                              .relay = "mx.example.net[192.0.2.1]:25",
                              .reason = "250 2.0.0 ok" };
    f->idx[0] = 0;
    f->rep.kind = kind;
    f->rep.env = &f->env;
    f->rep.idx = f->idx;
    f->rep.nidx = 1;
    f->rep.myhostname = "mx.postino.test";
    f->rep.new_id = "65A1B2C3D4E5F0002";
    f->rep.now = 1700000300;
    f->rep.content = content;
    f->rep.content_len = sizeof content - 1;
    f->rep.orig_len = sizeof content - 1;
}

/* Every LF is preceded by CR, and no CR stands alone. */
static void assert_crlf_only(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\n')
            assert_true(i > 0 && s[i - 1] == '\r');
        if (s[i] == '\r')
            assert_true(i + 1 < len && s[i + 1] == '\n');
    }
}

/* Does any line start with prefix? */
static int has_line(const char *s, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = s; p; p = strstr(p, "\r\n")) {
        if (p != s)
            p += 2;
        if (strncmp(p, prefix, n) == 0)
            return 1;
    }
    return 0;
}

static void test_structure(void **state)
{
    struct fixture f;
    fixture_init(&f, DSN_FAILURE);
    dsn_build(&f.rep, &f.out);
    const char *s = buf_str(&f.out);
    assert_true(has_line(s, "From: MAILER-DAEMON@mx.postino.test (Mail Delivery System)"));
    assert_true(has_line(s, "To: <sender@example.com>"));
    assert_true(has_line(s, "Subject: Undelivered Mail Returned to Sender"));
    assert_true(has_line(s, "Message-Id: <65A1B2C3D4E5F0002@mx.postino.test>"));
    assert_true(has_line(s, "Auto-Submitted: auto-replied"));
    assert_true(has_line(s, "Reporting-MTA: dns; mx.postino.test"));
    assert_true(has_line(s, "X-Postino-Queue-ID: 65A1B2C3D4E5F0001"));
    assert_true(has_line(s, "Final-Recipient: rfc822; u1@example.net"));
    assert_true(has_line(s, "Action: failed"));
    assert_true(has_line(s, "Status: 5.1.1"));
    assert_true(has_line(s, "Remote-MTA: dns; mx.example.net"));
    assert_true(has_line(s, "Diagnostic-Code: smtp; 550 5.1.1 no such user"));
    /* the bounce category, per recipient and in the text (issue #8) */
    assert_true(has_line(s, "X-Postino-Category: bad-mailbox\r\n"));
    assert_true(has_line(s, "    (category: bad-mailbox)\r\n"));
    assert_true(has_line(s, "Content-Type: message/rfc822"));
    assert_true(has_line(s, "body line 1"));
    assert_false(has_line(s, "Will-Retry-Until:"));
    assert_crlf_only(s, f.out.len);
    buf_destroy(&f.out);
}

static void test_injection(void **state)
{
    struct fixture f;
    fixture_init(&f, DSN_DELAY);
    f.env.sender = "evil@example.com>\r\nBcc: victim@example.org";
    f.env.envid = "id\r\nX-Injected: 1";
    f.r[1].addr = "u2@example.net\nX-Injected: 2";
    f.r[1].orcpt = "rfc822;a+0D+0AX-Injected:+203@b";
    f.r[1].reason = "421 busy\r\nX-Injected: 4\rAction: delivered";
    f.r[1].relay = "mx\r\nX-Injected: 5[1.2.3.4]:25";
    f.idx[0] = 1;
    f.rep.retry_until = 1700400000;
    dsn_build(&f.rep, &f.out);
    const char *s = buf_str(&f.out);
    assert_crlf_only(s, f.out.len);
    assert_false(has_line(s, "Bcc:"));
    assert_false(has_line(s, "X-Injected:"));
    assert_false(has_line(s, "Action: delivered"));
    assert_true(has_line(s, "Action: delayed"));
    assert_true(has_line(s, "Status: 4.2.0"));
    assert_true(has_line(s, "Will-Retry-Until: "));
    assert_true(has_line(s, "Original-Envelope-Id: id+0D+0AX-Injected:+201"));
    assert_true(has_line(s, "Original-Recipient: rfc822; a+0D+0AX-Injected:+203@b"));
    assert_true(has_line(s, "Subject: Delayed Mail (still being retried)"));
    buf_destroy(&f.out);
}

static void test_xtext(void **state)
{
    buf_t b = BUF_INIT;
    dsn_safe_xtext(&b, "plain-id.123", 12);
    assert_string_equal(buf_str(&b), "plain-id.123");
    buf_reset(&b);
    dsn_safe_xtext(&b, "caf\xc3\xa9+x", 7);
    assert_string_equal(buf_str(&b), "caf+C3+A9+2Bx");
    buf_reset(&b);
    dsn_safe_text(&b, "a\r\nb\tc\x7f", 0);
    assert_string_equal(buf_str(&b), "a  b c ");
    buf_reset(&b);
    dsn_safe_addr(&b, "a\nb", 0);
    assert_string_equal(buf_str(&b), "a?b");
    buf_destroy(&b);
}

static void test_notify(void **state)
{
    struct qrcpt r;
    memset(&r, 0, sizeof r);
    assert_true(dsn_rcpt_wants(&r, DSN_FAILURE));
    assert_true(dsn_rcpt_wants(&r, DSN_DELAY));
    assert_false(dsn_rcpt_wants(&r, DSN_SUCCESS));
    r.notify = NOTIFY_NEVER;
    assert_false(dsn_rcpt_wants(&r, DSN_FAILURE));
    assert_false(dsn_rcpt_wants(&r, DSN_DELAY));
    r.notify = NOTIFY_SUCCESS;
    assert_true(dsn_rcpt_wants(&r, DSN_SUCCESS));
    assert_false(dsn_rcpt_wants(&r, DSN_FAILURE));
    r.notify = NOTIFY_FAILURE | NOTIFY_DELAY;
    assert_true(dsn_rcpt_wants(&r, DSN_FAILURE));
    r.dsn_sent = NOTIFY_FAILURE;
    assert_false(dsn_rcpt_wants(&r, DSN_FAILURE));
    assert_true(dsn_rcpt_wants(&r, DSN_DELAY));
    assert_int_equal(dsn_kind_from_request("bounce"), DSN_FAILURE);
    assert_int_equal(dsn_kind_from_request("success"), DSN_SUCCESS);
    assert_int_equal(dsn_kind_from_request("new"), -1);
}

static void test_expired_and_success(void **state)
{
    struct fixture f;
    fixture_init(&f, DSN_FAILURE);
    f.r[1].dsn = NULL;
    f.idx[0] = 1;
    dsn_build(&f.rep, &f.out);
    assert_true(has_line(buf_str(&f.out), "Status: 4.4.7"));
    assert_false(has_line(buf_str(&f.out), "Remote-MTA:"));
    assert_true(has_line(buf_str(&f.out), "Diagnostic-Code: X-Postino; connect to x"));
    assert_false(has_line(buf_str(&f.out), "X-Postino-Category:")); /* none recorded */
    buf_destroy(&f.out);

    fixture_init(&f, DSN_SUCCESS);
    f.idx[0] = 2;
    dsn_build(&f.rep, &f.out);
    assert_true(has_line(buf_str(&f.out), "Action: delivered"));
    assert_true(has_line(buf_str(&f.out), "Status: 2.0.0"));
    assert_true(has_line(buf_str(&f.out), "Subject: Successful Mail Delivery Report"));
    assert_false(has_line(buf_str(&f.out), "X-Postino-Category:"));
    assert_false(has_line(buf_str(&f.out), "    (category:"));
    buf_destroy(&f.out);
}

static void test_headers_only(void **state)
{
    struct fixture f;
    fixture_init(&f, DSN_FAILURE);
    f.env.ret = RET_HDRS;
    dsn_build(&f.rep, &f.out);
    assert_true(has_line(buf_str(&f.out), "Content-Type: text/rfc822-headers"));
    assert_true(has_line(buf_str(&f.out), "Subject: hello"));
    assert_false(has_line(buf_str(&f.out), "body line 1"));
    buf_destroy(&f.out);

    /* Too large: only a prefix was read, so only its headers go back. */
    fixture_init(&f, DSN_FAILURE);
    f.rep.content_len = 30;
    f.rep.orig_len = 1000000;
    dsn_build(&f.rep, &f.out);
    assert_true(has_line(buf_str(&f.out), "Content-Type: text/rfc822-headers"));
    assert_true(has_line(buf_str(&f.out), "Received: from x by y"));
    assert_false(has_line(buf_str(&f.out), "From: a@example.com"));
    assert_crlf_only(f.out.data, f.out.len);
    buf_destroy(&f.out);
}

static void test_boundary_unique(void **state)
{
    struct fixture f;
    static char tricky[] = "Subject: x\r\n\r\n--65A1B2C3D4E5F0002.1700000300/mx.postino.test--\r\n";
    fixture_init(&f, DSN_FAILURE);
    f.rep.content = tricky;
    f.rep.content_len = f.rep.orig_len = sizeof tricky - 1;
    dsn_build(&f.rep, &f.out);
    assert_non_null(
        strstr(buf_str(&f.out), "boundary=\"65A1B2C3D4E5F0002.1700000300/mx.postino.test.x\""));
    buf_destroy(&f.out);
}

/* RFC 6533: a report on SMTPUTF8 mail is the global form and may carry
 * UTF-8; the same message without SMTPUTF8 keeps the RFC 3464 types. */
static void test_global(void **state)
{
    struct fixture f;
    fixture_init(&f, DSN_FAILURE);
    f.env.smtputf8 = 1;
    f.env.sender = "s\xc3\xa9nder@exampl\xc3\xa9.com";
    f.r[0].addr = "\"j\xc3\xb6 r+g=\\\"\"@b\xc3\xbc"
                  "cher.example";
    f.r[1].addr = "plain@example.net";
    f.idx[1] = 1;
    f.rep.nidx = 2;
    dsn_build(&f.rep, &f.out);
    const char *s = buf_str(&f.out);
    assert_non_null(
        strstr(s, "Content-Type: multipart/report; report-type=global-delivery-status;"));
    assert_true(has_line(s, "To: <s\xc3\xa9nder@exampl\xc3\xa9.com>"));
    assert_true(has_line(s, "Content-Type: text/plain; charset=utf-8"));
    assert_true(has_line(s, "Content-Type: message/global-delivery-status"));
    assert_true(has_line(s, "X-Postino-Sender: utf-8; s\xc3\xa9nder@exampl\xc3\xa9.com"));
    /* unitext: SP + = \\ escaped, UTF-8 kept */
    assert_true(has_line(s,
                         "Final-Recipient: utf-8; \"j\xc3\xb6\\x{20}r\\x{2B}g\\x{3D}\\x{5C}\"\"@b"
                         "\xc3\xbc"
                         "cher.example"));
    assert_true(has_line(s, "Final-Recipient: rfc822; plain@example.net"));
    assert_true(has_line(s, "Content-Type: message/global"));
    assert_false(has_line(s, "Content-Type: message/delivery-status"));
    assert_false(has_line(s, "Content-Type: message/rfc822"));
    assert_crlf_only(s, f.out.len);
    buf_destroy(&f.out);

    fixture_init(&f, DSN_FAILURE);
    f.env.smtputf8 = 1;
    f.env.ret = RET_HDRS;
    dsn_build(&f.rep, &f.out);
    assert_true(has_line(buf_str(&f.out), "Content-Type: message/global-headers"));
    assert_true(has_line(buf_str(&f.out), "Final-Recipient: rfc822; u1@example.net"));
    buf_destroy(&f.out);

    fixture_init(&f, DSN_FAILURE); /* no SMTPUTF8: RFC 3464 as before */
    dsn_build(&f.rep, &f.out);
    assert_non_null(strstr(buf_str(&f.out), "report-type=delivery-status;"));
    assert_true(has_line(buf_str(&f.out), "Content-Type: text/plain; charset=us-ascii"));
    assert_true(has_line(buf_str(&f.out), "Content-Type: message/delivery-status"));
    assert_true(has_line(buf_str(&f.out), "X-Postino-Sender: rfc822; sender@example.com"));
    buf_destroy(&f.out);
}

/* Text from remote replies keeps UTF-8 but loses C1 controls and
 * malformed bytes, which a mail reader's terminal could act on. */
static void test_utf8_sanitized(void **state)
{
    struct fixture f;
    fixture_init(&f, DSN_FAILURE);
    f.r[0].reason = "550 5.1.1 Empf\xc3\xa4nger \xc2\x9b[2J unbekannt \xff\xc0\xaf";
    dsn_build(&f.rep, &f.out);
    const char *s = buf_str(&f.out);
    assert_true(has_line(s, "Diagnostic-Code: smtp; 550 5.1.1 Empf\xc3\xa4nger  [2J unbekannt   "));
    assert_null(strstr(s, "\xc2\x9b"));
    assert_null(strstr(s, "\xff"));
    buf_destroy(&f.out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_injection),
        cmocka_unit_test(test_xtext),
        cmocka_unit_test(test_notify),
        cmocka_unit_test(test_expired_and_success),
        cmocka_unit_test(test_headers_only),
        cmocka_unit_test(test_boundary_unique),
        cmocka_unit_test(test_global),
        cmocka_unit_test(test_utf8_sanitized),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
