/* conn.c - one record-protocol connection between daemons (see conn.h).
 *
 * A callback of the owner may free or close the connection it is called
 * for; `depth` counts the callbacks running and `dead` defers the free to
 * the moment the outermost one returns.
 *
 * Output is written directly once per loop round (flush_cb, run because
 * something was added to the output buffer); the socket's write event is
 * armed only while the kernel has not taken everything. A bufferevent
 * with writing always on adds and removes that event around every record:
 * two epoll_ctl calls and a loop round per request and per reply. */
#include "common/util/conn.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/util/log.h"

struct conn {
    struct bufferevent *bev;
    struct event *again; /* conn_resume: look at buffered records */
    struct event *flush; /* output was added: write it this loop round */
    const struct conn_ops *ops;
    void *arg;
    char *peer;
    char *proto;
    int serving;
    size_t output_max;
    int depth;             /* owner callbacks running */
    int dead;              /* freed while a callback ran */
    int held;              /* CONN_HOLD until conn_resume */
    int closing;           /* no more records: drain, shut, linger */
    int shut;              /* shutdown(SHUT_WR) done */
    int finished;          /* on_close delivered */
    const char *close_why; /* why the close started (static) */
};

static void free_now(struct conn *c)
{
    bufferevent_free(c->bev); /* BEV_OPT_CLOSE_ON_FREE closes the fd */
    event_free(c->again);
    event_free(c->flush);
    free(c->peer);
    free(c->proto);
    free(c);
}

static void enter(struct conn *c)
{
    c->depth++;
}

/* Returns 0 when c is gone and must not be touched. */
static int leave(struct conn *c)
{
    if (--c->depth == 0 && c->dead) {
        free_now(c);
        return 0;
    }
    return !c->dead;
}

void conn_free(struct conn *c)
{
    if (c == NULL || c->dead)
        return;
    c->dead = 1;
    c->finished = 1;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    if (c->depth == 0)
        free_now(c);
}

/* The end: tell the owner once, then free. */
static void finish(struct conn *c, const char *why)
{
    if (c->finished)
        return;
    c->finished = 1;
    if (c->ops->on_close) {
        enter(c);
        c->ops->on_close(c, why, c->arg);
        if (!leave(c))
            return;
    }
    conn_free(c);
}

static void drain_input(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
}

/* Output written and closing: signal EOF, wait for the peer's. */
static void maybe_shut(struct conn *c)
{
    struct timeval tv = { CONN_LINGER_SECS, 0 };
    if (!c->closing || c->shut || evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
        return;
    c->shut = 1;
    if (shutdown(bufferevent_getfd(c->bev), SHUT_WR) < 0) {
        finish(c, c->close_why);
        return;
    }
    bufferevent_set_timeouts(c->bev, &tv, NULL);
}

static void start_close(struct conn *c, const char *why)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->close_why = why;
    drain_input(c);
    maybe_shut(c);
}

void conn_close(struct conn *c)
{
    start_close(c, NULL);
}

/* The one policy for a peer that sent something malformed. */
static void drop(struct conn *c, const char *why)
{
    log_error("malformed record from %s: %s; dropping the connection", c->peer, why);
    if (c->serving && !c->closing) {
        attr_t r = ATTR_INIT;
        attr_add(&r, "status", "fail");
        attr_add(&r, "reason", why);
        attr_to_evbuffer(bufferevent_get_output(c->bev), &r);
        attr_destroy(&r);
    }
    start_close(c, why);
}

static int proto_ok(const struct conn *c, const attr_t *rec)
{
    const char *p = attr_get(rec, "proto");
    return c->proto == NULL || (p != NULL && strcmp(p, c->proto) == 0);
}

static void process(struct conn *c)
{
    attr_t rec = ATTR_INIT;
    enter(c);
    while (!c->dead && !c->held && !c->closing) {
        const char *why = NULL;
        enum attr_decoded rc = attr_from_evbuffer(bufferevent_get_input(c->bev), &rec, &why);
        if (rc == ATTR_INCOMPLETE)
            break;
        if (rc == ATTR_MALFORMED) {
            drop(c, why ? why : "undecodable record");
            break;
        }
        if (!proto_ok(c, &rec)) {
            drop(c, "missing or unsupported proto version");
            break;
        }
        enum conn_verdict v = c->ops->on_record(c, &rec, c->arg, &why);
        if (c->dead)
            break;
        if (v == CONN_DROP) {
            drop(c, why ? why : "refused record");
            break;
        }
        if (v == CONN_HOLD)
            c->held = 1;
    }
    attr_destroy(&rec);
    if (!c->dead && c->closing)
        drain_input(c);
    leave(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->closing)
        drain_input(c);
    else if (!c->held)
        process(c);
}

