/* test_smtpd_dataparse.c - cmocka tests for smtpd's content parser
 * (smtpd/smtpd_dataparse.c): end of data, dots, bare CR/LF, NUL, long
 * lines, the header scan - and that every result is the same however the
 * input is split into reads (issue 7, item 9). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/buf.h"
#include "smtpd/smtpd_dataparse.h"

/* Everything a run produces. */
struct outcome {
    size_t used; /* bytes consumed (DATA: where the end was) */
    buf_t content;
    int done;
    long long size, hdr_size;
    int hops, nul;
    char bare;
    enum smtpd_dataparse_verdict verdict;
    char *message_id;
};

static void collect(void *arg, const void *p, size_t n)
{
    buf_append(arg, p, n);
}

static struct smtpd_dataparse_config config(int dot, enum smtpd_dataparse_bare bare)
{
    struct smtpd_dataparse_config cf = { dot, bare, 2048, 10240000, 102400, 50, NULL, NULL };
    return cf;
}

/* Feed in pieces of `chunk` bytes (0: all at once); BDAT mode ends. */
static void run(const struct smtpd_dataparse_config *cf, const char *in, size_t n, size_t chunk,
                struct outcome *o)
{
    struct dataparse d;
    memset(o, 0, sizeof(*o));
    smtpd_dataparse_init(&d, cf, collect, &o->content);
    size_t off = 0;
    while (off < n && !d.done) {
        size_t k = chunk && n - off > chunk ? chunk : n - off;
        size_t used = smtpd_dataparse_feed(&d, (const unsigned char *)in + off, k);
        off += used;
        if (used < k)
            break;
    }
    if (!cf->dot)
        smtpd_dataparse_end(&d);
    smtpd_dataparse_flush(&d);
    o->used = off;
    o->done = d.done;
    o->size = d.size;
    o->hdr_size = d.hdr_size;
    o->hops = d.hops;
    o->nul = d.nul;
    o->bare = d.bare;
    o->verdict = smtpd_dataparse_verdict(&d);
    o->message_id = d.message_id;
    d.message_id = NULL;
    smtpd_dataparse_destroy(&d);
}

static void outcome_destroy(struct outcome *o)
{
    buf_destroy(&o->content);
    free(o->message_id);
}

static void assert_same(const struct outcome *a, const struct outcome *b)
{
    assert_int_equal(a->used, b->used);
    assert_int_equal(a->content.len, b->content.len);
    assert_memory_equal(buf_str(&a->content), buf_str(&b->content), a->content.len);
    assert_int_equal(a->done, b->done);
    assert_int_equal(a->size, b->size);
    assert_int_equal(a->hdr_size, b->hdr_size);
    assert_int_equal(a->hops, b->hops);
    assert_int_equal(a->nul, b->nul);
    assert_int_equal(a->bare, b->bare);
    assert_int_equal(a->verdict, b->verdict);
    if (a->message_id || b->message_id) {
        assert_non_null(a->message_id);
        assert_non_null(b->message_id);
        assert_string_equal(a->message_id, b->message_id);
    }
}

/* The whole input and every split into 1..7-byte and some larger pieces
 * give the same outcome, which is returned in *whole. */
static void check_splits(const struct smtpd_dataparse_config *cf, const char *in, size_t n,
                         struct outcome *whole)
{
    static const size_t sizes[] = { 1, 2, 3, 4, 5, 6, 7, 13, 999, 1000, 1001, 4096 };
    run(cf, in, n, 0, whole);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        struct outcome o;
        run(cf, in, n, sizes[i], &o);
        assert_same(whole, &o);
        outcome_destroy(&o);
    }
}

/* check_splits, then the content must be `want` (NULL: not checked). */
static void expect(const struct smtpd_dataparse_config *cf, const char *in, size_t n,
                   const char *want, size_t want_len, struct outcome *o)
{
    check_splits(cf, in, n, o);
    if (want) {
        assert_int_equal(o->content.len, want_len);
        assert_memory_equal(o->content.data ? o->content.data : "", want, want_len);
    }
}

#define S(lit) lit, sizeof(lit) - 1

/* ---- item 9: the 1000-byte header boundary ---- */

/* A header line whose ':' lies just past byte 1000 is a header whether it
 * arrives in one read or in small pieces; the Received: lines after it
 * count as hops and the Message-ID after it is seen. (Before the fix the
 * scan kept the first 1000 bytes of a line from one read but up to ~2000
 * from several, so the split decided all of this.) */
