/* qmgr_ready.c - which destination gets the next free delivery slot.
 *
 * Dispatch wants, among the destinations that have queued jobs, free
 * concurrency and no reason to wait, the one whose next job is of the
 * highest priority class and, among those, the oldest (FIFO across
 * destinations; which job is next within one is qmgr_fair.c's rule). Scanning every busy destination for it made
 * each dispatch O(destinations) (13 s of CPU for 100,000 jobs to 10,000
 * domains). Instead:
 *   - a binary min-heap keyed by the next job's class and sequence number holds
 *     exactly the destinations that may take a job now: a pick is O(1),
 *     an update O(log n);
 *   - a "timed" list holds those that have work and room but must wait
 *     for a time (agent unreachable: retry_at; suspended_until), with the
 *     earliest wake-up remembered, so it is walked only when one is due.
 * qmgr_ready_update(d) is called after anything that changes d's first job,
 * its in-flight count, retry_at or suspension (qmgr_sched.c does). */
#include "qmgr/qmgr.h"

#include <stdlib.h>

#include "common/util/alloc.h"

static struct qmgr_dest **heap;
static size_t heap_n, heap_cap;
static LIST_HEAD(, qmgr_dest) timed = LIST_HEAD_INITIALIZER(timed);
static double timed_min;   /* earliest wake-up in the timed list */
static int dest_limit = 1; /* default_destination_concurrency_limit */

/* The destination whose next job is of a higher class goes first (a
 * transactional job is not held up behind another destination's bulk
 * ones at the same site), then the older next job. */
static int before(const struct qmgr_dest *a, const struct qmgr_dest *b)
{
    const struct qmgr_job *ja = qmgr_sched_head(a), *jb = qmgr_sched_head(b);
    enum prio_class ca = qmgr_fair_class(ja), cb = qmgr_fair_class(jb);

    return ca != cb ? ca > cb : ja->seq < jb->seq;
}

static void heap_set(size_t i, struct qmgr_dest *d)
{
    heap[i] = d;
    d->hpos = i + 1;
}

static void sift_up(size_t i)
{
    struct qmgr_dest *d = heap[i];

    while (i > 0 && before(d, heap[(i - 1) / 2])) {
        heap_set(i, heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(i, d);
}

static void sift_down(size_t i)
{
    struct qmgr_dest *d = heap[i];

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= heap_n)
            break;
        if (c + 1 < heap_n && before(heap[c + 1], heap[c]))
            c++;
        if (!before(heap[c], d))
            break;
        heap_set(i, heap[c]);
        i = c;
    }
    heap_set(i, d);
}

static void heap_put(struct qmgr_dest *d)
{
    if (d->hpos) { /* already there: its first job may have changed */
        sift_up(d->hpos - 1);
        sift_down(d->hpos - 1);
        return;
    }
    heap = xgrow(heap, &heap_cap, heap_n + 1, sizeof(*heap));
    heap_set(heap_n++, d);
    sift_up(heap_n - 1);
}

static void heap_del(struct qmgr_dest *d)
{
    size_t i = d->hpos;
    struct qmgr_dest *moved;

    if (i-- == 0)
        return;
    d->hpos = 0;
    if (i == --heap_n)
        return;
    moved = heap[heap_n]; /* the last one fills the hole, then finds its place */
    heap_set(i, moved);
    sift_up(i);
    sift_down(moved->hpos - 1);
}

static void timed_del(struct qmgr_dest *d)
{
    if (!d->timed)
        return;
    d->timed = 0;
    LIST_REMOVE(d, tlink);
}

static void timed_add(struct qmgr_dest *d, double wake)
{
    if (!d->timed) {
        d->timed = 1;
        LIST_INSERT_HEAD(&timed, d, tlink);
    }
    if (wake < timed_min || timed_min == 0)
        timed_min = wake;
}

/* When d may be dispatched to again, or 0 when it need not wait. */
static double dest_wake(const struct qmgr_dest *d, double now)
{
    double w = d->retry_at;

    if ((double)d->suspended_until > w)
        w = (double)d->suspended_until;
    return w > now ? w : 0;
}

void qmgr_ready_update(struct qmgr_dest *d, double now)
{
    double wake;

    /* A destination of a known site may use all of the site's
     * connections (qmgr_site_admit holds the site to its limit). */
    int limit = d->site ? d->site->conc_limit : dest_limit;

    if (d->q.n == 0 || d->inflight >= limit) {
        heap_del(d); /* a job completion or a new job calls us again */
        timed_del(d);
    } else if ((wake = dest_wake(d, now)) > 0) {
        heap_del(d);
        timed_add(d, wake);
    } else {
        timed_del(d);
        heap_put(d);
    }
}

void qmgr_ready_forget(struct qmgr_dest *d)
{
    heap_del(d);
    timed_del(d);
}

struct qmgr_dest *qmgr_ready_pick(void)
{
    return heap_n > 0 ? heap[0] : NULL;
}

void qmgr_ready_wake(double now)
{
    struct qmgr_dest *d, *next;

    if (LIST_EMPTY(&timed) || now < timed_min)
        return;
    timed_min = 0;
    for (d = LIST_FIRST(&timed); d; d = next) {
        next = LIST_NEXT(d, tlink);
        qmgr_ready_update(d, now); /* re-adds with its wake-up if still waiting */
    }
}

int qmgr_ready_set_limit(int limit)
{
    if (limit == dest_limit)
        return 0;
    dest_limit = limit;
    return 1;
}
