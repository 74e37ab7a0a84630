/* qmgr_suppress.c - qmgr, the one writer of the suppression list
 * (common/mail/suppress.h): it adds a recipient whose delivery bounced
 * with a hard category, and before a recipient is scheduled it asks the
 * list. A suppressed recipient is not sent: it is finished as bounced
 * (5.7.1, the entry's reason and date in the text) and marked as notified
 * BEFORE its result is written, so neither this qmgr nor one started
 * after a crash sends a bounce for it (no bounce storm to a sender who
 * mails a list of dead addresses). If the store cannot be opened, mail
 * goes out as if nothing were suppressed (and qmgr says so, then tries
 * again every minute): holding all mail would be worse. */
#include "qmgr/qmgr.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/mail/bclass.h"
#include "common/mail/conf.h"
#include "common/mail/suppress.h"
#include "common/util/log.h"

#define PURGE_EVERY  60    /* ticks (seconds) between purge steps */
#define PURGE_STEP   20000 /* entries looked at per step */
#define REOPEN_EVERY 60    /* ticks between attempts to open a failed store */

static struct suppress *store;
static buf_t store_dir;
static int dirty; /* written since the last sync */
static unsigned ticks;

struct suppress *qmgr_suppress_store(void)
{
    return store;
}

void qmgr_suppress_init(void)
{
    buf_t err = BUF_INIT;

    buf_reset(&store_dir);
    buf_printf(&store_dir, "%s/%s", qmgr_g.spool, SUPPRESS_DIR);
    store = suppress_open(buf_str(&store_dir), SUPPRESS_WRITE, NULL, &err);
    if (store == NULL)
        log_error("%s; mail to suppressed addresses is sent until it can be opened", buf_str(&err));
    buf_destroy(&err);
}

void qmgr_suppress_changed(void)
{
    dirty = 1;
}

void qmgr_suppress_sync(void)
{
    if (store && dirty)
        suppress_sync(store);
    dirty = 0;
}

void qmgr_suppress_close(void)
{
    qmgr_suppress_sync();
    suppress_close(store);
    store = NULL;
}

void qmgr_suppress_tick(void)
{
    ticks++;
    if (store == NULL && ticks % REOPEN_EVERY == 0) {
        buf_t err = BUF_INIT;
        store = suppress_open(buf_str(&store_dir), SUPPRESS_WRITE, NULL, &err);
        if (store == NULL)
            log_error("%s", buf_str(&err));
        buf_destroy(&err);
    }
    if (store && suppress_recover(store) < 0) {
        suppress_close(store); /* reopened in a minute */
        store = NULL;
    }
    if (store && ticks % PURGE_EVERY == 0) {
        long n = suppress_purge(store, (long long)time(NULL), PURGE_STEP);
        if (n > 0) {
            log_info("suppression list: %ld expired entr%s removed", n, n == 1 ? "y" : "ies");
            dirty = 1;
        }
    }
    qmgr_suppress_sync();
}

/* "recipient suppressed: bad-mailbox since 2026-11-30 (550 5.1.1 ...)" */
static void suppressed_text(const struct suppress_entry *e, buf_t *out)
{
    char day[32] = "?";
    time_t t = (time_t)e->added;
    struct tm tm;

    if (gmtime_r(&t, &tm))
        strftime(day, sizeof(day), "%Y-%m-%d", &tm);
    buf_printf(out, "recipient suppressed: %s since %s", e->reason, day);
    if (*e->text)
        buf_printf(out, " (%s)", e->text);
}

/* Finish recipient idx as bounced without a notification. Its category
 * is the entry's when that names one (bad-mailbox, ...); a complaint is
 * spam-related; a manual entry policy-related. */
static void finish_suppressed(struct qmgr_msg *m, size_t idx, const char *why, const char *reason)
{
    struct qrcpt *r = &m->env.rcpt[idx];
    char val[64];
    enum bclass c;
    const char *cat = bclass_from_name(reason, &c) == 0  ? bclass_name(c)
                      : strcmp(reason, "complaint") == 0 ? bclass_name(BCLASS_SPAM_RELATED)
                                                         : bclass_name(BCLASS_POLICY_RELATED);

    snprintf(val, sizeof(val), "%zu failure", idx);
    if (qfile_append_record(qmgr_g.spool, m->id, "dsn_sent", val) < 0 ||
        qfile_append_result(qmgr_g.spool, m->id, idx, QR_BOUNCED, "5.7.1", "none", why, cat) < 0)
        log_warn("%s: cannot record the suppressed recipient %zu", m->id, idx);
    r->dsn_sent |= NOTIFY_FAILURE;
    r->status = QR_BOUNCED;
    qenv_set(&r->dsn, "5.7.1");
    qenv_set(&r->reason, why);
    qenv_set(&r->category, cat);
    qmgr_msg_log_line(m, idx, "none", "5.7.1", "bounced", why, cat);
    qmgr_msg_event(m, idx, "suppression", "5.7.1", "bounced", why, cat);
}

int qmgr_suppress_rcpt(struct qmgr_msg *m, size_t idx)
{
    struct suppress_entry e;
    buf_t scope = BUF_INIT, why = BUF_INIT;
    enum suppress_result r = SUPPRESS_NONE;

    if (store == NULL)
        return 0;
    suppress_sender_scope(m->env.sender, &scope);
    r = suppress_check(store, buf_str(&scope), m->env.rcpt[idx].addr, (long long)time(NULL), &e);
    if (r == SUPPRESS_FOUND) {
        suppressed_text(&e, &why);
        finish_suppressed(m, idx, buf_str(&why), e.reason);
        suppress_entry_destroy(&e);
    }
    buf_destroy(&scope);
    buf_destroy(&why);
    return r == SUPPRESS_FOUND;
}

/* The category of a failure: the delivery agent's, else our own reading
 * of the reply. */
static enum bclass outcome_class(const char *dsn, const char *reason, const char *category)
{
    enum bclass c = BCLASS_OTHER;

    if (category && *category && bclass_from_name(category, &c) == 0)
        return c;
    return bclass_classify(0, dsn && *dsn ? dsn : NULL, reason ? reason : "");
}

void qmgr_suppress_outcome(struct qmgr_msg *m, size_t idx, enum qmgr_rr rr, const char *dsn,
                           const char *reason, const char *category)
{
    enum bclass c;
    buf_t scope = BUF_INIT, err = BUF_INIT;

    if (store == NULL || rr != RR_BOUNCED || idx >= m->env.nrcpt)
        return;
    c = outcome_class(dsn, reason, category);
    if (!bclass_is_hard(c))
        return;
    if (strcmp(conf_str("suppression_scope"), "sender_domain") == 0)
        suppress_sender_scope(m->env.sender, &scope);
    long long now = (long long)time(NULL), life = conf_int("suppression_expiry");
    struct suppress_entry e = { (char *)buf_str(&scope),
                                m->env.rcpt[idx].addr,
                                (char *)bclass_name(c),
                                (char *)(reason ? reason : ""),
                                now,
                                life > 0 ? now + life : 0 };
    if (suppress_put(store, &e, &err) == 0) {
        log_info("%s: to=<%s>, added to the suppression list (%s, %s)", m->id, e.address, e.reason,
                 *e.scope ? e.scope : "global");
        dirty = 1;
    } else {
        log_warn("%s: to=<%s>: cannot add to the suppression list: %s", m->id, e.address,
                 buf_str(&err));
    }
    buf_destroy(&scope);
    buf_destroy(&err);
}
