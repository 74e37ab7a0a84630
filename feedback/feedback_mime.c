/* feedback_mime.c - MIME pieces of the report parser: lines, header blocks
 * (RFC 5322 2.2.3 unfolding), Content-Type parameters (RFC 2045 5.1),
 * quoted-printable and base64 decoding (RFC 2045 6.7, 6.8), multipart
 * splitting (RFC 2046 5.1.1), and the small text searches the report
 * shapes share. Reports come from strangers: every loop is bounded by its
 * slice, values are cut at FB_VALUE_MAX, nothing here allocates more than
 * its input. */
#include "feedback/feedback_mime.h"

#include <ctype.h>
#include <string.h>

#include "common/mail/qfile.h"

int fb_line_next(const char *s, size_t len, size_t *off, const char **line, size_t *n)
{
    const char *p, *nl;
    size_t rest;

    if (*off >= len)
        return 0;
    p = s + *off;
    rest = len - *off;
    nl = memchr(p, '\n', rest);
    *n = nl ? (size_t)(nl - p) : rest;
    *off += *n + (nl ? 1 : 0);
    if (*n > 0 && p[*n - 1] == '\r')
        (*n)--;
    *line = p;
    return 1;
}

/* "Name:" at the start of a line: the name's length, or 0. */
static size_t field_name_len(const char *l, size_t n)
{
    size_t i;
    for (i = 0; i < n && i < 64; i++) {
        unsigned char c = (unsigned char)l[i];
        if (c == ':')
            return i;
        if (c <= ' ' || c >= 127)
            return 0;
    }
    return 0;
}

static void value_add(buf_t *v, const char *p, size_t n)
{
    if (v->len >= FB_VALUE_MAX)
        return;
    if (n > FB_VALUE_MAX - v->len)
        n = FB_VALUE_MAX - v->len;
    buf_append(v, p, n);
}

static void field_emit(buf_t *name, buf_t *value, fb_header_fn fn, void *arg)
{
    if (name->len > 0)
        fn(buf_str(name), str_trim(value->data ? value->data : (char *)""), arg);
    buf_reset(name);
    buf_reset(value);
}

size_t fb_headers(const char *s, size_t len, fb_header_fn fn, void *arg)
{
    buf_t name = BUF_INIT, value = BUF_INIT;
    size_t off = 0, at = 0, n, nl;
    const char *l;

    buf_init(&value, 128);
    while (at = off, fb_line_next(s, len, &off, &l, &n)) {
        if (n == 0)
            break; /* the empty line: the body follows */
        if ((l[0] == ' ' || l[0] == '\t') && name.len > 0) {
            /* a fold: its white space becomes one space */
            while (n > 0 && (*l == ' ' || *l == '\t')) {
                l++;
                n--;
            }
            value_add(&value, " ", 1);
            value_add(&value, l, n);
            continue;
        }
        if ((nl = field_name_len(l, n)) == 0) {
            off = at; /* not a header line: it is the body's */
            break;
        }
        field_emit(&name, &value, fn, arg);
        buf_append(&name, l, nl);
        value_add(&value, l + nl + 1, n - nl - 1);
    }
    field_emit(&name, &value, fn, arg);
    buf_destroy(&name);
    buf_destroy(&value);
    return off;
}

/* One parameter value (token or quoted string) into dst. */
static const char *param_value(const char *p, char *dst, size_t size)
{
    size_t k = 0;
    if (*p == '"') {
        for (p++; *p && *p != '"'; p++) {
            if (*p == '\\' && p[1])
                p++;
            if (k + 1 < size)
                dst[k++] = *p;
        }
        if (*p == '"')
            p++;
    } else {
        for (; *p && *p != ';' && !isspace((unsigned char)*p); p++)
            if (k + 1 < size)
                dst[k++] = *p;
    }
    dst[k] = '\0';
    return p;
}

