/* qmgr_site.c - the live sites: MX lookups, the site table, policies,
 * admission (connections, rates), and the adaptive state changes.
 *
 * Why: limits that matter to a mailbox provider are per provider, not
 * per recipient domain. qmgr learns each smtp destination's MX set with
 * c-ares (nothing blocks the loop; results are cached for the MX records'
 * TTL, between a minute and shaping_mx_cache_time; failures for a minute) and files the destination
 * under the site of that set (qmgr_site_group). A lookup failure leaves
 * the domain in a site of its own named after it; nexthops that are not
 * MX-routed ([host], other transports) are sites of their own too.
 *
 * A destination whose site says "not now" is parked on the site, off the
 * ready heap; the site wakes its parked destinations when a connection
 * frees, when its rate timer fires (libevent, no polling) or when a state
 * ends. */
#include "qmgr/qmgr.h"
#include "qmgr/qmgr_site.h"

#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "common/util/alloc.h"
#include "common/util/log.h"
#include "common/mail/conf.h"
#include "common/glue/dict.h"
#include "common/glue/dns.h"
#include "qmgr/qmgr_shared.h"

/* A domain's MX lookup: in flight (dests wait on it), or its answer. */
struct mxent {
    char *domain;
    char *key, *name; /* the site, once known */
    char **hosts;     /* for the policy lookup of a new site */
    size_t nhosts;
    long long expires;
    int pending;
    LIST_HEAD(, qmgr_dest) waiting;
    struct hlink hlink;
};

static struct htable sites;  /* by key */
static struct htable mxents; /* by domain */
static struct dict **maps;
static size_t nmaps;
static struct qmgr_rollup *rollup;
static size_t nrollup;
static struct dns_ctx *dns;

#define MX_FAIL_CACHE 60

const char *qmgr_site_state_name(enum qmgr_site_state st)
{
    static const char *const names[] = { "normal", "throttled", "suspended" };
    return names[st];
}

/* ---- set-up ---- */

/* Every row once at start-up, so a typo is reported now, not when the
 * site it is for first gets mail (the row is then ignored). */
static int check_row(const char *key, const char *value, void *arg)
{
    struct qmgr_shaping p;
    buf_t err = BUF_INIT;

    memset(&p, 0, sizeof(p));
    if (qmgr_shaping_parse(value, &p, &err) < 0)
        log_warn("shaping_maps %s: row \"%s\": %s; the row will be ignored", (const char *)arg, key,
                 buf_str(&err));
    qmgr_shaping_destroy(&p);
    buf_destroy(&err);
    return 0;
}

void qmgr_site_init(void)
{
    char **list = conf_list("shaping_maps");
    buf_t err = BUF_INIT;
    int n;

    for (size_t i = 0; list && list[i]; i++) {
        struct dict *d = dict_open(list[i], &err);
        if (d == NULL)
            log_fatal("shaping_maps: cannot open %s: %s (build it with \"postino map\")", list[i],
                      buf_str(&err));
        maps = xrealloc(maps, (nmaps + 1) * sizeof(*maps));
        maps[nmaps++] = d;
        if (dict_walk(d, check_row, list[i], &err) < 0)
            log_warn("shaping_maps %s: %s", list[i], buf_str(&err));
    }
    strv_free(list);
    if ((n = qmgr_rollup_parse(conf_str("shaping_mx_rollup"), &rollup, &err)) < 0)
        log_fatal("%s", buf_str(&err));
    nrollup = (size_t)n;
    buf_destroy(&err);
    htable_init(&sites, 256);
    htable_init(&mxents, 1024);
}

void qmgr_site_start(void)
{
    buf_t err = BUF_INIT;

    dns = dns_new(qmgr_g.srv->base, conf_str("dns_servers"), &err);
    if (dns == NULL)
        log_warn("no MX lookups for sites (each domain is a site of its own): %s", buf_str(&err));
    buf_destroy(&err);
}

