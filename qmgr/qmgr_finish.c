/* qmgr_finish.c - the end of a message's round: expire what is too old,
 * ask bounce for failure/delay/success notices, then defer (back-off in
 * the index) or remove the message once nothing is pending. */
#include "qmgr/qmgr.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "common/util/alloc.h"
#include "common/mail/bclass.h"
#include "common/mail/conf.h"
#include "common/util/log.h"
#include "qmgr/qmgr_route.h"

static const int kind_notify[] = {
    [QK_BOUNCE] = NOTIFY_FAILURE,
    [QK_DELAY] = NOTIFY_DELAY,
    [QK_SUCCESS] = NOTIFY_SUCCESS,
};

static int rcpt_pending(const struct qmgr_msg *m, size_t i)
{
    int st = m->env.rcpt[i].status;
    return st != QR_SENT && st != QR_BOUNCED;
}

static void msg_remove(struct qmgr_msg *m)
{
    if (qfile_remove(qmgr_g.spool, m->id) < 0)
        log_warn("%s: cannot remove queue file", m->id);
    qmgr_qindex_del(qmgr_g.qi, m->id);
    log_info("%s: removed", m->id);
    qmgr_msg_free(m);
}

static int msg_expired(const struct qmgr_msg *m, long long now)
{
    const char *lt =
        m->env.sender && *m->env.sender ? "maximal_queue_lifetime" : "bounce_queue_lifetime";
    return (long long)m->env.arrival.tv_sec + conf_int(lt) <= now;
}

/* Only crashed/cancelled recipients are pending: not a real deferral. */
static int only_crashed(const struct qmgr_msg *m)
{
    for (size_t i = 0; i < m->env.nrcpt; i++)
        if (rcpt_pending(m, i) && m->rr[i] != RR_CRASH && m->rr[i] != RR_CANCEL)
            return 0;
    return 1;
}

static void msg_expire(struct qmgr_msg *m)
{
    log_info("%s: from=<%s>, status=expired, returned to sender, category=%s", m->id,
             m->env.sender ? m->env.sender : "", bclass_name(BCLASS_MESSAGE_EXPIRED));
    for (size_t i = 0; i < m->env.nrcpt; i++) {
        struct qrcpt *r = &m->env.rcpt[i];
        if (!rcpt_pending(m, i))
            continue;
        const char *why = r->reason && *r->reason ? r->reason
                          : m->reason             ? m->reason
                                                  : "message expired";
        const char *cat = bclass_name(BCLASS_MESSAGE_EXPIRED);
        if (qfile_append_result(qmgr_g.spool, m->id, i, QR_BOUNCED, "4.4.7", "none", why, cat) < 0)
            log_warn("%s: cannot append result for recipient %zu", m->id, i);
        /* before why, which may be r->reason, is replaced */
        qmgr_msg_event(m, i, "expiration", "4.4.7", "bounced", why, cat);
        r->status = QR_BOUNCED;
        qmgr_metrics_outcome(m, NULL, RR_BOUNCED, cat);
        qenv_set(&r->dsn, "4.4.7");
        qenv_set(&r->reason, why);
        qenv_set(&r->category, cat);
    }
}

/* Recipients wanting a notice of kind; returns the count (idx filled). */
static size_t collect(const struct qmgr_msg *m, enum qmgr_kind kind, size_t *idx)
{
    size_t n = 0;

    for (size_t i = 0; i < m->env.nrcpt; i++) {
        const struct qrcpt *r = &m->env.rcpt[i];
        if (r->dsn_sent & kind_notify[kind])
            continue;
        if ((kind == QK_BOUNCE && r->status == QR_BOUNCED) ||
            (kind == QK_SUCCESS && r->status == QR_SENT && (r->notify & NOTIFY_SUCCESS)) ||
            (kind == QK_DELAY && rcpt_pending(m, i)))
            idx[n++] = i;
    }
    return n;
}

static int want_delay_warning(const struct qmgr_msg *m, long long now)
{
    long long dwt = conf_int("delay_warning_time");

    return dwt > 0 && m->env.warned == 0 && now - (long long)m->env.arrival.tv_sec >= dwt;
}

static void finish_final(struct qmgr_msg *m)
{
    long long now = (long long)time(NULL);
    int pending = 0;

    for (size_t i = 0; i < m->env.nrcpt && !pending; i++)
        pending = rcpt_pending(m, i);
    if (m->deleted || (!pending && !m->notify_failed)) {
        msg_remove(m);
        return;
    }
    if (m->held) {
        qmgr_index_put_env(&m->env, QS_HOLD, 0, m->attempts, m->reason);
    } else if (pending && only_crashed(m) && !m->notify_failed) {
        qmgr_index_put_env(&m->env, QS_DEFERRED, now + QMGR_CRASH_RETRY, m->attempts, m->reason);
    } else {
        int att = m->attempts + 1;
        long long b = m->site_retry > 0 ? m->site_retry
                                        : qmgr_route_backoff(conf_int("minimal_backoff_time"),
                                                             conf_int("maximal_backoff_time"), att);
        qmgr_index_put_env(&m->env, QS_DEFERRED, now + b, att,
                           m->reason ? m->reason : "notification failed");
    }
    qmgr_msg_free(m);
}

void qmgr_finish_check(struct qmgr_msg *m)
{
    long long now = (long long)time(NULL);
    size_t *idx;

    if (m->guard > 0 || m->waiting > 0 || m->jobs > 0 || m->finishing)
        return;
    m->finishing = 1;
    if (m->deleted || m->held) {
        finish_final(m);
        return;
    }
    int deferred = 0;
    for (size_t i = 0; i < m->env.nrcpt && !deferred; i++)
        deferred = rcpt_pending(m, i);
    if (deferred && !only_crashed(m) && msg_expired(m, now))
        msg_expire(m);
    idx = xcalloc(m->env.nrcpt ? m->env.nrcpt : 1, sizeof(*idx));
    m->notify_pending = 1; /* hold off finish_final while requesting */
    for (enum qmgr_kind k = QK_BOUNCE; k <= QK_SUCCESS; k++) {
        if (k == QK_DELAY && !want_delay_warning(m, now))
            continue;
        size_t n = collect(m, k, idx);
        if (n > 0) {
            m->notify_pending++;
            qmgr_bounce_request(m, k, idx, n);
        }
    }
    free(idx);
    if (--m->notify_pending == 0)
        finish_final(m);
}

void qmgr_finish_notify_done(struct qmgr_msg *m, enum qmgr_kind kind, const size_t *idx, size_t n,
                             int ok)
{
    if (ok) {
        for (size_t i = 0; i < n; i++)
            if (idx[i] < m->env.nrcpt)
                m->env.rcpt[idx[i]].dsn_sent |= kind_notify[kind];
        if (kind == QK_DELAY) {
            char when[32];
            m->env.warned = (long long)time(NULL);
            snprintf(when, sizeof(when), "%lld", m->env.warned);
            if (qfile_append_record(qmgr_g.spool, m->id, "warned", when) < 0)
                log_warn("%s: cannot record the delay warning", m->id);
        }
    } else {
        m->notify_failed = 1;
    }
    if (--m->notify_pending == 0)
        finish_final(m);
}
