/* server.c - the one daemon skeleton: command line, main.cf, log, privilege
 * drop (and chroot), signals, accept events, wakeup timer, event loop.
 * Every daemon but master starts here so they all drop privileges the
 * same verified way before reading a byte from a peer. */
#include "common/mail/server.h"
#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/mail/conf.h"
#include "common/mail/mevent.h"
#include "common/util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#define PARENT_CHECK_SECS 5

struct server_opts {
    const char *config_dir;
    int nsock, drop, chroot_, verbose, wakeup;
};

struct listener {
    struct server *s;
    struct event *ev;
    int idx;
};

static struct server srv;
static const struct server_hooks *hooks;
static struct listener listeners[SERVER_MAX_LISTEN];
static struct event *backoff_ev, *wakeup_ev, *parent_ev;
static struct event *sig_ev[4];
static pid_t parent_pid;
static int term_signals;       /* SIGTERM/SIGINT received */
static const char *config_dir; /* -c, for a reload in place */
static char **overrides;       /* -o name=value, applied after each load */

static void usage(const char *prog)
{
    log_fatal("usage: %s [-c config_dir] [-n service] [-t inet|unix] [-s nsock] [-u] [-r] "
              "[-v] [-R] [-w seconds] [-o name=value]...",
              prog);
}

static int opt_num(const char *prog, const char *s, int max)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0 || v > max)
        usage(prog);
    return (int)v;
}

static void apply_override(const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (eq == NULL || eq == arg)
        log_fatal("-o %s: expected name=value", arg);
    char *name = xstrndup(arg, (size_t)(eq - arg));
    buf_t err = BUF_INIT;
    if (conf_override(name, eq + 1, &err) < 0)
        log_fatal("-o %s: %s", arg, err.data);
    buf_destroy(&err);
    free(name);
}

/* Parse argv; -o overrides are collected and applied after main.cf. */
static char **parse_args(int argc, char **argv, struct server_opts *o)
{
    char **ovr = xcalloc((size_t)argc + 1, sizeof(char *));
    size_t novr = 0;
    int c;
    optind = 1;
    /* "+": stop at the first argument that is no option (a daemon's own
     * arguments, such as pipe's argv=, may look like options) */
    while ((c = getopt(argc, argv, "+c:n:t:s:urvRo:w:")) != -1) {
        switch (c) {
        case 'c':
            o->config_dir = optarg;
            break;
        case 'n':
            srv.service = optarg;
            break;
        case 't':
            srv.type = optarg;
            break;
        case 's':
            o->nsock = opt_num(argv[0], optarg, SERVER_MAX_LISTEN);
            break;
        case 'u':
            o->drop = 1;
            break;
        case 'r':
            o->chroot_ = 1;
            break;
        case 'v':
            o->verbose++;
            break;
        case 'R':
            srv.reloaded = 1;
            break;
        case 'o':
            ovr[novr++] = optarg;
            break;
        case 'w':
            o->wakeup = opt_num(argv[0], optarg, 1000000);
            break;
        default:
            usage(argv[0]);
        }
    }
    srv.args = argv + optind; /* the daemon's own arguments, NULL-terminated */
    return ovr;
}

static void load_config(const struct server_opts *o, char **ovr)
{
    buf_t err = BUF_INIT;
    if (conf_load(o->config_dir, &err) < 0)
        log_fatal("%s", err.data);
    buf_destroy(&err);
    for (char **p = ovr; *p; p++)
        apply_override(*p);
    config_dir = o->config_dir;
    overrides = ovr;
    log_set_syslog_name(conf_str("syslog_name"));
    log_set_hostname(conf_str("myhostname"));
    log_set_facility(log_facility_code(conf_str("syslog_facility")));
    const char *logf = conf_str("maillog_file");
    if (log_open(logf) < 0)
        log_fatal("cannot open maillog_file \"%s\": %s", logf, strerror(errno));
    srv.config_dir = xstrdup(conf_str("config_directory"));
    const char *spool = conf_str("queue_directory");
    if (chdir(spool) < 0)
        log_fatal("queue_directory \"%s\": %s (create it or fix queue_directory in %s/main.cf)",
                  spool, strerror(errno), srv.config_dir);
    /* From here on everything is relative to the spool, our working
     * directory: once privileges are dropped the mail user then needs no
     * search permission on the spool's parents (a checkout under a 0700
     * home directory still runs). */
    srv.spool = xstrdup(".");
}

static void take_listeners(int nsock)
{
    srv.nlisten = nsock;
    for (int k = 0; k < nsock; k++) {
        int fd = 3 + k;
        if (fcntl(fd, F_GETFD) < 0)
            log_fatal("listening socket %d of %d (fd %d) is not open: was %s started by master?",
                      k + 1, nsock, fd, srv.progname);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        int fl = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        srv.listen_fd[k] = fd;
    }
}