static void site_free(struct qmgr_site *s)
{
    if (s->timer)
        event_free(s->timer);
    qmgr_shaping_destroy(&s->pol);
    for (size_t i = 0; i < s->nby_src; i++)
        free(s->by_src[i].ip);
    free(s->by_src);
    free(s->name);
    free(s->key);
    free(s->state_reason);
    free(s->last_defer);
    free(s);
}

static void mx_free(struct mxent *e)
{
    htable_remove(&mxents, &e->hlink);
    free(e->domain);
    free(e->key);
    free(e->name);
    strv_free(e->hosts);
    free(e);
}

/* Forget answers past their time that nobody waits for. */
static void mx_sweep(long long now)
{
    struct hlink *l, *next;

    HTABLE_EACH(&mxents, l, next)
    {
        struct mxent *e = HTABLE_ENTRY(l, struct mxent, hlink);
        if (!e->pending && LIST_EMPTY(&e->waiting) && e->expires <= now)
            mx_free(e);
    }
}

static void lease_release_all(struct qmgr_site *s);

void qmgr_site_close(void)
{
    struct hlink *l, *next;

    if (dns)
        dns_free(dns);
    dns = NULL;
    HTABLE_EACH(&mxents, l, next)
    mx_free(HTABLE_ENTRY(l, struct mxent, hlink));
    HTABLE_EACH(&sites, l, next)
    {
        htable_remove(&sites, l);
        lease_release_all(HTABLE_ENTRY(l, struct qmgr_site, hlink));
        site_free(HTABLE_ENTRY(l, struct qmgr_site, hlink));
    }
    for (size_t i = 0; i < nmaps; i++)
        dict_close(maps[i]);
    free(maps);
    maps = NULL;
    nmaps = 0;
    qmgr_rollup_free(rollup, nrollup);
    rollup = NULL;
    nrollup = 0;
}

/* ---- policy ---- */

/* The first shaping_maps row for key; 1 found. */
static int map_lookup(const char *key, buf_t *value)
{
    for (size_t i = 0; i < nmaps; i++) {
        enum dict_result r = dict_lookup(maps[i], key, value);
        if (r == DICT_ERROR)
            log_warn("shaping_maps: lookup of \"%s\" failed", key);
        if (r == DICT_FOUND)
            return 1;
    }
    return 0;
}

static void apply_row(struct qmgr_shaping *p, const char *key, const char *row)
{
    buf_t err = BUF_INIT;
    struct qmgr_shaping t;

    qmgr_shaping_copy(&t, p);
    if (qmgr_shaping_parse(row, &t, &err) < 0) {
        log_warn("shaping_maps: row \"%s\": %s; ignoring the row", key, buf_str(&err));
        qmgr_shaping_destroy(&t);
    } else {
        qmgr_shaping_destroy(p);
        *p = t;
    }
    buf_destroy(&err);
}

/* The most specific row for a new site: site:NAME, the domain, the MX
 * host names' parent suffixes (most preferred host, longest suffix
 * first); 1 found (key and row set). */
static int policy_row(const char *name, const char *domain, char *const *hosts, buf_t *key,
                      buf_t *row)
{
    buf_setf(key, "site:%s", name);
    if (map_lookup(buf_str(key), row))
        return 1;
    if (domain && (buf_set(key, domain), map_lookup(buf_str(key), row)))
        return 1;
    for (size_t i = 0; hosts && hosts[i]; i++)
        for (const char *dot = strchr(hosts[i], '.'); dot; dot = strchr(dot + 1, '.')) {
            buf_set(key, dot);
            if (map_lookup(buf_str(key), row))
                return 1;
        }
    return 0;
}

/* The message burst: as configured, else 2 - one message of slack, so a
 * timer that fires a little late (a busy machine) does not lose that time
 * from the rate for good; never more than two messages back to back. */
static int site_msg_burst(const struct qmgr_site *s)
{
    return s->pol.message_burst > 0 ? s->pol.message_burst : 2;
}

