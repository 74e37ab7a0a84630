/* qmgr_shared.c - shaping counters shared through Redis, with the local
 * fallback (see qmgr_shared.h). One entry per site name, kept for the
 * life of the process (sites are few; answers in flight point at them). */
#include "qmgr/qmgr_shared.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "common/glue/redis.h"
#include "qmgr/qmgr_gcra.h"
#include "common/util/alloc.h"
#include "common/util/htable.h"
#include "common/util/log.h"

/* Seconds a connection lease lives without renewal; renewed at a third. */
#define SHARED_LEASE 60
/* Seconds ahead of its time a node may reserve a message (see the script). */
#define SHARED_AHEAD 1.0
/* Seconds a site keeps to its local share after the script failed. */
#define SHARED_ERROR_HOLD 10

/* The Lua twin of qmgr_gcra_take(): keep the two the same. One addition: a
 * node may reserve a message "ahead" seconds before its time comes, so the
 * round trip to Redis and the node's timers do not slow the joint rate
 * down; the answer is {1, delay until it may go} or {0, wait before
 * asking again}. With ahead 0 the answers are qmgr_gcra_take()'s. TATs are kept
 * with 17 digits so both sides compute on the same doubles. */
const char qmgr_shared_gcra_lua[] =
    "local per_sec = tonumber(ARGV[1])\n"
    "local burst = tonumber(ARGV[2])\n"
    "local now = tonumber(ARGV[3])\n"
    "local ahead = tonumber(ARGV[4] or '0')\n"
    "if now <= 0 then\n"
    "  local t = redis.call('TIME')\n"
    "  now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"
    "end\n"
    "if burst < 1 then burst = 1 end\n"
    "local interval = 0\n"
    "if per_sec > 0 then interval = 1 / per_sec end\n"
    "local tolerance = interval * (burst - 1)\n"
    "local tat = tonumber(redis.call('GET', KEYS[1])) or 0\n"
    "if tat < now then tat = now end\n"
    "if interval <= 0 or tat - now <= tolerance + ahead then\n"
    "  local delay = tat - tolerance - now\n"
    "  if delay < 0 then delay = 0 end\n"
    "  tat = tat + interval\n"
    "  redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX',\n"
    "             math.ceil((tat - now) * 1000) + 1000)\n"
    "  return {1, string.format('%.17g', delay)}\n"
    "end\n"
    "return {0, string.format('%.17g', tat - tolerance - now - ahead)}\n";

/* KEYS[1]; ARGV limit, lease seconds, member: {1|0, leases held} */
static const char conn_acquire_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "local n = redis.call('ZCARD', KEYS[1])\n"
    "if n >= tonumber(ARGV[1]) then return {0, n} end\n"
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])\n"
    "redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))\n"
    "return {1, n + 1}\n";

/* KEYS[1]; ARGV lease seconds, members...: pushes their expiry on. A
 * member that lapsed while Redis was away is added back: the connection
 * it stands for is still open. */
static const char conn_renew_lua[] =
    "local t = redis.call('TIME')\n"
    "local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])\n"
    "for i = 2, #ARGV do redis.call('ZADD', KEYS[1], until_, ARGV[i]) end\n"
    "redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000))\n"
    "return 1\n";

struct shared_site {
    struct hlink link;
    struct qmgr_shared *sh;
    char *name, *rate_key, *conn_key;
    struct gcra local; /* the fallback share */
    double local_rate;
    int local_burst;
    int tokens;         /* granted by Redis, not yet used */
    double token_ready; /* mono: when the granted one may go */
    int pending;        /* a token request in flight */
    double not_before;  /* mono: Redis said to wait until then */
    double local_until; /* mono: the script failed, keep local till then */
    long *leases;       /* connection leases held */
    size_t nleases, cap;
};

struct qmgr_shared {
    struct event_base *base;
    struct redis *r;
    char *spec, *node_id;
    int node_count;
    int s_gcra, s_acquire, s_renew;
    long next_lease;
    struct htable sites;
    struct event *ev_renew;
    qmgr_shared_wake_t wake;
    void *wake_arg;
};

