/* smtpd_anvil.c - smtpd's non-blocking client of the anvil service.
 * One persistent connection (common/util/conn); a FIFO of pending
 * callbacks matches the in-order replies. Fails open: when anvil cannot be
 * reached, requests complete with zero counters (deferred to the event
 * loop so a caller never sees its callback run inside its own request
 * call). A malformed reply (undecodable, without a status, or a reply to
 * no request) drops the connection like an outage. */
#include "smtpd/smtpd_anvil.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util/alloc.h"
#include "common/util/attr.h"
#include "common/util/buf.h"
#include "common/util/conn.h"
#include "smtpd/smtpd_cidr.h"
#include "common/mail/conf.h"
#include "common/util/log.h"
#include "common/mail/proto.h"

struct pending {
    smtpd_anvil_cb cb;
    void *arg;
    enum anvil_event ev; /* whose rate "rate" in the reply is */
};

struct smtpd_anvil {
    struct event_base *base;
    char *path;
    char *peer;           /* "anvil service PATH", for conn's logs */
    struct conn *conn;    /* NULL while down */
    struct conn *dropped; /* malformed peer: conn closes it */
    struct pending *q;    /* ring buffer */
    size_t qhead, qlen, qcap;
    struct event *fail_ev;    /* completes pending requests fail-open */
    struct event *timeout_ev; /* oldest request unanswered too long */
    time_t retry_at;
    int retry_secs;
    int warned; /* outage already logged */
};

static void on_fail(evutil_socket_t fd, short what, void *arg);
static void on_timeout(evutil_socket_t fd, short what, void *arg);

struct smtpd_anvil *smtpd_anvil_new(struct event_base *base, const char *path)
{
    struct smtpd_anvil *ac = xcalloc(1, sizeof *ac);
    ac->base = base;
    ac->path = xstrdup(path);
    buf_t peer = BUF_INIT;
    buf_printf(&peer, "anvil service %s", path);
    ac->peer = buf_detach(&peer);
    ac->retry_secs = SMTPD_ANVIL_RETRY_SECS;
    ac->fail_ev = event_new(base, -1, 0, on_fail, ac);
    ac->timeout_ev = event_new(base, -1, 0, on_timeout, ac);
    if (ac->fail_ev == NULL || ac->timeout_ev == NULL)
        log_fatal("cannot create anvil client events (libevent)");
    return ac;
}

void smtpd_anvil_free(struct smtpd_anvil *ac)
{
    if (ac == NULL)
        return;
    conn_free(ac->conn);
    conn_free(ac->dropped);
    event_free(ac->fail_ev);
    event_free(ac->timeout_ev);
    free(ac->q);
    free(ac->path);
    free(ac->peer);
    free(ac);
}

void smtpd_anvil_set_retry(struct smtpd_anvil *ac, int secs)
{
    ac->retry_secs = secs < 0 ? 0 : secs;
}

int smtpd_anvil_up(const struct smtpd_anvil *ac)
{
    return ac->conn != NULL;
}

/* ---- the FIFO ---- */

static void q_push(struct smtpd_anvil *ac, smtpd_anvil_cb cb, void *arg, enum anvil_event ev)
{
    if (ac->qlen == ac->qcap) {
        size_t ncap = ac->qcap ? ac->qcap * 2 : 16;
        struct pending *nq = xcalloc(ncap, sizeof *nq);
        for (size_t k = 0; k < ac->qlen; k++)
            nq[k] = ac->q[(ac->qhead + k) % ac->qcap];
        free(ac->q);
        ac->q = nq;
        ac->qcap = ncap;
        ac->qhead = 0;
    }
    ac->q[(ac->qhead + ac->qlen) % ac->qcap] = (struct pending){ cb, arg, ev };
    ac->qlen++;
}

static struct pending q_pop(struct smtpd_anvil *ac)
{
    struct pending p = ac->q[ac->qhead];
    ac->qhead = (ac->qhead + 1) % ac->qcap;
    ac->qlen--;
    return p;
}

void smtpd_anvil_cancel(struct smtpd_anvil *ac, void *arg)
{
    for (size_t k = 0; k < ac->qlen; k++) {
        struct pending *p = &ac->q[(ac->qhead + k) % ac->qcap];
        if (p->arg == arg)
            p->cb = NULL;
    }
}

/* ---- outages ---- */

/* Complete every pending request with zero counters. */
static void on_fail(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_anvil *ac = arg;
    struct anvil_counts c;
    memset(&c, 0, sizeof c);
    c.unavailable = 1;
    /* Only what is queued now: a callback may queue more, which then
     * waits for its own (re)scheduled pass. */
    for (size_t n = ac->qlen; n > 0 && ac->conn == NULL; n--) {
        struct pending p = q_pop(ac);
        if (p.cb)
            p.cb(&c, p.arg);
    }
    if (ac->qlen > 0 && ac->conn == NULL)
        event_active(ac->fail_ev, EV_TIMEOUT, 0);
}

/* The connection is given up (conn_free: safe inside its callbacks, and
 * a connection that is already closing just stops). */
