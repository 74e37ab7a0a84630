/* smtpd_data.c - DATA: stream message content into the queue file.
 *
 * A byte-level state machine finds the end of data, which is ONLY the raw
 * sequence CR LF "." CR LF (or "." CR LF as the very first line): a bare
 * LF or bare CR ends a content line (normalised to CRLF, rejected, or kept
 * per smtpd_forbid_bare_newline) but never starts a line that can end the
 * message - otherwise "\n.\n" tricks would let a client smuggle a second
 * message past a downstream server that parses differently. Lines that
 * start with "." are unstuffed; lines longer than line_length_limit are
 * split with CRLF as Postfix does. Content goes to the queue file as it
 * arrives (qfile_write buffers), so no message is ever held in memory. */
#include "smtpd/smtpd.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/workq.h"
#include "common/conf.h"
#include "common/log.h"
#include "common/server.h"

#define FLUSH_AT 65536
#define HDR_MAX 1000   /* header bytes kept for the Message-ID scan */

enum dstate { D_BOL, D_DOT, D_DOTCR, D_TEXT, D_CR };
enum bare_mode { BARE_NORMALIZE, BARE_REJECT, BARE_KEEP };

struct smtpd_data {
    struct qfile_w *qf;
    enum dstate st;
    int real_bol;          /* line start after a real CRLF (or first line) */
    long long linelen, line_limit;
    long long size, size_limit;
    int too_big, write_err;
    long long hdr_size, hdr_limit;
    int hdr_too_big;       /* header section past header_size_limit */
    int hops;              /* the message's own Received:/Delivered-To: */
    long long hop_limit;   /* hopcount_limit */
    enum bare_mode bare_mode;
    char bare;             /* first bare newline seen: 'L' or 'C' */
    buf_t out;             /* content not yet handed to qfile_write */
    int in_headers, in_msgid;
    buf_t hdr, msgid;
    char *message_id;
};

/* Content is no longer stored once the message is known to be refused:
 * the rest is read to the end of data and dropped. */
static int discarding(const struct smtpd_data *d)
{
    return d->too_big || d->write_err || d->bare || d->hdr_too_big || d->hops > d->hop_limit;
}

static void data_free(struct smtpd_session *s)
{
    struct smtpd_data *d = s->data;
    buf_free(&d->out);
    buf_free(&d->hdr);
    buf_free(&d->msgid);
    free(d->message_id);
    free(d);
    s->data = NULL;
}

void smtpd_data_abort(struct smtpd_session *s)
{
    if (!s->data)
        return;
    if (s->data->qf)
        qfile_abort(s->data->qf);
    data_free(s);
    s->state = SS_CMD;
}

/* ---- Message-ID scan over the header lines as they are stored ---- */

static void msgid_finish(struct smtpd_data *d)
{
    if (!d->in_msgid)
        return;
    d->in_msgid = 0;
    char *v = str_trim(d->msgid.data ? d->msgid.data : (char *)"");
    if (*v && !d->message_id)
        d->message_id = xstrdup(v);
}

static void header_line_done(struct smtpd_data *d)
{
    const char *l = buf_str(&d->hdr);
    if (d->hdr.len == 0) {
        msgid_finish(d);
        d->in_headers = 0;
    } else if (l[0] == ' ' || l[0] == '\t') {
        if (d->in_msgid && d->msgid.len < HDR_MAX)
            buf_append(&d->msgid, l, d->hdr.len);
    } else {
        msgid_finish(d);
        if (!strchr(l, ':')) {
            d->in_headers = 0;
        } else if (str_nieq(l, "Received:", 9) || str_nieq(l, "Delivered-To:", 13)) {
            d->hops++; /* as Postfix cleanup counts hops: a loop ends here */
        } else if (str_nieq(l, "Message-ID:", 11)) {
            d->in_msgid = 1;
            buf_set(&d->msgid, l + 11);
        }
    }
    buf_reset(&d->hdr);
}

/* ---- content output ---- */

static void out_flush(struct smtpd_data *d)
{
    if (d->out.len && !discarding(d) && qfile_write(d->qf, d->out.data, d->out.len) < 0)
        d->write_err = 1;
    buf_reset(&d->out);
}

