/* feedback_job.c - one job of the feedback agent: read the report from the
 * queue file, parse it, log one line per recipient event, ask qmgr to
 * suppress hard bounces and complaints, then record every envelope
 * recipient as delivered ("sent", relay=feedback) and answer qmgr.
 *
 * Nothing is ever sent back: an unrecognised or malformed report is
 * logged and dropped like a recognised one (no backscatter, no retry
 * loop). The one exception is a suppression qmgr could not be asked for
 * (qmgr unreachable): then the recipients are deferred, so the report is
 * read again later and the suppression is not lost. */
#include "feedback/feedback.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/mail/addr.h"
#include "common/mail/conf.h"
#include "common/mail/feedback_dom.h"
#include "common/mail/mevent.h"
#include "common/mail/qserve.h"
#include "common/mail/server.h"
#include "common/util/alloc.h"
#include "common/util/log.h"
#include "common/util/utf8.h"

#define FB_EVENTS_MAX (FB_RCPT_MAX + 8)

struct fb_job {
    struct qserve *qs; /* NULL once qmgr went away */
    struct server *srv;
    char id[QID_LEN + 1];
    size_t *idx, n;
    struct qenv env;
    int fd; /* content, locked shared while the job runs */
    struct fb_report *rep;
    struct fb_event ev[FB_EVENTS_MAX];
    size_t nev;
    int pending;       /* suppression requests not answered yet */
    const char *defer; /* why the recipients are deferred, NULL: sent */
    double t_arrival, t_start;
    buf_t summary; /* the status text of every recipient */
};

static double now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

struct fb_job *fb_job_new(struct qserve *qs, const char *id)
{
    struct fb_job *job = xcalloc(1, sizeof(*job));
    job->qs = qs;
    str_lcpy(job->id, id, sizeof(job->id));
    job->fd = -1;
    job->t_start = now();
    qenv_init(&job->env);
    buf_init(&job->summary, 64);
    fb_njobs++;
    return job;
}

void fb_job_add_rcpt(struct fb_job *job, size_t idx)
{
    job->idx = xrealloc(job->idx, (job->n + 1) * sizeof(*job->idx));
    job->idx[job->n++] = idx;
}

void fb_job_free(struct fb_job *job)
{
    if (job->fd >= 0)
        close(job->fd);
    qenv_destroy(&job->env);
    buf_destroy(&job->summary);
    free(job->rep);
    free(job->idx);
    free(job);
    fb_njobs--;
}

void fb_job_orphan(struct fb_job *job)
{
    job->qs = NULL;
}

/* ---- the end: results, log lines, reply ---- */

/* The delivery agents' line: pflogsumm counts the report as delivered. */
static void log_rcpt(const struct fb_job *job, const struct fb_result *r, double t_end)
{
    buf_t d = BUF_INIT;
    buf_put_delay(&d, t_end - job->t_arrival);
    buf_puts(&d, ", delays=");
    buf_put_delay(&d, job->t_start - job->t_arrival);
    buf_puts(&d, "/0/0/");
    buf_put_delay(&d, t_end - job->t_start);
    log_info("%s: to=<%s>, relay=feedback, delay=%s, dsn=%s, status=%s (%s)", job->id,
             job->env.rcpt[r->idx].addr, buf_str(&d), r->dsn, qrcpt_status_name(r->status),
             r->reason);
    buf_destroy(&d);
}

static void job_finish(struct fb_job *job)
{
    struct fb_result *res = xcalloc(job->n, sizeof(*res));
    double t_end = now();

    for (size_t k = 0; k < job->n; k++) {
        res[k].idx = job->idx[k];
        res[k].status = job->defer ? QR_DEFERRED : QR_SENT;
        res[k].dsn = job->defer ? "4.3.0" : "2.0.0";
        res[k].reason = job->defer ? job->defer : buf_str(&job->summary);
        if (qfile_append_result(job->srv->spool, job->id, res[k].idx, res[k].status, res[k].dsn,
                                "feedback", res[k].reason, NULL) < 0)
            log_warn("%s: cannot record result for recipient %zu: %s", job->id, res[k].idx,
                     strerror(errno));
        log_rcpt(job, &res[k], t_end);
    }
    fb_qconn_job_done(job->qs, job->id, res, job->n);
    free(res);
    fb_job_free(job);
    qserve_job_ended();
}

static void suppress_done(void *arg, int ok)
{
    struct fb_job *job = arg;
    if (!ok)
        job->defer = "cannot reach qmgr to record a suppression";
    if (--job->pending == 0)
        job_finish(job);
}

/* ---- reading and parsing ---- */

