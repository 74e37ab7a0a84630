/* qmgr_pool.c - source address pools: which local address (and HELO name)
 * each delivery job leaves from.
 *
 * source_address_maps describes addresses (ip -> helo=, weight=, warmup=,
 * warmup_start=), source_pool_maps groups them into named pools (pool ->
 * addresses). A message's pool is the one its injector named in the
 * source_pool_header (smtpd keeps it as the pool= record and removes the
 * header), else sender_dependent_source_pool_maps (sasl:USER, sender
 * address, @domain), else the pool "default"; with no pool at all the job
 * carries no source and delivery applies smtp_bind_address.
 *
 * Within a pool, smooth weighted round-robin (each pick adds every usable
 * address's weight to its credit, takes the richest and charges it the
 * total: the sequence is spread evenly, not in runs). An address is not
 * usable while it is over its warm-up cap for the day (counted per job
 * here, kept in index/source_warmup, written at most every few seconds)
 * or taken out after delivery could not bind it, nor for a site while it
 * has max_connections_per_source jobs in flight to the site (the job
 * then waits for one of them, qmgr_pool_busy). Everything is read once:
 * a reload starts a new qmgr. */
#include "qmgr/qmgr.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/glue/dict.h"
#include "common/mail/addr.h"
#include "common/mail/conf.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

#define POOL_SAVE_EVERY 5 /* seconds between writes of the counters */
#define POOL_MAX_ADDRS  1024
#define DAY_SECS        86400LL

struct qmgr_src {
    char *ip;
    char *helo;
    int weight, credit;
    long long *warmup; /* messages per day, day by day; NULL: no cap */
    size_t nwarmup;
    long long warmup_start; /* unix day of the schedule's first day */
    long long day, sent;    /* jobs sent on unix day `day` */
    time_t down_until;      /* could not be bound: out until then */
};

struct qmgr_pool_def {
    char *name;
    struct qmgr_src **src;
    size_t n;
};

static struct qmgr_src **srcs;
static size_t nsrcs;
static struct qmgr_pool_def *pools;
static size_t npools;
static struct dict **sender_maps;
static size_t nsender_maps;
static int dirty;
static time_t last_save;

static long long unix_day(time_t t)
{
    return (long long)t / DAY_SECS;
}

static struct qmgr_src *src_find(const char *ip)
{
    for (size_t i = 0; i < nsrcs; i++)
        if (strcmp(srcs[i]->ip, ip) == 0)
            return srcs[i];
    return NULL;
}

static struct qmgr_src *src_get(const char *ip)
{
    struct qmgr_src *s = src_find(ip);
    if (s)
        return s;
    if (nsrcs >= POOL_MAX_ADDRS)
        log_fatal("source_pool_maps: more than %d source addresses", POOL_MAX_ADDRS);
    s = xcalloc(1, sizeof(*s));
    s->ip = xstrdup(ip);
    s->weight = 1;
    srcs = xrealloc(srcs, (nsrcs + 1) * sizeof(*srcs));
    srcs[nsrcs++] = s;
    return s;
}

/* "2026-11-20" -> unix day; -1 when malformed. */
static long long parse_date(const char *v)
{
    struct tm tm = { 0 };
    char *end = strptime(v, "%Y-%m-%d", &tm);
    if (end == NULL || *end)
        return -1;
    return unix_day(timegm(&tm));
}

static int parse_warmup(struct qmgr_src *s, const char *v)
{
    size_t n;
    char **steps = str_split(v, ",", &n);
    int rc = n > 0 ? 0 : -1;

    s->warmup = xcalloc(n ? n : 1, sizeof(*s->warmup));
    for (size_t i = 0; i < n && rc == 0; i++) {
        char *end;
        long long x = strtoll(steps[i], &end, 10);
        if (end == steps[i] || *end || x < 0)
            rc = -1;
        s->warmup[i] = x;
    }
    s->nwarmup = n;
    strv_free(steps);
    return rc;
}

