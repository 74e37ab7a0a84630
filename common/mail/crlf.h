/* crlf.h - encode stored message content for a BDAT chunk (RFC 3030):
 * line endings made CRLF, nothing else touched.
 *
 * BDAT content has no dot-stuffing and no end-of-data mark, but the next
 * hop must get the same bytes as over DATA (delivery/delivery_dotstuff.c), once the
 * receiver has removed the stuffing dots. So, like the DATA encoder, this
 * turns every bare CR and every bare LF into CRLF (CRLF stays), and the
 * finish adds a CRLF when the content did not end with a line ending.
 * NULs and dots pass unchanged.
 *
 * The state carries across chunks, so any split of the content gives the
 * same bytes; the output of a chunk is known only after it is encoded,
 * which is when its BDAT command can be written. Pure: no I/O, no
 * allocation. */
#ifndef POSTINO_CRLF_H
#define POSTINO_CRLF_H

#include <stddef.h>

struct crlf {
    int bol; /* the output so far is empty or ends with CRLF */
    int cr;  /* the last byte was a CR, already sent as CRLF: an LF
                       next is its own, not a new line */
};

void crlf_init(struct crlf *st);
/* Output room crlf_chunk() needs for n input bytes. */
size_t crlf_bound(size_t n);
/* Encode in[0..n) into out (room: crlf_bound()); returns bytes written. */
size_t crlf_chunk(struct crlf *st, const char *in, size_t n, char *out);
/* Output room crlf_finish() needs. */
#define CRLF_FINISH_MAX 2
/* The end: CRLF unless the output ends with one (or is empty). Returns
 * bytes written (0 or 2); the state is reset for the next message. */
size_t crlf_finish(struct crlf *st, char *out);

#endif