struct conn_req {
    struct shared_site *ss;
    qmgr_shared_conn_cb_t cb;
    void *arg;
    long lease;
};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct shared_site *site_get(struct qmgr_shared *sh, const char *name)
{
    unsigned h = htable_hash_str(name);
    struct shared_site *ss;
    buf_t b;

    for (struct hlink *l = htable_first(&sh->sites, h); l; l = htable_next(l, h)) {
        ss = HTABLE_ENTRY(l, struct shared_site, link);
        if (strcmp(ss->name, name) == 0)
            return ss;
    }
    ss = xcalloc(1, sizeof(*ss));
    ss->sh = sh;
    ss->name = xstrdup(name);
    buf_init(&b, 64);
    buf_setf(&b, "postino:rate:%s", name);
    ss->rate_key = xstrdup(buf_str(&b));
    buf_setf(&b, "postino:conn:%s", name);
    ss->conn_key = xstrdup(buf_str(&b));
    buf_destroy(&b);
    ss->local_rate = -1;
    htable_insert(&sh->sites, &ss->link, h);
    return ss;
}

static void on_renew(evutil_socket_t fd, short what, void *arg);

static void on_state(void *arg, int up)
{
    struct qmgr_shared *sh = arg;
    if (up)
        on_renew(-1, 0, sh); /* the leases held meanwhile count again */
    if (up)
        log_info("shaping: shared state %s reachable: per-site limits are joint again", sh->spec);
    else
        log_warn("shaping: shared state %s unreachable: each site keeps to its local share "
                 "(limit / shaping_node_count = %d) until it is back",
                 sh->spec, sh->node_count);
}

/* ---- message rate ---- */

static int local_take(struct shared_site *ss, double per_sec, int burst, double now, double *wait)
{
    double share = per_sec > 0 ? per_sec / ss->sh->node_count : 0;

    if (share != ss->local_rate || burst != ss->local_burst) {
        qmgr_gcra_set(&ss->local, share, burst);
        ss->local_rate = share;
        ss->local_burst = burst;
    }
    return qmgr_gcra_take(&ss->local, now, wait);
}

static void on_token(void *arg, enum redis_answer ans, const redisReply *rep)
{
    struct shared_site *ss = arg;
    double mnow = mono_now();

    ss->pending = 0;
    if (ans == REDIS_ANSWER_OK && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER &&
        rep->element[1]->type == REDIS_REPLY_STRING) {
        if (rep->element[0]->integer == 1) {
            ss->tokens++;
            ss->token_ready = mnow + strtod(rep->element[1]->str, NULL);
        } else
            ss->not_before = mnow + strtod(rep->element[1]->str, NULL);
    } else if (ans == REDIS_ANSWER_ERROR || ans == REDIS_ANSWER_OK) {
        log_warn("shaping: site=%s: rate script failed (%s): local share for %ds", ss->name,
                 ans == REDIS_ANSWER_ERROR ? rep->str : "unexpected reply", SHARED_ERROR_HOLD);
        ss->local_until = mnow + SHARED_ERROR_HOLD;
    } /* NONE: Redis is down, the next take goes local */
    if (ss->sh->wake)
        ss->sh->wake(ss->sh->wake_arg, ss->name);
}

static void ask_token(struct shared_site *ss, double per_sec, int burst)
{
    char rate[32], b[16], ahead[16];
    const char *argv[] = { ss->rate_key, rate, b, "0", ahead };

    snprintf(rate, sizeof(rate), "%.17g", per_sec);
    snprintf(b, sizeof(b), "%d", burst);
    snprintf(ahead, sizeof(ahead), "%g", SHARED_AHEAD);
    ss->pending = 1;
    redis_eval(ss->sh->r, ss->sh->s_gcra, 1, 5, argv, on_token, ss);
}

