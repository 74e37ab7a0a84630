/* feedback.h - the feedback consumer: shared types of its parts.
 *
 *   feedback.c          main, jobs started and replies (qmgr's connections
 *                       are common/mail/qserve's)
 *   feedback_job.c      one job: queue file, parse, events, results, logs
 *   feedback_event.c    a parsed report -> recipient events (who, what,
 *                       category, suppression scope)
 *   feedback_suppress.c suppress_add requests to qmgr's control socket
 *   feedback_parse.c    the report parser (feedback_mime.c, feedback_text.c)
 *
 * qmgr routes mail for feedback_domains to this agent (transport
 * "feedback") and sends it request=deliver jobs like any delivery agent.
 * The agent reads the message from the queue file, logs one line per
 * recipient event, asks qmgr to suppress hard bounces and complaints, and
 * answers "sent" for every recipient: the report is consumed, never
 * delivered, never bounced, never answered. */
#ifndef POSTINO_FEEDBACK_H
#define POSTINO_FEEDBACK_H

#include <stddef.h>

#include "common/mail/bclass.h"
#include "common/mail/qfile.h"
#include "feedback/feedback_parse.h"

struct server;
struct qserve;

/* Bytes of a report read from the queue file: the machine-readable parts
 * come first, a returned original message may follow and is not needed. */
#define FB_READ_MAX (1024 * 1024)

/* One recipient event of a report. */
struct fb_event {
    char rcpt[FB_ADDR_MAX]; /* the original recipient it is about ("" unknown) */
    int complaint;          /* ARF report (else a bounce) */
    char type[32];          /* ARF Feedback-Type */
    char status[16];        /* DSN status ("" for complaints) */
    char action[16];        /* DSN action */
    const char *text;       /* remote text (points into the report) */
    enum bclass category;
    int suppress;             /* hard bounce or complaint */
    char scope[FB_FIELD_MAX]; /* suppression scope: sender domain or "" (global) */
};

/* ---- feedback_event.c ---- */
/* The original recipient a VERP address names (bounces+alice=example.org@
 * bounce.example.com -> alice@example.org) with delimiters delims; 0, or
 * -1 when addr is no VERP address. */
int fb_verp_decode(const char *addr, const char *delims, char *out, size_t size);
/* The events of report r received for envelope recipients verp (decoded
 * VERP addresses, nverp of them, may be 0). At most max events into ev;
 * returns how many. */
size_t fb_events(const struct fb_report *r, char (*verp)[FB_ADDR_MAX], size_t nverp,
                 struct fb_event *ev, size_t max);

/* ---- feedback_suppress.c ---- */
/* Ask qmgr to suppress the event's recipient; done(arg, ok) is called
 * once: ok 1 recorded (or declined by qmgr: logged), 0 qmgr not reachable. */
void fb_suppress_send(struct server *s, const char *qid, const struct fb_event *e,
                      void (*done)(void *arg, int ok), void *arg);

/* ---- feedback_job.c ---- */
struct fb_job;
struct fb_job *fb_job_new(struct qserve *qs, const char *id);
void fb_job_add_rcpt(struct fb_job *job, size_t idx);
/* Read, parse, log, suppress; -1 with *why when the request names a
 * recipient the message does not have (the job is the caller's to free). */
int fb_job_start(struct server *s, struct fb_job *job, const char **why);
void fb_job_free(struct fb_job *job);
/* qmgr went away: nobody to answer. */
void fb_job_orphan(struct fb_job *job);

/* ---- feedback.c ---- */
/* The job is over: reply to qmgr with each recipient's result. */
struct fb_result {
    size_t idx;
    int status; /* enum qrcpt_status */
    const char *dsn;
    const char *reason;
};
void fb_qconn_job_done(struct qserve *qs, const char *id, const struct fb_result *res, size_t n);
extern int fb_njobs;

#endif
