/* smtpd_cmd.c - the SMTP command table and its handlers (RFC 5321).
 *
 * Every handler sends exactly one reply (multi-line for EHLO) and finishes
 * its side effects before it returns; the session loop relies on that for
 * pipelining. Replies use enhanced status codes (RFC 2034/3463) and
 * Postfix's texts so that existing clients and tooling see what they know. */
#include "smtpd/smtpd.h"

#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/util/log.h"
#include "smtpd/smtpd_cmdparse.h"

static void cmd_helo(struct smtpd_session *s, char *arg);
static void cmd_ehlo(struct smtpd_session *s, char *arg);
static void cmd_mail(struct smtpd_session *s, char *arg);
static void cmd_rcpt(struct smtpd_session *s, char *arg);
static void cmd_data(struct smtpd_session *s, char *arg);
static void cmd_rset(struct smtpd_session *s, char *arg);
static void cmd_noop(struct smtpd_session *s, char *arg);
static void cmd_quit(struct smtpd_session *s, char *arg);
static void cmd_vrfy(struct smtpd_session *s, char *arg);
static void cmd_help(struct smtpd_session *s, char *arg);
static void cmd_notimpl(struct smtpd_session *s, char *arg);

/* Indexed by enum smtp_verb, which is also the order of the "disconnect
 * from" statistics. */
const smtpd_cmd_fn smtpd_cmd_table[SMTP_VERB_COUNT] = {
    [SMTP_VERB_HELO] = cmd_helo,          [SMTP_VERB_EHLO] = cmd_ehlo,
    [SMTP_VERB_STARTTLS] = smtpd_tls_cmd, [SMTP_VERB_AUTH] = smtpd_auth_cmd,
    [SMTP_VERB_MAIL] = cmd_mail,          [SMTP_VERB_RCPT] = cmd_rcpt,
    [SMTP_VERB_DATA] = cmd_data,          [SMTP_VERB_BDAT] = smtpd_bdat_cmd,
    [SMTP_VERB_RSET] = cmd_rset,          [SMTP_VERB_NOOP] = cmd_noop,
    [SMTP_VERB_VRFY] = cmd_vrfy,          [SMTP_VERB_EXPN] = cmd_notimpl,
    [SMTP_VERB_ETRN] = cmd_notimpl,       [SMTP_VERB_TURN] = cmd_notimpl,
    [SMTP_VERB_ATRN] = cmd_notimpl,       [SMTP_VERB_SEND] = cmd_notimpl,
    [SMTP_VERB_SOML] = cmd_notimpl,       [SMTP_VERB_SAML] = cmd_notimpl,
    [SMTP_VERB_HELP] = cmd_help,          [SMTP_VERB_QUIT] = cmd_quit,
};

int smtpd_cmd_lookup(const char *verb)
{
    return smtpd_cmd_verb(verb);
}

/* Send a parser's error reply. */
static void reply_err(struct smtpd_session *s, const struct smtpd_cmd_reply *err)
{
    smtpd_reply(s, "%d %s %s", err->code, err->enh, buf_str(&err->text));
}

/* Check and split the line, run the handler; count it for the statistics.
 * With smtpd_delay_reject=no a client refused at connect (it got the
 * restriction's reply as greeting) gets only QUIT, as in Postfix. */
void smtpd_cmd_dispatch(struct smtpd_session *s, char *line, size_t len)
{
    struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
    char *verb, *arg;
    int idx =
        smtpd_cmd_split(line, len, (size_t)conf_int("smtpd_command_line_limit"), &verb, &arg, &err);
    if (idx == -2) { /* not a command: counted nowhere, as before */
        reply_err(s, &err);
        smtpd_cmd_reply_destroy(&err);
        return;
    }
    int slot = idx < 0 ? SMTPD_CMD_MAX : idx;
    s->cmd_total[slot]++;
    s->last_code = 0;
    s->last_cmd = idx < 0 ? "UNKNOWN" : smtpd_cmd_verb_name(idx);
    if (idx < 0)
        smtpd_reply(s, "500 5.5.2 Error: command not recognized");
    else if (s->deny_text && idx != SMTP_VERB_QUIT)
        smtpd_reply(s, "503 5.7.0 Error: access denied for %s", smtpd_client(s));
    else
        smtpd_cmd_table[idx](s, arg);
    if (s->redo_idx >= 0)
        return; /* counted when the command is run again */
    if (s->last_code && s->last_code < 400)
        s->cmd_ok[slot]++;
}

void smtpd_log_reject(struct smtpd_session *s, const char *stage, const char *reply,
                      const char *rcpt)
{
    buf_t b = BUF_INIT;
    buf_printf(&b, "NOQUEUE: reject: %s from %s: %s;", stage, smtpd_client(s), reply);
    if (strcmp(stage, "CONNECT") != 0 && strcmp(stage, "HELO") != 0)
        buf_printf(&b, " from=<%s>", s->env.sender ? s->env.sender : "");
    if (rcpt)
        buf_printf(&b, " to=<%s>", rcpt);
    buf_printf(&b, " proto=%s", s->esmtp ? "ESMTP" : "SMTP");
    if (s->helo)
        buf_printf(&b, " helo=<%s>", s->helo);
    log_info("%s", buf_str(&b));
    buf_destroy(&b);
}

