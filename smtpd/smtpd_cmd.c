/* smtpd_cmd.c - the SMTP command table and its handlers (RFC 5321).
 *
 * Every handler sends exactly one reply (multi-line for EHLO) and finishes
 * its side effects before it returns; the session loop relies on that for
 * pipelining. Replies use enhanced status codes (RFC 2034/3463) and
 * Postfix's texts so that existing clients and tooling see what they know. */
#include "smtpd/smtpd.h"

#include <stdlib.h>
#include <string.h>

#include "common/addr.h"
#include "common/alloc.h"
#include "common/conf.h"
#include "common/log.h"

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

/* Order is also the order of the "disconnect from" statistics. */
const struct smtpd_cmd smtpd_cmd_table[] = {
    { "HELO", cmd_helo },
    { "EHLO", cmd_ehlo },
    { "STARTTLS", smtpd_tls_cmd },
    { "AUTH", smtpd_auth_cmd },
    { "MAIL", cmd_mail },
    { "RCPT", cmd_rcpt },
    { "DATA", cmd_data },
    { "BDAT", cmd_notimpl },
    { "RSET", cmd_rset },
    { "NOOP", cmd_noop },
    { "VRFY", cmd_vrfy },
    { "EXPN", cmd_notimpl },
    { "ETRN", cmd_notimpl },
    { "TURN", cmd_notimpl },
    { "ATRN", cmd_notimpl },
    { "SEND", cmd_notimpl },
    { "SOML", cmd_notimpl },
    { "SAML", cmd_notimpl },
    { "HELP", cmd_help },
    { "QUIT", cmd_quit },
    { NULL, NULL },
};

int smtpd_cmd_lookup(const char *verb)
{
    for (int i = 0; i < SMTPD_CMD_MAX && smtpd_cmd_table[i].name; i++)
        if (str_ieq(verb, smtpd_cmd_table[i].name))
            return i;
    return -1;
}

/* Split "VERB arg" and run the handler; count it for the statistics. With
 * smtpd_delay_reject=no a client refused at connect gets only QUIT. */