/* One option of an address: 0, or -1 when it is malformed. */
static int parse_opt(struct qmgr_src *s, const char *opt)
{
    const char *eq = strchr(opt, '=');
    const char *v = eq ? eq + 1 : "";
    size_t kl = eq ? (size_t)(eq - opt) : strlen(opt);
    char *end;

    if (kl == 4 && strncmp(opt, "helo", 4) == 0 && *v) {
        free(s->helo);
        s->helo = xstrdup(v);
        return 0;
    }
    if (kl == 6 && strncmp(opt, "weight", 6) == 0) {
        long w = strtol(v, &end, 10);
        s->weight = (int)w;
        return end == v || *end || w < 1 || w > 1000 ? -1 : 0;
    }
    if (kl == 6 && strncmp(opt, "warmup", 6) == 0)
        return parse_warmup(s, v);
    if (kl == 12 && strncmp(opt, "warmup_start", 12) == 0)
        return (s->warmup_start = parse_date(v)) < 0 ? -1 : 0;
    return -1;
}

static int address_entry(const char *key, const char *value, void *arg)
{
    struct qmgr_src *s = src_get(key);
    char **opts = str_split(value, " \t", NULL);

    for (size_t i = 0; opts[i]; i++)
        if (parse_opt(s, opts[i]) < 0)
            log_fatal("source_address_maps: %s: bad option \"%s\" (want helo=NAME, weight=N, "
                      "warmup=N,N,..., warmup_start=YYYY-MM-DD)",
                      key, opts[i]);
    strv_free(opts);
    return 0;
}

static int pool_entry(const char *key, const char *value, void *arg)
{
    char **ips = str_split(value, ", \t", NULL);
    struct qmgr_pool_def *p;

    pools = xrealloc(pools, (npools + 1) * sizeof(*pools));
    p = &pools[npools++];
    memset(p, 0, sizeof(*p));
    p->name = xstrdup(key);
    for (size_t i = 0; ips[i]; i++) {
        p->src = xrealloc(p->src, (p->n + 1) * sizeof(*p->src));
        p->src[p->n++] = src_get(ips[i]);
    }
    strv_free(ips);
    if (p->n == 0)
        log_fatal("source_pool_maps: pool %s has no addresses", key);
    return 0;
}

/* Walk every table of list with fn (a table that cannot be read is a
 * configuration error: the mail would leave from the wrong address). */
static void walk_maps(const char *param, int (*fn)(const char *, const char *, void *))
{
    char **list = conf_list(param);
    buf_t err = BUF_INIT;

    for (size_t i = 0; list[i]; i++) {
        struct dict *d = dict_open(list[i], &err);
        if (d == NULL || dict_walk(d, fn, NULL, &err) < 0)
            log_fatal("%s: cannot read %s: %s (build it with \"postino map\")", param, list[i],
                      buf_str(&err));
        dict_close(d);
    }
    strv_free(list);
    buf_destroy(&err);
}

void qmgr_pool_init(void)
{
    char **list = conf_list("sender_dependent_source_pool_maps");
    buf_t err = BUF_INIT;

    walk_maps("source_address_maps", address_entry);
    walk_maps("source_pool_maps", pool_entry);
    for (size_t i = 0; list[i]; i++) {
        struct dict *d = dict_open(list[i], &err);
        if (d == NULL)
            log_fatal("sender_dependent_source_pool_maps: cannot open %s: %s", list[i],
                      buf_str(&err));
        sender_maps = xrealloc(sender_maps, (nsender_maps + 1) * sizeof(*sender_maps));
        sender_maps[nsender_maps++] = d;
    }
    strv_free(list);
    buf_destroy(&err);
}

static struct qmgr_pool_def *pool_find(const char *name)
{
    for (size_t i = 0; i < npools; i++)
        if (str_ieq(pools[i].name, name))
            return &pools[i];
    return NULL;
}

/* sender_dependent_source_pool_maps: sasl:USER, the sender, @domain. */
static struct qmgr_pool_def *pool_by_sender(const struct qenv *env)
{
    buf_t keys[3] = { BUF_INIT, BUF_INIT, BUF_INIT }, dom = BUF_INIT, val = BUF_INIT;
    struct qmgr_pool_def *p = NULL;
    size_t nk = 0;

