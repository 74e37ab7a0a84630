/* test_parse.c - cmocka tests for the report parser (feedback/feedback_parse.c,
 * feedback_mime.c, feedback_text.c) over real-shaped samples in
 * tests/data/feedback/: each one parsed as stored (LF) and with CRLF line
 * ends, which must give the same report. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "feedback/feedback_mime.h"
#include "feedback/feedback_parse.h"

#ifndef POSTINO_SRCDIR
#define POSTINO_SRCDIR "."
#endif

static void load(const char *name, buf_t *out)
{
    char path[512];
    char chunk[4096];
    size_t n;
    snprintf(path, sizeof(path), "%s/tests/data/feedback/%s", POSTINO_SRCDIR, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    buf_reset(out);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        buf_append(out, chunk, n);
    fclose(f);
}

/* Parse a sample as stored and as CRLF; both reports must be equal. */
static struct fb_report *parse_sample(const char *name)
{
    buf_t lf = BUF_INIT, crlf = BUF_INIT;
    struct fb_report *r = xmalloc(sizeof(*r)), *r2 = xmalloc(sizeof(*r2));
    load(name, &lf);
    for (size_t i = 0; i < lf.len; i++) {
        if (lf.data[i] == '\n')
            buf_putc(&crlf, '\r');
        buf_putc(&crlf, lf.data[i]);
    }
    fb_parse(lf.data, lf.len, r);
    fb_parse(crlf.data, crlf.len, r2);
    assert_memory_equal(r, r2, sizeof(*r));
    free(r2);
    buf_destroy(&lf);
    buf_destroy(&crlf);
    return r;
}

static void test_rfc3464_postfix(void **state)
{
    struct fb_report *r = parse_sample("rfc3464_postfix.eml");
    assert_int_equal(r->shape, FB_SHAPE_RFC3464);
    assert_int_equal(r->nrcpt, 1);
    assert_string_equal(r->rcpt[0].final_rcpt, "alice@example.org");
    assert_string_equal(r->rcpt[0].orig_rcpt, "alice@example.org");
    assert_string_equal(r->rcpt[0].action, "failed");
    assert_string_equal(r->rcpt[0].status, "5.1.1");
    assert_int_equal(r->rcpt[0].code, 550);
    assert_string_equal(r->rcpt[0].remote_mta, "mailstore1.example.org");
    /* folded Diagnostic-Code, unfolded */
    assert_string_equal(r->rcpt[0].diag, "550 5.1.1 <alice@example.org>: Recipient address "
                                         "rejected: User unknown in virtual mailbox table");
    assert_string_equal(r->orig_message_id, "<march-news-1@sender.test>");
    assert_string_equal(r->orig_to, "alice@example.org");
    assert_string_equal(r->orig_from, "news@sender.test");
    /* ours, not the remote Postfix's id on the Received line above it */
    assert_string_equal(r->orig_queue_id, "65E6EB2A0C35B1F2A");
    free(r);
}

static void test_rfc3464_o365_nested_qp_base64(void **state)
{
    struct fb_report *r = parse_sample("rfc3464_o365.eml");
    assert_int_equal(r->shape, FB_SHAPE_RFC3464);
    assert_int_equal(r->nrcpt, 1);
    assert_string_equal(r->rcpt[0].final_rcpt, "bob@contoso.test");
    assert_string_equal(r->rcpt[0].status, "5.1.10");
    assert_int_equal(r->rcpt[0].code, 550);
    /* the returned message is base64: its headers still count */
    assert_string_equal(r->orig_message_id, "<invoice-42@sender.test>");
    assert_string_equal(r->orig_queue_id, "65E8A70100001AAAB");
    assert_string_equal(r->orig_to, "bob@contoso.test");
    free(r);
}

static void test_arf(void **state)
{
    struct fb_report *r = parse_sample("arf_yahoo.eml");
    assert_int_equal(r->shape, FB_SHAPE_ARF);
    assert_string_equal(r->feedback_type, "abuse");
    assert_string_equal(r->arf_mail_from, "bounces+carol=yahoo.test@bounce.sender.test");
    assert_string_equal(r->arf_rcpt_to, "carol@yahoo.test");
    assert_string_equal(r->arrival_date, "Thu, 7 Mar 2024 12:29:10 +0000");
    assert_string_equal(r->reported_domain, "sender.test");
    assert_string_equal(r->source_ip, "192.0.2.25");
    assert_string_equal(r->orig_message_id, "<deals-week10@sender.test>");
    assert_string_equal(r->orig_to, "redacted@yahoo.test");
    assert_string_equal(r->orig_queue_id, "65E9B2C6000A11234");
    assert_int_equal(r->nrcpt, 0);
    free(r);
}

