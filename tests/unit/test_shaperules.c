/* test_shaperules.c - the shaping_rules parser and matcher
 * (qmgr/shaperules.c), and the shipped conf/shaping_rules on the
 * providers' real wordings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/mail/shaperules.h"

/* Write text to a temporary file; its path in path[64]. */
static void write_rules(char path[64], const char *text)
{
    snprintf(path, 64, "/tmp/test_shaperules.XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
}

static struct shaperules *load_text(const char *text, buf_t *err)
{
    char path[64];
    write_rules(path, text);
    struct shaperules *rs = shaperules_load(path, err);
    unlink(path);
    return rs;
}

static const struct shaperule *match(const struct shaperules *rs, const char *text,
                                     const char *site, const char *mx)
{
    struct shaperule_reply r = { 0, NULL, text, site, mx };
    return shaperules_match(rs, &r);
}

static void test_actions(void **state)
{
    buf_t err = BUF_INIT;
    struct shaperules *rs = load_text("# comment\n"
                                      "\n"
                                      "rate=300/h 30m dsn=4.7.28\n"
                                      "  suspend 1h text=\\[TSS04\\]\n"
                                      "suspend_source 2h code=421 text=blocked\n"
                                      "connections=2 15m dsn=4.7.5xx\r\n"
                                      "bounce - code=5xx text=no such domain\n"
                                      "rate=20/s 90 code=451\n",
                                      &err);
    assert_non_null(rs);
    assert_int_equal(shaperules_count(rs), 6);

    const struct shaperule *r = match(rs, "421 4.7.28 unusual rate", NULL, NULL);
    assert_non_null(r);
    assert_int_equal(r->action, SHAPERULE_RATE);
    assert_int_equal(r->rate_n, 300);
    assert_int_equal(r->rate_unit, 'h');
    assert_true(r->per_sec > 0.0833 && r->per_sec < 0.0834);
    assert_int_equal(r->secs, 1800);
    assert_int_equal(r->line, 3);

    r = match(rs, "421 4.7.0 [TSS04] Messages temporarily deferred", NULL, NULL);
    assert_non_null(r);
    assert_int_equal(r->action, SHAPERULE_SUSPEND);
    assert_int_equal(r->secs, 3600);

    r = match(rs, "421 4.7.1 you are blocked", NULL, NULL);
    assert_non_null(r);
    assert_int_equal(r->action, SHAPERULE_SUSPEND_SOURCE);
    assert_int_equal(r->secs, 7200);

    r = match(rs, "451 4.7.500 Server busy", NULL, NULL);
    assert_non_null(r);
    assert_int_equal(r->action, SHAPERULE_CONNECTIONS);
    assert_int_equal(r->conns, 2);

    r = match(rs, "550 5.1.2 no such domain", NULL, NULL);
    assert_non_null(r);
    assert_int_equal(r->action, SHAPERULE_BOUNCE);
    assert_int_equal(r->secs, 0);

    r = match(rs, "451 4.3.0 try later", NULL, NULL);
    assert_non_null(r);
    assert_int_equal(r->secs, 90); /* a bare number is seconds */
    assert_true(r->per_sec == 20.0);

    assert_null(match(rs, "450 4.2.1 mailbox busy", NULL, NULL));
    shaperules_free(rs);
    buf_destroy(&err);
}

/* First match wins; the cheap conditions all have to hold. */
static void test_first_match_and_codes(void **state)
{
    buf_t err = BUF_INIT;
    struct shaperules *rs = load_text("suspend 10m code=421 dsn=4.7.0 text=later\n"
                                      "connections=1 10m code=4xx text=later\n"
                                      "rate=1/m 10m dsn=4.7.5xx\n"
                                      "rate=2/m 10m dsn=5.*\n",
                                      &err);
    assert_non_null(rs);
    const struct shaperule *r = match(rs, "421 4.7.0 Try again LATER", NULL, NULL);
    assert_int_equal(r->line, 1);
    r = match(rs, "421 4.7.1 try again later", NULL, NULL);
    assert_int_equal(r->line, 2); /* dsn differs: the next rule */
    r = match(rs, "450 try again later", NULL, NULL);
    assert_int_equal(r->line, 2);
    assert_null(match(rs, "550 try again later", NULL, NULL));
    /* 4.7.5xx: three digits starting with 5, nothing else */
    assert_int_equal(match(rs, "451 4.7.500 busy", NULL, NULL)->line, 3);
    assert_int_equal(match(rs, "451 4.7.599 busy", NULL, NULL)->line, 3);
    assert_null(match(rs, "451 4.7.50 busy", NULL, NULL));
    assert_null(match(rs, "451 4.7.600 busy", NULL, NULL));
    assert_int_equal(match(rs, "554 5.7.1 no", NULL, NULL)->line, 4);
    /* code and enhanced code given by the caller win over the text */
    struct shaperule_reply in = { 451, "4.7.512", "whatever", NULL, NULL };
    assert_int_equal(shaperules_match(rs, &in)->line, 3);
    /* no codes at all: only text rules could match */
    assert_null(match(rs, "busy", NULL, NULL));
    shaperules_free(rs);
    buf_destroy(&err);
}

/* A phrase split over the lines of a multi-line reply still matches. */
static void test_multiline(void **state)
{
    buf_t err = BUF_INIT;
    struct shaperules *rs =
        load_text("rate=300/h 30m code=421 text=unusual rate of unsolicited mail\n", &err);
    assert_non_null(rs);
    const struct shaperule *r = match(rs,
                                      "421-4.7.28 Our system has detected an unusual\n"
                                      "421-4.7.28 rate of unsolicited mail originating\n"
                                      "421 4.7.28 from your IP address. - gsmtp",
                                      NULL, NULL);
    assert_non_null(r);
    shaperules_free(rs);
    buf_destroy(&err);
}

static void test_scope(void **state)
{
    buf_t err = BUF_INIT;
    struct shaperules *rs = load_text("suspend 5m site=Gmail code=421\n"
                                      "suspend 6m mx=.google.com code=421\n"
                                      "suspend 7m mx=mx.example.net code=421\n",
                                      &err);
    assert_non_null(rs);
    assert_int_equal(match(rs, "421 x", "gmail", NULL)->line, 1);
    assert_int_equal(match(rs, "421 x", "GMAIL", "alt1.aspmx.l.google.com")->line, 1);
    assert_int_equal(match(rs, "421 x", "other", "alt1.aspmx.l.google.com")->line, 2);
    assert_int_equal(match(rs, "421 x", NULL, "ASPMX.L.GOOGLE.COM.")->line, 2);
    /* a suffix needs a label before it; not a substring of another name */
    assert_null(match(rs, "421 x", NULL, "google.com"));
    assert_null(match(rs, "421 x", NULL, "notgoogle.com"));
    assert_int_equal(match(rs, "421 x", NULL, "mx.example.net")->line, 3);
    assert_null(match(rs, "421 x", NULL, "a.mx.example.net"));
    assert_null(match(rs, "421 x", NULL, NULL));
    shaperules_free(rs);
    buf_destroy(&err);
}

/* Each broken line is refused with the file, the line and what is wrong. */
static void test_errors(void **state)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        { "slow 30m code=421\n", "line 1: unknown action \"slow\"" },
        { "# x\nrate=300 30m code=421\n", "line 2: bad rate \"300\"" },
        { "rate=0/h 30m code=421\n", "bad rate" },
        { "rate=5/y 30m code=421\n", "bad rate" },
        { "connections=0 30m code=421\n", "bad connections" },
        { "suspend\n", "missing duration" },
        { "suspend 30x code=421\n", "bad duration \"30x\"" },
        { "suspend 8d code=421\n", "bad duration" },
        { "suspend - code=421\n", "only for bounce" },
        { "bounce 1h code=5xx\n", "bounce takes no duration" },
        { "suspend 1h site=gmail\n", "needs code=, dsn= or text=" },
        { "suspend 1h code=42\n", "bad code= \"42\"" },
        { "suspend 1h code=421 code=451\n", "second code=" },
        { "suspend 1h dsn=4.7\n", "bad dsn= \"4.7\"" },
        { "suspend 1h dsn=3.7.1\n", "bad dsn=" },
        { "suspend 1h dsn=4.7.1234\n", "bad dsn=" },
        { "suspend 1h mx=a/b code=421\n", "bad or second mx=" },
        { "suspend 1h color=red\n", "unknown condition \"color=red\"" },
        { "suspend 1h text=(\n", "bad regular expression" },
        { "suspend 1h text=\n", "empty text=" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf_t err = BUF_INIT;
        struct shaperules *rs = load_text(cases[i].text, &err);
        if (rs != NULL || strstr(buf_str(&err), cases[i].want) == NULL)
            fail_msg("case %zu: \"%s\" gave \"%s\"", i, cases[i].text, buf_str(&err));
        assert_non_null(strstr(buf_str(&err), "/tmp/test_shaperules."));
        buf_destroy(&err);
    }
    buf_t err = BUF_INIT;
    assert_null(shaperules_load("/nonexistent/shaping_rules", &err));
    assert_non_null(strstr(buf_str(&err), "/nonexistent/shaping_rules: cannot open"));
    struct shaperules *none = shaperules_load("", &err);
    assert_non_null(none);
    assert_int_equal(shaperules_count(none), 0);
    assert_null(match(none, "421 4.7.28 x", NULL, NULL));
    shaperules_free(none);
    buf_destroy(&err);
}

