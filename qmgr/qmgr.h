/* qmgr.h - the queue manager's internal interfaces (shared by the qmgr/ sources).
 *
 * One process, one event loop, one global state (struct qmgr). Messages
 * in memory (struct qmgr_msg) are split per destination into jobs
 * (struct qmgr_job) that wait in their destination's FIFO (struct
 * qmgr_dest) until a delivery-agent connection is free. A "round" is one pass over a
 * message's pending recipients; when every recipient of the round has an
 * outcome, qmgr_finish decides: notify, defer, expire or remove. */
#ifndef POSTINO_QMGR_H
#define POSTINO_QMGR_H

#include <stddef.h>
#include <stdlib.h>
#include <sys/queue.h>
#include <sys/types.h>
#include "common/util/attr.h"
#include "common/util/buf.h"
#include "common/util/htable.h"
#include "common/mail/prio.h"
#include "common/mail/qfile.h"
#include "qmgr/qmgr_fair.h"
#include "qmgr/qmgr_qindex.h"
#include "qmgr/qmgr_site.h"
#include "common/mail/server.h"

/* Recipient state within the current round. */
enum qmgr_rr {
    RR_NONE = 0, /* not part of this round (final before it started) */
    RR_WAIT,     /* in a queued or in-flight job */
    RR_SENT,
    RR_BOUNCED,
    RR_DEFERRED,
    RR_CRASH,  /* agent died mid-job: pending, retry soon */
    RR_CANCEL, /* job cancelled (hold/delete): pending, no outcome */
};

/* Notification kinds (request= names in qmgr_bounce.c). */
enum qmgr_kind { QK_BOUNCE = 0, QK_DELAY, QK_SUCCESS };

/* Seconds before retrying recipients whose delivery agent crashed. */
#define QMGR_CRASH_RETRY 5
/* Seconds a transport's agent may be unreachable before its mail is
 * deferred ("mail transport unavailable"). */
#define QMGR_AGENT_PATIENCE 60
/* How long a starting qmgr waits for another one to release index/lock. */
#define QMGR_LOCK_WAIT_MS 10000
/* Index lease of a message in memory, so the due scan skips it. */
#define QMGR_ACTIVE_LEASE (365LL * 86400)

struct qmgr_dest;
struct qmgr_shared;
struct qmgr_src;
struct mxent;

struct qmgr_msg {
    char id[QID_LEN + 1];
    struct qenv env;
    unsigned char *rr;   /* enum qmgr_rr per recipient */
    size_t waiting;      /* recipients in RR_WAIT */
    int attempts;        /* previous deferrals (from the index) */
    double active_since; /* when qmgr took it (for delays=) */
    int jobs;            /* jobs queued or in flight */
    int notify_pending;  /* bounce requests outstanding */
    int notify_failed;
    int deleted, held;
    int guard;            /* > 0: being scheduled, do not finish yet */
    int finishing;        /* round over, notifications under way */
    char *reason;         /* last deferral reason */
    long long site_retry; /* seconds: the shortest site retry schedule step
                             of this round's deferrals (0: backoff) */
    enum prio_class prio; /* its priority class (queue file's priority=) */
    char *fairkey;        /* whose turn it takes in its class (qmgr_fair.h) */
    struct hlink hlink;   /* in the table of messages in memory, by id */
};

struct qmgr_job {
    struct qmgr_msg *msg;
    struct qmgr_dest *dest;
    size_t *rcpt;
    size_t n;
    unsigned long long seq;  /* arrival order, for FIFO dispatch */
    struct qmgr_src *src;    /* source address while in flight (qmgr_pool.c) */
    struct qmgr_fsender *fs; /* its sender's FIFO while queued (qmgr_fair.c) */
    TAILQ_ENTRY(qmgr_job)
    link; /* in its sender's FIFO of its destination's queue, or the
                                   message's jobs while it is scheduled */
};

TAILQ_HEAD(qmgr_jobq, qmgr_job);

struct qmgr_dest {
    char *key; /* "transport\nnexthop" */
    char *transport, *nexthop;
    struct qmgr_fairq q; /* queued jobs: by class, then senders in turn */
    size_t queued;
    int inflight;
    long long suspended_until;
    char *suspend_reason;
    const char *suspend_category; /* bclass name of the failure, or NULL */
    double retry_at;              /* agent unreachable: do not dispatch before */
    double unreach_since;         /* agent unreachable since (0: reachable) */
    struct qmgr_job *building;    /* open job of the message being scheduled */
    struct hlink hlink;           /* in the table of destinations, by key */
    int busy;                     /* in the list of destinations with queued jobs */
    LIST_ENTRY(qmgr_dest) blink;
    size_t hpos; /* position in the ready heap + 1; 0 = not in it */
    int timed;   /* in the list of those waiting for a time */
    LIST_ENTRY(qmgr_dest) tlink;
    struct qmgr_site *site;      /* NULL while its MX lookup runs (qmgr_site.c) */
    struct mxent *mxwait;        /* that lookup */
    LIST_ENTRY(qmgr_dest) slink; /* in the site's (or the lookup's) list */
    int parked;                  /* waiting for its site (not in the heap) */
    LIST_ENTRY(qmgr_dest) plink;
};

