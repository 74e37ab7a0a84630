/* test_event.c - cmocka tests for feedback/feedback_event.c: VERP decoding
 * and the choice of recipient, category and suppression of each event,
 * with the shipped classifier rules (conf/bounce_classifier_rules). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mail/bclass.h"
#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "feedback/feedback.h"

#ifndef POSTINO_SRCDIR
#define POSTINO_SRCDIR "."
#endif

static int load_rules(void **state)
{
    buf_t err = BUF_INIT;
    int rc = bclass_load(NULL, POSTINO_SRCDIR "/conf/bounce_classifier_rules", &err);
    if (rc < 0)
        fprintf(stderr, "%s\n", buf_str(&err));
    buf_destroy(&err);
    return rc;
}

static int drop_rules(void **state)
{
    bclass_reset();
    return 0;
}

static void test_verp_decode(void **state)
{
    char a[FB_ADDR_MAX];
    assert_int_equal(
        fb_verp_decode("bounces+alice=example.org@bounce.example.com", "+=", a, sizeof(a)), 0);
    assert_string_equal(a, "alice@example.org");
    /* '=' in the recipient's local part: the last one separates the domain */
    assert_int_equal(fb_verp_decode("b+x=y=example.org@bounce.example.com", "+=", a, sizeof(a)), 0);
    assert_string_equal(a, "x=y@example.org");
    /* quoted local part (verp_encode quotes what is no dot-atom) */
    assert_int_equal(fb_verp_decode("\"b+a b=example.org\"@bounce.example.com", "+=", a, sizeof(a)),
                     0);
    assert_string_equal(a, "a b@example.org");
    assert_int_equal(fb_verp_decode("b-alice=example.org@bounce.example.com", "-=", a, sizeof(a)),
                     0);
    assert_string_equal(a, "alice@example.org");
    /* not VERP: no delimiter, empty parts, wrong delimiters */
    assert_int_equal(fb_verp_decode("bounces@bounce.example.com", "+=", a, sizeof(a)), -1);
    assert_int_equal(fb_verp_decode("+alice=example.org@b.example", "+=", a, sizeof(a)), -1);
    assert_int_equal(fb_verp_decode("b+=example.org@b.example", "+=", a, sizeof(a)), -1);
    assert_int_equal(fb_verp_decode("b+alice=@b.example", "+=", a, sizeof(a)), -1);
    assert_int_equal(fb_verp_decode("b+alice@b.example", "+=", a, sizeof(a)), -1);
    assert_int_equal(fb_verp_decode("noat", "+=", a, sizeof(a)), -1);
    /* too long for the buffer: refused, not cut */
    assert_int_equal(fb_verp_decode("b+aaaaaaaaaa=example.org@x", "+=", a, 8), -1);
}

static struct fb_report *dsn(const char *action, const char *status, const char *diag)
{
    struct fb_report *r = xcalloc(1, sizeof(*r));
    r->shape = FB_SHAPE_RFC3464;
    r->nrcpt = 1;
    str_lcpy(r->rcpt[0].final_rcpt, "final@example.org", FB_ADDR_MAX);
    str_lcpy(r->rcpt[0].orig_rcpt, "orig@example.org", FB_ADDR_MAX);
    str_lcpy(r->rcpt[0].action, action, 16);
    str_lcpy(r->rcpt[0].status, status, 16);
    str_lcpy(r->rcpt[0].diag, diag, FB_TEXT_MAX);
    r->rcpt[0].code = atoi(diag);
    str_lcpy(r->orig_to, "to@example.org", FB_ADDR_MAX);
    return r;
}

static void test_bounce_events(void **state)
{
    struct fb_event ev[4];
    char verp[2][FB_ADDR_MAX] = { "alice@example.org", "" };
    struct fb_report *r = dsn("failed", "5.1.1", "550 5.1.1 user unknown");

    /* VERP wins over the report's recipients */
    assert_int_equal(fb_events(r, verp, 1, ev, 4), 1);
    assert_string_equal(ev[0].rcpt, "alice@example.org");
    assert_int_equal(ev[0].category, BCLASS_BAD_MAILBOX);
    assert_int_equal(ev[0].suppress, 1);
    assert_int_equal(ev[0].complaint, 0);
    /* without VERP: Original-Recipient, then Final-Recipient, then To: */
    assert_int_equal(fb_events(r, verp, 0, ev, 4), 1);
    assert_string_equal(ev[0].rcpt, "orig@example.org");
    r->rcpt[0].orig_rcpt[0] = '\0';
    fb_events(r, verp, 0, ev, 4);
    assert_string_equal(ev[0].rcpt, "final@example.org");
    r->rcpt[0].final_rcpt[0] = '\0';
    fb_events(r, verp, 0, ev, 4);
    assert_string_equal(ev[0].rcpt, "to@example.org");
    free(r);

    /* soft bounces and delays are logged, not suppressed */
    r = dsn("failed", "5.2.2", "552 5.2.2 mailbox full");
    fb_events(r, verp, 1, ev, 4);
    assert_int_equal(ev[0].category, BCLASS_QUOTA_ISSUES);
    assert_int_equal(ev[0].suppress, 0);
    free(r);
    r = dsn("delayed", "4.1.1", "450 4.1.1 try later");
    fb_events(r, verp, 1, ev, 4);
    assert_int_equal(ev[0].suppress, 0);
    free(r);
}

static void test_complaint_events(void **state)
{
    struct fb_event ev[2];
    char verp[1][FB_ADDR_MAX];
    struct fb_report *r = xcalloc(1, sizeof(*r));
    r->shape = FB_SHAPE_ARF;
    str_lcpy(r->feedback_type, "abuse", sizeof(r->feedback_type));
    str_lcpy(r->arf_rcpt_to, "carol@example.org", FB_ADDR_MAX);
    str_lcpy(r->orig_to, "redacted@example.org", FB_ADDR_MAX);
    assert_int_equal(fb_events(r, verp, 0, ev, 2), 1);
    assert_string_equal(ev[0].rcpt, "carol@example.org");
    assert_int_equal(ev[0].complaint, 1);
    assert_int_equal(ev[0].category, BCLASS_SPAM_RELATED);
    assert_int_equal(ev[0].suppress, 1);
    assert_string_equal(ev[0].type, "abuse");
    /* "this is not spam" is feedback, not a complaint to act on */
    str_lcpy(r->feedback_type, "not-spam", sizeof(r->feedback_type));
    fb_events(r, verp, 0, ev, 2);
    assert_int_equal(ev[0].suppress, 0);
    /* nothing recognised: no events */
    r->shape = FB_SHAPE_NONE;
    assert_int_equal(fb_events(r, verp, 0, ev, 2), 0);
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verp_decode),
        cmocka_unit_test(test_bounce_events),
        cmocka_unit_test(test_complaint_events),
    };
    return cmocka_run_group_tests_name("feedback_event", tests, load_rules, drop_rules);
}