static void site_apply_limits(struct qmgr_site *s)
{
    int conc = s->pol.max_connections ? s->pol.max_connections
                                      : (int)conf_int("default_destination_concurrency_limit");

    if (s->conc_throttle > 0 && s->conc_throttle < conc)
        conc = s->conc_throttle;
    s->conc_limit = conc;
    qmgr_slowstart_set_cap(&s->slow, conc);
    qmgr_gcra_set(&s->msg_rate, s->rate_throttle > 0 ? s->rate_throttle : s->pol.max_message_rate,
                  site_msg_burst(s));
    qmgr_gcra_set(&s->conn_rate, s->pol.max_connection_rate, s->pol.connection_burst);
}

static void site_policy(struct qmgr_site *s, const char *domain, char *const *hosts)
{
    buf_t key = BUF_INIT, row = BUF_INIT;

    if (map_lookup("default", &row))
        apply_row(&s->pol, "default", buf_str(&row));
    if (policy_row(s->name, domain, hosts, &key, &row))
        apply_row(&s->pol, buf_str(&key), buf_str(&row));
    buf_destroy(&key);
    buf_destroy(&row);
    qmgr_gcra_init(&s->msg_rate, 0, 1);
    qmgr_gcra_init(&s->conn_rate, 0, 1);
    site_apply_limits(s);
}

/* ---- the table ---- */

struct qmgr_site *qmgr_site_find(const char *name)
{
    struct hlink *l, *next;

    HTABLE_EACH(&sites, l, next)
    {
        struct qmgr_site *s = HTABLE_ENTRY(l, struct qmgr_site, hlink);
        if (strcmp(s->name, name) == 0)
            return s;
    }
    return NULL;
}

static struct qmgr_site *site_by_key(const char *key, unsigned h)
{
    for (struct hlink *l = htable_first(&sites, h); l; l = htable_next(l, h)) {
        struct qmgr_site *s = HTABLE_ENTRY(l, struct qmgr_site, hlink);
        if (strcmp(s->key, key) == 0)
            return s;
    }
    return NULL;
}

static struct qmgr_site *site_get(const char *key, const char *name, const char *domain,
                                  char *const *hosts)
{
    unsigned h = htable_hash_str(key);
    struct qmgr_site *s = site_by_key(key, h);
    buf_t uniq = BUF_INIT;

    if (s)
        return s;
    s = xcalloc(1, sizeof(*s));
    s->key = xstrdup(key);
    /* Two MX sets may share their first host: the names stay unique. */
    buf_set(&uniq, name);
    for (int i = 2; qmgr_site_find(buf_str(&uniq)); i++)
        buf_setf(&uniq, "%s-%d", name, i);
    s->name = buf_detach(&uniq);
    LIST_INIT(&s->dests);
    LIST_INIT(&s->parked);
    site_policy(s, domain, hosts);
    qmgr_slowstart_init(&s->slow, (int)conf_int("initial_destination_concurrency"), s->conc_limit);
    htable_insert(&sites, &s->hlink, h);
    log_debug("site=%s (%s) created", s->name, s->key);
    return s;
}

static void dest_link(struct qmgr_dest *d, struct qmgr_site *s)
{
    d->site = s;
    LIST_INSERT_HEAD(&s->dests, d, slink);
}

/* The domain of an MX-routed nexthop in *domain: 1, else 0. */
static int nexthop_mx_routed(const char *transport, const char *nexthop, buf_t *domain)
{
    /* With a port of its own, a nexthop is a site of its own too: its
     * connections cannot serve the MX set's other domains. */
    if (strcmp(transport, "smtp") != 0 || nexthop[0] == '[' || nexthop[0] == '\0' ||
        strchr(nexthop, ':'))
        return 0;
    buf_set(domain, nexthop);
    str_lower(domain->data);
    return 1;
}

static int mx_routed(const struct qmgr_dest *d, buf_t *domain)
{
    return nexthop_mx_routed(d->transport, d->nexthop, domain);
}

static struct mxent *mx_find(const char *domain, unsigned h)
{
    for (struct hlink *l = htable_first(&mxents, h); l; l = htable_next(l, h)) {
        struct mxent *e = HTABLE_ENTRY(l, struct mxent, hlink);
        if (strcmp(e->domain, domain) == 0)
            return e;
    }
    return NULL;
}

/* The record's TTL, at least a minute, at most shaping_mx_cache_time;
 * the latter without one (the domain's own address: no MX record). */
