/* test_bclass.c - bounce classification: the rules file format and its
 * errors (file and line), first match wins, local rules before the shipped
 * ones, code and enhanced-code patterns, multi-line reply normalisation,
 * and the shipped conf/bounce_classifier_rules on a few typical replies
 * (the full provider corpus is tests/data/bounce_corpus.tsv). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/mail/bclass.h"
#include "common/mail/conf.h"

static char tmpdir[] = "/tmp/postino-test-bclass-XXXXXX";

static const char *write_file(const char *name, const char *text)
{
    static char path[4][512];
    static int k;
    char *p = path[k++ % 4];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    return p;
}

static int load_text(const char *text, buf_t *err)
{
    buf_reset(err);
    return bclass_load(NULL, write_file("rules", text), err);
}

static void test_names(void **state)
{
    enum bclass c;
    for (int i = 0; i < BCLASS_COUNT; i++) {
        assert_int_equal(bclass_from_name(bclass_name((enum bclass)i), &c), 0);
        assert_int_equal(c, i);
    }
    assert_string_equal(bclass_name(BCLASS_BAD_MAILBOX), "bad-mailbox");
    assert_string_equal(bclass_name(BCLASS_NO_ANSWER_FROM_HOST), "no-answer-from-host");
    assert_string_equal(bclass_name(BCLASS_MESSAGE_EXPIRED), "message-expired");
    assert_string_equal(bclass_name((enum bclass)99), "other");
    assert_int_equal(bclass_from_name("Bad-Domain", &c), 0);
    assert_int_equal(c, BCLASS_BAD_DOMAIN);
    assert_int_equal(bclass_from_name("bad-mailboxes", &c), -1);
    assert_int_equal(bclass_from_name(NULL, &c), -1);
    assert_true(bclass_is_hard(BCLASS_BAD_MAILBOX));
    assert_true(bclass_is_hard(BCLASS_INACTIVE_MAILBOX));
    assert_true(bclass_is_hard(BCLASS_BAD_DOMAIN));
    assert_false(bclass_is_hard(BCLASS_QUOTA_ISSUES));
    assert_false(bclass_is_hard(BCLASS_OTHER));
}

static void expect_error(const char *rules, const char *want)
{
    buf_t err = BUF_INIT;
    assert_int_equal(load_text(rules, &err), -1);
    char full[1024];
    snprintf(full, sizeof full, "%s/rules, %s", tmpdir, want);
    if (strncmp(buf_str(&err), full, strlen(full)) != 0)
        fail_msg("error \"%s\", want a prefix \"%s\"", buf_str(&err), full);
    buf_destroy(&err);
}

static void test_errors_name_file_and_line(void **state)
{
    expect_error("# c\n\nbad-mailboxx code=550\n", "line 3: unknown category \"bad-mailboxx\"");
    expect_error("other code=5x\n", "line 1: bad code= \"5x\"");
    expect_error("other code=650\n", "line 1: bad code= \"650\"");
    expect_error("other code=5xx code=4xx\n", "line 1: second code=");
    expect_error("\nother dsn=5.1\n", "line 2: bad dsn= \"5.1\"");
    expect_error("other dsn=6.1.1\n", "line 1: bad dsn= \"6.1.1\"");
    expect_error("other dsn=5.1.1.1\n", "line 1: bad dsn=");
    expect_error("other dsn=5.1000.1\n", "line 1: bad dsn=");
    expect_error("other text=(unclosed\n", "line 1: bad regular expression \"(unclosed\"");
    expect_error("other text=\n", "line 1: empty text= pattern");
    expect_error("other colour=blue\n", "line 1: unknown condition \"colour=blue\"");
    buf_t err = BUF_INIT;
    assert_int_equal(bclass_load(NULL, "/nonexistent/rules", &err), -1);
    assert_string_equal(buf_str(&err),
                        "/nonexistent/rules: cannot open: No such file or directory");
    buf_destroy(&err);
}

static void test_failed_load_keeps_old_rules(void **state)
{
    buf_t err = BUF_INIT;
    assert_int_equal(load_text("quota-issues dsn=5.2.2\n", &err), 0);
    assert_int_equal(bclass_classify(552, "5.2.2", "full"), BCLASS_QUOTA_ISSUES);
    assert_int_equal(load_text("quota-issues dsn=5.2.2\nnonsense\n", &err), -1);
    assert_int_equal(bclass_classify(552, "5.2.2", "full"), BCLASS_QUOTA_ISSUES);
    buf_destroy(&err);
}

static void test_first_match_and_patterns(void **state)
{
    buf_t err = BUF_INIT;
    assert_int_equal(load_text("# comment\n"
                               "   # indented comment\n"
                               "greylisted   code=4xx text=grey ?list\n"
                               "spam-related dsn=5.7.1 text=spamhaus|block ?list\r\n"
                               "policy-related dsn=5.7.*\n"
                               "bad-mailbox  code=55x dsn=5.1.1\n"
                               "bad-domain   dsn=*.1.2\n"
                               "rate-limited code=421 text=too many connections\n"
                               "protocol-errors code=50x\n"
                               "routing-errors dsn=4.*\n",
                               &err),
                     0);
    struct bclass_match m;
    assert_int_equal(bclass_explain(450, "4.2.0", "Recipient address rejected: Greylisted", &m),
                     BCLASS_GREYLISTED);
    assert_int_equal(m.line, 3);
    assert_non_null(strstr(m.file, "/rules"));
    /* same text with a 5xx code: the greylist rule does not apply */
    assert_int_equal(bclass_classify(550, "5.7.1", "greylisted"), BCLASS_POLICY_RELATED);
    assert_int_equal(bclass_explain(554, "5.7.1", "blocked using zen.SPAMHAUS.org", &m),
                     BCLASS_SPAM_RELATED);
    assert_int_equal(m.line, 4);
    assert_int_equal(bclass_classify(550, "5.7.26", "unauthenticated"), BCLASS_POLICY_RELATED);
    assert_int_equal(bclass_classify(550, "5.1.1", "no such user"), BCLASS_BAD_MAILBOX);
    assert_int_equal(bclass_classify(450, "5.1.1", "no such user"), BCLASS_OTHER);
    assert_int_equal(bclass_classify(450, "4.1.2", "Domain not found"), BCLASS_BAD_DOMAIN);
    assert_int_equal(bclass_classify(421, NULL, "Too many connections"), BCLASS_RATE_LIMITED);
    assert_int_equal(bclass_classify(422, NULL, "Too many connections"), BCLASS_OTHER);
    assert_int_equal(bclass_classify(502, NULL, "Command not implemented"), BCLASS_PROTOCOL_ERRORS);
    assert_int_equal(bclass_classify(451, "4.4.0", "whatever"), BCLASS_ROUTING_ERRORS);
    /* no code at all: code rules never match */
    assert_int_equal(bclass_explain(0, NULL, "something odd", &m), BCLASS_OTHER);
    assert_null(m.file);
    assert_int_equal(m.line, 0);
    assert_int_equal(bclass_classify(0, NULL, NULL), BCLASS_OTHER);
    buf_destroy(&err);
}

