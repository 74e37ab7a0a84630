/* smtpd_cmdparse.h - pure parsing of SMTP server commands (RFC 5321, 1870, 3461,
 * 4954, 6152, 6531): no session, no socket, no configuration lookups.
 *
 * smtpd runs every command line through these functions; unit tests and
 * the fuzz harness call them directly. On a syntax error a function fills
 * a struct smtpd_cmd_reply with the exact reply smtpd sends (code, enhanced
 * code, text) and returns -1. Replies never contain control characters:
 * client text echoed in them is sanitised. */
#ifndef POSTINO_SMTP_CMD_H
#define POSTINO_SMTP_CMD_H

#include <stddef.h>

#include "common/util/buf.h"

/* Verbs smtpd knows, in the order of its "disconnect from" statistics. */
enum smtp_verb {
    SMTP_VERB_HELO,
    SMTP_VERB_EHLO,
    SMTP_VERB_STARTTLS,
    SMTP_VERB_AUTH,
    SMTP_VERB_MAIL,
    SMTP_VERB_RCPT,
    SMTP_VERB_DATA,
    SMTP_VERB_BDAT,
    SMTP_VERB_RSET,
    SMTP_VERB_NOOP,
    SMTP_VERB_VRFY,
    SMTP_VERB_EXPN,
    SMTP_VERB_ETRN,
    SMTP_VERB_TURN,
    SMTP_VERB_ATRN,
    SMTP_VERB_SEND,
    SMTP_VERB_SOML,
    SMTP_VERB_SAML,
    SMTP_VERB_HELP,
    SMTP_VERB_QUIT,
    SMTP_VERB_COUNT,
};

/* An error reply: "<code> <enh> <text>". code 0: none. */
struct smtpd_cmd_reply {
    int code;
    char enh[16];
    buf_t text;
};
#define SMTP_CMD_REPLY_INIT                                                                        \
    {                                                                                              \
        0, "", BUF_INIT                                                                            \
    }
void smtpd_cmd_reply_destroy(struct smtpd_cmd_reply *r);
/* The whole reply line (no CRLF) into out (replaced). */
void smtpd_cmd_reply_format(const struct smtpd_cmd_reply *r, buf_t *out);

/* Verb index (case-insensitive), or -1 when unknown. */
int smtpd_cmd_verb(const char *verb);
/* Upper-case name of a verb index ("HELO"), NULL when out of range. */
const char *smtpd_cmd_verb_name(int verb);

/* One command line of len bytes (CR/LF already removed; line[len] == 0).
 * Refuses lines longer than limit ("500 5.5.2 Error: line too long") and
 * control bytes other than TAB, NUL included ("500 5.5.2 Error: bad
 * syntax"). Otherwise splits in place at the first space: *verb is the
 * first word, *arg the rest without its leading spaces ("" when none),
 * and returns the verb index (-1: unknown; the caller replies "500 5.5.2
 * Error: command not recognized"). Returns -2 with err set on error. */
int smtpd_cmd_split(char *line, size_t len, size_t limit, char **verb, char **arg,
                    struct smtpd_cmd_reply *err);

/* What UTF-8 addresses (RFC 6531) a command may carry: none at all
 * (smtputf8_enable = no), none because MAIL FROM did not say SMTPUTF8
 * ("553 5.6.7 Must declare SMTPUTF8 to send unicode address"), or any. */
enum smtp_utf8 { SMTP_UTF8_OFF, SMTP_UTF8_UNDECLARED, SMTP_UTF8_DECLARED };

