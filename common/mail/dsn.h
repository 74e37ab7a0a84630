/* dsn.h - RFC 3464 delivery status notifications (the bounce daemon's report).
 *
 * The builder is pure: it takes the original envelope (as qfile_read
 * returns it), the recipients to report and the original content, and
 * produces the complete report message (CRLF lines). Nothing from the
 * envelope or from remote replies reaches a header or a DSN field without
 * having control characters replaced (ENVID/ORCPT: xtext-encoded when not
 * printable ASCII), so a hostile peer cannot inject header lines. */
#ifndef POSTINO_DSN_H
#define POSTINO_DSN_H

#include <stddef.h>
#include "common/util/buf.h"
#include "common/mail/qfile.h"

enum dsn_kind { DSN_FAILURE = 0, DSN_DELAY, DSN_SUCCESS };

struct dsn_report {
    int kind;               /* enum dsn_kind */
    const struct qenv *env; /* the original message */
    const size_t *idx;      /* recipients to report (indexes into env->rcpt) */
    size_t nidx;
    const char *myhostname;
    const char *new_id;    /* queue id of the report (Message-Id, boundary) */
    long long now;         /* Date: */
    long long retry_until; /* Will-Retry-Until: (delay only; 0 = omit) */
    /* The original content: whole message when content_len == orig_len,
     * otherwise a prefix (only its headers are returned). */
    const char *content;
    size_t content_len;
    long long orig_len;
};

/* Build the whole report message into out (appends). */
void dsn_build(const struct dsn_report *r, buf_t *out);

/* NOTIFY bit of a kind (NOTIFY_FAILURE / NOTIFY_DELAY / NOTIFY_SUCCESS). */
int dsn_kind_notify(int kind);
/* "failure" / "delay" / "success" (the dsn_sent record's kind word). */
const char *dsn_kind_name(int kind);
/* Parse "bounce|delay|success" (the bounce request) into a kind; -1 if bad. */
int dsn_kind_from_request(const char *req);
/* Does recipient r want a report of this kind (its NOTIFY), and has it not
 * got one already (dsn_sent)? */
int dsn_rcpt_wants(const struct qrcpt *r, int kind);

/* Header-safe text: control characters (and DEL) become '?' for
 * addresses or ' ' for free text; at most max bytes (0 = no limit). */
void dsn_safe_addr(buf_t *out, const char *s, size_t max);
void dsn_safe_text(buf_t *out, const char *s, size_t max);
/* ENVID / ORCPT value: as is when printable ASCII, else xtext-encoded. */
void dsn_safe_xtext(buf_t *out, const char *s, size_t len);
/* RFC 5322 date ("Tue, 26 Nov 2024 16:34:58 +0000") of t. */
void dsn_date(buf_t *out, long long t);

#endif
