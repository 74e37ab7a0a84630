/* test_workq.c - worker pool: done() on the loop thread, jobs in parallel,
 * workq_free finishes what is outstanding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parallel_and_on_loop),
        cmocka_unit_test(test_free_drains),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
