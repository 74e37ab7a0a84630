/* test_conn.c - the record-protocol connection (common/util/conn.c) over a
 * socketpair: framing across writes, the proto check, the one policy for a
 * malformed record (status=fail, logged, closed, nothing applied), hold and
 * resume, close after the last reply without a reset, a callback freeing
 * its own connection, and a peer that does not read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util/buf.h"
#include "common/util/conn.h"
#include "tests/unit/scripted_peer.h"

static struct event_base *base;
static int peer; /* the other end, blocking */
static struct conn *conn;

struct seen {
    int records, closed, drained;
    char last[64];
    const char *close_why;
    int hold_first;  /* on_record returns CONN_HOLD for record 1 */
    int drop_on;     /* CONN_DROP on a record with bad=1 */
    int free_in_cb;  /* conn_free from inside on_record */
    int close_after; /* conn_close after answering this record */
};
static struct seen seen;

static enum conn_verdict on_record(struct conn *c, const attr_t *rec, void *arg, const char **why)
{
    struct seen *s = arg;
    s->records++;
    str_lcpy(s->last, attr_get_def(rec, "n", ""), sizeof(s->last));
    if (s->drop_on && attr_get(rec, "bad")) {
        *why = "record marked bad";
        return CONN_DROP;
    }
    if (s->free_in_cb) {
        conn_free(c);
        conn = NULL;
        return CONN_OK;
    }
    attr_t r = ATTR_INIT;
    attr_add(&r, "status", "ok");
    attr_add(&r, "n", s->last);
    conn_send(c, &r);
    attr_destroy(&r);
    if (s->close_after && s->records == s->close_after)
        conn_close(c);
    return (s->hold_first && s->records == 1) ? CONN_HOLD : CONN_OK;
}

static void on_close(struct conn *c, const char *why, void *arg)
{
    struct seen *s = arg;
    s->closed++;
    s->close_why = why;
    conn = NULL;
}

static void on_drained(struct conn *c, void *arg)
{
    ((struct seen *)arg)->drained++;
}

static const struct conn_ops ops = { on_record, on_close, on_drained };

static void start(int serving, const char *proto, size_t output_max)
{
    int sv[2];
    struct conn_cfg cfg = { "test peer", proto, serving, output_max };
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    memset(&seen, 0, sizeof(seen));
    base = event_base_new();
    conn = conn_new(base, sv[0], &cfg, &ops, &seen);
    peer = sv[1];
}

static void stop(void)
{
    if (conn)
        conn_free(conn);
    conn = NULL;
    close(peer);
    event_base_free(base);
}

static void spin(int ms)
{
    peer_spin(base, ms);
}

static void put(const char *s)
{
    assert_int_equal(write(peer, s, strlen(s)), (ssize_t)strlen(s));
}

/* Everything the conn wrote until EOF (or a pause), in out. Returns 1 on EOF,
 * -1 on a reset. */
static int take(buf_t *out, int wait_eof)
{
    return peer_take(base, peer, out, wait_eof);
}

static void test_framing_across_writes(void **state)
{
    buf_t out = BUF_INIT;
    start(1, "1", 0);
    put("proto=1\nn=a");
    spin(10);
    assert_int_equal(seen.records, 0);
    put("bc\n\nproto=1\nn=2\n");
    spin(10);
    assert_int_equal(seen.records, 1);
    put("\n");
    spin(10);
    assert_int_equal(seen.records, 2);
    assert_string_equal(seen.last, "2");
    take(&out, 0);
    assert_string_equal(buf_str(&out), "status=ok\nn=abc\n\nstatus=ok\nn=2\n\n");
    assert_true(seen.drained >= 1);
    buf_destroy(&out);
    stop();
}

/* The policy: the serving end answers status=fail, logs, closes; the
 * peer reads that reply and then EOF (no reset); what followed is never
 * applied. */
