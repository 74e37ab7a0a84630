/* delivery_mime.c - 8BITMIME and SMTPUTF8 on the way out (RFC 6152, 6531).
 *
 * Before MAIL FROM, for the server at hand, dlv_mime_prepare decides:
 *   - SMTPUTF8: sent when the client asked for it and the server offers
 *     it. When the server does not, a message that needs it (a non-ASCII
 *     envelope address or header) bounces 5.6.7, as in Postfix; one that
 *     is all ASCII goes without it.
 *   - BODY=8BITMIME: sent when the client declared 8BITMIME (or
 *     BINARYMIME, or SMTPUTF8) and the server offers 8BITMIME. BODY=7BIT
 *     is never sent: it is the default and says nothing.
 *   - a server without 8BITMIME: the content is scanned (only on this rare
 *     path) and, when it has 8-bit bytes, converted to 7 bit while it is
 *     sent (common/mail/mime7.c), or bounced 5.6.3 when it cannot be (8-bit
 *     headers outside SMTPUTF8, 8-bit data in an encoded part...). The
 *     decision is taken here, so DATA is never abandoned halfway. With
 *     disable_mime_output_conversion = yes the content goes as it is.
 * The scan and the converted size (announced in SIZE=, checked against the
 * server's limit) are computed once per job and kept for the next server. */
#include "delivery/delivery_sess.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/util/log.h"
#include "common/mail/mime7.h"

#define SCAN_CHUNK 65536

struct dlv_mime {
    struct mime7 *m7;   /* the scan, once made */
    long long conv_len; /* length of the converted content, -1 unknown */
    int convert;        /* this transaction sends the converted form */
    int body8, utf8;    /* this transaction's BODY=8BITMIME, SMTPUTF8 */
    buf_t out;          /* converted bytes of the current chunk */
};

static struct dlv_mime *dm_get(struct dlv_job *job)
{
    if (!job->mime) {
        job->mime = xcalloc(1, sizeof(*job->mime));
        job->mime->conv_len = -1; /* out grows only when converting */
    }
    return job->mime;
}

void dlv_mime_free(struct dlv_mime *d)
{
    if (!d)
        return;
    mime7_free(d->m7);
    buf_destroy(&d->out);
    free(d);
}

static int non_ascii(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s & 0x80)
            return 1;
    return 0;
}

/* Does the envelope of this delivery need SMTPUTF8? */
static int envelope_utf8(const struct dlv_job *job)
{
    size_t k;
    if (non_ascii(job->env.sender))
        return 1;
    for (k = 0; k < job->nres; k++)
        if (job->res[k].status == QR_PENDING && non_ascii(job->env.rcpt[job->res[k].idx].addr))
            return 1;
    return 0;
}

/* One pass of m over the content; with out, add up the output's length. */
static int content_pass(struct dlv_job *job, struct mime7 *m, buf_t *out, long long *outlen)
{
    char *chunk = xmalloc(SCAN_CHUNK);
    long long off = job->env.content_off, left = job->env.content_len;
    int rc = 0;
    while (left > 0) {
        size_t want = left < SCAN_CHUNK ? (size_t)left : SCAN_CHUNK;
        ssize_t n = pread(job->content_fd, chunk, want, (off_t)off);
        if (n <= 0) {
            log_warn("%s: error reading queue file: %s", job->id,
                     n < 0 ? strerror(errno) : "unexpected end of file");
            rc = -1;
            break;
        }
        mime7_feed(m, chunk, (size_t)n, out);
        if (out) {
            *outlen += (long long)out->len;
            buf_reset(out);
        }
        off += n;
        left -= n;
    }
    if (rc == 0) {
        mime7_end(m, out);
        if (out) {
            *outlen += (long long)out->len;
            buf_reset(out);
        }
    }
    free(chunk);
    return rc;
}

/* Scan the content once per job. NULL when the file cannot be read. */
static struct mime7 *dm_scan(struct dlv_job *job, struct dlv_mime *d)
{
    if (!d->m7) {
        struct mime7 *m = mime7_new();
        if (content_pass(job, m, NULL, NULL) < 0) {
            mime7_free(m);
            return NULL;
        }
        d->m7 = m;
    }
    return d->m7;
}

