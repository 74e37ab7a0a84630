/* delivery_bdat.c - the content as BDAT chunks (RFC 3030 CHUNKING), for a
 * server that offers CHUNKING when smtp_chunking_enable = yes.
 *
 * Each chunk is what one pread() of the queue file gives (64 KB), after
 * the 7-bit conversion when there is one (delivery_mime.c) and the line
 * ending normalisation of common/mail/crlf.c, so the next hop stores the same
 * bytes as over DATA; the last one carries LAST. A chunk is encoded whole
 * before its "BDAT <size>" line is written, then both are queued together:
 * the output never holds half a chunk, so we can stop at any point between
 * chunks and stay in step with the server. Nothing is buffered beyond a
 * few chunks.
 *
 * With PIPELINING the first chunk goes in the same flight as MAIL and the
 * RCPTs (a small message costs one round trip, DATA costs two); the later
 * ones wait until the RCPT replies are in, and go only if a recipient was
 * accepted, so at most one chunk is sent for nothing. Then chunks stream
 * as the output drains, their replies read as they come. Without
 * PIPELINING the first chunk goes after the envelope was accepted and
 * each chunk waits for the reply to the one before.
 *
 * Replies: every chunk must be answered 250 (dlv_phase[].ok); the RCPT
 * replies decide which recipients are in, the reply to LAST gives their
 * results as the end of DATA does. A 4xx/5xx to an earlier chunk fails the
 * accepted recipients with that reply and no more chunks are sent; the
 * transaction ends when the chunks already sent are answered (a cached
 * connection starts with RSET). Any other code - and a reply to a chunk
 * whose octets are still in our output buffer - is a protocol error
 * (delivery_proto.c). */
#include "delivery/delivery_sess.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <unistd.h>

#include "common/mail/conf.h"
#include "common/util/log.h"

int dlv_bdat_wanted(const struct dlv_sess *s)
{
    return (s->feat & FEAT_CHUNKING) && conf_bool("smtp_chunking_enable");
}

/* The transaction can no longer deliver anything. */
static int tx_dead(const struct dlv_sess *s)
{
    return s->mail_failed || s->naccepted == 0 || s->bd.failed;
}

static void stop_streaming(struct dlv_sess *s)
{
    bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
    s->state = SS_CMD;
}

static int may_send(const struct dlv_sess *s)
{
    const struct dlv_bdat *b = &s->bd;
    if (b->stop || b->last_sent)
        return 0;
    if (!(s->feat & FEAT_PIPELINING))
        return s->xhead == s->xn; /* lock step: the last chunk answered */
    return (b->nchunks == 0 || b->go) &&
           evbuffer_get_length(bufferevent_get_output(s->bev)) < BODY_HIGH;
}

/* Encode n content bytes onto the chunk being built (no copy). */
static void encode(struct dlv_sess *s, const char *p, size_t n)
{
    struct evbuffer_iovec v;
    size_t room = crlf_bound(n);
    if (n == 0)
        return;
    if (evbuffer_reserve_space(s->bd.tmp, (ev_ssize_t)room, &v, 1) < 1 || v.iov_len < room)
        log_fatal("cannot buffer message content (out of memory)");
    v.iov_len = crlf_chunk(&s->bd.enc, p, n, v.iov_base);
    if (evbuffer_commit_space(s->bd.tmp, &v, 1) < 0)
        log_panic("smtp: evbuffer_commit_space failed");
}

/* The end of the content: the converter's rest, the final CRLF. */
static void encode_end(struct dlv_sess *s)
{
    char fin[CRLF_FINISH_MAX];
    size_t len, w;
    const char *p = dlv_mime_body_end(s->job, &len);
    encode(s, p, len);
    w = crlf_finish(&s->bd.enc, fin);
    if (w)
        evbuffer_add(s->bd.tmp, fin, w);
}

/* "BDAT <size>[ LAST]" and the chunk, into the output together. */
static void queue_chunk(struct dlv_sess *s, int last)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    size_t size = evbuffer_get_length(s->bd.tmp);
    char cmd[48];
    int n = snprintf(cmd, sizeof(cmd), "BDAT %zu%s\r\n", size, last ? " LAST" : "");
    evbuffer_add(out, cmd, (size_t)n);
    evbuffer_add_buffer(out, s->bd.tmp); /* moves the chain, no copy */
    s->bd.queued += (size_t)n + size;
    s->bd.nchunks++;
    s->bd.last_sent = last;
    dlv_sess_expect(s, last ? X_BDAT_LAST : X_BDAT, s->bd.queued);
}

