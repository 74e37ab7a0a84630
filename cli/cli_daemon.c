/* cli_daemon.c - start, stop, reload, status and check: the life cycle of
 * the master process. "Running" means: the pid file names a live process
 * that holds its lock (master keeps pid/master.pid flock'ed while up), so
 * a stale pid file after a crash never counts. */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/glue/addrclass.h"
#include "common/util/buf.h"
#include "common/mail/bclass.h"
#include "common/mail/conf.h"
#include "common/mail/shaperules.h"

static void pid_path(buf_t *out)
{
    buf_printf(out, "%s/pid/master.pid", conf_str("queue_directory"));
}

int cli_master_running(pid_t *pid)
{
    buf_t path = BUF_INIT;
    char text[32];
    int running = 0;

    pid_path(&path);
    int fd = open(path.data, O_RDONLY | O_CLOEXEC);
    buf_destroy(&path);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, text, sizeof text - 1);
    text[n > 0 ? n : 0] = 0;
    long v = strtol(text, NULL, 10);
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        flock(fd, LOCK_UN); /* nobody holds it: not running */
    } else if (errno == EWOULDBLOCK && v > 0 && (kill((pid_t)v, 0) == 0 || errno == EPERM)) {
        *pid = (pid_t)v;
        running = 1;
    }
    close(fd);
    return running;
}

static void master_path(buf_t *out)
{
    buf_printf(out, "%s/master", conf_str("daemon_directory"));
}

/* argv for master: master -c DIR [-d] [-v] */
static void master_argv(struct cli *c, const char *path, int daemon, char *av[6])
{
    int n = 0;
    av[n++] = (char *)path;
    av[n++] = "-c";
    av[n++] = (char *)c->config_dir;
    if (daemon)
        av[n++] = "-d";
    if (c->verbose)
        av[n++] = "-v";
    av[n] = NULL;
}

/* A domain in two address classes: smtpd and qmgr would refuse to
 * start, so say it here (Postfix's words). 0 or -1 (reported). */
static int classes_check(void)
{
    buf_t err = BUF_INIT;
    int rc = addrclass_validate(&err);
    if (rc < 0)
        cli_err("%s", buf_str(&err));
    buf_destroy(&err);
    return rc;
}

/* shaping_rules: qmgr would run without adaptive throttling (it logs the
 * broken line and goes on), so say it here with the file and line. 0 or
 * -1 (reported). */
static int shaping_rules_check(void)
{
    buf_t err = BUF_INIT;
    struct shaperules *rs = shaperules_load_conf(&err);

    if (rs == NULL)
        cli_err("shaping_rules: %s", buf_str(&err));
    shaperules_free(rs);
    buf_destroy(&err);
    return rs ? 0 : -1;
}

int cli_cmd_start(struct cli *c, int argc, char **argv)
{
    pid_t pid;
    buf_t path = BUF_INIT;
    char *av[6];
    int status;

    if (argc != 1)
        return cli_usage("start");
    if (cli_dkim_check(c) < 0 || classes_check() < 0) /* smtpd would refuse to start */
        return CLI_ERR;
    if (shaping_rules_check() < 0)
        return CLI_ERR;
    if (cli_master_running(&pid)) {
        cli_err("the mail system is already running (pid %ld)", (long)pid);
        return CLI_ERR;
    }
    master_path(&path);
    master_argv(c, path.data, 1, av);
    pid = fork();
    if (pid < 0) {
        cli_err("fork: %s", strerror(errno));
        return CLI_ERR;
    }
    if (pid == 0) {
        execv(path.data, av);
        cli_err("cannot execute %s: %s (check daemon_directory)", path.data, strerror(errno));
        _exit(CLI_ERR);
    }
    buf_destroy(&path);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return CLI_ERR;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    cli_err("master was killed by signal %d", WTERMSIG(status));
    return CLI_ERR;
}

int cli_cmd_start_fg(struct cli *c, int argc, char **argv)
{
    pid_t pid;
    buf_t path = BUF_INIT;
    char *av[6];

    if (argc != 1)
        return cli_usage("start-fg");
    if (cli_master_running(&pid)) {
        cli_err("the mail system is already running (pid %ld)", (long)pid);
        return CLI_ERR;
    }
    master_path(&path);
    master_argv(c, path.data, 0, av);
    fflush(NULL);
    execv(path.data, av);
    cli_err("cannot execute %s: %s (check daemon_directory)", path.data, strerror(errno));
    buf_destroy(&path);
    return CLI_ERR;
}