static void go_down(struct smtpd_anvil *ac, const char *why)
{
    conn_free(ac->conn);
    ac->conn = NULL;
    event_del(ac->timeout_ev);
    ac->retry_at = time(NULL) + ac->retry_secs;
    if (!ac->warned)
        log_warn("anvil service %s: %s; per-client limits are not enforced until it is back",
                 ac->path, why);
    ac->warned = 1;
    if (ac->qlen > 0)
        event_active(ac->fail_ev, EV_TIMEOUT, 0);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_anvil *ac = arg;
    if (ac->conn && ac->qlen > 0)
        go_down(ac, "no reply in time");
}

static void arm_timeout(struct smtpd_anvil *ac)
{
    struct timeval tv = { SMTPD_ANVIL_TIMEOUT_SECS, 0 };
    event_add(ac->timeout_ev, &tv);
}

/* ---- replies ---- */

static void parse_counts(const attr_t *r, enum anvil_event ev, struct anvil_counts *c)
{
    long long v;
    memset(c, 0, sizeof *c);
    if (attr_get_ll(r, "count", &v) == 0)
        c->count = (long)v;
    for (int k = 0; k < ANVIL_EV_N; k++)
        if (k != ANVIL_EV_CONN && attr_get_ll(r, anvil_rate_attr((enum anvil_event)k), &v) == 0)
            c->rate[k] = (long)v;
    if (attr_get_ll(r, "rate", &v) == 0)
        c->rate[ev] = (long)v;
}

/* One reply: the answer to the oldest pending request. A reply to no
 * request or without a status is malformed (conn.h: dropped, logged):
 * the client goes down as in any outage, and the pending requests
 * complete fail-open. */
static enum conn_verdict on_record(struct conn *c, const attr_t *r, void *arg, const char **why)
{
    struct smtpd_anvil *ac = arg;
    const char *status = attr_get(r, "status");
    if (ac->qlen == 0 || status == NULL) {
        *why = ac->qlen == 0 ? "reply to no request" : "reply without a status";
        conn_free(ac->dropped);
        ac->dropped = c; /* conn closes it, then on_close forgets it */
        ac->conn = NULL;
        go_down(ac, *why);
        return CONN_DROP;
    }
    struct pending p = q_pop(ac);
    struct anvil_counts cnt;
    if (strcmp(status, "ok") == 0) {
        parse_counts(r, p.ev, &cnt);
    } else {
        log_warn("anvil service %s refused a request: %s", ac->path,
                 attr_get_def(r, "reason", "(no reason)"));
        memset(&cnt, 0, sizeof cnt);
        cnt.unavailable = 1;
    }
    if (ac->qlen > 0)
        arm_timeout(ac);
    else
        event_del(ac->timeout_ev);
    if (p.cb)
        p.cb(&cnt, p.arg);
    return CONN_OK;
}

/* The service closed a connection with nothing outstanding (anvil was
 * restarted: a reload that changed its master.cf row, or a crash): no
 * request is lost, so say nothing and connect again with the next one;
 * only a failure to do so is an outage. master holds the listener, so a
 * new anvil that is still starting takes the request from its queue. */
static void quiet_close(struct smtpd_anvil *ac)
{
    log_debug("anvil service %s closed an idle connection; reconnecting on demand", ac->path);
    event_del(ac->timeout_ev);
    ac->retry_at = 0;
}

static void on_close(struct conn *c, const char *why, void *arg)
{
    struct smtpd_anvil *ac = arg;
    if (c == ac->dropped)
        ac->dropped = NULL;
    if (c != ac->conn)
        return;      /* one given up already */
    ac->conn = NULL; /* conn frees it after this call */
    if (ac->qlen == 0 && !ac->warned) {
        quiet_close(ac);
        return;
    }
    go_down(ac, why ? why : "connection closed");
}

static const struct conn_ops anvil_ops = { on_record, on_close, NULL };

/* ---- requests ---- */

/* UNIX sockets connect or fail at once, even non-blocking (EAGAIN when
 * the backlog is full: treated as down), so this never waits. */
static int try_connect(struct smtpd_anvil *ac)
{
    struct conn_cfg cfg = { .peer = ac->peer };
    ac->conn = conn_connect_unix(ac->base, ac->path, &cfg, &anvil_ops, ac);
    if (ac->conn == NULL) {
        go_down(ac, errno == ENAMETOOLONG ? "socket path too long" : strerror(errno));
        return -1;
    }
    if (ac->warned)
        log_info("anvil service %s: connected again", ac->path);
    ac->warned = 0;
    return 0;
}

