/* master_spool.c - the spool's directories and the single-instance lock.
 *
 * master creates what is missing and repairs modes and owners every start,
 * so a spool copied or restored by hand works again. When root runs it,
 * the directories the daemons write are owned by mail_owner; otherwise
 * everything belongs to the current user and nothing is chown'ed. */
#include "master/master.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/util/log.h"

/* Which directories, their mode, and whether mail_owner owns them
 * (suppress: the suppression list, common/mail/suppress.h). Every user
 * may reach a socket in public/ (not list it): public/submit takes local
 * submissions and public/control checks each request's peer, both by
 * SO_PEERCRED; the queue itself stays the mail owner's alone. */
static const struct spool_dir {
    const char *name;
    mode_t mode;
    int owned; /* 1: mail_owner owns it (when root) */
} spool_dirs[] = {
    { "queue", 0700, 1 }, { "private", 0700, 1 },  { "public", 0711, 1 }, { "index", 0700, 1 },
    { "pid", 0755, 0 },   { "suppress", 0700, 1 }, { "events", 0700, 1 }, /* the event webhook spool (events/events_hook.c) */
};

void master_lookup_owner(void)
{
    master_state.as_root = (getuid() == 0);
    if (!master_state.as_root) {
        master_state.owner_uid = getuid();
        master_state.owner_gid = getgid();
        return;
    }
    const char *owner = conf_str("mail_owner");
    struct passwd *pw = getpwnam(owner);
    if (pw == NULL)
        master_fatal("mail_owner \"%s\": no such user (create it, or run make deps)", owner);
    if (pw->pw_uid == 0)
        master_fatal("mail_owner \"%s\" must not be root (use an unprivileged user)", owner);
    master_state.owner_uid = pw->pw_uid;
    master_state.owner_gid = pw->pw_gid;
}

/* mkdir -p for the queue directory itself (its parents may be missing). */
static void mkdir_parents(const char *path, mode_t mode)
{
    char *tmp = xstrdup(path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            master_fatal("create directory %s: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST)
        master_fatal("create directory %s: %s", tmp, strerror(errno));
    free(tmp);
}

/* Create (if missing) and fix mode and owner of one directory. */
static void fix_dir(const char *path, mode_t mode, int owned)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        master_fatal("create directory %s: %s", path, strerror(errno));
    struct stat st;
    if (stat(path, &st) < 0)
        master_fatal("stat %s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        master_fatal("%s: not a directory (remove it, or change queue_directory)", path);
    if (master_state.as_root) {
        uid_t uid = owned ? master_state.owner_uid : 0;
        gid_t gid = owned ? master_state.owner_gid : 0;
        if ((st.st_uid != uid || st.st_gid != gid) && chown(path, uid, gid) < 0)
            master_fatal("chown %s: %s", path, strerror(errno));
    }
    if ((st.st_mode & 07777) != mode && chmod(path, mode) < 0)
        master_fatal("chmod %s: %s", path, strerror(errno));
}

/* queue/00 .. queue/ff exist before the first message, so smtpd never
 * creates a directory (and needs no directory fsync) on the hot path. */
static void make_hash_dirs(const char *queue)
{
    buf_t p = BUF_INIT;
    for (int i = 0; i < 256; i++) {
        buf_reset(&p);
        buf_printf(&p, "%s/%02x", queue, i);
        if (mkdir(p.data, 0700) == 0) {
            /* lchown: queue/ belongs to the mail user, who could swap the
             * new directory for a symlink before root gets to it. */
            if (master_state.as_root &&
                lchown(p.data, master_state.owner_uid, master_state.owner_gid) < 0)
                master_fatal("chown %s: %s", p.data, strerror(errno));
        } else if (errno != EEXIST) {
            master_fatal("create directory %s: %s", p.data, strerror(errno));
        }
    }
    buf_destroy(&p);
}

void master_spool_setup(void)
{
    mkdir_parents(master_state.queue_dir, 0755);
    fix_dir(master_state.queue_dir, 0755, 0);
    buf_t p = BUF_INIT;
    for (size_t i = 0; i < sizeof(spool_dirs) / sizeof(spool_dirs[0]); i++) {
        buf_reset(&p);
        buf_printf(&p, "%s/%s", master_state.queue_dir, spool_dirs[i].name);
        fix_dir(p.data, spool_dirs[i].mode, spool_dirs[i].owned);
        if (strcmp(spool_dirs[i].name, "queue") == 0)
            make_hash_dirs(p.data);
    }
    buf_destroy(&p);
}

/* Read the pid a running master wrote, for the error message. */
static long read_pid(int fd)
{
    char text[32];
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    if (n <= 0)
        return 0;
    text[n] = '\0';
    return strtol(text, NULL, 10);
}

/* The flock is held for the life of the master: "postino status" tests it. */
void master_pid_lock(void)
{
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s/pid/master.pid", master_state.queue_dir);
    master_state.pid_path = buf_detach(&p);
    int fd = open(master_state.pid_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        master_fatal("open %s: %s", master_state.pid_path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK)
            master_fatal("the mail system is already running (pid %ld)", read_pid(fd));
        master_fatal("lock %s: %s", master_state.pid_path, strerror(errno));
    }
    char text[32];
    int n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, text, (size_t)n, 0) != n)
        master_fatal("write %s: %s", master_state.pid_path, strerror(errno));
    master_state.pid_fd = fd;
}

void master_pid_unlink(void)
{
    if (master_state.pid_fd < 0)
        return;
    if (unlink(master_state.pid_path) < 0 && errno != ENOENT)
        log_warn("remove %s: %s", master_state.pid_path, strerror(errno));
    close(master_state.pid_fd);
    master_state.pid_fd = -1;
}
