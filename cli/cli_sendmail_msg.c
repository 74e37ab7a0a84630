/* cli_sendmail_msg.c - the message sendmail reads on stdin.
 *
 * The header section is read whole (it is small and bounded): -t takes the
 * recipients from To:, Cc: and Bcc:, Bcc: is removed, and From:, Date: and
 * Message-ID: are added when missing, as Postfix's cleanup does for mail
 * from sendmail. The body is streamed line by line, never held: LF or CRLF
 * line ends become CRLF, lines starting with "." are dot-stuffed, and
 * without -i a line holding only "." ends the input (sendmail's old rule,
 * which PHP and mailx turn off with -i). Lines are handled in pieces of at
 * most SM_PIECE bytes, so a line of any length or with NUL bytes passes. */
#include "cli/cli_sendmail.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util/alloc.h"

#define SM_PIECE 8192

void sm_err(const char *fmt, ...)
{
    va_list ap;
    fputs("sendmail: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* One piece of a line into b (replacing it): 1 when it ends with LF, 0
 * when cut at max bytes or by EOF, -1 at EOF with nothing read or on a
 * read error (ferror tells). */
static int read_piece(FILE *in, buf_t *b, size_t max)
{
    int ch;
    buf_reset(b);
    while (b->len < max && (ch = getc_unlocked(in)) != EOF) {
        buf_putc(b, (char)ch);
        if (ch == '\n')
            return 1;
    }
    return b->len ? 0 : -1;
}

static int lone_dot(const buf_t *line)
{
    const char *s = buf_str(line);
    return strcmp(s, ".\n") == 0 || strcmp(s, ".\r\n") == 0 || strcmp(s, ".") == 0;
}

/* The line without its LF (or CRLF). */
static size_t text_len(const buf_t *line)
{
    size_t n = line->len;
    if (n && line->data[n - 1] == '\n') {
        n--;
        if (n && line->data[n - 1] == '\r')
            n--;
    }
    return n;
}

/* ---- header fields ---- */

struct field {
    buf_t text; /* "Name: value" with its continuation lines, CRLF ends */
    char name[80];
};

static int is_header_start(const buf_t *line)
{
    const char *s = buf_str(line);
    size_t i = 0;
    while (s[i] && s[i] != ':' && s[i] > ' ' && s[i] < 127)
        i++;
    return i > 0 && s[i] == ':';
}

static int is_continuation(const buf_t *line)
{
    return line->len > 0 && (line->data[0] == ' ' || line->data[0] == '\t') && text_len(line) > 0;
}

static void field_start(struct field *f, const buf_t *line)
{
    const char *s = buf_str(line);
    size_t i = 0;
    while (s[i] != ':' && i + 1 < sizeof(f->name)) {
        f->name[i] = s[i];
        i++;
    }
    f->name[i] = 0;
    buf_init(&f->text, 128);
    buf_append(&f->text, line->data, text_len(line));
    buf_puts(&f->text, "\r\n");
}

/* The value, unfolded (continuation line ends removed). */
static void field_value(const struct field *f, buf_t *out)
{
    const char *s = strchr(buf_str(&f->text), ':');
    buf_reset(out);
    for (s = s ? s + 1 : ""; *s; s++)
        if (*s != '\r' && *s != '\n')
            buf_putc(out, *s);
}

struct fields {
    struct field *v;
    size_t n, cap;
};

static struct field *fields_add(struct fields *fs)
{
    if (fs->n == fs->cap) {
        fs->cap = fs->cap ? fs->cap * 2 : 16;
        fs->v = xrealloc(fs->v, fs->cap * sizeof(*fs->v));
    }
    return &fs->v[fs->n++];
}

static int fields_have(const struct fields *fs, const char *name)
{
    for (size_t i = 0; i < fs->n; i++)
        if (str_ieq(fs->v[i].name, name))
            return 1;
    return 0;
}

static void fields_destroy(struct fields *fs)
{
    for (size_t i = 0; i < fs->n; i++)
        buf_destroy(&fs->v[i].text);
    free(fs->v);
}

/* Read fields until the empty line (dropped), a line that is no header
 * (kept in m->first: the body starts there), or the end. */
static int read_fields(FILE *in, struct sm_msg *m, const struct sm_head_opts *o, struct fields *fs)
{
    buf_t line = BUF_INIT;
    size_t total = 0;
    int rc = 0, r;
    while ((r = read_piece(in, &line, SM_PIECE)) >= 0) {
        total += line.len;
        if (total > o->limit) {
            sm_err("message header section exceeds %zu bytes", o->limit);
            rc = SM_EX_DATAERR;
            break;
        }
        /* An mbox "From " line first: not part of the message. */
        if (total == line.len && strncmp(buf_str(&line), "From ", 5) == 0)
            continue;
        if (o->dot_ends && lone_dot(&line)) {
            m->eof = 1;
            break;
        }
        if (fs->n && is_continuation(&line)) {
            buf_t *t = &fs->v[fs->n - 1].text;
            buf_append(t, line.data, text_len(&line));
            buf_puts(t, "\r\n");
        } else if (r == 1 && is_header_start(&line)) {
            field_start(fields_add(fs), &line);
        } else {
            if (text_len(&line) > 0) /* not the empty line: body text */
                buf_append(&m->first, line.data, line.len);
            break;
        }
    }
    if (r < 0 && ferror(in)) {
        sm_err("cannot read the message: %s", strerror(errno));
        rc = SM_EX_NOINPUT;
    }
    if (r < 0)
        m->eof = 1;
    buf_destroy(&line);
    return rc;
}

/* ---- fields we add ---- */

static void add_from(buf_t *h, const struct sm_head_opts *o)
{
    const char *name = o->fullname;
    buf_puts(h, "From: ");
    if (name && *name) {
        int plain = strpbrk(name, "()<>[]:;@\\,.\"") == NULL;
        buf_puts(h, plain ? "" : "\"");
        for (const char *p = name; *p; p++) {
            if (*p == '\r' || *p == '\n')
                continue;
            if (!plain && (*p == '"' || *p == '\\'))
                buf_putc(h, '\\');
            buf_putc(h, *p);
        }
        buf_puts(h, plain ? " " : "\" ");
    }
    buf_printf(h, "<%s>\r\n", *o->sender ? o->sender : "MAILER-DAEMON");
}

static void add_date(buf_t *h)
{
    char date[80];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
    buf_printf(h, "Date: %s\r\n", date);
}

static void add_msgid(buf_t *h, const struct sm_head_opts *o)
{
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y%m%d%H%M%S", &tm);
    buf_printf(h, "Message-ID: <%s.%ld.%ld@%s>\r\n", when, (long)getpid(), (long)(clock() & 0xffff),
               o->hostname);
}

static int is_rcpt_field(const char *name)
{
    return str_ieq(name, "To") || str_ieq(name, "Cc") || str_ieq(name, "Bcc");
}

int sm_msg_head(FILE *in, struct sm_msg *m, const struct sm_head_opts *o)
{
    struct fields fs = { NULL, 0, 0 };
    buf_t val = BUF_INIT;
    int rc = read_fields(in, m, o, &fs);
    for (size_t i = 0; rc == 0 && i < fs.n; i++) {
        if (o->extract && is_rcpt_field(fs.v[i].name)) {
            field_value(&fs.v[i], &val);
            sm_msg_addrs(buf_str(&val), o->origin, &m->rcpts, &m->nrcpt);
        }
        if (!str_ieq(fs.v[i].name, "Bcc"))
            buf_append(&m->head, fs.v[i].text.data, fs.v[i].text.len);
    }
    if (!fields_have(&fs, "From"))
        add_from(&m->head, o);
    if (!fields_have(&fs, "Date"))
        add_date(&m->head);
    if (!fields_have(&fs, "Message-ID"))
        add_msgid(&m->head, o);
    buf_puts(&m->head, "\r\n");
    fields_destroy(&fs);
    buf_destroy(&val);
    return rc;
}

/* ---- addresses in To:, Cc:, Bcc: ---- */

static void take_addr(buf_t *a, const char *origin, char ***v, size_t *n)
{
    char *copy = xstrdup(buf_str(a));
    const char *s = str_trim(copy);
    buf_t full = BUF_INIT;
    buf_puts(&full, s);
    free(copy);
    if (full.len == 0 || full.data[0] == '@') { /* nothing, or a source route */
        buf_destroy(&full);
        return;
    }
    if (strchr(buf_str(&full), '@') == NULL)
        buf_printf(&full, "@%s", origin);
    for (size_t i = 0; i < *n; i++)
        if (str_ieq((*v)[i], buf_str(&full))) {
            buf_destroy(&full);
            return;
        }
    *v = xrealloc(*v, (*n + 2) * sizeof(char *));
    (*v)[(*n)++] = buf_detach(&full);
    (*v)[*n] = NULL;
}

struct addr_scan {
    buf_t word, angle;
    int quoted, depth, in_angle, have_angle;
};

/* Element boundaries: a comma or the ";" that ends a group. */
static void scan_end(struct addr_scan *a, const char *origin, char ***v, size_t *n)
{
    take_addr(a->have_angle ? &a->angle : &a->word, origin, v, n);
    buf_reset(&a->word);
    buf_reset(&a->angle);
    a->in_angle = a->have_angle = 0;
}

static void scan_char(struct addr_scan *a, char ch)
{
    if (ch == '(') {
        a->depth++;
    } else if (ch == '<') {
        a->in_angle = a->have_angle = 1;
        buf_reset(&a->angle);
    } else if (ch == '>') {
        a->in_angle = 0;
    } else if (ch == ':' && !a->in_angle) {
        buf_reset(&a->word); /* "group name:" */
    } else if (ch == '"') {
        a->quoted = 1;
        buf_putc(a->in_angle ? &a->angle : &a->word, ch);
    } else if (ch != ' ' && ch != '\t') {
        buf_putc(a->in_angle ? &a->angle : &a->word, ch);
    }
}

void sm_msg_addrs(const char *value, const char *origin, char ***v, size_t *n)
{
    struct addr_scan a = { BUF_INIT, BUF_INIT, 0, 0, 0, 0 };
    for (const char *p = value;; p++) {
        char ch = *p;
        if (a.quoted && ch) { /* quoted text is kept as it is */
            if (ch == '\\' && p[1])
                buf_putc(a.in_angle ? &a.angle : &a.word, *p++);
            else if (ch == '"')
                a.quoted = 0;
            buf_putc(a.in_angle ? &a.angle : &a.word, *p);
        } else if (a.depth && ch) { /* comment */
            if (ch == '\\' && p[1])
                p++;
            else
                a.depth += ch == '(' ? 1 : ch == ')' ? -1 : 0;
        } else if (ch == 0 || (!a.in_angle && (ch == ',' || ch == ';'))) {
            scan_end(&a, origin, v, n);
            if (ch == 0)
                break;
        } else {
            scan_char(&a, ch);
        }
    }
    buf_destroy(&a.word);
    buf_destroy(&a.angle);
}

/* ---- the body ---- */

/* One piece: stuffed when it starts a line, its LF made CRLF. */
static int put_piece(const buf_t *p, int at_start, sm_out_fn out, void *arg)
{
    size_t n = text_len(p);
    if (at_start && n > 0 && p->data[0] == '.' && out(arg, ".", 1) < 0)
        return -1;
    if (n && out(arg, p->data, n) < 0)
        return -1;
    if (n < p->len) /* it had its LF */
        return out(arg, "\r\n", 2);
    return 0;
}

int sm_msg_body(FILE *in, struct sm_msg *m, int dot_ends, sm_out_fn out, void *arg)
{
    buf_t p = BUF_INIT;
    int at_start = 1, r, rc = 0;
    if (m->first.len) {
        at_start = m->first.data[m->first.len - 1] == '\n';
        rc = put_piece(&m->first, 1, out, arg);
    }
    while (rc == 0 && !m->eof && (r = read_piece(in, &p, SM_PIECE)) >= 0) {
        if (at_start && dot_ends && lone_dot(&p))
            break;
        rc = put_piece(&p, at_start, out, arg);
        at_start = r == 1;
    }
    if (rc == 0 && ferror(in)) {
        sm_err("cannot read the message: %s", strerror(errno));
        rc = SM_EX_NOINPUT;
    }
    /* The last line may lack its LF: end it, so "." ends the data. */
    if (rc == 0 && !at_start)
        rc = out(arg, "\r\n", 2);
    buf_destroy(&p);
    return rc;
}

void sm_msg_destroy(struct sm_msg *m)
{
    buf_destroy(&m->head);
    buf_destroy(&m->first);
    for (size_t i = 0; i < m->nrcpt; i++)
        free(m->rcpts[i]);
    free(m->rcpts);
    memset(m, 0, sizeof(*m));
}