/* The first FB_READ_MAX bytes of the content; -1 on a read error. */
static int read_content(struct fb_job *job, buf_t *out, buf_t *err)
{
    long long len;
    if ((job->fd = qfile_open_content(job->srv->spool, job->id, &len, err)) < 0)
        return -1;
    /* held until fb_job_free: a qmgr started meanwhile leaves it alone */
    if (qfile_lock_shared(job->fd) < 0)
        log_warn("%s: cannot lock the queue file: %s", job->id, strerror(errno));
    if (len > FB_READ_MAX)
        len = FB_READ_MAX;
    buf_reserve(out, (size_t)len);
    while (out->len < (size_t)len) {
        ssize_t n = read(job->fd, out->data + out->len, (size_t)len - out->len);
        if (n <= 0) {
            buf_set(err, n < 0 ? strerror(errno) : "unexpected end of file");
            return -1;
        }
        out->len += (size_t)n;
        out->data[out->len] = '\0';
    }
    return 0;
}

/* Report fields go into log lines: valid UTF-8 without controls. */
static void sanitize(struct fb_report *r)
{
    char *fields[] = { r->feedback_type,   r->arf_mail_from, r->arf_rcpt_to,     r->arrival_date,
                       r->reported_domain, r->source_ip,     r->orig_message_id, r->orig_to,
                       r->orig_from,       r->orig_queue_id };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        utf8_sanitize_inplace(fields[i], '?');
    for (size_t i = 0; i < r->nrcpt; i++) {
        struct fb_rcpt *t = &r->rcpt[i];
        utf8_sanitize_inplace(t->final_rcpt, '?');
        utf8_sanitize_inplace(t->orig_rcpt, '?');
        utf8_sanitize_inplace(t->action, '?');
        utf8_sanitize_inplace(t->diag, '?');
        utf8_sanitize_inplace(t->remote_mta, '?');
    }
}

/* The original recipients the envelope recipients name by VERP; for a
 * complaint without one, the VERP return path it quotes. */
static size_t verp_rcpts(const struct fb_job *job, char (*out)[FB_ADDR_MAX], size_t max)
{
    const char *delims = conf_str("verp_delimiters");
    size_t n = 0;
    char a[FB_ADDR_MAX];

    for (size_t k = 0; k < job->n && n < max; k++) {
        if (fb_verp_decode(job->env.rcpt[job->idx[k]].addr, delims, a, sizeof(a)) < 0)
            continue;
        size_t j;
        for (j = 0; j < n && !str_ieq(out[j], a); j++)
            ;
        if (j == n)
            str_lcpy(out[n++], a, FB_ADDR_MAX);
    }
    if (n == 0 && job->rep->shape == FB_SHAPE_ARF && feedback_dom_addr(job->rep->arf_mail_from) &&
        fb_verp_decode(job->rep->arf_mail_from, delims, a, sizeof(a)) == 0)
        str_lcpy(out[n++], a, FB_ADDR_MAX);
    return n;
}

/* The sender domain a suppression is for: the original From:, else the
 * complaint's Original-Mail-From unless that is our own VERP address;
 * "" (global) when unknown. A hard bounce follows suppression_scope, as
 * one seen in the SMTP dialogue does (a dead mailbox is dead for every
 * sender); a complaint follows feedback_suppression_scope (the person
 * complained about one sender). */
static void event_scope(const struct fb_report *r, struct fb_event *e)
{
    const char *from = r->orig_from, *at;
    const char *mode = conf_str(e->complaint ? "feedback_suppression_scope" : "suppression_scope");
    e->scope[0] = '\0';
    if (!str_ieq(mode, "sender_domain"))
        return;
    if (!strchr(from, '@') && r->arf_mail_from[0] && !feedback_dom_addr(r->arf_mail_from))
        from = r->arf_mail_from;
    if ((at = strrchr(from, '@')) != NULL && at[1]) {
        str_lcpy(e->scope, at + 1, sizeof(e->scope));
        str_lower(e->scope);
    }
}

/* ---- events ---- */

static const char *action_status(const char *action)
{
    if (strcmp(action, "failed") == 0)
        return "bounced";
    if (strcmp(action, "delayed") == 0)
        return "deferred";
    if (strcmp(action, "delivered") == 0)
        return "sent";
    return action[0] ? action : "bounced";
}

/* ", orig_queue_id=X, orig_message_id=<..>" for what is known. */
static void orig_ids(const struct fb_report *r, buf_t *out)
{
    if (r->orig_queue_id[0])
        buf_printf(out, ", orig_queue_id=%s", r->orig_queue_id);
    if (r->orig_message_id[0])
        buf_printf(out, ", orig_message_id=%s", r->orig_message_id);
}

/* The event line (issue #11): feedback for a complaint, oob_bounce for a
 * bounce that came back after our delivery; queue_id is the report's,
 * original_queue_id and message_id those of the mail it is about. */