static int signal_master(const char *cmd, int argc, int sig, pid_t *pid)
{
    if (argc != 1)
        return cli_usage(cmd);
    if (!cli_master_running(pid)) {
        cli_err("the mail system is not running");
        return CLI_ERR;
    }
    if (kill(*pid, sig) < 0) {
        cli_err("cannot signal the master process (pid %ld): %s", (long)*pid, strerror(errno));
        return CLI_ERR;
    }
    return CLI_OK;
}

int cli_cmd_stop(struct cli *c, int argc, char **argv)
{
    pid_t pid, again;
    int rc = signal_master("stop", argc, SIGTERM, &pid);
    if (rc != CLI_OK)
        return rc;
    printf("postino: stopping the mail system\n");
    fflush(stdout);
    for (int i = 0; i < 600; i++) {
        if (!cli_master_running(&again))
            return CLI_OK;
        struct timespec ts = { 0, 100 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    cli_err("the mail system (pid %ld) did not stop within 60 seconds", (long)pid);
    return CLI_ERR;
}

int cli_cmd_reload(struct cli *c, int argc, char **argv)
{
    pid_t pid;
    if (argc == 1 && cli_dkim_check(c) < 0) { /* keep the running keys */
        cli_err("not reloading: fix the DKIM settings first");
        return CLI_ERR;
    }
    if (argc == 1 && shaping_rules_check() < 0) { /* keep the running rules */
        cli_err("not reloading: fix shaping_rules first");
        return CLI_ERR;
    }
    int rc = signal_master("reload", argc, SIGHUP, &pid);
    if (rc == CLI_OK)
        printf("postino: refreshing the mail system\n");
    return rc;
}

int cli_cmd_status(struct cli *c, int argc, char **argv)
{
    pid_t pid;
    if (argc != 1)
        return cli_usage("status");
    if (cli_master_running(&pid)) {
        printf("postino: the mail system is running: PID: %ld\n", (long)pid);
        return CLI_OK;
    }
    printf("postino: the mail system is not running\n");
    return CLI_ERR;
}

/* main.cf was loaded already (or we would not be here); check master.cf,
 * that every program it names exists in daemon_directory, the bounce
 * classifier rules and the shaping rules. */
int cli_cmd_check(struct cli *c, int argc, char **argv)
{
    struct master_ent *ents = NULL;
    size_t n = 0;
    buf_t err = BUF_INIT, path = BUF_INIT;
    int rc = CLI_OK;

    if (argc != 1)
        return cli_usage("check");
    if (conf_master_load(c->config_dir, &ents, &n, &err) < 0) {
        cli_err("%s", buf_str(&err));
        buf_destroy(&err);
        return CLI_ERR;
    }
    for (size_t i = 0; i < n; i++) {
        buf_reset(&path);
        buf_printf(&path, "%s/%s", conf_str("daemon_directory"), ents[i].argv[0]);
        if (access(path.data, X_OK) < 0) {
            cli_err("%s/master.cf, line %d: service %s: cannot execute %s: %s", c->config_dir,
                    ents[i].line, ents[i].service, path.data, strerror(errno));
            rc = CLI_ERR;
        }
    }
    buf_reset(&err);
    if (bclass_init(&err) < 0) {
        cli_err("%s", buf_str(&err));
        rc = CLI_ERR;
    }
    bclass_reset();
    if (classes_check() < 0)
        rc = CLI_ERR;
    if (shaping_rules_check() < 0)
        rc = CLI_ERR;
    if (cli_dkim_check(c) < 0)
        rc = CLI_ERR;
    if (cli_events_check(ents, n) < 0)
        rc = CLI_ERR;
    if (access(conf_str("queue_directory"), F_OK) < 0 && errno != ENOENT) {
        cli_err("queue_directory %s: %s", conf_str("queue_directory"), strerror(errno));
        rc = CLI_ERR;
    }
    conf_master_free(ents, n);
    buf_destroy(&err);
    buf_destroy(&path);
    return rc;
}
