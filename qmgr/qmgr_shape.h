/* qmgr_shape.h - the queue's shape: messages per site (or domain) and age
 * bucket, for "postino queue summary" (like Postfix's qshape).
 *
 * Pure (tests/unit/qmgr/test_shape.c): the age buckets and a table of rows
 * keyed by name; qmgr_shape_ctl.c fills it from the index and answers the
 * control request. Buckets are qshape's defaults: a message younger than 5
 * minutes counts in the "5" column, then 10, 20, ... 1280 (each twice the
 * one before), and "1280+" for the older ones. */
#ifndef POSTINO_QMGR_SHAPE_H
#define POSTINO_QMGR_SHAPE_H

#include <stddef.h>

#include "common/util/htable.h"

#define QSHAPE_NBUCKETS 10

struct qmgr_qshape_row {
    char *name;
    long long total;
    long long n[QSHAPE_NBUCKETS];
    struct hlink hlink;
};

struct qshape {
    struct htable rows;
    struct qmgr_qshape_row all; /* every message once (name "TOTAL") */
};

/* The bucket of a message age (seconds, negative counts as 0). */
int qmgr_qshape_bucket(long long age);
/* The column label of bucket b: "5" ... "1280", "1280+". */
const char *qmgr_qshape_label(int b);
void qmgr_qshape_init(struct qshape *q);
void qmgr_qshape_destroy(struct qshape *q);
/* The row named name (created empty the first time). */
struct qmgr_qshape_row *qmgr_qshape_row(struct qshape *q, const char *name);
/* Count one message in row r, bucket b. */
void qmgr_qshape_count(struct qmgr_qshape_row *r, int b);
/* The rows, biggest total first (ties by name); *n set. Free the array
 * (not the rows) with free(). */
struct qmgr_qshape_row **qmgr_qshape_sorted(const struct qshape *q, size_t *n);

#endif