int qmgr_shared_rate_take(struct qmgr_shared *sh, const char *site, double per_sec, int burst,
                          double now, double *wait)
{
    struct shared_site *ss = site_get(sh, site);
    double mnow = mono_now();

    *wait = 0;
    if (ss->tokens > 0 && mnow - ss->token_ready > SHARED_AHEAD)
        ss->tokens = 0;   /* a reservation nobody came for: its slot is gone */
    if (ss->tokens > 0) { /* a reservation: go when its time has come */
        if (mnow + 0.0005 < ss->token_ready) {
            *wait = ss->token_ready - mnow;
            return 0;
        }
        ss->tokens--;
        return 1;
    }
    if (!redis_is_up(sh->r) || mnow < ss->local_until)
        return local_take(ss, per_sec, burst, now, wait);
    *wait = 1.0; /* or sooner: wake() when the answer is in */
    if (ss->pending)
        return 0;
    if (mnow < ss->not_before) {
        *wait = ss->not_before - mnow;
        return 0;
    }
    ask_token(ss, per_sec, burst);
    return 0;
}

/* ---- connection leases ---- */

static void lease_add(struct shared_site *ss, long lease)
{
    ss->leases = xgrow(ss->leases, &ss->cap, ss->nleases + 1, sizeof(*ss->leases));
    ss->leases[ss->nleases++] = lease;
}

static int lease_remove(struct shared_site *ss, long lease)
{
    for (size_t i = 0; i < ss->nleases; i++)
        if (ss->leases[i] == lease) {
            ss->leases[i] = ss->leases[--ss->nleases];
            return 1;
        }
    return 0;
}

static void lease_member(const struct qmgr_shared *sh, long lease, char *out, size_t n)
{
    snprintf(out, n, "%s:%ld", sh->node_id, lease);
}

static void on_lease(void *arg, enum redis_answer ans, const redisReply *rep)
{
    struct conn_req *cr = arg;
    enum qmgr_shared_grant g = QMGR_SHARED_LOCAL;

    if (ans == REDIS_ANSWER_OK && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER)
        g = rep->element[0]->integer == 1 ? QMGR_SHARED_GRANTED : QMGR_SHARED_REFUSED;
    else if (ans != REDIS_ANSWER_NONE)
        log_warn("shaping: site=%s: connection script failed (%s)", cr->ss->name,
                 ans == REDIS_ANSWER_ERROR ? rep->str : "unexpected reply");
    if (g == QMGR_SHARED_GRANTED)
        lease_add(cr->ss, cr->lease);
    cr->cb(cr->arg, g, g == QMGR_SHARED_GRANTED ? cr->lease : -1);
    free(cr);
}

void qmgr_shared_conn_acquire(struct qmgr_shared *sh, const char *site, int limit,
                              qmgr_shared_conn_cb_t cb, void *arg)
{
    struct conn_req *cr = xcalloc(1, sizeof(*cr));
    char lim[16], lease[16], member[300];
    const char *argv[4];

    cr->ss = site_get(sh, site);
    cr->cb = cb;
    cr->arg = arg;
    cr->lease = ++sh->next_lease;
    snprintf(lim, sizeof(lim), "%d", limit);
    snprintf(lease, sizeof(lease), "%d", SHARED_LEASE);
    lease_member(sh, cr->lease, member, sizeof(member));
    argv[0] = cr->ss->conn_key;
    argv[1] = lim;
    argv[2] = lease;
    argv[3] = member;
    redis_eval(sh->r, sh->s_acquire, 1, 4, argv, on_lease, cr);
}

static void on_ignore(void *arg, enum redis_answer ans, const redisReply *rep)
{
    if (ans == REDIS_ANSWER_ERROR)
        log_warn("shaping: shared state: %s", rep->str);
}

void qmgr_shared_conn_release(struct qmgr_shared *sh, const char *site, long lease)
{
    struct shared_site *ss = site_get(sh, site);
    char member[300];
    const char *argv[3] = { "ZREM", ss->conn_key, member };

    if (!lease_remove(ss, lease))
        return;
    lease_member(sh, lease, member, sizeof(member));
    redis_command(sh->r, 3, argv, NULL, on_ignore, NULL); /* down: it lapses */
}