static void test_header_colon_past_1000(void **state)
{
    for (size_t namelen = 995; namelen <= 1010; namelen++) {
        buf_t in = BUF_INIT;
        buf_puts(&in, "Subject: boundary\r\n");
        for (size_t i = 0; i < namelen; i++)
            buf_putc(&in, 'X');
        buf_puts(&in, ": v\r\nReceived: a\r\nReceived: b\r\nDelivered-To: c\r\n"
                      "Message-ID: <m@b.test>\r\n\r\nbody\r\n.\r\n");
        struct smtpd_dataparse_config cf = config(1, DP_BARE_NORMALIZE);
        cf.hop_limit = 2;
        struct outcome o;
        expect(&cf, in.data, in.len, NULL, 0, &o);
        assert_int_equal(o.hops, 3);
        assert_int_equal(o.verdict, DP_HOPS);
        assert_non_null(o.message_id);
        assert_string_equal(o.message_id, "<m@b.test>");
        assert_true(o.done);
        assert_int_equal(o.used, in.len);
        outcome_destroy(&o);
        buf_destroy(&in);
    }
}

/* A folded Message-ID longer than the kept 1000 bytes is cut at exactly
 * 1000 bytes however it arrives. */
static void test_long_message_id(void **state)
{
    buf_t in = BUF_INIT;
    buf_puts(&in, "Message-ID: <");
    for (int i = 0; i < 700; i++)
        buf_putc(&in, 'a');
    buf_puts(&in, "\r\n ");
    for (int i = 0; i < 700; i++)
        buf_putc(&in, 'b');
    buf_puts(&in, ">\r\n\r\n.\r\n");
    struct smtpd_dataparse_config cf = config(1, DP_BARE_NORMALIZE);
    struct outcome o;
    expect(&cf, in.data, in.len, NULL, 0, &o);
    assert_non_null(o.message_id);
    assert_int_equal(strlen(o.message_id), DP_HDR_KEEP - 1); /* leading blank trimmed */
    outcome_destroy(&o);
    buf_destroy(&in);
}

/* header_size_limit counts the header section to its empty line. */
static void test_header_size_limit(void **state)
{
    struct smtpd_dataparse_config cf = config(1, DP_BARE_NORMALIZE);
    struct outcome o;
    buf_t in = BUF_INIT;
    cf.hdr_limit = 1024;
    for (int i = 0; i < 60; i++)
        buf_puts(&in, "X-Filler: 0123456789\r\n"); /* 22 * 60 = 1320 */
    buf_puts(&in, "\r\nbody\r\n.\r\n");
    expect(&cf, in.data, in.len, NULL, 0, &o);
    assert_int_equal(o.hdr_size, 1322);
    assert_int_equal(o.verdict, DP_HDR_TOO_BIG);
    outcome_destroy(&o);
    /* the same bytes in the body do not count */
    buf_reset(&in);
    buf_puts(&in, "Subject: s\r\n\r\n");
    for (int i = 0; i < 60; i++)
        buf_puts(&in, "X-Filler: 0123456789\r\n");
    buf_puts(&in, ".\r\n");
    expect(&cf, in.data, in.len, NULL, 0, &o);
    assert_int_equal(o.hdr_size, 14);
    assert_int_equal(o.verdict, DP_OK);
    outcome_destroy(&o);
    buf_destroy(&in);
}

/* Header lines as Postfix's cleanup tells them apart: a name, optional
 * blanks, ':'. A line that is not one ends the header section. */
static void test_header_classification(void **state)
{
    struct smtpd_dataparse_config cf = config(1, DP_BARE_NORMALIZE);
    struct outcome o;
    expect(&cf,
           S("Received : a\r\nreceived:b\r\n\tfolded\r\nDELIVERED-TO: c\r\n"
             "X-Received: no\r\n\r\nReceived: body\r\n.\r\n"),
           NULL, 0, &o);
    assert_int_equal(o.hops, 3);
    outcome_destroy(&o);
    expect(&cf, S("Received: a\r\nnot a header: x\r\nReceived: b\r\n.\r\n"), NULL, 0, &o);
    assert_int_equal(o.hops, 1);
    outcome_destroy(&o);
    expect(&cf, S("Received: a\r\n:x\r\nReceived: b\r\n.\r\n"), NULL, 0, &o);
    assert_int_equal(o.hops, 1);
    outcome_destroy(&o);
    /* a line of NULs only is stored as an empty line: the body follows */
    expect(&cf, S("Received: a\r\n\0\0\r\nReceived: b\r\n.\r\n"),
           S("Received: a\r\n\r\nReceived: b\r\n"), &o);
    assert_int_equal(o.hops, 1);
    outcome_destroy(&o);
    expect(&cf, S("Message-ID : \r\n  <x@y>  \r\nSubject: s\r\n.\r\n"), NULL, 0, &o);
    assert_string_equal(o.message_id, "<x@y>");
    outcome_destroy(&o);
}

