/* bounce_notify.c - one notification request: read the original queue
 * file, pick the recipients that want this kind of report, queue the
 * report (null sender; a failed notification goes to postmaster as a
 * double bounce, from double_bounce_sender) and record dsn_sent in the original so that a
 * crash never repeats it. qmgr learns of the new file from our reply. */
#include "bounce/bounce.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/mail/dsn.h"
#include "common/util/log.h"
#include "common/mail/qfile.h"
#include "common/util/utf8.h"

static const char *const log_what[] = {
    "sender non-delivery notification",
    "sender delay notification",
    "sender delivery status notification",
};

struct job {
    const char *spool;
    int kind;
    struct qenv env;
    size_t *idx;
    size_t nidx;
    char new_id[QID_LEN + 1];
};

static void reply_fail(attr_t *reply, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply_fail(attr_t *reply, const char *fmt, ...)
{
    buf_t b = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    attr_add(reply, "status", "fail");
    attr_add(reply, "reason", buf_str(&b));
    log_error("request from qmgr failed: %s", buf_str(&b)); /* qmgr retries later */
    buf_destroy(&b);
}

static int parse_index(const char *s, size_t *out)
{
    char *end;
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = (size_t)v;
    return 0;
}

/* Collect the requested recipients that want this kind of report.
 * Returns -1 for an index qmgr cannot have meant (a malformed request). */
static int select_rcpts(struct job *j, const attr_t *req)
{
    size_t pos = 0, idx;
    const char *v;
    j->idx = xcalloc(j->env.nrcpt + 1, sizeof *j->idx);
    while ((v = attr_next(req, "rcpt", &pos)) != NULL) {
        if (parse_index(v, &idx) < 0 || idx >= j->env.nrcpt)
            return -1;
        struct qrcpt *r = &j->env.rcpt[idx];
        if (!dsn_rcpt_wants(r, j->kind))
            continue;
        r->dsn_sent |= dsn_kind_notify(j->kind); /* also dedupes the request */
        j->idx[j->nidx++] = idx;
    }
    return 0;
}

static void mark_sent(struct job *j)
{
    buf_t val = BUF_INIT;
    for (size_t i = 0; i < j->nidx; i++) {
        buf_reset(&val);
        buf_printf(&val, "%zu %s", j->idx[i], dsn_kind_name(j->kind));
        if (qfile_append_record(j->spool, j->env.id, "dsn_sent", val.data) < 0)
            log_warn("%s: cannot record dsn_sent: %s", j->env.id, strerror(errno));
    }
    buf_destroy(&val);
}

/* "name" qualified with @myorigin when it has no domain. */
static void qualify(const char *name, buf_t *out)
{
    buf_set(out, name);
    if (strchr(name, '@') == NULL) {
        buf_putc(out, '@');
        buf_puts(out, conf_str("myorigin"));
    }
}

/* Is sender our double-bounce address (a notice to postmaster that
 * failed: never answered, as Postfix never sends a triple bounce)? */
static int is_double_bounce(const char *sender)
{
    buf_t db = BUF_INIT;
    qualify(conf_str("double_bounce_sender"), &db);
    int yes = str_ieq(sender, buf_str(&db));
    buf_destroy(&db);
    return yes;
}

/* A failed notice to postmaster: logged, never answered (no loops). */
static void null_sender(struct job *j)
{
    buf_t what = BUF_INIT;
    if (j->kind != DSN_FAILURE) {
        mark_sent(j);
        return;
    }
    for (size_t i = 0; i < j->nidx; i++) {
        const struct qrcpt *r = &j->env.rcpt[j->idx[i]];
        if (i)
            buf_puts(&what, "; ");
        dsn_safe_addr(&what, r->addr, 300);
        buf_puts(&what, ": ");
        dsn_safe_text(&what, r->reason ? r->reason : "unknown reason", 500);
    }
    log_warn("%s: undeliverable postmaster notification discarded (%s)", j->env.id, what.data);
    buf_destroy(&what);
    mark_sent(j);
}

/* Up to bounce_size_limit bytes of the original (a prefix when larger). */
static int read_content(struct job *j, buf_t *content, long long *orig_len, buf_t *err)
{
    long long len = 0;
    int fd = qfile_open_content(j->spool, j->env.id, &len, err);
    if (fd < 0)
        return -1;
    if (j->env.dkim) { /* the message as it was sent: signature first */
        buf_puts(content, j->env.dkim);
        len += (long long)content->len;
    }
    long long want = len;
    if (want > conf_int("bounce_size_limit"))
        want = conf_int("bounce_size_limit");
    buf_reserve(content, (size_t)want + 1);
    while ((long long)content->len < want) {
        ssize_t n =
            read(fd, content->data + content->len, (size_t)(want - (long long)content->len));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            buf_printf(err, "read %s: %s", j->env.id, n < 0 ? strerror(errno) : "short file");
            close(fd);
            return -1;
        }
        content->len += (size_t)n;
        content->data[content->len] = 0;
    }
    close(fd);
    *orig_len = len;
    return 0;
}

static void build_report(struct job *j, const buf_t *content, long long orig_len, buf_t *out)
{
    struct dsn_report r;
    memset(&r, 0, sizeof r);
    r.kind = j->kind;
    r.env = &j->env;
    r.idx = j->idx;
    r.nidx = j->nidx;
    r.myhostname = conf_str("myhostname");
    r.new_id = j->new_id;
    r.now = (long long)time(NULL);
    if (j->kind == DSN_DELAY)
        r.retry_until = (long long)j->env.arrival.tv_sec + conf_int("maximal_queue_lifetime");
    r.content = content->data ? content->data : "";
    r.content_len = content->len;
    r.orig_len = orig_len;
    buf_puts(out, "Received: by ");
    dsn_safe_addr(out, r.myhostname, 255);
    buf_printf(out, " (%s)\r\n\tid %s; ", "postino", j->new_id);
    dsn_date(out, r.now);
    buf_puts(out, "\r\n");
    dsn_build(&r, out);
}

