/* test_htable.c - the one hash table: insert/find/remove across growth,
 * equal hashes kept apart by key, walking everything while removing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/util/htable.h"

struct item {
    struct hlink link;
    char key[16];
    int seen;
};

static struct item *find(struct htable *t, const char *key)
{
    unsigned h = htable_hash_str(key);
    for (struct hlink *l = htable_first(t, h); l; l = htable_next(l, h)) {
        struct item *it = HTABLE_ENTRY(l, struct item, link);
        if (strcmp(it->key, key) == 0)
            return it;
    }
    return NULL;
}

static void test_insert_find_remove(void **state)
{
    static struct item items[5000];
    struct htable t;
    htable_init(&t, 0);
    for (int i = 0; i < 5000; i++) {
        snprintf(items[i].key, sizeof(items[i].key), "k%d", i);
        htable_insert(&t, &items[i].link, htable_hash_str(items[i].key));
    }
    assert_int_equal(htable_count(&t), 5000);
    assert_true(t.nb >= 4096);
    for (int i = 0; i < 5000; i++)
        assert_ptr_equal(find(&t, items[i].key), &items[i]);
    assert_null(find(&t, "k5000"));
    for (int i = 0; i < 5000; i += 2)
        htable_remove(&t, &items[i].link);
    assert_int_equal(htable_count(&t), 2500);
    for (int i = 0; i < 5000; i++)
        assert_ptr_equal(find(&t, items[i].key), i % 2 ? &items[i] : NULL);
    htable_destroy(&t);
}

static void test_same_hash_different_keys(void **state)
{
    struct item a = { .key = "a" }, b = { .key = "b" };
    struct htable t;
    htable_init(&t, 4);
    htable_insert(&t, &a.link, 42);
    htable_insert(&t, &b.link, 42);
    int n = 0;
    for (struct hlink *l = htable_first(&t, 42); l; l = htable_next(l, 42))
        n++;
    assert_int_equal(n, 2);
    assert_null(htable_first(&t, 43));
    htable_destroy(&t);
}

static void test_walk_and_remove(void **state)
{
    static struct item items[100];
    struct htable t;
    struct hlink *l, *nx;
    htable_init(&t, 0);
    for (int i = 0; i < 100; i++) {
        snprintf(items[i].key, sizeof(items[i].key), "%d", i);
        htable_insert(&t, &items[i].link, htable_hash_str(items[i].key));
    }
    HTABLE_EACH(&t, l, nx)
    {
        struct item *it = HTABLE_ENTRY(l, struct item, link);
        it->seen++;
        if (it - items < 50)
            htable_remove(&t, l);
    }
    for (int i = 0; i < 100; i++)
        assert_int_equal(items[i].seen, 1);
    assert_int_equal(htable_count(&t), 50);
    htable_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_find_remove),
        cmocka_unit_test(test_same_hash_different_keys),
        cmocka_unit_test(test_walk_and_remove),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
