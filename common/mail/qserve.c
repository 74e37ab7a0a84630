/* qserve.c - the delivery agents' side of qmgr's connections (qserve.h):
 * check requests, hand them to the agent, hold the connection while a job
 * runs, reply, and the graceful stop and retire. One copy for delivery,
 * feedback and the final delivery agents. */
#include "common/mail/qserve.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/mail/proto.h"
#include "common/mail/qfile.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

struct qserve {
    struct conn *conn;
    void *job; /* the request being served, NULL when idle */
    LIST_ENTRY(qserve) link;
};

static const struct qserve_ops *g_ops;
static struct server *g_srv;
/* All connections, so a clean exit can free them. */
static LIST_HEAD(, qserve) qconns = LIST_HEAD_INITIALIZER(qconns);
static int draining;   /* retiring: serve qmgr until it hangs up */
static int in_request; /* > 0 while run() works: no exit under it */
static int exited;
static struct event *linger_ev;

static void maybe_exit(void);

/* A request we understand but decline: say why, then hang up. */
static void decline(struct qserve *qs, const char *reason)
{
    attr_t a = ATTR_INIT;
    attr_add(&a, "status", "fail");
    attr_add(&a, "reason", reason);
    conn_send(qs->conn, &a);
    attr_destroy(&a);
    conn_close(qs->conn);
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

/* Every recipient index of req into *idx (n of them), or -1. */
static int parse_rcpts(const attr_t *req, size_t **idx, size_t *n)
{
    const char *v;
    size_t pos = 0, k;

    *idx = NULL;
    *n = 0;
    while ((v = attr_next(req, "rcpt", &pos)) != NULL) {
        if (parse_idx(v, &k) < 0) {
            free(*idx);
            *idx = NULL;
            return -1;
        }
        *idx = xrealloc(*idx, (*n + 1) * sizeof(**idx));
        (*idx)[(*n)++] = k;
    }
    return 0;
}

/* Has qmgr hung up behind the request just read? (libevent reads data
 * and end-of-file in separate passes: the EOF is still pending in the
 * kernel here.) */
static int qmgr_gone(struct qserve *qs)
{
    char c;
    return recv(conn_fd(qs->conn), &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* What is wrong with a deliver request, or NULL. */
static const char *request_malformed(const attr_t *req)
{
    const char *id = attr_get(req, "queue_id");

    if (!id || !qid_valid(id))
        return "missing or malformed queue_id";
    if (!attr_get(req, "rcpt"))
        return "no recipients";
    return g_ops->malformed ? g_ops->malformed(req) : NULL;
}

static enum conn_verdict run_request(struct qserve *qs, const attr_t *req, const char **why)
{
    enum conn_verdict v;
    size_t *idx, n;

    if (qmgr_gone(qs)) {
        log_debug("%s: request of a qmgr that has gone: not delivering", attr_get(req, "queue_id"));
        decline(qs, "qmgr went away");
        return CONN_OK;
    }
    if (parse_rcpts(req, &idx, &n) < 0) {
        *why = "malformed recipient index";
        return CONN_DROP;
    }
    v = g_ops->run(qs, req, idx, n, why);
    free(idx);
    if (v == CONN_DROP) {
        qs->job = NULL; /* the agent freed it */
        return CONN_DROP;
    }
    /* The job may be over already (an unreadable queue file...). */
    return qs->job ? CONN_HOLD : CONN_OK;
}

/* One request from qmgr; the connection holds further ones while its
 * job runs (conn_resume in qserve_reply). */
static enum conn_verdict on_record(struct conn *c, const attr_t *req, void *arg, const char **why)
{
    struct qserve *qs = arg;
    const char *r = attr_get(req, "request");
    enum conn_verdict v;

    if (!r || strcmp(r, "deliver") != 0) {
        decline(qs, "unknown request");
        return CONN_OK;
    }
    if ((*why = request_malformed(req)) != NULL)
        return CONN_DROP;
    if (g_srv->stopping && !draining) {
        char reason[128];
        snprintf(reason, sizeof(reason), "%s is stopping", g_ops->agent);
        decline(qs, reason);
        return CONN_OK;
    }
    in_request++;
    v = run_request(qs, req, why);
    in_request--;
    maybe_exit();
    return v;
}

/* A qmgr that went away mid-job (a reload replaces it) gets no reply; the
 * outcome is in the queue file and the log all the same, and the next
 * qmgr leaves the message alone while the job holds its lock. */
static void on_close(struct conn *c, const char *why, void *arg)
{
    struct qserve *qs = arg;
    if (qs->job && g_ops->orphan)
        g_ops->orphan(qs->job);
    LIST_REMOVE(qs, link);
    free(qs);
    maybe_exit();
}

void qserve_attach(struct qserve *qs, void *job)
{
    qs->job = job;
}

void qserve_reply(struct qserve *qs, const attr_t *reply)
{
    if (qs == NULL)
        return;
    conn_send(qs->conn, reply);
    qs->job = NULL;
    conn_resume(qs->conn); /* a request may already be buffered */
}

void qserve_job_ended(void)
{
    maybe_exit();
}

/* Replies still buffered are small: push them out before exiting (the
 * bufferevent's output is frozen for direct evbuffer_write). */
static void flush_now(struct qserve *qs)
{
    struct evbuffer *out = conn_output(qs->conn);
    size_t n = evbuffer_get_length(out);
    if (n > 0 && write(conn_fd(qs->conn), evbuffer_pullup(out, -1), n) < 0)
        log_warn("cannot send the last reply to qmgr: %m");
}

static void free_all(void)
{
    struct qserve *qs;
    while ((qs = LIST_FIRST(&qconns)) != NULL) {
        flush_now(qs);
        if (qs->job && g_ops->orphan)
            g_ops->orphan(qs->job);
        conn_free(qs->conn); /* no on_close */
        LIST_REMOVE(qs, link);
        free(qs);
    }
}

static void maybe_exit(void)
{
    if (exited || in_request > 0 || !g_srv || !g_srv->stopping || (g_ops->busy && g_ops->busy()) ||
        (draining && !LIST_EMPTY(&qconns)))
        return;
    exited = 1;
    if (linger_ev)
        event_free(linger_ev);
    linger_ev = NULL;
    free_all();
    if (g_ops->finish)
        g_ops->finish(g_srv);
    server_exit(g_srv);
}

static void on_accept(struct server *s, int fd, int idx)
{
    static const struct conn_ops ops = { .on_record = on_record, .on_close = on_close };
    static const struct conn_cfg cfg = { .peer = "qmgr", .proto = PROTO_VERSION, .serving = 1 };
    struct qserve *qs = xcalloc(1, sizeof(*qs));
    g_srv = s;
    LIST_INSERT_HEAD(&qconns, qs, link);
    qs->conn = conn_new(s->base, fd, &cfg, &ops, qs);
}

static void on_stop(struct server *s)
{
    g_srv = s;
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
    struct timeval tv = { QSERVE_RETIRE_LINGER, 0 };
    g_srv = s;
    draining = 1;
    server_stop_accepting(s);
    if (!linger_ev)
        linger_ev = evtimer_new(s->base, linger_cb, NULL);
    if (linger_ev)
        evtimer_add(linger_ev, &tv);
    else
        draining = 0;
    maybe_exit();
}

void qserve_hooks(struct server_hooks *h, const struct qserve_ops *ops)
{
    g_ops = ops;
    exited = draining = 0;
    h->on_accept = on_accept;
    h->on_stop = on_stop;
    h->on_retire = on_retire;
}
