/* attr.c - the record protocol between daemons: "name=value" lines ended
 * by an empty line, values %XX-escaped, parsed strictly (see attr.h). */
#include "common/util/attr.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#define ATTR_NAME_MAX 64

void attr_init(attr_t *a)
{
    a->v = NULL;
    a->n = a->cap = 0;
}

void attr_clear(attr_t *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free(a->v[i].name);
        free(a->v[i].value);
    }
    a->n = 0;
}

void attr_destroy(attr_t *a)
{
    attr_clear(a);
    free(a->v);
    attr_init(a);
}

static void attr_add_owned(attr_t *a, char *name, char *value)
{
    a->v = xgrow(a->v, &a->cap, a->n + 1, sizeof(*a->v));
    a->v[a->n].name = name;
    a->v[a->n].value = value;
    a->n++;
}

void attr_add(attr_t *a, const char *name, const char *value)
{
    attr_add_owned(a, xstrdup(name), xstrdup(value ? value : ""));
}

void attr_addf(attr_t *a, const char *name, const char *fmt, ...)
{
    buf_t b = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    attr_add_owned(a, xstrdup(name), buf_detach(&b));
}

void attr_add_ll(attr_t *a, const char *name, long long v)
{
    attr_addf(a, name, "%lld", v);
}

const char *attr_get(const attr_t *a, const char *name)
{
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i].name, name) == 0)
            return a->v[i].value;
    return NULL;
}

const char *attr_get_def(const attr_t *a, const char *name, const char *def)
{
    const char *v = attr_get(a, name);
    return v ? v : def;
}

int attr_get_ll(const attr_t *a, const char *name, long long *out)
{
    const char *v = attr_get(a, name);
    if (v == NULL || *v == '\0')
        return -1;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno != 0 || *end != '\0' || end == v)
        return -1;
    *out = x;
    return 0;
}

const char *attr_next(const attr_t *a, const char *name, size_t *pos)
{
    for (size_t i = *pos; i < a->n; i++) {
        if (strcmp(a->v[i].name, name) == 0) {
            *pos = i + 1;
            return a->v[i].value;
        }
    }
    *pos = a->n;
    return NULL;
}

void attr_escape(buf_t *out, const char *value, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    buf_reserve(out, len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c == '%' || c < 0x20 || c == 0x7f) {
            char e[3] = { '%', hex[c >> 4], hex[c & 15] };
            buf_append(out, e, 3);
        } else {
            buf_putc(out, c);
        }
    }
}

int attr_unescape(buf_t *out, const char *s, size_t len)
{
    buf_reserve(out, len);
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            buf_putc(out, s[i]);
            continue;
        }
        if (i + 2 >= len)
            return -1;
        int h = str_hexval((unsigned char)s[i + 1]), l = str_hexval((unsigned char)s[i + 2]);
        /* %00 would silently truncate a C string value. */
        if (h < 0 || l < 0 || (h == 0 && l == 0))
            return -1;
        buf_putc(out, h * 16 + l);
        i += 2;
    }
    return 0;
}

void attr_encode(const attr_t *a, buf_t *out)
{
    for (size_t i = 0; i < a->n; i++) {
        buf_puts(out, a->v[i].name);
        buf_putc(out, '=');
        attr_escape(out, a->v[i].value, strlen(a->v[i].value));
        buf_putc(out, '\n');
    }
    buf_putc(out, '\n');
}

static int set_err(const char **err, const char *why)
{
    if (err)
        *err = why;
    return -1;
}

static enum attr_decoded malformed(const char **err, const char *why)
{
    set_err(err, why);
    return ATTR_MALFORMED;
}

/* Find the end of the record without allocating: ATTR_DECODED with *end
 * (just past the empty line), or incomplete, or a limit is broken. */
static enum attr_decoded record_scan(const char *data, size_t len, size_t *end, const char **err)
{
    size_t pos = 0, lines = 0;
    if (len > 0 && data[0] == '\n')
        return malformed(err, "empty record");
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t llen = nl ? (size_t)(nl - (data + pos)) : len - pos;
        if (llen > ATTR_LINE_MAX)
            return malformed(err, "line too long");
        if (nl == NULL)
            return ATTR_INCOMPLETE;
        if (llen == 0) {
            *end = pos + 1;
            return ATTR_DECODED;
        }
        if (++lines > ATTR_COUNT_MAX)
            return malformed(err, "too many attributes");
        pos += llen + 1;
    }
    return ATTR_INCOMPLETE;
}

