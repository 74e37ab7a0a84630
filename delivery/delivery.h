/* delivery.h - the SMTP client delivery agent: shared types of its parts.
 *
 *   delivery.c        main, qmgr connections, requests and replies
 *   delivery_job.c    one job: queue file, nexthop, DNS, hosts, results, logs
 *   delivery_sess.c   one SMTP connection: connect, I/O, timeouts, cache
 *   delivery_proto.c  the SMTP dialogue: EHLO, MAIL, RCPT, DATA, content
 *   delivery_tls.c    STARTTLS: policy, handshake, certificate checks
 *   delivery_mime.c   8BITMIME and SMTPUTF8: parameters, 7-bit conversion
 *   delivery_source.c source address (bind) and HELO name of a job
 *
 * Run as master.cf service "lmtp" the same agent speaks LMTP (RFC 2033):
 * LHLO, no MX lookup, nexthop unix:/path or inet:host[:port], one reply
 * per accepted recipient after the content, lmtp_*_timeout parameters.
 *
 * A job (one request from qmgr) owns at most one session at a time; a
 * session outlives its job when it goes into the connection cache. */
#ifndef POSTINO_DELIVERY_H
#define POSTINO_DELIVERY_H

#include <stddef.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "common/util/buf.h"
#include "common/glue/dns.h"
#include "common/mail/bclass.h"
#include "common/mail/qfile.h"
#include "delivery/delivery_reply.h"
#include "common/glue/tls.h"

struct server;
struct bufferevent;
struct event;
struct qserve;
struct dlv_sess;
struct dlv_mime;

/* Process-wide state. */
struct dlv_state {
    struct server *srv;
    struct dns_ctx *dns;
    int njobs;                   /* jobs in progress */
    LIST_HEAD(, dlv_sess) cache; /* idle sessions kept for reuse, newest first */
    SSL_CTX *tls_ctx;            /* client TLS context, NULL if it could not be built */
    buf_t tls_err;               /* why tls_ctx is NULL */
    int lmtp;                    /* service "lmtp": speak LMTP, not SMTP */
};
extern struct dlv_state dlv_g;

/* Per-recipient outcome of a job. */
struct dlv_rres {
    size_t idx;               /* recipient index in the queue file */
    enum qrcpt_status status; /* QR_PENDING until known */
    char dsn[16];
    buf_t reason;
    enum bclass cat; /* why it failed (BCLASS_OTHER for sent mail) */
    int accepted;    /* RCPT got 2xx in the current transaction */
};

struct dlv_target {
    char *host;
    struct sockaddr_storage ss;
    socklen_t sslen;
};

struct dlv_job {
    struct qserve *qs; /* NULL once qmgr went away: no reply */
    char id[QID_LEN + 1];
    char *nexthop;   /* as requested */
    char *cache_key; /* "level;nexthop": a verify destination never
                             reuses a connection made at a weaker level */
    struct tls_policy tls;
    int plain_retry; /* may level, TLS handshake failed: next connect
                             (the same host again) without STARTTLS */
    buf_t tls_info;  /* "TLSv1.3:TLS_AES_256_GCM_SHA384" or "" */
    buf_t host;      /* domain for MX, or the host */
    int port, mx;
    struct qenv env;
    int content_fd;
    struct dlv_rres *res;
    size_t nres;
    size_t tx_first, tx_end; /* res[] of the current transaction: all of
                                them, or one at a time for VERP mail */
    double t_arrival, t_start, t_ready, t_end;
    struct dlv_target *tg; /* addresses to try, in order */
    size_t ntg, itg;
    struct dlv_sess *sess;
    buf_t relay;   /* "host[ip]:port" or "none" */
    buf_t lasterr; /* why the last host failed */
    char lastdsn[16];
    enum bclass lastcat;
    int ever_ready; /* some server completed the handshake */
    int dest_fail;
    struct dlv_mime *mime; /* delivery_mime.c state, NULL until needed */
    /* Source address from qmgr's pool (delivery_source.c), or NULL. */
    char *source, *helo;
    struct sockaddr_storage src;
    socklen_t srclen;
    int source_fail; /* it cannot be bound: reply source_unavailable */
    /* qmgr's site of the job (issue #9): logged as site=, and its
     * connections are cached per site; 0: the main.cf value */
    char *site;
    long long site_max_deliveries, site_connect_timeout, site_idle_timeout;
    long long attempt; /* qmgr's attempt number, for events; 0: not sent */
};

