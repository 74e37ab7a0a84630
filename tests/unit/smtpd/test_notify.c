/* test_notify.c - smtpd's notifications to qmgr (smtpd/smtpd_notify.c)
 * against a scripted qmgr on <spool>/private/qmgr: records go out, a
 * refusal is logged and kept apart from a malformed answer (conn's one
 * policy: logged, dropped), and records the connection had not written
 * when it broke are sent again, in order, after the reconnect. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util/buf.h"
#include "common/util/log.h"
#include "common/mail/server.h"
#include "smtpd/smtpd.h"
#include "tests/unit/scripted_peer.h"

#define MANY 40000 /* more than a UNIX socket buffer holds */

static struct event_base *base;
static struct server srv;
static char dir[64], path[128], logpath[128];
static int lfd = -1;

/* The notifier's connection, seen from qmgr's end. The first reconnect
 * after a failure waits for the retry timer (1 s). */
static int take_peer(void)
{
    int fd = peer_accept(base, lfd);
    if (fd < 0)
        fail_msg("smtpd did not connect");
    return fd;
}

static enum peer_read read_until(int fd, buf_t *got, const char *until)
{
    return peer_read_until(base, fd, got, until);
}

static const char *id(int k)
{
    static char b[32];
    snprintf(b, sizeof b, "%017X", k);
    return b;
}

static const char *rec(int k)
{
    static char b[96];
    snprintf(b, sizeof b, "proto=1\nrequest=new\nqueue_id=%s\n\n", id(k));
    return b;
}

/* One process, one notifier: every test runs on the same one. */
static int setup(void **state)
{
    char priv[96];
    snprintf(dir, sizeof dir, "/tmp/test_notify.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(priv, sizeof priv, "%s/private", dir);
    assert_int_equal(mkdir(priv, 0700), 0);
    snprintf(path, sizeof path, "%s/private/qmgr", dir);
    snprintf(logpath, sizeof logpath, "%s/log", dir);
    lfd = peer_listen(path, logpath);
    assert_true(lfd >= 0);
    base = event_base_new();
    srv.base = base;
    srv.spool = dir;
    smtpd_notify_init(&srv);
    return 0;
}

static int teardown(void **state)
{
    char priv[96];
    snprintf(priv, sizeof priv, "%s/private", dir);
    close(lfd);
    unlink(path);
    unlink(logpath);
    rmdir(priv);
    rmdir(dir);
    return 0;
}

/* A notification, a refusal (kept apart: logged, the connection stays
 * until qmgr closes it), then an answer qmgr never gives: dropped. */
static void test_refusal_and_malformed_answer(void **state)
{
    buf_t got = BUF_INIT;
    smtpd_notify_new(id(1));
    int fd = take_peer();
    assert_int_equal(read_until(fd, &got, "\n\n"), PEER_READ_DONE);
    assert_string_equal(buf_str(&got), rec(1));
    assert_int_equal(peer_put(fd, "status=fail\nreason=unsupported protocol version\n\n"), 0);
    peer_spin(base, 50);
    assert_true(peer_logged(logpath, "qmgr refused a notification: unsupported protocol version"));
    smtpd_notify_new(id(2));
    buf_reset(&got);
    assert_int_equal(read_until(fd, &got, "\n\n"), PEER_READ_DONE);
    assert_string_equal(buf_str(&got), rec(2));
    assert_int_equal(peer_put(fd, "status=ok\n\n"), 0);
    buf_reset(&got);
    assert_int_equal(read_until(fd, &got, "\n\n"), PEER_READ_EOF); /* dropped: EOF */
    assert_true(peer_logged(logpath, "malformed record from qmgr: unexpected record"));
    close(fd);
    peer_spin(base, 50);
    /* the next notification connects again */
    smtpd_notify_new(id(3));
    fd = take_peer();
    buf_reset(&got);
    assert_int_equal(read_until(fd, &got, "\n\n"), PEER_READ_DONE);
    assert_string_equal(buf_str(&got), rec(3));
    close(fd);
    peer_spin(base, 50);
    buf_destroy(&got);
}

/* qmgr stops reading, then goes away: what the connection had not
 * written is sent again on the next connection, in order, up to the
 * last record; nothing after the last is invented. */
static void test_unwritten_records_resent(void **state)
{
    buf_t got = BUF_INIT;
    smtpd_notify_new(id(100));
    int fd = take_peer();
    assert_int_equal(read_until(fd, &got, "\n\n"), PEER_READ_DONE);
    assert_string_equal(buf_str(&got), rec(100));
    for (int k = 101; k <= 100 + MANY; k++)
        smtpd_notify_new(id(k));
    peer_spin(base, 50);
    close(fd); /* unread data: a reset for the writer */
    fd = take_peer();
    buf_reset(&got);
    assert_int_equal(read_until(fd, &got, rec(100 + MANY)), PEER_READ_DONE);
    /* a run of whole records, consecutive, ending with the last */
    const char *p = buf_str(&got);
    int first = (int)strtol(strstr(p, "queue_id=") + 9, NULL, 16);
    assert_true(first > 100 && first <= 100 + MANY);
    for (int k = first; k <= 100 + MANY; k++) {
        size_t n = strlen(rec(k));
        if (strncmp(p, rec(k), n) != 0)
            fail_msg("record %d out of place", k);
        p += n;
    }
    assert_int_equal(*p, '\0');
    close(fd);
    peer_spin(base, 50);
    buf_destroy(&got);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as server_main does in every daemon */
    log_init("test_notify");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusal_and_malformed_answer),
        cmocka_unit_test(test_unwritten_records_resent),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
