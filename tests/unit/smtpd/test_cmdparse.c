/* test_cmdparse.c - smtpd's command parser (smtpd/smtpd_cmdparse.c), table
 * driven: the verb split with its line checks, MAIL FROM and RCPT TO with
 * their ESMTP parameters, and the exact reply smtpd sends on each error. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/mail/qfile.h"
#include "smtpd/smtpd_cmdparse.h"

#define LIMIT 64 /* command line limit for the split cases */

/* The reply as smtpd would send it, or "" when there is none. */
static const char *reply_text(const struct smtpd_cmd_reply *r)
{
    static buf_t b = BUF_INIT;
    buf_reset(&b);
    if (r->code)
        smtpd_cmd_reply_format(r, &b);
    return buf_str(&b);
}

/* ---- verbs and the line checks ---- */

struct split_case {
    const char *line;
    size_t len;       /* 0: strlen(line) */
    int rc;           /* enum smtp_verb, -1 unknown, -2 refused */
    const char *verb; /* expected split when rc != -2 */
    const char *arg;
    const char *reply; /* expected reply when rc == -2 */
};

static void test_split(void **state)
{
    static const struct split_case cases[] = {
        { "HELO client.example", 0, SMTP_VERB_HELO, "HELO", "client.example", NULL },
        { "ehlo client.example", 0, SMTP_VERB_EHLO, "ehlo", "client.example", NULL },
        { "StartTLS", 0, SMTP_VERB_STARTTLS, "StartTLS", "", NULL },
        { "MAIL FROM:<a@b.example> SIZE=1", 0, SMTP_VERB_MAIL, "MAIL", "FROM:<a@b.example> SIZE=1",
          NULL },
        { "rcpt   TO:<x@y.example>", 0, SMTP_VERB_RCPT, "rcpt", "TO:<x@y.example>", NULL },
        { "DATA", 0, SMTP_VERB_DATA, "DATA", "", NULL },
        { "DATA   ", 0, SMTP_VERB_DATA, "DATA", "", NULL }, /* trailing spaces */
        { "NOOP  x  ", 0, SMTP_VERB_NOOP, "NOOP", "x  ", NULL },
        { "QUIT", 0, SMTP_VERB_QUIT, "QUIT", "", NULL },
        { "quit", 0, SMTP_VERB_QUIT, "quit", "", NULL },
        { "BDAT 10 LAST", 0, SMTP_VERB_BDAT, "BDAT", "10 LAST", NULL },
        { "FOO bar", 0, -1, "FOO", "bar", NULL },
        { "MAILFROM:<a@b>", 0, -1, "MAILFROM:<a@b>", "", NULL },
        { "HELOx", 0, -1, "HELOx", "", NULL },
        { "", 0, -1, "", "", NULL },
        { " NOOP", 0, -1, "", "NOOP", NULL },      /* leading space: empty verb */
        { "NOOP\tx", 0, -1, "NOOP\tx", "", NULL }, /* TAB is no separator */
        { "XCLIENT ADDR=1.2.3.4", 0, -1, "XCLIENT", "ADDR=1.2.3.4", NULL },
        { "NOOP\001", 0, -2, NULL, NULL, "500 5.5.2 Error: bad syntax" },
        { "HELO a\rb", 0, -2, NULL, NULL, "500 5.5.2 Error: bad syntax" },
        { "HELO a\033[1m", 0, -2, NULL, NULL, "500 5.5.2 Error: bad syntax" },
        { "NOOP\0hidden", 11, -2, NULL, NULL, "500 5.5.2 Error: bad syntax" }, /* NUL */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct split_case *c = &cases[i];
        size_t len = c->len ? c->len : strlen(c->line);
        char *line = xmalloc(len + 1);
        memcpy(line, c->line, len);
        line[len] = '\0';
        char *verb = NULL, *arg = NULL;
        struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
        int rc = smtpd_cmd_split(line, len, LIMIT, &verb, &arg, &err);
        if (rc != c->rc)
            fail_msg("case %zu \"%s\": rc %d, expected %d", i, c->line, rc, c->rc);
        if (rc == -2) {
            assert_string_equal(reply_text(&err), c->reply);
        } else {
            assert_int_equal(err.code, 0);
            assert_string_equal(verb, c->verb);
            assert_string_equal(arg, c->arg);
        }
        smtpd_cmd_reply_destroy(&err);
        free(line);
    }
}

static void test_line_length(void **state)
{
    char line[LIMIT + 2];
    memset(line, 'x', sizeof(line));
    memcpy(line, "NOOP ", 5);
    char *verb, *arg;
    struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
    line[LIMIT] = '\0';
    assert_int_equal(smtpd_cmd_split(line, LIMIT, LIMIT, &verb, &arg, &err), SMTP_VERB_NOOP);
    assert_int_equal(strlen(arg), LIMIT - 5);
    memset(line, 'x', sizeof(line));
    memcpy(line, "NOOP ", 5);
    line[LIMIT + 1] = '\0';
    assert_int_equal(smtpd_cmd_split(line, LIMIT + 1, LIMIT, &verb, &arg, &err), -2);
    assert_string_equal(reply_text(&err), "500 5.5.2 Error: line too long");
    /* too long wins over a control byte */
    line[7] = '\n';
    assert_int_equal(smtpd_cmd_split(line, LIMIT + 1, LIMIT, &verb, &arg, &err), -2);
    assert_string_equal(reply_text(&err), "500 5.5.2 Error: line too long");
    smtpd_cmd_reply_destroy(&err);
}

