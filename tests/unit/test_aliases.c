/* test_aliases.c - the aliases(5) reader: entries, continuation lines,
 * quoted names and items, comments, and the errors newaliases reports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mail/aliases.h"
#include "common/mail/conf.h"
#include "common/util/buf.h"

static int collect(const char *name, const char *value, void *arg)
{
    buf_printf(arg, "[%s=%s]", name, value);
    return 0;
}

static int parse(const char *text, buf_t *out, buf_t *err)
{
    FILE *fp = fmemopen((void *)text, strlen(text), "r");
    int rc = aliases_parse(fp, "aliases", collect, out, err);
    fclose(fp);
    return rc;
}

static void test_entries(void **state)
{
    buf_t out = BUF_INIT, err = BUF_INIT;
    assert_int_equal(parse("# c\n\npostmaster: root\nlist:  a,\n  b ,\n\t\"|cmd x, y\"\n"
                           "\"odd name\": c\nempty:\n  d\n",
                           &out, &err),
                     0);
    assert_string_equal(buf_str(&out), "[postmaster=root][list=a, b , \"|cmd x, y\"]"
                                       "[odd name=c][empty=d]");
    buf_destroy(&out);
    buf_destroy(&err);
}

static void test_errors(void **state)
{
    buf_t out = BUF_INIT, err = BUF_INIT;
    assert_int_equal(parse("ok: a\nno colon here\n", &out, &err), -1);
    assert_non_null(strstr(buf_str(&err), "line 2"));
    assert_int_equal(parse("  continued: x\n", &out, &err), -1);
    assert_int_equal(parse("novalue:\n", &out, &err), -1);
    assert_non_null(strstr(buf_str(&err), "no value"));
    buf_destroy(&out);
    buf_destroy(&err);
}

static void test_split(void **state)
{
    char **v = aliases_split(" a , \"|cmd x, y\",,:include:/f , /file,\\\\me ");
    assert_string_equal(v[0], "a");
    assert_string_equal(v[1], "|cmd x, y");
    assert_string_equal(v[2], ":include:/f");
    assert_string_equal(v[3], "/file");
    assert_string_equal(v[4], "\\\\me");
    assert_null(v[5]);
    strv_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entries),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
