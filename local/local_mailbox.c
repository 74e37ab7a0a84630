/* local_mailbox.c - where the local agent writes: a user's mailbox, an
 * alias's /file, an alias's |command. Every write happens in a child
 * process with the rights it needs and no more (lagent_as_user):
 *
 *   mailbox under local_mailbox_base  Maildir <base>/<user>/ as the user
 *   home_mailbox "Maildir/"           Maildir below the home, as the user
 *   home_mailbox "Mailbox"            mbox file below the home, as the user
 *   mail_spool_directory (default)    mbox <spool>/<user> (a Maildir when
 *                                     the spool ends in /); the spool file
 *                                     is created and written by root (the
 *                                     spool is root's), given to the user
 *   /file                             mbox-style append as default_privs
 *   |command                          /bin/sh -c as default_privs
 *
 * mbox files are opened O_NOFOLLOW and must be regular files with one
 * link belonging to the user (a planted symlink or hard link defers);
 * they are locked with a dotlock (where the directory allows one) and
 * fcntl, and a failed write is cut back to the old size. */
#include "local/local.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/mail/conf.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

#define LOCK_TRIES 10
#define LOCK_STALE 300

struct mb {
    struct lagent_job *job;
    const char *rcpt;
    const char *dir;  /* trusted directory (followed), relative to the spool or absolute */
    const char *name; /* mbox file or Maildir below dir */
    uid_t uid;        /* owner an mbox must have */
    gid_t gid;
    int check_owner, maildir, create_as_root;
};

static void sleep1(void)
{
    struct timespec ts = { 1, 0 };
    nanosleep(&ts, NULL);
}

/* <name>.lock in dirfd: 1 held, 0 none possible (no write access). */
static int dotlock(int dirfd, const char *name, buf_t *lock)
{
    struct stat st;
    buf_setf(lock, "%s.lock", name);
    for (int i = 0; i < LOCK_TRIES; i++) {
        int fd =
            openat(dirfd, lock->data, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) {
            close(fd);
            return 1;
        }
        if (errno == EACCES || errno == EPERM || errno == EROFS)
            return 0;
        if (errno != EEXIST)
            return -1;
        if (fstatat(dirfd, lock->data, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            time(NULL) - st.st_mtime > LOCK_STALE)
            unlinkat(dirfd, lock->data, 0);
        else
            sleep1();
    }
    errno = EAGAIN;
    return -1;
}

static int fcntl_lock(int fd)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    for (int i = 0; i < LOCK_TRIES; i++) {
        if (fcntl(fd, F_SETLK, &fl) == 0)
            return 0;
        if (errno != EAGAIN && errno != EACCES)
            return -1;
        sleep1();
    }
    return -1;
}

