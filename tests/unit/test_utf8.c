/* test_utf8.c - strict UTF-8 (common/utf8.c): the RFC 3629 boundaries of
 * every sequence length, and the sanitisers used for logs and reports. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/util/utf8.h"

struct dec_case {
    const char *s;
    size_t len; /* 0: invalid */
    unsigned long cp;
};

static void test_decode(void **state)
{
    static const struct dec_case cases[] = {
        { "A", 1, 0x41 },
        { "\x7f", 1, 0x7f },
        { "\xc2\x80", 2, 0x80 }, /* smallest 2-byte */
        { "\xdf\xbf", 2, 0x7ff },
        { "\xe0\xa0\x80", 3, 0x800 },  /* smallest 3-byte */
        { "\xed\x9f\xbf", 3, 0xd7ff }, /* just below the surrogates */
        { "\xee\x80\x80", 3, 0xe000 }, /* just above them */
        { "\xef\xbf\xbf", 3, 0xffff },
        { "\xf0\x90\x80\x80", 4, 0x10000 },  /* smallest 4-byte */
        { "\xf4\x8f\xbf\xbf", 4, 0x10ffff }, /* the last code point */
        { "\xc0\x80", 0, 0 },                /* overlong NUL */
        { "\xc1\xbf", 0, 0 },                /* overlong */
        { "\xe0\x9f\xbf", 0, 0 },            /* overlong 3-byte */
        { "\xf0\x8f\xbf\xbf", 0, 0 },        /* overlong 4-byte */
        { "\xed\xa0\x80", 0, 0 },            /* U+D800 */
        { "\xed\xbf\xbf", 0, 0 },            /* U+DFFF */
        { "\xf4\x90\x80\x80", 0, 0 },        /* U+110000 */
        { "\xf5\x80\x80\x80", 0, 0 },
        { "\xf8\x88\x80\x80\x80", 0, 0 }, /* 5-byte form */
        { "\xfe", 0, 0 },
        { "\xff", 0, 0 },
        { "\x80", 0, 0 },
        { "\xbf", 0, 0 }, /* stray continuation */
        { "\xc3", 0, 0 }, /* truncated */
        { "\xe2\x82", 0, 0 },
        { "\xc3\x41", 0, 0 }, /* bad continuation */
        { "\xe2\x28\xa1", 0, 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned long cp = 0;
        size_t n = utf8_decode(cases[i].s, strlen(cases[i].s), &cp);
        if (n != cases[i].len || (n && cp != cases[i].cp))
            fail_msg("case %zu: len %zu cp %lx", i, n, cp);
    }
    unsigned long cp;
    assert_int_equal(utf8_decode("\xe2\x82\xac", 2, &cp), 0); /* n cuts it */
    assert_int_equal(utf8_decode("", 0, &cp), 0);
}

static void test_valid_text(void **state)
{
    assert_true(utf8_valid_text("j\xc3\xb6rg", 5));
    assert_true(utf8_valid_text("", 0));
    assert_false(utf8_valid_text("a\tb", 3));     /* C0 */
    assert_false(utf8_valid_text("a\x7f", 2));    /* DEL */
    assert_false(utf8_valid_text("\xc2\x9b", 2)); /* C1 */
    assert_true(utf8_valid_text("\xc2\xa0", 2));  /* U+00A0 is not C1 */
    assert_false(utf8_valid_text("\xc0\xaf", 2));
    assert_true(utf8_has_8bit("a\xc3\xa4", 3));
    assert_false(utf8_has_8bit("abc", 3));
}

static void test_sanitize(void **state)
{
    buf_t b = BUF_INIT;
    const char *in = "a\xc3\xa4\r\nb\xc0\xaf\xc2\x9b\x1b[1m\xe2\x9c\x93";
    utf8_sanitize(&b, in, strlen(in), '?');
    assert_string_equal(buf_str(&b), "a\xc3\xa4??b???\?[1m\xe2\x9c\x93");
    char s[] = "x\xed\xa0\x80y\xc2\x85z\tq\xe2\x82";
    utf8_sanitize_inplace(s, '?');
    assert_string_equal(s, "x???y?z?q??");
    buf_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_valid_text),
        cmocka_unit_test(test_sanitize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
