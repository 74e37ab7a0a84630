/* smtpd_anvil.h - smtpd's side of the anvil service (per-client limits).
 *
 * Non-blocking: requests go out over one persistent UNIX-socket connection
 * driven by the caller's libevent loop; replies come back in order and are
 * handed to the callbacks in that order. The service being down never
 * stops mail: every request then completes (from the event loop, never
 * from inside the call) with all counters 0 and `unavailable` set, a
 * warning is logged once per outage, and the connection is retried after
 * ANVIL_CLIENT_RETRY_SECS. A request unanswered after
 * ANVIL_CLIENT_TIMEOUT_SECS counts as an outage.
 *
 * Usage in smtpd (the decision stays in smtpd):
 *   if (!anvil_client_exempt(addr))
 *       anvil_client_connect(ac, "smtp", addr, on_counts, session);
 *   on_counts: switch (anvil_limit_exceeded(ANVIL_EV_CONN, c)) ...
 *   session end: anvil_client_cancel(ac, session);
 *                anvil_client_disconnect(ac, "smtp", addr);
 * Callbacks must not free the client. Like every daemon (server_main),
 * the caller must ignore SIGPIPE. */
#ifndef POSTINO_ANVIL_CLIENT_H
#define POSTINO_ANVIL_CLIENT_H

#include "common/mail/anvil_proto.h"

#define ANVIL_CLIENT_RETRY_SECS 10
#define ANVIL_CLIENT_TIMEOUT_SECS 5

struct event_base;
struct anvil_client;

/* c is valid during the call only. */
typedef void (*anvil_client_cb)(const struct anvil_counts *c, void *arg);

/* path: the service socket (e.g. "<spool>/private/anvil"). Connects on
 * the first request. */
struct anvil_client *anvil_client_new(struct event_base *base, const char *path);
/* Pending callbacks are dropped, not called. */
void anvil_client_free(struct anvil_client *ac);

/* A new client connection: counts it (concurrent and rate). cb gets
 * count and rate[ANVIL_EV_CONN]. */
void anvil_client_connect(struct anvil_client *ac, const char *service, const char *addr,
                          anvil_client_cb cb, void *arg);
/* The client connection ended (no reply needed). */
void anvil_client_disconnect(struct anvil_client *ac, const char *service, const char *addr);
/* Count one MSG, RCPT, AUTH or AUTH_FAIL event; cb (may be NULL) gets
 * rate[ev] (AUTH: also rate[ANVIL_EV_AUTH_FAIL]). ANVIL_EV_CONN here is
 * the same as anvil_client_connect. */
void anvil_client_event(struct anvil_client *ac, enum anvil_event ev, const char *service,
                        const char *addr, anvil_client_cb cb, void *arg);
/* All counters of a client, counting nothing. */
void anvil_client_lookup(struct anvil_client *ac, const char *service, const char *addr,
                         anvil_client_cb cb, void *arg);
/* The owner of arg is going away: its pending callbacks will not be called. */
void anvil_client_cancel(struct anvil_client *ac, void *arg);
/* Seconds to wait before reconnecting after an outage (default
 * ANVIL_CLIENT_RETRY_SECS; tests use 0). */
void anvil_client_set_retry(struct anvil_client *ac, int secs);
/* 1 while connected to the service (for status displays and tests). */
int anvil_client_up(const struct anvil_client *ac);

/* ---- the decision helpers (read main.cf parameters) ---- */

enum anvil_limit {
    ANVIL_LIMIT_NONE,
    ANVIL_LIMIT_CONN_COUNT,  /* 421 4.7.0 Error: too many connections from ADDR */
    ANVIL_LIMIT_CONN_RATE,   /* 421 4.7.0 Error: too many connections from ADDR */
    ANVIL_LIMIT_MSG_RATE,    /* 450 4.7.1 Error: too much mail from ADDR */
    ANVIL_LIMIT_RCPT_RATE,   /* 452 4.5.3 Error: too many recipients from ADDR */
    ANVIL_LIMIT_AUTH_RATE,   /* 503 5.7.0 Error: too many AUTH commands from ADDR */
    ANVIL_LIMIT_AUTH_FAIL,   /* 503 5.7.0 Error: too many AUTH failures from ADDR */
};

/* Which limit does the event just counted (c is its reply) exceed? A
 * limit of 0 means none; unavailable counters never exceed anything.
 * Like Postfix: count > limit, rate > limit; failed AUTH >= limit. */
enum anvil_limit anvil_limit_exceeded(enum anvil_event ev, const struct anvil_counts *c);
/* The parameter behind a limit ("smtpd_client_connection_count_limit"). */
const char *anvil_limit_param(enum anvil_limit l);
/* Is addr in smtpd_client_event_limit_exceptions (default $mynetworks)? */
int anvil_client_exempt(const char *addr);

#endif
