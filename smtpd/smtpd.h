/* smtpd.h - the SMTP server daemon: shared state between its parts.
 *
 * One process serves many sessions on one libevent loop. Each session is a
 * bufferevent plus a small state machine (command lines, or DATA content
 * streamed into the queue file). Parts:
 *   smtpd.c          main, accept, session list and limits
 *   smtpd_session.c  per-connection I/O, pipelined command loop, replies
 *   smtpd_cmd.c      the command table and HELO..HELP handlers
 *   smtpd_param.c    MAIL FROM / RCPT TO parameters (SIZE, DSN ...)
 *   smtpd_data.c     DATA: end-of-data detection, dot-unstuffing, queue file
 *   smtpd_check.c    relay control (mynetworks, mydestination, relay_domains)
 *   smtpd_notify.c   "request=new" notifications to qmgr */
#ifndef POSTINO_SMTPD_H
#define POSTINO_SMTPD_H

#include <stddef.h>

#include "common/buf.h"
#include "common/qfile.h"

struct server;
struct bufferevent;
struct event;
struct smtpd_data;

/* Where the input of a session goes next. */
enum smtpd_state {
    SS_CMD,     /* command lines */
    SS_SKIP,    /* discarding the rest of an over-long command line */
    SS_DATA,    /* message content until CRLF.CRLF */
};

#define SMTPD_CMD_MAX 32 /* command table entries (statistics slots) */

/* Per-process state. */
struct smtpd {
    struct server *srv;
    struct smtpd_session *sessions; /* doubly linked list */
    size_t nsessions;
};

struct smtpd_session {
    struct smtpd *d;
    struct smtpd_session *prev, *next;
    struct bufferevent *bev;
    char *name;             /* client host name ("unknown": no rDNS yet) */
    char *addr;             /* client address text */
    int addr_v6;
    char *helo;             /* HELO/EHLO argument, NULL before */
    int esmtp;              /* EHLO was used */
    int tls;                /* STARTTLS done (not yet implemented) */
    enum smtpd_state state;
    int closing;            /* reply queued, close once output is flushed */
    int paused;             /* too much unread output: stop processing */
    int sleeping;           /* past smtpd_soft_error_limit: reply delayed */
    struct event *sleep_ev;
    int quit;               /* QUIT seen */
    int errors;             /* 4xx/5xx replies so far */
    int last_code;          /* code of the last reply */
    const char *last_cmd;   /* for "lost connection after X" */
    /* The mail transaction. */
    int have_mail;
    struct qenv env;
    struct smtpd_data *data;
    /* Statistics for the "disconnect from" line. */
    unsigned cmd_ok[SMTPD_CMD_MAX + 1], cmd_total[SMTPD_CMD_MAX + 1];
};

/* smtpd.c */
void smtpd_session_unlink(struct smtpd_session *s);

/* smtpd_session.c */
struct smtpd_session *smtpd_session_new(struct smtpd *d, int fd);
void smtpd_session_free(struct smtpd_session *s);
void smtpd_reply(struct smtpd_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* One line of a multi-line reply ("250-..."): not counted as an error. */
void smtpd_reply_line(struct smtpd_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Queue a reply then close once it is sent. */
void smtpd_close_after(struct smtpd_session *s);
/* Drop the mail transaction (RSET, new EHLO, after DATA). */
void smtpd_txn_reset(struct smtpd_session *s);
/* "NAME[ADDR]" for logs. */
const char *smtpd_client(const struct smtpd_session *s);
const char *smtpd_hostname(void);

/* smtpd_cmd.c */
typedef void (*smtpd_cmd_fn)(struct smtpd_session *s, char *arg);
struct smtpd_cmd {
    const char *name;
    smtpd_cmd_fn fn;
};
extern const struct smtpd_cmd smtpd_cmd_table[];
/* Index into smtpd_cmd_table, or -1 when the verb is unknown. */
int smtpd_cmd_lookup(const char *verb);

/* smtpd_param.c: parse ESMTP parameters into the transaction. Each returns
 * 0, or -1 after sending the error reply. */
int smtpd_mail_params(struct smtpd_session *s, const char *params);
int smtpd_rcpt_params(struct smtpd_session *s, const char *params, char **orcpt, int *notify);

/* smtpd_data.c */
void smtpd_data_begin(struct smtpd_session *s);
/* Feed content bytes; returns bytes consumed. When the end of data was
 * seen, finishes the message (reply sent) and sets state back to SS_CMD. */
size_t smtpd_data_feed(struct smtpd_session *s, const unsigned char *p, size_t n);
/* Client went away or session ends during DATA: remove the partial file. */
void smtpd_data_abort(struct smtpd_session *s);

/* smtpd_check.c */
void smtpd_check_init(void);
int smtpd_check_mynetworks(const char *addr);
/* Client listed in smtpd_forbid_bare_newline_exclusions? */
int smtpd_check_bare_exempt(const char *addr);
/* Relay control for one recipient. 0 = accept; otherwise the full reply
 * text ("554 5.7.1 <r>: Relay access denied") is in reply. */
int smtpd_check_rcpt(struct smtpd_session *s, const char *rcpt, int source_routed, buf_t *reply);

/* smtpd_notify.c */
void smtpd_notify_init(struct server *srv);
void smtpd_notify_new(const char *queue_id);

#endif
