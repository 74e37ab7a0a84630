/* maildir.c - Maildir delivery for the local and virtual agents, done so
 * that a user who owns the mailbox cannot redirect the write.
 *
 * Every directory is opened one component at a time with O_NOFOLLOW |
 * O_DIRECTORY and used through *at() calls, so a symlink planted as the
 * Maildir, tmp/ or new/ (or any component below the trusted start) makes
 * the open fail (ELOOP/ENOTDIR) and the delivery defer; the message file
 * is created with O_EXCL|O_NOFOLLOW under a unique name (time.M<usec>P
 * <pid>Q<counter>.<host>, as the Maildir specification suggests), written,
 * fsynced, then renamed into new/, and new/ is fsynced. Directories the
 * process did not create must belong to it. The caller already runs as
 * the mailbox owner (lagent_as_user). */
#include "common/mail/lagent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/util/log.h"

static int open_dir1(int dirfd, const char *name, int create)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
        if (mkdirat(dirfd, name, 0700) < 0 && errno != EEXIST)
            return -1;
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    return fd;
}

int lagent_open_dir(int dirfd, const char *path, int create)
{
    char comp[256];
    const char *p = path;
    int fd;

    if (*p == '/') {
        fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        p++;
    } else if (dirfd == AT_FDCWD)
        fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    else
        fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    while (fd >= 0 && *p) {
        size_t n = strcspn(p, "/");
        int next;
        if (n == 0 || n >= sizeof(comp)) {
            p += n ? n : 1;
            if (n >= sizeof(comp)) {
                close(fd);
                errno = ENAMETOOLONG;
                return -1;
            }
            continue;
        }
        memcpy(comp, p, n);
        comp[n] = '\0';
        p += n;
        if (strcmp(comp, "..") == 0) {
            close(fd);
            errno = EPERM;
            return -1;
        }
        next = open_dir1(fd, comp, create);
        close(fd);
        fd = next;
    }
    return fd;
}

/* The directory must be the current user's (a root-run agent never
 * follows another owner's directory). */
static int owned(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return 0;
    return st.st_uid == geteuid();
}

static void unique_name(char *out, size_t size)
{
    static unsigned counter;
    struct timeval tv;
    char host[256];
    gettimeofday(&tv, NULL);
    if (gethostname(host, sizeof(host)) < 0)
        str_lcpy(host, "localhost", sizeof(host));
    host[sizeof(host) - 1] = '\0';
    for (char *h = host; *h; h++)
        if (*h == '/' || *h == ':')
            *h = '_';
    snprintf(out, size, "%lld.M%ldP%ldQ%u.%s", (long long)tv.tv_sec, (long)tv.tv_usec,
             (long)getpid(), ++counter, host);
}

void maildir_deliver(struct lagent_job *job, int dirfd, const char *dir, const char *rcpt,
                     long long limit, int limit_defer, struct lagent_res *res)
{
    int md = -1, tmp = -1, new = -1, cur = -1, fd = -1;
    char name[512];
    struct stat st;

    if ((md = lagent_open_dir(dirfd, dir, 1)) < 0 || !owned(md)) {
        int e = md < 0 ? errno : EPERM;
        log_warn("%s: maildir %s: %s", job->id, dir,
                 e == ELOOP || e == ENOTDIR ? "a symlink or not a directory, refused"
                                            : strerror(e));
        lagent_set(res, QR_DEFERRED, "4.2.0", BCLASS_OTHER, "cannot open maildir %s: %s", dir,
                   e == ELOOP || e == ENOTDIR ? "symbolic link or not a directory"
                   : e == EPERM               ? "not owned by the recipient"
                                              : strerror(e));
        goto done;
    }
    tmp = open_dir1(md, "tmp", 1);
    new = open_dir1(md, "new", 1);
    cur = open_dir1(md, "cur", 1);
    if (tmp < 0 || new < 0 || cur < 0 || !owned(tmp) || !owned(new)) {
        int e = tmp < 0 || new < 0 || cur < 0 ? errno : EPERM;
        log_warn("%s: maildir %s: tmp/new/cur: %s", job->id, dir,
                 e == ELOOP || e == ENOTDIR ? "a symlink or not a directory, refused"
                                            : strerror(e));
        lagent_set(res, QR_DEFERRED, "4.2.0", BCLASS_OTHER, "cannot open maildir %s: %s", dir,
                   e == ELOOP || e == ENOTDIR ? "tmp/new/cur is a symbolic link or no directory"
                   : e == EPERM               ? "not owned by the recipient"
                                              : strerror(e));
        goto done;
    }
    unique_name(name, sizeof(name));
    fd = openat(tmp, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        lagent_set_errno(res, errno, "maildir file");
        goto done;
    }
    if (lagent_copy(job, fd, job->env.sender, rcpt, 0) < 0 || fsync(fd) < 0) {
        lagent_set_errno(res, errno, "maildir file");
        unlinkat(tmp, name, 0);
        goto done;
    }
    if (limit > 0 && fstat(fd, &st) == 0 && st.st_size > limit) {
        unlinkat(tmp, name, 0);
        if (limit_defer)
            lagent_set(res, QR_DEFERRED, "4.2.2", BCLASS_QUOTA_ISSUES,
                       "mailbox full: message of %lld bytes exceeds the limit of %lld",
                       (long long)st.st_size, limit);
        else
            lagent_set(res, QR_BOUNCED, "5.2.2", BCLASS_QUOTA_ISSUES,
                       "mailbox full: message of %lld bytes exceeds the limit of %lld",
                       (long long)st.st_size, limit);
        goto done;
    }
    if (renameat(tmp, name, new, name) < 0 || fsync(new) < 0) {
        lagent_set_errno(res, errno, "maildir new/");
        unlinkat(tmp, name, 0);
        goto done;
    }
    lagent_set(res, QR_SENT, "2.0.0", BCLASS_OTHER, "delivered to maildir");
done:
    if (fd >= 0)
        close(fd);
    if (cur >= 0)
        close(cur);
    if (new >= 0)
        close(new);
    if (tmp >= 0)
        close(tmp);
    if (md >= 0)
        close(md);
}
