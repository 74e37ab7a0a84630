/* delivery_tls.c - STARTTLS in the SMTP client (Postfix's smtp_tls_*).
 *
 * Levels (smtp_tls_security_level, per destination smtp_tls_policy_maps):
 *   none     never STARTTLS
 *   may      STARTTLS when offered; refused STARTTLS (4xx/5xx other than
 *            421) -> go on in plaintext; failed handshake or a reply to
 *            STARTTLS that is not 220 nor 4xx/5xx -> connect to the same
 *            host again without TLS (Postfix does the same for the
 *            handshake), so opportunistic TLS never costs a delivery
 *   encrypt  STARTTLS required (not offered: 4.7.4), certificate ignored
 *   verify/secure  also a trusted chain matching the names of
 *            tls_match_names (else 4.7.5 "Server certificate not ...")
 * After the 220 to STARTTLS, whatever the server already sent behind it
 * is thrown away before the handshake (the client side of CVE-2011-0411):
 * it was not protected and must never be taken for a reply. The socket
 * is then re-wrapped in a bufferevent_openssl; nothing blocks. */
#include "delivery/delivery_sess.h"

#include <errno.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/mail/metric.h"
#include "common/util/log.h"
#include "common/mail/server.h"

void dlv_tls_init(void)
{
    buf_init(&dlv_g.tls_err, 64);
    dlv_g.tls_ctx = tls_client_ctx_new(&dlv_g.tls_err);
    /* Not fatal: plaintext and opportunistic delivery still work, and
     * each mandatory-TLS message is deferred with this reason. */
    if (!dlv_g.tls_ctx)
        log_warn("TLS client disabled: %s", buf_str(&dlv_g.tls_err));
}

int dlv_job_tls_policy(struct dlv_job *job)
{
    buf_t err = BUF_INIT, key = BUF_INIT;
    if (dlv_g.lmtp) { /* no STARTTLS to LMTP servers (local mailbox stores) */
        job->tls.level = TLS_LEV_NONE;
        free(job->cache_key);
        buf_printf(&key, "lmtp;%s", job->nexthop);
        job->cache_key = buf_detach(&key);
        return 0;
    }
    int rc = tls_client_policy(job->nexthop, &job->tls, &err);

    if (rc < 0) {
        log_warn("%s: TLS policy lookup for %s failed: %s", job->id, job->nexthop, buf_str(&err));
        dlv_job_set_pending(job, "4.7.5", "TLS policy lookup error (see the log)", BCLASS_OTHER);
        job->tls.level = TLS_LEV_NONE;
    }
    /* The domains of one site share its MX hosts: their jobs share cached
     * connections (qmgr counts the site's connections so). A verified
     * level checks names that depend on the nexthop: those stay apart. */
    if (job->site && job->tls.level < TLS_LEV_VERIFY)
        buf_printf(&key, "%s;site:%s", tls_level_name(job->tls.level), job->site);
    else
        buf_printf(&key, "%s;%s", tls_level_name(job->tls.level), job->nexthop);
    if (job->source || job->helo) /* a reused connection has the right source */
        buf_printf(&key, ";%s;%s", job->source ? job->source : "", dlv_source_helo(job));
    free(job->cache_key);
    job->cache_key = buf_detach(&key);
    buf_destroy(&err);
    return rc;
}

/* Give up on this host (the job tries the next one). Returns -1. */
static int starttls_fail(struct dlv_sess *s, const char *dsn, const char *reason)
{
    s->reused = 0; /* a fresh connection: try the next host, not the cache */
    return dlv_sess_abort(s, dsn, reason, BCLASS_BAD_CONNECTION);
}

enum dlv_starttls dlv_tls_after_ehlo(struct dlv_sess *s)
{
    buf_t r = BUF_INIT;
    int mandatory = s->tls_level >= TLS_LEV_ENCRYPT;

    if (s->ssl || s->tls_level == TLS_LEV_NONE || s->no_tls)
        return DLV_STARTTLS_NONE;
    if (!(s->feat & FEAT_STARTTLS) || !dlv_g.tls_ctx) {
        if (!mandatory)
            return DLV_STARTTLS_NONE;
        if (!dlv_g.tls_ctx)
            buf_printf(&r, "TLS is required, but our TLS engine is unavailable (%s)",
                       buf_str(&dlv_g.tls_err));
        else
            buf_printf(&r, "TLS is required, but was not offered by host %s", buf_str(&s->hostip));
        starttls_fail(s, dlv_g.tls_ctx ? "4.7.4" : "4.7.5", r.data);
        buf_destroy(&r);
        return DLV_STARTTLS_GAVE_UP;
    }
    dlv_sess_send(s, "STARTTLS\r\n", 10);
    dlv_sess_expect(s, X_STARTTLS, 0);
    return DLV_STARTTLS_SENT;
}

/* Wrap the connection in TLS: drop what the server sent after its 220,
 * move the socket into an openssl bufferevent, start the handshake. */
