/* smtpd.h - the SMTP server daemon: shared state between its parts.
 *
 * One process serves many sessions on one libevent loop. Each session is a
 * bufferevent plus a small state machine (command lines, or DATA content
 * streamed into the queue file). Parts:
 *   smtpd.c          main, accept, session list and limits
 *   smtpd_session.c  per-connection I/O, pipelined command loop, replies
 *   smtpd_cmd.c      the command table and HELO..HELP handlers (the
 *                    syntax itself is parsed by smtpd/smtpd_cmdparse.c)
 *   smtpd_data.c     DATA and BDAT content into the queue file, the commit
 *   smtpd_dataparse.c the content parser (end of data, dots, bare CR/LF,
 *                    NUL, header scan): bytes in, content and verdicts out
 *   smtpd_bdat.c     CHUNKING (RFC 3030): BDAT chunks
 *   smtpd_check.c    networks, domains, access tables, address tricks
 *   smtpd_cidr.c     network lists (mynetworks, the anvil exceptions)
 *   smtpd_restrict.c Postfix restriction lists (smtpd_*_restrictions)
 *   smtpd_rules.c    the restrictions themselves (permit_mynetworks ...)
 *   smtpd_tls.c      STARTTLS and wrapper mode
 *   smtpd_auth.c     SMTP AUTH through the asynchronous SASL layer
 *   smtpd_limit.c    per-client limits through anvil
 *   smtpd_notify.c   "request=new" notifications to qmgr
 *   smtpd_verp.c     VERP at MAIL FROM: XVERP, sender_verp_maps
 *   smtpd_local.c    local submission on a UNIX socket (sendmail)
 *   smtpd_space.c    queue_minfree: 452 4.3.1 at MAIL while the spool is full
 *   smtpd_prio.c     the priority class at the end of data (issue #9)
 *
 * Asynchronous steps (DNS lookups of restrictions, SASL steps, the AUTH
 * failure delay, anvil answers) set `waiting`: the session then reads no
 * further commands (they stay buffered, so pipelining stays correct) until
 * smtpd_wait_end(). A command whose restriction needs a lookup is run
 * again from the start once the answer is cached (smtpd_redo_later). */
#ifndef POSTINO_SMTPD_H
#define POSTINO_SMTPD_H

#include <stddef.h>
#include <sys/queue.h>

#include "common/util/buf.h"
#include "common/mail/qfile.h"

struct server;
struct bufferevent;
struct evbuffer;
struct event;
struct smtpd_data;
struct dns_ctx;
struct ssl_st;
struct ssl_ctx_st;
struct psasl_pool;
struct psasl_session;
struct smtpd_anvil;
struct smtpd_dns_req;
struct smtpd_commit;
struct workq;
struct smtp_xverp;

/* Where the input of a session goes next. */
enum smtpd_state {
    SS_CMD,  /* command lines */
    SS_SKIP, /* discarding the rest of an over-long command line */
    SS_DATA, /* message content until CRLF.CRLF */
    SS_BDAT, /* the octets of a BDAT chunk */
    SS_AUTH, /* SASL responses (one line each) */
};

/* What a check ahead of a command's effect decides (restrictions,
 * per-client limits). */
enum smtpd_outcome {
    SMTPD_PASS,    /* nothing against it: go on */
    SMTPD_REFUSED, /* refused (the function says where the reply is) */
    SMTPD_LATER,   /* an answer is awaited: the caller calls
                       smtpd_redo_later and returns */
};

/* STARTTLS offered or required (smtpd_tls_security_level). */
enum smtpd_tls_level { SMTPD_TLS_NONE, SMTPD_TLS_MAY, SMTPD_TLS_ENCRYPT };

/* A BDAT transaction (RFC 3030), reset with the transaction. */
enum smtpd_bdat_state {
    SMTPD_BDAT_NONE,    /* no BDAT yet */
    SMTPD_BDAT_STORING, /* chunks stored */
    SMTPD_BDAT_FAILED,  /* a chunk failed: the rest is dropped */
};

