/* delivery_proto.c - the SMTP client dialogue (RFC 5321, 2920, 3461, 1870).
 *
 * Each reply is dispatched by the command it answers (a table, not a
 * switch). With PIPELINING, MAIL, every RCPT and DATA go out in one write
 * and the replies are matched in order; without it, one at a time. To a
 * server that offers CHUNKING, BDAT takes DATA's place (delivery_bdat.c).
 *
 * Only the reply codes RFC 5321 4.3.2 names as success for a command count
 * as success (dlv_phase[].ok: 354 to DATA, 250 to end of data, ...). Any
 * other 2xx/3xx is a protocol error - a "250" to DATA means the content was
 * never sent - and a 421 means the server is going away: both drop the
 * connection on the spot (no QUIT, never cached, nothing more read from
 * it, so no later reply is matched to the wrong command) and defer what
 * is still open. The content is streamed from the queue file in 64 KB
 * chunks through the dotstuff encoder, with at most a few hundred KB
 * buffered per connection. */
#include "delivery/delivery_sess.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/mail/addr.h"
#include "common/mail/verp.h"
#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "delivery/delivery_dotstuff.h"
#include "common/util/log.h"

void dlv_proto_said(struct dlv_sess *s, enum dlv_xkind kind, buf_t *out)
{
    buf_printf(out, "host %s said: %s (in reply to %s command)", buf_str(&s->hostip),
               buf_str(&s->rp.reply.text), dlv_phase[kind].command);
}

enum bclass dlv_proto_reply_bclass(const struct dlv_sess *s)
{
    const struct smtp_reply *r = &s->rp.reply;
    return bclass_classify(r->code, r->enh[0] ? r->enh : NULL, buf_str(&r->lines));
}

static int reply_class(const struct dlv_sess *s)
{
    return s->rp.reply.code / 100;
}

/* The session could not be set up with this host (greeting, EHLO, HELO). */
static int handshake_fail(struct dlv_sess *s, enum dlv_xkind kind, int refused)
{
    buf_t r = BUF_INIT;
    char dsn[16];
    struct dlv_job *job = s->job;
    int permanent = reply_class(s) == 5;
    enum dlv_sess_fail fkind =
        (permanent && !conf_bool("smtp_skip_5xx_greeting")) ? SF_BOUNCE : SF_NEXT;

    if (refused)
        buf_printf(&r, "host %s refused to talk to me: %s", buf_str(&s->hostip),
                   buf_str(&s->rp.reply.text));
    else
        dlv_proto_said(s, kind, &r);
    dlv_reply_dsn(&s->rp.reply, dsn, sizeof(dsn));
    if (!permanent && dsn[0] != '4')
        snprintf(dsn, sizeof(dsn), "4.0.0");
    enum bclass cat = dlv_proto_reply_bclass(s);
    buf_set(&job->relay, buf_str(&s->relay));
    s->job = NULL;
    job->sess = NULL;
    dlv_sess_free(s);
    dlv_job_sess_failed(job, fkind, dsn, r.data, cat);
    buf_destroy(&r);
    return -1;
}

static void send_ehlo(struct dlv_sess *s, const char *verb, enum dlv_xkind kind)
{
    buf_t cmd = BUF_INIT;
    buf_printf(&cmd, "%s %s\r\n", verb, dlv_source_helo(s->job));
    dlv_sess_send(s, cmd.data, cmd.len);
    dlv_sess_expect(s, kind, 0);
    buf_destroy(&cmd);
}

void dlv_proto_send_ehlo(struct dlv_sess *s)
{
    send_ehlo(s, dlv_g.lmtp ? "LHLO" : "EHLO", X_EHLO);
}

/* Does the first word of the reply (greeting or EHLO line 1) name us?
 * Then the nexthop routes back to this very system (Postfix's check).
 * Not for LMTP: the LMTP server is usually this very host, by design. */
