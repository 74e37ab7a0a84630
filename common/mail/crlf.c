/* crlf.c - line endings made CRLF as delivery sends them (see crlf.h).
 *
 * The delivery agent's hot path for receivers that offer CHUNKING: the
 * common case - content that smtpd already stored with CRLF line ends -
 * costs two memchr() scans and one memcpy() per chunk; only a bare CR or
 * bare LF interrupts the copy run. */
#include "common/mail/crlf.h"

#include <string.h>

void crlf_init(struct crlf *st)
{
    st->bol = 1;
    st->cr = 0;
}

size_t crlf_bound(size_t n)
{
    return 2 * n; /* every byte a bare CR or LF */
}

static size_t find(const char *in, size_t from, size_t n, int c)
{
    const char *p = memchr(in + from, c, n - from);
    return p ? (size_t)(p - in) : n;
}

size_t crlf_chunk(struct crlf *st, const char *in, size_t n, char *out)
{
    size_t i = 0, run = 0, o = 0, cr_at, lf_at, e;

    if (n == 0)
        return 0;
    if (st->cr && in[0] == '\n')
        i = run = 1; /* the LF of a CRLF split by the chunk: sent */
    st->cr = 0;
    cr_at = find(in, i, n, '\r');
    lf_at = find(in, i, n, '\n');
    for (;;) {
        if (cr_at < i)
            cr_at = find(in, i, n, '\r');
        if (lf_at < i)
            lf_at = find(in, i, n, '\n');
        e = cr_at < lf_at ? cr_at : lf_at;
        if (e == n)
            break;
        if (in[e] == '\r' && e + 1 < n && in[e + 1] == '\n') {
            i = e + 2; /* CRLF: stays in the copy run */
            continue;
        }
        /* A bare LF, a bare CR, or a CR that ends the chunk: CRLF. */
        memcpy(out + o, in + run, e - run);
        o += e - run;
        out[o++] = '\r';
        out[o++] = '\n';
        i = run = e + 1;
        if (in[e] == '\r' && e + 1 == n)
            st->cr = 1;
    }
    memcpy(out + o, in + run, n - run);
    o += n - run;
    if (o > 0)
        st->bol = out[o - 1] == '\n';
    return o;
}

size_t crlf_finish(struct crlf *st, char *out)
{
    int bol = st->bol;
    crlf_init(st);
    if (bol)
        return 0;
    out[0] = '\r';
    out[1] = '\n';
    return 2;
}
