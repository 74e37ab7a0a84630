/* workq.c - worker threads for blocking work, results handed back to the
 * libevent loop through an eventfd (see workq.h).
 *
 * Two queues under one mutex: todo (jobs waiting for a worker) and
 * finished (jobs whose done() is due). The loop takes finished jobs one at
 * a time, so a done() that posts, cancels or frees other jobs finds both
 * queues consistent. */
#include "common/util/workq.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#define WORKQ_MAX_THREADS 64

TAILQ_HEAD(jobq, workq_job);

struct workq {
    struct event_base *base;
    struct event *ev;
    int efd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct jobq todo, finished;
    int stopping;
    int nthreads;
    int pending; /* loop thread only */
    pthread_t threads[WORKQ_MAX_THREADS];
};

void workq_job_init(struct workq_job *j, workq_fn run, workq_fn done, void *arg)
{
    *j = (struct workq_job)WORKQ_JOB_INIT;
    j->run = run;
    j->done = done;
    j->arg = arg;
}

/* Under q->mu: j is finished, wake the loop. EAGAIN would mean the
 * counter is already non-zero: the loop wakes anyway. */
static void finish_locked(struct workq *q, struct workq_job *j)
{
    uint64_t one = 1;
    j->state = WORKQ_DONE;
    TAILQ_INSERT_TAIL(&q->finished, j, link);
    while (write(q->efd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

static void *worker(void *arg)
{
    struct workq *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        struct workq_job *j;
        while ((j = TAILQ_FIRST(&q->todo)) == NULL && !q->stopping)
            pthread_cond_wait(&q->cv, &q->mu);
        if (j == NULL)
            break; /* stopping, and the todo list is empty */
        TAILQ_REMOVE(&q->todo, j, link);
        j->state = WORKQ_RUNNING;
        pthread_mutex_unlock(&q->mu);
        j->run(j->arg);
        pthread_mutex_lock(&q->mu);
        finish_locked(q, j);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Loop thread: the next finished job, idle again, or NULL. */
static struct workq_job *take_finished(struct workq *q)
{
    pthread_mutex_lock(&q->mu);
    struct workq_job *j = TAILQ_FIRST(&q->finished);
    if (j) {
        TAILQ_REMOVE(&q->finished, j, link);
        j->state = WORKQ_IDLE;
    }
    pthread_mutex_unlock(&q->mu);
    return j;
}

/* Loop thread: hand every finished job to its done() callback. */
static void drain_finished(struct workq *q)
{
    struct workq_job *j;
    while ((j = take_finished(q)) != NULL) {
        workq_fn done = j->done;
        void *arg = j->arg;
        q->pending--;
        if (j->owned)
            free(j);
        if (done)
            done(arg); /* may post j again, or free its owner */
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    uint64_t n;
    while (read(fd, &n, sizeof(n)) < 0 && errno == EINTR)
        ;
    drain_finished(arg);
}

/* Workers must never take the daemon's signals (libevent's handlers run
 * on the loop thread): they start with every signal blocked. */
static void start_threads(struct workq *q, int n)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 0; i < n; i++) {
        int rc = pthread_create(&q->threads[i], NULL, worker, q);
        if (rc != 0)
            log_fatal("workq: pthread_create: %s", strerror(rc));
        q->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

struct workq *workq_new(struct event_base *base, int nthreads)
{
    struct workq *q = xcalloc(1, sizeof(*q));
    if (nthreads < 1)
        nthreads = 1;
    if (nthreads > WORKQ_MAX_THREADS)
        nthreads = WORKQ_MAX_THREADS;
    q->base = base;
    TAILQ_INIT(&q->todo);
    TAILQ_INIT(&q->finished);
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->efd < 0)
        log_fatal("workq: eventfd: %s", strerror(errno));
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->ev = event_new(base, q->efd, EV_READ | EV_PERSIST, on_wake, q);
    if (q->ev == NULL || event_add(q->ev, NULL) != 0)
        log_fatal("workq: cannot register the wake-up event");
    start_threads(q, nthreads);
    return q;
}

void workq_post(struct workq *q, struct workq_job *j)
{
    pthread_mutex_lock(&q->mu);
    if (j->state != WORKQ_IDLE)
        log_panic("workq: job posted while it is still in the pool");
    q->pending++;
    if (j->run == NULL) {
        finish_locked(q, j); /* nothing to run: done() on the next turn */
    } else {
        j->state = WORKQ_QUEUED;
        TAILQ_INSERT_TAIL(&q->todo, j, link);
        pthread_cond_signal(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
}

void workq_submit(struct workq *q, workq_fn run, workq_fn done, void *arg)
{
    struct workq_job *j = xmalloc(sizeof(*j));
    workq_job_init(j, run, done, arg);
    j->owned = 1;
    workq_post(q, j);
}

int workq_cancel(struct workq *q, struct workq_job *j)
{
    int out = 1;
    pthread_mutex_lock(&q->mu);
    if (j->state == WORKQ_QUEUED)
        TAILQ_REMOVE(&q->todo, j, link);
    else if (j->state == WORKQ_DONE)
        TAILQ_REMOVE(&q->finished, j, link);
    if (j->state == WORKQ_RUNNING) {
        out = 0;
    } else if (j->state != WORKQ_IDLE) {
        j->state = WORKQ_IDLE;
        q->pending--;
    }
    pthread_mutex_unlock(&q->mu);
    return out;
}

int workq_pending(const struct workq *q)
{
    return q->pending;
}

void workq_free(struct workq *q)
{
    if (q == NULL)
        return;
    pthread_mutex_lock(&q->mu);
    q->stopping = 1; /* workers finish the todo list before they leave */
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    drain_finished(q);
    event_free(q->ev);
    close(q->efd);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}
