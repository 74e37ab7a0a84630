/* conn.h - one connection carrying the record protocol (attr.h) between
 * daemons, on a libevent loop: the read loop and framing, the proto check,
 * closing after the last reply is out, and one policy for a peer that
 * sends garbage. Every daemon-to-daemon socket uses it, on both ends.
 *
 * The policy for a malformed record (DESIGN.md): the receiver logs
 * "malformed record from PEER: WHY; dropping the connection" and closes
 * the connection; nothing of that record, nor of anything after it, is
 * applied. "Malformed" is whatever attr_decode refuses, a record without
 * the expected proto=, and whatever the owner's on_record handler refuses
 * by returning CONN_DROP (a request missing a field, a reply to nothing).
 * On the serving end the peer first gets "status=fail reason=WHY", so it
 * can log why too. A record the owner understands but declines (unknown
 * request, permission denied) is not malformed: the owner answers it and
 * decides whether to conn_close().
 *
 * Closing: conn_close() stops reading, lets the output drain, then shuts
 * the write side and waits (at most CONN_LINGER_SECS) for the peer to
 * close: closing a UNIX socket with unread input resets it, and the peer
 * would lose that last reply. */
#ifndef POSTINO_CONN_H
#define POSTINO_CONN_H

#include <stddef.h>

#include "common/util/attr.h"

#define CONN_LINGER_SECS 5

struct conn;
struct event_base;
struct evbuffer;

/* What on_record tells the connection to do next. */
enum conn_verdict {
    CONN_OK,   /* go on with the next buffered record */
    CONN_HOLD, /* deliver no more records until conn_resume() */
    CONN_DROP, /* malformed: log *why and drop the peer (see above) */
};

struct conn_ops {
    /* One whole record: a request (serving end) or a reply (client end).
     * On CONN_DROP, *why says what was wrong (a static string). The
     * handler may also call conn_close() or conn_free() on c. */
    enum conn_verdict (*on_record)(struct conn *c, const attr_t *rec, void *arg, const char **why);
    /* The connection is over: the peer closed (why "connection closed"),
     * an I/O error, a dropped peer (why says what it sent), a linger
     * timeout, or the end of conn_close() (why NULL). Called once, then
     * the connection is freed. May be NULL. */
    void (*on_close)(struct conn *c, const char *why, void *arg);
    /* Everything queued has been written (the output buffer is empty).
     * May be NULL. */
    void (*on_drained)(struct conn *c, void *arg);
};

struct conn_cfg {
    const char *peer;  /* who is at the other end, for log lines */
    const char *proto; /* every record received must carry proto=<this>;
                             NULL: no check (replies carry none) */
    int serving;       /* answer a malformed record with status=fail */
    size_t output_max; /* a peer that lets this much output pile up is
                             not reading its replies: dropped. 0: no limit */
};

/* Take over fd (non-blocking, close-on-exec, closed with the connection).
 * cfg->peer is copied. Never NULL (out of memory is fatal). */
struct conn *conn_new(struct event_base *base, int fd, const struct conn_cfg *cfg,
                      const struct conn_ops *ops, void *arg);
/* Connect to a local UNIX socket (connect(2) on a UNIX socket completes or
 * fails at once) and conn_new it. NULL with errno set on failure. */
struct conn *conn_connect_unix(struct event_base *base, const char *path,
                               const struct conn_cfg *cfg, const struct conn_ops *ops, void *arg);

/* Queue one record. Ignored once the connection is closing. */
void conn_send(struct conn *c, const attr_t *rec);
/* Queue bytes already encoded as records (attr_encode). */
void conn_send_raw(struct conn *c, const void *data, size_t len);
/* The output buffer, for owners that stream a long answer into it. */
struct evbuffer *conn_output(struct conn *c);
size_t conn_output_len(const struct conn *c);

/* After CONN_HOLD: deliver the records buffered meanwhile, from the loop
 * (never from inside this call). */
void conn_resume(struct conn *c);
/* Stop reading; close once the output is written (see above). on_close
 * runs at the end with why NULL. */
void conn_close(struct conn *c);
/* Close now, no callback. Safe inside a callback of c. */
void conn_free(struct conn *c);

int conn_fd(const struct conn *c);
const char *conn_peer(const struct conn *c);
int conn_closing(const struct conn *c);

#endif