/* Will the report hold 8-bit text (returned content, UTF-8 addresses or
 * remote replies)? Then it is declared BODY=8BITMIME (RFC 6152). */
static int report_8bit(const struct job *j, const buf_t *content)
{
    if (j->env.smtputf8 || (content->data && utf8_has_8bit(content->data, content->len)))
        return 1;
    for (size_t i = 0; i < j->nidx; i++) {
        const struct qrcpt *r = &j->env.rcpt[j->idx[i]];
        const char *texts[] = { r->addr, r->reason, r->relay };
        for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++)
            if (texts[k] && utf8_has_8bit(texts[k], strlen(texts[k])))
                return 1;
    }
    return 0;
}

/* Create, write and commit the report's queue file. */
static int queue_report(struct job *j, const char *sender, const char *rcpt, buf_t *err)
{
    buf_t content = BUF_INIT, msg = BUF_INIT;
    long long orig_len = 0;
    struct qenv env;
    int rc = -1;

    if (read_content(j, &content, &orig_len, err) < 0)
        goto out;
    qenv_init(&env);
    qenv_set(&env.sender, sender);
    qenv_set(&env.client_name, "localhost");
    qenv_set(&env.client_addr, "127.0.0.1");
    qenv_set(&env.helo, "localhost");
    qenv_set(&env.proto, "bounce");
    qenv_add_rcpt(&env, rcpt, NULL, 0);
    /* A report on SMTPUTF8 mail is itself SMTPUTF8 mail (RFC 6533): its
     * recipient, the original sender, may be a UTF-8 address. */
    env.smtputf8 = j->env.smtputf8;
    if (report_8bit(j, &content))
        env.body = QBODY_8BITMIME;
    struct qfile_w *w = qfile_create(j->spool, &env, err);
    if (w) {
        str_lcpy(j->new_id, qfile_w_id(w), sizeof j->new_id);
        build_report(j, &content, orig_len, &msg);
        if (qfile_write(w, msg.data, msg.len) < 0) {
            buf_printf(err, "write %s: %s", j->new_id, strerror(errno));
            qfile_abort(w);
        } else {
            rc = qfile_commit(w, err);
        }
    }
    qenv_destroy(&env);
out:
    buf_destroy(&content);
    buf_destroy(&msg);
    return rc;
}

/* The report for the selected recipients (none: nothing to send). */
static void notify(struct job *j, attr_t *reply)
{
    buf_t err = BUF_INIT;
    const char *id = j->env.id;
    buf_t to = BUF_INIT, from = BUF_INIT;
    if (j->nidx > 0 && j->env.sender[0] == 0 && j->kind == DSN_FAILURE) {
        /* A notification that failed: a double bounce, to postmaster,
         * from the double-bounce address (whose own failure is dropped). */
        qualify(conf_str("2bounce_notice_recipient"), &to);
        qualify(conf_str("double_bounce_sender"), &from);
    } else {
        buf_set(&to, j->env.sender);
    }
    if (j->nidx > 0 && (is_double_bounce(j->env.sender) || to.len == 0)) {
        null_sender(j);
    } else if (j->nidx > 0) {
        if (queue_report(j, buf_str(&from), buf_str(&to), &err) < 0) {
            reply_fail(reply, "%s: cannot queue %s: %s", id, log_what[j->kind], buf_str(&err));
            goto out;
        }
        mark_sent(j);
        log_info("%s: %s: %s", id,
                 from.len ? "postmaster non-delivery notification" : log_what[j->kind], j->new_id);
    }
    attr_add(reply, "status", "ok");
    attr_add(reply, "queue_id", j->new_id);
out:
    buf_destroy(&err);
    buf_destroy(&to);
    buf_destroy(&from);
}

static enum conn_verdict run_job(struct job *j, const attr_t *req, attr_t *reply, const char **why)
{
    buf_t err = BUF_INIT;
    const char *id = attr_get(req, "queue_id");
    enum conn_verdict v = CONN_OK;

    if (!id || !qid_valid(id)) {
        *why = "missing or invalid queue_id";
        v = CONN_DROP;
    } else if (qfile_read(j->spool, id, &j->env, 0, &err) < 0) {
        reply_fail(reply, "%s: %s", id, err.data ? err.data : "cannot read queue file");
    } else if (select_rcpts(j, req) < 0) {
        *why = "recipient index out of range";
        v = CONN_DROP;
    } else {
        notify(j, reply);
    }
    buf_destroy(&err);
    return v;
}

enum conn_verdict bounce_notify_request(const char *spool, const attr_t *req, attr_t *reply,
                                        const char **why)
{
    struct job j;
    enum conn_verdict v;

    attr_clear(reply);
    memset(&j, 0, sizeof j);
    j.spool = spool;
    j.kind = dsn_kind_from_request(attr_get(req, "request"));
    if (j.kind < 0) {
        reply_fail(reply, "unknown request \"%s\"", attr_get_def(req, "request", ""));
        return CONN_OK;
    }
    qenv_init(&j.env);
    v = run_job(&j, req, reply, why);
    qenv_destroy(&j.env);
    free(j.idx);
    return v;
}
