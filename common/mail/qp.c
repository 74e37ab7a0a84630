/* qp.c - streaming quoted-printable encoder (RFC 2045 section 6.7), used
 * to make 8-bit text parts 7 bit (mime7bit.c). A space, a tab or a CR is
 * held back one byte: whether it must be encoded depends on what follows. */
#include "common/mail/qp.h"

#define QP_TEXT 75 /* characters before a soft break's "=" */

void qp_enc_init(struct qp_enc *q)
{
    q->col = 0;
    q->pend_ws = q->pend_cr = 0;
}

/* Room for k more characters on this line, else a soft line break. */
static void room(struct qp_enc *q, size_t k, buf_t *out)
{
    if (q->col + k > QP_TEXT) {
        buf_append(out, "=\r\n", 3);
        q->col = 0;
    }
}

static void lit(struct qp_enc *q, int c, buf_t *out)
{
    room(q, 1, out);
    buf_putc(out, c);
    q->col++;
}

static void hex(struct qp_enc *q, int c, buf_t *out)
{
    static const char hx[] = "0123456789ABCDEF";
    char t[3] = { '=', hx[(c >> 4) & 15], hx[c & 15] };
    room(q, 3, out);
    buf_append(out, t, 3);
    q->col += 3;
}

/* The waiting space or tab: encoded before a line break (rule 3),
 * literal elsewhere. */
static void settle_ws(struct qp_enc *q, int at_eol, buf_t *out)
{
    if (!q->pend_ws)
        return;
    if (at_eol)
        hex(q, q->pend_ws, out);
    else
        lit(q, q->pend_ws, out);
    q->pend_ws = 0;
}

static void newline(struct qp_enc *q, buf_t *out)
{
    settle_ws(q, 1, out);
    buf_append(out, "\r\n", 2);
    q->col = 0;
}

static void byte(struct qp_enc *q, unsigned char c, buf_t *out)
{
    if (q->pend_cr) {
        q->pend_cr = 0;
        if (c == '\n') {
            newline(q, out);
            return;
        }
        settle_ws(q, 0, out);
        hex(q, '\r', out);
    }
    if (c == '\r') {
        q->pend_cr = 1;
    } else if (c == '\n') {
        newline(q, out);
    } else if (c == ' ' || c == '\t') {
        settle_ws(q, 0, out);
        q->pend_ws = c;
    } else {
        settle_ws(q, 0, out);
        if (c >= 33 && c <= 126 && c != '=')
            lit(q, c, out);
        else
            hex(q, c, out);
    }
}

void qp_enc_feed(struct qp_enc *q, const char *p, size_t n, buf_t *out)
{
    size_t i;
    buf_reserve(out, n + n / 2);
    for (i = 0; i < n; i++)
        byte(q, (unsigned char)p[i], out);
}

void qp_enc_end(struct qp_enc *q, buf_t *out)
{
    if (q->pend_cr) {
        settle_ws(q, 0, out);
        hex(q, '\r', out);
        q->pend_cr = 0;
    }
    settle_ws(q, 1, out);
    if (q->col > 0) {
        buf_append(out, "=\r\n", 3);
        q->col = 0;
    }
}
