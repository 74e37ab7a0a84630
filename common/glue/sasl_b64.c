/* sasl_b64.c - strict base64 for SMTP AUTH lines.
 *
 * Our own codec rather than sasl_decode64: the client's text must be
 * judged exactly (RFC 4648, padding required, no white space) so smtpd can
 * answer 501 5.5.2 for anything else, whatever the Cyrus version accepts. */
#include <stdint.h>

#include "common/util/buf.h"
#include "common/glue/sasl.h"

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* One 4-character group; last says padding may appear. Returns the number
 * of bytes produced (1..3) or -1. */
static int decode_group(const unsigned char *g, int last, unsigned char out[3])
{
    int v[4];
    int pad = 0;
    for (int i = 0; i < 4; i++) {
        if (g[i] == '=') {
            if (!last || i < 2)
                return -1;
            pad++;
            v[i] = 0;
            continue;
        }
        if (pad)
            return -1; /* data after padding */
        v[i] = b64_value(g[i]);
        if (v[i] < 0)
            return -1;
    }
    uint32_t n =
        ((uint32_t)v[0] << 18) | ((uint32_t)v[1] << 12) | ((uint32_t)v[2] << 6) | (uint32_t)v[3];
    out[0] = (unsigned char)(n >> 16);
    out[1] = (unsigned char)(n >> 8);
    out[2] = (unsigned char)n;
    return 3 - pad;
}

int psasl_b64_decode(const char *in, size_t len, buf_t *out)
{
    if (len % 4 != 0)
        return -1;
    size_t start = out->len;
    for (size_t i = 0; i < len; i += 4) {
        unsigned char bytes[3];
        int n = decode_group((const unsigned char *)in + i, i + 4 == len, bytes);
        if (n < 0) {
            buf_truncate(out, start);
            return -1;
        }
        buf_append(out, bytes, (size_t)n);
    }
    return 0;
}

void psasl_b64_encode(const void *in, size_t len, buf_t *out)
{
    const unsigned char *p = in;
    buf_reserve(out, (len + 2) / 3 * 4);
    for (size_t i = 0; i < len; i += 3) {
        uint32_t n = (uint32_t)p[i] << 16;
        if (i + 1 < len)
            n |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len)
            n |= p[i + 2];
        buf_putc(out, b64_alphabet[(n >> 18) & 63]);
        buf_putc(out, b64_alphabet[(n >> 12) & 63]);
        buf_putc(out, i + 1 < len ? b64_alphabet[(n >> 6) & 63] : '=');
        buf_putc(out, i + 2 < len ? b64_alphabet[n & 63] : '=');
    }
}
