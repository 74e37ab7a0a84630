/* dns.h - asynchronous DNS for the SMTP client: MX, A and AAAA via c-ares
 * driven by a libevent loop (nothing blocks the loop).
 *
 * Results are what the delivery agent needs: the hosts to try, in MX
 * preference order (random among equal preferences), each with its IPv4
 * and IPv6 addresses. The status tells apart permanent failures (the
 * domain does not exist, RFC 7505 null MX) from temporary ones (SERVFAIL,
 * timeout, refused) so the caller can bounce or defer. */
#ifndef POSTINO_DNS_H
#define POSTINO_DNS_H

#include <stddef.h>
#include <sys/socket.h>
#include "common/util/buf.h"

struct event_base;
struct dns_ctx;

enum dns_status {
    DNS_OK = 0,
    DNS_NOTFOUND, /* NXDOMAIN (an MX target without address: temporary) */
    DNS_TEMPFAIL, /* SERVFAIL, timeout, refused, ...: try again later */
    DNS_NULLMX,   /* RFC 7505: the domain accepts no mail */
};

struct dns_host {
    char *name;                    /* host name (or the literal) */
    int pref;                      /* MX preference, 0 for non-MX */
    struct sockaddr_storage *addr; /* port 0; the caller sets its port */
    socklen_t *addrlen;
    size_t naddr;
};

struct dns_result {
    enum dns_status status;
    /* Postfix-style explanation when status != DNS_OK, e.g. "Host or
     * domain name not found. Name service error for name=nx.test type=MX:
     * Host not found" */
    buf_t errtext;
    struct dns_host *hosts;
    size_t nhosts;
    unsigned ttl; /* MX lookups: the smallest TTL of the MX records (0: none) */
};

/* Called exactly once per request, always from the event loop (never
 * before dns_resolve_* returns). The callee owns res: dns_result_free. */
typedef void (*dns_cb_t)(struct dns_result *res, void *arg);

/* servers: "" (use /etc/resolv.conf) or "ip[:port][,ip[:port]...]".
 * Returns NULL with err when c-ares cannot be set up. */
struct dns_ctx *dns_new(struct event_base *base, const char *servers, buf_t *err);
/* Requests still pending are dropped without their callback. */
void dns_free(struct dns_ctx *ctx);
/* Requests in flight. */
int dns_pending(const struct dns_ctx *ctx);

/* MX lookup of domain; without MX records (NODATA) the domain's own A/AAAA
 * records form a single host. */
void dns_resolve_mx(struct dns_ctx *ctx, const char *domain, dns_cb_t cb, void *arg);
/* A/AAAA of one host (no MX); an IPv4/IPv6 literal needs no lookup. */
void dns_resolve_host(struct dns_ctx *ctx, const char *host, dns_cb_t cb, void *arg);
void dns_result_free(struct dns_result *res);

#endif
