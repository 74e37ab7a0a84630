/* smtpd_data.c - DATA and BDAT: message content into the queue file.
 *
 * The bytes go through the content parser (smtpd_dataparse.c: end of
 * data, dot-unstuffing after CRLF only, bare CR/LF and NUL rules, long
 * lines, the header scan) and from there to the queue file as they arrive
 * (qfile_write buffers), so no message is ever held in memory. Once the
 * parser has a verdict against the message, nothing more is stored; the
 * rest is read to its end and dropped. At the end the file is made durable
 * on a worker thread and only then answered 250 (the group commit path,
 * the same for DATA and for BDAT LAST). Mail to be DKIM-signed is hashed
 * as it is stored, and signed on the signing pool before the commit
 * (smtpd_dkim.c): the signature is in the file before the 250. */
#include "smtpd/smtpd.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/glue/dkim.h"
#include "common/mail/mime7.h"
#include "common/util/alloc.h"
#include "common/util/workq.h"
#include "common/mail/conf.h"
#include "common/mail/metric.h"
#include "common/util/log.h"
#include "common/mail/server.h"
#include "smtpd/smtpd_cmdparse.h"
#include "smtpd/smtpd_dataparse.h"

struct smtpd_data {
    struct qfile_w *qf;
    struct dataparse p;
    int write_err;
    int bdat;              /* BDAT transaction (no dots, chunks) */
    struct dkim_msg *dkim; /* signer, when this mail is signed */
    struct mime7 *m7;      /* its 8-bit scan (smtpd_dkim.c converts) */
};

