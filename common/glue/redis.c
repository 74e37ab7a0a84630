/* redis.c - hiredis's async context on our libevent loop, with what
 * hiredis 0.14 leaves out: connect and command timeouts, reconnects with
 * back-off, a callback for every command even when the server is gone, and
 * scripts by SHA with a fallback. See redis.h.
 *
 * Every command in flight is a struct redis_req in r->sent (hiredis answers
 * in order, so the head is the oldest); one timer watches the head. A
 * command that cannot be sent goes to r->failed and is answered
 * REDIS_ANSWER_NONE from a zero-delay event, never from inside the call. */
#include "common/glue/redis.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "common/util/alloc.h"
#include "common/util/log.h"

/* HANDSHAKE: connected, our PING not answered yet. A server that accepts
 * but answers nothing (stopped, overloaded) is not "up" again after each
 * reconnect. */
enum redis_state { RS_DOWN, RS_CONNECTING, RS_HANDSHAKE, RS_UP };

struct redis_script {
    char *source;
    char sha[41]; /* "" until SCRIPT LOAD answered */
};

struct redis_req {
    TAILQ_ENTRY(redis_req) link;
    struct redis *r;
    redis_cb_t cb;
    void *arg;
    double sent;
    int script;   /* >= 0: an EVALSHA to redo as EVAL on NOSCRIPT */
    int internal; /* ours (PING, SCRIPT LOAD): may go during the handshake */
    int nkeys, argc;
    char **argv; /* the script's keys and arguments (script >= 0) */
};
TAILQ_HEAD(redis_reqs, redis_req);

struct redis {
    struct event_base *base;
    char *host;
    int port;
    struct redis_opts opts;
    redisAsyncContext *ac;
    enum redis_state state;
    int retry_ms;
    int freeing;
    int reported;           /* -1 nothing yet, else the up/down last told state_cb */
    int drop_now;           /* the handshake failed: on_timer drops the connection */
    struct event *ev_timer; /* connect timeout, command timeout */
    struct event *ev_retry; /* next connect attempt */
    struct event *ev_fail;  /* answers REDIS_ANSWER_NONE */
    struct redis_reqs sent, failed;
    struct redis_script *scripts;
    int nscripts;
    redis_state_cb_t state_cb;
    void *state_arg;
};

static void redis_connect(struct redis *r);

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void arm_ms(struct event *ev, double ms)
{
    struct timeval tv;
    if (ms < 0)
        ms = 0;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms - tv.tv_sec * 1000.0) * 1000);
    event_add(ev, &tv);
}

int redis_parse_spec(const char *spec, char **host, int *port, buf_t *err)
{
    const char *h, *colon, *end;
    char *stop;
    long p;

    if (strncmp(spec, "redis:", 6) != 0) {
        buf_setf(err, "\"%s\": expected redis:HOST:PORT", spec);
        return -1;
    }
    h = spec + 6;
    if (*h == '[') {
        end = strchr(h, ']');
        if (!end || end[1] != ':') {
            buf_setf(err, "\"%s\": expected redis:[IPV6]:PORT", spec);
            return -1;
        }
        colon = end + 1;
        h++;
    } else {
        colon = strrchr(h, ':');
        end = colon;
    }
    if (!colon || end == h) {
        buf_setf(err, "\"%s\": expected redis:HOST:PORT", spec);
        return -1;
    }
    errno = 0;
    p = strtol(colon + 1, &stop, 10);
    if (errno || *stop || stop == colon + 1 || p < 1 || p > 65535) {
        buf_setf(err, "\"%s\": bad port", spec);
        return -1;
    }
    *host = xstrndup(h, (size_t)(end - h));
    *port = (int)p;
    return 0;
}

/* ---- requests ---- */

static void req_free(struct redis_req *q)
{
    for (int i = 0; i < q->argc; i++)
        free(q->argv[i]);
    free(q->argv);
    free(q);
}

