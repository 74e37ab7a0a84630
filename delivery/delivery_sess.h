/* delivery_sess.h - one SMTP client connection (shared by delivery_sess.c,
 * which does connections, I/O, timeouts and the cache, and
 * delivery_proto.c, which speaks the dialogue). */
#ifndef POSTINO_DELIVERY_SESS_H
#define POSTINO_DELIVERY_SESS_H

#include "common/mail/crlf.h"
#include "delivery/delivery_dotstuff.h"
#include "delivery/delivery.h"

/* What a reply we wait for answers; indexes dlv_phase[]. */
enum dlv_xkind {
    X_GREET,
    X_EHLO,
    X_HELO,
    X_RSET,
    X_MAIL,
    X_RCPT,
    X_DATA,
    X_DOT,
    X_QUIT,
    X_STARTTLS,
    X_BDAT,
    X_BDAT_LAST,
    X_LMTP, /* LMTP: one recipient's reply after the content (i: its res[]) */
    X_COUNT
};

struct dlv_xwait {
    enum dlv_xkind kind;
    size_t i; /* recipient position for X_RCPT; for X_BDAT and
                             X_BDAT_LAST where the chunk ends in the octets
                             of chunks queued (struct dlv_bdat.queued) */
};

struct dlv_phase {
    const char *timeout_param;
    const char *doing;   /* "while <doing>" in error texts */
    const char *command; /* "(in reply to <command> command)" */
    short ok[3];         /* the only replies that mean success, 0-ended
                             (RFC 5321 4.3.2, 3207); empty: any (QUIT) */
};
extern const struct dlv_phase dlv_phase[X_COUNT];

enum dlv_sstate { SS_CONNECT, SS_CMD, SS_BODY, SS_IDLE, SS_QUIT, SS_TLS /* handshake */ };

#define FEAT_PIPELINING 0x1
#define FEAT_SIZE       0x2
#define FEAT_8BITMIME   0x4
#define FEAT_DSN        0x8
#define FEAT_STARTTLS   0x10
#define FEAT_ENHANCED   0x20
#define FEAT_SMTPUTF8   0x40
#define FEAT_CHUNKING   0x80
#define FEAT_BINARYMIME 0x100

/* Content is read from the queue file BODY_CHUNK bytes at a time; at most
 * about BODY_HIGH bytes of it wait in a connection's output buffer. */
#define BODY_CHUNK 65536
#define BODY_HIGH  (4 * BODY_CHUNK)

/* Content as BDAT chunks (RFC 3030), delivery_bdat.c. */
struct dlv_bdat {
    int on;        /* this transaction sends BDAT, not DATA */
    int go;        /* chunks after the first may go: the envelope was
                             answered and a recipient accepted */
    int stop;      /* no more chunks (the transaction failed) */
    int failed;    /* a chunk was refused: its reply gave the results */
    int last_sent; /* BDAT ... LAST is queued */
    size_t nchunks;
    size_t queued;        /* octets of chunks, with their BDAT lines, queued */
    struct crlf enc;      /* the content encoder's state */
    struct evbuffer *tmp; /* the chunk being encoded */
};

