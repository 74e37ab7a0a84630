/* cli_sendmail.h - the sendmail command's parts (the postino binary run as
 * "sendmail"): options and modes (cli_sendmail.c), the message read from
 * stdin (cli_sendmail_msg.c) and the SMTP client on the local submission
 * socket public/submit (cli_sendmail_smtp.c). */
#ifndef POSTINO_CLI_SENDMAIL_H
#define POSTINO_CLI_SENDMAIL_H

#include <stddef.h>
#include <stdio.h>

#include "common/util/buf.h"

/* sysexits.h values, the sendmail interface cron and PHP read. */
enum sm_exit {
    SM_EX_OK = 0,
    SM_EX_USAGE = 64,       /* bad command line */
    SM_EX_DATAERR = 65,     /* the message or sender was refused */
    SM_EX_NOINPUT = 66,     /* could not read the message */
    SM_EX_NOUSER = 67,      /* a recipient was refused */
    SM_EX_UNAVAILABLE = 69, /* the mail system is not there */
    SM_EX_SOFTWARE = 70,    /* the server said something we do not follow */
    SM_EX_OSERR = 71,       /* a system call failed */
    SM_EX_IOERR = 74,       /* the connection broke */
    SM_EX_TEMPFAIL = 75,    /* try again later (4xx) */
    SM_EX_CONFIG = 78,      /* configuration error */
};

/* "sendmail: <message>\n" on stderr. */
void sm_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- cli_sendmail_msg.c: the message on stdin ---- */

/* What goes with the header section. */
struct sm_head_opts {
    const char *sender;   /* envelope sender ("" null) */
    const char *fullname; /* for an added From: (NULL: none) */
    const char *origin;   /* $myorigin, qualifies bare recipients */
    const char *hostname; /* $myhostname, for an added Message-ID */
    int extract;          /* -t: recipients from To/Cc/Bcc */
    int dot_ends;         /* no -i: a lone "." line ends the input */
    size_t limit;         /* header section size limit */
};

struct sm_msg {
    buf_t head;   /* header section, CRLF lines, Bcc: removed, fields added */
    buf_t first;  /* the body's first line already read (raw, LF kept) */
    char **rcpts; /* -t: addresses from To/Cc/Bcc (NULL-terminated) */
    size_t nrcpt;
    int eof; /* the input ended within the header section */
};

/* Read the header section (and the line after it). 0, or an sm_exit
 * after sm_err. */
int sm_msg_head(FILE *in, struct sm_msg *m, const struct sm_head_opts *o);
/* Stream the rest: CRLF line ends, dot-stuffed, without the end mark.
 * out(arg, p, n) returns 0 or -1 (a write failed: stop). 0, -1 (out
 * failed) or SM_EX_NOINPUT (stdin failed, said why). */
typedef int (*sm_out_fn)(void *arg, const char *p, size_t n);
int sm_msg_body(FILE *in, struct sm_msg *m, int dot_ends, sm_out_fn out, void *arg);
void sm_msg_destroy(struct sm_msg *m);
/* Addresses of one address-list header value (RFC 5322 3.4: display
 * names, comments, groups), appended to *v (count *n); bare local parts
 * get @origin. */
void sm_msg_addrs(const char *value, const char *origin, char ***v, size_t *n);

/* ---- cli_sendmail_smtp.c: SMTP on public/submit ---- */

struct sm_conn {
    int fd;
    int broken; /* I/O failed or DATA was cut short: close, no QUIT */
    buf_t in;   /* bytes read, not yet a whole reply */
    buf_t out;  /* bytes to send */
};

/* Connect to the socket; 0, or an sm_exit after sm_err. */
int sm_conn_open(struct sm_conn *c, const char *path);
void sm_conn_close(struct sm_conn *c);
/* Buffer bytes for the server (sent by sm_conn_flush or when plenty);
 * 0 or -1 (said why). Matches sm_out_fn. */
int sm_conn_write(void *c, const char *p, size_t n);
int sm_conn_flush(struct sm_conn *c);
/* Send a command (if fmt) and read the reply: its code, its text (all
 * lines) in *text; -1 when the connection broke (said why). */
int sm_conn_cmd(struct sm_conn *c, buf_t *text, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* -bs: copy stdin to the socket and the socket to stdout until the
 * server closes. An sm_exit. */
int sm_conn_relay(struct sm_conn *c);

#endif