size_t qmgr_shared_conn_held(struct qmgr_shared *sh, const char *site)
{
    return site_get(sh, site)->nleases;
}

void qmgr_shared_conn_release_one(struct qmgr_shared *sh, const char *site)
{
    struct shared_site *ss = site_get(sh, site);

    if (ss->nleases > 0)
        qmgr_shared_conn_release(sh, site, ss->leases[ss->nleases - 1]);
}

static void renew_site(struct qmgr_shared *sh, struct shared_site *ss)
{
    size_t n = ss->nleases;
    const char **argv = xcalloc(n + 2, sizeof(*argv));
    char **members = xcalloc(n, sizeof(*members));
    char lease[16], m[300];

    snprintf(lease, sizeof(lease), "%d", SHARED_LEASE);
    argv[0] = ss->conn_key;
    argv[1] = lease;
    for (size_t i = 0; i < n; i++) {
        lease_member(sh, ss->leases[i], m, sizeof(m));
        argv[2 + i] = members[i] = xstrdup(m);
    }
    redis_eval(sh->r, sh->s_renew, 1, (int)n + 2, argv, on_ignore, NULL);
    for (size_t i = 0; i < n; i++)
        free(members[i]);
    free(members);
    free(argv);
}

static void on_renew(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr_shared *sh = arg;
    struct hlink *l, *nx;

    if (!redis_is_up(sh->r))
        return;
    HTABLE_EACH(&sh->sites, l, nx)
    {
        struct shared_site *ss = HTABLE_ENTRY(l, struct shared_site, link);
        if (ss->nleases > 0)
            renew_site(sh, ss);
    }
}

/* ---- the whole ---- */

struct qmgr_shared *qmgr_shared_new(struct event_base *base, const char *spec, int node_count,
                                    const char *node_id, const struct redis_opts *opts,
                                    qmgr_shared_wake_t wake, void *wake_arg, buf_t *err)
{
    struct qmgr_shared *sh;
    struct timeval tv = { SHARED_LEASE / 3, 0 };
    char *host;
    int port;

    if (redis_parse_spec(spec, &host, &port, err) < 0)
        return NULL;
    sh = xcalloc(1, sizeof(*sh));
    sh->base = base;
    sh->spec = xstrdup(spec);
    sh->node_id = xstrdup(node_id);
    sh->node_count = node_count < 1 ? 1 : node_count;
    sh->wake = wake;
    sh->wake_arg = wake_arg;
    htable_init(&sh->sites, 16);
    sh->r = redis_new(base, host, port, opts);
    free(host);
    redis_on_state(sh->r, on_state, sh);
    sh->s_gcra = redis_script_add(sh->r, qmgr_shared_gcra_lua);
    sh->s_acquire = redis_script_add(sh->r, conn_acquire_lua);
    sh->s_renew = redis_script_add(sh->r, conn_renew_lua);
    sh->ev_renew = event_new(base, -1, EV_PERSIST, on_renew, sh);
    event_add(sh->ev_renew, &tv);
    return sh;
}

void qmgr_shared_free(struct qmgr_shared *sh)
{
    struct hlink *l, *nx;

    if (!sh)
        return;
    redis_free(sh->r); /* answers in flight come back first */
    event_free(sh->ev_renew);
    HTABLE_EACH(&sh->sites, l, nx)
    {
        struct shared_site *ss = HTABLE_ENTRY(l, struct shared_site, link);
        htable_remove(&sh->sites, l);
        free(ss->name);
        free(ss->rate_key);
        free(ss->conn_key);
        free(ss->leases);
        free(ss);
    }
    htable_destroy(&sh->sites);
    free(sh->spec);
    free(sh->node_id);
    free(sh);
}

int qmgr_shared_is_up(const struct qmgr_shared *sh)
{
    return redis_is_up(sh->r);
}

int qmgr_shared_local_share(const struct qmgr_shared *sh, int limit)
{
    int share = limit / sh->node_count;
    return share < 1 ? 1 : share;
}
