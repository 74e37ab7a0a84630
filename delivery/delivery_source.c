/* delivery_source.c - the local end of outgoing connections: the source
 * address a job's connections bind to and the HELO name they announce.
 *
 * qmgr picks the address from a pool (qmgr_pool.c) and sends source= and
 * helo= with the job; without them, smtp_bind_address (IPv4 targets) and
 * smtp_bind_address6 (IPv6 targets) apply as in Postfix. A pool address
 * the kernel cannot bind (not on any interface) is found by a probe before
 * anything else happens, so the job goes back to qmgr untouched
 * (status=source_unavailable) and is tried at once from another address;
 * nothing is recorded in the queue file for it. */
#include "delivery/delivery_sess.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/util/log.h"

/* Text address to sockaddr with port 0. -1 when it is no IP address. */
static int source_parse(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, text, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        *len = sizeof(*in4);
        return 0;
    }
    if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        *len = sizeof(*in6);
        return 0;
    }
    return -1;
}

/* A HELO name qmgr may send: a host name or address literal, one word. */
static int helo_valid(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 255)
        return 0;
    for (const char *p = h; *p; p++)
        if (*p <= ' ' || *p >= 127)
            return 0;
    return 1;
}

int dlv_source_check(const char *source, const char *helo)
{
    struct sockaddr_storage ss;
    socklen_t len;

    if (source && source_parse(source, &ss, &len) < 0)
        return -1;
    return helo && !helo_valid(helo) ? -1 : 0;
}

void dlv_source_set(struct dlv_job *job, const char *source, const char *helo)
{
    if (source && *source && source_parse(source, &job->src, &job->srclen) == 0)
        job->source = xstrdup(source);
    if (helo && *helo)
        job->helo = xstrdup(helo);
}

/* Bind fd to ss. 0, or -1 with errno. */
static int bind_to(int fd, const struct sockaddr_storage *ss, socklen_t len)
{
    return bind(fd, (const struct sockaddr *)ss, len);
}

int dlv_source_probe(struct dlv_job *job)
{
    int fd, err = 0;

    if (!job->source)
        return 0;
    fd = socket(job->src.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind_to(fd, &job->src, job->srclen) < 0)
        err = errno;
    if (fd >= 0)
        close(fd);
    if (err == 0)
        return 0;
    buf_reset(&job->lasterr);
    buf_printf(&job->lasterr, "cannot bind to source address %s: %s", job->source, strerror(err));
    log_warn("%s: %s", job->id, buf_str(&job->lasterr));
    return -1;
}

/* The configured smtp_bind_address[6] for family, parsed; 0 when set. */
static int conf_source(int family, struct sockaddr_storage *ss, socklen_t *len)
{
    const char *v = conf_str(family == AF_INET6 ? "smtp_bind_address6" : "smtp_bind_address");
    if (!v || !*v)
        return -1;
    if (source_parse(v, ss, len) < 0 || ss->ss_family != family) {
        log_warn("%s = %s: not an IPv%d address; not binding",
                 family == AF_INET6 ? "smtp_bind_address6" : "smtp_bind_address", v,
                 family == AF_INET6 ? 6 : 4);
        return -1;
    }
    return 0;
}

int dlv_source_socket(const struct dlv_job *job, int family, int *fd)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int s;

    *fd = -1;
    if (job->source) {
        if (job->src.ss_family != family)
            return EAFNOSUPPORT; /* this pool address cannot reach that host */
        ss = job->src;
        len = job->srclen;
    } else if (conf_source(family, &ss, &len) < 0) {
        return 0; /* no binding: the kernel chooses */
    }
    s = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0)
        return errno;
    if (bind_to(s, &ss, len) < 0) {
        int err = errno;
        close(s);
        return err;
    }
    *fd = s;
    return 0;
}

const char *dlv_source_helo(const struct dlv_job *job)
{
    const char *helo = job && job->helo ? job->helo : conf_str("smtp_helo_name");
    return *helo ? helo : "localhost";
}
