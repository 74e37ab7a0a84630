/* test_addr.c - RFC 5321 path parsing, domains, ESMTP parameters, xtext:
 * table-driven valid and invalid inputs. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mail/addr.h"

struct path_case {
    const char *arg;
    int allow_null, allow_bare;
    int rc;
    const char *addr;   /* expected address when rc == 0 */
    const char *params; /* expected params when rc == 0 */
};

static void test_paths(void **state)
{
    static const struct path_case cases[] = {
        { "<a@b.example>", 0, 0, 0, "a@b.example", "" },
        { "  <User.Name+tag@Example.COM>", 0, 0, 0, "User.Name+tag@Example.COM", "" },
        { "<>", 1, 0, 0, "", "" },
        { "<>", 0, 0, -1, NULL, NULL },
        { "<> SIZE=100", 1, 0, 0, "", "SIZE=100" },
        { "<a@b.c> SIZE=1 BODY=8BITMIME", 0, 0, 0, "a@b.c", "SIZE=1 BODY=8BITMIME" },
        { "<a@b.c>   NOTIFY=NEVER", 0, 0, 0, "a@b.c", "NOTIFY=NEVER" },
        { "<@r1.example,@r2.example:a@b.c>", 0, 0, 0, "a@b.c", "" },
        { "<@r1.example:a@b.c>", 0, 0, 0, "a@b.c", "" },
        { "<@r1.example,r2:a@b.c>", 0, 0, -1, NULL, NULL },
        { "<@:a@b.c>", 0, 0, -1, NULL, NULL },
        { "<@r1.example:>", 1, 0, -1, NULL, NULL },
        { "<\"a b\"@d.example>", 0, 0, 0, "\"a b\"@d.example", "" },
        { "<\"a\\\"b@c\"@d.example>", 0, 0, 0, "\"a\\\"b@c\"@d.example", "" },
        { "<\"a b@d.example>", 0, 0, -1, NULL, NULL },
        { "<\"a\"b@d.example>", 0, 0, -1, NULL, NULL },
        { "<postmaster>", 0, 0, 0, "postmaster", "" },
        { "<a@[192.0.2.1]>", 0, 0, 0, "a@[192.0.2.1]", "" },
        { "<a@[IPv6:2001:db8::1]>", 0, 0, 0, "a@[IPv6:2001:db8::1]", "" },
        { "<a@[300.0.0.1]>", 0, 0, -1, NULL, NULL },
        { "a@b.c", 0, 0, -1, NULL, NULL },
        { "a@b.c", 0, 1, 0, "a@b.c", "" },
        { "a@b.c SIZE=5", 0, 1, 0, "a@b.c", "SIZE=5" },
        { "", 1, 1, -1, NULL, NULL },
        { "<a@b.c", 0, 0, -1, NULL, NULL },
        { "<<a@b.c>>", 0, 0, -1, NULL, NULL },
        { "<a@b.c>>", 0, 0, -1, NULL, NULL },
        { "<a@b.c>x", 0, 0, -1, NULL, NULL },
        { "<a b@c.d>", 0, 0, -1, NULL, NULL },
        { "<a@b .c>", 0, 0, -1, NULL, NULL },
        { "<a\x01@b.c>", 0, 0, -1, NULL, NULL },
        { "<\"a\x01\"@b.c>", 0, 0, -1, NULL, NULL },
        { "<a@b.c\x7f>", 0, 0, -1, NULL, NULL },
        { "<a@>", 0, 0, -1, NULL, NULL },
        { "<@b.c>", 0, 0, -1, NULL, NULL },
        { "<a@b..c>", 0, 0, -1, NULL, NULL },
        { "<a@-b.c>", 0, 0, -1, NULL, NULL },
        { "<a@b_c.d>", 0, 0, -1, NULL, NULL },
        { "<a,b@c.d>", 0, 0, -1, NULL, NULL },
        { "<a@b@c.d>", 0, 0, -1, NULL, NULL },
        { "<a(b)@c.d>", 0, 0, -1, NULL, NULL },
        /* RFC 6531: UTF-8 local parts and U-labels, strictly well-formed */
        { "<j\xc3\xb6rg@b\xc3\xbc"
          "cher.example>",
          0, 0, 0,
          "j\xc3\xb6rg@b\xc3\xbc"
          "cher.example",
          "" },
        { "<\"j\xc3\xb6 rg\"@d.example>", 0, 0, 0, "\"j\xc3\xb6 rg\"@d.example", "" },
        { "<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\x85\xac\xe5\x8f\xb8>", 0, 0, 0,
          "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\x85\xac\xe5\x8f\xb8", "" },
        { "<\xc0\xaf@b.c>", 0, 0, -1, NULL, NULL },         /* overlong */
        { "<a@\xed\xa0\x80.c>", 0, 0, -1, NULL, NULL },     /* surrogate */
        { "<\xf4\x90\x80\x80@b.c>", 0, 0, -1, NULL, NULL }, /* > U+10FFFF */
        { "<a\xc3@b.c>", 0, 0, -1, NULL, NULL },            /* truncated */
        { "<\xc2\x85@b.c>", 0, 0, -1, NULL, NULL },         /* C1 control */
        { "<\"\xc2\x9b\"@b.c>", 0, 0, -1, NULL, NULL },     /* C1, quoted */
        { "<a@\xc2\xa0.c>", 0, 0, 0, "a@\xc2\xa0.c", "" },  /* form only, no IDNA */
    };
    buf_t addr = BUF_INIT;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        const struct path_case *c = &cases[k];
        const char *params = NULL, *err = NULL;
        int rc = addr_parse_path(c->arg, c->allow_null, c->allow_bare, &addr, &params, &err);
        if (rc != c->rc)
            fail_msg("case %zu \"%s\": rc %d, want %d (%s)", k, c->arg, rc, c->rc, err ? err : "");
        if (rc == 0) {
            if (strcmp(buf_str(&addr), c->addr) != 0 || strcmp(params, c->params) != 0)
                fail_msg("case %zu \"%s\": got <%s> params \"%s\"", k, c->arg, buf_str(&addr),
                         params);
        } else {
            assert_non_null(err);
        }
    }
    buf_destroy(&addr);
}