static void test_verb_names(void **state)
{
    for (int i = 0; i < SMTP_VERB_COUNT; i++) {
        const char *n = smtpd_cmd_verb_name(i);
        assert_non_null(n);
        assert_int_equal(smtpd_cmd_verb(n), i);
        char *lower = xstrdup(n);
        str_lower(lower);
        assert_int_equal(smtpd_cmd_verb(lower), i);
        free(lower);
    }
    assert_null(smtpd_cmd_verb_name(-1));
    assert_null(smtpd_cmd_verb_name(SMTP_VERB_COUNT));
    assert_int_equal(smtpd_cmd_verb("MAI"), -1);
    assert_int_equal(smtpd_cmd_verb("MAILX"), -1);
}

/* ---- MAIL FROM ---- */

#define NOSIZE ULLONG_MAX - 1 /* "SIZE not given" in the table */

struct mail_case {
    const char *arg;
    long long limit;
    const char *reply; /* NULL: accepted */
    const char *sender;
    unsigned long long size; /* NOSIZE: not given */
    int body, ret;
    const char *envid; /* NULL: none */
    int auth;
};

static const struct mail_case mail_cases[] = {
    /* the keyword and the path */
    { "FROM:<a@b.example>", 0, NULL, "a@b.example", NOSIZE, 0, 0, NULL, 0 },
    { "from:<A@B.Example>", 0, NULL, "A@B.Example", NOSIZE, 0, 0, NULL, 0 },
    { "FROM: <a@b.example>", 0, NULL, "a@b.example", NOSIZE, 0, 0, NULL, 0 },
    { "FROM:<>", 0, NULL, "", NOSIZE, 0, 0, NULL, 0 }, /* null sender */
    { "FROM:<> ", 0, NULL, "", NOSIZE, 0, 0, NULL, 0 },
    { "FROM:<\"a b\"@b.example>", 0, NULL, "\"a b\"@b.example", NOSIZE, 0, 0, NULL, 0 },
    { "FROM:<@r.example:a@b.example>", 0, NULL, "a@b.example", NOSIZE, 0, 0, NULL, 0 },
    { "", 0, "501 5.5.4 Syntax: MAIL FROM:<address>", NULL, 0, 0, 0, NULL, 0 },
    { "TO:<a@b.example>", 0, "501 5.5.4 Syntax: MAIL FROM:<address>", NULL, 0, 0, 0, NULL, 0 },
    { "FROM <a@b.example>", 0, "501 5.5.4 Syntax: MAIL FROM:<address>", NULL, 0, 0, 0, NULL, 0 },
    { "FROM:", 0, "501 5.1.7 missing address", NULL, 0, 0, 0, NULL, 0 },
    { "FROM:a@b.example", 0, "501 5.1.7 address must be enclosed in <>", NULL, 0, 0, 0, NULL, 0 },
    { "FROM:<a@b.example", 0, "501 5.1.7 unbalanced angle brackets (missing '>')", NULL, 0, 0, 0,
      NULL, 0 },
    { "FROM:<<a@b.example>>", 0, "501 5.1.7 unbalanced angle brackets", NULL, 0, 0, 0, NULL, 0 },
    { "FROM:<\"a b@b.example>", 0, "501 5.1.7 unbalanced quotes or control character in address",
      NULL, 0, 0, 0, NULL, 0 },
    { "FROM:<a@b.example>SIZE=1", 0,
      "501 5.1.7 text after the address must be separated by a space", NULL, 0, 0, 0, NULL, 0 },
    { "FROM:<a@b.example>\tSIZE=1", 0,
      "501 5.1.7 text after the address must be separated by a space", NULL, 0, 0, 0, NULL, 0 },
    { "FROM:<a@>", 0, "501 5.1.7 empty domain", NULL, 0, 0, 0, NULL, 0 },
    { "FROM:<a@b..example>", 0, "501 5.1.7 invalid domain", NULL, 0, 0, 0, NULL, 0 },
    /* SIZE */
    { "FROM:<a@b.example> SIZE=1000", 1000, NULL, "a@b.example", 1000, 0, 0, NULL, 0 },
    { "FROM:<a@b.example> size=0", 1000, NULL, "a@b.example", 0, 0, 0, NULL, 0 },
    { "FROM:<a@b.example> SIZE=1001", 1000, "552 5.3.4 Message size exceeds fixed limit", NULL, 0,
      0, 0, NULL, 0 },
    { "FROM:<a@b.example> SIZE=99999999999999999999999", 0, NULL, "a@b.example", ULLONG_MAX, 0, 0,
      NULL, 0 }, /* no limit: saturates */
    { "FROM:<a@b.example> SIZE=99999999999999999999999", 1000,
      "552 5.3.4 Message size exceeds fixed limit", NULL, 0, 0, 0, NULL, 0 },
    { "FROM:<a@b.example> SIZE", 0, "501 5.5.4 Bad message size syntax", NULL, 0, 0, 0, NULL, 0 },
    { "FROM:<a@b.example> SIZE=", 0, "501 5.5.4 Error: Bad parameter syntax", NULL, 0, 0, 0, NULL,
      0 },
    { "FROM:<a@b.example> SIZE=-1", 0, "501 5.5.4 Bad message size syntax", NULL, 0, 0, 0, NULL,
      0 },
    { "FROM:<a@b.example> SIZE=+1", 0, "501 5.5.4 Bad message size syntax", NULL, 0, 0, 0, NULL,
      0 },
    { "FROM:<a@b.example> SIZE=12k", 0, "501 5.5.4 Bad message size syntax", NULL, 0, 0, 0, NULL,
      0 },
    { "FROM:<a@b.example> SIZE=0x10", 0, "501 5.5.4 Bad message size syntax", NULL, 0, 0, 0, NULL,
      0 },
    { "FROM:<a@b.example> SIZE=1 SIZE=2", 0, NULL, "a@b.example", 2, 0, 0, NULL, 0 },
    /* BODY */
    { "FROM:<a@b.example> BODY=7bit", 0, NULL, "a@b.example", NOSIZE, QBODY_7BIT, 0, NULL, 0 },
    { "FROM:<a@b.example> BODY=8BITMIME", 0, NULL, "a@b.example", NOSIZE, QBODY_8BITMIME, 0, NULL,
      0 },
    { "FROM:<a@b.example> BODY=BINARYMIME", 0, "501 5.5.4 Error: Unsupported BODY parameter", NULL,
      0, 0, 0, NULL, 0 },
    { "FROM:<a@b.example> BODY", 0, "501 5.5.4 Error: Unsupported BODY parameter", NULL, 0, 0, 0,
      NULL, 0 },
    /* RET */
    { "FROM:<a@b.example> RET=FULL", 0, NULL, "a@b.example", NOSIZE, 0, RET_FULL, NULL, 0 },
    { "FROM:<a@b.example> ret=hdrs", 0, NULL, "a@b.example", NOSIZE, 0, RET_HDRS, NULL, 0 },
    { "FROM:<a@b.example> RET=ALL", 0, "501 5.5.4 Error: Bad RET parameter syntax", NULL, 0, 0, 0,
      NULL, 0 },
    { "FROM:<a@b.example> RET=FULL RET=HDRS", 0, "501 5.5.4 Error: Duplicate RET parameter", NULL,
      0, 0, 0, NULL, 0 },
    { "FROM:<a@b.example> RET=FULL RET=FULL", 0, "501 5.5.4 Error: Duplicate RET parameter", NULL,
      0, 0, 0, NULL, 0 },
    /* ENVID: xtext, decoded value printable ASCII, at most 100 chars */
    { "FROM:<a@b.example> ENVID=QQ314159", 0, NULL, "a@b.example", NOSIZE, 0, 0, "QQ314159", 0 },
    { "FROM:<a@b.example> ENVID=a+2Bb+3Dc", 0, NULL, "a@b.example", NOSIZE, 0, 0, "a+b=c", 0 },
    { "FROM:<a@b.example> ENVID=a+0D+0AX-Evil:+201", 0,
      "501 5.5.4 Error: Bad ENVID parameter syntax", NULL, 0, 0, 0, NULL, 0 },
    { "FROM:<a@b.example> ENVID=a+0Ab", 0, "501 5.5.4 Error: Bad ENVID parameter syntax", NULL, 0,
      0, 0, NULL, 0 },
    { "FROM:<a@b.example> ENVID=a+00b", 0, "501 5.5.4 Error: Bad ENVID parameter syntax", NULL, 0,
      0, 0, NULL, 0 },
    { "FROM:<a@b.example> ENVID=a+7Fb", 0, "501 5.5.4 Error: Bad ENVID parameter syntax", NULL, 0,
      0, 0, NULL, 0 },
    { "FROM:<a@b.example> ENVID=a+C3+A9", 0, "501 5.5.4 Error: Bad ENVID parameter syntax", NULL, 0,
      0, 0, NULL, 0 },
    { "FROM:<a@b.example> ENVID=a+2", 0, "501 5.5.4 Error: Bad ENVID parameter syntax", NULL, 0, 0,
      0, NULL, 0 },
    { "FROM:<a@b.example> ENVID=a+zz", 0, "501 5.5.4 Error: Bad ENVID parameter syntax", NULL, 0, 0,
      0, NULL, 0 },
    { "FROM:<a@b.example> ENVID", 0, "501 5.5.4 Error: Bad ENVID parameter syntax", NULL, 0, 0, 0,
      NULL, 0 },
    { "FROM:<a@b.example> ENVID=x ENVID=y", 0, "501 5.5.4 Error: Bad ENVID parameter syntax", NULL,
      0, 0, 0, NULL, 0 },
    /* AUTH (RFC 4954): accepted, value unused */
    { "FROM:<a@b.example> AUTH=<>", 0, NULL, "a@b.example", NOSIZE, 0, 0, NULL, 1 },
    { "FROM:<a@b.example> AUTH=u+40b.example", 0, NULL, "a@b.example", NOSIZE, 0, 0, NULL, 1 },
    /* all together, any case, any order */
    { "FROM:<> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=id+2B1 AUTH=<>", 1000, NULL, "", 100,
      QBODY_8BITMIME, RET_HDRS, "id+1", 1 },
    { "FROM:<a@b.example>   envid=e1   Ret=Full   Body=7Bit  ", 0, NULL, "a@b.example", NOSIZE,
      QBODY_7BIT, RET_FULL, "e1", 0 },
    /* unknown and malformed parameters; the first bad one decides */
    { "FROM:<a@b.example> FOO=bar", 0, "555 5.5.4 Unsupported option: FOO", NULL, 0, 0, 0, NULL,
      0 },
    { "FROM:<a@b.example> X-Vendor-Thing=1", 0, "555 5.5.4 Unsupported option: X-Vendor-Thing",
      NULL, 0, 0, 0, NULL, 0 },
    { "FROM:<a@b.example> NOTIFY=NEVER", 0, "555 5.5.4 Unsupported option: NOTIFY", NULL, 0, 0, 0,
      NULL, 0 }, /* an RCPT parameter */
    { "FROM:<a@b.example> SIZE=x FOO=1", 0, "501 5.5.4 Bad message size syntax", NULL, 0, 0, 0,
      NULL, 0 },
    { "FROM:<a@b.example> FOO=1 SIZE=x", 0, "555 5.5.4 Unsupported option: FOO", NULL, 0, 0, 0,
      NULL, 0 },
    { "FROM:<a@b.example> =1", 0, "501 5.5.4 Error: Bad parameter syntax", NULL, 0, 0, 0, NULL, 0 },
    { "FROM:<a@b.example> =", 0, "501 5.5.4 Error: Bad parameter syntax", NULL, 0, 0, 0, NULL, 0 },
    { "FROM:<a@b.example> SIZE==1", 0, "501 5.5.4 Error: Bad parameter syntax", NULL, 0, 0, 0, NULL,
      0 },
    { "FROM:<a@b.example> SIZE=1=2", 0, "501 5.5.4 Error: Bad parameter syntax", NULL, 0, 0, 0,
      NULL, 0 },
    { "FROM:<a@b.example> -X=1", 0, "501 5.5.4 Error: Bad parameter syntax", NULL, 0, 0, 0, NULL,
      0 },
    { "FROM:<a@b.example> SI_ZE=1", 0, "501 5.5.4 Error: Bad parameter syntax", NULL, 0, 0, 0, NULL,
      0 },
    { "FROM:<a@b.example> SIZE=\"1\"", 0, "501 5.5.4 Bad message size syntax", NULL, 0, 0, 0, NULL,
      0 },
};

