/* test_addrclass.c - address classes: list elements, class precedence,
 * the "User unknown in ... table" replies, and virtual alias expansion
 * (lists, recursion, loops, duplicates, limits) over real hash: tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util/buf.h"
#include "common/mail/conf.h"
#include "common/glue/addrclass.h"
#include "common/glue/dict.h"

static char dir[64];

static int setup(void **state)
{
    buf_t err = BUF_INIT;
    str_lcpy(dir, "/tmp/test_addrclass.XXXXXX", sizeof(dir));
    if (!mkdtemp(dir))
        return -1;
    int rc = conf_load_text("", 0, "/nonexistent/main.cf", &err);
    buf_destroy(&err);
    return rc;
}

static int teardown(void **state)
{
    char cmd[128];
    addrclass_done();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Write text as table <dir>/name, build it, return "hash:<dir>/name". */
static const char *table(const char *name, const char *text)
{
    static char spec[256];
    char path[200];
    buf_t err = BUF_INIT;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    snprintf(spec, sizeof(spec), "hash:%s", path);
    assert_int_equal(dict_build(spec, &err), 0);
    buf_destroy(&err);
    return spec;
}

static void test_elements(void **state)
{
    assert_true(addrclass_elem_match("example.com", "EXAMPLE.com"));
    assert_false(addrclass_elem_match("example.com", "sub.example.com"));
    assert_true(addrclass_elem_match(".example.com", "sub.example.com"));
    assert_false(addrclass_elem_match(".example.com", "example.com"));
    assert_true(addrclass_elem_is_table("hash:/etc/postino/virtual"));
    assert_true(addrclass_elem_is_table("unix:passwd.byname"));
    assert_false(addrclass_elem_is_table("example.com"));
    assert_false(addrclass_elem_is_table("[::1]"));
    buf_t l = BUF_INIT, d = BUF_INIT;
    assert_int_equal(addrclass_split("a@b@c.test", &l, &d), 0);
    assert_string_equal(buf_str(&l), "a@b");
    assert_string_equal(buf_str(&d), "c.test");
    assert_int_equal(addrclass_split("nodomain", &l, &d), -1);
    buf_destroy(&l);
    buf_destroy(&d);
}

static void test_classes(void **state)
{
    conf_set("mydestination", "local.test, .sub.local.test");
    conf_set("virtual_alias_domains", "alias.test");
    conf_set("virtual_mailbox_domains", table("vdomains", "mbox.test x\n"));
    conf_set("relay_domains", "relay.test");
    assert_int_equal(addrclass_of("LOCAL.test"), ADDRCLASS_LOCAL);
    assert_int_equal(addrclass_of("a.sub.local.test"), ADDRCLASS_LOCAL);
    assert_int_equal(addrclass_of("alias.test"), ADDRCLASS_VIRTUAL_ALIAS);
    assert_int_equal(addrclass_of("Mbox.Test"), ADDRCLASS_VIRTUAL_MAILBOX);
    assert_int_equal(addrclass_of("relay.test"), ADDRCLASS_RELAY);
    assert_int_equal(addrclass_of("elsewhere.test"), ADDRCLASS_DEFAULT);
    assert_string_equal(addrclass_transport_param(ADDRCLASS_LOCAL), "local_transport");
    assert_string_equal(addrclass_transport_param(ADDRCLASS_VIRTUAL_MAILBOX), "virtual_transport");
    assert_string_equal(addrclass_transport_param(ADDRCLASS_RELAY), "relay_transport");
    assert_string_equal(addrclass_transport_param(ADDRCLASS_DEFAULT), "default_transport");
    /* a missing table is an error, not "not ours" */
    conf_set("relay_domains", "hash:/nonexistent/relay");
    assert_int_equal(addrclass_of("relay.test"), ADDRCLASS_ERROR);
    assert_int_equal(addrclass_of("local.test"), ADDRCLASS_LOCAL); /* earlier class wins */
}

