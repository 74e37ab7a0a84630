/* test_qindex.c - the Berkeley DB queue index: records, scans, clean marker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util/buf.h"
#include "qmgr/qmgr_qindex.h"

static char spool[64];

static int setup(void **state)
{
    str_lcpy(spool, "/tmp/test_qindex.XXXXXX", sizeof(spool));
    return mkdtemp(spool) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", spool);
    return system(cmd) == 0 ? 0 : -1;
}

static char *v_rcpts[] = { "a@x.example", "b@Y.example", "we ird\n@x.example", NULL };
static char *v_domains[] = { "x.example", "Y.example", NULL };

static void mkrec(struct qmgr_qidx_rec *r, int n, int state, long long next)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "%08X00000%04X", 0x60000000 + n, n);
    r->state = state;
    r->arrival = 1000 + n;
    r->next_attempt = next;
    r->attempts = n;
    r->size = 4096 + n;
    r->sender = n % 2 ? "odd@sender.example" : "";
    r->rcpts = v_rcpts;
    r->domains = n % 3 ? v_domains : v_domains + 1;
    r->reason = n % 2 ? "451 try\0later" : NULL;
}

struct collect {
    char ids[64][QID_LEN + 1];
    int n, stop_at;
};

static int collect_cb(const struct qmgr_qidx_rec *rec, void *arg)
{
    struct collect *c = arg;
    str_lcpy(c->ids[c->n++], rec->id, QID_LEN + 1);
    return c->stop_at && c->n >= c->stop_at;
}

static struct qindex *open_idx(int expect_clean)
{
    buf_t err = BUF_INIT;
    int clean = -1;
    struct qindex *qi = qmgr_qindex_open(spool, &clean, &err);
    assert_non_null(qi);
    assert_int_equal(clean, expect_clean);
    buf_destroy(&err);
    return qi;
}

static void test_put_get_del(void **state)
{
    struct qindex *qi = open_idx(0);
    struct qmgr_qidx_rec r, out;
    mkrec(&r, 1, QS_DEFERRED, 500);
    assert_int_equal(qmgr_qindex_put(qi, &r), 0);
    assert_int_equal(qmgr_qindex_count(qi), 1);
    assert_int_equal(qmgr_qindex_get(qi, r.id, &out), QIDX_FOUND);
    assert_string_equal(out.id, r.id);
    assert_int_equal(out.state, QS_DEFERRED);
    assert_int_equal(out.arrival, 1001);
    assert_int_equal(out.next_attempt, 500);
    assert_int_equal(out.attempts, 1);
    assert_int_equal(out.size, 4097);
    assert_string_equal(out.sender, "odd@sender.example");
    assert_string_equal(out.reason, "451 try");
    assert_string_equal(out.rcpts[2], "we ird\n@x.example");
    assert_null(out.rcpts[3]);
    assert_string_equal(out.domains[1], "Y.example");
    qmgr_qidx_rec_destroy(&out);
    /* replace: same id, new values, count unchanged */
    r.reason = NULL;
    r.sender = "";
    r.state = QS_ACTIVE;
    assert_int_equal(qmgr_qindex_put(qi, &r), 0);
    assert_int_equal(qmgr_qindex_count(qi), 1);
    assert_int_equal(qmgr_qindex_get(qi, r.id, &out), QIDX_FOUND);
    assert_null(out.reason);
    assert_string_equal(out.sender, "");
    assert_int_equal(out.state, QS_ACTIVE);
    qmgr_qidx_rec_destroy(&out);
    assert_int_equal(qmgr_qindex_del(qi, r.id), 0);
    assert_int_equal(qmgr_qindex_count(qi), 0);
    assert_int_equal(qmgr_qindex_get(qi, r.id, &out), QIDX_MISSING);
    assert_int_equal(qmgr_qindex_del(qi, r.id), 0);
    qmgr_qindex_close(qi, 0);
}

static void id_of(int n, char out[QID_LEN + 1])
{
    struct qmgr_qidx_rec r;
    mkrec(&r, n, 0, 0);
    str_lcpy(out, r.id, QID_LEN + 1);
}

static void expect_ids(const struct collect *c, const int *ns, int count)
{
    char id[QID_LEN + 1];
    assert_int_equal(c->n, count);
    for (int i = 0; i < count; i++) {
        id_of(ns[i], id);
        assert_string_equal(c->ids[i], id);
    }
}