static void check_mail(size_t i, const struct mail_case *c, struct smtp_mail_args *m)
{
    struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
    int rc = smtpd_cmd_mail(c->arg, c->limit, 1, m, &err);
    if (c->reply) {
        if (rc != -1 || strcmp(reply_text(&err), c->reply) != 0)
            fail_msg("MAIL case %zu \"%s\": rc %d reply \"%s\", expected \"%s\"", i, c->arg, rc,
                     reply_text(&err), c->reply);
        smtpd_cmd_reply_destroy(&err);
        return;
    }
    if (rc != 0)
        fail_msg("MAIL case %zu \"%s\": refused with \"%s\"", i, c->arg, reply_text(&err));
    assert_string_equal(buf_str(&m->sender), c->sender);
    assert_int_equal(m->has_size, c->size != NOSIZE);
    if (c->size != NOSIZE)
        assert_true(m->size == c->size);
    assert_int_equal(m->body, c->body);
    assert_int_equal(m->ret, c->ret);
    if (c->envid)
        assert_string_equal(m->envid, c->envid);
    else
        assert_null(m->envid);
    assert_int_equal(m->has_auth, c->auth);
    assert_int_equal(m->smtputf8, 0);
}

static void test_mail(void **state)
{
    /* One args struct for all: each call must start from scratch. */
    struct smtp_mail_args m = SMTP_MAIL_ARGS_INIT;
    for (size_t i = 0; i < sizeof(mail_cases) / sizeof(mail_cases[0]); i++)
        check_mail(i, &mail_cases[i], &m);
    smtpd_mail_args_destroy(&m);
}

