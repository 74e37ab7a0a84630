/* qmgr_index.c - qmgr's side of the Berkeley DB index: start-up (rebuild
 * after an unclean stop, adopt files that arrived while qmgr was down,
 * remove stale incomplete files), index records from envelopes, pulling
 * due messages into memory, and selections for the control CLI. */
#include "qmgr/qmgr.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/util/log.h"
#include "qmgr/qmgr_route.h"

/* Seconds before an unlocked incomplete file counts as abandoned. */
#define STALE_INCOMPLETE 5
#define RESCAN_MIN_AGE   60 /* seconds: younger complete files are being announced */
/* Messages pulled from the index at a time (file reads are synchronous);
 * a full batch is followed by the next one after a loop turn, not at the
 * next one-second tick: a backlog (a flush after an outage) used to go out
 * at exactly PULL_BATCH messages a second, whatever the receivers took. */
#define PULL_BATCH 2000

static char **strv_add(char **v, size_t *n, const char *s)
{
    v = xrealloc(v, (*n + 2) * sizeof(*v));
    v[(*n)++] = xstrdup(s);
    v[*n] = NULL;
    return v;
}

static int strv_has(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return 1;
    return 0;
}

void qmgr_index_build_rec(const struct qenv *env, int state, long long next, int attempts,
                          const char *reason, struct qmgr_qidx_rec *rec)
{
    size_t nr = 0, nd = 0;
    buf_t dom = BUF_INIT;

    memset(rec, 0, sizeof(*rec));
    str_lcpy(rec->id, env->id, sizeof(rec->id));
    rec->state = state;
    rec->arrival = (long long)env->arrival.tv_sec;
    rec->next_attempt = next;
    rec->attempts = attempts;
    rec->size = env->content_len;
    rec->sender = xstrdup(env->sender ? env->sender : "");
    rec->rcpts = xcalloc(1, sizeof(char *));
    rec->domains = xcalloc(1, sizeof(char *));
    for (size_t i = 0; i < env->nrcpt; i++) {
        const struct qrcpt *r = &env->rcpt[i];
        if (r->status == QR_SENT || r->status == QR_BOUNCED)
            continue;
        rec->rcpts = strv_add(rec->rcpts, &nr, r->addr);
        qmgr_route_domain(r->addr, &dom);
        if (!strv_has(rec->domains, nd, buf_str(&dom)))
            rec->domains = strv_add(rec->domains, &nd, buf_str(&dom));
    }
    rec->reason = reason ? xstrdup(reason) : NULL;
    buf_destroy(&dom);
}

void qmgr_index_put_env(const struct qenv *env, int state, long long next, int attempts,
                        const char *reason)
{
    struct qmgr_qidx_rec rec;

    qmgr_index_build_rec(env, state, next, attempts, reason, &rec);
    if (qmgr_qindex_put(qmgr_g.qi, &rec) < 0)
        log_warn("%s: cannot update the queue index", env->id);
    qmgr_qidx_rec_destroy(&rec);
}

/* Remove an incomplete file whose writer is gone (it holds a lock while
 * it lives: qfile_abandoned); a file younger than a few seconds is left
 * for the next scan, so a writer between its open and its lock is
 * never raced (and would refuse to acknowledge a removed file anyway). */
static void adopt_incomplete(const char *id, const char *path, const struct stat *sb)
{
    if (time(NULL) - sb->st_mtime < STALE_INCOMPLETE)
        return;
    /* Not "ID: removed": that line means a message qmgr took is done. */
    if (qfile_abandoned(path))
        log_warn("%s: removed an incomplete queue file left by a writer that died", id);
}

/* Put one queue file into the index unless it is there already; 1 when
 * it did. min_age > 0 (the periodic rescan) leaves alone complete files
 * younger than that: smtpd marks a file complete just before its fsync and
 * tells qmgr right after, so a young file is announced, not lost. */
