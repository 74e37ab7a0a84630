/* delivery_sess.c - SMTP client connections: non-blocking connect, reading
 * replies, per-phase timeouts, failure reporting, and the connection cache
 * (idle sessions kept per nexthop for the next job, as Postfix's scache). */
#include "delivery/delivery_sess.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/mail/metric.h"
#include "common/util/ipc.h"
#include "common/util/log.h"
#include "common/mail/server.h"

const struct dlv_phase dlv_phase[X_COUNT] = {
    [X_GREET] = { "smtp_helo_timeout",
                  "receiving the initial server greeting",
                  "CONNECT",
                  { 220 } },
    [X_EHLO] = { "smtp_helo_timeout", "performing the EHLO handshake", "EHLO", { 250 } },
    [X_HELO] = { "smtp_helo_timeout", "performing the HELO handshake", "HELO", { 250 } },
    [X_RSET] = { "smtp_rset_timeout", "sending RSET", "RSET", { 250 } },
    [X_MAIL] = { "smtp_mail_timeout", "sending MAIL FROM", "MAIL FROM", { 250 } },
    [X_RCPT] = { "smtp_rcpt_timeout", "sending RCPT TO", "RCPT TO", { 250, 251 } },
    [X_DATA] = { "smtp_data_init_timeout", "sending DATA command", "DATA", { 354 } },
    [X_DOT] = { "smtp_data_done_timeout",
                "sending end of data -- message may be sent more than once",
                "end of DATA",
                { 250 } },
    [X_QUIT] = { "smtp_quit_timeout", "sending QUIT", "QUIT", { 0 } },
    [X_STARTTLS] = { "smtp_starttls_timeout", "sending STARTTLS", "STARTTLS", { 220 } },
    [X_BDAT] = { "smtp_data_xfer_timeout", "sending message body", "BDAT", { 250 } },
    [X_BDAT_LAST] = { "smtp_data_done_timeout",
                      "sending end of data -- message may be sent more than once",
                      "BDAT LAST",
                      { 250 } },
    [X_LMTP] = { "smtp_data_done_timeout",
                 "sending end of data -- message may be sent more than once",
                 "end of DATA",
                 { 250 } },
};

const char *dlv_phase_command(enum dlv_xkind kind)
{
    return dlv_g.lmtp && (kind == X_EHLO || kind == X_HELO) ? "LHLO" : dlv_phase[kind].command;
}

const char *dlv_timeout_param(const char *name)
{
    static const char *const lmtp[][2] = {
        { "smtp_connect_timeout", "lmtp_connect_timeout" },
        { "smtp_helo_timeout", "lmtp_lhlo_timeout" },
        { "smtp_mail_timeout", "lmtp_mail_timeout" },
        { "smtp_rcpt_timeout", "lmtp_rcpt_timeout" },
        { "smtp_data_init_timeout", "lmtp_data_init_timeout" },
        { "smtp_data_xfer_timeout", "lmtp_data_xfer_timeout" },
        { "smtp_data_done_timeout", "lmtp_data_done_timeout" },
        { "smtp_rset_timeout", "lmtp_rset_timeout" },
        { "smtp_quit_timeout", "lmtp_quit_timeout" },
    };
    for (size_t k = 0; dlv_g.lmtp && k < sizeof(lmtp) / sizeof(lmtp[0]); k++)
        if (strcmp(name, lmtp[k][0]) == 0)
            return lmtp[k][1];
    return name;
}

const char *dlv_sess_relay(const struct dlv_sess *s)
{
    return buf_str(&s->relay);
}

const char *dlv_sess_tls_info(const struct dlv_sess *s)
{
    return buf_str(&s->tls_info);
}

void dlv_sess_arm(struct dlv_sess *s, const char *timeout_param)
{
    struct timeval tv = { (time_t)conf_int(dlv_timeout_param(timeout_param)), 0 };
    evtimer_add(s->timer, &tv);
}

