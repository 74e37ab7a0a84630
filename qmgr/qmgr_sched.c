/* qmgr_sched.c - destinations (transport + nexthop), their job queues
 * (by priority class, senders in turn: qmgr_fair.c), concurrency limits,
 * suspension after dest=fail, and dispatch.
 * Which destination goes next is kept by qmgr_ready.c: every change to a
 * destination's queue, in-flight count or waiting time is reported to it
 * with qmgr_ready_update(). */
#include "qmgr/qmgr.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util/alloc.h"
#include "common/mail/bclass.h"
#include "common/mail/conf.h"
#include "common/util/log.h"

/* Every destination qmgr knows, by "transport\nnexthop". */
static struct htable dests;
/* Those with queued jobs. */
static LIST_HEAD(, qmgr_dest) busy = LIST_HEAD_INITIALIZER(busy);
static unsigned long long job_seq;
/* priority_transactional_weight (read at each dispatch) */
static int prio_weight = 10;

struct qmgr_job *qmgr_sched_head(const struct qmgr_dest *d)
{
    return qmgr_fairq_peek(&d->q, prio_weight);
}

static struct qmgr_dest *dest_find(const char *key, unsigned h)
{
    for (struct hlink *l = htable_first(&dests, h); l; l = htable_next(l, h)) {
        struct qmgr_dest *d = HTABLE_ENTRY(l, struct qmgr_dest, hlink);
        if (strcmp(d->key, key) == 0)
            return d;
    }
    return NULL;
}

static struct qmgr_dest *dest_get(const char *transport, const char *nexthop)
{
    buf_t key = BUF_INIT;
    struct qmgr_dest *d;
    unsigned h;

    buf_printf(&key, "%s\n%s", transport, nexthop);
    h = htable_hash_str(buf_str(&key));
    if ((d = dest_find(buf_str(&key), h)) == NULL) {
        d = xcalloc(1, sizeof(*d));
        d->key = buf_detach(&key);
        d->transport = xstrdup(transport);
        d->nexthop = xstrdup(nexthop);
        qmgr_fairq_init(&d->q);
        if (dests.nb == 0)
            htable_init(&dests, 1024);
        htable_insert(&dests, &d->hlink, h);
        qmgr_site_attach(d);
    }
    buf_destroy(&key);
    return d;
}

static void busy_add(struct qmgr_dest *d)
{
    if (d->busy)
        return;
    d->busy = 1;
    LIST_INSERT_HEAD(&busy, d, blink);
}

static void busy_del(struct qmgr_dest *d)
{
    if (!d->busy)
        return;
    d->busy = 0;
    LIST_REMOVE(d, blink);
}

static void job_free(struct qmgr_job *j)
{
    free(j->rcpt);
    free(j);
}

static int dest_suspended(const struct qmgr_dest *d)
{
    return d->suspended_until > (long long)time(NULL);
}

/* Defer a job that cannot go out because its destination (or its site)
 * is suspended. */
static void job_defer_suspended(struct qmgr_job *j)
{
    buf_t why = BUF_INIT;
    const struct qmgr_site *s = j->dest->site;

    if (!dest_suspended(j->dest) && qmgr_site_suspended(s))
        buf_printf(&why, "delivery temporarily suspended: site %s: %s", s->name, s->state_reason);
    else
        buf_printf(&why, "delivery temporarily suspended: %s",
                   j->dest->suspend_reason ? j->dest->suspend_reason : "destination unreachable");
    for (size_t i = 0; i < j->n; i++) {
        qmgr_msg_defer_rcpt(j->msg, j->rcpt[i], "4.4.1", buf_str(&why), j->dest->suspend_category);
        qmgr_metrics_outcome(j->msg, s, RR_DEFERRED, j->dest->suspend_category);
    }
    j->msg->jobs--;
    buf_destroy(&why);
}

static void job_enqueue(struct qmgr_job *j)
{
    struct qmgr_dest *d = j->dest;

    if (dest_suspended(d) || qmgr_site_suspended(d->site)) {
        job_defer_suspended(j);
        job_free(j);
        return;
    }
    qmgr_fairq_push(&d->q, j);
    d->queued++;
    busy_add(d);
    qmgr_ready_update(d, qmgr_now());
}

/* Put recipient idx into the message's open job for its destination; a
 * new job goes to the end of made. */