/* A table lookup: nothing found, found (value set), or the table failed. */
enum smtpd_lookup { SMTPD_LOOKUP_NONE, SMTPD_LOOKUP_FOUND, SMTPD_LOOKUP_ERROR };

#define SMTPD_CMD_MAX        32 /* command table entries (statistics slots) */
#define SMTPD_DNS_CACHE      4  /* domains whose lookup result a session keeps */
#define SMTPD_COMMIT_THREADS 8  /* queue-file fsyncs in flight per process */
#define SMTPD_SIGN_THREADS   16 /* at most, DKIM signers (one per CPU) */

/* Per-process state. */
struct smtpd {
    struct server *srv;
    LIST_HEAD(, smtpd_session) sessions;
    size_t nsessions;
    struct dns_ctx *dns;
    struct ssl_ctx_st *tls_ctx; /* NULL: no TLS configured */
    enum smtpd_tls_level tls_level;
    struct psasl_pool *sasl_pool; /* NULL: AUTH off */
    struct smtpd_anvil *anvil;
    struct workq *commitq;    /* fsyncs of finished messages */
    struct workq *signq;      /* DKIM private-key operations, or NULL */
    int finished;             /* commits drained, leaving the loop */
    int per_request_deadline; /* smtpd_per_request_deadline */
};

struct smtpd_dns_cache {
    char *domain;
    int status; /* enum dns_status */
};

struct smtpd_session {
    struct smtpd *d;
    LIST_ENTRY(smtpd_session) link; /* in d->sessions */
    struct bufferevent *bev;
    char *name; /* client host name ("unknown": no rDNS yet) */
    char *addr; /* client address text */
    int addr_v6;
    char *helo; /* HELO/EHLO argument, NULL before */
    int esmtp;  /* EHLO was used */
    enum smtpd_state state;
    int closing;       /* reply queued, close once output is flushed */
    int skip_was_auth; /* the line being skipped was an AUTH response */
    int paused;        /* too much unread output: stop processing */
    int sleeping;      /* past smtpd_soft_error_limit: reply delayed */
    struct event *sleep_ev;
    struct event *flush_ev;    /* replies go out at the end of this loop round */
    struct event *deadline_ev; /* smtpd_per_request_deadline, or NULL */
    double deadline_start;     /* the reply that started the request */
    long long deadline_bytes;  /* content bytes since then */
    int waiting;               /* an asynchronous step runs: read no commands */
    int quit;                  /* QUIT seen */
    int errors;                /* 4xx/5xx replies so far */
    int last_code;             /* code of the last reply */
    const char *last_cmd;      /* for "lost connection after X" */
    int redo_idx;              /* command to run again after a lookup, or -1 */
    char *redo_arg;
    /* Restrictions. */
    char *deny_text; /* smtpd_delay_reject=no: client rejected at connect */
    struct smtpd_dns_cache dnsc[SMTPD_DNS_CACHE];
    struct smtpd_dns_req *dns_req;
    /* TLS. */
    struct ssl_st *ssl; /* set once a handshake started */
    int tls;            /* handshake done */
    int tls_wrapper;    /* TLS from the first byte */
    char *tls_info;     /* "TLSv1.3 with cipher ..." */
    char *tls_received; /* "(using TLSv1.3 with cipher ...)" */
    /* AUTH. */
    struct psasl_session *sasl;
    char *sasl_method, *sasl_username;
    struct event *auth_delay_ev;
    buf_t auth_reply; /* failure reply held for smtpd_sasl_failure_delay */
    /* Local submission (smtpd_local.c): a UNIX-socket peer. */
    int local;           /* the session came in on a UNIX socket */
    long long local_uid; /* its user (SO_PEERCRED), -1: unknown */
    char *local_login;   /* that user's login name once looked up, or NULL */
    /* Per-client limits. */
    int anvil_counted; /* told anvil about this connection */
    int anvil_exempt;
    int limit_answered[3]; /* per smtpd_limit_ev: anvil's answer is in ... */
    int limit_verdict[3];  /* ... (enum smtpd_anvil_limit), to be consumed */
    int limit_pending;     /* the smtpd_limit_ev anvil is asked about */
    /* The mail transaction. */
    int have_mail;
    struct qenv env;
    struct smtpd_data *data;
    struct smtpd_commit *commit; /* message being flushed, answer pending */
    /* BDAT: the chunk being read (smtpd_bdat.c) ... */
    long long bdat_size; /* its announced size */
    long long bdat_left; /* its octets still to come */
    int bdat_last;       /* it is the LAST */
    int bdat_discard;    /* it was refused when announced: drop its octets */
    /* ... and the transaction (reset with it). */
    enum smtpd_bdat_state bdat_state;
    int bdat_fail_code;    /* reply code of the chunk that failed */
    long long bdat_octets; /* octets announced so far */
    /* Statistics for the "disconnect from" line. */
    unsigned cmd_ok[SMTPD_CMD_MAX + 1], cmd_total[SMTPD_CMD_MAX + 1];
};

