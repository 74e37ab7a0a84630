/* dns.c - c-ares on a libevent loop: MX with A/AAAA fallback, host lookups.
 *
 * c-ares tells us which sockets it wants watched (ARES_OPT_SOCK_STATE_CB);
 * we mirror that with libevent events and drive retransmissions with one
 * timer set from ares_timeout(). Results are always delivered from a
 * fresh loop iteration so callers never see re-entrant callbacks. */
#include "common/glue/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <event2/event.h>
#include <idn2.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/util/log.h"

#define DNS_TIMEOUT_MS 3000
#define DNS_TRIES      2

struct dns_sock {
    LIST_ENTRY(dns_sock) link;
    int fd;
    struct event *ev;
};

struct dns_ctx {
    struct event_base *base;
    ares_channel ch;
    LIST_HEAD(, dns_sock) socks; /* the sockets c-ares wants watched */
    struct event *timer;
    int queries;  /* c-ares queries in flight */
    int requests; /* dns_resolve_* requests not yet delivered */
    int destroying;
    LIST_HEAD(, dns_req) delivering; /* results waiting for their callback */
};

struct dns_req {
    struct dns_ctx *ctx;
    dns_cb_t cb;
    void *arg;
    char *name;
    struct dns_result *res;
    size_t waiting;         /* address lookups outstanding */
    int any_temp;           /* some address lookup failed temporarily */
    int from_mx;            /* the hosts are MX targets (not the name itself) */
    char *failed_host;      /* first host whose addresses failed (a temporary
                            * failure before a permanent one) */
    const char *failed_why; /* and why, in the resolver's words */
    struct event *deliver;  /* the callback's turn on the loop */
    LIST_ENTRY(dns_req) dlink;
};

struct dns_hreq { /* one address lookup for res->hosts[idx] */
    struct dns_req *req;
    size_t idx;
};

static void dns_rearm(struct dns_ctx *ctx)
{
    struct timeval maxtv = { 1, 0 }, tv, *tvp;
    if (ctx->queries <= 0) {
        evtimer_del(ctx->timer);
        return;
    }
    tvp = ares_timeout(ctx->ch, &maxtv, &tv);
    evtimer_add(ctx->timer, tvp);
}

static void dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dns_ctx *ctx = arg;
    ares_process_fd(ctx->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    dns_rearm(ctx);
}

static void dns_io_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dns_ctx *ctx = arg;
    ares_process_fd(ctx->ch, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    dns_rearm(ctx);
}

/* c-ares: start/stop watching a socket. */
static void dns_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns_ctx *ctx = data;
    struct dns_sock *s;
    short what = (short)((readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));

    LIST_FOREACH(s, &ctx->socks, link)
    if (s->fd == fd)
        break;
    if (s) {
        event_free(s->ev);
        s->ev = NULL;
        if (!what) {
            LIST_REMOVE(s, link);
            free(s);
            return;
        }
    } else {
        if (!what)
            return;
        s = xcalloc(1, sizeof(*s));
        s->fd = fd;
        LIST_INSERT_HEAD(&ctx->socks, s, link);
    }
    s->ev = event_new(ctx->base, fd, what | EV_PERSIST, dns_io_cb, ctx);
    event_add(s->ev, NULL);
}

static void req_free(struct dns_req *req);

struct dns_ctx *dns_new(struct event_base *base, const char *servers, buf_t *err)
{
    static int lib_done;
    struct ares_options o;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES, rc;
    struct dns_ctx *ctx = xcalloc(1, sizeof(*ctx));
    char lookups[] = "b";

