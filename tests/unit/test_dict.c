/* test_dict.c - hash: tables: build from text, lookup, errors, rebuild,
 * one shared handle per table in a process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <dirent.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "common/util/buf.h"
#include "common/glue/dict.h"

static char dir[64];

static int setup(void **state)
{
    str_lcpy(dir, "/tmp/test_dict.XXXXXX", sizeof(dir));
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_text(const char *name, const char *text, buf_t *spec)
{
    buf_reset(spec);
    buf_printf(spec, "%s/%s", dir, name);
    FILE *fp = fopen(spec->data, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    buf_reset(spec);
    buf_printf(spec, "hash:%s/%s", dir, name);
}

static void test_build_lookup(void **state)
{
    buf_t spec = BUF_INIT, err = BUF_INIT, val = BUF_INIT;
    write_text("transport",
               "# comment\n"
               "\n"
               "Example.COM   smtp:[127.0.0.1]:2526\n"
               "  .sub.example.com\tsmtp:relay.example  with  spaces  \n"
               "dup.example first\n"
               "dup.example second\n"
               "last.example novalue-newline-missing",
               &spec);
    assert_int_equal(dict_build(spec.data, &err), 0);
    struct dict *d = dict_open(spec.data, &err);
    assert_non_null(d);
    assert_int_equal(dict_lookup(d, "example.com", &val), 1);
    assert_string_equal(val.data, "smtp:[127.0.0.1]:2526");
    assert_int_equal(dict_lookup(d, "EXAMPLE.com", &val), 1);
    assert_string_equal(val.data, "smtp:[127.0.0.1]:2526");
    assert_int_equal(dict_lookup(d, ".sub.example.com", &val), 1);
    assert_string_equal(val.data, "smtp:relay.example  with  spaces");
    assert_int_equal(dict_lookup(d, "dup.example", &val), 1);
    assert_string_equal(val.data, "first");
    assert_int_equal(dict_lookup(d, "last.example", &val), 1);
    assert_string_equal(val.data, "novalue-newline-missing");
    assert_int_equal(dict_lookup(d, "missing.example", &val), 0);
    assert_int_equal(dict_lookup(d, "# comment", &val), 0);
    /* a rebuild replaces the file; the open table picks it up */
    write_text("transport", "example.com smtp:other\n", &spec);
    assert_int_equal(dict_build(spec.data, &err), 0);
    sleep(1);
    assert_int_equal(dict_lookup(d, "example.com", &val), 1);
    assert_string_equal(val.data, "smtp:other");
    assert_int_equal(dict_lookup(d, "dup.example", &val), 0);
    dict_close(d);
    /* a plain path works for building too */
    buf_t plain = BUF_INIT;
    buf_printf(&plain, "%s/transport", dir);
    assert_int_equal(dict_build(plain.data, &err), 0);
    buf_destroy(&plain);
    buf_destroy(&spec);
    buf_destroy(&err);
    buf_destroy(&val);
}

static void test_errors(void **state)
{
    buf_t spec = BUF_INIT, err = BUF_INIT, path = BUF_INIT;
    write_text("bad", "good.example ok\n# c\nlonely-key\nother x\n", &spec);
    assert_int_equal(dict_build(spec.data, &err), -1);
    buf_printf(&path, "%s/bad, line 3: expected \"key whitespace value\"", dir);
    assert_string_equal(err.data, path.data);
    /* nothing installed, no temp file left behind */
    buf_reset(&path);
    buf_printf(&path, "%s/bad.db", dir);
    assert_int_equal(access(path.data, F_OK), -1);
    buf_puts(&path, ".tmp");
    assert_int_equal(access(path.data, F_OK), -1);
    assert_null(dict_open(spec.data, &err));
    assert_non_null(strstr(err.data, "bad.db"));
    buf_reset(&path);
    buf_printf(&path, "hash:%s/nonexistent", dir);
    assert_int_equal(dict_build(path.data, &err), -1);
    assert_non_null(strstr(err.data, "nonexistent"));
    assert_null(dict_open("btree:/etc/x", &err));
    assert_non_null(strstr(err.data, "hash"));
    buf_destroy(&spec);
    buf_destroy(&err);
    buf_destroy(&path);
}

