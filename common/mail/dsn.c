/* dsn.c - build RFC 3464 delivery status notifications (multipart/report).
 *
 * Layout follows Postfix's bounce messages so people and tools that read
 * those read ours: a text/plain explanation, a message/delivery-status
 * part, and the original message (or its headers). Every value that came
 * from the network goes through the dsn_safe_* helpers first.
 *
 * For a message that was sent with SMTPUTF8 the report is RFC 6533's
 * "global" form, which may carry UTF-8: message/global-delivery-status
 * (UTF-8 addresses as "utf-8; " unitext), message/global or
 * message/global-headers for the returned content, a utf-8 text part.
 * Everything else keeps the RFC 3464 form. */
#include "common/mail/dsn.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/util/alloc.h"
#include "common/util/utf8.h"

#define FIELD_MAX 900 /* keep every generated line below 998 bytes */

/* ---------------------------------------------------------------- helpers */

/* At most max bytes (cut at a character boundary); UTF-8 kept, control
 * characters and malformed bytes replaced. */
static void safe_copy(buf_t *out, const char *s, size_t max, int repl)
{
    size_t n = s ? strlen(s) : 0;
    if (max && n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    if (n)
        utf8_sanitize(out, s, n, (char)repl);
}

void dsn_safe_addr(buf_t *out, const char *s, size_t max)
{
    safe_copy(out, s, max, '?');
}

void dsn_safe_text(buf_t *out, const char *s, size_t max)
{
    safe_copy(out, s, max, ' ');
}

static int printable_ascii(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

/* RFC 3461 xtext: '+', '=', and bytes outside 0x21..0x7e as "+XX". */
static void xtext_enc(buf_t *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e || c == '+' || c == '=') {
            buf_putc(out, '+');
            buf_putc(out, hex[c >> 4]);
            buf_putc(out, hex[c & 15]);
        } else {
            buf_putc(out, c);
        }
    }
}

/* RFC 6533 utf-8-addr-unitext: UTF-8 as is; SP, '+', '=', '\\' and
 * controls (none reach here unreplaced) as \x{HH}. */
static void unitext_enc(buf_t *out, const char *s)
{
    buf_t safe = BUF_INIT;
    dsn_safe_addr(&safe, s, FIELD_MAX / 2);
    for (size_t i = 0; i < safe.len; i++) {
        unsigned char c = (unsigned char)safe.data[i];
        if (c == ' ' || c == '+' || c == '=' || c == '\\')
            buf_printf(out, "\\x{%02X}", c);
        else
            buf_putc(out, c);
    }
    buf_destroy(&safe);
}

/* "rfc822; addr", or for a UTF-8 address in a global report "utf-8; ..." */
static void addr_field(const struct dsn_report *r, const char *addr, buf_t *out)
{
    if (r->env->smtputf8 && addr && utf8_has_8bit(addr, strlen(addr))) {
        buf_puts(out, "utf-8; ");
        unitext_enc(out, addr);
    } else {
        buf_puts(out, "rfc822; ");
        dsn_safe_addr(out, addr, FIELD_MAX);
    }
}

void dsn_safe_xtext(buf_t *out, const char *s, size_t len)
{
    if (len > FIELD_MAX / 3)
        len = FIELD_MAX / 3;
    if (printable_ascii(s, len))
        buf_append(out, s, len);
    else
        xtext_enc(out, s, len);
}

/* Decode xtext leniently (a malformed escape is kept literally): the
 * result is re-checked by dsn_safe_xtext anyway. */
static void xtext_dec(buf_t *out, const char *s)
{
    for (; *s; s++) {
        int h, l;
        if (*s == '+' && (h = str_hexval(s[1])) >= 0 && (l = str_hexval(s[2])) >= 0) {
            buf_putc(out, h * 16 + l);
            s += 2;
        } else {
            buf_putc(out, *s);
        }
    }
}