static void test_exim(void **state)
{
    struct fb_report *r = parse_sample("exim.eml");
    assert_int_equal(r->shape, FB_SHAPE_EXIM);
    assert_int_equal(r->nrcpt, 1);
    assert_string_equal(r->rcpt[0].final_rcpt, "dave@example.net");
    assert_string_equal(r->rcpt[0].action, "failed");
    assert_string_equal(r->rcpt[0].status, "5.2.1");
    assert_int_equal(r->rcpt[0].code, 550);
    assert_non_null(strstr(r->rcpt[0].diag, "This mailbox has been disabled"));
    assert_string_equal(r->orig_queue_id, "65EAD4C50B0C2DDDD");
    assert_string_equal(r->orig_message_id, "<hello-dave@sender.test>");
    free(r);
}

static void test_qmail(void **state)
{
    struct fb_report *r = parse_sample("qmail.eml");
    assert_int_equal(r->shape, FB_SHAPE_QMAIL);
    assert_int_equal(r->nrcpt, 1);
    assert_string_equal(r->rcpt[0].final_rcpt, "erin@example.com");
    assert_string_equal(r->rcpt[0].status, "5.1.1");
    assert_int_equal(r->rcpt[0].code, 550);
    assert_non_null(strstr(r->rcpt[0].diag, "No such user here"));
    assert_string_equal(r->orig_queue_id, "65EC42700D0F3EEEE");
    assert_string_equal(r->orig_message_id, "<hello-erin@sender.test>");
    free(r);

    r = parse_sample("qmail_mailbox.eml");
    assert_int_equal(r->shape, FB_SHAPE_QMAIL);
    assert_int_equal(r->nrcpt, 2);
    assert_string_equal(r->rcpt[0].final_rcpt, "frank@example.com");
    assert_string_equal(r->rcpt[0].status, "5.1.1");
    assert_int_equal(r->rcpt[0].code, 0);
    assert_string_equal(r->rcpt[1].final_rcpt, "gina@example.com");
    assert_string_equal(r->rcpt[1].status, "4.2.2");
    assert_string_equal(r->orig_queue_id, "");
    free(r);
}

static void test_exchange_text(void **state)
{
    struct fb_report *r = parse_sample("exchange_ndr.eml");
    assert_int_equal(r->shape, FB_SHAPE_EXCHANGE);
    assert_int_equal(r->nrcpt, 1);
    assert_string_equal(r->rcpt[0].final_rcpt, "harry@corp.example");
    assert_string_equal(r->rcpt[0].status, "5.1.1");
    assert_string_equal(r->rcpt[0].diag, "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found");
    assert_string_equal(r->orig_queue_id, "65ED93F00E1A2FFFF");
    assert_string_equal(r->orig_to, "harry@corp.example");
    free(r);
}

static void test_postfix_text(void **state)
{
    struct fb_report *r = parse_sample("postfix_text.eml");
    assert_int_equal(r->shape, FB_SHAPE_POSTFIX);
    assert_int_equal(r->nrcpt, 1);
    assert_string_equal(r->rcpt[0].final_rcpt, "ivy@example.edu");
    assert_string_equal(r->rcpt[0].status, "5.2.2");
    assert_int_equal(r->rcpt[0].code, 552);
    assert_non_null(strstr(r->rcpt[0].diag, "Mailbox full, quota exceeded"));
    free(r);
}

static void test_plain_text_quoting_headers(void **state)
{
    struct fb_report *r = parse_sample("plain_quoted.eml");
    assert_int_equal(r->shape, FB_SHAPE_TEXT);
    assert_int_equal(r->nrcpt, 1);
    assert_string_equal(r->rcpt[0].final_rcpt, "");
    assert_string_equal(r->rcpt[0].status, "5.1.1");
    assert_string_equal(r->orig_to, "jack@tiny.example");
    assert_string_equal(r->orig_message_id, "<jack-1@sender.test>");
    assert_string_equal(r->orig_queue_id, "65EEE5700F1B20000");
    free(r);
}