/* How a session that never reached a transaction failed. */
enum dlv_sess_fail { SF_NEXT, SF_BOUNCE, SF_FRESH };

/* ---- delivery.c ---- */
/* The job is finished: reply to qmgr (if still connected), free the job. */
void dlv_qconn_job_done(struct dlv_job *job);

/* ---- delivery_job.c ---- */
struct dlv_job *dlv_job_new(struct qserve *qs, const char *id, const char *nexthop);
/* The site attributes of a deliver request (site=, site_max_deliveries=,
 * site_connect_timeout=, site_idle_timeout=); -1 when one is malformed. */
int dlv_job_set_site(struct dlv_job *job, const char *site, const char *maxdel, const char *conn_to,
                     const char *idle_to);
void dlv_job_add_rcpt(struct dlv_job *job, size_t idx);
/* Read the queue file and start. -1 when the request names a recipient
 * the message does not have (*why says so; the job is the caller's to
 * free, nothing was recorded); else 0 (the job may be finished already). */
int dlv_job_start(struct dlv_job *job, const char **why);
void dlv_job_free(struct dlv_job *job);
/* Session callbacks. */
void dlv_job_sess_ready(struct dlv_job *job);
void dlv_job_sess_failed(struct dlv_job *job, enum dlv_sess_fail kind, const char *dsn,
                         const char *reason, enum bclass cat);
void dlv_job_tx_done(struct dlv_job *job);
/* Set every pending recipient to the status implied by dsn; cat says why
 * it failed (bclass.h: the rules' verdict on a server's reply, or the
 * kind of our own failure). */
void dlv_job_set_pending(struct dlv_job *job, const char *dsn, const char *reason, enum bclass cat);
/* The same for the pending recipients of the current transaction only. */
void dlv_job_set_tx(struct dlv_job *job, const char *dsn, const char *reason, enum bclass cat);
/* Choose the recipients of the next transaction (tx_first, tx_end): all
 * of them, or for VERP mail the first one still pending. 0 when there is
 * nobody left to send to. */
int dlv_job_tx_window(struct dlv_job *job);
/* A transaction is over: does VERP mail have another one to do on the
 * same connection? (The recipient just tried has its result by now.) */
int dlv_job_next_tx(struct dlv_job *job);
void dlv_job_set_rcpt(struct dlv_rres *r, const char *dsn, const char *reason, enum bclass cat);
double dlv_now(void);

/* ---- delivery_sess.c ---- */
void dlv_sess_connect(struct dlv_job *job, const struct dlv_target *t, int port);
/* Take an idle cached session for key, or NULL. */
struct dlv_sess *dlv_cache_take(const char *key);
void dlv_sess_reuse(struct dlv_sess *s, struct dlv_job *job);
/* Transaction over: cache the session when allowed, else QUIT. */
void dlv_sess_release(struct dlv_sess *s);
void dlv_cache_flush(void);
const char *dlv_sess_relay(const struct dlv_sess *s);
const char *dlv_sess_tls_info(const struct dlv_sess *s);

/* The main.cf name of a timeout: name itself ("smtp_rcpt_timeout"), or its
 * lmtp_* counterpart ("lmtp_rcpt_timeout", smtp_helo -> lmtp_lhlo) for LMTP. */
const char *dlv_timeout_param(const char *name);

/* ---- delivery_source.c ---- */
/* Are a request's source= and helo= (either NULL) well formed? 0 or -1. */
int dlv_source_check(const char *source, const char *helo);
void dlv_source_set(struct dlv_job *job, const char *source, const char *helo);
/* Can the job's source address be bound? 0 (or there is none), else -1
 * with the reason in job->lasterr (logged). */
int dlv_source_probe(struct dlv_job *job);
/* A socket for a connection to an address of family, bound to the job's
 * source or smtp_bind_address[6] (*fd -1: none needed, connect unbound).
 * Returns 0 or an errno (the pool address is of the other family, or the
 * bind failed). */
int dlv_source_socket(const struct dlv_job *job, int family, int *fd);
/* The name for EHLO/HELO: the job's, else smtp_helo_name. */
const char *dlv_source_helo(const struct dlv_job *job);

/* ---- delivery_tls.c ---- */
/* Build the client TLS context (pre_drop: CA files may be root-only). */
void dlv_tls_init(void);
/* Find the job's TLS policy and cache key; -1: deferred (results set). */
int dlv_job_tls_policy(struct dlv_job *job);

#endif
