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

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util/buf.h"
#include "common/util/log.h"
#include "smtpd/smtpd_anvil.h"
#include "tests/unit/scripted_peer.h"

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

static void run_until(struct result *r, int n)
{
    for (int k = 0; k < 500 && r->n < n; k++)
        peer_spin(base, 10);
    assert_int_equal(r->n, n);
}

static int take_peer(void)
{
    int fd = peer_accept(base, lfd);
    if (fd < 0)
        fail_msg("the client did not connect");
    return fd;
}

static int logged(const char *what)
{
    return peer_logged(logpath, what);
}

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/test_anvil_client.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/anvil", dir);
    snprintf(logpath, sizeof logpath, "%s/log", dir);
    lfd = peer_listen(path, logpath);
    assert_true(lfd >= 0);
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
    assert_int_equal(peer_read_until(base, fd, &got, "\n\n"), PEER_READ_DONE);
    assert_non_null(strstr(buf_str(&got), "request=connect\n"));
    assert_int_equal(peer_put(fd, answer), 0);
    buf_destroy(&got);
    return fd;
}

/* The peer was dropped: it reads EOF (conn shut its side down). */
static void assert_dropped(struct smtpd_anvil *ac, int fd)
{
    buf_t rest = BUF_INIT;
    assert_int_equal(peer_read_until(base, fd, &rest, "\n\n"), PEER_READ_EOF);
    assert_false(smtpd_anvil_up(ac));
    close(fd);
    peer_spin(base, 20);
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
