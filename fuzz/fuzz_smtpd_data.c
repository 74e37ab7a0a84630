/* fuzz_smtpd_data.c - libFuzzer harness for smtpd's content parser
 * (smtpd/smtpd_dataparse.c), the code every DATA and BDAT byte goes
 * through.
 *
 * Input: byte 0 picks the configuration (DATA or BDAT, the
 * smtpd_forbid_bare_newline mode, small or default limits), byte 1 seeds
 * the split, the rest is the client's bytes. Each input is parsed whole,
 * byte by byte, and in pieces of 1..7 bytes whose sizes come from the
 * input; any difference in the outcome (where the data ended, the stored
 * content, any verdict, the Message-ID) aborts: a client must not decide
 * by its packet boundaries what we store or count (issue 7, item 9).
 * Checked as well: the end of data is exactly the first CR LF "." CR LF
 * (or a leading "." CR LF), stored content has no NUL, no bare CR/LF
 * unless they are kept on purpose, and no line over line_length_limit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/buf.h"
#include "common/util/log.h"
#include "smtpd/smtpd_dataparse.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init("fuzz_smtpd_data");
    log_open("/dev/null");
    return 0;
}

struct outcome {
    size_t used;
    buf_t content;
    int done, hops, nul;
    char bare;
    long long size, hdr_size;
    enum smtpd_dataparse_verdict verdict;
    char *message_id;
    char *dropped;
    char *dropped2;
};

static void collect(void *arg, const void *p, size_t n)
{
    buf_append(arg, p, n);
}

/* Piece sizes: whole (mode 0), one byte (1), or 1..7 from the input (2). */
static size_t piece(int mode, uint32_t *seed)
{
    if (mode == 1)
        return 1;
    *seed = *seed * 1103515245u + 12345u;
    return 1 + (*seed >> 16) % 7;
}

static void run(const struct smtpd_dataparse_config *cf, const uint8_t *p, size_t n, int mode,
                uint32_t seed, struct outcome *o)
{
    struct dataparse d;
    memset(o, 0, sizeof(*o));
    smtpd_dataparse_init(&d, cf, collect, &o->content);
    size_t off = 0;
    while (off < n && !d.done) {
        size_t k = mode == 0 ? n - off : piece(mode, &seed);
        if (k > n - off)
            k = n - off;
        size_t used = smtpd_dataparse_feed(&d, p + off, k);
        off += used;
        if (used < k && !d.done)
            abort(); /* only the end of data stops a feed early */
        if (mode != 0)
            smtpd_dataparse_flush(&d); /* as smtpd does after every read */
    }
    if (!cf->dot)
        smtpd_dataparse_end(&d);
    smtpd_dataparse_flush(&d);
    o->used = off;
    o->done = d.done;
    o->hops = d.hops;
    o->nul = d.nul;
    o->bare = d.bare;
    o->size = d.size;
    o->hdr_size = d.hdr_size;
    o->verdict = smtpd_dataparse_verdict(&d);
    o->message_id = d.message_id;
    d.message_id = NULL;
    o->dropped = d.dropped;
    d.dropped = NULL;
    o->dropped2 = d.dropped2;
    d.dropped2 = NULL;
    smtpd_dataparse_destroy(&d);
}

static void outcome_destroy(struct outcome *o)
{
    buf_destroy(&o->content);
    free(o->message_id);
    free(o->dropped);
    free(o->dropped2);
}

static void same(const struct outcome *a, const struct outcome *b)
{
    if (a->used != b->used || a->done != b->done || a->content.len != b->content.len ||
        (a->content.len && memcmp(a->content.data, b->content.data, a->content.len)) ||
        a->hops != b->hops || a->nul != b->nul || a->bare != b->bare || a->size != b->size ||
        a->hdr_size != b->hdr_size || a->verdict != b->verdict ||
        !a->message_id != !b->message_id ||
        (a->message_id && strcmp(a->message_id, b->message_id)) || !a->dropped != !b->dropped ||
        (a->dropped && strcmp(a->dropped, b->dropped)) || !a->dropped2 != !b->dropped2 ||
        (a->dropped2 && strcmp(a->dropped2, b->dropped2)))
        abort();
}

/* Where the data must end (DATA mode): after the first CR LF "." CR LF,
 * or after a leading "." CR LF; 0 when it does not. */
static size_t expected_end(const uint8_t *p, size_t n)
{
    if (n >= 3 && !memcmp(p, ".\r\n", 3))
        return 3;
    for (size_t i = 0; i + 5 <= n; i++)
        if (!memcmp(p + i, "\r\n.\r\n", 5))
            return i + 5;
    return 0;
}

static void check_content(const struct smtpd_dataparse_config *cf, const struct outcome *o)
{
    const char *c = o->content.data;
    size_t n = o->content.len;
    long long line = 0;
    /* With drop_header an unfinished header line is still held back. */
    int complete = o->done || (!cf->drop_header && !cf->drop_header2);
    if ((complete && (long long)n != o->size) || (n && memchr(c, '\0', n)))
        abort();
    for (size_t i = 0; i < n; i++) {
        int cr = c[i] == '\r', lf = c[i] == '\n';
        if (cf->bare != DP_BARE_KEEP &&
            ((cr && (i + 1 == n || c[i + 1] != '\n')) || (lf && (i == 0 || c[i - 1] != '\r'))))
            abort(); /* a bare CR or LF was stored */
        line = cr || lf ? 0 : line + 1;
        if (line > cf->line_limit)
            abort();
    }
    if (!cf->dot && n && c[n - 1] != '\n' && c[n - 1] != '\r')
        abort(); /* BDAT: the last line gets its line end */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t flags = data[0];
    uint32_t seed = data[1];
    const uint8_t *p = data + 2;
    size_t n = size - 2;
    struct smtpd_dataparse_config cf = { .dot = !(flags & 1),
                                         .line_limit = 2048,
                                         .size_limit = 0,
                                         .hdr_limit = 102400,
                                         .hop_limit = 50 };
    static const enum smtpd_dataparse_bare modes[4] = { DP_BARE_NORMALIZE, DP_BARE_REJECT,
                                                        DP_BARE_KEEP, DP_BARE_NORMALIZE };
    cf.bare = modes[(flags >> 1) & 3];
    if (flags & 8)
        cf.line_limit = 1 + (flags >> 4); /* 1..16: splits everywhere */
    if (flags & 16)
        cf.hdr_limit = 64;
    if (flags & 32)
        cf.hop_limit = 1;
    if (flags & 64)
        cf.size_limit = 256;
    if (flags & 128) {
        cf.drop_header = "X-P";  /* the source pool header (issue #9) */
        cf.drop_header2 = "X-Q"; /* the priority header (issue #9) */
    }

    struct outcome whole, o;
    run(&cf, p, n, 0, seed, &whole);
    if (cf.dot) {
        size_t end = expected_end(p, n);
        if (whole.done != (end != 0) || (end && whole.used != end))
            abort();
    } else if (!whole.done || whole.used != n) {
        abort();
    }
    check_content(&cf, &whole);
    if ((whole.nul || whole.bare) && cf.bare != DP_BARE_REJECT)
        abort();
    for (int mode = 1; mode <= 2; mode++) {
        run(&cf, p, n, mode, seed, &o);
        same(&whole, &o);
        outcome_destroy(&o);
    }
    outcome_destroy(&whole);
    return 0;
}
