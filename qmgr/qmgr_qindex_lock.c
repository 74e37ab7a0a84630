/* qmgr_qindex_lock.c - one queue manager per spool: an exclusive flock(2) on
 * <spool>/index/lock, held for the life of the process (qindex.h). An
 * orphaned qmgr (its master killed with -9) may still be running when
 * master starts a new one; the new one waits for it, then gives up. */
#include "qmgr/qmgr_qindex.h"
#include "common/util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The holder's pid as written into the lock file, or 0. */
static long lock_holder(int fd)
{
    char b[32];
    ssize_t n = pread(fd, b, sizeof(b) - 1, 0);

    if (n <= 0)
        return 0;
    b[n] = '\0';
    return strtol(b, NULL, 10);
}

static void lock_note_pid(int fd)
{
    char b[32];
    int n = snprintf(b, sizeof(b), "%ld\n", (long)getpid());

    if (ftruncate(fd, 0) < 0 || pwrite(fd, b, (size_t)n, 0) != n)
        log_warn("cannot write the pid into the queue index lock file: %m");
}

int qmgr_qindex_lock(const char *spool, int wait_ms, buf_t *err)
{
    buf_t dir = BUF_INIT, path = BUF_INIT;
    struct timespec pause = { 0, 100 * 1000000L };
    int fd = -1;

    buf_printf(&dir, "%s/index", spool);
    buf_printf(&path, "%s/lock", buf_str(&dir));
    if (mkdir(dir.data, 0700) < 0 && errno != EEXIST) {
        buf_printf(err, "cannot create %s: %s", dir.data, strerror(errno));
    } else if ((fd = open(path.data, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
        buf_printf(err, "cannot open %s: %s", path.data, strerror(errno));
    } else {
        for (int waited = 0; flock(fd, LOCK_EX | LOCK_NB) < 0; waited += 100) {
            if ((errno != EWOULDBLOCK && errno != EINTR) || waited >= wait_ms) {
                buf_printf(err, "%s is locked by another queue manager (pid %ld)", path.data,
                           lock_holder(fd));
                close(fd);
                fd = -1;
                break;
            }
            nanosleep(&pause, NULL);
        }
        if (fd >= 0)
            lock_note_pid(fd);
    }
    buf_destroy(&dir);
    buf_destroy(&path);
    return fd;
}
