/* delivery.c - the SMTP client delivery agent (logs as "smtp", like Postfix).
 *
 * qmgr keeps persistent connections to private/smtp and sends one
 * request=deliver at a time per connection (proto.h); many connections,
 * and therefore many deliveries, run at once in this one event loop. This
 * file owns those connections: parse requests, start jobs, send replies,
 * and the graceful stop (finish jobs, QUIT cached connections, exit).
 *
 * Retiring on a reload, the agent accepts no new qmgr connection but keeps
 * serving the ones it has until qmgr hangs up (qmgr retires too and does
 * so at once): closing an idle connection itself could cross a request
 * qmgr is sending, which qmgr would have to take for a crash. It leaves
 * once idle with no connection left, or DL_RETIRE_LINGER seconds after
 * the reload when idle. */
#include "delivery/delivery.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/util/attr.h"
#include "common/mail/conf.h"
#include "common/util/log.h"
#include "common/mail/proto.h"
#include "common/mail/server.h"

struct dl_state dl;

#define DL_RETIRE_LINGER 10

static void maybe_exit(void);
static struct event *linger_ev;

struct qconn {
    struct bufferevent *bev;
    struct event *again;  /* look at buffered requests after a job */
    struct job *job;
    int closing;          /* reply written, close when flushed */
    struct qconn *prev, *next;
};

static struct qconn *qconns; /* all, so a clean exit can free them */

static void qconn_free(struct qconn *qc)
{
    if (qc->prev)
        qc->prev->next = qc->next;
    else
        qconns = qc->next;
    if (qc->next)
        qc->next->prev = qc->prev;
    if (qc->job)
        qc->job->qc = NULL;
    bufferevent_free(qc->bev);
    event_free(qc->again);
    free(qc);
}

static void qconn_reply_fail(struct qconn *qc, const char *reason)
{
    attr_t a = ATTR_INIT;
    attr_add(&a, "status", "fail");
    attr_add(&a, "reason", reason);
    attr_to_evbuffer(bufferevent_get_output(qc->bev), &a);
    attr_destroy(&a);
    qc->closing = 1;
    bufferevent_disable(qc->bev, EV_READ);
}

/* Parse "rcpt" values strictly: qmgr is a peer daemon, not the network. */
static size_t parse_idx(const char *id, const char *v)
{
    char *end;
    unsigned long long n;
    if (!v || !*v || *v == '-' || *v == '+')
        log_panic("%s: malformed rcpt index \"%s\" from qmgr", id, v ? v : "");
    n = strtoull(v, &end, 10);
    if (*end)
        log_panic("%s: malformed rcpt index \"%s\" from qmgr", id, v);
    return (size_t)n;
}

/* Has qmgr hung up behind the request just read? Then it is a request of
 * a qmgr that a reload replaced while the connection waited in the
 * listener's queue: nobody reads the reply, and the next qmgr schedules
 * the message itself, so running it would deliver it twice. (libevent
 * reads data and end-of-file in separate passes: the EOF is still
 * pending in the kernel here.) */
static int qmgr_gone(struct qconn *qc)
{
    char c;
    return recv(bufferevent_getfd(qc->bev), &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

static void qconn_request(struct qconn *qc, const attr_t *a)
{
    const char *proto = attr_get(a, "proto"), *req = attr_get(a, "request");
    const char *id = attr_get(a, "queue_id"), *nh = attr_get(a, "nexthop"), *v;
    struct job *job;
    size_t pos = 0;

    if (!proto || strcmp(proto, PROTO_VERSION) != 0) {
        qconn_reply_fail(qc, "unsupported protocol version");
        return;
    }
    if (!req || strcmp(req, "deliver") != 0) {
        qconn_reply_fail(qc, "unknown request");
        return;
    }
    if (!id || !qid_valid(id) || !nh || !*nh || !attr_get(a, "rcpt"))
        log_panic("malformed deliver request from qmgr (queue_id=%s nexthop=%s)", id ? id : "",
                  nh ? nh : "");
    if (dl.srv->stopping && !dl.draining) {
        qconn_reply_fail(qc, "delivery agent is stopping");
        return;
    }
    if (qmgr_gone(qc)) {
        log_debug("%s: request of a qmgr that has gone: not delivering", id);
        qconn_reply_fail(qc, "qmgr went away");
        return;
    }
    job = job_new(qc, id, nh);
    while ((v = attr_next(a, "rcpt", &pos)) != NULL)
        job_add_rcpt(job, parse_idx(id, v));
    qc->job = job;
    job_start(job);
}

static void qconn_process(struct qconn *qc)
{
    attr_t a = ATTR_INIT;
    const char *err = NULL;
    int rc;

    while (!qc->job && !qc->closing) {
        rc = attr_from_evbuffer(bufferevent_get_input(qc->bev), &a, &err);
        if (rc == 0)
            break;
        if (rc < 0)
            log_panic("malformed record from qmgr: %s", err ? err : "?");
        qconn_request(qc, &a);
    }
    attr_destroy(&a);
}

static void qconn_read_cb(struct bufferevent *bev, void *arg)
{
    qconn_process(arg);
}

static void qconn_again_cb(evutil_socket_t fd, short what, void *arg)
{
    qconn_process(arg);
}

static void qconn_write_cb(struct bufferevent *bev, void *arg)
{
    struct qconn *qc = arg;
    if (qc->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        qconn_free(qc);
        maybe_exit();
    }
}

/* A qmgr that went away mid-job (a reload replaces it) gets no reply; the
 * outcome is in the queue file and the log all the same, and the next
 * qmgr leaves the message alone while the job holds its lock. */
static void qconn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct qconn *qc = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (qc->job)
            log_debug("%s: qmgr connection closed during delivery", qc->job->id);
        qconn_free(qc);
        maybe_exit();
    }
}

