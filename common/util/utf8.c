/* utf8.c - strict UTF-8 decoding and sanitising (see utf8.h).
 *
 * The decoder follows RFC 3629 section 4's table of well-formed byte
 * sequences: the second byte's range depends on the first (E0: A0..BF,
 * ED: 80..9F, F0: 90..BF, F4: 80..8F), which rules out overlong forms,
 * surrogates and code points above U+10FFFF without extra checks. */
#include "common/util/utf8.h"

static int cont(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

size_t utf8_decode(const char *str, size_t n, unsigned long *cp)
{
    const unsigned char *s = (const unsigned char *)str;
    unsigned char c = n ? s[0] : 0;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (n == 0)
        return 0;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 0; /* 80..C1 (stray or overlong lead), F5..FF */
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    unsigned long v = c & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if (!cont(s[i]))
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    *cp = v;
    return len;
}

int utf8_is_control(unsigned long c)
{
    return c < 0x20 || (c >= 0x7F && c <= 0x9F);
}

int utf8_valid_text(const char *s, size_t n)
{
    unsigned long cp;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_decode(s + i, n - i, &cp);
        if (k == 0 || utf8_is_control(cp))
            return 0;
        i += k;
    }
    return 1;
}

int utf8_has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] & 0x80)
            return 1;
    return 0;
}

void utf8_sanitize(buf_t *out, const char *s, size_t n, char repl)
{
    unsigned long cp;
    buf_reserve(out, n);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_decode(s + i, n - i, &cp);
        if (k == 0) {
            buf_putc(out, repl);
            i++;
        } else if (utf8_is_control(cp)) {
            buf_putc(out, repl);
            i += k;
        } else {
            buf_append(out, s + i, k);
            i += k;
        }
    }
}

void utf8_sanitize_inplace(char *s, char repl)
{
    size_t r = 0, w = 0, n = 0;
    unsigned long cp;
    while (s[n])
        n++;
    while (r < n) {
        size_t k = utf8_decode(s + r, n - r, &cp);
        if (k == 0 || utf8_is_control(cp)) {
            s[w++] = repl;
            r += k ? k : 1;
        } else {
            while (k--)
                s[w++] = s[r++];
        }
    }
    s[w] = '\0';
}
