/* feedback_parse.h - bounce and complaint reports: bytes in, fields out.
 *
 * The feedback consumer (feedback.c) receives the reports remote systems
 * send to our bounce (VERP) domains. fb_parse() turns one such message into
 * the fields it needs, with no I/O and bounded memory (every field has a
 * fixed size and is cut when longer; at most FB_RCPT_MAX recipients; MIME
 * nesting stops at FB_DEPTH_MAX and FB_PARTS_MAX parts). It understands
 *   - RFC 3464 delivery status notifications (multipart/report;
 *     report-type=delivery-status, also RFC 6533 global-delivery-status),
 *   - RFC 5965 ARF complaint reports (report-type=feedback-report),
 *   - the common non-standard bounces (Exchange/Office 365 NDR text,
 *     qmail, Exim, Postfix's text part) and plain text that quotes a
 *     status code and the original headers,
 * with quoted-printable and base64 parts, nested multiparts, CRLF or LF.
 * The returned message's headers (text/rfc822-headers, message/rfc822, or
 * quoted in the text) give the original Message-ID, To:, From: and the
 * queue id of our own Received: line ("by HOST (postino) with ESMTP id
 * QUEUEID"). */
#ifndef POSTINO_FEEDBACK_PARSE_H
#define POSTINO_FEEDBACK_PARSE_H

#include <stddef.h>

#define FB_ADDR_MAX  256  /* an address (RFC 5321 path limit) */
#define FB_FIELD_MAX 256  /* any other short field */
#define FB_TEXT_MAX  1000 /* a diagnostic text */
#define FB_RCPT_MAX  32   /* recipients kept per report */
#define FB_DEPTH_MAX 8    /* MIME nesting followed */
#define FB_PARTS_MAX 64   /* MIME parts looked at */

/* What the report was recognised as. */
enum fb_shape {
    FB_SHAPE_NONE = 0, /* unrecognised: report.why says why */
    FB_SHAPE_RFC3464,
    FB_SHAPE_ARF,
    FB_SHAPE_EXCHANGE,
    FB_SHAPE_QMAIL,
    FB_SHAPE_EXIM,
    FB_SHAPE_POSTFIX,
    FB_SHAPE_TEXT, /* plain text with a status code */
};

/* One recipient a bounce is about. Strings are "" when absent. */
struct fb_rcpt {
    char final_rcpt[FB_ADDR_MAX]; /* address only, type and <> removed */
    char orig_rcpt[FB_ADDR_MAX];
    char action[16];        /* lower case: failed, delayed, delivered, ... */
    char status[16];        /* "5.1.1" */
    char diag[FB_TEXT_MAX]; /* Diagnostic-Code text without "smtp; " */
    char remote_mta[FB_FIELD_MAX];
    int code; /* SMTP reply code found in diag, or 0 */
};

struct fb_report {
    enum fb_shape shape;
    const char *why; /* static text, set when shape is FB_SHAPE_NONE */
    struct fb_rcpt rcpt[FB_RCPT_MAX];
    size_t nrcpt;
    int rcpt_cut; /* the report named more than FB_RCPT_MAX */
    /* ARF (RFC 5965 3.1, 3.2) */
    char feedback_type[32]; /* lower case: abuse, fraud, virus, other, ... */
    char arf_mail_from[FB_ADDR_MAX];
    char arf_rcpt_to[FB_ADDR_MAX];
    char arrival_date[FB_FIELD_MAX];
    char reported_domain[FB_FIELD_MAX];
    char source_ip[64];
    /* the original message */
    char orig_message_id[FB_FIELD_MAX]; /* with its <> */
    char orig_to[FB_ADDR_MAX];          /* first address of To: */
    char orig_from[FB_ADDR_MAX];        /* first address of From: */
    char orig_queue_id[24];             /* from our Received: line */
};

/* Parse one message (header and body as received). Never fails: an
 * unrecognised report has shape FB_SHAPE_NONE and why set. */
void fb_parse(const char *data, size_t len, struct fb_report *out);
/* "rfc3464", "arf", "exchange", "qmail", "exim", "postfix", "text", "none" */
const char *fb_shape_name(enum fb_shape s);

#endif