static void test_validate(void **state)
{
    buf_t err = BUF_INIT;
    conf_set("mydestination", "local.test");
    conf_set("virtual_alias_domains", "alias.test");
    conf_set("virtual_mailbox_domains", "mbox.test");
    conf_set("relay_domains", "relay.test, hash:/x/y");
    assert_int_equal(addrclass_validate(&err), 0);
    conf_set("relay_domains", "relay.test, Local.Test");
    assert_int_equal(addrclass_validate(&err), -1);
    assert_string_equal(buf_str(&err), "do not list domain local.test in BOTH mydestination and "
                                       "relay_domains");
    conf_set("relay_domains", "");
    conf_set("virtual_mailbox_domains", "alias.test");
    assert_int_equal(addrclass_validate(&err), -1);
    assert_non_null(strstr(buf_str(&err), "virtual_alias_domains and virtual_mailbox_domains"));
    buf_destroy(&err);
}

static void expect_unknown(const char *addr, const char *reply)
{
    buf_t r = BUF_INIT;
    assert_int_equal(addrclass_rcpt_known(addr, &r), ADDRCLASS_UNKNOWN);
    assert_string_equal(buf_str(&r), reply);
    buf_destroy(&r);
}

static void expect_known(const char *addr)
{
    buf_t r = BUF_INIT;
    assert_int_equal(addrclass_rcpt_known(addr, &r), ADDRCLASS_KNOWN);
    buf_destroy(&r);
}

static void test_known(void **state)
{
    buf_t r = BUF_INIT;
    conf_set("mydestination", "local.test");
    conf_set("virtual_alias_domains", "alias.test");
    conf_set("virtual_mailbox_domains", "mbox.test");
    conf_set("relay_domains", "relay.test");
    conf_set("virtual_alias_maps", table("valias", "info@alias.test bob@elsewhere.test\n"
                                                   "sales@local.test bob@elsewhere.test\n"));
    conf_set("local_recipient_maps",
             "unix:passwd.byname hash:/nonexistent/aliases " /* ignored: others know */
             "hash:/nonexistent/x");
    conf_set("local_recipient_maps",
             table("lusers", "alice x\nwhole@local.test x\n")); /* local part, full */
    expect_known("Alice@local.test");
    expect_known("whole@local.test");
    expect_known("sales@local.test"); /* an alias is known in any class */
    expect_unknown("nosuchuser@local.test", "550 5.1.1 <nosuchuser@local.test>: Recipient address "
                                            "rejected: User unknown in local recipient table");
    conf_set("local_recipient_maps", "unix:passwd.byname");
    expect_known("root@local.test");
    conf_set("local_recipient_maps", "unix:passwd.byname hash:/nonexistent/aliases");
    expect_known("root@local.test"); /* found despite the broken table */
    assert_int_equal(addrclass_rcpt_known("nosuchuser@local.test", &r), ADDRCLASS_TEMPFAIL);
    assert_string_equal(buf_str(&r), "451 4.3.0 <nosuchuser@local.test>: Temporary lookup failure");
    conf_set("local_recipient_maps", ""); /* Postfix: any local part */
    expect_known("nosuchuser@local.test");

    expect_known("info@alias.test");
    expect_unknown("x@alias.test", "550 5.1.1 <x@alias.test>: Recipient address rejected: User "
                                   "unknown in virtual alias table");
    conf_set("virtual_mailbox_maps", table("vmbox", "u@mbox.test x\n@catch.test x\n"));
    expect_known("u@mbox.test");
    expect_unknown("v@mbox.test", "550 5.1.1 <v@mbox.test>: Recipient address rejected: User "
                                  "unknown in virtual mailbox table");
    conf_set("relay_recipient_maps", table("rrcpt", "@relay.test x\n"));
    expect_known("anyone@relay.test"); /* @domain catch-all */
    conf_set("relay_recipient_maps", table("rrcpt2", "a@relay.test x\n"));
    conf_set("unknown_relay_recipient_reject_code", "450");
    expect_unknown("b@relay.test", "450 4.1.1 <b@relay.test>: Recipient address rejected: User "
                                   "unknown in relay recipient table");
    expect_known("b@elsewhere.test"); /* not ours: relay control decides */
    buf_destroy(&r);
}