static int greets_as_me(const struct dlv_sess *s)
{
    if (dlv_g.lmtp)
        return 0;
    const char *me = conf_str("myhostname"), *p = buf_str(&s->rp.reply.lines);
    size_t n = strcspn(p, " \t\n"), mlen = strlen(me);
    if (mlen > 0 && me[mlen - 1] == '.')
        mlen--;
    if (n > 0 && p[n - 1] == '.')
        n--;
    return mlen > 0 && n == mlen && str_nieq(p, me, n);
}

/* A mail loop: bounce (5.4.6, Postfix's words), say QUIT, close. */
static int loop_fail(struct dlv_sess *s, const char *how)
{
    struct dlv_job *job = s->job;
    buf_t r = BUF_INIT;
    log_warn("%s: host %s %s my own hostname %s", job->id, buf_str(&s->relay), how,
             conf_str("myhostname"));
    buf_printf(&r, "mail for %s loops back to myself", job->nexthop);
    buf_set(&job->relay, buf_str(&s->relay));
    s->job = NULL;
    job->sess = NULL;
    dlv_sess_goodbye(s);
    dlv_job_sess_failed(job, SF_BOUNCE, "5.4.6", r.data, BCLASS_ROUTING_ERRORS);
    buf_destroy(&r);
    return -1;
}

static int on_greet(struct dlv_sess *s, size_t i)
{
    if (reply_class(s) != 2)
        return handshake_fail(s, X_GREET, 1);
    if (greets_as_me(s))
        return loop_fail(s, "greeted me with");
    dlv_proto_send_ehlo(s);
    return 0;
}

/* EHLO keywords we act on. */
static void parse_ehlo(struct dlv_sess *s)
{
    char **lines = str_split(buf_str(&s->rp.reply.lines), "\n", NULL);
    size_t k;
    s->feat = 0;
    s->size_limit = 0;
    for (k = 1; lines[k]; k++) { /* line 0 is the server's name */
        char *l = str_trim(lines[k]);
        if (str_ieq(l, "PIPELINING"))
            s->feat |= FEAT_PIPELINING;
        else if (str_ieq(l, "8BITMIME"))
            s->feat |= FEAT_8BITMIME;
        else if (str_ieq(l, "DSN"))
            s->feat |= FEAT_DSN;
        else if (str_ieq(l, "STARTTLS"))
            s->feat |= FEAT_STARTTLS;
        else if (str_ieq(l, "ENHANCEDSTATUSCODES"))
            s->feat |= FEAT_ENHANCED;
        else if (str_ieq(l, "SMTPUTF8"))
            s->feat |= FEAT_SMTPUTF8;
        else if (str_ieq(l, "CHUNKING"))
            s->feat |= FEAT_CHUNKING;
        else if (str_ieq(l, "BINARYMIME"))
            s->feat |= FEAT_BINARYMIME;
        else if (str_nieq(l, "SIZE", 4) && (l[4] == '\0' || l[4] == ' ')) {
            s->feat |= FEAT_SIZE;
            s->size_limit = l[4] ? strtoll(l + 5, NULL, 10) : 0;
            if (s->size_limit < 0)
                s->size_limit = 0;
        }
    }
    strv_free(lines);
}

/* EHLO/HELO accepted: STARTTLS first if the policy says so. */
static int handshake_done(struct dlv_sess *s)
{
    enum dlv_starttls st = dlv_tls_after_ehlo(s);
    if (st == DLV_STARTTLS_SENT)
        return 0;
    if (st == DLV_STARTTLS_GAVE_UP)
        return -1;
    dlv_job_sess_ready(s->job);
    return -1;
}

static int on_ehlo(struct dlv_sess *s, size_t i)
{
    if (reply_class(s) == 5 && !dlv_g.lmtp) { /* LMTP has no HELO to fall back to */
        send_ehlo(s, "HELO", X_HELO);
        return 0;
    }
    if (reply_class(s) != 2)
        return handshake_fail(s, X_EHLO, 0);
    if (greets_as_me(s))
        return loop_fail(s, "replied to HELO/EHLO with");
    parse_ehlo(s);
    return handshake_done(s);
}