static void send_request(struct smtpd_anvil *ac, const char *request, enum anvil_event ev,
                         const char *service, const char *addr, smtpd_anvil_cb cb, void *arg)
{
    /* Reconnect only once the failures of the last outage are delivered,
     * so replies and pending entries stay paired. */
    if (ac->conn == NULL && ac->qlen == 0 && time(NULL) >= ac->retry_at)
        try_connect(ac);
    q_push(ac, cb, arg, ev);
    if (ac->conn == NULL) {
        event_active(ac->fail_ev, EV_TIMEOUT, 0);
        return;
    }
    attr_t a = ATTR_INIT;
    attr_add(&a, "proto", PROTO_VERSION);
    attr_add(&a, "request", request);
    attr_addf(&a, "ident", "%s:%s", service, addr);
    conn_send(ac->conn, &a);
    attr_destroy(&a);
    if (ac->qlen == 1)
        arm_timeout(ac);
}

void smtpd_anvil_connect(struct smtpd_anvil *ac, const char *service, const char *addr,
                         smtpd_anvil_cb cb, void *arg)
{
    send_request(ac, "connect", ANVIL_EV_CONN, service, addr, cb, arg);
}

void smtpd_anvil_disconnect(struct smtpd_anvil *ac, const char *service, const char *addr)
{
    send_request(ac, "disconnect", ANVIL_EV_CONN, service, addr, NULL, NULL);
}

void smtpd_anvil_event(struct smtpd_anvil *ac, enum anvil_event ev, const char *service,
                       const char *addr, smtpd_anvil_cb cb, void *arg)
{
    if ((unsigned)ev >= ANVIL_EV_N)
        log_panic("smtpd_anvil_event: bad event %d", (int)ev);
    send_request(ac, anvil_event_request(ev), ev, service, addr, cb, arg);
}

void smtpd_anvil_lookup(struct smtpd_anvil *ac, const char *service, const char *addr,
                        smtpd_anvil_cb cb, void *arg)
{
    send_request(ac, "lookup", ANVIL_EV_CONN, service, addr, cb, arg);
}

/* ---- decisions ---- */

static const char *const limit_params[] = {
    [SMTPD_ANVIL_LIMIT_NONE] = "",
    [SMTPD_ANVIL_LIMIT_CONN_COUNT] = "smtpd_client_connection_count_limit",
    [SMTPD_ANVIL_LIMIT_CONN_RATE] = "smtpd_client_connection_rate_limit",
    [SMTPD_ANVIL_LIMIT_MSG_RATE] = "smtpd_client_message_rate_limit",
    [SMTPD_ANVIL_LIMIT_RCPT_RATE] = "smtpd_client_recipient_rate_limit",
    [SMTPD_ANVIL_LIMIT_AUTH_RATE] = "smtpd_client_auth_rate_limit",
    [SMTPD_ANVIL_LIMIT_AUTH_FAIL] = "smtpd_client_auth_failure_limit",
};

const char *smtpd_anvil_limit_param(enum smtpd_anvil_limit l)
{
    return (unsigned)l < sizeof limit_params / sizeof limit_params[0] ? limit_params[l] : "";
}

/* value > limit (or >= for failures), with 0 meaning "no limit". */
static int over(enum smtpd_anvil_limit l, long value)
{
    long long lim = conf_int(limit_params[l]);
    if (lim <= 0)
        return 0;
    return l == SMTPD_ANVIL_LIMIT_AUTH_FAIL ? value >= lim : value > lim;
}

enum smtpd_anvil_limit smtpd_anvil_limit_exceeded(enum anvil_event ev, const struct anvil_counts *c)
{
    static const struct {
        enum anvil_event ev;
        enum smtpd_anvil_limit limit;
        int count; /* compare the concurrent count, not a rate */
        int rate;  /* else: which rate */
    } rules[] = {
        { ANVIL_EV_CONN, SMTPD_ANVIL_LIMIT_CONN_COUNT, 1, 0 },
        { ANVIL_EV_CONN, SMTPD_ANVIL_LIMIT_CONN_RATE, 0, ANVIL_EV_CONN },
        { ANVIL_EV_MSG, SMTPD_ANVIL_LIMIT_MSG_RATE, 0, ANVIL_EV_MSG },
        { ANVIL_EV_RCPT, SMTPD_ANVIL_LIMIT_RCPT_RATE, 0, ANVIL_EV_RCPT },
        { ANVIL_EV_AUTH, SMTPD_ANVIL_LIMIT_AUTH_RATE, 0, ANVIL_EV_AUTH },
        { ANVIL_EV_AUTH, SMTPD_ANVIL_LIMIT_AUTH_FAIL, 0, ANVIL_EV_AUTH_FAIL },
        { ANVIL_EV_AUTH_FAIL, SMTPD_ANVIL_LIMIT_AUTH_FAIL, 0, ANVIL_EV_AUTH_FAIL },
    };
    if (c->unavailable)
        return SMTPD_ANVIL_LIMIT_NONE;
    for (size_t k = 0; k < sizeof rules / sizeof rules[0]; k++) {
        if (rules[k].ev != ev)
            continue;
        long v = rules[k].count ? c->count : c->rate[rules[k].rate];
        if (over(rules[k].limit, v))
            return rules[k].limit;
    }
    return SMTPD_ANVIL_LIMIT_NONE;
}

int smtpd_anvil_exempt(const char *addr)
{
    return smtpd_cidr_list_match("smtpd_client_event_limit_exceptions", addr);
}
