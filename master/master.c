/* master.c - the postino supervisor: start-up, daemonizing, signals.
 *
 *   master -c CONFIG_DIR [-d] [-v]
 *
 * Reads main.cf and master.cf, prepares the spool, takes the pid file
 * lock, binds every service's socket, spawns the daemons and supervises
 * them (restart with back-off, SIGHUP reload, SIGTERM stop). It runs as
 * root when started by root but never reads network input. With -d the
 * parent waits on a pipe until the daemon is ready (exit 0) or failed
 * (its error on stderr, exit 1), so "postino start" can report errors. */
#include "master/master.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/mail/bclass.h"
#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/util/log.h"

struct master master_state = {
    .pid_fd = -1,
    .report_fd = -1,
    .log_is_stderr = 1,
    .log_fd = -1,
    .services = TAILQ_HEAD_INITIALIZER(master_state.services),
    .children = LIST_HEAD_INITIALIZER(master_state.children),
};

static const char *syslog_name(void)
{
    return master_state.config_dir ? conf_str("syslog_name") : "postino";
}

/* Configuration and environment errors: one plain line for the operator
 * (on stderr, or through the -d pipe), and the log line. */
void master_fatal(const char *fmt, ...)
{
    buf_t msg = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    buf_t line = BUF_INIT;
    buf_printf(&line, "%s/master: fatal: %s\n", syslog_name(), buf_str(&msg));
    int fd = master_state.report_fd >= 0 ? master_state.report_fd : 2;
    ssize_t w = write(fd, line.data, line.len);
    (void)w;
    if (master_state.log_is_stderr && master_state.report_fd < 0)
        exit(1);
    log_fatal("%s", buf_str(&msg));
}

static void usage(void)
{
    fprintf(stderr, "usage: master -c config_directory [-d] [-v]\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    const char *dir = NULL;
    int ch;
    while ((ch = getopt(argc, argv, "c:dv")) != -1) {
        if (ch == 'c')
            dir = optarg;
        else if (ch == 'd')
            master_state.daemonize = 1;
        else if (ch == 'v')
            master_state.verbose++;
        else
            usage();
    }
    if (dir == NULL || optind != argc)
        usage();
    char real[PATH_MAX];
    if (realpath(dir, real) == NULL) {
        fprintf(stderr, "postino/master: fatal: configuration directory %s: %s\n", dir,
                strerror(errno));
        exit(1);
    }
    master_state.config_dir = xstrdup(real);
}

/* daemon_directory, default: where this program lives. */
static void find_daemon_dir(void)
{
    const char *d = conf_str("daemon_directory");
    if (*d) {
        master_state.daemon_dir = xstrdup(d);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        master_fatal("readlink /proc/self/exe: %s (set daemon_directory in main.cf)",
                     strerror(errno));
    exe[n] = '\0';
    master_state.daemon_dir = xstrdup(dirname(exe));
}

static void load_config(struct master_ent **ents, size_t *n)
{
    buf_t err = BUF_INIT;
    if (conf_load(master_state.config_dir, &err) < 0)
        master_fatal("%s", buf_str(&err));
    buf_reset(&err);
    if (conf_master_load(master_state.config_dir, ents, n, &err) < 0)
        master_fatal("%s", buf_str(&err));
    /* The delivery agents read the classifier rules; a broken file is
     * refused here, at start, rather than by each agent later. */
    if (bclass_init(&err) < 0)
        master_fatal("%s", buf_str(&err));
    bclass_reset();
    buf_destroy(&err);
    const char *q = conf_str("queue_directory");
    if (*q != '/')
        master_fatal("queue_directory \"%s\" must be an absolute path", q);
    master_state.queue_dir = xstrdup(q);
    log_set_syslog_name(conf_str("syslog_name"));
    log_set_facility(log_facility_code(conf_str("syslog_facility")));
    if (*conf_str("myhostname"))
        log_set_hostname(conf_str("myhostname"));
}

/* The log file descriptor is kept above the low numbers so that moving a
 * listener onto fd 3 in a child can never clobber it. */
static void open_log(void)
{
    const char *t = conf_str("maillog_file");
    int to_stderr = strcmp(t, "/dev/stderr") == 0 || strcmp(t, "-") == 0;
    if (*t == '\0' || strcmp(t, "syslog") == 0 || to_stderr) {
        if (log_open(t) < 0)
            master_fatal("cannot open log: %s", strerror(errno));
        master_state.log_is_stderr = to_stderr && !master_state.daemonize;
        return;
    }
    int fd = open(t, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        master_fatal("maillog_file %s: %s (fix the path or its permissions)", t, strerror(errno));
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 64);
    if (high >= 0) {
        close(fd);
        fd = high;
    }
    log_set_fd(fd);
    master_state.log_fd = fd;
    master_state.log_is_stderr = 0;
}

/* 0, 1 and 2 must be open so no socket or file ever lands on them. */
static void sane_stdio(void)
{
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) >= 0)
            continue;
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0 && nul != fd) {
            dup2(nul, fd);
            close(nul);
        }
    }
}

