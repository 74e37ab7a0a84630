/* cli_sendmail.c - the sendmail command: the postino binary run as
 * "sendmail" (and "newaliases"; "mailq" is postino.c's).
 *
 * What cron, PHP's mail(), Git and mailx call: the message on stdin,
 * recipients on the command line or (-t) in its header, -f/-F for the
 * sender, -i/-oi so a lone dot is text, -bs for SMTP on stdin/stdout, -bp
 * (mailq), -q (flush), -bi (newaliases); the options sendmail clients
 * pass out of habit (-oem, -odi, -v ...) are accepted and ignored. Exit
 * statuses are sysexits.h values.
 *
 * The message goes over SMTP to the smtpd service on the UNIX socket
 * public/submit: the program needs no privilege (no setuid/setgid), and
 * smtpd learns the user from the socket (SO_PEERCRED), logs and records
 * it, and applies the same envelope checks and DKIM signing as to other
 * submissions (smtpd/smtpd_local.c). All or nothing: if a recipient is
 * refused, nothing is sent and the command fails (the user is there to
 * read why, unlike the receiver of a bounce). */
#include "cli/cli.h"
#include "cli/cli_sendmail.h"

#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"

#define SM_USAGE                                                                                   \
    "usage: sendmail [-C CONFIG_DIR] [-t] [-i] [-f SENDER] [-F FULLNAME] [RECIPIENT...] "          \
    "< message\n"                                                                                  \
    "       sendmail -bs | -bp | -bi | -q"

struct sm_opts {
    const char *config_dir; /* -C, else MAIL_CONFIG, else the default */
    const char *sender;     /* -f / -r, NULL: the user's login */
    const char *fullname;   /* -F */
    int extract;            /* -t */
    int dot_ends;           /* cleared by -i / -oi */
    char mode;              /* m: send (default), s: SMTP, p: mailq, i: newaliases, q: flush */
};

static int usage(const char *why)
{
    if (why)
        sm_err("%s", why);
    fprintf(stderr, "%s\n", SM_USAGE);
    return SM_EX_USAGE;
}

/* -bX: the modes we have; -bm is the default. */
static int set_mode(struct sm_opts *o, const char *arg)
{
    static const char modes[] = "mspi";
    if (strlen(arg) != 1 || strchr(modes, arg[0]) == NULL) {
        sm_err("unsupported mode -b%s", arg);
        return -1;
    }
    o->mode = arg[0];
    return 0;
}

/* Options of sendmail(8); those without meaning here are accepted and
 * ignored, as Postfix does (-oem, -odi, -odb, -v, -m, -n, -U ...). */
static int parse_opts(int argc, char **argv, struct sm_opts *o)
{
    int ch;
    optind = 0;
    opterr = 0;
    while ((ch = getopt(argc, argv, "+A:B:b:C:d:e:F:f:h:IiL:mN:nO:o:p:q::R:r:tUV:vX:")) != -1) {
        switch (ch) {
        case 'b':
            if (set_mode(o, optarg) < 0)
                return -1;
            break;
        case 'C':
            o->config_dir = optarg;
            break;
        case 'F':
            o->fullname = optarg;
            break;
        case 'f':
        case 'r':
            o->sender = optarg;
            break;
        case 'I':
            o->mode = 'i';
            break;
        case 'i':
            o->dot_ends = 0;
            break;
        case 'o':
            if (optarg[0] == 'i' && optarg[1] == 0)
                o->dot_ends = 0;
            break;
        case 'q':
            o->mode = 'q';
            break;
        case 't':
            o->extract = 1;
            break;
        case '?':
            sm_err("unknown option -%c", optopt ? optopt : '?');
            return -1;
        default: /* -A -B -d -e -h -L -m -N -n -O -p -R -U -V -v -X: ignored */
            break;
        }
    }
    return 0;
}

/* The user's login name (from the uid, not from the environment). */
static char *login_name(void)
{
    struct passwd *pw = getpwuid(getuid());
    if (pw)
        return xstrdup(pw->pw_name);
    buf_t b = BUF_INIT;
    buf_printf(&b, "%lu", (unsigned long)getuid());
    return buf_detach(&b);
}

/* -f: "<>" or "" is the null sender; <addr> loses its brackets; a bare
 * name gets @$myorigin. Without -f: login@$myorigin. */
