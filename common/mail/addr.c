/* addr.c - RFC 5321 paths, domains, ESMTP parameters and RFC 3461 xtext;
 * RFC 6531 UTF-8 in local parts and domains (validated, never converted).
 *
 * These only check and split what a client sent; nothing here rewrites or
 * interprets an address beyond stripping an obsolete source route. */
#include "common/mail/addr.h"
#include "common/util/alloc.h"
#include "common/util/utf8.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define LOCAL_MAX    64
#define DOMAIN_MAX   255
#define PATH_MAX_LEN 256

static int fail(const char **err, const char *why)
{
    if (err)
        *err = why;
    return -1;
}

static int is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* Characters never allowed in an unquoted local part or domain. */
static int is_special(unsigned char c)
{
    return c == ' ' || strchr("<>()[]\\,;:\"@", c) != NULL;
}

/* Length of a quoted string starting at s[0] == '"' within n bytes, incl.
 * both quotes; 0 when unterminated or it holds a control character. */
static size_t quoted_len(const char *s, size_t n)
{
    for (size_t k = 1; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        if (is_ctl(c))
            return 0;
        if (c == '\\') {
            if (k + 1 >= n || is_ctl((unsigned char)s[k + 1]))
                return 0;
            k++;
        } else if (c == '"') {
            return k + 1;
        }
    }
    return 0;
}

static int check_local(const char *s, size_t n, const char **err)
{
    if (n == 0)
        return fail(err, "empty local part");
    if (n > LOCAL_MAX)
        return fail(err, "local part too long (more than 64 characters)");
    if (s[0] == '"') {
        size_t q = quoted_len(s, n);
        if (q == 0)
            return fail(err, "unbalanced quotes or control character in local part");
        if (q != n)
            return fail(err, "text after the quoted local part");
        return 0;
    }
    for (size_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        if (is_ctl(c))
            return fail(err, "control character in address");
        if (is_special(c))
            return fail(err, "invalid character in local part");
    }
    return 0;
}

/* A mailbox "local@domain" (or just "local", e.g. "postmaster"). */
static int check_mailbox(const char *s, size_t n, const char **err)
{
    size_t at = n;
    if (n > 0 && s[0] == '"') {
        size_t q = quoted_len(s, n);
        if (q == 0)
            return fail(err, "unbalanced quotes or control character in local part");
        at = q < n ? q : n;
        if (at < n && s[at] != '@')
            return fail(err, "text after the quoted local part");
    } else {
        const char *p = memchr(s, '@', n);
        if (p)
            at = (size_t)(p - s);
    }
    if (check_local(s, at, err) < 0)
        return -1;
    if (at == n)
        return 0;
    size_t dlen = n - at - 1;
    if (dlen == 0)
        return fail(err, "empty domain");
    if (dlen > DOMAIN_MAX)
        return fail(err, "domain too long (more than 255 characters)");
    char *d = xstrndup(s + at + 1, dlen);
    int ok = strlen(d) == dlen && addr_domain_valid_utf8(d);
    free(d);
    return ok ? 0 : fail(err, "invalid domain");
}

/* "@a,@b:" source route: returns bytes to skip, or -1. */
static long route_len(const char *s, size_t n, const char **err)
{
    if (n == 0 || s[0] != '@')
        return 0;
    const char *colon = memchr(s, ':', n);
    if (colon == NULL)
        return fail(err, "invalid source route");
    char *route = xstrndup(s, (size_t)(colon - s));
    char **parts = str_split(route, ",", NULL);
    int ok = parts[0] != NULL;
    for (char **p = parts; *p && ok; p++)
        ok = (*p)[0] == '@' && addr_domain_valid(*p + 1);
    strv_free(parts);
    free(route);
    if (!ok)
        return fail(err, "invalid source route");
    return (long)(colon - s) + 1;
}

/* RFC 6531 3.3: an address may hold UTF-8, strictly well-formed (RFC
 * 3629) and without C0/C1 control characters; whether the client may send
 * it (SMTPUTF8) is for the caller to decide. */
