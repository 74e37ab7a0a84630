/* qfile.h - the queue file: one file per message, the truth of the queue.
 *
 * Path: <queue_directory>/queue/XY/<ID>, XY = two lower-case hex digits
 * derived from the id (qid_hash_dir). Layout:
 *
 *   "POSTINOQ1 c=<12 digits> l=<12 digits>\n"    fixed 40-byte preamble:
 *        content offset and length, rewritten at commit
 *   envelope records, one per line, "name=value" (value escaped as in attr.h):
 *        arrival=<unix seconds>.<usec>
 *        size=<content bytes>       (written at commit in the preamble too)
 *        client_name=, client_addr=, helo=, proto=ESMTP|ESMTPS|...
 *        sasl_method=, sasl_username=   (optional)
 *        message_id=                    (optional, for logs)
 *        sender=<address, empty for the null sender>
 *        verp=<two delimiters>          (optional, verp.h: one envelope
 *                                       sender per recipient, built from
 *                                       the return address and the
 *                                       recipient; "+=" by default)
 *        verp_return=<address>          (optional, with verp=: the return
 *                                       address from sender_verp_maps;
 *                                       without it the sender itself, as
 *                                       with XVERP)
 *        envid=, ret=FULL|HDRS          (optional, RFC 3461)
 *        body=7BIT|8BITMIME|BINARYMIME  (optional, RFC 6152/3030: the
 *                                       client's BODY= parameter)
 *        smtputf8=1                     (optional, RFC 6531: the client
 *                                       gave SMTPUTF8 on MAIL FROM)
 *        rcpt=<address>                 one per recipient, in order; the
 *        orcpt=<type;xtext>             optional, applies to the rcpt above
 *        notify=<NEVER | list of SUCCESS,FAILURE,DELAY>  optional, same
 *        content                        marks the start of the content
 *   content bytes (CRLF lines, dot-unstuffed, Received: header first)
 *   then records appended later with O_APPEND, one write(2) each:
 *        result=<idx> <status> <dsn> <unix time> <relay> <reason...>[\t<name>=<value>]...
 *            status: sent | deferred | bounced ; idx 0-based recipient;
 *            relay and reason escaped (relay "none" when no host);
 *            the LAST result line for an idx wins. Optional attributes
 *            follow the reason, each after a TAB (which an escaped
 *            reason never holds): category=<bclass name> (why it
 *            failed, see bclass.h). Files written before there were
 *            attributes read as results without them; unknown
 *            attributes are ignored.
 *        hold=1 / hold=0        queue state set by the administrator
 *        warned=<unix time>     delay warning sent
 *        dsn_sent=<idx> <kind>  notification for idx sent (kind: failure,
 *                               delay, success) so a crash does not repeat it
 *        message_id=<text>      the Message-ID header, written by
 *                               qfile_commit when smtpd learnt it while
 *                               streaming (qfile_w_set_message_id); read
 *                               into env->message_id like the envelope
 *                               record of the same name (last one wins)
 *        body=7BIT              the content was converted to 7 bit after
 *                               the envelope was written (smtpd, for mail
 *                               it signs; qfile_w_convert): replaces the
 *                               envelope's body= (last one wins)
 *        pool=<name>            source address pool the injector chose
 *                               (source_pool_header, removed from the
 *                               content by smtpd; qfile_w_set_pool)
 *        priority=<class>       priority class smtpd chose (prio.h:
 *                               "transactional"); absent: bulk. From
 *                               priority_header (removed from the
 *                               content), the maps or the port
 *                               (qfile_w_set_priority)
 *        dkim=<fields>          DKIM-Signature header field(s), CRLF
 *                               lines, computed by smtpd over the content
 *                               and written by qfile_commit with it
 *                               (qfile_w_set_dkim): delivery and bounce
 *                               send them ahead of the content, so every
 *                               retry sends the same signed bytes
 *
 * Converted content (qfile_w_convert) is written after the content as
 * received, and the preamble's offset names it: the bytes between the
 * "content" marker and that offset are dead (c= is never below the end
 * of the marker; it is equal to it unless the content was converted).
 *
 * Completeness: the file is created 0600 under its final name; commit sets
 * mode 0700 (the owner execute bit, as Postfix does) BEFORE the single
 * fsync. A file without the execute bit is incomplete and never delivered;
 * qmgr removes such files when they are older than an hour.
 * Durability: the 250 reply is given only after qfile_commit returns 0:
 * content, preamble and mode are on stable storage, and because the file
 * was created under its final name, the fsync also commits its directory
 * entry on ext4/xfs (one fsync per message). */
#ifndef POSTINO_QFILE_H
#define POSTINO_QFILE_H

#include <stddef.h>
#include <sys/time.h>
#include <sys/types.h>
#include "common/util/buf.h"

