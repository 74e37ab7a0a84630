/* smtpd_dataparse.c - message content parser for DATA and BDAT (see the
 * header for the rules).
 *
 * A byte-level state machine; runs of ordinary bytes (no CR, LF or NUL)
 * take a fast path that scans a word at a time and emits the run in one
 * piece. Everything that decides a verdict looks only at the stored bytes
 * and at line ends, and every buffer kept for the header scan is capped
 * at an exact byte count, so the result cannot depend on how the input
 * was split into reads: a client choosing its packet boundaries cannot
 * hide a Received: line from the hop count or a Message-ID from the log. */
#include "smtpd/smtpd_dataparse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"

#define FLUSH_AT 65536

/* Byte states. D_DOT and D_DOTCR exist only in DATA mode, on a line that
 * began after a real CRLF: there a leading dot is a stuffing dot, and
 * "." CR LF is the end of data. */
enum { D_BOL, D_DOT, D_DOTCR, D_TEXT, D_CR };

/* A header line, classified as Postfix's cleanup does (is_header): a
 * field name of printable ASCII without ':', optional blanks, then ':'. */
enum { HL_START, HL_NAME, HL_WSP, HL_FIELD, HL_CONT, HL_OTHER };

void smtpd_dataparse_init(struct dataparse *d, const struct smtpd_dataparse_config *cf,
                          smtpd_dataparse_out_fn out, void *out_arg)
{
    memset(d, 0, sizeof(*d));
    d->cf = *cf;
    if (d->cf.line_limit < 1)
        d->cf.line_limit = 1;
    d->out = out;
    d->out_arg = out_arg;
    d->st = D_BOL;
    d->real_bol = 1;
    d->in_headers = 1;
    d->hl = HL_START;
    d->line_held = 1;
    if (d->cf.drop_header && !*d->cf.drop_header)
        d->cf.drop_header = NULL;
    if (d->cf.drop_header2 && !*d->cf.drop_header2)
        d->cf.drop_header2 = NULL;
}

void smtpd_dataparse_destroy(struct dataparse *d)
{
    buf_destroy(&d->obuf);
    buf_destroy(&d->hdr);
    buf_destroy(&d->msgid);
    free(d->message_id);
    d->message_id = NULL;
    free(d->dropped);
    d->dropped = NULL;
    free(d->dropped2);
    d->dropped2 = NULL;
    buf_destroy(&d->dropbuf);
}

/* Is the current header line held back (it may be dropped)? */
static int holding(const struct dataparse *d)
{
    return (d->cf.drop_header || d->cf.drop_header2) && d->in_headers && !d->done && d->line_held;
}

void smtpd_dataparse_flush(struct dataparse *d)
{
    size_t n = holding(d) ? d->line_start : d->obuf.len;

    if (n && d->out)
        d->out(d->out_arg, d->obuf.data, n);
    if (n == d->obuf.len) {
        buf_reset(&d->obuf);
        d->line_start = 0;
    } else {
        buf_consume(&d->obuf, n);
        d->line_start -= n;
    }
}

enum smtpd_dataparse_verdict smtpd_dataparse_verdict(const struct dataparse *d)
{
    if (d->cf.size_limit > 0 && d->size > d->cf.size_limit)
        return DP_TOO_BIG;
    if (d->hdr_size > d->cf.hdr_limit)
        return DP_HDR_TOO_BIG;
    if (d->hops > d->cf.hop_limit)
        return DP_HOPS;
    if (d->bare)
        return DP_BARE;
    if (d->nul)
        return DP_NUL;
    return DP_OK;
}

/* ---- the header scan: over stored bytes, one line at a time ---- */

static void keep_capped(buf_t *b, const void *p, size_t n)
{
    if (b->len < DP_HDR_KEEP)
        buf_append(b, p, n < DP_HDR_KEEP - b->len ? n : DP_HDR_KEEP - b->len);
}

static void msgid_finish(struct dataparse *d)
{
    if (!d->in_msgid)
        return;
    d->in_msgid = 0;
    char *v = str_trim(d->msgid.data ? d->msgid.data : (char *)"");
    if (*v && !d->message_id)
        d->message_id = xstrdup(v);
    buf_reset(&d->msgid);
}

static int name_is(const struct dataparse *d, const char *name)
{
    size_t n = strlen(name);
    return d->hl_name == n && str_nieq(d->hdr.data, name, n);
}