/* smtpd.c */
void smtpd_session_unlink(struct smtpd_session *s);

/* smtpd_session.c */
struct smtpd_session *smtpd_session_new(struct smtpd *d, int fd);
void smtpd_session_free(struct smtpd_session *s);
/* Greet, or evaluate connect-time checks first (called once the session
 * is wired, and again after a wrapper-mode handshake). */
void smtpd_session_start(struct smtpd_session *s);
/* (Re)install callbacks and timeouts on s->bev (after a TLS filter). */
void smtpd_session_wire(struct smtpd_session *s);
void smtpd_reply(struct smtpd_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* One line of a multi-line reply ("250-..."): not counted as an error. */
void smtpd_reply_line(struct smtpd_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Queue a reply then close once it is sent. */
void smtpd_close_after(struct smtpd_session *s);
/* smtpd_per_request_deadline: a request starts (at each reply); content
 * bytes arrived (extend by n / smtpd_min_data_rate seconds). */
void smtpd_deadline_start(struct smtpd_session *s);
void smtpd_deadline_content(struct smtpd_session *s, size_t n);
/* Drop the mail transaction (RSET, new EHLO, after DATA). */
void smtpd_txn_reset(struct smtpd_session *s);
/* "NAME[ADDR]" for logs. */
const char *smtpd_client(const struct smtpd_session *s);
const char *smtpd_hostname(void);
/* Stop reading commands while an asynchronous step runs / resume. */
void smtpd_wait_begin(struct smtpd_session *s);
void smtpd_wait_end(struct smtpd_session *s);
/* Called by a command handler: run this command again (same argument)
 * when smtpd_wait_end() is called; implies smtpd_wait_begin(). */
void smtpd_redo_later(struct smtpd_session *s, const char *arg);
/* Handle buffered input now (after a state change). */
void smtpd_process_input(struct smtpd_session *s);

/* smtpd_cmd.c */
typedef void (*smtpd_cmd_fn)(struct smtpd_session *s, char *arg);
/* Handlers indexed by enum smtp_verb (smtpd/smtpd_cmdparse.h). */
extern const smtpd_cmd_fn smtpd_cmd_table[];
/* enum smtp_verb of a verb, or -1 when the verb is unknown. */
int smtpd_cmd_lookup(const char *verb);
/* Run one command line of len bytes (CR/LF removed, line[len] == 0) as
 * if it came from the client: the length and control-byte checks, the
 * verb split (smtpd/smtpd_cmdparse.c), then the handler. */
void smtpd_cmd_dispatch(struct smtpd_session *s, char *line, size_t len);
/* "NOQUEUE: reject: STAGE from client: reply; from=<> to=<> proto= helo=<>" */
void smtpd_log_reject(struct smtpd_session *s, const char *stage, const char *reply,
                      const char *rcpt);

/* smtpd_data.c */
/* DATA: open the queue file and answer 354 (or the error). */
/* queue_minfree (smtpd_space.c): 1 when the queue file system has room
 * for a message of the declared SIZE= (has_size 0: none declared), else 0
 * (logged; the caller answers 452 4.3.1). */
int smtpd_space_ok(int has_size, unsigned long long size);

void smtpd_data_begin(struct smtpd_session *s);
/* Open the queue file and the content parser (bdat: no dot handling).
 * 0, or -1 after a log line (the caller answers 451). */
int smtpd_data_open(struct smtpd_session *s, int bdat);
/* Feed content bytes; returns bytes consumed. DATA: when the end of data
 * was seen, finishes the message (reply sent) and sets state to SS_CMD. */
size_t smtpd_data_feed(struct smtpd_session *s, const unsigned char *p, size_t n);
/* BDAT, after a chunk: if the content so far is refused (a verdict of the
 * parser, or a write error), answer that, drop the file, return 1. */
int smtpd_data_chunk_refused(struct smtpd_session *s);
/* BDAT LAST: finish the content; commit (250 once durable) or refuse. */
void smtpd_data_last(struct smtpd_session *s);
/* Client went away or session ends during DATA: remove the partial file. */
void smtpd_data_abort(struct smtpd_session *s);
/* The session goes away while its message is being flushed. */
void smtpd_data_detach_commit(struct smtpd_session *s);

/* ---- smtpd_event.c: reception events (issue #11) ---- */
struct smtpd_events;
/* One reception event per recipient of the session's message, or NULL
 * when events are off. Sent with smtpd_event_send once it is durable. */
struct smtpd_events *smtpd_event_reception(const struct smtpd_session *s, const char *id,
                                           const char *message_id, long long size);
void smtpd_event_send(struct smtpd_events *ev);
void smtpd_event_free(struct smtpd_events *ev);

/* smtpd_bdat.c */
void smtpd_bdat_cmd(struct smtpd_session *s, char *arg);
/* SS_BDAT: consume chunk octets from the input; 1 when it made progress. */
int smtpd_bdat_input(struct smtpd_session *s, struct evbuffer *in);

/* smtpd_check.c */
void smtpd_check_init(void);
int smtpd_check_mynetworks(const char *addr);
/* Client listed in smtpd_forbid_bare_newline_exclusions? */
int smtpd_check_bare_exempt(const char *addr);
/* Do we accept mail for this domain from anyone (an address class other
 * than default: mydestination, virtual alias/mailbox domains,
 * relay_domains; or feedback_domains)? */
int smtpd_check_local_domain(const char *domain);
/* Address forms a host behind us could re-route (a%b@us, b!a@us,
 * "a@b"@us, a@b@us): never relayed for untrusted clients. */
int smtpd_check_tricky(const char *addr);
/* An open table by "hash:/path" (opened once, cached). NULL after a
 * warning when it cannot be opened. */
struct dict *smtpd_table(const char *spec);
/* Close the cached tables (process end). */
void smtpd_check_done(void);

/* smtpd_dkim.c: DKIM signing at reception. */
struct dkim_msg;
struct qfile_w;
struct smtpd_dkim_job;
/* Load keys and settings (as root, before the drop); fatal when bad. */
void smtpd_dkim_pre_drop(void);
void smtpd_dkim_done(void);
/* The pool that signs: one thread per CPU (the work is all CPU), apart
 * from the commit pool's fsyncs; NULL when smtpd signs nothing. */
struct event_base;
struct workq *smtpd_dkim_pool(struct event_base *base);
/* A signer for this transaction's content, or NULL: not to be signed. */
struct dkim_msg *smtpd_dkim_begin(const struct smtpd_session *s);
/* End of content (takes m): the signing domain and its keys; NULL when
 * there is no key for it (not signed, logged at debug level). */
struct smtpd_dkim_job *smtpd_dkim_job_new(const struct smtpd_session *s, struct dkim_msg *m);
/* 8-bit content that can be made 7 bit is, before it is signed (so a
 * 7-bit receiver gets the signed bytes): takes *m7 (the scan made while
 * storing) when a conversion is due; the job then converts qf. */
struct mime7;
void smtpd_dkim_job_convert(struct smtpd_dkim_job *j, const struct smtpd_session *s,
                            struct mime7 **m7, struct qfile_w *qf);
/* The signatures (and the conversion): on a worker thread. */
void smtpd_dkim_job_run(struct smtpd_dkim_job *j);
/* Back on the loop: store them with qf and log "dkim-signed"; -1 when
 * signing failed (logged; the message must not be accepted). */
int smtpd_dkim_job_finish(struct smtpd_dkim_job *j, const char *id, struct qfile_w *qf);
void smtpd_dkim_job_free(struct smtpd_dkim_job *j);
/* One key in an open table. */
enum smtpd_lookup smtpd_lookup(struct dict *t, const char *key, buf_t *value);
/* Postfix access-table lookup order for an address: "user@domain",
 * "domain", parent domains, "user@". The null sender is "<>". */
enum smtpd_lookup smtpd_access_addr(struct dict *t, const char *addr, buf_t *value);
/* Client: host name (when known), address, then shorter prefixes. */
enum smtpd_lookup smtpd_access_client(struct dict *t, const char *name, const char *addr,
                                      buf_t *value);

/* smtpd_restrict.c: the restriction lists. SMTPD_REFUSED: reply holds
 * the full reply text (already logged), the caller sends it;
 * SMTPD_LATER: a lookup runs. connect never says LATER. */
void smtpd_restrict_init(void);
enum smtpd_outcome smtpd_restrict_connect(struct smtpd_session *s, buf_t *reply);
enum smtpd_outcome smtpd_restrict_helo(struct smtpd_session *s, buf_t *reply);
enum smtpd_outcome smtpd_restrict_mail(struct smtpd_session *s, buf_t *reply);
enum smtpd_outcome smtpd_restrict_rcpt(struct smtpd_session *s, const char *rcpt, int source_routed,
                                       buf_t *reply);
/* Session end: forget cached lookups, cancel a running one. */
void smtpd_restrict_release(struct smtpd_session *s);

/* smtpd_tls.c */
void smtpd_tls_pre_drop(struct smtpd *d);
/* Wrapper mode: start the handshake on a new session's socket. Returns 0,
 * or -1 after closing fd. */
int smtpd_tls_wrap(struct smtpd_session *s, int fd);
void smtpd_tls_cmd(struct smtpd_session *s, char *arg);
/* Is STARTTLS offered now? Must TLS come before MAIL/AUTH? */
int smtpd_tls_offer(const struct smtpd_session *s);
int smtpd_tls_required(const struct smtpd_session *s);
/* Session end: what the session holds for TLS (the SSL goes with s->bev). */
void smtpd_tls_release(struct smtpd_session *s);

/* smtpd_auth.c */
void smtpd_auth_pre_drop(struct smtpd *d);
void smtpd_auth_post_drop(struct smtpd *d);
/* Mechanisms for "250-AUTH ...", or NULL when AUTH is not offered now. */
const char *smtpd_auth_mechs(struct smtpd_session *s);
void smtpd_auth_cmd(struct smtpd_session *s, char *arg);
/* One response line of an exchange (SS_AUTH state). */
void smtpd_auth_line(struct smtpd_session *s, char *line);
/* New SASL session after TLS (and at start). */
void smtpd_auth_reset(struct smtpd_session *s);
/* Session end: the SASL session, the failure-delay timer, the names. */
void smtpd_auth_release(struct smtpd_session *s);

/* smtpd_limit.c: per-client limits through anvil. smtpd_limit_event:
 * SMTPD_REFUSED when a limit was hit (replied already); SMTPD_LATER
 * when anvil was asked: the command runs again with the answer (which
 * is then consumed). */
enum smtpd_limit_ev { SMTPD_EV_MSG, SMTPD_EV_RCPT, SMTPD_EV_AUTH, SMTPD_EV_N };
void smtpd_limit_init(struct smtpd *d);
/* New connection: greets (or refuses) when anvil answered. */
void smtpd_limit_connect(struct smtpd_session *s);
enum smtpd_outcome smtpd_limit_event(struct smtpd_session *s, int ev, const char *arg);
void smtpd_limit_disconnect(struct smtpd_session *s);
/* Count a failed AUTH (no answer needed). */
void smtpd_limit_auth_failed(struct smtpd_session *s);

/* smtpd_suppress.c: smtpd_reject_suppressed. SMTPD_REFUSED with the
 * reply in *reply (550 5.7.1 suppressed, or 451 4.3.0 when the list
 * fails; logged), else SMTPD_PASS. */
enum smtpd_outcome smtpd_suppress_rcpt(struct smtpd_session *s, const char *rcpt, buf_t *reply);

/* smtpd_rcpt.c: address classes at RCPT. smtpd_rcpt_known: SMTPD_REFUSED
 * with Postfix's "550 5.1.1 <a>: Recipient address rejected: User unknown
 * in ... table" (or 451 4.3.0 when a table fails; logged), else PASS.
 * smtpd_rcpt_add: the recipient, rewritten by virtual_alias_maps, into
 * the envelope (each address once; ORCPT the client's address);
 * SMTPD_REFUSED with a 451 reply when expansion fails. */
enum smtpd_outcome smtpd_rcpt_known(struct smtpd_session *s, const char *rcpt, buf_t *reply);
enum smtpd_outcome smtpd_rcpt_add(struct smtpd_session *s, const char *rcpt, const char *orcpt,
                                  int notify, buf_t *reply);
/* Close the list (process end). */
void smtpd_suppress_done(void);

/* smtpd_notify.c */
void smtpd_notify_init(struct server *srv);
void smtpd_notify_new(const char *queue_id);

/* smtpd_verp.c: VERP (XVERP, sender_verp_maps). */
/* Check the VERP parameters at start (fatal when wrong). */
void smtpd_verp_init(void);
/* Is this client in smtpd_authorized_verp_clients (offered XVERP)? */
int smtpd_verp_allowed(const struct smtpd_session *s);
/* The XVERP settings for smtpd_cmd_mail_xverp, NULL when not allowed. */
const struct smtp_xverp *smtpd_verp_xverp(const struct smtpd_session *s);
/* After MAIL FROM passed its checks: record VERP in s->env (xverp: the
 * XVERP delimiters given, or ""/NULL; else sender_verp_maps). 0, or -1
 * when refused (replied: a table or its value is broken). */
int smtpd_verp_mail(struct smtpd_session *s, const char *xverp);

/* smtpd_local.c: local submission (sendmail over public/submit). */
/* A client of a unix service (master.cf): the session becomes local (localhost[127.0.0.1],
 * its user from SO_PEERCRED); returns 1, or 0 for a network client. */
int smtpd_local_peer(struct smtpd_session *s, int fd);
void smtpd_local_release(struct smtpd_session *s);
/* Postfix's "Received: by HOST (NAME, from userid UID)" header. */
void smtpd_local_received(const struct smtpd_session *s, const char *date, buf_t *b);
/* "QUEUEID: client=localhost[127.0.0.1], uid=UID from=<SENDER>". */
void smtpd_local_log(const struct smtpd_session *s);
/* MAIL FROM of a local session: may this user use this sender
 * (local_login_sender_maps)? SMTPD_REFUSED with the reply, else PASS. */
enum smtpd_outcome smtpd_local_sender(struct smtpd_session *s, buf_t *reply);
/* smtpd_prio.c: the priority class (issue #9). */
/* Check smtpd_default_priority at start (fatal when wrong). */
void smtpd_prio_init(void);
/* The class to record for this transaction (header: the priority_header
 * value smtpd removed, or NULL): a class name, or NULL for bulk. */
const char *smtpd_prio_class(const struct smtpd_session *s, const char *header);

#endif
