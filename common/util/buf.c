/* buf.c - growable byte buffer and bounded string helpers. */
#include "common/util/buf.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>

void buf_init(buf_t *b, size_t initial)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    buf_reserve(b, initial ? initial : 64);
}

void buf_destroy(buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void buf_reset(buf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void buf_reserve(buf_t *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need < b->len)
        log_panic("buffer size overflow");
    if (need > b->cap) {
        size_t cap = b->cap;
        b->data = xgrow(b->data, &cap, need, 1);
        b->cap = cap;
        b->data[b->len] = '\0';
    }
}

void buf_append(buf_t *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void buf_puts(buf_t *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_putc(buf_t *b, int c)
{
    char ch = (char)c;
    buf_append(b, &ch, 1);
}

void buf_vprintf(buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    buf_reserve(b, 64);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    if (n < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)n >= b->cap - b->len) {
        buf_reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
    }
    va_end(ap2);
    b->len += (size_t)n;
}

void buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void buf_set(buf_t *b, const char *s)
{
    buf_reset(b);
    buf_puts(b, s);
}

void buf_setf(buf_t *b, const char *fmt, ...)
{
    if (b == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    buf_reset(b);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void buf_consume(buf_t *b, size_t n)
{
    if (n >= b->len) {
        buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

void buf_truncate(buf_t *b, size_t n)
{
    if (n < b->len) {
        b->len = n;
        b->data[n] = '\0';
    }
}

const char *buf_str(const buf_t *b)
{
    return b->data ? b->data : "";
}

char *buf_detach(buf_t *b)
{
    char *s = b->data ? b->data : xstrdup("");
    b->data = NULL;
    b->len = b->cap = 0;
    return s;
}

size_t str_lcpy(char *dst, const char *src, size_t size)
{
    size_t len = strlen(src);
    if (size) {
        size_t n = len < size - 1 ? len : size - 1;
        memcpy(dst, src, n);
        dst[n] = '\0';
    }
    return len;
}

int str_ieq(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

int str_nieq(const char *a, const char *b, size_t n)
{
    return strncasecmp(a, b, n) == 0;
}

char *str_lower(char *s)
{
    for (char *p = s; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return s;
}

int str_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int str_iendswith(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return lx <= ls && strcasecmp(s + ls - lx, suffix) == 0;
}

char *str_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

char **str_split(const char *s, const char *seps, size_t *count)
{
    size_t n = 0, cap = 0;
    char **v = NULL;
    const char *p = s;
    for (;;) {
        p += strspn(p, seps);
        if (*p == '\0')
            break;
        size_t len = strcspn(p, seps);
        v = xgrow(v, &cap, n + 2, sizeof(*v));
        v[n++] = xstrndup(p, len);
        p += len;
    }
    v = xgrow(v, &cap, n + 1, sizeof(*v));
    v[n] = NULL;
    if (count)
        *count = n;
    return v;
}

void strv_free(char **v)
{
    if (v == NULL)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

void buf_put_delay(buf_t *b, double secs)
{
    if (secs < 0.005)
        buf_puts(b, "0");
    else if (secs < 1)
        buf_printf(b, "%.2f", secs);
    else if (secs < 10)
        buf_printf(b, "%.1f", secs);
    else
        buf_printf(b, "%.0f", secs);
}