static void emit_event(const struct fb_job *job, const struct fb_event *e)
{
    const struct fb_report *r = job->rep;
    attr_t a = ATTR_INIT;
    mevent_begin(&a, e->complaint ? "feedback" : "oob_bounce");
    mevent_add(&a, "queue_id", job->id);
    mevent_add(&a, "original_queue_id", r->orig_queue_id);
    mevent_add(&a, "message_id", r->orig_message_id);
    mevent_add(&a, "recipient", e->rcpt);
    mevent_add(&a, "report_type",
               e->complaint ? (e->type[0] ? e->type : "unknown") : fb_shape_name(r->shape));
    if (!e->complaint)
        mevent_add_reply(&a, e->status[0] ? e->status : "5.0.0", e->text);
    mevent_add(&a, "category", bclass_name(e->category));
    mevent_send(&a);
    attr_destroy(&a);
}

static void log_event(const struct fb_job *job, const struct fb_event *e)
{
    const struct fb_report *r = job->rep;
    buf_t ids = BUF_INIT;
    orig_ids(r, &ids);
    if (e->complaint)
        log_info("%s: feedback type=%s to=<%s>%s%s%s, category=%s, status=complaint", job->id,
                 e->type[0] ? e->type : "unknown", e->rcpt, buf_str(&ids),
                 r->reported_domain[0] ? ", reported_domain=" : "", r->reported_domain,
                 bclass_name(e->category));
    else
        log_info("%s: oob_bounce to=<%s>%s, report=%s, dsn=%s, category=%s, status=%s (%s)",
                 job->id, e->rcpt, buf_str(&ids), fb_shape_name(r->shape),
                 e->status[0] ? e->status : "5.0.0", bclass_name(e->category),
                 action_status(e->action), e->text[0] ? e->text : "no diagnostic text");
    buf_destroy(&ids);
    if (mevent_enabled())
        emit_event(job, e);
}

/* Log each event, ask for each suppression; the job ends when qmgr has
 * answered them all (at once when there are none). */
static void run_events(struct fb_job *job)
{
    char verp[FB_RCPT_MAX][FB_ADDR_MAX];
    size_t nverp = verp_rcpts(job, verp, FB_RCPT_MAX);

    job->nev = fb_events(job->rep, verp, nverp, job->ev, FB_EVENTS_MAX);
    buf_printf(&job->summary, "feedback: %s report, %zu event%s", fb_shape_name(job->rep->shape),
               job->nev, job->nev == 1 ? "" : "s");
    job->pending = 1; /* until every request is out */
    for (size_t i = 0; i < job->nev; i++) {
        struct fb_event *e = &job->ev[i];
        event_scope(job->rep, e);
        log_event(job, e);
        if (!e->suppress)
            continue;
        if (!e->rcpt[0]) {
            log_warn("%s: feedback: %s report names no recipient: nothing to suppress", job->id,
                     fb_shape_name(job->rep->shape));
            continue;
        }
        job->pending++;
        fb_suppress_send(job->srv, job->id, e, suppress_done, job);
    }
    suppress_done(job, 1);
}

static void unrecognised(struct fb_job *job)
{
    log_info("%s: feedback: unrecognised report from <%s>: %s", job->id,
             job->env.sender ? job->env.sender : "", job->rep->why);
    buf_set(&job->summary, "feedback: unrecognised report dropped");
    job_finish(job);
}

static int rcpts_exist(const struct fb_job *job)
{
    for (size_t k = 0; k < job->n; k++)
        if (job->idx[k] >= job->env.nrcpt)
            return 0;
    return 1;
}

int fb_job_start(struct server *s, struct fb_job *job, const char **why)
{
    buf_t err = BUF_INIT, content = BUF_INIT;

    job->srv = s;
    if (qfile_read(s->spool, job->id, &job->env, 0, &err) < 0) {
        log_warn("%s: cannot read queue file: %s", job->id, buf_str(&err));
        buf_destroy(&err);
        /* no recipients to record: answer with the deferral only */
        struct fb_result *res = xcalloc(job->n, sizeof(*res));
        for (size_t k = 0; k < job->n; k++)
            res[k] =
                (struct fb_result){ job->idx[k], QR_DEFERRED, "4.3.0", "cannot read queue file" };
        fb_qconn_job_done(job->qs, job->id, res, job->n);
        free(res);
        fb_job_free(job);
        qserve_job_ended();
        return 0;
    }
    if (!rcpts_exist(job)) {
        *why = "recipient index out of range";
        buf_destroy(&err);
        return -1;
    }
    job->t_arrival = (double)job->env.arrival.tv_sec + job->env.arrival.tv_usec / 1e6;
    job->rep = xmalloc(sizeof(*job->rep));
    if (read_content(job, &content, &err) < 0) {
        log_warn("%s: cannot read queue file: %s", job->id, buf_str(&err));
        job->defer = "cannot read queue file"; /* read again later */
        job_finish(job);
    } else {
        fb_parse(content.data ? content.data : "", content.len, job->rep);
        sanitize(job->rep);
        if (job->rep->shape == FB_SHAPE_NONE)
            unrecognised(job);
        else
            run_events(job);
    }
    buf_destroy(&content);
    buf_destroy(&err);
    return 0;
}