    LIST_INIT(&ctx->socks);
    LIST_INIT(&ctx->delivering);
    if (!lib_done && (rc = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS) {
        buf_printf(err, "c-ares init: %s", ares_strerror(rc));
        free(ctx);
        return NULL;
    }
    lib_done = 1;
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = dns_sock_state;
    o.sock_state_cb_data = ctx;
    o.timeout = DNS_TIMEOUT_MS;
    o.tries = DNS_TRIES;
    if (servers && *servers) {
        /* Explicit servers (tests, split horizon): DNS only, no hosts file. */
        o.lookups = lookups;
        mask |= ARES_OPT_LOOKUPS;
    }
    ctx->base = base;
    if ((rc = ares_init_options(&ctx->ch, &o, mask)) != ARES_SUCCESS) {
        buf_printf(err, "c-ares init: %s", ares_strerror(rc));
        free(ctx);
        return NULL;
    }
    if (servers && *servers &&
        (rc = ares_set_servers_ports_csv(ctx->ch, servers)) != ARES_SUCCESS) {
        buf_printf(err, "dns_servers = %s: %s (use ip or ip:port, comma separated)", servers,
                   ares_strerror(rc));
        ares_destroy(ctx->ch);
        free(ctx);
        return NULL;
    }
    ctx->timer = evtimer_new(base, dns_timer_cb, ctx);
    srandom((unsigned)(time(NULL) ^ getpid()));
    return ctx;
}

void dns_free(struct dns_ctx *ctx)
{
    struct dns_sock *s;
    if (!ctx)
        return;
    struct dns_req *req;
    ctx->destroying = 1;
    ares_destroy(ctx->ch);
    while ((req = LIST_FIRST(&ctx->delivering)) != NULL) { /* never called back */
        LIST_REMOVE(req, dlink);
        event_free(req->deliver);
        ctx->requests--;
        req_free(req);
    }
    while ((s = LIST_FIRST(&ctx->socks)) != NULL) {
        LIST_REMOVE(s, link);
        if (s->ev)
            event_free(s->ev);
        free(s);
    }
    event_free(ctx->timer);
    free(ctx);
}

int dns_pending(const struct dns_ctx *ctx)
{
    return ctx->requests;
}

void dns_result_free(struct dns_result *res)
{
    size_t i;
    if (!res)
        return;
    for (i = 0; i < res->nhosts; i++) {
        free(res->hosts[i].name);
        free(res->hosts[i].addr);
        free(res->hosts[i].addrlen);
    }
    free(res->hosts);
    buf_destroy(&res->errtext);
    free(res);
}

static struct dns_req *req_new(struct dns_ctx *ctx, const char *name, dns_cb_t cb, void *arg)
{
    struct dns_req *req = xcalloc(1, sizeof(*req));
    req->ctx = ctx;
    req->cb = cb;
    req->arg = arg;
    req->name = xstrdup(name);
    req->res = xcalloc(1, sizeof(*req->res));
    buf_init(&req->res->errtext, 128);
    ctx->requests++;
    return req;
}

static void req_free(struct dns_req *req)
{
    free(req->name);
    free(req->failed_host);
    dns_result_free(req->res);
    free(req);
}

static void req_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dns_req *req = arg;
    struct dns_result *res = req->res;
    LIST_REMOVE(req, dlink);
    event_free(req->deliver);
    req->deliver = NULL;
    req->res = NULL;
    req->ctx->requests--;
    req->cb(res, req->arg);
    req_free(req);
}

/* Hand the result to the caller from a fresh loop iteration. */
static void req_finish(struct dns_req *req)
{
    struct timeval zero = { 0, 0 };
    if (req->ctx->destroying) {
        req->ctx->requests--;
        req_free(req);
        return;
    }
    /* An event of our own, not event_base_once: dns_free must be able to
     * cancel a result whose callback has not run yet (qmgr closes its
     * resolver while its loop still turns). */
    req->deliver = evtimer_new(req->ctx->base, req_deliver_cb, req);
    if (req->deliver == NULL || evtimer_add(req->deliver, &zero) < 0)
        log_panic("dns: cannot schedule a result callback");
    LIST_INSERT_HEAD(&req->ctx->delivering, req, dlink);
}

#define WHY_NOTFOUND "Host not found"
#define WHY_TEMP     "Host not found, try again"
#define WHY_NODATA   "Host found but no data record of requested type"
#define WHY_INVAL    "Malformed or unexpected name server reply"

static void req_fail_why(struct dns_req *req, enum dns_status status, const char *name,
                         const char *type, const char *why)
{
    req->res->status = status;
    buf_reset(&req->res->errtext);
    buf_printf(&req->res->errtext,
               "Host or domain name not found. Name service error for name=%s type=%s: %s", name,
               type, why);
    req_finish(req);
}

