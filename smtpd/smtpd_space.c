/* smtpd_space.c - queue_minfree: refuse mail at MAIL FROM while the queue
 * file system is (nearly) full.
 *
 * A message refused with "452 4.3.1 Insufficient system storage" before
 * any data is cheaper for both sides than one refused after the client
 * sent it all (the write error at the end of DATA still answers 4xx when
 * the space goes while a message is being received). The rule is
 * Postfix's: refuse when the free space is at most queue_minfree, or when
 * the declared SIZE= does not fit in what is left above queue_minfree or
 * in half of the free space. The free space is asked of the kernel at most
 * once a second per process, so a busy smtpd pays nothing per message. */
#include "smtpd/smtpd.h"

#include <errno.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#include "common/mail/conf.h"
#include "common/util/log.h"

static time_t space_when;             /* when space_free was measured (0: never) */
static unsigned long long space_free; /* bytes free to unprivileged users */

/* Free bytes in the queue file system (the daemon's working directory),
 * measured again when the last figure is a second old. On a statvfs
 * failure the answer is "plenty": a broken statvfs must not stop mail. */
static unsigned long long free_bytes(void)
{
    time_t now = time(NULL);
    if (space_when != 0 && now == space_when)
        return space_free;
    struct statvfs st;
    if (statvfs(".", &st) < 0) {
        log_warn("statvfs queue directory: %s", strerror(errno));
        return ~0ULL;
    }
    space_when = now;
    space_free = (unsigned long long)st.f_bavail * (unsigned long long)st.f_frsize;
    return space_free;
}

int smtpd_space_ok(int has_size, unsigned long long size)
{
    unsigned long long minfree = (unsigned long long)conf_int("queue_minfree");
    unsigned long long avail = free_bytes();
    unsigned long long need = has_size ? size : 0;
    if (avail > minfree && need < avail - minfree && need < avail / 2)
        return 1;
    log_warn("not enough free space in mail queue: %llu bytes free, queue_minfree=%llu, "
             "message size %llu",
             avail, minfree, need);
    return 0;
}
