/* qmgr_fair.c - priority classes and round-robin between senders in a
 * destination's queue (see qmgr_fair.h for the rules). */
#include "qmgr/qmgr.h"
#include "qmgr/qmgr_fair.h"

#include <string.h>

#include "common/util/alloc.h"

/* One sender's jobs within one class. */
struct qmgr_fsender {
    char *key;
    struct qmgr_jobq jobs;
    TAILQ_ENTRY(qmgr_fsender) ring;
    struct hlink hlink;
    enum prio_class cls;
};

enum prio_class qmgr_fair_class(const struct qmgr_job *j)
{
    return (unsigned)j->msg->prio < PRIO_NCLASS ? j->msg->prio : PRIO_BULK;
}

static const char *job_key(const struct qmgr_job *j)
{
    return j->msg->fairkey ? j->msg->fairkey : "";
}

void qmgr_fairq_init(struct qmgr_fairq *q)
{
    memset(q, 0, sizeof(*q));
    for (int c = 0; c < PRIO_NCLASS; c++)
        TAILQ_INIT(&q->cls[c].ring);
}

static void sender_free(struct qmgr_fclass *fc, struct qmgr_fsender *s)
{
    TAILQ_REMOVE(&fc->ring, s, ring);
    htable_remove(&fc->senders, &s->hlink);
    free(s->key);
    free(s);
}

void qmgr_fairq_destroy(struct qmgr_fairq *q)
{
    for (int c = 0; c < PRIO_NCLASS; c++) {
        struct qmgr_fclass *fc = &q->cls[c];
        struct qmgr_fsender *s;
        while ((s = TAILQ_FIRST(&fc->ring)) != NULL)
            sender_free(fc, s);
        if (fc->senders.nb)
            htable_destroy(&fc->senders);
    }
    qmgr_fairq_init(q);
}

/* m's sender in class c, or NULL. */
static struct qmgr_fsender *sender_find(const struct qmgr_fairq *q, enum prio_class c,
                                        const char *key)
{
    const struct qmgr_fclass *fc = &q->cls[c];
    unsigned h = htable_hash_str(key);

    if (fc->senders.nb == 0)
        return NULL;
    for (struct hlink *l = htable_first(&fc->senders, h); l; l = htable_next(l, h)) {
        struct qmgr_fsender *s = HTABLE_ENTRY(l, struct qmgr_fsender, hlink);
        if (strcmp(s->key, key) == 0)
            return s;
    }
    return NULL;
}

/* j's sender in its class, created (at the end of the ring) if new. */
static struct qmgr_fsender *sender_get(struct qmgr_fairq *q, const struct qmgr_job *j)
{
    enum prio_class c = qmgr_fair_class(j);
    struct qmgr_fclass *fc = &q->cls[c];
    const char *key = job_key(j);
    struct qmgr_fsender *s = sender_find(q, c, key);

    if (s != NULL)
        return s;
    if (fc->senders.nb == 0)
        htable_init(&fc->senders, 8);
    s = xcalloc(1, sizeof(*s));
    s->key = xstrdup(key);
    s->cls = c;
    TAILQ_INIT(&s->jobs);
    TAILQ_INSERT_TAIL(&fc->ring, s, ring);
    htable_insert(&fc->senders, &s->hlink, htable_hash_str(key));
    return s;
}

void qmgr_fairq_push(struct qmgr_fairq *q, struct qmgr_job *j)
{
    struct qmgr_fsender *s = sender_get(q, j);

    TAILQ_INSERT_TAIL(&s->jobs, j, link);
    j->fs = s;
    q->cls[s->cls].n++;
    q->n++;
}

void qmgr_fairq_push_front(struct qmgr_fairq *q, struct qmgr_job *j)
{
    struct qmgr_fsender *s = sender_get(q, j);
    struct qmgr_fclass *fc = &q->cls[s->cls];

    TAILQ_INSERT_HEAD(&s->jobs, j, link);
    j->fs = s;
    TAILQ_REMOVE(&fc->ring, s, ring); /* its turn again */
    TAILQ_INSERT_HEAD(&fc->ring, s, ring);
    fc->n++;
    q->n++;
}

/* The class the next pick serves, or -1 when q is empty. */
static int pick_class(const struct qmgr_fairq *q, int weight)
{
    int hi = -1, lo = -1;

    for (int c = PRIO_NCLASS - 1; c >= 0; c--) {
        if (q->cls[c].n == 0)
            continue;
        if (hi < 0)
            hi = c;
        else if (lo < 0)
            lo = c;
    }
    if (lo >= 0 && weight > 0 && q->streak >= weight)
        return lo;
    return hi;
}

struct qmgr_job *qmgr_fairq_peek(const struct qmgr_fairq *q, int weight)
{
    int c = pick_class(q, weight);

    if (c < 0)
        return NULL;
    return TAILQ_FIRST(&TAILQ_FIRST(&q->cls[c].ring)->jobs);
}

void qmgr_fairq_remove(struct qmgr_fairq *q, struct qmgr_job *j)
{
    struct qmgr_fsender *s = j->fs;
    struct qmgr_fclass *fc = &q->cls[s->cls];

    TAILQ_REMOVE(&s->jobs, j, link);
    j->fs = NULL;
    fc->n--;
    q->n--;
    if (TAILQ_EMPTY(&s->jobs))
        sender_free(fc, s);
}

struct qmgr_job *qmgr_fairq_pop(struct qmgr_fairq *q, int weight)
{
    int c = pick_class(q, weight);
    int lower_waits = 0;
    struct qmgr_fclass *fc;
    struct qmgr_fsender *s;
    struct qmgr_job *j;

    if (c < 0)
        return NULL;
    for (int k = 0; k < c; k++)
        lower_waits |= q->cls[k].n > 0;
    q->streak = lower_waits ? q->streak + 1 : 0;
    fc = &q->cls[c];
    s = TAILQ_FIRST(&fc->ring);
    j = TAILQ_FIRST(&s->jobs);
    if (TAILQ_NEXT(j, link) != NULL) { /* s keeps jobs: to the back of the ring */
        TAILQ_REMOVE(&fc->ring, s, ring);
        TAILQ_INSERT_TAIL(&fc->ring, s, ring);
    }
    qmgr_fairq_remove(q, j);
    return j;
}

size_t qmgr_fairq_take_msg(struct qmgr_fairq *q, const struct qmgr_msg *m, struct qmgr_jobq *out)
{
    enum prio_class c = (unsigned)m->prio < PRIO_NCLASS ? m->prio : PRIO_BULK;
    struct qmgr_fsender *s = sender_find(q, c, m->fairkey ? m->fairkey : "");
    struct qmgr_job *j, *next;
    size_t n = 0;

    for (j = s ? TAILQ_FIRST(&s->jobs) : NULL; j; j = next) {
        next = TAILQ_NEXT(j, link);
        if (j->msg != m)
            continue;
        qmgr_fairq_remove(q, j); /* may free s, but only with its last job */
        TAILQ_INSERT_TAIL(out, j, link);
        n++;
    }
    return n;
}
