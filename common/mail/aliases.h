/* aliases.h - aliases(5) syntax, read by "postino newaliases" (to build
 * the alias_maps table) and by the local agent (:include: files and the
 * right-hand sides it looks up).
 *
 *   # comment
 *   name: value, value, ...
 *       continued on lines that start with white space
 *
 * A name may be quoted ("a b": ...). The table's key is the lower-cased
 * name, its value the right-hand side as written (continuations joined
 * with a space). A value list holds addresses, "|command", "/file" and
 * ":include:/file" items, separated by commas outside double quotes; an
 * item in double quotes loses them ("|cmd arg, arg" is one item). */
#ifndef POSTINO_ALIASES_H
#define POSTINO_ALIASES_H

#include <stddef.h>
#include <stdio.h>

#include "common/util/buf.h"

/* Every entry of the aliases(5) text in fp: fn(name, value, arg) (a
 * non-zero return stops). 0, or -1 with err naming the line. */
int aliases_parse(FILE *fp, const char *src,
                  int (*fn)(const char *name, const char *value, void *arg), void *arg, buf_t *err);

/* The items of a value list, trimmed and unquoted, as a NULL-terminated
 * vector (strv_free); empty items are left out. */
char **aliases_split(const char *value);

#endif
