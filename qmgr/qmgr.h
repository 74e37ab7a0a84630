/* qmgr.h - the queue manager's internal interfaces (shared by the qmgr/ sources).
 *
 * One process, one event loop, one global state (struct qmgr). Messages
 * in memory (struct qmsg) are split per destination into jobs (struct
 * qjob) that wait in their destination's FIFO (struct qdest) until a
 * delivery-agent connection is free. A "round" is one pass over a
 * message's pending recipients; when every recipient of the round has an
 * outcome, qmgr_finish decides: notify, defer, expire or remove. */
#ifndef POSTINO_QMGR_H
#define POSTINO_QMGR_H

#include <stddef.h>
#include <stdlib.h>
#include <sys/types.h>
#include "common/util/attr.h"
#include "common/util/buf.h"
#include "common/mail/qfile.h"
#include "qmgr/qmgr_qindex.h"
#include "common/mail/server.h"

/* Recipient state within the current round. */
enum qrr {
    RR_NONE = 0,   /* not part of this round (final before it started) */
    RR_WAIT,       /* in a queued or in-flight job */
    RR_SENT,
    RR_BOUNCED,
    RR_DEFERRED,
    RR_CRASH,      /* agent died mid-job: pending, retry soon */
    RR_CANCEL,     /* job cancelled (hold/delete): pending, no outcome */
};

/* Notification kinds (request= names in qmgr_bounce.c). */
enum qkind { QK_BOUNCE = 0, QK_DELAY, QK_SUCCESS };

/* Seconds before retrying recipients whose delivery agent crashed. */
#define QMGR_CRASH_RETRY 5
/* Seconds a transport's agent may be unreachable before its mail is
 * deferred ("mail transport unavailable"). */
#define QMGR_AGENT_PATIENCE 60
/* How long a starting qmgr waits for another one to release index/lock. */
#define QMGR_LOCK_WAIT_MS 10000
/* Index lease of a message in memory, so the due scan skips it. */
#define QMGR_ACTIVE_LEASE (365LL * 86400)

struct qdest;

struct qmsg {
    char id[QID_LEN + 1];
    struct qenv env;
    unsigned char *rr;       /* enum qrr per recipient */
    size_t waiting;          /* recipients in RR_WAIT */
    int attempts;            /* previous deferrals (from the index) */
    double active_since;     /* when qmgr took it (for delays=) */
    int jobs;                /* jobs queued or in flight */
    int notify_pending;      /* bounce requests outstanding */
    int notify_failed;
    int deleted, held;
    int guard;               /* > 0: being scheduled, do not finish yet */
    int finishing;           /* round over, notifications under way */
    char *reason;            /* last deferral reason */
    struct qmsg *hnext;
};

struct qjob {
    struct qmsg *msg;
    struct qdest *dest;
    size_t *rcpt;
    size_t n;
    unsigned long long seq;  /* arrival order, for FIFO dispatch */
    struct qjob *next;
};

struct qdest {
    char *key;               /* "transport\nnexthop" */
    char *transport, *nexthop;
    struct qjob *head, *tail;
    size_t queued;
    int inflight;
    long long suspended_until;
    char *suspend_reason;
    double retry_at;         /* agent unreachable: do not dispatch before */
    double unreach_since;    /* agent unreachable since (0: reachable) */
    struct qjob *building;   /* open job of the message being scheduled */
    struct qdest *hnext;
    struct qdest *bnext, *bprev; /* list of destinations with queued jobs */
    int busy;
    size_t hpos;             /* position in the ready heap + 1; 0 = not in it */
    int timed;               /* in the list of those waiting for a time */
    struct qdest *tnext, *tprev;
};

struct qmgr_stats {
    size_t active;           /* messages in memory */
    size_t inflight;         /* jobs at delivery agents */
    size_t rcpts;            /* recipients of the messages in memory */
};

struct qmgr {
    struct server *srv;
    const char *spool;
    struct qindex *qi;
    struct qmgr_stats st;
    long long active_limit;  /* qmgr_message_active_limit */
    long long rcpt_limit;    /* qmgr_message_recipient_limit */
    int stopping;
    uid_t owner_uid;         /* mail_owner (perm_init) */
    gid_t owner_gid;         /* its primary group: members may manage the queue */
    int owner_known;         /* mail_owner exists */
    int lock_fd;             /* index/lock, held for qmgr's life */
};