static long long mx_cache_time(unsigned ttl)
{
    long long most = conf_int("shaping_mx_cache_time");

    if (ttl == 0)
        return most;
    return ttl < MX_FAIL_CACHE ? MX_FAIL_CACHE : (long long)ttl < most ? (long long)ttl : most;
}

static void mx_done(struct dns_result *res, void *arg)
{
    struct mxent *e = arg;
    buf_t key = BUF_INIT, name = BUF_INIT;
    double now = qmgr_now();
    struct qmgr_site *s;
    struct qmgr_dest *d;

    e->pending = 0;
    strv_free(e->hosts);
    e->hosts = NULL;
    if (res->status == DNS_OK && res->nhosts > 0) {
        const char **h = xcalloc(res->nhosts + 1, sizeof(*h));
        int *pref = xcalloc(res->nhosts, sizeof(*pref));
        e->hosts = xcalloc(res->nhosts + 1, sizeof(*e->hosts));
        for (size_t i = 0; i < res->nhosts; i++) {
            h[i] = res->hosts[i].name;
            pref[i] = res->hosts[i].pref;
            e->hosts[i] = str_lower(xstrdup(res->hosts[i].name));
        }
        qmgr_site_group(h, pref, res->nhosts, rollup, nrollup, &key, &name);
        e->expires = (long long)time(NULL) + mx_cache_time(res->ttl);
        free(h);
        free(pref);
    } else {
        buf_setf(&key, "domain:%s", e->domain);
        buf_set(&name, e->domain);
        e->expires = (long long)time(NULL) + MX_FAIL_CACHE;
    }
    free(e->key);
    free(e->name);
    e->key = buf_detach(&key);
    e->name = buf_detach(&name);
    dns_result_free(res);
    s = site_get(e->key, e->name, e->domain, e->hosts);
    while ((d = LIST_FIRST(&e->waiting)) != NULL) {
        LIST_REMOVE(d, slink);
        d->mxwait = NULL;
        dest_link(d, s);
        qmgr_ready_update(d, now);
    }
    qmgr_sched_dispatch();
}

void qmgr_site_attach(struct qmgr_dest *d)
{
    buf_t domain = BUF_INIT, key = BUF_INIT;
    struct mxent *e;

    if (!mx_routed(d, &domain) || dns == NULL) {
        const char *dom = mx_routed(d, &domain) ? buf_str(&domain) : NULL;
        int smtp = strcmp(d->transport, "smtp") == 0;
        buf_setf(&key, "nh:%s\n%s", d->transport, d->nexthop);
        buf_reset(&domain);
        if (smtp)
            buf_set(&domain, d->nexthop);
        else
            buf_setf(&domain, "%s:%s", d->transport, d->nexthop);
        dest_link(d, site_get(buf_str(&key), buf_str(&domain), dom ? dom : d->nexthop, NULL));
        goto done;
    }
    unsigned h = htable_hash_str(buf_str(&domain));
    if ((e = mx_find(buf_str(&domain), h)) == NULL) {
        e = xcalloc(1, sizeof(*e));
        e->domain = xstrdup(buf_str(&domain));
        LIST_INIT(&e->waiting);
        htable_insert(&mxents, &e->hlink, h);
    }
    if (!e->pending && e->key && e->expires > (long long)time(NULL)) {
        dest_link(d, site_get(e->key, e->name, e->domain, e->hosts));
        goto done;
    }
    d->mxwait = e;
    LIST_INSERT_HEAD(&e->waiting, d, slink);
    if (!e->pending) {
        e->pending = 1;
        dns_resolve_mx(dns, e->domain, mx_done, e);
    }
done:
    buf_destroy(&domain);
    buf_destroy(&key);
}

static void unpark(struct qmgr_dest *d)
{
    if (!d->parked)
        return;
    d->parked = 0;
    LIST_REMOVE(d, plink);
}

void qmgr_site_detach(struct qmgr_dest *d)
{
    unpark(d);
    if (d->site || d->mxwait)
        LIST_REMOVE(d, slink);
    d->site = NULL;
    d->mxwait = NULL;
}

