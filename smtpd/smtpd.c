/* smtpd.c - the SMTP server daemon: start-up, accepting clients, the session list.
 *
 * server_main() does configuration, privileges and the event loop; this file
 * only turns accepted descriptors into sessions and enforces the per-process
 * session limit (smtpd_client_connection_limit).
 *
 * On a reload the process retires: it stops accepting (the listener is
 * master's and stays open, so connections not yet accepted wait there for
 * the new processes) and serves every session it has to its end, then
 * exits. Closing an accepted session instead would reset a client that
 * did nothing wrong. */
#include "smtpd/smtpd.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/mail/conf.h"
#include "common/mail/metric.h"
#include "common/glue/addrclass.h"
#include "common/glue/dns.h"
#include "common/util/workq.h"
#include "common/util/log.h"
#include "common/mail/server.h"

static struct smtpd smtpd_state;

/* Refuse a client over the session limit without creating a session: one
 * short write on a fresh socket cannot block for long (it is non-blocking
 * anyway; a lost reply only costs the client its 421 text). */
static void refuse(int fd)
{
    char line[512];
    int n = snprintf(line, sizeof(line), "421 4.7.0 %s Error: too many connections\r\n",
                     smtpd_hostname());
    if (n > 0 && (size_t)n < sizeof(line)) {
        ssize_t w = write(fd, line, (size_t)n);
        (void)w;
    }
    close(fd);
}

static void on_accept(struct server *srv, int fd, int idx)
{
    struct smtpd *d = srv->ctx;
    (void)idx;
    if ((long long)d->nsessions >= conf_int("smtpd_client_connection_limit")) {
        /* One line per 10 s under a flood, with the count, not one per client. */
        static time_t last;
        static unsigned long refused;
        time_t now = time(NULL);
        refused++;
        if (now - last >= 10) {
            log_warn("too many connections in this process (smtpd_client_connection_limit=%lld):"
                     " %lu refused with 421",
                     conf_int("smtpd_client_connection_limit"), refused);
            last = now;
            refused = 0;
        }
        refuse(fd);
        return;
    }
    struct smtpd_session *s = smtpd_session_new(d, fd);
    if (!s)
        return;
    LIST_INSERT_HEAD(&d->sessions, s, link);
    d->nsessions++;
    smtpd_limit_connect(s); /* greets once the per-client limits allow */
}

static void finish(struct smtpd *d);

static void retire_done(evutil_socket_t fd, short what, void *arg)
{
    finish(arg);
}

void smtpd_session_unlink(struct smtpd_session *s)
{
    struct smtpd *d = s->d;
    LIST_REMOVE(s, link);
    d->nsessions--;
    /* The last session of a retiring process: leave, from the loop (the
     * session is still being freed). */
    if (d->srv->retiring && LIST_EMPTY(&d->sessions)) {
        struct timeval now = { 0, 0 };
        if (event_base_once(d->srv->base, -1, EV_TIMEOUT, retire_done, d, &now) < 0)
            finish(d);
    }
}

/* Keys and the SASL configuration may be readable by root only. */
static void pre_drop(struct server *srv)
{
    struct smtpd *d = srv->ctx;
    d->srv = srv;
    smtpd_tls_pre_drop(d);
    smtpd_auth_pre_drop(d);
    smtpd_dkim_pre_drop();
    addrclass_passwd_load(); /* local_recipient_maps: unix:passwd.byname */
}

static void post_drop(struct server *srv)
{
    struct smtpd *d = srv->ctx;
    buf_t err = BUF_INIT;
    d->srv = srv;
    metric_client_open(srv->base, srv->spool);
    smtpd_check_init();
    smtpd_notify_init(srv);
    smtpd_auth_post_drop(d);
    smtpd_limit_init(d);
    /* Several fsyncs in flight at once: the filesystem commits them in
     * one journal transaction (group commit). */
    d->commitq = workq_new(srv->base, SMTPD_COMMIT_THREADS);
    d->per_request_deadline = conf_bool("smtpd_per_request_deadline");
    d->signq = smtpd_dkim_pool(srv->base);
    d->dns = dns_new(srv->base, conf_str("dns_servers"), &err);
    if (!d->dns)
        log_warn("DNS set-up failed (%s): DNS restrictions answer 450", buf_str(&err));
    buf_destroy(&err);
}

/* Messages being flushed are finished (and qmgr told) before we go. */
static void finish(struct smtpd *d)
{
    if (d->finished)
        return;
    d->finished = 1;
    workq_free(d->signq); /* first: a signed message's commit comes next */
    d->signq = NULL;
    workq_free(d->commitq);
    d->commitq = NULL;
    smtpd_check_done();
    smtpd_dkim_done();
    smtpd_suppress_done();
    server_exit(d->srv);
}

/* SIGTERM: leave no half-written queue file behind (the client was never
 * told 250, so it will retry), then leave the loop. */
static void on_stop(struct server *srv)
{
    struct smtpd *d = srv->ctx;
    server_stop_accepting(srv);
    while (!LIST_EMPTY(&d->sessions))
        smtpd_session_free(LIST_FIRST(&d->sessions));
    finish(d);
}

/* Retired by a reload: accept nothing more, serve the sessions we have. */
static void on_retire(struct server *srv)
{
    struct smtpd *d = srv->ctx;
    server_stop_accepting(srv);
    if (LIST_EMPTY(&d->sessions))
        finish(d);
}

int main(int argc, char **argv)
{
    static const struct server_hooks hooks = {
        .pre_drop = pre_drop,
        .post_drop = post_drop,
        .on_accept = on_accept,
        .on_stop = on_stop,
        .on_retire = on_retire,
    };
    memset(&smtpd_state, 0, sizeof(smtpd_state));
    LIST_INIT(&smtpd_state.sessions);
    int rc = server_main(argc, argv, "smtpd", &hooks, &smtpd_state);
    return rc;
}