/* A NUL byte in a source line is refused with its line number; it used
 * to cut the value short (or hide the line) silently (found by fuzz_dict). */
static void test_nul_byte(void **state)
{
    static const char text[] = "good.example ok\nnul.example a\0b\n";
    buf_t spec = BUF_INIT, err = BUF_INIT, want = BUF_INIT;
    buf_printf(&spec, "%s/nul", dir);
    FILE *fp = fopen(spec.data, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, sizeof(text) - 1, fp), sizeof(text) - 1);
    fclose(fp);
    assert_int_equal(dict_build(spec.data, &err), -1);
    buf_printf(&want, "%s/nul, line 2: NUL byte in line", dir);
    assert_string_equal(err.data, want.data);
    /* a line that starts with NUL is not skipped as blank either */
    fp = fopen(spec.data, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite("\0x y\n", 1, 5, fp), 5);
    fclose(fp);
    assert_int_equal(dict_build(spec.data, &err), -1);
    assert_non_null(strstr(err.data, "line 1: NUL byte"));
    buf_destroy(&spec);
    buf_destroy(&err);
    buf_destroy(&want);
}

/* Descriptors of this process open on path. */
static int fds_on(const char *path)
{
    DIR *dp = opendir("/proc/self/fd");
    assert_non_null(dp);
    char link[PATH_MAX + 32], target[PATH_MAX];
    int n = 0;
    for (struct dirent *e; (e = readdir(dp)) != NULL;) {
        snprintf(link, sizeof(link), "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(link, target, sizeof(target) - 1);
        if (len < 0)
            continue;
        target[len] = '\0';
        n += strcmp(target, path) == 0;
    }
    closedir(dp);
    return n;
}

/* smtpd's restrictions, its login maps and the TLS policy may name the same
 * table: one open database, shared until the last holder closes it, and a
 * rebuild is seen by every holder. */
static void test_shared_handle(void **state)
{
    buf_t spec = BUF_INIT, plain = BUF_INIT, err = BUF_INIT, val = BUF_INIT, db = BUF_INIT;
    write_text("access", "a.example OK\n", &spec);
    assert_int_equal(dict_build(spec.data, &err), 0);
    buf_printf(&plain, "%s/access", dir);
    buf_printf(&db, "%s/access.db", dir);
    struct dict *d1 = dict_open(spec.data, &err);
    struct dict *d2 = dict_open(plain.data, &err); /* "/path" is "hash:/path" */
    struct dict *d3 = dict_open(spec.data, &err);
    assert_non_null(d1);
    assert_ptr_equal(d1, d2);
    assert_ptr_equal(d1, d3);
    assert_int_equal(fds_on(db.data), 1);
    dict_close(d1);
    dict_close(d3);
    /* the last holder still looks up, and sees a rebuild */
    assert_int_equal(dict_lookup(d2, "a.example", &val), DICT_FOUND);
    assert_string_equal(val.data, "OK");
    write_text("access", "b.example REJECT\n", &spec);
    assert_int_equal(dict_build(spec.data, &err), 0);
    sleep(1);
    assert_int_equal(dict_lookup(d2, "a.example", &val), DICT_NOTFOUND);
    assert_int_equal(dict_lookup(d2, "b.example", &val), DICT_FOUND);
    assert_int_equal(fds_on(db.data), 1);
    dict_close(d2);
    assert_int_equal(fds_on(db.data), 0); /* the last reference closed it */
    /* and opening it again works from scratch */
    d1 = dict_open(spec.data, &err);
    assert_non_null(d1);
    assert_int_equal(dict_lookup(d1, "b.example", &val), DICT_FOUND);
    dict_close(d1);
    buf_destroy(&spec);
    buf_destroy(&plain);
    buf_destroy(&err);
    buf_destroy(&val);
    buf_destroy(&db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_lookup),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_shared_handle),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
