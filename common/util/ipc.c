/* ipc.c - socket plumbing: UNIX and TCP listeners, UNIX connects, peer
 * credentials and address text. Listeners are non-blocking and
 * close-on-exec so event loops can accept from them and exec'd children
 * only get the descriptors master hands them on purpose. */
#include "common/util/ipc.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int ipc_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
    return fcntl(fd, F_SETFL, fl);
}

int ipc_cloexec(int fd, int on)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0)
        return -1;
    fl = on ? fl | FD_CLOEXEC : fl & ~FD_CLOEXEC;
    return fcntl(fd, F_SETFD, fl);
}

int ipc_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int unix_addr(const char *path, struct sockaddr_un *sun)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun->sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    str_lcpy(sun->sun_path, path, sizeof(sun->sun_path));
    return 0;
}

int ipc_listen_unix(const char *path, int mode, int backlog)
{
    struct sockaddr_un sun;
    if (unix_addr(path, &sun) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (unlink(path) < 0 && errno != ENOENT)
        goto fail;
    /* The mode comes from the umask at bind time, not a chmod by name
     * afterwards: the directory may be writable by the mail user, who must
     * not be able to swap in a symlink for root to chmod. */
    mode_t old = umask((mode_t)(~mode & 0777));
    int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    umask(old);
    if (rc < 0 || listen(fd, backlog) < 0)
        goto fail;
    return fd;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

int ipc_connect_unix(const char *path)
{
    struct sockaddr_un sun;
    if (unix_addr(path, &sun) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int r;
    do
        r = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

static int parse_port(const char *s, int *port)
{
    if (*s == '\0' || strlen(s) > 5)
        return -1;
    int v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *port = v;
    return 0;
}

int ipc_split_hostport(const char *s, buf_t *host, int *port, int defport)
{
    buf_reset(host);
    const char *portstr = NULL;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close == s + 1)
            return -1;
        buf_append(host, s + 1, (size_t)(close - s - 1));
        if (close[1] == ':')
            portstr = close + 2;
        else if (close[1] != '\0')
            return -1;
    } else {
        const char *colon = strrchr(s, ':');
        /* More than one colon without brackets: a bare IPv6 address. */
        if (colon && strchr(s, ':') == colon) {
            buf_append(host, s, (size_t)(colon - s));
            portstr = colon + 1;
        } else {
            buf_puts(host, s);
        }
        if (host->len == 0 && portstr == NULL)
            return -1;
    }
    if (portstr)
        return parse_port(portstr, port);
    *port = defport;
    return 0;
}

/* Listener address: "*:25", "25", "host:25", "[v6]:25". */
static int inet_target(const char *hostport, buf_t *host, int *port)
{
    int only_port = 1;
    for (const char *p = hostport; *p; p++)
        only_port &= (*p >= '0' && *p <= '9');
    if (only_port && *hostport) {
        buf_set(host, "*");
        return parse_port(hostport, port);
    }
    if (ipc_split_hostport(hostport, host, port, -1) < 0 || *port < 0)
        return -1;
    return 0;
}

static int bind_listen(const struct sockaddr *sa, socklen_t salen, int backlog)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (sa->sa_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, sa, salen) < 0 || listen(fd, backlog) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int ipc_listen_inet(const char *hostport, int backlog, buf_t *err)
{
    buf_t host = BUF_INIT;
    int port = 0;
    if (inet_target(hostport, &host, &port) < 0) {
        buf_set(err, "");
        buf_printf(err, "invalid listen address \"%s\" (use host:port, [v6]:port or port)",
                   hostport);
        buf_destroy(&host);
        return -1;
    }
    const char *h = buf_str(&host);
    if (strcmp(h, "*") == 0 || *h == '\0')
        h = "0.0.0.0";
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    char portbuf[16];
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    int gai = getaddrinfo(h, portbuf, &hints, &res);
    if (gai != 0) {
        buf_set(err, "");
        buf_printf(err, "listen address \"%s\": %s (use a numeric address)", hostport,
                   gai_strerror(gai));
        buf_destroy(&host);
        return -1;
    }
    int fd = bind_listen(res->ai_addr, res->ai_addrlen, backlog);
    if (fd < 0) {
        buf_set(err, "");
        buf_printf(err, "cannot listen on %s: %s", hostport, strerror(errno));
    }
    freeaddrinfo(res);
    buf_destroy(&host);
    return fd;
}

int ipc_peer_cred(int fd, uid_t *uid, gid_t *gid, pid_t *pid)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
        return -1;
    if (uid)
        *uid = cr.uid;
    if (gid)
        *gid = cr.gid;
    if (pid)
        *pid = cr.pid;
    return 0;
}

void ipc_addr_text(const struct sockaddr *sa, buf_t *host, int *port)
{
    char text[INET6_ADDRSTRLEN] = "unknown";
    int p = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
        p = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
        p = ntohs(in6->sin6_port);
        /* Show IPv4-mapped clients the way admins write them. */
        if (strncmp(text, "::ffff:", 7) == 0 && strchr(text + 7, '.'))
            memmove(text, text + 7, strlen(text + 7) + 1);
    } else if (sa->sa_family == AF_UNIX) {
        str_lcpy(text, "local", sizeof(text));
    }
    if (host)
        buf_set(host, text);
    if (port)
        *port = p;
}
