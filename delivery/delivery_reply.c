/* delivery_reply.c - incremental, hostile-server-proof SMTP reply parser.
 *
 * See smtp_reply.h. The parser never trusts the peer: every limit is
 * checked before bytes are stored, so a server cannot make us grow
 * without bound or crash with odd bytes. */
#include "delivery/delivery_reply.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

void dlv_rparser_init(struct smtp_rparser *p)
{
    memset(p, 0, sizeof(*p));
    buf_init(&p->line, 256);
    buf_init(&p->reply.text, 256);
    buf_init(&p->reply.lines, 256);
}

void dlv_rparser_destroy(struct smtp_rparser *p)
{
    buf_destroy(&p->line);
    buf_destroy(&p->reply.text);
    buf_destroy(&p->reply.lines);
}

int dlv_rparser_pending(const struct smtp_rparser *p)
{
    return p->in_reply || p->line.len > 0;
}

size_t dlv_reply_enh_code_len(const char *s, int cls)
{
    /* class "." 1*3digit "." 1*3digit, RFC 3463 */
    size_t i = 0, n;
    if (s[0] != cls || s[1] != '.')
        return 0;
    i = 2;
    for (n = 0; n < 3 && isdigit((unsigned char)s[i]); n++)
        i++;
    if (n == 0 || s[i] != '.')
        return 0;
    i++;
    for (n = 0; n < 3 && isdigit((unsigned char)s[i]); n++)
        i++;
    if (n == 0 || (s[i] != ' ' && s[i] != '\0'))
        return 0;
    return i;
}

void dlv_reply_dsn(const struct smtp_reply *r, char *out, size_t size)
{
    if (r->enh[0])
        snprintf(out, size, "%s", r->enh);
    else
        snprintf(out, size, "%d.0.0", r->code >= 200 && r->code < 600 ? r->code / 100 : 4);
}

enum smtp_verdict dlv_reply_verdict(int code, const short *ok)
{
    for (; *ok; ok++)
        if (*ok == code)
            return SMTP_V_OK;
    if (code >= 400 && code < 500)
        return SMTP_V_TEMP;
    if (code >= 500 && code < 600)
        return SMTP_V_PERM;
    return SMTP_V_PROTO;
}

void dlv_reply_ok_text(const short *ok, buf_t *out)
{
    size_t k;
    for (k = 0; ok[k]; k++)
        buf_printf(out, "%s%d", k == 0 ? "" : ok[k + 1] ? ", " : " or ", ok[k]);
}

/* Start a new reply from its first line. */
static void reply_begin(struct smtp_reply *r, int code, const char *rest)
{
    size_t n;
    r->code = code;
    r->enh[0] = '\0';
    r->nlines = 0;
    buf_reset(&r->text);
    buf_reset(&r->lines);
    n = dlv_reply_enh_code_len(rest, '0' + code / 100);
    if (n > 0 && n < sizeof(r->enh)) {
        memcpy(r->enh, rest, n);
        r->enh[n] = '\0';
    }
}

/* One complete line (CR/LF stripped): the reply is complete, more lines
 * follow, or a protocol error. */
static enum dlv_rparser_result parse_line(struct smtp_rparser *p, const char *s, size_t len)
{
    struct smtp_reply *r = &p->reply;
    int code;
    char sep;

    if (len < 3 || !isdigit((unsigned char)s[0]) || !isdigit((unsigned char)s[1]) ||
        !isdigit((unsigned char)s[2]) || s[0] < '1' || s[0] > '5') {
        p->err = "malformed reply line";
        return SMTP_RP_ERROR;
    }
    sep = len > 3 ? s[3] : ' ';
    if (sep != ' ' && sep != '-') {
        p->err = "malformed reply line";
        return SMTP_RP_ERROR;
    }
    code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    if (!p->in_reply)
        reply_begin(r, code, len > 4 ? s + 4 : "");
    else if (code != r->code) {
        p->err = "reply code changed in a multi-line reply";
        return SMTP_RP_ERROR;
    }
    if (++r->nlines > SMTP_REPLY_LINES_MAX) {
        p->err = "too many lines in reply";
        return SMTP_RP_ERROR;
    }
    if (r->text.len)
        buf_putc(&r->text, ' ');
    buf_append(&r->text, s, len);
    if (r->nlines > 1)
        buf_putc(&r->lines, '\n');
    if (len > 4)
        buf_append(&r->lines, s + 4, len - 4);
    p->in_reply = (sep == '-');
    return p->in_reply ? SMTP_RP_MORE : SMTP_RP_REPLY;
}

/* Control characters (a lone CR, ESC, ...) would end up in log lines and
 * queue files: make them spaces, as NUL already is. */
static void sanitize(buf_t *line)
{
    size_t i;
    for (i = 0; i < line->len; i++) {
        unsigned char c = (unsigned char)line->data[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            line->data[i] = ' ';
    }
}

enum dlv_rparser_result dlv_rparser_feed(struct smtp_rparser *p, const char *data, size_t len,
                                         size_t *used)
{
    size_t i;
    enum dlv_rparser_result rc;

    if (p->err)
        return SMTP_RP_ERROR;
    for (i = 0; i < len; i++) {
        char c = data[i];
        if (c != '\n') {
            if (p->line.len > SMTP_REPLY_LINE_MAX) { /* room for the CR */
                p->err = "reply line too long";
                return SMTP_RP_ERROR;
            }
            buf_putc(&p->line, c == '\0' ? ' ' : c);
            continue;
        }
        if (p->line.len && p->line.data[p->line.len - 1] == '\r')
            buf_truncate(&p->line, p->line.len - 1);
        if (p->line.len > SMTP_REPLY_LINE_MAX) {
            p->err = "reply line too long";
            return SMTP_RP_ERROR;
        }
        sanitize(&p->line);
        rc = parse_line(p, p->line.data ? p->line.data : "", p->line.len);
        buf_reset(&p->line);
        if (rc != SMTP_RP_MORE) {
            *used = i + 1;
            return rc;
        }
    }
    *used = len;
    return SMTP_RP_MORE;
}