static int set_helo(struct smtpd_session *s, const char *verb, char *arg)
{
    str_trim(arg);
    if (!*arg) {
        smtpd_reply(s, "501 5.5.4 Syntax: %s hostname", verb);
        return -1;
    }
    char *old = s->helo;
    s->helo = xstrdup(arg);
    buf_t reply = BUF_INIT;
    enum smtpd_outcome rc = smtpd_restrict_helo(s, &reply);
    if (rc == SMTPD_LATER)
        smtpd_redo_later(s, arg);
    else if (rc == SMTPD_REFUSED)
        smtpd_reply(s, "%s", buf_str(&reply));
    buf_destroy(&reply);
    if (rc != SMTPD_PASS) {
        free(s->helo);
        s->helo = old;
        return -1;
    }
    free(old);
    smtpd_txn_reset(s);
    return 0;
}

static void cmd_helo(struct smtpd_session *s, char *arg)
{
    if (set_helo(s, "HELO", arg) < 0)
        return;
    s->esmtp = 0;
    smtpd_reply(s, "250 %s", smtpd_hostname());
}

static void cmd_ehlo(struct smtpd_session *s, char *arg)
{
    if (set_helo(s, "EHLO", arg) < 0)
        return;
    s->esmtp = 1;
    long long limit = conf_int("message_size_limit");
    smtpd_reply_line(s, "250-%s", smtpd_hostname());
    smtpd_reply_line(s, "250-PIPELINING");
    if (limit > 0)
        smtpd_reply_line(s, "250-SIZE %lld", limit);
    else
        smtpd_reply_line(s, "250-SIZE");
    if (smtpd_tls_offer(s))
        smtpd_reply_line(s, "250-STARTTLS");
    const char *mechs = smtpd_auth_mechs(s);
    if (mechs && *mechs)
        smtpd_reply_line(s, "250-AUTH %s", mechs);
    smtpd_reply_line(s, "250-ENHANCEDSTATUSCODES");
    if (conf_bool("smtputf8_enable"))
        smtpd_reply_line(s, "250-SMTPUTF8");
    smtpd_reply_line(s, "250-8BITMIME");
    smtpd_reply_line(s, "250-CHUNKING");
    if (smtpd_verp_allowed(s))
        smtpd_reply_line(s, "250-XVERP");
    smtpd_reply(s, "250 DSN");
}

/* The sender passed its syntax checks: limits and sender restrictions.
 * 0 go on; -1 refused (replied) or waiting for an answer. */
static int mail_checks(struct smtpd_session *s, const char *arg)
{
    buf_t reply = BUF_INIT;
    enum smtpd_outcome rc = smtpd_local_sender(s, &reply);
    if (rc == SMTPD_REFUSED)
        smtpd_log_reject(s, "MAIL", buf_str(&reply), NULL);
    else
        rc = smtpd_restrict_mail(s, &reply);
    if (rc == SMTPD_REFUSED)
        smtpd_reply(s, "%s", buf_str(&reply));
    buf_destroy(&reply);
    if (rc == SMTPD_PASS)
        rc = smtpd_limit_event(s, SMTPD_EV_MSG, arg);
    if (rc == SMTPD_LATER)
        smtpd_redo_later(s, arg);
    return rc == SMTPD_PASS ? 0 : -1;
}

