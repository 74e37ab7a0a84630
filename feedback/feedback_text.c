/* feedback_text.c - bounces that are text for people, not RFC 3464.
 *
 * Each shape is known by a sentence its software always writes, and its
 * recipients by how it lays them out:
 *   qmail     "Hi. This is the qmail-send program at ..."; "<addr>:" on a
 *             line, the reason on the lines after it up to an empty line
 *   Exim      "This message was created automatically by mail delivery
 *             software."; "  addr" indented two, the reason indented four
 *   Postfix   "This is the mail system at host ..."; "<addr>: reason",
 *             continued on indented lines
 *   Exchange  "Delivery has failed to these recipients or groups:",
 *             "Diagnostic information for administrators:", "Your message
 *             to addr couldn't be delivered"; the reason in "Remote Server
 *             returned '...'" or "#550 5.1.1 ... ##"
 *   text      anything else that says it is about a failed delivery and
 *             quotes an SMTP or enhanced status code
 * A text that matches none is not a bounce as far as we can tell (an
 * auto-reply, say): the caller drops it as unrecognised. */
#include "feedback/feedback_text.h"

#include <ctype.h>
#include <string.h>

#include "common/util/buf.h"
#include "feedback/feedback_mime.h"

/* Lines of the text one at a time, as NUL-terminated copies. */
struct lines {
    const char *s;
    size_t len, off;
    buf_t cur;
};

static int line_next(struct lines *ls)
{
    const char *l;
    size_t n;
    if (!fb_line_next(ls->s, ls->len, &ls->off, &l, &n))
        return 0;
    buf_reset(&ls->cur);
    buf_append(&ls->cur, l, n > FB_VALUE_MAX ? FB_VALUE_MAX : n);
    for (size_t i = 0; i < ls->cur.len; i++)
        if (ls->cur.data[i] == '\0')
            ls->cur.data[i] = ' ';
    return 1;
}

static const char *line_str(const struct lines *ls)
{
    return buf_str(&ls->cur);
}

static size_t indent(const char *l)
{
    size_t k = 0;
    while (l[k] == ' ' || l[k] == '\t')
        k++;
    return k;
}

static int blank(const char *l)
{
    return l[indent(l)] == '\0';
}

/* The recipient being collected and its reason text. */
struct collect {
    struct fb_report *r;
    struct fb_rcpt *cur;
    buf_t reason;
    const char *action; /* "failed" or "delayed" for every recipient */
};

static void c_finish(struct collect *c)
{
    if (c->cur) {
        fb_copy(c->cur->diag, sizeof(c->cur->diag), buf_str(&c->reason), c->reason.len);
        str_lcpy(c->cur->action, c->action, sizeof(c->cur->action));
    }
    c->cur = NULL;
    buf_reset(&c->reason);
}

static void c_start(struct collect *c, const char *addr_text)
{
    char a[FB_ADDR_MAX];
    c_finish(c);
    fb_addr(addr_text, a, sizeof(a));
    if (!a[0] || (c->cur = fb_rcpt_add(c->r)) == NULL)
        return;
    str_lcpy(c->cur->final_rcpt, a, sizeof(c->cur->final_rcpt));
}

static void c_reason(struct collect *c, const char *text)
{
    while (isspace((unsigned char)*text))
        text++;
    if (!c->cur || !*text || c->reason.len >= FB_TEXT_MAX)
        return;
    if (c->reason.len)
        buf_putc(&c->reason, ' ');
    buf_puts(&c->reason, text);
}

/* "<addr>:" at the start of a line: the text after the colon, or NULL. */
static const char *angle_start(const char *l)
{
    const char *gt;
    if (l[0] != '<' || (gt = strchr(l, '>')) == NULL || gt[1] != ':')
        return NULL;
    if (memchr(l, '@', (size_t)(gt - l)) == NULL)
        return NULL;
    return gt + 2;
}

static void qmail_line(struct collect *c, const char *l, int *stop)
{
    if (strncmp(l, "--- ", 4) == 0)
        *stop = 1;
    else if (angle_start(l))
        c_start(c, l);
    else if (blank(l))
        c_finish(c);
    else
        c_reason(c, l);
}

static void postfix_line(struct collect *c, const char *l, int *stop)
{
    const char *rest = angle_start(l);
    if (rest) {
        c_start(c, l);
        c_reason(c, rest);
    } else if (indent(l) > 0 && !blank(l)) {
        c_reason(c, l);
    } else {
        c_finish(c);
    }
}