static void test_mail_envid_length(void **state)
{
    buf_t arg = BUF_INIT;
    struct smtp_mail_args m = SMTP_MAIL_ARGS_INIT;
    struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
    buf_puts(&arg, "FROM:<a@b.example> ENVID=");
    for (int i = 0; i < 100; i++)
        buf_putc(&arg, 'e');
    assert_int_equal(smtpd_cmd_mail(buf_str(&arg), 0, 1, &m, &err), 0);
    assert_int_equal(strlen(m.envid), 100);
    buf_putc(&arg, 'e');
    assert_int_equal(smtpd_cmd_mail(buf_str(&arg), 0, 1, &m, &err), -1);
    assert_string_equal(reply_text(&err), "501 5.5.4 Error: Bad ENVID parameter syntax");
    smtpd_mail_args_destroy(&m);
    smtpd_cmd_reply_destroy(&err);
    buf_destroy(&arg);
}

/* XVERP: only when allowed; delimiters checked; never with the null sender. */
static void test_mail_xverp(void **state)
{
    static const struct smtp_xverp xv = { "+=", "-=+" };
    static const struct {
        const char *arg;
        int allowed;
        const char *reply, *verp;
    } cases[] = {
        { "FROM:<a@b.example> XVERP", 1, NULL, "+=" },
        { "FROM:<a@b.example> xverp", 1, NULL, "+=" },
        { "FROM:<a@b.example> XVERP=-=", 1, NULL, "-=" },
        { "FROM:<a@b.example> SIZE=10 XVERP=+= BODY=8BITMIME", 1, NULL, "+=" },
        { "FROM:<a@b.example>", 1, NULL, "" },
        { "FROM:<a@b.example> XVERP", 0, "555 5.5.4 Unsupported option: XVERP", NULL },
        { "FROM:<a@b.example> XVERP=+=", 0, "555 5.5.4 Unsupported option: XVERP", NULL },
        { "FROM:<a@b.example> XVERP=+", 1, "501 5.5.4 Error: XVERP needs two characters from -=+",
          NULL },
        { "FROM:<a@b.example> XVERP=+=-", 1, "501 5.5.4 Error: XVERP needs two characters from -=+",
          NULL },
        { "FROM:<a@b.example> XVERP=a=", 1, "501 5.5.4 Error: XVERP needs two characters from -=+",
          NULL },
        { "FROM:<a@b.example> XVERP=", 1, "501 5.5.4 Error: XVERP needs two characters from -=+",
          NULL },
        { "FROM:<a@b.example> XVERP=+= XVERP=-=", 1, NULL, "-=" },
        { "FROM:<> XVERP", 1, "503 5.5.4 Error: XVERP requires non-null sender", NULL },
    };
    struct smtp_mail_args m = SMTP_MAIL_ARGS_INIT;
    struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = smtpd_cmd_mail_xverp(cases[i].arg, 0, 1, cases[i].allowed ? &xv : NULL, &m, &err);
        if (cases[i].reply) {
            if (rc != -1 || strcmp(reply_text(&err), cases[i].reply) != 0)
                fail_msg("case %zu \"%s\": rc %d reply \"%s\"", i, cases[i].arg, rc,
                         reply_text(&err));
        } else if (rc != 0 || strcmp(m.verp, cases[i].verp) != 0) {
            fail_msg("case %zu \"%s\": rc %d verp \"%s\" (%s)", i, cases[i].arg, rc, m.verp,
                     reply_text(&err));
        }
    }
    /* The plain entry point never allows it. */
    assert_int_equal(smtpd_cmd_mail("FROM:<a@b.example> XVERP", 0, 1, &m, &err), -1);
    assert_string_equal(reply_text(&err), "555 5.5.4 Unsupported option: XVERP");
    smtpd_mail_args_destroy(&m);
    smtpd_cmd_reply_destroy(&err);
}

