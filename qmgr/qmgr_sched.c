/* qmgr_sched.c - destinations (transport + nexthop), their job FIFOs,
 * concurrency limits, suspension after dest=fail, and FIFO dispatch.
 * Which destination goes next is kept by qmgr_ready.c: every change to a
 * destination's queue, in-flight count or waiting time is reported to it
 * with qmgr_ready_update(). */
#include "qmgr/qmgr.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/util/log.h"

#define DEST_HASH_SIZE 4096

static struct qmgr_dest *dest_hash[DEST_HASH_SIZE];
static struct qmgr_dest *busy_head;       /* destinations with queued jobs */
static unsigned long long job_seq;

static unsigned dest_bucket(const char *key)
{
    unsigned h = 5381;

    for (; *key; key++)
        h = h * 33 + (unsigned char)*key;
    return h % DEST_HASH_SIZE;
}

static struct qmgr_dest *dest_get(const char *transport, const char *nexthop)
{
    buf_t key = BUF_INIT;
    struct qmgr_dest *d;
    unsigned b;

    buf_printf(&key, "%s\n%s", transport, nexthop);
    b = dest_bucket(buf_str(&key));
    for (d = dest_hash[b]; d; d = d->hnext)
        if (strcmp(d->key, buf_str(&key)) == 0)
            break;
    if (d == NULL) {
        d = xcalloc(1, sizeof(*d));
        d->key = buf_detach(&key);
        d->transport = xstrdup(transport);
        d->nexthop = xstrdup(nexthop);
        d->hnext = dest_hash[b];
        dest_hash[b] = d;
    }
    buf_destroy(&key);
    return d;
}

static void busy_add(struct qmgr_dest *d)
{
    if (d->busy)
        return;
    d->busy = 1;
    d->bprev = NULL;
    d->bnext = busy_head;
    if (busy_head)
        busy_head->bprev = d;
    busy_head = d;
}

static void busy_del(struct qmgr_dest *d)
{
    if (!d->busy)
        return;
    d->busy = 0;
    if (d->bprev)
        d->bprev->bnext = d->bnext;
    else
        busy_head = d->bnext;
    if (d->bnext)
        d->bnext->bprev = d->bprev;
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

/* Defer a job that cannot go out because its destination is suspended. */
static void job_defer_suspended(struct qmgr_job *j)
{
    buf_t why = BUF_INIT;

    buf_printf(&why, "delivery temporarily suspended: %s",
               j->dest->suspend_reason ? j->dest->suspend_reason : "destination unreachable");
    for (size_t i = 0; i < j->n; i++)
        qmgr_msg_defer_rcpt(j->msg, j->rcpt[i], "4.4.1", buf_str(&why));
    j->msg->jobs--;
    buf_destroy(&why);
}

static void job_enqueue(struct qmgr_job *j)
{
    struct qmgr_dest *d = j->dest;

    if (dest_suspended(d)) {
        job_defer_suspended(j);
        job_free(j);
        return;
    }
    j->next = NULL;
    if (d->tail)
        d->tail->next = j;
    else
        d->head = j;
    d->tail = j;
    d->queued++;
    busy_add(d);
    qmgr_ready_update(d, qmgr_now());
}

/* Put recipient idx into the message's open job for its destination. */
static struct qmgr_job *job_add_rcpt(struct qmgr_msg *m, size_t idx, struct qmgr_job *made)
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
        j->next = made; /* chain of jobs made for this message */
        d->building = j;
        made = j;
        m->jobs++;
    }
    j->rcpt[j->n++] = idx;
    m->rr[idx] = RR_WAIT;
    m->waiting++;
    return made;
}

void qmgr_sched_message(struct qmgr_msg *m)
{
    struct qmgr_job *made = NULL, *next;

    m->guard++;
    for (size_t i = 0; i < m->env.nrcpt; i++) {
        int st = m->env.rcpt[i].status;
        if (st == QR_SENT || st == QR_BOUNCED)
            continue;
        made = job_add_rcpt(m, i, made);
    }
    /* Reverse the chain so jobs enter the FIFOs in recipient order. */
    struct qmgr_job *rev = NULL;
    for (; made; made = next) {
        next = made->next;
        made->dest->building = NULL;
        made->next = rev;
        rev = made;
    }
    for (; rev; rev = next) {
        next = rev->next;
        job_enqueue(rev);
    }
    m->guard--;
    qmgr_finish_check(m);
    qmgr_sched_dispatch();
}

