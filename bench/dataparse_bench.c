/* dataparse_bench.c - micro-benchmark of smtpd's content parser
 * (smtpd/smtpd_dataparse.c), the code every DATA and BDAT byte passes.
 *
 *   make bench-dataparse      (prints MB/s per input shape; asserts nothing)
 *
 * Inputs are built in memory and fed in 16 KB pieces, as reads from a
 * socket arrive; the output goes to a callback that only counts bytes, so
 * the figure is the parser alone. Best of several rounds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util/buf.h"
#include "smtpd/smtpd_dataparse.h"

#define TOTAL  (32u << 20) /* bytes of content per input shape */
#define READ   16384
#define ROUNDS 7

static size_t sink_bytes;

static void sink(void *arg, const void *p, size_t n)
{
    sink_bytes += n;
}

/* Headers with some Received: lines, then lines of `width` text bytes. */
static void build(buf_t *b, size_t width)
{
    static const char text[] = "The quick brown fox jumps over the lazy dog; 0123456789 ";
    buf_reset(b);
    for (int i = 0; i < 8; i++)
        buf_puts(b, "Received: from relay.example.test (relay.example.test [192.0.2.7])\r\n"
                    "\tby mx.example.test (postino) with ESMTP id 0123456789ABCDEF\r\n");
    buf_puts(b, "Message-ID: <bench@example.test>\r\nSubject: bench\r\n\r\n");
    while (b->len < TOTAL) {
        for (size_t i = 0; i < width; i++)
            buf_putc(b, text[i % (sizeof(text) - 1)]);
        buf_puts(b, "\r\n");
    }
    buf_puts(b, ".\r\n");
}

static double run_once(const buf_t *in, int dot)
{
    struct smtpd_dataparse_config cf = {
        dot, DP_BARE_NORMALIZE, 2048, 0, 102400, 50, "X-Postino-Pool", "X-Postino-Priority"
    };
    struct dataparse d;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    smtpd_dataparse_init(&d, &cf, sink, NULL);
    for (size_t off = 0; off < in->len && !d.done; off += READ) {
        size_t k = in->len - off < READ ? in->len - off : READ;
        smtpd_dataparse_feed(&d, (const unsigned char *)in->data + off, k);
    }
    if (!dot)
        smtpd_dataparse_end(&d);
    smtpd_dataparse_flush(&d);
    smtpd_dataparse_destroy(&d);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

int main(void)
{
    static const struct {
        const char *name;
        size_t width;
        int dot;
    } shapes[] = {
        { "DATA, 76-byte lines", 76, 1 },
        { "DATA, 998-byte lines", 998, 1 },
        { "DATA, 10-byte lines", 10, 1 },
        { "BDAT, 76-byte lines", 76, 0 },
    };
    buf_t in = BUF_INIT;
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        build(&in, shapes[s].width);
        double best = 1e9;
        for (int r = 0; r < ROUNDS; r++) {
            double t = run_once(&in, shapes[s].dot);
            if (t < best)
                best = t;
        }
        printf("%-22s %8.0f MB/s\n", shapes[s].name, (double)in.len / best / 1e6);
    }
    buf_destroy(&in);
    return sink_bytes == 0;
}