struct qmgr_stats {
    size_t active;   /* messages in memory */
    size_t inflight; /* jobs at delivery agents */
    size_t rcpts;    /* recipients of the messages in memory */
};

struct qmgr {
    struct server *srv;
    const char *spool;
    struct qindex *qi;
    struct qmgr_stats st;
    long long active_limit; /* qmgr_message_active_limit */
    long long rcpt_limit;   /* qmgr_message_recipient_limit */
    int stopping;
    uid_t owner_uid;            /* mail_owner (qmgr_perm_init) */
    gid_t owner_gid;            /* its primary group: members may manage the queue */
    int owner_known;            /* mail_owner exists */
    int lock_fd;                /* index/lock, held for qmgr's life */
    struct qmgr_shared *shared; /* shaping_shared_state; NULL: local limits */
};

extern struct qmgr qmgr_g;

double qmgr_now(void);

/* qmgr_message.c */
/* Room for another message in memory (message and recipient limits)? */
int qmgr_msg_room(void);
struct qmgr_msg *qmgr_msg_find(const char *id);
/* Take message id into memory and schedule it. attempts: from the index.
 * Logs the "from=" line. check_busy: first make sure no delivery agent
 * still works on it (qfile_busy; new mail cannot be). Returns 0, or -1
 * (file gone/bad: logged). */
int qmgr_msg_activate(const char *id, int attempts, int check_busy);
void qmgr_msg_free(struct qmgr_msg *m);
void qmgr_msg_set_reason(struct qmgr_msg *m, const char *reason);
/* Record the round outcome of recipient idx (also in memory's qrcpt).
 * category: bclass name of a failure, or NULL. */
void qmgr_msg_rcpt_done(struct qmgr_msg *m, size_t idx, enum qmgr_rr rr, const char *dsn,
                        const char *reason, const char *category);
/* Append a deferred result and log it, for recipients qmgr defers itself. */
void qmgr_msg_defer_rcpt(struct qmgr_msg *m, size_t idx, const char *dsn, const char *reason,
                         const char *category);
/* The "to=..., status=deferred (reason), category=..." line, and its
 * event. */
void qmgr_msg_log_status(const struct qmgr_msg *m, size_t idx, const char *relay, const char *dsn,
                         const char *status, const char *reason, const char *category);
/* The log line alone, without the event. */
void qmgr_msg_log_line(const struct qmgr_msg *m, size_t idx, const char *relay, const char *dsn,
                       const char *status, const char *reason, const char *category);
/* The recipient event (issue #11) of an outcome qmgr decides itself:
 * type "expiration", "suppression", or NULL for the type of status
 * ("deferred", "bounced"). Nothing when events are off. */
void qmgr_msg_event(const struct qmgr_msg *m, size_t idx, const char *type, const char *dsn,
                    const char *status, const char *reason, const char *category);
/* Iterate over every message in memory. */
void qmgr_msg_foreach(void (*fn)(struct qmgr_msg *m, void *arg), void *arg);

/* qmgr_finish.c */
/* Called whenever a recipient/job/notification completes. */
void qmgr_finish_check(struct qmgr_msg *m);
void qmgr_finish_notify_done(struct qmgr_msg *m, enum qmgr_kind kind, const size_t *idx, size_t n,
                             int ok);

/* qmgr_route.c */
void qmgr_route_init(void);
void qmgr_route_close(void);
/* transport and nexthop for recipient address. */
void qmgr_route_rcpt(const char *addr, buf_t *transport, buf_t *nexthop);

/* qmgr_sched.c */
void qmgr_sched_message(struct qmgr_msg *m);
/* The job d gives next (qmgr_fair.h's order), or NULL. */
struct qmgr_job *qmgr_sched_head(const struct qmgr_dest *d);
void qmgr_sched_dispatch(void);
/* Does an agent's reply fit job j (else it is malformed)? */
int qmgr_sched_reply_matches(const struct qmgr_job *j, const attr_t *reply);
/* A job came back (reply checked by qmgr_sched_reply_matches). reply
 * NULL: connection broke (reason given). */
