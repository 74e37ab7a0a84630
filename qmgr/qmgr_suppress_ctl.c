/* qmgr_suppress_ctl.c - the suppression list's control requests, from the
 * CLI and the feedback consumer (qmgr_control.c checks who may ask):
 *
 *   request=suppress_add address=A [scope=D] [reason=R] [text=T] [expires=E]
 *   request=suppress_remove address=A [scope=D]
 *   request=suppress_list [scope=D] [after_scope=D after_address=A] [limit=N]
 *   request=suppress_import, then per entry: address=A [scope=D]
 *       [reason=R] [text=T] [added=T] [expires=E] (each entry starts at its
 *       address=; at most ATTR_COUNT_MAX attributes a request)
 *
 * scope: a sender domain, "" or absent for global. reason: a bounce
 * category, "complaint" or "manual" (default). expires: unix time, 0 for
 * never; absent: suppression_expiry from now (0: never). Answers:
 * status=ok count=N, or status=fail reason=WHY. suppress_list answers one
 * page: a record per live entry (address scope reason text added expires),
 * then end=1 count=N more=0|1 last_scope= last_address=; the client asks
 * for the next page after last_*, so neither side holds a long list in
 * memory and qmgr's read cursor never outlives one request. */
#include "qmgr/qmgr.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/mail/bclass.h"
#include "common/mail/conf.h"
#include "common/mail/suppress.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

#define LIST_PAGE_DEFAULT 1000
#define LIST_PAGE_MAX     10000

static int reason_ok(const char *r)
{
    enum bclass c;

    return strcmp(r, "complaint") == 0 || strcmp(r, "manual") == 0 || bclass_from_name(r, &c) == 0;
}

static int parse_time(const char *s, long long *out)
{
    char *end;

    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    *out = strtoll(s, &end, 10);
    return errno == 0 && *end == '\0' ? 0 : -1;
}

/* Expiry of a new entry: as given, or suppression_expiry from now. */
static int entry_expiry(const char *given, long long now, long long *out)
{
    long long life = conf_int("suppression_expiry");

    if (given == NULL) {
        *out = life > 0 ? now + life : 0;
        return 0;
    }
    return parse_time(given, out);
}

static struct suppress *store_or_fail(const char **err)
{
    struct suppress *s = qmgr_suppress_store();

    if (s == NULL)
        *err = "the suppression list is not available (see the log)";
    return s;
}

static void reply_count(struct evbuffer *out, long count)
{
    attr_t r = ATTR_INIT;

    attr_add(&r, "status", "ok");
    attr_add_ll(&r, "count", count);
    attr_to_evbuffer(out, &r);
    attr_destroy(&r);
}

/* Check an entry (fields already set) and say what is wrong. */
static const char *entry_check(const struct suppress_entry *e)
{
    buf_t b = BUF_INIT;
    const char *why = NULL;

    if (suppress_norm_address(e->address, &b) < 0)
        why = "invalid address";
    else if (suppress_norm_scope(e->scope, &b) < 0)
        why = "invalid scope (a domain, or empty for global)";
    else if (!reason_ok(e->reason))
        why = "invalid reason (a bounce category, complaint or manual)";
    buf_destroy(&b);
    return why;
}

static int put_one(struct suppress *s, const struct suppress_entry *e, const char **err)
{
    buf_t why = BUF_INIT;
    int rc = suppress_put(s, e, &why);

    if (rc < 0)
        *err = "the suppression list failed (see the log)";
    buf_destroy(&why);
    return rc;
}

int qmgr_suppress_ctl_add(const attr_t *req, struct evbuffer *out, const char **err)
{
    struct suppress *s = store_or_fail(err);
    long long now = (long long)time(NULL);
    struct suppress_entry e = {
        (char *)attr_get_def(req, "scope", ""),
        (char *)attr_get_def(req, "address", ""),
        (char *)attr_get_def(req, "reason", "manual"),
        (char *)attr_get_def(req, "text", ""),
        now,
        0,
    };

    if (s == NULL)
        return -1;
    if ((*err = entry_check(&e)) != NULL)
        return -1;
    if (entry_expiry(attr_get(req, "expires"), now, &e.expires) < 0) {
        *err = "invalid expires (unix time, 0 for never)";
        return -1;
    }
    if (put_one(s, &e, err) < 0)
        return -1;
    buf_t a = BUF_INIT, sc = BUF_INIT; /* as stored */
    suppress_norm_address(e.address, &a);
    suppress_norm_scope(e.scope, &sc);
    log_info("suppression list: added <%s> (%s, %s) by request", buf_str(&a), e.reason,
             sc.len ? buf_str(&sc) : "global");
    buf_destroy(&a);
    buf_destroy(&sc);
    qmgr_suppress_changed();
    qmgr_suppress_sync();
    reply_count(out, 1);
    return 0;
}

int qmgr_suppress_ctl_remove(const attr_t *req, struct evbuffer *out, const char **err)
{
    struct suppress *s = store_or_fail(err);
    const char *addr = attr_get_def(req, "address", "");
    const char *scope = attr_get_def(req, "scope", "");

    if (s == NULL)
        return -1;
    enum suppress_result r = suppress_del(s, scope, addr);
    if (r == SUPPRESS_FAILED) {
        *err = "the suppression list failed (see the log)";
        return -1;
    }
    if (r == SUPPRESS_FOUND) {
        log_info("suppression list: removed <%s> (%s) by request", addr, *scope ? scope : "global");
        qmgr_suppress_changed();
        qmgr_suppress_sync();
    }
    reply_count(out, r == SUPPRESS_FOUND);
    return 0;
}

