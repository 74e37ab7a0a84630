/* events_file.c - event_log: the one file of JSON lines, written by this
 * daemon only (no other process appends to it, so lines never interleave).
 *
 * Rotation, checked before each line: when the line would take the file
 * past event_log_rotate_size, or the file has been open for
 * event_log_rotate_interval, FILE.N-1 -> FILE.N ... FILE -> FILE.1 (FILE.N
 * beyond event_log_rotate_count is removed) and a new FILE is started.
 * The age counts from when this daemon opened the file (a restart starts
 * the clock again). A reload (postino reload, or SIGHUP to the daemon)
 * reopens the file, so an outside logrotate may move it away first.
 * Write errors are logged once per kind and the line is lost; the
 * webhook's spool is the durable copy. */
#include "events/events.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/mail/conf.h"
#include "common/util/log.h"

static struct {
    buf_t path;
    int fd;
    long long size;
    time_t opened;
    int warned;
} ef = { .path = BUF_INIT, .fd = -1 };

static void open_file(void)
{
    struct stat st;
    ef.fd = open(buf_str(&ef.path), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (ef.fd < 0) {
        if (!ef.warned++)
            log_warn("cannot open event_log %s: %s", buf_str(&ef.path), strerror(errno));
        return;
    }
    ef.warned = 0;
    ef.size = fstat(ef.fd, &st) == 0 ? (long long)st.st_size : 0;
    ef.opened = time(NULL);
}

void events_file_close(void)
{
    if (ef.fd >= 0)
        close(ef.fd);
    ef.fd = -1;
}

void events_file_open(void)
{
    events_file_close();
    buf_set(&ef.path, conf_str("event_log"));
    if (ef.path.len)
        open_file();
}

void events_file_reopen(void)
{
    events_file_open();
    if (ef.path.len)
        log_info("event_log %s reopened", buf_str(&ef.path));
}

static void rotate(void)
{
    long long keep = conf_int("event_log_rotate_count");
    buf_t from = BUF_INIT, to = BUF_INIT;
    events_file_close();
    for (long long n = keep; n >= 1; n--) {
        buf_reset(&from);
        if (n == 1)
            buf_set(&from, buf_str(&ef.path));
        else
            buf_printf(&from, "%s.%lld", buf_str(&ef.path), n - 1);
        buf_setf(&to, "%s.%lld", buf_str(&ef.path), n);
        if (rename(from.data, to.data) < 0 && errno != ENOENT)
            log_warn("cannot rotate %s to %s: %s", from.data, to.data, strerror(errno));
    }
    buf_destroy(&from);
    buf_destroy(&to);
    open_file();
}

static int due(size_t len)
{
    long long max = conf_int("event_log_rotate_size");
    long long age = conf_int("event_log_rotate_interval");
    if (ef.size == 0)
        return 0;
    return (max > 0 && ef.size + (long long)len > max) ||
           (age > 0 && time(NULL) - ef.opened >= age);
}

void events_file_write(const char *line, size_t len)
{
    if (ef.path.len == 0)
        return;
    if (ef.fd < 0)
        open_file();
    else if (due(len))
        rotate();
    if (ef.fd < 0)
        return;
    ssize_t n = write(ef.fd, line, len);
    if (n != (ssize_t)len) {
        if (!ef.warned++)
            log_warn("cannot write event_log %s: %s", buf_str(&ef.path),
                     n < 0 ? strerror(errno) : "short write");
        return;
    }
    ef.warned = 0;
    ef.size += (long long)len;
}
