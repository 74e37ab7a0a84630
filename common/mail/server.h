/* server.h - the one daemon skeleton: config -> sockets -> privilege drop -> loop.
 *
 * master starts every daemon as
 *     <program> -c <config_dir> -n <service> -t <inet|unix> -s <nsock>
 *               [-u] [-r] [-v] [-R] [-o name=value]...
 * with the service's listening sockets on descriptors 3 .. 3+nsock-1.
 *   -u  drop to mail_owner (when started as root)   -r  chroot to queue_directory
 *   -R  this process replaces one that a reload retired
 * server_main() parses that, loads main.cf (fatal with file/line on error),
 * applies -o overrides, opens the log (maillog_file, else syslog), calls
 * pre_drop as the starting user (open keys, log files), chroots/drops
 * privileges (setgroups, setgid, setuid to mail_owner, verified), then
 * creates the libevent base, wires SIGTERM/SIGHUP/SIGINT, arms the
 * accept events (calling on_accept with each new non-blocking client fd),
 * calls post_drop and runs the loop. A daemon may also be run by hand
 * without master (nsock 0) for debugging.
 *
 * Signals from master ("postino reload" sends each daemon one of the last
 * two, depending on whether master keeps it):
 *   SIGTERM, SIGINT  stop: on_stop (a second one: leave at once).
 *   SIGQUIT          retire: on_retire stops accepting and finishes the
 *                    work it has (the listener is master's, so nothing
 *                    queued on it is lost), or, without on_retire,
 *                    on_stop. master starts the replacement at once, and
 *                    a SIGTERM still stops a retiring daemon.
 *   SIGHUP           reload in place: main.cf (and -o) is read again, then
 *                    on_reload runs. A daemon without on_reload retires.
 * master blocks SIGHUP and SIGQUIT across exec; server_main unblocks them
 * once the handlers are in place, so a reload during start-up is never
 * lost. */
#ifndef POSTINO_SERVER_H
#define POSTINO_SERVER_H

#define SERVER_MAX_LISTEN 16

struct event_base;

struct server {
    const char *progname; /* "smtpd", "qmgr", "smtp" (delivery logs as smtp) */
    const char *service;  /* master.cf service name */
    const char *type;     /* "inet" or "unix" */
    const char *config_dir;
    const char *spool; /* always ".": the daemon runs in queue_directory */
    int nlisten;
    int listen_fd[SERVER_MAX_LISTEN];
    struct event_base *base;
    int stopping; /* not accepting: stopping or retiring */
    int retiring; /* SIGQUIT: finishing its work before exit */
    int reloaded; /* -R: started to replace a daemon a reload
                                 retired (start-up news is not news) */
    void *ctx;    /* the daemon's own state */
    char **args;  /* master.cf arguments after the options (NULL-terminated;
                     empty for most daemons, pipe's "user=... argv=...") */
};

struct server_hooks {
    void (*pre_drop)(struct server *s);  /* optional, as starting user */
    void (*post_drop)(struct server *s); /* optional, after the drop */
    /* New client on listener idx; fd is non-blocking and close-on-exec.
     * If NULL, no accept events are armed (daemon handles listen_fd). */
    void (*on_accept)(struct server *s, int fd, int idx);
    /* SIGTERM/SIGINT. Default (NULL): stop accepting, exit the loop.
     * A daemon that sets it stops accepting itself (server_stop_accepting)
     * and calls server_exit when its work is done. */
    void (*on_stop)(struct server *s);
    /* SIGHUP, daemon stays: main.cf was read again (optional). */
    void (*on_reload)(struct server *s);
    /* SIGQUIT (or SIGHUP without on_reload), daemon goes: stop accepting
     * (server_stop_accepting), serve what was accepted, then server_exit
     * (optional; default on_stop). */
    void (*on_retire)(struct server *s);
    /* Periodic timer every `wakeup` seconds (master.cf wakeup or
     * server_main's -w); optional. */
    void (*on_wakeup)(struct server *s);
    /* The daemon reads its own master.cf arguments (server.args); without
     * this, arguments after the options are a usage error. */
    int takes_args;
};

/* Returns the process exit status. */
int server_main(int argc, char **argv, const char *progname, const struct server_hooks *h,
                void *ctx);
void server_stop_accepting(struct server *s);
void server_exit(struct server *s);
/* Path of a socket or file below the spool: "<spool>/<rel>" into buf. */
struct buf;
void server_spool_path(const struct server *s, const char *rel, struct buf *out);

#endif
