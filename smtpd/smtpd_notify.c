/* smtpd_notify.c - tell qmgr about new queue files, without blocking.
 *
 * One persistent connection to private/qmgr (common/util/conn). Each
 * committed message becomes a "proto=1 request=new queue_id=ID" record.
 * Records stay in `sent` until the connection has written them all
 * (on_drained); if the connection breaks first they are sent again after
 * a reconnect (qmgr treats a repeated id as known). Losing a notification
 * is not fatal - qmgr scans the spool - so the backlog is bounded and the
 * oldest records are dropped when qmgr stays away for long. qmgr answers
 * a notification only to refuse it; anything else from it is malformed. */
#include "smtpd/smtpd.h"

#include <errno.h>
#include <event2/event.h>
#include <string.h>

#include "common/util/attr.h"
#include "common/util/conn.h"
#include "common/util/log.h"
#include "common/mail/proto.h"
#include "common/mail/server.h"

#define BACKLOG_MAX (1024 * 1024)
#define RETRY_MIN   1
#define RETRY_MAX   30

static struct {
    struct server *srv;
    struct conn *conn; /* NULL while not connected */
    buf_t unsent;      /* encoded records waiting for a connection */
    buf_t sent;        /* handed to conn, not yet all written: resent
                              after a failure */
    struct event *retry;
    int retry_secs;
} nt;

static void schedule_retry(void)
{
    if (nt.unsent.len == 0 || evtimer_pending(nt.retry, NULL))
        return;
    struct timeval tv = { nt.retry_secs, 0 };
    evtimer_add(nt.retry, &tv);
    nt.retry_secs = nt.retry_secs * 2 > RETRY_MAX ? RETRY_MAX : nt.retry_secs * 2;
}

/* Unconfirmed records go back in front of the backlog. */
static void requeue_sent(void)
{
    if (nt.sent.len == 0)
        return;
    buf_append(&nt.sent, nt.unsent.data, nt.unsent.len);
    buf_set(&nt.unsent, "");
    buf_append(&nt.unsent, nt.sent.data, nt.sent.len);
    buf_reset(&nt.sent);
}

static void flush_unsent(void)
{
    if (!nt.conn || nt.unsent.len == 0)
        return;
    buf_append(&nt.sent, nt.unsent.data, nt.unsent.len);
    conn_send_raw(nt.conn, nt.unsent.data, nt.unsent.len);
    buf_reset(&nt.unsent);
}

static enum conn_verdict on_record(struct conn *c, const attr_t *rec, void *arg, const char **why)
{
    if (strcmp(attr_get_def(rec, "status", ""), "fail") != 0) {
        *why = "unexpected record (qmgr answers a notification only to refuse it)";
        return CONN_DROP;
    }
    /* qmgr refused one (a protocol version it does not speak): it closes
     * the connection next, and the records are sent again later. */
    log_warn("qmgr refused a notification: %s", attr_get_def(rec, "reason", "(no reason)"));
    return CONN_OK;
}

static void on_drained(struct conn *c, void *arg)
{
    buf_reset(&nt.sent);
}

static void on_close(struct conn *c, const char *why, void *arg)
{
    if (log_verbose())
        log_debug("qmgr notification connection closed (%s)", why ? why : "by us");
    nt.conn = NULL;
    requeue_sent();
    schedule_retry();
}

static const struct conn_ops notify_ops = { on_record, on_close, on_drained };

static void notify_connect(void)
{
    static const struct conn_cfg cfg = { .peer = "qmgr" };
    buf_t path = BUF_INIT;
    server_spool_path(nt.srv, SOCK_QMGR, &path);
    nt.conn = conn_connect_unix(nt.srv->base, buf_str(&path), &cfg, &notify_ops, NULL);
    if (!nt.conn && errno == ENAMETOOLONG)
        log_fatal("qmgr socket path too long: %s (use a shorter queue_directory)", buf_str(&path));
    if (!nt.conn && log_verbose())
        log_debug("connect to %s: %s", SOCK_QMGR, strerror(errno));
    buf_destroy(&path);
    if (!nt.conn) {
        schedule_retry();
        return;
    }
    nt.retry_secs = RETRY_MIN;
    flush_unsent();
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    if (!nt.conn)
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
    if (nt.conn)
        flush_unsent();
    else
        notify_connect();
}