static int open_mbox(int dirfd, const struct mb *m, struct lagent_res *res)
{
    int fd = openat(dirfd, m->name, O_WRONLY | O_APPEND | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
    struct stat st;

    if (fd < 0 && errno == ENOENT) {
        fd = openat(dirfd, m->name,
                    O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC,
                    0600);
        if (fd >= 0 && geteuid() == 0 && fchown(fd, m->uid, m->gid) < 0) {
            lagent_set_errno(res, errno, "the mailbox owner");
            close(fd);
            return -1;
        }
    }
    if (fd < 0) {
        int e = errno;
        log_warn("%s: mailbox %s: %s", m->job->id, m->name,
                 e == ELOOP ? "a symbolic link, refused" : strerror(e));
        lagent_set(res, QR_DEFERRED, "4.2.0", BCLASS_OTHER, "cannot open mailbox %s: %s", m->name,
                   e == ELOOP ? "symbolic link" : strerror(e));
        return -1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
        (m->check_owner && st.st_uid != m->uid)) {
        log_warn("%s: mailbox %s: not a regular file with one link owned by uid %ld, refused",
                 m->job->id, m->name, (long)m->uid);
        lagent_set(res, QR_DEFERRED, "4.2.0", BCLASS_OTHER,
                   "cannot deliver to mailbox %s: not a regular file owned by the recipient",
                   m->name);
        close(fd);
        return -1;
    }
    return fd;
}

static void mbox_write(int dirfd, const struct mb *m, struct lagent_res *res)
{
    buf_t lock = BUF_INIT;
    int locked, fd;
    struct stat st;

    if ((locked = dotlock(dirfd, m->name, &lock)) < 0) {
        lagent_set(res, QR_DEFERRED, "4.2.0", BCLASS_OTHER, "cannot lock mailbox %s: %s", m->name,
                   strerror(errno));
        goto out;
    }
    if ((fd = open_mbox(dirfd, m, res)) < 0)
        goto unlock;
    if (fcntl_lock(fd) < 0 || fstat(fd, &st) < 0) {
        lagent_set(res, QR_DEFERRED, "4.2.0", BCLASS_OTHER, "cannot lock mailbox %s: %s", m->name,
                   strerror(errno));
    } else if (lagent_copy(m->job, fd, NULL, m->rcpt, 1) < 0 || fsync(fd) < 0) {
        lagent_set_errno(res, errno, "mailbox");
        if (ftruncate(fd, st.st_size) < 0)
            log_warn("%s: cannot truncate mailbox %s back: %s", m->job->id, m->name,
                     strerror(errno));
    } else {
        lagent_set(res, QR_SENT, "2.0.0", BCLASS_OTHER, "delivered to %s",
                   m->maildir ? "maildir" : "mailbox");
    }
    close(fd);
unlock:
    if (locked > 0 && unlinkat(dirfd, lock.data, 0) < 0 && geteuid() != 0)
        log_warn("%s: cannot remove %s: %s", m->job->id, lock.data, strerror(errno));
out:
    buf_destroy(&lock);
}

/* In the child: open the directory (it may be reached through symlinks
 * the administrator made: a home on another disk), then deliver below it
 * without following any. */
static void mb_child(void *arg, struct lagent_res *res)
{
    struct mb *m = arg;
    int dfd = open(m->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        lagent_set(res, QR_DEFERRED, "4.2.0", BCLASS_OTHER, "cannot open directory %s: %s", m->dir,
                   strerror(errno));
        return;
    }
    if (m->maildir)
        maildir_deliver(m->job, dfd, m->name, m->rcpt, 0, 0, res);
    else
        mbox_write(dfd, m, res);
    close(dfd);
}

/* <base>/<user>, made by the agent for the user: the base is the
 * agent's, so the user could not make it. */
static int user_dir(const char *base, const char *user, uid_t uid, gid_t gid,
                    struct lagent_res *res)
{
    int bfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = -1;
    if (bfd >= 0) {
        if (mkdirat(bfd, user, 0700) == 0)
            rc = fchownat(bfd, user, uid, gid, AT_SYMLINK_NOFOLLOW);
        else
            rc = errno == EEXIST ? 0 : -1;
    }
    if (rc < 0)
        lagent_set_errno(res, errno, "the mailbox directory");
    if (bfd >= 0)
        close(bfd);
    return rc;
}

static int ends_slash(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && s[n - 1] == '/';
}

void local_deliver_user(struct lagent_job *job, const char *user, const char *rcpt,
                        struct lagent_res *res)
{
    struct passwd *pw = getpwnam(user);
    const char *base = conf_str("local_mailbox_base"), *home = conf_str("home_mailbox");
    const char *spool = conf_str("mail_spool_directory");
    buf_t name = BUF_INIT;
    struct mb m = { job, rcpt, NULL, NULL, 0, 0, 1, 0, 0 };
    int root = geteuid() == 0;

    if (pw == NULL) {
        lagent_set(res, QR_BOUNCED, "5.1.1", BCLASS_BAD_MAILBOX, "unknown user: \"%s\"", user);
        return;
    }
    m.uid = root ? pw->pw_uid : geteuid();
    m.gid = root ? pw->pw_gid : getegid();
    if (*base) {
        if (mkdir(base, 0755) < 0 && errno != EEXIST) {
            lagent_set_errno(res, errno, "local_mailbox_base");
            return;
        }
        if (user_dir(base, user, m.uid, m.gid, res) < 0)
            return;
        m.dir = base;
        buf_setf(&name, "%s/", user);
        m.maildir = 1;
        m.check_owner = 1;
    } else if (*home) {
        m.dir = pw->pw_dir;
        buf_set(&name, home);
        m.maildir = ends_slash(home);
    } else {
        m.dir = spool;
        buf_set(&name, user);
        m.maildir = ends_slash(spool);
        if (m.maildir)
            buf_putc(&name, '/');
        else
            m.create_as_root = 1;
    }
    m.name = name.data;
    if (m.create_as_root)
        lagent_as_user(geteuid(), getegid(), NULL, mb_child, &m, res);
    else
        lagent_as_user(m.uid, m.gid, root ? pw->pw_name : NULL, mb_child, &m, res);
    buf_destroy(&name);
}

/* default_privs: the user alias commands and files run as. */
static int default_privs(uid_t *uid, gid_t *gid, struct lagent_res *res)
{
    struct passwd *pw;
    if (geteuid() != 0) {
        *uid = geteuid();
        *gid = getegid();
        return 0;
    }
    pw = getpwnam(conf_str("default_privs"));
    if (pw == NULL || pw->pw_uid == 0) {
        lagent_set(res, QR_DEFERRED, "4.3.5", BCLASS_OTHER,
                   "default_privs: \"%s\" is no unprivileged user", conf_str("default_privs"));
        return -1;
    }
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return 0;
}

void local_deliver_file(struct lagent_job *job, const char *path, const char *rcpt,
                        struct lagent_res *res)
{
    char *dir = xstrdup(path), *slash = strrchr(dir, '/');
    struct mb m = { job, rcpt, NULL, NULL, 0, 0, 0, 0, 0 };

    if (default_privs(&m.uid, &m.gid, res) < 0 || slash == NULL || slash[1] == '\0') {
        if (slash && slash[1] == '\0')
            lagent_set(res, QR_BOUNCED, "5.3.5", BCLASS_OTHER, "%s is a directory", path);
        free(dir);
        return;
    }
    m.name = slash + 1;
    *slash = '\0';
    m.dir = *dir ? dir : "/";
    lagent_as_user(m.uid, m.gid, NULL, mb_child, &m, res);
    free(dir);
}

void local_deliver_command(struct lagent_job *job, const char *cmd, const char *rcpt,
                           struct lagent_res *res)
{
    uid_t uid;
    gid_t gid;
    buf_t e_sender = BUF_INIT, e_rcpt = BUF_INIT, e_local = BUF_INIT;
    const char *at = strrchr(rcpt, '@');

    if (default_privs(&uid, &gid, res) < 0)
        return;
    buf_setf(&e_sender, "SENDER=%s", job->env.sender);
    buf_setf(&e_rcpt, "RECIPIENT=%s", rcpt);
    buf_setf(&e_local, "LOCAL=%.*s", at ? (int)(at - rcpt) : (int)strlen(rcpt), rcpt);
    char *argv[] = { (char *)"/bin/sh", (char *)"-c", (char *)cmd, NULL };
    char *envp[] = { (char *)"PATH=/usr/bin:/bin",
                     (char *)"SHELL=/bin/sh",
                     (char *)"HOME=/",
                     e_sender.data,
                     e_rcpt.data,
                     e_local.data,
                     NULL };
    lagent_run(job, argv, envp, uid, gid, NULL, conf_int("command_time_limit"), job->env.sender,
               rcpt, res);
    buf_destroy(&e_sender);
    buf_destroy(&e_rcpt);
    buf_destroy(&e_local);
}
