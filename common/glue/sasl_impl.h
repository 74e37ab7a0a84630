/* sasl_impl.h - internals shared by sasl.c (Cyrus side), sasl_auth.c (the
 * exchange) and sasl_pool.c (its jobs on util/workq's worker threads). Not
 * for other modules. */
#ifndef POSTINO_SASL_IMPL_H
#define POSTINO_SASL_IMPL_H

#include <sasl/sasl.h>

#include "common/util/buf.h"
#include "common/util/workq.h"
#include "common/glue/sasl.h"

/* What the job does: a Cyrus call in a worker, or a result already known
 * on the loop thread (cancel, bad base64...) that is only delivered. */
enum psasl_op { PSASL_OP_START, PSASL_OP_STEP, PSASL_OP_RESULT };

struct psasl_session {
    struct psasl_pool *pool;
    sasl_conn_t *conn;
    char *mechlist;  /* cached at creation: never call Cyrus on a busy conn */
    size_t max_line; /* smtpd_sasl_max_line */
    int in_exchange; /* last result was CONTINUE: step allowed */
    int busy;        /* start/step called, callback not yet run (loop thread) */
    char mech[24];   /* upper-case mechanism of the exchange */
    int dead;        /* owner freed it while busy (loop thread only) */
    /* the job: at most one in the pool at a time (workq_post enforces it) */
    struct workq_job job;
    enum psasl_op op;
    int have_input; /* START: initial response present */
    buf_t input;    /* decoded client bytes */
    psasl_done_fn cb;
    void *arg;
    /* its result, written by the worker, read on the loop after hand-back */
    psasl_status_t status;
    buf_t challenge, username, reason, detail;
};

/* sasl_pool.c: queue ss for a worker (op START/STEP). */
void psasl_pool_submit(struct psasl_pool *p, struct psasl_session *ss);
/* sasl_pool.c: deliver an already known result on the next loop turn. */
void psasl_pool_post(struct psasl_pool *p, struct psasl_session *ss);
/* sasl_pool.c: owner frees ss. Returns 1 if ss may be freed now (its job
 * was idle, or taken back before a worker got it), 0 if a worker has it
 * (ss->dead is set, the hand-back frees it). */
int psasl_pool_release(struct psasl_pool *p, struct psasl_session *ss);
/* sasl_pool.c: session accounting for psasl_pool_free's sanity check. */
void psasl_pool_attach(struct psasl_pool *p);
void psasl_pool_detach(struct psasl_pool *p);

/* sasl_auth.c: run the Cyrus call of ss's job (worker thread). */
void psasl_job_run(struct psasl_session *ss);
/* sasl_auth.c: hand-back on the loop thread: free if dead, else callback. */
void psasl_job_deliver(struct psasl_session *ss);
/* sasl.c: dispose the Cyrus connection and free ss, whatever its state. */
void psasl_session_free_now(struct psasl_session *ss);

#endif
