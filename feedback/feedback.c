/* feedback.c - the feedback consumer: a delivery agent for the bounce
 * (VERP) domains that reads bounces and complaints instead of delivering
 * them (feedback.h says what the parts do).
 *
 * qmgr keeps connections to private/feedback and sends one
 * request=deliver at a time per connection (proto.h), exactly as it does
 * to the SMTP delivery agent; a connection holds further requests while
 * its job waits for qmgr's answers to the suppression requests. This file
 * owns those connections and the graceful stop: finish the jobs, then
 * exit. Retiring on a reload, it serves the connections it has until qmgr
 * hangs up (as delivery.c explains), at most FB_RETIRE_LINGER seconds. */
#include "feedback/feedback.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "common/mail/conf.h"
#include "common/mail/proto.h"
#include "common/mail/server.h"
#include "common/util/alloc.h"
#include "common/util/attr.h"
#include "common/util/conn.h"
#include "common/util/log.h"

#define FB_RETIRE_LINGER 10

struct fb_qconn {
    struct conn *conn;
    struct fb_job *job; /* the request being served, NULL when idle */
    LIST_ENTRY(fb_qconn) link;
};

int fb_njobs;
static struct server *srv;
static LIST_HEAD(, fb_qconn) qconns = LIST_HEAD_INITIALIZER(qconns);
static int draining, in_request;
static struct event *linger_ev;

static void maybe_exit(void);

static void qconn_decline(struct fb_qconn *qc, const char *reason)
{
    attr_t a = ATTR_INIT;
    attr_add(&a, "status", "fail");
    attr_add(&a, "reason", reason);
    conn_send(qc->conn, &a);
    attr_destroy(&a);
    conn_close(qc->conn);
}

static int parse_idx(const char *v, size_t *out)
{
    char *end;
    unsigned long long n;
    if (!v || *v < '0' || *v > '9')
        return -1;
    n = strtoull(v, &end, 10);
    if (*end)
        return -1;
    *out = (size_t)n;
    return 0;
}

/* A request of a qmgr that a reload replaced (see delivery.c). */
static int qmgr_gone(struct fb_qconn *qc)
{
    char c;
    return recv(conn_fd(qc->conn), &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

static enum conn_verdict qconn_deliver(struct fb_qconn *qc, const attr_t *a, const char **why)
{
    const char *id = attr_get(a, "queue_id"), *v;
    struct fb_job *job;
    size_t pos = 0, idx;

    if (!id || !qid_valid(id)) {
        *why = "missing or malformed queue_id";
        return CONN_DROP;
    }
    if (!attr_get(a, "rcpt")) {
        *why = "no recipients";
        return CONN_DROP;
    }
    if (qmgr_gone(qc)) {
        qconn_decline(qc, "qmgr went away");
        return CONN_OK;
    }
    job = fb_job_new(qc, id);
    while ((v = attr_next(a, "rcpt", &pos)) != NULL) {
        if (parse_idx(v, &idx) < 0) {
            *why = "malformed recipient index";
            fb_job_free(job);
            return CONN_DROP;
        }
        fb_job_add_rcpt(job, idx);
    }
    qc->job = job;
    if (fb_job_start(srv, job, why) < 0) {
        qc->job = NULL;
        fb_job_free(job);
        return CONN_DROP;
    }
    return qc->job ? CONN_HOLD : CONN_OK;
}

static enum conn_verdict qconn_record(struct conn *c, const attr_t *a, void *arg, const char **why)
{
    struct fb_qconn *qc = arg;
    const char *req = attr_get(a, "request");
    enum conn_verdict v;

    if (!req || strcmp(req, "deliver") != 0) {
        qconn_decline(qc, "unknown request");
        return CONN_OK;
    }
    if (srv->stopping && !draining) {
        qconn_decline(qc, "feedback agent is stopping");
        return CONN_OK;
    }
    in_request++;
    v = qconn_deliver(qc, a, why);
    in_request--;
    maybe_exit();
    return v;
}

static void qconn_closed(struct conn *c, const char *why, void *arg)
{
    struct fb_qconn *qc = arg;
    if (qc->job)
        fb_job_orphan(qc->job); /* it finishes; nobody hears of it */
    LIST_REMOVE(qc, link);
    free(qc);
    maybe_exit();
}

void fb_qconn_job_done(struct fb_qconn *qc, const char *id, const struct fb_result *res, size_t n)
{
    attr_t a = ATTR_INIT;

    if (qc == NULL)
        return;
    attr_add(&a, "status", "ok");
    attr_add(&a, "queue_id", id);
    for (size_t k = 0; k < n; k++) {
        attr_addf(&a, "rcpt", "%zu", res[k].idx);
        attr_add(&a, "result", qrcpt_status_name(res[k].status));
        attr_add(&a, "dsn", res[k].dsn);
        attr_add(&a, "reason", res[k].reason);
    }
    attr_add(&a, "dest", "ok");
    conn_send(qc->conn, &a);
    attr_destroy(&a);
    qc->job = NULL;
    conn_resume(qc->conn);
}

/* Called when a job ends too (feedback_job.c decrements fb_njobs). */
static void maybe_exit(void)
{
    struct fb_qconn *qc;

    if (in_request > 0 || !srv->stopping || fb_njobs > 0 || (draining && !LIST_EMPTY(&qconns)))
        return;
    if (linger_ev)
        event_free(linger_ev);
    linger_ev = NULL;
    while ((qc = LIST_FIRST(&qconns)) != NULL) {
        conn_free(qc->conn); /* no on_close */
        LIST_REMOVE(qc, link);
        free(qc);
    }
    bclass_reset();
    server_exit(srv);
}

void fb_job_ended(void)
{
    maybe_exit();
}

static void on_accept(struct server *s, int fd, int idx)
{
    static const struct conn_ops ops = { .on_record = qconn_record, .on_close = qconn_closed };
    static const struct conn_cfg cfg = { .peer = "qmgr", .proto = PROTO_VERSION, .serving = 1 };
    struct fb_qconn *qc = xcalloc(1, sizeof(*qc));
    LIST_INSERT_HEAD(&qconns, qc, link);
    qc->conn = conn_new(s->base, fd, &cfg, &ops, qc);
}

/* The classifier's rules live in the configuration directory: loaded
 * before any chroot; a broken file is a broken configuration. */
static void pre_drop(struct server *s)
{
    buf_t err = BUF_INIT;
    if (bclass_init(&err) < 0)
        log_fatal("%s", buf_str(&err));
    buf_destroy(&err);
}

static void post_drop(struct server *s)
{
    srv = s;
}

static void on_stop(struct server *s)
{
    draining = 0;
    server_stop_accepting(s);
    maybe_exit();
}

static void linger_cb(evutil_socket_t fd, short what, void *arg)
{
    draining = 0;
    maybe_exit();
}

static void on_retire(struct server *s)
{
    struct timeval tv = { FB_RETIRE_LINGER, 0 };
    draining = 1;
    server_stop_accepting(s);
    linger_ev = evtimer_new(s->base, linger_cb, NULL);
    if (linger_ev)
        evtimer_add(linger_ev, &tv);
    else
        draining = 0;
    maybe_exit();
}

int main(int argc, char **argv)
{
    static const struct server_hooks hooks = {
        .pre_drop = pre_drop,
        .post_drop = post_drop,
        .on_accept = on_accept,
        .on_stop = on_stop,
        .on_retire = on_retire,
    };
    return server_main(argc, argv, "feedback", &hooks, NULL);
}
