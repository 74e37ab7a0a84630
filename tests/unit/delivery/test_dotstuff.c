/* test_dotstuff.c - the outbound DATA encoder (delivery/delivery_dotstuff.c).
 *
 * A slow byte-at-a-time model defines the expected output; the encoder must
 * give exactly those bytes for every split of the input into chunks (all
 * 2- and 3-way splits of the tricky inputs, random splits of random ones),
 * and its output must never hold anything a lenient receiver (one that also
 * drops NULs) could take for the end of data, except the final one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/buf.h"
#include "delivery/delivery_dotstuff.h"

/* ---- the model: split into lines, stuff, join with CRLF ---- */

static void model_line(buf_t *out, const char *l, size_t n)
{
    size_t k = 0;
    while (k < n && l[k] == '\0')
        k++;
    if (k < n && l[k] == '.')
        buf_putc(out, '.');
    buf_append(out, l, n);
    buf_append(out, "\r\n", 2);
}

static void model(const char *in, size_t n, buf_t *out)
{
    size_t i, start = 0;
    int after_cr = 0;
    buf_reset(out);
    for (i = 0; i < n; i++) {
        if (in[i] == '\n' && after_cr) {
            start = i + 1;
            after_cr = 0;
            continue;
        }
        after_cr = 0;
        if (in[i] == '\r' || in[i] == '\n') {
            model_line(out, in + start, i - start);
            start = i + 1;
            after_cr = in[i] == '\r';
        }
    }
    if (start < n)
        model_line(out, in + start, n - start);
    buf_append(out, ".\r\n", 3);
}

/* ---- the encoder over a given chunking ---- */

static void encode(const char *in, size_t n, const size_t *cuts, size_t ncuts, buf_t *out)
{
    struct dotstuff st;
    size_t k, from = 0;
    dlv_dotstuff_init(&st);
    buf_reset(out);
    for (k = 0; k <= ncuts; k++) {
        size_t to = k < ncuts ? cuts[k] : n;
        size_t room = dlv_dotstuff_bound(&st, to - from);
        char *tmp = malloc(room + 1);
        /* exact-size heap buffer: ASan catches a write past the bound */
        size_t w = dlv_dotstuff_chunk(&st, in + from, to - from, tmp);
        assert_true(w <= room);
        buf_append(out, tmp, w);
        free(tmp);
        from = to;
    }
    {
        size_t room = dlv_dotstuff_finish_bound(&st);
        char *tmp = malloc(room);
        size_t w = dlv_dotstuff_finish(&st, tmp);
        assert_true(w <= room);
        buf_append(out, tmp, w);
        free(tmp);
    }
    assert_int_equal(st.bol, 1); /* reset for the next message */
    assert_int_equal(st.nuls, 0);
}

/* No end of data but the final one, for a receiver that takes any of
 * CR/LF/CRLF "." CR/LF/CRLF as one, with or without dropping NULs;
 * every CR followed by LF, every LF after a CR. */
static void check_safe(const buf_t *o)
{
    size_t i;
    buf_t s = BUF_INIT;
    const char *p = o->data;
    assert_true(o->len >= 3);
    assert_memory_equal(p + o->len - 3, ".\r\n", 3);
    assert_true(o->len == 3 || (o->len >= 5 && memcmp(p + o->len - 5, "\r\n.\r\n", 5) == 0));
    for (i = 0; i < o->len; i++) {
        if (p[i] == '\r')
            assert_true(i + 1 < o->len && p[i + 1] == '\n');
        if (p[i] == '\n')
            assert_true(i > 0 && p[i - 1] == '\r');
    }
    for (int strip = 0; strip < 2; strip++) {
        buf_reset(&s);
        buf_putc(&s, '\n'); /* the DATA line's end */
        for (i = 0; i < o->len; i++)
            if (!strip || p[i] != '\0')
                buf_putc(&s, p[i]);
        for (i = 0; i + 2 < s.len; i++) {
            const char *q = s.data + i;
            if ((q[0] == '\r' || q[0] == '\n') && q[1] == '.' && (q[2] == '\r' || q[2] == '\n'))
                /* only the final "\r\n.\r\n" (or ".\r\n" of empty content) */
                assert_true(i + 3 + (q[2] == '\r') == s.len);
        }
    }
    buf_destroy(&s);
}

/* Unstuffed the way a strict receiver does (the end mark dropped, one
 * leading dot removed from each line), the output is the input with its
 * line endings made CRLF: nothing added, nothing lost. */
static void check_roundtrip(const char *in, size_t n, const buf_t *o)
{
    buf_t norm = BUF_INIT, back = BUF_INIT;
    size_t i, start = 0, body = o->len - 3;
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
    for (i = 0; i < body; i++) {
        if (i == start && o->data[i] == '.')
            continue;
        buf_putc(&back, o->data[i]);
        if (o->data[i] == '\n')
            start = i + 1;
    }
    assert_int_equal(back.len, norm.len);
    if (norm.len)
        assert_memory_equal(back.data, norm.data, norm.len);
    buf_destroy(&norm);
    buf_destroy(&back);
}

static void check_all(const char *in, size_t n, const size_t *cuts, size_t ncuts)
{
    buf_t want = BUF_INIT, got = BUF_INIT;
    model(in, n, &want);
    encode(in, n, cuts, ncuts, &got);
    if (want.len != got.len || memcmp(want.data, got.data, want.len) != 0) {
        size_t k;
        print_error("input (%zu bytes) split at", n);
        for (k = 0; k < ncuts; k++)
            print_error(" %zu", cuts[k]);
        print_error("\n");
        fail_msg("encoder output differs from the model");
    }
    check_safe(&got);
    check_roundtrip(in, n, &got);
    buf_destroy(&want);
    buf_destroy(&got);
}

