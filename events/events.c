/* events.c - the event logging daemon (issue #11): the one process that
 * writes the event stream. Every daemon that sees a recipient event
 * (common/mail/mevent.h) sends it as a record over private/events; this
 * daemon turns each into one JSON line (events_json.c), appends it to
 * event_log (events_file.c: rotation, reopen) and to the webhook's spool
 * (events_hook.c). It answers nothing but a malformed record, which is
 * answered status=fail and drops that connection (common/util/conn.h).
 *
 * Runs as the mail owner like anvil; a reload ("postino reload", or SIGHUP)
 * rereads main.cf in place and reopens event_log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "common/mail/proto.h"
#include "common/mail/server.h"
#include "common/util/alloc.h"
#include "common/util/conn.h"
#include "common/util/log.h"
#include "events/events.h"

struct events_peer {
    LIST_ENTRY(events_peer) link;
    struct conn *conn;
};

static LIST_HEAD(, events_peer) peers = LIST_HEAD_INITIALIZER(peers);
static unsigned long npeers;
static struct event *tick_ev;

/* Each second: lines that a full disk kept back are tried again. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    events_file_retry();
    events_hook_retry();
}

static enum conn_verdict on_record(struct conn *c, const attr_t *rec, void *arg, const char **why)
{
    buf_t line = BUF_INIT;
    const char *req = attr_get(rec, "request");
    if (req == NULL || strcmp(req, "event") != 0) {
        *why = "not an event record";
        return CONN_DROP;
    }
    if (events_json(rec, &line, why) < 0) {
        buf_destroy(&line);
        return CONN_DROP;
    }
    events_file_write(line.data, line.len);
    events_hook_add(line.data, line.len);
    buf_destroy(&line);
    return CONN_OK;
}

static void peer_free(struct events_peer *p)
{
    LIST_REMOVE(p, link);
    free(p);
}

static void on_close(struct conn *c, const char *why, void *arg)
{
    peer_free(arg);
}

static const struct conn_ops peer_ops = {
    .on_record = on_record,
    .on_close = on_close,
};

static void on_accept(struct server *s, int fd, int idx)
{
    struct events_peer *p = xcalloc(1, sizeof(*p));
    char name[48];
    snprintf(name, sizeof(name), "event sender %lu", ++npeers);
    struct conn_cfg cfg = {
        .peer = name,
        .proto = PROTO_VERSION,
        .serving = 1,
        .output_max = 64 * 1024, /* we only ever say status=fail */
    };
    LIST_INSERT_HEAD(&peers, p, link);
    p->conn = conn_new(s->base, fd, &cfg, &peer_ops, p);
}

static void post_drop(struct server *s)
{
    struct timeval sec = { 1, 0 };
    events_file_open();
    events_hook_start(s->base);
    tick_ev = event_new(s->base, -1, EV_PERSIST, on_tick, NULL);
    if (tick_ev == NULL || event_add(tick_ev, &sec) < 0)
        log_fatal("cannot create the retry timer (libevent)");
}

static void on_reload(struct server *s)
{
    events_file_reopen();
    events_hook_reload();
}

static void on_stop(struct server *s)
{
    struct events_peer *p;
    server_stop_accepting(s);
    while ((p = LIST_FIRST(&peers)) != NULL) {
        conn_free(p->conn); /* no on_close */
        peer_free(p);
    }
    if (tick_ev)
        event_free(tick_ev);
    tick_ev = NULL;
    events_hook_stop();
    events_file_stop();
    server_exit(s);
}

int main(int argc, char **argv)
{
    static const struct server_hooks hooks = {
        .post_drop = post_drop,
        .on_accept = on_accept,
        .on_stop = on_stop,
        .on_reload = on_reload,
    };
    return server_main(argc, argv, "events", &hooks, NULL);
}
