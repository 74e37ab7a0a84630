/* test_crlf.c - the outbound BDAT encoder (common/mail/crlf.c).
 *
 * Two references: a slow byte-at-a-time model, and the DATA path itself -
 * what delivery/delivery_dotstuff.c sends, unstuffed as a strict receiver does. The
 * encoder must give exactly those bytes for every split of the input into
 * chunks, so a next hop gets the same message over BDAT as over DATA. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/buf.h"
#include "common/mail/crlf.h"
#include "delivery/delivery_dotstuff.h"

/* ---- the model: every CR, LF or CRLF becomes CRLF; one at the end ---- */

static void model(const char *in, size_t n, buf_t *out)
{
    size_t i;
    buf_reset(out);
    for (i = 0; i < n; i++) {
        if (in[i] == '\n' && i > 0 && in[i - 1] == '\r')
            continue;
        if (in[i] == '\r' || in[i] == '\n')
            buf_append(out, "\r\n", 2);
        else
            buf_putc(out, in[i]);
    }
    if (n > 0 && in[n - 1] != '\r' && in[n - 1] != '\n')
        buf_append(out, "\r\n", 2);
}

/* ---- the DATA path: dotstuff, then what a receiver stores ---- */

static void data_path(const char *in, size_t n, buf_t *out)
{
    struct dotstuff st;
    char *enc;
    size_t len, i, start = 0;
    dlv_dotstuff_init(&st);
    enc = malloc(dlv_dotstuff_bound(&st, n) + dlv_dotstuff_finish_bound(&st));
    len = dlv_dotstuff_chunk(&st, in, n, enc);
    len += dlv_dotstuff_finish(&st, enc + len);
    assert_true(len >= 3);
    buf_reset(out);
    for (i = 0; i < len - 3; i++) { /* the final ".\r\n" dropped */
        if (i == start && enc[i] == '.')
            continue; /* a stuffing dot */
        buf_putc(out, enc[i]);
        if (enc[i] == '\n')
            start = i + 1;
    }
    free(enc);
}

/* ---- the encoder over a given chunking ---- */

static void encode(const char *in, size_t n, const size_t *cuts, size_t ncuts, buf_t *out)
{
    struct crlf st;
    size_t k, from = 0;
    crlf_init(&st);
    buf_reset(out);
    for (k = 0; k <= ncuts; k++) {
        size_t to = k < ncuts ? cuts[k] : n;
        size_t room = crlf_bound(to - from);
        char *tmp = malloc(room + 1);
        /* exact-size heap buffer: ASan catches a write past the bound */
        size_t w = crlf_chunk(&st, in + from, to - from, tmp);
        assert_true(w <= room);
        buf_append(out, tmp, w);
        free(tmp);
        from = to;
    }
    {
        char *tmp = malloc(CRLF_FINISH_MAX);
        size_t w = crlf_finish(&st, tmp);
        assert_true(w <= CRLF_FINISH_MAX);
        buf_append(out, tmp, w);
        free(tmp);
    }
    assert_int_equal(st.bol, 1); /* reset for the next message */
    assert_int_equal(st.cr, 0);
}

static void same(const buf_t *want, const buf_t *got, const char *what, const size_t *cuts,
                 size_t ncuts)
{
    size_t k;
    if (want->len == got->len && (want->len == 0 || memcmp(want->data, got->data, want->len) == 0))
        return;
    print_error("split at");
    for (k = 0; k < ncuts; k++)
        print_error(" %zu", cuts[k]);
    print_error("\n");
    fail_msg("encoder output differs from %s", what);
}

static void check_all(const char *in, size_t n, const size_t *cuts, size_t ncuts)
{
    buf_t want = BUF_INIT, data = BUF_INIT, got = BUF_INIT;
    size_t i;
    model(in, n, &want);
    data_path(in, n, &data);
    encode(in, n, cuts, ncuts, &got);
    same(&want, &got, "the model", cuts, ncuts);
    same(&data, &got, "what DATA delivers", cuts, ncuts);
    for (i = 0; i < got.len; i++) { /* CRLF only */
        if (got.data[i] == '\r')
            assert_true(i + 1 < got.len && got.data[i + 1] == '\n');
        if (got.data[i] == '\n')
            assert_true(i > 0 && got.data[i - 1] == '\r');
    }
    buf_destroy(&want);
    buf_destroy(&data);
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
    { S(".\r\n") },
    { S("a\r\n.\r\nb") },
    { S("a\n.\nb") },
    { S("a\r.\rb") },
    { S("a\r\n.\rb") },
    { S("a\n.\r\nb") },
    { S("a\r..\rb") },
    { S("a\r\n\0.\r\nb") },
    { S("\0") },
    { S("\0\0.") },
    { S("x\r") },
    { S("x\n") },
    { S("x\r\n") },
    { S("\r\r\n\n\r") },
    { S("\n\r") },
    { S("\r\n\r\n.") },
    { S("BDAT 5 LAST\r\n.\r\nQUIT\n") },
};

static void test_tricky_all_splits(void **state)
{
    size_t k;
    for (k = 0; k < sizeof(tricky) / sizeof(tricky[0]); k++)
        check_splits(tricky[k].in, tricky[k].n);
}

static void test_exact_bytes(void **state)
{
    static const struct {
        const char *in;
        size_t n;
        const char *out;
        size_t on;
    } cases[] = {
        { S(""), S("") },
        { S("a"), S("a\r\n") },
        { S("a\r\n"), S("a\r\n") },
        { S("a\n.\nb"), S("a\r\n.\r\nb\r\n") },
        { S("a\r.\rb\r"), S("a\r\n.\r\nb\r\n") },
        { S("\r\n.\r\n"), S("\r\n.\r\n") },
        { S("..\0x"), S("..\0x\r\n") },
        { S("\n\r\r\n"), S("\r\n\r\n\r\n") },
    };
    size_t k;
    buf_t got = BUF_INIT;
    for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        encode(cases[k].in, cases[k].n, NULL, 0, &got);
        assert_int_equal(got.len, cases[k].on);
        if (got.len)
            assert_memory_equal(got.data, cases[k].out, got.len);
    }
    buf_destroy(&got);
}

/* Random content over the interesting bytes, random chunkings. */
static void test_random(void **state)
{
    static const char alphabet[] = { '\r', '\n', '.', '\0', 'a' };
    char in[300];
    size_t cuts[300];
    unsigned seed = 4242;
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
    struct crlf st;
    char out[16];
    size_t w;
    crlf_init(&st);
    w = crlf_chunk(&st, "x\r", 2, out);
    w += crlf_finish(&st, out + w);
    assert_int_equal(w, 3);
    assert_memory_equal(out, "x\r\n", 3);
    w = crlf_chunk(&st, "\ny", 2, out);
    w += crlf_finish(&st, out + w);
    /* the LF is a line of its own (no CR carried over) */
    assert_int_equal(w, 5);
    assert_memory_equal(out, "\r\ny\r\n", 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tricky_all_splits),
        cmocka_unit_test(test_exact_bytes),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_state_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