static int check_utf8(const char *s, size_t n, const char **err)
{
    unsigned long cp;
    for (size_t k = 0; k < n;) {
        size_t len = utf8_decode(s + k, n - k, &cp);
        if (len == 0)
            return fail(err, "malformed UTF-8 in address");
        if (utf8_is_control(cp))
            return fail(err, "control character in address");
        k += len;
    }
    return 0;
}

/* End of a bracketed path: index of the '>' matching s[0] == '<'. */
static int find_close(const char *s, size_t *close, const char **err)
{
    for (size_t k = 1; s[k]; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c == '"') {
            size_t q = quoted_len(s + k, strlen(s + k));
            if (q == 0)
                return fail(err, "unbalanced quotes or control character in address");
            k += q - 1;
        } else if (c == '>') {
            *close = k;
            return 0;
        } else if (c == '<') {
            return fail(err, "unbalanced angle brackets");
        }
    }
    return fail(err, "unbalanced angle brackets (missing '>')");
}

/* Unbracketed address (allow_bare): ends at the first space outside quotes. */
static size_t bare_len(const char *s)
{
    size_t k = 0;
    while (s[k] && s[k] != ' ') {
        if (s[k] == '"') {
            size_t q = quoted_len(s + k, strlen(s + k));
            k += q ? q : strlen(s + k);
        } else {
            k++;
        }
    }
    return k;
}

static int path_body(const char *s, size_t n, int allow_null, buf_t *addr, const char **err)
{
    long skip = route_len(s, n, err);
    if (skip < 0)
        return -1;
    s += skip;
    n -= (size_t)skip;
    if (n == 0) {
        if (skip > 0 || !allow_null)
            return fail(err, skip > 0 ? "source route without mailbox"
                                      : "null address not allowed here");
        buf_reset(addr);
        return 0;
    }
    if (n + 2 > PATH_MAX_LEN)
        return fail(err, "address too long (more than 256 characters)");
    if (check_mailbox(s, n, err) < 0)
        return -1;
    buf_reset(addr);
    buf_append(addr, s, n);
    return 0;
}

int addr_parse_path(const char *arg, int allow_null, int allow_bare, buf_t *addr,
                    const char **params, const char **err)
{
    const char *p = arg;
    while (*p == ' ' || *p == '\t')
        p++;
    const char *body, *rest;
    size_t n;
    if (*p == '<') {
        size_t close;
        if (find_close(p, &close, err) < 0)
            return -1;
        body = p + 1;
        n = close - 1;
        rest = p + close + 1;
    } else {
        if (!allow_bare || *p == '\0')
            return fail(err, *p ? "address must be enclosed in <>" : "missing address");
        n = bare_len(p);
        body = p;
        rest = p + n;
    }
    if (*rest != '\0' && *rest != ' ')
        return fail(err, "text after the address must be separated by a space");
    if (check_utf8(body, n, err) < 0)
        return -1;
    if (path_body(body, n, allow_null, addr, err) < 0)
        return -1;
    while (*rest == ' ')
        rest++;
    if (params)
        *params = rest;
    return 0;
}

int addr_split(const char *addr, buf_t *local, buf_t *domain)
{
    size_t at = 0, n = strlen(addr);
    int found = 0, inq = 0;
    for (size_t k = 0; k < n; k++) {
        if (inq && addr[k] == '\\' && k + 1 < n)
            k++;
        else if (addr[k] == '"')
            inq = !inq;
        else if (!inq && addr[k] == '@') {
            at = k;
            found = 1;
        }
    }
    buf_reset(local);
    buf_reset(domain);
    if (!found) {
        buf_puts(local, addr);
        return -1;
    }
    buf_append(local, addr, at);
    buf_puts(domain, addr + at + 1);
    if (domain->data)
        str_lower(domain->data);
    return 0;
}

void addr_domain(const char *addr, buf_t *out)
{
    buf_t local = BUF_INIT;
    if (addr_split(addr, &local, out) < 0)
        buf_reset(out);
    buf_destroy(&local);
}

