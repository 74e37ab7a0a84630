/* qmgr_throttle.c - adaptive throttling: what qmgr learns from each job's
 * outcome at a site.
 *
 * Three kinds of feedback (issue #9):
 *   - rules: the first deferred (else bounced) reply of a job goes through
 *     the shaping_rules (shaperules.c); a match suspends, throttles or
 *     bounces the site for the rule's duration through qmgr_site.c, which
 *     logs the change and ends it when the time is over;
 *   - slow start: every job that came back feeds the site's AIMD controller
 *     (qmgr_slowstart.c, kept in the site), a success up, a deferral or a
 *     failed connection down; qmgr_site.c takes its limit as the site's
 *     concurrency, under the configured cap;
 *   - suspend_source: a rule that blames the source address takes that
 *     address out of its pool for this site alone (qmgr_pool.c asks
 *     qmgr_throttle_source_ok); without pools there is one address and the
 *     whole site is suspended.
 * The rules are read once per qmgr process (a reload starts a new qmgr). A
 * broken file is logged with its line and qmgr runs without rules. */
#include "qmgr/qmgr.h"

#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "common/util/alloc.h"
#include "common/util/log.h"
#include "common/mail/shaperules.h"
#include "qmgr/qmgr_slowstart.h"

/* Longest reply quoted in the site's state reason and the log line. */
#define WHY_MAX 160

static struct shaperules *rules;

/* A source address suspended for one site. Few at a time (one per rule
 * match and address, each for the rule's duration): a list is enough. */
struct src_block {
    char *site, *ip;
    long long until;
    LIST_ENTRY(src_block) link;
};
static LIST_HEAD(, src_block) blocks = LIST_HEAD_INITIALIZER(blocks);

static void block_free(struct src_block *b)
{
    LIST_REMOVE(b, link);
    free(b->site);
    free(b->ip);
    free(b);
}

int qmgr_throttle_source_ok(const struct qmgr_site *s, const char *ip)
{
    struct src_block *b;
    if (s == NULL || ip == NULL)
        return 1;
    LIST_FOREACH(b, &blocks, link)
    if (strcmp(b->ip, ip) == 0 && strcmp(b->site, s->name) == 0)
        return b->until <= (long long)time(NULL);
    return 1;
}

/* Suspend ip for site s (or extend it); one log line. */
static void source_suspend(struct qmgr_site *s, const char *ip, long long secs, const char *why)
{
    struct src_block *b;
    buf_t d = BUF_INIT;
    LIST_FOREACH(b, &blocks, link)
    if (strcmp(b->ip, ip) == 0 && strcmp(b->site, s->name) == 0)
        break;
    if (b == NULL) {
        b = xcalloc(1, sizeof *b);
        b->site = xstrdup(s->name);
        b->ip = xstrdup(ip);
        LIST_INSERT_HEAD(&blocks, b, link);
    }
    b->until = (long long)time(NULL) + secs;
    shaperules_format_secs(secs, &d);
    log_info("site=%s source=%s suspended for %s after \"%s\"", s->name, ip, buf_str(&d), why);
    buf_destroy(&d);
}

void qmgr_throttle_tick(void)
{
    struct src_block *b, *next;
    long long now = (long long)time(NULL);
    for (b = LIST_FIRST(&blocks); b; b = next) {
        next = LIST_NEXT(b, link);
        if (b->until > now)
            continue;
        log_info("site=%s source=%s back to normal", b->site, b->ip);
        block_free(b);
    }
}

void qmgr_throttle_init(void)
{
    buf_t err = BUF_INIT;
    rules = shaperules_load_conf(&err);
    if (rules == NULL)
        log_warn("shaping rules: %s; no adaptive throttling until it is fixed", buf_str(&err));
    buf_destroy(&err);
}

void qmgr_throttle_close(void)
{
    shaperules_free(rules);
    rules = NULL;
    while (!LIST_EMPTY(&blocks))
        block_free(LIST_FIRST(&blocks));
}

/* What a job's reply says, for the feedback. */
struct job_outcome {
    int sent, deferred, bounced, dest_fail;
    const char *reason, *dsn; /* first deferral, else first bounce */
};

