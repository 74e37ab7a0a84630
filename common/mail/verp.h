/* verp.h - VERP return paths (Variable Envelope Return Paths, as Postfix's
 * XVERP and qmail do them).
 *
 * A message sent with VERP goes out with one envelope sender per
 * recipient: the return address's local part, the first delimiter, the
 * recipient's local part, the second delimiter, the recipient's domain, then
 * "@" and the return address's domain. With the return address
 * bounces@bounce.example.com and delimiters "+=", the delivery to
 * alice@example.org has MAIL FROM:<bounces+alice=example.org@bounce.example.com>,
 * so an asynchronous bounce names the recipient it is about.
 *
 * smtpd decides (XVERP on MAIL FROM, sender_verp_maps) and stores the
 * delimiters and the return address in the queue file (qfile.h); delivery
 * builds each MAIL FROM with verp_encode. */
#ifndef POSTINO_VERP_H
#define POSTINO_VERP_H

#include "common/util/buf.h"

/* Exactly two characters, each one of filter (verp_delimiter_filter,
 * Postfix's "-=+")? */
int verp_delims_valid(const char *delims, const char *filter);

/* The envelope sender for the delivery of one recipient (appended to out):
 * ret is the return address ("local@domain"), delims two characters. The
 * local parts are taken unquoted; the result's local part is quoted when
 * it is not a dot-atom (a recipient "a b"@example.org gives
 * "bounces+a b=example.org"@bounce.example.com). UTF-8 local parts stay
 * as they are (RFC 6531). */
void verp_encode(const char *ret, const char *rcpt, const char *delims, buf_t *out);

#endif