    if (env->sasl_username && *env->sasl_username)
        buf_printf(&keys[nk++], "sasl:%s", env->sasl_username);
    if (env->sender && *env->sender) {
        buf_puts(&keys[nk++], env->sender);
        addr_domain(env->sender, &dom);
        if (dom.len)
            buf_printf(&keys[nk++], "@%s", buf_str(&dom));
    }
    for (size_t k = 0; k < nk && p == NULL; k++)
        for (size_t i = 0; i < nsender_maps && p == NULL; i++) {
            if (dict_lookup(sender_maps[i], buf_str(&keys[k]), &val) != DICT_FOUND)
                continue;
            if ((p = pool_find(str_trim(val.data))) == NULL)
                log_warn("sender_dependent_source_pool_maps: %s: no pool named \"%s\"",
                         buf_str(&keys[k]), buf_str(&val));
        }
    for (size_t k = 0; k < 3; k++)
        buf_destroy(&keys[k]);
    buf_destroy(&dom);
    buf_destroy(&val);
    return p;
}

static struct qmgr_pool_def *pool_of(const struct qmgr_msg *m)
{
    struct qmgr_pool_def *p = NULL;

    if (npools == 0)
        return NULL;
    if (m->env.pool && *m->env.pool && (p = pool_find(m->env.pool)) == NULL)
        log_warn("%s: %s names no pool \"%s\"; choosing by sender", m->id,
                 conf_str("source_pool_header"), m->env.pool);
    if (p == NULL)
        p = pool_by_sender(&m->env);
    return p ? p : pool_find("default");
}

/* Today's warm-up cap of s; -1 when there is none (any more). */
static long long src_cap(const struct qmgr_src *s, long long today)
{
    long long d = today - s->warmup_start;

    if (s->warmup == NULL)
        return -1;
    if (s->warmup_start == 0 || d < 0)
        d = 0;
    return (size_t)d < s->nwarmup ? s->warmup[d] : -1;
}

static int src_usable(struct qmgr_src *s, time_t now)
{
    long long today = unix_day(now), cap = src_cap(s, today);

    if (s->day != today) {
        s->day = today;
        s->sent = 0;
    }
    return s->down_until <= now && (cap < 0 || s->sent < cap);
}

/* May a job for site go from s now: in service, under its cap, not
 * suspended for the site by a rule, under max_connections_per_source. */
static int src_can_go(struct qmgr_src *s, const struct qmgr_site *site, time_t now)
{
    return src_usable(s, now) && qmgr_throttle_source_ok(site, s->ip) &&
           qmgr_site_source_ok(site, s->ip);
}

/* When the site's connections are all taken but for idle ones kept open
 * by the delivery agents, a job from an address without such a session
 * would open one more than max_connections: prefer the addresses that
 * have one (their reuse opens nothing). 1 when the pick is so limited. */
static int pool_reuse_only(const struct qmgr_pool_def *p, const struct qmgr_site *site)
{
    if (p->n < 2 || site == NULL || site->pol.max_connections == 0)
        return 0;
    return site->conns + qmgr_deliver_idle_sessions(site, NULL) >= qmgr_site_conc_now(site);
}

enum qmgr_pool_pick qmgr_pool_assign(struct qmgr_job *j)
{
    struct qmgr_pool_def *p = pool_of(j->msg);
    const struct qmgr_site *site = j->dest->site;
    struct qmgr_src *best = NULL;
    time_t now = time(NULL);
    int total = 0, reuse;

    j->src = NULL;
    /* The feedback agent reads mail for us: it connects nowhere. */
    if (p == NULL || strcmp(j->dest->transport, "feedback") == 0)
        return POOL_NONE;
    reuse = pool_reuse_only(p, site);
    for (int pass = 0; pass < 2 && best == NULL; pass++, reuse = 0) {
        for (size_t i = 0; i < p->n; i++) {
            struct qmgr_src *s = p->src[i];
            if (!src_can_go(s, site, now)) /* out, capped, suspended or busy */
                continue;
            if (reuse && qmgr_deliver_idle_sessions(site, s->ip) == 0)
                continue;
            s->credit += s->weight;
            total += s->weight;
            if (best == NULL || s->credit > best->credit)
                best = s;
        }
        if (!reuse)
            break;
    }
    if (best == NULL) {
        log_debug("%s: no usable source address in pool %s", j->msg->id, p->name);
        return POOL_EXHAUSTED;
    }
    best->credit -= total;
    best->sent++;
    dirty = 1;
    j->src = best;
    return POOL_ADDR;
}

