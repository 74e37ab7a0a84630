/* feedback_parse.c - one report message into struct fb_report.
 *
 * The MIME tree is walked (at most FB_DEPTH_MAX deep, FB_PARTS_MAX parts);
 * each leaf is decoded and read by its type: message/delivery-status
 * (RFC 3464 2.2, 2.3: a per-message block, then one block per recipient),
 * message/feedback-report (RFC 5965 3.1), the original message's headers
 * (text/rfc822-headers, message/rfc822), and the first text/plain part,
 * which feedback_text.c reads when no machine-readable part says enough.
 * A returned original message is never walked into: its own MIME
 * structure is the sender's, not the report's. */
#include "feedback/feedback_parse.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "common/util/buf.h"
#include "feedback/feedback_mime.h"
#include "feedback/feedback_text.h"

struct walk {
    struct fb_report *r;
    size_t parts;
    int saw_dsn, saw_arf;
    int have_text;
    buf_t text; /* the first text/plain body, decoded */
};

struct ehdr {
    struct fb_ctype ct;
    enum fb_cte cte;
};

static void entity(struct walk *w, const char *p, size_t n, int depth);

struct fb_rcpt *fb_rcpt_add(struct fb_report *r)
{
    if (r->nrcpt >= FB_RCPT_MAX) {
        r->rcpt_cut = 1;
        return NULL;
    }
    memset(&r->rcpt[r->nrcpt], 0, sizeof(r->rcpt[0]));
    return &r->rcpt[r->nrcpt++];
}

/* The first word of v, lower case. */
static void token_lower(char *dst, size_t size, const char *v)
{
    size_t k = 0;
    while (isspace((unsigned char)*v))
        v++;
    while (*v && !isspace((unsigned char)*v) && *v != ';' && k + 1 < size)
        dst[k++] = (char)tolower((unsigned char)*v++);
    dst[k] = '\0';
}

void fb_orig_field(const char *name, const char *value, void *arg)
{
    struct fb_report *r = arg;

    if (str_ieq(name, "Message-ID") && !r->orig_message_id[0]) {
        size_t n = strcspn(value, " \t");
        fb_copy(r->orig_message_id, sizeof(r->orig_message_id), value, n);
    } else if (str_ieq(name, "To") && !r->orig_to[0]) {
        fb_addr(value, r->orig_to, sizeof(r->orig_to));
    } else if (str_ieq(name, "From") && !r->orig_from[0]) {
        fb_addr(value, r->orig_from, sizeof(r->orig_from));
    } else if (str_ieq(name, "Received") && !r->orig_queue_id[0]) {
        fb_received_qid(value, r->orig_queue_id, sizeof(r->orig_queue_id));
    }
}

/* ---- message/delivery-status ---- */

static void dsn_field(const char *name, const char *v, void *arg)
{
    struct fb_rcpt *t = arg;

    if (str_ieq(name, "Final-Recipient"))
        fb_addr(fb_after_type(v), t->final_rcpt, sizeof(t->final_rcpt));
    else if (str_ieq(name, "Original-Recipient"))
        fb_addr(fb_after_type(v), t->orig_rcpt, sizeof(t->orig_rcpt));
    else if (str_ieq(name, "Action"))
        token_lower(t->action, sizeof(t->action), v);
    else if (str_ieq(name, "Status"))
        fb_find_status(v, t->status);
    else if (str_ieq(name, "Diagnostic-Code"))
        fb_copy(t->diag, sizeof(t->diag), fb_after_type(v), strlen(fb_after_type(v)));
    else if (str_ieq(name, "Remote-MTA"))
        fb_copy(t->remote_mta, sizeof(t->remote_mta), fb_after_type(v), strlen(fb_after_type(v)));
}

/* Every block that names a recipient is one, the first (per-message)
 * block included: some generators put everything in one block. */
static void dsn_blocks(struct walk *w, const char *s, size_t len)
{
    size_t off = 0, used, n;
    const char *l;
    struct fb_rcpt t;

    w->saw_dsn = 1;
    while (off < len) {
        memset(&t, 0, sizeof(t));
        used = fb_headers(s + off, len - off, dsn_field, &t);
        if (used == 0) { /* neither a field nor an empty line: skip it */
            if (!fb_line_next(s, len, &off, &l, &n))
                break;
            continue;
        }
        off += used;
        if (t.final_rcpt[0] || t.orig_rcpt[0] || t.action[0]) {
            struct fb_rcpt *d = fb_rcpt_add(w->r);
            if (d)
                *d = t;
        }
    }
}

/* ---- message/feedback-report ---- */

static void arf_field(const char *name, const char *v, void *arg)
{
    struct fb_report *r = arg;

    if (str_ieq(name, "Feedback-Type"))
        token_lower(r->feedback_type, sizeof(r->feedback_type), v);
    else if (str_ieq(name, "Original-Mail-From") && !r->arf_mail_from[0])
        fb_addr(v, r->arf_mail_from, sizeof(r->arf_mail_from));
    else if (str_ieq(name, "Original-Rcpt-To") && !r->arf_rcpt_to[0])
        fb_addr(v, r->arf_rcpt_to, sizeof(r->arf_rcpt_to));
    else if ((str_ieq(name, "Arrival-Date") || str_ieq(name, "Received-Date")) &&
             !r->arrival_date[0])
        fb_copy(r->arrival_date, sizeof(r->arrival_date), v, strlen(v));
    else if (str_ieq(name, "Reported-Domain") && !r->reported_domain[0])
        fb_copy(r->reported_domain, sizeof(r->reported_domain), v, strlen(v));
    else if (str_ieq(name, "Source-IP") && !r->source_ip[0])
        fb_copy(r->source_ip, sizeof(r->source_ip), v, strlen(v));
}

