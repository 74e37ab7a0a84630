/* test_suppress.c - the suppression list: add, lookup, scope, expiry,
 * walks in pages, purge, and a reader (another handle, another process)
 * that sees the writer's changes without reopening. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util/buf.h"
#include "common/mail/suppress.h"

static char dir[64];

static int setup(void **state)
{
    str_lcpy(dir, "/tmp/test_suppress.XXXXXX", sizeof(dir));
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static struct suppress *open_store(enum suppress_mode mode)
{
    buf_t path = BUF_INIT, err = BUF_INIT;
    buf_printf(&path, "%s/suppress", dir);
    struct suppress *s = suppress_open(path.data, mode, NULL, &err);
    if (s == NULL)
        fail_msg("open: %s", err.data);
    buf_destroy(&path);
    buf_destroy(&err);
    return s;
}

static void add(struct suppress *s, const char *scope, const char *addr, const char *reason,
                long long expires)
{
    struct suppress_entry e = { (char *)scope, (char *)addr, (char *)reason,
                                (char *)"why", 1000,         expires };
    buf_t err = BUF_INIT;
    assert_int_equal(suppress_put(s, &e, &err), 0);
    buf_destroy(&err);
}

static void test_add_lookup(void **state)
{
    struct suppress *s = open_store(SUPPRESS_WRITE);
    struct suppress_entry e;

    add(s, "", "Dead.User@Example.COM", "bad-mailbox", 0);
    assert_int_equal(suppress_get(s, "", "dead.user@example.com", 2000, &e), SUPPRESS_FOUND);
    assert_string_equal(e.address, "dead.user@example.com");
    assert_string_equal(e.scope, "");
    assert_string_equal(e.reason, "bad-mailbox");
    assert_string_equal(e.text, "why");
    assert_int_equal(e.added, 1000);
    assert_int_equal(e.expires, 0);
    suppress_entry_destroy(&e);
    /* any spelling of the address matches */
    assert_int_equal(suppress_get(s, "", "DEAD.USER@example.com", 2000, NULL), SUPPRESS_FOUND);
    assert_int_equal(suppress_get(s, "", "other@example.com", 2000, NULL), SUPPRESS_NONE);
    assert_int_equal(suppress_del(s, "", "dead.user@EXAMPLE.com"), SUPPRESS_FOUND);
    assert_int_equal(suppress_del(s, "", "dead.user@example.com"), SUPPRESS_NONE);
    assert_int_equal(suppress_get(s, "", "dead.user@example.com", 2000, NULL), SUPPRESS_NONE);
    suppress_close(s);
}

static void test_bad_keys(void **state)
{
    struct suppress *s = open_store(SUPPRESS_WRITE);
    struct suppress_entry e = { (char *)"", (char *)"no-at-sign", (char *)"manual", NULL, 1, 0 };
    buf_t err = BUF_INIT;

    assert_int_equal(suppress_put(s, &e, &err), -1);
    assert_string_equal(err.data, "invalid address");
    e.address = (char *)"a b@example.com";
    assert_int_equal(suppress_put(s, &e, &err), -1);
    e.address = (char *)"a@example.com";
    e.scope = (char *)"x@y";
    assert_int_equal(suppress_put(s, &e, &err), -1);
    assert_string_equal(err.data, "invalid scope");
    buf_destroy(&err);
    suppress_close(s);
}