/* "  addr" (indent two or three, one word with '@') starts a recipient. */
static void exim_line(struct collect *c, const char *l, int *stop)
{
    size_t in = indent(l);
    if (strncmp(l, "------", 6) == 0) {
        *stop = 1;
    } else if (in >= 2 && in < 4 && strchr(l, '@') && !strpbrk(l + in, " \t")) {
        c_start(c, l);
    } else if (in >= 4) {
        c_reason(c, l);
    } else if (!blank(l)) {
        c_finish(c);
    }
}

/* "Remote Server returned '550 5.1.1 ...'" or "#550 5.1.1 ... ##". */
static int exchange_reason(const char *l, buf_t *out)
{
    const char *p = fb_strcasestr(l, "Remote Server returned '"), *e;
    if (p) {
        p += strlen("Remote Server returned '");
        e = strrchr(p, '\'');
        buf_append(out, p, e && e > p ? (size_t)(e - p) : strlen(p));
        return 1;
    }
    p = l + indent(l);
    if (p[0] == '#' && isdigit((unsigned char)p[1])) {
        e = strstr(p, "##");
        buf_append(out, p + 1, e ? (size_t)(e - p - 1) : strlen(p + 1));
        return 1;
    }
    return 0;
}

static void exchange_line(struct collect *c, const char *l, int *stop)
{
    const char *t = l + indent(l);
    buf_t why = BUF_INIT;
    if (str_nieq(t, "Original message headers", 24)) {
        *stop = 1;
    } else if (exchange_reason(t, &why)) {
        if (c->cur) {
            buf_reset(&c->reason); /* the remote text beats the prose */
            c_reason(c, buf_str(&why));
        }
    } else if (strchr(t, '@') && (!strpbrk(t, " \t") || strchr(t, '(')) && strlen(t) < 300) {
        c_start(c, t);
    } else if (!blank(t) && c->cur && c->reason.len == 0) {
        c_reason(c, t);
    }
    buf_destroy(&why);
}

/* Office 365 names the recipient in a sentence and the reason once. */
static void exchange_sentence(struct lines *ls, struct collect *c)
{
    const char *p;
    buf_t why = BUF_INIT;
    ls->off = 0;
    while (line_next(ls)) {
        const char *l = line_str(ls);
        if ((p = fb_strcasestr(l, "Your message to ")) != NULL && fb_strcasestr(l, "delivered"))
            c_start(c, p + 16);
        else if (!why.len)
            exchange_reason(l, &why);
    }
    if (c->cur)
        c_reason(c, buf_str(&why));
    c_finish(c);
    buf_destroy(&why);
}

typedef void (*line_fn)(struct collect *c, const char *l, int *stop);

/* Run fn over the lines after the first one containing `from`. */
static void scan(struct lines *ls, struct collect *c, const char *from, line_fn fn)
{
    int stop = 0, on = from == NULL;
    ls->off = 0;
    while (!stop && line_next(ls)) {
        if (!on) {
            on = fb_strcasestr(line_str(ls), from) != NULL;
            continue;
        }
        fn(c, line_str(ls), &stop);
    }
    c_finish(c);
}

static int has(const char *text, const char *what)
{
    return fb_strcasestr(text, what) != NULL;
}

/* Which shape, then its recipients. */
static enum fb_shape known_shapes(const char *text, struct lines *ls, struct collect *c)
{
    if (has(text, "This is the qmail-send program")) {
        scan(ls, c, "qmail-send program", qmail_line);
        return FB_SHAPE_QMAIL;
    }
    if (has(text, "created automatically by mail delivery software")) {
        if (has(text, "has not yet been delivered"))
            c->action = "delayed";
        scan(ls, c, "mail delivery software", exim_line);
        return FB_SHAPE_EXIM;
    }
    if (has(text, "This is the mail system at host")) {
        if (has(text, "Delayed Mail") || has(text, "could not be delivered for"))
            c->action = "delayed";
        scan(ls, c, "This is the mail system at host", postfix_line);
        return FB_SHAPE_POSTFIX;
    }
    if (has(text, "Diagnostic information for administrators")) {
        scan(ls, c, "Diagnostic information for administrators", exchange_line);
        return FB_SHAPE_EXCHANGE;
    }
    if (has(text, "Delivery has failed to these recipients")) {
        scan(ls, c, "Delivery has failed to these recipients", exchange_line);
        return FB_SHAPE_EXCHANGE;
    }
    if (has(text, "couldn't be delivered") || has(text, "could not be delivered to")) {
        exchange_sentence(ls, c);
        if (c->r->nrcpt > 0)
            return FB_SHAPE_EXCHANGE;
    }
    return FB_SHAPE_NONE;
}

