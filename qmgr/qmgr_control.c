/* qmgr_control.c - the CLI's queue requests on public/control.
 *
 * The socket is world-connectable (0666); who may use it is decided per
 * request from SO_PEERCRED (qmgr_perm.c): root, mail_owner and members of
 * mail_owner's group may do everything, others nothing (not even list:
 * "status=fail reason=permission denied"). The CLI is a separate, untrusted program:
 * bad input gets status=fail and the connection is closed, never a panic.
 *
 * delete/hold/release/requeue of more than CTL_BATCH messages run in
 * batches, one per turn of the event loop, so scheduling and deliveries go
 * on meanwhile; after each batch the client gets "progress=DONE total=N"
 * (the CLI shows it on a terminal), then "status=ok count=N" as for a
 * small selection. A client that goes away stops its job. */
#include "qmgr/qmgr.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sys/queue.h>

#include <event2/event.h>

#include "common/util/alloc.h"
#include "common/util/conn.h"
#include "common/mail/conf.h"
#include "common/util/ipc.h"
#include "common/util/log.h"
#include "common/mail/proto.h"

struct idlist {
    char **ids;
    size_t n, cap;
};

typedef int (*ctl_fn)(const attr_t *req, struct evbuffer *out, const char **err);

static int listen_fd = -1;
static struct event *listen_ev;

/* Messages changed per turn of the event loop by a long change. */
#define CTL_BATCH 500

/* A long delete/hold/release/requeue in progress (see above). */
/* Index records looked at per turn by a listing; it waits while more
 * than LIST_OUTPUT_MAX bytes of its answer are unread by the client. */
#define LIST_BATCH      1000
#define LIST_OUTPUT_MAX (256 * 1024)

/* A change (fn set: ids in l) or a listing (fn NULL: sel, after). */
struct ctl_job {
    struct conn *conn;
    struct idlist l;
    size_t pos, count;
    int (*fn)(const char *id);
    attr_t sel;
    char after[QID_LEN + 1];
    struct event *ev;
    LIST_ENTRY(ctl_job) link;
};
static LIST_HEAD(, ctl_job) jobs = LIST_HEAD_INITIALIZER(jobs);
/* The connection whose request is being dispatched (for ctl_each). */
static struct conn *ctl_current;

static void reply_ok(struct evbuffer *out, size_t count)
{
    attr_t r = ATTR_INIT;

    attr_add(&r, "status", "ok");
    attr_add_ll(&r, "count", (long long)count);
    attr_to_evbuffer(out, &r);
    attr_destroy(&r);
}

static int collect_cb(const struct qmgr_qidx_rec *rec, void *arg)
{
    struct idlist *l = arg;

    l->ids = xgrow(l->ids, &l->cap, l->n + 1, sizeof(*l->ids));
    l->ids[l->n++] = xstrdup(rec->id);
    return 0;
}

static void idlist_destroy(struct idlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->ids[i]);
    free(l->ids);
}

static void job_free(struct ctl_job *j)
{
    LIST_REMOVE(j, link);
    event_free(j->ev);
    idlist_destroy(&j->l);
    attr_destroy(&j->sel);
    free(j);
}

static int list_cb(const struct qmgr_qidx_rec *rec, void *arg);
static void list_end(struct evbuffer *out, size_t count);

/* One piece of a listing: 0 more to come, 1 done (end record sent), -1
 * failed (*err). */
static int list_step(struct ctl_job *j, const char **err)
{
    static const struct timeval later = { 0, 10000 };
    static const struct timeval now = { 0, 0 };
    int rc;

    if (conn_output_len(j->conn) > LIST_OUTPUT_MAX) { /* the client reads slowly */
        evtimer_add(j->ev, &later);
        return 0;
    }
    rc = qmgr_index_scan_select_piece(&j->sel, j->after, LIST_BATCH, list_cb, j, err);
    if (rc == 0)
        evtimer_add(j->ev, &now);
    else if (rc > 0)
        list_end(conn_output(j->conn), j->count);
    return rc;
}

