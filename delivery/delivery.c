/* delivery.c - the SMTP client delivery agent (logs as "smtp", like Postfix).
 *
 * qmgr keeps persistent connections to private/smtp and sends one
 * request=deliver at a time per connection (proto.h); many connections,
 * and therefore many deliveries, run at once in this one event loop. This
 * file owns those connections (common/util/conn: framing, the proto
 * check, the close after the last reply and the one policy for a
 * malformed request live there): check requests, start jobs, send
 * replies, and the graceful stop (finish jobs, QUIT cached connections,
 * exit). A connection holds further requests while its job runs.
 *
 * Retiring on a reload, the agent accepts no new qmgr connection but keeps
 * serving the ones it has until qmgr hangs up (qmgr retires too and does
 * so at once): closing an idle connection itself could cross a request
 * qmgr is sending, which qmgr would have to take for a crash. It leaves
 * once idle with no connection left, or DLV_RETIRE_LINGER seconds after
 * the reload when idle. */
#include "delivery/delivery.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/util/attr.h"
#include "common/util/conn.h"
#include "common/mail/conf.h"
#include "common/mail/metric.h"
#include "common/util/log.h"
#include "common/mail/proto.h"
#include "common/mail/server.h"

struct dlv_state dlv_g;

#define DLV_RETIRE_LINGER 10

static void maybe_exit(void);
static struct event *linger_ev;
/* > 0 while a request is handled: maybe_exit waits for its end (the
 * teardown frees the connection the request came on). */
static int in_request;

struct dlv_qconn {
    struct conn *conn;
    struct dlv_job *job; /* the request being served, NULL when idle */
    LIST_ENTRY(dlv_qconn) link;
};

/* All, so a clean exit can free them. */
static LIST_HEAD(, dlv_qconn) qconns = LIST_HEAD_INITIALIZER(qconns);

/* A request we understand but decline: say why, then hang up. */
static void qconn_decline(struct dlv_qconn *qc, const char *reason)
{
    attr_t a = ATTR_INIT;
    attr_add(&a, "status", "fail");
    attr_add(&a, "reason", reason);
    conn_send(qc->conn, &a);
    attr_destroy(&a);
    conn_close(qc->conn);
}

/* A "rcpt" value, strictly: qmgr is a peer daemon, not the network. */
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

/* Has qmgr hung up behind the request just read? Then it is a request of
 * a qmgr that a reload replaced while the connection waited in the
 * listener's queue: nobody reads the reply, and the next qmgr schedules
 * the message itself, so running it would deliver it twice. (libevent
 * reads data and end-of-file in separate passes: the EOF is still
 * pending in the kernel here.) */
