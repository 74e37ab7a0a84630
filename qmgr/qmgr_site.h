/* qmgr_site.h - sites: qmgr's scheduling unit above destinations.
 *
 * A site is where mail physically goes: the set of MX hosts of a domain.
 * Domains whose MX sets are equal, or whose MX names end in a suffix of
 * shaping_mx_rollup, share one struct qmgr_site and with it one
 * connection limit, one message rate (GCRA), one state (normal,
 * throttled, suspended) and one policy from shaping_maps. Destinations
 * (struct qmgr_dest, transport + nexthop) still hold the job FIFOs; each
 * points at its site once qmgr knows it (an asynchronous MX lookup).
 *
 * The first part is pure (policy syntax, grouping; tests/unit/qmgr/
 * test_site.c); the second is the live table, used by qmgr_sched.c and by
 * the throttle rules. */
#ifndef POSTINO_QMGR_SITE_H
#define POSTINO_QMGR_SITE_H

#include <stddef.h>
#include <sys/queue.h>

#include "common/util/buf.h"
#include "common/util/htable.h"
#include "qmgr/qmgr_gcra.h"
#include "common/mail/shaperules.h"
#include "qmgr/qmgr_slowstart.h"

#define QMGR_SITE_MAX_RETRY 8

/* One site's policy: a shaping_maps row over the default row. 0 (or
 * rates 0) means "not set": the Postfix-style main.cf default applies. */
struct qmgr_shaping {
    int max_connections;               /* default_destination_concurrency_limit */
    int max_connections_per_source;    /* per source address (qmgr_pool.c), 0: none */
    int max_deliveries_per_connection; /* smtp_connection_reuse_count_limit */
    double max_message_rate;           /* messages per second, 0: unlimited */
    int message_burst;                 /* GCRA burst (1 unless set) */
    double max_connection_rate;        /* new connections per second */
    int connection_burst;
    long long connect_timeout;            /* seconds; smtp_connect_timeout */
    long long idle_timeout;               /* smtp_connection_cache_time_limit */
    long long retry[QMGR_SITE_MAX_RETRY]; /* per-site retry schedule */
    size_t nretry;
    char *msg_rate_text, *conn_rate_text; /* as written ("300/h"), or NULL */
};

/* Parse a row "name=value, name=value ..." (commas and/or spaces) over
 * *p: the names it sets replace those of *p. 0, or -1 with err. */
int qmgr_shaping_parse(const char *row, struct qmgr_shaping *p, buf_t *err);
void qmgr_shaping_copy(struct qmgr_shaping *dst, const struct qmgr_shaping *src);
void qmgr_shaping_destroy(struct qmgr_shaping *p);
/* The row's text as name=value pairs (for site show). */
void qmgr_shaping_format(const struct qmgr_shaping *p, buf_t *out);

/* shaping_mx_rollup: ".suffix=name" items. */
struct qmgr_rollup {
    char *suffix; /* ".google.com", lower case */
    char *name;
};
/* Parse "suffix=name, ..." (a suffix without a leading dot gets one).
 * Returns the number of items (*out allocated), or -1 with err. */
int qmgr_rollup_parse(const char *text, struct qmgr_rollup **out, buf_t *err);
void qmgr_rollup_free(struct qmgr_rollup *r, size_t n);

/* Group an MX host list (prefs: their MX preferences, NULL: all equal).
 * *key identifies the site ("rollup:NAME" when a host name ends in a
 * rollup suffix, else "mx:" + the sorted, lower-cased, comma-joined host
 * set); *name is the rollup name, else the most preferred host name (the
 * first in alphabetical order among equals). */
void qmgr_site_group(const char *const *hosts, const int *prefs, size_t n,
                     const struct qmgr_rollup *r, size_t nr, buf_t *key, buf_t *name);

/* ---- the live table ---- */

enum qmgr_site_state { SITE_NORMAL, SITE_THROTTLED, SITE_SUSPENDED };

struct qmgr_dest;
struct qmgr_job;
struct event;

#define QMGR_SITE_RATE_SLOTS 60

struct qmgr_site {
    char *name;
    char *key;
    struct qmgr_shaping pol; /* effective policy */
    enum qmgr_site_state state;
    long long state_until; /* state ends (time(NULL) seconds) */
    char *state_reason;
    int conns;      /* jobs in flight: connections in use */
    int conc_limit; /* effective max connections */
    /* ---- private to qmgr_site.c and qmgr_sched.c ---- */
    struct gcra msg_rate, conn_rate;
    double rate_throttle; /* per second while throttled by rate, else 0 */
    int conc_throttle;    /* connections while throttled, else 0 */
    char **domains;       /* the domains seen in it */
    size_t ndomains;
    LIST_HEAD(, qmgr_dest) dests;  /* its destinations */
    LIST_HEAD(, qmgr_dest) parked; /* destinations waiting for it */
    struct event *timer;           /* wakes parked destinations */
    double timer_at;
    long long sent_t[QMGR_SITE_RATE_SLOTS]; /* messages sent per second, */
    unsigned sent_n[QMGR_SITE_RATE_SLOTS];  /* over the last minute */
    struct hlink hlink;
    /* ---- adaptive throttling (qmgr_throttle.c) ---- */
    struct qmgr_slowstart slow;   /* connections the replies allow, <= conc_limit */
    const struct shaperule *rule; /* the rule whose state is in force, or NULL */
    /* ---- the last deferral, for site list and postino top (issue #11) ---- */
    char *last_defer;
    long long last_defer_at;
    /* ---- jobs in flight per source address (max_connections_per_source) ---- */
    struct qmgr_site_src *by_src;
    size_t nby_src;
    /* ---- connection leases shared with other nodes (shaping_shared_state) ---- */
    int lease_pending;     /* an acquire is in flight */
    double lease_retry_at; /* refused: ask again from then */
    int lease_spare;       /* leases found unused at the last tick */
};