static char *envelope_sender(const struct sm_opts *o)
{
    buf_t b = BUF_INIT;
    if (!o->sender) {
        char *login = login_name();
        buf_printf(&b, "%s@%s", login, conf_str("myorigin"));
        free(login);
        return buf_detach(&b);
    }
    const char *s = o->sender;
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '<' && s[n - 1] == '>') {
        s++;
        n -= 2;
    }
    buf_append(&b, s, n);
    if (b.len && strchr(buf_str(&b), '@') == NULL)
        buf_printf(&b, "@%s", conf_str("myorigin"));
    return buf_detach(&b);
}

/* A recipient or sender we put into a command: no line breaks, no
 * brackets of its own (smtpd checks the rest). */
static int addr_ok(const char *a)
{
    return strpbrk(a, "\r\n<>") == NULL && strlen(a) < 1000;
}

static char *submit_path(void)
{
    buf_t b = BUF_INIT;
    buf_printf(&b, "%s/public/submit", conf_str("queue_directory"));
    return buf_detach(&b);
}

/* The exit status for a refusal. */
static int refused(int code, int perm_status)
{
    return code >= 400 && code < 500 ? SM_EX_TEMPFAIL : code >= 500 ? perm_status : SM_EX_SOFTWARE;
}

/* EHLO and MAIL FROM; 0 or an sm_exit. */
static int smtp_open_txn(struct sm_conn *c, const char *sender)
{
    buf_t t = BUF_INIT;
    int rc = 0, code = sm_conn_cmd(c, &t, NULL);
    if (code == 220)
        code = sm_conn_cmd(c, &t, "EHLO localhost");
    if (code != 250) {
        if (code > 0)
            sm_err("the mail system is not accepting mail: %s", buf_str(&t));
        rc = code < 0 ? SM_EX_IOERR : refused(code, SM_EX_UNAVAILABLE);
    } else if ((code = sm_conn_cmd(c, &t, "MAIL FROM:<%s>", sender)) != 250) {
        if (code > 0)
            sm_err("sender <%s> refused: %s", sender, buf_str(&t));
        rc = code < 0 ? SM_EX_IOERR : refused(code, SM_EX_DATAERR);
    }
    buf_destroy(&t);
    return rc;
}

/* RCPT TO for each; every refusal is reported, any one fails all. */
static int smtp_rcpts(struct sm_conn *c, char **rcpts, size_t n)
{
    buf_t t = BUF_INIT;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        int code = sm_conn_cmd(c, &t, "RCPT TO:<%s>", rcpts[i]);
        if (code < 0) {
            rc = SM_EX_IOERR;
            break;
        }
        if (code != 250 && code != 251) {
            sm_err("recipient <%s> refused: %s", rcpts[i], buf_str(&t));
            if (rc == 0 || rc == SM_EX_TEMPFAIL)
                rc = refused(code, SM_EX_NOUSER);
        }
    }
    buf_destroy(&t);
    return rc;
}

/* DATA, the header section, the body from stdin, the end mark. */
static int smtp_data(struct sm_conn *c, struct sm_msg *m, const struct sm_opts *o)
{
    buf_t t = BUF_INIT;
    int rc = 0, code = sm_conn_cmd(c, &t, "DATA");
    if (code != 354) {
        if (code > 0)
            sm_err("message refused: %s", buf_str(&t));
        rc = code < 0 ? SM_EX_IOERR : refused(code, SM_EX_DATAERR);
    } else if (sm_conn_write(c, m->head.data, m->head.len) < 0) {
        rc = SM_EX_IOERR;
    } else if ((rc = sm_msg_body(stdin, m, o->dot_ends, sm_conn_write, c)) != 0) {
        /* No end mark: closing makes smtpd drop the partial message. */
        c->broken = 1;
        rc = rc < 0 ? SM_EX_IOERR : rc;
    } else if ((code = sm_conn_cmd(c, &t, ".")) != 250) {
        if (code > 0)
            sm_err("message refused: %s", buf_str(&t));
        rc = code < 0 ? SM_EX_IOERR : refused(code, SM_EX_DATAERR);
    }
    buf_destroy(&t);
    return rc;
}

