/* qmgr_qindex.h - the queue index in Berkeley DB, owned by qmgr alone.
 *
 * Files are the truth, the index is derived: it maps queue id -> summary
 * (state, next attempt, attempts, sender, pending recipients and their
 * domains, last reason) so qmgr can schedule and the CLI can list, select
 * by domain or sender, without opening queue files. Secondary indexes:
 * by next-attempt time (key: 8-byte big-endian time + id) and by
 * destination domain (duplicates allowed). Writes are not fsync'ed: after
 * an unclean stop (no "clean" marker) qmgr deletes and rebuilds the index
 * from the files. Lives in <queue_directory>/index/. */
#ifndef POSTINO_QINDEX_H
#define POSTINO_QINDEX_H

#include <stddef.h>
#include "common/util/buf.h"
#include "common/mail/qfile.h"

enum qmgr_qidx_state { QS_INCOMING = 0, QS_ACTIVE, QS_DEFERRED, QS_HOLD };

struct qmgr_qidx_rec {
    char id[QID_LEN + 1];
    int state;              /* enum qmgr_qidx_state */
    long long arrival;      /* unix seconds */
    long long next_attempt; /* unix seconds; 0 = now */
    int attempts;
    long long size;
    char *sender;
    char **rcpts;   /* pending recipients, NULL-terminated */
    char **domains; /* distinct lower-cased domains of rcpts, NULL-terminated */
    char *reason;   /* last deferral reason or NULL */
};

struct qindex;

/* Only one qmgr per spool: take an exclusive flock(2) on
 * <spool>/index/lock (creating index/ and the file), retrying for up to
 * wait_ms while another process (an orphaned qmgr) holds it. Writes our
 * pid into the file. Returns the descriptor to keep open for the life of
 * the process (close-on-exec), or -1 with err naming the holder's pid.
 * Take it before qmgr_qindex_open: an open after an unclean stop deletes the
 * DB files another qmgr may still be using. */
int qmgr_qindex_lock(const char *spool, int wait_ms, buf_t *err);
/* Callbacks must not modify the index (collect ids, act after the scan);
 * return nonzero to stop the scan. */
typedef int (*qmgr_qindex_cb)(const struct qmgr_qidx_rec *rec, void *arg);

/* Open (creating) the index under <spool>/index. *was_clean is 1 when the
 * previous qmgr closed it cleanly; the caller rebuilds when 0 (after
 * qmgr_qindex_clear). The clean marker is removed at open, written at close. */
struct qindex *qmgr_qindex_open(const char *spool, int *was_clean, buf_t *err);
void qmgr_qindex_close(struct qindex *qi, int clean);
int qmgr_qindex_clear(struct qindex *qi);
int qmgr_qindex_put(struct qindex *qi, const struct qmgr_qidx_rec *rec); /* insert or replace */
/* QIDX_FOUND: *out holds the record (qmgr_qidx_rec_destroy it); QIDX_FAILED:
 * a Berkeley DB error (logged) or an undecodable record. */
enum qmgr_qidx_lookup { QIDX_FOUND, QIDX_MISSING, QIDX_FAILED };
enum qmgr_qidx_lookup qmgr_qindex_get(struct qindex *qi, const char *id, struct qmgr_qidx_rec *out);
int qmgr_qindex_del(struct qindex *qi, const char *id);
/* Records with next_attempt <= now (any state but HOLD), oldest first. */
int qmgr_qindex_scan_due(struct qindex *qi, long long now, qmgr_qindex_cb cb, void *arg);
int qmgr_qindex_scan_domain(struct qindex *qi, const char *domain, qmgr_qindex_cb cb, void *arg);
int qmgr_qindex_scan_all(struct qindex *qi, qmgr_qindex_cb cb, void *arg);
/* The same, resumable (an answer sent in pieces): only ids after "after"
 * ("" = from the start), in id order. */
int qmgr_qindex_scan_domain_after(struct qindex *qi, const char *domain, const char *after,
                                  qmgr_qindex_cb cb, void *arg);
int qmgr_qindex_scan_all_after(struct qindex *qi, const char *after, qmgr_qindex_cb cb, void *arg);
size_t qmgr_qindex_count(struct qindex *qi);
void qmgr_qidx_rec_destroy(struct qmgr_qidx_rec *rec); /* frees the strings, not rec */
const char *qmgr_qidx_state_name(int state);

#endif
