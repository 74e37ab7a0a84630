/* pipe.c - the pipe agent: hands each recipient's message to a command
 * (Postfix's pipe(8)), configured on its master.cf row:
 *
 *   pipe unix - n n - - pipe flags=DR user=nobody argv=/path/cmd ${sender} ${recipient}
 *
 * argv= and everything after it is the command, run directly (no
 * shell) once per recipient, each argument with ${sender}, ${recipient},
 * ${domain}, ${user}, ${extension}, ${nexthop}, ${queue_id} and
 * ${original_recipient} expanded. user=name[:group] is required and may
 * not be root; the agent starts as root only to switch to it. flags= D
 * and R prepend Delivered-To: and Return-Path: (others are ignored with
 * a warning). The command gets pipe_time_limit (else
 * command_time_limit) seconds, then its process group is killed and the
 * delivery deferred; its exit status maps per sysexits.h (lagent_cmd.c),
 * its output (bounded) goes into the reason. */
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/mail/conf.h"
#include "common/mail/lagent.h"
#include "common/mail/server.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

static struct {
    char **argv; /* templates */
    uid_t uid;
    gid_t gid;
    char *user;
    int flag_d, flag_r;
} pp;

static const char *const known[] = { "sender",   "recipient",          "domain",
                                     "user",     "extension",          "nexthop",
                                     "queue_id", "original_recipient", "mailbox" };

static int known_name(const char *n, size_t len)
{
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strlen(known[i]) == len && strncmp(known[i], n, len) == 0)
            return 1;
    return 0;
}

static void check_template(const char *t)
{
    for (const char *p = strstr(t, "${"); p; p = strstr(p + 2, "${")) {
        const char *e = strchr(p, '}');
        if (e == NULL || !known_name(p + 2, (size_t)(e - p - 2)))
            log_fatal("pipe: unknown or unterminated expansion in \"%s\"", t);
    }
}

static void set_user(const char *v)
{
    char *u = xstrdup(v), *colon = strchr(u, ':');
    struct passwd *pw;
    if (colon)
        *colon++ = '\0';
    if ((pw = getpwnam(u)) == NULL)
        log_fatal("pipe: user=%s: no such user", u);
    pp.uid = pw->pw_uid;
    pp.gid = pw->pw_gid;
    if (colon) {
        struct group *gr = getgrnam(colon);
        if (gr == NULL)
            log_fatal("pipe: user=%s: no such group %s", v, colon);
        pp.gid = gr->gr_gid;
    }
    if (pp.uid == 0 || pp.gid == 0)
        log_fatal("pipe: user=%s: the command may not run with root privileges", v);
    pp.user = xstrdup(pw->pw_name);
    free(u);
}

static void parse_args(struct server *s)
{
    for (char **a = s->args; *a; a++) {
        if (strncmp(*a, "user=", 5) == 0) {
            set_user(*a + 5);
        } else if (strncmp(*a, "flags=", 6) == 0) {
            for (const char *f = *a + 6; *f; f++) {
                if (*f == 'D')
                    pp.flag_d = 1;
                else if (*f == 'R')
                    pp.flag_r = 1;
                else
                    log_warn("pipe: flags=%c is not supported, ignored", *f);
            }
        } else if (strncmp(*a, "argv=", 5) == 0) {
            size_t n = 0;
            if (a[0][5] == '\0')
                log_fatal("pipe: argv= names no command");
            pp.argv = xcalloc(1, sizeof(*pp.argv));
            for (char **b = a; *b; b++) {
                const char *t = b == a ? *b + 5 : *b;
                check_template(t);
                pp.argv = xrealloc(pp.argv, (n + 2) * sizeof(*pp.argv));
                pp.argv[n++] = xstrdup(t);
                pp.argv[n] = NULL;
            }
            if (pp.argv[0][0] != '/')
                log_fatal("pipe: argv=%s: the command must be an absolute path", pp.argv[0]);
            break;
        } else {
            log_fatal("pipe: unknown argument \"%s\"", *a);
        }
    }
    if (pp.argv == NULL)
        log_fatal("pipe: no argv= on the master.cf row");
    if (pp.user == NULL && getuid() == 0)
        log_fatal("pipe: no user= on the master.cf row");
    if (pp.user == NULL) { /* not root: the command runs as the agent */
        pp.uid = geteuid();
        pp.gid = getegid();
    }
}

/* The value of ${name} for this recipient. */
static void value_of(struct lagent_job *job, size_t idx, const char *name, size_t len, buf_t *out)
{
    const char *rcpt = job->env.rcpt[idx].addr, *at = strrchr(rcpt, '@');
    const char *delim = conf_str("recipient_delimiter");
    size_t local = at ? (size_t)(at - rcpt) : strlen(rcpt);
    size_t user = local;

    for (size_t i = 0; delim && *delim && i < local; i++)
        if (strchr(delim, rcpt[i])) {
            user = i;
            break;
        }
#define IS(s) (len == sizeof(s) - 1 && strncmp(name, s, len) == 0)
    if (IS("sender"))
        buf_puts(out, job->env.sender);
    else if (IS("recipient"))
        buf_puts(out, rcpt);
    else if (IS("original_recipient"))
        buf_puts(out, rcpt); /* ORCPT is xtext; the queued address is what we have */
    else if (IS("domain"))
        buf_puts(out, at ? at + 1 : "");
    else if (IS("user"))
        buf_append(out, rcpt, user);
    else if (IS("mailbox"))
        buf_append(out, rcpt, local);
    else if (IS("extension"))
        buf_append(out, rcpt + (user < local ? user + 1 : local),
                   user < local ? local - user - 1 : 0);
    else if (IS("nexthop"))
        buf_puts(out, job->nexthop);
    else if (IS("queue_id"))
        buf_puts(out, job->id);
#undef IS
}

static char *expand(struct lagent_job *job, size_t idx, const char *t)
{
    buf_t out = BUF_INIT;
    buf_puts(&out, "");
    for (const char *p = t; *p;) {
        const char *e;
        if (p[0] == '$' && p[1] == '{' && (e = strchr(p, '}')) != NULL) {
            value_of(job, idx, p + 2, (size_t)(e - p - 2), &out);
            p = e + 1;
        } else
            buf_putc(&out, *p++);
    }
    return buf_detach(&out);
}

static void deliver(struct lagent_job *job, size_t idx, struct lagent_res *res)
{
    size_t n = 0;
    long long limit = conf_int("pipe_time_limit");
    char **argv;
    char *envp[] = { (char *)"PATH=/usr/bin:/bin", (char *)"SHELL=/bin/sh", (char *)"HOME=/",
                     NULL };

    while (pp.argv[n])
        n++;
    argv = xcalloc(n + 1, sizeof(*argv));
    for (size_t i = 0; i < n; i++)
        argv[i] = expand(job, idx, pp.argv[i]);
    lagent_run(job, argv, envp, pp.uid, pp.gid, pp.user,
               limit > 0 ? limit : conf_int("command_time_limit"),
               pp.flag_r ? job->env.sender : NULL, pp.flag_d ? job->env.rcpt[idx].addr : NULL, res);
    for (size_t i = 0; i < n; i++)
        free(argv[i]);
    free(argv);
}

int main(int argc, char **argv)
{
    static const struct lagent_ops ops = {
        .name = "pipe", .takes_args = 1, .pre_drop = parse_args, .deliver = deliver
    };
    return lagent_main(argc, argv, &ops);
}
