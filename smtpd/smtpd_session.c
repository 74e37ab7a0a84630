/* smtpd_session.c - one SMTP connection: I/O, the pipelined command loop, replies.
 *
 * Input is processed from the bufferevent's input buffer: every complete
 * command line is dispatched in order and the replies accumulate in the
 * output buffer, which libevent sends once the callback returns - that is
 * the RFC 2920 batching. Handlers finish all their side effects (queue file
 * writes) before returning, so the next pipelined command always sees them.
 * In DATA the bytes go to smtpd_data_feed() instead, which stops exactly at
 * the end-of-data mark so that commands after it are read as commands; a
 * BDAT chunk's octets are counted off by smtpd_bdat_input().
 *
 * STARTTLS (smtpd_tls.c) replaces s->bev with a TLS filter and discards
 * the unread plaintext; the loop therefore looks s->bev up afresh on every
 * round. While `waiting` (DNS, SASL, anvil, a TLS handshake) no input is
 * processed; smtpd_wait_end() resumes, first re-running a command that
 * asked for it with smtpd_redo_later(). */
#include "smtpd/smtpd.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/mail/metric.h"
#include "common/util/ipc.h"
#include "common/util/log.h"
#include "common/mail/server.h"
#include "smtpd/smtpd_cmdparse.h"

#define OUTPUT_PAUSE 65536        /* stop reading commands above this */
#define INPUT_HIGH   (256 * 1024) /* libevent stops reading above this */

static void session_read(struct bufferevent *bev, void *arg);
static void session_write(struct bufferevent *bev, void *arg);
static void session_event(struct bufferevent *bev, short what, void *arg);
static void flush_replies(evutil_socket_t fd, short what, void *arg);

const char *smtpd_hostname(void)
{
    const char *h = conf_str("myhostname");
    return h[0] ? h : "localhost";
}

const char *smtpd_client(const struct smtpd_session *s)
{
    static buf_t b = BUF_INIT;
    buf_reset(&b);
    buf_printf(&b, "%s[%s]", s->name, s->addr);
    return buf_str(&b);
}

static void client_addr(struct smtpd_session *s, int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    buf_t host = BUF_INIT;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
        ipc_addr_text((struct sockaddr *)&ss, &host, NULL);
        s->addr_v6 = ss.ss_family == AF_INET6 && strchr(buf_str(&host), ':') != NULL;
    }
    s->addr = xstrdup(host.len ? buf_str(&host) : "unknown");
    buf_destroy(&host);
}

/* Replies on a plain connection are written by flush_replies, directly,
 * once per loop round: the socket's write event is only armed when the
 * kernel did not take everything. A bufferevent with writing always on
 * would add and remove the write event around every reply (two epoll_ctl
 * calls and a loop round each). TLS sessions keep the bufferevent's own
 * writing: OpenSSL owns the bytes on that socket. */
void smtpd_session_wire(struct smtpd_session *s)
{
    struct timeval tv = { (time_t)conf_int("smtpd_timeout"), 0 };
    bufferevent_setcb(s->bev, session_read, session_write, session_event, s);
    bufferevent_set_timeouts(s->bev, &tv, &tv);
    bufferevent_setwatermark(s->bev, EV_READ, 0, INPUT_HIGH);
    bufferevent_enable(s->bev, s->ssl ? EV_READ | EV_WRITE : EV_READ);
    if (!s->ssl) /* a new bufferevent starts with writing on */
        bufferevent_disable(s->bev, EV_WRITE);
}

