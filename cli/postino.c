/* postino.c - the postino command: find the configuration, load it and
 * dispatch to a command handler through the table below. Invoked as
 * "mailq" it lists the queue, like Postfix's mailq; as "sendmail" it is
 * the sendmail command (cli_sendmail.c), as "newaliases" that command. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/mail/conf.h"
#include "common/util/log.h"

struct command {
    const char *name;
    cli_fn fn;
    const char *usage; /* one line, after "postino " */
};

static const struct command commands[] = {
    { "start", cli_cmd_start,
      "start                      start the mail system (in the background)" },
    { "start-fg", cli_cmd_start_fg,
      "start-fg                   run the mail system in the foreground" },
    { "stop", cli_cmd_stop, "stop                       stop the mail system (waits up to 60 s)" },
    { "reload", cli_cmd_reload,
      "reload                     re-read the configuration (SIGHUP to master)" },
    { "status", cli_cmd_status, "status                     is the mail system running?" },
    { "check", cli_cmd_check, "check                      check main.cf and master.cf" },
    { "queue", cli_cmd_queue,
      "queue list [-d DOMAIN] [-s SENDER] [--json] [ID...] | show ID | flush | stats\n"
      "       postino queue delete|hold|release|requeue ID...|-d DOMAIN|-s SENDER|ALL\n"
      "       postino queue summary [-d] [--json] [incoming|active|deferred|hold ...]" },
    { "config", cli_cmd_config,
      "config [-n] [-h] [--json] [NAME...]  print parameters (-n: only those set)\n"
      "       postino config import-postfix [-o DIR] [POSTFIX_DIR]   translate Postfix's "
      "main.cf, master.cf" },
    { "map", cli_cmd_map, "map build FILE | map query FILE KEY   build or query a hash: table" },
    { "newaliases", cli_cmd_newaliases,
      "newaliases                 build the alias_database tables from aliases(5) text" },
    { "bounce", cli_cmd_bounce,
      "bounce classify [REPLY|-]  the category of an SMTP reply (\\n between lines; -: stdin)" },
    { "dkim", cli_cmd_dkim,
      "dkim keygen [-a rsa|ed25519] [-b BITS] [-d DIR] DOMAIN SELECTOR\n"
      "                             new DKIM key pair (DIR: $config_directory/dkim)" },
    { "suppress", cli_cmd_suppress,
      "suppress list [--scope D] | add ADDR [--scope D] [--reason R] [--text T]\n"
      "       postino suppress add ... [--expires DATE|DURATION|never]\n"
      "       postino suppress remove ADDR [--scope D] | import FILE.csv | export [FILE]" },
    { "site", cli_cmd_site,
      "site list [--json] | show NAME [--json]   sites: domains, state, connections, rate\n"
      "       postino site suspend NAME DURATION [REASON] | resume NAME | bounce NAME [REASON]\n"
      "       postino site throttle NAME RATE DURATION [REASON] | limit NAME CONNS DURATION "
      "[REASON]" },
    { "top", cli_cmd_top,
      "top                        live view of sites and queue totals (q quits; "
      "one table when not a terminal)" },
    { "help", NULL, "help                       this list" },
};

void cli_err(const char *fmt, ...)
{
    va_list ap;
    fputs("postino: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void print_usage(FILE *fp)
{
    fprintf(fp, "usage: postino [-c CONFIG_DIR] [-v] COMMAND ...\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(fp, "  postino %s\n", commands[i].usage);
}

int cli_usage(const char *cmd)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(commands[i].name, cmd) == 0) {
            fprintf(stderr, "usage: postino %s\n", commands[i].usage);
            return CLI_USAGE;
        }
    }
    print_usage(stderr);
    return CLI_USAGE;
}

/* Directory of the running executable (for daemon_directory and for
 * finding conf/ when run from a checkout). */