struct dlv_sess {
    struct bufferevent *bev;
    struct event *timer;
    char *key; /* nexthop, for the connection cache */
    char *host;
    buf_t relay;  /* host[ip]:port */
    buf_t hostip; /* host[ip] */
    enum dlv_sstate state;
    int connected;     /* TCP connection established */
    int reused;        /* taken from the cache for this job */
    int pending_errno; /* connect failed synchronously */
    struct smtp_rparser rp;
    int feat;
    long long size_limit;
    struct dlv_job *job;
    struct dlv_xwait *xq; /* replies expected, in order (RFC 2920) */
    size_t xhead, xn, xcap;
    int in_tx;      /* MAIL was sent */
    int tx_closed;  /* the transaction got its final reply: the next
                      MAIL needs no RSET */
    int verp_next;  /* the RSET pending leads to the job's next VERP
                      transaction (not a cached connection's reuse) */
    int rset_ahead; /* a reused connection's RSET went in the same flight
                       as the transaction: until its 250 the connection
                       is unproven, and a failure means a fresh one */
    int mail_failed, ignore_dot;
    int premature; /* the server spoke before our last command */
    size_t naccepted, next_rcpt;
    long long body_left, body_off;
    struct dotstuff stuff; /* the content encoder's state */
    struct dlv_bdat bd;
    int nmsgs;             /* transactions completed on this connection */
    long long max_msgs;    /* the site's max_deliveries_per_connection, or 0 */
    long long idle_time;   /* the site's idle_timeout, or 0 */
    tls_level_t tls_level; /* of the job that opened it */
    int no_tls;            /* plaintext retry after a failed may-level handshake */
    SSL *ssl;              /* owned by bev once the handshake started */
    buf_t tls_info;        /* "TLSv1.3:cipher" once TLS is up, else "" */
    int cached;            /* in dlv_g.cache */
    LIST_ENTRY(dlv_sess) cache_link;
};

/* delivery_sess.c */
void dlv_sess_expect(struct dlv_sess *s, enum dlv_xkind kind, size_t i);
/* The same for a reply that follows the one just read (LMTP's further
 * per-recipient replies): bytes already here may be it, not premature. */
void dlv_sess_expect_next(struct dlv_sess *s, enum dlv_xkind kind, size_t i);
/* The command name for logs: "EHLO", or "LHLO" when speaking LMTP. */
const char *dlv_phase_command(enum dlv_xkind kind);
void dlv_sess_send(struct dlv_sess *s, const char *data, size_t len);
void dlv_sess_arm(struct dlv_sess *s, const char *timeout_param);
/* The peer or the connection failed: report and free. Returns -1. */
int dlv_sess_abort(struct dlv_sess *s, const char *dsn, const char *reason, enum bclass cat);
void dlv_sess_free(struct dlv_sess *s);
/* Detached from its job: send QUIT, close once it is written (or after
 * 2 s), never cached. */
void dlv_sess_goodbye(struct dlv_sess *s);
/* Transaction over (results set): hand the job back. Returns -1. */
int dlv_sess_tx_end(struct dlv_sess *s);
/* Set the session's callbacks on s->bev (again, after the TLS re-wrap). */
void dlv_sess_install_cbs(struct dlv_sess *s);

/* delivery_proto.c */
/* Handle one complete reply in s->rp.reply. 0: keep reading, -1: stop
 * (the session was handed on or freed). */
int dlv_proto_reply(struct dlv_sess *s);
void dlv_proto_start_tx(struct dlv_sess *s);
/* Output drained while sending the content: write more. 0, or -1 when
 * the session was given up (queue file read error). */
int dlv_proto_body_more(struct dlv_sess *s);
/* "host H[ip] said: TEXT (in reply to CMD command)" */
void dlv_proto_said(struct dlv_sess *s, enum dlv_xkind kind, buf_t *out);
/* The category the classifier rules give the reply in s->rp.reply. */
enum bclass dlv_proto_reply_bclass(const struct dlv_sess *s);
void dlv_proto_send_ehlo(struct dlv_sess *s);
/* rr failed with the reply in s->rp.reply to the command of kind. */
void dlv_proto_rcpt_failed(struct dlv_sess *s, struct dlv_rres *rr, enum dlv_xkind kind);
/* The final reply (end of DATA, BDAT LAST) to every pending accepted
 * recipient; hands the job back. Returns -1. */
int dlv_proto_final_reply(struct dlv_sess *s, enum dlv_xkind kind);
/* LMTP: the content is complete; expect one reply per accepted recipient
 * but skip (a res[] index, or SIZE_MAX) - follow: behind a reply just read
 * (BDAT LAST's, which answers the first of them). */
