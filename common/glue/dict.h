/* dict.h - lookup tables in Berkeley DB (hash:), built from text like postmap.
 *
 * A table is named "hash:/path/name"; the data lives in "/path/name.db".
 * Text source: "key value..." per line, '#' comments, blank lines skipped,
 * key lower-cased, value the rest of the line trimmed; a line without a
 * value or with a NUL byte fails the build. Lookups are exact
 * (case-insensitive on the key); callers try domain/parent variants. */
#ifndef POSTINO_DICT_H
#define POSTINO_DICT_H

#include "common/util/buf.h"

struct dict;

/* What a lookup found. The values are those of the former int result, so
 * "rc > 0" still means found while callers move to the names. */
enum dict_result {
    DICT_ERROR = -1, /* the table could not be read (logged) */
    DICT_NOTFOUND = 0,
    DICT_FOUND = 1, /* value set */
};

/* Open read-only. NULL with err. Type must be "hash". A table already open
 * in this process (the same file, "hash:/p" or "/p") is shared: the same
 * handle comes back with one more reference. Loop thread only. */
struct dict *dict_open(const char *spec, buf_t *err);
enum dict_result dict_lookup(struct dict *d, const char *key, buf_t *value);
/* Every entry, in table order: fn(key, value, arg) with NUL-terminated
 * copies (the key lower case). A non-zero return from fn stops the walk
 * and is returned; -1 with err when the table cannot be read. */
int dict_walk(struct dict *d, int (*fn)(const char *key, const char *value, void *arg), void *arg,
              buf_t *err);
/* Drop one reference; the last one closes the table. */
void dict_close(struct dict *d);
/* Build <path>.db from the text file <path> (spec "hash:/path" or plain
 * path), atomically (temp file + rename). 0 or -1 with err naming line. */
int dict_build(const char *spec, buf_t *err);
/* Build <path>.db the same way from n key/value pairs (keys lower-cased,
 * the first of duplicate keys kept): for sources in another syntax, such
 * as aliases(5) ("postino newaliases"). */
int dict_build_pairs(const char *spec, char *const *keys, char *const *values, size_t n,
                     buf_t *err);

#endif