static int starttls_wrap(struct dlv_sess *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    size_t junk = evbuffer_get_length(in);
    int fd = fcntl(bufferevent_getfd(s->bev), F_DUPFD_CLOEXEC, 0);

    if (junk > 0) {
        log_warn("%s: discarding %zu byte(s) that %s sent after its reply to STARTTLS", s->job->id,
                 junk, buf_str(&s->relay));
        evbuffer_drain(in, junk);
    }
    if (fd < 0) {
        buf_t r = BUF_INIT;
        buf_printf(&r, "Cannot start TLS: %s", strerror(errno));
        starttls_fail(s, "4.7.5", r.data);
        buf_destroy(&r);
        return -1;
    }
    /* The plain bufferevent (and its descriptor) go; the dup stays. */
    bufferevent_free(s->bev);
    s->ssl = tls_client_ssl_new(dlv_g.tls_ctx, s->host, s->tls_level);
    s->bev = bufferevent_openssl_socket_new(dlv_g.srv->base, fd, s->ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (!s->bev)
        log_fatal("cannot create a TLS bufferevent (out of memory?)");
    s->state = SS_TLS;
    dlv_sess_install_cbs(s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    dlv_sess_arm(s, "smtp_starttls_timeout");
    return -1; /* the old input buffer is gone: stop reading it */
}

int dlv_tls_on_starttls(struct dlv_sess *s, size_t i)
{
    buf_t r = BUF_INIT;

    if (s->rp.reply.code == 220) /* nothing else gets here but 4xx/5xx */
        return starttls_wrap(s);
    if (s->tls_level < TLS_LEV_ENCRYPT) {
        /* Opportunistic: the server may refuse; carry on in plaintext. */
        log_info("%s: host %s refused to start TLS: %s", s->job->id, buf_str(&s->hostip),
                 buf_str(&s->rp.reply.text));
        dlv_job_sess_ready(s->job);
        return -1;
    }
    buf_printf(&r, "TLS is required, but host %s refused to start TLS: %s", buf_str(&s->hostip),
               buf_str(&s->rp.reply.text));
    starttls_fail(s, "4.7.5", r.data);
    buf_destroy(&r);
    return -1;
}

/* libevent's queued OpenSSL errors (it takes them off OpenSSL's queue):
 * all of them for the log, the first reason for the deferral text. */
static void handshake_error_text(struct dlv_sess *s, const char *what, buf_t *log, buf_t *brief)
{
    unsigned long e;
    char tmp[256];

    if (strcmp(what, "timeout") == 0) {
        buf_puts(log, "timed out");
        buf_puts(brief, "timed out");
        return;
    }
    while ((e = bufferevent_get_openssl_error(s->bev)) != 0) {
        if (ERR_GET_LIB(e) == 0) /* libevent's own marker, no text */
            continue;
        ERR_error_string_n(e, tmp, sizeof(tmp));
        buf_printf(log, "%s%s", log->len ? "; " : "", tmp);
        if (brief->len == 0 && ERR_reason_error_string(e))
            buf_puts(brief, ERR_reason_error_string(e));
    }
    ERR_clear_error();
    if (log->len == 0)
        buf_puts(log, EVUTIL_SOCKET_ERROR() ? strerror(EVUTIL_SOCKET_ERROR())
                                            : "connection closed by the server");
    if (brief->len == 0)
        buf_puts(brief, log->data);
}

void dlv_tls_plain_retry(struct dlv_sess *s)
{
    struct dlv_job *job = s->job;
    if (!job || s->tls_level >= TLS_LEV_ENCRYPT)
        return;
    /* Postfix's may level: the same host again, in plaintext. */
    log_info("%s: STARTTLS with %s failed; retrying without TLS", job->id, buf_str(&s->relay));
    job->plain_retry = 1;
    if (job->itg > 0)
        job->itg--;
}

void dlv_tls_handshake_failed(struct dlv_sess *s, const char *what)
{
    struct dlv_job *job = s->job;
    buf_t why = BUF_INIT, brief = BUF_INIT, r = BUF_INIT;

    handshake_error_text(s, what, &why, &brief);
    log_info("%s: SSL_connect error to %s: %s", job ? job->id : "-", buf_str(&s->relay), why.data);
    dlv_tls_plain_retry(s);
    buf_printf(&r, "Cannot start TLS: handshake failure with %s: %s", buf_str(&s->hostip),
               brief.data);
    starttls_fail(s, "4.7.5", r.data);
    buf_destroy(&r);
    buf_destroy(&brief);
    buf_destroy(&why);
}

static void note_session(struct dlv_sess *s)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(s->ssl);
    buf_reset(&s->tls_info);
    buf_printf(&s->tls_info, "%s:%s", SSL_get_version(s->ssl), c ? SSL_CIPHER_get_name(c) : "none");
}

void dlv_tls_handshake_done(struct dlv_sess *s)
{
    struct dlv_job *job = s->job;
    tls_trust_t trust = TLS_TRUST_ANONYMOUS;
    buf_t why = BUF_INIT, r = BUF_INIT;

    evtimer_del(s->timer);
    if (tls_client_check(s->ssl, &job->tls, job->nexthop, s->host, buf_str(&s->relay), &trust,
                         &why) < 0) {
        log_info("%s: %s: %s", job->id, tls_check_status(trust), buf_str(&why));
        buf_printf(&r, "%s: %s", tls_check_status(trust), buf_str(&why));
        starttls_fail(s, "4.7.5", r.data);
        buf_destroy(&r);
        buf_destroy(&why);
        return;
    }
    buf_destroy(&why);
    buf_destroy(&r);
    if (conf_int("smtp_tls_loglevel") >= 1)
        tls_log_established(s->ssl, trust, 0, buf_str(&s->relay));
    note_session(s);
    metric_add(METRIC_TLS_OUT, 1, SSL_get_version(s->ssl), NULL);
    /* RFC 3207: forget everything learnt before TLS, ask again. */
    s->feat = 0;
    s->size_limit = 0;
    s->state = SS_CMD;
    dlv_proto_send_ehlo(s);
}
