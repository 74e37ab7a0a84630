/* qmgr_shared.h - per-site limits held jointly by several postino nodes in
 * Redis (shaping_shared_state = redis:HOST:PORT).
 *
 * Rate: a GCRA per site in a Lua script on key postino:rate:<site>, the
 * same arithmetic as qmgr/qmgr_gcra.c, on the Redis server's clock so the
 * nodes' clocks need not agree. Connections: a sorted set of leases per
 * site (postino:conn:<site>, member node:n, score = expiry) renewed while
 * held, so a crashed node's connections lapse by themselves.
 *
 * Nothing waits for Redis: a token is asked for and the site is woken
 * (wake callback) when the answer is in. While Redis is unreachable each
 * node keeps to its share of the limit (limit / shaping_node_count) with a
 * local GCRA, says so once in the log, and goes back to the shared
 * counters when Redis is back. */
#ifndef POSTINO_QMGR_SHARED_H
#define POSTINO_QMGR_SHARED_H

#include "common/util/buf.h"

struct event_base;
struct redis_opts;
struct qmgr_shared;

/* The site may try again (a token or a lease answer arrived). */
typedef void (*qmgr_shared_wake_t)(void *arg, const char *site);

enum qmgr_shared_grant {
    QMGR_SHARED_GRANTED, /* a lease is held: release it when done */
    QMGR_SHARED_REFUSED, /* the joint limit is reached */
    QMGR_SHARED_LOCAL,   /* Redis unreachable: apply the local share */
};
typedef void (*qmgr_shared_conn_cb_t)(void *arg, enum qmgr_shared_grant g, long lease);

/* The GCRA script (KEYS[1]; ARGV per_sec, burst, now or 0 for the server's
 * clock), answering {1, "0"} or {0, "<wait seconds>"}. */
extern const char qmgr_shared_gcra_lua[];

/* spec "redis:HOST:PORT"; node_id names this node's leases (unique per
 * node). NULL with err on a bad spec. opts NULL: redis.c's defaults. */
struct qmgr_shared *qmgr_shared_new(struct event_base *base, const char *spec, int node_count,
                                    const char *node_id, const struct redis_opts *opts,
                                    qmgr_shared_wake_t wake, void *wake_arg, buf_t *err);
void qmgr_shared_free(struct qmgr_shared *sh);
int qmgr_shared_is_up(const struct qmgr_shared *sh);
/* limit / shaping_node_count, at least 1 (connections). */
int qmgr_shared_local_share(const struct qmgr_shared *sh, int limit);

/* A message token for site at per_sec (burst): 1 = send now; 0 = not yet:
 * try again after *wait seconds, or sooner when wake(site) is called. now
 * is the caller's clock (seconds) for the local fallback. */
int qmgr_shared_rate_take(struct qmgr_shared *sh, const char *site, double per_sec, int burst,
                          double now, double *wait);

/* One connection lease for site, at most limit across the nodes; cb is
 * called once, from the loop. A granted lease is renewed until released. */
void qmgr_shared_conn_acquire(struct qmgr_shared *sh, const char *site, int limit,
                              qmgr_shared_conn_cb_t cb, void *arg);
void qmgr_shared_conn_release(struct qmgr_shared *sh, const char *site, long lease);
/* Leases this node holds for site. */
size_t qmgr_shared_conn_held(struct qmgr_shared *sh, const char *site);
/* Release one of them (the newest), if any. */
void qmgr_shared_conn_release_one(struct qmgr_shared *sh, const char *site);

#endif