static void outcome_read(const attr_t *reply, struct job_outcome *o)
{
    const char *defer_r = NULL, *defer_d = NULL, *bounce_r = NULL, *bounce_d = NULL;
    memset(o, 0, sizeof *o);
    for (size_t p = 0; p + 3 < reply->n; p++) {
        if (strcmp(reply->v[p].name, "rcpt") != 0)
            continue;
        const char *res = reply->v[p + 1].value;
        if (strcmp(res, "sent") == 0)
            o->sent++;
        else if (strcmp(res, "deferred") == 0 && o->deferred++ == 0) {
            defer_d = reply->v[p + 2].value;
            defer_r = reply->v[p + 3].value;
        } else if (strcmp(res, "bounced") == 0 && o->bounced++ == 0) {
            bounce_d = reply->v[p + 2].value;
            bounce_r = reply->v[p + 3].value;
        }
        p += 3;
    }
    const char *dest = attr_get(reply, "dest");
    o->dest_fail = dest && strcmp(dest, "fail") == 0;
    o->reason = defer_r ? defer_r : bounce_r;
    o->dsn = defer_r ? defer_d : bounce_d;
}

/* The reply as the state reason: its lines joined, at most WHY_MAX bytes. */
static void reply_why(const char *reply, buf_t *why)
{
    buf_set(why, "");
    for (const char *s = reply; *s && why->len < WHY_MAX; s++)
        buf_putc(why, *s == '\n' || *s == '\r' || *s == '\t' ? ' ' : *s);
    if (why->len >= WHY_MAX)
        buf_puts(why, "...");
}

/* A bounce action's status: the reply's own enhanced code made permanent. */
static void bounce_dsn(const char *dsn, char out[16])
{
    if (dsn && (dsn[0] == '4' || dsn[0] == '5') && dsn[1] == '.' && strlen(dsn) < 16) {
        str_lcpy(out, dsn, 16);
        out[0] = '5';
    } else {
        str_lcpy(out, "5.0.0", 16);
    }
}

/* 1 when the rule changed the site's own state (not just a source's). */
static int apply_rule(struct qmgr_site *s, const char *ip, const struct shaperule *r,
                      const char *dsn, const char *why)
{
    char bdsn[16];
    switch (r->action) {
    case SHAPERULE_SUSPEND_SOURCE:
        if (ip) {
            source_suspend(s, ip, r->secs, why);
            return 0;
        }
        /* no pool: the one source address is the site's only way in */
        qmgr_site_suspend(s, r->secs, why);
        break;
    case SHAPERULE_SUSPEND:
        qmgr_site_suspend(s, r->secs, why);
        break;
    case SHAPERULE_RATE:
        qmgr_site_throttle_rate(s, r->per_sec, r->secs, why);
        break;
    case SHAPERULE_CONNECTIONS:
        qmgr_site_throttle_conc(s, r->conns, r->secs, why);
        break;
    case SHAPERULE_BOUNCE:
        bounce_dsn(dsn, bdsn);
        qmgr_site_bounce_queued(s, bdsn, why);
        return 0;
    }
    return 1;
}

/* The rules on one reply; a rule already in force at s is not applied
 * again (the jobs under way when it matched get the same reply). */
static void run_rules(struct qmgr_site *s, const char *ip, const char *reason, const char *dsn)
{
    buf_t host = BUF_INIT, reply = BUF_INIT, why = BUF_INIT;
    shaperules_split_reason(reason, &host, &reply);
    struct shaperule_reply in = { 0, NULL, buf_str(&reply), s->name,
                                  host.len ? buf_str(&host) : NULL };
    const struct shaperule *r = shaperules_match(rules, &in);
    int again =
        r && ((s->rule == r && s->state != SITE_NORMAL) ||
              (r->action == SHAPERULE_SUSPEND_SOURCE && ip && !qmgr_throttle_source_ok(s, ip)));
    if (r && !again) {
        reply_why(buf_str(&reply), &why);
        if (apply_rule(s, ip, r, dsn, buf_str(&why)))
            s->rule = r;
    }
    buf_destroy(&host);
    buf_destroy(&reply);
    buf_destroy(&why);
}

void qmgr_throttle_job_done(struct qmgr_site *s, const char *ip, const attr_t *reply)
{
    struct job_outcome o;
    const char *status = reply ? attr_get(reply, "status") : NULL;
    if (s == NULL || status == NULL || strcmp(status, "ok") != 0)
        return; /* no agent, or it refused the job: nothing about the site */
    outcome_read(reply, &o);
    if (o.deferred || o.dest_fail) {
        qmgr_slowstart_failure(&s->slow);
    } else if (o.sent) {
        qmgr_slowstart_success(&s->slow);
        qmgr_site_window_grown(s);
    }
    if (o.reason && rules)
        run_rules(s, ip, o.reason, o.dsn);
}