static void job_step(evutil_socket_t fd, short what, void *arg)
{
    static const struct timeval now = { 0, 0 };
    struct ctl_job *j = arg;
    struct conn *c = j->conn;

    if (j->fn == NULL) {
        const char *err = NULL;
        int rc = list_step(j, &err);
        if (rc != 0)
            job_free(j);
        if (rc > 0) {
            conn_resume(c);
        } else if (rc < 0) {
            attr_t r = ATTR_INIT;
            attr_add(&r, "status", "fail");
            attr_add(&r, "reason", err ? err : "list failed");
            conn_send(c, &r);
            attr_destroy(&r);
            conn_close(c);
        }
        return;
    }
    size_t end = j->pos + CTL_BATCH < j->l.n ? j->pos + CTL_BATCH : j->l.n;
    attr_t r = ATTR_INIT;

    for (; j->pos < end; j->pos++)
        j->count += (size_t)j->fn(j->l.ids[j->pos]);
    if (j->pos < j->l.n) {
        attr_add_ll(&r, "progress", (long long)j->pos);
        attr_add_ll(&r, "total", (long long)j->l.n);
        conn_send(c, &r);
        attr_destroy(&r);
        evtimer_add(j->ev, &now); /* after the loop has looked at I/O */
        return;
    }
    reply_ok(conn_output(c), j->count);
    job_free(j);
    qmgr_index_pull_due();
    conn_resume(c);
}

/* The client went away: its job ends where it is. */
static void ctl_closed(struct conn *c, const char *why, void *arg)
{
    struct ctl_job *j, *next;

    for (j = LIST_FIRST(&jobs); j; j = next) {
        next = LIST_NEXT(j, link);
        if (j->conn == c) {
            log_info("control: %s stopped after %zu of %zu messages: %s", conn_peer(c), j->pos,
                     j->l.n, why ? why : "closed");
            job_free(j);
        }
    }
}

static int job_running(const struct conn *c)
{
    struct ctl_job *j;

    LIST_FOREACH(j, &jobs, link)
    if (j->conn == c)
        return 1;
    return 0;
}

/* Run fn on every selected id; reply count of those where fn returned 1.
 * More than CTL_BATCH: a job, in batches (see the top of the file). */
static int ctl_each(const attr_t *req, struct evbuffer *out, const char **err,
                    int (*fn)(const char *id))
{
    struct idlist l = { NULL, 0, 0 };
    size_t count = 0;

    if (qmgr_index_scan_select(req, 1, collect_cb, &l, err) < 0)
        return -1;
    if (l.n > CTL_BATCH && ctl_current) {
        struct ctl_job *j = xcalloc(1, sizeof(*j));
        j->conn = ctl_current;
        j->l = l;
        j->fn = fn;
        j->ev = evtimer_new(qmgr_g.srv->base, job_step, j);
        LIST_INSERT_HEAD(&jobs, j, link);
        job_step(-1, 0, j);
        return 0;
    }
    for (size_t i = 0; i < l.n; i++)
        count += (size_t)fn(l.ids[i]);
    idlist_destroy(&l);
    reply_ok(out, count);
    qmgr_index_pull_due();
    return 0;
}

/* Change the index record of a message not in memory. */
static int rec_update(const char *id, int from_hold, int state, long long next)
{
    struct qmgr_qidx_rec rec;
    int changed = 0;

    memset(&rec, 0, sizeof(rec));
    if (qmgr_qindex_get(qmgr_g.qi, id, &rec) != QIDX_FOUND)
        return 0;
    if ((rec.state == QS_HOLD) == from_hold) {
        rec.state = state;
        rec.next_attempt = next;
        changed = qmgr_qindex_put(qmgr_g.qi, &rec) == 0;
    }
    qmgr_qidx_rec_destroy(&rec);
    return changed;
}