static void req_fail(struct dns_req *req, enum dns_status status, const char *name,
                     const char *type)
{
    req_fail_why(req, status, name, type, status == DNS_TEMPFAIL ? WHY_TEMP : WHY_NOTFOUND);
}

static enum dns_status ares_status_kind(int status)
{
    return (status == ARES_ENOTFOUND || status == ARES_ENODATA) ? DNS_NOTFOUND : DNS_TEMPFAIL;
}

/* All address lookups are done: keep hosts with addresses. */
static void req_addrs_done(struct dns_req *req)
{
    struct dns_result *res = req->res;
    size_t i, n = 0;
    for (i = 0; i < res->nhosts; i++) {
        if (res->hosts[i].naddr == 0) {
            free(res->hosts[i].name);
            free(res->hosts[i].addr);
            free(res->hosts[i].addrlen);
            continue;
        }
        res->hosts[n++] = res->hosts[i];
    }
    res->nhosts = n;
    if (n == 0) {
        enum dns_status st = req->any_temp ? DNS_TEMPFAIL : DNS_NOTFOUND;
        req_fail_why(req, st, req->failed_host ? req->failed_host : req->name, "A",
                     req->failed_why      ? req->failed_why
                     : st == DNS_TEMPFAIL ? WHY_TEMP
                                          : WHY_NOTFOUND);
        return;
    }
    res->status = DNS_OK;
    req_finish(req);
}

/* An MX target whose name exists but has no address (NODATA) is not a
 * domain that does not exist: it is also what a CNAME loop looks like
 * through c-ares. Only NXDOMAIN is permanent; this is retried. */
static void addr_failed(struct dns_req *req, const char *name, int status)
{
    int nodata = status == ARES_ENODATA && req->from_mx;
    int temp = nodata || ares_status_kind(status) == DNS_TEMPFAIL;
    if (req->failed_host && (!temp || req->any_temp))
        return; /* keep the first, a temporary failure before a permanent one */
    if (temp)
        req->any_temp = 1;
    free(req->failed_host);
    req->failed_host = xstrdup(name);
    req->failed_why = nodata ? WHY_NODATA : temp ? WHY_TEMP : WHY_NOTFOUND;
}

static void addr_cb(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    struct dns_hreq *h = arg;
    struct dns_req *req = h->req;
    struct dns_host *host = &req->res->hosts[h->idx];
    struct ares_addrinfo_node *n;
    size_t cap = 0;

    req->ctx->queries--;
    free(h);
    if (status == ARES_SUCCESS && ai) {
        for (n = ai->nodes; n; n = n->ai_next) {
            if ((n->ai_family != AF_INET && n->ai_family != AF_INET6) ||
                n->ai_addrlen > sizeof(struct sockaddr_storage))
                continue;
            host->addr = xgrow(host->addr, &cap, host->naddr + 1, sizeof(*host->addr));
            host->addrlen = xrealloc(host->addrlen, cap * sizeof(*host->addrlen));
            memset(&host->addr[host->naddr], 0, sizeof(*host->addr));
            memcpy(&host->addr[host->naddr], n->ai_addr, n->ai_addrlen);
            host->addrlen[host->naddr++] = n->ai_addrlen;
        }
    } else {
        addr_failed(req, host->name, status);
    }
    if (ai)
        ares_freeaddrinfo(ai);
    if (--req->waiting == 0)
        req_addrs_done(req);
}

/* Look up A and AAAA for every host in req->res. */
static void req_lookup_addrs(struct dns_req *req)
{
    struct ares_addrinfo_hints hints;
    size_t i, n = req->res->nhosts;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    req->waiting = n + 1; /* +1: callbacks may run inside ares_getaddrinfo */
    for (i = 0; i < n; i++) {
        struct dns_hreq *h = xmalloc(sizeof(*h));
        h->req = req;
        h->idx = i;
        req->ctx->queries++;
        ares_getaddrinfo(req->ctx->ch, req->res->hosts[i].name, NULL, &hints, addr_cb, h);
    }
    if (--req->waiting == 0)
        req_addrs_done(req);
    else
        dns_rearm(req->ctx);
}

