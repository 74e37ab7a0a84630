/* bounce.c - the bounce daemon: accepts qmgr's connections on
 * private/bounce and answers one notification request at a time
 * (bounce_notify.c does the work). Requests only touch spool files, the
 * one kind of synchronous I/O the design allows on an event loop. */
#include "bounce/bounce.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/util/log.h"
#include "common/mail/server.h"

struct bconn {
    struct server *srv;
    struct bufferevent *bev;
    int closing;     /* reply queued, close once it is written */
};

static void conn_free(struct bconn *c)
{
    bufferevent_free(c->bev); /* BEV_OPT_CLOSE_ON_FREE closes the fd */
    free(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct bconn *c = arg;
    if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_free(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct bconn *c = arg;
    attr_t req = ATTR_INIT, reply = ATTR_INIT;
    const char *err = NULL;
    int rc;

    while (!c->closing && (rc = attr_from_evbuffer(bufferevent_get_input(bev), &req, &err)) != 0) {
        if (rc < 0) {
            /* qmgr is our only peer: a bad record from it is a bug there,
             * but dropping the connection keeps the other work going. */
            log_error("malformed request from qmgr: %s", err ? err : "?");
            c->closing = 1;
            break;
        }
        if (bounce_request(c->srv->spool, &req, &reply) < 0)
            c->closing = 1;
        attr_to_evbuffer(bufferevent_get_output(bev), &reply);
    }
    attr_destroy(&req);
    attr_destroy(&reply);
    if (c->closing)
        on_write(bev, c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct bconn *c = arg;
    if (what & BEV_EVENT_ERROR)
        log_debug("connection error from qmgr");
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        conn_free(c);
}

static void on_accept(struct server *s, int fd, int idx)
{
    struct bconn *c = xcalloc(1, sizeof *c);
    c->srv = s;
    c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        log_error("cannot set up connection: out of resources");
        close(fd);
        free(c);
        return;
    }
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

int main(int argc, char **argv)
{
    static const struct server_hooks hooks = { .on_accept = on_accept };
    return server_main(argc, argv, "bounce", &hooks, NULL);
}
