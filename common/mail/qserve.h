/* qserve.h - the delivery agents' side of qmgr's connections, written once
 * for the SMTP/LMTP client (delivery), the feedback consumer and the final
 * delivery agents (lagent: local, virtual, pipe, error, discard).
 *
 * qmgr keeps connections to an agent's socket and sends one
 * "request=deliver queue_id= nexthop= rcpt=N..." at a time per connection
 * (proto.h). This module owns those connections (common/util/conn below
 * it does framing, the proto check and the malformed-peer policy):
 *   - a request that is not "deliver" is declined (status=fail reason=
 *     unknown request) and the connection closed;
 *   - a deliver request without a valid queue_id, without recipients, with
 *     a recipient index that is no number, or that the agent's malformed()
 *     refuses, drops qmgr's connection (conn.h's policy);
 *   - a stopping agent declines ("<agent> is stopping");
 *   - a request of a qmgr that already hung up (a reload replaced it while
 *     the connection waited in the listener's queue) is declined and not
 *     run: nobody reads the reply and the next qmgr schedules the message
 *     itself, so running it would deliver it twice;
 *   - otherwise the agent's run() starts the job; a job that outlives the
 *     call is attached to the connection, which holds further requests
 *     until the job's qserve_reply();
 *   - a qmgr that hangs up mid-job: the job is orphaned (it finishes and
 *     records its results; nobody hears of it).
 *
 * Stopping (SIGTERM): accept nothing more, finish the jobs, exit. Retiring
 * on a reload (SIGQUIT): accept no new qmgr connection but serve the ones
 * there are until qmgr hangs up (qmgr retires too, at once): closing an
 * idle connection itself could cross a request qmgr is sending, which qmgr
 * would take for a crash. The agent leaves when idle with no connection
 * left, or when idle QSERVE_RETIRE_LINGER seconds after the reload. */
#ifndef POSTINO_QSERVE_H
#define POSTINO_QSERVE_H

#include <stddef.h>

#include "common/mail/server.h"
#include "common/util/attr.h"
#include "common/util/conn.h"

#define QSERVE_RETIRE_LINGER 10

struct qserve; /* one connection from qmgr */

struct qserve_ops {
    const char *agent; /* "delivery agent": who declines when stopping */
    /* Optional: what else is wrong with a deliver request (a static
     * string), or NULL. queue_id and rcpt= are checked already. */
    const char *(*malformed)(const attr_t *req);
    /* Run request req for recipients idx[0..n-1] (numbers; whether the
     * message has them is the agent's to check). A job that outlives the
     * call is qserve_attach()ed and ends with qserve_reply(); a job done
     * at once answers with qserve_reply() before returning. CONN_OK, or
     * CONN_DROP with *why (static) for a request malformed after all. */
    enum conn_verdict (*run)(struct qserve *qs, const attr_t *req, const size_t *idx, size_t n,
                             const char **why);
    /* Optional: qmgr hung up while job was attached; drop the job's
     * pointer to qs (it is freed). */
    void (*orphan)(void *job);
    /* Optional: jobs still running, attached or orphaned (no exit then). */
    int (*busy)(void);
    /* Optional: the last words before server_exit, after the connections
     * are gone (free what the agent holds globally). */
    void (*finish)(struct server *s);
};

/* Fill h's on_accept, on_stop and on_retire with this module's, serving
 * with ops (static, one per process); the agent then calls server_main. */
void qserve_hooks(struct server_hooks *h, const struct qserve_ops *ops);

/* During ops->run: the job goes on after run returns. */
void qserve_attach(struct qserve *qs, void *job);
/* The job's answer: send reply and serve the next request. qs NULL (the
 * job was orphaned): nothing. The job is detached. */
void qserve_reply(struct qserve *qs, const attr_t *reply);
/* A job has ended (after the agent freed it): exit if that was the last
 * thing a stopping agent waited for. */
void qserve_job_ended(void);

#endif
