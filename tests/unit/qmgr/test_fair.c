/* test_fair.c - a destination's queue: priority classes, the weight that
 * keeps bulk moving, and round-robin between senders (qmgr/qmgr_fair.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "qmgr/qmgr.h"

static struct qmgr_msg *msg(const char *key, enum prio_class c)
{
    struct qmgr_msg *m = calloc(1, sizeof(*m));
    m->fairkey = strdup(key);
    m->prio = c;
    return m;
}

static struct qmgr_job *job(struct qmgr_msg *m, unsigned long long seq)
{
    struct qmgr_job *j = calloc(1, sizeof(*j));
    j->msg = m;
    j->seq = seq;
    return j;
}

static void msg_done(struct qmgr_msg *m)
{
    free(m->fairkey);
    free(m);
}

/* Pop everything; the sequence numbers in order into out. */
static size_t drain(struct qmgr_fairq *q, int weight, unsigned long long *out, size_t max)
{
    size_t n = 0;
    struct qmgr_job *j;
    while ((j = qmgr_fairq_peek(q, weight)) != NULL) {
        assert_ptr_equal(qmgr_fairq_pop(q, weight), j);
        assert_true(n < max);
        out[n++] = j->seq;
        free(j);
    }
    assert_int_equal(q->n, 0);
    return n;
}

static void test_empty(void **state)
{
    struct qmgr_fairq q;
    qmgr_fairq_init(&q);
    assert_null(qmgr_fairq_peek(&q, 10));
    assert_null(qmgr_fairq_pop(&q, 10));
    qmgr_fairq_destroy(&q);
}

/* A transactional job queued behind a campaign goes next. */
static void test_transactional_first(void **state)
{
    struct qmgr_fairq q;
    struct qmgr_msg *bulk = msg("@campaign.example", PRIO_BULK);
    struct qmgr_msg *tx = msg("@shop.example", PRIO_TRANSACTIONAL);
    unsigned long long out[1100];

    qmgr_fairq_init(&q);
    for (unsigned long long i = 1; i <= 1000; i++)
        qmgr_fairq_push(&q, job(bulk, i));
    struct qmgr_job *first = qmgr_fairq_pop(&q, 10); /* one went already */
    assert_int_equal(first->seq, 1);
    free(first);
    qmgr_fairq_push(&q, job(tx, 5000));
    assert_int_equal(qmgr_fairq_peek(&q, 10)->seq, 5000);
    size_t n = drain(&q, 10, out, 1100);
    assert_int_equal(n, 1000);
    assert_int_equal(out[0], 5000);
    for (size_t i = 1; i < n; i++) /* the campaign then in its order */
        assert_int_equal(out[i], i + 1);
    qmgr_fairq_destroy(&q);
    msg_done(bulk);
    msg_done(tx);
}

/* With weight 3, bulk gets one pick after every three transactional ones
 * while both wait; weight 0 is strict. */
static void test_weight(void **state)
{
    struct qmgr_fairq q;
    struct qmgr_msg *bulk = msg("@b.example", PRIO_BULK);
    struct qmgr_msg *tx = msg("@t.example", PRIO_TRANSACTIONAL);
    unsigned long long out[32];
    static const unsigned long long want3[] = { 101, 102, 103, 1, 104, 105, 106, 2, 3, 4 };
    static const unsigned long long want0[] = { 101, 102, 103, 104, 105, 106, 1, 2, 3, 4 };

    for (int w = 0; w <= 3; w += 3) {
        qmgr_fairq_init(&q);
        for (unsigned long long i = 1; i <= 4; i++)
            qmgr_fairq_push(&q, job(bulk, i));
        for (unsigned long long i = 101; i <= 106; i++)
            qmgr_fairq_push(&q, job(tx, i));
        assert_int_equal(drain(&q, w, out, 32), 10);
        assert_memory_equal(out, w ? want3 : want0, sizeof(want3));
        qmgr_fairq_destroy(&q);
    }
    msg_done(bulk);
    msg_done(tx);
}

/* Senders of one class take turns; a newcomer waits one turn, not for the
 * whole campaign queued before it. */
static void test_round_robin(void **state)
{
    struct qmgr_fairq q;
    struct qmgr_msg *a = msg("@a.example", PRIO_BULK);
    struct qmgr_msg *b = msg("@b.example", PRIO_BULK);
    struct qmgr_msg *c = msg("sasl:carol", PRIO_BULK);
    unsigned long long out[32];
    static const unsigned long long want[] = { 1, 101, 201, 2, 102, 3, 4, 5 };

    qmgr_fairq_init(&q);
    for (unsigned long long i = 1; i <= 5; i++)
        qmgr_fairq_push(&q, job(a, i));
    qmgr_fairq_push(&q, job(b, 101));
    qmgr_fairq_push(&q, job(b, 102));
    qmgr_fairq_push(&q, job(c, 201));
    assert_int_equal(drain(&q, 10, out, 32), 8);
    assert_memory_equal(out, want, sizeof(want));
    qmgr_fairq_destroy(&q);
    msg_done(a);
    msg_done(b);
    msg_done(c);
}

/* A job put back is next again; take_msg takes one message's jobs only. */
static void test_push_front_and_take(void **state)
{
    struct qmgr_fairq q;
    struct qmgr_msg *a = msg("@a.example", PRIO_BULK);
    struct qmgr_msg *a2 = msg("@a.example", PRIO_BULK);
    struct qmgr_msg *b = msg("@b.example", PRIO_BULK);
    struct qmgr_jobq out = TAILQ_HEAD_INITIALIZER(out);
    struct qmgr_job *j;
    unsigned long long seqs[8];

    qmgr_fairq_init(&q);
    qmgr_fairq_push(&q, job(a, 1));
    qmgr_fairq_push(&q, job(a2, 2));
    qmgr_fairq_push(&q, job(b, 3));
    qmgr_fairq_push(&q, job(a, 4));
    j = qmgr_fairq_pop(&q, 10);
    assert_int_equal(j->seq, 1);
    qmgr_fairq_push_front(&q, j);
    assert_int_equal(qmgr_fairq_peek(&q, 10)->seq, 1);
    assert_int_equal(qmgr_fairq_take_msg(&q, a, &out), 2);
    assert_int_equal(q.n, 2);
    while ((j = TAILQ_FIRST(&out)) != NULL) {
        TAILQ_REMOVE(&out, j, link);
        assert_ptr_equal(j->msg, a);
        free(j);
    }
    assert_int_equal(drain(&q, 10, seqs, 8), 2);
    assert_int_equal(seqs[0], 2);
    assert_int_equal(seqs[1], 3);
    qmgr_fairq_destroy(&q);
    msg_done(a);
    msg_done(a2);
    msg_done(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_transactional_first),
        cmocka_unit_test(test_weight),
        cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_push_front_and_take),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