static int on_helo(struct dlv_sess *s, size_t i)
{
    if (reply_class(s) != 2)
        return handshake_fail(s, X_HELO, 0);
    if (greets_as_me(s))
        return loop_fail(s, "replied to HELO/EHLO with");
    s->feat = 0;
    s->size_limit = 0;
    return handshake_done(s);
}

static int on_rset(struct dlv_sess *s, size_t i)
{
    buf_t r = BUF_INIT;
    if (reply_class(s) == 2) {
        buf_destroy(&r);
        if (s->rset_ahead) {
            s->rset_ahead = 0; /* MAIL's reply is next, already on its way */
            /* Content only on a proven connection: a server that refused
             * the RSET may still take MAIL, RCPT and BDAT LAST, and the
             * message goes again on the fresh connection (a duplicate). */
            return s->bd.on ? dlv_bdat_begin(s) : 0;
        }
        if (s->verp_next) {
            s->verp_next = 0;
            dlv_proto_start_tx(s); /* the job's next VERP transaction */
        } else {
            dlv_job_sess_ready(s->job);
        }
        return -1;
    }
    s->verp_next = 0;
    dlv_proto_said(s, X_RSET, &r);
    /* reused: the job connects afresh */
    dlv_sess_abort(s, "4.0.0", r.data, dlv_proto_reply_bclass(s));
    buf_destroy(&r);
    return -1;
}

/* Result of a negative reply for one recipient. */
void dlv_proto_rcpt_failed(struct dlv_sess *s, struct dlv_rres *rr, enum dlv_xkind kind)
{
    buf_t r = BUF_INIT;
    char dsn[16];
    dlv_reply_dsn(&s->rp.reply, dsn, sizeof(dsn));
    dlv_proto_said(s, kind, &r);
    dlv_job_set_rcpt(rr, dsn, r.data, dlv_proto_reply_bclass(s));
    buf_destroy(&r);
}

static void send_rcpt(struct dlv_sess *s, size_t i)
{
    struct dlv_job *job = s->job;
    const struct qrcpt *q = &job->env.rcpt[job->res[i].idx];
    buf_t cmd = BUF_INIT;
    buf_printf(&cmd, "RCPT TO:<%s>", q->addr);
    if (s->feat & FEAT_DSN) {
        if (q->notify) {
            buf_puts(&cmd, " NOTIFY=");
            notify_format(q->notify, &cmd);
        }
        if (q->orcpt && *q->orcpt)
            buf_printf(&cmd, " ORCPT=%s", q->orcpt);
    }
    buf_puts(&cmd, "\r\n");
    dlv_sess_send(s, cmd.data, cmd.len);
    dlv_sess_expect(s, X_RCPT, i);
    buf_destroy(&cmd);
}

static void send_data(struct dlv_sess *s)
{
    dlv_sess_send(s, "DATA\r\n", 6);
    dlv_sess_expect(s, X_DATA, 0);
}

/* Non-pipelined: after MAIL or a RCPT reply, the next command. */
static int next_step(struct dlv_sess *s)
{
    if (s->next_rcpt < s->job->tx_end) {
        send_rcpt(s, s->next_rcpt++);
        return 0;
    }
    if (s->naccepted == 0)
        return dlv_sess_tx_end(s);
    if (s->bd.on)
        return dlv_bdat_begin(s);
    send_data(s);
    return 0;
}

static int on_mail(struct dlv_sess *s, size_t i)
{
    if (reply_class(s) != 2) {
        buf_t r = BUF_INIT;
        char dsn[16];
        dlv_reply_dsn(&s->rp.reply, dsn, sizeof(dsn));
        dlv_proto_said(s, X_MAIL, &r);
        dlv_job_set_tx(s->job, dsn, r.data, dlv_proto_reply_bclass(s));
        buf_destroy(&r);
        s->mail_failed = 1;
        if (!(s->feat & FEAT_PIPELINING))
            return dlv_sess_tx_end(s);
        return 0;
    }
    return (s->feat & FEAT_PIPELINING) ? 0 : next_step(s);
}

