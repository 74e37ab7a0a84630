/* verp.c - building VERP return paths (see verp.h). Pure string work: no
 * configuration, no I/O, so smtpd, delivery and the unit tests share it. */
#include "common/mail/verp.h"

#include <string.h>

int verp_delims_valid(const char *delims, const char *filter)
{
    return delims && strlen(delims) == 2 && delims[0] != '\0' && strchr(filter, delims[0]) &&
           strchr(filter, delims[1]);
}

/* The local part as text: a quoted string loses its quotes and escapes. */
static void local_unquoted(const char *local, size_t n, buf_t *out)
{
    if (n < 2 || local[0] != '"' || local[n - 1] != '"') {
        buf_append(out, local, n);
        return;
    }
    for (size_t i = 1; i + 1 < n; i++) {
        if (local[i] == '\\' && i + 2 < n)
            i++;
        buf_putc(out, local[i]);
    }
}

/* RFC 5321 atext, with UTF-8 bytes as RFC 6531 allows. */
static int atext(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c >= 0x80 || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static int dot_atom(const char *s, size_t n)
{
    if (n == 0 || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.' ? s[i + 1] == '.' : !atext((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

/* Append local as a local part: as it is, or as a quoted string. */
static void put_local(const buf_t *local, buf_t *out)
{
    if (dot_atom(local->data, local->len)) {
        buf_append(out, local->data, local->len);
        return;
    }
    buf_putc(out, '"');
    for (size_t i = 0; i < local->len; i++) {
        if (local->data[i] == '"' || local->data[i] == '\\')
            buf_putc(out, '\\');
        buf_putc(out, local->data[i]);
    }
    buf_putc(out, '"');
}

/* Split at the last '@' outside a quoted local part; *at = NULL if none. */
static size_t local_len(const char *addr, const char **at)
{
    int quoted = 0;
    *at = NULL;
    for (const char *p = addr; *p; p++) {
        if (quoted && *p == '\\' && p[1])
            p++;
        else if (*p == '"')
            quoted = !quoted;
        else if (*p == '@' && !quoted)
            *at = p;
    }
    return *at ? (size_t)(*at - addr) : strlen(addr);
}

void verp_encode(const char *ret, const char *rcpt, const char *delims, buf_t *out)
{
    const char *ret_at, *rcpt_at;
    size_t ret_n = local_len(ret, &ret_at), rcpt_n = local_len(rcpt, &rcpt_at);
    buf_t local = BUF_INIT;

    local_unquoted(ret, ret_n, &local);
    buf_putc(&local, delims[0]);
    local_unquoted(rcpt, rcpt_n, &local);
    if (rcpt_at) {
        buf_putc(&local, delims[1]);
        buf_puts(&local, rcpt_at + 1);
    }
    put_local(&local, out);
    if (ret_at)
        buf_puts(out, ret_at);
    buf_destroy(&local);
}