static void job_add_rcpt(struct qmgr_msg *m, size_t idx, struct qmgr_jobq *made)
{
    buf_t tr = BUF_INIT, nh = BUF_INIT;
    size_t limit = (size_t)conf_int("default_destination_recipient_limit");
    struct qmgr_dest *d;
    struct qmgr_job *j;

    qmgr_route_rcpt(m->env.rcpt[idx].addr, &tr, &nh);
    d = dest_get(buf_str(&tr), buf_str(&nh));
    buf_destroy(&tr);
    buf_destroy(&nh);
    j = d->building;
    if (j == NULL || j->n >= limit) {
        j = xcalloc(1, sizeof(*j));
        j->msg = m;
        j->dest = d;
        j->rcpt = xcalloc(limit, sizeof(*j->rcpt));
        j->seq = ++job_seq;
        TAILQ_INSERT_TAIL(made, j, link);
        d->building = j;
        m->jobs++;
    }
    j->rcpt[j->n++] = idx;
    m->rr[idx] = RR_WAIT;
    m->waiting++;
}

void qmgr_sched_message(struct qmgr_msg *m)
{
    struct qmgr_jobq made = TAILQ_HEAD_INITIALIZER(made);
    struct qmgr_job *j;

    m->guard++;
    for (size_t i = 0; i < m->env.nrcpt; i++) {
        int st = m->env.rcpt[i].status;
        if (st == QR_SENT || st == QR_BOUNCED || qmgr_suppress_rcpt(m, i))
            continue;
        job_add_rcpt(m, i, &made);
    }
    /* Into the FIFOs in recipient order, once every job is complete. */
    TAILQ_FOREACH(j, &made, link)
    j->dest->building = NULL;
    while ((j = TAILQ_FIRST(&made)) != NULL) {
        TAILQ_REMOVE(&made, j, link);
        job_enqueue(j);
    }
    m->guard--;
    qmgr_finish_check(m);
    qmgr_sched_dispatch();
}

static void dest_suspend(struct qmgr_dest *d, const char *reason, const char *category);

/* No delivery agent for this destination's transport right now. */
static void dest_unreachable(struct qmgr_dest *d, double now)
{
    d->retry_at = now + 1; /* master will (re)start the agent */
    if (d->unreach_since == 0)
        d->unreach_since = now;
    else if (now - d->unreach_since > QMGR_AGENT_PATIENCE)
        dest_suspend(d, "mail transport unavailable", "other");
    qmgr_ready_update(d, now);
}

/* Every address of the job's source pool is over its warm-up cap or out
 * of service: the job waits like a deferred one. */
static void job_defer_nosource(struct qmgr_job *j)
{
    struct qmgr_msg *m = j->msg;

    qmgr_ready_update(j->dest, qmgr_now()); /* its next job may go */
    m->guard++;
    for (size_t i = 0; i < j->n; i++) {
        qmgr_msg_defer_rcpt(m, j->rcpt[i], "4.4.0",
                            "no source address available (warm-up caps or addresses out)",
                            bclass_name(BCLASS_OTHER));
        qmgr_metrics_outcome(m, j->dest->site, RR_DEFERRED, bclass_name(BCLASS_OTHER));
    }
    m->jobs--;
    job_free(j);
    m->guard--;
    qmgr_finish_check(m);
}

static struct qmgr_job *dest_pop(struct qmgr_dest *d)
{
    struct qmgr_job *j = qmgr_fairq_pop(&d->q, prio_weight);

    if (d->q.n == 0)
        busy_del(d);
    d->queued--;
    return j;
}

static void dest_push_front(struct qmgr_dest *d, struct qmgr_job *j)
{
    qmgr_fairq_push_front(&d->q, j);
    d->queued++;
    busy_add(d);
    qmgr_ready_update(d, qmgr_now());
}