static void check_dropped(const char *input, const char *reason_part)
{
    buf_t out = BUF_INIT;
    start(1, "1", 0);
    put(input);
    put("proto=1\nn=after\n\n");
    int eof = take(&out, 1);
    assert_int_equal(eof, 1);
    assert_non_null(strstr(buf_str(&out), "status=fail\nreason="));
    assert_non_null(strstr(buf_str(&out), reason_part));
    assert_null(strstr(buf_str(&out), "n=after"));
    shutdown(peer, SHUT_WR);
    spin(20);
    assert_int_equal(seen.closed, 1);
    assert_non_null(seen.close_why);
    buf_destroy(&out);
    stop();
}

static void test_malformed_dropped(void **state)
{
    check_dropped("no equals sign\n\n", "");
    check_dropped("n=x\n\n", "proto");          /* no proto= */
    check_dropped("proto=9\nn=x\n\n", "proto"); /* another version */
}

static void test_handler_refusal_dropped(void **state)
{
    buf_t out = BUF_INIT;
    start(1, "1", 0);
    seen.drop_on = 1;
    put("proto=1\nn=1\n\nproto=1\nbad=1\n\nproto=1\nn=3\n\n");
    assert_int_equal(take(&out, 1), 1);
    assert_int_equal(seen.records, 2); /* the third is never applied */
    assert_non_null(strstr(buf_str(&out), "status=ok\nn=1\n\n"));
    assert_non_null(strstr(buf_str(&out), "reason=record marked bad"));
    buf_destroy(&out);
    stop();
}

static void test_client_end_sends_nothing_back(void **state)
{
    buf_t out = BUF_INIT;
    start(0, NULL, 0);
    seen.drop_on = 1;
    put("bad=1\n\n");
    assert_int_equal(take(&out, 1), 1);
    assert_string_equal(buf_str(&out), "");
    buf_destroy(&out);
    stop();
}

static void test_hold_and_resume(void **state)
{
    buf_t out = BUF_INIT;
    start(1, "1", 0);
    seen.hold_first = 1;
    put("proto=1\nn=1\n\nproto=1\nn=2\n\n");
    spin(20);
    assert_int_equal(seen.records, 1);
    conn_resume(conn);
    assert_int_equal(seen.records, 1); /* from the loop, not inside the call */
    spin(20);
    assert_int_equal(seen.records, 2);
    buf_destroy(&out);
    stop();
}

static void test_close_after_last_reply(void **state)
{
    buf_t out = BUF_INIT;
    start(1, "1", 0);
    seen.close_after = 1;
    /* more input queued behind: closing with unread input must not reset */
    put("proto=1\nn=1\n\nproto=1\nn=2\n\n");
    assert_int_equal(take(&out, 1), 1);
    assert_string_equal(buf_str(&out), "status=ok\nn=1\n\n");
    assert_int_equal(seen.closed, 0); /* lingers for our EOF */
    close(peer);
    peer = open("/dev/null", O_RDONLY);
    spin(20);
    assert_int_equal(seen.closed, 1);
    assert_null(seen.close_why);
    buf_destroy(&out);
    stop();
}

static void test_free_inside_callback(void **state)
{
    start(1, "1", 0);
    seen.free_in_cb = 1;
    put("proto=1\nn=1\n\nproto=1\nn=2\n\n");
    spin(20);
    assert_int_equal(seen.records, 1);
    assert_null(conn);
    stop();
}

static void test_peer_closes(void **state)
{
    start(0, NULL, 0);
    shutdown(peer, SHUT_WR);
    spin(20);
    assert_int_equal(seen.closed, 1);
    assert_string_equal(seen.close_why, "connection closed");
    stop();
}

static void test_peer_not_reading(void **state)
{
    start(1, "1", 1024);
    int small = 4096;
    setsockopt(peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    for (int i = 0; i < 2000 && conn && !conn_closing(conn); i++) {
        put("proto=1\nn=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n\n");
        spin(1);
    }
    assert_true(conn == NULL || conn_closing(conn));
    stop();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_framing_across_writes),
        cmocka_unit_test(test_malformed_dropped),
        cmocka_unit_test(test_handler_refusal_dropped),
        cmocka_unit_test(test_client_end_sends_nothing_back),
        cmocka_unit_test(test_hold_and_resume),
        cmocka_unit_test(test_close_after_last_reply),
        cmocka_unit_test(test_free_inside_callback),
        cmocka_unit_test(test_peer_closes),
        cmocka_unit_test(test_peer_not_reading),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
