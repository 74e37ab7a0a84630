/* metric.h - the metrics postino exports, and the daemons' way to report
 * them to the metrics service (metrics/).
 *
 * The catalogue (metric_table) is the one list of metric names, types,
 * labels and help texts: the senders name a metric by its id, the metrics
 * daemon checks every record against the table and renders HELP/TYPE
 * from it. Counters and histograms come from the daemons as records on
 * private/metrics; gauges are asked of qmgr at scrape time (qmgr's control
 * request "metrics").
 *
 * The client is fire-and-forget: one persistent non-blocking connection
 * per process, records queued on the caller's event loop, never a wait.
 * With metrics_listen empty (the default) metric_client_open() leaves the
 * client off and metric_add() returns after one test of a static flag: no
 * syscall, no allocation. When the service is down or does not keep up
 * (more than METRIC_OUTPUT_MAX bytes unsent), records are dropped: metrics
 * are never worth delaying mail. A lost connection is retried at most
 * every METRIC_RETRY_SECS.
 *
 * Record (proto=1 on every record, as conn.h wants):
 *   request=add  metric=NAME  value=NUMBER  label=VALUE (one per label of
 *   the metric, in the catalogue's order)
 * A counter adds value (>= 0); a histogram observes it. */
#ifndef POSTINO_METRIC_H
#define POSTINO_METRIC_H

#include <stddef.h>

#define METRIC_LABELS_MAX  2
#define METRIC_LABEL_LEN   255 /* longer label values are cut */
#define METRIC_OUTPUT_MAX  (256 * 1024)
#define METRIC_RETRY_SECS  10
#define METRIC_BUCKETS_MAX 16

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

/* Where a metric's samples come from. */
enum metric_source {
    METRIC_FROM_DAEMONS, /* records on private/metrics */
    METRIC_FROM_QMGR,    /* qmgr's control request "metrics", at scrape time */
    METRIC_FROM_SELF,    /* the metrics daemon itself */
};

/* The ids index metric_table (same order). */
enum metric_id {
    METRIC_RECEIVED,
    METRIC_DELIVERED,
    METRIC_DEFERRED,
    METRIC_BOUNCED,
    METRIC_CONN_IN,
    METRIC_CONN_OUT,
    METRIC_TLS_IN,
    METRIC_TLS_OUT,
    METRIC_AUTH_FAIL,
    METRIC_LATENCY,
    METRIC_QUEUE,
    METRIC_QUEUE_SITE,
    METRIC_OLDEST,
    METRIC_ACTIVE,
    METRIC_SITE_CONNS,
    METRIC_SITES,
    METRIC_QMGR_UP,
    METRIC_QUEUE_BY_SITE,
    METRIC_COUNT
};

struct metric_def {
    const char *name;
    enum metric_type type;
    enum metric_source source;
    size_t nlabels;
    const char *labels[METRIC_LABELS_MAX];
    const char *help;
};

extern const struct metric_def metric_table[METRIC_COUNT];
/* Upper bounds of the delivery latency histogram, seconds, ascending
 * (+Inf is implied). */
extern const double metric_latency_buckets[];
extern const size_t metric_latency_nbuckets;

/* The id of a metric name, or -1. */
int metric_find(const char *name);

struct event_base;
/* Read metrics_listen: non-empty turns the client on (it connects to
 * <spool>/private/metrics on the first record), empty turns it off.
 * May be called again after a reload. */
void metric_client_open(struct event_base *base, const char *spool);
void metric_client_close(void);
/* Is the client on? (Callers test it before work done only for a metric.) */
int metric_enabled(void);
/* Report value for metric id with its labels (NULL for those it lacks;
 * NULL is sent as ""). Does nothing while the client is off. */
void metric_add(enum metric_id id, double value, const char *l1, const char *l2);

#endif
