/* qmgr_metrics.c - qmgr's part in the metrics (common/mail/metric.h).
 *
 * Outcomes: every recipient outcome qmgr records (a delivery agent's
 * reply, qmgr's own deferrals and bounces) is reported to the metrics
 * service as a counter by site and category, and a delivered one also as
 * an observation of the arrival-to-delivery latency. With metrics_listen
 * empty that is one test of a flag.
 *
 * Gauges: the control request "metrics" (from the metrics service at each
 * scrape) answers one record per sample, metric=NAME value=N label=...,
 * then end=1 count=N: messages by state and the oldest arrival (one scan
 * of the index, as "postino queue stats" does), jobs in flight, and per
 * site the jobs waiting and connections in use, sites by state. */
#include "qmgr/qmgr.h"

#include <time.h>

#include <event2/buffer.h>

#include "common/mail/metric.h"
#include "common/util/attr.h"

void qmgr_metrics_outcome(const struct qmgr_msg *m, const struct qmgr_site *s, enum qmgr_rr rr,
                          const char *category)
{
    const char *site = s ? s->name : "";
    const char *cat = category && *category ? category : "other";

    if (!metric_enabled())
        return;
    if (rr == RR_SENT) {
        double now = qmgr_now();
        double arrival = (double)m->env.arrival.tv_sec + m->env.arrival.tv_usec / 1e6;
        metric_add(METRIC_DELIVERED, 1, site, NULL);
        metric_add(METRIC_LATENCY, now > arrival ? now - arrival : 0, NULL, NULL);
    } else if (rr == RR_DEFERRED) {
        metric_add(METRIC_DEFERRED, 1, site, cat);
    } else if (rr == RR_BOUNCED) {
        metric_add(METRIC_BOUNCED, 1, site, cat);
    }
}

static void sample(struct evbuffer *out, enum metric_id id, double v, const char *label,
                   size_t *count)
{
    attr_t r = ATTR_INIT;

    attr_add(&r, "metric", metric_table[id].name);
    attr_addf(&r, "value", "%.17g", v);
    if (label)
        attr_add(&r, "label", label);
    attr_to_evbuffer(out, &r);
    attr_destroy(&r);
    (*count)++;
}

struct scan {
    size_t n[4];
    long long oldest; /* arrival, 0: none */
};

static int scan_cb(const struct qidx_rec *rec, void *arg)
{
    struct scan *sc = arg;

    if (rec->state >= QS_INCOMING && rec->state <= QS_HOLD)
        sc->n[rec->state]++;
    if (rec->arrival > 0 && (sc->oldest == 0 || rec->arrival < sc->oldest))
        sc->oldest = rec->arrival;
    return 0;
}

struct site_scan {
    struct evbuffer *out;
    size_t *count;
    size_t state[3];
};

static void site_cb(struct qmgr_site *s, void *arg)
{
    struct site_scan *ss = arg;

    sample(ss->out, METRIC_QUEUE_SITE, (double)qmgr_site_queued(s), s->name, ss->count);
    sample(ss->out, METRIC_SITE_CONNS, s->conns, s->name, ss->count);
    if (s->state <= SITE_SUSPENDED)
        ss->state[s->state]++;
}

int qmgr_metrics_ctl(const attr_t *req, struct evbuffer *out, const char **err)
{
    static const enum qidx_state states[] = { QS_INCOMING, QS_ACTIVE, QS_DEFERRED, QS_HOLD };
    static const enum qmgr_site_state sstates[] = { SITE_NORMAL, SITE_THROTTLED, SITE_SUSPENDED };
    struct scan sc = { { 0, 0, 0, 0 }, 0 };
    size_t count = 0;
    struct site_scan ss = { out, &count, { 0, 0, 0 } };
    long long now = (long long)time(NULL);
    attr_t r = ATTR_INIT;

    qindex_scan_all(qmgr_g.qi, scan_cb, &sc);
    for (size_t i = 0; i < 4; i++)
        sample(out, METRIC_QUEUE, (double)sc.n[states[i]], qidx_state_name(states[i]), &count);
    sample(out, METRIC_OLDEST, sc.oldest && now > sc.oldest ? (double)(now - sc.oldest) : 0, NULL,
           &count);
    sample(out, METRIC_ACTIVE, (double)qmgr_g.st.inflight, NULL, &count);
    qmgr_site_foreach(site_cb, &ss);
    for (size_t i = 0; i < 3; i++)
        sample(out, METRIC_SITES, (double)ss.state[sstates[i]], qmgr_site_state_name(sstates[i]),
               &count);
    attr_add(&r, "end", "1");
    attr_add_ll(&r, "count", (long long)count);
    attr_to_evbuffer(out, &r);
    attr_destroy(&r);
    return 0;
}
