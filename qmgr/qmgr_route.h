/* qmgr_route.h - pure helpers for qmgr's routing and retry arithmetic.
 *
 * Pure functions (tests/unit/qmgr/test_route.c exercises them):
 * transport_maps values ("transport:nexthop"), parent-domain lookup keys,
 * the recipient's domain, and the exponential back-off. */
#ifndef POSTINO_QMGR_ROUTE_H
#define POSTINO_QMGR_ROUTE_H

#include "common/util/buf.h"
#include "common/mail/qfile.h"

/* Split a transport_maps value "transport:nexthop" at the first ':'.
 * Empty transport -> "smtp"; empty nexthop -> domain. A value without ':'
 * is a transport only. Returns 0, or -1 when the transport is not a valid
 * name ([a-z0-9_-]{1,32}). */
int qmgr_route_split(const char *value, const char *domain, buf_t *transport, buf_t *nexthop);

/* Lower-cased domain after the last '@' of addr into out ("" when none). */
void qmgr_route_domain(const char *addr, buf_t *out);

/* Lookup keys for domain in order: "a.b.c", ".b.c", ".c". Start with
 * *state = 0; returns 1 with the key in key, 0 when done. */
int qmgr_route_next_key(const char *domain, size_t *state, buf_t *key);

/* minimal * 2^(attempts-1) capped at maximal (attempts < 1 counts as 1). */
long long qmgr_route_backoff(long long minimal, long long maximal, int attempts);

/* Retry state of a message re-indexed from its queue file (index
 * rebuild): *attempts = the most "deferred" result records any pending
 * recipient has (one per round it took part in); *next = the latest
 * result time of a pending recipient + qmgr_route_backoff(attempts); *reason =
 * the reason of that latest deferral (pointer into env) or NULL. A
 * message never tried (no deferrals) is due at once: *next = 0. */
void qmgr_route_rebuild_retry(const struct qenv *env, long long minimal, long long maximal,
                              int *attempts, long long *next, const char **reason);

/* Is transport a safe socket name component ([a-z0-9_-]{1,32})? */
int qmgr_route_transport_valid(const char *t);

#endif