/* Every 1-, 2- and 3-chunk split. */
static void check_splits(const char *in, size_t n)
{
    size_t a, b, cuts[2];
    check_all(in, n, NULL, 0);
    for (a = 0; a <= n; a++) {
        cuts[0] = a;
        check_all(in, n, cuts, 1);
        for (b = a; b <= n; b++) {
            cuts[1] = b;
            check_all(in, n, cuts, 2);
        }
    }
}

#define S(lit) lit, sizeof(lit) - 1

static const struct {
    const char *in;
    size_t n;
} tricky[] = {
    { S("") },
    { S(".") },
    { S("..") },
    { S(".\r\n") },
    { S("a\r\n.\r\nb") },
    { S("a\n.\nb") },
    { S("a\r.\rb") },
    { S("a\r\n.\rb") },
    { S("a\n.\r\nb") },
    { S("a\r.\r\nb") },
    { S("a\r..\rb") },
    { S("a\n..\nb") },
    { S("a\r\n\0.\r\nb") },
    { S("a\r\n\0..\r\nb") },
    { S("a\r\n\0\0\r\n.\0\r\n\0.\0\r\n") },
    { S("\0") },
    { S("\0\0.") },
    { S("x\r") },
    { S("x\n") },
    { S("x\r\n") },
    { S("\r\r\n\n\r") },
    { S("\r\n\r\n.") },
    { S("MAIL FROM:<a@b>\r\n.\r\nRCPT TO:<c@d>\r\n") },
};

static void test_tricky_all_splits(void **state)
{
    size_t k;
    for (k = 0; k < sizeof(tricky) / sizeof(tricky[0]); k++)
        check_splits(tricky[k].in, tricky[k].n);
}

/* Exact bytes for the SEC Consult smuggling sequences. */
static void test_smuggling_sequences(void **state)
{
    static const struct {
        const char *in;
        size_t n;
        const char *out;
        size_t on;
    } cases[] = {
        { S("a\n.\nb"), S("a\r\n..\r\nb\r\n.\r\n") },
        { S("a\n.\r\nb"), S("a\r\n..\r\nb\r\n.\r\n") },
        { S("a\r.\r\nb"), S("a\r\n..\r\nb\r\n.\r\n") },
        { S("a\r\n.\rb"), S("a\r\n..\r\nb\r\n.\r\n") },
        { S("a\r.\rb"), S("a\r\n..\r\nb\r\n.\r\n") },
        { S("a\r..\rb"), S("a\r\n...\r\nb\r\n.\r\n") },
        { S("a\r\n\0.\r\nb"), S("a\r\n.\0.\r\nb\r\n.\r\n") },
        { S("a\r\n\0\r\n"), S("a\r\n\0\r\n.\r\n") },
        { S("a\r\n.\0\r\n"), S("a\r\n..\0\r\n.\r\n") },
        { S("a\r\n"), S("a\r\n.\r\n") },
        { S("a"), S("a\r\n.\r\n") },
        { S(""), S(".\r\n") },
    };
    size_t k;
    buf_t got = BUF_INIT;
    for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        encode(cases[k].in, cases[k].n, NULL, 0, &got);
        assert_int_equal(got.len, cases[k].on);
        assert_memory_equal(got.data, cases[k].out, got.len);
    }
    buf_destroy(&got);
}

/* Random content over the interesting bytes, random chunkings (1..7-byte
 * pieces and a few large ones). */
static void test_random(void **state)
{
    static const char alphabet[] = { '\r', '\n', '.', '\0', 'a' };
    char in[300];
    size_t cuts[300];
    unsigned seed = 12345;
    int round;
    for (round = 0; round < 4000; round++) {
        size_t n, k, nc = 0, at = 0;
        seed = seed * 1103515245u + 12345u;
        n = (seed >> 16) % sizeof(in);
        for (k = 0; k < n; k++) {
            seed = seed * 1103515245u + 12345u;
            in[k] = alphabet[(seed >> 16) % sizeof(alphabet)];
        }
        while (at < n && nc < sizeof(cuts) / sizeof(cuts[0])) {
            seed = seed * 1103515245u + 12345u;
            at += round % 3 == 0 ? 1 + (seed >> 16) % 64 : 1 + (seed >> 16) % 7;
            if (at < n)
                cuts[nc++] = at;
        }
        check_all(in, n, cuts, nc);
    }
}

/* Consecutive messages through one state: finish resets it. */
static void test_state_reset(void **state)
{
    struct dotstuff st;
    char out[64];
    size_t w;
    dlv_dotstuff_init(&st);
    w = dlv_dotstuff_chunk(&st, "x\r", 2, out);
    w += dlv_dotstuff_finish(&st, out + w);
    assert_int_equal(w, 6);
    assert_memory_equal(out, "x\r\n.\r\n", 6);
    w = dlv_dotstuff_chunk(&st, "\n.", 2, out);
    w += dlv_dotstuff_finish(&st, out + w);
    /* the LF is a new line (no CR carried over from the last message) */
    assert_int_equal(w, 9);
    assert_memory_equal(out, "\r\n..\r\n.\r\n", 9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tricky_all_splits),
        cmocka_unit_test(test_smuggling_sequences),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_state_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
