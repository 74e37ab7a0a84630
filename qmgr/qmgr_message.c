/* qmgr_message.c - messages in qmgr's memory: load from the queue file,
 * per-recipient round state, Postfix-shaped status log lines. */
#include "qmgr/qmgr.h"

#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "common/mail/addr.h"
#include "common/mail/conf.h"
#include "common/util/alloc.h"
#include "common/util/log.h"
#include "common/mail/mevent.h"

/* The messages in memory, by queue id. */
static struct htable msgs;

struct qmgr_msg *qmgr_msg_find(const char *id)
{
    unsigned h = htable_hash_str(id);

    for (struct hlink *l = htable_first(&msgs, h); l; l = htable_next(l, h)) {
        struct qmgr_msg *m = HTABLE_ENTRY(l, struct qmgr_msg, hlink);
        if (strcmp(m->id, id) == 0)
            return m;
    }
    return NULL;
}

static void msg_link(struct qmgr_msg *m)
{
    if (msgs.nb == 0)
        htable_init(&msgs, 1024);
    htable_insert(&msgs, &m->hlink, htable_hash_str(m->id));
}

void qmgr_msg_free(struct qmgr_msg *m)
{
    htable_remove(&msgs, &m->hlink);
    qmgr_g.st.active--;
    qmgr_g.st.rcpts -= m->env.nrcpt;
    qenv_destroy(&m->env);
    free(m->rr);
    free(m->reason);
    free(m->fairkey);
    free(m);
}

int qmgr_msg_room(void)
{
    return (long long)qmgr_g.st.active < qmgr_g.active_limit &&
           (long long)qmgr_g.st.rcpts < qmgr_g.rcpt_limit;
}

void qmgr_msg_foreach(void (*fn)(struct qmgr_msg *m, void *arg), void *arg)
{
    struct hlink *l, *next;

    HTABLE_EACH(&msgs, l, next) /* fn may free the message */
    fn(HTABLE_ENTRY(l, struct qmgr_msg, hlink), arg);
}

void qmgr_msg_set_reason(struct qmgr_msg *m, const char *reason)
{
    if (reason == NULL)
        return;
    free(m->reason);
    m->reason = xstrdup(reason);
}

static const char *sender_text(const struct qmgr_msg *m)
{
    return m->env.sender ? m->env.sender : "";
}

/* A delivery agent of the previous qmgr (before a reload) still works on
 * the message: its outcome is not in the file yet, so sending it again
 * now could deliver it twice. Look again in a second. (busy was asked
 * before the file was read: an agent appends its results before it lets
 * go, so a file read after a free probe has them.) */
static int still_delivered(struct qmgr_msg *m, int attempts, int busy)
{
    if (!busy)
        return 0;
    log_debug("%s: skipped, still being delivered", m->id);
    qmgr_index_put_env(&m->env, QS_ACTIVE, (long long)time(NULL) + 1, attempts, NULL);
    qenv_destroy(&m->env);
    free(m);
    return 1;
}

/* Its class (the queue file's priority=, smtpd's decision; none: bulk)
 * and the key of its sender's turn (qmgr_fair.h): the SASL login, else
 * the sender's domain. */
static void msg_classify(struct qmgr_msg *m)
{
    buf_t key = BUF_INIT, dom = BUF_INIT;

    m->prio = PRIO_BULK;
    if (m->env.priority && prio_from_name(m->env.priority, &m->prio) < 0)
        log_warn("%s: unknown priority class \"%s\" in the queue file; bulk", m->id,
                 m->env.priority);
    if (m->env.sasl_username && *m->env.sasl_username) {
        buf_printf(&key, "sasl:%s", m->env.sasl_username);
    } else if (m->env.sender && *m->env.sender) {
        addr_domain(m->env.sender, &dom);
        buf_printf(&key, "@%s", buf_str(&dom));
        str_lower(key.data);
    } else {
        buf_puts(&key, "<>");
    }
    m->fairkey = buf_detach(&key);
    buf_destroy(&dom);
}

int qmgr_msg_activate(const char *id, int attempts, int check_busy)
{
    struct qmgr_msg *m;
    buf_t err = BUF_INIT;

    if (qmgr_msg_find(id) != NULL)
        return 0;
    int busy = check_busy && qfile_busy(qmgr_g.spool, id) == 1;
    m = xcalloc(1, sizeof(*m));
    qenv_init(&m->env);
    if (qfile_read(qmgr_g.spool, id, &m->env, 0, &err) < 0) {
        log_warn("%s: cannot read queue file: %s", id, buf_str(&err));
        buf_destroy(&err);
        qenv_destroy(&m->env);
        free(m);
        return -1;
    }
    buf_destroy(&err);
    str_lcpy(m->id, id, sizeof(m->id));
    if (still_delivered(m, attempts, busy))
        return 0;
    m->attempts = attempts;
    m->active_since = qmgr_now();
    m->rr = xcalloc(m->env.nrcpt ? m->env.nrcpt : 1, 1);
    msg_link(m);
    qmgr_g.st.active++;
    qmgr_g.st.rcpts += m->env.nrcpt;
    msg_classify(m);
    /* Like Postfix: logged each time the message enters the active queue
     * (priority= after it, where pflogsumm does not look). */
    log_info("%s: from=<%s>, size=%lld, nrcpt=%zu (queue active), priority=%s", id, sender_text(m),
             m->env.content_len, m->env.nrcpt, prio_name(m->prio));
    if (m->env.hold) {
        qmgr_index_put_env(&m->env, QS_HOLD, 0, attempts, NULL);
        qmgr_msg_free(m);
        return 0;
    }
    qmgr_index_put_env(&m->env, QS_ACTIVE, (long long)m->active_since + QMGR_ACTIVE_LEASE, attempts,
                       NULL);
    qmgr_sched_message(m);
    return 0;
}