/* ---- list ---- */

struct list_ctx {
    struct evbuffer *out;
    long long now;
    long listed;
    buf_t last_scope, last_addr;
};

static int list_cb(const struct suppress_entry *e, void *arg)
{
    struct list_ctx *c = arg;
    attr_t r = ATTR_INIT;

    buf_set(&c->last_scope, e->scope);
    buf_set(&c->last_addr, e->address);
    if (e->expires > 0 && e->expires <= c->now)
        return 0; /* no longer a match: the purge removes it */
    attr_add(&r, "address", e->address);
    attr_add(&r, "scope", e->scope);
    attr_add(&r, "reason", e->reason);
    attr_add(&r, "text", e->text);
    attr_add_ll(&r, "added", e->added);
    attr_add_ll(&r, "expires", e->expires);
    attr_to_evbuffer(c->out, &r);
    attr_destroy(&r);
    c->listed++;
    return 0;
}

int qmgr_suppress_ctl_list(const attr_t *req, struct evbuffer *out, const char **err)
{
    struct suppress *s = store_or_fail(err);
    struct list_ctx c = { out, (long long)time(NULL), 0, BUF_INIT, BUF_INIT };
    const char *as = attr_get(req, "after_scope"), *aa = attr_get(req, "after_address");
    long long limit = LIST_PAGE_DEFAULT;
    attr_t r = ATTR_INIT;

    if (s == NULL)
        return -1;
    if (attr_get(req, "limit") &&
        (attr_get_ll(req, "limit", &limit) < 0 || limit < 1 || limit > LIST_PAGE_MAX)) {
        *err = "invalid limit";
        return -1;
    }
    if ((as == NULL) != (aa == NULL)) {
        *err = "after_scope and after_address go together";
        return -1;
    }
    long n = suppress_scan(s, attr_get(req, "scope"), as, aa, (size_t)limit, list_cb, &c);
    if (n >= 0) {
        attr_add(&r, "end", "1");
        attr_add_ll(&r, "count", c.listed);
        attr_add(&r, "more", n == limit ? "1" : "0");
        attr_add(&r, "last_scope", buf_str(&c.last_scope));
        attr_add(&r, "last_address", buf_str(&c.last_addr));
        attr_to_evbuffer(out, &r);
    } else {
        *err = "the suppression list failed (see the log)";
    }
    attr_destroy(&r);
    buf_destroy(&c.last_scope);
    buf_destroy(&c.last_addr);
    return n >= 0 ? 0 : -1;
}

/* ---- import ---- */

/* The entries of an import request, pointing into it. */
struct import {
    struct suppress_entry *e;
    size_t n, cap;
};

/* One attribute of the entry being read; -1 for one we do not know. */
static int import_field(struct suppress_entry *e, const char *name, const char *value,
                        const char **err)
{
    if (strcmp(name, "scope") == 0)
        e->scope = (char *)value;
    else if (strcmp(name, "reason") == 0)
        e->reason = (char *)value;
    else if (strcmp(name, "text") == 0)
        e->text = (char *)value;
    else if (strcmp(name, "added") == 0 && parse_time(value, &e->added) == 0)
        ;
    else if (strcmp(name, "expires") == 0 && parse_time(value, &e->expires) == 0)
        ;
    else {
        *err = "invalid attribute in an imported entry";
        return -1;
    }
    return 0;
}

static int import_parse(const attr_t *req, struct import *im, long long now, const char **err)
{
    long long life = conf_int("suppression_expiry");

    for (size_t i = 0; i < req->n; i++) {
        const char *name = req->v[i].name, *value = req->v[i].value;
        if (strcmp(name, "address") == 0) {
            im->e = xgrow(im->e, &im->cap, im->n + 1, sizeof(*im->e));
            im->e[im->n++] =
                (struct suppress_entry){ (char *)"", (char *)value, (char *)"manual",
                                         (char *)"", now,           life > 0 ? now + life : 0 };
        } else if (im->n > 0 && import_field(&im->e[im->n - 1], name, value, err) < 0) {
            return -1;
        }
    }
    for (size_t i = 0; i < im->n; i++)
        if ((*err = entry_check(&im->e[i])) != NULL)
            return -1;
    return 0;
}

int qmgr_suppress_ctl_import(const attr_t *req, struct evbuffer *out, const char **err)
{
    struct suppress *s = store_or_fail(err);
    struct import im = { NULL, 0, 0 };
    int rc = -1;

    if (s && import_parse(req, &im, (long long)time(NULL), err) == 0) {
        size_t i = 0;
        while (i < im.n && put_one(s, &im.e[i], err) == 0)
            i++;
        if (i > 0) {
            qmgr_suppress_changed();
            qmgr_suppress_sync();
        }
        if (i == im.n) {
            reply_count(out, (long)im.n);
            rc = 0;
        }
    }
    free(im.e);
    return rc;
}