/* ---- item 2: dots ---- */

static void test_dot_unstuffing_after_crlf_only(void **state)
{
    struct smtpd_dataparse_config cf = config(1, DP_BARE_NORMALIZE);
    struct outcome o;
    expect(&cf, S("..a\r\n...\r\n.b\r\nend\r\n.\r\nNEXT"), S(".a\r\n..\r\nb\r\nend\r\n"), &o);
    outcome_destroy(&o);
    /* after a bare LF or CR the dot is content, in every mode */
    expect(&cf, S("a\n..b\r..c\r\n.\r\n"), S("a\r\n..b\r\n..c\r\n"), &o);
    outcome_destroy(&o);
    cf.bare = DP_BARE_KEEP;
    expect(&cf, S("a\n..b\r..c\n.\r.\r\n.\r\n"), S("a\n..b\r..c\n.\r.\r\n"), &o);
    outcome_destroy(&o);
    cf.bare = DP_BARE_REJECT;
    expect(&cf, S("a\n..b\r\n.\r\n"), S("a\r\n..b\r\n"), &o);
    assert_int_equal(o.verdict, DP_BARE);
    assert_int_equal(o.bare, 'L');
    outcome_destroy(&o);
}

static void test_first_line_dot_ends(void **state)
{
    struct smtpd_dataparse_config cf = config(1, DP_BARE_NORMALIZE);
    struct outcome o;
    expect(&cf, S(".\r\nQUIT\r\n"), S(""), &o);
    assert_true(o.done);
    assert_int_equal(o.used, 3);
    outcome_destroy(&o);
}

/* Only CR LF "." CR LF ends the data: every SEC Consult variant and their
 * double-dot forms are content, in every mode. */
static void test_end_of_data_only_crlf_dot_crlf(void **state)
{
    static const char *marks[] = { "\n.\n",      "\n.\r\n",  "\r.\r\n",     "\r\n.\r",    "\r.\r",
                                   "\r..\r",     "\n..\n",   "\r\n\0.\r\n", "\r\n.\n",    "\n.\r",
                                   "\r\n..\r\n", "\n..\r\n", "\r..\r\n",    "\r\n.\r\r\n" };
    static const size_t lens[] = { 3, 4, 4, 4, 3, 4, 4, 6, 4, 3, 6, 5, 5, 6 };
    for (int mode = DP_BARE_NORMALIZE; mode <= DP_BARE_KEEP; mode++) {
        for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++) {
            buf_t in = BUF_INIT;
            buf_puts(&in, "Subject: s\r\n\r\nbefore");
            buf_append(&in, marks[i], lens[i]);
            buf_puts(&in, "MAIL FROM:<evil@x>\r\n");
            struct smtpd_dataparse_config cf = config(1, mode);
            struct outcome o;
            expect(&cf, in.data, in.len, NULL, 0, &o);
            assert_false(o.done);
            assert_int_equal(o.used, in.len);
            outcome_destroy(&o);
            buf_puts(&in, ".\r\nafter");
            expect(&cf, in.data, in.len, NULL, 0, &o);
            assert_true(o.done);
            assert_int_equal(o.used, in.len - 5);
            assert_null(memchr(o.content.data, '\0', o.content.len));
            outcome_destroy(&o);
            buf_destroy(&in);
        }
    }
}

/* ---- item 3: NUL ---- */

static void test_nul(void **state)
{
    struct smtpd_dataparse_config cf = config(1, DP_BARE_NORMALIZE);
    struct outcome o;
    expect(&cf, S("a\0b\r\n\0.\r\n.\0\r\n\0\r\n.\r\n"), S("ab\r\n.\r\n\r\n\r\n"), &o);
    assert_int_equal(o.verdict, DP_OK);
    assert_int_equal(o.nul, 0);
    outcome_destroy(&o);
    cf.bare = DP_BARE_KEEP;
    expect(&cf, S("a\0b\r\n.\r\n"), S("ab\r\n"), &o);
    assert_int_equal(o.verdict, DP_OK);
    outcome_destroy(&o);
    cf.bare = DP_BARE_REJECT;
    expect(&cf, S("a\0b\r\n.\r\n"), S("ab\r\n"), &o);
    assert_int_equal(o.verdict, DP_NUL);
    outcome_destroy(&o);
    /* CR NUL LF is a bare CR, then a bare LF: never a CRLF */
    cf.bare = DP_BARE_NORMALIZE;
    expect(&cf, S("a\r\0\nb\r\n.\r\n"), S("a\r\n\r\nb\r\n"), &o);
    outcome_destroy(&o);
}