/* Read, encode and queue the next chunk. 0, or -1: the session is gone. */
static int send_chunk(struct dlv_sess *s)
{
    char chunk[BODY_CHUNK];
    int last;
    if (s->body_left > 0) {
        size_t want = s->body_left < BODY_CHUNK ? (size_t)s->body_left : BODY_CHUNK;
        ssize_t n = pread(s->job->content_fd, chunk, want, (off_t)s->body_off);
        size_t len;
        const char *p;
        if (n <= 0)
            return dlv_proto_body_read_error(s, n < 0 ? errno : 0);
        len = (size_t)n;
        p = dlv_mime_body_filter(s->job, chunk, &len); /* 7-bit conversion, if any */
        encode(s, p, len);
        s->body_left -= n;
        s->body_off += n;
    }
    last = s->body_left == 0;
    if (last)
        encode_end(s);
    if (last || evbuffer_get_length(s->bd.tmp) > 0) /* no empty middle chunk */
        queue_chunk(s, last);
    return 0;
}

int dlv_bdat_more(struct dlv_sess *s)
{
    int sent = 0;
    while (may_send(s)) {
        if (send_chunk(s) < 0)
            return -1;
        sent = 1;
    }
    if (s->bd.stop || s->bd.last_sent) {
        stop_streaming(s);
    } else if (s->state != SS_BODY) {
        s->state = SS_BODY; /* the write callback sends the rest */
        bufferevent_setwatermark(s->bev, EV_WRITE, BODY_CHUNK, 0);
    }
    if (sent)
        dlv_sess_arm(s, dlv_phase[s->xq[s->xhead].kind].timeout_param);
    return 0;
}

int dlv_bdat_begin(struct dlv_sess *s)
{
    struct dlv_bdat *b = &s->bd;
    b->go = !(s->feat & FEAT_PIPELINING); /* lock step: the envelope is in */
    b->stop = b->failed = b->last_sent = 0;
    b->nchunks = b->queued = 0;
    crlf_init(&b->enc);
    if (!b->tmp)
        b->tmp = evbuffer_new();
    if (s->job->env.dkim) /* signed at reception: the signature goes first */
        encode(s, s->job->env.dkim, strlen(s->job->env.dkim));
    s->body_left = s->job->env.content_len;
    s->body_off = s->job->env.content_off;
    return dlv_bdat_more(s);
}

int dlv_bdat_envelope_done(struct dlv_sess *s)
{
    if (tx_dead(s)) {
        /* Nobody to send it to: the first chunk's reply ends it. */
        s->bd.stop = 1;
        stop_streaming(s);
        return 0;
    }
    s->bd.go = 1;
    return dlv_bdat_more(s);
}

int dlv_bdat_early(const struct dlv_sess *s, size_t end)
{
    size_t unsent = evbuffer_get_length(bufferevent_get_output(s->bev));
    return unsent > s->bd.queued || s->bd.queued - unsent < end;
}

int dlv_bdat_on_chunk(struct dlv_sess *s, size_t end)
{
    struct dlv_job *job = s->job;
    size_t k;
    if (!tx_dead(s) && s->rp.reply.code / 100 != 2) {
        for (k = job->tx_first; k < job->tx_end; k++)
            if (job->res[k].accepted && job->res[k].status == QR_PENDING)
                dlv_proto_rcpt_failed(s, &job->res[k], X_BDAT);
        s->bd.failed = s->bd.stop = 1;
        stop_streaming(s);
    }
    if (s->bd.stop) /* the rest of the chunks sent are answered: done */
        return s->xhead == s->xn ? dlv_sess_tx_end(s) : 0;
    return dlv_bdat_more(s);
}

int dlv_bdat_on_last(struct dlv_sess *s, size_t end)
{
    if (tx_dead(s))
        return dlv_sess_tx_end(s);
    if (dlv_g.lmtp) {
        /* LMTP: this is the first accepted recipient's reply; the others'
         * follow (RFC 2033 4.2 applies to BDAT LAST as to the dot). */
        struct dlv_job *job = s->job;
        size_t k = job->tx_first;
        while (k < job->tx_end && !job->res[k].accepted)
            k++;
        dlv_proto_lmtp_expect(s, 1, k);
        return dlv_proto_lmtp_reply(s, k);
    }
    return dlv_proto_final_reply(s, X_BDAT_LAST);
}
