/* anvil_rate.h - the per-client counting logic behind the anvil service.
 *
 * A table keyed by ident ("<service>:<client address>") holds, per client,
 * the number of concurrent connections (split by owner: the anvil client
 * connection that reported them, so the counts of a crashed smtpd can be
 * released) and event rates.
 *
 * Rates use a FIXED window per client, like Postfix's anvil: the window
 * opens at the first event after the previous window ended and lasts
 * window_ms; when it has passed, all rates of that client start again at 0.
 * (A client may therefore get up to twice the limit across a window
 * boundary, exactly as with Postfix.)
 *
 * Memory is bounded: an entry with no concurrent connections whose window
 * has passed is expired by anvil_table_expire(); when the table holds
 * max_entries, the least recently used entry is dropped to make room.
 *
 * Times are milliseconds on any monotonic clock chosen by the caller. */
#ifndef POSTINO_ANVIL_RATE_H
#define POSTINO_ANVIL_RATE_H

#include <stddef.h>

#include "common/mail/anvil_proto.h"
#include "common/util/attr.h"

#define ANVIL_DEFAULT_MAX_ENTRIES 100000

/* A statistics maximum: value, whose, when (ms, caller's clock). */
struct anvil_max {
    long value;
    char ident[ANVIL_IDENT_MAX + 1];
    long long at;
};

struct anvil_stats {
    struct anvil_max count;            /* max concurrent connections */
    struct anvil_max rate[ANVIL_EV_N]; /* max rate per event */
    size_t max_size;                   /* max table size */
    long long max_size_at;
    size_t evicted; /* entries dropped because full */
};

struct anvil_table;

struct anvil_table *anvil_table_new(long long window_ms, size_t max_entries);
void anvil_table_free(struct anvil_table *t);
void anvil_table_set_window(struct anvil_table *t, long long window_ms);
long long anvil_table_window(const struct anvil_table *t);

/* New connection from ident via owner: count +1, connection rate +1.
 * Fills out (count and all rates). */
void anvil_table_connect(struct anvil_table *t, const char *ident, unsigned long owner,
                         long long now, struct anvil_counts *out);
/* Connection closed: count -1 if owner had one for ident (otherwise it
 * was already released: ignored). Returns the remaining count. */
long anvil_table_disconnect(struct anvil_table *t, const char *ident, unsigned long owner,
                            long long now);
/* Count one event; returns its rate in the current window (including it).
 * Fills out when not NULL. */
long anvil_table_event(struct anvil_table *t, const char *ident, enum anvil_event ev, long long now,
                       struct anvil_counts *out);
/* Current counters without counting anything (zeros for unknown idents). */
void anvil_table_lookup(struct anvil_table *t, const char *ident, long long now,
                        struct anvil_counts *out);
/* The owner went away: release every concurrent connection it reported.
 * Returns how many were released. */
long anvil_table_release(struct anvil_table *t, unsigned long owner);
/* Drop idle entries (no connections, window over). Returns how many. */
size_t anvil_table_expire(struct anvil_table *t, long long now);
size_t anvil_table_size(const struct anvil_table *t);

const struct anvil_stats *anvil_table_stats(const struct anvil_table *t);
void anvil_table_stats_reset(struct anvil_table *t);

/* What a request record came to. */
enum anvil_req_result {
    ANVIL_REQ_OK,        /* applied; reply is status=ok ... */
    ANVIL_REQ_REFUSED,   /* understood and declined (an unknown request):
                            reply is status=fail reason=*why */
    ANVIL_REQ_MALFORMED, /* a field missing or malformed (*why says which):
                            nothing applied, no reply; the peer is dropped */
};

/* The service protocol (see anvil/anvil.c): apply one request record from
 * owner and build the reply record (cleared first). *why is a static
 * reason unless the result is ANVIL_REQ_OK. The proto= check is the
 * connection's (common/util/conn). */
enum anvil_req_result anvil_table_request(struct anvil_table *t, unsigned long owner,
                                          const attr_t *req, attr_t *reply, long long now,
                                          const char **why);

#endif
