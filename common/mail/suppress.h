/* suppress.h - the suppression list: addresses postino must not mail again.
 *
 * A Berkeley DB B-tree (suppress.db, O(log n) lookups) in a Concurrent
 * Data Store environment (DB_INIT_CDB | DB_INIT_MPOOL) under
 * <queue_directory>/suppress/: one writer (qmgr), many readers in other
 * processes (smtpd), who see each write at their next lookup without
 * reopening. Other programs (the CLI, the feedback consumer) ask qmgr.
 *
 * Key:   scope NUL address. scope is a lower-cased sender domain, or ""
 *        for a global entry that holds for every sender. The address is
 *        lower-cased as a whole: local parts are case-sensitive in RFC
 *        5321 but no mailbox provider treats them so, and a dead mailbox
 *        must not come back in another spelling.
 * Value: 8-byte big-endian added time, 8-byte expiry time (0: never),
 *        reason NUL text. reason: a bounce category ("bad-mailbox"),
 *        "complaint" or "manual".
 * An expired entry is no match; the writer deletes expired entries as it
 * walks the tree (suppress_purge) or meets them. */
#ifndef POSTINO_SUPPRESS_H
#define POSTINO_SUPPRESS_H

#include <stddef.h>
#include "common/util/buf.h"

#define SUPPRESS_DIR        "suppress" /* below queue_directory */
#define SUPPRESS_SCOPE_MAX  255        /* a domain name */
#define SUPPRESS_ADDR_MAX   512        /* RFC 5321: 64 + 1 + 255, with room for UTF-8 */
#define SUPPRESS_REASON_MAX 64
#define SUPPRESS_TEXT_MAX   1000 /* longer texts are cut */

struct suppress;

enum suppress_mode {
    SUPPRESS_READ,  /* join the environment; never create or write */
    SUPPRESS_WRITE, /* create directory, environment and database */
};

/* One entry; the strings belong to it (suppress_entry_destroy). */
struct suppress_entry {
    char *scope, *address, *reason, *text;
    long long added, expires; /* unix seconds; expires 0 = never */
};

enum suppress_result {
    SUPPRESS_NONE,   /* no (live) entry */
    SUPPRESS_FOUND,  /* entry filled in */
    SUPPRESS_FAILED, /* the store failed (logged) */
};

/* Open the store in dir (<spool>/suppress). NULL with err on failure;
 * *missing (missing may be NULL) is then 1 when there is no database file
 * at all: nothing was ever suppressed. */
struct suppress *suppress_open(const char *dir, enum suppress_mode mode, int *missing, buf_t *err);
void suppress_close(struct suppress *s);
/* Writer: release the locks of reader processes that died holding one
 * (suppress_open does it too); a reader that dies in the middle of a get
 * would otherwise hold every write off for good. 0 or -1 (logged). */
int suppress_recover(struct suppress *s);
/* Flush written pages to the file (the writer, after a batch). 0 or -1. */
int suppress_sync(struct suppress *s);

/* Normalised forms: the address lower-cased, the scope lower-cased. 0, or
 * -1 when the value cannot be a key (empty address, no '@', too long,
 * control characters). */
int suppress_norm_address(const char *addr, buf_t *out);
int suppress_norm_scope(const char *scope, buf_t *out);
/* The domain of a sender address, lower-cased ("" for the null sender or
 * an address without '@'), as a scope. */
void suppress_sender_scope(const char *sender, buf_t *out);

/* Exact lookup of (scope, address); an expired entry is SUPPRESS_NONE.
 * out may be NULL; on SUPPRESS_FOUND it is filled. */
enum suppress_result suppress_get(struct suppress *s, const char *scope, const char *addr,
                                  long long now, struct suppress_entry *out);
/* Is mail from sender_scope (a domain, or "") to addr suppressed? The
 * global entry first, then the sender domain's. */
enum suppress_result suppress_check(struct suppress *s, const char *sender_scope, const char *addr,
                                    long long now, struct suppress_entry *out);
/* Insert or replace (writer). scope/address are normalised here. 0 or -1
 * (err says why: a bad address, or the store failed). */
int suppress_put(struct suppress *s, const struct suppress_entry *e, buf_t *err);
/* Remove (writer): FOUND removed, NONE not there, FAILED. */
enum suppress_result suppress_del(struct suppress *s, const char *scope, const char *addr);

/* Walk entries in key order, expired ones too (the caller may show
 * them): those of scope (NULL: all scopes) whose key sorts after
 * (after_scope, after_addr) (both NULL: from the start). At most limit
 * entries (0: no limit). cb returns nonzero to stop early. Returns the
 * number of entries passed to cb, or -1. The read cursor is closed on
 * return: a walk in pages never holds the writer off between pages. */
typedef int (*suppress_cb)(const struct suppress_entry *e, void *arg);
long suppress_scan(struct suppress *s, const char *scope, const char *after_scope,
                   const char *after_addr, size_t limit, suppress_cb cb, void *arg);
/* Writer: look at up to max entries from where the last call stopped
 * (wrapping at the end) and delete those expired at now. Returns the
 * number deleted, or -1. */
long suppress_purge(struct suppress *s, long long now, size_t max);
void suppress_entry_destroy(struct suppress_entry *e);

#endif
