/* qmgr_deliver.c - the pool of persistent connections to delivery agents
 * (private/<transport>), one job per connection at a time.
 *
 * Connecting is a blocking connect(2) to a local socket: fast, and it
 * fails at once when the agent is not running (dispatch retries later).
 * A connection that breaks mid-job means the agent died: the job's
 * recipients stay pending in the file and are retried soon. */
#include "qmgr/qmgr.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "common/util/alloc.h"
#include "common/util/ipc.h"
#include "common/util/log.h"
#include "common/mail/proto.h"

struct aconn {
    struct bufferevent *bev;
    char *transport;
    struct qjob *job;
    unsigned uses;           /* jobs sent on this connection */
    struct aconn *next, *prev;
};

static struct aconn *conns;  /* every connection; idle ones have job NULL */

/* Transports whose agent could not be reached: skip connecting to them
 * for a second, so a missing agent costs one connect(2) per second, not
 * one per destination. */
#define DOWN_MAX 16
static struct {
    char name[40];
    time_t until;
} down[DOWN_MAX];

static int transport_down(const char *t)
{
    time_t now = time(NULL);

    for (size_t i = 0; i < DOWN_MAX; i++)
        if (down[i].until > now && strcmp(down[i].name, t) == 0)
            return 1;
    return 0;
}

static void transport_mark_down(const char *t)
{
    time_t now = time(NULL);
    size_t slot = 0;

    for (size_t i = 0; i < DOWN_MAX; i++)
        if (down[i].until <= now || strcmp(down[i].name, t) == 0) {
            slot = i;
            break;
        }
    str_lcpy(down[slot].name, t, sizeof(down[slot].name));
    down[slot].until = now + 1;
}

static void aconn_free(struct aconn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    bufferevent_free(c->bev);
    free(c->transport);
    free(c);
}

/* The connection is gone; what happens to its job depends on why. */
static void aconn_broken(struct aconn *c, const char *why)
{
    struct qjob *j = c->job;

    aconn_free(c);
    if (j == NULL)
        return; /* an idle connection the agent closed: just forget it */
    /* Mid-job, even on a reused connection with no reply yet, the agent may
     * have delivered and recorded some recipients before it died. The
     * crash path drops the message from memory and reloads it from its
     * file shortly, so the recorded outcomes decide and nothing is sent
     * twice; re-sending the job from memory could. */
    log_warn("%s: delivery agent %s: %s", j->msg->id, j->dest->transport, why);
    sched_job_done(j, NULL, "delivery agent crashed");
}

static void aconn_read(struct bufferevent *bev, void *arg)
{
    struct aconn *c = arg;
    attr_t reply = ATTR_INIT;
    const char *err = NULL;
    int r;

    while ((r = attr_from_evbuffer(bufferevent_get_input(bev), &reply, &err)) == 1) {
        struct qjob *j = c->job;
        const char *qid = attr_get(&reply, "queue_id");
        if (j == NULL || (qid && strcmp(qid, j->msg->id) != 0)) {
            log_error("delivery agent %s: unexpected reply (queue_id=%s); dropping connection",
                      c->transport, qid ? qid : "");
            break;
        }
        c->job = NULL; /* idle again before the scheduler looks for one */
        sched_job_done(j, &reply, NULL);
        attr_destroy(&reply);
        return; /* one job per connection: nothing else can be pending */
    }
    if (r == 0) {
        attr_destroy(&reply);
        return;
    }
    if (r < 0)
        log_error("delivery agent %s: malformed reply: %s; dropping connection", c->transport,
                  err ? err : "?");
    attr_destroy(&reply);
    aconn_broken(c, "bad reply");
}

static void aconn_event(struct bufferevent *bev, short what, void *arg)
{
    struct aconn *c = arg;

    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        aconn_broken(c, (what & BEV_EVENT_EOF) ? "connection closed mid-job"
                                                : strerror(EVUTIL_SOCKET_ERROR()));
}

static struct aconn *aconn_new(const char *transport)
{
    static time_t last_warn;
    buf_t rel = BUF_INIT, path = BUF_INIT;
    struct aconn *c;
    int fd;

    buf_printf(&rel, "%s/%s", SOCK_PRIVATE_DIR, transport);
    server_spool_path(qmgr_g.srv, buf_str(&rel), &path);
    buf_destroy(&rel);
    if (transport_down(transport)) {
        buf_destroy(&path);
        return NULL;
    }
    fd = ipc_connect_unix(buf_str(&path));
    if (fd < 0) {
        transport_mark_down(transport);
        if (time(NULL) - last_warn >= 10) {
            log_warn("connect to %s: %s (delivery agent not running?)", buf_str(&path),
                     strerror(errno));
            last_warn = time(NULL);
        }
        buf_destroy(&path);
        return NULL;
    }
    buf_destroy(&path);
    ipc_nonblock(fd, 1);
    ipc_cloexec(fd, 1);
    c = xcalloc(1, sizeof(*c));
    c->bev = bufferevent_socket_new(qmgr_g.srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->transport = xstrdup(transport);
    bufferevent_setcb(c->bev, aconn_read, NULL, aconn_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    return c;
}

static struct aconn *aconn_idle(const char *transport)
{
    for (struct aconn *c = conns; c; c = c->next)
        if (c->job == NULL && strcmp(c->transport, transport) == 0)
            return c;
    return NULL;
}

int deliver_start(struct qjob *j)
{
    struct aconn *c = aconn_idle(j->dest->transport);
    attr_t req = ATTR_INIT;

    if (c == NULL && (c = aconn_new(j->dest->transport)) == NULL)
        return -1;
    c->job = j;
    c->uses++;
    attr_add(&req, "proto", PROTO_VERSION);
    attr_add(&req, "request", "deliver");
    attr_add(&req, "queue_id", j->msg->id);
    attr_add(&req, "nexthop", j->dest->nexthop);
    for (size_t i = 0; i < j->n; i++)
        attr_add_ll(&req, "rcpt", (long long)j->rcpt[i]);
    attr_to_evbuffer(bufferevent_get_output(c->bev), &req);
    attr_destroy(&req);
    return 0;
}

void deliver_close_all(void)
{
    while (conns)
        aconn_free(conns);
}