void qmgr_sched_dispatch(void)
{
    int dlimit = (int)conf_int("default_destination_concurrency_limit");
    size_t plimit = (size_t)conf_int("default_process_concurrency");
    double now = qmgr_now();
    struct qmgr_dest *d;

    if (qmgr_g.stopping)
        return;
    prio_weight = (int)conf_int("priority_transactional_weight");
    if (qmgr_ready_set_limit(dlimit)) /* first call, or a new limit */
        LIST_FOREACH(d, &busy, blink)
    qmgr_ready_update(d, now);
    qmgr_ready_wake(now);
    while (qmgr_g.st.inflight < plimit && (d = qmgr_ready_pick()) != NULL) {
        if (d->site == NULL) { /* its MX lookup will put it back */
            qmgr_ready_forget(d);
            continue;
        }
        /* Whether the job needs a new connection matters only to a
         * connection rate (and costs a walk over the agent connections). */
        int fresh = d->site->pol.max_connection_rate > 0 && !qmgr_deliver_site_idle(d);
        /* Before admit, which takes a rate token the job could not use. */
        if (qmgr_pool_busy(qmgr_fairq_peek(&d->q, prio_weight))) {
            qmgr_site_wait(d->site, d);
            continue;
        }
        enum qmgr_site_go go = qmgr_site_admit(d->site, d, fresh, now);
        if (go == SITE_WAIT)
            continue;
        struct qmgr_job *j = dest_pop(d);
        if (go == SITE_DEFER) {
            job_defer_suspended(j);
            qmgr_finish_check(j->msg);
            job_free(j);
            qmgr_ready_update(d, now);
            continue;
        }
        if (qmgr_pool_assign(j) == POOL_EXHAUSTED) {
            job_defer_nosource(j);
            continue;
        }
        /* Its source address may not take the connection admit counted on. */
        if (!qmgr_site_lease_ok(d->site, j)) {
            qmgr_pool_unassign(j);
            dest_push_front(d, j);
            qmgr_site_lease_wait(d->site, d);
            continue;
        }
        if (qmgr_deliver_start(j) < 0) {
            qmgr_pool_unassign(j);
            dest_push_front(d, j);
            dest_unreachable(d, now);
            continue;
        }
        d->unreach_since = 0;
        d->inflight++;
        qmgr_g.st.inflight++;
        qmgr_site_job_started(d->site, qmgr_pool_source(j), now);
        qmgr_ready_update(d, now);
    }
}

/* Mark d suspended and say so: one line per change of state. */
static void dest_mark_suspended(struct qmgr_dest *d, const char *reason, const char *category)
{
    enum bclass c = BCLASS_NO_ANSWER_FROM_HOST;
    d->suspended_until = (long long)time(NULL) + conf_int("destination_suspend_time");
    free(d->suspend_reason);
    d->suspend_reason = xstrdup(reason && *reason ? reason : "destination unreachable");
    if (category)
        bclass_from_name(category, &c);
    d->suspend_category = bclass_name(c); /* static: no copy to keep */
    log_info("destination %s:%s suspended for %llds: %s", d->transport, d->nexthop,
             conf_int("destination_suspend_time"), d->suspend_reason);
}

/* dest=fail: leave the destination alone and defer what waits for it.
 * Concurrent deliveries fail together (20 connections refused at once):
 * the first suspends it; the others find it suspended and add no line. */
static void dest_suspend(struct qmgr_dest *d, const char *reason, const char *category)
{
    if (!dest_suspended(d))
        dest_mark_suspended(d, reason, category);
    qmgr_ready_forget(d); /* out of the heap before its jobs go */
    while (d->q.n > 0) {
        struct qmgr_job *j = dest_pop(d);
        job_defer_suspended(j);
        qmgr_finish_check(j->msg);
        job_free(j);
    }
    qmgr_ready_update(d, qmgr_now());
}

static const struct {
    const char *name;
    enum qmgr_rr rr;
} result_map[] = {
    { "sent", RR_SENT },
    { "deferred", RR_DEFERRED },
    { "bounced", RR_BOUNCED },
};

/* The outcome a result= names; RR_NONE for none we know. */
static enum qmgr_rr result_rr(const char *s)
{
    for (size_t i = 0; s && i < sizeof(result_map) / sizeof(result_map[0]); i++)
        if (strcmp(s, result_map[i].name) == 0)
            return result_map[i].rr;
    return RR_NONE;
}

static int idx_is(const char *s, size_t want)
{
    char *end;
    unsigned long long v;

    if (*s < '0' || *s > '9')
        return 0;
    errno = 0;
    v = strtoull(s, &end, 10);
    return errno == 0 && *end == '\0' && v == (unsigned long long)want;
}

/* Is p the start of a well-formed quadruple for recipient want? */
static int quad_ok(const attr_t *reply, size_t p, size_t want)
{
    const struct attr_pair *v = reply->v;

    return p + 3 < reply->n && idx_is(v[p].value, want) && strcmp(v[p + 1].name, "result") == 0 &&
           result_rr(v[p + 1].value) != RR_NONE && strcmp(v[p + 2].name, "dsn") == 0 &&
           strcmp(v[p + 3].name, "reason") == 0;
}

/* The optional fifth attribute after the quadruple at p: 1 when
 * "category" follows (its value in *cat, NULL when empty), 0 when it does
 * not, -1 when it names no category we know (a malformed reply). */
