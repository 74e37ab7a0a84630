/* anvil.c - the per-client limit service (Postfix's anvil): counts, over
 * all smtpd processes, each client's concurrent connections and its
 * connection, message, recipient, AUTH and failed-AUTH rates in a window of
 * anvil_rate_time_unit. smtpd decides; anvil only counts.
 *
 * Every smtpd keeps one persistent connection on private/anvil and sends
 * requests (records per attr.h, proto=1), answered in order:
 *   request=connect    ident=SERVICE:ADDR -> status=ok count=N rate=N
 *   request=disconnect ident=...          -> status=ok count=N
 *   request=message|recipient|auth_fail ident=... -> status=ok rate=N
 *   request=auth       ident=...          -> status=ok rate=N auth_fail_rate=N
 *   request=lookup     ident=...          -> status=ok count= rate=
 *       message_rate= recipient_rate= auth_rate= auth_fail_rate=
 *   request=status  (no ident)            -> status=ok size=<idents held>
 *   anything else: status=fail reason=TEXT (the connection stays up; a
 *   record that cannot be parsed at all is answered and the connection
 *   closed, since the stream cannot be resynchronised).
 * When an smtpd connection closes, the concurrent connections it reported
 * are released: that smtpd is gone, and so are its clients.
 * Rates use a fixed window per client (see anvil/anvil_rate.h).
 *
 * A reload does not restart anvil (master keeps it unless its master.cf
 * row or a start-up parameter changed): the counters are what the limits
 * are made of, and every smtpd, old or new, keeps its connection. A new
 * anvil_rate_time_unit applies to windows opened from then on. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "anvil/anvil.h"
#include "common/util/alloc.h"
#include "anvil/anvil_rate.h"
#include "common/util/attr.h"
#include "common/mail/conf.h"
#include "common/util/log.h"
#include "common/mail/server.h"

/* A peer with this much unread output is not reading its replies. */
#define ANVIL_OUTPUT_MAX (1024 * 1024)
/* How long a connection being closed waits for the peer to close. */
#define ANVIL_LINGER_SECS 5

struct aconn {
    struct aconn *prev, *next;   /* all connections, freed on stop */
    struct bufferevent *bev;
    unsigned long owner;
    int closing;    /* last reply queued: shut down once it is written */
    int shut;       /* shutdown(SHUT_WR) done, waiting for the peer's EOF */
};

static struct anvil_table *table;
static unsigned long next_owner = 1;
static struct aconn *conns;

long long anvil_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void conn_free(struct aconn *c)
{
    long n = anvil_table_release(table, c->owner);
    if (n > 0)
        log_debug("client connection %lu closed: released %ld connection%s", c->owner, n,
                  n == 1 ? "" : "s");
    bufferevent_free(c->bev); /* BEV_OPT_CLOSE_ON_FREE closes the fd */
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

/* Once the last reply is out, signal EOF but keep reading (and dropping)
 * until the peer closes: closing a UNIX socket with unread input resets
 * the connection and the peer would lose that reply. */
static void on_write(struct bufferevent *bev, void *arg)
{
    struct aconn *c = arg;
    if (c->closing && !c->shut && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        shutdown(bufferevent_getfd(bev), SHUT_WR);
        c->shut = 1;
    }
}

/* No more requests from this peer; it gets ANVIL_LINGER_SECS to take the
 * last reply and hang up. */
static void start_closing(struct aconn *c)
{
    struct timeval tv = { ANVIL_LINGER_SECS, 0 };
    c->closing = 1;
    bufferevent_set_timeouts(c->bev, &tv, &tv);
}

/* The peer sent something that is not a record: answer and hang up. */
static void reject_stream(struct aconn *c, const char *err)
{
    attr_t reply = ATTR_INIT;
    log_warn("malformed request from client connection %lu: %s", c->owner, err ? err : "?");
    attr_add(&reply, "status", "fail");
    attr_add(&reply, "reason", "malformed record");
    attr_to_evbuffer(bufferevent_get_output(c->bev), &reply);
    attr_destroy(&reply);
    start_closing(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct aconn *c = arg;
    attr_t req = ATTR_INIT, reply = ATTR_INIT;
    const char *err = NULL;
    int rc;

    if (c->closing) {
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
        return;
    }
    while (!c->closing && (rc = attr_from_evbuffer(bufferevent_get_input(bev), &req, &err)) != 0) {
        if (rc < 0) {
            reject_stream(c, err);
            break;
        }
        if (anvil_table_request(table, c->owner, &req, &reply, anvil_now_ms()) < 0)
            log_warn("refused request from client connection %lu: %s", c->owner,
                     attr_get_def(&reply, "reason", "?"));
        attr_to_evbuffer(bufferevent_get_output(bev), &reply);
        if (evbuffer_get_length(bufferevent_get_output(bev)) > ANVIL_OUTPUT_MAX) {
            log_warn("client connection %lu does not read its replies: closing", c->owner);
            start_closing(c);
        }
    }
    attr_destroy(&req);
    attr_destroy(&reply);
    if (c->closing) {
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
        on_write(bev, c);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct aconn *c = arg;
    if (what & BEV_EVENT_ERROR)
        log_debug("client connection %lu: error", c->owner);
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        conn_free(c);
}

static void on_accept(struct server *s, int fd, int idx)
{
    struct aconn *c = xcalloc(1, sizeof *c);
    c->owner = next_owner++;
    c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        log_error("cannot set up connection: out of resources");
        close(fd);
        free(c);
        return;
    }
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
}

static void post_drop(struct server *s)
{
    table = anvil_table_new(conf_int("anvil_rate_time_unit") * 1000, ANVIL_DEFAULT_MAX_ENTRIES);
    anvil_timers_start(s, table);
}

static void on_reload(struct server *s)
{
    long long w = conf_int("anvil_rate_time_unit") * 1000;
    if (w == anvil_table_window(table))
        return;
    anvil_table_set_window(table, w);
    anvil_timers_stop();
    anvil_timers_start(s, table);
}

static void on_stop(struct server *s)
{
    server_stop_accepting(s);
    anvil_stats_log(table, anvil_now_ms());
    while (conns)
        conn_free(conns);
    anvil_timers_stop();
    server_exit(s);
}

int main(int argc, char **argv)
{
    static const struct server_hooks hooks = {
        .post_drop = post_drop, .on_accept = on_accept, .on_stop = on_stop,
        .on_reload = on_reload,
    };
    int rc = server_main(argc, argv, "anvil", &hooks, NULL);
    anvil_table_free(table);
    return rc;
}