static void test_length_limits(void **state)
{
    buf_t arg = BUF_INIT, addr = BUF_INIT;
    const char *params, *err;
    char local[80], label[70];
    memset(local, 'l', sizeof(local));
    memset(label, 'd', sizeof(label));
    /* local part: 64 ok, 65 not */
    buf_printf(&arg, "<%.*s@example.com>", 64, local);
    assert_int_equal(addr_parse_path(arg.data, 0, 0, &addr, &params, &err), 0);
    buf_reset(&arg);
    buf_printf(&arg, "<%.*s@example.com>", 65, local);
    assert_int_equal(addr_parse_path(arg.data, 0, 0, &addr, &params, &err), -1);
    /* label: 63 ok, 64 not */
    buf_reset(&arg);
    buf_printf(&arg, "<a@%.*s.com>", 63, label);
    assert_int_equal(addr_parse_path(arg.data, 0, 0, &addr, &params, &err), 0);
    buf_reset(&arg);
    buf_printf(&arg, "<a@%.*s.com>", 64, label);
    assert_int_equal(addr_parse_path(arg.data, 0, 0, &addr, &params, &err), -1);
    /* domain of 4 x 63-char labels = 255 > 253: invalid; whole path > 256 */
    buf_reset(&arg);
    buf_printf(&arg, "<%.*s@%.*s.%.*s.%.*s.%.*s>", 60, local, 63, label, 63, label, 63, label, 63,
               label);
    assert_int_equal(addr_parse_path(arg.data, 0, 0, &addr, &params, &err), -1);
    /* 64 local + '@' + 190 domain = 255, 257 with <>: too long; 256 is the limit */
    buf_reset(&arg);
    buf_printf(&arg, "<%.*s@%.*s.%.*s.%.*s>", 64, local, 63, label, 63, label, 62, label);
    assert_int_equal(addr_parse_path(arg.data, 0, 0, &addr, &params, &err), -1);
    buf_reset(&arg);
    buf_printf(&arg, "<%.*s@%.*s.%.*s.%.*s>", 64, local, 63, label, 63, label, 61, label);
    assert_int_equal(addr_parse_path(arg.data, 0, 0, &addr, &params, &err), 0);
    buf_destroy(&arg);
    buf_destroy(&addr);
}