void qmgr_sched_job_done(struct qmgr_job *j, const attr_t *reply, const char *reason);
/* A job sent on a stale pooled connection: put it back, unchanged. */
void qmgr_sched_cancel_msg(struct qmgr_msg *m);
void qmgr_sched_unsuspend_all(void);
/* Take every job queued for site s out: defer (rr RR_DEFERRED: "delivery
 * temporarily suspended") or bounce (RR_BOUNCED, with dsn and why). */
void qmgr_sched_site_flush(struct qmgr_site *s, enum qmgr_rr rr, const char *dsn, const char *why);
void qmgr_sched_tick(void);

/* qmgr_ready.c */
/* Re-evaluate whether d may take a job now (call after any change to its
 * first job, inflight, retry_at or suspension). */
void qmgr_ready_update(struct qmgr_dest *d, double now);
void qmgr_ready_forget(struct qmgr_dest *d);
/* The destination whose next job is of the highest class, then oldest,
 * one, or NULL. O(1). */
struct qmgr_dest *qmgr_ready_pick(void);
/* Move destinations whose waiting time is over into the heap. */
void qmgr_ready_wake(double now);
/* Set the per-destination concurrency; 1 when it changed (the caller then
 * calls qmgr_ready_update for every destination with queued jobs). */
int qmgr_ready_set_limit(int limit);

/* qmgr_deliver.c */
/* Start job on a connection to its transport. 0 started, -1 no agent. */
int qmgr_deliver_start(struct qmgr_job *j);
/* Is an idle agent connection that last served d's site still pinned to
 * it (its delivery agent may hold a cached SMTP session for the site)? */
int qmgr_deliver_site_idle(const struct qmgr_dest *d);
/* Idle connections pinned to s (and to source address src; NULL: any)
 * whose agent probably keeps a session open to it. */
int qmgr_deliver_idle_sessions(const struct qmgr_site *s, const char *src);
/* Agent connections pinned to s, busy or idle: the connections this node
 * may have open to it. */
int qmgr_deliver_pinned(const struct qmgr_site *s);
/* Would starting j (NULL: any job of s) pin one more connection to s? */
int qmgr_deliver_adds_pin(const struct qmgr_site *s, const struct qmgr_job *j);
void qmgr_deliver_close_all(void);
/* Close agent connections idle for a while (from the 1-second timer). */
void qmgr_deliver_tick(void);

/* qmgr_bounce.c */
void qmgr_bounce_request(struct qmgr_msg *m, enum qmgr_kind kind, const size_t *idx, size_t n);
void qmgr_bounce_tick(void);
void qmgr_bounce_close(void);

/* qmgr_index.c */
void qmgr_index_startup(void);
/* Adopt queue files the index does not know (lost notifications). */
void qmgr_index_rescan(void);
/* The start-up scan of the spool runs in slices on the loop: which one
 * runs now, and (*scanned) how many queue files it has looked at. */
enum qmgr_scan_kind {
    QSCAN_NONE,    /* none: the index is complete */
    QSCAN_REBUILD, /* after an unclean stop: every file read into the index */
    QSCAN_ADOPT,   /* after a clean stop: files that came meanwhile adopted */
};
enum qmgr_scan_kind qmgr_index_scanning(size_t *scanned);
void qmgr_index_build_rec(const struct qenv *env, int state, long long next, int attempts,
                          const char *reason, struct qmgr_qidx_rec *rec);
/* Put message state into the index from its in-memory envelope. */
void qmgr_index_put_env(const struct qenv *env, int state, long long next, int attempts,
                        const char *reason);
/* Pull due messages into memory while below the active limit. */
void qmgr_index_pull_due(void);
/* A notification "new" for a queue file. */
void qmgr_index_new_mail(const char *id);
/* Scan the index records a control request selects: queue_id=ID...,
 * domain=D, sender=S, all=1 (and state=S as a filter). need_selector:
 * fail (-1, *err) when the request names none. */
int qmgr_index_scan_select(const attr_t *req, int need_selector, qmgr_qindex_cb cb, void *arg,
                           const char **err);
/* The same without queue_id=, in pieces: at most max records with ids
 * after *after ("" first; updated to the last one looked at, a buffer of
 * QID_LEN + 1), the selected ones to cb. 1 when the selection is
 * exhausted, 0 when more may follow, -1 with *err. */
int qmgr_index_scan_select_piece(const attr_t *req, char *after, size_t max, qmgr_qindex_cb cb,
                                 void *arg, const char **err);
void qmgr_index_shutdown(void);

/* qmgr_perm.c */
/* Look up mail_owner (before privileges drop). */
void qmgr_perm_init(void);
/* May the peer on this control connection use the queue at all? */
int qmgr_perm_may_manage(int fd);

