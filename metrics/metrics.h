/* metrics.h - the metrics service: counters and histograms reported by the
 * daemons (metrics_store.c, fed by metrics_feed.c), gauges asked of qmgr at
 * scrape time, and the Prometheus text endpoint (metrics_http.c). */
#ifndef POSTINO_METRICS_H
#define POSTINO_METRICS_H

#include <stddef.h>
#include <sys/queue.h>

#include "common/mail/metric.h"
#include "common/util/attr.h"
#include "common/util/buf.h"
#include "common/util/htable.h"

/* Series kept at most (label sets over all metrics); more are dropped
 * with a warning, so a stream of odd site names cannot eat the memory. */
#define METRICS_SERIES_MAX 20000

/* ---- metrics_store.c: the series the daemons reported ---- */

struct metrics_series {
    struct hlink hlink;
    STAILQ_ENTRY(metrics_series) link; /* the metric's series, oldest first */
    int id;                            /* enum metric_id */
    char *labels[METRIC_LABELS_MAX];
    double value;                                  /* counter; histogram: the sum */
    unsigned long long count;                      /* histogram: observations */
    unsigned long long bucket[METRIC_BUCKETS_MAX]; /* histogram: per bucket, not cumulative */
};

enum metrics_add_result {
    METRICS_ADDED,
    METRICS_FULL,    /* a new series beyond METRICS_SERIES_MAX: dropped */
    METRICS_REFUSED, /* not a daemon metric, wrong labels, bad value */
};
/* Apply one request=add record (metric= value= label=...). */
enum metrics_add_result metrics_store_add(const attr_t *rec, const char **why);
void metrics_store_free(void);
/* The series of metric id, oldest first (NULL: none yet). */
const struct metrics_series *metrics_store_first(enum metric_id id);

/* ---- metrics_render.c: the Prometheus text format 0.0.4 ---- */

/* Render every metric of the catalogue: the store's series, the gauge
 * samples qmgr sent (records metric= value= label=..., already checked by
 * metrics_gauge_ok), and postino_qmgr_up. */
void metrics_render(buf_t *out, const attr_t *gauges, size_t ngauges, int qmgr_up);
/* Is a record from qmgr a sample of a qmgr gauge with the right labels? */
int metrics_gauge_ok(const attr_t *rec);
/* Label value and HELP text escaping of the text format. */
void metrics_escape_label(buf_t *out, const char *v);
void metrics_format_value(buf_t *out, double v);

/* ---- metrics_feed.c: the daemons' connections on private/metrics ---- */

struct event_base;
void metrics_feed_accept(struct event_base *base, int fd);
void metrics_feed_close_all(void);

/* ---- metrics_http.c: the endpoint ---- */

/* Listen on "host:port" ("[v6]:port"); scrapes ask qmgr's control
 * socket at path control for the gauges. 0, or -1 (logged). */
int metrics_http_start(struct event_base *base, const char *listen, const char *control);
void metrics_http_stop(void);

#endif