static void req_single_host(struct dns_req *req)
{
    req->res->hosts = xcalloc(1, sizeof(*req->res->hosts));
    req->res->hosts[0].name = xstrdup(req->name);
    req->res->nhosts = 1;
    req_lookup_addrs(req);
}

static int mx_cmp(const void *a, const void *b)
{
    const struct dns_host *x = a, *y = b;
    return x->pref - y->pref;
}

/* Sort by preference, then shuffle each run of equal preference. */
static void mx_order(struct dns_host *h, size_t n)
{
    size_t i, j, k;
    if (n == 0)
        return; /* h may be NULL: every MX was skipped */
    qsort(h, n, sizeof(*h), mx_cmp);
    for (i = 0; i < n; i = j) {
        for (j = i + 1; j < n && h[j].pref == h[i].pref; j++)
            ;
        for (k = j - 1; k > i; k--) {
            size_t r = i + (size_t)random() % (k - i + 1);
            struct dns_host t = h[k];
            h[k] = h[r];
            h[r] = t;
        }
    }
}

/* An MX naming an address ("192.0.2.1", "[192.0.2.1]") breaks RFC 1035
 * 3.3.9 (a domain name); c-ares would "resolve" it to that address, which
 * Postfix never uses: skipped, with Postfix's warning. */
static int mx_numeric(const char *domain, const char *host)
{
    unsigned char a[sizeof(struct in6_addr)];
    if (host[0] != '[' && inet_pton(AF_INET, host, a) != 1 && inet_pton(AF_INET6, host, a) != 1)
        return 0;
    log_warn("numeric domain name in resource data of MX record for %s: %s", domain, host);
    return 1;
}

/* What a set of MX records gave. */
enum mx_kind {
    MX_HOSTS,   /* hosts in req->res (none: no usable record at all) */
    MX_NULL,    /* a null MX (RFC 7505) */
    MX_NOHOSTS, /* MX records, none of them naming a host */
};

/* Parsed MX records -> hosts. */
static enum mx_kind mx_hosts(struct dns_req *req, struct ares_mx_reply *mx)
{
    struct ares_mx_reply *m;
    size_t n = 0, cap = 0, skipped = 0;
    struct dns_result *res = req->res;

    if (mx && !mx->next && (mx->host[0] == '\0' || strcmp(mx->host, ".") == 0))
        return MX_NULL;
    for (m = mx; m; m = m->next) {
        if (m->host[0] == '\0' || strcmp(m->host, ".") == 0)
            continue;
        if (mx_numeric(req->name, m->host)) {
            skipped++;
            continue;
        }
        res->hosts = xgrow(res->hosts, &cap, n + 1, sizeof(*res->hosts));
        memset(&res->hosts[n], 0, sizeof(res->hosts[n]));
        res->hosts[n].name = xstrdup(m->host);
        res->hosts[n].pref = m->priority;
        n++;
    }
    res->nhosts = n;
    mx_order(res->hosts, n);
    return n == 0 && skipped > 0 ? MX_NOHOSTS : MX_HOSTS;
}

/* Skip a (possibly compressed) name at *off; -1 when it runs off the end. */
static int skip_name(const unsigned char *abuf, int alen, int *off)
{
    char *name = NULL;
    long enclen = 0;

    if (ares_expand_name(abuf + *off, abuf, alen, &name, &enclen) != ARES_SUCCESS)
        return -1;
    ares_free_string(name);
    *off += (int)enclen;
    return *off <= alen ? 0 : -1;
}

/* The smallest TTL of the MX records in the answer section (how long the
 * MX set may be cached), or 0 when there is none or the reply is odd. */