/* MAIL FROM: argument, parsed. Initialise with SMTP_MAIL_ARGS_INIT. */
struct smtp_mail_args {
    buf_t sender; /* without brackets; "" = null sender */
    int has_size;
    unsigned long long size; /* SIZE= (saturates at ULLONG_MAX) */
    int body;                /* BODY=: enum qbody (qfile.h), QBODY_NONE if not given */
    int ret;                 /* RET_NONE, RET_FULL, RET_HDRS (qfile.h) */
    char *envid;             /* decoded ENVID, printable ASCII, or NULL */
    int has_auth;            /* AUTH= given (value is not used) */
    int smtputf8;            /* SMTPUTF8 given (RFC 6531) */
    char verp[3];            /* XVERP delimiters, "" when not given */
};
#define SMTP_MAIL_ARGS_INIT                                                                        \
    {                                                                                              \
        BUF_INIT, 0, 0, 0, 0, NULL, 0, 0, ""                                                       \
    }
void smtpd_mail_args_destroy(struct smtp_mail_args *m);

/* arg: what follows "MAIL " ("FROM:<a@b> SIZE=10"). size_limit: the
 * message_size_limit (0: none). utf8_enable: smtputf8_enable (without it
 * SMTPUTF8 is an unsupported option). A UTF-8 sender needs SMTPUTF8.
 * Returns 0, or -1 with err set. m is reset first; after -1 its contents
 * are unspecified (free it). BODY=BINARYMIME is refused: not offered. */
int smtpd_cmd_mail(const char *arg, long long size_limit, int utf8_enable, struct smtp_mail_args *m,
                   struct smtpd_cmd_reply *err);

/* Postfix's XVERP on MAIL FROM, for a client allowed to use it: "XVERP"
 * takes the default delimiters, "XVERP=xy" two characters of filter
 * (else "501 5.5.4 Error: XVERP needs two characters from FILTER"); with
 * the null sender "503 5.5.4 Error: XVERP requires non-null sender".
 * Other clients get "555 5.5.4 Unsupported option: XVERP". */
struct smtp_xverp {
    const char *defaults; /* verp_delimiters */
    const char *filter;   /* verp_delimiter_filter */
};
/* smtpd_cmd_mail, with XVERP allowed when xverp is not NULL (m->verp). */
int smtpd_cmd_mail_xverp(const char *arg, long long size_limit, int utf8_enable,
                         const struct smtp_xverp *xverp, struct smtp_mail_args *m,
                         struct smtpd_cmd_reply *err);

/* RCPT TO: argument, parsed. Initialise with SMTP_RCPT_ARGS_INIT. */
struct smtp_rcpt_args {
    buf_t addr;         /* never empty; bare "postmaster" qualified */
    int source_routed;  /* "<@a,@b:u@d>" form (route dropped) */
    const char *params; /* into arg: the ESMTP parameters */
    int notify;         /* NOTIFY_* bits (qfile.h), 0 = not given */
    char *orcpt;        /* "addr-type;xtext" as given, or NULL */
};
#define SMTP_RCPT_ARGS_INIT                                                                        \
    {                                                                                              \
        BUF_INIT, 0, NULL, 0, NULL                                                                 \
    }
void smtpd_rcpt_args_destroy(struct smtp_rcpt_args *r);

/* The address part of arg (what follows "RCPT "): "TO:", the path, and a
 * bare "postmaster" qualified with @origin (smtpd passes $myorigin). A
 * UTF-8 address needs utf8 == SMTP_UTF8_DECLARED (553 5.6.7 otherwise).
 * Sets addr, source_routed and params. Returns 0, or -1 with err set. */
int smtpd_cmd_rcpt_addr(const char *arg, const char *origin, int utf8, struct smtp_rcpt_args *r,
                        struct smtpd_cmd_reply *err);
/* The ESMTP parameters (r->params): NOTIFY, ORCPT. 0, or -1 with err. */
int smtpd_cmd_rcpt_params(struct smtp_rcpt_args *r, struct smtpd_cmd_reply *err);
/* Both of the above. */
int smtpd_cmd_rcpt(const char *arg, const char *origin, int utf8, struct smtp_rcpt_args *r,
                   struct smtpd_cmd_reply *err);

#endif