static int literal_valid(const char *d)
{
    size_t n = strlen(d);
    if (n < 3 || d[n - 1] != ']' || n > DOMAIN_MAX)
        return 0;
    char tmp[DOMAIN_MAX + 1];
    memcpy(tmp, d + 1, n - 2);
    tmp[n - 2] = '\0';
    unsigned char bin[16];
    if (str_nieq(tmp, "IPv6:", 5))
        return inet_pton(AF_INET6, tmp + 5, bin) == 1;
    return inet_pton(AF_INET, tmp, bin) == 1;
}

/* Letters, digits, hyphens (not first or last), at most 63 characters a
 * label; with utf8, also any non-control non-ASCII character (a U-label,
 * checked for form only: no IDNA tables here). */
static int name_valid(const char *domain, int utf8)
{
    size_t n = strlen(domain), label = 0;
    unsigned long cp;
    if (n == 0 || n > (utf8 ? DOMAIN_MAX : 253))
        return 0;
    for (size_t k = 0; k <= n;) {
        char c = domain[k];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || domain[k - 1] == '-')
                return 0;
            label = 0;
            k++;
            continue;
        }
        size_t len = 1;
        if ((unsigned char)c >= 0x80) {
            len = utf8 ? utf8_decode(domain + k, n - k, &cp) : 0;
            if (len == 0 || utf8_is_control(cp))
                return 0;
        } else if (!isalnum((unsigned char)c) && c != '-') {
            return 0;
        } else if (c == '-' && label == 0) {
            return 0;
        }
        label++;
        k += len;
    }
    return 1;
}

int addr_domain_valid(const char *domain)
{
    return domain[0] == '[' ? literal_valid(domain) : name_valid(domain, 0);
}

int addr_domain_valid_utf8(const char *domain)
{
    return domain[0] == '[' ? literal_valid(domain) : name_valid(domain, 1);
}

int addr_domain_fqdn(const char *domain)
{
    return domain[0] != '[' && strchr(domain, '.') != NULL && addr_domain_valid_utf8(domain);
}

int addr_is_ascii(const char *s)
{
    return !utf8_has_8bit(s, strlen(s));
}

enum addr_param addr_next_param(const char **pp, buf_t *name, buf_t *value)
{
    const char *p = *pp;
    while (*p == ' ')
        p++;
    if (*p == '\0') {
        *pp = p;
        return ADDR_PARAM_END;
    }
    size_t k = 0;
    while (isalnum((unsigned char)p[k]) || (k > 0 && p[k] == '-'))
        k++;
    if (k == 0)
        return ADDR_PARAM_MALFORMED;
    buf_reset(name);
    buf_append(name, p, k);
    buf_reset(value);
    buf_reserve(value, 0);
    p += k;
    if (*p == '=') {
        p++;
        size_t v = 0;
        while (p[v] >= 33 && p[v] <= 126 && p[v] != '=')
            v++;
        if (v == 0)
            return ADDR_PARAM_MALFORMED;
        buf_append(value, p, v);
        p += v;
    }
    if (*p != '\0' && *p != ' ')
        return ADDR_PARAM_MALFORMED;
    *pp = p;
    return ADDR_PARAM_FOUND;
}

int xtext_decode(const char *s, buf_t *out)
{
    buf_reset(out);
    buf_reserve(out, strlen(s));
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 33 || c > 126 || c == '=')
            return -1;
        if (c != '+') {
            buf_putc(out, c);
            continue;
        }
        int h = p[1] ? str_hexval((unsigned char)p[1]) : -1;
        int l = h >= 0 && p[2] ? str_hexval((unsigned char)p[2]) : -1;
        if (h < 0 || l < 0 || (h == 0 && l == 0))
            return -1;
        buf_putc(out, h * 16 + l);
        p += 2;
    }
    return 0;
}

void xtext_encode(const char *s, buf_t *out)
{
    static const char hex[] = "0123456789ABCDEF";
    buf_reserve(out, strlen(s));
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 33 || *p > 126 || *p == '+' || *p == '=') {
            char e[3] = { '+', hex[*p >> 4], hex[*p & 15] };
            buf_append(out, e, 3);
        } else {
            buf_putc(out, *p);
        }
    }
}
