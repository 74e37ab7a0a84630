/* master_spawn.c - starting, reaping and restarting the daemons.
 *
 * Each child gets its service's listener on fd 3 and nothing else but
 * stdin/stdout/stderr; it drops privileges itself (server.c) before it
 * reads input. A child that dies soon after its start doubles its
 * service's restart delay (1 s .. 60 s) so a crash loop cannot spin. */
#include "master/master.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/util/log.h"

static double since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* argv: command -c DIR -n SERVICE -t TYPE -s 1 [-u] [-r] [-w N] [-v] [-R] args... */
static char **child_argv(const struct master_service *svc)
{
    const struct master_ent *e = &svc->ent;
    size_t nargs = 0;
    while (e->argv[nargs])
        nargs++;
    char **av = xcalloc(nargs + 16, sizeof(char *));
    size_t n = 0;
    char wake[16];
    snprintf(wake, sizeof(wake), "%d", e->wakeup);
    av[n++] = e->argv[0];
    av[n++] = "-c";
    av[n++] = master_state.config_dir;
    av[n++] = "-n";
    av[n++] = e->service;
    av[n++] = "-t";
    av[n++] = e->type;
    av[n++] = "-s";
    av[n++] = "1";
    if (e->unpriv)
        av[n++] = "-u";
    if (e->chroot)
        av[n++] = "-r";
    if (e->wakeup > 0) {
        av[n++] = "-w";
        av[n++] = xstrdup(wake);
    }
    if (master_state.verbose)
        av[n++] = "-v";
    if (svc->reloaded > 0)
        av[n++] = "-R";
    for (size_t i = 1; i < nargs; i++)
        av[n++] = e->argv[i];
    av[n] = NULL;
    return av;
}

/* In the child between fork and exec: a clean process image. Signals
 * arrive blocked (spawn_one): master's handlers would otherwise run here
 * and report the child's signal to master's own loop. SIGHUP and SIGQUIT
 * stay blocked across exec until the daemon can handle a reload (server.c). */
static void child_exec(const struct master_service *svc)
{
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    sigaddset(&hup, SIGQUIT);
    sigprocmask(SIG_SETMASK, &hup, NULL);
    /* Only effective while the child keeps our credentials, but it makes
     * non-root children follow a master killed with -9. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    closelog(); /* its socket could sit on fd 3 */
    /* A detached master has /dev/null as stderr: let a child's errors from
     * before it opens the log (bad main.cf after an edit) reach the log. */
    if (master_state.daemonize && master_state.log_fd >= 0)
        dup2(master_state.log_fd, 2);
    if (svc->fd != 3 && dup2(svc->fd, 3) < 0)
        log_fatal("%s: dup2 listener: %s", svc->path, strerror(errno));
    if (fcntl(3, F_SETFD, 0) < 0)
        log_fatal("%s: clear close-on-exec: %s", svc->path, strerror(errno));
    /* Everything above 3 goes at exec; the log descriptor stays usable
     * until then so a failed exec can still be logged. */
    if (close_range(4, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        for (int fd = 4; fd < 1024; fd++)
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    char **av = child_argv(svc);
    execv(svc->path, av);
    log_fatal("%s: %s", svc->path, strerror(errno));
}

static void backoff_cb(evutil_socket_t fd, short what, void *arg)
{
    struct master_service *svc = arg;
    svc->waiting = 0;
    master_fill(svc);
}

static void arm_backoff(struct master_service *svc)
{
    svc->delay = svc->delay ? svc->delay * 2 : 1;
    if (svc->delay > MASTER_BACKOFF_MAX)
        svc->delay = MASTER_BACKOFF_MAX;
    log_warn("%s: back-off %d seconds", svc->path, svc->delay);
    if (svc->timer == NULL)
        svc->timer = evtimer_new(master_state.base, backoff_cb, svc);
    struct timeval tv = { svc->delay, 0 };
    evtimer_add(svc->timer, &tv);
    svc->waiting = 1;
}

static int spawn_one(struct master_service *svc)
{
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid == 0)
        child_exec(svc);
    int e = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        log_warn("fork for %s: %s", svc->path, strerror(e));
        return -1;
    }
    struct master_child *c = xcalloc(1, sizeof(*c));
    c->pid = pid;
    c->svc = svc;
    clock_gettime(CLOCK_MONOTONIC, &c->start);
    LIST_INSERT_HEAD(&master_state.children, c, link);
    svc->nlive++;
    if (svc->reloaded > 0)
        svc->reloaded--;
    log_debug("spawned %s pid %ld for service %s/%s", svc->path, (long)pid, svc->ent.service,
              svc->ent.type);
    return 0;
}