/* No transaction with this server: every pending recipient gets dsn. */
static int refuse(struct dlv_sess *s, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(struct dlv_sess *s, const char *dsn, const char *fmt, ...)
{
    buf_t r = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&r, fmt, ap);
    va_end(ap);
    dlv_job_set_pending(s->job, dsn, r.data, BCLASS_CONTENT_RELATED);
    buf_destroy(&r);
    return -1;
}

static int read_failed(struct dlv_sess *s)
{
    dlv_job_set_pending(s->job, "4.3.0", "error reading queue file", BCLASS_OTHER);
    return -1;
}

/* A server without 8BITMIME: send as is, convert, or refuse. */
static int prepare_7bit(struct dlv_sess *s, struct dlv_mime *d)
{
    struct dlv_job *job = s->job;
    struct mime7 *m;
    int r;

    if (conf_bool("disable_mime_output_conversion"))
        return 0;
    if (!(m = dm_scan(job, d)))
        return read_failed(s);
    r = mime7_result(m);
    if ((r & MIME7_HDR8) && !d->utf8)
        return refuse(s, "5.6.3",
                      "conversion to 7 bit required but not possible: host %s does "
                      "not offer 8BITMIME and the message has 8-bit data in a header",
                      buf_str(&s->hostip));
    if (!(r & MIME7_BODY8))
        return 0; /* 7-bit content: as it is */
    if (r & MIME7_STUCK)
        return refuse(s, "5.6.3",
                      "conversion to 7 bit required but not possible: host %s does "
                      "not offer 8BITMIME and the message has %s",
                      buf_str(&s->hostip), mime7_why(m));
    if (d->conv_len < 0) {
        long long len = 0;
        mime7_convert_begin(m);
        if (content_pass(job, m, &d->out, &len) < 0)
            return read_failed(s);
        d->conv_len = len;
    }
    d->convert = 1;
    mime7_convert_begin(m); /* the pass that DATA streams */
    return 0;
}

/* SMTPUTF8 requested, not offered: 0 when the message is all ASCII (it
 * goes without), -1 when it needs SMTPUTF8 (or the file is unreadable). */
static int prepare_no_utf8(struct dlv_sess *s, struct dlv_mime *d)
{
    struct mime7 *m;
    if (!envelope_utf8(s->job)) {
        if (!(m = dm_scan(s->job, d)))
            return read_failed(s);
        if (!(mime7_result(m) & MIME7_HDR8))
            return 0;
    }
    return refuse(s, "5.6.7", "SMTPUTF8 is required, but was not offered by host %s",
                  buf_str(&s->hostip));
}

int dlv_mime_prepare(struct dlv_sess *s)
{
    struct dlv_job *job = s->job;
    struct dlv_mime *d = dm_get(job);

    d->convert = d->body8 = d->utf8 = 0;
    if (job->env.smtputf8 && (s->feat & FEAT_SMTPUTF8))
        d->utf8 = 1;
    else if (job->env.smtputf8 && prepare_no_utf8(s, d) < 0)
        return -1;
    if (s->feat & FEAT_8BITMIME) {
        d->body8 = job->env.body == QBODY_8BITMIME || job->env.body == QBODY_BINARYMIME || d->utf8;
        return 0;
    }
    return prepare_7bit(s, d);
}

void dlv_mime_mail_params(struct dlv_sess *s, buf_t *cmd)
{
    const struct dlv_mime *d = s->job->mime;
    if (d && d->body8)
        buf_puts(cmd, " BODY=8BITMIME");
    if (d && d->utf8)
        buf_puts(cmd, " SMTPUTF8");
}

long long dlv_mime_size(const struct dlv_job *job)
{
    long long sig = job->env.dkim ? (long long)strlen(job->env.dkim) : 0;
    return sig + (job->mime && job->mime->convert ? job->mime->conv_len : job->env.content_len);
}

const char *dlv_mime_body_filter(struct dlv_job *job, const char *p, size_t *n)
{
    struct dlv_mime *d = job->mime;
    if (!d || !d->convert)
        return p;
    buf_reset(&d->out);
    mime7_feed(d->m7, p, *n, &d->out);
    *n = d->out.len;
    return d->out.data;
}

const char *dlv_mime_body_end(struct dlv_job *job, size_t *n)
{
    struct dlv_mime *d = job->mime;
    *n = 0;
    if (!d || !d->convert)
        return NULL;
    buf_reset(&d->out);
    mime7_end(d->m7, &d->out);
    *n = d->out.len;
    return d->out.data;
}