/* ---- admission ---- */

static void unpark_all(struct qmgr_site *s, double now)
{
    struct qmgr_dest *d;

    while ((d = LIST_FIRST(&s->parked)) != NULL) {
        unpark(d);
        qmgr_ready_update(d, now);
    }
}

static void site_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr_site *s = arg;

    s->timer_at = 0;
    unpark_all(s, qmgr_now());
    qmgr_sched_dispatch();
}

static void park(struct qmgr_site *s, struct qmgr_dest *d, double now, double wait)
{
    qmgr_ready_forget(d);
    if (!d->parked) {
        d->parked = 1;
        LIST_INSERT_HEAD(&s->parked, d, plink);
    }
    if (wait <= 0)
        return;
    if (s->timer == NULL)
        s->timer = evtimer_new(qmgr_g.srv->base, site_timer_cb, s);
    if (s->timer_at == 0 || now + wait < s->timer_at) {
        struct timeval tv = { (time_t)wait, (suseconds_t)((wait - (double)(time_t)wait) * 1e6) };
        s->timer_at = now + wait;
        evtimer_add(s->timer, &tv);
    }
}

/* With shaping_shared_state the rate is joint with the other nodes: the
 * token comes from Redis (qmgr_shared.c), asked for without waiting;
 * qmgr_site_wake() unparks the site when the answer is in. */
int qmgr_site_rate_take(struct qmgr_site *s, double now, double *wait_s)
{
    double rate = qmgr_gcra_rate(&s->msg_rate);

    if (qmgr_g.shared && rate > 0)
        return qmgr_shared_rate_take(qmgr_g.shared, s->name, rate, site_msg_burst(s), now, wait_s);
    return qmgr_gcra_take(&s->msg_rate, now, wait_s);
}

void qmgr_site_wake(const char *name)
{
    struct qmgr_site *s = qmgr_site_find(name);

    if (s)
        unpark_all(s, qmgr_now());
}

int qmgr_site_suspended(const struct qmgr_site *s)
{
    return s && s->state == SITE_SUSPENDED && s->state_until > (long long)time(NULL);
}

enum qmgr_site_go qmgr_site_admit(struct qmgr_site *s, struct qmgr_dest *d, int fresh, double now)
{
    double wait;

    if (qmgr_site_suspended(s))
        return SITE_DEFER;
    if (s->conns >= qmgr_site_conc_now(s)) {
        park(s, d, now, 0); /* qmgr_site_job_done wakes it */
        return SITE_WAIT;
    }
    if (!qmgr_site_lease_ok(s, NULL)) { /* before a rate token is taken */
        qmgr_site_lease_wait(s, d);
        return SITE_WAIT;
    }
    if (fresh && !qmgr_gcra_peek(&s->conn_rate, now, &wait)) {
        park(s, d, now, wait);
        return SITE_WAIT;
    }
    if (!qmgr_site_rate_take(s, now, &wait)) {
        park(s, d, now, wait);
        return SITE_WAIT;
    }
    if (fresh)
        qmgr_gcra_take(&s->conn_rate, now, &wait);
    return SITE_GO;
}

/* Are s's connections joint with other nodes (leases in Redis)? */
static int shared_conns(const struct qmgr_site *s)
{
    return qmgr_g.shared && s->pol.max_connections > 0;
}

int qmgr_site_conc_now(const struct qmgr_site *s)
{
    int w = qmgr_slowstart_limit(&s->slow);
    int c = w < s->conc_limit ? w : s->conc_limit;

    /* Redis away: this node's share of the joint limit. */
    if (shared_conns(s) && !qmgr_shared_is_up(qmgr_g.shared)) {
        int share = qmgr_shared_local_share(qmgr_g.shared, s->conc_limit);
        c = share < c ? share : c;
    }
    return c;
}

/* ---- connection leases (qmgr_shared.c) ----
 * This node holds one lease per agent connection pinned to the site (the
 * connections it may have open there: busy, or idle with the session kept
 * in the agent's cache). A job that reuses a pinned connection needs no new
 * lease; one that pins another needs a spare one, asked for beforehand.
 * Leases unused for a whole tick go back (qmgr_site_tick). */

