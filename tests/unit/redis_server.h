/* redis_server.h - a private redis-server for the unit tests that need the
 * real thing (test_redis, qmgr/test_shared): a free loopback port, a temp
 * directory, no persistence; plus a loop driver. Skips the test (cmocka)
 * when redis-server is not installed. Test-only; static functions. */
#ifndef POSTINO_TEST_REDIS_SERVER_H
#define POSTINO_TEST_REDIS_SERVER_H

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

struct test_redis {
    pid_t pid;
    int port;
    char dir[64];
};

static inline int test_redis_free_port(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static inline int test_redis_have(void)
{
    return access("/usr/bin/redis-server", X_OK) == 0;
}

/* Blocking PING until it answers (test code may block). */
static inline int test_redis_wait(int port)
{
    for (int i = 0; i < 200; i++) {
        struct timeval tv = { 1, 0 };
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            int ok = r && r->type == REDIS_REPLY_STATUS;
            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (ok)
                return 0;
        } else if (c)
            redisFree(c);
        usleep(25000);
    }
    return -1;
}

/* Starts redis-server on t->port (0: a free one). 0 or -1. */
static inline int test_redis_start(struct test_redis *t)
{
    char port[16], log[96];

    if (!t->dir[0]) {
        snprintf(t->dir, sizeof(t->dir), "/tmp/postino-redis-XXXXXX");
        if (!mkdtemp(t->dir))
            return -1;
    }
    if (!t->port)
        t->port = test_redis_free_port();
    snprintf(port, sizeof(port), "%d", t->port);
    snprintf(log, sizeof(log), "%s/redis.log", t->dir);
    t->pid = fork();
    if (t->pid == 0) {
        execl("/usr/bin/redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
              "--save", "", "--appendonly", "no", "--dir", t->dir, "--logfile", log, "--daemonize",
              "no", (char *)NULL);
        _exit(127);
    }
    return t->pid > 0 ? test_redis_wait(t->port) : -1;
}

static inline void test_redis_stop(struct test_redis *t)
{
    int st;
    if (t->pid > 0) {
        kill(t->pid, SIGCONT);
        kill(t->pid, SIGKILL);
        waitpid(t->pid, &st, 0);
        t->pid = 0;
    }
}

/* A blocking command for checks from the test itself. */
static inline redisReply *test_redis_cmd(const struct test_redis *t, const char *fmt, ...)
{
    struct timeval tv = { 2, 0 };
    redisContext *c = redisConnectWithTimeout("127.0.0.1", t->port, tv);
    redisReply *r = NULL;
    va_list ap;

    if (c && !c->err) {
        va_start(ap, fmt);
        r = redisvCommand(c, fmt, ap);
        va_end(ap);
    }
    if (c)
        redisFree(c);
    return r;
}

static inline double test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Runs base until *flag is set or secs have passed; returns *flag. */
static inline int test_loop_until(struct event_base *base, volatile int *flag, double secs)
{
    double end = test_now() + secs;
    struct timeval tick = { 0, 10000 };
    while (!*flag && test_now() < end) {
        event_base_loopexit(base, &tick);
        event_base_loop(base, 0);
    }
    return *flag;
}

#endif