static void req_fail(struct redis *r, struct redis_req *q)
{
    if (r->freeing) { /* redis_free: a command sent from an answer is dropped */
        req_free(q);
        return;
    }
    TAILQ_INSERT_TAIL(&r->failed, q, link);
    event_active(r->ev_fail, EV_TIMEOUT, 0);
}

static void on_fail_event(evutil_socket_t fd, short what, void *arg)
{
    struct redis *r = arg;
    struct redis_reqs now = TAILQ_HEAD_INITIALIZER(now);
    struct redis_req *q;

    TAILQ_CONCAT(&now, &r->failed, link);
    while ((q = TAILQ_FIRST(&now))) {
        TAILQ_REMOVE(&now, q, link);
        q->cb(q->arg, REDIS_ANSWER_NONE, NULL);
        req_free(q);
    }
}

static void watch_head(struct redis *r)
{
    struct redis_req *q = TAILQ_FIRST(&r->sent);
    if (q && !event_pending(r->ev_timer, EV_TIMEOUT, NULL))
        arm_ms(r->ev_timer, (q->sent + r->opts.command_timeout_ms / 1000.0 - mono_now()) * 1000);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Hands argv to hiredis, or to the failed list. */
static void req_send(struct redis *r, struct redis_req *q, int argc, const char *const *argv,
                     const size_t *lens)
{
    int may = r->state == RS_UP || (q->internal && r->state == RS_HANDSHAKE);

    if (!may ||
        redisAsyncCommandArgv(r->ac, on_reply, q, argc, (const char **)argv, lens) != REDIS_OK) {
        req_fail(r, q);
        return;
    }
    q->sent = mono_now();
    TAILQ_INSERT_TAIL(&r->sent, q, link);
    watch_head(r);
}

static struct redis_req *req_new(struct redis *r, redis_cb_t cb, void *arg)
{
    struct redis_req *q = xcalloc(1, sizeof(*q));
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->script = -1;
    return q;
}

void redis_command(struct redis *r, int argc, const char *const *argv, const size_t *lens,
                   redis_cb_t cb, void *arg)
{
    req_send(r, req_new(r, cb, arg), argc, argv, lens);
}

/* EVAL or EVALSHA of q's script with q's arguments. */
static void req_send_eval(struct redis *r, struct redis_req *q, int by_sha)
{
    struct redis_script *s = &r->scripts[q->script];
    const char **v = xcalloc((size_t)q->argc + 3, sizeof(*v));
    char nk[16];

    snprintf(nk, sizeof(nk), "%d", q->nkeys);
    v[0] = by_sha ? "EVALSHA" : "EVAL";
    v[1] = by_sha ? s->sha : s->source;
    v[2] = nk;
    for (int i = 0; i < q->argc; i++)
        v[3 + i] = q->argv[i];
    if (!by_sha)
        q->script = -1; /* no second fallback */
    req_send(r, q, q->argc + 3, v, NULL);
    free(v);
}

void redis_eval(struct redis *r, int script, int nkeys, int argc, const char *const *argv,
                redis_cb_t cb, void *arg)
{
    struct redis_req *q = req_new(r, cb, arg);

    if (script < 0 || script >= r->nscripts)
        log_panic("redis_eval: no script %d", script);
    q->script = script;
    q->nkeys = nkeys;
    q->argc = argc;
    q->argv = xcalloc((size_t)argc + 1, sizeof(*q->argv));
    for (int i = 0; i < argc; i++)
        q->argv[i] = xstrdup(argv[i]);
    req_send_eval(r, q, r->scripts[script].sha[0] != 0);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_req *q = privdata;
    struct redis *r = q->r;
    redisReply *rep = reply;
    enum redis_answer ans = REDIS_ANSWER_OK;

    TAILQ_REMOVE(&r->sent, q, link);
    if (!rep)
        ans = REDIS_ANSWER_NONE;
    else if (rep->type == REDIS_REPLY_ERROR) {
        if (q->script >= 0 && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
            req_send_eval(r, q, 0); /* EVAL caches it for the next EVALSHA */
            return;
        }
        ans = REDIS_ANSWER_ERROR;
    }
    q->cb(q->arg, ans, rep);
    req_free(q);
}

/* ---- scripts ---- */

static void on_script_loaded(void *arg, enum redis_answer ans, const struct redisReply *rep)
{
    struct redis_script *s = arg;
    if (ans == REDIS_ANSWER_OK && rep->type == REDIS_REPLY_STRING && rep->len == 40)
        memcpy(s->sha, rep->str, 41);
    else if (ans == REDIS_ANSWER_ERROR)
        log_warn("redis: SCRIPT LOAD failed: %s", rep->str);
}

static void load_script(struct redis *r, int i)
{
    const char *argv[] = { "SCRIPT", "LOAD", r->scripts[i].source };
    struct redis_req *q = req_new(r, on_script_loaded, &r->scripts[i]);

    q->internal = 1;
    req_send(r, q, 3, argv, NULL);
}

int redis_script_add(struct redis *r, const char *source)
{
    r->scripts = xrealloc(r->scripts, (size_t)(r->nscripts + 1) * sizeof(*r->scripts));
    r->scripts[r->nscripts].source = xstrdup(source);
    r->scripts[r->nscripts].sha[0] = 0;
    if (r->state == RS_UP)
        load_script(r, r->nscripts);
    return r->nscripts++;
}

/* ---- the connection ---- */

/* Tells state_cb of a change: up, lost, or never reached at the start. */
static void report(struct redis *r, int up)
{
    if (r->reported == up)
        return;
    r->reported = up;
    if (r->state_cb)
        r->state_cb(r->state_arg, up);
}

static void set_state(struct redis *r, enum redis_state st)
{
    r->state = st;
    if (st == RS_DOWN || st == RS_UP)
        report(r, st == RS_UP);
}

static void schedule_retry(struct redis *r)
{
    if (r->freeing)
        return;
    arm_ms(r->ev_retry, r->retry_ms);
    r->retry_ms *= 2;
    if (r->retry_ms > r->opts.retry_max_ms)
        r->retry_ms = r->opts.retry_max_ms;
}

/* Gives up the connection we hold (timeouts, redis_free): what is in flight
 * answers REDIS_ANSWER_NONE from hiredis's free. */
static void drop(struct redis *r, const char *why)
{
    redisAsyncContext *ac = r->ac;

    event_del(r->ev_timer);
    r->ac = NULL;
    if (ac) {
        if (r->state == RS_UP && why)
            log_warn("redis: %s:%d: %s", r->host, r->port, why);
        ac->data = NULL; /* our disconnect callback: nothing to do */
        r->state = RS_DOWN;
        redisAsyncFree(ac);
    }
    set_state(r, RS_DOWN);
    schedule_retry(r);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct redis *r = arg;
    struct redis_req *q = TAILQ_FIRST(&r->sent);
    double late;

    if (r->drop_now) {
        r->drop_now = 0;
        drop(r, NULL);
        return;
    }
    if (r->state == RS_CONNECTING) {
        log_debug("redis: %s:%d: connect timed out", r->host, r->port);
        drop(r, NULL);
        return;
    }
    if (!q)
        return;
    late = mono_now() - q->sent - r->opts.command_timeout_ms / 1000.0;
    if (late >= 0)
        drop(r, "no reply in time; reconnecting");
    else
        arm_ms(r->ev_timer, -late * 1000);
}

/* The server answers: up (the scripts, sent before the PING, are loaded). */
static void on_pong(void *arg, enum redis_answer ans, const struct redisReply *rep)
{
    struct redis *r = arg;

    if (r->state != RS_HANDSHAKE || ans == REDIS_ANSWER_NONE)
        return;                      /* lost meanwhile: on_disconnect or drop saw to it */
    if (ans == REDIS_ANSWER_ERROR) { /* NOAUTH, LOADING, ...: try later */
        log_warn("redis: %s:%d: PING: %s", r->host, r->port, rep->str);
        r->drop_now = 1; /* not from inside hiredis's callback */
        event_active(r->ev_timer, EV_TIMEOUT, 0);
        return;
    }
    r->retry_ms = r->opts.retry_min_ms;
    log_info("redis: connected to %s:%d", r->host, r->port);
    set_state(r, RS_UP);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis *r = ac->data;
    const char *ping[] = { "PING" };
    struct redis_req *q;

    if (!r)
        return;
    event_del(r->ev_timer);
    if (status != REDIS_OK) { /* hiredis frees ac after this */
        log_debug("redis: %s:%d: connect: %s", r->host, r->port, ac->errstr);
        r->ac = NULL;
        set_state(r, RS_DOWN);
        schedule_retry(r);
        return;
    }
    r->state = RS_HANDSHAKE;
    for (int i = 0; i < r->nscripts; i++)
        load_script(r, i);
    q = req_new(r, on_pong, r);
    q->internal = 1;
    req_send(r, q, 1, ping, NULL);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis *r = ac->data;

    if (!r)
        return;
    event_del(r->ev_timer);
    r->ac = NULL;
    log_warn("redis: %s:%d: connection lost: %s", r->host, r->port,
             status == REDIS_OK ? "closed" : ac->errstr);
    set_state(r, RS_DOWN);
    schedule_retry(r);
}

static void redis_connect(struct redis *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);

    if (!ac || ac->err) {
        log_debug("redis: %s:%d: connect: %s", r->host, r->port, ac ? ac->errstr : "no memory");
        if (ac)
            redisAsyncFree(ac);
        set_state(r, RS_DOWN);
        schedule_retry(r);
        return;
    }
    ac->data = r;
    if (redisLibeventAttach(ac, r->base) != REDIS_OK)
        log_panic("redis: cannot attach to the event loop");
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->state = RS_CONNECTING;
    arm_ms(r->ev_timer, r->opts.connect_timeout_ms);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    redis_connect(arg);
}