static void data_free(struct smtpd_session *s)
{
    struct smtpd_data *d = s->data;
    smtpd_dataparse_destroy(&d->p);
    dkim_msg_free(d->dkim);
    mime7_free(d->m7);
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

/* The parser's output: stored unless the message is refused already. */
static void store(void *arg, const void *p, size_t n)
{
    struct smtpd_data *d = arg;
    if (d->write_err || smtpd_dataparse_verdict(&d->p) != DP_OK)
        return;
    if (qfile_write(d->qf, p, n) < 0)
        d->write_err = 1;
    if (d->dkim)
        dkim_msg_feed(d->dkim, p, n);
    if (d->m7)
        mime7_feed(d->m7, p, n, NULL);
}

static void data_finish(struct smtpd_session *s);

size_t smtpd_data_feed(struct smtpd_session *s, const unsigned char *p, size_t n)
{
    size_t used = smtpd_dataparse_feed(&s->data->p, p, n);
    if (s->data->p.done)
        data_finish(s);
    return used;
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
    buf_destroy(&proto);
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
    if (s->local) {
        smtpd_local_received(s, date, b);
        return;
    }
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

static enum smtpd_dataparse_bare bare_mode(const struct smtpd_session *s)
{
    const char *m = conf_str("smtpd_forbid_bare_newline");
    if (str_ieq(m, "reject"))
        return smtpd_check_bare_exempt(s->addr) ? DP_BARE_NORMALIZE : DP_BARE_REJECT;
    if (str_ieq(m, "no"))
        return DP_BARE_KEEP;
    return DP_BARE_NORMALIZE;
}

int smtpd_data_open(struct smtpd_session *s, int bdat)
{
    buf_t err = BUF_INIT, rh = BUF_INIT;
    fill_envelope(s);
    struct qfile_w *qf = qfile_create(s->d->srv->spool, &s->env, &err);
    if (!qf) {
        log_warn("%s: queue file create failed: %s", smtpd_client(s), buf_str(&err));
        buf_destroy(&err);
        return -1;
    }
    if (s->local)
        smtpd_local_log(s);
    else if (s->sasl_username)
        log_info("%s: client=%s, sasl_method=%s, sasl_username=%s", s->env.id, smtpd_client(s),
                 s->sasl_method, s->sasl_username);
    else
        log_info("%s: client=%s", s->env.id, smtpd_client(s));
    struct smtpd_data *d = xcalloc(1, sizeof(*d));
    struct smtpd_dataparse_config cf = {
        .dot = !bdat,
        .bare = bare_mode(s),
        .line_limit = conf_int("line_length_limit"),
        .size_limit = conf_int("message_size_limit"),
        .hdr_limit = conf_int("header_size_limit"),
        .hop_limit = conf_int("hopcount_limit"),
        .drop_header = conf_str("source_pool_header"),
        .drop_header2 = conf_str("priority_header"),
    };
    d->qf = qf;
    d->bdat = bdat;
    smtpd_dataparse_init(&d->p, &cf, store, d);
    s->data = d;
    d->dkim = smtpd_dkim_begin(s);
    d->m7 = d->dkim ? mime7_new() : NULL;
    received_header(s, &rh);
    store(d, rh.data, rh.len);
    buf_destroy(&rh);
    buf_destroy(&err);
    return 0;
}

void smtpd_data_begin(struct smtpd_session *s)
{
    if (s->bdat_state != SMTPD_BDAT_NONE) { /* RFC 3030: never both in one transaction */
        smtpd_reply(s, "503 5.5.1 Error: DATA after BDAT");
        return;
    }
    if (smtpd_data_open(s, 0) < 0) {
        smtpd_reply(s, "451 4.3.0 Error: queue file write error");
        return;
    }
    s->state = SS_DATA;
    smtpd_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/* The "disconnect from" statistics: a DATA counted as a success for its
 * 354 is taken back when the message is refused; a BDAT chunk answered
 * after its octets (not by the command handler) is counted here. */
static void data_stats(struct smtpd_session *s, int verb)
{
    int ok = s->last_code > 0 && s->last_code < 400;
    if (verb == SMTP_VERB_DATA && !ok && s->cmd_ok[verb] > 0)
        s->cmd_ok[verb]--;
    else if (verb == SMTP_VERB_BDAT && ok)
        s->cmd_ok[verb]++;
}

/* A message whose fsync runs on a worker thread. The session may go away
 * meanwhile (s becomes NULL): the message is durable all the same and qmgr
 * is told; the client, never told 250, may send it again (at least once). */
struct smtpd_commit {
    struct smtpd_session *s;
    struct smtpd *d;
    struct qfile_w *qf;
    struct smtpd_dkim_job *dkim; /* signatures still to make, or NULL */
    char id[QID_LEN + 1];
    char *message_id;
    int verb;                    /* SMTP_VERB_DATA or SMTP_VERB_BDAT */
    struct smtpd_events *events; /* reception events, sent once durable */
};

static void commit_run(void *arg)
{
    struct smtpd_commit *c = arg;
    qfile_commit_sync(c->qf);
}

/* The answer, once the message is durable (reply NULL) or refused. */
static void commit_answer(struct smtpd_commit *c, const char *refusal)
{
    struct smtpd_session *s = c->s;
    if (!refusal)
        metric_add(METRIC_RECEIVED, 1, NULL, NULL);
    if (s) {
        s->commit = NULL;
        if (!refusal)
            smtpd_reply(s, "250 2.0.0 Ok: queued as %s", c->id);
        else
            smtpd_reply(s, "%s", refusal);
        data_stats(s, c->verb);
        smtpd_wait_end(s);
    }
    smtpd_dkim_job_free(c->dkim);
    smtpd_event_free(c->events);
    free(c->message_id);
    free(c);
}

static void commit_done(void *arg)
{
    struct smtpd_commit *c = arg;
    buf_t err = BUF_INIT;
    int rc = qfile_commit_end(c->qf, &err);
    if (rc == 0) {
        if (c->message_id)
            log_info("%s: message-id=%s", c->id, c->message_id);
        smtpd_notify_new(c->id);
        smtpd_event_send(c->events);
    } else {
        log_warn("%s: queue file commit failed: %s", c->id, buf_str(&err));
    }
    buf_destroy(&err);
    commit_answer(c, rc == 0 ? NULL : "451 4.3.0 Error: queue file write error");
}

/* After signing: flush the file on a worker (or here, when smtpd is on
 * its way out and the pool takes no more work). */
static void commit_start(struct smtpd_commit *c)
{
    buf_t err = BUF_INIT;
    if (qfile_commit_begin(c->qf, &err) < 0) {
        log_warn("%s: queue file commit failed: %s", c->id, buf_str(&err));
        buf_destroy(&err);
        commit_answer(c, "451 4.3.0 Error: queue file write error");
        return;
    }
    buf_destroy(&err);
    if (c->d->finished) {
        commit_run(c);
        commit_done(c);
        return;
    }
    workq_submit(c->d->commitq, commit_run, commit_done, c);
}

static void sign_run(void *arg)
{
    struct smtpd_commit *c = arg;
    smtpd_dkim_job_run(c->dkim);
}

/* Signed (or not): store the fields and commit, or refuse the message -
 * never a 250 for mail that should have been signed and was not. */
static void sign_done(void *arg)
{
    struct smtpd_commit *c = arg;
    if (smtpd_dkim_job_finish(c->dkim, c->id, c->qf) < 0) {
        qfile_abort(c->qf);
        commit_answer(c, "451 4.7.0 Error: DKIM signing failed");
        return;
    }
    commit_start(c);
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
/* The first step of the commit for mail not signed, as the session
 * ends its transaction (no wait yet): -1 when refused (answered). */
static int commit_begin_now(struct smtpd_session *s, struct smtpd_commit *c)
{
    buf_t err = BUF_INIT;
    if (qfile_commit_begin(c->qf, &err) == 0) {
        buf_destroy(&err);
        return 0;
    }
    log_warn("%s: queue file commit failed: %s", s->env.id, buf_str(&err));
    smtpd_reply(s, "451 4.3.0 Error: queue file write error");
    buf_destroy(&err);
    smtpd_event_free(c->events);
    free(c->message_id);
    free(c);
    return -1;
}

static void data_commit(struct smtpd_session *s, struct smtpd_data *d, int verb)
{
    struct smtpd_commit *c = xcalloc(1, sizeof(*c));
    c->s = s;
    c->d = s->d;
    c->qf = d->qf;
    d->qf = NULL;
    if (d->p.message_id)
        qfile_w_set_message_id(c->qf, d->p.message_id);
    qfile_w_set_pool(c->qf, d->p.dropped); /* the header is gone: keep its choice */
    qfile_w_set_priority(c->qf, smtpd_prio_class(s, d->p.dropped2));
    str_lcpy(c->id, s->env.id, sizeof(c->id));
    c->message_id = d->p.message_id ? xstrdup(d->p.message_id) : NULL;
    c->verb = verb;
    c->events = smtpd_event_reception(s, c->id, c->message_id, qfile_w_size(c->qf));
    if (d->dkim) {
        c->dkim = smtpd_dkim_job_new(s, d->dkim);
        d->dkim = NULL;
        if (c->dkim)
            smtpd_dkim_job_convert(c->dkim, s, &d->m7, c->qf);
    }
    if (!c->dkim && commit_begin_now(s, c) < 0)
        return;
    s->commit = c;
    smtpd_wait_begin(s);
    if (c->dkim)
        workq_submit(s->d->signq, sign_run, sign_done, c);
    else
        workq_submit(s->d->commitq, commit_run, commit_done, c);
}

/* Answer a refused message: the parser's first verdict, or a write error.
 * Returns 1 when refused (answered), 0 when the message may be kept. */
static int data_refused(struct smtpd_session *s)
{
    struct smtpd_data *d = s->data;
    const char *id = s->env.id;
    const char *bare = d->p.bare == 'L' ? "LF" : "CR";
    switch (smtpd_dataparse_verdict(&d->p)) {
    case DP_TOO_BIG:
        smtpd_reply(s, "552 5.3.4 Error: message file too big");
        return 1;
    case DP_HDR_TOO_BIG:
        log_info("%s: reject: header size exceeds header_size_limit=%lld from %s", id,
                 d->p.cf.hdr_limit, smtpd_client(s));
        smtpd_reply(s, "552 5.3.4 Message header size exceeds limit");
        return 1;
    case DP_HOPS:
        log_info("%s: reject: %s from %s: 554 5.4.0 Error: too many hops "
                 "(%d Received:/Delivered-To: headers, hopcount_limit=%lld); from=<%s>",
                 id, s->last_cmd, smtpd_client(s), d->p.hops, d->p.cf.hop_limit,
                 s->env.sender ? s->env.sender : "");
        smtpd_reply(s, "554 5.4.0 Error: too many hops");
        return 1;
    case DP_BARE:
        log_info("%s: reject: bare <%s> received from %s", id, bare, smtpd_client(s));
        smtpd_reply(s, "550 5.5.2 Error: bare <%s> received", bare);
        return 1;
    case DP_NUL:
        log_info("%s: reject: NUL byte received from %s", id, smtpd_client(s));
        smtpd_reply(s, "550 5.6.0 Error: NUL byte received");
        return 1;
    case DP_OK:
        break;
    }
    if (d->write_err) {
        log_warn("%s: queue file write error", id);
        smtpd_reply(s, "451 4.3.0 Error: queue file write error");
        return 1;
    }
    return 0;
}

/* The content is complete (DATA's final dot, BDAT LAST): commit or
 * refuse, answer, end the transaction. */
static void data_finish(struct smtpd_session *s)
{
    struct smtpd_data *d = s->data;
    int verb = d->bdat ? SMTP_VERB_BDAT : SMTP_VERB_DATA;
    if (!d->bdat)
        s->last_cmd = "END-OF-MESSAGE";
    smtpd_dataparse_flush(&d->p);
    if (!data_refused(s))
        data_commit(s, d, verb);
    if (!s->commit)
        data_stats(s, verb);
    smtpd_txn_reset(s); /* aborts the file unless it was committed */
    s->state = SS_CMD;
}

int smtpd_data_chunk_refused(struct smtpd_session *s)
{
    smtpd_dataparse_flush(&s->data->p); /* a write error shows now, not later */
    if (!data_refused(s))
        return 0;
    smtpd_data_abort(s);
    return 1;
}

void smtpd_data_last(struct smtpd_session *s)
{
    smtpd_dataparse_end(&s->data->p);
    data_finish(s);
}
