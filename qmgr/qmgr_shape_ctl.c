/* qmgr_shape_ctl.c - the control request "summary" for "postino queue
 * summary" (qmgr_control.c checks who may ask):
 *
 *   request=summary [by=site|domain] [state=incoming|active|deferred|hold]...
 *
 * answers one record per row, biggest first: name=, total=, buckets=
 * (comma-separated counts, qshape's columns, qmgr_shape.h), then end=1
 * count=<rows> total=<messages> buckets=<the TOTAL row>. A message counts
 * once per row it has pending recipients in (once in TOTAL). Why here:
 * the answer comes from the index (age, state and domains of every
 * message are in it), so no queue file is opened; sites are named as the
 * scheduler names them (qmgr_site_name_of), routing each domain once per
 * request. */
#include "qmgr/qmgr.h"
#include "qmgr/qmgr_shape.h"
#include "qmgr/qmgr_site.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "common/util/alloc.h"
#include "common/util/attr.h"
#include "qmgr/qmgr_route.h"

/* A domain's row, routed once per request (site mode). */
struct dom_row {
    char *domain;
    struct qmgr_qshape_row *row;
    struct hlink hlink;
};

struct shape_ctx {
    struct qshape q;
    struct htable doms;
    unsigned states; /* bit per enum qmgr_qidx_state; 0: all */
    int by_domain;
    long long now;
    struct qmgr_qshape_row **seen; /* rows of the current message */
    size_t nseen, cap;
};

static struct qmgr_qshape_row *site_row(struct shape_ctx *c, const char *domain)
{
    unsigned h = htable_hash_str(domain);
    buf_t addr = BUF_INIT, transport = BUF_INIT, nexthop = BUF_INIT, name = BUF_INIT;
    struct dom_row *d;

    for (struct hlink *l = htable_first(&c->doms, h); l; l = htable_next(l, h)) {
        d = HTABLE_ENTRY(l, struct dom_row, hlink);
        if (strcmp(d->domain, domain) == 0)
            return d->row;
    }
    buf_setf(&addr, "postmaster@%s", domain);
    qmgr_route_rcpt(buf_str(&addr), &transport, &nexthop);
    qmgr_site_name_of(buf_str(&transport), buf_str(&nexthop), &name);
    d = xcalloc(1, sizeof(*d));
    d->domain = xstrdup(domain);
    d->row = qmgr_qshape_row(&c->q, buf_str(&name));
    htable_insert(&c->doms, &d->hlink, h);
    buf_destroy(&addr);
    buf_destroy(&transport);
    buf_destroy(&nexthop);
    buf_destroy(&name);
    return d->row;
}

static int seen_row(struct shape_ctx *c, struct qmgr_qshape_row *r)
{
    for (size_t i = 0; i < c->nseen; i++)
        if (c->seen[i] == r)
            return 1;
    c->seen = xgrow(c->seen, &c->cap, c->nseen + 1, sizeof(*c->seen));
    c->seen[c->nseen++] = r;
    return 0;
}

static int shape_cb(const struct qmgr_qidx_rec *rec, void *arg)
{
    struct shape_ctx *c = arg;
    int b = qmgr_qshape_bucket(c->now - rec->arrival);

    if (c->states && !(c->states & (1u << rec->state)))
        return 0;
    qmgr_qshape_count(&c->q.all, b);
    c->nseen = 0;
    for (size_t i = 0; rec->domains && rec->domains[i]; i++) {
        const char *dom = *rec->domains[i] ? rec->domains[i] : "-";
        struct qmgr_qshape_row *r = c->by_domain ? qmgr_qshape_row(&c->q, dom) : site_row(c, dom);
        if (!seen_row(c, r))
            qmgr_qshape_count(r, b);
    }
    return 0;
}

static void add_row(attr_t *r, const struct qmgr_qshape_row *row)
{
    buf_t b = BUF_INIT;

    attr_add_ll(r, "total", row->total);
    for (int i = 0; i < QSHAPE_NBUCKETS; i++)
        buf_printf(&b, "%s%lld", i ? "," : "", row->n[i]);
    attr_add(r, "buckets", buf_str(&b));
    buf_destroy(&b);
}

static int parse_states(const attr_t *req, unsigned *states, const char **err)
{
    static const char *const names[] = { "incoming", "active", "deferred", "hold" };
    size_t pos = 0;
    const char *v;

    *states = 0;
    while ((v = attr_next(req, "state", &pos)) != NULL) {
        size_t i = 0;
        while (i < 4 && strcmp(names[i], v) != 0)
            i++;
        if (i == 4) {
            *err = "state must be incoming, active, deferred or hold";
            return -1;
        }
        *states |= 1u << i;
    }
    return 0;
}

static void shape_destroy(struct shape_ctx *c)
{
    struct hlink *l, *next;

    HTABLE_EACH(&c->doms, l, next)
    {
        struct dom_row *d = HTABLE_ENTRY(l, struct dom_row, hlink);
        htable_remove(&c->doms, l);
        free(d->domain);
        free(d);
    }
    htable_destroy(&c->doms);
    qmgr_qshape_destroy(&c->q);
    free(c->seen);
}

int qmgr_shape_ctl_summary(const attr_t *req, struct evbuffer *out, const char **err)
{
    struct shape_ctx c;
    const char *by = attr_get_def(req, "by", "site");
    struct qmgr_qshape_row **rows;
    size_t n;
    attr_t r = ATTR_INIT;

    memset(&c, 0, sizeof(c));
    if (strcmp(by, "site") != 0 && strcmp(by, "domain") != 0) {
        *err = "by must be site or domain";
        return -1;
    }
    if (parse_states(req, &c.states, err) < 0)
        return -1;
    c.by_domain = strcmp(by, "domain") == 0;
    c.now = (long long)time(NULL);
    qmgr_qshape_init(&c.q);
    htable_init(&c.doms, 64);
    qmgr_qindex_scan_all(qmgr_g.qi, shape_cb, &c);
    rows = qmgr_qshape_sorted(&c.q, &n);
    for (size_t i = 0; i < n; i++) {
        attr_clear(&r);
        attr_add(&r, "name", rows[i]->name);
        add_row(&r, rows[i]);
        attr_to_evbuffer(out, &r);
    }
    attr_clear(&r);
    attr_add(&r, "end", "1");
    attr_add_ll(&r, "count", (long long)n);
    add_row(&r, &c.q.all);
    attr_to_evbuffer(out, &r);
    attr_destroy(&r);
    free(rows);
    shape_destroy(&c);
    return 0;
}
