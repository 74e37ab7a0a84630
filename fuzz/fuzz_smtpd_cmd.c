/* fuzz_smtpd_cmd.c - libFuzzer harness for smtpd's MAIL FROM / RCPT TO
 * parsing. smtpd has no session-free entry point for a command line, so
 * this runs the same steps smtpd_cmd.c runs (verb split, "FROM:"/"TO:",
 * addr_parse_path, then the real ESMTP parameter table of
 * smtpd/smtpd_param.c) on a bare session whose smtpd_reply() is captured
 * here instead of written to a socket. Each input line is one command.
 * Checked: every command gets exactly one reply, replies are single
 * printable lines (no reply injection), and accepted ENVID/ORCPT/NOTIFY
 * values are what the queue file and DSNs assume. */
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/addr.h"
#include "common/alloc.h"
#include "common/log.h"
#include "common/qfile.h"
#include "smtpd/smtpd.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static buf_t replies = BUF_INIT;
static int nreplies;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init("fuzz_smtpd_cmd");
    log_open("/dev/null");
    return 0;
}

/* smtpd_session.c's smtpd_reply, minus the socket. */
void smtpd_reply(struct smtpd_session *s, const char *fmt, ...)
{
    va_list ap;
    buf_reset(&replies);
    va_start(ap, fmt);
    buf_vprintf(&replies, fmt, ap);
    va_end(ap);
    nreplies++;
    s->last_code = atoi(buf_str(&replies));
}

static void check_reply(void)
{
    const char *r = buf_str(&replies);
    if (nreplies != 1 || replies.len < 4 || r[0] < '2' || r[0] > '5' || r[3] != ' ')
        abort();
    for (size_t i = 0; i < replies.len; i++)
        if ((unsigned char)r[i] < 0x20 || (unsigned char)r[i] == 0x7f)
            abort(); /* CR/LF in a reply would let a client forge replies */
}

static void do_mail(struct smtpd_session *s, const char *p)
{
    buf_t addr = BUF_INIT;
    const char *params = "", *err = "Bad sender address syntax";
    if (addr_parse_path(p, 1, 0, &addr, &params, &err) < 0) {
        smtpd_reply(s, "501 5.1.7 %s", err);
    } else {
        qenv_set(&s->env.sender, buf_str(&addr));
        if (smtpd_mail_params(s, params) < 0) {
            qenv_free(&s->env);
            qenv_init(&s->env);
        } else {
            s->have_mail = 1;
            smtpd_reply(s, "250 2.1.0 Ok");
        }
    }
    const char *envid = s->env.envid;
    if (envid && (strlen(envid) == 0 || strlen(envid) > 100))
        abort();
    for (; envid && *envid; envid++)
        if (*envid < 0x20 || *envid > 0x7e)
            abort();
    buf_free(&addr);
}

static void check_rcpt_opts(const char *orcpt, int notify)
{
    if ((notify & NOTIFY_NEVER) && notify != NOTIFY_NEVER)
        abort();
    if (orcpt == NULL)
        return;
    const char *semi = strchr(orcpt, ';');
    buf_t dec = BUF_INIT;
    if (semi == NULL || semi == orcpt || xtext_decode(semi + 1, &dec) < 0)
        abort();
    buf_free(&dec);
}

static void do_rcpt(struct smtpd_session *s, const char *p)
{
    buf_t addr = BUF_INIT, local = BUF_INIT, domain = BUF_INIT;
    const char *params = "", *err = "Bad recipient address syntax";
    char *orcpt = NULL;
    int notify = 0;
    if (addr_parse_path(p, 0, 0, &addr, &params, &err) < 0 || addr.len == 0) {
        smtpd_reply(s, "501 5.1.3 %s", err);
    } else if (!(addr_split(buf_str(&addr), &local, &domain) == 0 && domain.len > 0) &&
               !str_ieq(buf_str(&addr), "postmaster")) {
        smtpd_reply(s, "501 5.1.3 Bad recipient address syntax");
    } else if (smtpd_rcpt_params(s, params, &orcpt, &notify) == 0) {
        check_rcpt_opts(orcpt, notify);
        if (s->env.nrcpt < 1000)
            qenv_add_rcpt(&s->env, buf_str(&addr), orcpt, notify);
        smtpd_reply(s, "250 2.1.5 Ok");
    }
    free(orcpt);
    buf_free(&addr);
    buf_free(&local);
    buf_free(&domain);
}

/* smtpd_session.c's dispatch + smtpd_cmd.c's keyword checks. */
static void command(struct smtpd_session *s, char *line)
{
    char *arg = line;
    while (*arg && *arg != ' ')
        arg++;
    if (*arg)
        *arg++ = '\0';
    while (*arg == ' ')
        arg++;
    nreplies = 0;
    if (str_ieq(line, "MAIL") && s->have_mail)
        smtpd_reply(s, "503 5.5.1 Error: nested MAIL command");
    else if (str_ieq(line, "MAIL") && str_nieq(arg, "FROM:", 5))
        do_mail(s, arg + 5);
    else if (str_ieq(line, "RCPT") && str_nieq(arg, "TO:", 3))
        do_rcpt(s, arg + 3);
    else if (str_ieq(line, "RSET")) {
        qenv_free(&s->env);
        qenv_init(&s->env);
        s->have_mail = 0;
        smtpd_reply(s, "250 2.0.0 Ok");
    } else
        smtpd_reply(s, "500 5.5.2 Error: command not recognized");
    check_reply();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smtpd_session s;
    memset(&s, 0, sizeof(s));
    qenv_init(&s.env);
    char *text = xstrndup((const char *)data, size), *p = text;
    while (*p) {
        char *nl = strchr(p, '\n'), *next = nl ? nl + 1 : p + strlen(p);
        if (nl) {
            *nl = '\0';
            if (nl > p && nl[-1] == '\r')
                nl[-1] = '\0';
        }
        command(&s, p);
        p = next;
    }
    qenv_free(&s.env);
    free(text);
    return 0;
}
