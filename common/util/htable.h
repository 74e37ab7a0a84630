/* htable.h - the one hash table: intrusive, chained, growing, string or any
 * keys. An entry embeds a struct hlink; the table never allocates entries,
 * only its bucket array, so inserting and removing cannot fail and an entry
 * can sit in a table and on lists at once.
 *
 *   struct dest { struct hlink link; char *name; ... };
 *   unsigned h = htable_hash_str(name);
 *   for (struct hlink *l = htable_first(&t, h); l; l = htable_next(l, h))
 *       if (strcmp(HTABLE_ENTRY(l, struct dest, link)->name, name) == 0) ...
 *   htable_insert(&t, &d->link, h);   htable_remove(&t, &d->link);
 *
 * Iterating over everything: HTABLE_EACH(t, l, next) { ... } allows removing
 * l inside the body, but no other change to the table. */
#ifndef POSTINO_HTABLE_H
#define POSTINO_HTABLE_H

#include <stddef.h>

struct hlink {
    struct hlink *next;
    unsigned hash;
};

struct htable {
    struct hlink **b;
    size_t nb; /* buckets, a power of two */
    size_t n;  /* entries */
};

#define HTABLE_ENTRY(l, type, member) ((type *)(void *)((char *)(l)-offsetof(type, member)))

void htable_init(struct htable *t, size_t expected);
/* Frees the bucket array; the entries are the caller's. */
void htable_destroy(struct htable *t);
/* FNV-1a of a string; htable_hash_mem of bytes. */
unsigned htable_hash_str(const char *s);
unsigned htable_hash_mem(const void *p, size_t n);
/* Add l (not in any table) under hash; grows the table as it fills. */
void htable_insert(struct htable *t, struct hlink *l, unsigned hash);
/* Take l out of t (it must be in t). */
void htable_remove(struct htable *t, struct hlink *l);
/* The entries that may have this hash (compare the keys). */
struct hlink *htable_first(const struct htable *t, unsigned hash);
struct hlink *htable_next(const struct hlink *l, unsigned hash);
/* Any entry after l in bucket order (l NULL: the first); NULL at the end. */
struct hlink *htable_walk(const struct htable *t, const struct hlink *l);
size_t htable_count(const struct htable *t);

#define HTABLE_EACH(t, l, nx)                                                                      \
    for ((l) = htable_walk((t), NULL), (nx) = (l) ? htable_walk((t), (l)) : NULL; (l) != NULL;     \
         (l) = (nx), (nx) = (l) ? htable_walk((t), (l)) : NULL)

#endif