static int on_rcpt(struct dlv_sess *s, size_t i)
{
    if (!s->mail_failed) {
        if (reply_class(s) == 2) {
            s->job->res[i].accepted = 1;
            s->naccepted++;
        } else {
            dlv_proto_rcpt_failed(s, &s->job->res[i], X_RCPT);
        }
    }
    if (!(s->feat & FEAT_PIPELINING))
        return next_step(s);
    if (s->bd.on && i + 1 == s->job->tx_end) /* the last RCPT reply */
        return dlv_bdat_envelope_done(s);
    return 0;
}

static void body_put(struct dlv_sess *s, struct evbuffer *out, const char *p, size_t n, int last);

static int on_data(struct dlv_sess *s, size_t i)
{
    struct dlv_job *job = s->job;
    if (s->rp.reply.code == 354 && (s->naccepted == 0 || s->mail_failed)) {
        /* A broken pipelining server said "go ahead" anyway: end it. An
         * LMTP server owes no reply to the dot then (none accepted), or
         * one we cannot count on: drop the connection instead. */
        if (dlv_g.lmtp)
            return dlv_sess_abort(s, "4.5.0",
                                  "protocol error: LMTP server accepted DATA "
                                  "without recipients",
                                  BCLASS_PROTOCOL_ERRORS);
        s->ignore_dot = 1;
        dlv_sess_send(s, ".\r\n", 3);
        dlv_sess_expect(s, X_DOT, 0);
        return 0;
    }
    if (s->naccepted == 0 || s->mail_failed)
        return dlv_sess_tx_end(s);
    if (s->rp.reply.code != 354) {
        size_t k;
        for (k = job->tx_first; k < job->tx_end; k++)
            if (job->res[k].accepted)
                dlv_proto_rcpt_failed(s, &job->res[k], X_DATA);
        return dlv_sess_tx_end(s);
    }
    s->state = SS_BODY;
    s->body_left = job->env.content_len;
    s->body_off = job->env.content_off;
    dlv_dotstuff_init(&s->stuff);
    if (job->env.dkim) /* signed at reception: the signature goes first */
        body_put(s, bufferevent_get_output(s->bev), job->env.dkim, strlen(job->env.dkim), 0);
    bufferevent_setwatermark(s->bev, EV_WRITE, BODY_CHUNK, 0);
    /* The write callback sends the rest. Anything the server says from
     * now until the end of the content is read at once: no reply is due,
     * so it can only be a protocol error. */
    return dlv_proto_body_more(s);
}

/* The final reply of a transaction (end of DATA, BDAT LAST) gives each
 * accepted recipient still pending its result; then the job goes back. */
int dlv_proto_final_reply(struct dlv_sess *s, enum dlv_xkind kind)
{
    struct dlv_job *job = s->job;
    size_t k;
    s->nmsgs++;
    s->tx_closed = 1;
    for (k = job->tx_first; k < job->tx_end; k++) {
        struct dlv_rres *rr = &job->res[k];
        if (!rr->accepted || rr->status != QR_PENDING)
            continue;
        if (reply_class(s) == 2) {
            char dsn[16];
            dlv_reply_dsn(&s->rp.reply, dsn, sizeof(dsn));
            dlv_job_set_rcpt(rr, dsn, buf_str(&s->rp.reply.text), BCLASS_OTHER);
        } else {
            dlv_proto_rcpt_failed(s, rr, kind);
        }
    }
    return dlv_sess_tx_end(s);
}

/* LMTP (RFC 2033 4.2): one reply per accepted recipient, in RCPT order.
 * Each gives that recipient its result; the last one ends the
 * transaction. */