static void test_scope(void **state)
{
    struct suppress *s = open_store(SUPPRESS_WRITE);
    struct suppress_entry e;

    add(s, "News.A.com", "u@x.org", "complaint", 0);
    add(s, "", "g@x.org", "bad-mailbox", 0);
    /* scoped: only for mail from that sender domain */
    assert_int_equal(suppress_check(s, "news.a.com", "u@x.org", 2000, &e), SUPPRESS_FOUND);
    assert_string_equal(e.scope, "news.a.com");
    suppress_entry_destroy(&e);
    assert_int_equal(suppress_check(s, "b.com", "u@x.org", 2000, NULL), SUPPRESS_NONE);
    assert_int_equal(suppress_check(s, "", "u@x.org", 2000, NULL), SUPPRESS_NONE);
    /* global: for every sender, the null sender too */
    assert_int_equal(suppress_check(s, "b.com", "g@x.org", 2000, NULL), SUPPRESS_FOUND);
    assert_int_equal(suppress_check(s, "", "g@x.org", 2000, NULL), SUPPRESS_FOUND);
    suppress_close(s);
}

static int collect(const struct suppress_entry *e, void *arg)
{
    buf_t *b = arg;
    buf_printf(b, "%s|%s ", e->scope, e->address);
    return 0;
}

static void test_expiry(void **state)
{
    struct suppress *s = open_store(SUPPRESS_WRITE);

    add(s, "", "soon@x.org", "bad-mailbox", 5000);
    add(s, "", "later@x.org", "bad-mailbox", 9000);
    add(s, "", "never@x.org", "bad-mailbox", 0);
    assert_int_equal(suppress_get(s, "", "soon@x.org", 4999, NULL), SUPPRESS_FOUND);
    /* the writer deletes an expired entry it meets */
    assert_int_equal(suppress_get(s, "", "soon@x.org", 5000, NULL), SUPPRESS_NONE);
    buf_t b = BUF_INIT;
    assert_int_equal(suppress_scan(s, NULL, NULL, NULL, 0, collect, &b), 2);
    assert_string_equal(b.data, "|later@x.org |never@x.org ");
    /* the purge walks in steps and deletes only what has expired */
    assert_int_equal(suppress_purge(s, 10000, 1), 1); /* later@ */
    assert_int_equal(suppress_purge(s, 10000, 10), 0);
    assert_int_equal(suppress_get(s, "", "never@x.org", 1LL << 40, NULL), SUPPRESS_FOUND);
    buf_reset(&b);
    assert_int_equal(suppress_scan(s, NULL, NULL, NULL, 0, collect, &b), 1);
    assert_string_equal(b.data, "|never@x.org ");
    buf_destroy(&b);
    suppress_close(s);
}

static void test_scan_pages(void **state)
{
    struct suppress *s = open_store(SUPPRESS_WRITE);
    buf_t b = BUF_INIT;

    add(s, "b.com", "z@x.org", "manual", 0);
    add(s, "", "b@x.org", "manual", 0);
    add(s, "a.com", "a@x.org", "manual", 0);
    add(s, "a.com.uk", "a@x.org", "manual", 0);
    add(s, "", "a@x.org", "manual", 0);
    assert_int_equal(suppress_scan(s, NULL, NULL, NULL, 0, collect, &b), 5);
    assert_string_equal(b.data, "|a@x.org |b@x.org a.com|a@x.org a.com.uk|a@x.org b.com|z@x.org ");
    /* pages of two, each after the last key of the one before */
    buf_reset(&b);
    assert_int_equal(suppress_scan(s, NULL, NULL, NULL, 2, collect, &b), 2);
    assert_int_equal(suppress_scan(s, NULL, "", "b@x.org", 2, collect, &b), 2);
    assert_int_equal(suppress_scan(s, NULL, "a.com.uk", "a@x.org", 2, collect, &b), 1);
    assert_int_equal(suppress_scan(s, NULL, "b.com", "z@x.org", 2, collect, &b), 0);
    assert_string_equal(b.data, "|a@x.org |b@x.org a.com|a@x.org a.com.uk|a@x.org b.com|z@x.org ");
    /* one scope: a.com is not a.com.uk */
    buf_reset(&b);
    assert_int_equal(suppress_scan(s, "A.com", NULL, NULL, 0, collect, &b), 1);
    assert_string_equal(b.data, "a.com|a@x.org ");
    buf_reset(&b);
    assert_int_equal(suppress_scan(s, "", NULL, NULL, 0, collect, &b), 2);
    assert_string_equal(b.data, "|a@x.org |b@x.org ");
    buf_destroy(&b);
    suppress_close(s);
}

