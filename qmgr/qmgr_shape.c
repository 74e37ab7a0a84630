/* qmgr_shape.c - the pure half of "postino queue summary": qshape's age
 * buckets and a table of rows by name, sorted biggest first. Why pure:
 * the bucket edges and the order are what an operator reads, so they are
 * tested without a running qmgr (tests/unit/qmgr/test_shape.c). */
#include "qmgr/qmgr_shape.h"

#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"

/* Upper edges in minutes; the last bucket has none. */
static const long long edges[QSHAPE_NBUCKETS - 1] = { 5, 10, 20, 40, 80, 160, 320, 640, 1280 };
static const char *const labels[QSHAPE_NBUCKETS] = { "5",   "10",  "20",  "40",   "80",
                                                     "160", "320", "640", "1280", "1280+" };

int qmgr_qshape_bucket(long long age)
{
    if (age < 0)
        age = 0;
    for (int b = 0; b < QSHAPE_NBUCKETS - 1; b++)
        if (age < edges[b] * 60)
            return b;
    return QSHAPE_NBUCKETS - 1;
}

const char *qmgr_qshape_label(int b)
{
    return b >= 0 && b < QSHAPE_NBUCKETS ? labels[b] : "?";
}

void qmgr_qshape_init(struct qshape *q)
{
    memset(q, 0, sizeof(*q));
    htable_init(&q->rows, 64);
    q->all.name = xstrdup("TOTAL");
}

void qmgr_qshape_destroy(struct qshape *q)
{
    struct hlink *l, *next;

    HTABLE_EACH(&q->rows, l, next)
    {
        struct qmgr_qshape_row *r = HTABLE_ENTRY(l, struct qmgr_qshape_row, hlink);
        htable_remove(&q->rows, l);
        free(r->name);
        free(r);
    }
    htable_destroy(&q->rows);
    free(q->all.name);
    q->all.name = NULL;
}

struct qmgr_qshape_row *qmgr_qshape_row(struct qshape *q, const char *name)
{
    unsigned h = htable_hash_str(name);
    struct qmgr_qshape_row *r;

    for (struct hlink *l = htable_first(&q->rows, h); l; l = htable_next(l, h)) {
        r = HTABLE_ENTRY(l, struct qmgr_qshape_row, hlink);
        if (strcmp(r->name, name) == 0)
            return r;
    }
    r = xcalloc(1, sizeof(*r));
    r->name = xstrdup(name);
    htable_insert(&q->rows, &r->hlink, h);
    return r;
}

void qmgr_qshape_count(struct qmgr_qshape_row *r, int b)
{
    if (b < 0 || b >= QSHAPE_NBUCKETS)
        b = QSHAPE_NBUCKETS - 1;
    r->n[b]++;
    r->total++;
}

static int row_cmp(const void *a, const void *b)
{
    const struct qmgr_qshape_row *x = *(const struct qmgr_qshape_row *const *)a;
    const struct qmgr_qshape_row *y = *(const struct qmgr_qshape_row *const *)b;

    if (x->total != y->total)
        return x->total > y->total ? -1 : 1;
    return strcmp(x->name, y->name);
}

struct qmgr_qshape_row **qmgr_qshape_sorted(const struct qshape *q, size_t *n)
{
    size_t count = htable_count(&q->rows), i = 0;
    struct qmgr_qshape_row **v = xcalloc(count ? count : 1, sizeof(*v));
    struct hlink *l = NULL;

    while ((l = htable_walk(&q->rows, l)) != NULL)
        v[i++] = HTABLE_ENTRY(l, struct qmgr_qshape_row, hlink);
    qsort(v, i, sizeof(*v), row_cmp);
    *n = i;
    return v;
}