static unsigned mx_min_ttl(const unsigned char *abuf, int alen)
{
    int off = 12, qd, an;
    unsigned ttl = 0;

    if (alen < 12)
        return 0;
    qd = abuf[4] << 8 | abuf[5];
    an = abuf[6] << 8 | abuf[7];
    for (int i = 0; i < qd; i++)
        if (skip_name(abuf, alen, &off) < 0 || (off += 4) > alen)
            return 0;
    for (int i = 0; i < an; i++) {
        if (skip_name(abuf, alen, &off) < 0 || off + 10 > alen)
            return 0;
        unsigned type = (unsigned)(abuf[off] << 8 | abuf[off + 1]);
        unsigned t = (unsigned)abuf[off + 4] << 24 | (unsigned)abuf[off + 5] << 16 |
                     (unsigned)abuf[off + 6] << 8 | abuf[off + 7];
        int rdlen = abuf[off + 8] << 8 | abuf[off + 9];
        if (type == ns_t_mx && (ttl == 0 || t < ttl))
            ttl = t;
        off += 10 + rdlen;
    }
    return ttl;
}

static void mx_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_req *req = arg;
    struct ares_mx_reply *mx = NULL;

    req->ctx->queries--;
    if (status == ARES_SUCCESS)
        status = ares_parse_mx_reply(abuf, alen, &mx);
    if (status == ARES_ENODATA) {
        req_single_host(req); /* no MX: the domain's own addresses */
        return;
    }
    if (status != ARES_SUCCESS) {
        req_fail(req, status == ARES_ENOTFOUND ? DNS_NOTFOUND : DNS_TEMPFAIL, req->name, "MX");
        return;
    }
    req->res->ttl = mx_min_ttl(abuf, alen);
    enum mx_kind kind = mx_hosts(req, mx);
    if (kind == MX_NOHOSTS) {
        ares_free_data(mx);
        req_fail_why(req, DNS_TEMPFAIL, req->name, "MX", WHY_INVAL);
        return;
    }
    if (kind == MX_NULL) {
        ares_free_data(mx);
        req->res->status = DNS_NULLMX;
        buf_printf(&req->res->errtext, "Domain %s does not accept mail (nullMX)", req->name);
        req_finish(req);
        return;
    }
    ares_free_data(mx);
    if (req->res->nhosts == 0) {
        req_single_host(req);
        return;
    }
    req->from_mx = 1;
    req_lookup_addrs(req);
}

/* A domain with UTF-8 labels (from an SMTPUTF8 address) is looked up in
 * its A-label form (IDNA2008, RFC 5891: "xn--..."). One that cannot be
 * converted does not exist in the DNS: a permanent failure. Returns the
 * request with the name to query in req->name, or NULL when it failed
 * (the callback then runs with the error). */
static struct dns_req *req_for_name(struct dns_ctx *ctx, const char *name, const char *type,
                                    dns_cb_t cb, void *arg)
{
    const unsigned char *p;
    char *alabel = NULL;
    int rc;

    for (p = (const unsigned char *)name; *p && *p < 0x80; p++)
        ;
    if (*p == '\0')
        return req_new(ctx, name, cb, arg);
    rc = idn2_to_ascii_8z(name, &alabel, IDN2_NONTRANSITIONAL);
    if (rc != IDN2_OK) {
        struct dns_req *req = req_new(ctx, name, cb, arg);
        req->res->status = DNS_NOTFOUND;
        buf_printf(&req->res->errtext,
                   "Host or domain name not found. Name service error for name=%s type=%s: "
                   "malformed international domain name (%s)",
                   name, type, idn2_strerror(rc));
        req_finish(req);
        return NULL;
    }
    struct dns_req *req = req_new(ctx, alabel, cb, arg);
    idn2_free(alabel);
    return req;
}

void dns_resolve_mx(struct dns_ctx *ctx, const char *domain, dns_cb_t cb, void *arg)
{
    struct dns_req *req = req_for_name(ctx, domain, "MX", cb, arg);
    if (!req)
        return;
    ctx->queries++;
    ares_query(ctx->ch, req->name, ns_c_in, ns_t_mx, mx_cb, req);
    dns_rearm(ctx);
}

void dns_resolve_host(struct dns_ctx *ctx, const char *host, dns_cb_t cb, void *arg)
{
    struct dns_req *req = req_for_name(ctx, host, "A", cb, arg);
    if (req)
        req_single_host(req);
}