static void test_split_and_domains(void **state)
{
    buf_t l = BUF_INIT, d = BUF_INIT;
    assert_int_equal(addr_split("User@Example.COM", &l, &d), 0);
    assert_string_equal(l.data, "User");
    assert_string_equal(d.data, "example.com");
    assert_int_equal(addr_split("\"a@b\"@C.d", &l, &d), 0);
    assert_string_equal(l.data, "\"a@b\"");
    assert_string_equal(d.data, "c.d");
    assert_int_equal(addr_split("postmaster", &l, &d), -1);
    addr_domain("x@Y.Z", &d);
    assert_string_equal(d.data, "y.z");
    addr_domain("nodomain", &d);
    assert_string_equal(buf_str(&d), "");
    static const struct {
        const char *d;
        int valid, fqdn;
    } doms[] = {
        { "example.com", 1, 1 },
        { "a-b.example", 1, 1 },
        { "localhost", 1, 0 },
        { "x1.y2.z3", 1, 1 },
        { "", 0, 0 },
        { ".example", 0, 0 },
        { "example.", 0, 0 },
        { "ex..ample", 0, 0 },
        { "-a.example", 0, 0 },
        { "a-.example", 0, 0 },
        { "a_b.example", 0, 0 },
        { "[192.0.2.1]", 1, 0 },
        { "[IPv6:::1]", 1, 0 },
        { "[ipv6:2001:db8::]", 1, 0 },
        { "[2001:db8::1]", 0, 0 },
        { "[1.2.3]", 0, 0 },
        { "[1.2.3.4", 0, 0 },
        { "ex ample.com", 0, 0 },
    };
    for (size_t k = 0; k < sizeof(doms) / sizeof(doms[0]); k++) {
        if (addr_domain_valid(doms[k].d) != doms[k].valid ||
            addr_domain_valid_utf8(doms[k].d) != doms[k].valid ||
            addr_domain_fqdn(doms[k].d) != doms[k].fqdn)
            fail_msg("domain \"%s\"", doms[k].d);
    }
    /* U-labels: valid only where UTF-8 is allowed; labels count characters */
    static const struct {
        const char *d;
        int valid, fqdn;
    } udoms[] = {
        { "b\xc3\xbc"
          "cher.example",
          1, 1 },
        { "\xc3\xa4", 1, 0 },
        { "-\xc3\xa4.example", 0, 0 },
        { "\xc3\xa4-.example", 0, 0 },
        { "\xc3\xa4\xc3.example", 0, 0 },
        { "\xed\xa0\x80.example", 0, 0 },
        { "\xc2\x85.example", 0, 0 },
        { "\xc3\xa4_b.example", 0, 0 },
    };
    for (size_t k = 0; k < sizeof(udoms) / sizeof(udoms[0]); k++) {
        if (addr_domain_valid(udoms[k].d) || addr_domain_valid_utf8(udoms[k].d) != udoms[k].valid ||
            addr_domain_fqdn(udoms[k].d) != udoms[k].fqdn)
            fail_msg("UTF-8 domain \"%s\"", udoms[k].d);
    }
    char label[200] = "";
    for (int k = 0; k < 63; k++)
        strcat(label, "\xc3\xa4"); /* 63 characters, 126 bytes */
    strcat(label, ".example");
    assert_true(addr_domain_valid_utf8(label));
    label[0] = '\0';
    for (int k = 0; k < 64; k++)
        strcat(label, "\xc3\xa4");
    assert_false(addr_domain_valid_utf8(label));
    assert_true(addr_is_ascii("a@b.example"));
    assert_false(addr_is_ascii("a@b\xc3\xbc.example"));
    buf_destroy(&l);
    buf_destroy(&d);
}

static void test_params(void **state)
{
    const char *p = "SIZE=1000  BODY=8BITMIME SMTPUTF8 X-FOO=a+2Bb";
    buf_t n = BUF_INIT, v = BUF_INIT;
    static const char *want[][2] = {
        { "SIZE", "1000" },
        { "BODY", "8BITMIME" },
        { "SMTPUTF8", "" },
        { "X-FOO", "a+2Bb" },
    };
    for (int k = 0; k < 4; k++) {
        assert_int_equal(addr_next_param(&p, &n, &v), ADDR_PARAM_FOUND);
        assert_string_equal(n.data, want[k][0]);
        assert_string_equal(buf_str(&v), want[k][1]);
    }
    assert_int_equal(addr_next_param(&p, &n, &v), ADDR_PARAM_END);
    static const char *bad[] = { "=x",   "SIZE=", "SIZE==1", "SI_ZE=1",
                                 "-X=1", "A=b=c", "A=\x01",  "A=\xc3\xa9" };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        const char *q = bad[k];
        if (addr_next_param(&q, &n, &v) != ADDR_PARAM_MALFORMED)
            fail_msg("param \"%s\" accepted", bad[k]);
    }
    const char *e = "   ";
    assert_int_equal(addr_next_param(&e, &n, &v), ADDR_PARAM_END);
    buf_destroy(&n);
    buf_destroy(&v);
}

static void test_xtext(void **state)
{
    buf_t enc = BUF_INIT, dec = BUF_INIT;
    const char *samples[] = { "plain@example.com", "a+b=c@d", "sp ace\ttab", "\xc3\xa9t\xc3\xa9",
                              "" };
    for (size_t k = 0; k < sizeof(samples) / sizeof(samples[0]); k++) {
        buf_reset(&enc);
        xtext_encode(samples[k], &enc);
        for (size_t i = 0; i < enc.len; i++) {
            unsigned char c = (unsigned char)enc.data[i];
            assert_true(c >= 33 && c <= 126 && c != '=');
        }
        assert_int_equal(xtext_decode(buf_str(&enc), &dec), 0);
        assert_string_equal(buf_str(&dec), samples[k]);
    }
    buf_reset(&enc);
    xtext_encode("a+b=c d", &enc);
    assert_string_equal(enc.data, "a+2Bb+3Dc+20d");
    assert_int_equal(xtext_decode("rfc822+3Bx", &dec), 0);
    assert_string_equal(dec.data, "rfc822;x");
    static const char *bad[] = { "a+", "a+2", "a+ZZ", "a=b", "a b", "+00", "\x80" };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
        if (xtext_decode(bad[k], &dec) != -1)
            fail_msg("xtext \"%s\" accepted", bad[k]);
    buf_destroy(&enc);
    buf_destroy(&dec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_length_limits),
        cmocka_unit_test(test_split_and_domains),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_xtext),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