/* ---- RCPT TO ---- */

#define HOST "mx.test"

struct rcpt_case {
    const char *arg;
    const char *reply; /* NULL: accepted */
    const char *addr;
    int routed;
    int notify;
    const char *orcpt;
};

static const struct rcpt_case rcpt_cases[] = {
    { "TO:<x@example.org>", NULL, "x@example.org", 0, 0, NULL },
    { "to:<X@Example.ORG>", NULL, "X@Example.ORG", 0, 0, NULL },
    { "TO: <x@example.org>", NULL, "x@example.org", 0, 0, NULL },
    { "TO:<\"x y\"@example.org>", NULL, "\"x y\"@example.org", 0, 0, NULL },
    { "FROM:<x@example.org>", "501 5.5.4 Syntax: RCPT TO:<address>", NULL, 0, 0, NULL },
    { "", "501 5.5.4 Syntax: RCPT TO:<address>", NULL, 0, 0, NULL },
    { "TO:<>", "501 5.1.3 null address not allowed here", NULL, 0, 0, NULL },
    { "TO:x@example.org", "501 5.1.3 address must be enclosed in <>", NULL, 0, 0, NULL },
    { "TO:<x@example.org", "501 5.1.3 unbalanced angle brackets (missing '>')", NULL, 0, 0, NULL },
    { "TO:<x@<example.org>", "501 5.1.3 unbalanced angle brackets", NULL, 0, 0, NULL },
    { "TO:<\"x@example.org>", "501 5.1.3 unbalanced quotes or control character in address", NULL,
      0, 0, NULL },
    /* postmaster without a domain is ours; other bare local parts are not */
    { "TO:<postmaster>", NULL, "postmaster@" HOST, 0, 0, NULL },
    { "TO:<PostMaster>", NULL, "PostMaster@" HOST, 0, 0, NULL },
    { "TO:<postmaster> NOTIFY=NEVER", NULL, "postmaster@" HOST, 0, NOTIFY_NEVER, NULL },
    { "TO:<bob>", "501 5.1.3 Bad recipient address syntax", NULL, 0, 0, NULL },
    { "TO:<postmasterx>", "501 5.1.3 Bad recipient address syntax", NULL, 0, 0, NULL },
    /* source routes: accepted, route dropped, flagged */
    { "TO:<@r1.example,@r2.example:x@example.org>", NULL, "x@example.org", 1, 0, NULL },
    { "TO: <@r1.example:x@example.org>", NULL, "x@example.org", 1, 0, NULL },
    { "TO:<@r1.example:postmaster>", NULL, "postmaster@" HOST, 1, 0, NULL },
    { "TO:<@bad_route:x@example.org>", "501 5.1.3 invalid source route", NULL, 0, 0, NULL },
    { "TO:<@r1.example>", "501 5.1.3 invalid source route", NULL, 0, 0, NULL },
    { "TO:<@r1.example:>", "501 5.1.3 source route without mailbox", NULL, 0, 0, NULL },
    /* NOTIFY */
    { "TO:<x@example.org> NOTIFY=NEVER", NULL, "x@example.org", 0, NOTIFY_NEVER, NULL },
    { "TO:<x@example.org> notify=never", NULL, "x@example.org", 0, NOTIFY_NEVER, NULL },
    { "TO:<x@example.org> NOTIFY=SUCCESS", NULL, "x@example.org", 0, NOTIFY_SUCCESS, NULL },
    { "TO:<x@example.org> NOTIFY=SUCCESS,FAILURE", NULL, "x@example.org", 0,
      NOTIFY_SUCCESS | NOTIFY_FAILURE, NULL },
    { "TO:<x@example.org> NOTIFY=delay,Failure,SUCCESS", NULL, "x@example.org", 0,
      NOTIFY_SUCCESS | NOTIFY_FAILURE | NOTIFY_DELAY, NULL },
    { "TO:<x@example.org> NOTIFY=NEVER,SUCCESS", "501 5.5.4 Error: Bad NOTIFY parameter syntax",
      NULL, 0, 0, NULL },
    { "TO:<x@example.org> NOTIFY=FAILURE,NEVER", "501 5.5.4 Error: Bad NOTIFY parameter syntax",
      NULL, 0, 0, NULL },
    { "TO:<x@example.org> NOTIFY=NEVER,NEVER", "501 5.5.4 Error: Bad NOTIFY parameter syntax", NULL,
      0, 0, NULL },
    { "TO:<x@example.org> NOTIFY=SOMETIMES", "501 5.5.4 Error: Bad NOTIFY parameter syntax", NULL,
      0, 0, NULL },
    { "TO:<x@example.org> NOTIFY", "501 5.5.4 Error: Bad NOTIFY parameter syntax", NULL, 0, 0,
      NULL },
    { "TO:<x@example.org> NOTIFY=", "501 5.5.4 Error: Bad parameter syntax", NULL, 0, 0, NULL },
    { "TO:<x@example.org> NOTIFY=,", "501 5.5.4 Error: Bad NOTIFY parameter syntax", NULL, 0, 0,
      NULL },
    { "TO:<x@example.org> NOTIFY=SUCCESS NOTIFY=FAILURE",
      "501 5.5.4 Error: Bad NOTIFY parameter syntax", NULL, 0, 0, NULL },
    /* ORCPT: addr-type ";" xtext, kept as given */
    { "TO:<x@example.org> ORCPT=rfc822;x@example.org", NULL, "x@example.org", 0, 0,
      "rfc822;x@example.org" },
    { "TO:<x@example.org> ORCPT=RFC822;x+2By@example.org", NULL, "x@example.org", 0, 0,
      "RFC822;x+2By@example.org" },
    { "TO:<x@example.org> ORCPT=x-local-type;abc", NULL, "x@example.org", 0, 0,
      "x-local-type;abc" },
    /* RFC 6533 utf-8-addr-xtext */
    { "TO:<x@example.org> ORCPT=utf-8;r\\x{E9}ception@example.org", NULL, "x@example.org", 0, 0,
      "utf-8;r\\x{E9}ception@example.org" },
    { "TO:<x@example.org> ORCPT=rfc822;a+0D+0AX-Injected:+201",
      "501 5.5.4 Error: Bad ORCPT parameter syntax", NULL, 0, 0, NULL },
    { "TO:<x@example.org> ORCPT=rfc822;a+7F", "501 5.5.4 Error: Bad ORCPT parameter syntax", NULL,
      0, 0, NULL },
    { "TO:<x@example.org> ORCPT=;x@example.org", "501 5.5.4 Error: Bad ORCPT parameter syntax",
      NULL, 0, 0, NULL },
    { "TO:<x@example.org> ORCPT=rfc822;", "501 5.5.4 Error: Bad ORCPT parameter syntax", NULL, 0, 0,
      NULL },
    { "TO:<x@example.org> ORCPT=rfc822", "501 5.5.4 Error: Bad ORCPT parameter syntax", NULL, 0, 0,
      NULL },
    { "TO:<x@example.org> ORCPT=rfc.822;x", "501 5.5.4 Error: Bad ORCPT parameter syntax", NULL, 0,
      0, NULL },
    { "TO:<x@example.org> ORCPT=rfc822;x+zz", "501 5.5.4 Error: Bad ORCPT parameter syntax", NULL,
      0, 0, NULL },
    { "TO:<x@example.org> ORCPT=rfc822;a ORCPT=rfc822;b",
      "501 5.5.4 Error: Bad ORCPT parameter syntax", NULL, 0, 0, NULL },
    /* both, and the rest */
    { "TO:<x@example.org> NOTIFY=FAILURE,DELAY ORCPT=rfc822;y@example.org", NULL, "x@example.org",
      0, NOTIFY_FAILURE | NOTIFY_DELAY, "rfc822;y@example.org" },
    { "TO:<x@example.org> FOO", "555 5.5.4 Unsupported option: FOO", NULL, 0, 0, NULL },
    { "TO:<x@example.org> SIZE=10", "555 5.5.4 Unsupported option: SIZE", NULL, 0, 0, NULL },
    { "TO:<x@example.org> =x", "501 5.5.4 Error: Bad parameter syntax", NULL, 0, 0, NULL },
    { "TO:<x@example.org>NOTIFY=NEVER",
      "501 5.1.3 text after the address must be separated by a space", NULL, 0, 0, NULL },
};