/* The parent side of -d: wait for "ready" or the error text. */
static void wait_ready(int rfd, pid_t child)
{
    buf_t got = BUF_INIT;
    char chunk[512];
    ssize_t n;
    while ((n = read(rfd, chunk, sizeof(chunk))) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        buf_append(&got, chunk, (size_t)n);
        if (got.len >= 6 && strcmp(got.data + got.len - 6, "ready\n") == 0)
            exit(0);
    }
    waitpid(child, NULL, 0); /* it is exiting: do not leave a zombie */
    if (got.len)
        fputs(got.data, stderr);
    else
        fprintf(stderr,
                "postino/master: fatal: master (pid %ld) exited during start-up; see the log\n",
                (long)child);
    exit(1);
}

static void daemonize(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        master_fatal("pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        master_fatal("fork: %s", strerror(errno));
    if (pid > 0) {
        close(p[1]);
        wait_ready(p[0], pid);
    }
    close(p[0]);
    master_state.report_fd = p[1];
    setsid();
    int nul = open("/dev/null", O_RDWR);
    if (nul < 0)
        master_fatal("open /dev/null: %s", strerror(errno));
    for (int fd = 0; fd < 3; fd++)
        dup2(nul, fd);
    if (nul > 2)
        close(nul);
}

static void report_ready(void)
{
    if (master_state.report_fd < 0)
        return;
    ssize_t w = write(master_state.report_fd, "ready\n", 6);
    (void)w;
    close(master_state.report_fd);
    master_state.report_fd = -1;
}

/* ---- signals ---- */

static void kill_cb(evutil_socket_t fd, short what, void *arg)
{
    log_warn("%d processes did not stop within %d seconds; killing them", master_child_count(),
             MASTER_STOP_GRACE);
    master_signal_children(SIGKILL);
}

static void check_stopped(void)
{
    if (master_state.stopping && LIST_EMPTY(&master_state.children))
        event_base_loopbreak(master_state.base);
}

static void on_stop(int sig)
{
    if (master_state.stopping)
        return;
    log_info("terminating on signal %d", sig);
    master_state.stopping = 1;
    master_services_close();
    master_signal_children(SIGTERM);
    master_state.kill_timer = evtimer_new(master_state.base, kill_cb, NULL);
    struct timeval tv = { MASTER_STOP_GRACE, 0 };
    evtimer_add(master_state.kill_timer, &tv);
    check_stopped();
}

/* What a daemon applies once, before it drops privileges: a daemon that
 * reloads in place can keep running only while these stay the same. */
static const char *const startup_params[] = { "mail_owner", "maillog_file", "syslog_name",
                                              "syslog_facility" };
#define NSTARTUP (sizeof(startup_params) / sizeof(startup_params[0]))

static void startup_save(char *saved[NSTARTUP])
{
    for (size_t k = 0; k < NSTARTUP; k++)
        saved[k] = xstrdup(conf_str(startup_params[k]));
}

/* 1 when every saved value is still the same; frees them. */
static int startup_same(char *saved[NSTARTUP])
{
    int same = 1;
    for (size_t k = 0; k < NSTARTUP; k++) {
        same = same && strcmp(saved[k], conf_str(startup_params[k])) == 0;
        free(saved[k]);
    }
    return same;
}

/* SIGHUP: read both files again; each daemon either re-reads main.cf
 * where it is (SIGHUP; anvil, so its counters survive) or retires
 * (SIGQUIT), finishing what it has while its replacement takes over the
 * listener, which master keeps open. One log line, here. */
static void on_reload(int sig)
{
    if (master_state.stopping)
        return;
    struct master_ent *ents = NULL;
    size_t n = 0;
    buf_t err = BUF_INIT;
    char *saved[NSTARTUP];
    startup_save(saved);
    if (conf_load(master_state.config_dir, &err) < 0 ||
        conf_master_load(master_state.config_dir, &ents, &n, &err) < 0) {
        log_error("reload: %s; keeping the old configuration", buf_str(&err));
        buf_destroy(&err);
        startup_same(saved);
        return;
    }
    if (bclass_init(&err) < 0)
        log_error("reload: %s; delivery agents started from now on classify every failure "
                  "as \"other\"",
                  buf_str(&err));
    bclass_reset();
    buf_destroy(&err);
    if (strcmp(conf_str("queue_directory"), master_state.queue_dir) != 0)
        log_warn("reload: queue_directory changed to %s; it takes effect only after a restart",
                 conf_str("queue_directory"));
    master_services_reload(ents, n, startup_same(saved));
    conf_master_free(ents, n);
    master_reload_children();
    struct master_service *svc;
    TAILQ_FOREACH(svc, &master_state.services, link)
    {
        if (svc->timer)
            event_del(svc->timer);
        svc->waiting = 0;
        svc->delay = 0;
    }
    master_fill_all();
    log_info("reload -- version %s, configuration %s", MASTER_VERSION, master_state.config_dir);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    if (sig == SIGCHLD)
        master_reap();
    else if (sig == SIGHUP)
        on_reload((int)sig);
    else
        on_stop((int)sig);
    check_stopped();
}

static void setup_events(void)
{
    master_state.base = event_base_new();
    if (master_state.base == NULL)
        master_fatal("cannot create the event base");
    signal(SIGPIPE, SIG_IGN);
    static const int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGHUP };
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        struct event *ev = evsignal_new(master_state.base, sigs[i], signal_cb, NULL);
        if (ev == NULL || evsignal_add(ev, NULL) < 0)
            master_fatal("cannot watch signal %d", sigs[i]);
    }
}