static int name_valid(const char *s, size_t n)
{
    if (n == 0 || n > ATTR_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

static int parse_line(const char *line, size_t llen, attr_t *out, const char **err)
{
    const char *eq = memchr(line, '=', llen);
    if (memchr(line, '\0', llen))
        return set_err(err, "NUL byte in record");
    if (eq == NULL)
        return set_err(err, "line without '='");
    size_t nlen = (size_t)(eq - line);
    if (!name_valid(line, nlen))
        return set_err(err, "invalid attribute name");
    buf_t v = BUF_INIT;
    if (attr_unescape(&v, eq + 1, llen - nlen - 1) < 0) {
        buf_destroy(&v);
        return set_err(err, "bad %XX escape in value");
    }
    if (v.data == NULL)
        buf_reserve(&v, 0);
    attr_add_owned(out, xstrndup(line, nlen), buf_detach(&v));
    return 0;
}

enum attr_decoded attr_decode(const char *data, size_t len, attr_t *out, size_t *used,
                              const char **err)
{
    size_t end = 0;
    enum attr_decoded r = record_scan(data, len, &end, err);
    if (r != ATTR_DECODED)
        return r;
    attr_clear(out);
    size_t pos = 0;
    while (pos < end - 1) {
        const char *nl = memchr(data + pos, '\n', end - pos);
        size_t llen = (size_t)(nl - (data + pos));
        if (parse_line(data + pos, llen, out, err) < 0) {
            attr_clear(out);
            return ATTR_MALFORMED;
        }
        pos += llen + 1;
    }
    *used = end;
    return ATTR_DECODED;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for fd to become ready; returns 0, or -1 on timeout/error. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        int ms = -1;
        if (deadline >= 0) {
            long long left = deadline - now_ms();
            if (left <= 0) {
                errno = ETIMEDOUT;
                return -1;
            }
            ms = left > 1000000 ? 1000000 : (int)left;
        }
        struct pollfd p = { .fd = fd, .events = events, .revents = 0 };
        int r = poll(&p, 1, ms);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

int attr_write_fd(int fd, const attr_t *a)
{
    buf_t b = BUF_INIT;
    attr_encode(a, &b);
    size_t off = 0;
    int rc = 0;
    while (off < b.len) {
        ssize_t w = write(fd, b.data + off, b.len - off);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLOUT, -1) < 0) {
                rc = -1;
                break;
            }
        } else {
            rc = -1;
            break;
        }
    }
    buf_destroy(&b);
    return rc;
}

int attr_read_fd(int fd, buf_t *inbuf, attr_t *out, int timeout_ms, const char **err)
{
    long long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    char chunk[16384];
    for (;;) {
        size_t used = 0;
        enum attr_decoded r = attr_decode(buf_str(inbuf), inbuf->len, out, &used, err);
        if (r == ATTR_MALFORMED) {
            errno = EPROTO;
            return -1;
        }
        if (r == ATTR_DECODED) {
            buf_consume(inbuf, used);
            return 0;
        }
        if (wait_fd(fd, POLLIN, deadline) < 0)
            return set_err(err, errno == ETIMEDOUT ? "timeout" : "poll error");
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (n < 0)
            return set_err(err, "read error");
        if (n == 0) {
            errno = inbuf->len ? EPROTO : ECONNRESET;
            return set_err(err, inbuf->len ? "EOF inside a record" : "connection closed");
        }
        buf_append(inbuf, chunk, (size_t)n);
    }
}

enum attr_decoded attr_from_evbuffer(struct evbuffer *in, attr_t *out, const char **err)
{
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return ATTR_INCOMPLETE;
    char first;
    if (evbuffer_copyout(in, &first, 1) == 1 && first == '\n')
        return malformed(err, "empty record");
    struct evbuffer_ptr p = evbuffer_search(in, "\n\n", 2, NULL);
    if (p.pos < 0) {
        if (len > (size_t)ATTR_LINE_MAX * 4)
            return malformed(err, "record too long");
        return ATTR_INCOMPLETE;
    }
    size_t rlen = (size_t)p.pos + 2;
    const char *data = (const char *)evbuffer_pullup(in, (ssize_t)rlen);
    size_t used = 0;
    enum attr_decoded r = attr_decode(data, rlen, out, &used, err);
    if (r == ATTR_DECODED)
        evbuffer_drain(in, used);
    else if (r == ATTR_INCOMPLETE)
        log_panic("attr_from_evbuffer: record end found but not decoded");
    return r;
}

void attr_to_evbuffer(struct evbuffer *outbuf, const attr_t *a)
{
    buf_t b = BUF_INIT;
    attr_encode(a, &b);
    evbuffer_add(outbuf, b.data, b.len);
    buf_destroy(&b);
}