static int do_delete(const char *id)
{
    struct qmgr_msg *m = qmgr_msg_find(id);

    if (m) {
        if (!m->deleted) {
            m->deleted = 1;
            qmgr_sched_cancel_msg(m);
            qmgr_finish_check(m); /* removes it once in-flight jobs are back */
        }
        return 1;
    }
    /* A long delete runs in batches: gone meanwhile is not deleted by us. */
    struct qmgr_qidx_rec rec;
    memset(&rec, 0, sizeof(rec));
    if (qmgr_qindex_get(qmgr_g.qi, id, &rec) != QIDX_FOUND)
        return 0;
    qmgr_qidx_rec_destroy(&rec);
    qfile_remove(qmgr_g.spool, id);
    qmgr_qindex_del(qmgr_g.qi, id);
    log_info("%s: removed", id);
    return 1;
}

static int do_hold(const char *id)
{
    struct qmgr_msg *m = qmgr_msg_find(id);

    if (qfile_append_record(qmgr_g.spool, id, "hold", "1") < 0)
        return 0;
    if (m) {
        m->held = m->env.hold = 1;
        qmgr_sched_cancel_msg(m);
        qmgr_finish_check(m);
        return 1;
    }
    return rec_update(id, 0, QS_HOLD, 0);
}

static int do_release(const char *id)
{
    struct qmgr_msg *m = qmgr_msg_find(id);

    if (m) {
        if (!m->held)
            return 0;
        qfile_append_record(qmgr_g.spool, id, "hold", "0");
        m->held = m->env.hold = 0;
        return 1;
    }
    struct qmgr_qidx_rec rec;
    memset(&rec, 0, sizeof(rec));
    int held = qmgr_qindex_get(qmgr_g.qi, id, &rec) == QIDX_FOUND && rec.state == QS_HOLD;
    qmgr_qidx_rec_destroy(&rec);
    if (!held || qfile_append_record(qmgr_g.spool, id, "hold", "0") < 0)
        return 0;
    return rec_update(id, 1, QS_DEFERRED, 0);
}

static int do_requeue(const char *id)
{
    if (qmgr_msg_find(id))
        return 0; /* already being delivered */
    return rec_update(id, 0, QS_DEFERRED, 0);
}

static int ctl_delete(const attr_t *req, struct evbuffer *out, const char **err)
{
    return ctl_each(req, out, err, do_delete);
}

static int ctl_hold(const attr_t *req, struct evbuffer *out, const char **err)
{
    return ctl_each(req, out, err, do_hold);
}

static int ctl_release(const attr_t *req, struct evbuffer *out, const char **err)
{
    return ctl_each(req, out, err, do_release);
}

static int ctl_requeue(const attr_t *req, struct evbuffer *out, const char **err)
{
    qmgr_sched_unsuspend_all();
    return ctl_each(req, out, err, do_requeue);
}

static int flush_cb(const struct qmgr_qidx_rec *rec, void *arg)
{
    if ((rec->state == QS_DEFERRED || rec->state == QS_INCOMING) && rec->next_attempt > 0)
        collect_cb(rec, arg);
    return 0;
}

static int ctl_flush(const attr_t *req, struct evbuffer *out, const char **err)
{
    struct idlist l = { NULL, 0, 0 };
    size_t count = 0;

    qmgr_qindex_scan_all(qmgr_g.qi, flush_cb, &l);
    for (size_t i = 0; i < l.n; i++)
        count += (size_t)do_requeue(l.ids[i]);
    idlist_destroy(&l);
    qmgr_sched_unsuspend_all();
    reply_ok(out, count);
    qmgr_index_pull_due();
    return 0;
}

