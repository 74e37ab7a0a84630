/* delivery_job.c - one delivery job: read the queue file, find the hosts of
 * the nexthop (MX or A/AAAA), try them in order, record each recipient's
 * outcome in the queue file and the log, then let delivery.c reply. */
#include "delivery/delivery_sess.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/mail/mevent.h"
#include "common/util/log.h"
#include "common/mail/server.h"

double dlv_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

struct dlv_job *dlv_job_new(struct qserve *qs, const char *id, const char *nexthop)
{
    struct dlv_job *job = xcalloc(1, sizeof(*job));
    job->qs = qs;
    str_lcpy(job->id, id, sizeof(job->id));
    job->nexthop = xstrdup(nexthop);
    job->content_fd = -1;
    job->t_start = dlv_now();
    buf_init(&job->host, 64);
    buf_init(&job->relay, 64);
    buf_init(&job->lasterr, 128);
    buf_init(&job->tls_info, 48);
    buf_set(&job->relay, "none");
    qenv_init(&job->env);
    dlv_g.njobs++;
    return job;
}

static int site_num(const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    long long n;

    *out = 0;
    if (v == NULL)
        return 0;
    if (*v < '0' || *v > '9')
        return -1;
    errno = 0;
    n = strtoll(v, &end, 10);
    if (errno || *end || n < lo || n > hi)
        return -1;
    *out = n;
    return 0;
}

