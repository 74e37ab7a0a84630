/* lagent.c - the final delivery agents' skeleton (lagent.h): one
 * synchronous job per request of qmgr (its connections are
 * common/mail/qserve's), results and log lines, the message writer and
 * the privilege-dropping child. */
#include "common/mail/lagent.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/mail/conf.h"
#include "common/mail/mevent.h"
#include "common/mail/qserve.h"
#include "common/mail/server.h"
#include "common/util/alloc.h"
#include "common/util/attr.h"
#include "common/util/ipc.h"
#include "common/util/log.h"

static const struct lagent_ops *g_ops;
static struct server *g_srv;

void lagent_set(struct lagent_res *res, int status, const char *dsn, enum bclass cat,
                const char *fmt, ...)
{
    va_list ap;
    res->status = status;
    str_lcpy(res->dsn, dsn, sizeof(res->dsn));
    res->cat = cat;
    va_start(ap, fmt);
    vsnprintf(res->reason, sizeof(res->reason), fmt, ap);
    va_end(ap);
}

void lagent_set_errno(struct lagent_res *res, int err, const char *what)
{
    if (err == ENOSPC)
        lagent_set(res, QR_DEFERRED, "4.3.1", BCLASS_OTHER, "cannot write %s: %s", what,
                   "insufficient system storage");
    else if (err == EDQUOT)
        lagent_set(res, QR_DEFERRED, "4.2.2", BCLASS_QUOTA_ISSUES, "cannot write %s: %s", what,
                   "mailbox full (disk quota exceeded)");
    else
        lagent_set(res, QR_DEFERRED, "4.2.0", BCLASS_OTHER, "cannot write %s: %s", what,
                   strerror(err));
}

/* ---- writing the message ---- */

/* One line (without its CRLF/LF) plus LF, ">"-quoted for mbox. */
static int put_line(buf_t *out, int fd, const char *p, size_t n, int mbox)
{
    if (mbox && n >= 5 && memcmp(p, "From ", 5) == 0)
        buf_putc(out, '>');
    buf_append(out, p, n);
    buf_putc(out, '\n');
    if (out->len >= 65536) {
        if (ipc_write_all(fd, out->data, out->len) < 0)
            return -1;
        buf_reset(out);
    }
    return 0;
}

/* Every line of text (CRLF or LF ended; a last unterminated line too). */
static int put_text(buf_t *out, int fd, const char *text, size_t len, int mbox)
{
    size_t s = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] != '\n')
            continue;
        size_t e = i > s && text[i - 1] == '\r' ? i - 1 : i;
        if (put_line(out, fd, text + s, e - s, mbox) < 0)
            return -1;
        s = i + 1;
    }
    return s < len ? put_line(out, fd, text + s, len - s, mbox) : 0;
}

