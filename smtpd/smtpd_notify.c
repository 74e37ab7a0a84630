/* smtpd_notify.c - tell qmgr about new queue files, without blocking.
 *
 * One persistent, non-blocking connection to private/qmgr. Each committed
 * message becomes a "proto=1 request=new queue_id=ID" record. Records stay
 * in `inflight` until the socket buffer has taken them all; if the
 * connection breaks they are sent again after a reconnect (qmgr treats a
 * repeated id as known). Losing a notification is not fatal - qmgr scans
 * the spool when it starts - so the backlog is bounded and the oldest
 * records are dropped when qmgr stays away for long. */
#include "smtpd/smtpd.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "common/util/attr.h"
#include "common/util/log.h"
#include "common/mail/proto.h"
#include "common/mail/server.h"

#define BACKLOG_MAX (1024 * 1024)
#define RETRY_MIN 1
#define RETRY_MAX 30

static struct {
    struct server *srv;
    struct bufferevent *bev;
    int connected;
    buf_t unsent;          /* encoded records waiting for a connection */
    size_t inflight;       /* bytes handed to bev not yet written */
    buf_t sent;            /* copy of those bytes, resent after a failure */
    struct event *retry;
    int retry_secs;
} nt;

static void notify_connect(void);

static void schedule_retry(void)
{
    if (nt.unsent.len == 0 || evtimer_pending(nt.retry, NULL))
        return;
    struct timeval tv = { nt.retry_secs, 0 };
    evtimer_add(nt.retry, &tv);
    nt.retry_secs = nt.retry_secs * 2 > RETRY_MAX ? RETRY_MAX : nt.retry_secs * 2;
}

static void drop_connection(void)
{
    if (nt.bev)
        bufferevent_free(nt.bev);
    nt.bev = NULL;
    nt.connected = 0;
    /* Unconfirmed records go back in front of the backlog. */
    if (nt.sent.len) {
        buf_append(&nt.sent, nt.unsent.data, nt.unsent.len);
        buf_set(&nt.unsent, "");
        buf_append(&nt.unsent, nt.sent.data, nt.sent.len);
        buf_reset(&nt.sent);
    }
    schedule_retry();
}

static void flush_unsent(void)
{
    if (!nt.connected || nt.unsent.len == 0)
        return;
    buf_append(&nt.sent, nt.unsent.data, nt.unsent.len);
    bufferevent_write(nt.bev, nt.unsent.data, nt.unsent.len);
    buf_reset(&nt.unsent);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    /* qmgr does not answer notifications except to refuse a protocol
     * version; log that once and drop the bytes. */
    struct evbuffer *in = bufferevent_get_input(bev);
    log_warn("unexpected data from qmgr (%zu bytes); protocol mismatch?",
             evbuffer_get_length(in));
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void on_write(struct bufferevent *bev, void *arg)
{
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        buf_reset(&nt.sent);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & BEV_EVENT_CONNECTED) {
        nt.connected = 1;
        nt.retry_secs = RETRY_MIN;
        flush_unsent();
        return;
    }
    if (log_verbose())
        log_debug("qmgr notification connection closed (%s)",
                  (what & BEV_EVENT_EOF) ? "eof" : strerror(errno));
    drop_connection();
}

static void notify_connect(void)
{
    struct sockaddr_un sun;
    buf_t path = BUF_INIT;
    server_spool_path(nt.srv, SOCK_QMGR, &path);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (path.len >= sizeof(sun.sun_path))
        log_fatal("qmgr socket path too long: %s (use a shorter queue_directory)",
                  buf_str(&path));
    memcpy(sun.sun_path, path.data, path.len);
    buf_destroy(&path);
    nt.bev = bufferevent_socket_new(nt.srv->base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(nt.bev, on_read, on_write, on_event, NULL);
    bufferevent_enable(nt.bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(nt.bev, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        if (log_verbose())
            log_debug("connect to %s: %s", SOCK_QMGR, strerror(errno));
        drop_connection();
    }
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    if (!nt.bev)
        notify_connect();
}

void smtpd_notify_init(struct server *srv)
{
    nt.srv = srv;
    nt.retry_secs = RETRY_MIN;
    nt.retry = evtimer_new(srv->base, on_retry, NULL);
}

void smtpd_notify_new(const char *queue_id)
{
    attr_t a = ATTR_INIT;
    attr_add(&a, "proto", PROTO_VERSION);
    attr_add(&a, "request", "new");
    attr_add(&a, "queue_id", queue_id);
    if (nt.unsent.len > BACKLOG_MAX) {
        /* qmgr is away for long: it will find these files by scanning. */
        log_warn("%s: qmgr notification backlog full; qmgr will find it by scanning", queue_id);
        buf_reset(&nt.unsent);
    }
    attr_encode(&a, &nt.unsent);
    attr_destroy(&a);
    if (nt.connected)
        flush_unsent();
    else if (!nt.bev)
        notify_connect();
}