void dsn_date(buf_t *out, long long t)
{
    static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char *const mons[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    time_t tt = (time_t)t;
    struct tm tm;
    char zone[16];
    localtime_r(&tt, &tm);
    /* %z is locale independent; names are spelled out to stay so too. */
    strftime(zone, sizeof zone, "%z", &tm);
    buf_printf(out, "%s, %d %s %d %02d:%02d:%02d %s", days[tm.tm_wday % 7], tm.tm_mday,
               mons[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, zone);
}

int dsn_kind_notify(int kind)
{
    static const int bits[] = { NOTIFY_FAILURE, NOTIFY_DELAY, NOTIFY_SUCCESS };
    return (kind >= 0 && kind <= DSN_SUCCESS) ? bits[kind] : 0;
}

const char *dsn_kind_name(int kind)
{
    static const char *const names[] = { "failure", "delay", "success" };
    return (kind >= 0 && kind <= DSN_SUCCESS) ? names[kind] : "?";
}

int dsn_kind_from_request(const char *req)
{
    static const char *const reqs[] = { "bounce", "delay", "success" };
    for (int k = 0; req && k <= DSN_SUCCESS; k++)
        if (strcmp(req, reqs[k]) == 0)
            return k;
    return -1;
}

int dsn_rcpt_wants(const struct qrcpt *r, int kind)
{
    int bit = dsn_kind_notify(kind);
    if (bit == 0 || (r->notify & NOTIFY_NEVER) || (r->dsn_sent & bit))
        return 0;
    if (r->notify == 0) /* RFC 3461 default: FAILURE and DELAY */
        return kind != DSN_SUCCESS;
    return (r->notify & bit) != 0;
}

/* "X.Y.Z" with the expected class digit, else the kind's default. */
static const char *status_code(const struct dsn_report *r, const struct qrcpt *q)
{
    static const char *const defaults[] = { "5.0.0", "4.0.0", "2.0.0" };
    const char *d = q->dsn;
    int ok = d && (d[0] == '2' || d[0] == '4' || d[0] == '5') && d[1] == '.';
    for (const char *p = d ? d + 2 : NULL; ok && *p; p++)
        ok = (*p >= '0' && *p <= '9') || *p == '.';
    if (ok && strlen(d) > 12)
        ok = 0;
    if (r->kind == DSN_FAILURE) {
        if (ok && (d[0] == '5' || d[0] == '4'))
            return d; /* 4.x.x: expired while deferred */
        return q->status == QR_DEFERRED ? "4.4.7" : defaults[0];
    }
    if (r->kind == DSN_DELAY)
        return ok && d[0] == '4' ? d : defaults[1];
    return ok && d[0] == '2' ? d : defaults[2];
}

/* Does a reason carry a remote SMTP reply? ("host x said: 550 ...", or
 * a bare "550 ..."). Returns the reply text or NULL. */
static const char *remote_reply(const char *reason)
{
    const char *p;
    if (!reason)
        return NULL;
    if ((p = strstr(reason, " said: ")) != NULL)
        return p + 7;
    if (reason[0] >= '2' && reason[0] <= '5' && reason[1] >= '0' && reason[1] <= '9' &&
        reason[2] >= '0' && reason[2] <= '9' &&
        (reason[3] == ' ' || reason[3] == '-' || !reason[3]))
        return reason;
    return NULL;
}

/* Host name part of "host[ip]:port"; empty for "none". */
static void relay_host(buf_t *out, const char *relay)
{
    if (!relay || !*relay || strcmp(relay, "none") == 0)
        return;
    size_t n = strcspn(relay, "[:");
    buf_t tmp = BUF_INIT;
    buf_append(&tmp, relay, n);
    dsn_safe_addr(out, buf_str(&tmp), FIELD_MAX);
    buf_destroy(&tmp);
}

static void duration(buf_t *out, long long secs)
{
    static const struct {
        long long s;
        const char *unit;
    } units[] = {
        { 86400, "day" },
        { 3600, "hour" },
        { 60, "minute" },
        { 1, "second" },
    };
    if (secs < 1)
        secs = 1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (secs >= units[i].s || units[i].s == 1) {
            long long n = secs / units[i].s;
            buf_printf(out, "%lld %s%s", n, units[i].unit, n == 1 ? "" : "s");
            return;
        }
    }
}

/* ---------------------------------------------------------------- headers */

static const char *const subjects[] = {
    "Undelivered Mail Returned to Sender",
    "Delayed Mail (still being retried)",
    "Successful Mail Delivery Report",
};

static void top_headers(const struct dsn_report *r, const char *boundary, buf_t *out)
{
    buf_puts(out, "From: MAILER-DAEMON@");
    dsn_safe_addr(out, r->myhostname, FIELD_MAX);
    buf_puts(out, " (Mail Delivery System)\r\nTo: <");
    dsn_safe_addr(out, r->env->sender, FIELD_MAX);
    buf_printf(out, ">\r\nSubject: %s\r\nDate: ", subjects[r->kind]);
    dsn_date(out, r->now);
    buf_puts(out, "\r\nMessage-Id: <");
    dsn_safe_addr(out, r->new_id, 64);
    buf_putc(out, '@');
    dsn_safe_addr(out, r->myhostname, FIELD_MAX);
    buf_puts(out, ">\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
    buf_printf(out,
               "Content-Type: multipart/report; report-type=%sdelivery-status;\r\n"
               "\tboundary=\"%s\"\r\n",
               r->env->smtputf8 ? "global-" : "", boundary);
    buf_puts(out, "Content-Transfer-Encoding: 8bit\r\n\r\n"
                  "This is a MIME-encapsulated message.\r\n\r\n");
}

/* --------------------------------------------------------- part 1: text */

static void text_intro(const struct dsn_report *r, buf_t *out)
{
    buf_puts(out, "This is the mail system at host ");
    dsn_safe_addr(out, r->myhostname, FIELD_MAX);
    buf_puts(out, ".\r\n\r\n");
    if (r->kind == DSN_FAILURE) {
        buf_puts(out, "I'm sorry to have to inform you that your message could not\r\n"
                      "be delivered to one or more recipients. It's attached below.\r\n\r\n"
                      "For further assistance, please send mail to postmaster.\r\n\r\n"
                      "If you do so, please include this problem report. You can\r\n"
                      "delete your own text from the attached returned message.\r\n");
    } else if (r->kind == DSN_DELAY) {
        buf_puts(out, "####################################################################\r\n"
                      "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n"
                      "####################################################################\r\n\r\n"
                      "Your message could not be delivered for more than ");
        duration(out, r->now - r->env->arrival.tv_sec);
        buf_puts(out, ".\r\n");
        if (r->retry_until > 0) {
            buf_puts(out, "It will be retried until it is ");
            duration(out, r->retry_until - r->env->arrival.tv_sec);
            buf_puts(out, " old.\r\n");
        }
    } else {
        buf_puts(out, "Your message was successfully delivered to the destination(s)\r\n"
                      "listed below. If the message was delivered to mailbox you will\r\n"
                      "receive no further notifications. Otherwise you may still receive\r\n"
                      "notifications of mail delivery errors from other systems.\r\n");
    }
    buf_puts(out, "\r\n                   The mail system\r\n");
}

static void text_part(const struct dsn_report *r, const char *boundary, buf_t *out)
{
    buf_printf(out,
               "--%s\r\nContent-Description: Notification\r\n"
               "Content-Type: text/plain; charset=%s\r\n\r\n",
               boundary, r->env->smtputf8 ? "utf-8" : "us-ascii");
    text_intro(r, out);
    for (size_t i = 0; i < r->nidx; i++) {
        const struct qrcpt *q = &r->env->rcpt[r->idx[i]];
        buf_puts(out, "\r\n<");
        dsn_safe_addr(out, q->addr, FIELD_MAX / 3);
        buf_puts(out, ">: ");
        if (r->kind == DSN_SUCCESS && q->relay && strcmp(q->relay, "none") != 0) {
            buf_puts(out, "delivery via ");
            dsn_safe_text(out, q->relay, FIELD_MAX / 3);
            buf_puts(out, ": ");
        }
        dsn_safe_text(out, q->reason && *q->reason ? q->reason : "no further information",
                      FIELD_MAX / 2);
        buf_puts(out, "\r\n");
        if (r->kind != DSN_SUCCESS && q->category && *q->category) {
            buf_puts(out, "    (category: ");
            dsn_safe_addr(out, q->category, 32);
            buf_puts(out, ")\r\n");
        }
    }
    buf_puts(out, "\r\n");
}

/* ------------------------------------------- part 2: message/delivery-status */

static void message_fields(const struct dsn_report *r, buf_t *out)
{
    buf_puts(out, "Reporting-MTA: dns; ");
    dsn_safe_addr(out, r->myhostname, FIELD_MAX);
    buf_puts(out, "\r\nX-Postino-Queue-ID: ");
    dsn_safe_addr(out, r->env->id, QID_LEN);
    buf_puts(out, "\r\nX-Postino-Sender: ");
    addr_field(r, r->env->sender, out);
    buf_puts(out, "\r\nArrival-Date: ");
    dsn_date(out, r->env->arrival.tv_sec);
    buf_puts(out, "\r\n");
    if (r->env->envid && *r->env->envid) {
        buf_puts(out, "Original-Envelope-Id: ");
        dsn_safe_xtext(out, r->env->envid, strlen(r->env->envid));
        buf_puts(out, "\r\n");
    }
}

static const char *const actions[] = { "failed", "delayed", "delivered" };

/* ORCPT is stored as "type;xtext": decode the xtext, then re-encode it
 * only when the address is not plain printable ASCII. */
static void orcpt_field(const char *orcpt, buf_t *out)
{
    const char *semi = strchr(orcpt, ';');
    buf_t type = BUF_INIT, addr = BUF_INIT;
    if (semi)
        buf_append(&type, orcpt, (size_t)(semi - orcpt));
    buf_puts(&type, ""); /* never NULL data */
    if (*str_trim(type.data) == 0)
        buf_set(&type, "rfc822");
    xtext_dec(&addr, semi ? semi + 1 : orcpt);
    buf_puts(out, "Original-Recipient: ");
    dsn_safe_addr(out, str_trim(type.data), 32);
    buf_puts(out, "; ");
    dsn_safe_xtext(out, addr.data, addr.len);
    buf_puts(out, "\r\n");
    buf_destroy(&type);
    buf_destroy(&addr);
}

static void rcpt_fields(const struct dsn_report *r, const struct qrcpt *q, buf_t *out)
{
    buf_t host = BUF_INIT;
    const char *reply = remote_reply(q->reason);
    buf_puts(out, "\r\nFinal-Recipient: ");
    addr_field(r, q->addr, out);
    buf_puts(out, "\r\n");
    if (q->orcpt && *q->orcpt)
        orcpt_field(q->orcpt, out);
    buf_printf(out, "Action: %s\r\nStatus: %s\r\n", actions[r->kind], status_code(r, q));
    relay_host(&host, q->relay);
    if (host.len)
        buf_printf(out, "Remote-MTA: dns; %s\r\n", host.data);
    if (reply) {
        buf_puts(out, "Diagnostic-Code: smtp; ");
        dsn_safe_text(out, reply, FIELD_MAX);
        buf_puts(out, "\r\n");
    } else if (q->reason && *q->reason) {
        buf_puts(out, "Diagnostic-Code: X-Postino; ");
        dsn_safe_text(out, q->reason, FIELD_MAX);
        buf_puts(out, "\r\n");
    }
    /* why it failed, as the bounce classifier saw it (bclass.h) */
    if (r->kind != DSN_SUCCESS && q->category && *q->category) {
        buf_puts(out, "X-Postino-Category: ");
        dsn_safe_addr(out, q->category, 32);
        buf_puts(out, "\r\n");
    }
    if (q->when > 0) {
        buf_puts(out, "Last-Attempt-Date: ");
        dsn_date(out, q->when);
        buf_puts(out, "\r\n");
    }
    if (r->kind == DSN_DELAY && r->retry_until > 0) {
        buf_puts(out, "Will-Retry-Until: ");
        dsn_date(out, r->retry_until);
        buf_puts(out, "\r\n");
    }
    buf_destroy(&host);
}

static void status_part(const struct dsn_report *r, const char *boundary, buf_t *out)
{
    buf_printf(out,
               "--%s\r\nContent-Description: Delivery report\r\n"
               "Content-Type: message/%sdelivery-status\r\n\r\n",
               boundary, r->env->smtputf8 ? "global-" : "");
    message_fields(r, out);
    for (size_t i = 0; i < r->nidx; i++)
        rcpt_fields(r, &r->env->rcpt[r->idx[i]], out);
    buf_puts(out, "\r\n");
}

/* ------------------------------------------------- part 3: the original */

/* Length of the header section (through the CRLF of the last header). */
static size_t header_len(const char *c, size_t len, int whole)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (c[i] == '\n' &&
            (c[i + 1] == '\n' || (c[i + 1] == '\r' && i + 2 < len && c[i + 2] == '\n')))
            return i + 1;
        if (i == 0 && (c[0] == '\n' || (c[0] == '\r' && c[1] == '\n')))
            return 0; /* no headers at all */
    }
    if (whole)
        return len;
    while (len > 0 && c[len - 1] != '\n') /* cut a prefix at a line end */
        len--;
    return len;
}