#define LEASE_RETRY 0.5 /* seconds between asks while the others hold them all */

static void on_lease(void *arg, enum qmgr_shared_grant g, long lease)
{
    char *name = arg;
    struct qmgr_site *s = qmgr_g.stopping ? NULL : qmgr_site_find(name);

    if (s) {
        s->lease_pending = 0;
        if (g == QMGR_SHARED_REFUSED)
            s->lease_retry_at = qmgr_now() + LEASE_RETRY;
    }
    if (g == QMGR_SHARED_GRANTED && s == NULL)
        qmgr_shared_conn_release(qmgr_g.shared, name, lease);
    if (s) { /* its destinations look again (REFUSED: they wait the retry) */
        unpark_all(s, qmgr_now());
        qmgr_sched_dispatch();
    }
    free(name);
}

static void lease_ask(struct qmgr_site *s, double now)
{
    if (s->lease_pending || now < s->lease_retry_at)
        return;
    s->lease_pending = 1;
    qmgr_shared_conn_acquire(qmgr_g.shared, s->name, s->conc_limit, on_lease, xstrdup(s->name));
}

int qmgr_site_lease_ok(struct qmgr_site *s, const struct qmgr_job *j)
{
    double now = qmgr_now();

    if (!shared_conns(s) || !qmgr_shared_is_up(qmgr_g.shared))
        return 1;
    if ((int)qmgr_shared_conn_held(qmgr_g.shared, s->name) > qmgr_deliver_pinned(s) ||
        !qmgr_deliver_adds_pin(s, j))
        return 1;
    lease_ask(s, now);
    return 0;
}

void qmgr_site_lease_wait(struct qmgr_site *s, struct qmgr_dest *d)
{
    double now = qmgr_now();
    park(s, d, now, s->lease_pending ? 0 : s->lease_retry_at - now);
}

/* Give back the leases that went unused for a whole tick. */
static void lease_trim(struct qmgr_site *s)
{
    int spare;

    if (!shared_conns(s) || qmgr_shared_conn_held(qmgr_g.shared, s->name) == 0) {
        s->lease_spare = 0;
        return;
    }
    spare = (int)qmgr_shared_conn_held(qmgr_g.shared, s->name) - qmgr_deliver_pinned(s);
    for (int n = spare < s->lease_spare ? spare : s->lease_spare; n > 0; n--, spare--)
        qmgr_shared_conn_release_one(qmgr_g.shared, s->name);
    s->lease_spare = spare > 0 ? spare : 0;
}

static void lease_release_all(struct qmgr_site *s)
{
    while (shared_conns(s) && qmgr_shared_conn_held(qmgr_g.shared, s->name) > 0)
        qmgr_shared_conn_release_one(qmgr_g.shared, s->name);
}

void qmgr_site_window_grown(struct qmgr_site *s)
{
    if (s->conns < qmgr_site_conc_now(s) && !LIST_EMPTY(&s->parked))
        unpark_all(s, qmgr_now());
}

/* The counter of jobs in flight from src (made when create). */
static struct qmgr_site_src *by_src(struct qmgr_site *s, const char *src, int create)
{
    for (size_t i = 0; i < s->nby_src; i++)
        if (strcmp(s->by_src[i].ip, src) == 0)
            return &s->by_src[i];
    if (!create)
        return NULL;
    s->by_src = xrealloc(s->by_src, (s->nby_src + 1) * sizeof(*s->by_src));
    s->by_src[s->nby_src].ip = xstrdup(src);
    s->by_src[s->nby_src].conns = 0;
    return &s->by_src[s->nby_src++];
}

int qmgr_site_source_conns(const struct qmgr_site *s, const char *src)
{
    for (size_t i = 0; src && i < s->nby_src; i++)
        if (strcmp(s->by_src[i].ip, src) == 0)
            return s->by_src[i].conns;
    return 0;
}

int qmgr_site_source_ok(const struct qmgr_site *s, const char *src)
{
    int limit = s ? s->pol.max_connections_per_source : 0;
    return limit <= 0 || src == NULL || qmgr_site_source_conns(s, src) < limit;
}

