/* delivery_dotstuff.h - encode stored message content for SMTP DATA (RFC 5321
 * 4.5.2), safe against every end-of-data a receiver might recognise.
 *
 * The queue file may hold bare CR and bare LF (smtpd_forbid_bare_newline
 * = no) and NUL bytes. What we send must never contain a sequence that a
 * lenient receiver could take for the end of data - <LF>.<LF>, <CR>.<CR>,
 * <LF>.<CR><LF>, <CR><LF>.<CR>, nor one of those after it strips NULs - other
 * than our own final <CR><LF>.<CR><LF>. So the encoder
 *   - turns every bare CR and every bare LF into CRLF (CRLF stays);
 *   - adds a "." before every line whose first byte other than NUL is "."
 *     (a literal receiver removes exactly that dot; one that drops NULs
 *     sees "..": never a lone dot);
 * and the finish adds CRLF (only when the content did not end with a line
 * ending) and ".\r\n". Every CR we emit is followed by LF and every LF
 * follows a CR, and a "." after CRLF is always followed by another ".",
 * or is preceded by a stuffing dot.
 *
 * The state carries across chunks, so any split of the content gives the
 * same bytes. Pure: no I/O, no allocation. */
#ifndef POSTINO_DOTSTUFF_H
#define POSTINO_DOTSTUFF_H

#include <stddef.h>

struct dotstuff {
    int bol;     /* nothing but held NULs seen of the current line */
    int cr;      /* the last byte was a CR, already sent as CRLF: an LF
                       next is its own, not a new line */
    size_t nuls; /* NULs held at the start of the line (see dotstuff.c) */
};

void dlv_dotstuff_init(struct dotstuff *st);
/* Output room dlv_dotstuff_chunk() needs for n input bytes. */
size_t dlv_dotstuff_bound(const struct dotstuff *st, size_t n);
/* Encode in[0..n) into out (room: dlv_dotstuff_bound()); returns bytes written. */
size_t dlv_dotstuff_chunk(struct dotstuff *st, const char *in, size_t n, char *out);
/* Output room dlv_dotstuff_finish() needs. */
size_t dlv_dotstuff_finish_bound(const struct dotstuff *st);
/* The end: any held NULs, CRLF unless at a line start, ".\r\n". Returns
 * bytes written; the state is reset for the next message. */
size_t dlv_dotstuff_finish(struct dotstuff *st, char *out);

#endif