/* ---- bare CR/LF, long lines, size ---- */

static void test_bare_newlines(void **state)
{
    struct smtpd_dataparse_config cf = config(1, DP_BARE_NORMALIZE);
    struct outcome o;
    expect(&cf, S("a\nb\rc\r\r\nd\r\n.\r\n"), S("a\r\nb\r\nc\r\n\r\nd\r\n"), &o);
    outcome_destroy(&o);
    cf.bare = DP_BARE_REJECT;
    expect(&cf, S("a\rb\nc\r\n.\r\n"), NULL, 0, &o);
    assert_int_equal(o.bare, 'C');
    outcome_destroy(&o);
}

static void test_long_lines_and_size(void **state)
{
    struct smtpd_dataparse_config cf = config(1, DP_BARE_NORMALIZE);
    struct outcome o;
    cf.line_limit = 4;
    expect(&cf, S("abcdefghij\r\nabcd\r\n.\r\n"), S("abcd\r\nefgh\r\nij\r\nabcd\r\n"), &o);
    outcome_destroy(&o);
    cf.line_limit = 2048;
    cf.size_limit = 10;
    expect(&cf, S("0123456789\r\n.\r\n"), NULL, 0, &o);
    assert_int_equal(o.size, 12);
    assert_int_equal(o.verdict, DP_TOO_BIG);
    outcome_destroy(&o);
    cf.size_limit = 12;
    expect(&cf, S("0123456789\r\n.\r\n"), NULL, 0, &o);
    assert_int_equal(o.verdict, DP_OK);
    outcome_destroy(&o);
}

/* ---- BDAT mode ---- */

static void test_bdat_mode(void **state)
{
    struct smtpd_dataparse_config cf = config(0, DP_BARE_NORMALIZE);
    struct outcome o;
    /* no dots, no end of data; the last line gets its CRLF */
    expect(&cf, S("Subject: b\r\n\r\n..x\r\n.\r\n.y"), S("Subject: b\r\n\r\n..x\r\n.\r\n.y\r\n"),
           &o);
    assert_true(o.done);
    outcome_destroy(&o);
    /* a final bare CR is a line end */
    expect(&cf, S("a\r"), S("a\r\n"), &o);
    outcome_destroy(&o);
    expect(&cf, S(""), S(""), &o);
    outcome_destroy(&o);
    cf.bare = DP_BARE_REJECT;
    expect(&cf, S("a\r\nb\0"), S("a\r\nb\r\n"), &o);
    assert_int_equal(o.verdict, DP_NUL);
    outcome_destroy(&o);
}

/* A pseudo-random mix of the interesting bytes: the whole input and its
 * splits agree in every mode. */
static void test_random_splits_agree(void **state)
{
    static const char alphabet[] = "\r\n.\0:a Received:Message-ID:<>\t";
    uint32_t x = 12345;
    for (int round = 0; round < 300; round++) {
        char in[600];
        size_t n = 1 + round * 2 % sizeof(in);
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            in[i] = alphabet[(x >> 16) % (sizeof(alphabet) - 1)];
        }
        for (int dot = 0; dot <= 1; dot++) {
            for (int mode = DP_BARE_NORMALIZE; mode <= DP_BARE_KEEP; mode++) {
                struct smtpd_dataparse_config cf = config(dot, mode);
                struct outcome o;
                cf.line_limit = 1 + round % 40;
                cf.hdr_limit = 64;
                cf.hop_limit = 1;
                check_splits(&cf, in, n, &o);
                outcome_destroy(&o);
            }
        }
    }
}

/* ---- drop_header: the source pool header (issue #9) ---- */

/* Feed in pieces of chunk bytes, handing the content out after every
 * piece as smtpd does; returns the dropped value (caller frees). */
static char *run_drop(const char *in, size_t n, size_t chunk, buf_t *out, long long *size)
{
    struct smtpd_dataparse_config cf = config(1, DP_BARE_NORMALIZE);
    struct dataparse d;
    cf.drop_header = "X-Postino-Pool";
    smtpd_dataparse_init(&d, &cf, collect, out);
    for (size_t off = 0; off < n && !d.done;) {
        size_t k = chunk && n - off > chunk ? chunk : n - off;
        off += smtpd_dataparse_feed(&d, (const unsigned char *)in + off, k);
        smtpd_dataparse_flush(&d);
    }
    char *v = d.dropped;
    d.dropped = NULL;
    *size = d.size;
    smtpd_dataparse_destroy(&d);
    return v;
}