void dlv_proto_lmtp_expect(struct dlv_sess *s, int follow, size_t skip)
{
    struct dlv_job *job = s->job;
    for (size_t k = job->tx_first; k < job->tx_end; k++) {
        if (k == skip || !job->res[k].accepted || job->res[k].status != QR_PENDING)
            continue;
        if (follow)
            dlv_sess_expect_next(s, X_LMTP, k);
        else
            dlv_sess_expect(s, X_LMTP, k);
    }
}

int dlv_proto_lmtp_reply(struct dlv_sess *s, size_t i)
{
    struct dlv_rres *rr = &s->job->res[i];
    if (reply_class(s) == 2) {
        char dsn[16];
        dlv_reply_dsn(&s->rp.reply, dsn, sizeof(dsn));
        dlv_job_set_rcpt(rr, dsn, buf_str(&s->rp.reply.text), BCLASS_OTHER);
    } else {
        dlv_proto_rcpt_failed(s, rr, X_LMTP);
    }
    if (s->xhead < s->xn) /* more recipients' replies to come */
        return 0;
    s->nmsgs++;
    s->tx_closed = 1;
    return dlv_sess_tx_end(s);
}

static int on_dot(struct dlv_sess *s, size_t i)
{
    if (s->ignore_dot) {
        s->tx_closed = 1;
        return dlv_sess_tx_end(s);
    }
    return dlv_proto_final_reply(s, X_DOT);
}

static int on_quit(struct dlv_sess *s, size_t i)
{
    dlv_sess_free(s);
    return -1;
}

static int (*const handlers[X_COUNT])(struct dlv_sess *, size_t) = {
    [X_GREET] = on_greet,
    [X_EHLO] = on_ehlo,
    [X_HELO] = on_helo,
    [X_RSET] = on_rset,
    [X_MAIL] = on_mail,
    [X_RCPT] = on_rcpt,
    [X_DATA] = on_data,
    [X_DOT] = on_dot,
    [X_QUIT] = on_quit,
    [X_STARTTLS] = dlv_tls_on_starttls,
    [X_BDAT] = dlv_bdat_on_chunk,
    [X_BDAT_LAST] = dlv_bdat_on_last,
    [X_LMTP] = dlv_proto_lmtp_reply,
};

/* A reply this command does not allow (or one that came before the
 * command was sent): the server did not do what we asked, whatever it
 * claims. Drop the connection, defer; the log says what the server did. */
static int proto_violation(struct dlv_sess *s, enum dlv_xkind kind)
{
    buf_t r = BUF_INIT, ok = BUF_INIT;
    const char *cmd = dlv_phase_command(kind), *id = s->job ? s->job->id : "-";

    dlv_reply_ok_text(dlv_phase[kind].ok, &ok);
    if (s->premature) {
        buf_printf(&r,
                   "host %s said: %s (before our %s command was sent); protocol error: "
                   "the server must wait for the command",
                   buf_str(&s->hostip), buf_str(&s->rp.reply.text), cmd);
        log_warn("%s: protocol error: host %s sent a reply before our %s command; "
                 "connection dropped",
                 id, buf_str(&s->relay), cmd);
    } else {
        dlv_proto_said(s, kind, &r);
        buf_printf(&r, "; protocol error: expected %s", ok.data);
        log_warn("%s: protocol error: host %s replied %d to %s (expected %s); "
                 "connection dropped",
                 id, buf_str(&s->relay), s->rp.reply.code, cmd, ok.data);
    }
    if (kind == X_STARTTLS)
        dlv_tls_plain_retry(s);
    dlv_sess_abort(s, "4.5.0", r.data, BCLASS_PROTOCOL_ERRORS);
    buf_destroy(&ok);
    buf_destroy(&r);
    return -1;
}

/* 421: the server closes the connection (RFC 5321 3.8). Whatever else the
 * reply would mean here, everything still open is deferred with its text
 * and the connection is dropped - never cached, never read again. */
