/* workq.h - the one pool of worker threads for blocking work off an event
 * loop: fsync of queue files (smtpd's group commit) and Cyrus SASL steps
 * (glue/sasl_pool.c) that may wait on saslauthd, PAM or LDAP.
 *
 * run() executes on a worker thread and must touch nothing the loop thread
 * uses; done() then runs ON THE LOOP THREAD, from the event loop, never
 * from inside workq_submit()/workq_post(). Jobs of different owners run in
 * parallel: several fsyncs in flight at once let the filesystem commit
 * them in one journal transaction (group commit), where one fsync after
 * another on the loop would serialise every message behind the previous
 * one's disk flush.
 *
 * Two ways to hand in work:
 *   workq_submit()  fire and forget: the pool allocates the job and frees
 *                   it after done().
 *   workq_post()    a struct workq_job the owner holds (embedded in its own
 *                   object). One job is in the pool at most once: posting it
 *                   again before its done() ran is a bug (log_panic), which
 *                   keeps an owner's steps in order, one at a time. Such a
 *                   job can be taken back with workq_cancel(). */
#ifndef POSTINO_WORKQ_H
#define POSTINO_WORKQ_H

#include <sys/queue.h>

struct event_base;
struct workq;

typedef void (*workq_fn)(void *arg);

/* Where a job is; changed by the pool only (under its mutex). */
enum workq_state {
    WORKQ_IDLE,    /* not in the pool: may be posted */
    WORKQ_QUEUED,  /* waiting for a worker */
    WORKQ_RUNNING, /* a worker runs run() */
    WORKQ_DONE,    /* run() finished: done() comes on a later loop turn */
};

struct workq_job {
    workq_fn run;  /* worker thread; NULL: nothing to run, only done() */
    workq_fn done; /* loop thread; may be NULL */
    void *arg;
    /* the pool's */
    TAILQ_ENTRY(workq_job) link;
    enum workq_state state;
    int owned; /* allocated by workq_submit, freed after done() */
};

/* An idle job (or WORKQ_JOB_INIT). run, done and arg may also be set
 * directly while the job is idle. */
#define WORKQ_JOB_INIT                                                                             \
    {                                                                                              \
        NULL, NULL, NULL, { NULL, NULL }, WORKQ_IDLE, 0                                            \
    }
void workq_job_init(struct workq_job *j, workq_fn run, workq_fn done, void *arg);

/* nthreads 1..64. */
struct workq *workq_new(struct event_base *base, int nthreads);
void workq_submit(struct workq *q, workq_fn run, workq_fn done, void *arg);
/* Hand in an idle job the caller holds; it must stay valid until its
 * done() has been called or workq_cancel() returned 1. */
void workq_post(struct workq *q, struct workq_job *j);
/* Take j back. Returns 1 when j is out of the pool's hands: it was idle, or
 * queued, or finished with done() still to come; it is idle now and its
 * done() will not run. Returns 0 when a worker is running it: done() still
 * comes (the owner must keep j until then). */
int workq_cancel(struct workq *q, struct workq_job *j);
/* Jobs handed in and not yet done()'d nor cancelled. */
int workq_pending(const struct workq *q);
/* Runs every outstanding job to completion (done() callbacks included,
 * on the calling thread), stops the threads and frees q. */
void workq_free(struct workq *q);

#endif