static int has_8bit(const char *c, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)c[i] & 0x80)
            return 1;
    return 0;
}

static void original_part(const struct dsn_report *r, const char *boundary, buf_t *out)
{
    int whole = (long long)r->content_len == r->orig_len;
    int full = whole && r->env->ret != RET_HDRS;
    size_t len = full ? r->content_len : header_len(r->content, r->content_len, whole);
    const char *desc = full ? "Undelivered Message" : "Undelivered Message Headers";

    if (r->kind != DSN_FAILURE)
        desc = full ? "Message" : "Message Headers";
    const char *type = full ? "message/rfc822" : "text/rfc822-headers";
    if (r->env->smtputf8)
        type = full ? "message/global" : "message/global-headers";
    buf_printf(out, "--%s\r\nContent-Description: %s\r\nContent-Type: %s\r\n", boundary, desc,
               type);
    if (has_8bit(r->content, len))
        buf_puts(out, "Content-Transfer-Encoding: 8bit\r\n");
    buf_puts(out, "\r\n");
    buf_append(out, r->content, len);
    if (len > 0 && r->content[len - 1] != '\n')
        buf_puts(out, "\r\n");
    buf_puts(out, "\r\n");
}

/* Boundary from the new id, lengthened until it does not occur in the
 * returned content (which an attacker could have crafted). */
static void make_boundary(const struct dsn_report *r, buf_t *b)
{
    buf_reset(b);
    buf_puts(b, "");
    dsn_safe_addr(b, r->new_id, 64);
    buf_printf(b, ".%lld/", r->now);
    for (const char *p = r->myhostname; p && *p; p++)
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '.' || *p == '-')
            buf_putc(b, *p);
    while (r->content_len >= b->len && memmem(r->content, r->content_len, b->data, b->len))
        buf_puts(b, ".x");
}

void dsn_build(const struct dsn_report *r, buf_t *out)
{
    buf_t boundary = BUF_INIT;
    if (r->kind < DSN_FAILURE || r->kind > DSN_SUCCESS)
        return;
    make_boundary(r, &boundary);
    top_headers(r, boundary.data, out);
    text_part(r, boundary.data, out);
    status_part(r, boundary.data, out);
    original_part(r, boundary.data, out);
    buf_printf(out, "--%s--\r\n", boundary.data);
    buf_destroy(&boundary);
}