static void dest_suspend(struct qmgr_dest *d, const char *reason);

/* No delivery agent for this destination's transport right now. */
static void dest_unreachable(struct qmgr_dest *d, double now)
{
    d->retry_at = now + 1; /* master will (re)start the agent */
    if (d->unreach_since == 0)
        d->unreach_since = now;
    else if (now - d->unreach_since > QMGR_AGENT_PATIENCE)
        dest_suspend(d, "mail transport unavailable");
    qmgr_ready_update(d, now);
}

static struct qmgr_job *dest_pop(struct qmgr_dest *d)
{
    struct qmgr_job *j = d->head;

    d->head = j->next;
    if (d->head == NULL) {
        d->tail = NULL;
        busy_del(d);
    }
    d->queued--;
    j->next = NULL;
    return j;
}

static void dest_push_front(struct qmgr_dest *d, struct qmgr_job *j)
{
    j->next = d->head;
    d->head = j;
    if (d->tail == NULL)
        d->tail = j;
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
    if (qmgr_ready_set_limit(dlimit)) /* first call, or a new limit */
        for (d = busy_head; d; d = d->bnext)
            qmgr_ready_update(d, now);
    qmgr_ready_wake(now);
    while (qmgr_g.st.inflight < plimit && (d = qmgr_ready_pick()) != NULL) {
        struct qmgr_job *j = dest_pop(d);
        if (qmgr_deliver_start(j) < 0) {
            dest_push_front(d, j);
            dest_unreachable(d, now);
            continue;
        }
        d->unreach_since = 0;
        d->inflight++;
        qmgr_g.st.inflight++;
        qmgr_ready_update(d, now);
    }
}

/* dest=fail: leave the destination alone and defer what waits for it. */
static void dest_suspend(struct qmgr_dest *d, const char *reason)
{
    d->suspended_until = (long long)time(NULL) + conf_int("destination_suspend_time");
    free(d->suspend_reason);
    d->suspend_reason = xstrdup(reason && *reason ? reason : "destination unreachable");
    log_info("destination %s:%s suspended for %llds: %s", d->transport, d->nexthop,
             conf_int("destination_suspend_time"), d->suspend_reason);
    qmgr_ready_forget(d); /* out of the heap before its jobs go */
    while (d->head) {
        struct qmgr_job *j = dest_pop(d);
        job_defer_suspended(j);
        qmgr_finish_check(j->msg);
        job_free(j);
    }
    qmgr_ready_update(d, qmgr_now());
}

static const struct {
    const char *name;
    int rr;
} result_map[] = {
    { "sent", RR_SENT }, { "deferred", RR_DEFERRED }, { "bounced", RR_BOUNCED },
};

static int result_rr(const char *s)
{
    for (size_t i = 0; s && i < sizeof(result_map) / sizeof(result_map[0]); i++)
        if (strcmp(s, result_map[i].name) == 0)
            return result_map[i].rr;
    return -1;
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
           result_rr(v[p + 1].value) >= 0 && strcmp(v[p + 2].name, "dsn") == 0 &&
           strcmp(v[p + 3].name, "reason") == 0;
}

/* A status=ok reply reports the job's recipients, in the job's order, as
 * rcpt/result/dsn/reason quadruples; it may stop short (the rest count as
 * crashed), nothing else. Any other status carries just a reason. */
int qmgr_sched_reply_matches(const struct qmgr_job *j, const attr_t *reply)
{
    const char *status = attr_get(reply, "status");
    size_t k = 0;

    if (status == NULL || strcmp(status, "ok") != 0)
        return 1;
    for (size_t p = 0; p < reply->n; p++) {
        if (strcmp(reply->v[p].name, "rcpt") != 0)
            continue;
        if (k >= j->n || !quad_ok(reply, p, j->rcpt[k]))
            return 0;
        k++;
        p += 3;
    }
    return 1;
}

/* Walk the quadruples (qmgr_sched_reply_matches checked them); returns the
 * first deferral reason (for a suspension) or NULL. Unreported
 * recipients: crashed. */