static void test_describe(void **state)
{
    buf_t err = BUF_INIT, d = BUF_INIT;
    struct shaperules *rs = load_text("rate=300/h 30m code=451\n"
                                      "suspend 90m code=452\n"
                                      "suspend_source 1d code=453\n"
                                      "connections=3 45s code=454\n"
                                      "bounce - code=554\n",
                                      &err);
    assert_non_null(rs);
    static const char *const want[] = { "rate 300/h for 30m", "suspended for 1h30m",
                                        "suspended source for 1d", "connections 3 for 45s",
                                        "bounce queued" };
    static const char *const replies[] = { "451 a", "452 a", "453 a", "454 a", "554 a" };
    for (int i = 0; i < 5; i++) {
        shaperules_describe(match(rs, replies[i], NULL, NULL), &d);
        assert_string_equal(buf_str(&d), want[i]);
    }
    shaperules_format_secs(3661, &d);
    assert_string_equal(buf_str(&d), "1h1m1s");
    shaperules_free(rs);
    buf_destroy(&err);
    buf_destroy(&d);
}

/* The shipped file loads, and the providers' real wordings get the
 * intended action; replies about one mailbox or greylisting get none. */
static void test_shipped(void **state)
{
    static const struct {
        const char *reply, *mx, *want; /* want: describe() or NULL */
    } cases[] = {
        { "421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating\n"
          "421-4.7.28 from your IP address. To protect our users from spam, mail sent from your\n"
          "421 4.7.28 IP address has been temporarily rate limited. - gsmtp",
          "aspmx.l.google.com", "rate 300/h for 30m" },
        { "421 4.7.0 Our system has detected an unusual rate of unsolicited mail originating "
          "from your IP address. To protect our users from spam, mail sent from your IP address "
          "has been temporarily blocked. - gsmtp",
          NULL, "suspended for 1h" },
        { "421-4.7.0 Try again later, closing connection. (EHLO) - gsmtp", NULL,
          "connections 2 for 15m" },
        { "421 4.4.5 Server busy, try again later. - gsmtp", NULL, "connections 2 for 10m" },
        { "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected "
          "volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
          NULL, "suspended for 1h" },
        { "421 4.7.0 [TS02] Messages from 192.0.2.1 temporarily deferred due to unexpected "
          "volume - 4.16.56",
          NULL, "rate 600/h for 1h" },
        { "451 4.7.500 Server busy. Please try again later from [192.0.2.1]. (S3150) "
          "[AM6EUR05FT010.eop-eur05.prod.protection.outlook.com]",
          NULL, "connections 2 for 15m" },
        { "451 4.7.500 Server busy. Please try again later from [192.0.2.1]. (S775)", NULL,
          "connections 2 for 15m" },
        { "451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP "
          "reputation. (S775)",
          NULL, "rate 300/h for 1h" },
        { "421 mwinf5c20 ME Trop de connexions, veuillez verifier votre configuration. Too many "
          "connections, slow down. OFR004_104 [104]",
          NULL, "connections 1 for 30m" },
        { "421 mwinf5c20 ME Service refuse. Veuillez essayer plus tard. Service refused, please "
          "try later. OFR004_105 [105]",
          NULL, "suspended for 30m" },
        { "421 mx.example.com Error: too many connections from 192.0.2.1", NULL,
          "connections 1 for 15m" },
        { "421 web.de (mxweb113) Nemesis ESMTP Service not available\nService unavailable\n"
          "Reject due to policy restrictions\nPlease try again later. Too many messages have "
          "been received in a short period of time. Please try again in a few hours and reduce "
          "the sending rate.",
          NULL, "suspended for 2h" },
        { "421 Rate limit reached. Please try again later", NULL, "rate 300/h for 1h" },
        { "421 4.7.1 Messages to bob@icloud.com deferred due to excessive volume. Try again "
          "later - https://support.apple.com/en-us/HT204137",
          NULL, "rate 600/h for 30m" },
        { "451 4.7.1 Service unavailable - try again later", "mx01.mail.icloud.com",
          "rate 600/h for 30m" },
        /* one mailbox, greylisting, hard bounces: the site is fine */
        { "450-4.2.1 The user you are trying to contact is receiving mail too quickly. - gsmtp",
          NULL, NULL },
        { "451 4.7.1 Please try again later (greylisting in progress)", NULL, NULL },
        { "451 4.7.1 Service unavailable - try again later", "mx.example.com", NULL },
        { "550 5.1.1 The email account that you tried to reach does not exist. - gsmtp", NULL,
          NULL },
        { "452 4.2.2 The email account that you tried to reach is over quota. - gsmtp", NULL,
          NULL },
    };
    buf_t err = BUF_INIT, d = BUF_INIT;
    struct shaperules *rs = shaperules_load(POSTINO_SRCDIR "/conf/shaping_rules", &err);
    if (rs == NULL)
        fail_msg("%s", buf_str(&err));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct shaperule *r = match(rs, cases[i].reply, NULL, cases[i].mx);
        if (r)
            shaperules_describe(r, &d);
        const char *got = r ? buf_str(&d) : "(none)";
        const char *want = cases[i].want ? cases[i].want : "(none)";
        if (strcmp(got, want) != 0)
            fail_msg("case %zu: \"%.50s\": got %s (line %d), want %s", i, cases[i].reply, got,
                     r ? r->line : 0, want);
    }
    shaperules_free(rs);
    buf_destroy(&err);
    buf_destroy(&d);
}

