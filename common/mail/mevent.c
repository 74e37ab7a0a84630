/* mevent.c - the daemons' client of the events daemon (see mevent.h):
 * one lazily made connection on private/events, a bounded buffer while it
 * is down, a retry timer, and a last flush at exit. Nothing here blocks
 * the loop but the exit flush, which waits at most MEVENT_EXIT_FLUSH_MS. */
#include "common/mail/mevent.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "common/mail/conf.h"
#include "common/mail/proto.h"
#include "common/mail/qfile.h"
#include "common/util/conn.h"
#include "common/util/log.h"

int mevent_on;

static struct {
    struct event_base *base;
    struct conn *conn;
    struct event *retry_ev;
    buf_t pending;         /* encoded records waiting for a connection */
    buf_t why;             /* why the last connection went or failed */
    unsigned long dropped; /* since start */
    unsigned long outage_drops;
    int warned; /* this outage was logged */
} mc = { .pending = BUF_INIT, .why = BUF_INIT };

static void configure(void)
{
    mevent_on = *conf_str("event_log") != 0 || *conf_str("event_webhook_url") != 0;
}

void mevent_start(struct event_base *base)
{
    mc.base = base;
    configure();
}

void mevent_reload(void)
{
    configure();
}

unsigned long mevent_dropped(void)
{
    return mc.dropped;
}

/* ---- the connection ---- */

static void go_down(const char *why);

static enum conn_verdict on_record(struct conn *c, const attr_t *rec, void *arg, const char **why)
{
    /* The events daemon answers only to refuse: our records are wrong. */
    log_warn("events service refused a record: %s", attr_get_def(rec, "reason", "(no reason)"));
    *why = "unexpected reply";
    return CONN_DROP;
}

static void on_close(struct conn *c, const char *why, void *arg)
{
    mc.conn = NULL;
    go_down(why ? why : "closed");
}

static const struct conn_ops ops = {
    .on_record = on_record,
    .on_close = on_close,
};

static void on_retry(evutil_socket_t fd, short what, void *arg);

static void arm_retry(void)
{
    struct timeval tv = { MEVENT_RETRY_SECS, 0 };
    if (mc.base == NULL)
        return;
    if (mc.retry_ev == NULL)
        mc.retry_ev = evtimer_new(mc.base, on_retry, NULL);
    if (mc.retry_ev && !evtimer_pending(mc.retry_ev, NULL))
        evtimer_add(mc.retry_ev, &tv);
}

/* The connection is gone: try again later. The outage is logged when an
 * event has to wait for it (mevent_send), not here: at a stop every
 * daemon sees the events daemon go first. */
static void go_down(const char *why)
{
    buf_set(&mc.why, why);
    arm_retry();
}

/* Connect when there is none; a UNIX connect completes or fails at once. */
static int connect_now(void)
{
    if (mc.conn)
        return 0;
    if (mc.base == NULL)
        return -1;
    struct conn_cfg cfg = { .peer = "events service " SOCK_EVENTS };
    mc.conn = conn_connect_unix(mc.base, SOCK_EVENTS, &cfg, &ops, NULL);
    if (mc.conn == NULL) {
        go_down(strerror(errno));
        return -1;
    }
    if (mc.pending.len)
        conn_send_raw(mc.conn, mc.pending.data, mc.pending.len);
    buf_reset(&mc.pending);
    if (mc.warned)
        log_info("events service %s available again", SOCK_EVENTS);
    if (mc.outage_drops)
        log_warn("events: %lu event%s dropped while the events service was unavailable",
                 mc.outage_drops, mc.outage_drops == 1 ? "" : "s");
    mc.warned = 0;
    mc.outage_drops = 0;
    return 0;
}

/* Only for events that wait: otherwise the next event connects. */
static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    if (mc.pending.len)
        connect_now();
}

/* ---- sending ---- */

static void drop(void)
{
    if (mc.outage_drops++ == 0)
        log_warn("events: buffer of %d bytes full: dropping events until the events service "
                 "takes them",
                 MEVENT_BUFFER_MAX);
    mc.dropped++;
}

void mevent_send(const attr_t *a)
{
    buf_t rec = BUF_INIT;
    if (!mevent_on)
        return;
    attr_encode(a, &rec);
    if (mc.conn == NULL && !(mc.retry_ev && evtimer_pending(mc.retry_ev, NULL)))
        connect_now();
    if (mc.conn) {
        if (conn_output_len(mc.conn) + rec.len > MEVENT_BUFFER_MAX)
            drop();
        else
            conn_send_raw(mc.conn, rec.data, rec.len);
    } else if (mc.pending.len + rec.len > MEVENT_BUFFER_MAX) {
        drop();
    } else {
        if (!mc.warned)
            log_warn("events service %s unavailable (%s): buffering events", SOCK_EVENTS,
                     buf_str(&mc.why));
        mc.warned = 1;
        buf_append(&mc.pending, rec.data, rec.len);
        arm_retry();
    }
    buf_destroy(&rec);
}