/* Two handles on one environment, as two processes have. */
static void test_two_handles(void **state)
{
    struct suppress *w = open_store(SUPPRESS_WRITE);
    struct suppress *r = open_store(SUPPRESS_READ);

    assert_int_equal(suppress_get(r, "", "new@x.org", 1, NULL), SUPPRESS_NONE);
    add(w, "", "new@x.org", "complaint", 0);
    assert_int_equal(suppress_get(r, "", "new@x.org", 1, NULL), SUPPRESS_FOUND);
    assert_int_equal(suppress_del(w, "", "new@x.org"), SUPPRESS_FOUND);
    assert_int_equal(suppress_get(r, "", "new@x.org", 1, NULL), SUPPRESS_NONE);
    suppress_close(r);
    suppress_close(w);
}

/* A reader in another process, opened before the write, sees it. */
static void test_two_processes(void **state)
{
    struct suppress *w = open_store(SUPPRESS_WRITE);
    int go[2], done[2];
    char c;

    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(done), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct suppress *r = open_store(SUPPRESS_READ);
        int before = suppress_get(r, "", "proc@x.org", 1, NULL) == SUPPRESS_NONE;
        if (write(done[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
            _exit(3);
        int after = suppress_get(r, "", "proc@x.org", 1, NULL) == SUPPRESS_FOUND;
        suppress_close(r);
        _exit(before && after ? 0 : 1);
    }
    assert_int_equal(read(done[0], &c, 1), 1); /* the child has the store open */
    add(w, "", "proc@x.org", "bad-mailbox", 0);
    assert_int_equal(write(go[1], "w", 1), 1);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    suppress_close(w);
}

static int hold_cursor(const struct suppress_entry *e, void *arg)
{
    if (write(*(int *)arg, "h", 1) != 1)
        _exit(3);
    pause(); /* killed here, its read lock held */
    return 0;
}

/* A reader killed while it holds a read lock would hold the writer off
 * for good; the writer frees such locks (failchk) at open and when asked. */
static void test_dead_reader(void **state)
{
    struct suppress *w = open_store(SUPPRESS_WRITE);
    int held[2];
    char c;

    add(w, "", "first@x.org", "manual", 0);
    assert_int_equal(pipe(held), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct suppress *r = open_store(SUPPRESS_READ);
        suppress_scan(r, NULL, NULL, NULL, 0, hold_cursor, &held[1]);
        _exit(2);
    }
    assert_int_equal(read(held[0], &c, 1), 1);
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    alarm(20); /* a write that blocks forever fails the test */
    assert_int_equal(suppress_recover(w), 0);
    add(w, "", "second@x.org", "manual", 0);
    alarm(0);
    assert_int_equal(suppress_get(w, "", "second@x.org", 1, NULL), SUPPRESS_FOUND);
    suppress_close(w);
}

static void test_reader_missing(void **state)
{
    buf_t path = BUF_INIT, err = BUF_INIT;
    int missing = 0;

    buf_printf(&path, "%s/nothing-here", dir);
    assert_null(suppress_open(path.data, SUPPRESS_READ, &missing, &err));
    assert_int_equal(missing, 1);
    buf_destroy(&path);
    buf_destroy(&err);
}

static void test_sender_scope(void **state)
{
    buf_t b = BUF_INIT;
    suppress_sender_scope("News@Mail.A.com", &b);
    assert_string_equal(b.data, "mail.a.com");
    suppress_sender_scope("", &b);
    assert_string_equal(b.data, "");
    suppress_sender_scope("postmaster", &b);
    assert_string_equal(b.data, "");
    buf_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_handles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_missing, setup, teardown),
        cmocka_unit_test(test_sender_scope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