void qmgr_site_wait(struct qmgr_site *s, struct qmgr_dest *d)
{
    park(s, d, qmgr_now(), 0); /* qmgr_site_job_done wakes it */
}

void qmgr_site_job_started(struct qmgr_site *s, const char *src, double now)
{
    long long sec = (long long)now;
    size_t slot = (size_t)(sec % QMGR_SITE_RATE_SLOTS);

    s->conns++;
    if (src)
        by_src(s, src, 1)->conns++;
    if (s->sent_t[slot] != sec) {
        s->sent_t[slot] = sec;
        s->sent_n[slot] = 0;
    }
    s->sent_n[slot]++;
}

void qmgr_site_job_done(struct qmgr_site *s, const char *src)
{
    struct qmgr_site_src *c = src ? by_src(s, src, 0) : NULL;

    s->conns--;
    if (c && c->conns > 0)
        c->conns--;
    if (s->conns < qmgr_site_conc_now(s) && !LIST_EMPTY(&s->parked))
        unpark_all(s, qmgr_now());
}

unsigned qmgr_site_rate_now(const struct qmgr_site *s, long long now)
{
    unsigned n = 0;

    for (size_t i = 0; i < QMGR_SITE_RATE_SLOTS; i++)
        if (s->sent_t[i] > now - QMGR_SITE_RATE_SLOTS && s->sent_t[i] <= now)
            n += s->sent_n[i];
    return n;
}

size_t qmgr_site_queued(const struct qmgr_site *s)
{
    const struct qmgr_dest *d;
    size_t n = 0;

    LIST_FOREACH(d, &s->dests, slink)
    n += d->queued;
    return n;
}

long long qmgr_site_retry(const struct qmgr_site *s, int attempts)
{
    size_t i;

    if (s == NULL || s->pol.nretry == 0)
        return 0;
    i = attempts < 1 ? 0 : (size_t)attempts - 1;
    return s->pol.retry[i < s->pol.nretry ? i : s->pol.nretry - 1];
}

/* ---- adaptive changes ---- */

static void set_state(struct qmgr_site *s, enum qmgr_site_state st, long long secs, const char *why)
{
    s->state = st;
    s->state_until = (long long)time(NULL) + (secs > 0 ? secs : 1);
    free(s->state_reason);
    s->state_reason = xstrdup(why && *why ? why : "no reason given");
}

void qmgr_site_suspend(struct qmgr_site *s, long long secs, const char *why)
{
    set_state(s, SITE_SUSPENDED, secs, why);
    log_info("site=%s suspended for %llds after \"%s\"", s->name, secs, s->state_reason);
    qmgr_sched_site_flush(s, RR_DEFERRED, "4.4.1", NULL);
}

void qmgr_site_throttle_rate(struct qmgr_site *s, double per_sec, long long secs, const char *why)
{
    set_state(s, SITE_THROTTLED, secs, why);
    s->rate_throttle = per_sec;
    site_apply_limits(s);
    log_info("site=%s throttled: rate %.0f/h for %llds after \"%s\"", s->name, per_sec * 3600, secs,
             s->state_reason);
}

void qmgr_site_throttle_conc(struct qmgr_site *s, int conc, long long secs, const char *why)
{
    set_state(s, SITE_THROTTLED, secs, why);
    s->conc_throttle = conc > 0 ? conc : 1;
    site_apply_limits(s);
    log_info("site=%s throttled: concurrency %d for %llds after \"%s\"", s->name, s->conc_throttle,
             secs, s->state_reason);
}

void qmgr_site_bounce_queued(struct qmgr_site *s, const char *dsn, const char *why)
{
    log_info("site=%s: bouncing what is queued for it after \"%s\"", s->name,
             why && *why ? why : "no reason given");
    qmgr_sched_site_flush(s, RR_BOUNCED, dsn && *dsn ? dsn : "5.0.0", why);
}