static void test_local_rules_first(void **state)
{
    buf_t err = BUF_INIT;
    const char *local = write_file("local", "inactive-mailbox dsn=5.1.1 text=gone for good\n");
    const char *main = write_file("main", "bad-mailbox dsn=5.1.1\n");
    assert_int_equal(bclass_load(local, main, &err), 0);
    assert_int_equal(bclass_classify(550, "5.1.1", "user gone for good"), BCLASS_INACTIVE_MAILBOX);
    assert_int_equal(bclass_classify(550, "5.1.1", "no such user"), BCLASS_BAD_MAILBOX);

    /* the same through the parameters (bclass_init) */
    conf_set("bounce_classifier_local_rules", local);
    conf_set("bounce_classifier_rules", main);
    assert_int_equal(bclass_init(&err), 0);
    struct bclass_match m;
    assert_int_equal(bclass_explain(550, "5.1.1", "Gone for good", &m), BCLASS_INACTIVE_MAILBOX);
    assert_string_equal(m.file, local);
    conf_set("bounce_classifier_local_rules", "");
    assert_int_equal(bclass_init(&err), 0);
    assert_int_equal(bclass_explain(550, "5.1.1", "Gone for good", &m), BCLASS_BAD_MAILBOX);
    assert_string_equal(m.file, main);
    /* a broken local file is an error naming it */
    conf_set("bounce_classifier_local_rules", write_file("local2", "\n\nbogus\n"));
    assert_int_equal(bclass_init(&err), -1);
    assert_non_null(strstr(buf_str(&err), "/local2, line 3: unknown category \"bogus\""));
    buf_destroy(&err);
}