static char *exe_dir(void)
{
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n <= 0)
        return xstrdup(".");
    path[n] = 0;
    char *slash = strrchr(path, '/');
    if (slash == path)
        slash[1] = 0;
    else if (slash)
        *slash = 0;
    return xstrdup(path);
}

/* -c beats POSTINO_CONFIG_DIR beats <exe>/../conf (a checkout) beats /etc. */
static char *default_config_dir(const char *exe)
{
    const char *env = getenv("POSTINO_CONFIG_DIR");
    if (env && *env)
        return xstrdup(env);
    buf_t b = BUF_INIT;
    buf_printf(&b, "%s/../conf/main.cf", exe);
    if (access(b.data, F_OK) == 0) {
        char real[PATH_MAX];
        buf_truncate(&b, b.len - strlen("/main.cf"));
        if (realpath(b.data, real))
            buf_set(&b, real);
        return buf_detach(&b);
    }
    buf_destroy(&b);
    return xstrdup("/etc/postino");
}

static int load_config(struct cli *c, const char *dir)
{
    buf_t err = BUF_INIT;
    char real[PATH_MAX];
    if (realpath(dir, real) == NULL) {
        cli_err("configuration directory %s: %s", dir, strerror(errno));
        return -1;
    }
    c->config_dir = xstrdup(real);
    if (conf_load(c->config_dir, &err) < 0) {
        cli_err("%s", buf_str(&err));
        buf_destroy(&err);
        return -1;
    }
    buf_destroy(&err);
    if (*conf_str("daemon_directory") == 0)
        conf_set("daemon_directory", c->exe_dir);
    return 0;
}

int cli_setup(struct cli *c, const char *dir)
{
    c->exe_dir = exe_dir();
    char *def = dir ? NULL : default_config_dir(c->exe_dir);
    int rc = load_config(c, dir ? dir : def);
    free(def);
    return rc;
}

static int dispatch(struct cli *c, int argc, char **argv)
{
    if (strcmp(argv[0], "help") == 0) {
        print_usage(stdout);
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (commands[i].fn && strcmp(commands[i].name, argv[0]) == 0)
            return commands[i].fn(c, argc, argv);
    cli_err("unknown command \"%s\" (see \"postino help\")", argv[0]);
    return CLI_USAGE;
}

int main(int argc, char **argv)
{
    struct cli c = { NULL, NULL, 0 };
    const char *dir = NULL;
    int rc;
    const char *base = strrchr(argv[0], '/');
    const char *prog = base ? base + 1 : argv[0];
    int mailq = strcmp(prog, "mailq") == 0;
    int ch;

    log_init("postino");
    log_open("/dev/stderr");
    if (strcmp(prog, "sendmail") == 0 || strcmp(prog, "newaliases") == 0) {
        rc = cli_sendmail_main(&c, argc, argv, prog[0] == 'n');
        free((char *)c.exe_dir);
        free((char *)c.config_dir);
        return rc;
    }
    while ((ch = getopt(argc, argv, "+c:v")) != -1) {
        if (ch == 'c')
            dir = optarg;
        else if (ch == 'v')
            c.verbose++;
        else {
            print_usage(stderr);
            return CLI_USAGE;
        }
    }
    log_set_verbose(c.verbose);
    argc -= optind;
    argv += optind;
    if (!mailq && argc < 1) {
        print_usage(stderr);
        return CLI_USAGE;
    }
    if (!mailq && strcmp(argv[0], "help") == 0)
        return dispatch(&c, argc, argv);
    rc = cli_setup(&c, dir) < 0 ? CLI_ERR : -1;
    if (rc == -1 && mailq) {
        /* argv[-1] is free to reuse: it held the last option or argv[0]. */
        argv[-1] = "list";
        rc = cli_cmd_queue_list(&c, argc + 1, argv - 1);
    } else if (rc == -1) {
        rc = dispatch(&c, argc, argv);
    }
    free((char *)c.exe_dir);
    free((char *)c.config_dir);
    return rc;
}