static int quad_category(const attr_t *reply, size_t p, const char **cat)
{
    enum bclass c;
    *cat = NULL;
    if (p + 4 >= reply->n || strcmp(reply->v[p + 4].name, "category") != 0)
        return 0;
    if (*reply->v[p + 4].value == 0)
        return 1;
    if (bclass_from_name(reply->v[p + 4].value, &c) < 0)
        return -1;
    *cat = reply->v[p + 4].value;
    return 1;
}

/* A status=ok reply reports the job's recipients, in the job's order, as
 * rcpt/result/dsn/reason quadruples, each optionally followed by
 * category (issue #8; a delivery agent that predates it still fits); it
 * may stop short (the rest count as crashed), nothing else. Any other
 * status carries just a reason. */
int qmgr_sched_reply_matches(const struct qmgr_job *j, const attr_t *reply)
{
    const char *status = attr_get(reply, "status");
    size_t k = 0;

    if (status == NULL || strcmp(status, "ok") != 0)
        return 1;
    for (size_t p = 0; p < reply->n; p++) {
        if (strcmp(reply->v[p].name, "rcpt") != 0)
            continue;
        const char *cat;
        int extra = quad_category(reply, p, &cat);
        if (k >= j->n || !quad_ok(reply, p, j->rcpt[k]) || extra < 0)
            return 0;
        k++;
        p += 3 + (size_t)extra;
    }
    return 1;
}

/* Walk the quadruples (qmgr_sched_reply_matches checked them); returns the
 * first deferral reason (for a suspension) or NULL, and its category in
 * *defer_cat. Unreported recipients: crashed. */
static const char *job_apply_reply(struct qmgr_job *j, const attr_t *reply, const char **defer_cat)
{
    const char *first_defer = NULL;
    size_t k = 0;

    *defer_cat = NULL;
    for (size_t p = 0; p < reply->n && k < j->n; p++) {
        if (strcmp(reply->v[p].name, "rcpt") != 0)
            continue;
        enum qmgr_rr rr = result_rr(reply->v[p + 1].value);
        const char *reason = reply->v[p + 3].value, *cat;
        int extra = quad_category(reply, p, &cat);
        if (rr == RR_DEFERRED && first_defer == NULL) {
            first_defer = reason;
            *defer_cat = cat;
        }
        qmgr_msg_rcpt_done(j->msg, j->rcpt[k], rr, reply->v[p + 2].value, reason, cat);
        qmgr_metrics_outcome(j->msg, j->dest->site, rr, cat);
        qmgr_suppress_outcome(j->msg, j->rcpt[k++], rr, reply->v[p + 2].value, reason, cat);
        p += 3 + (size_t)(extra > 0);
    }
    for (; k < j->n; k++)
        qmgr_msg_rcpt_done(j->msg, j->rcpt[k], RR_CRASH, NULL, "delivery agent reply incomplete",
                           NULL);
    return first_defer;
}

void qmgr_sched_job_done(struct qmgr_job *j, const attr_t *reply, const char *reason)
{
    struct qmgr_msg *m = j->msg;
    struct qmgr_dest *d = j->dest;
    const char *status = reply ? attr_get(reply, "status") : NULL;

    d->inflight--;
    qmgr_g.st.inflight--;
    qmgr_site_job_done(d->site, qmgr_pool_source(j));
    qmgr_ready_update(d, qmgr_now());
    if (qmgr_pool_job_failed(j, reply)) { /* nothing done: again, from another address */
        dest_push_front(d, j);
        qmgr_sched_dispatch();
        return;
    }
    m->jobs--;
    m->guard++;
    if (status && strcmp(status, "ok") == 0) {
        const char *cat;
        const char *why = job_apply_reply(j, reply, &cat);
        const char *dest = attr_get(reply, "dest");
        long long retry = why ? qmgr_site_retry(d->site, m->attempts + 1) : 0;
        if (retry > 0 && (m->site_retry == 0 || retry < m->site_retry))
            m->site_retry = retry;
        qmgr_site_note_deferral(d->site, why);
        if (dest && strcmp(dest, "fail") == 0)
            dest_suspend(d, why ? why : m->reason, cat);
        qmgr_throttle_job_done(d->site, qmgr_pool_source(j), reply);
    } else {
        const char *why = reply ? attr_get_def(reply, "reason", "delivery agent failed") : reason;
        enum qmgr_rr rr = reply ? RR_DEFERRED : RR_CRASH;
        if (reply)
            log_warn("%s: delivery agent %s refused the job: %s", m->id, d->transport, why);
        for (size_t k = 0; k < j->n; k++)
            qmgr_msg_rcpt_done(m, j->rcpt[k], rr, "4.3.0", why, NULL);
        qmgr_site_note_deferral(d->site, why);
    }
    job_free(j);
    m->guard--;
    qmgr_finish_check(m);
    qmgr_sched_dispatch();
}

