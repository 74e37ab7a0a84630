/* qp.h - a streaming quoted-printable encoder (RFC 2045 section 6.7) for
 * text in CRLF lines: CRLF (and a bare LF) stays a hard line break, output
 * lines have at most 76 characters ("=" soft breaks), a space or tab before
 * a line break is encoded, a bare CR is data (=0D). The output does not
 * depend on how the input is split. */
#ifndef POSTINO_QP_H
#define POSTINO_QP_H

#include <stddef.h>

#include "common/util/buf.h"

struct qp_enc {
    size_t col;  /* characters on the current output line */
    int pend_ws; /* a space or tab waiting for the next byte */
    int pend_cr; /* a CR waiting: line break or data? */
};

void qp_enc_init(struct qp_enc *q);
/* Encode n more bytes, appending to out. */
void qp_enc_feed(struct qp_enc *q, const char *p, size_t n, buf_t *out);
/* End of the text: settle what waits; a last line without a line break
 * ends with a soft break, so decoding gives back exactly the input. */
void qp_enc_end(struct qp_enc *q, buf_t *out);

#endif