static void emit(struct smtpd_data *d, const void *p, size_t n)
{
    d->size += (long long)n;
    if (d->size_limit > 0 && d->size > d->size_limit)
        d->too_big = 1;
    if (d->in_headers && (d->hdr_size += (long long)n) > d->hdr_limit)
        d->hdr_too_big = 1;
    if (discarding(d))
        return; /* keep reading to the end, store nothing more */
    buf_append(&d->out, p, n);
    if (d->out.len >= FLUSH_AT)
        out_flush(d);
}

static void emit_text(struct smtpd_data *d, const unsigned char *p, size_t n)
{
    while (n > 0) {
        if (d->linelen >= d->line_limit) {
            emit(d, "\r\n", 2); /* split an over-long line, as Postfix does */
            d->linelen = 0;
        }
        size_t room = (size_t)(d->line_limit - d->linelen);
        size_t k = n < room ? n : room;
        emit(d, p, k);
        if (d->in_headers && d->hdr.len < HDR_MAX)
            buf_append(&d->hdr, p, k < HDR_MAX ? k : HDR_MAX);
        d->linelen += (long long)k;
        p += k;
        n -= k;
    }
}

/* A line ended: real CRLF, or a bare LF/CR ('L'/'C'). */
static void end_line(struct smtpd_data *d, char bare)
{
    if (bare && d->bare_mode == BARE_REJECT && !d->bare) {
        d->bare = bare;
    } else if (bare && d->bare_mode == BARE_KEEP) {
        emit(d, bare == 'L' ? "\n" : "\r", 1);
    } else {
        emit(d, "\r\n", 2);
    }
    if (d->in_headers)
        header_line_done(d);
    d->linelen = 0;
    d->real_bol = !bare;
    d->st = D_BOL;
}

static void data_finish(struct smtpd_session *s);

/* One byte in the states where it is not ordinary text; returns 1 when it
 * completed the end-of-data mark. */
static int step(struct smtpd_data *d, unsigned char c)
{
    switch (d->st) {
    case D_BOL:
        if (c == '.') {
            d->st = D_DOT;
            return 0;
        }
        d->st = D_TEXT;
        return step(d, c);
    case D_DOT:
        if (c == '\r' && d->real_bol) {
            d->st = D_DOTCR;
            return 0;
        }
        d->st = D_TEXT; /* the stuffed dot is dropped */
        return step(d, c);
    case D_DOTCR:
        if (c == '\n')
            return 1;
        end_line(d, 'C'); /* "." then a bare CR: an empty line */
        return step(d, c);
    case D_CR:
        if (c == '\n') {
            end_line(d, 0);
            return 0;
        }
        end_line(d, 'C');
        return step(d, c);
    case D_TEXT:
        if (c == '\r')
            d->st = D_CR;
        else if (c == '\n')
            end_line(d, 'L');
        else
            emit_text(d, &c, 1);
        return 0;
    }
    return 0;
}

size_t smtpd_data_feed(struct smtpd_session *s, const unsigned char *p, size_t n)
{
    struct smtpd_data *d = s->data;
    size_t i = 0;
    while (i < n) {
        if (d->st == D_TEXT) { /* fast path: a run of ordinary bytes */
            size_t j = i;
            while (j < n && p[j] != '\r' && p[j] != '\n')
                j++;
            if (j > i) {
                emit_text(d, p + i, j - i);
                i = j;
                continue;
            }
        }
        if (step(d, p[i++])) {
            data_finish(s);
            break;
        }
    }
    return i;
}

/* ---- start and end ---- */