static int adopt_file(const char *id, const char *path, long long min_age)
{
    int adopted = 0;
    struct qmgr_qidx_rec rec;
    struct qenv env;
    struct stat sb;
    buf_t err = BUF_INIT;

    if (stat(path, &sb) < 0)
        return 0; /* delivered and removed meanwhile */
    if (!(sb.st_mode & S_IXUSR)) {
        adopt_incomplete(id, path, &sb);
        return 0;
    }
    if (min_age > 0 && time(NULL) - sb.st_mtime < min_age)
        return 0;
    memset(&rec, 0, sizeof(rec));
    if (qmgr_qindex_get(qmgr_g.qi, id, &rec) == QIDX_FOUND) {
        qmgr_qidx_rec_destroy(&rec);
        return 0;
    }
    qenv_init(&env);
    if (qfile_read(qmgr_g.spool, id, &env, 0, &err) < 0) {
        log_warn("%s: unreadable queue file: %s", id, buf_str(&err));
    } else {
        /* Keep the back-off the lost index had: attempts and the next
         * attempt come from the file's result records. */
        int attempts;
        long long next;
        const char *reason;
        qmgr_route_rebuild_retry(&env, conf_int("minimal_backoff_time"),
                                 conf_int("maximal_backoff_time"), &attempts, &next, &reason);
        qmgr_index_put_env(&env, env.hold ? QS_HOLD : QS_DEFERRED, next, attempts, reason);
        adopted = 1;
    }
    qenv_destroy(&env);
    buf_destroy(&err);
    return adopted;
}

static size_t scan_subdir(const char *dir, long long min_age)
{
    size_t adopted = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    buf_t path = BUF_INIT;

    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        if (!qid_valid(e->d_name))
            continue;
        buf_reset(&path);
        buf_printf(&path, "%s/%s", dir, e->d_name);
        adopted += (size_t)adopt_file(e->d_name, buf_str(&path), min_age);
    }
    closedir(d);
    buf_destroy(&path);
    return adopted;
}

static size_t scan_spool(long long min_age)
{
    size_t adopted = 0;
    buf_t top = BUF_INIT, sub = BUF_INIT;
    DIR *d;
    struct dirent *e;

    buf_printf(&top, "%s/queue", qmgr_g.spool);
    if ((d = opendir(buf_str(&top))) == NULL) {
        buf_destroy(&top);
        return 0; /* no mail yet */
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        buf_reset(&sub);
        buf_printf(&sub, "%s/%s", buf_str(&top), e->d_name);
        adopted += scan_subdir(buf_str(&sub), min_age);
    }
    closedir(d);
    buf_destroy(&top);
    buf_destroy(&sub);
    return adopted;
}

/* The safety net for a lost notification: smtpd made a file durable but
 * died (or lost its qmgr connection) before "request=new" arrived. Like
 * Postfix's periodic scan of its incoming queue, every queue_run_delay
 * the spool is read for files the index does not know (a readdir of the
 * hashed directories; only unknown files are opened). */
void qmgr_index_rescan(void)
{
    size_t n = scan_spool(RESCAN_MIN_AGE);
    if (n)
        log_info("queue scan: found %zu message(s) qmgr had not been told about", n);
}

/* No primary DB file yet: a brand-new spool (or one whose index was
 * removed by hand), not an unclean stop. qmgr_qindex_open cannot tell the two
 * apart (both lack the clean marker), so look before it creates them. */
static int index_is_new(void)
{
    buf_t p = BUF_INIT;
    struct stat st;
    int fresh;

    buf_printf(&p, "%s/index/queue.db", qmgr_g.spool);
    fresh = stat(buf_str(&p), &st) < 0 && errno == ENOENT;
    buf_destroy(&p);
    return fresh;
}

/* ---- the rebuild after an unclean stop, in slices on the event loop ----
 *
 * At a million queue files the rebuild reads every file (about a minute).
 * Done in one call it would keep qmgr's loop from the control socket and
 * the notifications for all that time (the CLI hung). Instead it reads a
 * slice of files at a time and yields to the loop between slices: "queue
 * stats" answers with its progress, new mail is taken, due messages
 * already indexed are scheduled. Everything a slice skips is safe: a file
 * already in the index (new mail, an activated message) is left alone. */