/* Everything written: tell the owner, shut down if closing. */
static void drained(struct conn *c)
{
    if (c->ops->on_drained && !c->closing) {
        enter(c);
        c->ops->on_drained(c, c->arg);
        if (!leave(c))
            return;
    }
    maybe_shut(c);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
        return;
    bufferevent_disable(bev, EV_WRITE); /* flush_cb writes the next */
    drained(c);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    (void)fd;
    (void)what;
    if (c->dead || evbuffer_get_length(out) == 0)
        return;
    /* The bufferevent keeps its output's start frozen against anyone
     * draining it but itself; its own writer thaws it the same way. */
    evbuffer_unfreeze(out, 1);
    int n = evbuffer_write(out, bufferevent_getfd(c->bev));
    evbuffer_freeze(out, 1);
    if (n < 0 || evbuffer_get_length(out) > 0) {
        /* The kernel is full; or the write failed, and the bufferevent
         * finds and reports the error itself. */
        bufferevent_enable(c->bev, EV_WRITE);
        return;
    }
    drained(c);
}

static void output_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct conn *c = arg;
    (void)buf;
    if (info->n_added > 0)
        event_active(c->flush, EV_WRITE, 0);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (what & BEV_EVENT_TIMEOUT)
        finish(c, c->close_why);
    else if (what & BEV_EVENT_EOF)
        finish(c, c->closing ? c->close_why : "connection closed");
    else if (what & BEV_EVENT_ERROR)
        finish(c, c->closing ? c->close_why : strerror(EVUTIL_SOCKET_ERROR()));
}

static void again_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (!c->held && !c->closing)
        process(c);
}

struct conn *conn_new(struct event_base *base, int fd, const struct conn_cfg *cfg,
                      const struct conn_ops *ops, void *arg)
{
    struct conn *c = xcalloc(1, sizeof(*c));
    c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->again = event_new(base, -1, 0, again_cb, c);
    c->flush = event_new(base, -1, 0, flush_cb, c);
    if (c->bev == NULL || c->again == NULL || c->flush == NULL ||
        evbuffer_add_cb(bufferevent_get_output(c->bev), output_added, c) == NULL)
        log_fatal("cannot set up a connection to %s: out of memory", cfg->peer);
    c->ops = ops;
    c->arg = arg;
    c->peer = xstrdup(cfg->peer ? cfg->peer : "peer");
    c->proto = cfg->proto ? xstrdup(cfg->proto) : NULL;
    c->serving = cfg->serving;
    c->output_max = cfg->output_max;
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_enable(c->bev, EV_READ);
    bufferevent_disable(c->bev, EV_WRITE); /* a new bufferevent starts with it on */
    return c;
}

struct conn *conn_connect_unix(struct event_base *base, const char *path,
                               const struct conn_cfg *cfg, const struct conn_ops *ops, void *arg)
{
    struct sockaddr_un sun;
    int fd;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (str_lcpy(sun.sun_path, path, sizeof(sun.sun_path)) >= sizeof(sun.sun_path)) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        int e = errno;
        close(fd);
        errno = e; /* EAGAIN: the listener's backlog is full */
        return NULL;
    }
    return conn_new(base, fd, cfg, ops, arg);
}

/* A peer that lets replies pile up is not reading them. */
static void check_output(struct conn *c)
{
    if (c->output_max == 0 || evbuffer_get_length(bufferevent_get_output(c->bev)) <= c->output_max)
        return;
    log_warn("%s does not read its replies: closing the connection", c->peer);
    drain_input(c);
    c->closing = 1;
    c->close_why = "peer does not read its replies";
    evbuffer_drain(bufferevent_get_output(c->bev),
                   evbuffer_get_length(bufferevent_get_output(c->bev)));
    maybe_shut(c);
}

void conn_send(struct conn *c, const attr_t *rec)
{
    if (c->closing || c->dead)
        return;
    attr_to_evbuffer(bufferevent_get_output(c->bev), rec);
    check_output(c);
}

void conn_send_raw(struct conn *c, const void *data, size_t len)
{
    if (c->closing || c->dead)
        return;
    bufferevent_write(c->bev, data, len);
    check_output(c);
}

struct evbuffer *conn_output(struct conn *c)
{
    return bufferevent_get_output(c->bev);
}

size_t conn_output_len(const struct conn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

void conn_resume(struct conn *c)
{
    if (!c->held)
        return;
    c->held = 0;
    event_active(c->again, EV_TIMEOUT, 0);
}

int conn_fd(const struct conn *c)
{
    return bufferevent_getfd(c->bev);
}

const char *conn_peer(const struct conn *c)
{
    return c->peer;
}

int conn_closing(const struct conn *c)
{
    return c->closing;
}