void fb_ctype_parse(const char *v, struct fb_ctype *ct)
{
    char pname[32];
    size_t k;

    memset(ct, 0, sizeof(*ct));
    while (isspace((unsigned char)*v))
        v++;
    for (k = 0; *v && *v != ';' && !isspace((unsigned char)*v); v++)
        if (k + 1 < sizeof(ct->type))
            ct->type[k++] = (char)tolower((unsigned char)*v);
    ct->type[k] = '\0';
    while ((v = strchr(v, ';')) != NULL) {
        for (v++; isspace((unsigned char)*v); v++)
            ;
        for (k = 0; *v && *v != '=' && *v != ';' && !isspace((unsigned char)*v); v++)
            if (k + 1 < sizeof(pname))
                pname[k++] = (char)tolower((unsigned char)*v);
        pname[k] = '\0';
        while (isspace((unsigned char)*v))
            v++;
        if (*v != '=')
            continue;
        for (v++; isspace((unsigned char)*v); v++)
            ;
        if (strcmp(pname, "boundary") == 0) {
            v = param_value(v, ct->boundary, sizeof(ct->boundary));
        } else if (strcmp(pname, "report-type") == 0) {
            v = param_value(v, ct->report_type, sizeof(ct->report_type));
            str_lower(ct->report_type);
        }
    }
}

enum fb_cte fb_cte_parse(const char *value)
{
    while (isspace((unsigned char)*value))
        value++;
    if (str_nieq(value, "quoted-printable", 16))
        return FB_CTE_QP;
    if (str_nieq(value, "base64", 6))
        return FB_CTE_BASE64;
    return FB_CTE_IDENTITY;
}

static int b64_val(int c)
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

static void decode_b64(const char *p, size_t n, buf_t *out)
{
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && p[i] != '='; i++) {
        int v = b64_val((unsigned char)p[i]);
        if (v < 0)
            continue; /* line breaks, white space, junk */
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf_putc(out, (int)((acc >> bits) & 0xff));
        }
    }
}

static void decode_qp(const char *p, size_t n, buf_t *out)
{
    size_t i = 0;
    while (i < n) {
        int hi, lo;
        if (p[i] != '=') {
            buf_putc(out, p[i++]);
            continue;
        }
        if (i + 1 < n && p[i + 1] == '\n') { /* soft line break */
            i += 2;
        } else if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') {
            i += 3;
        } else if (i + 2 < n && (hi = str_hexval(p[i + 1])) >= 0 &&
                   (lo = str_hexval(p[i + 2])) >= 0) {
            buf_putc(out, hi * 16 + lo);
            i += 3;
        } else {
            buf_putc(out, p[i++]); /* a lone "=": kept, as readers do */
        }
    }
}

void fb_decode(enum fb_cte cte, const char *p, size_t n, buf_t *out)
{
    buf_reserve(out, n);
    if (cte == FB_CTE_BASE64)
        decode_b64(p, n, out);
    else if (cte == FB_CTE_QP)
        decode_qp(p, n, out);
    else
        buf_append(out, p, n);
}

/* What a line is to a multipart body of boundary b. */
enum delim_kind {
    DELIM_NONE,  /* content */
    DELIM_PART,  /* "--b": a body part starts */
    DELIM_CLOSE, /* "--b--": the last one has ended */
};

static enum delim_kind delimiter(const char *l, size_t n, const char *b, size_t bl)
{
    if (n < bl + 2 || l[0] != '-' || l[1] != '-' || memcmp(l + 2, b, bl) != 0)
        return DELIM_NONE;
    l += bl + 2;
    n -= bl + 2;
    int close = n >= 2 && l[0] == '-' && l[1] == '-';
    for (size_t i = close ? 2 : 0; i < n; i++)
        if (l[i] != ' ' && l[i] != '\t')
            return DELIM_NONE; /* transport padding only (RFC 2046 5.1.1) */
    return close ? DELIM_CLOSE : DELIM_PART;
}

void fb_multipart(const char *body, size_t len, const char *boundary, size_t max, fb_part_fn fn,
                  void *arg)
{
    size_t bl = strlen(boundary), off = 0, at, start = 0, given = 0, n;
    int inside = 0;
    enum delim_kind d;
    const char *l;

    if (bl == 0)
        return;
    while (at = off, fb_line_next(body, len, &off, &l, &n)) {
        if ((d = delimiter(l, n, boundary, bl)) == DELIM_NONE)
            continue;
        if (inside) {
            /* The line break before the delimiter belongs to it. */
            size_t end = at;
            if (end > start && body[end - 1] == '\n')
                end--;
            if (end > start && body[end - 1] == '\r')
                end--;
            if (given++ >= max || fn(body + start, end - start, arg) != 0)
                return;
        }
        if (d == DELIM_CLOSE)
            return;
        inside = 1;
        start = off;
    }
    if (inside && start < len && given < max)
        fn(body + start, len - start, arg);
}

