/* smtpd_bdat.c - CHUNKING (RFC 3030): "BDAT <size> [LAST]" on receipt.
 *
 * A chunk is exactly <size> octets after the command line, binary, with
 * no dot handling; they are read as they arrive (never held whole: they go
 * through the content parser into the queue file, smtpd_data.c) and the
 * chunk is answered after its last octet, so commands pipelined behind it
 * are read as commands again. The content rules are DATA's (bare CR/LF,
 * NUL, line length, header scan, message_size_limit); LAST commits through
 * the same durable path and is answered 250 only once the file is on disk.
 *
 * The octets of every chunk are consumed, whatever its fate: one refused
 * when announced (no MAIL or RCPT, too big, after an earlier failure)
 * gets its answer at once and its octets are dropped. After a failed chunk
 * the later chunks of the transaction are dropped too, until RSET or LAST
 * (RFC 3030 section 2). Only a command line whose size cannot be read
 * leaves us out of step with the client: that closes the connection, as
 * Postfix does. BINARYMIME is not offered: content is not carried
 * unchanged end to end (bare CR/LF are normalised, NULs stripped, long
 * lines split), so binary MIME would be damaged. */
#include "smtpd/smtpd.h"

#include <event2/buffer.h>
#include <limits.h>

#include "common/mail/conf.h"
#include "common/util/log.h"
#include "smtpd/smtpd_cmdparse.h"

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* "<digits> [LAST]", LAST in any case, blanks between. 0 on a syntax
 * error, including a size that does not fit. */
static int bdat_args(const char *p, long long *size, int *last)
{
    long long n = 0;
    const char *start = p;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (LLONG_MAX - 9) / 10)
            return 0;
        n = n * 10 + (*p - '0');
    }
    if (p == start || (*p && !is_blank(*p)))
        return 0;
    while (is_blank(*p))
        p++;
    *last = str_nieq(p, "LAST", 4) && (p[4] == '\0' || is_blank(p[4]));
    if (*last)
        p += 4;
    while (is_blank(*p))
        p++;
    *size = n;
    return *p == '\0';
}

static const char *queue_id(const struct smtpd_session *s)
{
    return s->data ? s->env.id : "NOQUEUE";
}

/* This chunk failed (answered already). A failed LAST ends the
 * transaction; otherwise later chunks are dropped until RSET or LAST. */
static void chunk_failed(struct smtpd_session *s)
{
    if (s->bdat_last) {
        smtpd_txn_reset(s);
    } else {
        smtpd_data_abort(s);
        s->bdat_state = SMTPD_BDAT_FAILED;
        s->bdat_fail_code = s->last_code;
    }
}

/* Does the transaction go on with this chunk? Answers when it does not. */
static int chunk_accepted(struct smtpd_session *s)
{
    long long limit = conf_int("message_size_limit");
    if (!s->have_mail) {
        smtpd_reply(s, "503 5.5.1 Error: need MAIL command");
        return 0;
    }
    if (s->env.nrcpt == 0) {
        smtpd_reply(s, "503 5.5.1 Error: need RCPT command");
        return 0;
    }
    if (s->bdat_state == SMTPD_BDAT_FAILED) {
        if (s->bdat_fail_code / 100 == 4)
            smtpd_reply(s, "451 4.0.0 Discarded %lld bytes after earlier error", s->bdat_size);
        else
            smtpd_reply(s, "551 5.0.0 Discarded %lld bytes after earlier error", s->bdat_size);
        if (s->bdat_last)
            smtpd_txn_reset(s);
        return 0;
    }
    s->bdat_octets += s->bdat_size;
    if (limit > 0 && s->bdat_octets > limit) {
        log_warn("%s: BDAT request from %s exceeds message size limit", queue_id(s),
                 smtpd_client(s));
        smtpd_reply(s, "552 5.3.4 Chunk exceeds message size limit");
        chunk_failed(s);
        return 0;
    }
    if (!s->data && smtpd_data_open(s, 1) < 0) {
        smtpd_reply(s, "451 4.3.0 Error: queue file write error");
        chunk_failed(s);
        return 0;
    }
    s->bdat_state = SMTPD_BDAT_STORING;
    return 1;
}

void smtpd_bdat_cmd(struct smtpd_session *s, char *arg)
{
    long long size;
    int last;
    if (!bdat_args(arg, &size, &last)) {
        /* How many octets follow is unknown: the session cannot go on. */
        log_warn("%s: malformed BDAT command syntax from %s: BDAT %.100s", queue_id(s),
                 smtpd_client(s), arg);
        smtpd_reply(s, "521 5.5.4 Syntax: BDAT count [LAST]");
        smtpd_close_after(s);
        return;
    }
    s->bdat_size = s->bdat_left = size;
    s->bdat_last = last;
    /* Refused when announced: answered now, its octets dropped. Else
     * answered by chunk_done, after the octets. */
    s->bdat_discard = !chunk_accepted(s);
    s->state = SS_BDAT;
}

/* The last octet of the chunk arrived. */
static void chunk_done(struct smtpd_session *s)
{
    s->state = SS_CMD;
    if (s->bdat_discard)
        return; /* answered when it was announced */
    if (smtpd_data_chunk_refused(s)) {
        chunk_failed(s);
        return;
    }
    if (s->bdat_last) {
        smtpd_data_last(s); /* 250 once durable; ends the transaction */
        return;
    }
    smtpd_reply(s, "250 2.0.0 Ok: %lld bytes", s->bdat_size);
    s->cmd_ok[SMTP_VERB_BDAT]++;
}

int smtpd_bdat_input(struct smtpd_session *s, struct evbuffer *in)
{
    if (s->bdat_left > 0) {
        size_t n = s->bdat_discard ? evbuffer_get_length(in) : evbuffer_get_contiguous_space(in);
        if (n == 0)
            return 0;
        if ((long long)n > s->bdat_left)
            n = (size_t)s->bdat_left;
        if (!s->bdat_discard)
            smtpd_data_feed(s, evbuffer_pullup(in, (ssize_t)n), n);
        evbuffer_drain(in, n);
        if (s->deadline_ev)
            smtpd_deadline_content(s, n);
        s->bdat_left -= (long long)n;
        if (s->bdat_left > 0)
            return 1;
    }
    chunk_done(s);
    return 1;
}
