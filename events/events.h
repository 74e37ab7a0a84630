/* events.h - the events daemon's parts (issue #11):
 *   events.c       main: start-up, the connections from the daemons,
 *                  reload (reopen the log), stop
 *   events_json.c  an event record -> one JSON line (the field table)
 *   events_file.c  event_log: append, rotation by size and age, reopen
 *   events_hook.c  event_webhook_url: the durable spool and the POSTs */
#ifndef POSTINO_EVENTS_EVENTS_H
#define POSTINO_EVENTS_EVENTS_H

#include "common/util/attr.h"
#include "common/util/buf.h"

struct event_base;

/* The JSON object of an event record, with "\n", appended to out. -1 with
 * *why when the record is not an event we know (unknown type or field, a
 * number that is not one): the sender is broken. */
int events_json(const attr_t *rec, buf_t *out, const char **why);

/* event_log (from main.cf): open it (empty: no file). Reopen on reload. */
void events_file_open(void);
void events_file_reopen(void);
/* Append one line (rotating first when due). */
void events_file_write(const char *line, size_t len);
void events_file_close(void);

/* event_webhook_url (from main.cf): parse, recover the spool, start. */
void events_hook_start(struct event_base *base);
void events_hook_reload(void);
/* Append one line to the spool (fsynced with the next batch). */
void events_hook_add(const char *line, size_t len);
/* fsync what was added (stop). */
void events_hook_stop(void);

#endif