static void sess_expect(struct dlv_sess *s, enum dlv_xkind kind, size_t i, int follow)
{
    if (s->xhead == s->xn && follow) {
        s->xhead = s->xn = 0;
    } else if (s->xhead == s->xn) {
        /* A synchronisation point (RFC 2920 3.1): every earlier reply is
         * in, so bytes already here were sent before this command was -
         * they answer nothing and must not be taken for its reply. */
        if (s->bev && evbuffer_get_length(bufferevent_get_input(s->bev)) > 0)
            s->premature = 1;
        s->xhead = s->xn = 0;
    }
    s->xq = xgrow(s->xq, &s->xcap, s->xn + 1, sizeof(*s->xq));
    s->xq[s->xn].kind = kind;
    s->xq[s->xn].i = i;
    if (s->xn++ == s->xhead)
        dlv_sess_arm(s, dlv_phase[kind].timeout_param);
}

void dlv_sess_expect(struct dlv_sess *s, enum dlv_xkind kind, size_t i)
{
    sess_expect(s, kind, i, 0);
}

void dlv_sess_expect_next(struct dlv_sess *s, enum dlv_xkind kind, size_t i)
{
    sess_expect(s, kind, i, 1);
}

void dlv_sess_send(struct dlv_sess *s, const char *data, size_t len)
{
    bufferevent_write(s->bev, data, len);
}

void dlv_sess_free(struct dlv_sess *s)
{
    if (s->cached)
        LIST_REMOVE(s, cache_link);
    if (s->job && s->job->sess == s)
        s->job->sess = NULL;
    if (s->bev)
        bufferevent_free(s->bev);
    event_free(s->timer);
    dlv_rparser_destroy(&s->rp);
    if (s->bd.tmp)
        evbuffer_free(s->bd.tmp);
    buf_destroy(&s->relay);
    buf_destroy(&s->hostip);
    buf_destroy(&s->tls_info);
    free(s->xq);
    free(s->key);
    free(s->host);
    free(s);
}

/* What we were doing when the connection broke. */
static const char *sess_doing(const struct dlv_sess *s)
{
    if (s->state == SS_BODY)
        return "sending message body";
    if (s->state == SS_TLS)
        return "performing the TLS handshake";
    if (s->xhead < s->xn)
        return dlv_phase[s->xq[s->xhead].kind].doing;
    return "sending message body";
}

int dlv_sess_abort(struct dlv_sess *s, const char *dsn, const char *reason, enum bclass cat)
{
    struct dlv_job *job = s->job;
    enum dlv_sess_fail kind = s->reused ? SF_FRESH : SF_NEXT;
    int in_tx = s->in_tx && !s->rset_ahead;

    if (!job) {
        dlv_sess_free(s);
        return -1;
    }
    buf_set(&job->relay, s->connected ? buf_str(&s->relay) : "none");
    s->job = NULL;
    job->sess = NULL;
    dlv_sess_free(s);
    if (!in_tx) {
        dlv_job_sess_failed(job, kind, dsn, reason, cat);
        return -1;
    }
    dlv_job_set_pending(job, dsn, reason, cat);
    dlv_job_tx_done(job);
    return -1;
}

/* VERP mail: the next recipient's transaction on this connection, at
 * once after a final reply, else after an RSET (the server may still hold
 * the MAIL of a transaction that ended without DATA). */
static void sess_next_tx(struct dlv_sess *s)
{
    s->state = SS_CMD;
    if (s->tx_closed) {
        dlv_proto_start_tx(s);
        return;
    }
    s->verp_next = 1;
    dlv_sess_send(s, "RSET\r\n", 6);
    dlv_sess_expect(s, X_RSET, 0);
}

int dlv_sess_tx_end(struct dlv_sess *s)
{
    struct dlv_job *job = s->job;
    s->in_tx = 0;
    evtimer_del(s->timer);
    if (dlv_job_next_tx(job)) {
        sess_next_tx(s);
        return -1;
    }
    s->state = SS_IDLE;
    s->job = NULL;
    job->sess = NULL;
    buf_set(&job->relay, buf_str(&s->relay));
    evtimer_del(s->timer);
    dlv_sess_release(s);
    dlv_job_tx_done(job);
    return -1;
}

