/* test_qserve.c - the delivery agents' side of qmgr's connections
 * (common/mail/qserve.c) over a socketpair, with a small agent of the
 * test's own: requests reach run() with their recipient indices, bad ones
 * drop qmgr's connection before anything runs, a held connection serves
 * the next request only after the reply, a qmgr that hangs up orphans the
 * job or is declined, and stop and retire wait for the work. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/mail/qserve.h"
#include "common/util/buf.h"
#include "tests/unit/scripted_peer.h"

#define QID "0123456789ABCDEF0"

static struct event_base *base;
static struct server srv;
static struct server_hooks hooks;
static int peer; /* qmgr's end, blocking */

/* What the test agent saw and does. */
static struct {
    int runs, orphans, finished, jobs;
    size_t idx[8], n;
    int hold;          /* attach a job instead of answering at once */
    struct qserve *qs; /* the held job's connection (NULL: orphaned) */
} ag;

static const char *agent_malformed(const attr_t *req)
{
    return attr_get(req, "nexthop") ? NULL : "missing nexthop";
}

static enum conn_verdict agent_run(struct qserve *qs, const attr_t *req, const size_t *idx,
                                   size_t n, const char **why)
{
    attr_t r = ATTR_INIT;
    ag.runs++;
    ag.n = n < 8 ? n : 8;
    memcpy(ag.idx, idx, ag.n * sizeof(*idx));
    if (ag.hold) {
        ag.jobs++;
        ag.qs = qs;
        qserve_attach(qs, &ag);
        return CONN_OK;
    }
    attr_add(&r, "status", "ok");
    attr_addf(&r, "runs", "%d", ag.runs);
    qserve_reply(qs, &r);
    attr_destroy(&r);
    return CONN_OK;
}

static void agent_orphan(void *job)
{
    ag.orphans++;
    ag.qs = NULL;
}

static int agent_busy(void)
{
    return ag.jobs;
}

static void agent_finish(struct server *s)
{
    ag.finished++;
}

static const struct qserve_ops ops = {
    .agent = "test agent",
    .malformed = agent_malformed,
    .run = agent_run,
    .orphan = agent_orphan,
    .busy = agent_busy,
    .finish = agent_finish,
};

static void start(void)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    memset(&ag, 0, sizeof(ag));
    memset(&srv, 0, sizeof(srv));
    memset(&hooks, 0, sizeof(hooks));
    base = event_base_new();
    srv.base = base;
    srv.spool = ".";
    qserve_hooks(&hooks, &ops);
    hooks.on_accept(&srv, sv[0], 0);
    peer = sv[1];
}

/* The agent finishes its held job, as a real one does at the end. */
static void finish_job(void)
{
    attr_t r = ATTR_INIT;
    attr_add(&r, "status", "ok");
    attr_add(&r, "held", "done");
    qserve_reply(ag.qs, &r);
    attr_destroy(&r);
    ag.jobs--;
    ag.qs = NULL;
    qserve_job_ended();
}

static void put(const char *s)
{
    assert_int_equal(peer_put(peer, s), 0);
}

static void stop(void)
{
    close(peer);
    peer_spin(base, 10); /* the agent sees the hang-up and frees the connection */
    event_base_free(base);
}

static void test_request_runs_with_indices(void **state)
{
    buf_t out = BUF_INIT;
    start();
    put("proto=1\nrequest=deliver\nqueue_id=" QID "\nnexthop=x\nrcpt=0\nrcpt=3\n\n");
    assert_int_equal(peer_take(base, peer, &out, 0), 0);
    assert_int_equal(ag.runs, 1);
    assert_int_equal(ag.n, 2);
    assert_int_equal(ag.idx[0], 0);
    assert_int_equal(ag.idx[1], 3);
    assert_string_equal(buf_str(&out), "status=ok\nruns=1\n\n");
    buf_destroy(&out);
    stop();
}

/* A malformed request: status=fail naming why, the connection closed,
 * run never called, and nothing after it applied. */
static void check_dropped(const char *req, const char *why)
{
    buf_t out = BUF_INIT;
    start();
    put(req);
    put("proto=1\nrequest=deliver\nqueue_id=" QID "\nnexthop=x\nrcpt=0\n\n");
    assert_int_equal(peer_take(base, peer, &out, 1), 1);
    assert_non_null(strstr(buf_str(&out), "status=fail\nreason="));
    assert_non_null(strstr(buf_str(&out), why));
    assert_int_equal(ag.runs, 0);
    buf_destroy(&out);
    stop();
}

static void test_malformed_dropped(void **state)
{
    check_dropped("proto=1\nrequest=deliver\nnexthop=x\nrcpt=0\n\n", "queue_id");
    check_dropped("proto=1\nrequest=deliver\nqueue_id=123\nnexthop=x\nrcpt=0\n\n", "queue_id");
    check_dropped("proto=1\nrequest=deliver\nqueue_id=" QID "\nnexthop=x\n\n", "no recipients");
    check_dropped("proto=1\nrequest=deliver\nqueue_id=" QID "\nnexthop=x\nrcpt=1\nrcpt=-1\n\n",
                  "malformed recipient index");
    check_dropped("proto=1\nrequest=deliver\nqueue_id=" QID "\nnexthop=x\nrcpt=1x\n\n",
                  "malformed recipient index");
    check_dropped("proto=1\nrequest=deliver\nqueue_id=" QID "\nrcpt=0\n\n", "missing nexthop");
}

