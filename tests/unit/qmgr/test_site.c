/* test_site.c - cmocka tests for the pure half of qmgr's sites
 * (qmgr/qmgr_site_policy.c): grouping MX host lists into sites (equal
 * sets, rollup suffixes, names), shaping_mx_rollup and the shaping_maps
 * row syntax. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "common/util/buf.h"
#include "qmgr/qmgr_site.h"

static void group(const char *const *h, const int *pref, size_t n, const struct qmgr_rollup *r,
                  size_t nr, buf_t *key, buf_t *name)
{
    qmgr_site_group(h, pref, n, r, nr, key, name);
}

static void test_same_set(void **state)
{
    const char *a[] = { "mx2.provider.test", "MX1.provider.test." };
    const char *b[] = { "mx1.provider.test", "mx2.provider.test" };
    const char *c[] = { "mx1.provider.test" };
    int pa[] = { 10, 20 }, pb[] = { 5, 5 };
    buf_t ka = BUF_INIT, kb = BUF_INIT, kc = BUF_INIT, na = BUF_INIT, nb = BUF_INIT, nc = BUF_INIT;

    group(a, pa, 2, NULL, 0, &ka, &na);
    group(b, pb, 2, NULL, 0, &kb, &nb);
    group(c, NULL, 1, NULL, 0, &kc, &nc);
    /* same set in another order, case, trailing dot: one site */
    assert_string_equal(buf_str(&ka), "mx:mx1.provider.test,mx2.provider.test");
    assert_string_equal(buf_str(&ka), buf_str(&kb));
    /* a different set: another site, even with the same first host */
    assert_string_not_equal(buf_str(&ka), buf_str(&kc));
    /* name: the most preferred host; among equals the first by name */
    assert_string_equal(buf_str(&na), "mx2.provider.test");
    assert_string_equal(buf_str(&nb), "mx1.provider.test");
    assert_string_equal(buf_str(&nc), "mx1.provider.test");
    /* a hostile name cannot put spaces or controls into a site name */
    const char *bad[] = { "mx 1.evil\r\n.test" };
    group(bad, NULL, 1, NULL, 0, &ka, &na);
    assert_string_equal(buf_str(&na), "mx?1.evil??.test");
    buf_destroy(&ka);
    buf_destroy(&kb);
    buf_destroy(&kc);
    buf_destroy(&na);
    buf_destroy(&nb);
    buf_destroy(&nc);
}

static void test_rollup(void **state)
{
    struct qmgr_rollup *r = NULL;
    buf_t err = BUF_INIT, k1 = BUF_INIT, k2 = BUF_INIT, n1 = BUF_INIT, n2 = BUF_INIT;
    const char *g1[] = { "gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com" };
    const char *g2[] = { "aspmx.l.GOOGLE.com." };
    const char *o[] = { "notgoogle.com" };
    int n = qmgr_rollup_parse(".google.com=gmail, outlook.com=outlook", &r, &err);

    assert_int_equal(n, 2);
    assert_string_equal(r[1].suffix, ".outlook.com"); /* the dot added */
    group(g1, NULL, 2, r, 2, &k1, &n1);
    group(g2, NULL, 1, r, 2, &k2, &n2);
    assert_string_equal(buf_str(&k1), "rollup:gmail");
    assert_string_equal(buf_str(&k2), "rollup:gmail");
    assert_string_equal(buf_str(&n1), "gmail");
    /* a suffix matches at a label boundary only */
    group(o, NULL, 1, r, 2, &k1, &n1);
    assert_string_equal(buf_str(&k1), "mx:notgoogle.com");
    assert_string_equal(buf_str(&n1), "notgoogle.com");
    qmgr_rollup_free(r, (size_t)n);
    assert_int_equal(qmgr_rollup_parse("", &r, &err), 0);
    qmgr_rollup_free(r, 0);
    assert_int_equal(qmgr_rollup_parse(".google.com", &r, &err), -1);
    assert_int_equal(qmgr_rollup_parse("=gmail", &r, &err), -1);
    buf_destroy(&err);
    buf_destroy(&k1);
    buf_destroy(&k2);
    buf_destroy(&n1);
    buf_destroy(&n2);
}

static void test_row(void **state)
{
    struct qmgr_shaping p;
    buf_t err = BUF_INIT, out = BUF_INIT;

    memset(&p, 0, sizeof(p));
    assert_int_equal(qmgr_shaping_parse("max_connections=2 max_message_rate=6000/h "
                                        "max_deliveries_per_connection=5 retry=5m,10m,30m,1h "
                                        "connect_timeout=10s idle_timeout=5 "
                                        "max_connection_rate=1/s",
                                        &p, &err),
                     0);
    assert_int_equal(p.max_connections, 2);
    assert_int_equal(p.max_deliveries_per_connection, 5);
    assert_true(fabs(p.max_message_rate - 6000.0 / 3600) < 1e-12);
    assert_true(fabs(p.max_connection_rate - 1) < 1e-12);
    assert_int_equal(p.nretry, 4);
    assert_int_equal(p.retry[0], 300);
    assert_int_equal(p.retry[3], 3600);
    assert_int_equal(p.connect_timeout, 10);
    assert_int_equal(p.idle_timeout, 5);
    /* a second row over the first replaces what it names only */
    assert_int_equal(qmgr_shaping_parse("max_connections=7 max_connections_per_source=3", &p, &err),
                     0);
    assert_int_equal(p.max_connections, 7);
    assert_int_equal(p.max_connections_per_source, 3);
    assert_int_equal(p.max_deliveries_per_connection, 5);
    qmgr_shaping_format(&p, &out);
    assert_string_equal(buf_str(&out), "max_connections=7 max_connections_per_source=3 "
                                       "max_deliveries_per_connection=5 "
                                       "max_message_rate=6000/h max_connection_rate=1/s "
                                       "connect_timeout=10s idle_timeout=5s "
                                       "retry=300s,600s,1800s,3600s");
    /* errors leave a message */
    assert_int_equal(qmgr_shaping_parse("max_connections=0", &p, &err), -1);
    assert_int_equal(qmgr_shaping_parse("max_connections_per_source=0", &p, &err), -1);
    assert_int_equal(qmgr_shaping_parse("max_message_rate=fast", &p, &err), -1);
    assert_int_equal(qmgr_shaping_parse("colour=blue", &p, &err), -1);
    assert_int_equal(qmgr_shaping_parse("max_connections", &p, &err), -1);
    assert_int_equal(qmgr_shaping_parse("retry=5m,never", &p, &err), -1);
    assert_true(err.len > 0);
    qmgr_shaping_destroy(&p);
    buf_destroy(&err);
    buf_destroy(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_set),
        cmocka_unit_test(test_rollup),
        cmocka_unit_test(test_row),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
