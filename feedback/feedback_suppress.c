/* feedback_suppress.c - ask qmgr, the one writer of the suppression list,
 * to add a recipient (context of issue #8):
 *
 *   request=suppress_add  scope=<sender domain, "" for global>
 *   address=<rcpt>  reason=<category or "complaint">  text=<why>
 *   expires=0                           -> status=ok | status=fail reason=...
 *
 * One connection to public/control per request (qmgr closes a control
 * connection after a failed request anyway). A request qmgr declines is
 * logged and done with: retrying would not change qmgr's mind. A qmgr
 * that cannot be reached (or hangs up without an answer) is reported to
 * the job, which defers the report so the suppression is not lost. */
#include "feedback/feedback.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/mail/proto.h"
#include "common/mail/server.h"
#include "common/util/alloc.h"
#include "common/util/conn.h"
#include "common/util/log.h"

struct sreq {
    void (*done)(void *arg, int ok);
    void *arg;
    int answered;
    char qid[QID_LEN + 1];
    char rcpt[FB_ADDR_MAX];
    char scope[FB_FIELD_MAX];
    const char *reason;
};

static enum conn_verdict on_reply(struct conn *c, const attr_t *rec, void *arg, const char **why)
{
    struct sreq *r = arg;
    const char *st = attr_get(rec, "status"), *reason = attr_get(rec, "reason");

    if (r->answered)
        return CONN_OK;
    r->answered = 1;
    if (!st || strcmp(st, "ok") != 0)
        log_warn("%s: feedback: qmgr did not suppress <%s>: %s", r->qid, r->rcpt,
                 reason ? reason : "no reason given");
    else
        log_info("%s: feedback: suppressed <%s>, scope=%s, reason=%s", r->qid, r->rcpt,
                 r->scope[0] ? r->scope : "global", r->reason);
    r->done(r->arg, 1);
    conn_close(c);
    return CONN_OK;
}

static void on_close(struct conn *c, const char *why, void *arg)
{
    struct sreq *r = arg;

    if (!r->answered) {
        log_warn("%s: feedback: no answer from qmgr to suppress <%s>: %s", r->qid, r->rcpt,
                 why ? why : "connection closed");
        r->done(r->arg, 0);
    }
    free(r);
}

static const char *reason_of(const struct fb_event *e)
{
    return e->complaint ? "complaint" : bclass_name(e->category);
}

static void request(const struct fb_event *e, attr_t *a)
{
    attr_add(a, "proto", PROTO_VERSION);
    attr_add(a, "request", "suppress_add");
    attr_add(a, "scope", e->scope);
    attr_add(a, "address", e->rcpt);
    attr_add(a, "reason", reason_of(e));
    if (e->complaint)
        attr_addf(a, "text", "feedback report type=%s", e->type[0] ? e->type : "unknown");
    else
        attr_addf(a, "text", "%s %s", e->status[0] ? e->status : "5.0.0", e->text);
    attr_add(a, "expires", "0");
}

void fb_suppress_send(struct server *s, const char *qid, const struct fb_event *e,
                      void (*done)(void *arg, int ok), void *arg)
{
    static const struct conn_ops ops = { .on_record = on_reply, .on_close = on_close };
    struct conn_cfg cfg = { .peer = "qmgr control" };
    struct sreq *r = xcalloc(1, sizeof(*r));
    buf_t path = BUF_INIT;
    struct conn *c;
    attr_t a = ATTR_INIT;

    r->done = done;
    r->arg = arg;
    str_lcpy(r->qid, qid, sizeof(r->qid));
    str_lcpy(r->rcpt, e->rcpt, sizeof(r->rcpt));
    str_lcpy(r->scope, e->scope, sizeof(r->scope));
    r->reason = reason_of(e); /* static text */
    server_spool_path(s, SOCK_CONTROL, &path);
    c = conn_connect_unix(s->base, buf_str(&path), &cfg, &ops, r);
    if (c == NULL) {
        log_warn("%s: feedback: cannot reach qmgr to suppress <%s>: %s: %s", qid, e->rcpt,
                 buf_str(&path), strerror(errno));
        buf_destroy(&path);
        free(r);
        done(arg, 0);
        return;
    }
    request(e, &a);
    conn_send(c, &a);
    attr_destroy(&a);
    buf_destroy(&path);
}
