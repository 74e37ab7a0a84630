/* smtpd_suppress.c - smtpd_reject_suppressed: refuse RCPT to an address on
 * the suppression list (common/mail/suppress.h) when the client is
 * SASL-authenticated or a local user (sendmail) - our own sender, who gets the answer at once
 * instead of a message that qmgr would drop. Mail from others is never
 * refused here (qmgr drops it at queue time, with a log line).
 *
 * The store is opened read-only on first use and kept: CDB shows qmgr's
 * writes to an open reader. A store that does not exist yet means nothing
 * is suppressed (qmgr creates it; we look again after a while); one that
 * fails gets 451 4.3.0 and a log line, and is reopened at the next try. */
#include "smtpd/smtpd.h"

#include <stdio.h>
#include <time.h>

#include "common/mail/conf.h"
#include "common/mail/server.h"
#include "common/mail/suppress.h"
#include "common/util/log.h"

#define RETRY_SECS 5 /* between attempts to open a missing or broken store */

enum store_state { ST_CLOSED, ST_OPEN, ST_MISSING, ST_BROKEN };

static struct suppress *store;
static enum store_state state = ST_CLOSED;
static time_t next_try;

static enum store_state store_open(struct smtpd *d)
{
    time_t now = time(NULL);
    buf_t path = BUF_INIT, err = BUF_INIT;
    int missing = 0;

    if (state == ST_OPEN || ((state == ST_MISSING || state == ST_BROKEN) && now < next_try))
        return state;
    server_spool_path(d->srv, SUPPRESS_DIR, &path);
    store = suppress_open(buf_str(&path), SUPPRESS_READ, &missing, &err);
    if (store)
        state = ST_OPEN;
    else if (missing)
        state = ST_MISSING;
    else {
        state = ST_BROKEN;
        log_error("%s", buf_str(&err));
    }
    next_try = now + RETRY_SECS;
    buf_destroy(&path);
    buf_destroy(&err);
    return state;
}

static void store_close(void)
{
    suppress_close(store);
    store = NULL;
    state = ST_CLOSED;
}

void smtpd_suppress_done(void)
{
    store_close();
}

/* "550 5.7.1 <a@b>: Recipient address rejected: suppressed (bad-mailbox
 * since 2026-11-30)" */
static void suppressed_reply(const char *rcpt, const struct suppress_entry *e, buf_t *reply)
{
    char day[32] = "?";
    time_t t = (time_t)e->added;
    struct tm tm;

    if (gmtime_r(&t, &tm))
        strftime(day, sizeof(day), "%Y-%m-%d", &tm);
    buf_reset(reply);
    buf_printf(reply, "550 5.7.1 <%s>: Recipient address rejected: suppressed (%s since %s)", rcpt,
               e->reason, day);
}

enum smtpd_outcome smtpd_suppress_rcpt(struct smtpd_session *s, const char *rcpt, buf_t *reply)
{
    struct suppress_entry e;
    buf_t scope = BUF_INIT;
    enum suppress_result r;
    enum store_state st;

    if ((s->sasl_username == NULL && !s->local) || !conf_bool("smtpd_reject_suppressed"))
        return SMTPD_PASS;
    if ((st = store_open(s->d)) == ST_MISSING)
        return SMTPD_PASS;
    r = SUPPRESS_FAILED;
    if (st == ST_OPEN) {
        suppress_sender_scope(s->env.sender, &scope);
        r = suppress_check(store, buf_str(&scope), rcpt, (long long)time(NULL), &e);
        buf_destroy(&scope);
    }
    if (r == SUPPRESS_NONE)
        return SMTPD_PASS;
    if (r == SUPPRESS_FAILED) {
        if (st == ST_OPEN)
            store_close(); /* reopen at the next RCPT */
        buf_reset(reply);
        buf_printf(reply, "451 4.3.0 <%s>: Temporary lookup failure", rcpt);
    } else {
        suppressed_reply(rcpt, &e, reply);
        suppress_entry_destroy(&e);
    }
    smtpd_log_reject(s, "RCPT", buf_str(reply), rcpt);
    return SMTPD_REFUSED;
}