/* Where a quoted original message starts, the bounce's own text ends. */
static int quote_starts(const char *l)
{
    return str_nieq(l, "Received:", 9) || str_nieq(l, "Return-Path:", 12) ||
           strncmp(l, "--- ", 4) == 0 || strncmp(l, "-----", 5) == 0;
}

/* Any other text: it must say it is about a failed delivery and quote a
 * code; that line is the reason, an address on it the recipient. */
static enum fb_shape plain_text(const char *text, struct lines *ls, struct collect *c)
{
    static const char *const words[] = { "undeliver",    "could not be delivered",
                                         "delivery",     "failed",
                                         "rejected",     "returned mail",
                                         "user unknown", "unknown user",
                                         "not exist",    "mailbox unavailable" };
    int said = 0;
    char st[16];
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]) && !said; i++)
        said = has(text, words[i]);
    if (!said)
        return FB_SHAPE_NONE;
    ls->off = 0;
    while (line_next(ls)) {
        const char *l = line_str(ls);
        int code;
        st[0] = '\0';
        if (quote_starts(l))
            break;
        code = fb_find_code(l);
        if (!fb_find_status(l, st) && code < 400)
            continue;
        if ((c->cur = fb_rcpt_add(c->r)) == NULL)
            return FB_SHAPE_NONE;
        fb_addr(l, c->cur->final_rcpt, sizeof(c->cur->final_rcpt));
        c_reason(c, l);
        c->action = (st[0] ? st[0] : '0' + code / 100) == '4' ? "delayed" : "failed";
        c_finish(c);
        return FB_SHAPE_TEXT;
    }
    return FB_SHAPE_NONE;
}

enum fb_shape fb_text_parse(const char *text, size_t n, struct fb_report *r)
{
    struct lines ls = { text, n, 0, BUF_INIT };
    struct collect c = { r, NULL, BUF_INIT, "failed" };
    buf_t z = BUF_INIT;
    enum fb_shape s;

    /* The shape sentences are searched in a NUL-free copy. */
    buf_append(&z, text, n);
    for (size_t i = 0; i < z.len; i++)
        if (z.data[i] == '\0')
            z.data[i] = ' ';
    s = known_shapes(buf_str(&z), &ls, &c);
    if (s != FB_SHAPE_NONE && r->nrcpt == 0)
        s = FB_SHAPE_NONE; /* the sentence, but no recipient we can read */
    if (s == FB_SHAPE_NONE) {
        r->nrcpt = 0;
        s = plain_text(buf_str(&z), &ls, &c);
    }
    buf_destroy(&z);
    buf_destroy(&ls.cur);
    buf_destroy(&c.reason);
    return s;
}

/* "> " quoting removed. */
static const char *unquote(const char *l)
{
    while (*l == '>') {
        l++;
        if (*l == ' ')
            l++;
    }
    return l;
}

static int orig_name(const char *l)
{
    return str_nieq(l, "Received:", 9) || str_nieq(l, "Message-ID:", 11) || str_nieq(l, "To:", 3) ||
           str_nieq(l, "From:", 5);
}

void fb_text_orig_headers(const char *text, size_t n, struct fb_report *r)
{
    struct lines ls = { text, n, 0, BUF_INIT };
    buf_t field = BUF_INIT;

    while (line_next(&ls)) {
        const char *l = unquote(line_str(&ls));
        if (field.len && (l[0] == ' ' || l[0] == '\t') && field.len < FB_VALUE_MAX) {
            buf_puts(&field, l);
            continue;
        }
        if (field.len) {
            char *colon = strchr(field.data, ':');
            *colon = '\0';
            fb_orig_field(field.data, colon + 1 + indent(colon + 1), r);
            buf_reset(&field);
        }
        if (orig_name(l))
            buf_puts(&field, l);
    }
    if (field.len) {
        char *colon = strchr(field.data, ':');
        *colon = '\0';
        fb_orig_field(field.data, colon + 1 + indent(colon + 1), r);
    }
    buf_destroy(&field);
    buf_destroy(&ls.cur);
}
