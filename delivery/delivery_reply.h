/* delivery_reply.h - incremental parser for SMTP server replies (RFC 5321 4.2).
 *
 * The SMTP client feeds whatever bytes arrived; the parser returns one
 * complete (possibly multi-line) reply at a time. It is written for
 * hostile servers: lines are limited to SMTP_REPLY_LINE_MAX bytes, a reply
 * to SMTP_REPLY_LINES_MAX lines, continuation lines must repeat the code;
 * NUL and other control bytes (a lone CR, ESC) become spaces, and a bare
 * LF ends a line like CRLF does. Any
 * violation is a protocol error: the caller gives up on the connection. */
#ifndef POSTINO_SMTP_REPLY_H
#define POSTINO_SMTP_REPLY_H

#include <stddef.h>
#include "common/util/buf.h"

#define SMTP_REPLY_LINE_MAX  2048
#define SMTP_REPLY_LINES_MAX 100

struct smtp_reply {
    int code;     /* 3-digit reply code */
    char enh[16]; /* enhanced status code "5.1.1" from the first line, or "" */
    buf_t text;   /* all lines, CR/LF removed, joined with one space:
                        "250-first 250 2.0.0 last" (Postfix log style) */
    buf_t lines;  /* the lines after the code and separator, joined with
                        '\n' (for EHLO keyword parsing) */
    int nlines;
};

struct smtp_rparser {
    buf_t line; /* current partial line */
    struct smtp_reply reply;
    int in_reply;    /* continuation lines seen, final line pending */
    const char *err; /* static reason after SMTP_RP_ERROR */
};

/* What dlv_rparser_feed found. */
enum dlv_rparser_result {
    SMTP_RP_MORE,  /* all bytes consumed, more are needed */
    SMTP_RP_REPLY, /* a complete reply is in p->reply (*used bytes consumed;
                        feed the rest again after handling it) */
    SMTP_RP_ERROR, /* protocol error: p->err says why; the parser must not
                        be used any more */
};

void dlv_rparser_init(struct smtp_rparser *p);
void dlv_rparser_destroy(struct smtp_rparser *p);
/* Consume bytes from data[0..len). */
enum dlv_rparser_result dlv_rparser_feed(struct smtp_rparser *p, const char *data, size_t len,
                                         size_t *used);
/* Is a reply partly received (useful to report "lost connection" vs
 * "missing final line")? */
int dlv_rparser_pending(const struct smtp_rparser *p);

/* The DSN code for a reply: the enhanced code when present, otherwise
 * "2.0.0"/"4.0.0"/"5.0.0" from the reply class. out >= 16 bytes. */
void dlv_reply_dsn(const struct smtp_reply *r, char *out, size_t size);
/* How a reply answers a command whose only success codes are ok[]
 * (0-terminated), RFC 5321 4.3.2: OK; TEMP (4xx) and PERM (5xx) failures;
 * PROTO for any other 1xx/2xx/3xx - a server that says "250" where "354"
 * is due has not done what the command asked, and must never be taken at
 * its word. */
enum smtp_verdict { SMTP_V_OK, SMTP_V_TEMP, SMTP_V_PERM, SMTP_V_PROTO };
enum smtp_verdict dlv_reply_verdict(int code, const short *ok);
/* The success codes as text for log lines: "250", "250 or 251". */
void dlv_reply_ok_text(const short *ok, buf_t *out);

/* Does s start with an enhanced status code of class cls ('2','4','5')?
 * Returns its length (without the following space) or 0. */
size_t dlv_reply_enh_code_len(const char *s, int cls);

#endif