static int list_cb(const struct qmgr_qidx_rec *rec, void *arg)
{
    struct ctl_job *j = arg;
    attr_t r = ATTR_INIT;

    attr_add(&r, "queue_id", rec->id);
    attr_add(&r, "state", qmgr_qidx_state_name(rec->state));
    attr_add_ll(&r, "size", rec->size);
    attr_add_ll(&r, "arrival", rec->arrival);
    attr_add(&r, "sender", rec->sender ? rec->sender : "");
    for (size_t i = 0; rec->rcpts && rec->rcpts[i]; i++)
        attr_add(&r, "rcpt", rec->rcpts[i]);
    attr_add(&r, "reason", rec->reason ? rec->reason : "");
    attr_to_evbuffer(conn_output(j->conn), &r);
    attr_destroy(&r);
    j->count++;
    return 0;
}

static void list_end(struct evbuffer *out, size_t count)
{
    attr_t r = ATTR_INIT;

    attr_add(&r, "end", "1");
    attr_add_ll(&r, "count", (long long)count);
    attr_to_evbuffer(out, &r);
    attr_destroy(&r);
}

/* Listed in pieces (LIST_BATCH records a turn) so a big queue neither
 * stops scheduling nor piles up in memory; queue_id= lists are short and
 * answered at once. */
static int ctl_list(const attr_t *req, struct evbuffer *out, const char **err)
{
    struct ctl_job *j = xcalloc(1, sizeof(*j));
    int rc = 0;

    j->conn = ctl_current;
    attr_init(&j->sel);
    for (size_t i = 0; i < req->n; i++) /* the selection, kept for the pieces */
        attr_add(&j->sel, req->v[i].name, req->v[i].value);
    if (attr_get(req, "queue_id")) {
        rc = qmgr_index_scan_select(req, 0, list_cb, j, err);
        if (rc == 0)
            list_end(out, j->count);
        attr_destroy(&j->sel);
        free(j);
        return rc;
    }
    j->ev = evtimer_new(qmgr_g.srv->base, job_step, j);
    LIST_INSERT_HEAD(&jobs, j, link);
    job_step(-1, 0, j);
    return 0;
}

static int stats_cb(const struct qmgr_qidx_rec *rec, void *arg)
{
    size_t *n = arg;

    if (rec->state >= QS_INCOMING && rec->state <= QS_HOLD)
        n[rec->state]++;
    return 0;
}

static int ctl_stats(const attr_t *req, struct evbuffer *out, const char **err)
{
    size_t n[4] = { 0, 0, 0, 0 };
    attr_t r = ATTR_INIT;

    qmgr_qindex_scan_all(qmgr_g.qi, stats_cb, n);
    attr_add(&r, "status", "ok");
    attr_add_ll(&r, "incoming", (long long)n[QS_INCOMING]);
    attr_add_ll(&r, "active", (long long)n[QS_ACTIVE]);
    attr_add_ll(&r, "deferred", (long long)n[QS_DEFERRED]);
    attr_add_ll(&r, "hold", (long long)n[QS_HOLD]);
    attr_add_ll(&r, "total", (long long)(n[0] + n[1] + n[2] + n[3]));
    /* During a rebuild the counts are partial: say how far it is. */
    size_t scanned;
    enum qmgr_scan_kind k = qmgr_index_scanning(&scanned);
    if (k != QSCAN_NONE) {
        attr_add(&r, "scan", k == QSCAN_REBUILD ? "rebuilding" : "scanning");
        attr_add_ll(&r, "scanned", (long long)scanned);
    }
    attr_to_evbuffer(out, &r);
    attr_destroy(&r);
    return 0;
}

/* suppress_*: the suppression list (qmgr_suppress_ctl.c) */
static const struct {
    const char *name;
    ctl_fn fn;
} ctl_table[] = {
    { "list", ctl_list },
    { "stats", ctl_stats },
    { "flush", ctl_flush },
    { "delete", ctl_delete },
    { "hold", ctl_hold },
    { "release", ctl_release },
    { "requeue", ctl_requeue },
    { "suppress_add", qmgr_suppress_ctl_add },
    { "suppress_remove", qmgr_suppress_ctl_remove },
    { "suppress_list", qmgr_suppress_ctl_list },
    { "suppress_import", qmgr_suppress_ctl_import },
    { "site_list", qmgr_site_ctl_list },
    { "site_set", qmgr_site_ctl_set },
    { "metrics", qmgr_metrics_ctl },
    { "summary", qmgr_shape_ctl_summary },
};