/* qmgr_suppress.c: the suppression list, written by qmgr alone */
struct suppress;
/* Load the classifier rules and open the store (after qmgr_lock). */
void qmgr_suppress_init(void);
void qmgr_suppress_close(void);
/* Once a second: reopen a failed store, purge expired entries, sync. */
void qmgr_suppress_tick(void);
/* The open store, or NULL (it failed to open). */
struct suppress *qmgr_suppress_store(void);
/* Something was written: sync at the next tick (or now: _sync). */
void qmgr_suppress_changed(void);
void qmgr_suppress_sync(void);
/* Before scheduling recipient idx: 1 when it is suppressed (then it is
 * finished as bounced, logged, and marked as notified: no DSN). */
int qmgr_suppress_rcpt(struct qmgr_msg *m, size_t idx);
/* A recipient's outcome: a hard bounce (category, or when the agent gave
 * none, the classifier's reading of dsn and reason) adds it to the list. */
void qmgr_suppress_outcome(struct qmgr_msg *m, size_t idx, enum qmgr_rr rr, const char *dsn,
                           const char *reason, const char *category);
/* qmgr_suppress_ctl.c: the control requests suppress_add, suppress_remove,
 * suppress_list, suppress_import (as the handlers of qmgr_control.c). */
struct evbuffer;
int qmgr_suppress_ctl_add(const attr_t *req, struct evbuffer *out, const char **err);
int qmgr_suppress_ctl_remove(const attr_t *req, struct evbuffer *out, const char **err);
int qmgr_suppress_ctl_list(const attr_t *req, struct evbuffer *out, const char **err);
int qmgr_suppress_ctl_import(const attr_t *req, struct evbuffer *out, const char **err);
/* qmgr_site_ctl.c: site_list (postino site list/show) */
int qmgr_site_ctl_list(const attr_t *req, struct evbuffer *out, const char **err);
int qmgr_site_ctl_set(const attr_t *req, struct evbuffer *out, const char **err);
/* qmgr_metrics.c: outcomes to the metrics service; the gauges request */
struct qmgr_site;
void qmgr_metrics_outcome(const struct qmgr_msg *m, const struct qmgr_site *s, enum qmgr_rr rr,
                          const char *category);
int qmgr_metrics_ctl(const attr_t *req, struct evbuffer *out, const char **err);
/* qmgr_shape_ctl.c: summary (postino queue summary, issue #11) */
int qmgr_shape_ctl_summary(const attr_t *req, struct evbuffer *out, const char **err);

/* qmgr_pool.c: source address pools (issue #9) */
enum qmgr_pool_pick {
    POOL_NONE,     /* no pool applies: no source= (smtp_bind_address) */
    POOL_ADDR,     /* j->src chosen and counted */
    POOL_EXHAUSTED /* every address of its pool is capped or out */
};
/* Read the tables (before privileges drop). */
void qmgr_pool_init(void);
/* Read today's warm-up counters from the spool (after qmgr_lock). */
void qmgr_pool_load(void);
void qmgr_pool_tick(void);
void qmgr_pool_close(void);
/* Choose j's source address (weighted round-robin in its pool). */
enum qmgr_pool_pick qmgr_pool_assign(struct qmgr_job *j);
/* The job did not go after all: give its count back. */
void qmgr_pool_unassign(struct qmgr_job *j);
/* 1 when every usable address of j's pool is at the site's
 * max_connections_per_source: j waits for one of their jobs to end. */
int qmgr_pool_busy(const struct qmgr_job *j);
/* source= and helo= for the job request, or NULL. */
const char *qmgr_pool_source(const struct qmgr_job *j);
const char *qmgr_pool_helo(const struct qmgr_job *j);
/* A reply saying the job's source address cannot be bound: the address
 * is taken out (logged) and 1 returned - the job goes again at once. */
int qmgr_pool_job_failed(struct qmgr_job *j, const attr_t *reply);

/* qmgr_throttle.c: adaptive throttling (shaping_rules, slow start) */
/* Read shaping_rules (before privileges drop; a broken file is logged). */
void qmgr_throttle_init(void);
void qmgr_throttle_close(void);
/* Once a second: end source suspensions whose time is over. */
void qmgr_throttle_tick(void);
/* A job for site s sent from ip (NULL: no pool) came back with reply
 * (NULL: the agent broke): slow start and the rules. */
void qmgr_throttle_job_done(struct qmgr_site *s, const char *ip, const attr_t *reply);
/* May ip send to s now (not suspended by a suspend_source rule)? */
int qmgr_throttle_source_ok(const struct qmgr_site *s, const char *ip);

/* qmgr_control.c */
void qmgr_control_init(void);
void qmgr_control_close(void);

#endif
