/* qmgr_fair.h - a destination's queued jobs, by priority class and by
 * sender (issue #9: "priority and fairness").
 *
 * Jobs wait per class (common/mail/prio.h); within a class, per sender
 * (struct qmgr_msg's fairkey: "sasl:LOGIN" when the message was
 * submitted with authentication, else "@" and the envelope sender's
 * domain, "<>" for the null sender), and the senders with jobs take turns
 * (round-robin: a ring; each pick takes the first sender's oldest job and
 * moves that sender to the end). So a transactional job is next as soon
 * as it is queued, and one customer's campaign of 20,000 jobs delays
 * another's next job by one turn, not by 20,000 jobs.
 *
 * The higher class goes first, but not for ever: while a lower class has
 * jobs too, after `weight` picks of the higher one in a row the lower one
 * gets one (priority_transactional_weight; 0: strict, it waits).
 *
 * Every operation is O(1) (the senders of a class are found by a hash
 * table); peek is what qmgr_ready.c's heap compares by. */
#ifndef POSTINO_QMGR_FAIR_H
#define POSTINO_QMGR_FAIR_H

#include <stddef.h>
#include <sys/queue.h>

#include "common/mail/prio.h"
#include "common/util/htable.h"

struct qmgr_job;
struct qmgr_jobq;
struct qmgr_msg;
struct qmgr_fsender;

struct qmgr_fclass {
    TAILQ_HEAD(, qmgr_fsender) ring; /* senders with jobs, in turn */
    struct htable senders;           /* the same, by fairkey */
    size_t n;                        /* jobs */
};

struct qmgr_fairq {
    struct qmgr_fclass cls[PRIO_NCLASS];
    size_t n;   /* jobs in all classes */
    int streak; /* higher-class picks in a row while a lower class waited */
};

void qmgr_fairq_init(struct qmgr_fairq *q);
/* Frees what is left in it (not the jobs). */
void qmgr_fairq_destroy(struct qmgr_fairq *q);
/* Queue j (its class and sender from j->msg) behind its sender's jobs. */
void qmgr_fairq_push(struct qmgr_fairq *q, struct qmgr_job *j);
/* Put back a job that was picked but could not go: it is next again. */
void qmgr_fairq_push_front(struct qmgr_fairq *q, struct qmgr_job *j);
/* The job the next pop returns, or NULL. weight: see above. */
struct qmgr_job *qmgr_fairq_peek(const struct qmgr_fairq *q, int weight);
struct qmgr_job *qmgr_fairq_pop(struct qmgr_fairq *q, int weight);
/* Take j (queued in q) out. */
void qmgr_fairq_remove(struct qmgr_fairq *q, struct qmgr_job *j);
/* Move every job of m queued in q to the end of out; returns how many.
 * Walks m's sender's jobs only. */
size_t qmgr_fairq_take_msg(struct qmgr_fairq *q, const struct qmgr_msg *m, struct qmgr_jobq *out);
/* The class and sender key of a message (what push uses). */
enum prio_class qmgr_fair_class(const struct qmgr_job *j);

#endif