static void test_rcpt(void **state)
{
    struct smtp_rcpt_args r = SMTP_RCPT_ARGS_INIT;
    for (size_t i = 0; i < sizeof(rcpt_cases) / sizeof(rcpt_cases[0]); i++) {
        const struct rcpt_case *c = &rcpt_cases[i];
        struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
        int rc = smtpd_cmd_rcpt(c->arg, HOST, SMTP_UTF8_UNDECLARED, &r, &err);
        if (c->reply) {
            if (rc != -1 || strcmp(reply_text(&err), c->reply) != 0)
                fail_msg("RCPT case %zu \"%s\": rc %d reply \"%s\", expected \"%s\"", i, c->arg, rc,
                         reply_text(&err), c->reply);
            smtpd_cmd_reply_destroy(&err);
            continue;
        }
        if (rc != 0)
            fail_msg("RCPT case %zu \"%s\": refused with \"%s\"", i, c->arg, reply_text(&err));
        assert_string_equal(buf_str(&r.addr), c->addr);
        assert_int_equal(r.source_routed, c->routed);
        assert_int_equal(r.notify, c->notify);
        if (c->orcpt)
            assert_string_equal(r.orcpt, c->orcpt);
        else
            assert_null(r.orcpt);
    }
    smtpd_rcpt_args_destroy(&r);
}

/* smtpd checks the recipient limit between the address and the
 * parameters: the two halves must work on their own. */
static void test_rcpt_two_steps(void **state)
{
    struct smtp_rcpt_args r = SMTP_RCPT_ARGS_INIT;
    struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
    assert_int_equal(smtpd_cmd_rcpt_addr("TO:<x@example.org> NOTIFY=BOGUS", HOST, 0, &r, &err), 0);
    assert_string_equal(r.params, "NOTIFY=BOGUS");
    assert_int_equal(err.code, 0);
    assert_int_equal(smtpd_cmd_rcpt_params(&r, &err), -1);
    assert_string_equal(reply_text(&err), "501 5.5.4 Error: Bad NOTIFY parameter syntax");
    assert_int_equal(smtpd_cmd_rcpt_addr("TO:<y@example.org>", HOST, 0, &r, &err), 0);
    assert_int_equal(smtpd_cmd_rcpt_params(&r, &err), 0);
    assert_int_equal(r.notify, 0);
    smtpd_rcpt_args_destroy(&r);
    smtpd_cmd_reply_destroy(&err);
}

