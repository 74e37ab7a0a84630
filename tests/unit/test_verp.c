/* test_verp.c - VERP return paths: the delimiter check and the address
 * built for each recipient (quoted and UTF-8 local parts included). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/mail/verp.h"

static void test_delims(void **state)
{
    assert_true(verp_delims_valid("+=", "-=+"));
    assert_true(verp_delims_valid("-=", "-=+"));
    assert_true(verp_delims_valid("==", "-=+"));
    assert_false(verp_delims_valid("+", "-=+"));
    assert_false(verp_delims_valid("+=-", "-=+"));
    assert_false(verp_delims_valid("", "-=+"));
    assert_false(verp_delims_valid("+@", "-=+"));
    assert_false(verp_delims_valid("a=", "-=+"));
    assert_false(verp_delims_valid(NULL, "-=+"));
}

struct enc_case {
    const char *ret, *rcpt, *delims, *want;
};

static void test_encode(void **state)
{
    static const struct enc_case cases[] = {
        { "bounces@bounce.example.com", "alice@example.org",
          "+=", "bounces+alice=example.org@bounce.example.com" },
        { "alice@a.com", "bob@example.org", "+=", "alice+bob=example.org@a.com" },
        { "owner-list@lists.example", "bob@example.org",
          "-=", "owner-list-bob=example.org@lists.example" },
        /* a recipient with a tag and an '=' keeps them */
        { "b@d.example", "x+tag=1@r.example", "+=", "b+x+tag=1=r.example@d.example" },
        /* quoted recipient local part: the result is quoted as a whole */
        { "b@d.example", "\"a b\"@r.example", "+=", "\"b+a b=r.example\"@d.example" },
        { "b@d.example", "\"a\\\"q\"@r.example", "+=", "\"b+a\\\"q=r.example\"@d.example" },
        /* a quoted local part that needs no quotes loses them */
        { "\"bounces\"@d.example", "\"alice\"@r.example",
          "+=", "bounces+alice=r.example@d.example" },
        /* UTF-8 (RFC 6531) local part and domain stay as they are */
        { "b@d.example",
          "j\xc3\xb6rg@b\xc3\xbc"
          "cher.example",
          "+=",
          "b+j\xc3\xb6rg=b\xc3\xbc"
          "cher.example@d.example" },
        /* '@' inside a quoted recipient local part is not the split */
        { "b@d.example", "\"x@y\"@r.example", "+=", "\"b+x@y=r.example\"@d.example" },
        /* a recipient without a domain: no second delimiter */
        { "b@d.example", "postmaster", "+=", "b+postmaster@d.example" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        buf_t out = BUF_INIT;
        verp_encode(cases[i].ret, cases[i].rcpt, cases[i].delims, &out);
        if (strcmp(buf_str(&out), cases[i].want) != 0)
            fail_msg("case %zu: %s + %s -> %s, want %s", i, cases[i].ret, cases[i].rcpt,
                     buf_str(&out), cases[i].want);
        buf_destroy(&out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delims),
        cmocka_unit_test(test_encode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
