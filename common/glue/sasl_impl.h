/* sasl_impl.h - internals shared by sasl.c (Cyrus side) and sasl_pool.c
 * (worker threads and hand-back to the event loop). Not for other modules. */
#ifndef POSTINO_SASL_IMPL_H
#define POSTINO_SASL_IMPL_H

#include <sasl/sasl.h>

#include "common/util/buf.h"
#include "common/glue/sasl.h"

/* Where the session's one job is. Changed only under the pool mutex. */
enum psasl_jstate { PSASL_JS_IDLE, PSASL_JS_QUEUED, PSASL_JS_RUNNING, PSASL_JS_DONE };
/* What the job does: a Cyrus call in a worker, or a result already known
 * on the loop thread (cancel, bad base64...) that is only delivered. */
enum psasl_op { PSASL_OP_START, PSASL_OP_STEP, PSASL_OP_RESULT };

struct psasl_session {
    struct psasl_pool *pool;
    sasl_conn_t *conn;
    char *mechlist;          /* cached at creation: never call Cyrus on a busy conn */
    size_t max_line;         /* smtpd_sasl_max_line */
    int in_exchange;         /* last result was CONTINUE: step allowed */
    int busy;                /* start/step called, callback not yet run (loop thread) */
    char mech[24];           /* upper-case mechanism of the exchange */
    int dead;                /* owner freed it while busy (loop thread only) */
    enum psasl_jstate state; /* pool mutex */
    struct psasl_session *next; /* todo / done queue link (pool mutex) */
    /* the job */
    enum psasl_op op;
    int have_input;          /* START: initial response present */
    buf_t input;             /* decoded client bytes */
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
/* sasl_pool.c: owner frees ss. Returns 1 if ss may be destroyed now (idle,
 * or still queued and now unlinked), 0 if a worker has it or its result is
 * pending (ss->dead is set, the hand-back destroys it). */
int psasl_pool_release(struct psasl_pool *p, struct psasl_session *ss);
/* sasl_pool.c: session accounting for psasl_pool_free's sanity check. */
void psasl_pool_attach(struct psasl_pool *p);
void psasl_pool_detach(struct psasl_pool *p);

/* sasl.c: run the Cyrus call of ss's job (worker thread). */
void psasl_job_run(struct psasl_session *ss);
/* sasl.c: hand-back on the loop thread: destroy if dead, else callback. */
void psasl_job_deliver(struct psasl_session *ss);
/* sasl.c: dispose the Cyrus connection and free ss. */
void psasl_session_destroy(struct psasl_session *ss);

#endif
