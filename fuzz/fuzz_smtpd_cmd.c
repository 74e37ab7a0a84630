/* fuzz_smtpd_cmd.c - libFuzzer harness for smtpd's command parser,
 * smtpd/smtpd_cmdparse.c: the very functions smtpd runs on every command line
 * (line checks and verb split, MAIL FROM and RCPT TO with their ESMTP
 * parameters), without a session. Each input line is one command; a tiny
 * MAIL/RCPT/RSET state machine lets RCPT lines reach the parameter code.
 * Checked beyond "no crash": every command gets exactly one reply, replies
 * are single printable lines with a sane code (no reply injection), and
 * accepted addresses and ENVID/ORCPT/NOTIFY values are what the queue file
 * and the DSNs assume. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/mail/addr.h"
#include "common/util/alloc.h"
#include "common/util/log.h"
#include "common/mail/qfile.h"
#include "common/mail/verp.h"
#include "smtpd/smtpd_cmdparse.h"
#include "common/util/utf8.h"

#define LINE_LIMIT 2048 /* smtpd_command_line_limit default */
#define SIZE_LIMIT 10240000

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init("fuzz_smtpd_cmd");
    log_open("/dev/null");
    return 0;
}

static buf_t reply = BUF_INIT;
static int nreplies;

static void say(const char *text)
{
    buf_set(&reply, text);
    nreplies++;
}

static void say_err(const struct smtpd_cmd_reply *err)
{
    if (err->code < 400 || err->code > 599 || strlen(err->enh) < 5 ||
        err->enh[0] != '0' + err->code / 100)
        abort(); /* an error reply must be an error, with a matching class */
    smtpd_cmd_reply_format(err, &reply);
    nreplies++;
}

static void check_reply(void)
{
    const char *r = buf_str(&reply);
    if (nreplies != 1 || reply.len < 4 || r[0] < '2' || r[0] > '5' || r[3] != ' ')
        abort();
    for (size_t i = 0; i < reply.len; i++)
        if ((unsigned char)r[i] < 0x20 || (unsigned char)r[i] == 0x7f)
            abort(); /* CR/LF in a reply would let a client forge replies */
}

/* No control bytes (8-bit text is the address parser's call); ASCII only
 * when ascii is set. */
static void clean(const char *s, size_t max, int ascii)
{
    if (strlen(s) > max)
        abort();
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f ||
            (ascii && (unsigned char)*s > 0x7e))
            abort();
}

/* An accepted address is well-formed UTF-8 without control characters,
 * and pure ASCII unless the transaction declared SMTPUTF8. */
static void utf8_ok(const buf_t *addr, int smtputf8)
{
    if (!utf8_valid_text(addr->data ? addr->data : "", addr->len) ||
        (!smtputf8 && utf8_has_8bit(addr->data ? addr->data : "", addr->len)))
        abort();
}

static void do_mail(int *have_mail, const char *arg)
{
    static const struct smtp_xverp xverp = { "+=", "-=+" };
    struct smtp_mail_args m = SMTP_MAIL_ARGS_INIT;
    struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
    if (*have_mail) {
        say("503 5.5.1 Error: nested MAIL command");
    } else if (smtpd_cmd_mail_xverp(arg, SIZE_LIMIT, 1, &xverp, &m, &err) < 0) {
        say_err(&err);
    } else {
        if (m.sender.len > 254 || (m.has_size && m.size > SIZE_LIMIT))
            abort();
        if (m.verp[0] && (m.sender.len == 0 || !verp_delims_valid(m.verp, xverp.filter)))
            abort();
        clean(buf_str(&m.sender), 254, 0);
        utf8_ok(&m.sender, m.smtputf8);
        if (m.envid)
            clean(m.envid, 100, 1);
        if (m.envid && !*m.envid)
            abort();
        *have_mail = m.smtputf8 ? 2 : 1;
        say("250 2.1.0 Ok");
    }
    smtpd_mail_args_destroy(&m);
    smtpd_cmd_reply_destroy(&err);
}

static void check_rcpt(const struct smtp_rcpt_args *r, int smtputf8)
{
    if (r->addr.len == 0 || strchr(buf_str(&r->addr), '@') == NULL)
        abort();
    utf8_ok(&r->addr, smtputf8);
    clean(buf_str(&r->addr), 254 + strlen("@mx.fuzz.test"), 0);
    if ((r->notify & NOTIFY_NEVER) && r->notify != NOTIFY_NEVER)
        abort();
    if (r->orcpt == NULL)
        return;
    const char *semi = strchr(r->orcpt, ';');
    buf_t dec = BUF_INIT;
    if (semi == NULL || semi == r->orcpt || xtext_decode(semi + 1, &dec) < 0)
        abort();
    for (size_t i = 0; i < dec.len; i++)
        if ((unsigned char)dec.data[i] < 0x20 || (unsigned char)dec.data[i] == 0x7f)
            abort(); /* would become a line of its own in a DSN */
    buf_destroy(&dec);
}

static void do_rcpt(int have_mail, const char *arg)
{
    struct smtp_rcpt_args r = SMTP_RCPT_ARGS_INIT;
    struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
    if (!have_mail) {
        say("503 5.5.1 Error: need MAIL command");
    } else if (smtpd_cmd_rcpt(arg, "mx.fuzz.test",
                              have_mail == 2 ? SMTP_UTF8_DECLARED : SMTP_UTF8_UNDECLARED, &r,
                              &err) < 0) {
        say_err(&err);
    } else {
        check_rcpt(&r, have_mail == 2);
        say("250 2.1.5 Ok");
    }
    smtpd_rcpt_args_destroy(&r);
    smtpd_cmd_reply_destroy(&err);
}

/* One line, as smtpd_cmd_dispatch() sees it. */
static void command(int *have_mail, char *line, size_t len)
{
    struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
    char *verb = NULL, *arg = NULL;
    nreplies = 0;
    int idx = smtpd_cmd_split(line, len, LINE_LIMIT, &verb, &arg, &err);
    if (idx < -2 || idx >= SMTP_VERB_COUNT ||
        (idx >= 0 && !str_ieq(verb, smtpd_cmd_verb_name(idx))))
        abort();
    if (idx == -2) {
        say_err(&err);
    } else if (idx == SMTP_VERB_MAIL) {
        do_mail(have_mail, arg);
    } else if (idx == SMTP_VERB_RCPT) {
        do_rcpt(*have_mail, arg);
    } else if (idx == SMTP_VERB_RSET) {
        *have_mail = 0;
        say("250 2.0.0 Ok");
    } else if (idx < 0)
        say("500 5.5.2 Error: command not recognized");
    else
        say("250 2.0.0 Ok");
    smtpd_cmd_reply_destroy(&err);
    check_reply();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = xmalloc(size + 1), *p = text, *end = text + size;
    memcpy(text, data, size);
    text[size] = '\0';
    int have_mail = 0;
    while (p < end) { /* NUL bytes stay inside lines, as smtpd reads them */
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *next = nl ? nl + 1 : end;
        size_t len = (size_t)((nl ? nl : end) - p);
        if (len && p[len - 1] == '\r')
            len--;
        p[len] = '\0';
        command(&have_mail, p, len);
        p = next;
    }
    free(text);
    return 0;
}