static void drop_privileges(int chroot_)
{
    const char *owner = conf_str("mail_owner");
    struct passwd *pw = getpwnam(owner);
    if (pw == NULL)
        log_fatal("mail_owner \"%s\": no such user (create it or set mail_owner in main.cf)",
                  owner);
    if (pw->pw_uid == 0)
        log_fatal("mail_owner \"%s\" must not be root", owner);
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    if (chroot_) {
        if (chroot(srv.spool) < 0 || chdir("/") < 0)
            log_fatal("chroot to %s: %s", conf_str("queue_directory"), strerror(errno));
        free((char *)srv.spool);
        srv.spool = xstrdup(".");
    }
    if (setgroups(1, &gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
        log_fatal("cannot drop privileges to %s (uid %ld): %s", owner, (long)uid, strerror(errno));
    if (setuid(0) == 0 || geteuid() == 0)
        log_fatal("privileges could be regained after dropping to %s", owner);
    /* The kernel clears the parent-death signal on a change of user: arm it
     * again so a daemon whose master was killed goes away at once instead
     * of holding the listening sockets. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
}

void server_stop_accepting(struct server *s)
{
    s->stopping = 1;
    for (int k = 0; k < s->nlisten; k++) {
        if (listeners[k].ev)
            event_del(listeners[k].ev);
        /* Close our copy so a restarted master can bind the port again
         * while we finish the sessions in progress. */
        if (s->listen_fd[k] >= 0) {
            close(s->listen_fd[k]);
            s->listen_fd[k] = -1;
        }
    }
    if (backoff_ev)
        event_del(backoff_ev);
}

void server_exit(struct server *s)
{
    event_base_loopexit(s->base, NULL);
}

static void do_stop(void)
{
    if (hooks->on_stop) {
        hooks->on_stop(&srv);
        return;
    }
    server_stop_accepting(&srv);
    server_exit(&srv);
}

/* main.cf again, as at start-up. master keeps a daemon in place only when
 * nothing it applied at start-up (log target, mail_owner, master.cf row)
 * changed, so only ordinary parameters are new here. A main.cf that
 * cannot be read now (a chroot, a mode the mail user may not read) keeps
 * the old values: the daemon goes on as it was. */
static void reload_in_place(void)
{
    buf_t err = BUF_INIT;
    if (conf_load(config_dir, &err) < 0) {
        log_warn("reload: %s; keeping the previous settings until a restart", buf_str(&err));
        buf_destroy(&err);
        return;
    }
    buf_destroy(&err);
    for (char **p = overrides; p && *p; p++)
        apply_override(*p);
    log_set_syslog_name(conf_str("syslog_name"));
    log_set_hostname(conf_str("myhostname"));
    mevent_reload();
    hooks->on_reload(&srv);
}

/* SIGHUP: stay and read main.cf again, or SIGQUIT (or SIGHUP to a
 * daemon that cannot): finish the work in hand and go. */
static void on_reload_signal(int sig)
{
    if (srv.stopping)
        return; /* already on its way out */
    if (sig == SIGHUP && hooks->on_reload) {
        log_debug("reload: reading %s/main.cf again", config_dir);
        reload_in_place();
        return;
    }
    log_debug("reload: retiring");
    srv.retiring = 1;
    if (hooks->on_retire)
        hooks->on_retire(&srv);
    else
        do_stop();
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    if (sig == SIGHUP || sig == SIGQUIT) {
        on_reload_signal((int)sig);
        return;
    }
    if (term_signals++ > 0) {
        /* A second signal: the daemon is taking too long, leave now. */
        log_info("signal %d again: exiting now", (int)sig);
        event_base_loopbreak(srv.base);
        return;
    }
    log_debug("signal %d: stopping", (int)sig);
    do_stop();
}

static void rearm_accept(evutil_socket_t fd, short what, void *arg)
{
    if (srv.stopping)
        return;
    for (int k = 0; k < srv.nlisten; k++)
        event_add(listeners[k].ev, NULL);
}

static void accept_backoff(void)
{
    struct timeval tv = { 1, 0 };
    for (int k = 0; k < srv.nlisten; k++)
        event_del(listeners[k].ev);
    event_add(backoff_ev, &tv);
}

static void on_listen_ready(evutil_socket_t lfd, short what, void *arg)
{
    struct listener *l = arg;
    while (!srv.stopping) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            hooks->on_accept(l->s, fd, l->idx);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            log_warn("accept: %s: pausing new connections for 1s", strerror(errno));
            accept_backoff();
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            log_warn("accept: %s", strerror(errno));
        }
        return;
    }
}

