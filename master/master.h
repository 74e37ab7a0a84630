/* master.h - the master supervisor's shared state and internal interfaces.
 *
 * master.c        start-up, daemonizing, signals, stop and reload
 * master_spool.c  spool directories, ownership, pid file lock
 * master_svc.c    services from master.cf: listening sockets, reload diff
 * master_spawn.c  fork+exec of children, reaping, back-off */
#ifndef POSTINO_MASTER_H
#define POSTINO_MASTER_H

#include <sys/queue.h>
#include <sys/types.h>
#include <time.h>

#include "common/mail/conf.h"

#define MASTER_VERSION "0.1"
/* maxproc per service is capped so a default_process_limit of 100 does not
 * fork a hundred event-driven daemons that each serve many clients. */
#define MASTER_PROC_CAP       10
#define MASTER_BACKOFF_MAX    60 /* seconds */
#define MASTER_QUICK_DEATH    10 /* a child dying sooner than this backs off */
#define MASTER_STOP_GRACE     10 /* seconds between SIGTERM and SIGKILL on stop */
#define MASTER_LISTEN_BACKLOG 1024
#define MASTER_BIND_WAIT      8 /* seconds a start waits for a port in use */

struct event;
struct event_base;

struct master_service {
    TAILQ_ENTRY(master_service) link; /* master.cf order */
    struct master_ent ent;            /* deep copy, owned */
    char *path;                       /* <daemon_directory>/<command> */
    char *sock_path;                  /* unix: absolute socket path; NULL for inet */
    int fd;                           /* listening socket, -1 once closed */
    int target;                       /* processes to keep running */
    int nlive;                        /* children of the current configuration */
    int nretired;                     /* children told to exit by a reload */
    int delay;                        /* current back-off in seconds (0: none) */
    int waiting;                      /* back-off timer armed */
    int removed;                      /* dropped from master.cf by a reload */
    int in_place;                     /* this reload: children stay and re-read main.cf */
    int reloaded;                     /* children still to start in place of retired ones */
    struct event *timer;
};

struct master_child {
    LIST_ENTRY(master_child) link;
    pid_t pid;
    struct master_service *svc;
    struct timespec start; /* CLOCK_MONOTONIC */
    int retired;
};

struct master {
    char *config_dir; /* absolute */
    char *queue_dir;  /* absolute, fixed for the life of the master */
    char *daemon_dir;
    int verbose;
    int daemonize;
    int as_root;     /* started by root: chown spool, -u works */
    uid_t owner_uid; /* mail_owner (or the current user) */
    gid_t owner_gid;
    int pid_fd;
    char *pid_path;
    int report_fd;     /* -d: pipe to the waiting parent, else -1 */
    int log_is_stderr; /* fatal errors are already on stderr */
    int log_fd;        /* maillog_file descriptor, -1 for syslog/stderr */
    int stopping;
    struct event_base *base;
    struct event *kill_timer;
    TAILQ_HEAD(, master_service) services;
    LIST_HEAD(, master_child) children;
};

/* The one supervisor (master.c). */
extern struct master master_state;

/* master.c */
void master_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* master_spool.c */
void master_lookup_owner(void);
void master_spool_setup(void);
void master_pid_lock(void);
void master_pid_unlink(void);

/* master_svc.c */
/* Build services from entries, creating sockets. At start-up a socket
 * error is fatal; on reload (fatal_errors 0) it is logged and the service
 * skipped. Returns the number of services created. */
int master_services_create(const struct master_ent *ents, size_t n, int fatal_errors);
/* Reload: apply a new master.cf table, keeping sockets of unchanged
 * services (same name, type and private flag). startup_same: the
 * parameters a daemon applies only at start-up did not change, so a
 * daemon that can reload in place (anvil) may keep running. */
void master_services_reload(const struct master_ent *ents, size_t n, int startup_same);
void master_services_close(void);
void master_service_free(struct master_service *svc);

/* master_spawn.c */
void master_fill(struct master_service *svc);
void master_fill_all(void);
void master_reap(void);
void master_signal_children(int sig);
/* Reload: children of an in_place service get SIGHUP and stay; all
 * others get SIGQUIT and become retired (they finish their work and exit,
 * and their replacements start at once; unix services wait for them). */
void master_reload_children(void);
int master_child_count(void);

#endif