/* ---- the MIME walk ---- */

static void ehdr_field(const char *name, const char *value, void *arg)
{
    struct ehdr *h = arg;
    if (str_ieq(name, "Content-Type"))
        fb_ctype_parse(value, &h->ct);
    else if (str_ieq(name, "Content-Transfer-Encoding"))
        h->cte = fb_cte_parse(value);
}

struct partctx {
    struct walk *w;
    int depth;
};

static int part_cb(const char *p, size_t n, void *arg)
{
    struct partctx *c = arg;
    entity(c->w, p, n, c->depth);
    return c->w->parts >= FB_PARTS_MAX;
}

static int is_type(const struct ehdr *h, const char *t)
{
    return strcmp(h->ct.type, t) == 0;
}

/* A decoded leaf, read by its type. */
static void leaf(struct walk *w, const struct ehdr *h, const char *p, size_t n)
{
    buf_t d = BUF_INIT;

    fb_decode(h->cte, p, n, &d);
    if (is_type(h, "message/delivery-status") || is_type(h, "message/global-delivery-status")) {
        dsn_blocks(w, buf_str(&d), d.len);
    } else if (is_type(h, "message/feedback-report")) {
        w->saw_arf = 1;
        fb_headers(buf_str(&d), d.len, arf_field, w->r);
    } else if (is_type(h, "text/rfc822-headers") || is_type(h, "message/rfc822") ||
               is_type(h, "message/global") || is_type(h, "message/global-headers")) {
        fb_headers(buf_str(&d), d.len, fb_orig_field, w->r);
    } else if ((is_type(h, "text/plain") || !h->ct.type[0]) && !w->have_text) {
        w->have_text = 1;
        buf_append(&w->text, buf_str(&d), d.len);
    }
    buf_destroy(&d);
}

static void entity(struct walk *w, const char *p, size_t n, int depth)
{
    struct ehdr h;
    size_t body;

    if (w->parts >= FB_PARTS_MAX)
        return;
    w->parts++;
    memset(&h, 0, sizeof(h));
    body = fb_headers(p, n, ehdr_field, &h);
    if (strncmp(h.ct.type, "multipart/", 10) == 0) {
        struct partctx c = { w, depth + 1 };
        if (depth + 1 < FB_DEPTH_MAX)
            fb_multipart(p + body, n - body, h.ct.boundary, FB_PARTS_MAX, part_cb, &c);
        return;
    }
    leaf(w, &h, p + body, n - body);
}

/* Status and reply code from the diagnostic text where fields lack them;
 * a recipient without a status is failed (5.0.0) or delayed (4.0.0). */
static void fill_codes(struct fb_report *r)
{
    for (size_t i = 0; i < r->nrcpt; i++) {
        struct fb_rcpt *t = &r->rcpt[i];
        if (t->code == 0)
            t->code = fb_find_code(t->diag);
        if (!t->status[0] && !fb_find_status(t->diag, t->status) && t->code >= 400)
            snprintf(t->status, sizeof(t->status), "%d.0.0", t->code / 100);
        if (!t->action[0] && t->status[0])
            str_lcpy(t->action, t->status[0] == '5' ? "failed" : "delayed", sizeof(t->action));
    }
}

static enum fb_shape decide(struct walk *w)
{
    struct fb_report *r = w->r;
    enum fb_shape s;

    if (w->saw_arf && r->feedback_type[0])
        return FB_SHAPE_ARF;
    if (w->saw_dsn && r->nrcpt > 0)
        return FB_SHAPE_RFC3464;
    r->nrcpt = 0;
    if (w->have_text) {
        fb_text_orig_headers(buf_str(&w->text), w->text.len, r);
        if ((s = fb_text_parse(buf_str(&w->text), w->text.len, r)) != FB_SHAPE_NONE)
            return s;
    }
    r->nrcpt = 0;
    if (w->saw_arf)
        r->why = "feedback-report part without Feedback-Type";
    else if (w->saw_dsn)
        r->why = "delivery-status part names no recipient";
    else if (w->have_text)
        r->why = "no delivery-status or feedback-report part, and no bounce text recognised";
    else
        r->why = "no delivery-status, feedback-report or text part";
    return FB_SHAPE_NONE;
}

void fb_parse(const char *data, size_t len, struct fb_report *out)
{
    struct walk w;

    memset(out, 0, sizeof(*out));
    memset(&w, 0, sizeof(w));
    w.r = out;
    entity(&w, data, len, 0);
    out->shape = decide(&w);
    if (out->shape != FB_SHAPE_NONE)
        fill_codes(out);
    buf_destroy(&w.text);
}

const char *fb_shape_name(enum fb_shape s)
{
    static const char *const names[] = {
        [FB_SHAPE_NONE] = "none",         [FB_SHAPE_RFC3464] = "rfc3464", [FB_SHAPE_ARF] = "arf",
        [FB_SHAPE_EXCHANGE] = "exchange", [FB_SHAPE_QMAIL] = "qmail",     [FB_SHAPE_EXIM] = "exim",
        [FB_SHAPE_POSTFIX] = "postfix",   [FB_SHAPE_TEXT] = "text",
    };
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "none";
}