void smtpd_cmd_dispatch(struct smtpd_session *s, char *line)
{
    char *arg = line;
    while (*arg && *arg != ' ')
        arg++;
    if (*arg)
        *arg++ = '\0';
    while (*arg == ' ')
        arg++;
    int idx = smtpd_cmd_lookup(line);
    int slot = idx < 0 ? SMTPD_CMD_MAX : idx;
    s->cmd_total[slot]++;
    s->last_code = 0;
    if (idx < 0) {
        s->last_cmd = "UNKNOWN";
        smtpd_reply(s, "500 5.5.2 Error: command not recognized");
    } else if (s->deny_text && smtpd_cmd_table[idx].fn != cmd_quit) {
        s->last_cmd = smtpd_cmd_table[idx].name;
        smtpd_reply(s, "503 5.7.0 Error: access denied for %s", smtpd_client(s));
    } else {
        s->last_cmd = smtpd_cmd_table[idx].name;
        smtpd_cmd_table[idx].fn(s, arg);
    }
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
    buf_free(&b);
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
    int rc = smtpd_restrict_helo(s, &reply);
    if (rc == 2) {
        smtpd_redo_later(s, arg);
    } else if (rc == 1) {
        smtpd_reply(s, "%s", buf_str(&reply));
    }
    buf_free(&reply);
    if (rc != 0) {
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
    smtpd_reply_line(s, "250-8BITMIME");
    smtpd_reply(s, "250 DSN");
}

/* "FROM:" / "TO:" prefix, case-insensitive; returns the text after it. */
static char *after_keyword(char *arg, const char *kw)
{
    size_t n = strlen(kw);
    return str_nieq(arg, kw, n) ? arg + n : NULL;
}

/* The sender passed its syntax checks: limits and sender restrictions.
 * 0 go on; -1 refused (replied) or waiting for an answer. */
static int mail_checks(struct smtpd_session *s, const char *arg)
{
    buf_t reply = BUF_INIT;
    int rc = smtpd_restrict_mail(s, &reply);
    if (rc == 1)
        smtpd_reply(s, "%s", buf_str(&reply));
    buf_free(&reply);
    if (rc == 0)
        rc = smtpd_limit_event(s, SMTPD_EV_MSG, arg);
    if (rc == 2)
        smtpd_redo_later(s, arg);
    return rc == 0 ? 0 : -1;
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
    char *copy = xstrdup(arg); /* the parsers below may not keep arg intact */
    char *p = after_keyword(arg, "FROM:");
    buf_t addr = BUF_INIT;
    const char *params = "", *err = "Bad sender address syntax";
    if (!p) {
        smtpd_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
    } else if (addr_parse_path(p, 1, 0, &addr, &params, &err) < 0) {
        smtpd_reply(s, "501 5.1.7 %s", err);
    } else {
        qenv_set(&s->env.sender, buf_str(&addr));
        if (smtpd_mail_params(s, params) < 0 || mail_checks(s, copy) < 0) {
            smtpd_txn_reset(s);
        } else {
            s->have_mail = 1;
            smtpd_reply(s, "250 2.1.0 Ok");
        }
    }
    buf_free(&addr);
    free(copy);
}

/* RFC 5321 source route "<@a,@b:u@d>": the raw argument starts with "<@". */
static int source_routed(const char *p)
{
    while (*p == ' ')
        p++;
    return p[0] == '<' && p[1] == '@';
}

/* The recipient address as we will queue it, or -1 after a reply. */
static int rcpt_address(struct smtpd_session *s, char *p, buf_t *addr, const char **params)
{
    const char *err = "Bad recipient address syntax";
    if (addr_parse_path(p, 0, 0, addr, params, &err) < 0 || addr->len == 0) {
        smtpd_reply(s, "501 5.1.3 %s", err);
        return -1;
    }
    buf_t local = BUF_INIT, domain = BUF_INIT;
    int has_domain = addr_split(buf_str(addr), &local, &domain) == 0 && domain.len > 0;
    buf_free(&local);
    buf_free(&domain);
    if (has_domain)
        return 0;
    if (str_ieq(buf_str(addr), "postmaster")) {
        buf_printf(addr, "@%s", smtpd_hostname());
        return 0;
    }
    smtpd_reply(s, "501 5.1.3 Bad recipient address syntax");
    return -1;
}

static void cmd_rcpt(struct smtpd_session *s, char *arg)
{
    if (!s->have_mail) {
        smtpd_reply(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    char *copy = xstrdup(arg);
    char *p = after_keyword(arg, "TO:");
    if (!p) {
        smtpd_reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
        free(copy);
        return;
    }
    buf_t addr = BUF_INIT, reply = BUF_INIT;
    int rc;
    const char *params = "";
    char *orcpt = NULL;
    int notify = 0;
    if (rcpt_address(s, p, &addr, &params) < 0)
        goto out;
    if ((long long)s->env.nrcpt >= conf_int("smtpd_recipient_limit")) {
        smtpd_reply(s, "452 4.5.3 Error: too many recipients");
        goto out;
    }
    if (smtpd_rcpt_params(s, params, &orcpt, &notify) < 0)
        goto out;
    rc = smtpd_restrict_rcpt(s, buf_str(&addr), source_routed(p), &reply);
    if (rc == 1)
        smtpd_reply(s, "%s", buf_str(&reply));
    if (rc == 0)
        rc = smtpd_limit_event(s, SMTPD_EV_RCPT, copy);
    if (rc == 2)
        smtpd_redo_later(s, copy);
    if (rc != 0)
        goto out;
    qenv_add_rcpt(&s->env, buf_str(&addr), orcpt, notify);
    smtpd_reply(s, "250 2.1.5 Ok");
out:
    free(copy);
    free(orcpt);
    buf_free(&addr);
    buf_free(&reply);
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
    smtpd_reply(s, "214 2.0.0 Commands: HELO EHLO STARTTLS AUTH MAIL RCPT DATA RSET NOOP "
                   "QUIT VRFY HELP");
}

static void cmd_notimpl(struct smtpd_session *s, char *arg)
{
    smtpd_reply(s, "502 5.5.1 Error: command not implemented");
}