/* Checked before the request is looked at, so an outsider learns nothing. */
static int ctl_permitted(struct conn *c)
{
    uid_t uid = (uid_t)-1;
    int fd = conn_fd(c);

    if (qmgr_perm_may_manage(fd))
        return 1;
    ipc_peer_cred(fd, &uid, NULL, NULL);
    log_warn("control: request from uid %ld refused: not root, mail_owner or in its group",
             (long)uid);
    return 0;
}

/* Dispatch one request; -1 with *err when it fails. */
static int ctl_dispatch(struct conn *c, const attr_t *req, const char **err)
{
    const char *name = attr_get(req, "request");

    if (!ctl_permitted(c)) {
        *err = "permission denied";
        return -1;
    }
    for (size_t i = 0; name && i < sizeof(ctl_table) / sizeof(ctl_table[0]); i++) {
        if (strcmp(ctl_table[i].name, name) != 0)
            continue;
        ctl_current = c;
        int rc = ctl_table[i].fn(req, conn_output(c), err);
        ctl_current = NULL;
        return rc;
    }
    *err = "unknown request";
    return -1;
}

/* A request qmgr declines (not a malformed one: conn handles those) gets
 * "status=fail reason=WHY", and the connection ends after it. */
static enum conn_verdict ctl_record(struct conn *c, const attr_t *req, void *arg, const char **why)
{
    const char *err = NULL;

    if (ctl_dispatch(c, req, &err) < 0) {
        attr_t r = ATTR_INIT;
        attr_add(&r, "status", "fail");
        attr_add(&r, "reason", err ? err : "request failed");
        conn_send(c, &r);
        attr_destroy(&r);
        conn_close(c);
    }
    return job_running(c) ? CONN_HOLD : CONN_OK;
}

static void control_accept(evutil_socket_t fd, short what, void *arg)
{
    static const struct conn_ops ops = { .on_record = ctl_record, .on_close = ctl_closed };
    struct conn_cfg cfg = { .proto = PROTO_VERSION, .serving = 1 };
    int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    uid_t uid = (uid_t)-1;
    buf_t peer = BUF_INIT;

    if (cfd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            log_warn("control: accept: %s", strerror(errno));
        return;
    }
    ipc_peer_cred(cfd, &uid, NULL, NULL);
    buf_printf(&peer, "control client uid %ld", (long)uid);
    cfg.peer = buf_str(&peer);
    conn_new(qmgr_g.srv->base, cfd, &cfg, &ops, NULL);
    buf_destroy(&peer);
}

void qmgr_control_init(void)
{
    buf_t path = BUF_INIT, dir = BUF_INIT;

    server_spool_path(qmgr_g.srv, "public", &dir);
    if (mkdir(buf_str(&dir), 0755) < 0 && errno != EEXIST)
        log_warn("cannot create %s: %s", buf_str(&dir), strerror(errno));
    server_spool_path(qmgr_g.srv, SOCK_CONTROL, &path);
    listen_fd = ipc_listen_unix(buf_str(&path), 0666, 128);
    if (listen_fd < 0)
        log_fatal("cannot create the control socket %s/%s: %s (check the spool's public/ "
                  "directory and its owner)",
                  conf_str("queue_directory"), SOCK_CONTROL, strerror(errno));
    listen_ev = event_new(qmgr_g.srv->base, listen_fd, EV_READ | EV_PERSIST, control_accept, NULL);
    event_add(listen_ev, NULL);
    buf_destroy(&path);
    buf_destroy(&dir);
}

void qmgr_control_close(void)
{
    while (!LIST_EMPTY(&jobs))
        job_free(LIST_FIRST(&jobs));
    if (listen_ev)
        event_free(listen_ev);
    listen_ev = NULL;
    if (listen_fd >= 0)
        close(listen_fd);
    listen_fd = -1;
}
