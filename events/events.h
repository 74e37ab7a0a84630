/* events.h - the events daemon's parts (issue #11):
 *   events.c       main: start-up, the connections from the daemons,
 *                  reload (reopen the log), stop
 *   events_json.c  an event record -> one JSON line (the field table)
 *   events_file.c  event_log: append, rotation by size and age, reopen
 *   events_hook.c  event_webhook_url: the durable spool and the POSTs
 *   events_backlog.c  lines waiting for a disk with room again */
#ifndef POSTINO_EVENTS_EVENTS_H
#define POSTINO_EVENTS_EVENTS_H

#include "common/util/attr.h"
#include "common/util/buf.h"

struct event_base;

/* Lines not written yet (a full disk), oldest first, at most
 * EVENTS_BACKLOG_MAX bytes; more are dropped and counted. */
#define EVENTS_BACKLOG_MAX (4 * 1024 * 1024)
struct events_backlog {
    buf_t data;
    size_t head;                /* bytes of data already written */
    size_t lines;               /* lines waiting */
    unsigned long long written; /* lines written late, since the reset */
    unsigned long long dropped; /* lines dropped, since the reset */
};
/* Write one whole line; 0, or -1 (with errno) when it was not written. */
typedef int events_write_fn(const char *line, size_t len, void *arg);
/* Keep a line: 0, or -1 when the bound is reached (dropped, counted). */
int events_backlog_push(struct events_backlog *b, const char *line, size_t len);
size_t events_backlog_lines(const struct events_backlog *b);
/* Write the waiting lines in order through fn until one fails: 0 when
 * none waits any more, -1 when fn failed (that line and the rest wait). */
int events_backlog_drain(struct events_backlog *b, events_write_fn *fn, void *arg);
void events_backlog_reset_counts(struct events_backlog *b);
void events_backlog_destroy(struct events_backlog *b);

/* The JSON object of an event record, with "\n", appended to out. -1 with
 * *why when the record is not an event we know (unknown type or field, a
 * number that is not one): the sender is broken. */
int events_json(const attr_t *rec, buf_t *out, const char **why);

/* event_log (from main.cf): open it (empty: no file). Reopen on reload. */
void events_file_open(void);
void events_file_reopen(void);
/* Append one line (rotating first when due); when the file does not take
 * it, it waits in memory and is written later. */
void events_file_write(const char *line, size_t len);
/* Write what waits (each second, and with each new line). */
void events_file_retry(void);
void events_file_close(void);
/* Write what waits if possible, say what is lost, close. */
void events_file_stop(void);

/* event_webhook_url (from main.cf): parse, recover the spool, start. */
void events_hook_start(struct event_base *base);
void events_hook_reload(void);
/* Append one line to the spool (fsynced with the next batch); when the
 * spool does not take it, it waits in memory and is written later. */
void events_hook_add(const char *line, size_t len);
/* Write what waits (each second, and with each new line). */
void events_hook_retry(void);
/* fsync what was added (stop). */
void events_hook_stop(void);

#endif
