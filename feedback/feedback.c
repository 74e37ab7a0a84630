/* feedback.c - the feedback consumer: a delivery agent for the bounce
 * (VERP) domains that reads bounces and complaints instead of delivering
 * them (feedback.h says what the parts do).
 *
 * qmgr keeps connections to private/feedback and sends one
 * request=deliver at a time per connection (proto.h), exactly as it does
 * to the SMTP delivery agent; a connection holds further requests while
 * its job waits for qmgr's answers to the suppression requests.
 * common/mail/qserve owns those connections, the graceful stop and the
 * retire; this file starts the jobs and builds their replies. */
#include "feedback/feedback.h"

#include "common/mail/qserve.h"
#include "common/mail/server.h"
#include "common/util/attr.h"
#include "common/util/log.h"

int fb_njobs;
static struct server *srv;

static enum conn_verdict fb_run(struct qserve *qs, const attr_t *a, const size_t *idx, size_t n,
                                const char **why)
{
    struct fb_job *job = fb_job_new(qs, attr_get(a, "queue_id"));

    for (size_t k = 0; k < n; k++)
        fb_job_add_rcpt(job, idx[k]);
    qserve_attach(qs, job);
    if (fb_job_start(srv, job, why) < 0) {
        fb_job_free(job);
        return CONN_DROP;
    }
    return CONN_OK;
}

static void fb_orphan(void *job)
{
    fb_job_orphan(job); /* it finishes; nobody hears of it */
}

static int fb_busy(void)
{
    return fb_njobs > 0;
}

static void fb_finish(struct server *s)
{
    bclass_reset();
}

void fb_qconn_job_done(struct qserve *qs, const char *id, const struct fb_result *res, size_t n)
{
    attr_t a = ATTR_INIT;

    if (qs == NULL)
        return;
    attr_add(&a, "status", "ok");
    attr_add(&a, "queue_id", id);
    for (size_t k = 0; k < n; k++) {
        attr_addf(&a, "rcpt", "%zu", res[k].idx);
        attr_add(&a, "result", qrcpt_status_name(res[k].status));
        attr_add(&a, "dsn", res[k].dsn);
        attr_add(&a, "reason", res[k].reason);
    }
    attr_add(&a, "dest", "ok");
    qserve_reply(qs, &a);
    attr_destroy(&a);
}

/* The classifier's rules live in the configuration directory: loaded
 * before any chroot; a broken file is a broken configuration. */
static void pre_drop(struct server *s)
{
    buf_t err = BUF_INIT;
    if (bclass_init(&err) < 0)
        log_fatal("%s", buf_str(&err));
    buf_destroy(&err);
}

static void post_drop(struct server *s)
{
    srv = s;
}

int main(int argc, char **argv)
{
    static const struct qserve_ops ops = {
        .agent = "feedback agent",
        .run = fb_run,
        .orphan = fb_orphan,
        .busy = fb_busy,
        .finish = fb_finish,
    };
    static struct server_hooks hooks = { .pre_drop = pre_drop, .post_drop = post_drop };
    qserve_hooks(&hooks, &ops);
    return server_main(argc, argv, "feedback", &hooks, NULL);
}