int qmgr_pool_busy(const struct qmgr_job *j)
{
    const struct qmgr_site *site = j->dest->site;
    struct qmgr_pool_def *p;
    time_t now = time(NULL);
    int usable = 0;

    if (site == NULL || site->pol.max_connections_per_source <= 0 ||
        strcmp(j->dest->transport, "feedback") == 0 || (p = pool_of(j->msg)) == NULL)
        return 0;
    for (size_t i = 0; i < p->n; i++) {
        struct qmgr_src *s = p->src[i];
        if (!src_usable(s, now) || !qmgr_throttle_source_ok(site, s->ip))
            continue;
        if (qmgr_site_source_ok(site, s->ip))
            return 0;
        usable = 1;
    }
    return usable; /* none usable at all: qmgr_pool_assign defers the job */
}

void qmgr_pool_unassign(struct qmgr_job *j)
{
    if (j->src && j->src->sent > 0)
        j->src->sent--;
    j->src = NULL;
}

const char *qmgr_pool_source(const struct qmgr_job *j)
{
    return j->src ? j->src->ip : NULL;
}

const char *qmgr_pool_helo(const struct qmgr_job *j)
{
    if (j->src == NULL)
        return NULL;
    return j->src->helo ? j->src->helo : conf_str("smtp_helo_name");
}

int qmgr_pool_job_failed(struct qmgr_job *j, const attr_t *reply)
{
    const char *status = reply ? attr_get(reply, "status") : NULL;
    long long secs = conf_int("source_address_suspend_time");
    struct qmgr_src *s = j->src;

    if (s == NULL || status == NULL || strcmp(status, "source_unavailable") != 0)
        return 0;
    qmgr_pool_unassign(j);
    /* Jobs sent before the first reply came back fail the same way: one
     * line for them all. */
    if (s->down_until <= time(NULL))
        log_warn("source address %s taken out of its pools for %llds: %s", s->ip, secs,
                 attr_get_def(reply, "reason", "cannot bind"));
    s->down_until = time(NULL) + (time_t)secs;
    /* Held or deleted meanwhile: not again (deferred like a refused job). */
    return !j->msg->deleted && !j->msg->held;
}

/* ---- the warm-up counters on disk: "ip day count" lines ---- */

static void state_path(buf_t *out, int tmp)
{
    buf_printf(out, "%s/index/source_warmup%s", qmgr_g.spool, tmp ? ".tmp" : "");
}

void qmgr_pool_load(void)
{
    buf_t path = BUF_INIT;
    char line[512], ip[256];
    long long day, n;
    FILE *f;

    state_path(&path, 0);
    if (nsrcs && (f = fopen(buf_str(&path), "re")) != NULL) {
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "%255s %lld %lld", ip, &day, &n) == 3 && src_find(ip) &&
                day == unix_day(time(NULL))) {
                src_find(ip)->day = day;
                src_find(ip)->sent = n;
            }
        fclose(f);
    }
    buf_destroy(&path);
}

static void pool_save(void)
{
    buf_t path = BUF_INIT, tmp = BUF_INIT, text = BUF_INIT;
    FILE *f;

    for (size_t i = 0; i < nsrcs; i++)
        buf_printf(&text, "%s %lld %lld\n", srcs[i]->ip, srcs[i]->day, srcs[i]->sent);
    state_path(&path, 0);
    state_path(&tmp, 1);
    /* No fsync: after a crash the counters may lag a few seconds. */
    int ok = (f = fopen(buf_str(&tmp), "we")) != NULL;
    if (ok) {
        ok = fwrite(text.data, 1, text.len, f) == text.len;
        ok = fclose(f) == 0 && ok;
    }
    if (!ok || rename(buf_str(&tmp), buf_str(&path)) < 0)
        log_warn("cannot write %s: %s", buf_str(&path), strerror(errno));
    dirty = 0;
    last_save = time(NULL);
    buf_destroy(&path);
    buf_destroy(&tmp);
    buf_destroy(&text);
}

void qmgr_pool_tick(void)
{
    if (dirty && time(NULL) - last_save >= POOL_SAVE_EVERY)
        pool_save();
}

void qmgr_pool_close(void)
{
    if (dirty)
        pool_save();
    for (size_t i = 0; i < nsender_maps; i++)
        dict_close(sender_maps[i]);
    free(sender_maps);
    sender_maps = NULL;
    nsender_maps = 0;
}