int dlv_job_set_site(struct dlv_job *job, const char *site, const char *maxdel, const char *conn_to,
                     const char *idle_to)
{
    if (site && (!*site || strlen(site) > 1024))
        return -1;
    for (const char *p = site; p && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return -1;
    free(job->site);
    job->site = site ? xstrdup(site) : NULL;
    return site_num(maxdel, 1, 1000000, &job->site_max_deliveries) < 0 ||
                   site_num(conn_to, 1, 3600, &job->site_connect_timeout) < 0 ||
                   site_num(idle_to, 1, 3600, &job->site_idle_timeout) < 0
               ? -1
               : 0;
}

void dlv_job_add_rcpt(struct dlv_job *job, size_t idx)
{
    job->res = xrealloc(job->res, (job->nres + 1) * sizeof(*job->res));
    memset(&job->res[job->nres], 0, sizeof(*job->res));
    job->res[job->nres].idx = idx;
    job->res[job->nres].status = QR_PENDING;
    buf_init(&job->res[job->nres].reason, 64);
    job->nres++;
}

void dlv_job_free(struct dlv_job *job)
{
    size_t k;
    for (k = 0; k < job->nres; k++)
        buf_destroy(&job->res[k].reason);
    free(job->res);
    for (k = 0; k < job->ntg; k++)
        free(job->tg[k].host);
    free(job->tg);
    if (job->content_fd >= 0)
        close(job->content_fd);
    dlv_mime_free(job->mime);
    qenv_destroy(&job->env);
    buf_destroy(&job->host);
    buf_destroy(&job->relay);
    buf_destroy(&job->lasterr);
    buf_destroy(&job->tls_info);
    tls_policy_destroy(&job->tls);
    free(job->cache_key);
    free(job->site);
    free(job->nexthop);
    free(job->source);
    free(job->helo);
    free(job);
    dlv_g.njobs--;
}

void dlv_job_set_rcpt(struct dlv_rres *r, const char *dsn, const char *reason, enum bclass cat)
{
    r->status = dsn[0] == '2' ? QR_SENT : dsn[0] == '5' ? QR_BOUNCED : QR_DEFERRED;
    str_lcpy(r->dsn, dsn, sizeof(r->dsn));
    buf_set(&r->reason, reason);
    r->cat = r->status == QR_SENT ? BCLASS_OTHER : cat;
}

void dlv_job_set_pending(struct dlv_job *job, const char *dsn, const char *reason, enum bclass cat)
{
    size_t k;
    for (k = 0; k < job->nres; k++)
        if (job->res[k].status == QR_PENDING)
            dlv_job_set_rcpt(&job->res[k], dsn, reason, cat);
}

void dlv_job_set_tx(struct dlv_job *job, const char *dsn, const char *reason, enum bclass cat)
{
    for (size_t k = job->tx_first; k < job->tx_end; k++)
        if (job->res[k].status == QR_PENDING)
            dlv_job_set_rcpt(&job->res[k], dsn, reason, cat);
}

int dlv_job_tx_window(struct dlv_job *job)
{
    size_t k = 0;
    if (!job->env.verp) {
        job->tx_first = 0;
        job->tx_end = job->nres;
        return job->nres > 0;
    }
    while (k < job->nres && job->res[k].status != QR_PENDING)
        k++;
    job->tx_first = k;
    job->tx_end = k < job->nres ? k + 1 : k;
    return job->tx_end > job->tx_first;
}

int dlv_job_next_tx(struct dlv_job *job)
{
    size_t k;
    if (!job->env.verp)
        return 0;
    /* Never the same recipient twice on one connection. */
    dlv_job_set_tx(job, "4.3.0", "internal error: no delivery outcome", BCLASS_OTHER);
    for (k = 0; k < job->nres; k++)
        if (job->res[k].status == QR_PENDING)
            return 1;
    return 0;
}

/* The recipient's event (issue #11): what the log line says, in fields. */
static void emit_rcpt(const struct dlv_job *job, const struct dlv_rres *r, const char *delay,
                      const char *delays)
{
    attr_t a = ATTR_INIT;
    mevent_begin(&a, mevent_result_type(r->status));
    mevent_add(&a, "queue_id", job->id);
    mevent_add(&a, "message_id", job->env.message_id);
    mevent_add(&a, "sender", job->env.sender);
    mevent_add(&a, "recipient", job->env.rcpt[r->idx].addr);
    mevent_add(&a, "site", job->site);
    mevent_add(&a, "source_address", job->source);
    mevent_add(&a, "relay", buf_str(&job->relay));
    mevent_add_relay(&a, buf_str(&job->relay));
    mevent_add_reply(&a, r->dsn, buf_str(&r->reason));
    if (r->status != QR_SENT)
        mevent_add(&a, "category", bclass_name(r->cat));
    mevent_add_tls(&a, buf_str(&job->tls_info));
    attr_add_ll(&a, "size", job->env.content_len);
    if (job->attempt > 0)
        attr_add_ll(&a, "attempt", job->attempt);
    mevent_add(&a, "delay", delay);
    mevent_add(&a, "delays", delays);
    mevent_send(&a);
    attr_destroy(&a);
}

static void log_rcpt(struct dlv_job *job, const struct dlv_rres *r)
{
    buf_t d = BUF_INIT, ds = BUF_INIT;
    double ready = job->t_ready > 0 ? job->t_ready : job->t_end;
    buf_put_delay(&d, job->t_end - job->t_arrival);
    buf_put_delay(&ds, job->t_start - job->t_arrival);
    buf_puts(&ds, "/0/");
    buf_put_delay(&ds, ready - job->t_start);
    buf_putc(&ds, '/');
    buf_put_delay(&ds, job->t_end - ready);
    /* site=, category= and tls= go after the status text: pflogsumm's to=
     * pattern wants "dsn=..., status=" adjacent, and reads the reason up
     * to ")". */
    int failed = r->status != QR_SENT;
    log_info("%s: to=<%s>, relay=%s, delay=%s, delays=%s, dsn=%s, status=%s (%s)%s%s%s%s%s%s",
             job->id, job->env.rcpt[r->idx].addr, buf_str(&job->relay), d.data, ds.data, r->dsn,
             qrcpt_status_name(r->status), buf_str(&r->reason), failed ? ", category=" : "",
             failed ? bclass_name(r->cat) : "", job->tls_info.len ? ", tls=" : "",
             buf_str(&job->tls_info), job->site ? ", site=" : "", job->site ? job->site : "");
    if (mevent_enabled())
        emit_rcpt(job, r, d.data, ds.data);
    buf_destroy(&d);
    buf_destroy(&ds);
}

/* Record outcomes in the queue file (before qmgr hears of them), log. */
static void job_finish(struct dlv_job *job)
{
    size_t k;
    job->t_end = dlv_now();
    dlv_job_set_pending(job, "4.3.0", "internal error: no delivery outcome", BCLASS_OTHER);
    for (k = 0; k < job->nres; k++) {
        struct dlv_rres *r = &job->res[k];
        const char *cat = r->status == QR_SENT ? NULL : bclass_name(r->cat);
        if (job->env.nrcpt > r->idx && job->content_fd >= 0 &&
            qfile_append_result_fd(job->content_fd, r->idx, r->status, r->dsn, buf_str(&job->relay),
                                   buf_str(&r->reason), cat) < 0)
            log_warn("%s: cannot record result for recipient %zu: %s", job->id, r->idx,
                     strerror(errno));
        if (job->env.nrcpt > r->idx)
            log_rcpt(job, r);
    }
    dlv_qconn_job_done(job);
}

/* ---- hosts ---- */

static void job_try_next(struct dlv_job *job)
{
    long long limit = conf_int("smtp_mx_address_limit");
    if (job->itg < job->ntg && (limit == 0 || (long long)job->itg < limit)) {
        struct dlv_target *t = &job->tg[job->itg++];
        dlv_sess_connect(job, t, job->port);
        return;
    }
    /* Every host failed before a transaction. */
    job->dest_fail = !job->ever_ready && job->lastdsn[0] != '5';
    if (job->lasterr.len)
        dlv_job_set_pending(job, job->lastdsn[0] ? job->lastdsn : "4.4.1", job->lasterr.data,
                            job->lastcat);
    else
        dlv_job_set_pending(job, "4.4.1", "no usable host address", BCLASS_ROUTING_ERRORS);
    job_finish(job);
}

static void job_dns_done(struct dns_result *res, void *arg)
{
    struct dlv_job *job = arg;
    size_t h, a;

    if (res->status != DNS_OK) {
        static const char *const dsn[] = { "4.4.3", "5.4.4", "4.4.3", "5.1.10" };
        /* NXDOMAIN, no address, null MX: the domain takes no mail; a
         * temporary failure is about the way there */
        static const enum bclass cat[] = { BCLASS_ROUTING_ERRORS, BCLASS_BAD_DOMAIN,
                                           BCLASS_ROUTING_ERRORS, BCLASS_BAD_DOMAIN };
        job->dest_fail = res->status == DNS_TEMPFAIL;
        dlv_job_set_pending(job, dsn[res->status], buf_str(&res->errtext), cat[res->status]);
        dns_result_free(res);
        job_finish(job);
        return;
    }
    for (h = 0; h < res->nhosts; h++)
        for (a = 0; a < res->hosts[h].naddr; a++) {
            struct dlv_target *t;
            job->tg = xrealloc(job->tg, (job->ntg + 1) * sizeof(*job->tg));
            t = &job->tg[job->ntg++];
            t->host = xstrdup(res->hosts[h].name);
            t->ss = res->hosts[h].addr[a];
            t->sslen = res->hosts[h].addrlen[a];
        }
    dns_result_free(res);
    job_try_next(job);
}

/* LMTP's "unix:/path" (relative: to the queue directory): the one target. */
static int nexthop_unix(struct dlv_job *job, const char *path)
{
    struct sockaddr_un *sun;
    if (!*path || strlen(path) >= sizeof(sun->sun_path))
        return -1;
    job->tg = xcalloc(1, sizeof(*job->tg));
    job->ntg = 1;
    job->tg->host = xstrdup(conf_str("myhostname"));
    sun = (struct sockaddr_un *)&job->tg->ss;
    sun->sun_family = AF_UNIX;
    str_lcpy(sun->sun_path, path, sizeof(sun->sun_path));
    job->tg->sslen = (socklen_t)sizeof(*sun);
    buf_set(&job->host, path);
    job->mx = 0;
    return 0;
}

/* "[host]", "[host]:port", "host:port" (no MX) or "domain" (MX). LMTP
 * (Postfix's forms): "unix:/path", "inet:" and any of those, never MX,
 * port lmtp_tcp_port when none is given. */
static int nexthop_parse(struct dlv_job *job)
{
    const char *nh = job->nexthop, *colon;
    char *end;
    long port = conf_int(dlv_g.lmtp ? "lmtp_tcp_port" : "smtp_port");

    if (dlv_g.lmtp && strncmp(nh, "unix:", 5) == 0)
        return nexthop_unix(job, nh + 5);
    if (dlv_g.lmtp && strncmp(nh, "inet:", 5) == 0)
        nh += 5;
    job->mx = 0;
    if (nh[0] == '[') {
        const char *close = strchr(nh, ']');
        if (!close || close == nh + 1)
            return -1;
        buf_append(&job->host, nh + 1, (size_t)(close - nh - 1));
        colon = close[1] == ':' ? close + 1 : NULL;
        if (close[1] && !colon)
            return -1;
        if (str_nieq(buf_str(&job->host), "ipv6:", 5))
            buf_consume(&job->host, 5);
    } else if ((colon = strrchr(nh, ':')) != NULL) {
        buf_append(&job->host, nh, (size_t)(colon - nh));
    } else {
        buf_set(&job->host, nh);
        job->mx = 1;
    }
    if (colon) {
        port = strtol(colon + 1, &end, 10);
        if (*end || port < 1 || port > 65535)
            return -1;
    }
    job->port = (int)port;
    if (dlv_g.lmtp)
        job->mx = 0;
    return job->host.len ? 0 : -1;
}

/* Does qmgr ask for recipients the message has? */
static int rcpts_exist(const struct dlv_job *job)
{
    size_t k;
    for (k = 0; k < job->nres; k++)
        if (job->res[k].idx >= job->env.nrcpt)
            return 0;
    return 1;
}

/* Load the message, then reuse a cached connection or look up hosts. */
int dlv_job_start(struct dlv_job *job, const char **why)
{
    buf_t err = BUF_INIT;

    if (dlv_source_probe(job) < 0) {
        job->source_fail = 1;
        dlv_qconn_job_done(job);
        return 0;
    }
    if ((job->content_fd = qfile_open_job(dlv_g.srv->spool, job->id, &job->env, &err)) < 0) {
        log_warn("%s: cannot read queue file: %s", job->id, buf_str(&err));
        dlv_job_set_pending(job, "4.3.0", "cannot read queue file", BCLASS_OTHER);
        buf_destroy(&err);
        job_finish(job);
        return 0;
    }
    buf_destroy(&err);
    if (!rcpts_exist(job)) {
        *why = "recipient index out of range";
        return -1;
    }
    /* Held until dlv_job_free closes the descriptor: a qmgr that starts while
     * this job runs (a reload) leaves the message alone until then. */
    if (qfile_lock_shared(job->content_fd) < 0)
        log_warn("%s: cannot lock the queue file: %s", job->id, strerror(errno));
    job->t_arrival = (double)job->env.arrival.tv_sec + job->env.arrival.tv_usec / 1e6;
    if (nexthop_parse(job) < 0) {
        log_warn("%s: malformed nexthop \"%s\"", job->id, job->nexthop);
        dlv_job_set_pending(job, "4.3.5", "malformed nexthop in the mail routing configuration",
                            BCLASS_ROUTING_ERRORS);
        job_finish(job);
        return 0;
    }
    if (dlv_job_tls_policy(job) < 0) {
        job_finish(job);
        return 0;
    }
    dlv_job_sess_failed(job, SF_FRESH, NULL, NULL, BCLASS_OTHER);
    return 0;
}

/* A nexthop naming an address ("[192.0.2.1]", "[ipv6:2001:db8::1]:25",
 * "192.0.2.1:2525"): the one target, with no DNS query, as Postfix. c-ares
 * 1.18 would ask the resolver for the name "192.0.2.1" first (A and AAAA,
 * each a 3 s timeout when lost): every new connection to a relayhost paid
 * that round trip, and a burst of them, when a batch of cached sessions
 * reached smtp_connection_reuse_count_limit together, stalled delivery
 * for 3 s each time a query went unanswered. 1 when it was one. */
static int job_literal(struct dlv_job *job)
{
    struct sockaddr_storage ss;
    socklen_t len;

    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, buf_str(&job->host), &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ss.ss_family = AF_INET;
        len = (socklen_t)sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, buf_str(&job->host), &((struct sockaddr_in6 *)&ss)->sin6_addr) ==
               1) {
        ss.ss_family = AF_INET6;
        len = (socklen_t)sizeof(struct sockaddr_in6);
    } else {
        return 0;
    }
    job->tg = xcalloc(1, sizeof(*job->tg));
    job->ntg = 1;
    job->tg->host = xstrdup(buf_str(&job->host));
    job->tg->ss = ss;
    job->tg->sslen = len;
    return 1;
}