/* The reply inside a delivery agent's reason, lines restored. */
static void test_split_reason(void **state)
{
    buf_t host = BUF_INIT, reply = BUF_INIT;
    assert_int_equal(shaperules_split_reason(
                         "host alt1.aspmx.l.google.com[192.0.2.7] said: 421-4.7.28 Our system "
                         "has detected an unusual 421-4.7.28 rate of unsolicited mail 421 4.7.28 "
                         "from your IP. - gsmtp (in reply to end of DATA command)",
                         &host, &reply),
                     1);
    assert_string_equal(buf_str(&host), "alt1.aspmx.l.google.com");
    assert_string_equal(buf_str(&reply), "421-4.7.28 Our system has detected an unusual\n"
                                         "421-4.7.28 rate of unsolicited mail\n"
                                         "421 4.7.28 from your IP. - gsmtp");
    assert_int_equal(shaperules_split_reason("host 127.0.0.1[127.0.0.1]:2526 said: 451 "
                                             "busy, 451 times (in reply to RCPT TO command)",
                                             &host, &reply),
                     1);
    assert_string_equal(buf_str(&host), "127.0.0.1");
    assert_string_equal(buf_str(&reply), "451 busy, 451 times");
    /* a push-back in the greeting (Postfix's words for it) */
    assert_int_equal(shaperules_split_reason("host mx.example.net[192.0.2.9] refused to talk to "
                                             "me: 421 4.7.0 Too many connections, try again later",
                                             &host, &reply),
                     1);
    assert_string_equal(buf_str(&host), "mx.example.net");
    assert_string_equal(buf_str(&reply), "421 4.7.0 Too many connections, try again later");
    /* the agent's own words: no host, the reason as it is */
    assert_int_equal(
        shaperules_split_reason("connect to mx.example.com[192.0.2.1]:25: Connection refused",
                                &host, &reply),
        0);
    assert_string_equal(buf_str(&host), "");
    assert_string_equal(buf_str(&reply),
                        "connect to mx.example.com[192.0.2.1]:25: Connection refused");
    assert_int_equal(shaperules_split_reason("host x said: hello", &host, &reply), 0);
    assert_int_equal(shaperules_split_reason(NULL, &host, &reply), 0);
    buf_destroy(&host);
    buf_destroy(&reply);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_actions),   cmocka_unit_test(test_first_match_and_codes),
        cmocka_unit_test(test_multiline), cmocka_unit_test(test_scope),
        cmocka_unit_test(test_errors),    cmocka_unit_test(test_describe),
        cmocka_unit_test(test_shipped),   cmocka_unit_test(test_split_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
