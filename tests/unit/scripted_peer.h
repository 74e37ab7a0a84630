/* scripted_peer.h - the daemon end of a UNIX socket, played by a unit test
 * (blocking descriptors), while the code under test runs on a libevent
 * loop: accept its connection, read what it wrote, answer what the test
 * scripts, and look for a line in the log file. Used by the tests of
 * smtpd's clients of other daemons (smtpd/test_anvil_client.c,
 * smtpd/test_notify.c) and, as the client end, by test_conn.c and
 * test_qserve.c. */
#ifndef POSTINO_TEST_SCRIPTED_PEER_H
#define POSTINO_TEST_SCRIPTED_PEER_H

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util/buf.h"
#include "common/util/ipc.h"
#include "common/util/log.h"

/* Run the loop for about ms milliseconds. */
static inline void peer_spin(struct event_base *base, int ms)
{
    struct timeval tv = { 0, ms * 1000 };
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

/* The daemon's listener at path (non-blocking), with the log of the code
 * under test in logpath; -1 on failure. */
static inline int peer_listen(const char *path, const char *logpath)
{
    if (log_open(logpath) < 0)
        return -1;
    int fd = ipc_listen_unix(path, 0600, 16);
    if (fd >= 0)
        ipc_nonblock(fd, 1);
    return fd;
}

/* The next connection on the (non-blocking) listener lfd, or -1 when
 * none came within a few seconds. */
static inline int peer_accept(struct event_base *base, int lfd)
{
    for (int k = 0; k < 500; k++) {
        int fd = accept(lfd, NULL, NULL);
        if (fd >= 0)
            return fd;
        peer_spin(base, 10);
    }
    return -1;
}

enum peer_read {
    PEER_READ_DONE,  /* got ends with `until` */
    PEER_READ_EOF,   /* the other end closed */
    PEER_READ_QUIET, /* nothing came for a few seconds */
};

/* Read from fd into got until got ends with `until`. */
static inline enum peer_read peer_read_until(struct event_base *base, int fd, buf_t *got,
                                             const char *until)
{
    char b[65536];
    size_t ul = strlen(until);
    int idle = 0;
    while (got->len < ul || strcmp(got->data + got->len - ul, until) != 0) {
        struct pollfd p = { fd, POLLIN, 0 };
        peer_spin(base, 1);
        if (poll(&p, 1, 10) <= 0) {
            if (++idle > 300)
                return PEER_READ_QUIET;
            continue;
        }
        ssize_t n = read(fd, b, sizeof b);
        if (n <= 0)
            return PEER_READ_EOF;
        buf_append(got, b, (size_t)n);
        idle = 0;
    }
    return PEER_READ_DONE;
}

/* Everything the code under test wrote on fd (blocking) until EOF, or
 * until a pause when not wait_eof. Waiting for EOF gives up after ten
 * seconds, so a wrong peer fails a test rather than hangs it. 1 on EOF,
 * -1 on a reset, else 0. */
static inline int peer_take(struct event_base *base, int fd, buf_t *out, int wait_eof)
{
    char b[4096];
    for (int waits = 0;;) {
        struct pollfd p = { fd, POLLIN, 0 };
        peer_spin(base, 5);
        if (poll(&p, 1, wait_eof ? 200 : 20) <= 0) {
            if (!wait_eof || ++waits == 50)
                return 0;
            continue;
        }
        ssize_t n = read(fd, b, sizeof(b));
        if (n == 0)
            return 1;
        if (n < 0)
            return errno == ECONNRESET ? -1 : 0;
        buf_append(out, b, (size_t)n);
    }
}

static inline int peer_put(int fd, const char *s)
{
    return write(fd, s, strlen(s)) == (ssize_t)strlen(s) ? 0 : -1;
}

/* Does the log file (the first 64 KiB) say `what`? */
static inline int peer_logged(const char *logpath, const char *what)
{
    static char b[65536];
    FILE *f = fopen(logpath, "r");
    size_t n = f ? fread(b, 1, sizeof b - 1, f) : 0;
    if (f)
        fclose(f);
    b[n] = '\0';
    return strstr(b, what) != NULL;
}

#endif