#define REBUILD_SLICE_FILES 2000
#define REBUILD_SLICE_USEC  50000 /* then give the loop a turn */

static struct {
    struct event *ev;
    DIR *top, *sub;
    buf_t top_path, sub_path, file;
    size_t scanned, adopted;
    enum qmgr_scan_kind kind; /* QSCAN_NONE when no scan runs */
    int fresh;                /* a new index: nothing to say about it */
} rb;

enum qmgr_scan_kind qmgr_index_scanning(size_t *scanned)
{
    if (scanned)
        *scanned = rb.scanned;
    return rb.kind;
}

static long long usec_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The next hashed subdirectory to read; 0 when the spool is done. */
static int rebuild_next_sub(void)
{
    struct dirent *e;

    while (rb.top && (e = readdir(rb.top)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        buf_reset(&rb.sub_path);
        buf_printf(&rb.sub_path, "%s/%s", buf_str(&rb.top_path), e->d_name);
        if ((rb.sub = opendir(buf_str(&rb.sub_path))) != NULL)
            return 1;
    }
    return 0;
}

/* Read up to a slice of files; 1 while more remain. */
static int rebuild_slice(void)
{
    long long start = usec_now();
    size_t n = 0;

    for (;;) {
        struct dirent *e;
        if (rb.sub == NULL && !rebuild_next_sub())
            return 0;
        while ((e = readdir(rb.sub)) != NULL) {
            if (!qid_valid(e->d_name))
                continue;
            buf_reset(&rb.file);
            buf_printf(&rb.file, "%s/%s", buf_str(&rb.sub_path), e->d_name);
            rb.adopted += (size_t)adopt_file(e->d_name, buf_str(&rb.file), 0);
            rb.scanned++;
            if (++n % 64 == 0 &&
                (n >= REBUILD_SLICE_FILES || usec_now() - start >= REBUILD_SLICE_USEC))
                return 1;
        }
        closedir(rb.sub);
        rb.sub = NULL;
    }
}

static void rebuild_release(void)
{
    if (rb.sub)
        closedir(rb.sub);
    if (rb.top)
        closedir(rb.top);
    rb.sub = rb.top = NULL;
    if (rb.ev)
        event_free(rb.ev);
    rb.ev = NULL;
    buf_destroy(&rb.top_path);
    buf_destroy(&rb.sub_path);
    buf_destroy(&rb.file);
    rb.kind = QSCAN_NONE;
}

static void log_index_count(void)
{
    /* After a reload this is the same queue manager as far as anyone can
     * tell: master's "reload" line says it all. */
    if (qmgr_g.srv->reloaded)
        log_debug("queue index: %zu messages", qmgr_qindex_count(qmgr_g.qi));
    else
        log_info("queue index: %zu messages", qmgr_qindex_count(qmgr_g.qi));
}

static void rebuild_step(evutil_socket_t fd, short what, void *arg)
{
    static const struct timeval now = { 0, 0 };

    if (qmgr_g.stopping)
        return;
    if (rebuild_slice()) {
        evtimer_add(rb.ev, &now); /* after the loop has served the others */
        return;
    }
    if (rb.kind == QSCAN_REBUILD && !rb.fresh)
        log_info("queue index rebuilt: %zu queue files read", rb.scanned);
    rebuild_release();
    log_index_count();
    qmgr_index_pull_due();
    qmgr_sched_dispatch();
}

static void rebuild_start(enum qmgr_scan_kind kind, int fresh)
{
    static const struct timeval now = { 0, 0 };

    rb.kind = kind;
    rb.fresh = fresh;
    rb.scanned = rb.adopted = 0;
    buf_printf(&rb.top_path, "%s/queue", qmgr_g.spool);
    rb.top = opendir(buf_str(&rb.top_path)); /* NULL: no mail yet */
    rb.ev = evtimer_new(qmgr_g.srv->base, rebuild_step, NULL);
    evtimer_add(rb.ev, &now);
}

void qmgr_index_startup(void)
{
    buf_t err = BUF_INIT;
    int was_clean = 0;
    int fresh = index_is_new();

    qmgr_g.qi = qmgr_qindex_open(qmgr_g.spool, &was_clean, &err);
    if (qmgr_g.qi == NULL)
        log_fatal("cannot open the queue index under %s/index: %s (check ownership and space)",
                  conf_str("queue_directory"), buf_str(&err));
    buf_destroy(&err);
    if (!was_clean) {
        if (fresh)
            log_info("queue index created");
        else
            log_info("queue index was not closed cleanly: rebuilding it from the queue files");
        if (qmgr_qindex_clear(qmgr_g.qi) < 0)
            log_fatal("cannot clear the queue index under %s/index", conf_str("queue_directory"));
        rebuild_start(QSCAN_REBUILD, fresh);
        return;
    }
    /* A clean index: only files that came while qmgr was down are new
     * (each one a lookup; the files it knows are not opened), but at a
     * million files that readdir alone takes seconds: in slices too. */
    rebuild_start(QSCAN_ADOPT, 0);
}

/* Transactional mail that came while memory was full (issue #9): the
 * next free places go to it, in arrival order, before the due scan (which
 * knows no classes). Kept in memory only: after a restart such messages
 * are found by the due scan like the others. */
static char **urgent;
static size_t urgent_head, urgent_n, urgent_cap;
#define URGENT_MAX 100000

static void urgent_add(const char *id)
{
    if (urgent_head == urgent_n)
        urgent_head = urgent_n = 0;
    if (urgent_n - urgent_head >= URGENT_MAX)
        return; /* the due scan takes the rest */
    urgent = xgrow(urgent, &urgent_cap, urgent_n + 1, sizeof(*urgent));
    urgent[urgent_n++] = xstrdup(id);
}

static void urgent_clear(void)
{
    while (urgent_head < urgent_n)
        free(urgent[urgent_head++]);
    free(urgent);
    urgent = NULL;
    urgent_head = urgent_n = urgent_cap = 0;
}

/* Still waiting in the index as incoming (not held, deleted or taken)? */
static int urgent_waits(const char *id)
{
    struct qmgr_qidx_rec rec;
    int waits = 0;

    if (qmgr_msg_find(id))
        return 0;
    memset(&rec, 0, sizeof(rec));
    if (qmgr_qindex_get(qmgr_g.qi, id, &rec) == QIDX_FOUND) {
        waits = rec.state == QS_INCOMING;
        qmgr_qidx_rec_destroy(&rec);
    }
    return waits;
}

static void urgent_pull(void)
{
    while (urgent_head < urgent_n && qmgr_msg_room()) {
        char *id = urgent[urgent_head++];
        if (urgent_waits(id) && qmgr_msg_activate(id, 0, 1) < 0)
            qmgr_qindex_del(qmgr_g.qi, id); /* file gone: forget it */
        free(id);
    }
}

struct due_ctx {
    char **ids;
    int *attempts;
    size_t n, max;
};

static int due_cb(const struct qmgr_qidx_rec *rec, void *arg)
{
    struct due_ctx *c = arg;

    if (rec->state == QS_HOLD || qmgr_msg_find(rec->id))
        return 0;
    c->ids[c->n] = xstrdup(rec->id);
    c->attempts[c->n] = rec->attempts;
    return ++c->n >= c->max;
}

static void pull_more(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    qmgr_index_pull_due();
}

/* Another batch soon: deliveries and replies get a loop turn first. */
static void pull_again(void)
{
    static struct event *ev;
    struct timeval soon = { 0, 10000 };
    if (!ev)
        ev = evtimer_new(qmgr_g.srv->base, pull_more, NULL);
    if (ev && !evtimer_pending(ev, NULL))
        evtimer_add(ev, &soon);
}

void qmgr_index_pull_due(void)
{
    struct due_ctx c;
    long long room = qmgr_g.active_limit - (long long)qmgr_g.st.active;

    if (!qmgr_msg_room() || qmgr_g.stopping)
        return;
    urgent_pull();
    room = qmgr_g.active_limit - (long long)qmgr_g.st.active;
    if (!qmgr_msg_room())
        return;
    c.max = room > PULL_BATCH ? PULL_BATCH : (size_t)room;
    c.n = 0;
    c.ids = xcalloc(c.max, sizeof(*c.ids));
    c.attempts = xcalloc(c.max, sizeof(*c.attempts));
    qmgr_qindex_scan_due(qmgr_g.qi, (long long)time(NULL), due_cb, &c);
    for (size_t i = 0; i < c.n; i++) {
        /* Over the recipient limit: leave the rest due for the next tick. */
        if (qmgr_msg_room() && qmgr_msg_activate(c.ids[i], c.attempts[i], 1) < 0)
            qmgr_qindex_del(qmgr_g.qi, c.ids[i]); /* file gone: forget it */
        free(c.ids[i]);
    }
    if (c.n == c.max && c.n == PULL_BATCH && qmgr_msg_room())
        pull_again(); /* likely more due, and room for it */
    free(c.ids);
    free(c.attempts);
}

void qmgr_index_new_mail(const char *id)
{
    struct qenv env;
    buf_t err = BUF_INIT;

    struct qmgr_qidx_rec known;

    /* Already known: the start-up scan or the rescan found the file before
     * smtpd's notice arrived. It is in memory or indexed with its retry
     * time; taking it for new would try a deferred message again at once. */
    if (qmgr_msg_find(id))
        return;
    if (qmgr_qindex_get(qmgr_g.qi, id, &known) == QIDX_FOUND) {
        qmgr_qidx_rec_destroy(&known);
        return;
    }
    /* Already finished: a qmgr that started meanwhile (a reload) found the
     * file in its scan, delivered it and removed it before the notice came.
     * Nothing is wrong, and nothing to say above debug level. */
    qfile_path(qmgr_g.spool, id, &err);
    if (access(buf_str(&err), F_OK) < 0 && errno == ENOENT) {
        log_debug("%s: notice of new mail that is already gone", id);
        buf_destroy(&err);
        return;
    }
    buf_reset(&err);
    if (qmgr_msg_room()) {
        qmgr_msg_activate(id, 0, 0);
        buf_destroy(&err); /* every new message passes here: a leak per message */
        return;
    }
    /* Memory is full: index it as incoming; the due scan takes it later. */
    qenv_init(&env);
    enum prio_class c;
    if (qfile_read(qmgr_g.spool, id, &env, 0, &err) == 0) {
        qmgr_index_put_env(&env, env.hold ? QS_HOLD : QS_INCOMING, 0, 0, NULL);
        if (!env.hold && env.priority && prio_from_name(env.priority, &c) == 0 &&
            c == PRIO_TRANSACTIONAL)
            urgent_add(id);
    } else
        log_warn("%s: cannot read queue file: %s", id, buf_str(&err));
    qenv_destroy(&env);
    buf_destroy(&err);
}

static void shutdown_one(struct qmgr_msg *m, void *arg)
{
    /* Due again at the next start (the lease would hide it for a year). */
    qmgr_index_put_env(&m->env, m->env.hold ? QS_HOLD : QS_ACTIVE, 0, m->attempts, m->reason);
}

void qmgr_index_shutdown(void)
{
    if (qmgr_g.qi == NULL)
        return;
    qmgr_msg_foreach(shutdown_one, NULL);
    urgent_clear();
    /* Stopped mid-rebuild: the index is partial; the next qmgr rebuilds. */
    int clean = rb.kind != QSCAN_REBUILD;
    rebuild_release();
    qmgr_qindex_close(qmgr_g.qi, clean);
    qmgr_g.qi = NULL;
}

struct sel_ctx {
    qmgr_qindex_cb cb;
    void *arg;
    const char *sender, *state;
};

static int sel_cb(const struct qmgr_qidx_rec *rec, void *arg)
{
    struct sel_ctx *c = arg;

    if (c->sender && strcmp(c->sender, rec->sender ? rec->sender : "") != 0)
        return 0;
    if (c->state && strcmp(c->state, qmgr_qidx_state_name(rec->state)) != 0)
        return 0;
    return c->cb(rec, c->arg);
}

/* queue_id=ID (repeated): look each one up directly. */
static int sel_ids(const attr_t *req, struct sel_ctx *c, const char **err)
{
    size_t pos = 0;
    const char *id;

    while ((id = attr_next(req, "queue_id", &pos)) != NULL) {
        struct qmgr_qidx_rec rec;
        if (!qid_valid(id)) {
            *err = "malformed queue_id";
            return -1;
        }
        memset(&rec, 0, sizeof(rec));
        if (qmgr_qindex_get(qmgr_g.qi, id, &rec) != QIDX_FOUND)
            continue;
        int stop = sel_cb(&rec, c);
        qmgr_qidx_rec_destroy(&rec);
        if (stop)
            break;
    }
    return 0;
}

int qmgr_index_scan_select(const attr_t *req, int need_selector, qmgr_qindex_cb cb, void *arg,
                           const char **err)
{
    struct sel_ctx c = { cb, arg, attr_get(req, "sender"), attr_get(req, "state") };
    const char *domain = attr_get(req, "domain");
    const char *all = attr_get(req, "all");

    if (c.state && strcmp(c.state, "incoming") && strcmp(c.state, "active") &&
        strcmp(c.state, "deferred") && strcmp(c.state, "hold")) {
        *err = "state must be incoming, active, deferred or hold";
        return -1;
    }
    if (attr_get(req, "queue_id"))
        return sel_ids(req, &c, err);
    if (domain) {
        buf_t d = BUF_INIT;
        buf_set(&d, domain);
        if (d.len > 0)
            str_lower(d.data);
        qmgr_qindex_scan_domain(qmgr_g.qi, buf_str(&d), sel_cb, &c);
        buf_destroy(&d);
        return 0;
    }
    if (need_selector && !c.sender && !(all && strcmp(all, "1") == 0)) {
        *err = "name the messages: queue_id=, domain=, sender= or all=1";
        return -1;
    }
    qmgr_qindex_scan_all(qmgr_g.qi, sel_cb, &c);
    return 0;
}

/* One piece of a selection answered in pieces (qmgr_control.c's list). */
struct piece_ctx {
    struct sel_ctx sel;
    char *after; /* QID_LEN + 1: the last id looked at */
    size_t seen, max;
};

static int piece_cb(const struct qmgr_qidx_rec *rec, void *arg)
{
    struct piece_ctx *p = arg;

    str_lcpy(p->after, rec->id, QID_LEN + 1);
    p->seen++;
    return sel_cb(rec, &p->sel) || p->seen >= p->max;
}

int qmgr_index_scan_select_piece(const attr_t *req, char *after, size_t max, qmgr_qindex_cb cb,
                                 void *arg, const char **err)
{
    struct piece_ctx p = {
        { cb, arg, attr_get(req, "sender"), attr_get(req, "state") }, after, 0, max
    };
    const char *domain = attr_get(req, "domain");
    char from[QID_LEN + 1];
    int rc;

    if (p.sel.state && strcmp(p.sel.state, "incoming") && strcmp(p.sel.state, "active") &&
        strcmp(p.sel.state, "deferred") && strcmp(p.sel.state, "hold")) {
        *err = "state must be incoming, active, deferred or hold";
        return -1;
    }
    str_lcpy(from, after, sizeof(from));
    if (domain) {
        buf_t d = BUF_INIT;
        buf_set(&d, domain);
        if (d.len > 0)
            str_lower(d.data);
        rc = qmgr_qindex_scan_domain_after(qmgr_g.qi, buf_str(&d), from, piece_cb, &p);
        buf_destroy(&d);
    } else {
        rc = qmgr_qindex_scan_all_after(qmgr_g.qi, from, piece_cb, &p);
    }
    if (rc < 0) {
        *err = "queue index error";
        return -1;
    }
    return p.seen < max ? 1 : 0;
}