static void scan_due(struct qindex *qi, long long now, int stop_at, struct collect *c)
{
    memset(c, 0, sizeof(*c));
    c->stop_at = stop_at;
    assert_int_equal(qmgr_qindex_scan_due(qi, now, collect_cb, c), 0);
}

static int count_domain(struct qindex *qi, const char *dom)
{
    struct collect c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(qmgr_qindex_scan_domain(qi, dom, collect_cb, &c), 0);
    return c.n;
}

static void test_scans(void **state)
{
    struct qindex *qi = open_idx(0);
    struct qmgr_qidx_rec r;
    struct collect c;
    /* next_attempt falls as n grows, so due order is the reverse of n;
     * n == 4 is on hold and never due. */
    for (int n = 0; n < 10; n++) {
        mkrec(&r, n, n == 4 ? QS_HOLD : QS_DEFERRED, 1000 - n * 10);
        assert_int_equal(qmgr_qindex_put(qi, &r), 0);
    }
    scan_due(qi, 955, 0, &c);
    expect_ids(&c, (const int[]){ 9, 8, 7, 6, 5 }, 5);
    scan_due(qi, 2000, 0, &c);
    expect_ids(&c, (const int[]){ 9, 8, 7, 6, 5, 3, 2, 1, 0 }, 9);
    scan_due(qi, 2000, 2, &c);
    expect_ids(&c, (const int[]){ 9, 8 }, 2);
    scan_due(qi, 909, 0, &c);
    assert_int_equal(c.n, 0);
    /* moving a record moves its due entry */
    mkrec(&r, 9, QS_DEFERRED, 2000);
    assert_int_equal(qmgr_qindex_put(qi, &r), 0);
    scan_due(qi, 955, 0, &c);
    expect_ids(&c, (const int[]){ 8, 7, 6, 5 }, 4);
    /* releasing the held one makes it due */
    mkrec(&r, 4, QS_DEFERRED, 0);
    assert_int_equal(qmgr_qindex_put(qi, &r), 0);
    scan_due(qi, 955, 0, &c);
    expect_ids(&c, (const int[]){ 4, 8, 7, 6, 5 }, 5);
    /* domains: n % 3 != 0 has x.example and y.example, else y only */
    assert_int_equal(count_domain(qi, "x.example"), 6);
    assert_int_equal(count_domain(qi, "y.EXAMPLE"), 10);
    assert_int_equal(count_domain(qi, "z.example"), 0);
    char id[QID_LEN + 1];
    id_of(5, id);
    assert_int_equal(qmgr_qindex_del(qi, id), 0);
    assert_int_equal(count_domain(qi, "x.example"), 5);
    assert_int_equal(count_domain(qi, "y.example"), 9);
    scan_due(qi, 955, 0, &c);
    expect_ids(&c, (const int[]){ 4, 8, 7, 6 }, 4);
    memset(&c, 0, sizeof(c));
    assert_int_equal(qmgr_qindex_scan_all(qi, collect_cb, &c), 0);
    assert_int_equal(c.n, 9);
    assert_int_equal(qmgr_qindex_count(qi), 9);
    qmgr_qindex_close(qi, 0);
}

/* Answers in pieces resume after the last id, in id order, also when
 * that id has gone meanwhile. */
