/* mevent.h - the daemons' side of the event stream (issue #11): one record
 * per recipient event, sent to the events daemon over private/events.
 *
 * An event is a record (attr.h) "proto=1 request=event type=TYPE time=T"
 * plus the fields of the event (names as in docs/events.schema.json:
 * queue_id, message_id, sender, recipient, site, size, attempt, ...). The
 * events daemon turns it into one JSON line; it sends no reply.
 *
 * The client never blocks its event loop: a record is queued on the
 * connection (written as the socket takes it); while the events daemon is
 * down, records wait in a bounded buffer and the connection is tried again
 * every MEVENT_RETRY_SECS. What does not fit (MEVENT_BUFFER_MAX bytes
 * waiting) is dropped and counted; the first drop of an outage is logged,
 * and the count once the events daemon takes records again.
 *
 * When neither event_log nor event_webhook_url is set, mevent_enabled() is
 * 0 and callers build nothing: events cost one branch per message.
 * server.c starts the client (mevent_start), re-reads the switch on a
 * reload (mevent_reload) and flushes it at exit (mevent_stop). */
#ifndef POSTINO_MEVENT_H
#define POSTINO_MEVENT_H

#include "common/mail/proto.h"
#include "common/util/attr.h"

#define MEVENT_BUFFER_MAX    (4 * 1024 * 1024)
#define MEVENT_RETRY_SECS    1
#define MEVENT_EXIT_FLUSH_MS 1000

struct event_base;

extern int mevent_on; /* read through mevent_enabled() */

/* Is the event stream configured? (No syscall: a flag.) */
static inline int mevent_enabled(void)
{
    return mevent_on;
}

void mevent_start(struct event_base *base);
void mevent_reload(void);
/* Write what is waiting (at most MEVENT_EXIT_FLUSH_MS), then close. */
void mevent_stop(void);

/* Start an event record of type (clears a): proto, request, type, time. */
void mevent_begin(attr_t *a, const char *type);
/* Add name=value when value is neither NULL nor "". */
void mevent_add(attr_t *a, const char *name, const char *value);
/* The remote host and IP of a Postfix relay text "host[ip]:port"
 * (remote_host, remote_ip); nothing for "none" or a local agent's name. */
void mevent_add_relay(attr_t *a, const char *relay);
/* The reply: enhanced code (dsn), text (reply), and reply_code when the
 * text is or quotes a server's reply ("250 2.0.0 Ok", "host x said: 550
 * 5.1.1 ..."). */
void mevent_add_reply(attr_t *a, const char *dsn, const char *text);
/* TLS details from "VERSION:CIPHER" (delivery's tls= text). */
void mevent_add_tls(attr_t *a, const char *info);
/* The event type of a recipient outcome (enum qrcpt_status): delivery,
 * transient_failure or bounce; NULL for QR_PENDING. */
const char *mevent_result_type(int qr_status);
/* Send (or buffer) the record; a is left as it was. */
void mevent_send(const attr_t *a);
/* Is url a webhook URL the events daemon can use (http://host[:port]/...)?
 * 0, or -1 with why in err. */
struct buf;
int mevent_url_check(const char *url, struct buf *err);
/* Records counted as dropped since start (for tests and logs). */
unsigned long mevent_dropped(void);

#endif