static void sess_lost(struct dlv_sess *s, const char *what)
{
    buf_t r = BUF_INIT;
    if (s->state == SS_CONNECT) {
        int err = s->pending_errno ? s->pending_errno : EVUTIL_SOCKET_ERROR();
        buf_printf(&r, "connect to %s: %s", buf_str(&s->relay),
                   strcmp(what, "timeout") == 0 ? "Connection timed out"
                                                : strerror(err ? err : ECONNREFUSED));
        dlv_sess_abort(s, "4.4.1", r.data, BCLASS_NO_ANSWER_FROM_HOST);
    } else if (s->state == SS_IDLE || s->state == SS_QUIT) {
        dlv_sess_free(s);
    } else {
        buf_printf(&r, "%s with %s %s %s",
                   strcmp(what, "timeout") == 0 ? "conversation" : "lost connection",
                   buf_str(&s->hostip), strcmp(what, "timeout") == 0 ? "timed out while" : "while",
                   sess_doing(s));
        dlv_sess_abort(s, "4.4.2", r.data, BCLASS_BAD_CONNECTION);
    }
    buf_destroy(&r);
}

static void sess_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dlv_sess *s = arg;
    if (s->state == SS_IDLE || s->state == SS_QUIT) { /* cache expiry, QUIT done */
        dlv_sess_free(s);
        return;
    }
    if (s->state == SS_TLS) {
        dlv_tls_handshake_failed(s, "timeout");
        return;
    }
    sess_lost(s, s->pending_errno ? "error" : "timeout");
}

/* All of a BDAT transaction has left our buffer and replies are still
 * due, after a read: acknowledge what came now, not after the delayed-ACK
 * timer (40 ms on Linux). A server often sends the MAIL/RCPT replies (or a
 * chunk's) and, once its commit is done, the reply to LAST in two writes;
 * with Nagle on its side the second waits for our ACK. Over DATA our
 * content carries that ACK at once, and so does our next chunk while there
 * is one; after LAST we have nothing more to send. Measured: without this,
 * BDAT to postino's and Postfix's smtpd was 30-63% slower than DATA. */