struct qmgr_site_src {
    char *ip;
    int conns;
};

/* A rate token: 1 = may send now; 0 = *wait_s seconds until the next one. */
int qmgr_site_rate_take(struct qmgr_site *s, double now, double *wait_s);
/* Adaptive changes (used by the throttle rules): */
void qmgr_site_suspend(struct qmgr_site *s, long long secs, const char *why);
void qmgr_site_throttle_rate(struct qmgr_site *s, double per_sec, long long secs, const char *why);
void qmgr_site_throttle_conc(struct qmgr_site *s, int conc, long long secs, const char *why);
void qmgr_site_bounce_queued(struct qmgr_site *s, const char *dsn, const char *why);
struct qmgr_site *qmgr_site_find(const char *name);
/* A shared rate answer for site name came in: its parked destinations
 * may try again (qmgr_shared's wake callback). */
void qmgr_site_wake(const char *name);
/* Connections the site may use now: its limit, or less while slow start
 * holds it lower (qmgr_slowstart.h). */
int qmgr_site_conc_now(const struct qmgr_site *s);
/* Slow start let the site have more connections: wake what waits. */
void qmgr_site_window_grown(struct qmgr_site *s);
/* End a throttled or suspended state now (one log line). */
void qmgr_site_resume(struct qmgr_site *s);

/* Read shaping_maps and shaping_mx_rollup, set up DNS (before/after the
 * privilege drop: init opens the table, start needs the event loop). */
void qmgr_site_init(void);
void qmgr_site_start(void);
void qmgr_site_close(void);
/* Attach d to its site: at once when known (MX cache, non-MX nexthop),
 * else after an MX lookup (d->site stays NULL until then). */
void qmgr_site_attach(struct qmgr_dest *d);
void qmgr_site_detach(struct qmgr_dest *d);

/* What dispatch may do with a job for s now. */
enum qmgr_site_go {
    SITE_GO,    /* send (a rate token has been taken) */
    SITE_WAIT,  /* not now: the destination is parked on the site */
    SITE_DEFER, /* the site is suspended: defer the job */
};
/* fresh: the job needs a new connection (no idle one is pinned to s). */
enum qmgr_site_go qmgr_site_admit(struct qmgr_site *s, struct qmgr_dest *d, int fresh, double now);
/* A job of s from source address src (NULL: none) started / came back. */
void qmgr_site_job_started(struct qmgr_site *s, const char *src, double now);
void qmgr_site_job_done(struct qmgr_site *s, const char *src);
/* Jobs in flight to s from source address src. */
int qmgr_site_source_conns(const struct qmgr_site *s, const char *src);
/* May another job go to s from src (max_connections_per_source)? */
int qmgr_site_source_ok(const struct qmgr_site *s, const char *src);
/* With shaping_shared_state and a max_connections of its own, a site's
 * connections hold across the nodes by leases in Redis (qmgr_shared.c):
 * 0 when starting j (NULL: a job of s, before its source address is
 * chosen) would pin a connection this node holds no lease for: one is
 * asked for, and the destination waits with qmgr_site_lease_wait. */
int qmgr_site_lease_ok(struct qmgr_site *s, const struct qmgr_job *j);
void qmgr_site_lease_wait(struct qmgr_site *s, struct qmgr_dest *d);
/* d waits for a job of its site to come back (no source address of its
 * pool may open another connection to the site now). */
void qmgr_site_wait(struct qmgr_site *s, struct qmgr_dest *d);
int qmgr_site_suspended(const struct qmgr_site *s);
/* Seconds until the next try of a message deferred at s after attempts
 * deferrals, from its retry schedule; 0 when it has none. */
long long qmgr_site_retry(const struct qmgr_site *s, int attempts);
/* Once a second: end states whose time is over, forget idle sites. */
void qmgr_site_tick(void);
/* Messages per minute over the last minute. */
unsigned qmgr_site_rate_now(const struct qmgr_site *s, long long now);
size_t qmgr_site_queued(const struct qmgr_site *s);
/* Iterate over every site. */
void qmgr_site_foreach(void (*fn)(struct qmgr_site *s, void *arg), void *arg);
const char *qmgr_site_state_name(enum qmgr_site_state st);
/* The site name of transport:nexthop as qmgr knows it now, without a
 * lookup (metrics): 1 with *name set, or 0 when it is MX-routed and its
 * MX set is not in the cache (name untouched). */
int qmgr_site_name_for(const char *transport, const char *nexthop, buf_t *name);
/* The site name for mail to transport/nexthop, without a DNS lookup (an
 * MX-routed domain not looked up yet: the domain). */
void qmgr_site_name_of(const char *transport, const char *nexthop, buf_t *name);
/* A recipient of s was deferred for why (NULL s or why: nothing). */
void qmgr_site_note_deferral(struct qmgr_site *s, const char *why);

#endif