static void cmd_mail(struct smtpd_session *s, char *arg)
{
    if (!s->helo && conf_bool("smtpd_helo_required")) {
        smtpd_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
        return;
    }
    if (s->have_mail) {
        smtpd_reply(s, "503 5.5.1 Error: nested MAIL command");
        return;
    }
    if (smtpd_tls_required(s)) {
        smtpd_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    struct smtp_mail_args m = SMTP_MAIL_ARGS_INIT;
    struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
    if (smtpd_cmd_mail_xverp(arg, conf_int("message_size_limit"), conf_bool("smtputf8_enable"),
                             smtpd_verp_xverp(s), &m, &err) < 0) {
        reply_err(s, &err);
        smtpd_txn_reset(s);
    } else {
        qenv_set(&s->env.sender, buf_str(&m.sender));
        qenv_set(&s->env.envid, m.envid);
        s->env.ret = m.ret;
        s->env.body = m.body;
        s->env.smtputf8 = m.smtputf8;
        if (!smtpd_space_ok(m.has_size, m.size)) {
            smtpd_log_reject(s, "MAIL", "452 4.3.1 Insufficient system storage", NULL);
            smtpd_reply(s, "452 4.3.1 Insufficient system storage");
            smtpd_txn_reset(s);
        } else if (mail_checks(s, arg) < 0 || smtpd_verp_mail(s, m.verp) < 0) {
            smtpd_txn_reset(s);
        } else {
            s->have_mail = 1;
            smtpd_reply(s, "250 2.1.0 Ok");
        }
    }
    smtpd_mail_args_destroy(&m);
    smtpd_cmd_reply_destroy(&err);
}

/* Recipient syntax, the recipient limit, then the ESMTP parameters (in
 * this order: it decides which error a client sees). 0, or -1 replied. */
static int rcpt_parse(struct smtpd_session *s, const char *arg, struct smtp_rcpt_args *r)
{
    struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
    int utf8 = !conf_bool("smtputf8_enable") ? SMTP_UTF8_OFF
               : s->env.smtputf8             ? SMTP_UTF8_DECLARED
                                             : SMTP_UTF8_UNDECLARED;
    const char *origin = conf_str("myorigin"); /* as Postfix's append_at_myorigin */
    int rc = smtpd_cmd_rcpt_addr(arg, *origin ? origin : smtpd_hostname(), utf8, r, &err);
    if (rc == 0 && (long long)s->env.nrcpt >= conf_int("smtpd_recipient_limit")) {
        smtpd_reply(s, "452 4.5.3 Error: too many recipients");
        rc = 1;
    } else if (rc == 0) {
        rc = smtpd_cmd_rcpt_params(r, &err);
    }
    if (rc < 0)
        reply_err(s, &err);
    smtpd_cmd_reply_destroy(&err);
    return rc == 0 ? 0 : -1;
}

static void cmd_rcpt(struct smtpd_session *s, char *arg)
{
    if (!s->have_mail) {
        smtpd_reply(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (s->bdat_state != SMTPD_BDAT_NONE) { /* the envelope is in the queue file already */
        smtpd_reply(s, "503 5.5.1 Error: RCPT after BDAT");
        return;
    }
    struct smtp_rcpt_args r = SMTP_RCPT_ARGS_INIT;
    buf_t reply = BUF_INIT;
    if (rcpt_parse(s, arg, &r) < 0)
        goto out;
    enum smtpd_outcome rc = smtpd_restrict_rcpt(s, buf_str(&r.addr), r.source_routed, &reply);
    if (rc == SMTPD_PASS)
        rc = smtpd_rcpt_known(s, buf_str(&r.addr), &reply);
    if (rc == SMTPD_PASS)
        rc = smtpd_suppress_rcpt(s, buf_str(&r.addr), &reply);
    if (rc == SMTPD_REFUSED)
        smtpd_reply(s, "%s", buf_str(&reply));
    if (rc == SMTPD_PASS)
        rc = smtpd_limit_event(s, SMTPD_EV_RCPT, arg);
    if (rc == SMTPD_LATER)
        smtpd_redo_later(s, arg);
    if (rc != SMTPD_PASS)
        goto out;
    if (smtpd_rcpt_add(s, buf_str(&r.addr), r.orcpt, r.notify, &reply) == SMTPD_PASS)
        smtpd_reply(s, "250 2.1.5 Ok");
    else
        smtpd_reply(s, "%s", buf_str(&reply));
out:
    smtpd_rcpt_args_destroy(&r);
    buf_destroy(&reply);
}

static void cmd_data(struct smtpd_session *s, char *arg)
{
    if (*arg) {
        smtpd_reply(s, "501 5.5.4 Syntax: DATA");
        return;
    }
    if (!s->have_mail) {
        smtpd_reply(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (s->env.nrcpt == 0) {
        smtpd_reply(s, "503 5.5.1 Error: need RCPT command");
        return;
    }
    smtpd_data_begin(s);
}

static void cmd_rset(struct smtpd_session *s, char *arg)
{
    if (*arg) {
        smtpd_reply(s, "501 5.5.4 Syntax: RSET");
        return;
    }
    smtpd_txn_reset(s);
    smtpd_reply(s, "250 2.0.0 Ok");
}

static void cmd_noop(struct smtpd_session *s, char *arg)
{
    smtpd_reply(s, "250 2.0.0 Ok");
}

static void cmd_quit(struct smtpd_session *s, char *arg)
{
    s->quit = 1;
    smtpd_reply(s, "221 2.0.0 Bye");
    smtpd_close_after(s);
}

static void cmd_vrfy(struct smtpd_session *s, char *arg)
{
    if (!*arg) {
        smtpd_reply(s, "501 5.5.4 Syntax: VRFY address");
        return;
    }
    smtpd_reply(s, "252 2.0.0 Send some mail, I'll try my best");
}

static void cmd_help(struct smtpd_session *s, char *arg)
{
    smtpd_reply(s, "214 2.0.0 Commands: HELO EHLO STARTTLS AUTH MAIL RCPT DATA BDAT RSET "
                   "NOOP QUIT VRFY HELP");
}

static void cmd_notimpl(struct smtpd_session *s, char *arg)
{
    smtpd_reply(s, "502 5.5.1 Error: command not implemented");
}