static void test_orcpt_length(void **state)
{
    buf_t arg = BUF_INIT;
    struct smtp_rcpt_args r = SMTP_RCPT_ARGS_INIT;
    struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
    buf_puts(&arg, "TO:<x@example.org> ORCPT=rfc822;");
    while (arg.len < strlen("TO:<x@example.org> ORCPT=") + 500)
        buf_putc(&arg, 'o');
    assert_int_equal(smtpd_cmd_rcpt(buf_str(&arg), HOST, 0, &r, &err), 0);
    assert_int_equal(strlen(r.orcpt), 500);
    buf_putc(&arg, 'o');
    assert_int_equal(smtpd_cmd_rcpt(buf_str(&arg), HOST, 0, &r, &err), -1);
    assert_string_equal(reply_text(&err), "501 5.5.4 Error: Bad ORCPT parameter syntax");
    smtpd_rcpt_args_destroy(&r);
    smtpd_cmd_reply_destroy(&err);
    buf_destroy(&arg);
}

/* ---- SMTPUTF8 (RFC 6531) ---- */

#define MUST    "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
#define NOTHERE "553 5.6.7 Unicode addresses are not supported here"

struct utf8_mail_case {
    const char *arg;
    int enable;        /* smtputf8_enable */
    const char *reply; /* NULL: accepted */
    const char *sender;
    int smtputf8;
};

static const struct utf8_mail_case utf8_mail_cases[] = {
    { "FROM:<a@b.example> SMTPUTF8", 1, NULL, "a@b.example", 1 },
    { "FROM:<a@b.example> smtputf8 BODY=8BITMIME SIZE=1", 1, NULL, "a@b.example", 1 },
    { "FROM:<> SMTPUTF8", 1, NULL, "", 1 },
    { "FROM:<\xc3\xbc@b.example> SMTPUTF8", 1, NULL, "\xc3\xbc@b.example", 1 },
    { "FROM:<a@\xc3\xa4.example> SMTPUTF8", 1, NULL, "a@\xc3\xa4.example", 1 },
    { "FROM:<\"j\xc3\xb6 k\"@b.example> SMTPUTF8", 1, NULL, "\"j\xc3\xb6 k\"@b.example", 1 },
    { "FROM:<\xe2\x9c\x93\xf0\x9f\x98\x80@\xe4\xbe\x8b.\xe6\xb5\x8b\xe8\xaf\x95> SMTPUTF8", 1, NULL,
      "\xe2\x9c\x93\xf0\x9f\x98\x80@\xe4\xbe\x8b.\xe6\xb5\x8b\xe8\xaf\x95", 1 },
    /* the parameter: no value, once */
    { "FROM:<a@b.example> SMTPUTF8=yes", 1, "501 5.5.4 Error: Bad SMTPUTF8 parameter syntax", NULL,
      0 },
    { "FROM:<a@b.example> SMTPUTF8 SMTPUTF8", 1, "501 5.5.4 Error: Bad SMTPUTF8 parameter syntax",
      NULL, 0 },
    { "FROM:<a@b.example> SMTPUTF8=", 1, "501 5.5.4 Error: Bad parameter syntax", NULL, 0 },
    /* a UTF-8 address needs the parameter; the first bad parameter still decides */
    { "FROM:<\xc3\xbc@b.example>", 1, MUST, NULL, 0 },
    { "FROM:<a@\xc3\xa4.example> BODY=8BITMIME", 1, MUST, NULL, 0 },
    { "FROM:<\xc3\xbc@b.example> FOO", 1, "555 5.5.4 Unsupported option: FOO", NULL, 0 },
    /* strict UTF-8: overlong, surrogates, > U+10FFFF, truncated, stray, C1 */
    { "FROM:<\xc0\xaf@b.example> SMTPUTF8", 1, "501 5.1.7 malformed UTF-8 in address", NULL, 0 },
    { "FROM:<\xe0\x80\xaf@b.example> SMTPUTF8", 1, "501 5.1.7 malformed UTF-8 in address", NULL,
      0 },
    { "FROM:<\xf0\x80\x80\xaf@b.example> SMTPUTF8", 1, "501 5.1.7 malformed UTF-8 in address", NULL,
      0 },
    { "FROM:<\xed\xa0\x80@b.example> SMTPUTF8", 1, "501 5.1.7 malformed UTF-8 in address", NULL,
      0 },
    { "FROM:<a@\xed\xbf\xbf.example> SMTPUTF8", 1, "501 5.1.7 malformed UTF-8 in address", NULL,
      0 },
    { "FROM:<\xf4\x90\x80\x80@b.example> SMTPUTF8", 1, "501 5.1.7 malformed UTF-8 in address", NULL,
      0 },
    { "FROM:<\xc3@b.example> SMTPUTF8", 1, "501 5.1.7 malformed UTF-8 in address", NULL, 0 },
    { "FROM:<a\xbc@b.example> SMTPUTF8", 1, "501 5.1.7 malformed UTF-8 in address", NULL, 0 },
    { "FROM:<\xfe@b.example> SMTPUTF8", 1, "501 5.1.7 malformed UTF-8 in address", NULL, 0 },
    { "FROM:<\xc2\x85@b.example> SMTPUTF8", 1, "501 5.1.7 control character in address", NULL, 0 },
    { "FROM:<\"\xc2\x9b\"@b.example> SMTPUTF8", 1, "501 5.1.7 control character in address", NULL,
      0 },
    { "FROM:<\xc0\xaf@b.example>", 1, "501 5.1.7 malformed UTF-8 in address", NULL, 0 },
    /* U-labels: UTF-8 letters with LDH rules, no specials */
    { "FROM:<a@-\xc3\xa4.example> SMTPUTF8", 1, "501 5.1.7 invalid domain", NULL, 0 },
    { "FROM:<a@\xc3\xa4_.example> SMTPUTF8", 1, "501 5.1.7 invalid domain", NULL, 0 },
    /* smtputf8_enable = no */
    { "FROM:<a@b.example> SMTPUTF8", 0, "555 5.5.4 Unsupported option: SMTPUTF8", NULL, 0 },
    { "FROM:<\xc3\xbc@b.example>", 0, NOTHERE, NULL, 0 },
    { "FROM:<a@b.example> BODY=8BITMIME", 0, NULL, "a@b.example", 0 },
};