/* Look up the hosts of the nexthop (a cache miss or a broken cached one). */
static void job_resolve(struct dlv_job *job)
{
    if (!job->mx && job_literal(job))
        job_try_next(job);
    else if (job->mx)
        dns_resolve_mx(dlv_g.dns, buf_str(&job->host), job_dns_done, job);
    else
        dns_resolve_host(dlv_g.dns, buf_str(&job->host), job_dns_done, job);
}

void dlv_job_sess_failed(struct dlv_job *job, enum dlv_sess_fail kind, const char *dsn,
                         const char *reason, enum bclass cat)
{
    struct dlv_sess *s;
    if (kind == SF_FRESH) {
        /* Start, or a cached connection went bad: any other cached one? */
        if ((s = dlv_cache_take(job->cache_key)) != NULL) {
            dlv_sess_reuse(s, job);
            return;
        }
        if (job->ntg == 0)
            job_resolve(job);
        else
            job_try_next(job);
        return;
    }
    buf_set(&job->lasterr, reason);
    str_lcpy(job->lastdsn, dsn, sizeof(job->lastdsn));
    job->lastcat = cat;
    if (kind == SF_BOUNCE) {
        dlv_job_set_pending(job, dsn, reason, cat);
        job_finish(job);
        return;
    }
    job_try_next(job);
}

void dlv_job_sess_ready(struct dlv_job *job)
{
    job->ever_ready = 1;
    job->t_ready = dlv_now();
    buf_set(&job->relay, dlv_sess_relay(job->sess));
    buf_set(&job->tls_info, dlv_sess_tls_info(job->sess));
    dlv_proto_start_tx(job->sess);
}

void dlv_job_tx_done(struct dlv_job *job)
{
    job_finish(job);
}