/* An smtpd holds smtpd_client_connection_limit sessions (1000 by default)
 * and delivery as many SMTP connections: the usual soft limit of 1024
 * descriptors would cut them short. Every daemon inherits the raised
 * soft limit (up to the hard one the administrator set). */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("raising the open files limit: %s", strerror(errno));
    }
}

int main(int argc, char **argv)
{
    sane_stdio();
    raise_nofile();
    log_init("master");
    parse_args(argc, argv);
    struct master_ent *ents = NULL;
    size_t nents = 0;
    load_config(&ents, &nents);
    log_set_verbose(master_state.verbose);
    find_daemon_dir();
    master_lookup_owner();
    if (master_state.daemonize)
        daemonize();
    open_log();
    master_spool_setup();
    master_pid_lock();
    if (chdir(master_state.queue_dir) < 0)
        master_fatal("chdir %s: %s", master_state.queue_dir, strerror(errno));
    setup_events();
    master_services_create(ents, nents, 1);
    conf_master_free(ents, nents);
    master_fill_all();
    log_info("daemon started -- version %s, configuration %s", MASTER_VERSION,
             master_state.config_dir);
    report_ready();
    event_base_dispatch(master_state.base);
    /* Stopped: every child has been reaped. */
    master_pid_unlink();
    return 0;
}
