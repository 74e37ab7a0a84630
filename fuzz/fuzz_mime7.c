/* fuzz_mime7.c - libFuzzer harness for common/mail/mime7.c, the 8-bit to
 * 7-bit MIME converter the delivery agent runs over queued content (any
 * bytes a client sent). The input is scanned and converted twice, all at
 * once and in pieces of 1-7 bytes (the first byte picks the size): the
 * scan verdicts and the outputs must be identical, because the queue file
 * is read in chunks. A message the delivery agent would convert (8-bit
 * content, no 8-bit header, nothing stuck) must come out 7 bit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/log.h"
#include "common/mail/mime7.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init("fuzz_mime7");
    log_open("/dev/null");
    return 0;
}

static void feed(struct mime7 *m, const char *d, size_t size, size_t step, buf_t *out)
{
    size_t off = 0;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        mime7_feed(m, d + off, n, out);
        off += n;
    }
    mime7_end(m, out);
}

/* Scan and convert in pieces of step; returns the scan result. */
static int run(const char *d, size_t size, size_t step, buf_t *out)
{
    struct mime7 *m = mime7_new();
    int r;
    feed(m, d, size, step, NULL);
    r = mime7_result(m);
    if ((r & MIME7_STUCK) && !mime7_why(m))
        abort();
    mime7_convert_begin(m);
    feed(m, d, size, step, out);
    mime7_free(m);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    buf_t whole = BUF_INIT, piece = BUF_INIT;
    size_t step, i;
    int r;
    if (size < 1)
        return 0;
    step = 1 + data[0] % 7;
    data++;
    size--;
    r = run((const char *)data, size, size ? size : 1, &whole);
    if (run((const char *)data, size, step, &piece) != r || piece.len != whole.len ||
        (whole.len && memcmp(piece.data, whole.data, whole.len) != 0))
        abort();
    if ((r & MIME7_BODY8) && !(r & (MIME7_HDR8 | MIME7_STUCK)))
        for (i = 0; i < whole.len; i++)
            if ((unsigned char)whole.data[i] & 0x80)
                abort();
    buf_destroy(&whole);
    buf_destroy(&piece);
    return 0;
}