void dlv_proto_lmtp_expect(struct dlv_sess *s, int follow, size_t skip);
/* One recipient's LMTP reply after the content (res[i]); the last ends the
 * transaction (then -1). */
int dlv_proto_lmtp_reply(struct dlv_sess *s, size_t i);
/* The queue file could not be read while sending content: give the
 * session up (never ending the content). Returns -1. */
int dlv_proto_body_read_error(struct dlv_sess *s, int err);

/* delivery_bdat.c */
/* Does this transaction send BDAT? (the server offers CHUNKING and
 * smtp_chunking_enable allows it) */
int dlv_bdat_wanted(const struct dlv_sess *s);
/* Start the content: the first chunk goes at once (pipelined behind the
 * envelope, or after it was accepted). 0, or -1: the session is gone. */
int dlv_bdat_begin(struct dlv_sess *s);
/* Pipelined: every RCPT reply is in; more chunks go only when a recipient
 * was accepted. 0, or -1: the session is gone. */
int dlv_bdat_envelope_done(struct dlv_sess *s);
/* Queue the chunks that may go now (the write callback, SS_BODY). */
int dlv_bdat_more(struct dlv_sess *s);
/* A reply to the chunk that ends at end, while its octets are still in our
 * output buffer: the server cannot have read them. */
int dlv_bdat_early(const struct dlv_sess *s, size_t end);
/* The replies to a chunk and to the LAST chunk (handlers[]). */
int dlv_bdat_on_chunk(struct dlv_sess *s, size_t end);
int dlv_bdat_on_last(struct dlv_sess *s, size_t end);

/* delivery_mime.c */
/* Before MAIL FROM: BODY=/SMTPUTF8 for this server, and 7-bit conversion
 * or refusal for one without 8BITMIME. 0: go on; -1: every pending
 * recipient has its result (bounced or deferred), no transaction. */
int dlv_mime_prepare(struct dlv_sess *s);
/* Append " BODY=8BITMIME" and/or " SMTPUTF8" as dlv_mime_prepare decided. */
void dlv_mime_mail_params(struct dlv_sess *s, buf_t *cmd);
/* Content length as it will be sent (converted or not). */
long long dlv_mime_size(const struct dlv_job *job);
/* The content on its way to the dot-stuffing: p itself, or the converted
 * bytes (*n updated); dlv_mime_body_end gives what is left at the end. */
const char *dlv_mime_body_filter(struct dlv_job *job, const char *p, size_t *n);
const char *dlv_mime_body_end(struct dlv_job *job, size_t *n);
/* Free the job's 8BITMIME/SMTPUTF8 state (NULL: nothing). */
void dlv_mime_free(struct dlv_mime *d);

/* delivery_tls.c */
/* What dlv_tls_after_ehlo did after EHLO/HELO. */
enum dlv_starttls {
    DLV_STARTTLS_NONE,   /* go on: plaintext, or TLS is up already */
    DLV_STARTTLS_SENT,   /* STARTTLS sent: keep reading */
    DLV_STARTTLS_GAVE_UP /* the session was given up (TLS required, not offered) */
};
enum dlv_starttls dlv_tls_after_ehlo(struct dlv_sess *s);
/* The reply to STARTTLS (handlers[X_STARTTLS]). */
int dlv_tls_on_starttls(struct dlv_sess *s, size_t i);
/* Handshake finished (BEV_EVENT_CONNECTED in SS_TLS). */
void dlv_tls_handshake_done(struct dlv_sess *s);
/* Handshake failed or timed out ("timeout" or "error"). */
void dlv_tls_handshake_failed(struct dlv_sess *s, const char *what);
/* STARTTLS went wrong at an opportunistic level: the job's next connection
 * goes to the same host again, without STARTTLS. */
void dlv_tls_plain_retry(struct dlv_sess *s);

#endif