static void fill_envelope(struct smtpd_session *s)
{
    struct qenv *e = &s->env;
    gettimeofday(&e->arrival, NULL);
    qenv_set(&e->client_name, s->name);
    qenv_set(&e->client_addr, s->addr);
    qenv_set(&e->helo, s->helo ? s->helo : "");
    /* Postfix's protocol names: ESMTP + S (TLS) + A (AUTH), RFC 3848;
     * UTF8SMTP for SMTPUTF8 mail (RFC 6531 4.3) */
    buf_t proto = BUF_INIT;
    buf_puts(&proto, !s->esmtp ? "SMTP" : e->smtputf8 ? "UTF8SMTP" : "ESMTP");
    if (s->tls)
        buf_putc(&proto, 'S');
    if (s->sasl_username && s->esmtp)
        buf_putc(&proto, 'A');
    qenv_set(&e->proto, buf_str(&proto));
    buf_free(&proto);
    if (s->sasl_username) {
        qenv_set(&e->sasl_method, s->sasl_method);
        qenv_set(&e->sasl_username, s->sasl_username);
    }
    if (!e->sender)
        qenv_set(&e->sender, "");
}

static void received_header(struct smtpd_session *s, buf_t *b)
{
    char date[80];
    time_t now = s->env.arrival.tv_sec;
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z (%Z)", &tm);
    buf_printf(b, "Received: from %s (%s [%s%s])\r\n", s->helo ? s->helo : s->name, s->name,
               s->addr_v6 ? "IPv6:" : "", s->addr);
    if (s->tls_received && conf_bool("smtpd_tls_received_header"))
        buf_printf(b, "\t%s\r\n\t(No client certificate requested)\r\n", s->tls_received);
    buf_printf(b, "\tby %s (%s) with %s id %s", smtpd_hostname(), conf_str("mail_name"),
               s->env.proto, s->env.id);
    if (s->env.nrcpt == 1)
        buf_printf(b, "\r\n\tfor <%s>; %s\r\n", s->env.rcpt[0].addr, date);
    else
        buf_printf(b, "; %s\r\n", date);
}

static enum bare_mode bare_mode(void)
{
    const char *m = conf_str("smtpd_forbid_bare_newline");
    if (str_ieq(m, "reject"))
        return BARE_REJECT;
    if (str_ieq(m, "no"))
        return BARE_KEEP;
    return BARE_NORMALIZE;
}

