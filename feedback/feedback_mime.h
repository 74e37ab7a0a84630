/* feedback_mime.h - the MIME and text helpers of the report parser (internal
 * to feedback/: feedback_parse.c and feedback_text.c use them).
 *
 * Everything works on slices of the input (no copies but for decoded part
 * bodies and unfolded header values, each bounded by its input), accepts
 * CRLF and bare LF line ends, and never reads past the slice it is given. */
#ifndef POSTINO_FEEDBACK_MIME_H
#define POSTINO_FEEDBACK_MIME_H

#include <stddef.h>

#include "common/util/buf.h"

#define FB_VALUE_MAX 4096 /* unfolded header value bytes kept */

/* One line of s from *off (without its LF and one CR before it); 0 at end. */
int fb_line_next(const char *s, size_t len, size_t *off, const char **line, size_t *n);

/* A header block: fn gets each field's name and its unfolded value (both
 * NUL-terminated). The block ends at an empty line, or at a line that is
 * neither a field nor a continuation. Returns the offset of the body. */
typedef void (*fb_header_fn)(const char *name, const char *value, void *arg);
size_t fb_headers(const char *s, size_t len, fb_header_fn fn, void *arg);

struct fb_ctype {
    char type[64];        /* "multipart/report", lower case; "" when absent */
    char boundary[128];   /* multipart boundary */
    char report_type[64]; /* report-type parameter, lower case */
};
void fb_ctype_parse(const char *value, struct fb_ctype *ct);

enum fb_cte { FB_CTE_IDENTITY = 0, FB_CTE_QP, FB_CTE_BASE64 };
enum fb_cte fb_cte_parse(const char *value);
/* Decode a part body into out (appended). Lenient, as mail readers are:
 * bad base64 characters and broken =XX escapes are skipped or kept. */
void fb_decode(enum fb_cte cte, const char *p, size_t n, buf_t *out);

/* The body parts of a multipart: fn(part, len, arg) for each, in order,
 * until it returns nonzero or max parts were given. The preamble and
 * epilogue are skipped; a missing close delimiter ends at the end. */
typedef int (*fb_part_fn)(const char *p, size_t n, void *arg);
void fb_multipart(const char *body, size_t len, const char *boundary, size_t max, fb_part_fn fn,
                  void *arg);

/* ---- small text helpers ---- */
/* Copy n bytes (or up to NUL) into dst of size, trimmed, control
 * characters as spaces, cut to size - 1. */
void fb_copy(char *dst, size_t size, const char *src, size_t n);
/* The address of a header or DSN value: "<a@b>", "Name <a@b>", "a@b",
 * "rfc822; a@b" (the type is the caller's to strip). "" when none. */
void fb_addr(const char *value, char *dst, size_t size);
/* The value after "type;" of a DSN field ("smtp; 550 ..." -> "550 ..."). */
const char *fb_after_type(const char *value);
/* First RFC 3463 enhanced status code "C.S.D" in text (class 2, 4 or 5)
 * into out (size >= 16); 0 when there is none. */
int fb_find_status(const char *text, char *out);
/* First SMTP reply code (2xx/4xx/5xx followed by a space, '-' or end) in
 * text standing alone as a word; 0 when none. */
int fb_find_code(const char *text);
/* Case-insensitive substring search; NULL when absent. */
const char *fb_strcasestr(const char *hay, const char *needle);
/* The queue id of a Received: value "... id QUEUEID ..." when it has the
 * shape of ours (17 hex digits); 1 found. */
int fb_received_qid(const char *value, char *out, size_t size);

#endif