extern struct qmgr qmgr_g;

double qmgr_now(void);

/* qmgr_message.c */
/* Room for another message in memory (message and recipient limits)? */
int msg_room(void);
struct qmsg *msg_find(const char *id);
/* Take message id into memory and schedule it. attempts: from the index.
 * Logs the "from=" line. check_busy: first make sure no delivery agent
 * still works on it (qfile_busy; new mail cannot be). Returns 0, or -1
 * (file gone/bad: logged). */
int msg_activate(const char *id, int attempts, int check_busy);
void msg_free(struct qmsg *m);
void msg_set_reason(struct qmsg *m, const char *reason);
/* Record the round outcome of recipient idx (also in memory's qrcpt). */
void msg_rcpt_done(struct qmsg *m, size_t idx, int rr, const char *dsn, const char *reason);
/* Append a deferred result and log it, for recipients qmgr defers itself. */
void msg_defer_rcpt(struct qmsg *m, size_t idx, const char *dsn, const char *reason);
void msg_log_status(const struct qmsg *m, size_t idx, const char *relay, const char *dsn,
                    const char *status, const char *reason);
/* Iterate over every message in memory. */
void msg_foreach(void (*fn)(struct qmsg *m, void *arg), void *arg);

/* qmgr_finish.c */
/* Called whenever a recipient/job/notification completes. */
void finish_check(struct qmsg *m);
void finish_notify_done(struct qmsg *m, int kind, const size_t *idx, size_t n, int ok);

/* qmgr_route.c */
void route_init(void);
void route_close(void);
/* transport and nexthop for recipient address. */
void route_rcpt(const char *addr, buf_t *transport, buf_t *nexthop);

/* qmgr_sched.c */
void sched_message(struct qmsg *m);
void sched_dispatch(void);
/* Does an agent's reply fit job j (else it is malformed)? */
int sched_reply_matches(const struct qjob *j, const attr_t *reply);
/* A job came back (reply checked by sched_reply_matches). reply NULL: connection broke (reason given). */
void sched_job_done(struct qjob *j, const attr_t *reply, const char *reason);
/* A job sent on a stale pooled connection: put it back, unchanged. */
void sched_cancel_msg(struct qmsg *m);
void sched_unsuspend_all(void);
void sched_tick(void);

/* qmgr_ready.c */
/* Re-evaluate whether d may take a job now (call after any change to its
 * first job, inflight, retry_at or suspension). */
void ready_update(struct qdest *d, double now);
void ready_forget(struct qdest *d);
/* The destination whose first job is oldest among those that may take
 * one, or NULL. O(1). */
struct qdest *ready_pick(void);
/* Move destinations whose waiting time is over into the heap. */
void ready_wake(double now);
/* Set the per-destination concurrency; 1 when it changed (the caller then
 * calls ready_update for every destination with queued jobs). */
int ready_set_limit(int limit);

/* qmgr_deliver.c */
/* Start job on a connection to its transport. 0 started, -1 no agent. */
int deliver_start(struct qjob *j);
void deliver_close_all(void);

/* qmgr_bounce.c */
void bounce_request(struct qmsg *m, int kind, const size_t *idx, size_t n);
void bounce_tick(void);
void bounce_close(void);

/* qmgr_index.c */
void index_startup(void);
/* Adopt queue files the index does not know (lost notifications). */
void index_rescan(void);
void index_build_rec(const struct qenv *env, int state, long long next, int attempts,
                     const char *reason, struct qidx_rec *rec);
/* Put message state into the index from its in-memory envelope. */
void index_put_env(const struct qenv *env, int state, long long next, int attempts,
                   const char *reason);
/* Pull due messages into memory while below the active limit. */
void index_pull_due(void);
/* A notification "new" for a queue file. */
void index_new_mail(const char *id);
/* Scan the index records a control request selects: queue_id=ID...,
 * domain=D, sender=S, all=1 (and state=S as a filter). need_selector:
 * fail (-1, *err) when the request names none. */
int index_scan_select(const attr_t *req, int need_selector, qindex_cb cb, void *arg,
                      const char **err);
void index_shutdown(void);

/* qmgr_perm.c */
/* Look up mail_owner (before privileges drop). */
void perm_init(void);
/* May the peer on this control connection use the queue at all? */
int perm_may_manage(int fd);

/* qmgr_control.c */
void control_init(void);
void control_close(void);

#endif
