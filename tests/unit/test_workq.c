/* test_workq.c - worker pool: done() on the loop thread, jobs in parallel,
 * workq_free finishes what is outstanding; caller-held jobs (what the SASL
 * sessions use): one at a time and in order, cancelled while queued or
 * finished, never while a worker runs them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/util/workq.h"

static pthread_t loop_thread;
static atomic_int ran, concurrent, max_concurrent;
static int done_count, done_off_loop;
static struct event_base *base;
static struct workq *wq;

static void job_run(void *arg)
{
    int now = atomic_fetch_add(&concurrent, 1) + 1;
    int seen = atomic_load(&max_concurrent);
    while (now > seen && !atomic_compare_exchange_weak(&max_concurrent, &seen, now))
        ;
    usleep(20000);
    atomic_fetch_sub(&concurrent, 1);
    atomic_fetch_add(&ran, 1);
    (void)arg;
}

static void job_done(void *arg)
{
    int *target = arg;
    if (!pthread_equal(pthread_self(), loop_thread))
        done_off_loop++;
    if (++done_count == *target)
        event_base_loopexit(base, NULL);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_parallel_and_on_loop(void **state)
{
    (void)state;
    int target = 16;
    loop_thread = pthread_self();
    base = event_base_new();
    wq = workq_new(base, 8);
    double t0 = now_s();
    for (int i = 0; i < target; i++)
        workq_submit(wq, job_run, job_done, &target);
    assert_int_equal(workq_pending(wq), target);
    assert_int_equal(done_count, 0); /* never called from submit */
    event_base_dispatch(base);
    double elapsed = now_s() - t0;
    assert_int_equal(done_count, target);
    assert_int_equal(done_off_loop, 0);
    assert_int_equal(workq_pending(wq), 0);
    assert_true(atomic_load(&max_concurrent) > 1);
    (void)elapsed; /* speed is for benchmarks, not tests; overlap shows above */
    workq_free(wq);
    event_base_free(base);
}

static void test_free_drains(void **state)
{
    (void)state;
    int target = 1000; /* never reached: loop not run */
    done_count = 0;
    atomic_store(&ran, 0);
    base = event_base_new();
    wq = workq_new(base, 2);
    for (int i = 0; i < 6; i++)
        workq_submit(wq, job_run, job_done, &target);
    workq_free(wq);
    assert_int_equal(atomic_load(&ran), 6);
    assert_int_equal(done_count, 6);
    event_base_free(base);
}

/* ---- caller-held jobs ---- */

/* A run() that blocks until the test opens the gate, so a job can be held
 * in a worker's hands without any timing assumption. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open, gate_entered;

static void gated_run(void *arg)
{
    pthread_mutex_lock(&gate_mu);
    gate_entered = 1;
    pthread_cond_broadcast(&gate_cv);
    while (!gate_open)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
    (void)arg;
}

static void wait_entered(void)
{
    pthread_mutex_lock(&gate_mu);
    while (!gate_entered)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
}

static void open_gate(void)
{
    pthread_mutex_lock(&gate_mu);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

struct owner {
    struct workq_job job;
    atomic_int runs;
    int dones;
    int steps;     /* done() posts the job again until steps reach 0 */
    int order[8];  /* run number seen by each done() */
    int free_self; /* done() frees the owner */
};

static void owner_run(void *arg)
{
    struct owner *o = arg;
    atomic_fetch_add(&o->runs, 1);
}

static void owner_done(void *arg)
{
    struct owner *o = arg;
    if (!pthread_equal(pthread_self(), loop_thread))
        done_off_loop++;
    o->order[o->dones] = atomic_load(&o->runs);
    o->dones++;
    done_count++;
    if (o->free_self) {
        free(o);
        return;
    }
    if (o->steps > 0) {
        o->steps--;
        workq_post(wq, &o->job); /* the next step of the same owner */
    }
}

static struct owner *owner_new(workq_fn run)
{
    struct owner *o = calloc(1, sizeof(*o));
    workq_job_init(&o->job, run, owner_done, o);
    return o;
}

static void loop_until_done(int target)
{
    for (int i = 0; i < 1000 && done_count < target; i++)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(done_count, target);
}

/* One worker: a held job in the worker, jobs queued behind it, a result
 * posted without run(). Cancel takes back the queued and the finished
 * ones (no done() for them) but not the one being run. */
static void test_post_cancel(void **state)
{
    (void)state;
    loop_thread = pthread_self();
    done_count = done_off_loop = 0;
    gate_open = gate_entered = 0;
    base = event_base_new();
    wq = workq_new(base, 1);
    struct owner *held = owner_new(gated_run), *queued = owner_new(owner_run),
                 *result = owner_new(NULL), *kept = owner_new(NULL), *idle = owner_new(owner_run);
    workq_post(wq, &held->job);
    wait_entered();
    workq_post(wq, &queued->job);
    workq_post(wq, &result->job);
    workq_post(wq, &kept->job);
    assert_int_equal(workq_pending(wq), 4);
    assert_int_equal(done_count, 0); /* never from inside workq_post */
    assert_int_equal(held->job.state, WORKQ_RUNNING);
    assert_int_equal(queued->job.state, WORKQ_QUEUED);
    assert_int_equal(result->job.state, WORKQ_DONE);
    assert_int_equal(workq_cancel(wq, &held->job), 0);
    assert_int_equal(workq_cancel(wq, &queued->job), 1);
    assert_int_equal(workq_cancel(wq, &result->job), 1);
    assert_int_equal(workq_cancel(wq, &idle->job), 1);
    assert_int_equal(queued->job.state, WORKQ_IDLE);
    assert_int_equal(workq_pending(wq), 2);
    open_gate();
    loop_until_done(2);
    assert_int_equal(held->dones, 1);
    assert_int_equal(kept->dones, 1);
    assert_int_equal(queued->dones + result->dones + idle->dones, 0);
    assert_int_equal(atomic_load(&queued->runs), 0);
    assert_int_equal(done_off_loop, 0);
    assert_int_equal(workq_pending(wq), 0);
    /* a cancelled job may be posted again */
    workq_post(wq, &queued->job);
    loop_until_done(3);
    assert_int_equal(atomic_load(&queued->runs), 1);
    workq_free(wq);
    event_base_free(base);
    struct owner *all[] = { held, queued, result, kept, idle };
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        free(all[i]);
}

/* An owner's steps, each posted from the previous one's done(), run one
 * at a time and in order, among other owners on several workers; a done()
 * may free its owner. */
static void test_owner_steps_in_order(void **state)
{
    (void)state;
    loop_thread = pthread_self();
    done_count = done_off_loop = 0;
    base = event_base_new();
    wq = workq_new(base, 4);
    struct owner *o[4];
    for (int i = 0; i < 4; i++) {
        o[i] = owner_new(owner_run);
        o[i]->steps = 5;
        workq_post(wq, &o[i]->job);
    }
    struct owner *gone = owner_new(owner_run);
    gone->free_self = 1;
    workq_post(wq, &gone->job);
    loop_until_done(4 * 6 + 1);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(o[i]->dones, 6);
        for (int k = 0; k < 6; k++)
            assert_int_equal(o[i]->order[k], k + 1); /* run k+1 done before step k+2 ran */
        free(o[i]);
    }
    assert_int_equal(done_off_loop, 0);
    workq_free(wq);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parallel_and_on_loop),
        cmocka_unit_test(test_free_drains),
        cmocka_unit_test(test_post_cancel),
        cmocka_unit_test(test_owner_steps_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