static void test_unrecognised(void **state)
{
    const char *names[] = { "autoreply.eml", "plain_text.eml", "malformed.eml" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        struct fb_report *r = parse_sample(names[i]);
        assert_int_equal(r->shape, FB_SHAPE_NONE);
        assert_non_null(r->why);
        assert_int_equal(r->nrcpt, 0);
        free(r);
    }
}

/* More recipients than kept: the first FB_RCPT_MAX, and it says so. */
static void test_many_recipients(void **state)
{
    buf_t m = BUF_INIT;
    struct fb_report *r = xmalloc(sizeof(*r));
    buf_puts(&m, "Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n"
                 "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n");
    for (int i = 0; i < 100; i++)
        buf_printf(&m,
                   "\nFinal-Recipient: rfc822; u%d@example.org\nAction: failed\n"
                   "Status: 5.1.1\n",
                   i);
    buf_puts(&m, "--B--\n");
    fb_parse(m.data, m.len, r);
    assert_int_equal(r->shape, FB_SHAPE_RFC3464);
    assert_int_equal(r->nrcpt, FB_RCPT_MAX);
    assert_int_equal(r->rcpt_cut, 1);
    assert_string_equal(r->rcpt[FB_RCPT_MAX - 1].final_rcpt, "u31@example.org");
    free(r);
    buf_destroy(&m);
}

/* Nesting deeper than FB_DEPTH_MAX is not followed (and does not crash). */
static void test_deep_nesting(void **state)
{
    buf_t m = BUF_INIT;
    struct fb_report *r = xmalloc(sizeof(*r));
    for (int i = 0; i < 200; i++)
        buf_printf(&m, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n", i, i);
    buf_puts(&m, "Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822; a@b.c\n"
                 "Action: failed\n");
    fb_parse(m.data, m.len, r);
    assert_int_equal(r->shape, FB_SHAPE_NONE);
    free(r);
    buf_destroy(&m);
}

static void test_helpers(void **state)
{
    char st[16], a[64], q[24];
    buf_t d = BUF_INIT;

    assert_int_equal(fb_find_status("said: 550 5.7.1 blocked", st), 1);
    assert_string_equal(st, "5.7.1");
    assert_int_equal(fb_find_status("back on 5.1.2025", st), 0);
    assert_int_equal(fb_find_status("version 1.5.1.1", st), 0);
    assert_int_equal(fb_find_code("#550 5.1.1 x"), 550);
    assert_int_equal(fb_find_code("from [192.0.2.1] 4500 no"), 0);
    assert_int_equal(fb_find_code("421-too busy"), 421);
    fb_addr("\"Doe, J\" <j@example.org>", a, sizeof(a));
    assert_string_equal(a, "j@example.org");
    fb_addr("write to j@example.org.", a, sizeof(a));
    assert_string_equal(a, "j@example.org");
    fb_addr("no address here", a, sizeof(a));
    assert_string_equal(a, "");
    assert_int_equal(
        fb_received_qid("by h (postino) with ESMTP id 65e6eb2a0c35b1f2a; x", q, sizeof(q)), 1);
    assert_string_equal(q, "65E6EB2A0C35B1F2A");
    assert_int_equal(fb_received_qid("by h (Postfix) with ESMTP id 4TqK1B2c3Dz9sXY", q, sizeof(q)),
                     0);
    fb_decode(FB_CTE_QP, "a=3Db=\r\nc=\nd =ZZ", 17, &d);
    assert_string_equal(buf_str(&d), "a=bcd =ZZ");
    buf_reset(&d);
    fb_decode(FB_CTE_BASE64, "aGVs\r\nbG8=\r\n", 12, &d);
    assert_string_equal(buf_str(&d), "hello");
    buf_destroy(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc3464_postfix),
        cmocka_unit_test(test_rfc3464_o365_nested_qp_base64),
        cmocka_unit_test(test_arf),
        cmocka_unit_test(test_exim),
        cmocka_unit_test(test_qmail),
        cmocka_unit_test(test_exchange_text),
        cmocka_unit_test(test_postfix_text),
        cmocka_unit_test(test_plain_text_quoting_headers),
        cmocka_unit_test(test_unrecognised),
        cmocka_unit_test(test_many_recipients),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_helpers),
    };
    return cmocka_run_group_tests_name("feedback_parse", tests, NULL, NULL);
}
