/* test_anvil_client.c - smtpd's anvil client (smtpd/smtpd_anvil.c) against
 * a scripted peer that answers wrongly: a reply to no request, an
 * undecodable record, a reply without a status. Each is conn's one policy
 * (logged "malformed record from ...", connection dropped, nothing of it
 * applied); the client goes down like in an outage, what is pending
 * completes fail-open, and the next request after the retry delay gets a
 * fresh connection. (The well-behaved service is in anvil/test_anvil.c.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <event2/event.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util/buf.h"
#include "common/util/ipc.h"
#include "common/util/log.h"
#include "smtpd/smtpd_anvil.h"

static struct event_base *base;
static char dir[64], path[128], logpath[128];
static int lfd = -1;

struct result {
    int n;
    struct anvil_counts c[8];
};

static void on_counts(const struct anvil_counts *c, void *arg)
{
    struct result *r = arg;
    assert_true(r->n < 8);
    r->c[r->n++] = *c;
}

static void spin(int ms)
{
    struct timeval tv = { 0, ms * 1000 };
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static void run_until(struct result *r, int n)
{
    for (int k = 0; k < 500 && r->n < n; k++)
        spin(10);
    assert_int_equal(r->n, n);
}

/* The client's connection, seen from the service's end (blocking). */
static int take_peer(void)
{
    for (int k = 0; k < 500; k++) {
        int fd = accept(lfd, NULL, NULL);
        if (fd >= 0)
            return fd;
        spin(10);
    }
    fail_msg("the client did not connect");
    return -1;
}

/* Read until one whole record ("\n\n") or EOF: 0, 1 on EOF, -1 when
 * nothing more comes for a few seconds. */
static int read_record(int fd, buf_t *got)
{
    char b[1024];
    int idle = 0;
    while (got->len < 2 || strcmp(got->data + got->len - 2, "\n\n") != 0) {
        struct pollfd p = { fd, POLLIN, 0 };
        spin(5);
        if (poll(&p, 1, 20) <= 0) {
            if (++idle > 200)
                return -1;
            continue;
        }
        ssize_t n = read(fd, b, sizeof b);
        if (n <= 0)
            return 1;
        buf_append(got, b, (size_t)n);
    }
    return 0;
}

static void put(int fd, const char *s)
{
    assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

static int logged(const char *what)
{
    char b[8192];
    FILE *f = fopen(logpath, "r");
    size_t n = f ? fread(b, 1, sizeof b - 1, f) : 0;
    if (f)
        fclose(f);
    b[n] = '\0';
    return strstr(b, what) != NULL;
}

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/test_anvil_client.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/anvil", dir);
    snprintf(logpath, sizeof logpath, "%s/log", dir);
    assert_int_equal(log_open(logpath), 0);
    lfd = ipc_listen_unix(path, 0600, 16);
    assert_true(lfd >= 0);
    ipc_nonblock(lfd, 1);
    base = event_base_new();
    return 0;
}

static int teardown(void **state)
{
    event_base_free(base);
    close(lfd);
    unlink(path);
    unlink(logpath);
    rmdir(dir);
    return 0;
}

/* One request answered by the scripted peer with `answer`; returns the
 * peer's descriptor (the client's request has been read). */
static int ask(struct smtpd_anvil *ac, struct result *r, const char *answer)
{
    buf_t got = BUF_INIT;
    smtpd_anvil_connect(ac, "smtp", "192.0.2.1", on_counts, r);
    int fd = take_peer();
    assert_int_equal(read_record(fd, &got), 0);
    assert_non_null(strstr(buf_str(&got), "request=connect\n"));
    put(fd, answer);
    buf_destroy(&got);
    return fd;
}

/* The peer was dropped: it reads EOF (conn shut its side down). */
static void assert_dropped(struct smtpd_anvil *ac, int fd)
{
    buf_t rest = BUF_INIT;
    assert_int_equal(read_record(fd, &rest), 1);
    assert_false(smtpd_anvil_up(ac));
    close(fd);
    spin(20);
    buf_destroy(&rest);
}

static void test_reply_to_no_request(void **state)
{
    struct result r = { 0 };
    struct smtpd_anvil *ac = smtpd_anvil_new(base, path);
    smtpd_anvil_set_retry(ac, 3600);
    int fd = ask(ac, &r, "status=ok\ncount=1\nrate=1\n\nstatus=ok\ncount=7\n\n");
    run_until(&r, 1);
    assert_int_equal(r.c[0].count, 1);
    assert_int_equal(r.c[0].unavailable, 0);
    assert_dropped(ac, fd);
    assert_true(logged("malformed record from anvil service "));
    assert_true(logged(": reply to no request; dropping the connection"));
    /* down until the retry delay is over: fail-open, no connection */
    smtpd_anvil_lookup(ac, "smtp", "192.0.2.1", on_counts, &r);
    run_until(&r, 2);
    assert_int_equal(r.c[1].unavailable, 1);
    assert_int_equal(accept(lfd, NULL, NULL), -1);
    smtpd_anvil_free(ac);
}

static void test_undecodable_reply(void **state)
{
    struct result r = { 0 };
    struct smtpd_anvil *ac = smtpd_anvil_new(base, path);
    int fd = ask(ac, &r, "no equals sign here\n\n");
    run_until(&r, 1);
    assert_int_equal(r.c[0].unavailable, 1); /* pending: fail-open */
    assert_int_equal(r.c[0].count, 0);
    assert_dropped(ac, fd);
    assert_true(logged("malformed record from anvil service "));
    smtpd_anvil_free(ac);
}

static void test_reply_without_status(void **state)
{
    struct result r = { 0 };
    struct smtpd_anvil *ac = smtpd_anvil_new(base, path);
    smtpd_anvil_set_retry(ac, 0);
    int fd = ask(ac, &r, "count=5\nrate=5\n\n");
    run_until(&r, 1);
    assert_int_equal(r.c[0].unavailable, 1); /* its count is not taken */
    assert_int_equal(r.c[0].count, 0);
    assert_dropped(ac, fd);
    assert_true(logged(": reply without a status; dropping the connection"));
    /* the next request connects again and is answered */
    fd = ask(ac, &r, "status=ok\ncount=2\nrate=2\n\n");
    run_until(&r, 2);
    assert_int_equal(r.c[1].unavailable, 0);
    assert_int_equal(r.c[1].count, 2);
    assert_true(smtpd_anvil_up(ac));
    assert_true(logged("connected again"));
    close(fd);
    smtpd_anvil_free(ac);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as server_main does in every daemon */
    log_init("test_anvil_client");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reply_to_no_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_undecodable_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_without_status, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
