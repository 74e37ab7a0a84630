/* metrics_store.c - the counters and histograms the daemons report: one
 * series per metric and label set, in one hash table, each metric's series
 * also on a list in arrival order for rendering. Series are never removed
 * (Prometheus counters only grow), and there are at most
 * METRICS_SERIES_MAX of them. */
#include "metrics/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/util/log.h"

static struct htable table;
static int table_ready;
static STAILQ_HEAD(series_list, metrics_series) lists[METRIC_COUNT];
static int full_warned;

/* The table's key of a series: the metric id and the label values, each
 * NUL-terminated (label values may contain anything else). */
static void series_key(int id, const char *const *labels, size_t n, buf_t *key)
{
    buf_reset(key);
    buf_printf(key, "%d", id);
    buf_putc(key, '\0');
    for (size_t i = 0; i < n; i++) {
        buf_puts(key, labels[i]);
        buf_putc(key, '\0');
    }
}

static int series_match(const struct metrics_series *s, int id, const char *const *labels, size_t n)
{
    if (s->id != id)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(s->labels[i], labels[i]) != 0)
            return 0;
    return 1;
}

static struct metrics_series *series_find(int id, const char *const *labels, size_t n, unsigned h)
{
    for (struct hlink *l = htable_first(&table, h); l; l = htable_next(l, h)) {
        struct metrics_series *s = HTABLE_ENTRY(l, struct metrics_series, hlink);
        if (series_match(s, id, labels, n))
            return s;
    }
    return NULL;
}

static struct metrics_series *series_new(int id, const char *const *labels, size_t n, unsigned h)
{
    struct metrics_series *s;

    if (!table_ready) {
        htable_init(&table, 256);
        for (size_t i = 0; i < METRIC_COUNT; i++)
            STAILQ_INIT(&lists[i]);
        table_ready = 1;
    }
    if (htable_count(&table) >= METRICS_SERIES_MAX) {
        if (!full_warned)
            log_warn("more than %d metric series: new label values are dropped",
                     METRICS_SERIES_MAX);
        full_warned = 1;
        return NULL;
    }
    s = xcalloc(1, sizeof(*s));
    s->id = id;
    for (size_t i = 0; i < n; i++)
        s->labels[i] = xstrdup(labels[i]);
    htable_insert(&table, &s->hlink, h);
    STAILQ_INSERT_TAIL(&lists[id], s, link);
    return s;
}

static void series_apply(struct metrics_series *s, const struct metric_def *d, double v)
{
    s->value += v;
    if (d->type != METRIC_HISTOGRAM)
        return;
    s->count++;
    for (size_t i = 0; i < metric_latency_nbuckets; i++)
        if (v <= metric_latency_buckets[i]) {
            s->bucket[i]++;
            return;
        }
}

/* The record's value: a finite number, >= 0 (counters only grow; a
 * latency is never negative). */
static int record_value(const attr_t *rec, double *v)
{
    const char *s = attr_get(rec, "value");
    char *end;

    if (s == NULL || *s == '\0')
        return -1;
    *v = strtod(s, &end);
    return *end == '\0' && isfinite(*v) && *v >= 0 ? 0 : -1;
}

enum metrics_add_result metrics_store_add(const attr_t *rec, const char **why)
{
    const char *name = attr_get(rec, "metric"), *labels[METRIC_LABELS_MAX], *l;
    int id = name ? metric_find(name) : -1;
    size_t n = 0, pos = 0;
    buf_t key = BUF_INIT;
    double v;

    if (id < 0 || metric_table[id].source != METRIC_FROM_DAEMONS) {
        *why = "not a metric the daemons report";
        return METRICS_REFUSED;
    }
    while ((l = attr_next(rec, "label", &pos)) != NULL && n < METRIC_LABELS_MAX)
        labels[n++] = l;
    if (n != metric_table[id].nlabels || l != NULL || record_value(rec, &v) < 0) {
        *why = "wrong labels or value for the metric";
        return METRICS_REFUSED;
    }
    series_key(id, labels, n, &key);
    unsigned h = htable_hash_mem(key.data, key.len);
    buf_destroy(&key);
    struct metrics_series *s = table_ready ? series_find(id, labels, n, h) : NULL;
    if (s == NULL && (s = series_new(id, labels, n, h)) == NULL)
        return METRICS_FULL;
    series_apply(s, &metric_table[id], v);
    return METRICS_ADDED;
}

const struct metrics_series *metrics_store_first(enum metric_id id)
{
    return table_ready ? STAILQ_FIRST(&lists[id]) : NULL;
}

void metrics_store_free(void)
{
    for (size_t i = 0; table_ready && i < METRIC_COUNT; i++) {
        struct metrics_series *s;
        while ((s = STAILQ_FIRST(&lists[i])) != NULL) {
            STAILQ_REMOVE_HEAD(&lists[i], link);
            for (size_t k = 0; k < METRIC_LABELS_MAX; k++)
                free(s->labels[k]);
            free(s);
        }
    }
    if (table_ready)
        htable_destroy(&table);
    table_ready = 0;
}