struct smtpd_session *smtpd_session_new(struct smtpd *d, int fd)
{
    struct smtpd_session *s = xcalloc(1, sizeof(*s));
    s->d = d;
    s->name = xstrdup("unknown");
    s->redo_idx = -1;
    s->local_uid = -1;
    if (!smtpd_local_peer(s, fd))
        client_addr(s, fd);
    s->last_cmd = "CONNECT";
    qenv_init(&s->env);
    if (conf_bool("smtpd_tls_wrappermode") && !s->local) {
        if (smtpd_tls_wrap(s, fd) < 0) {
            free(s->addr);
            free(s->name);
            free(s);
            return NULL;
        }
    } else {
        s->bev = bufferevent_socket_new(d->srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!s->bev) {
        log_warn("bufferevent_socket_new failed for %s", smtpd_client(s));
        close(fd);
        free(s->addr);
        free(s->name);
        free(s);
        return NULL;
    }
    log_info("connect from %s", smtpd_client(s));
    metric_add(METRIC_CONN_IN, 1, NULL, NULL);
    smtpd_deadline_start(s); /* the TLS handshake (port 465) counts too */
    if (!s->tls_wrapper)
        smtpd_session_wire(s);
    smtpd_auth_reset(s);
    smtpd_wait_begin(s); /* until the per-client limits said yes */
    return s;
}

/* Called once the connection may go on (anvil answered or was not asked):
 * the greeting, or with smtpd_delay_reject=no the client restrictions'
 * verdict in its place, as Postfix does: the client is told at once, with
 * the restriction's own text (already logged as "NOQUEUE: reject: CONNECT
 * from ..."), and every later command but QUIT gets a 503. */
void smtpd_session_start(struct smtpd_session *s)
{
    if (s->closing)
        return;
    buf_t reply = BUF_INIT;
    if (smtpd_restrict_connect(s, &reply) == SMTPD_REFUSED) {
        s->deny_text = buf_detach(&reply);
        smtpd_reply(s, "%s", s->deny_text); /* counts as an error */
    } else {
        smtpd_reply_line(s, "220 %s", conf_str("smtpd_banner"));
    }
    buf_destroy(&reply);
    smtpd_wait_end(s);
}

/* "disconnect from" statistics: name=ok or name=ok/total, Postfix style. */
static void log_disconnect(struct smtpd_session *s)
{
    buf_t b = BUF_INIT;
    unsigned ok = 0, total = 0;
    for (int i = 0; i <= SMTPD_CMD_MAX; i++) {
        if (!s->cmd_total[i])
            continue;
        const char *name =
            i < SMTPD_CMD_MAX && smtpd_cmd_verb_name(i) ? smtpd_cmd_verb_name(i) : "unknown";
        buf_putc(&b, ' ');
        for (const char *p = name; *p; p++)
            buf_putc(&b, (*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
        buf_printf(&b, "=%u", s->cmd_ok[i]);
        if (s->cmd_ok[i] != s->cmd_total[i])
            buf_printf(&b, "/%u", s->cmd_total[i]);
        ok += s->cmd_ok[i];
        total += s->cmd_total[i];
    }
    buf_printf(&b, " commands=%u", ok);
    if (ok != total)
        buf_printf(&b, "/%u", total);
    log_info("disconnect from %s%s", smtpd_client(s), buf_str(&b));
    buf_destroy(&b);
}

void smtpd_session_free(struct smtpd_session *s)
{
    if (s->data)
        smtpd_data_abort(s);
    smtpd_data_detach_commit(s);
    log_disconnect(s);
    smtpd_session_unlink(s);
    smtpd_limit_disconnect(s);
    smtpd_restrict_release(s);
    smtpd_auth_release(s);
    bufferevent_free(s->bev);
    smtpd_tls_release(s);
    if (s->sleep_ev)
        event_free(s->sleep_ev);
    if (s->flush_ev)
        event_free(s->flush_ev);
    if (s->deadline_ev)
        event_free(s->deadline_ev);
    qenv_destroy(&s->env);
    free(s->redo_arg);
    free(s->deny_text);
    smtpd_local_release(s);
    free(s->helo);
    free(s->addr);
    free(s->name);
    free(s);
}

/* ---- smtpd_per_request_deadline (Postfix's name and meaning) ----
 * smtpd_timeout normally bounds each read: a client that sends one byte
 * every few seconds holds its session for ever (slowloris). With the
 * deadline on, smtpd_timeout bounds the whole exchange from one reply to
 * the next complete request, and content (DATA, BDAT) earns more time only
 * as fast as smtpd_min_data_rate bytes per second. Time smtpd spends itself
 * (anvil, signing, the fsync, an error sleep) is never charged. */
static void deadline_fired(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_session *s = arg;
    (void)fd;
    (void)what;
    if (s->closing)
        return;
    if (s->ssl && !s->tls) { /* a handshake the client drags out: no 421 can go there */
        log_info("timeout in the TLS handshake after %s from %s (smtpd_per_request_deadline)",
                 s->last_cmd, smtpd_client(s));
        smtpd_session_free(s);
        return;
    }
    if (s->waiting || s->sleeping || s->paused) {
        smtpd_deadline_start(s); /* our own work or a full output: not the client's */
        return;
    }
    log_info("timeout after %s from %s (smtpd_per_request_deadline)", s->last_cmd, smtpd_client(s));
    smtpd_reply(s, "421 4.4.2 %s Error: timeout exceeded", smtpd_hostname());
    smtpd_close_after(s);
    bufferevent_enable(s->bev, EV_WRITE);
}

static void deadline_arm(struct smtpd_session *s, double secs)
{
    struct timeval tv;
    if (secs < 0)
        secs = 0;
    tv.tv_sec = (time_t)secs;
    tv.tv_usec = (suseconds_t)((secs - (double)tv.tv_sec) * 1e6);
    evtimer_add(s->deadline_ev, &tv);
}

void smtpd_deadline_start(struct smtpd_session *s)
{
    struct timeval now;
    if (!s->d->per_request_deadline || s->closing)
        return;
    if (!s->deadline_ev)
        s->deadline_ev = evtimer_new(s->d->srv->base, deadline_fired, s);
    event_base_gettimeofday_cached(s->d->srv->base, &now);
    s->deadline_start = (double)now.tv_sec + (double)now.tv_usec / 1e6;
    s->deadline_bytes = 0;
    deadline_arm(s, (double)conf_int("smtpd_timeout"));
}

void smtpd_deadline_content(struct smtpd_session *s, size_t n)
{
    struct timeval now;
    long long rate = conf_int("smtpd_min_data_rate");
    if (!s->deadline_ev || s->closing)
        return;
    s->deadline_bytes += (long long)n;
    event_base_gettimeofday_cached(s->d->srv->base, &now);
    double t = (double)now.tv_sec + (double)now.tv_usec / 1e6;
    double until = s->deadline_start + (double)conf_int("smtpd_timeout") +
                   (rate > 0 ? (double)s->deadline_bytes / (double)rate : 1e9);
    deadline_arm(s, until - t);
}

static void reply_v(struct smtpd_session *s, int count, const char *fmt, va_list ap)
{
    buf_t b = BUF_INIT;
    buf_vprintf(&b, fmt, ap);
    int code =
        (b.len >= 3) ? (b.data[0] - '0') * 100 + (b.data[1] - '0') * 10 + (b.data[2] - '0') : 0;
    if (log_verbose())
        log_debug("> %s: %s", smtpd_client(s), buf_str(&b));
    buf_append(&b, "\r\n", 2);
    bufferevent_write(s->bev, b.data, b.len);
    buf_destroy(&b);
    if (!s->ssl) {
        if (!s->flush_ev)
            s->flush_ev = event_new(bufferevent_get_base(s->bev), -1, 0, flush_replies, s);
        event_active(s->flush_ev, EV_WRITE, 0);
    }
    if (s->d->per_request_deadline)
        smtpd_deadline_start(s); /* from this reply to the next request */
    if (count) {
        s->last_code = code;
        if (code >= 400)
            s->errors++;
    }
}

void smtpd_reply(struct smtpd_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_v(s, 1, fmt, ap);
    va_end(ap);
}

void smtpd_reply_line(struct smtpd_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_v(s, 0, fmt, ap);
    va_end(ap);
}

void smtpd_close_after(struct smtpd_session *s)
{
    s->closing = 1;
    bufferevent_disable(s->bev, EV_READ);
}

void smtpd_txn_reset(struct smtpd_session *s)
{
    if (s->data)
        smtpd_data_abort(s);
    qenv_destroy(&s->env);
    qenv_init(&s->env);
    s->have_mail = 0;
    s->bdat_state = SMTPD_BDAT_NONE;
    s->bdat_fail_code = 0;
    s->bdat_octets = 0;
}

static void wake_up(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_session *s = arg;
    s->sleeping = 0;
    bufferevent_enable(s->bev, EV_WRITE);
    smtpd_process_input(s);
}

/* Past smtpd_soft_error_limit, hold the error reply back for
 * smtpd_error_sleep_time (as Postfix does) to slow down guessing clients:
 * writing and command processing pause, nothing blocks. */
static void error_sleep(struct smtpd_session *s)
{
    long long secs = conf_int("smtpd_error_sleep_time");
    if (s->last_code < 400 || s->closing || secs <= 0 ||
        s->errors <= conf_int("smtpd_soft_error_limit"))
        return;
    if (!s->sleep_ev)
        s->sleep_ev = evtimer_new(bufferevent_get_base(s->bev), wake_up, s);
    struct timeval tv = { (time_t)secs, 0 };
    s->sleeping = 1;
    bufferevent_disable(s->bev, EV_WRITE);
    evtimer_add(s->sleep_ev, &tv);
}

/* One complete command line (LF included) of len bytes. */
static void command_line(struct smtpd_session *s, char *line, size_t len)
{
    len--; /* LF */
    if (len && line[len - 1] == '\r')
        len--;
    line[len] = '\0';
    if (log_verbose())
        log_debug("< %s: %s", smtpd_client(s), line);
    if (s->state == SS_AUTH) {
        smtpd_auth_line(s, line); /* base64 or "*": the SASL layer judges it */
        return;
    }
    smtpd_cmd_dispatch(s, line, len);
    if (!s->closing && s->errors >= conf_int("smtpd_hard_error_limit")) {
        log_warn("too many errors after %s from %s", s->last_cmd, smtpd_client(s));
        smtpd_reply(s, "421 4.7.0 %s Error: too many errors", smtpd_hostname());
        smtpd_close_after(s);
    }
    error_sleep(s);
}

/* An over-long line ends a SASL exchange (a fresh SASL session forgets
 * it); otherwise it is an ordinary syntax error. */
static void line_too_long(struct smtpd_session *s)
{
    if (s->state == SS_AUTH) {
        smtpd_auth_reset(s);
        smtpd_reply(s, "500 5.5.6 Authentication exchange line is too long");
    } else {
        smtpd_reply(s, "500 5.5.2 Error: line too long");
    }
}

static long long line_limit(const struct smtpd_session *s)
{
    return s->state == SS_AUTH ? conf_int("smtpd_sasl_max_line")
                               : conf_int("smtpd_command_line_limit");
}

/* Command state: returns 1 if it consumed something and may be called again. */
static int process_command(struct smtpd_session *s, struct evbuffer *in)
{
    struct evbuffer_ptr pos = evbuffer_search(in, "\n", 1, NULL);
    long long limit = line_limit(s);
    if (pos.pos < 0) {
        if ((long long)evbuffer_get_length(in) > limit + 1) {
            evbuffer_drain(in, evbuffer_get_length(in));
            s->skip_was_auth = s->state == SS_AUTH;
            if (s->skip_was_auth)
                smtpd_auth_reset(s); /* the line is refused once it ends */
            s->state = SS_SKIP;
            return 1;
        }
        return 0;
    }
    size_t len = (size_t)pos.pos + 1;
    if ((long long)len > limit + 2) {
        evbuffer_drain(in, len);
        line_too_long(s);
        return 1;
    }
    char *line = xmalloc(len + 1);
    evbuffer_remove(in, line, len);
    command_line(s, line, len);
    free(line);
    return 1;
}

/* Discard the rest of an over-long line, then answer it. */
static int process_skip(struct smtpd_session *s, struct evbuffer *in)
{
    struct evbuffer_ptr pos = evbuffer_search(in, "\n", 1, NULL);
    if (pos.pos < 0) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return 0;
    }
    evbuffer_drain(in, (size_t)pos.pos + 1);
    s->state = SS_CMD;
    /* The same answer whether the line came in one read or several. */
    if (s->skip_was_auth)
        smtpd_reply(s, "500 5.5.6 Authentication exchange line is too long");
    else
        smtpd_reply(s, "500 5.5.2 Error: line too long");
    s->skip_was_auth = 0;
    if (s->errors >= conf_int("smtpd_hard_error_limit")) {
        smtpd_reply(s, "421 4.7.0 %s Error: too many errors", smtpd_hostname());
        smtpd_close_after(s);
    }
    return 1;
}

static int process_data(struct smtpd_session *s, struct evbuffer *in)
{
    size_t n = evbuffer_get_contiguous_space(in);
    if (n == 0)
        return 0;
    const unsigned char *p = evbuffer_pullup(in, (ssize_t)n);
    size_t used = smtpd_data_feed(s, p, n);
    evbuffer_drain(in, used);
    if (s->deadline_ev)
        smtpd_deadline_content(s, used);
    return 1;
}

void smtpd_process_input(struct smtpd_session *s)
{
    while (!s->closing && !s->sleeping && !s->waiting) {
        /* s->bev changes under STARTTLS: look it up every round. */
        struct evbuffer *in = bufferevent_get_input(s->bev);
        if (evbuffer_get_length(bufferevent_get_output(s->bev)) > OUTPUT_PAUSE) {
            s->paused = 1; /* resumed by session_write once drained */
            return;
        }
        int more = 0;
        switch (s->state) {
        case SS_CMD:
            more = process_command(s, in);
            break;
        case SS_AUTH:
            more = process_command(s, in);
            break;
        case SS_SKIP:
            more = process_skip(s, in);
            break;
        case SS_DATA:
            more = process_data(s, in);
            break;
        case SS_BDAT:
            more = smtpd_bdat_input(s, in);
            break;
        }
        if (!more)
            break;
    }
}

void smtpd_wait_begin(struct smtpd_session *s)
{
    s->waiting = 1;
}

void smtpd_redo_later(struct smtpd_session *s, const char *arg)
{
    int idx = smtpd_cmd_lookup(s->last_cmd);
    if (idx < 0)
        log_panic("smtpd_redo_later outside a command (%s)", s->last_cmd);
    s->redo_idx = idx;
    free(s->redo_arg);
    s->redo_arg = xstrdup(arg);
    s->waiting = 1;
}

/* Resume: re-run the command that waited (its statistics were counted the
 * first time), then whatever the client pipelined behind it. */
void smtpd_wait_end(struct smtpd_session *s)
{
    s->waiting = 0;
    if (s->closing)
        return; /* timed out meanwhile: the 421 was the last word */
    if (s->redo_idx >= 0) {
        int idx = s->redo_idx;
        char *arg = s->redo_arg;
        s->redo_idx = -1;
        s->redo_arg = NULL;
        s->last_code = 0;
        smtpd_cmd_table[idx](s, arg);
        free(arg);
        if (s->waiting)
            return;
        if (s->last_code && s->last_code < 400)
            s->cmd_ok[idx]++;
        error_sleep(s);
    }
    if (!s->paused)
        smtpd_process_input(s);
}

static void session_read(struct bufferevent *bev, void *arg)
{
    struct smtpd_session *s = arg;
    (void)bev;
    if (s->paused || s->sleeping || s->waiting)
        return;
    smtpd_process_input(s);
}

/* After STARTTLS the last reply may still sit in the socket bufferevent
 * under the TLS filter: close only once that has gone out too. */
static void underlying_write(struct bufferevent *u, void *arg)
{
    if (evbuffer_get_length(bufferevent_get_output(u)) == 0)
        smtpd_session_free(arg);
}

static void underlying_event(struct bufferevent *u, short what, void *arg)
{
    smtpd_session_free(arg);
}

/* All output is gone: close when that was the last word, resume input
 * that waited for room. */
static void output_drained(struct smtpd_session *s, struct bufferevent *bev)
{
    if (s->closing) {
        struct bufferevent *u = bufferevent_get_underlying(bev);
        if (u && evbuffer_get_length(bufferevent_get_output(u)) != 0) {
            bufferevent_setcb(u, NULL, underlying_write, underlying_event, s);
            bufferevent_enable(u, EV_WRITE);
            return;
        }
        smtpd_session_free(s);
        return;
    }
    if (s->paused) {
        s->paused = 0;
        smtpd_process_input(s);
    }
}

static void session_write(struct bufferevent *bev, void *arg)
{
    struct smtpd_session *s = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
        return;
    if (!s->ssl && !s->sleeping)
        bufferevent_disable(bev, EV_WRITE); /* flush_replies writes again */
    output_drained(s, bev);
}

static void flush_replies(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_session *s = arg;
    (void)fd;
    (void)what;
    if (s->ssl || s->sleeping) /* the bufferevent writes (wake_up) */
        return;
    struct evbuffer *out = bufferevent_get_output(s->bev);
    if (evbuffer_get_length(out) != 0) {
        /* (the bufferevent keeps its output's start frozen against
         * anyone draining it but itself, as its own writer does) */
        evbuffer_unfreeze(out, 1);
        int n = evbuffer_write(out, bufferevent_getfd(s->bev));
        evbuffer_freeze(out, 1);
        if (evbuffer_get_length(out) != 0 || n < 0) {
            /* The kernel is full (or the write failed: the bufferevent
             * finds and reports the error itself). */
            bufferevent_enable(s->bev, EV_WRITE);
            return;
        }
    }
    output_drained(s, s->bev);
}

static void session_event(struct bufferevent *bev, short what, void *arg)
{
    struct smtpd_session *s = arg;
    (void)bev;
    if (s->closing) {
        smtpd_session_free(s);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        log_info("timeout after %s from %s", s->last_cmd, smtpd_client(s));
        smtpd_reply(s, "421 4.4.2 %s Error: timeout exceeded", smtpd_hostname());
        smtpd_close_after(s);
        /* The write side may have timed out too: give it a fresh chance. */
        bufferevent_enable(s->bev, EV_WRITE);
        return;
    }
    log_info("lost connection after %s from %s", s->last_cmd, smtpd_client(s));
    smtpd_session_free(s);
}
