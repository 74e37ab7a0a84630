/* test_replymatch.c - the reply conditions shared by bounce_classifier_rules
 * and shaping_rules: parsing (and its errors), scope only where allowed,
 * code and enhanced-code patterns, the text match on the normalised reply,
 * codes taken from the text when the caller has none. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "common/mail/replymatch.h"
#include "common/util/alloc.h"

/* Parse text (copied: the parser works in place); 0 or -1 with why. */
static int parse(const char *text, unsigned flags, struct replymatch *m, buf_t *why)
{
    char *s = xstrdup(text);
    int rc;

    memset(m, 0, sizeof(*m));
    buf_reset(why);
    rc = replymatch_parse(s, flags, m, why);
    free(s);
    return rc;
}

/* Does the condition list match the reply? */
static int matches(const char *conds, int code, const char *enh, const char *text, const char *site,
                   const char *mx)
{
    struct replymatch m;
    struct replymatch_reply r;
    buf_t why = BUF_INIT;
    int hit;

    if (parse(conds, REPLYMATCH_SCOPE, &m, &why) < 0)
        fail_msg("\"%s\": %s", conds, buf_str(&why));
    replymatch_reply_init(&r, code, enh, text, site, mx);
    hit = replymatch_test(&m, &r);
    replymatch_reply_destroy(&r);
    replymatch_destroy(&m);
    buf_destroy(&why);
    return hit;
}

static void test_codes(void **state)
{
    assert_true(matches("code=421", 0, NULL, "421 4.7.0 busy", NULL, NULL));
    assert_true(matches("code=4xx", 451, NULL, "try later", NULL, NULL));
    assert_true(matches("code=45x", 0, NULL, "451 later", NULL, NULL));
    assert_false(matches("code=5xx", 0, NULL, "451 later", NULL, NULL));
    assert_false(matches("code=4xx", 0, NULL, "no code at all", NULL, NULL));
    /* the caller's code wins over the text's */
    assert_true(matches("code=550", 550, NULL, "451 said earlier", NULL, NULL));
}

static void test_dsn_patterns(void **state)
{
    assert_true(matches("dsn=4.7.28", 0, NULL, "421-4.7.28 unusual\n421 4.7.28 rate", NULL, NULL));
    assert_true(matches("dsn=4.7.*", 0, "4.7.500", "busy", NULL, NULL));
    assert_true(matches("dsn=4.7.5xx", 0, "4.7.500", "busy", NULL, NULL));
    assert_false(matches("dsn=4.7.5xx", 0, "4.7.50", "busy", NULL, NULL));
    assert_true(matches("dsn=5.*", 0, NULL, "550 5.1.1 gone", NULL, NULL));
    assert_true(matches("dsn=x.1.1", 0, NULL, "550 5.1.1 gone", NULL, NULL));
    assert_false(matches("dsn=5.1.1", 0, NULL, "550 gone", NULL, NULL));
    /* an enhanced code with a fourth digit is none */
    assert_false(matches("dsn=5.1.*", 0, NULL, "550 5.1.1000 gone", NULL, NULL));
}

static void test_text_and_scope(void **state)
{
    /* codes stripped, lines joined by one space, case-insensitive */
    assert_true(matches("text=unusual rate of unsolicited", 0, NULL,
                        "421-4.7.28 Our system has detected an UNUSUAL\n"
                        "421-4.7.28 rate of unsolicited mail",
                        NULL, NULL));
    assert_false(matches("text=^421", 0, NULL, "421 4.7.0 busy", NULL, NULL));
    assert_true(matches("site=gmail code=421", 0, NULL, "421 x", "GMail", NULL));
    assert_false(matches("site=gmail code=421", 0, NULL, "421 x", "yahoo", NULL));
    assert_false(matches("site=gmail code=421", 0, NULL, "421 x", NULL, NULL));
    assert_true(
        matches("mx=.google.com code=421", 0, NULL, "421 x", NULL, "alt1.aspmx.l.google.com."));
    assert_false(matches("mx=.google.com code=421", 0, NULL, "421 x", NULL, "google.com"));
    assert_true(matches("mx=mx.example.net code=421", 0, NULL, "421 x", NULL, "MX.example.net"));
    /* no condition: every reply */
    assert_true(matches("", 0, NULL, "250 ok", NULL, NULL));
}

static void test_errors(void **state)
{
    static const struct {
        const char *text;
        unsigned flags;
        const char *want;
    } cases[] = {
        { "code=42", 0, "bad code= \"42\"" },
        { "code=650", 0, "bad code= \"650\"" },
        { "code=421 code=451", 0, "second code=" },
        { "dsn=4.7", 0, "bad dsn= \"4.7\"" },
        { "dsn=3.7.1", 0, "bad dsn=" },
        { "dsn=4.7.1234", 0, "bad dsn=" },
        { "dsn=4.7.1 dsn=4.7.2", 0, "second dsn=" },
        { "text=(", 0, "bad regular expression \"(\"" },
        { "text=", 0, "empty text= pattern" },
        { "colour=blue", 0, "unknown condition \"colour=blue\" (use code=, dsn= or text=)" },
        { "site=gmail", 0, "unknown condition \"site=gmail\"" },
        { "colour=blue", REPLYMATCH_SCOPE, "(use code=, dsn=, site=, mx= or text=)" },
        { "mx=a/b", REPLYMATCH_SCOPE, "bad or second mx=" },
        { "site=a site=b", REPLYMATCH_SCOPE, "bad or second site=" },
        /* a condition after a bad text= is not reached; the regex is freed */
        { "code=421 text=(", 0, "bad regular expression" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct replymatch m;
        buf_t why = BUF_INIT;
        if (parse(cases[i].text, cases[i].flags, &m, &why) != -1 ||
            strstr(buf_str(&why), cases[i].want) == NULL)
            fail_msg("case %zu: \"%s\" gave \"%s\"", i, cases[i].text, buf_str(&why));
        assert_false(m.has_re); /* released */
        assert_null(m.site);
        buf_destroy(&why);
    }
}

static void test_tests_reply(void **state)
{
    struct replymatch m;
    buf_t why = BUF_INIT;

    assert_int_equal(parse("site=gmail mx=.google.com", REPLYMATCH_SCOPE, &m, &why), 0);
    assert_false(replymatch_tests_reply(&m));
    replymatch_destroy(&m);
    assert_int_equal(parse("site=gmail text=busy", REPLYMATCH_SCOPE, &m, &why), 0);
    assert_true(replymatch_tests_reply(&m));
    replymatch_destroy(&m);
    buf_destroy(&why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes),          cmocka_unit_test(test_dsn_patterns),
        cmocka_unit_test(test_text_and_scope), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_tests_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