static void test_split_reply(void **state)
{
    buf_t out = BUF_INIT;
    int code;
    char enh[16];
    bclass_split_reply("550-5.1.1 The email account that you tried to reach does not exist. "
                       "Please try\r\n550-5.1.1 double-checking the recipient's email address for "
                       "typos or\r\n550 5.1.1  unnecessary spaces.   ",
                       &code, enh, &out);
    assert_int_equal(code, 550);
    assert_string_equal(enh, "5.1.1");
    assert_string_equal(buf_str(&out),
                        "The email account that you tried to reach does not exist. Please try "
                        "double-checking the recipient's email address for typos or unnecessary "
                        "spaces.");
    bclass_split_reply("smtp; 554 delivery error: dd This user doesn't have a yahoo.com account",
                       &code, enh, &out);
    assert_int_equal(code, 554);
    assert_string_equal(enh, "");
    assert_string_equal(buf_str(&out), "delivery error: dd This user doesn't have a yahoo.com "
                                       "account");
    bclass_split_reply("connect to mx.example.com[192.0.2.1]:25: Connection refused", &code, enh,
                       &out);
    assert_int_equal(code, 0);
    assert_string_equal(buf_str(&out),
                        "connect to mx.example.com[192.0.2.1]:25: Connection refused");
    bclass_split_reply("452 4.5.3", &code, enh, &out);
    assert_int_equal(code, 452);
    assert_string_equal(enh, "4.5.3");
    assert_string_equal(buf_str(&out), "");
    bclass_split_reply("550 5.1.10 RESOLVER.ADR.RecipientNotFound", &code, enh, &out);
    assert_string_equal(enh, "5.1.10");
    bclass_split_reply("5.1.1000 x", &code, enh, &out);
    assert_string_equal(enh, "");
    buf_destroy(&out);
}

/* Codes found in the text when the caller passes none; a phrase split over
 * the lines of a multi-line reply still matches one regular expression. */
static void test_codes_from_text_and_multiline(void **state)
{
    buf_t err = BUF_INIT;
    assert_int_equal(load_text("bad-mailbox code=550 dsn=5.1.1 text=does not exist\\. Please try "
                               "double-checking\n"
                               "quota-issues dsn=4.2.2\n",
                               &err),
                     0);
    const char *gmail = "550-5.1.1 The email account that you tried to reach does not exist. "
                        "Please try\n550-5.1.1 double-checking the recipient's email address";
    assert_int_equal(bclass_classify(0, NULL, gmail), BCLASS_BAD_MAILBOX);
    assert_int_equal(bclass_classify(550, "5.1.1", gmail), BCLASS_BAD_MAILBOX);
    /* the caller's codes beat the text's */
    assert_int_equal(bclass_classify(550, "4.2.2", gmail), BCLASS_QUOTA_ISSUES);
    assert_int_equal(bclass_classify(0, NULL, "452 4.2.2 The recipient's inbox is out of storage"),
                     BCLASS_QUOTA_ISSUES);
    buf_destroy(&err);
}

/* The shipped rules load and get the textbook replies right. */
static void test_shipped_rules(void **state)
{
    static const struct {
        const char *reply;
        enum bclass want;
    } cases[] = {
        { "550-5.1.1 The email account that you tried to reach does not exist.",
          BCLASS_BAD_MAILBOX },
        { "452-4.2.2 The recipient's inbox is out of storage space.", BCLASS_QUOTA_ISSUES },
        { "421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating "
          "from your IP address. To protect our users from spam, mail sent from your IP address "
          "has been temporarily rate limited.",
          BCLASS_RATE_LIMITED },
        { "550 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
          BCLASS_SPAM_RELATED },
        { "450 4.2.0 <a@example.com>: Recipient address rejected: Greylisted, see "
          "http://postgrey.schweikert.ch/help/example.com.html",
          BCLASS_GREYLISTED },
        { "554 5.7.1 <a@example.net>: Relay access denied", BCLASS_RELAYING_ISSUES },
        { "550 5.1.1 <a@example.com>: Recipient address rejected: User unknown in local "
          "recipient table",
          BCLASS_BAD_MAILBOX },
        { "450 4.1.8 <s@example.org>: Sender address rejected: Domain not found",
          BCLASS_POLICY_RELATED },
        { "550 5.2.1 The email account that you tried to reach is disabled.",
          BCLASS_INACTIVE_MAILBOX },
        { "553 5.1.2 We weren't able to find the recipient domain.", BCLASS_BAD_DOMAIN },
        { "550 5.7.26 This mail has been blocked because the sender is unauthenticated.",
          BCLASS_POLICY_RELATED },
        { "554 5.4.14 Hop count exceeded - possible mail loop", BCLASS_ROUTING_ERRORS },
        { "500 5.5.1 Unrecognized command", BCLASS_PROTOCOL_ERRORS },
        { "552 5.3.4 Message size exceeds fixed limit", BCLASS_CONTENT_RELATED },
    };
    buf_t err = BUF_INIT;
    if (bclass_load(NULL, POSTINO_SRCDIR "/conf/bounce_classifier_rules", &err) < 0)
        fail_msg("%s", buf_str(&err));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct bclass_match m;
        enum bclass got = bclass_explain(0, NULL, cases[i].reply, &m);
        if (got != cases[i].want)
            fail_msg("\"%s\": got %s (line %d), want %s", cases[i].reply, bclass_name(got), m.line,
                     bclass_name(cases[i].want));
    }
    buf_destroy(&err);
}

