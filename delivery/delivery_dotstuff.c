/* delivery_dotstuff.c - the outbound DATA encoder (see dotstuff.h for the rules).
 *
 * This is the delivery agent's hot path: content passes through here once
 * per delivery. The common case - CRLF lines that do not start with "." -
 * costs two memchr() scans per line and one memcpy() per run of such
 * lines; bytes are only looked at one by one at the start of a line that
 * begins with NUL.
 *
 * NULs at the start of a line are held back (counted, not copied) until the
 * first other byte of the line shows whether the line needs a stuffing dot
 * ("\0\0." does: a receiver that drops NULs would see "."). Stuffing a line
 * that holds only NULs would be wrong ("." + NULs is "." to that receiver),
 * hence the look-ahead rather than "stuff every line that starts with NUL". */
#include "delivery/delivery_dotstuff.h"

#include <string.h>

void dlv_dotstuff_init(struct dotstuff *st)
{
    st->bol = 1;
    st->cr = 0;
    st->nuls = 0;
}

size_t dlv_dotstuff_bound(const struct dotstuff *st, size_t n)
{
    /* Each input byte gives at most two (bare CR or LF -> CRLF; a dot
     * that starts a line gets its stuffing dot), plus the held NULs. */
    return 2 * n + st->nuls;
}

size_t dlv_dotstuff_finish_bound(const struct dotstuff *st)
{
    return st->nuls + 5;
}

static size_t find(const char *in, size_t from, size_t n, int c)
{
    const char *p = memchr(in + from, c, n - from);
    return p ? (size_t)(p - in) : n;
}

static size_t put_nuls(struct dotstuff *st, char *out)
{
    size_t k = st->nuls;
    memset(out, 0, k);
    st->nuls = 0;
    return k;
}

/* At a line start: look past NULs to the first other byte; write the
 * stuffing dot and any held NULs before the copy run resumes. Returns
 * the index of that byte, or n when the chunk ends inside the NULs. */
static size_t line_start(struct dotstuff *st, const char *in, size_t i, size_t n, size_t *run,
                         char *out, size_t *o)
{
    size_t j = i;
    while (j < n && in[j] == '\0')
        j++;
    if (j == n) { /* the line is NULs so far: hold them */
        memcpy(out + *o, in + *run, i - *run);
        *o += i - *run;
        st->nuls += n - i;
        *run = n;
        return n;
    }
    if (in[j] == '.' || st->nuls) {
        memcpy(out + *o, in + *run, i - *run);
        *o += i - *run;
        if (in[j] == '.')
            out[(*o)++] = '.';
        *o += put_nuls(st, out + *o);
        *run = i; /* this line's NULs and dot follow */
    }
    st->bol = 0;
    return j;
}

size_t dlv_dotstuff_chunk(struct dotstuff *st, const char *in, size_t n, char *out)
{
    size_t i = 0, run = 0, o = 0, cr_at, lf_at, e;

    if (n == 0)
        return 0;
    if (st->cr) {
        st->cr = 0;
        if (in[0] == '\n') /* the LF of a CRLF split by the chunk: sent */
            i = run = 1;
    }
    cr_at = find(in, i, n, '\r');
    lf_at = find(in, i, n, '\n');
    while (i < n) {
        if (st->bol && (i = line_start(st, in, i, n, &run, out, &o)) == n)
            break;
        if (cr_at < i)
            cr_at = find(in, i, n, '\r');
        if (lf_at < i)
            lf_at = find(in, i, n, '\n');
        e = cr_at < lf_at ? cr_at : lf_at;
        if (e == n)
            break;
        st->bol = 1;
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
    return o + (n - run);
}

size_t dlv_dotstuff_finish(struct dotstuff *st, char *out)
{
    size_t o = 0;
    if (st->nuls > 0 || !st->bol) {
        o = put_nuls(st, out);
        out[o++] = '\r';
        out[o++] = '\n';
    }
    memcpy(out + o, ".\r\n", 3);
    dlv_dotstuff_init(st);
    return o + 3;
}