/* All recipients: the command line's, and with -t the header's. */
static char **all_rcpts(char **argv, int argc, struct sm_msg *m, size_t *n)
{
    char **v = NULL;
    *n = 0;
    for (int i = 0; i < argc; i++)
        sm_msg_addrs(argv[i], conf_str("myorigin"), &v, n);
    for (size_t i = 0; i < m->nrcpt; i++)
        sm_msg_addrs(m->rcpts[i], conf_str("myorigin"), &v, n);
    return v;
}

static int send_message(const struct sm_opts *o, int argc, char **argv)
{
    char *sender = envelope_sender(o);
    char *path = submit_path();
    struct sm_msg m = { BUF_INIT, BUF_INIT, NULL, 0, 0 };
    struct sm_conn c = { -1, 0, BUF_INIT, BUF_INIT };
    struct sm_head_opts ho = { sender,
                               o->fullname,
                               conf_str("myorigin"),
                               conf_str("myhostname"),
                               o->extract,
                               o->dot_ends,
                               (size_t)conf_int("header_size_limit") };
    size_t n = 0;
    char **rcpts = NULL;
    int rc = addr_ok(sender) ? 0 : usage("bad sender address");
    if (rc == 0)
        rc = sm_msg_head(stdin, &m, &ho);
    if (rc == 0) {
        rcpts = all_rcpts(argv, argc, &m, &n);
        for (size_t i = 0; i < n && rc == 0; i++)
            if (!addr_ok(rcpts[i]))
                rc = usage("bad recipient address");
        if (rc == 0 && n == 0) {
            sm_err("%s", o->extract ? "no recipient addresses found in message header"
                                    : "no recipients specified");
            rc = o->extract ? SM_EX_DATAERR : usage(NULL);
        }
    }
    if (rc == 0)
        rc = sm_conn_open(&c, path);
    if (rc == 0 && (rc = smtp_open_txn(&c, sender)) == 0 && (rc = smtp_rcpts(&c, rcpts, n)) == 0)
        rc = smtp_data(&c, &m, o);
    if (c.fd >= 0 && !c.broken) {
        buf_t t = BUF_INIT;
        sm_conn_cmd(&c, &t, "QUIT");
        buf_destroy(&t);
    }
    sm_conn_close(&c);
    for (size_t i = 0; i < n; i++)
        free(rcpts[i]);
    free(rcpts);
    sm_msg_destroy(&m);
    free(path);
    free(sender);
    return rc;
}

static int smtp_stdio(void)
{
    char *path = submit_path();
    struct sm_conn c = { -1, 0, BUF_INIT, BUF_INIT };
    int rc = sm_conn_open(&c, path);
    if (rc == 0)
        rc = sm_conn_relay(&c);
    sm_conn_close(&c);
    free(path);
    return rc;
}

/* -bp, -q, -bi: the postino commands; their failures said why. */
static int admin(struct cli *c, char mode)
{
    static char *list[] = { "list", NULL }, *flush[] = { "queue", "flush", NULL },
                *aliases[] = { "newaliases", NULL };
    int rc = mode == 'p'   ? cli_cmd_queue_list(c, 1, list)
             : mode == 'q' ? cli_cmd_queue(c, 2, flush)
                           : cli_cmd_newaliases(c, 1, aliases);
    return rc == CLI_OK ? SM_EX_OK : rc == CLI_USAGE ? SM_EX_USAGE : SM_EX_UNAVAILABLE;
}

int cli_sendmail_main(struct cli *c, int argc, char **argv, int newaliases)
{
    struct sm_opts o = { NULL, NULL, NULL, 0, 1, 'm' };
    signal(SIGPIPE, SIG_IGN); /* a server gone: EPIPE, then EX_IOERR */
    if (parse_opts(argc, argv, &o) < 0)
        return usage(NULL);
    if (newaliases)
        o.mode = 'i';
    const char *dir = o.config_dir ? o.config_dir : getenv("MAIL_CONFIG");
    if (cli_setup(c, dir && *dir ? dir : NULL) < 0)
        return SM_EX_CONFIG;
    argc -= optind;
    argv += optind;
    if (o.mode != 'm' && argc > 0)
        return usage("recipients are given only to send a message");
    switch (o.mode) {
    case 's':
        return smtp_stdio();
    case 'p':
    case 'q':
    case 'i':
        return admin(c, o.mode);
    default:
        return send_message(&o, argc, argv);
    }
}
