/* alloc.h - allocators that succeed or never return.
 *
 * Every allocation in postino goes through these: on out-of-memory they log
 * a fatal error and exit, so callers never test for NULL. */
#ifndef POSTINO_ALLOC_H
#define POSTINO_ALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
/* Grow an array of count elements of size each to at least need elements;
 * updates *cap. Overflow-checked. */
void *xgrow(void *p, size_t *cap, size_t need, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