static int qmgr_gone(struct dlv_qconn *qc)
{
    char c;
    return recv(conn_fd(qc->conn), &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* What is wrong with a deliver request (its recipients aside), or NULL. */
static const char *deliver_malformed(const attr_t *a)
{
    const char *id = attr_get(a, "queue_id"), *nh = attr_get(a, "nexthop");

    if (!id || !qid_valid(id))
        return "missing or malformed queue_id";
    if (!nh || !*nh)
        return "missing nexthop";
    if (!attr_get(a, "rcpt"))
        return "no recipients";
    if (dlv_source_check(attr_get(a, "source"), attr_get(a, "helo")) < 0)
        return "malformed source or helo";
    return NULL;
}

/* Start the job of a deliver request. A recipient index that is no
 * number, or names no recipient of the message, makes it malformed. */
static enum conn_verdict qconn_deliver(struct dlv_qconn *qc, const attr_t *a, const char **why)
{
    const char *id = attr_get(a, "queue_id"), *v;
    struct dlv_job *job;
    size_t pos = 0, idx;

    if (qmgr_gone(qc)) {
        log_debug("%s: request of a qmgr that has gone: not delivering", id);
        qconn_decline(qc, "qmgr went away");
        return CONN_OK;
    }
    job = dlv_job_new(qc, id, attr_get(a, "nexthop"));
    if (dlv_job_set_site(job, attr_get(a, "site"), attr_get(a, "site_max_deliveries"),
                         attr_get(a, "site_connect_timeout"),
                         attr_get(a, "site_idle_timeout")) < 0) {
        *why = "malformed site attributes";
        dlv_job_free(job);
        return CONN_DROP;
    }
    dlv_source_set(job, attr_get(a, "source"), attr_get(a, "helo"));
    if (attr_get_ll(a, "attempt", &job->attempt) < 0)
        job->attempt = 0;
    while ((v = attr_next(a, "rcpt", &pos)) != NULL) {
        if (parse_idx(v, &idx) < 0) {
            *why = "malformed recipient index";
            dlv_job_free(job);
            return CONN_DROP;
        }
        dlv_job_add_rcpt(job, idx);
    }
    qc->job = job;
    if (dlv_job_start(job, why) < 0) {
        qc->job = NULL;
        dlv_job_free(job);
        return CONN_DROP;
    }
    /* The job may be over already (an unreadable queue file...). */
    return qc->job ? CONN_HOLD : CONN_OK;
}

/* One request from qmgr; the connection holds further ones while its
 * job runs (conn_resume in dlv_qconn_job_done). */
static enum conn_verdict qconn_record(struct conn *c, const attr_t *a, void *arg, const char **why)
{
    struct dlv_qconn *qc = arg;
    const char *req = attr_get(a, "request");
    enum conn_verdict v = CONN_OK;

    if (!req || strcmp(req, "deliver") != 0) {
        qconn_decline(qc, "unknown request");
        return CONN_OK;
    }
    if ((*why = deliver_malformed(a)) != NULL)
        return CONN_DROP;
    if (dlv_g.srv->stopping && !dlv_g.draining) {
        qconn_decline(qc, "delivery agent is stopping");
        return CONN_OK;
    }
    in_request++;
    v = qconn_deliver(qc, a, why);
    in_request--;
    maybe_exit();
    return v;
}

/* A qmgr that went away mid-job (a reload replaces it) gets no reply; the
 * outcome is in the queue file and the log all the same, and the next
 * qmgr leaves the message alone while the job holds its lock. */
static void qconn_closed(struct conn *c, const char *why, void *arg)
{
    struct dlv_qconn *qc = arg;
    if (qc->job) {
        log_debug("%s: qmgr connection closed during delivery", qc->job->id);
        qc->job->qc = NULL;
    }
    LIST_REMOVE(qc, link);
    free(qc);
    maybe_exit();
}

/* Replies still buffered are small: push them out before exiting (the
 * bufferevent's output is frozen for direct evbuffer_write). */
static void flush_now(struct dlv_qconn *qc)
{
    struct evbuffer *out = conn_output(qc->conn);
    size_t n = evbuffer_get_length(out);
    if (n > 0 && write(conn_fd(qc->conn), evbuffer_pullup(out, -1), n) < 0)
        log_warn("cannot send the last reply to qmgr: %m");
}

static void qconn_free_all(void)
{
    struct dlv_qconn *qc;
    while ((qc = LIST_FIRST(&qconns)) != NULL) {
        flush_now(qc);
        if (qc->job)
            qc->job->qc = NULL;
        conn_free(qc->conn); /* no on_close */
        LIST_REMOVE(qc, link);
        free(qc);
    }
}

static void maybe_exit(void)
{
    if (in_request == 0 && dlv_g.srv->stopping && dlv_g.njobs == 0 &&
        (!dlv_g.draining || LIST_EMPTY(&qconns))) {
        if (linger_ev)
            event_free(linger_ev);
        linger_ev = NULL;
        dlv_cache_flush();
        qconn_free_all();
        dns_free(dlv_g.dns);
        dlv_g.dns = NULL;
        if (dlv_g.tls_ctx)
            SSL_CTX_free(dlv_g.tls_ctx);
        dlv_g.tls_ctx = NULL;
        buf_destroy(&dlv_g.tls_err);
        tls_policy_reset();
        server_exit(dlv_g.srv);
    }
}

void dlv_qconn_job_done(struct dlv_job *job)
{
    struct dlv_qconn *qc = job->qc;
    attr_t a = ATTR_INIT;
    size_t k;

    if (qc && job->source_fail) { /* nothing done: qmgr tries another address */
        attr_add(&a, "status", "source_unavailable");
        attr_add(&a, "queue_id", job->id);
        attr_add(&a, "source", job->source);
        attr_add(&a, "reason", buf_str(&job->lasterr));
        conn_send(qc->conn, &a);
        attr_destroy(&a);
        qc->job = NULL;
        conn_resume(qc->conn);
    } else if (qc) {
        attr_add(&a, "status", "ok");
        attr_add(&a, "queue_id", job->id);
        for (k = 0; k < job->nres; k++) {
            attr_addf(&a, "rcpt", "%zu", job->res[k].idx);
            attr_add(&a, "result", qrcpt_status_name(job->res[k].status));
            attr_add(&a, "dsn", job->res[k].dsn);
            attr_add(&a, "reason", buf_str(&job->res[k].reason));
            if (job->res[k].status != QR_SENT)
                attr_add(&a, "category", bclass_name(job->res[k].cat));
        }
        attr_add(&a, "dest", job->dest_fail ? "fail" : "ok");
        conn_send(qc->conn, &a);
        attr_destroy(&a);
        qc->job = NULL;
        conn_resume(qc->conn); /* a request may already be buffered */
    }
    dlv_job_free(job);
    maybe_exit();
}

static void on_accept(struct server *s, int fd, int idx)
{
    static const struct conn_ops ops = { .on_record = qconn_record, .on_close = qconn_closed };
    static const struct conn_cfg cfg = { .peer = "qmgr", .proto = PROTO_VERSION, .serving = 1 };
    struct dlv_qconn *qc = xcalloc(1, sizeof(*qc));
    LIST_INSERT_HEAD(&qconns, qc, link);
    qc->conn = conn_new(s->base, fd, &cfg, &ops, qc);
}

static void pre_drop(struct server *s)
{
    buf_t err = BUF_INIT;
    /* master.cf service "lmtp": the LMTP client, logging as "lmtp" (Postfix) */
    dlv_g.lmtp = strcmp(s->service, "lmtp") == 0;
    if (dlv_g.lmtp)
        log_set_progname("lmtp");
    dlv_tls_init();
    /* Read before a chroot hides the configuration directory. master
     * refuses to start with broken rules; broken by a later edit, they
     * cost the categories (every failure is "other"), never the mail. */
    if (bclass_init(&err) < 0)
        log_error("%s; every delivery failure is classified \"other\" until it is fixed",
                  buf_str(&err));
    buf_destroy(&err);
}

static void post_drop(struct server *s)
{
    buf_t err = BUF_INIT;
    dlv_g.srv = s;
    metric_client_open(s->base, s->spool);
    dlv_g.dns = dns_new(s->base, conf_str("dns_servers"), &err);
    if (!dlv_g.dns)
        log_fatal("cannot set up DNS: %s", buf_str(&err));
    buf_destroy(&err);
}

static void on_stop(struct server *s)
{
    dlv_g.draining = 0;
    server_stop_accepting(s);
    maybe_exit();
}

static void linger_cb(evutil_socket_t fd, short what, void *arg)
{
    dlv_g.draining = 0;
    maybe_exit();
}

static void on_retire(struct server *s)
{
    struct timeval tv = { DLV_RETIRE_LINGER, 0 };
    dlv_g.draining = 1;
    server_stop_accepting(s);
    linger_ev = evtimer_new(s->base, linger_cb, NULL);
    if (linger_ev)
        evtimer_add(linger_ev, &tv);
    else
        dlv_g.draining = 0;
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
    return server_main(argc, argv, "smtp", &hooks, &dlv_g);
}