/* A state whose time is over (or ended by hand): back to normal, one line. */
static void site_expire(struct qmgr_site *s, double now)
{
    if (s->state == SITE_NORMAL)
        return;
    log_info("site=%s back to normal after %s (\"%s\")", s->name, qmgr_site_state_name(s->state),
             s->state_reason ? s->state_reason : "");
    s->state = SITE_NORMAL;
    s->state_until = 0;
    free(s->state_reason);
    s->state_reason = NULL;
    s->rate_throttle = 0;
    s->conc_throttle = 0;
    site_apply_limits(s);
    unpark_all(s, now);
}

void qmgr_site_resume(struct qmgr_site *s)
{
    site_expire(s, qmgr_now());
}

/* Nothing refers to it and forgetting it loses no rate state. */
static int site_idle(const struct qmgr_site *s, double now)
{
    return LIST_EMPTY(&s->dests) && LIST_EMPTY(&s->parked) && s->conns == 0 && !s->lease_pending &&
           (!shared_conns(s) || qmgr_shared_conn_held(qmgr_g.shared, s->name) == 0) &&
           s->state == SITE_NORMAL && s->msg_rate.tat < now && s->conn_rate.tat < now;
}

void qmgr_site_tick(void)
{
    static unsigned ticks;
    double now = qmgr_now();
    struct hlink *l, *next;
    int sweep = ++ticks % 60 == 0;

    if (sweep)
        mx_sweep((long long)now);
    HTABLE_EACH(&sites, l, next)
    {
        struct qmgr_site *s = HTABLE_ENTRY(l, struct qmgr_site, hlink);
        lease_trim(s);
        if (s->state != SITE_NORMAL && s->state_until <= (long long)now)
            site_expire(s, now);
        else if (sweep && site_idle(s, now)) {
            htable_remove(&sites, l);
            site_free(s);
        }
    }
}

void qmgr_site_foreach(void (*fn)(struct qmgr_site *s, void *arg), void *arg)
{
    struct hlink *l, *next;

    HTABLE_EACH(&sites, l, next)
    fn(HTABLE_ENTRY(l, struct qmgr_site, hlink), arg);
}

/* The name of the site that mail for transport/nexthop goes to, as
 * qmgr_site_attach files it, without a DNS lookup: 1 with *name set, 0
 * (name untouched) for an MX-routed domain whose MX set qmgr has not
 * looked up (no mail of it was in memory lately). */
int qmgr_site_name_for(const char *transport, const char *nexthop, buf_t *name)
{
    buf_t domain = BUF_INIT, key = BUF_INIT;
    struct qmgr_site *s = NULL;
    struct mxent *e;
    int known = 1;

    if (!nexthop_mx_routed(transport, nexthop, &domain) || dns == NULL) {
        buf_setf(&key, "nh:%s\n%s", transport, nexthop);
        s = site_by_key(buf_str(&key), htable_hash_str(buf_str(&key)));
        if (strcmp(transport, "smtp") == 0)
            buf_set(name, nexthop);
        else
            buf_setf(name, "%s:%s", transport, nexthop);
    } else if ((e = mx_find(buf_str(&domain), htable_hash_str(buf_str(&domain)))) && e->name) {
        if (e->key)
            s = site_by_key(e->key, htable_hash_str(e->key));
        buf_set(name, e->name); /* the last MX set known, even if due for a refresh */
    } else {
        known = 0;
    }
    if (s)
        buf_set(name, s->name);
    buf_destroy(&domain);
    buf_destroy(&key);
    return known;
}

/* For "postino queue summary" (qmgr_shape_ctl.c): as above, and a domain
 * not looked up yet is named after itself. */
void qmgr_site_name_of(const char *transport, const char *nexthop, buf_t *name)
{
    buf_t domain = BUF_INIT;

    if (!qmgr_site_name_for(transport, nexthop, name) &&
        nexthop_mx_routed(transport, nexthop, &domain))
        buf_set(name, buf_str(&domain));
    buf_destroy(&domain);
}

void qmgr_site_note_deferral(struct qmgr_site *s, const char *why)
{
    if (s == NULL || why == NULL)
        return;
    free(s->last_defer);
    s->last_defer = xstrdup(why);
    s->last_defer_at = (long long)time(NULL);
}
