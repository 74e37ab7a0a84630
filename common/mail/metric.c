/* metric.c - the metric catalogue and the daemons' fire-and-forget client
 * of the metrics service (see metric.h for the protocol and the rules). */
#include "common/mail/metric.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/mail/conf.h"
#include "common/mail/proto.h"
#include "common/util/alloc.h"
#include "common/util/attr.h"
#include "common/util/buf.h"
#include "common/util/conn.h"
#include "common/util/log.h"

#define C METRIC_COUNTER
#define G METRIC_GAUGE
#define H METRIC_HISTOGRAM
#define D METRIC_FROM_DAEMONS
#define Q METRIC_FROM_QMGR

/* one metric a row: */
/* clang-format off */
const struct metric_def metric_table[METRIC_COUNT] = {
    [METRIC_RECEIVED] = { "postino_messages_received_total", C, D, 0, { NULL },
        "Messages accepted by smtpd (250 at end of data)" },
    [METRIC_DELIVERED] = { "postino_messages_delivered_total", C, D, 1, { "site" },
        "Recipients delivered, by site" },
    [METRIC_DEFERRED] = { "postino_messages_deferred_total", C, D, 2, { "site", "category" },
        "Recipient delivery attempts deferred, by site and bounce category" },
    [METRIC_BOUNCED] = { "postino_messages_bounced_total", C, D, 2, { "site", "category" },
        "Recipients bounced, by site and bounce category" },
    [METRIC_CONN_IN] = { "postino_connections_in_total", C, D, 0, { NULL },
        "SMTP connections accepted by smtpd" },
    [METRIC_CONN_OUT] = { "postino_connections_out_total", C, D, 0, { NULL },
        "SMTP/LMTP sessions opened by the delivery agent" },
    [METRIC_TLS_IN] = { "postino_tls_in_total", C, D, 1, { "protocol" },
        "TLS handshakes completed by smtpd, by TLS version" },
    [METRIC_TLS_OUT] = { "postino_tls_out_total", C, D, 1, { "protocol" },
        "TLS handshakes completed by the delivery agent, by TLS version" },
    [METRIC_AUTH_FAIL] = { "postino_auth_failures_total", C, D, 0, { NULL },
        "Failed SMTP AUTH attempts" },
    [METRIC_LATENCY] = { "postino_delivery_latency_seconds", H, D, 0, { NULL },
        "Time from arrival to delivery of a delivered recipient" },
    [METRIC_QUEUE] = { "postino_queue_messages", G, Q, 1, { "state" },
        "Messages in the queue, by state (incoming, active, deferred, hold)" },
    [METRIC_QUEUE_SITE] = { "postino_site_queued", G, Q, 1, { "site" },
        "Delivery jobs waiting in qmgr, by site" },
    [METRIC_OLDEST] = { "postino_queue_oldest_message_age_seconds", G, Q, 0, { NULL },
        "Age of the oldest message in the queue (0: empty)" },
    [METRIC_ACTIVE] = { "postino_active_deliveries", G, Q, 0, { NULL },
        "Delivery jobs in flight at delivery agents" },
    [METRIC_SITE_CONNS] = { "postino_site_connections", G, Q, 1, { "site" },
        "Connections in use, by site" },
    [METRIC_SITES] = { "postino_sites", G, Q, 1, { "state" },
        "Sites known to qmgr, by state (normal, throttled, suspended)" },
    [METRIC_QMGR_UP] = { "postino_qmgr_up", G, METRIC_FROM_SELF, 0, { NULL },
        "1 when qmgr answered this scrape's gauge request, else 0" },
    [METRIC_QUEUE_BY_SITE] = { "postino_queue_site_messages", G, Q, 1, { "site" },
        "Messages in the queue (any state) with recipients at the site (\"\": MX set not known now)" },
};

const double metric_latency_buckets[] = { 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400,
                                          86400, 259200 };
/* clang-format on */

const size_t metric_latency_nbuckets = sizeof(metric_latency_buckets) / sizeof(double);
_Static_assert(sizeof(metric_latency_buckets) / sizeof(double) <= METRIC_BUCKETS_MAX,
               "more latency buckets than a series holds");

int metric_find(const char *name)
{
    for (size_t i = 0; i < METRIC_COUNT; i++)
        if (strcmp(metric_table[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* ---- the client ---- */

static struct {
    int on;
    struct event_base *base;
    char *path;
    struct conn *conn;
    time_t retry_at;
    int warned;          /* the current outage has been logged */
    unsigned long drops; /* records dropped while the service lagged */
} cl;

static void client_closed(struct conn *c, const char *why, void *arg)
{
    cl.conn = NULL;
    cl.retry_at = 0; /* a restarted service: reconnect on the next record */
    if (why)
        log_debug("metrics service: %s", why);
}

/* The service answers nothing; a record from it is a bug. */
static enum conn_verdict client_record(struct conn *c, const attr_t *rec, void *arg,
                                       const char **why)
{
    *why = "the metrics service sent a record";
    return CONN_DROP;
}

static int client_connect(void)
{
    static const struct conn_ops ops = { .on_record = client_record, .on_close = client_closed };
    struct conn_cfg cfg = { .peer = "metrics service" };
    time_t now = time(NULL);

    if (now < cl.retry_at)
        return -1;
    cl.conn = conn_connect_unix(cl.base, cl.path, &cfg, &ops, NULL);
    if (cl.conn == NULL) {
        cl.retry_at = now + METRIC_RETRY_SECS;
        if (!cl.warned)
            log_warn("connect to %s: %s (metrics service not running?); metrics are dropped",
                     cl.path, strerror(errno));
        cl.warned = 1;
        return -1;
    }
    cl.warned = 0;
    return 0;
}

void metric_client_open(struct event_base *base, const char *spool)
{
    const char *listen = conf_str("metrics_listen");
    buf_t p = BUF_INIT;

    cl.base = base;
    cl.on = listen != NULL && *listen != '\0';
    if (!cl.on) {
        metric_client_close();
        return;
    }
    buf_printf(&p, "%s/%s", spool, SOCK_METRICS);
    free(cl.path);
    cl.path = buf_detach(&p);
}

void metric_client_close(void)
{
    if (cl.conn)
        conn_free(cl.conn);
    cl.conn = NULL;
    cl.on = 0;
    free(cl.path);
    cl.path = NULL;
}

int metric_enabled(void)
{
    return cl.on;
}

static void add_label(attr_t *r, const char *v)
{
    char cut[METRIC_LABEL_LEN + 1];

    str_lcpy(cut, v ? v : "", sizeof(cut));
    attr_add(r, "label", cut);
}

void metric_add(enum metric_id id, double value, const char *l1, const char *l2)
{
    const struct metric_def *d = &metric_table[id];
    attr_t r = ATTR_INIT;

    if (!cl.on || d->source != METRIC_FROM_DAEMONS || !isfinite(value))
        return;
    if (cl.conn == NULL && client_connect() < 0)
        return;
    if (conn_output_len(cl.conn) > METRIC_OUTPUT_MAX) {
        if (cl.drops++ % 10000 == 0)
            log_warn("metrics service does not keep up: %lu records dropped", cl.drops);
        return;
    }
    attr_add(&r, "proto", PROTO_VERSION);
    attr_add(&r, "request", "add");
    attr_add(&r, "metric", d->name);
    attr_addf(&r, "value", "%.17g", value);
    if (d->nlabels > 0)
        add_label(&r, l1);
    if (d->nlabels > 1)
        add_label(&r, l2);
    conn_send(cl.conn, &r);
    attr_destroy(&r);
}