static void test_scans_after(void **state)
{
    struct qindex *qi = open_idx(0);
    struct qmgr_qidx_rec r;
    struct collect c;
    char id[QID_LEN + 1];

    for (int n = 0; n < 10; n++) {
        mkrec(&r, n, QS_DEFERRED, 0);
        assert_int_equal(qmgr_qindex_put(qi, &r), 0);
    }
    memset(&c, 0, sizeof(c));
    assert_int_equal(qmgr_qindex_scan_all_after(qi, "", collect_cb, &c), 0);
    expect_ids(&c, (const int[]){ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, 10);
    id_of(3, id);
    memset(&c, 0, sizeof(c));
    c.stop_at = 2;
    assert_int_equal(qmgr_qindex_scan_all_after(qi, id, collect_cb, &c), 0);
    expect_ids(&c, (const int[]){ 4, 5 }, 2);
    id_of(6, id);
    assert_int_equal(qmgr_qindex_del(qi, id), 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(qmgr_qindex_scan_all_after(qi, id, collect_cb, &c), 0);
    expect_ids(&c, (const int[]){ 7, 8, 9 }, 3);
    /* x.example: n % 3 != 0 */
    memset(&c, 0, sizeof(c));
    assert_int_equal(qmgr_qindex_scan_domain_after(qi, "X.example", "", collect_cb, &c), 0);
    expect_ids(&c, (const int[]){ 1, 2, 4, 5, 7, 8 }, 6);
    id_of(2, id);
    memset(&c, 0, sizeof(c));
    assert_int_equal(qmgr_qindex_scan_domain_after(qi, "x.example", id, collect_cb, &c), 0);
    expect_ids(&c, (const int[]){ 4, 5, 7, 8 }, 4);
    id_of(6, id); /* gone, and never in x.example */
    memset(&c, 0, sizeof(c));
    assert_int_equal(qmgr_qindex_scan_domain_after(qi, "x.example", id, collect_cb, &c), 0);
    expect_ids(&c, (const int[]){ 7, 8 }, 2);
    id_of(9, id);
    memset(&c, 0, sizeof(c));
    assert_int_equal(qmgr_qindex_scan_domain_after(qi, "x.example", id, collect_cb, &c), 0);
    assert_int_equal(c.n, 0);
    qmgr_qindex_close(qi, 0);
}

static void test_clean_marker(void **state)
{
    struct qindex *qi = open_idx(0); /* previous close was not clean */
    struct qmgr_qidx_rec r;
    assert_int_equal(qmgr_qindex_count(qi), 0);
    for (int n = 0; n < 5; n++) {
        mkrec(&r, n, QS_DEFERRED, n);
        assert_int_equal(qmgr_qindex_put(qi, &r), 0);
    }
    qmgr_qindex_close(qi, 1);
    qi = open_idx(1);
    assert_int_equal(qmgr_qindex_count(qi), 5);
    struct qmgr_qidx_rec out;
    mkrec(&r, 3, 0, 0);
    assert_int_equal(qmgr_qindex_get(qi, r.id, &out), QIDX_FOUND);
    assert_int_equal(out.next_attempt, 3);
    qmgr_qidx_rec_destroy(&out);
    qmgr_qindex_close(qi, 0); /* crash-like: marker not written */
    qi = open_idx(0);
    assert_int_equal(qmgr_qindex_count(qi), 0); /* caller rebuilds */
    mkrec(&r, 1, QS_ACTIVE, 0);
    assert_int_equal(qmgr_qindex_put(qi, &r), 0);
    assert_int_equal(qmgr_qindex_clear(qi), 0);
    assert_int_equal(qmgr_qindex_count(qi), 0);
    assert_int_equal(qmgr_qindex_get(qi, r.id, &out), QIDX_MISSING);
    struct collect c;
    scan_due(qi, 1 << 30, 0, &c);
    assert_int_equal(c.n, 0);
    assert_int_equal(count_domain(qi, "y.example"), 0);
    qmgr_qindex_close(qi, 1);
    qi = open_idx(1);
    assert_int_equal(qmgr_qindex_count(qi), 0);
    qmgr_qindex_close(qi, 1);
    assert_string_equal(qmgr_qidx_state_name(QS_HOLD), "hold");
}

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* One qmgr per spool: a second lock waits, then fails naming the holder. */
static void test_lock(void **state)
{
    buf_t err = BUF_INIT, want = BUF_INIT;
    int fd1 = qmgr_qindex_lock(spool, 0, &err);

    assert_true(fd1 >= 0);
    double t0 = mono();
    int fd2 = qmgr_qindex_lock(spool, 300, &err); /* another open file: conflicts */
    double waited = mono() - t0;
    assert_int_equal(fd2, -1);
    assert_true(waited >= 0.29 && waited < 3);
    buf_printf(&want, "(pid %ld)", (long)getpid());
    assert_non_null(strstr(buf_str(&err), "locked by another queue manager"));
    assert_non_null(strstr(buf_str(&err), buf_str(&want)));
    /* The index itself still opens for the holder. */
    int clean;
    struct qindex *qi = qmgr_qindex_open(spool, &clean, &err);
    assert_non_null(qi);
    qmgr_qindex_close(qi, 1);
    close(fd1);
    buf_reset(&err);
    int fd3 = qmgr_qindex_lock(spool, 0, &err);
    assert_true(fd3 >= 0);
    close(fd3);
    buf_destroy(&err);
    buf_destroy(&want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_del), cmocka_unit_test(test_scans),
        cmocka_unit_test(test_scans_after), cmocka_unit_test(test_clean_marker),
        cmocka_unit_test(test_lock),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