/* One corpus line "category TAB code TAB enhanced TAB text" classified;
 * 1 right, 0 wrong (printed), -1 malformed. */
static int corpus_line(char *line, int lineno)
{
    char *f[4];
    for (int i = 0; i < 4; i++) {
        f[i] = line;
        line = strchr(line, i < 3 ? '\t' : '\n');
        if (line == NULL && i < 3)
            return -1;
        if (line)
            *line++ = 0;
    }
    enum bclass want;
    if (bclass_from_name(f[0], &want) < 0)
        return -1;
    buf_t text = BUF_INIT;
    for (const char *p = f[3]; *p; p++) {
        if (p[0] == '\\' && p[1] == 'n') {
            buf_putc(&text, '\n');
            p++;
        } else {
            buf_putc(&text, *p);
        }
    }
    struct bclass_match m;
    enum bclass got =
        bclass_explain(atoi(f[1]), strcmp(f[2], "-") ? f[2] : NULL, buf_str(&text), &m);
    if (got != want)
        printf("corpus line %d: want %s, got %s (rule line %d): %s %s %s\n", lineno,
               bclass_name(want), bclass_name(got), m.line, f[1], f[2], buf_str(&text));
    buf_destroy(&text);
    return got == want;
}

/* The provider corpus (tests/data/bounce_corpus.tsv, >= 80 real replies)
 * through the shipped rules: at least 95% right, every miss printed. */
static void test_corpus(void **state)
{
    buf_t err = BUF_INIT;
    if (bclass_load(NULL, POSTINO_SRCDIR "/conf/bounce_classifier_rules", &err) < 0)
        fail_msg("%s", buf_str(&err));
    FILE *fp = fopen(POSTINO_SRCDIR "/tests/data/bounce_corpus.tsv", "r");
    assert_non_null(fp);
    char line[4096];
    int lineno = 0, total = 0, right = 0;
    while (fgets(line, sizeof line, fp)) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        int rc = corpus_line(line, lineno);
        if (rc < 0)
            fail_msg("corpus line %d is malformed", lineno);
        total++;
        right += rc;
    }
    fclose(fp);
    printf("bounce corpus: %d of %d right (%.1f%%)\n", right, total, 100.0 * right / total);
    assert_true(total >= 80);
    assert_true(right * 100 >= total * 95);
    buf_destroy(&err);
}

static int setup(void **state)
{
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    buf_t err = BUF_INIT;
    int rc = conf_load(tmpdir, &err); /* no main.cf: all defaults */
    buf_destroy(&err);
    return rc;
}

static int teardown(void **state)
{
    bclass_reset();
    const char *names[] = { "rules", "local", "main", "local2" };
    char path[512];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_errors_name_file_and_line),
        cmocka_unit_test(test_failed_load_keeps_old_rules),
        cmocka_unit_test(test_first_match_and_patterns),
        cmocka_unit_test(test_local_rules_first),
        cmocka_unit_test(test_split_reply),
        cmocka_unit_test(test_codes_from_text_and_multiline),
        cmocka_unit_test(test_shipped_rules),
        cmocka_unit_test(test_corpus),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