static void test_mail_smtputf8(void **state)
{
    struct smtp_mail_args m = SMTP_MAIL_ARGS_INIT;
    for (size_t i = 0; i < sizeof(utf8_mail_cases) / sizeof(utf8_mail_cases[0]); i++) {
        const struct utf8_mail_case *c = &utf8_mail_cases[i];
        struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
        int rc = smtpd_cmd_mail(c->arg, 0, c->enable, &m, &err);
        if (c->reply) {
            if (rc != -1 || strcmp(reply_text(&err), c->reply) != 0)
                fail_msg("case %zu \"%s\": rc %d reply \"%s\", expected \"%s\"", i, c->arg, rc,
                         reply_text(&err), c->reply);
        } else {
            if (rc != 0)
                fail_msg("case %zu \"%s\": refused with \"%s\"", i, c->arg, reply_text(&err));
            assert_string_equal(buf_str(&m.sender), c->sender);
            assert_int_equal(m.smtputf8, c->smtputf8);
        }
        smtpd_cmd_reply_destroy(&err);
    }
    smtpd_mail_args_destroy(&m);
}

struct utf8_rcpt_case {
    const char *arg;
    int mode;          /* enum smtp_utf8 */
    const char *reply; /* NULL: accepted */
};

static const struct utf8_rcpt_case utf8_rcpt_cases[] = {
    { "TO:<x@example.org>", SMTP_UTF8_OFF, NULL },
    { "TO:<x@example.org>", SMTP_UTF8_UNDECLARED, NULL },
    { "TO:<x@example.org>", SMTP_UTF8_DECLARED, NULL },
    { "TO:<r\xc3\xa9"
      "ception@example.org>",
      SMTP_UTF8_DECLARED, NULL },
    { "TO:<x@b\xc3\xbc"
      "cher.example>",
      SMTP_UTF8_DECLARED, NULL },
    { "TO:<r\xc3\xa9"
      "ception@example.org>",
      SMTP_UTF8_UNDECLARED, MUST },
    { "TO:<x@b\xc3\xbc"
      "cher.example>",
      SMTP_UTF8_UNDECLARED, MUST },
    { "TO:<r\xc3\xa9"
      "ception@example.org>",
      SMTP_UTF8_OFF, NOTHERE },
    { "TO:<\xc0\xaf@example.org>", SMTP_UTF8_DECLARED, "501 5.1.3 malformed UTF-8 in address" },
    { "TO:<x@\xed\xa0\x80.example>", SMTP_UTF8_DECLARED, "501 5.1.3 malformed UTF-8 in address" },
    { "TO:<\xc2\x80@example.org>", SMTP_UTF8_DECLARED, "501 5.1.3 control character in address" },
    /* the syntax error comes first */
    { "TO:<\xc0\xaf@example.org>", SMTP_UTF8_UNDECLARED, "501 5.1.3 malformed UTF-8 in address" },
};

static void test_rcpt_smtputf8(void **state)
{
    struct smtp_rcpt_args r = SMTP_RCPT_ARGS_INIT;
    for (size_t i = 0; i < sizeof(utf8_rcpt_cases) / sizeof(utf8_rcpt_cases[0]); i++) {
        const struct utf8_rcpt_case *c = &utf8_rcpt_cases[i];
        struct smtpd_cmd_reply err = SMTP_CMD_REPLY_INIT;
        int rc = smtpd_cmd_rcpt(c->arg, HOST, c->mode, &r, &err);
        if (c->reply ? rc != -1 || strcmp(reply_text(&err), c->reply) != 0 : rc != 0)
            fail_msg("case %zu \"%s\": rc %d reply \"%s\", expected \"%s\"", i, c->arg, rc,
                     reply_text(&err), c->reply ? c->reply : "(accepted)");
        if (!c->reply) { /* "TO:<" address ">" */
            char *want = xstrndup(c->arg + 4, strlen(c->arg) - 5);
            assert_string_equal(buf_str(&r.addr), want);
            free(want);
        }
        smtpd_cmd_reply_destroy(&err);
    }
    smtpd_rcpt_args_destroy(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_line_length),
        cmocka_unit_test(test_verb_names),
        cmocka_unit_test(test_mail),
        cmocka_unit_test(test_mail_envid_length),
        cmocka_unit_test(test_mail_xverp),
        cmocka_unit_test(test_rcpt),
        cmocka_unit_test(test_rcpt_two_steps),
        cmocka_unit_test(test_orcpt_length),
        cmocka_unit_test(test_mail_smtputf8),
        cmocka_unit_test(test_rcpt_smtputf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