/* Start processes until the service has its target. A unix service counts
 * its retired children too: two qmgr processes must never overlap. */
void master_fill(struct master_service *svc)
{
    if (master_state.stopping || svc->removed || svc->waiting || svc->fd < 0)
        return;
    int unix_svc = strcmp(svc->ent.type, "unix") == 0;
    while (svc->nlive + (unix_svc ? svc->nretired : 0) < svc->target) {
        if (spawn_one(svc) < 0) {
            arm_backoff(svc);
            return;
        }
    }
}

void master_fill_all(void)
{
    struct master_service *svc;
    TAILQ_FOREACH(svc, &master_state.services, link)
    master_fill(svc);
}

static void log_status(const struct master_child *c, int status)
{
    const char *path = c->svc->path;
    /* A child we told to stop (stop, reload) is not worth a warning. */
    int asked = (master_state.stopping || c->retired) && WIFSIGNALED(status) &&
                (WTERMSIG(status) == SIGTERM || WTERMSIG(status) == SIGQUIT);
    if (WIFSIGNALED(status) && !asked)
        log_warn("process %s pid %ld killed by signal %d", path, (long)c->pid, WTERMSIG(status));
    else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        log_warn("process %s pid %ld exit status %d", path, (long)c->pid, WEXITSTATUS(status));
    else
        log_debug("process %s pid %ld exited", path, (long)c->pid);
}

/* Unlink the services the last reload removed once their last child is gone. */
static void drop_dead_services(void)
{
    struct master_service *svc, *next;
    for (svc = TAILQ_FIRST(&master_state.services); svc; svc = next) {
        next = TAILQ_NEXT(svc, link);
        if (svc->removed && svc->nlive == 0 && svc->nretired == 0) {
            TAILQ_REMOVE(&master_state.services, svc, link);
            master_service_free(svc);
        }
    }
}

static void child_gone(struct master_child *c, int status)
{
    struct master_service *svc = c->svc;
    log_status(c, status);
    if (c->retired) {
        svc->nretired--;
    } else {
        svc->nlive--;
        if (!master_state.stopping && !svc->removed && !svc->waiting) {
            if (since(&c->start) < MASTER_QUICK_DEATH)
                arm_backoff(svc);
            else
                svc->delay = 0;
        }
    }
    master_fill(svc);
    free(c);
}

void master_reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct master_child *c;
        LIST_FOREACH(c, &master_state.children, link)
        if (c->pid == pid)
            break;
        if (c == NULL)
            continue; /* not ours (cannot happen: master forks only children) */
        LIST_REMOVE(c, link);
        child_gone(c, status);
    }
    drop_dead_services();
}

void master_signal_children(int sig)
{
    struct master_child *c;
    LIST_FOREACH(c, &master_state.children, link)
    if (kill(c->pid, sig) < 0 && errno != ESRCH)
        log_warn("kill %ld: %s", (long)c->pid, strerror(errno));
}

void master_reload_children(void)
{
    struct master_child *c;
    LIST_FOREACH(c, &master_state.children, link)
    {
        if (c->retired)
            continue;
        int sig = SIGHUP;
        if (!c->svc->in_place) {
            sig = SIGQUIT;
            c->svc->reloaded++;
            c->retired = 1;
            c->svc->nlive--;
            c->svc->nretired++;
        }
        if (kill(c->pid, sig) < 0 && errno != ESRCH)
            log_warn("kill %ld: %s", (long)c->pid, strerror(errno));
    }
}

int master_child_count(void)
{
    int n = 0;
    struct master_child *c;
    LIST_FOREACH(c, &master_state.children, link)
    n++;
    return n;
}