void smtpd_data_begin(struct smtpd_session *s)
{
    buf_t err = BUF_INIT, rh = BUF_INIT;
    fill_envelope(s);
    struct qfile_w *qf = qfile_create(s->d->srv->spool, &s->env, &err);
    if (!qf) {
        log_warn("%s: queue file create failed: %s", smtpd_client(s), buf_str(&err));
        smtpd_reply(s, "451 4.3.0 Error: queue file write error");
        buf_free(&err);
        return;
    }
    if (s->sasl_username)
        log_info("%s: client=%s, sasl_method=%s, sasl_username=%s", s->env.id, smtpd_client(s),
                 s->sasl_method, s->sasl_username);
    else
        log_info("%s: client=%s", s->env.id, smtpd_client(s));
    struct smtpd_data *d = xcalloc(1, sizeof(*d));
    d->qf = qf;
    d->st = D_BOL;
    d->real_bol = 1;
    d->in_headers = 1;
    d->line_limit = conf_int("line_length_limit");
    d->size_limit = conf_int("message_size_limit");
    d->hdr_limit = conf_int("header_size_limit");
    d->hop_limit = conf_int("hopcount_limit");
    d->bare_mode = bare_mode();
    if (d->bare_mode == BARE_REJECT && smtpd_check_bare_exempt(s->addr))
        d->bare_mode = BARE_NORMALIZE;
    s->data = d;
    received_header(s, &rh);
    if (qfile_write(qf, rh.data, rh.len) < 0)
        d->write_err = 1;
    buf_free(&rh);
    buf_free(&err);
    s->state = SS_DATA;
    smtpd_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/* "data=0/1" in the disconnect statistics: a DATA that ended in an error
 * reply does not count as a success. */
static void data_stats(struct smtpd_session *s)
{
    if (s->last_code >= 400) {
        int slot = smtpd_cmd_lookup("DATA");
        if (slot >= 0 && s->cmd_ok[slot] > 0)
            s->cmd_ok[slot]--;
    }
}

/* A message whose fsync runs on a worker thread. The session may go away
 * meanwhile (s becomes NULL): the message is durable all the same and qmgr
 * is told; the client, never told 250, may send it again (at least once). */
struct smtpd_commit {
    struct smtpd_session *s;
    struct qfile_w *qf;
    char id[QID_LEN + 1];
    char *message_id;
};

static void commit_run(void *arg)
{
    struct smtpd_commit *c = arg;
    qfile_commit_sync(c->qf);
}

static void commit_done(void *arg)
{
    struct smtpd_commit *c = arg;
    struct smtpd_session *s = c->s;
    buf_t err = BUF_INIT;
    int rc = qfile_commit_end(c->qf, &err);
    if (rc == 0) {
        if (c->message_id)
            log_info("%s: message-id=%s", c->id, c->message_id);
        smtpd_notify_new(c->id);
    } else {
        log_warn("%s: queue file commit failed: %s", c->id, buf_str(&err));
    }
    if (s) {
        s->commit = NULL;
        if (rc == 0)
            smtpd_reply(s, "250 2.0.0 Ok: queued as %s", c->id);
        else
            smtpd_reply(s, "451 4.3.0 Error: queue file write error");
        data_stats(s);
        smtpd_wait_end(s);
    }
    buf_free(&err);
    free(c->message_id);
    free(c);
}

/* The session goes away while its message is being flushed. */
void smtpd_data_detach_commit(struct smtpd_session *s)
{
    if (s->commit) {
        s->commit->s = NULL;
        s->commit = NULL;
    }
}

/* Make the file durable, then answer 250 (commit_done). The session reads
 * no further commands until then, so pipelining stays in order. */
static void data_commit(struct smtpd_session *s, struct smtpd_data *d, buf_t *err)
{
    struct qfile_w *qf = d->qf;
    d->qf = NULL;
    if (d->message_id)
        qfile_w_set_message_id(qf, d->message_id);
    if (qfile_commit_begin(qf, err) < 0) {
        log_warn("%s: queue file commit failed: %s", s->env.id, buf_str(err));
        smtpd_reply(s, "451 4.3.0 Error: queue file write error");
        return;
    }
    struct smtpd_commit *c = xcalloc(1, sizeof(*c));
    c->s = s;
    c->qf = qf;
    str_lcpy(c->id, s->env.id, sizeof(c->id));
    c->message_id = d->message_id ? xstrdup(d->message_id) : NULL;
    s->commit = c;
    smtpd_wait_begin(s);
    workq_submit(s->d->commitq, commit_run, commit_done, c);
}

/* Commit or discard, and answer the final dot. */
static void data_finish(struct smtpd_session *s)
{
    struct smtpd_data *d = s->data;
    buf_t err = BUF_INIT;
    const char *id = s->env.id;
    out_flush(d);
    s->last_cmd = "END-OF-MESSAGE";
    if (d->too_big) {
        smtpd_reply(s, "552 5.3.4 Error: message file too big");
    } else if (d->hdr_too_big) {
        log_info("%s: reject: header size exceeds header_size_limit=%lld from %s", id,
                 d->hdr_limit, smtpd_client(s));
        smtpd_reply(s, "552 5.3.4 Message header size exceeds limit");
    } else if (d->hops > d->hop_limit) {
        log_info("%s: reject: END-OF-MESSAGE from %s: 554 5.4.0 Error: too many hops "
                 "(%d Received:/Delivered-To: headers, hopcount_limit=%lld); from=<%s>", id,
                 smtpd_client(s), d->hops, d->hop_limit, s->env.sender ? s->env.sender : "");
        smtpd_reply(s, "554 5.4.0 Error: too many hops");
    } else if (d->bare) {
        log_info("%s: reject: bare <%s> received from %s", id, d->bare == 'L' ? "LF" : "CR",
                 smtpd_client(s));
        smtpd_reply(s, "550 5.5.2 Error: bare <%s> received", d->bare == 'L' ? "LF" : "CR");
    } else if (d->write_err) {
        log_warn("%s: queue file write error", id);
        smtpd_reply(s, "451 4.3.0 Error: queue file write error");
    } else {
        data_commit(s, d, &err);
    }
    if (!s->commit)
        data_stats(s);
    buf_free(&err);
    smtpd_txn_reset(s); /* aborts the file unless it was committed */
    s->state = SS_CMD;
}