static int proto_closing(struct dlv_sess *s, enum dlv_xkind kind)
{
    buf_t r = BUF_INIT;
    char dsn[16];
    dlv_reply_dsn(&s->rp.reply, dsn, sizeof(dsn)); /* 4.x.x: class checked */
    dlv_proto_said(s, kind, &r);
    dlv_sess_abort(s, dsn, r.data, dlv_proto_reply_bclass(s));
    buf_destroy(&r);
    return -1;
}

int dlv_proto_reply(struct dlv_sess *s)
{
    struct dlv_xwait w;
    int code = s->rp.reply.code;
    if (s->xhead >= s->xn)
        log_panic("smtp: reply without a pending command");
    w = s->xq[s->xhead++];
    if (s->xhead < s->xn)
        dlv_sess_arm(s, dlv_phase[s->xq[s->xhead].kind].timeout_param);
    else
        evtimer_del(s->timer);
    if (w.kind == X_QUIT)
        return handlers[w.kind](s, w.i);
    if ((w.kind == X_BDAT || w.kind == X_BDAT_LAST) && dlv_bdat_early(s, w.i))
        s->premature = 1;
    if (s->premature || dlv_reply_verdict(code, dlv_phase[w.kind].ok) == SMTP_V_PROTO)
        return proto_violation(s, w.kind);
    /* A 421 greeting or EHLO/HELO reply already ends the session there. */
    if (code == 421 && w.kind != X_GREET && w.kind != X_EHLO && w.kind != X_HELO)
        return proto_closing(s, w.kind);
    return handlers[w.kind](s, w.i);
}

static void append_xtext_param(buf_t *cmd, const char *name, const char *value)
{
    buf_printf(cmd, " %s=", name);
    xtext_encode(value, cmd);
}

/* The envelope sender of this transaction: the sender, or for VERP mail
 * the return path built for its one recipient (common/mail/verp.h). */
static void mail_from(struct dlv_job *job, buf_t *out)
{
    const char *sender = job->env.sender ? job->env.sender : "";
    if (!job->env.verp || !*sender || job->tx_end != job->tx_first + 1) {
        buf_puts(out, sender);
        return;
    }
    const char *rcpt = job->env.rcpt[job->res[job->tx_first].idx].addr;
    verp_encode(job->env.verp_return ? job->env.verp_return : sender, rcpt, job->env.verp, out);
    log_debug("%s: to=<%s>, return path <%s>", job->id, rcpt, buf_str(out));
}

/* MAIL FROM with the parameters the server understands. */
static void send_mail(struct dlv_sess *s)
{
    struct dlv_job *job = s->job;
    buf_t cmd = BUF_INIT;
    buf_puts(&cmd, "MAIL FROM:<");
    mail_from(job, &cmd);
    buf_putc(&cmd, '>');
    if (s->feat & FEAT_SIZE)
        buf_printf(&cmd, " SIZE=%lld", dlv_mime_size(job));
    dlv_mime_mail_params(s, &cmd);
    if (s->feat & FEAT_DSN) {
        if (job->env.ret == RET_FULL || job->env.ret == RET_HDRS)
            buf_puts(&cmd, job->env.ret == RET_FULL ? " RET=FULL" : " RET=HDRS");
        if (job->env.envid && *job->env.envid)
            append_xtext_param(&cmd, "ENVID", job->env.envid);
    }
    buf_puts(&cmd, "\r\n");
    dlv_sess_send(s, cmd.data, cmd.len);
    dlv_sess_expect(s, X_MAIL, 0);
    buf_destroy(&cmd);
}

