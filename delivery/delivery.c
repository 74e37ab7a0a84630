/* delivery.c - the SMTP client delivery agent (logs as "smtp", like Postfix).
 *
 * qmgr keeps persistent connections to private/smtp and sends one
 * request=deliver at a time per connection (proto.h); many connections,
 * and therefore many deliveries, run at once in this one event loop.
 * common/mail/qserve owns those connections (request checks, holding a
 * connection while its job runs, the graceful stop and the retire
 * linger); this file checks what only delivery knows (nexthop, source),
 * starts jobs, builds the replies and frees its state at the end
 * (QUIT cached connections). */
#include "delivery/delivery.h"

#include <string.h>

#include "common/mail/conf.h"
#include "common/mail/metric.h"
#include "common/mail/qserve.h"
#include "common/mail/server.h"
#include "common/util/attr.h"
#include "common/util/log.h"

struct dlv_state dlv_g;

/* What is wrong with a deliver request (queue_id and recipients aside,
 * qserve checks those), or NULL. */
static const char *deliver_malformed(const attr_t *a)
{
    const char *nh = attr_get(a, "nexthop");

    if (!nh || !*nh)
        return "missing nexthop";
    if (dlv_source_check(attr_get(a, "source"), attr_get(a, "helo")) < 0)
        return "malformed source or helo";
    return NULL;
}

/* Start the job of a deliver request. */
static enum conn_verdict deliver_run(struct qserve *qs, const attr_t *a, const size_t *idx,
                                     size_t n, const char **why)
{
    struct dlv_job *job = dlv_job_new(qs, attr_get(a, "queue_id"), attr_get(a, "nexthop"));

    if (dlv_job_set_site(job, attr_get(a, "site"), attr_get(a, "site_max_deliveries"),
                         attr_get(a, "site_connect_timeout"),
                         attr_get(a, "site_idle_timeout")) < 0) {
        *why = "malformed site attributes";
        dlv_job_free(job);
        return CONN_DROP;
    }
    dlv_source_set(job, attr_get(a, "source"), attr_get(a, "helo"));
    if (attr_get_ll(a, "attempt", &job->attempt) < 0)
        job->attempt = 0;
    for (size_t k = 0; k < n; k++)
        dlv_job_add_rcpt(job, idx[k]);
    qserve_attach(qs, job);
    if (dlv_job_start(job, why) < 0) {
        dlv_job_free(job);
        return CONN_DROP;
    }
    return CONN_OK;
}

static void deliver_orphan(void *job)
{
    struct dlv_job *j = job;
    log_debug("%s: qmgr connection closed during delivery", j->id);
    j->qs = NULL;
}

static int deliver_busy(void)
{
    return dlv_g.njobs > 0;
}

/* Stopped and idle: QUIT the cached connections, free the rest. */
static void deliver_finish(struct server *s)
{
    dlv_cache_flush();
    dns_free(dlv_g.dns);
    dlv_g.dns = NULL;
    if (dlv_g.tls_ctx)
        SSL_CTX_free(dlv_g.tls_ctx);
    dlv_g.tls_ctx = NULL;
    buf_destroy(&dlv_g.tls_err);
    tls_policy_reset();
}

void dlv_qconn_job_done(struct dlv_job *job)
{
    struct qserve *qs = job->qs;
    attr_t a = ATTR_INIT;
    size_t k;

    if (qs && job->source_fail) { /* nothing done: qmgr tries another address */
        attr_add(&a, "status", "source_unavailable");
        attr_add(&a, "queue_id", job->id);
        attr_add(&a, "source", job->source);
        attr_add(&a, "reason", buf_str(&job->lasterr));
        qserve_reply(qs, &a);
        attr_destroy(&a);
    } else if (qs) {
        attr_add(&a, "status", "ok");
        attr_add(&a, "queue_id", job->id);
        for (k = 0; k < job->nres; k++) {
            attr_addf(&a, "rcpt", "%zu", job->res[k].idx);
            attr_add(&a, "result", qrcpt_status_name(job->res[k].status));
            attr_add(&a, "dsn", job->res[k].dsn);
            attr_add(&a, "reason", buf_str(&job->res[k].reason));
            if (job->res[k].status != QR_SENT)
                attr_add(&a, "category", bclass_name(job->res[k].cat));
        }
        attr_add(&a, "dest", job->dest_fail ? "fail" : "ok");
        qserve_reply(qs, &a);
        attr_destroy(&a);
    }
    dlv_job_free(job);
    qserve_job_ended();
}

static void pre_drop(struct server *s)
{
    buf_t err = BUF_INIT;
    /* master.cf service "lmtp": the LMTP client, logging as "lmtp" (Postfix) */
    dlv_g.lmtp = strcmp(s->service, "lmtp") == 0;
    if (dlv_g.lmtp)
        log_set_progname("lmtp");
    dlv_tls_init();
    /* Read before a chroot hides the configuration directory. master
     * refuses to start with broken rules; broken by a later edit, they
     * cost the categories (every failure is "other"), never the mail. */
    if (bclass_init(&err) < 0)
        log_error("%s; every delivery failure is classified \"other\" until it is fixed",
                  buf_str(&err));
    buf_destroy(&err);
}

static void post_drop(struct server *s)
{
    buf_t err = BUF_INIT;
    dlv_g.srv = s;
    metric_client_open(s->base, s->spool);
    dlv_g.dns = dns_new(s->base, conf_str("dns_servers"), &err);
    if (!dlv_g.dns)
        log_fatal("cannot set up DNS: %s", buf_str(&err));
    buf_destroy(&err);
}

int main(int argc, char **argv)
{
    static const struct qserve_ops ops = {
        .agent = "delivery agent",
        .malformed = deliver_malformed,
        .run = deliver_run,
        .orphan = deliver_orphan,
        .busy = deliver_busy,
        .finish = deliver_finish,
    };
    static struct server_hooks hooks = { .pre_drop = pre_drop, .post_drop = post_drop };
    qserve_hooks(&hooks, &ops);
    return server_main(argc, argv, "smtp", &hooks, &dlv_g);
}
