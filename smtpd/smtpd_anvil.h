/* smtpd_anvil.h - smtpd's side of the anvil service (per-client limits).
 *
 * Non-blocking: requests go out over one persistent UNIX-socket connection
 * driven by the caller's libevent loop; replies come back in order and are
 * handed to the callbacks in that order. The service being down never
 * stops mail: every request then completes (from the event loop, never
 * from inside the call) with all counters 0 and `unavailable` set, a
 * warning is logged once per outage, and the connection is retried after
 * SMTPD_ANVIL_RETRY_SECS. A request unanswered after
 * SMTPD_ANVIL_TIMEOUT_SECS counts as an outage.
 *
 * Usage in smtpd (the decision stays in smtpd):
 *   if (!smtpd_anvil_exempt(addr))
 *       smtpd_anvil_connect(ac, "smtp", addr, on_counts, session);
 *   on_counts: switch (smtpd_anvil_limit_exceeded(ANVIL_EV_CONN, c)) ...
 *   session end: smtpd_anvil_cancel(ac, session);
 *                smtpd_anvil_disconnect(ac, "smtp", addr);
 * Callbacks must not free the client. Like every daemon (server_main),
 * the caller must ignore SIGPIPE. */
#ifndef POSTINO_SMTPD_ANVIL_H
#define POSTINO_SMTPD_ANVIL_H

#include "common/mail/anvil_proto.h"

#define SMTPD_ANVIL_RETRY_SECS   10
#define SMTPD_ANVIL_TIMEOUT_SECS 5

struct event_base;
struct smtpd_anvil;

/* c is valid during the call only. */
typedef void (*smtpd_anvil_cb)(const struct anvil_counts *c, void *arg);

/* path: the service socket (e.g. "<spool>/private/anvil"). Connects on
 * the first request. */
struct smtpd_anvil *smtpd_anvil_new(struct event_base *base, const char *path);
/* Pending callbacks are dropped, not called. */
void smtpd_anvil_free(struct smtpd_anvil *ac);

/* A new client connection: counts it (concurrent and rate). cb gets
 * count and rate[ANVIL_EV_CONN]. */
void smtpd_anvil_connect(struct smtpd_anvil *ac, const char *service, const char *addr,
                         smtpd_anvil_cb cb, void *arg);
/* The client connection ended (no reply needed). */
void smtpd_anvil_disconnect(struct smtpd_anvil *ac, const char *service, const char *addr);
/* Count one MSG, RCPT, AUTH or AUTH_FAIL event; cb (may be NULL) gets
 * rate[ev] (AUTH: also rate[ANVIL_EV_AUTH_FAIL]). ANVIL_EV_CONN here is
 * the same as smtpd_anvil_connect. */
void smtpd_anvil_event(struct smtpd_anvil *ac, enum anvil_event ev, const char *service,
                       const char *addr, smtpd_anvil_cb cb, void *arg);
/* All counters of a client, counting nothing. */
void smtpd_anvil_lookup(struct smtpd_anvil *ac, const char *service, const char *addr,
                        smtpd_anvil_cb cb, void *arg);
/* The owner of arg is going away: its pending callbacks will not be called. */
void smtpd_anvil_cancel(struct smtpd_anvil *ac, void *arg);
/* Seconds to wait before reconnecting after an outage (default
 * SMTPD_ANVIL_RETRY_SECS; tests use 0). */
void smtpd_anvil_set_retry(struct smtpd_anvil *ac, int secs);
/* 1 while connected to the service (for status displays and tests). */
int smtpd_anvil_up(const struct smtpd_anvil *ac);

/* ---- the decision helpers (read main.cf parameters) ---- */

enum smtpd_anvil_limit {
    SMTPD_ANVIL_LIMIT_NONE,
    SMTPD_ANVIL_LIMIT_CONN_COUNT, /* 421 4.7.0 Error: too many connections from ADDR */
    SMTPD_ANVIL_LIMIT_CONN_RATE,  /* 421 4.7.0 Error: too many connections from ADDR */
    SMTPD_ANVIL_LIMIT_MSG_RATE,   /* 450 4.7.1 Error: too much mail from ADDR */
    SMTPD_ANVIL_LIMIT_RCPT_RATE,  /* 452 4.5.3 Error: too many recipients from ADDR */
    SMTPD_ANVIL_LIMIT_AUTH_RATE,  /* 503 5.7.0 Error: too many AUTH commands from ADDR */
    SMTPD_ANVIL_LIMIT_AUTH_FAIL,  /* 503 5.7.0 Error: too many AUTH failures from ADDR */
};

/* Which limit does the event just counted (c is its reply) exceed? A
 * limit of 0 means none; unavailable counters never exceed anything.
 * Like Postfix: count > limit, rate > limit; failed AUTH >= limit. */
enum smtpd_anvil_limit smtpd_anvil_limit_exceeded(enum anvil_event ev,
                                                  const struct anvil_counts *c);
/* The parameter behind a limit ("smtpd_client_connection_count_limit"). */
const char *smtpd_anvil_limit_param(enum smtpd_anvil_limit l);
/* Is addr in smtpd_client_event_limit_exceptions (default $mynetworks)? */
int smtpd_anvil_exempt(const char *addr);

#endif
