/* sasl_pool.c - Cyrus SASL steps on util/workq's worker threads, so a slow
 * backend (saslauthd, PAM, LDAP) never blocks smtpd's event loop.
 *
 * Each session holds one workq job, so a session has at most one step in
 * the pool and its steps run in order. A session whose owner freed it
 * while a worker was running its step is marked dead and freed at the
 * hand-back without a callback: that is the reference that keeps the
 * Cyrus connection alive until the worker has let go of it. The pool
 * itself only adds what is SASL's: the thread limit and the count of live
 * sessions for psasl_pool_free's sanity check. */
#include <stdlib.h>

#include "common/util/alloc.h"
#include "common/util/log.h"
#include "common/util/workq.h"
#include "common/glue/sasl_impl.h"

#define POOL_MAX_THREADS 8

struct psasl_pool {
    struct workq *wq;
    int nsessions; /* loop thread only */
};

static void job_run(void *arg)
{
    psasl_job_run(arg);
}

static void job_done(void *arg)
{
    psasl_job_deliver(arg);
}

struct psasl_pool *psasl_pool_new(struct event_base *base, int nthreads)
{
    struct psasl_pool *p = xcalloc(1, sizeof(*p));
    /* workq makes it at least 1 */
    p->wq = workq_new(base, nthreads > POOL_MAX_THREADS ? POOL_MAX_THREADS : nthreads);
    return p;
}

void psasl_pool_free(struct psasl_pool *p)
{
    if (p == NULL)
        return;
    /* Steps still in a worker belong to freed (dead) sessions: they finish
     * and are reclaimed by their hand-back here. */
    workq_free(p->wq);
    if (p->nsessions != 0)
        log_error("sasl: pool freed with %d live sessions (leaked)", p->nsessions);
    free(p);
}

void psasl_pool_submit(struct psasl_pool *p, struct psasl_session *ss)
{
    ss->job.run = job_run;
    ss->job.done = job_done;
    workq_post(p->wq, &ss->job);
}

void psasl_pool_post(struct psasl_pool *p, struct psasl_session *ss)
{
    ss->job.run = NULL;
    ss->job.done = job_done;
    workq_post(p->wq, &ss->job);
}

int psasl_pool_release(struct psasl_pool *p, struct psasl_session *ss)
{
    if (workq_cancel(p->wq, &ss->job))
        return 1;
    ss->dead = 1;
    return 0;
}

void psasl_pool_attach(struct psasl_pool *p)
{
    p->nsessions++;
}

void psasl_pool_detach(struct psasl_pool *p)
{
    p->nsessions--;
}