/* Take m's queued jobs out of d's queue. Its jobs wait in its sender's
 * FIFO of its class, which is walked alone. */
static void dest_cancel_msg(struct qmgr_dest *d, struct qmgr_msg *m)
{
    struct qmgr_jobq out = TAILQ_HEAD_INITIALIZER(out);
    struct qmgr_job *j;

    d->queued -= qmgr_fairq_take_msg(&d->q, m, &out);
    while ((j = TAILQ_FIRST(&out)) != NULL) {
        TAILQ_REMOVE(&out, j, link);
        for (size_t k = 0; k < j->n; k++) {
            m->rr[j->rcpt[k]] = RR_CANCEL;
            m->waiting--;
        }
        m->jobs--;
        job_free(j);
    }
    if (d->q.n == 0)
        busy_del(d);
    qmgr_ready_update(d, qmgr_now()); /* its first job may have gone */
}

void qmgr_sched_cancel_msg(struct qmgr_msg *m)
{
    struct qmgr_dest *d, *next;

    for (d = LIST_FIRST(&busy); d; d = next) {
        next = LIST_NEXT(d, blink);
        dest_cancel_msg(d, m);
    }
}

void qmgr_sched_unsuspend_all(void)
{
    double now = qmgr_now();

    struct hlink *l, *next;

    HTABLE_EACH(&dests, l, next)
    {
        struct qmgr_dest *d = HTABLE_ENTRY(l, struct qmgr_dest, hlink);
        d->suspended_until = 0;
        qmgr_ready_update(d, now);
    }
    qmgr_sched_dispatch();
}

static void dest_free(struct qmgr_dest *d)
{
    qmgr_ready_forget(d);
    qmgr_site_detach(d);
    while (d->q.n > 0)
        job_free(dest_pop(d));
    qmgr_fairq_destroy(&d->q);
    free(d->key);
    free(d->transport);
    free(d->nexthop);
    free(d->suspend_reason);
    free(d);
}

/* Forget idle destinations (not busy, nothing in flight, not suspended). */
static void dest_sweep(void)
{
    struct hlink *l, *next;

    HTABLE_EACH(&dests, l, next)
    {
        struct qmgr_dest *d = HTABLE_ENTRY(l, struct qmgr_dest, hlink);
        if (!d->busy && d->inflight == 0 && !dest_suspended(d)) {
            htable_remove(&dests, l);
            dest_free(d);
        }
    }
}

/* Take d's queued jobs out: deferred as suspended, or bounced. */
static void dest_flush(struct qmgr_dest *d, enum qmgr_rr rr, const char *dsn, const char *why)
{
    qmgr_ready_forget(d);
    while (d->q.n > 0) {
        struct qmgr_job *j = dest_pop(d);
        if (rr == RR_BOUNCED) {
            for (size_t i = 0; i < j->n; i++) {
                if (qfile_append_result(qmgr_g.spool, j->msg->id, j->rcpt[i], QR_BOUNCED, dsn,
                                        "none", why, NULL) < 0)
                    log_warn("%s: cannot append result for recipient %zu", j->msg->id, j->rcpt[i]);
                qmgr_msg_log_status(j->msg, j->rcpt[i], "none", dsn, "bounced", why, NULL);
                qmgr_msg_rcpt_done(j->msg, j->rcpt[i], RR_BOUNCED, dsn, why, NULL);
                qmgr_metrics_outcome(j->msg, d->site, RR_BOUNCED, NULL);
            }
            j->msg->jobs--;
        } else {
            job_defer_suspended(j);
        }
        qmgr_finish_check(j->msg);
        job_free(j);
    }
    qmgr_ready_update(d, qmgr_now());
}

void qmgr_sched_site_flush(struct qmgr_site *s, enum qmgr_rr rr, const char *dsn, const char *why)
{
    struct qmgr_dest *d, *next;

    for (d = LIST_FIRST(&s->dests); d; d = next) {
        next = LIST_NEXT(d, slink);
        dest_flush(d, rr, dsn, why);
    }
}

void qmgr_sched_tick(void)
{
    static unsigned ticks;

    if (++ticks % 60 == 0)
        dest_sweep();
    qmgr_site_tick();
    qmgr_throttle_tick();
    qmgr_sched_dispatch();
}