/* Write out at exit: poll the socket while it takes more. */
static void flush_conn(void)
{
    struct evbuffer *out = conn_output(mc.conn);
    int fd = conn_fd(mc.conn);
    while (evbuffer_get_length(out) > 0) {
        if (evbuffer_write(out, fd) >= 0)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            break;
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        if (poll(&p, 1, MEVENT_EXIT_FLUSH_MS) <= 0)
            break;
    }
}

void mevent_stop(void)
{
    if (mc.pending.len && mc.conn == NULL)
        connect_now();
    if (mc.conn) {
        flush_conn();
        conn_free(mc.conn);
        mc.conn = NULL;
    }
    if (mc.pending.len || mc.outage_drops)
        log_warn("events: %zu bytes of events not sent at exit, %lu dropped", mc.pending.len,
                 mc.outage_drops);
    if (mc.retry_ev)
        event_free(mc.retry_ev);
    mc.retry_ev = NULL;
    buf_destroy(&mc.pending);
    buf_destroy(&mc.why);
    mc.base = NULL;
}

/* ---- building ---- */

void mevent_begin(attr_t *a, const char *type)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    attr_clear(a);
    attr_add(a, "proto", PROTO_VERSION);
    attr_add(a, "request", "event");
    attr_add(a, "type", type);
    attr_addf(a, "time", "%lld.%03ld", (long long)tv.tv_sec, (long)(tv.tv_usec / 1000));
}

void mevent_add(attr_t *a, const char *name, const char *value)
{
    if (value && *value)
        attr_add(a, name, value);
}

void mevent_add_relay(attr_t *a, const char *relay)
{
    const char *lb = relay ? strchr(relay, '[') : NULL;
    const char *rb = lb ? strchr(lb, ']') : NULL;
    buf_t b = BUF_INIT;
    if (lb == NULL || rb == NULL)
        return;
    buf_append(&b, relay, (size_t)(lb - relay));
    mevent_add(a, "remote_host", buf_str(&b));
    buf_reset(&b);
    buf_append(&b, lb + 1, (size_t)(rb - lb - 1));
    mevent_add(a, "remote_ip", buf_str(&b));
    buf_destroy(&b);
}

/* "NNN" at p, followed by a space, a hyphen or the end. */
static int reply_code_at(const char *p)
{
    return p[0] >= '2' && p[0] <= '5' && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9' &&
           (p[3] == ' ' || p[3] == '-' || !p[3]);
}

void mevent_add_reply(attr_t *a, const char *dsn, const char *text)
{
    const char *said = text ? strstr(text, " said: ") : NULL;
    const char *code = said ? said + 7 : text;
    mevent_add(a, "dsn", dsn);
    mevent_add(a, "reply", text);
    if (code && reply_code_at(code))
        attr_addf(a, "reply_code", "%.3s", code);
}

void mevent_add_tls(attr_t *a, const char *info)
{
    const char *colon = info ? strchr(info, ':') : NULL;
    buf_t b = BUF_INIT;
    if (colon == NULL)
        return;
    buf_append(&b, info, (size_t)(colon - info));
    mevent_add(a, "tls_version", buf_str(&b));
    mevent_add(a, "tls_cipher", colon + 1);
    buf_destroy(&b);
}

const char *mevent_result_type(int qr_status)
{
    switch (qr_status) {
    case QR_SENT:
        return "delivery";
    case QR_DEFERRED:
        return "transient_failure";
    case QR_BOUNCED:
        return "bounce";
    default:
        return NULL;
    }
}

int mevent_url_check(const char *url, buf_t *err)
{
    struct evhttp_uri *u = evhttp_uri_parse(url);
    const char *scheme = u ? evhttp_uri_get_scheme(u) : NULL;
    const char *host = u ? evhttp_uri_get_host(u) : NULL;
    int ok = scheme && strcmp(scheme, "http") == 0 && host && *host;
    if (!ok)
        buf_printf(err, "event_webhook_url = %s: not an http://host[:port]/path URL%s", url,
                   scheme && strcmp(scheme, "https") == 0 ? " (https is not supported)" : "");
    if (u)
        evhttp_uri_free(u);
    return ok ? 0 : -1;
}
