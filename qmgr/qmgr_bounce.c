/* qmgr_bounce.c - requests to the bounce daemon (private/bounce): one
 * persistent connection, one request at a time, the rest queued FIFO.
 * A message stays in the queue until its notifications succeeded. */
#include "qmgr/qmgr.h"

#include <errno.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <time.h>

#include "common/util/alloc.h"
#include "common/util/conn.h"
#include "common/util/log.h"
#include "common/mail/proto.h"

/* How long a request may wait for the bounce daemon to come up. */
#define BOUNCE_CONNECT_PATIENCE 30

struct breq {
    struct qmgr_msg *msg;
    enum qmgr_kind kind;
    size_t *idx;
    size_t n;
    time_t queued;
    STAILQ_ENTRY(breq) link;
};

static const char *const kind_request[] = {
    [QK_BOUNCE] = "bounce",
    [QK_DELAY] = "delay",
    [QK_SUCCESS] = "success",
};

static struct conn *bconn;
static STAILQ_HEAD(, breq) breqs = STAILQ_HEAD_INITIALIZER(breqs);
static int bbusy; /* the first was sent, awaiting the reply */

static struct breq *breq_pop(void)
{
    struct breq *r = STAILQ_FIRST(&breqs);

    STAILQ_REMOVE_HEAD(&breqs, link);
    return r;
}

static void breq_done(struct breq *r, int ok)
{
    qmgr_finish_notify_done(r->msg, r->kind, r->idx, r->n, ok);
    free(r->idx);
    free(r);
}

static void bounce_kick(void);

/* The connection is over (bounce closed it, or it sent garbage and conn
 * said so): the request in flight failed; the next one opens a new
 * connection. */
static void bconn_closed(struct conn *c, const char *why, void *arg)
{
    bconn = NULL;
    if (bbusy) {
        bbusy = 0;
        struct breq *r = breq_pop();
        log_warn("%s: bounce service: connection lost", r->msg->id);
        breq_done(r, 0);
    }
    bounce_kick();
}

/* A notice was queued as NEWID: take it unless already known. */
static void bounce_new_id(const char *newid)
{
    struct qmgr_qidx_rec rec;
    buf_t path = BUF_INIT;
    struct stat sb;

    if (!qid_valid(newid) || qmgr_msg_find(newid))
        return;
    memset(&rec, 0, sizeof(rec));
    if (qmgr_qindex_get(qmgr_g.qi, newid, &rec) == QIDX_FOUND) {
        qmgr_qidx_rec_destroy(&rec);
        return;
    }
    qfile_path(qmgr_g.spool, newid, &path);
    if (stat(buf_str(&path), &sb) == 0)
        qmgr_index_new_mail(newid);
    buf_destroy(&path);
}

/* The answer to the request in flight: status=ok (queue_id=NEWID when a
 * notice was queued) or status=fail reason=WHY. */
static enum conn_verdict bconn_record(struct conn *c, const attr_t *reply, void *arg,
                                      const char **why)
{
    if (!bbusy) {
        *why = "a reply to no request";
        return CONN_DROP;
    }
    const char *status = attr_get(reply, "status");
    int ok = status && strcmp(status, "ok") == 0;
    struct breq *q = breq_pop();
    bbusy = 0;
    if (!ok)
        log_warn("%s: bounce %s request failed: %s", q->msg->id, kind_request[q->kind],
                 attr_get_def(reply, "reason", "no reason given"));
    const char *newid = attr_get(reply, "queue_id");
    if (ok && newid && *newid)
        bounce_new_id(newid);
    breq_done(q, ok);
    bounce_kick();
    return CONN_OK;
}

static int bconn_open(void)
{
    static const struct conn_ops ops = { .on_record = bconn_record, .on_close = bconn_closed };
    static const struct conn_cfg cfg = { .peer = "bounce service" };
    static time_t last_warn;
    buf_t path = BUF_INIT;

    server_spool_path(qmgr_g.srv, SOCK_BOUNCE, &path);
    bconn = conn_connect_unix(qmgr_g.srv->base, buf_str(&path), &cfg, &ops, NULL);
    if (bconn == NULL && time(NULL) - last_warn >= 10) {
        log_warn("connect to %s: %s (bounce service not running?)", buf_str(&path),
                 strerror(errno));
        last_warn = time(NULL);
    }
    buf_destroy(&path);
    return bconn ? 0 : -1;
}

static void bounce_kick(void)
{
    struct breq *r = STAILQ_FIRST(&breqs);
    attr_t req = ATTR_INIT;

    if (bbusy || r == NULL || (bconn && conn_closing(bconn)))
        return;
    if (bconn == NULL && bconn_open() < 0)
        return; /* qmgr_bounce_tick retries, and gives up on old requests */
    attr_add(&req, "proto", PROTO_VERSION);
    attr_add(&req, "request", kind_request[r->kind]);
    attr_add(&req, "queue_id", r->msg->id);
    for (size_t i = 0; i < r->n; i++)
        attr_add_ll(&req, "rcpt", (long long)r->idx[i]);
    conn_send(bconn, &req);
    attr_destroy(&req);
    bbusy = 1;
}

void qmgr_bounce_request(struct qmgr_msg *m, enum qmgr_kind kind, const size_t *idx, size_t n)
{
    struct breq *r = xcalloc(1, sizeof(*r));

    r->msg = m;
    r->kind = kind;
    r->idx = xcalloc(n, sizeof(*r->idx));
    memcpy(r->idx, idx, n * sizeof(*idx));
    r->n = n;
    r->queued = time(NULL);
    STAILQ_INSERT_TAIL(&breqs, r, link);
    bounce_kick();
}

void qmgr_bounce_tick(void)
{
    time_t now = time(NULL);
    struct breq *r;

    /* Without a bounce daemon, requests fail after a while so their
     * messages are deferred (and retried) instead of sitting in memory. */
    while (!bbusy && bconn == NULL && (r = STAILQ_FIRST(&breqs)) != NULL &&
           now - r->queued > BOUNCE_CONNECT_PATIENCE)
        breq_done(breq_pop(), 0);
    bounce_kick();
}

void qmgr_bounce_close(void)
{
    conn_free(bconn); /* no callback */
    bconn = NULL;
    bbusy = 0;
    while (!STAILQ_EMPTY(&breqs)) {
        struct breq *r = breq_pop();
        free(r->idx);
        free(r);
    }
}
