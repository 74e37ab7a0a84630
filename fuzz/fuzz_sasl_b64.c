/* fuzz_sasl_b64.c - libFuzzer harness for the strict base64 codec of SMTP
 * AUTH (common/glue/sasl_b64.c). Every AUTH line a client sends goes through
 * psasl_b64_decode before Cyrus SASL sees a byte, so the decoder meets
 * hostile text first. Checked:
 *   - accepted exactly when the text is RFC 4648 base64 with padding and
 *     nothing else (an independent predicate here says what that is);
 *   - it appends exactly 3 bytes per group minus the padding, never
 *     touches what the buffer held before, and leaves it as it was on a
 *     rejection;
 *   - encode(decode(x)) == x, except for the unused low bits of the last
 *     character before the padding (RFC 4648 3.5: non-canonical text is
 *     accepted, as Cyrus does; re-encoding sets those bits to zero);
 *   - decode(encode(bytes)) == bytes for the raw input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/util/log.h"
#include "common/glue/sasl.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char prefix[] = "keep";
#define PREFIX_LEN (sizeof(prefix) - 1)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init("fuzz_sasl_b64");
    log_open("/dev/null");
    return 0;
}

/* 6-bit value of a base64 character, -1 for anything else. Written as a
 * lookup in the alphabet, not as the decoder's ranges. */
static int value_of(unsigned char c)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? memchr(alpha, c, sizeof(alpha) - 1) : NULL;
    return p ? (int)(p - alpha) : -1;
}

/* Strict RFC 4648 text: whole groups of 4, alphabet only, then at most
 * two '=' that close the last group. Sets *pad. */
static int valid_text(const uint8_t *d, size_t n, size_t *pad)
{
    *pad = 0;
    if (n % 4 != 0)
        return 0;
    while (*pad < n && d[n - 1 - *pad] == '=')
        (*pad)++;
    if (*pad > 2)
        return 0;
    for (size_t i = 0; i < n - *pad; i++)
        if (value_of(d[i]) < 0)
            return 0;
    return 1;
}

static void check_decode(const char *d, size_t size)
{
    buf_t out = BUF_INIT, enc = BUF_INIT, again = BUF_INIT;
    size_t pad;
    int valid = valid_text((const uint8_t *)d, size, &pad);
    buf_set(&out, prefix);
    int r = psasl_b64_decode(d, size, &out);
    if (out.len < PREFIX_LEN || memcmp(out.data, prefix, PREFIX_LEN) != 0)
        abort(); /* wrote before its start */
    if (r != 0) {
        if (r != -1 || valid || out.len != PREFIX_LEN)
            abort();
        goto out;
    }
    if (!valid)
        abort();
    size_t n = out.len - PREFIX_LEN;
    if (n != size / 4 * 3 - pad || out.data[out.len] != '\0')
        abort();
    /* Re-encode: the same text but for the last group's unused bits. */
    psasl_b64_encode(out.data + PREFIX_LEN, n, &enc);
    if (enc.len != size)
        abort();
    size_t odd = pad ? size - pad - 1 : size; /* the character with unused bits */
    int mask = pad == 1 ? 0x3c : 0x30;
    for (size_t i = 0; i < size; i++) {
        if (i == odd) {
            if (value_of((unsigned char)enc.data[i]) != (value_of((unsigned char)d[i]) & mask))
                abort();
        } else if (enc.data[i] != d[i]) {
            abort();
        }
    }
    /* ... and that canonical text decodes to the same bytes. */
    if (psasl_b64_decode(enc.data, enc.len, &again) != 0 || again.len != n ||
        (n && memcmp(again.data, out.data + PREFIX_LEN, n) != 0))
        abort();
out:
    buf_destroy(&out);
    buf_destroy(&enc);
    buf_destroy(&again);
}

static void check_encode(const char *d, size_t size)
{
    buf_t enc = BUF_INIT, dec = BUF_INIT;
    size_t pad;
    psasl_b64_encode(d, size, &enc);
    if (enc.len != (size + 2) / 3 * 4 || strlen(buf_str(&enc)) != enc.len ||
        !valid_text((const uint8_t *)enc.data, enc.len, &pad) || pad != (3 - size % 3) % 3)
        abort();
    if (psasl_b64_decode(enc.data, enc.len, &dec) != 0 || dec.len != size ||
        (size && memcmp(dec.data, d, size) != 0))
        abort();
    buf_destroy(&enc);
    buf_destroy(&dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy without slack so ASan sees any read past the end. */
    char *d = xmalloc(size ? size : 1);
    memcpy(d, data, size);
    check_decode(d, size);
    check_encode(d, size);
    free(d);
    return 0;
}