void fb_copy(char *dst, size_t size, const char *src, size_t n)
{
    size_t k = 0, i;
    if (size == 0)
        return;
    while (n > 0 && *src && isspace((unsigned char)*src)) {
        src++;
        n--;
    }
    for (i = 0; i < n && src[i] && k + 1 < size; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[k++] = (c < ' ' || c == 127) ? ' ' : (char)c;
    }
    while (k > 0 && dst[k - 1] == ' ')
        k--;
    dst[k] = '\0';
}

static int addr_char(int c)
{
    return c > ' ' && c < 127 && c != '<' && c != '>' && c != '(' && c != ')' && c != ',' &&
           c != ';' && c != '"' && c != '[' && c != ']';
}

void fb_addr(const char *value, char *dst, size_t size)
{
    const char *lt = strchr(value, '<'), *gt, *at, *b, *e;

    dst[0] = '\0';
    if (lt && (gt = strchr(lt + 1, '>')) != NULL && memchr(lt + 1, '@', (size_t)(gt - lt - 1))) {
        fb_copy(dst, size, lt + 1, (size_t)(gt - lt - 1));
        return;
    }
    if ((at = strchr(value, '@')) == NULL)
        return;
    for (b = at; b > value && addr_char((unsigned char)b[-1]); b--)
        ;
    for (e = at + 1; addr_char((unsigned char)*e); e++)
        ;
    while (e > at + 1 && (e[-1] == '.' || e[-1] == ':'))
        e--; /* sentence punctuation */
    if (b < at && e > at + 1)
        fb_copy(dst, size, b, (size_t)(e - b));
}

const char *fb_after_type(const char *value)
{
    const char *semi = strchr(value, ';');
    if (semi == NULL)
        return value;
    for (semi++; isspace((unsigned char)*semi); semi++)
        ;
    return semi;
}

/* Digits at p: how many (at most max + 1 are looked at). */
static size_t ndigits(const char *p, size_t max)
{
    size_t k = 0;
    while (k <= max && isdigit((unsigned char)p[k]))
        k++;
    return k;
}

int fb_find_status(const char *t, char *out)
{
    for (const char *p = t; *p; p++) {
        size_t a, b;
        if ((*p != '2' && *p != '4' && *p != '5') || p[1] != '.')
            continue;
        if (p > t && (isalnum((unsigned char)p[-1]) || p[-1] == '.'))
            continue;
        if ((a = ndigits(p + 2, 3)) < 1 || a > 3 || p[2 + a] != '.')
            continue;
        if ((b = ndigits(p + 3 + a, 3)) < 1 || b > 3)
            continue;
        if (isalnum((unsigned char)p[3 + a + b]) ||
            (p[3 + a + b] == '.' && isdigit((unsigned char)p[4 + a + b])))
            continue;
        memcpy(out, p, 3 + a + b);
        out[3 + a + b] = '\0';
        return 1;
    }
    return 0;
}

int fb_find_code(const char *t)
{
    for (const char *p = t; *p; p++) {
        if ((*p != '2' && *p != '4' && *p != '5') || ndigits(p, 3) != 3)
            continue;
        if (p > t && (isalnum((unsigned char)p[-1]) || p[-1] == '.'))
            continue;
        if (p[3] == ' ' || p[3] == '-' || p[3] == '\0')
            return (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    }
    return 0;
}

const char *fb_strcasestr(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (str_nieq(hay, needle, n))
            return hay;
    return NULL;
}

int fb_received_qid(const char *value, char *out, size_t size)
{
    for (const char *p = value; (p = fb_strcasestr(p, " id ")) != NULL; p++) {
        const char *q = p + 4;
        size_t k = 0;
        while (isxdigit((unsigned char)q[k]) && k <= QID_LEN)
            k++;
        if (k != QID_LEN || (q[k] && q[k] != ';' && !isspace((unsigned char)q[k])))
            continue;
        if (size <= QID_LEN)
            return 0;
        memcpy(out, q, QID_LEN);
        out[QID_LEN] = '\0';
        for (k = 0; k < QID_LEN; k++) /* ours are upper case */
            out[k] = (char)toupper((unsigned char)out[k]);
        return 1;
    }
    return 0;
}