void dlv_proto_start_tx(struct dlv_sess *s)
{
    struct dlv_job *job = s->job;
    size_t k;

    if (!dlv_job_tx_window(job)) { /* nobody left (cannot happen) */
        s->in_tx = 1;
        dlv_sess_tx_end(s);
        return;
    }
    s->in_tx = 1;
    s->mail_failed = s->ignore_dot = s->tx_closed = 0;
    s->bd.on = dlv_bdat_wanted(s);
    s->naccepted = 0;
    s->next_rcpt = job->tx_first;
    for (k = job->tx_first; k < job->tx_end; k++)
        job->res[k].accepted = 0;
    if (dlv_mime_prepare(s) < 0) {
        dlv_sess_tx_end(s);
        return;
    }
    if (s->size_limit > 0 && dlv_mime_size(job) > s->size_limit) {
        buf_t r = BUF_INIT;
        buf_printf(&r, "message size exceeds remote limit: %lld bytes > %lld bytes of server %s",
                   dlv_mime_size(job), s->size_limit, buf_str(&s->hostip));
        dlv_job_set_pending(job, "5.3.4", r.data, BCLASS_CONTENT_RELATED);
        buf_destroy(&r);
        dlv_sess_tx_end(s);
        return;
    }
    send_mail(s);
    if (!(s->feat & FEAT_PIPELINING))
        return;
    for (k = job->tx_first; k < job->tx_end; k++)
        send_rcpt(s, k);
    s->next_rcpt = job->tx_end;
    if (s->bd.on) {
        if (!s->rset_ahead)          /* else after the RSET's 250 (on_rset) */
            (void)dlv_bdat_begin(s); /* the first chunk goes in the same flight */
    } else
        send_data(s);
}

/* Encode one chunk straight into the output buffer (no copy). */
static void body_put(struct dlv_sess *s, struct evbuffer *out, const char *p, size_t n, int last)
{
    struct evbuffer_iovec v;
    size_t room = last ? dlv_dotstuff_finish_bound(&s->stuff) : dlv_dotstuff_bound(&s->stuff, n);
    if (evbuffer_reserve_space(out, (ev_ssize_t)room, &v, 1) < 1 || v.iov_len < room)
        log_fatal("cannot buffer message content (out of memory)");
    v.iov_len = last ? dlv_dotstuff_finish(&s->stuff, v.iov_base)
                     : dlv_dotstuff_chunk(&s->stuff, p, n, v.iov_base);
    if (evbuffer_commit_space(out, &v, 1) < 0)
        log_panic("smtp: evbuffer_commit_space failed");
}

int dlv_proto_body_read_error(struct dlv_sess *s, int err)
{
    buf_t r = BUF_INIT;
    buf_printf(&r, "error reading queue file: %s", err ? strerror(err) : "unexpected end of file");
    log_warn("%s: %s", s->job->id, r.data);
    /* The server got a partial message: never let it end with a dot. */
    dlv_sess_abort(s, "4.3.0", r.data, BCLASS_OTHER);
    buf_destroy(&r);
    return -1;
}

int dlv_proto_body_more(struct dlv_sess *s)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    char chunk[BODY_CHUNK];

    while (s->body_left > 0 && evbuffer_get_length(out) < BODY_HIGH) {
        size_t want = s->body_left < BODY_CHUNK ? (size_t)s->body_left : BODY_CHUNK;
        ssize_t n = pread(s->job->content_fd, chunk, want, (off_t)s->body_off);
        if (n <= 0)
            return dlv_proto_body_read_error(s, n < 0 ? errno : 0);
        size_t len = (size_t)n;
        const char *p = dlv_mime_body_filter(s->job, chunk, &len); /* 7-bit conversion, if any */
        body_put(s, out, p, len, 0);
        s->body_left -= n;
        s->body_off += n;
    }
    dlv_sess_arm(s, "smtp_data_xfer_timeout");
    if (s->body_left > 0)
        return 0;
    size_t len;
    const char *p = dlv_mime_body_end(s->job, &len);
    if (len)
        body_put(s, out, p, len, 0);
    body_put(s, out, NULL, 0, 1); /* [CRLF] "." CRLF */
    bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
    s->state = SS_CMD;
    if (dlv_g.lmtp)
        dlv_proto_lmtp_expect(s, 0, SIZE_MAX);
    else
        dlv_sess_expect(s, X_DOT, 0);
    dlv_sess_arm(s, "smtp_data_done_timeout");
    return 0;
}