static void expect_expand(const char *addr, enum addrclass_expand want, const char *joined)
{
    char **out = NULL;
    buf_t err = BUF_INIT, got = BUF_INIT;
    assert_int_equal(addrclass_expand(addr, &out, &err), want);
    for (size_t i = 0; out && out[i]; i++)
        buf_printf(&got, "%s%s", i ? " " : "", out[i]);
    if (joined)
        assert_string_equal(buf_str(&got), joined);
    strv_free(out);
    buf_destroy(&err);
    buf_destroy(&got);
}

static void test_expand(void **state)
{
    conf_set("myorigin", "local.test");
    conf_set("mydestination", "local.test");
    conf_set("virtual_alias_domains", "alias.test");
    conf_set("virtual_alias_maps", "");
    expect_expand("a@alias.test", ADDRCLASS_EXPAND_NONE, "");
    conf_set("virtual_alias_maps",
             table("va", "list@alias.test a@remote.test, team@alias.test, joe\n"
                         "team@alias.test b@remote.test a@remote.test\n"
                         "self@alias.test self@alias.test, c@remote.test\n"
                         "loop1@alias.test loop2@alias.test\n"
                         "loop2@alias.test loop1@alias.test, d@remote.test\n"
                         "@catch.test catchall@remote.test\n"
                         "joe joe@remote.test\n" /* local part, local domains only */
                         "deep0@alias.test deep1@alias.test\n"
                         "deep1@alias.test deep2@alias.test\n"
                         "deep2@alias.test deep3@alias.test\n"
                         "deep3@alias.test end@remote.test\n"));
    expect_expand("list@alias.test", ADDRCLASS_EXPAND_DONE,
                  "a@remote.test b@remote.test joe@remote.test");
    expect_expand("self@alias.test", ADDRCLASS_EXPAND_DONE, "self@alias.test c@remote.test");
    expect_expand("loop1@alias.test", ADDRCLASS_EXPAND_DONE, "loop1@alias.test d@remote.test");
    expect_expand("x@catch.test", ADDRCLASS_EXPAND_DONE, "catchall@remote.test");
    expect_expand("joe@local.test", ADDRCLASS_EXPAND_DONE, "joe@remote.test");
    expect_expand("joe@alias.test", ADDRCLASS_EXPAND_NONE, ""); /* "joe" is for local domains */
    expect_expand("nothere@alias.test", ADDRCLASS_EXPAND_NONE, "");
    expect_expand("deep0@alias.test", ADDRCLASS_EXPAND_DONE, "end@remote.test");
    conf_set("virtual_alias_recursion_limit", "3");
    expect_expand("deep0@alias.test", ADDRCLASS_EXPAND_TEMPFAIL, NULL);
    expect_expand("deep1@alias.test", ADDRCLASS_EXPAND_DONE, "end@remote.test");
    conf_set("virtual_alias_recursion_limit", "1000");
    conf_set("virtual_alias_expansion_limit", "2");
    expect_expand("list@alias.test", ADDRCLASS_EXPAND_TEMPFAIL, NULL);
    expect_expand("team@alias.test", ADDRCLASS_EXPAND_DONE, "b@remote.test a@remote.test");
    conf_set("virtual_alias_expansion_limit", "1000");
    conf_set("virtual_alias_maps", "hash:/nonexistent/va");
    expect_expand("list@alias.test", ADDRCLASS_EXPAND_TEMPFAIL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elements), cmocka_unit_test(test_classes),
        cmocka_unit_test(test_validate), cmocka_unit_test(test_known),
        cmocka_unit_test(test_expand),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
