/* feedback_event.c - from a parsed report to recipient events.
 *
 * Who an event is about, in order of trust:
 *   1. the VERP envelope recipient (bounces+alice=example.org@bounce...):
 *      we wrote it, one original recipient per message, so it names the
 *      recipient whatever the remote system rewrote or forgot;
 *   2. the report's Original-Recipient (our RCPT TO, via ORCPT), then its
 *      Final-Recipient (ARF: Original-Rcpt-To);
 *   3. the To: of the returned original headers.
 * A bounce is classified with bclass_classify on its Status and
 * Diagnostic-Code; a complaint is "spam-related". Failed hard bounces
 * and complaints (but "not-spam" reports) are to be suppressed. */
#include "feedback/feedback.h"

#include <string.h>

#include "common/util/buf.h"

/* "local" of a possibly quoted local part, unquoted into out. */
static void unquote_local(const char *p, size_t n, buf_t *out)
{
    if (n >= 2 && p[0] == '"' && p[n - 1] == '"') {
        for (size_t i = 1; i + 1 < n; i++) {
            if (p[i] == '\\' && i + 2 < n)
                i++;
            buf_putc(out, p[i]);
        }
        return;
    }
    buf_append(out, p, n);
}

int fb_verp_decode(const char *addr, const char *delims, char *out, size_t size)
{
    const char *at = strrchr(addr, '@'), *d1, *d2;
    buf_t local = BUF_INIT;
    int rc = -1;

    if (!at || strlen(delims) != 2)
        return -1;
    unquote_local(addr, (size_t)(at - addr), &local);
    d1 = strchr(buf_str(&local), delims[0]);
    d2 = d1 ? strrchr(d1 + 1, delims[1]) : NULL;
    /* bounce-local, recipient local part, recipient domain: none empty */
    if (d1 && d2 && d1 > local.data && d2 > d1 + 1 && d2[1] && !strchr(d2 + 1, '@') &&
        (size_t)(d2 - d1 - 1) + strlen(d2 + 1) + 2 <= size) {
        size_t ln = (size_t)(d2 - d1 - 1);
        memcpy(out, d1 + 1, ln);
        out[ln] = '@';
        str_lcpy(out + ln + 1, d2 + 1, size - ln - 1);
        rc = 0;
    }
    buf_destroy(&local);
    return rc;
}

/* The recipient of a report that says which one it failed for most:
 * failed, then delayed, then any. */
static const struct fb_rcpt *primary(const struct fb_report *r)
{
    for (size_t i = 0; i < r->nrcpt; i++)
        if (strcmp(r->rcpt[i].action, "failed") == 0)
            return &r->rcpt[i];
    for (size_t i = 0; i < r->nrcpt; i++)
        if (strcmp(r->rcpt[i].action, "delayed") == 0)
            return &r->rcpt[i];
    return r->nrcpt ? &r->rcpt[0] : NULL;
}

static void bounce_event(struct fb_event *e, const struct fb_rcpt *t)
{
    e->complaint = 0;
    str_lcpy(e->status, t->status, sizeof(e->status));
    str_lcpy(e->action, t->action[0] ? t->action : "failed", sizeof(e->action));
    e->text = t->diag;
    e->category = bclass_classify(t->code, t->status[0] ? t->status : NULL, t->diag);
    e->suppress = strcmp(e->action, "failed") == 0 && bclass_is_hard(e->category);
}

static void complaint_event(struct fb_event *e, const struct fb_report *r)
{
    e->complaint = 1;
    str_lcpy(e->type, r->feedback_type, sizeof(e->type));
    e->text = "";
    e->category = BCLASS_SPAM_RELATED;
    e->suppress = strcmp(r->feedback_type, "not-spam") != 0;
}

static const char *report_rcpt(const struct fb_report *r, const struct fb_rcpt *t)
{
    if (t && t->orig_rcpt[0])
        return t->orig_rcpt;
    if (t && t->final_rcpt[0])
        return t->final_rcpt;
    if (!t && r->arf_rcpt_to[0])
        return r->arf_rcpt_to;
    return r->orig_to;
}

size_t fb_events(const struct fb_report *r, char (*verp)[FB_ADDR_MAX], size_t nverp,
                 struct fb_event *ev, size_t max)
{
    const struct fb_rcpt *p = primary(r);
    size_t n = 0;

    if (r->shape == FB_SHAPE_NONE || max == 0)
        return 0;
    if (nverp > 0) { /* one original recipient per VERP address */
        for (size_t i = 0; i < nverp && n < max; i++, n++) {
            memset(&ev[n], 0, sizeof(ev[n]));
            str_lcpy(ev[n].rcpt, verp[i], sizeof(ev[n].rcpt));
            if (r->shape == FB_SHAPE_ARF)
                complaint_event(&ev[n], r);
            else if (p)
                bounce_event(&ev[n], p);
        }
        return n;
    }
    if (r->shape == FB_SHAPE_ARF) {
        memset(&ev[0], 0, sizeof(ev[0]));
        str_lcpy(ev[0].rcpt, report_rcpt(r, NULL), sizeof(ev[0].rcpt));
        complaint_event(&ev[0], r);
        return 1;
    }
    for (size_t i = 0; i < r->nrcpt && n < max; i++, n++) {
        memset(&ev[n], 0, sizeof(ev[n]));
        str_lcpy(ev[n].rcpt, report_rcpt(r, &r->rcpt[i]), sizeof(ev[n].rcpt));
        bounce_event(&ev[n], &r->rcpt[i]);
    }
    return n;
}