#define QID_LEN            17 /* 8 hex seconds + 5 hex usec + 4 hex uniq */
#define QFILE_PREAMBLE_LEN 40

/* NOTIFY flags (RFC 3461). 0 means "not specified" (default: FAILURE,DELAY) */
#define NOTIFY_NEVER   0x1
#define NOTIFY_SUCCESS 0x2
#define NOTIFY_FAILURE 0x4
#define NOTIFY_DELAY   0x8

#define RET_NONE 0
#define RET_FULL 1
#define RET_HDRS 2

/* BODY= as the client declared it (RFC 1652/6152, RFC 3030). */
enum qbody { QBODY_NONE = 0, QBODY_7BIT, QBODY_8BITMIME, QBODY_BINARYMIME };

enum qrcpt_status { QR_PENDING = 0, QR_SENT, QR_DEFERRED, QR_BOUNCED };

struct qrcpt {
    char *addr;
    char *orcpt; /* "rfc822;xtext" as given, or NULL */
    int notify;  /* NOTIFY_* bits, 0 = default */
    /* From appended result records (reading only): */
    int status;     /* enum qrcpt_status */
    char *dsn;      /* "5.1.1" etc., NULL while pending */
    char *relay;    /* "host[ip]:port" or "none" */
    char *reason;   /* remote text or local explanation */
    char *category; /* bclass name of a failure ("bad-mailbox"), or NULL */
    long long when; /* time of the last result */
    int dsn_sent;   /* bit set of NOTIFY_* kinds already notified */
    int deferrals;  /* number of "deferred" result records (attempts) */
};

struct qenv {
    char id[QID_LEN + 1];
    struct timeval arrival;
    char *client_name, *client_addr, *helo, *proto;
    char *sasl_method, *sasl_username;
    char *message_id;
    char *dkim;        /* DKIM-Signature field(s) sent before the content, or NULL */
    char *sender;      /* "" for the null sender */
    char *verp;        /* VERP delimiters ("+="), NULL: no VERP (verp.h) */
    char *verp_return; /* VERP return address, NULL: the sender */
    char *pool;        /* source address pool chosen by the injector, or NULL */
    char *priority;    /* priority class name (prio.h) smtpd chose, or NULL: bulk */
    char *envid;
    int ret;      /* RET_* */
    int body;     /* enum qbody */
    int smtputf8; /* SMTPUTF8 was requested (RFC 6531) */
    struct qrcpt *rcpt;
    size_t nrcpt, rcpt_cap;
    /* From reading: */
    long long content_off, content_len;
    int hold;
    long long warned; /* time of delay warning, 0 = none */
    int complete;     /* execute bit was set */
};

/* ---- queue ids ---- */
/* New id from the current time; unique together with O_EXCL creation. */
void qid_new(char out[QID_LEN + 1]);
int qid_valid(const char *id);
/* Two hex digits naming the hashed subdirectory for id. */
void qid_hash_dir(const char *id, char out[3]);
/* <spool>/queue/XY/<id> */
void qfile_path(const char *spool, const char *id, buf_t *out);
/* Arrival time encoded in the id (seconds). */
long long qid_time(const char *id);

/* ---- writing (smtpd, bounce) ---- */
struct qfile_w;
/* Remove the incomplete queue file at path when its writer is gone (no
 * process holds the writer's lock); 1 when it was removed. For qmgr's
 * spool scan. */
int qfile_abandoned(const char *path);
/* Create a new queue file with a fresh id under <spool>/queue/XY/.
 * env supplies the envelope (its id and content fields are ignored; the
 * new id is copied into env->id). Writes preamble and envelope and the
 * "content" marker. NULL with err on failure (the caller answers 451). */
struct qfile_w *qfile_create(const char *spool, struct qenv *env, buf_t *err);
const char *qfile_w_id(const struct qfile_w *w);
/* Append content bytes (buffered). -1 on write error (disk full...). */
int qfile_write(struct qfile_w *w, const void *data, size_t len);
/* Content bytes written so far. */
long long qfile_w_size(const struct qfile_w *w);
/* Record the message's Message-ID (learnt while streaming the content,
 * after the envelope was written): qfile_commit writes it as an appended
 * "message_id=" record right after the content, inside the same single
 * fsync. Replaces an earlier call's value; NULL or "" clears it. */
void qfile_w_set_message_id(struct qfile_w *w, const char *id);
/* The DKIM-Signature field(s) (CRLF lines) for the content written:
 * qfile_commit writes them as an appended "dkim=" record, like the
 * Message-ID, inside the same fsync. NULL or "" clears. */
void qfile_w_set_dkim(struct qfile_w *w, const char *fields);
/* The source address pool named by the injector's header (smtpd removed
 * the header from the content): an appended "pool=" record at commit, like
 * the Message-ID. NULL or "" clears. */
void qfile_w_set_pool(struct qfile_w *w, const char *pool);
/* The priority class name smtpd chose: an appended "priority=" record at
 * commit, like the pool. NULL or "" clears. */
