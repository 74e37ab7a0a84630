/* workq.c - worker threads for blocking file work, results handed back to
 * the libevent loop through an eventfd. */
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

struct job {
    workq_fn run, done;
    void *arg;
    struct job *next;
};

struct jobq {
    struct job *head, *tail;
};

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

static void jq_push(struct jobq *q, struct job *j)
{
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
}

static struct job *jq_pop(struct jobq *q)
{
    struct job *j = q->head;
    if (j) {
        q->head = j->next;
        if (q->head == NULL)
            q->tail = NULL;
    }
    return j;
}

static void poke(struct workq *q)
{
    uint64_t one = 1;
    while (write(q->efd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

static void *worker(void *arg)
{
    struct workq *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        struct job *j;
        while ((j = jq_pop(&q->todo)) == NULL && !q->stopping)
            pthread_cond_wait(&q->cv, &q->mu);
        if (j == NULL)
            break;
        pthread_mutex_unlock(&q->mu);
        j->run(j->arg);
        pthread_mutex_lock(&q->mu);
        jq_push(&q->finished, j);
        poke(q);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Loop thread: hand every finished job to its done() callback. */
static void drain_finished(struct workq *q)
{
    for (;;) {
        pthread_mutex_lock(&q->mu);
        struct job *j = jq_pop(&q->finished);
        pthread_mutex_unlock(&q->mu);
        if (j == NULL)
            return;
        q->pending--;
        if (j->done)
            j->done(j->arg);
        free(j);
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    uint64_t n;
    while (read(fd, &n, sizeof(n)) < 0 && errno == EINTR)
        ;
    drain_finished(arg);
}

struct workq *workq_new(struct event_base *base, int nthreads)
{
    struct workq *q = xcalloc(1, sizeof(*q));
    if (nthreads < 1)
        nthreads = 1;
    if (nthreads > WORKQ_MAX_THREADS)
        nthreads = WORKQ_MAX_THREADS;
    q->base = base;
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->efd < 0)
        log_fatal("workq: eventfd: %s", strerror(errno));
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->ev = event_new(base, q->efd, EV_READ | EV_PERSIST, on_wake, q);
    event_add(q->ev, NULL);
    /* Workers must never take the daemon's signals (libevent's handlers
     * run on the loop thread). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 0; i < nthreads; i++) {
        int rc = pthread_create(&q->threads[i], NULL, worker, q);
        if (rc != 0)
            log_fatal("workq: pthread_create: %s", strerror(rc));
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    q->nthreads = nthreads;
    return q;
}

void workq_submit(struct workq *q, workq_fn run, workq_fn done, void *arg)
{
    struct job *j = xcalloc(1, sizeof(*j));
    j->run = run;
    j->done = done;
    j->arg = arg;
    q->pending++;
    pthread_mutex_lock(&q->mu);
    jq_push(&q->todo, j);
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
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
