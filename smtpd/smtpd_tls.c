/* smtpd_tls.c - STARTTLS (RFC 3207) and wrapper mode (implicit TLS, 465).
 *
 * The OpenSSL context is built before privileges drop (keys may be
 * root-only); sessions get a bufferevent_openssl on top of their socket
 * bufferevent (STARTTLS) or directly on the socket (wrapper mode).
 *
 * CVE-2011-0411: after "220 2.0.0 Ready to start TLS" every plaintext byte
 * the client already sent is thrown away - nothing that arrived before the
 * handshake may be taken as a command inside the TLS session - and the SMTP
 * state starts again from scratch (no HELO, no transaction, no AUTH). While
 * the handshake runs the session is `waiting`, so nothing is read as a
 * command. The handshake has its own timeout (smtpd_starttls_timeout).
 *
 * Cipher grade: the mandatory settings (smtpd_tls_mandatory_ciphers,
 * default high: forward secrecy and AEAD only) apply where TLS is required
 * (encrypt, wrapper mode) and on the submission ports 587 and 465 even
 * when TLS is only offered: mail programs all speak modern TLS, and a
 * hand-written submission row without -o options should not be weaker.
 * Everywhere else (port 25) smtpd_tls_ciphers (medium) keeps opportunistic
 * TLS open to old MTAs, as Postfix does. */
#include "smtpd/smtpd.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/mail/metric.h"
#include "common/util/log.h"
#include "common/mail/server.h"
#include "common/glue/tls.h"

static enum smtpd_tls_level level_parse(void)
{
    const char *v = conf_str("smtpd_tls_security_level");
    if (!*v || str_ieq(v, "none"))
        return SMTPD_TLS_NONE;
    if (str_ieq(v, "may"))
        return SMTPD_TLS_MAY;
    if (str_ieq(v, "encrypt"))
        return SMTPD_TLS_ENCRYPT;
    log_fatal("parameter smtpd_tls_security_level: unknown level \"%s\" (use none, may or encrypt)",
              v);
}

/* Port of a listening socket, or -1 (not TCP, or getsockname failed). */
static int listen_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

/* Does this service listen on a submission port (587, RFC 6409; 465,
 * RFC 8314)? Judged by the sockets master handed us, so "587",
 * "0.0.0.0:587" and "[::]:587" rows are all recognised. */
static int submission_service(const struct server *srv)
{
    for (int i = 0; srv && i < srv->nlisten; i++) {
        int port = listen_port(srv->listen_fd[i]);
        if (port == 587 || port == 465)
            return 1;
    }
    return 0;
}

void smtpd_tls_pre_drop(struct smtpd *d)
{
    int wrapper = conf_bool("smtpd_tls_wrappermode");
    d->tls_level = level_parse();
    if (d->tls_level == SMTPD_TLS_NONE && !wrapper)
        return;
    if (!*conf_str("smtpd_tls_cert_file") && !*conf_str("smtpd_tls_chain_files")) {
        if (d->tls_level == SMTPD_TLS_MAY && !wrapper) {
            log_warn("smtpd_tls_security_level=may but no smtpd_tls_cert_file or "
                     "smtpd_tls_chain_files: STARTTLS not offered");
            d->tls_level = SMTPD_TLS_NONE;
            return;
        }
        log_fatal("%s needs a certificate: set smtpd_tls_cert_file and smtpd_tls_key_file "
                  "(or smtpd_tls_chain_files)",
                  wrapper ? "smtpd_tls_wrappermode=yes" : "smtpd_tls_security_level=encrypt");
    }
    buf_t err = BUF_INIT;
    int mandatory = d->tls_level == SMTPD_TLS_ENCRYPT || wrapper || submission_service(d->srv);
    d->tls_ctx = (struct ssl_ctx_st *)tls_server_ctx_new(mandatory, &err);
    if (!d->tls_ctx)
        log_fatal("TLS server set-up failed: %s", buf_str(&err));
    buf_destroy(&err);
}

/* A local submission's UNIX socket never leaves the machine: no TLS. */
int smtpd_tls_offer(const struct smtpd_session *s)
{
    return s->d->tls_ctx && !s->ssl && !s->local;
}

int smtpd_tls_required(const struct smtpd_session *s)
{
    return s->d->tls_level == SMTPD_TLS_ENCRYPT && !s->tls && !s->local;
}

/* Handshake done: remember what the Received: header and logs say. */
static void tls_established(struct smtpd_session *s)
{
    buf_t b = BUF_INIT;
    s->tls = 1;
    metric_add(METRIC_TLS_IN, 1, SSL_get_version(s->ssl), NULL);
    if (conf_int("smtpd_tls_loglevel") > 0)
        tls_log_established(s->ssl, TLS_TRUST_ANONYMOUS, 1, smtpd_client(s));
    tls_summary(s->ssl, &b);
    free(s->tls_info);
    s->tls_info = buf_detach(&b);
    tls_received_text(s->ssl, &b);
    free(s->tls_received);
    s->tls_received = buf_detach(&b);
    buf_destroy(&b);
}

