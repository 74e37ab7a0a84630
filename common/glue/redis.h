/* redis.h - an asynchronous Redis client on the libevent loop (hiredis).
 *
 * What qmgr needs to share shaping counters between nodes: one connection
 * that reconnects by itself with back-off, commands that always answer
 * (a reply, or "no answer" when the server is down or too slow), Lua
 * scripts by EVALSHA with an EVAL fallback, and a note when the server
 * comes and goes. Nothing here blocks the loop: connects are non-blocking,
 * every command and connect has a timeout. HOST should be an IP address
 * (a name is looked up with getaddrinfo at each connect). */
#ifndef POSTINO_REDIS_H
#define POSTINO_REDIS_H

#include <stddef.h>

#include "common/util/buf.h"

struct event_base;
struct redisReply; /* <hiredis/hiredis.h> for its fields */
struct redis;

enum redis_answer {
    REDIS_ANSWER_OK,    /* a reply (not an error reply) */
    REDIS_ANSWER_ERROR, /* the server answered with an error */
    REDIS_ANSWER_NONE,  /* no answer: not connected, timed out, connection lost */
};

/* Called exactly once per command, always from the loop (never inside the
 * call that sent it). reply is NULL with REDIS_ANSWER_NONE. */
typedef void (*redis_cb_t)(void *arg, enum redis_answer ans, const struct redisReply *reply);
/* Called when the connection comes up (up = 1, scripts loading), when it
 * is lost or the first attempt fails (up = 0); not on every failed retry. */
typedef void (*redis_state_cb_t)(void *arg, int up);

struct redis_opts {
    int connect_timeout_ms; /* default 1000 */
    int command_timeout_ms; /* default 1000; the connection is dropped then */
    int retry_min_ms;       /* first reconnect delay, doubled each failure; 100 */
    int retry_max_ms;       /* 2000 */
};

/* "redis:HOST:PORT" (or "redis:[IPV6]:PORT"). 0, or -1 with err. */
int redis_parse_spec(const char *spec, char **host, int *port, buf_t *err);

/* Connects from the loop, and again whenever the connection is lost.
 * opts may be NULL (the defaults). */
struct redis *redis_new(struct event_base *base, const char *host, int port,
                        const struct redis_opts *opts);
/* Commands in flight answer REDIS_ANSWER_NONE first. Not from a callback. */
void redis_free(struct redis *r);
void redis_on_state(struct redis *r, redis_state_cb_t fn, void *arg);
int redis_is_up(const struct redis *r);

/* One command, arguments binary-safe (lens NULL: C strings). */
void redis_command(struct redis *r, int argc, const char *const *argv, const size_t *lens,
                   redis_cb_t cb, void *arg);

/* A Lua script, loaded (SCRIPT LOAD) at each connect; returns its handle. */
int redis_script_add(struct redis *r, const char *source);
/* EVALSHA of the script (EVAL when the server lost it: NOSCRIPT) with
 * nkeys keys then the other arguments, all C strings. */
void redis_eval(struct redis *r, int script, int nkeys, int argc, const char *const *argv,
                redis_cb_t cb, void *arg);

#endif
