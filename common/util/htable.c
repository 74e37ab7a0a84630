/* htable.c - intrusive chained hash table (see htable.h). Buckets double
 * when the table holds more entries than buckets, so chains stay short;
 * the stored hash makes growing and walking cheap. */
#include "common/util/htable.h"

#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"

void htable_init(struct htable *t, size_t expected)
{
    size_t nb = 16;
    while (nb < expected)
        nb *= 2;
    t->b = xcalloc(nb, sizeof(*t->b));
    t->nb = nb;
    t->n = 0;
}

void htable_destroy(struct htable *t)
{
    free(t->b);
    t->b = NULL;
    t->nb = t->n = 0;
}

unsigned htable_hash_mem(const void *p, size_t n)
{
    const unsigned char *s = p;
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 16777619u;
    return h;
}

unsigned htable_hash_str(const char *s)
{
    return htable_hash_mem(s, strlen(s));
}

static void grow(struct htable *t)
{
    size_t nb = t->nb * 2;
    struct hlink **b = xcalloc(nb, sizeof(*b));
    for (size_t i = 0; i < t->nb; i++) {
        struct hlink *l = t->b[i], *next;
        for (; l; l = next) {
            next = l->next;
            l->next = b[l->hash & (nb - 1)];
            b[l->hash & (nb - 1)] = l;
        }
    }
    free(t->b);
    t->b = b;
    t->nb = nb;
}

void htable_insert(struct htable *t, struct hlink *l, unsigned hash)
{
    if (t->n >= t->nb)
        grow(t);
    l->hash = hash;
    l->next = t->b[hash & (t->nb - 1)];
    t->b[hash & (t->nb - 1)] = l;
    t->n++;
}

void htable_remove(struct htable *t, struct hlink *l)
{
    struct hlink **pp = &t->b[l->hash & (t->nb - 1)];
    for (; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            l->next = NULL;
            t->n--;
            return;
        }
}

struct hlink *htable_first(const struct htable *t, unsigned hash)
{
    struct hlink *l = t->nb ? t->b[hash & (t->nb - 1)] : NULL;
    while (l && l->hash != hash)
        l = l->next;
    return l;
}

struct hlink *htable_next(const struct hlink *l, unsigned hash)
{
    for (l = l->next; l && l->hash != hash; l = l->next)
        ;
    return (struct hlink *)l;
}

struct hlink *htable_walk(const struct htable *t, const struct hlink *l)
{
    size_t i = 0;
    if (l) {
        if (l->next)
            return l->next;
        i = (l->hash & (t->nb - 1)) + 1;
    }
    for (; i < t->nb; i++)
        if (t->b[i])
            return t->b[i];
    return NULL;
}

size_t htable_count(const struct htable *t)
{
    return t->n;
}
