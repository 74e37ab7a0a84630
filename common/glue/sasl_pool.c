/* sasl_pool.c - worker threads for Cyrus SASL steps, so a slow backend
 * (saslauthd, PAM, LDAP) never blocks smtpd's event loop.
 *
 * Sessions are the jobs (one job per session at a time). Workers take them
 * from a todo queue, run the Cyrus call, put them on a done queue and poke
 * an eventfd; the libevent callback on the loop thread then pops them one
 * by one and delivers the result there. A session whose owner freed it
 * while it was in a worker's hands is marked dead and reclaimed at
 * hand-back without a callback: that is the reference that keeps the
 * Cyrus connection alive until the worker has let go of it. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/util/alloc.h"
#include "common/util/log.h"
#include "common/glue/sasl_impl.h"

#define POOL_MAX_THREADS 8

struct psasl_pool {
    struct event_base *base;
    struct event *ev;
    int efd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct psasl_session *todo_head, *todo_tail;
    struct psasl_session *done_head, *done_tail;
    int stopping;
    int nthreads;
    pthread_t threads[POOL_MAX_THREADS];
    int nsessions; /* loop thread only */
};

static void q_push(struct psasl_session **head, struct psasl_session **tail,
                   struct psasl_session *ss)
{
    ss->next = NULL;
    if (*tail)
        (*tail)->next = ss;
    else
        *head = ss;
    *tail = ss;
}

static struct psasl_session *q_pop(struct psasl_session **head, struct psasl_session **tail)
{
    struct psasl_session *ss = *head;
    if (ss) {
        *head = ss->next;
        if (*head == NULL)
            *tail = NULL;
        ss->next = NULL;
    }
    return ss;
}

static int q_unlink(struct psasl_session **head, struct psasl_session **tail,
                    struct psasl_session *ss)
{
    struct psasl_session *prev = NULL;
    for (struct psasl_session *c = *head; c; prev = c, c = c->next) {
        if (c != ss)
            continue;
        if (prev)
            prev->next = c->next;
        else
            *head = c->next;
        if (*tail == c)
            *tail = prev;
        c->next = NULL;
        return 1;
    }
    return 0;
}

/* Under p->mu: move ss to the done queue and wake the loop. */
static void finish_locked(struct psasl_pool *p, struct psasl_session *ss)
{
    ss->state = PSASL_JS_DONE;
    q_push(&p->done_head, &p->done_tail, ss);
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the loop will wake. */
    ssize_t w = write(p->efd, &one, sizeof(one));
    (void)w;
}

static void *worker_main(void *arg)
{
    struct psasl_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stopping && p->todo_head == NULL)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stopping)
            break;
        struct psasl_session *ss = q_pop(&p->todo_head, &p->todo_tail);
        ss->state = PSASL_JS_RUNNING;
        pthread_mutex_unlock(&p->mu);
        psasl_job_run(ss);
        pthread_mutex_lock(&p->mu);
        finish_locked(p, ss);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Loop thread: deliver finished jobs one at a time, so a callback that
 * frees or restarts another session sees consistent queues. */
static void on_wakeup(evutil_socket_t fd, short what, void *arg)
{
    struct psasl_pool *p = arg;
    uint64_t n;
    ssize_t r = read(fd, &n, sizeof(n));
    (void)r;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        struct psasl_session *ss = q_pop(&p->done_head, &p->done_tail);
        if (ss)
            ss->state = PSASL_JS_IDLE;
        pthread_mutex_unlock(&p->mu);
        if (ss == NULL)
            break;
        psasl_job_deliver(ss);
    }
}

static void start_threads(struct psasl_pool *p, int n)
{
    sigset_t all, old;
    sigfillset(&all);
    /* Workers inherit a full mask: signals stay with the loop thread. */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 0; i < n; i++) {
        int rc = pthread_create(&p->threads[i], NULL, worker_main, p);
        if (rc != 0)
            log_fatal("sasl: cannot create worker thread: %s", strerror(rc));
        p->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

struct psasl_pool *psasl_pool_new(struct event_base *base, int nthreads)
{
    struct psasl_pool *p = xcalloc(1, sizeof(*p));
    p->base = base;
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->efd < 0)
        log_fatal("sasl: eventfd: %s", strerror(errno));
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->ev = event_new(base, p->efd, EV_READ | EV_PERSIST, on_wakeup, p);
    if (p->ev == NULL || event_add(p->ev, NULL) != 0)
        log_fatal("sasl: cannot register the worker wake-up event");
    if (nthreads < 1)
        nthreads = 1;
    if (nthreads > POOL_MAX_THREADS)
        nthreads = POOL_MAX_THREADS;
    start_threads(p, nthreads);
    return p;
}

void psasl_pool_free(struct psasl_pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    /* Threads are gone: whatever is left belongs to freed (dead) sessions. */
    struct psasl_session *ss;
    while ((ss = q_pop(&p->todo_head, &p->todo_tail)) != NULL)
        psasl_session_destroy(ss);
    while ((ss = q_pop(&p->done_head, &p->done_tail)) != NULL)
        psasl_session_destroy(ss);
    if (p->nsessions != 0)
        log_error("sasl: pool freed with %d live sessions (leaked)", p->nsessions);
    event_free(p->ev);
    close(p->efd);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void psasl_pool_submit(struct psasl_pool *p, struct psasl_session *ss)
{
    pthread_mutex_lock(&p->mu);
    if (ss->state != PSASL_JS_IDLE)
        log_panic("sasl: job submitted for a busy session");
    ss->state = PSASL_JS_QUEUED;
    q_push(&p->todo_head, &p->todo_tail, ss);
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void psasl_pool_post(struct psasl_pool *p, struct psasl_session *ss)
{
    pthread_mutex_lock(&p->mu);
    if (ss->state != PSASL_JS_IDLE)
        log_panic("sasl: result posted for a busy session");
    finish_locked(p, ss);
    pthread_mutex_unlock(&p->mu);
}

int psasl_pool_release(struct psasl_pool *p, struct psasl_session *ss)
{
    int now = 0;
    pthread_mutex_lock(&p->mu);
    if (ss->state == PSASL_JS_IDLE)
        now = 1;
    else if (ss->state == PSASL_JS_QUEUED)
        now = q_unlink(&p->todo_head, &p->todo_tail, ss);
    if (!now)
        ss->dead = 1;
    pthread_mutex_unlock(&p->mu);
    return now;
}

void psasl_pool_attach(struct psasl_pool *p)
{
    p->nsessions++;
}

void psasl_pool_detach(struct psasl_pool *p)
{
    p->nsessions--;
}
