/* smtpd_dataparse.h - the message content parser shared by DATA and BDAT.
 *
 * Bytes in, content out, verdicts kept: no session, socket or queue file,
 * so unit tests and a fuzz harness drive it exactly as smtpd does. The
 * output and every verdict depend only on the bytes, never on how they
 * were split into reads (tests/unit/test_smtpd_dataparse.c and
 * fuzz/fuzz_smtpd_data.c check this).
 *
 * DATA mode: the end of data is ONLY the raw sequence CR LF "." CR LF
 * (or "." CR LF as the very first line); a leading dot is removed only on
 * a line that began after a real CRLF (or the first line). BDAT mode: no
 * dot handling at all; the caller says where the content ends.
 * Both modes: a bare LF or bare CR ends a line (normalised to CRLF, kept,
 * or refused per smtpd_forbid_bare_newline); NUL bytes are refused in
 * "reject" mode and stripped otherwise; lines longer than line_length_limit
 * are split with CRLF; the header section is scanned for Received: and
 * Delivered-To: (hops), its size, and the Message-ID.
 * Two header fields may be named to be dropped (drop_header: the source
 * pool header; drop_header2: the priority header; issue #9): their lines,
 * continuations included, never reach out(), and the first value of each
 * is kept. A header line is held back
 * until its end for this; one longer than DP_HOLD_MAX bytes goes out
 * whatever its name (a pool name is a word). */
#ifndef POSTINO_SMTPD_DATAPARSE_H
#define POSTINO_SMTPD_DATAPARSE_H

#include <stddef.h>

#include "common/util/buf.h"

enum smtpd_dataparse_bare { DP_BARE_NORMALIZE, DP_BARE_REJECT, DP_BARE_KEEP };

struct smtpd_dataparse_config {
    int dot;                        /* 1: DATA; 0: BDAT (binary octets, no dots) */
    enum smtpd_dataparse_bare bare; /* smtpd_forbid_bare_newline (after exclusions) */
    long long line_limit;           /* line_length_limit */
    long long size_limit;           /* message_size_limit, 0: none */
    long long hdr_limit;            /* header_size_limit */
    long long hop_limit;            /* hopcount_limit */
    const char *drop_header;        /* field name to remove, NULL or "": none */
    const char *drop_header2;       /* a second one (priority_header), the same */
};

/* Why a message is refused, in the order smtpd reports them. */
enum smtpd_dataparse_verdict {
    DP_OK,
    DP_TOO_BIG,     /* more content than size_limit */
    DP_HDR_TOO_BIG, /* header section longer than hdr_limit */
    DP_HOPS,        /* more Received:/Delivered-To: than hop_limit */
    DP_BARE,        /* bare CR or LF in reject mode (see .bare) */
    DP_NUL,         /* NUL byte in reject mode */
};

/* Which of the fields to drop a header line is (private state). */
enum smtpd_dataparse_drop {
    DP_DROP_NONE,
    DP_DROP_FIRST,  /* drop_header */
    DP_DROP_SECOND, /* drop_header2 */
};

/* Content goes out through this in pieces of any size; concatenated, the
 * pieces are the same whatever the input split. */
typedef void (*smtpd_dataparse_out_fn)(void *arg, const void *p, size_t n);

/* Fields below "results" may be read by the caller; the rest is private. */
struct dataparse {
    struct smtpd_dataparse_config cf;
    smtpd_dataparse_out_fn out;
    void *out_arg;
    buf_t obuf;        /* content not yet handed to out() */
    int st;            /* byte state (smtpd_dataparse.c) */
    int real_bol;      /* line began after a real CRLF (or is the first) */
    long long linelen; /* bytes on the current output line */
    /* Header scan. */
    int in_headers;
    int hl;         /* classification of the current header line */
    size_t hl_len;  /* its length so far (stored bytes) */
    size_t hl_name; /* length of its field name */
    size_t hl_val;  /* offset of its value (after the ':') */
    buf_t hdr;      /* its first DP_HDR_KEEP bytes */
    int in_msgid;
    buf_t msgid;
    size_t line_start;                    /* drop_header: where the current line starts in obuf */
    int line_held;                        /* ... and it is all still there */
    enum smtpd_dataparse_drop dropping;   /* the field being dropped goes on
                                       (continuations); NONE: none */
    int collecting;                       /* its value is being kept in dropbuf */
    enum smtpd_dataparse_drop drop_which; /* which field is dropped */
    buf_t dropbuf;
    /* Results. */
    int done;           /* DATA: end of data seen; BDAT: ended */
    long long size;     /* content bytes produced */
    long long hdr_size; /* bytes of the header section */
    int hops;           /* Received:/Delivered-To: header lines */
    char bare;          /* reject mode: first bare newline, 'L' or 'C' */
    int nul;            /* reject mode: a NUL byte was seen */
    char *message_id;   /* first Message-ID value, trimmed, or NULL */
    char *dropped;      /* first drop_header value, trimmed, or NULL */
    char *dropped2;     /* first drop_header2 value, the same */
};

/* Bytes of a header line kept for the name and Message-ID checks. */
#define DP_HDR_KEEP 1000
/* Longest header line that can be dropped. */
#define DP_HOLD_MAX 4096

void smtpd_dataparse_init(struct dataparse *d, const struct smtpd_dataparse_config *cf,
                          smtpd_dataparse_out_fn out, void *out_arg);
void smtpd_dataparse_destroy(struct dataparse *d);
/* Feed n bytes. Returns the bytes consumed: all of them, except in DATA
 * mode when the end of data was seen (d->done set; the bytes after the
 * mark are not consumed). Nothing may be fed once done. */
size_t smtpd_dataparse_feed(struct dataparse *d, const unsigned char *p, size_t n);
/* BDAT: the last octet arrived. A pending bare CR ends its line, an
 * unterminated last line gets its CRLF; sets done, flushes. */
void smtpd_dataparse_end(struct dataparse *d);
/* Hand buffered content to out() now (with drop_header, all but a header
 * line not ended yet: it may still be dropped). */
void smtpd_dataparse_flush(struct dataparse *d);
/* The first reason to refuse the message, or DP_OK. */
enum smtpd_dataparse_verdict smtpd_dataparse_verdict(const struct dataparse *d);

#endif
