/* cli_sendmail_smtp.c - sendmail's SMTP client on the local submission
 * socket (public/submit, an smtpd that knows the user from SO_PEERCRED).
 *
 * Blocking I/O with a generous timeout: sendmail is a command, one
 * message, one connection. Replies are read whole (every line of a
 * multi-line reply) and bounded; a reply we cannot parse ends the
 * session. -bs copies bytes both ways without looking at them: smtpd
 * applies the same rules to the user's own SMTP. */
#include "cli/cli_sendmail.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/util/ipc.h"

#define SM_TIMEOUT   300         /* seconds a server may be silent */
#define SM_REPLY_MAX (64 * 1024) /* longest reply we accept */
#define SM_OUT_CHUNK (64 * 1024) /* send when this much is buffered */

int sm_conn_open(struct sm_conn *c, const char *path)
{
    struct timeval tv = { SM_TIMEOUT, 0 };
    buf_init(&c->in, 1024);
    buf_init(&c->out, SM_OUT_CHUNK);
    c->broken = 0;
    c->fd = ipc_connect_unix(path);
    if (c->fd < 0) {
        sm_err("cannot connect to the mail system at %s: %s (is postino running, with the "
               "submit service in master.cf?)",
               path, strerror(errno));
        return SM_EX_UNAVAILABLE;
    }
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return 0;
}

void sm_conn_close(struct sm_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    buf_destroy(&c->in);
    buf_destroy(&c->out);
}

int sm_conn_flush(struct sm_conn *c)
{
    if (c->out.len == 0)
        return 0;
    int rc = ipc_write_all(c->fd, c->out.data, c->out.len);
    buf_reset(&c->out);
    if (rc < 0) {
        c->broken = 1;
        sm_err("lost the connection to the mail system: %s", errno ? strerror(errno) : "closed");
    }
    return rc;
}

int sm_conn_write(void *arg, const char *p, size_t n)
{
    struct sm_conn *c = arg;
    buf_append(&c->out, p, n);
    return c->out.len >= SM_OUT_CHUNK ? sm_conn_flush(c) : 0;
}

/* One line (without CRLF) from c->in into line; 1, 0 need more, -1 bad. */
static int take_line(struct sm_conn *c, buf_t *line)
{
    const char *nl = c->in.len ? memchr(c->in.data, '\n', c->in.len) : NULL;
    if (!nl)
        return c->in.len > SM_REPLY_MAX ? -1 : 0;
    size_t n = (size_t)(nl - c->in.data);
    buf_reset(line);
    buf_append(line, c->in.data, n && nl[-1] == '\r' ? n - 1 : n);
    buf_consume(&c->in, n + 1);
    return 1;
}

static int fill(struct sm_conn *c)
{
    char tmp[4096];
    ssize_t r;
    do
        r = read(c->fd, tmp, sizeof(tmp));
    while (r < 0 && errno == EINTR);
    if (r <= 0) {
        c->broken = 1;
        sm_err("lost the connection to the mail system: %s", r == 0 ? "closed" : strerror(errno));
        return -1;
    }
    buf_append(&c->in, tmp, (size_t)r);
    return 0;
}

/* A reply: the code, every line's text joined by "\n" into text. */
static int read_reply(struct sm_conn *c, buf_t *text)
{
    buf_t line = BUF_INIT;
    int code = -1, r;
    buf_reset(text);
    for (;;) {
        while ((r = take_line(c, &line)) == 0)
            if (fill(c) < 0)
                goto out;
        const char *s = buf_str(&line);
        if (r < 0 || line.len < 3 || s[0] < '2' || s[0] > '5' || text->len > SM_REPLY_MAX ||
            (line.len > 3 && s[3] != ' ' && s[3] != '-')) {
            sm_err("malformed reply from the mail system: %.80s", s);
            c->broken = 1;
            goto out;
        }
        if (text->len)
            buf_putc(text, '\n');
        buf_puts(text, s);
        if (line.len == 3 || s[3] == ' ') {
            code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
            break;
        }
    }
out:
    buf_destroy(&line);
    return code;
}

int sm_conn_cmd(struct sm_conn *c, buf_t *text, const char *fmt, ...)
{
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        buf_vprintf(&c->out, fmt, ap);
        va_end(ap);
        buf_puts(&c->out, "\r\n");
    }
    if (sm_conn_flush(c) < 0)
        return -1;
    return read_reply(c, text);
}

/* Copy what one descriptor has to another; 0 at EOF, -1 on error. */
static int copy_some(int from, int to)
{
    char tmp[16384];
    ssize_t r = read(from, tmp, sizeof(tmp));
    if (r < 0 && (errno == EINTR || errno == EAGAIN))
        return 1;
    if (r <= 0)
        return (int)r;
    return ipc_write_all(to, tmp, (size_t)r) < 0 ? -1 : 1;
}

int sm_conn_relay(struct sm_conn *c)
{
    struct pollfd p[2] = { { 0, POLLIN, 0 }, { c->fd, POLLIN, 0 } };
    int stdin_open = 1;
    for (;;) {
        p[0].fd = stdin_open ? 0 : -1;
        int n = poll(p, 2, SM_TIMEOUT * 1000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            sm_err("%s", n == 0 ? "timeout in the SMTP session" : strerror(errno));
            return SM_EX_IOERR;
        }
        if (p[1].revents) {
            int r = copy_some(c->fd, 1);
            if (r <= 0)
                return r == 0 ? SM_EX_OK : SM_EX_IOERR;
        }
        if (stdin_open && p[0].revents) {
            int r = copy_some(0, c->fd);
            if (r < 0)
                return SM_EX_IOERR;
            if (r == 0) { /* the client is done: the server closes after QUIT */
                stdin_open = 0;
                shutdown(c->fd, SHUT_WR);
            }
        }
    }
}