/* libevent takes OpenSSL's error queue into the bufferevent: without
 * this the log says "unknown OpenSSL error" instead of, say, "unsupported
 * protocol" for a client below smtpd_tls_protocols. */
static void handshake_error(struct bufferevent *bev, buf_t *why)
{
    unsigned long e, first = 0;
    while ((e = bufferevent_get_openssl_error(bev)) != 0)
        if (!first)
            first = e;
    const char *r = first ? ERR_reason_error_string(first) : NULL;
    if (r)
        buf_puts(why, r);
    else
        tls_append_ssl_error(why);
}

static void handshake_event(struct bufferevent *bev, short what, void *arg)
{
    struct smtpd_session *s = arg;
    if (what & BEV_EVENT_CONNECTED) {
        tls_established(s);
        smtpd_session_wire(s);
        if (!s->tls_wrapper) {
            /* RFC 3207: forget everything learned before the handshake. */
            free(s->helo);
            s->helo = NULL;
            s->esmtp = 0;
            smtpd_txn_reset(s);
            smtpd_auth_reset(s);
            smtpd_wait_end(s);
        } else if (!s->waiting) {
            smtpd_process_input(s);
        }
        return;
    }
    buf_t why = BUF_INIT;
    if (what & BEV_EVENT_TIMEOUT)
        buf_puts(&why, "timeout");
    else if (what & BEV_EVENT_EOF)
        buf_puts(&why, "lost connection");
    else
        handshake_error(bev, &why);
    log_info("SSL_accept error from %s: %s", smtpd_client(s), why.len ? buf_str(&why) : "-1");
    log_info("lost connection after %s from %s", s->tls_wrapper ? "CONNECT" : "STARTTLS",
             smtpd_client(s));
    buf_destroy(&why);
    smtpd_session_free(s);
}

static void tls_wire_handshake(struct smtpd_session *s)
{
    struct timeval tv = { (time_t)conf_int("smtpd_starttls_timeout"), 0 };
    bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
    bufferevent_setcb(s->bev, NULL, NULL, handshake_event, s);
    bufferevent_set_timeouts(s->bev, &tv, &tv);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

int smtpd_tls_wrap(struct smtpd_session *s, int fd)
{
    SSL *ssl = tls_server_ssl_new((SSL_CTX *)s->d->tls_ctx);
    s->bev = bufferevent_openssl_socket_new(s->d->srv->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (!s->bev) {
        log_warn("bufferevent_openssl_socket_new failed for %s", smtpd_client(s));
        SSL_free(ssl);
        close(fd);
        return -1;
    }
    s->ssl = (struct ssl_st *)ssl;
    s->tls_wrapper = 1;
    tls_wire_handshake(s);
    return 0;
}

void smtpd_tls_cmd(struct smtpd_session *s, char *arg)
{
    if (*arg) {
        smtpd_reply(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    if (s->ssl) {
        smtpd_reply(s, "503 5.5.1 Error: TLS already active");
        return;
    }
    if (!s->d->tls_ctx) {
        smtpd_reply(s, "502 5.5.1 Error: command not implemented");
        return;
    }
    smtpd_reply(s, "220 2.0.0 Ready to start TLS");
    /* CVE-2011-0411: drop whatever the client pipelined after STARTTLS. */
    struct evbuffer *in = bufferevent_get_input(s->bev);
    size_t junk = evbuffer_get_length(in);
    if (junk && log_verbose())
        log_debug("%s: discarding %zu plaintext bytes after STARTTLS", smtpd_client(s), junk);
    evbuffer_drain(in, junk);
    /* The 220 goes out through the plain bufferevent under the filter. */
    bufferevent_enable(s->bev, EV_WRITE);
    SSL *ssl = tls_server_ssl_new((SSL_CTX *)s->d->tls_ctx);
    struct bufferevent *tb = bufferevent_openssl_filter_new(
        s->d->srv->base, s->bev, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (!tb) {
        log_warn("bufferevent_openssl_filter_new failed for %s", smtpd_client(s));
        SSL_free(ssl);
        smtpd_close_after(s);
        return;
    }
    s->bev = tb;
    s->ssl = (struct ssl_st *)ssl;
    smtpd_wait_begin(s);
    tls_wire_handshake(s);
}

void smtpd_tls_release(struct smtpd_session *s)
{
    free(s->tls_info);
    free(s->tls_received);
    s->tls_info = s->tls_received = NULL;
}