static void expect_drop(const char *in, const char *want, const char *want_value)
{
    static const size_t sizes[] = { 0, 1, 2, 3, 5, 7, 13, 64 };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        buf_t out = BUF_INIT;
        long long size;
        char *v = run_drop(in, strlen(in), sizes[i], &out, &size);
        assert_string_equal(buf_str(&out), want);
        assert_int_equal(size, (long long)strlen(want));
        if (want_value)
            assert_string_equal(v ? v : "(none)", want_value);
        else
            assert_null(v);
        free(v);
        buf_destroy(&out);
    }
}

static void test_drop_header(void **state)
{
    /* the field goes, with its continuation lines; the first value counts */
    expect_drop("From: a@b\r\nX-Postino-Pool: bulk\r\nTo: c@d\r\n\r\nbody\r\n.\r\n",
                "From: a@b\r\nTo: c@d\r\n\r\nbody\r\n", "bulk");
    expect_drop("x-postino-pool:\r\n  two\r\nSubject: s\r\nX-Postino-Pool: other\r\n\r\n"
                "X-Postino-Pool: in the body\r\n.\r\n",
                "Subject: s\r\n\r\nX-Postino-Pool: in the body\r\n", "two");
    /* a similar name is not it; no such field: no value */
    expect_drop("X-Postino-Pools: x\r\n\r\nb\r\n.\r\n", "X-Postino-Pools: x\r\n\r\nb\r\n", NULL);
}

/* A header line too long to hold back goes out whatever its name. */
static void test_drop_header_too_long(void **state)
{
    struct smtpd_dataparse_config plain = config(1, DP_BARE_NORMALIZE);
    struct outcome o;
    buf_t in = BUF_INIT;
    buf_puts(&in, "X-Postino-Pool: ");
    for (int i = 0; i < DP_HOLD_MAX; i++)
        buf_putc(&in, 'p');
    buf_puts(&in, "\r\n continued\r\n\r\nbody\r\n.\r\n");
    run(&plain, buf_str(&in), in.len, 0, &o); /* what goes out without drop_header */
    expect_drop(buf_str(&in), buf_str(&o.content), NULL);
    outcome_destroy(&o);
    buf_destroy(&in);
}

/* Two fields to drop (the pool and the priority header): both go, each
 * keeps its own first value, also when they follow each other. */
static void test_drop_two_headers(void **state)
{
    static const size_t sizes[] = { 0, 1, 3, 7, 64 };
    const char *in = "From: a@b\r\nX-Postino-Pool: one\r\nX-Postino-Priority:\r\n"
                     " transactional\r\nX-Postino-Priority: bulk\r\nTo: c@d\r\n\r\n"
                     "X-Postino-Priority: body\r\n.\r\n";
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        struct smtpd_dataparse_config cf = config(1, DP_BARE_NORMALIZE);
        struct dataparse d;
        buf_t out = BUF_INIT;
        cf.drop_header = "X-Postino-Pool";
        cf.drop_header2 = "X-Postino-Priority";
        smtpd_dataparse_init(&d, &cf, collect, &out);
        for (size_t off = 0, n = strlen(in); off < n && !d.done;) {
            size_t k = sizes[i] && n - off > sizes[i] ? sizes[i] : n - off;
            off += smtpd_dataparse_feed(&d, (const unsigned char *)in + off, k);
            smtpd_dataparse_flush(&d);
        }
        assert_string_equal(buf_str(&out),
                            "From: a@b\r\nTo: c@d\r\n\r\nX-Postino-Priority: body\r\n");
        assert_string_equal(d.dropped ? d.dropped : "(none)", "one");
        assert_string_equal(d.dropped2 ? d.dropped2 : "(none)", "transactional");
        smtpd_dataparse_destroy(&d);
        buf_destroy(&out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_colon_past_1000),
        cmocka_unit_test(test_long_message_id),
        cmocka_unit_test(test_header_size_limit),
        cmocka_unit_test(test_header_classification),
        cmocka_unit_test(test_dot_unstuffing_after_crlf_only),
        cmocka_unit_test(test_first_line_dot_ends),
        cmocka_unit_test(test_end_of_data_only_crlf_dot_crlf),
        cmocka_unit_test(test_nul),
        cmocka_unit_test(test_bare_newlines),
        cmocka_unit_test(test_long_lines_and_size),
        cmocka_unit_test(test_bdat_mode),
        cmocka_unit_test(test_random_splits_agree),
        cmocka_unit_test(test_drop_header),
        cmocka_unit_test(test_drop_header_too_long),
        cmocka_unit_test(test_drop_two_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