int lagent_copy(struct lagent_job *job, int fd, const char *return_path, const char *delivered_to,
                int mbox)
{
    buf_t out = BUF_INIT;
    char *body = NULL;
    long long got = 0;
    int rc = -1, saved = 0;

    if (mbox) {
        char date[64];
        time_t t = time(NULL);
        struct tm tm;
        strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", gmtime_r(&t, &tm));
        buf_printf(&out, "From %s %s\n", *job->env.sender ? job->env.sender : "MAILER-DAEMON",
                   date);
    }
    if (return_path)
        buf_printf(&out, "Return-Path: <%s>\n", return_path);
    if (delivered_to)
        buf_printf(&out, "Delivered-To: %s\n", delivered_to);
    if (job->env.dkim && put_text(&out, fd, job->env.dkim, strlen(job->env.dkim), mbox) < 0)
        goto done;
    body = xmalloc((size_t)job->content_len + 1);
    if (lseek(job->fd, job->env.content_off, SEEK_SET) < 0)
        goto done;
    while (got < job->content_len) {
        ssize_t n = read(job->fd, body + got, (size_t)(job->content_len - got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            goto done;
        }
        got += n;
    }
    if (put_text(&out, fd, body, (size_t)got, mbox) < 0)
        goto done;
    if (mbox)
        buf_putc(&out, '\n');
    rc = ipc_write_all(fd, out.data ? out.data : "", out.len);
done:
    saved = errno;
    free(body);
    buf_destroy(&out);
    errno = saved;
    return rc;
}

/* ---- another user's rights ---- */

static int drop_to(uid_t uid, gid_t gid, const char *user)
{
    if (geteuid() != 0)
        return uid == geteuid() ? 0 : -1;
    if (user ? initgroups(user, gid) < 0 : setgroups(1, &gid) < 0)
        return -1;
    if (setgid(gid) < 0 || setuid(uid) < 0)
        return -1;
    if (uid != 0 && (setuid(0) == 0 || geteuid() != uid || getegid() != gid))
        return -1;
    return 0;
}

void lagent_as_user(uid_t uid, gid_t gid, const char *user,
                    void (*fn)(void *arg, struct lagent_res *res), void *arg,
                    struct lagent_res *res)
{
    int p[2], st;
    pid_t pid;
    ssize_t n;
    struct lagent_res got;

    if (pipe2(p, O_CLOEXEC) < 0) {
        lagent_set_errno(res, errno, "a pipe");
        return;
    }
    if ((pid = fork()) < 0) {
        lagent_set(res, QR_DEFERRED, "4.3.0", BCLASS_OTHER, "cannot fork: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return;
    }
    if (pid == 0) {
        close(p[0]);
        signal(SIGPIPE, SIG_DFL);
        if (drop_to(uid, gid, user) < 0)
            lagent_set(res, QR_DEFERRED, "4.3.0", BCLASS_OTHER, "cannot switch to uid %ld gid %ld",
                       (long)uid, (long)gid);
        else
            fn(arg, res);
        n = write(p[1], res, sizeof(*res));
        _exit(n == (ssize_t)sizeof(*res) ? 0 : 1);
    }
    close(p[1]);
    do
        n = read(p[0], &got, sizeof(got));
    while (n < 0 && errno == EINTR);
    close(p[0]);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (n == (ssize_t)sizeof(got)) {
        got.dsn[sizeof(got.dsn) - 1] = '\0';
        got.reason[sizeof(got.reason) - 1] = '\0';
        *res = got;
    } else
        lagent_set(res, QR_DEFERRED, "4.3.0", BCLASS_OTHER,
                   "delivery process died without a result");
}

/* ---- one job ---- */

static double now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

/* The recipient's event (issue #11), from what the log line says. */
static void emit_rcpt(const struct lagent_job *job, const char *addr, const struct lagent_res *r,
                      const char *delay, const char *delays)
{
    attr_t a = ATTR_INIT;
    mevent_begin(&a, mevent_result_type(r->status));
    mevent_add(&a, "queue_id", job->id);
    mevent_add(&a, "message_id", job->env.message_id);
    mevent_add(&a, "sender", job->env.sender);
    mevent_add(&a, "recipient", addr);
    mevent_add(&a, "relay", g_ops->name);
    mevent_add_reply(&a, r->dsn, r->reason);
    if (r->status != QR_SENT)
        mevent_add(&a, "category", bclass_name(r->cat));
    attr_add_ll(&a, "size", job->content_len);
    if (job->attempt > 0)
        attr_add_ll(&a, "attempt", job->attempt);
    mevent_add(&a, "delay", delay);
    mevent_add(&a, "delays", delays);
    mevent_send(&a);
    attr_destroy(&a);
}

static void log_rcpt(const struct lagent_job *job, const char *addr, const struct lagent_res *r,
                     double t0, double t1)
{
    buf_t d = BUF_INIT, ds = BUF_INIT;
    double arrival = (double)job->env.arrival.tv_sec + job->env.arrival.tv_usec / 1e6;
    buf_put_delay(&d, t1 - arrival);
    buf_put_delay(&ds, t0 - arrival);
    buf_puts(&ds, "/0/0/");
    buf_put_delay(&ds, t1 - t0);
    log_info("%s: to=<%s>, relay=%s, delay=%s, delays=%s, dsn=%s, status=%s (%s)%s%s", job->id,
             addr, g_ops->name, buf_str(&d), buf_str(&ds), r->dsn, qrcpt_status_name(r->status),
             r->reason, r->status != QR_SENT ? ", category=" : "",
             r->status != QR_SENT ? bclass_name(r->cat) : "");
    if (mevent_enabled())
        emit_rcpt(job, addr, r, buf_str(&d), buf_str(&ds));
    buf_destroy(&d);
    buf_destroy(&ds);
}

static void deliver_one(struct lagent_job *job, size_t idx, attr_t *reply)
{
    struct lagent_res res;
    double t0 = now();

    lagent_set(&res, QR_DEFERRED, "4.3.0", BCLASS_OTHER, "internal error: no outcome");
    g_ops->deliver(job, idx, &res);
    if (qfile_append_result(g_srv->spool, job->id, idx, res.status, res.dsn, g_ops->name,
                            res.reason, res.status == QR_SENT ? NULL : bclass_name(res.cat)) < 0) {
        log_warn("%s: cannot record result for recipient %zu: %s", job->id, idx, strerror(errno));
        lagent_set(&res, QR_DEFERRED, "4.3.0", BCLASS_OTHER, "cannot record the result");
    }
    log_rcpt(job, job->env.rcpt[idx].addr, &res, t0, now());
    attr_addf(reply, "rcpt", "%zu", idx);
    attr_add(reply, "result", qrcpt_status_name(res.status));
    attr_add(reply, "dsn", res.dsn);
    attr_add(reply, "reason", res.reason);
}

/* One request, delivered before it returns (qserve.h's run). */
static enum conn_verdict run_job(struct qserve *qs, const attr_t *a, const size_t *idx, size_t n,
                                 const char **why)
{
    struct lagent_job job;
    const char *id = attr_get(a, "queue_id");
    attr_t reply = ATTR_INIT;
    buf_t err = BUF_INIT;
    enum conn_verdict verdict = CONN_OK;

    memset(&job, 0, sizeof(job));
    job.srv = g_srv;
    str_lcpy(job.id, id, sizeof(job.id));
    job.nexthop = attr_get(a, "nexthop") ? attr_get(a, "nexthop") : "";
    qenv_init(&job.env);
    job.fd = -1;
    if (attr_get_ll(a, "attempt", &job.attempt) < 0)
        job.attempt = 0;
    if (qfile_read(g_srv->spool, id, &job.env, 0, &err) < 0 ||
        (job.fd = qfile_open_content(g_srv->spool, id, &job.content_len, &err)) < 0) {
        log_warn("%s: cannot read the queue file: %s", id, buf_str(&err));
        attr_add(&reply, "status", "fail");
        attr_add(&reply, "reason", "cannot read the queue file");
        qserve_reply(qs, &reply);
        goto done;
    }
    if (qfile_lock_shared(job.fd) < 0)
        log_warn("%s: cannot lock the queue file: %s", id, strerror(errno));
    attr_add(&reply, "status", "ok");
    attr_add(&reply, "queue_id", id);
    for (size_t k = 0; k < n; k++) {
        if (idx[k] >= job.env.nrcpt) {
            *why = "bad recipient index";
            verdict = CONN_DROP;
            goto done;
        }
        deliver_one(&job, idx[k], &reply);
    }
    attr_add(&reply, "dest", "ok");
    qserve_reply(qs, &reply);
done:
    if (job.fd >= 0)
        close(job.fd);
    qenv_destroy(&job.env);
    attr_destroy(&reply);
    buf_destroy(&err);
    return verdict;
}

static void pre_drop(struct server *s)
{
    buf_t err = BUF_INIT;
    if (bclass_init(&err) < 0)
        log_fatal("%s", buf_str(&err));
    buf_destroy(&err);
    if (g_ops->pre_drop)
        g_ops->pre_drop(s);
}

static void post_drop(struct server *s)
{
    g_srv = s;
    signal(SIGPIPE, SIG_IGN);
    if (g_ops->post_drop)
        g_ops->post_drop(s);
}

int lagent_main(int argc, char **argv, const struct lagent_ops *ops)
{
    static const struct qserve_ops qops = { .agent = "delivery agent", .run = run_job };
    static struct server_hooks hooks = { .pre_drop = pre_drop, .post_drop = post_drop };
    g_ops = ops;
    hooks.takes_args = ops->takes_args;
    qserve_hooks(&hooks, &qops);
    return server_main(argc, argv, ops->name, &hooks, NULL);
}