static void on_wakeup_timer(evutil_socket_t fd, short what, void *arg)
{
    if (!srv.stopping)
        hooks->on_wakeup(&srv);
}

/* A daemon whose master died must not linger holding sockets. */
static void on_parent_check(evutil_socket_t fd, short what, void *arg)
{
    if (getppid() != parent_pid && !srv.stopping) {
        log_info("master (pid %ld) went away: stopping", (long)parent_pid);
        do_stop();
    }
}

static void arm_events(const struct server_opts *o)
{
    signal(SIGPIPE, SIG_IGN);
    sig_ev[0] = evsignal_new(srv.base, SIGTERM, on_signal, NULL);
    sig_ev[1] = evsignal_new(srv.base, SIGINT, on_signal, NULL);
    sig_ev[2] = evsignal_new(srv.base, SIGHUP, on_signal, NULL);
    sig_ev[3] = evsignal_new(srv.base, SIGQUIT, on_signal, NULL);
    for (int k = 0; k < 4; k++)
        event_add(sig_ev[k], NULL);
    backoff_ev = evtimer_new(srv.base, rearm_accept, NULL);
    for (int k = 0; hooks->on_accept && k < srv.nlisten; k++) {
        listeners[k] = (struct listener){ &srv, NULL, k };
        listeners[k].ev = event_new(srv.base, srv.listen_fd[k], EV_READ | EV_PERSIST,
                                    on_listen_ready, &listeners[k]);
        event_add(listeners[k].ev, NULL);
    }
    if (o->wakeup > 0 && hooks->on_wakeup) {
        struct timeval tv = { o->wakeup, 0 };
        wakeup_ev = event_new(srv.base, -1, EV_PERSIST, on_wakeup_timer, NULL);
        event_add(wakeup_ev, &tv);
    }
    if (o->nsock > 0) {
        struct timeval tv = { PARENT_CHECK_SECS, 0 };
        parent_ev = event_new(srv.base, -1, EV_PERSIST, on_parent_check, NULL);
        event_add(parent_ev, &tv);
    }
}

static void free_events(void)
{
    struct event **all[] = { &backoff_ev, &wakeup_ev, &parent_ev, &sig_ev[0],
                             &sig_ev[1],  &sig_ev[2], &sig_ev[3] };
    for (size_t k = 0; k < sizeof(all) / sizeof(all[0]); k++) {
        if (*all[k])
            event_free(*all[k]);
        *all[k] = NULL;
    }
    for (int k = 0; k < SERVER_MAX_LISTEN; k++) {
        if (listeners[k].ev)
            event_free(listeners[k].ev);
        listeners[k].ev = NULL;
    }
}

int server_main(int argc, char **argv, const char *progname, const struct server_hooks *h,
                void *ctx)
{
    struct server_opts o = { "/etc/postino", 0, 0, 0, 0, 0 };
    static const struct server_hooks none;
    hooks = h ? h : &none;
    memset(&srv, 0, sizeof(srv));
    srv.progname = progname;
    srv.service = progname;
    srv.type = "unix";
    srv.ctx = ctx;
    parent_pid = getppid();
    log_init(progname);
    /* A reload before the handlers are armed waits (master starts us with
     * these blocked already; this covers a daemon started another way). */
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    sigaddset(&hup, SIGQUIT);
    sigprocmask(SIG_BLOCK, &hup, NULL);
    char **ovr = parse_args(argc, argv, &o);
    if (srv.args[0] && !hooks->takes_args)
        usage(argv[0]);
    log_set_verbose(o.verbose);
    load_config(&o, ovr);
    take_listeners(o.nsock);
    if (hooks->pre_drop)
        hooks->pre_drop(&srv);
    if (getuid() == 0 && o.drop)
        drop_privileges(o.chroot_);
    srv.base = event_base_new();
    if (srv.base == NULL)
        log_fatal("cannot create the event loop (libevent)");
    arm_events(&o);
    mevent_start(srv.base); /* events (issue #11): a flag, lazily connected */
    if (hooks->post_drop)
        hooks->post_drop(&srv);
    sigprocmask(SIG_UNBLOCK, &hup, NULL);
    int rc = event_base_dispatch(srv.base) < 0 ? 1 : 0;
    mevent_stop();
    free_events();
    free(overrides);
    overrides = NULL;
    event_base_free(srv.base);
    srv.base = NULL;
    return rc;
}

void server_spool_path(const struct server *s, const char *rel, struct buf *out)
{
    buf_reset(out);
    buf_printf(out, "%s/%s", s->spool, rel);
}
