/* fuzz_dotstuff.c - libFuzzer harness for delivery/delivery_dotstuff.c, the encoder
 * the delivery agent runs over message content a client sent us. The
 * input (byte 0 picks the chunk sizes) is encoded whole and in chunks: the
 * outputs must be identical, fit the advertised bounds, use CRLF only,
 * hold no end of data a lenient receiver (with or without dropping NULs)
 * could see before the final one, and unstuff to the input with its line
 * ends made CRLF. The BDAT encoder (common/mail/crlf.c), whole and in the same
 * chunks, must give exactly those unstuffed bytes: a next hop gets the
 * same message whichever command carries it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/buf.h"
#include "common/mail/crlf.h"
#include "delivery/delivery_dotstuff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void encode(const char *in, size_t n, size_t step, buf_t *out)
{
    struct dotstuff st;
    size_t off = 0, k, room, w;
    char *tmp;
    dlv_dotstuff_init(&st);
    buf_reset(out);
    while (off < n) {
        k = n - off < step ? n - off : step;
        room = dlv_dotstuff_bound(&st, k);
        tmp = malloc(room + 1); /* exact size: ASan sees an overrun */
        w = dlv_dotstuff_chunk(&st, in + off, k, tmp);
        if (w > room)
            abort();
        buf_append(out, tmp, w);
        free(tmp);
        off += k;
    }
    room = dlv_dotstuff_finish_bound(&st);
    tmp = malloc(room);
    w = dlv_dotstuff_finish(&st, tmp);
    if (w > room)
        abort();
    buf_append(out, tmp, w);
    free(tmp);
}

static void check_safe(const buf_t *o)
{
    size_t i;
    const char *p = o->data;
    buf_t s = BUF_INIT;
    for (i = 0; i < o->len; i++)
        if ((p[i] == '\r' && (i + 1 == o->len || p[i + 1] != '\n')) ||
            (p[i] == '\n' && (i == 0 || p[i - 1] != '\r')))
            abort();
    for (int strip = 0; strip < 2; strip++) {
        buf_reset(&s);
        buf_putc(&s, '\n');
        for (i = 0; i < o->len; i++)
            if (!strip || p[i] != '\0')
                buf_putc(&s, p[i]);
        for (i = 0; i + 2 < s.len; i++) {
            const char *q = s.data + i;
            if ((q[0] == '\r' || q[0] == '\n') && q[1] == '.' && (q[2] == '\r' || q[2] == '\n') &&
                i + 3 + (q[2] == '\r') != s.len)
                abort();
        }
    }
    buf_destroy(&s);
}

static void encode_bdat(const char *in, size_t n, size_t step, buf_t *out)
{
    struct crlf st;
    size_t off = 0, k, room, w;
    char *tmp;
    crlf_init(&st);
    buf_reset(out);
    while (off < n) {
        k = n - off < step ? n - off : step;
        room = crlf_bound(k);
        tmp = malloc(room + 1); /* exact size: ASan sees an overrun */
        w = crlf_chunk(&st, in + off, k, tmp);
        if (w > room)
            abort();
        buf_append(out, tmp, w);
        free(tmp);
        off += k;
    }
    tmp = malloc(CRLF_FINISH_MAX);
    w = crlf_finish(&st, tmp);
    if (w > CRLF_FINISH_MAX)
        abort();
    buf_append(out, tmp, w);
    free(tmp);
}

/* Unstuffed, the output is the input with CRLF line ends (and one added
 * at the end when it had none), and what the BDAT encoder gives. */
static void check_roundtrip(const char *in, size_t n, size_t step, const buf_t *o)
{
    buf_t bdat = BUF_INIT;
    buf_t norm = BUF_INIT, back = BUF_INIT;
    size_t i, start = 0;
    int after_cr = 0;
    for (i = 0; i < n; i++) {
        if (in[i] == '\n' && after_cr) {
            after_cr = 0;
            continue;
        }
        after_cr = in[i] == '\r';
        if (in[i] == '\r' || in[i] == '\n')
            buf_append(&norm, "\r\n", 2);
        else
            buf_putc(&norm, in[i]);
    }
    if (n > 0 && in[n - 1] != '\r' && in[n - 1] != '\n')
        buf_append(&norm, "\r\n", 2);
    for (i = 0; i + 3 < o->len; i++) { /* all but the final ".\r\n" */
        if (i == start && o->data[i] == '.')
            continue;
        buf_putc(&back, o->data[i]);
        if (o->data[i] == '\n')
            start = i + 1;
    }
    if (back.len != norm.len || (norm.len && memcmp(back.data, norm.data, norm.len) != 0))
        abort();
    for (int whole = 0; whole < 2; whole++) {
        encode_bdat(in, n, whole ? (n ? n : 1) : step, &bdat);
        if (bdat.len != back.len || (back.len && memcmp(bdat.data, back.data, back.len) != 0))
            abort();
    }
    buf_destroy(&bdat);
    buf_destroy(&norm);
    buf_destroy(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t steps[] = { 1, 2, 3, 5, 7, 64, 4096 };
    buf_t whole = BUF_INIT, split = BUF_INIT;
    const char *in;
    size_t n, step;
    if (size < 1)
        return 0;
    in = (const char *)data + 1;
    n = size - 1;
    encode(in, n, n ? n : 1, &whole);
    step = steps[data[0] % (sizeof(steps) / sizeof(steps[0]))];
    encode(in, n, step, &split);
    if (whole.len != split.len || memcmp(whole.data, split.data, whole.len) != 0)
        abort();
    check_safe(&whole);
    check_roundtrip(in, n, step, &whole);
    buf_destroy(&whole);
    buf_destroy(&split);
    return 0;
}