static const char *job_apply_reply(struct qmgr_job *j, const attr_t *reply)
{
    const char *first_defer = NULL;
    size_t k = 0;

    for (size_t p = 0; p < reply->n && k < j->n; p++) {
        if (strcmp(reply->v[p].name, "rcpt") != 0)
            continue;
        int rr = result_rr(reply->v[p + 1].value);
        const char *reason = reply->v[p + 3].value;
        if (rr == RR_DEFERRED && first_defer == NULL)
            first_defer = reason;
        qmgr_msg_rcpt_done(j->msg, j->rcpt[k++], rr, reply->v[p + 2].value, reason);
        p += 3;
    }
    for (; k < j->n; k++)
        qmgr_msg_rcpt_done(j->msg, j->rcpt[k], RR_CRASH, NULL, "delivery agent reply incomplete");
    return first_defer;
}

void qmgr_sched_job_done(struct qmgr_job *j, const attr_t *reply, const char *reason)
{
    struct qmgr_msg *m = j->msg;
    struct qmgr_dest *d = j->dest;
    const char *status = reply ? attr_get(reply, "status") : NULL;

    d->inflight--;
    qmgr_g.st.inflight--;
    qmgr_ready_update(d, qmgr_now());
    m->jobs--;
    m->guard++;
    if (status && strcmp(status, "ok") == 0) {
        const char *why = job_apply_reply(j, reply);
        const char *dest = attr_get(reply, "dest");
        if (dest && strcmp(dest, "fail") == 0)
            dest_suspend(d, why ? why : m->reason);
    } else {
        const char *why = reply ? attr_get_def(reply, "reason", "delivery agent failed") : reason;
        int rr = reply ? RR_DEFERRED : RR_CRASH;
        if (reply)
            log_warn("%s: delivery agent %s refused the job: %s", m->id, d->transport, why);
        for (size_t k = 0; k < j->n; k++)
            qmgr_msg_rcpt_done(m, j->rcpt[k], rr, "4.3.0", why);
    }
    job_free(j);
    m->guard--;
    qmgr_finish_check(m);
    qmgr_sched_dispatch();
}

void qmgr_sched_cancel_msg(struct qmgr_msg *m)
{
    for (struct qmgr_dest *d = busy_head, *dn; d; d = dn) {
        dn = d->bnext;
        struct qmgr_job **pp = &d->head, *prev = NULL;
        while (*pp) {
            struct qmgr_job *j = *pp;
            if (j->msg != m) {
                prev = j;
                pp = &j->next;
                continue;
            }
            *pp = j->next;
            if (d->tail == j)
                d->tail = prev;
            d->queued--;
            for (size_t k = 0; k < j->n; k++) {
                m->rr[j->rcpt[k]] = RR_CANCEL;
                m->waiting--;
            }
            m->jobs--;
            job_free(j);
        }
        if (d->head == NULL)
            busy_del(d);
        qmgr_ready_update(d, qmgr_now()); /* its first job may have gone */
    }
}

void qmgr_sched_unsuspend_all(void)
{
    double now = qmgr_now();

    for (size_t b = 0; b < DEST_HASH_SIZE; b++)
        for (struct qmgr_dest *d = dest_hash[b]; d; d = d->hnext) {
            d->suspended_until = 0;
            qmgr_ready_update(d, now);
        }
    qmgr_sched_dispatch();
}

static void dest_free(struct qmgr_dest *d)
{
    qmgr_ready_forget(d);
    while (d->head)
        job_free(dest_pop(d));
    free(d->key);
    free(d->transport);
    free(d->nexthop);
    free(d->suspend_reason);
    free(d);
}

/* Forget idle destinations (not busy, nothing in flight, not suspended). */
static void dest_sweep(void)
{
    for (size_t b = 0; b < DEST_HASH_SIZE; b++) {
        struct qmgr_dest **pp = &dest_hash[b];
        while (*pp) {
            struct qmgr_dest *d = *pp;
            if (!d->busy && d->inflight == 0 && !dest_suspended(d)) {
                *pp = d->hnext;
                dest_free(d);
            } else {
                pp = &d->hnext;
            }
        }
    }
}

void qmgr_sched_tick(void)
{
    static unsigned ticks;

    if (++ticks % 60 == 0)
        dest_sweep();
    qmgr_sched_dispatch();
}
