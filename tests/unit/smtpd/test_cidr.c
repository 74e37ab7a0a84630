/* test_cidr.c - network lists: parsing, IPv4/IPv6 matching, v4-mapped
 * addresses, list parameters and their validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <sys/socket.h>

#include "common/util/buf.h"
#include "smtpd/smtpd_cidr.h"
#include "common/mail/conf.h"

static int in(const char *net, const char *addr)
{
    struct cidr c;
    unsigned char a[16];
    assert_int_equal(smtpd_cidr_parse(net, &c), 0);
    int fam = smtpd_cidr_addr_bytes(addr, a);
    assert_true(fam > 0);
    return smtpd_cidr_match(&c, fam, a);
}

static void test_parse(void **state)
{
    struct cidr c;
    assert_int_equal(smtpd_cidr_parse("10.1.2.3", &c), 0);
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.bits, 32);
    assert_int_equal(smtpd_cidr_parse("10.0.0.0/8", &c), 0);
    assert_int_equal(c.bits, 8);
    assert_int_equal(smtpd_cidr_parse("[::1]/128", &c), 0);
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(smtpd_cidr_parse("[2001:db8::]/32", &c), 0);
    assert_int_equal(c.bits, 32);
    assert_int_equal(smtpd_cidr_parse("::1", &c), 0);
    assert_int_equal(smtpd_cidr_parse("0.0.0.0/0", &c), 0);
    /* malformed */
    assert_int_equal(smtpd_cidr_parse("10.0.0.0/33", &c), -1);
    assert_int_equal(smtpd_cidr_parse("10.0.0.0/", &c), -1);
    assert_int_equal(smtpd_cidr_parse("10.0.0.0/8x", &c), -1);
    assert_int_equal(smtpd_cidr_parse("10.0.0.0/-1", &c), -1);
    assert_int_equal(smtpd_cidr_parse("[::1]/129", &c), -1);
    assert_int_equal(smtpd_cidr_parse("host.example", &c), -1);
    assert_int_equal(smtpd_cidr_parse("", &c), -1);
    assert_int_equal(smtpd_cidr_parse("[]", &c), -1);
    assert_int_equal(smtpd_cidr_parse("/8", &c), -1);
    assert_int_equal(smtpd_cidr_parse("1.2.3.4.5", &c), -1);
}

static void test_match_v4(void **state)
{
    assert_true(in("127.0.0.0/8", "127.0.0.1"));
    assert_true(in("127.0.0.0/8", "127.255.255.255"));
    assert_false(in("127.0.0.0/8", "128.0.0.1"));
    assert_true(in("10.1.2.3", "10.1.2.3"));
    assert_false(in("10.1.2.3", "10.1.2.4"));
    assert_true(in("192.168.0.0/23", "192.168.1.200"));
    assert_false(in("192.168.0.0/23", "192.168.2.1"));
    assert_true(in("0.0.0.0/0", "203.0.113.9"));
    /* an IPv4 network never matches an IPv6 client and vice versa */
    assert_false(in("0.0.0.0/0", "2001:db8::1"));
    assert_false(in("[::]/0", "10.0.0.1"));
}

static void test_match_v6(void **state)
{
    assert_true(in("[::1]/128", "::1"));
    assert_false(in("[::1]/128", "::2"));
    assert_true(in("[2001:db8::]/32", "2001:db8:ffff::1"));
    assert_false(in("[2001:db8::]/32", "2001:db9::1"));
    assert_true(in("[2001:db8::]/33", "2001:db8:7fff::1"));
    assert_false(in("[2001:db8::]/33", "2001:db8:8000::1"));
}

static void test_v4_mapped(void **state)
{
    unsigned char a[16];
    assert_int_equal(smtpd_cidr_addr_bytes("::ffff:10.0.0.5", a), AF_INET);
    assert_true(in("10.0.0.0/8", "::ffff:10.0.0.5"));
    assert_int_equal(smtpd_cidr_addr_bytes("unknown", a), -1);
    /* A v4-mapped network of 96 bits or more is the IPv4 network it maps,
     * so it holds the addresses it names (found by fuzz_cidr). */
    struct cidr c;
    assert_int_equal(smtpd_cidr_parse("[::ffff:10.0.0.0]/104", &c), 0);
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.bits, 8);
    assert_true(in("::ffff:10.0.0.5", "::ffff:10.0.0.5"));
    assert_true(in("::ffff:10.0.0.5", "10.0.0.5"));
    assert_true(in("[::ffff:10.0.0.0]/104", "10.1.2.3"));
    assert_true(in("[::ffff:0.0.0.0]/96", "192.0.2.1"));
    assert_false(in("[::ffff:10.0.0.0]/104", "11.0.0.1"));
    /* shorter prefixes stay IPv6 (as [::]/0 does) */
    assert_int_equal(smtpd_cidr_parse("[::ffff:0:0]/95", &c), 0);
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(smtpd_cidr_addr_bytes("", a), -1);
}

static void test_list(void **state)
{
    conf_set("mynetworks", "127.0.0.0/8 [::1]/128, 10.1.2.3 hash:/nonexistent");
    assert_true(smtpd_cidr_list_match("mynetworks", "127.0.0.1"));
    assert_true(smtpd_cidr_list_match("mynetworks", "::1"));
    assert_true(smtpd_cidr_list_match("mynetworks", "10.1.2.3"));
    assert_false(smtpd_cidr_list_match("mynetworks", "10.1.2.4"));
    assert_false(smtpd_cidr_list_match("mynetworks", "not-an-address"));
    buf_t err = BUF_INIT;
    assert_int_equal(smtpd_cidr_list_validate("mynetworks", &err), 0);
    conf_set("mynetworks", "127.0.0.0/8 10.0.0.0/40");
    assert_int_equal(smtpd_cidr_list_validate("mynetworks", &err), -1);
    assert_non_null(strstr(buf_str(&err), "10.0.0.0/40"));
    assert_non_null(strstr(buf_str(&err), "mynetworks"));
    conf_set("mynetworks", "");
    assert_false(smtpd_cidr_list_match("mynetworks", "127.0.0.1"));
    assert_int_equal(smtpd_cidr_list_validate("mynetworks", &err), 0);
    buf_destroy(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),    cmocka_unit_test(test_match_v4),
        cmocka_unit_test(test_match_v6), cmocka_unit_test(test_v4_mapped),
        cmocka_unit_test(test_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