/* Replies still buffered are small: push them out before exiting (the
 * bufferevent's output is frozen for direct evbuffer_write). */
static void flush_now(struct qconn *qc)
{
    struct evbuffer *out = bufferevent_get_output(qc->bev);
    size_t n = evbuffer_get_length(out);
    if (n > 0 && write(bufferevent_getfd(qc->bev), evbuffer_pullup(out, -1), n) < 0)
        log_warn("cannot send the last reply to qmgr: %m");
}

static void maybe_exit(void)
{
    if (dl.srv->stopping && dl.njobs == 0 && (!dl.draining || qconns == NULL)) {
        if (linger_ev)
            event_free(linger_ev);
        linger_ev = NULL;
        cache_flush();
        while (qconns) {
            flush_now(qconns);
            qconn_free(qconns);
        }
        dns_free(dl.dns);
        dl.dns = NULL;
        if (dl.tls_ctx)
            SSL_CTX_free(dl.tls_ctx);
        dl.tls_ctx = NULL;
        buf_destroy(&dl.tls_err);
        tls_policy_reset();
        server_exit(dl.srv);
    }
}

void qconn_job_done(struct job *job)
{
    struct qconn *qc = job->qc;
    attr_t a = ATTR_INIT;
    size_t k;
    struct timeval zero = { 0, 0 };

    if (qc) {
        attr_add(&a, "status", "ok");
        attr_add(&a, "queue_id", job->id);
        for (k = 0; k < job->nres; k++) {
            attr_addf(&a, "rcpt", "%zu", job->res[k].idx);
            attr_add(&a, "result", qrcpt_status_name(job->res[k].status));
            attr_add(&a, "dsn", job->res[k].dsn);
            attr_add(&a, "reason", buf_str(&job->res[k].reason));
        }
        attr_add(&a, "dest", job->dest_fail ? "fail" : "ok");
        attr_to_evbuffer(bufferevent_get_output(qc->bev), &a);
        attr_destroy(&a);
        qc->job = NULL;
        /* A request may already be buffered: handle it from the loop. */
        event_add(qc->again, &zero);
    }
    job_free(job);
    maybe_exit();
}

static void on_accept(struct server *s, int fd, int idx)
{
    struct qconn *qc = xcalloc(1, sizeof(*qc));
    qc->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    qc->again = evtimer_new(s->base, qconn_again_cb, qc);
    qc->next = qconns;
    if (qconns)
        qconns->prev = qc;
    qconns = qc;
    bufferevent_setcb(qc->bev, qconn_read_cb, qconn_write_cb, qconn_event_cb, qc);
    bufferevent_enable(qc->bev, EV_READ | EV_WRITE);
}

static void pre_drop(struct server *s)
{
    dl_tls_init();
}

static void post_drop(struct server *s)
{
    buf_t err = BUF_INIT;
    dl.srv = s;
    dl.dns = dns_new(s->base, conf_str("dns_servers"), &err);
    if (!dl.dns)
        log_fatal("cannot set up DNS: %s", buf_str(&err));
    buf_destroy(&err);
}

static void on_stop(struct server *s)
{
    dl.draining = 0;
    server_stop_accepting(s);
    maybe_exit();
}

static void linger_cb(evutil_socket_t fd, short what, void *arg)
{
    dl.draining = 0;
    maybe_exit();
}

static void on_retire(struct server *s)
{
    struct timeval tv = { DL_RETIRE_LINGER, 0 };
    dl.draining = 1;
    server_stop_accepting(s);
    linger_ev = evtimer_new(s->base, linger_cb, NULL);
    if (linger_ev)
        evtimer_add(linger_ev, &tv);
    else
        dl.draining = 0;
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
    return server_main(argc, argv, "smtp", &hooks, &dl);
}