static void test_unknown_request_declined(void **state)
{
    buf_t out = BUF_INIT;
    start();
    put("proto=1\nrequest=nonsense\n\n");
    assert_int_equal(peer_take(base, peer, &out, 1), 1);
    assert_string_equal(buf_str(&out), "status=fail\nreason=unknown request\n\n");
    assert_int_equal(ag.runs, 0);
    buf_destroy(&out);
    stop();
}

/* A request behind which qmgr has hung up is not run (the next qmgr
 * schedules the message itself). */
static void test_gone_qmgr_not_served(void **state)
{
    buf_t out = BUF_INIT;
    start();
    put("proto=1\nrequest=deliver\nqueue_id=" QID "\nnexthop=x\nrcpt=0\n\n");
    shutdown(peer, SHUT_WR);
    assert_int_equal(peer_take(base, peer, &out, 1), 1);
    assert_string_equal(buf_str(&out), "status=fail\nreason=qmgr went away\n\n");
    assert_int_equal(ag.runs, 0);
    buf_destroy(&out);
    stop();
}

/* While a job runs its connection holds the next request. */
static void test_held_until_reply(void **state)
{
    buf_t out = BUF_INIT;
    start();
    ag.hold = 1;
    put("proto=1\nrequest=deliver\nqueue_id=" QID "\nnexthop=x\nrcpt=0\n\n"
        "proto=1\nrequest=deliver\nqueue_id=" QID "\nnexthop=x\nrcpt=5\n\n");
    peer_take(base, peer, &out, 0);
    assert_int_equal(ag.runs, 1);
    assert_string_equal(buf_str(&out), "");
    ag.hold = 0;
    finish_job();
    peer_take(base, peer, &out, 0);
    assert_int_equal(ag.runs, 2);
    assert_int_equal(ag.idx[0], 5);
    assert_string_equal(buf_str(&out), "status=ok\nheld=done\n\nstatus=ok\nruns=2\n\n");
    buf_destroy(&out);
    stop();
}

/* qmgr hangs up mid-job: the job is orphaned, its end answers nobody. */
static void test_orphaned_job(void **state)
{
    start();
    ag.hold = 1;
    put("proto=1\nrequest=deliver\nqueue_id=" QID "\nnexthop=x\nrcpt=0\n\n");
    peer_spin(base, 10);
    assert_int_equal(ag.runs, 1);
    close(peer);
    peer_spin(base, 10);
    assert_int_equal(ag.orphans, 1);
    assert_null(ag.qs);
    finish_job(); /* qserve_reply(NULL, ...) */
    event_base_free(base);
}

/* Stopping: declined requests, and the exit waits for the running job. */
static void test_stop_waits_for_job(void **state)
{
    buf_t out = BUF_INIT;
    start();
    ag.hold = 1;
    put("proto=1\nrequest=deliver\nqueue_id=" QID "\nnexthop=x\nrcpt=0\n\n");
    peer_spin(base, 10);
    hooks.on_stop(&srv);
    assert_int_equal(ag.finished, 0);
    finish_job();
    assert_int_equal(ag.finished, 1);
    peer_take(base, peer, &out, 0);
    assert_string_equal(buf_str(&out), "status=ok\nheld=done\n\n"); /* flushed */
    buf_destroy(&out);
    close(peer);
    event_base_free(base);
}

/* Retiring: the connection is still served until qmgr hangs up. */
static void test_retire_serves_until_hangup(void **state)
{
    buf_t out = BUF_INIT;
    start();
    hooks.on_retire(&srv);
    put("proto=1\nrequest=deliver\nqueue_id=" QID "\nnexthop=x\nrcpt=0\n\n");
    peer_take(base, peer, &out, 0);
    assert_int_equal(ag.runs, 1);
    assert_int_equal(ag.finished, 0);
    close(peer);
    peer_spin(base, 10);
    assert_int_equal(ag.finished, 1);
    buf_destroy(&out);
    event_base_free(base);
}

/* Stopping (not retiring), a new request is declined. */
static void test_stopping_declines(void **state)
{
    buf_t out = BUF_INIT;
    start();
    ag.hold = 1;
    put("proto=1\nrequest=deliver\nqueue_id=" QID "\nnexthop=x\nrcpt=0\n\n");
    peer_spin(base, 10);
    /* a second connection, opened before the stop */
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    hooks.on_accept(&srv, sv[0], 0);
    hooks.on_stop(&srv);
    int first = peer;
    peer = sv[1];
    put("proto=1\nrequest=deliver\nqueue_id=" QID "\nnexthop=x\nrcpt=0\n\n");
    assert_int_equal(peer_take(base, peer, &out, 1), 1);
    assert_string_equal(buf_str(&out), "status=fail\nreason=test agent is stopping\n\n");
    assert_int_equal(ag.runs, 1);
    close(peer);
    peer = first;
    finish_job();
    assert_int_equal(ag.finished, 1);
    buf_destroy(&out);
    close(peer);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_runs_with_indices),
        cmocka_unit_test(test_malformed_dropped),
        cmocka_unit_test(test_unknown_request_declined),
        cmocka_unit_test(test_gone_qmgr_not_served),
        cmocka_unit_test(test_held_until_reply),
        cmocka_unit_test(test_orphaned_job),
        cmocka_unit_test(test_stop_waits_for_job),
        cmocka_unit_test(test_retire_serves_until_hangup),
        cmocka_unit_test(test_stopping_declines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
