/* mime7.h - 8-bit MIME content made 7 bit for a server that does not
 * offer 8BITMIME (RFC 6152 section 3), with quoted-printable (RFC 2045).
 *
 * Two passes over the same content, each fed in pieces of any size (the
 * result never depends on how the content is split) with bounded memory:
 *
 *   m = mime7_new();                       scan: parse the MIME structure,
 *   mime7_feed(m, piece, n, NULL) ...      find 8-bit headers and content,
 *   mime7_end(m, NULL);                    plan what each part needs
 *   if (mime7_result(m) & MIME7_BODY8 and not MIME7_STUCK)
 *       mime7_convert_begin(m);            convert: the same parse again,
 *       mime7_feed(m, piece, n, out) ...   writing the 7-bit form to out
 *       mime7_end(m, out);                 (appends; the caller drains it)
 *
 * The conversion: a leaf part whose body has 8-bit bytes is re-encoded as
 * quoted-printable (76-character lines, CRLF kept as hard line breaks) and
 * its Content-Transfer-Encoding header becomes "quoted-printable" (added
 * when missing, with "MIME-Version: 1.0" for a message that had none and
 * "Content-Type: text/plain; charset=unknown-8bit" (RFC 1428) for a part
 * that had none); "8bit" and "binary" labels elsewhere become "7bit".
 * Everything else is copied byte for byte. convert_begin may be called
 * again to produce the same output once more (another server). */
#ifndef POSTINO_MIME7BIT_H
#define POSTINO_MIME7BIT_H

#include <stddef.h>

#include "common/util/buf.h"

/* What the scan found (bits of mime7_result). */
#define MIME7_HDR8  0x1 /* 8-bit bytes in a header (message or MIME part) */
#define MIME7_BODY8 0x2 /* 8-bit bytes outside the headers */
#define MIME7_STUCK 0x4 /* 8-bit content that cannot be converted (why) */

struct mime7;

struct mime7 *mime7_new(void);
void mime7_free(struct mime7 *m);
/* Feed the next piece of the content (CRLF lines, as queued). out: NULL
 * while scanning, the output buffer while converting. */
void mime7_feed(struct mime7 *m, const void *data, size_t len, buf_t *out);
/* End of the content: finishes the pass (a last line without LF, open
 * parts). */
void mime7_end(struct mime7 *m, buf_t *out);
int mime7_result(const struct mime7 *m);
/* Why the content cannot be converted (with MIME7_STUCK), else NULL. */
const char *mime7_why(const struct mime7 *m);
/* After a complete scan: start a conversion pass from the beginning. */
void mime7_convert_begin(struct mime7 *m);

#endif
