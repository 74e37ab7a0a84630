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
 * then end=1 count=N: messages by state, by site and the oldest arrival
 * (one scan of the index, as "postino queue stats" does), jobs in flight,
 * per site the jobs waiting and connections in use, sites by state. */
#include "qmgr/qmgr.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "common/mail/metric.h"
#include "common/util/alloc.h"
#include "common/util/attr.h"
#include "common/util/htable.h"
#include "qmgr/qmgr_route.h"

/* Sites reported by postino_queue_site_messages, the biggest first (the
 * rest are summed under site="(other)"). */
#define QMGR_METRICS_SITES_MAX 500
/* Recipients of one message looked at for its sites. */
#define QMGR_METRICS_RCPTS_MAX 100

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

/* Messages of the queue by site: each pending recipient's domain is
 * routed (qmgr_route_rcpt, once per domain and scan) and named by its site
 * as qmgr knows it now; a domain whose MX set qmgr does not hold counts
 * under site="". A message counts once per site. */
struct site_count {
    struct hlink hlink;
    char *name;
    size_t n;
    unsigned long long last; /* the message that counted here last */
};

struct dom_site {
    struct hlink hlink;
    char *domain;
    struct site_count *site;
};

struct scan {
    size_t n[4];
    long long oldest; /* arrival, 0: none */
    struct htable sites, domains;
    unsigned long long msg;
};

static struct site_count *site_count_get(struct scan *sc, const char *name)
{
    unsigned h = htable_hash_str(name);
    struct site_count *c;

    for (struct hlink *l = htable_first(&sc->sites, h); l; l = htable_next(l, h)) {
        c = HTABLE_ENTRY(l, struct site_count, hlink);
        if (strcmp(c->name, name) == 0)
            return c;
    }
    c = xcalloc(1, sizeof(*c));
    c->name = xstrdup(name);
    htable_insert(&sc->sites, &c->hlink, h);
    return c;
}

static struct site_count *domain_site(struct scan *sc, const char *rcpt, const buf_t *domain)
{
    unsigned h = htable_hash_str(buf_str(domain));
    buf_t transport = BUF_INIT, nexthop = BUF_INIT, name = BUF_INIT;
    struct dom_site *d;

    for (struct hlink *l = htable_first(&sc->domains, h); l; l = htable_next(l, h)) {
        d = HTABLE_ENTRY(l, struct dom_site, hlink);
        if (strcmp(d->domain, buf_str(domain)) == 0)
            return d->site;
    }
    qmgr_route_rcpt(rcpt, &transport, &nexthop);
    if (!qmgr_site_name_for(buf_str(&transport), buf_str(&nexthop), &name))
        buf_reset(&name);
    d = xcalloc(1, sizeof(*d));
    d->domain = xstrdup(buf_str(domain));
    d->site = site_count_get(sc, buf_str(&name));
    htable_insert(&sc->domains, &d->hlink, h);
    buf_destroy(&transport);
    buf_destroy(&nexthop);
    buf_destroy(&name);
    return d->site;
}

static int scan_cb(const struct qmgr_qidx_rec *rec, void *arg)
{
    struct scan *sc = arg;
    buf_t domain = BUF_INIT;

    if (rec->state >= QS_INCOMING && rec->state <= QS_HOLD)
        sc->n[rec->state]++;
    if (rec->arrival > 0 && (sc->oldest == 0 || rec->arrival < sc->oldest))
        sc->oldest = rec->arrival;
    sc->msg++;
    for (size_t i = 0; rec->rcpts && rec->rcpts[i] && i < QMGR_METRICS_RCPTS_MAX; i++) {
        qmgr_route_domain(rec->rcpts[i], &domain);
        struct site_count *c = domain_site(sc, rec->rcpts[i], &domain);
        if (c->last != sc->msg) {
            c->last = sc->msg;
            c->n++;
        }
    }
    buf_destroy(&domain);
    return 0;
}

static int by_count(const void *a, const void *b)
{
    const struct site_count *x = *(const struct site_count *const *)a;
    const struct site_count *y = *(const struct site_count *const *)b;

    return x->n < y->n ? 1 : x->n > y->n ? -1 : strcmp(x->name, y->name);
}

/* The by-site samples, biggest first; frees the scan's tables. */
static void scan_sites_out(struct scan *sc, struct evbuffer *out, size_t *count)
{
    size_t n = htable_count(&sc->sites), k = 0, other = 0;
    struct site_count **v = xcalloc(n + 1, sizeof(*v));
    struct hlink *l, *next;

    HTABLE_EACH(&sc->sites, l, next)
    v[k++] = HTABLE_ENTRY(l, struct site_count, hlink);
    qsort(v, n, sizeof(*v), by_count);
    for (k = 0; k < n; k++) {
        if (k < QMGR_METRICS_SITES_MAX)
            sample(out, METRIC_QUEUE_BY_SITE, (double)v[k]->n, v[k]->name, count);
        else
            other += v[k]->n;
        free(v[k]->name);
        free(v[k]);
    }
    if (n > QMGR_METRICS_SITES_MAX)
        sample(out, METRIC_QUEUE_BY_SITE, (double)other, "(other)", count);
    free(v);
    HTABLE_EACH(&sc->domains, l, next)
    {
        struct dom_site *d = HTABLE_ENTRY(l, struct dom_site, hlink);
        free(d->domain);
        free(d);
    }
    htable_destroy(&sc->sites);
    htable_destroy(&sc->domains);
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
    static const enum qmgr_qidx_state states[] = { QS_INCOMING, QS_ACTIVE, QS_DEFERRED, QS_HOLD };
    static const enum qmgr_site_state sstates[] = { SITE_NORMAL, SITE_THROTTLED, SITE_SUSPENDED };
    struct scan sc;
    size_t count = 0;
    struct site_scan ss = { out, &count, { 0, 0, 0 } };
    long long now = (long long)time(NULL);
    attr_t r = ATTR_INIT;

    memset(&sc, 0, sizeof(sc));
    htable_init(&sc.sites, 64);
    htable_init(&sc.domains, 256);
    qmgr_qindex_scan_all(qmgr_g.qi, scan_cb, &sc);
    scan_sites_out(&sc, out, &count);
    for (size_t i = 0; i < 4; i++)
        sample(out, METRIC_QUEUE, (double)sc.n[states[i]], qmgr_qidx_state_name(states[i]), &count);
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