/* Postfix style: two significant digits below 10 s, whole seconds above. */
static void fmt_secs(buf_t *out, double x)
{
    if (x < 0)
        x = 0;
    if (x >= 10)
        buf_printf(out, "%.0f", x);
    else if (x >= 0.01)
        buf_printf(out, "%.2g", x);
    else
        buf_putc(out, '0');
}

static void fmt_delays(const struct qmgr_msg *m, buf_t *out, double conn, double xfer)
{
    double now = qmgr_now();
    double arr = (double)m->env.arrival.tv_sec + m->env.arrival.tv_usec / 1e6;
    double a = m->active_since - arr, b = now - m->active_since;

    buf_puts(out, "delay=");
    fmt_secs(out, now - arr);
    buf_puts(out, ", delays=");
    fmt_secs(out, a);
    buf_putc(out, '/');
    fmt_secs(out, b);
    buf_putc(out, '/');
    fmt_secs(out, conn);
    buf_putc(out, '/');
    fmt_secs(out, xfer);
}

void qmgr_msg_log_status(const struct qmgr_msg *m, size_t idx, const char *relay, const char *dsn,
                         const char *status, const char *reason, const char *category)
{
    qmgr_msg_log_line(m, idx, relay, dsn, status, reason, category);
    qmgr_msg_event(m, idx, NULL, dsn, status, reason, category);
}

void qmgr_msg_log_line(const struct qmgr_msg *m, size_t idx, const char *relay, const char *dsn,
                       const char *status, const char *reason, const char *category)
{
    buf_t d = BUF_INIT;

    fmt_delays(m, &d, 0, 0);
    /* category= after the status text, as the delivery agent logs it */
    log_info("%s: to=<%s>, relay=%s, %s, dsn=%s, status=%s (%s)%s%s", m->id, m->env.rcpt[idx].addr,
             relay, buf_str(&d), dsn, status, reason ? reason : "", category ? ", category=" : "",
             category ? category : "");
    buf_destroy(&d);
}

void qmgr_msg_event(const struct qmgr_msg *m, size_t idx, const char *type, const char *dsn,
                    const char *status, const char *reason, const char *category)
{
    attr_t a = ATTR_INIT;
    buf_t d = BUF_INIT;
    double arr = (double)m->env.arrival.tv_sec + m->env.arrival.tv_usec / 1e6;

    if (!mevent_enabled())
        return;
    if (type == NULL)
        type = strcmp(status, "deferred") == 0 ? "transient_failure" : "bounce";
    mevent_begin(&a, type);
    mevent_add(&a, "queue_id", m->id);
    mevent_add(&a, "message_id", m->env.message_id);
    mevent_add(&a, "sender", m->env.sender);
    mevent_add(&a, "recipient", m->env.rcpt[idx].addr);
    mevent_add_reply(&a, dsn, reason);
    mevent_add(&a, "category", category);
    attr_add_ll(&a, "size", m->env.content_len);
    fmt_secs(&d, qmgr_now() - arr);
    mevent_add(&a, "delay", buf_str(&d));
    mevent_send(&a);
    attr_destroy(&a);
    buf_destroy(&d);
}

void qmgr_msg_rcpt_done(struct qmgr_msg *m, size_t idx, enum qmgr_rr rr, const char *dsn,
                        const char *reason, const char *category)
{
    static const int to_status[] = {
        [RR_SENT] = QR_SENT,
        [RR_BOUNCED] = QR_BOUNCED,
        [RR_DEFERRED] = QR_DEFERRED,
    };
    struct qrcpt *r;

    if (idx >= m->env.nrcpt || m->rr[idx] != RR_WAIT)
        log_panic("%s: outcome for recipient %zu that is not in flight", m->id, idx);
    r = &m->env.rcpt[idx];
    m->rr[idx] = (unsigned char)rr;
    m->waiting--;
    if (rr == RR_SENT || rr == RR_BOUNCED || rr == RR_DEFERRED) {
        r->status = to_status[rr];
        qenv_set(&r->dsn, dsn ? dsn : "");
        qenv_set(&r->reason, reason ? reason : "");
        qenv_set(&r->category, rr == RR_SENT ? NULL : category);
    }
    if (rr == RR_DEFERRED || rr == RR_CRASH)
        qmgr_msg_set_reason(m, reason);
}

void qmgr_msg_defer_rcpt(struct qmgr_msg *m, size_t idx, const char *dsn, const char *reason,
                         const char *category)
{
    if (qfile_append_result(qmgr_g.spool, m->id, idx, QR_DEFERRED, dsn, "none", reason, category) <
        0)
        log_warn("%s: cannot append result for recipient %zu", m->id, idx);
    qmgr_msg_log_status(m, idx, "none", dsn, "deferred", reason, category);
    qmgr_msg_rcpt_done(m, idx, RR_DEFERRED, dsn, reason, category);
}

double qmgr_now(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}
