/* qmgr_site_ctl.c - the control request site_list, for "postino site
 * list" and "postino site show NAME" (qmgr_control.c checks who may ask):
 *
 *   request=site_list [name=NAME]
 *
 *   request=site_set name=NAME action=suspend|rate|connections|resume|bounce
 *       [secs=N] [value=RATE|N] [reason=TEXT]
 *
 * site_list answers one record per active site (name, state, until, reason, conns,
 * limit, rate = messages sent in the last minute, rate_limit, queued,
 * policy, last_defer= the last deferral's reason and last_defer_at= its time (0:
 * none), a domain= per destination domain, the first 200), then end=1 count=N; with
 * name= and no such site: status=fail reason=no such site. site_set
 * (postino site suspend/throttle/limit/resume) changes a site's state as
 * the adaptive rules do, and answers status=ok. */
#include "qmgr/qmgr.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "common/util/alloc.h"
#include "common/util/attr.h"

/* Domains listed per site (a record holds at most ATTR_COUNT_MAX). */
#define SITE_DOMAINS_MAX 200

struct list_ctx {
    struct evbuffer *out;
    const char *name; /* only this one, or NULL */
    size_t count;
};

static int seen_domain(const attr_t *r, const char *dom)
{
    size_t pos = 0;
    const char *v;

    while ((v = attr_next(r, "domain", &pos)) != NULL)
        if (strcmp(v, dom) == 0)
            return 1;
    return 0;
}

static void site_record(struct qmgr_site *s, void *arg)
{
    struct list_ctx *c = arg;
    long long now = (long long)time(NULL);
    const struct qmgr_dest *d;
    attr_t r = ATTR_INIT;
    buf_t pol = BUF_INIT, lim = BUF_INIT;

    if (c->name && strcmp(c->name, s->name) != 0)
        return;
    attr_add(&r, "name", s->name);
    attr_add(&r, "state", qmgr_site_state_name(s->state));
    attr_add_ll(&r, "until", s->state != SITE_NORMAL ? s->state_until : 0);
    attr_add(&r, "reason", s->state_reason ? s->state_reason : "");
    attr_add_ll(&r, "conns", s->conns);
    attr_add_ll(&r, "limit", s->conc_limit);
    attr_add_ll(&r, "window", qmgr_site_conc_now(s)); /* slow start (qmgr_slowstart.h) */
    attr_add_ll(&r, "rate", qmgr_site_rate_now(s, now));
    if (s->rate_throttle > 0)
        buf_printf(&lim, "%.0f/h", s->rate_throttle * 3600);
    else if (s->pol.msg_rate_text)
        buf_set(&lim, s->pol.msg_rate_text);
    attr_add(&r, "rate_limit", buf_str(&lim));
    attr_add_ll(&r, "queued", (long long)qmgr_site_queued(s));
    attr_add(&r, "last_defer", s->last_defer ? s->last_defer : "");
    attr_add_ll(&r, "last_defer_at", s->last_defer ? s->last_defer_at : 0);
    qmgr_shaping_format(&s->pol, &pol);
    attr_add(&r, "policy", buf_str(&pol));
    size_t ndom = 0;
    LIST_FOREACH(d, &s->dests, slink)
    if (ndom < SITE_DOMAINS_MAX && !seen_domain(&r, d->nexthop)) {
        attr_add(&r, "domain", d->nexthop);
        ndom++;
    }
    attr_to_evbuffer(c->out, &r);
    attr_destroy(&r);
    buf_destroy(&pol);
    buf_destroy(&lim);
    c->count++;
}

int qmgr_site_ctl_list(const attr_t *req, struct evbuffer *out, const char **err)
{
    struct list_ctx c = { out, attr_get(req, "name"), 0 };
    attr_t r = ATTR_INIT;

    if (c.name && qmgr_site_find(c.name) == NULL) {
        *err = "no such site";
        return -1;
    }
    qmgr_site_foreach(site_record, &c);
    attr_add(&r, "end", "1");
    attr_add_ll(&r, "count", (long long)c.count);
    attr_to_evbuffer(out, &r);
    attr_destroy(&r);
    return 0;
}

static int parse_ll(const char *v, long long lo, long long hi, long long *out)
{
    char *end;

    if (v == NULL || *v < '0' || *v > '9')
        return -1;
    errno = 0;
    *out = strtoll(v, &end, 10);
    return errno || *end || *out < lo || *out > hi ? -1 : 0;
}

/* Apply one site_set action to s; -1 with *err when malformed. */
static int site_set(struct qmgr_site *s, const attr_t *req, const char **err)
{
    const char *action = attr_get_def(req, "action", "");
    const char *reason = attr_get_def(req, "reason", "set by the administrator");
    const char *value = attr_get(req, "value");
    long long secs = 0, n;
    double rate;

    if (strcmp(action, "resume") == 0) {
        qmgr_site_resume(s);
        return 0;
    }
    if (strcmp(action, "bounce") == 0) {
        qmgr_site_bounce_queued(s, "5.0.0", reason);
        return 0;
    }
    if (parse_ll(attr_get(req, "secs"), 1, 365LL * 86400, &secs) < 0) {
        *err = "secs: want a number of seconds";
        return -1;
    }
    if (strcmp(action, "suspend") == 0) {
        qmgr_site_suspend(s, secs, reason);
    } else if (strcmp(action, "rate") == 0) {
        if (value == NULL || qmgr_gcra_parse_rate(value, &rate) < 0 || rate <= 0) {
            *err = "value: want a rate such as 300/h";
            return -1;
        }
        qmgr_site_throttle_rate(s, rate, secs, reason);
    } else if (strcmp(action, "connections") == 0) {
        if (parse_ll(value, 1, 10000, &n) < 0) {
            *err = "value: want a number of connections";
            return -1;
        }
        qmgr_site_throttle_conc(s, (int)n, secs, reason);
    } else {
        *err = "action: want suspend, rate, connections, resume or bounce";
        return -1;
    }
    return 0;
}

int qmgr_site_ctl_set(const attr_t *req, struct evbuffer *out, const char **err)
{
    const char *name = attr_get(req, "name");
    struct qmgr_site *s = name ? qmgr_site_find(name) : NULL;
    attr_t r = ATTR_INIT;

    if (s == NULL) {
        *err = "no such site";
        return -1;
    }
    if (site_set(s, req, err) < 0)
        return -1;
    qmgr_sched_dispatch();
    attr_add(&r, "status", "ok");
    attr_to_evbuffer(out, &r);
    attr_destroy(&r);
    return 0;
}