static void sess_quickack(struct dlv_sess *s)
{
#ifdef TCP_QUICKACK
    int one = 1;
    if (s->bd.on && s->bd.last_sent && s->in_tx && s->xhead < s->xn &&
        evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
        (void)setsockopt(bufferevent_getfd(s->bev), IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
#else
    (void)s;
#endif
}

static void sess_read_cb(struct bufferevent *bev, void *arg)
{
    struct dlv_sess *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_iovec v;
    size_t used;
    enum dlv_rparser_result rc;

    while (evbuffer_peek(in, -1, NULL, &v, 1) > 0 && v.iov_len > 0) {
        if (s->state == SS_IDLE || s->state == SS_QUIT || s->xhead == s->xn) {
            /* Unsolicited text (e.g. 421 idle timeout, or a reply in the
             * middle of the content): not worth keeping; never a reply. */
            if (s->job) {
                buf_t r = BUF_INIT;
                buf_printf(&r, "protocol error: host %s sent an unexpected reply while %s",
                           buf_str(&s->hostip), sess_doing(s));
                dlv_sess_abort(s, "4.5.0", r.data, BCLASS_PROTOCOL_ERRORS);
                buf_destroy(&r);
                return;
            }
            dlv_sess_free(s);
            return;
        }
        rc = dlv_rparser_feed(&s->rp, v.iov_base, v.iov_len, &used);
        evbuffer_drain(in, used);
        if (rc == SMTP_RP_ERROR) {
            buf_t r = BUF_INIT;
            buf_printf(&r, "conversation with %s failed: %s while %s", buf_str(&s->hostip),
                       s->rp.err, sess_doing(s));
            dlv_sess_abort(s, "4.5.0", r.data, BCLASS_PROTOCOL_ERRORS);
            buf_destroy(&r);
            return;
        }
        if (rc == SMTP_RP_REPLY && dlv_proto_reply(s) < 0)
            return;
    }
    sess_quickack(s);
}

static void sess_write_cb(struct bufferevent *bev, void *arg)
{
    struct dlv_sess *s = arg;
    if (s->state == SS_BODY)
        (void)(s->bd.on ? dlv_bdat_more(s) : dlv_proto_body_more(s));
    else if (s->state == SS_QUIT)
        dlv_sess_free(s);
}

static void sess_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct dlv_sess *s = arg;
    if (s->state == SS_TLS) {
        if (what & BEV_EVENT_CONNECTED)
            dlv_tls_handshake_done(s);
        else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
            dlv_tls_handshake_failed(s, "error");
        return;
    }
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        /* Commands are written whole: Nagle would only add latency. */
        (void)setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        s->connected = 1;
        metric_add(METRIC_CONN_OUT, 1, NULL, NULL);
        s->state = SS_CMD;
        evtimer_del(s->timer);
        dlv_sess_expect(s, X_GREET, 0);
        bufferevent_enable(bev, EV_READ | EV_WRITE);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        sess_lost(s, "error");
}

void dlv_sess_install_cbs(struct dlv_sess *s)
{
    bufferevent_setcb(s->bev, sess_read_cb, sess_write_cb, sess_event_cb, s);
}

static struct dlv_sess *sess_new(const char *key, const char *host)
{
    struct dlv_sess *s = xcalloc(1, sizeof(*s));
    s->key = xstrdup(key);
    s->host = xstrdup(host);
    buf_init(&s->relay, 64);
    buf_init(&s->hostip, 64);
    buf_init(&s->tls_info, 48);
    dlv_rparser_init(&s->rp);
    s->timer = evtimer_new(dlv_g.srv->base, sess_timer_cb, s);
    s->state = SS_CONNECT;
    return s;
}

void dlv_sess_connect(struct dlv_job *job, const struct dlv_target *t, int port)
{
    struct dlv_sess *s = sess_new(job->cache_key, t->host);
    struct sockaddr_storage ss = t->ss;
    buf_t ip = BUF_INIT;
    struct timeval zero = { 0, 0 };

    if (ss.ss_family == AF_UNIX) { /* LMTP: "myhostname[/path]", as Postfix logs it */
        buf_printf(&s->hostip, "%s[%s]", t->host, ((const struct sockaddr_un *)&t->ss)->sun_path);
        buf_set(&s->relay, buf_str(&s->hostip));
    } else {
        ipc_addr_text((const struct sockaddr *)&t->ss, &ip, NULL);
        buf_printf(&s->hostip, "%s[%s]", t->host, buf_str(&ip));
        buf_printf(&s->relay, "%s:%d", buf_str(&s->hostip), port);
    }
    buf_destroy(&ip);
    if (ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
    else if (ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
    s->job = job;
    job->sess = s;
    s->max_msgs = job->site_max_deliveries;
    s->idle_time = job->site_idle_timeout;
    s->tls_level = job->tls.level;
    s->no_tls = job->plain_retry;
    job->plain_retry = 0;
    int fd, err = dlv_source_socket(job, ss.ss_family, &fd);
    s->bev = bufferevent_socket_new(dlv_g.srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    dlv_sess_install_cbs(s);
    if (err) { /* no source address for this host: the next one */
        s->pending_errno = err;
        evtimer_add(s->timer, &zero);
        return;
    }
    if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&ss, (int)t->sslen) < 0) {
        s->pending_errno = errno ? errno : ECONNREFUSED;
        evtimer_add(s->timer, &zero); /* report from the loop, not re-entrantly */
        return;
    }
    if (job->site_connect_timeout > 0) { /* the site's own connect_timeout */
        struct timeval tv = { (time_t)job->site_connect_timeout, 0 };
        evtimer_add(s->timer, &tv);
    } else {
        dlv_sess_arm(s, "smtp_connect_timeout");
    }
}

/* ---- connection cache ---- */

struct dlv_sess *dlv_cache_take(const char *key)
{
    struct dlv_sess *s;
    LIST_FOREACH(s, &dlv_g.cache, cache_link)
    if (strcmp(s->key, key) == 0) {
        LIST_REMOVE(s, cache_link);
        s->cached = 0;
        evtimer_del(s->timer);
        return s;
    }
    return NULL;
}

/* Will the transaction on s surely send MAIL (no refusal before it: the
 * size fits, no 8-bit conversion is to be tried)? */
static int tx_certain(struct dlv_sess *s, struct dlv_job *job)
{
    if (!(s->feat & FEAT_PIPELINING) || !s->tx_closed || !dlv_job_tx_window(job))
        return 0;
    if (!(s->feat & FEAT_8BITMIME) || (job->env.smtputf8 && !(s->feat & FEAT_SMTPUTF8)))
        return 0;
    return !(s->size_limit > 0 && dlv_mime_size(job) > s->size_limit);
}

/* A cached connection for a new job. RSET proves it still works (as
 * Postfix's smtp_rset_timeout); with PIPELINING it goes in the same
 * flight as MAIL, RCPT and DATA, so reuse costs no round trip and no
 * extra system calls: a failed RSET still means a fresh connection. */
void dlv_sess_reuse(struct dlv_sess *s, struct dlv_job *job)
{
    s->job = job;
    s->reused = 1;
    s->state = SS_CMD;
    s->max_msgs = job->site_max_deliveries;
    s->idle_time = job->site_idle_timeout;
    job->sess = s;
    dlv_sess_send(s, "RSET\r\n", 6);
    dlv_sess_expect(s, X_RSET, 0);
    if (tx_certain(s, job)) {
        s->rset_ahead = 1;
        dlv_job_sess_ready(job);
    }
}

static void sess_quit(struct dlv_sess *s)
{
    struct timeval tv = { 2, 0 };
    s->state = SS_QUIT;
    s->job = NULL;
    s->xhead = s->xn = 0; /* any reply now is only the QUIT's: ignored */
    bufferevent_write(s->bev, "QUIT\r\n", 6);
    evtimer_add(s->timer, &tv); /* do not wait long for a slow peer */
}

void dlv_sess_goodbye(struct dlv_sess *s)
{
    sess_quit(s);
}

void dlv_sess_release(struct dlv_sess *s)
{
    /* A site's own limits (from qmgr's job request) before main.cf's. */
    long long limit = s->max_msgs > 0 ? s->max_msgs : conf_int("smtp_connection_reuse_count_limit");
    struct timeval tv = {
        (time_t)(s->idle_time > 0 ? s->idle_time : conf_int("smtp_connection_cache_time_limit")), 0
    };

    s->reused = 0;
    if (dlv_g.srv->stopping || !conf_bool("smtp_connection_cache_on_demand") ||
        (limit > 0 && s->nmsgs >= limit)) {
        sess_quit(s);
        return;
    }
    s->state = SS_IDLE;
    LIST_INSERT_HEAD(&dlv_g.cache, s, cache_link);
    s->cached = 1;
    evtimer_add(s->timer, &tv);
}

void dlv_cache_flush(void)
{
    struct dlv_sess *s;
    while ((s = LIST_FIRST(&dlv_g.cache)) != NULL) {
        /* Best effort goodbye without waiting: we are about to exit
         * (not through TLS: plaintext there would only be garbage). */
        if (!s->ssl)
            (void)send(bufferevent_getfd(s->bev), "QUIT\r\n", 6, MSG_NOSIGNAL | MSG_DONTWAIT);
        dlv_sess_free(s);
    }
}