void qfile_w_set_priority(struct qfile_w *w, const char *prio);
/* Content conversion in place of the content written so far (smtpd makes
 * 8-bit mail it signs 7 bit): fn gets the stored content again, read back
 * from the file in pieces, then once more with last set and no bytes; what
 * it appends to out becomes the new content, written after the old one,
 * which the preamble no longer names. May run on a worker thread (it
 * touches only w). 0, or -1 on a read or write error (the commit fails). */
typedef void (*qfile_conv_fn)(void *arg, const char *p, size_t n, int last, buf_t *out);
int qfile_w_convert(struct qfile_w *w, qfile_conv_fn fn, void *arg);
/* The body type for an appended "body=" record (after a conversion). */
void qfile_w_set_body(struct qfile_w *w, int body);
/* Flush, fix the preamble, set the completeness mark, fsync, close.
 * 0 = durable; -1 = failed, file removed, err set. Frees w either way. */
int qfile_commit(struct qfile_w *w, buf_t *err);
/* The same commit in three steps, for a caller whose event loop must go on
 * while the disk flushes (smtpd runs the middle step on a worker thread, so
 * several messages' fsyncs are in flight at once):
 *   qfile_commit_begin  loop thread: flush, preamble, completeness mark;
 *                       -1 = failed, file removed, w freed, err set
 *   qfile_commit_sync   any thread: fsync and close (touches only w's fd
 *                       and error state)
 *   qfile_commit_end    loop thread: 0 = durable, -1 = failed (file
 *                       removed, err set); frees w either way */
int qfile_commit_begin(struct qfile_w *w, buf_t *err);
void qfile_commit_sync(struct qfile_w *w);
int qfile_commit_end(struct qfile_w *w, buf_t *err);
/* Give up: close and unlink. Frees w. */
void qfile_abort(struct qfile_w *w);

/* ---- reading ---- */
/* Parse envelope and appended records. Returns 0; -1 with err when the
 * file is missing, malformed, or (unless allow_incomplete) incomplete. */
int qfile_read(const char *spool, const char *id, struct qenv *env, int allow_incomplete,
               buf_t *err);
void qenv_init(struct qenv *env);
void qenv_destroy(struct qenv *env);
/* Add a recipient to an envelope being built (copies strings). */
struct qrcpt *qenv_add_rcpt(struct qenv *env, const char *addr, const char *orcpt, int notify);
void qenv_set(char **field, const char *value); /* replace a string field */
/* A delivery agent's one open of a committed queue file: the envelope is
 * parsed into env, and the descriptor returned (O_RDWR | O_APPEND) serves
 * for reading the content (pread at env->content_off), for the shared lock
 * and for appending results (qfile_append_result_fd). -1 with err. */
int qfile_open_job(const char *spool, const char *id, struct qenv *env, buf_t *err);
/* Open the queue file read-only positioned at the content; *len = content
 * length. Returns fd or -1. */
int qfile_open_content(const char *spool, const char *id, long long *len, buf_t *err);
/* A delivery agent holds a shared flock(2) on the file (its content
 * descriptor) while it works on the message. A queue manager started
 * meanwhile (a reload replaces qmgr while the old agents finish their
 * jobs) sees that with qfile_busy and leaves the message alone for now,
 * as Postfix's qmgr skips a message "still being delivered".
 * (The values are those of qfile_busy's former int result.) */
enum qfile_lock_state {
    QFILE_BUSY_UNKNOWN = -1, /* cannot tell (errno; the file may be gone) */
    QFILE_BUSY_FREE = 0,
    QFILE_BUSY_HELD = 1,
};
int qfile_lock_shared(int fd);
enum qfile_lock_state qfile_busy(const char *spool, const char *id);

/* ---- updates (delivery, qmgr, bounce; O_APPEND, one write each) ---- */
/* category: bclass name, or NULL/"" for none (sent mail). */
int qfile_append_result(const char *spool, const char *id, size_t idx, int status, const char *dsn,
                        const char *relay, const char *reason, const char *category);
/* The same through a descriptor from qfile_open_job. */
int qfile_append_result_fd(int fd, size_t idx, int status, const char *dsn, const char *relay,
                           const char *reason, const char *category);
int qfile_append_record(const char *spool, const char *id, const char *name, const char *value);
/* Remove the queue file. 0 or -1 (ENOENT counts as success). */
int qfile_remove(const char *spool, const char *id);

const char *qrcpt_status_name(int status);
/* "7BIT", "8BITMIME", "BINARYMIME"; NULL for QBODY_NONE. */
const char *qbody_name(int body);
/* "NEVER" / "SUCCESS,FAILURE" <-> bits; parse returns -1 if malformed. */
int notify_parse(const char *s, int *bits);
void notify_format(int bits, buf_t *out);

#endif