static int is_blank(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* Classify the line by its next byte, at offset `at` in the line. */
static void classify(struct dataparse *d, unsigned char c, size_t at)
{
    int namechar = c > ' ' && c < 127 && c != ':';
    if (d->hl == HL_START) {
        d->hl = is_blank(c) ? HL_CONT : namechar ? HL_NAME : HL_OTHER;
    } else if (d->hl == HL_NAME && namechar) {
        /* the name goes on */
    } else if (c == ':') { /* after the name, or the blanks after it */
        d->hl = HL_FIELD;
        d->hl_val = at + 1;
    } else {
        d->hl = is_blank(c) ? HL_WSP : HL_OTHER;
    }
    if (d->hl == HL_NAME)
        d->hl_name = at + 1;
}

static void header_bytes(struct dataparse *d, const unsigned char *p, size_t n)
{
    keep_capped(&d->hdr, p, n);
    for (size_t i = 0; i < n && d->hl <= HL_WSP; i++)
        classify(d, p[i], d->hl_len + i);
    d->hl_len += n;
}

/* Where the value of the field being dropped goes. */
static char **drop_slot(struct dataparse *d)
{
    return d->drop_which == DP_DROP_SECOND ? &d->dropped2 : &d->dropped;
}

/* The dropped field is complete: keep its value. */
static void drop_finish(struct dataparse *d)
{
    if (!d->collecting)
        return;
    d->collecting = 0;
    *drop_slot(d) = xstrdup(str_trim(d->dropbuf.data ? d->dropbuf.data : (char *)""));
    buf_reset(&d->dropbuf);
}

/* Which of the fields to drop this header line starts. */
static enum smtpd_dataparse_drop drop_match(const struct dataparse *d)
{
    if (!d->line_held) /* one too long to hold is kept whole */
        return DP_DROP_NONE;
    if (d->cf.drop_header && name_is(d, d->cf.drop_header))
        return DP_DROP_FIRST;
    if (d->cf.drop_header2 && name_is(d, d->cf.drop_header2))
        return DP_DROP_SECOND;
    return DP_DROP_NONE;
}

/* The line just ended: drop it when it belongs to a field to drop. */
static void drop_check(struct dataparse *d)
{
    if (!d->cf.drop_header && !d->cf.drop_header2)
        return;
    if (d->hl == HL_FIELD) {
        drop_finish(d); /* a field right after another dropped one */
        d->dropping = drop_match(d);
        if (d->dropping != DP_DROP_NONE)
            d->drop_which = d->dropping;
    } else if (d->hl != HL_CONT) {
        d->dropping = DP_DROP_NONE;
    }
    if (d->dropping == DP_DROP_NONE)
        drop_finish(d);
    else if (d->hl == HL_FIELD && !*drop_slot(d) && !d->collecting && d->hl_val <= d->hdr.len) {
        d->collecting = 1; /* the first such field's value, unfolded */
        keep_capped(&d->dropbuf, d->hdr.data + d->hl_val, d->hdr.len - d->hl_val);
    } else if (d->hl == HL_CONT && d->collecting) {
        keep_capped(&d->dropbuf, d->hdr.data, d->hdr.len);
    }
    if (d->dropping != DP_DROP_NONE && d->line_held) {
        long long n = (long long)(d->obuf.len - d->line_start);
        buf_truncate(&d->obuf, d->line_start);
        d->size -= n;
        d->hdr_size -= n;
    }
    d->line_start = d->obuf.len;
    d->line_held = 1;
}

static void header_line_done(struct dataparse *d)
{
    drop_check(d);
    if (d->hl == HL_START) { /* empty line: the body follows */
        msgid_finish(d);
        d->in_headers = 0;
    } else if (d->hl == HL_CONT) {
        if (d->in_msgid)
            keep_capped(&d->msgid, d->hdr.data, d->hdr.len);
    } else {
        msgid_finish(d);
        if (d->hl != HL_FIELD) {
            d->in_headers = 0; /* not a header line: the body starts here */
        } else if (name_is(d, "Received") || name_is(d, "Delivered-To")) {
            d->hops++; /* as Postfix cleanup counts hops: a loop ends here */
        } else if (name_is(d, "Message-ID")) {
            d->in_msgid = 1;
            if (d->hl_val < d->hdr.len)
                keep_capped(&d->msgid, d->hdr.data + d->hl_val, d->hdr.len - d->hl_val);
        }
    }
    buf_reset(&d->hdr);
    d->hl = HL_START;
    d->hl_len = d->hl_name = d->hl_val = 0;
}

/* ---- content output ---- */

static void emit(struct dataparse *d, const void *p, size_t n)
{
    d->size += (long long)n;
    if (d->in_headers)
        d->hdr_size += (long long)n;
    buf_append(&d->obuf, p, n);
    if (holding(d) && d->obuf.len - d->line_start > DP_HOLD_MAX)
        d->line_held = 0; /* too long to be ours: it goes out */
    if (d->obuf.len >= FLUSH_AT)
        smtpd_dataparse_flush(d);
}

/* Ordinary bytes of a line (no CR, LF or NUL). */
static void emit_text(struct dataparse *d, const unsigned char *p, size_t n)
{
    while (n > 0) {
        if (d->linelen >= d->cf.line_limit) {
            emit(d, "\r\n", 2); /* split an over-long line, as Postfix does */
            d->linelen = 0;
        }
        size_t room = (size_t)(d->cf.line_limit - d->linelen);
        size_t k = n < room ? n : room;
        emit(d, p, k);
        if (d->in_headers)
            header_bytes(d, p, k);
        d->linelen += (long long)k;
        p += k;
        n -= k;
    }
}

/* A line ended: real CRLF (bare == 0), or a bare LF/CR ('L'/'C'). */
static void end_line(struct dataparse *d, char bare)
{
    if (bare && d->cf.bare == DP_BARE_KEEP) {
        emit(d, bare == 'L' ? "\n" : "\r", 1);
    } else {
        if (bare && d->cf.bare == DP_BARE_REJECT && !d->bare)
            d->bare = bare;
        emit(d, "\r\n", 2);
    }
    if (d->in_headers)
        header_line_done(d);
    d->linelen = 0;
    d->real_bol = !bare;
    d->st = D_BOL;
}

/* One byte in the states where it is not ordinary text; returns 1 when it
 * completed the end-of-data mark. */
static int step(struct dataparse *d, unsigned char c)
{
    switch (d->st) {
    case D_BOL:
        if (c == '.' && d->cf.dot && d->real_bol) {
            d->st = D_DOT;
            return 0;
        }
        d->st = D_TEXT; /* after a bare CR or LF a dot is content */
        return step(d, c);
    case D_DOT:
        if (c == '\r') {
            d->st = D_DOTCR;
            return 0;
        }
        d->st = D_TEXT; /* the stuffed dot is dropped */
        return step(d, c);
    case D_DOTCR:
        if (c == '\n')
            return 1;
        end_line(d, 'C'); /* "." then a bare CR: an empty line */
        return step(d, c);
    case D_CR:
        if (c == '\n') {
            end_line(d, 0);
            return 0;
        }
        end_line(d, 'C');
        return step(d, c);
    case D_TEXT:
        if (c == '\r')
            d->st = D_CR;
        else if (c == '\n')
            end_line(d, 'L');
        else if (c == '\0')
            d->nul |= d->cf.bare == DP_BARE_REJECT; /* never stored */
        else
            emit_text(d, &c, 1);
        return 0;
    }
    return 0;
}

/* End of the run of ordinary bytes starting at p[i]: eight bytes at a
 * time while none of them is CR, LF or NUL, then byte by byte. */
#define ONES        0x0101010101010101ULL
#define HIGHS       0x8080808080808080ULL
#define HAS_ZERO(v) (((v)-ONES) & ~(v)&HIGHS)

static size_t run_end(const unsigned char *p, size_t i, size_t n)
{
    while (n - i >= 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (HAS_ZERO(w) | HAS_ZERO(w ^ (ONES * '\r')) | HAS_ZERO(w ^ (ONES * '\n')))
            break;
        i += 8;
    }
    while (i < n && p[i] != '\r' && p[i] != '\n' && p[i] != '\0')
        i++;
    return i;
}

size_t smtpd_dataparse_feed(struct dataparse *d, const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n && !d->done) {
        if (d->st == D_TEXT) { /* fast path: a run of ordinary bytes */
            size_t j = run_end(p, i, n);
            if (j > i) {
                emit_text(d, p + i, j - i);
                i = j;
                continue;
            }
        }
        if (step(d, p[i++])) {
            d->done = 1;
            msgid_finish(d);
            drop_finish(d);
            smtpd_dataparse_flush(d);
        }
    }
    return i;
}

void smtpd_dataparse_end(struct dataparse *d)
{
    if (d->done)
        return;
    if (d->st == D_CR)
        end_line(d, 'C');
    else if (d->st == D_TEXT && d->linelen > 0)
        end_line(d, 0); /* the last line gets its CRLF, as Postfix does */
    d->st = D_BOL;
    d->done = 1;
    msgid_finish(d);
    drop_finish(d);
    smtpd_dataparse_flush(d);
}
