/* workq.h - a small pool of worker threads for blocking file work
 * (fsync of queue files) off an event loop.
 *
 * run() executes on a worker thread and must touch nothing the loop thread
 * uses; done() then runs ON THE LOOP THREAD, from the event loop, never
 * from inside workq_submit(). Jobs are independent: several fsyncs in
 * flight at once let the filesystem commit them in one journal
 * transaction (group commit), where one fsync after another on the loop
 * would serialise every message behind the previous one's disk flush. */
#ifndef POSTINO_WORKQ_H
#define POSTINO_WORKQ_H

struct event_base;
struct workq;

typedef void (*workq_fn)(void *arg);

/* nthreads 1..64. */
struct workq *workq_new(struct event_base *base, int nthreads);
void workq_submit(struct workq *q, workq_fn run, workq_fn done, void *arg);
/* Jobs submitted and not yet done()'d. */
int workq_pending(const struct workq *q);
/* Runs every outstanding job to completion (done() callbacks included,
 * on the calling thread), stops the threads and frees q. */
void workq_free(struct workq *q);

#endif