struct redis *redis_new(struct event_base *base, const char *host, int port,
                        const struct redis_opts *opts)
{
    struct redis *r = xcalloc(1, sizeof(*r));
    static const struct redis_opts defaults = { 1000, 1000, 100, 2000 };

    r->base = base;
    r->host = xstrdup(host);
    r->port = port;
    r->opts = opts ? *opts : defaults;
    if (r->opts.connect_timeout_ms <= 0)
        r->opts.connect_timeout_ms = defaults.connect_timeout_ms;
    if (r->opts.command_timeout_ms <= 0)
        r->opts.command_timeout_ms = defaults.command_timeout_ms;
    if (r->opts.retry_min_ms <= 0)
        r->opts.retry_min_ms = defaults.retry_min_ms;
    if (r->opts.retry_max_ms < r->opts.retry_min_ms)
        r->opts.retry_max_ms = r->opts.retry_min_ms;
    r->retry_ms = r->opts.retry_min_ms;
    r->reported = -1;
    TAILQ_INIT(&r->sent);
    TAILQ_INIT(&r->failed);
    r->ev_timer = evtimer_new(base, on_timer, r);
    r->ev_retry = evtimer_new(base, on_retry, r);
    r->ev_fail = event_new(base, -1, 0, on_fail_event, r);
    arm_ms(r->ev_retry, 0); /* from the loop, once redis_on_state is set */
    return r;
}

void redis_free(struct redis *r)
{
    if (!r)
        return;
    r->freeing = 1;
    r->state_cb = NULL; /* nobody to tell */
    drop(r, NULL);
    on_fail_event(-1, 0, r);
    event_free(r->ev_timer);
    event_free(r->ev_retry);
    event_free(r->ev_fail);
    for (int i = 0; i < r->nscripts; i++)
        free(r->scripts[i].source);
    free(r->scripts);
    free(r->host);
    free(r);
}

void redis_on_state(struct redis *r, redis_state_cb_t fn, void *arg)
{
    r->state_cb = fn;
    r->state_arg = arg;
}

int redis_is_up(const struct redis *r)
{
    return r->state == RS_UP;
}
