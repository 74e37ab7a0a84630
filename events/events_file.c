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
 * A line the file does not take (a full disk, most often) is never left
 * half-written: a short write is cut back to the last whole line. It waits
 * in memory with the lines after it (events_backlog.c: in order, up to
 * EVENTS_BACKLOG_MAX, beyond that dropped and counted) and is written once
 * the file takes lines again: tried with each new event and each second.
 * One warning when the trouble starts, one line with the counts when it
 * ends. */
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
    int warned;                 /* the open failure is logged */
    struct events_backlog wait; /* lines not written yet */
} ef = { .path = BUF_INIT, .fd = -1 };

static void open_file(void)
{
    struct stat st;
    ef.fd = open(buf_str(&ef.path), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (ef.fd < 0) {
        int err = errno;
        if (!ef.warned++ && ef.wait.lines == 0)
            log_warn("cannot open event_log %s: %s", buf_str(&ef.path), strerror(err));
        errno = err;
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

/* A short write took n bytes of a line: take them back off the end. */
static void cut_back(ssize_t n)
{
    off_t end = lseek(ef.fd, 0, SEEK_END);
    if (end < n || ftruncate(ef.fd, end - n) < 0)
        log_warn("cannot remove a partial line from event_log %s: %s", buf_str(&ef.path),
                 strerror(errno));
}

/* One whole line into the file (rotating first when due), or nothing. */
static int put_line(const char *line, size_t len, void *arg)
{
    if (ef.fd < 0)
        open_file();
    else if (due(len))
        rotate();
    if (ef.fd < 0)
        return -1;
    ssize_t n = write(ef.fd, line, len);
    if (n == (ssize_t)len) {
        ef.size += (long long)len;
        return 0;
    }
    int err = n < 0 ? errno : ENOSPC; /* a short write: the disk is full */
    if (n > 0)
        cut_back(n);
    errno = err;
    return -1;
}

static void keep(const char *line, size_t len)
{
    if (events_backlog_push(&ef.wait, line, len) < 0 && ef.wait.dropped == 1)
        log_warn("event_log %s: %d MiB of events wait to be written; dropping new ones "
                 "until it takes lines again",
                 buf_str(&ef.path), EVENTS_BACKLOG_MAX / (1024 * 1024));
}

void events_file_retry(void)
{
    if (ef.wait.lines == 0 || events_backlog_drain(&ef.wait, put_line, NULL) < 0)
        return;
    log_info("event_log %s takes events again: %llu written late, %llu dropped", buf_str(&ef.path),
             ef.wait.written, ef.wait.dropped);
    events_backlog_reset_counts(&ef.wait);
}

void events_file_write(const char *line, size_t len)
{
    if (ef.path.len == 0)
        return;
    if (ef.wait.lines > 0) {
        keep(line, len); /* after the lines that wait: in order */
        events_file_retry();
        return;
    }
    if (put_line(line, len, NULL) == 0)
        return;
    log_warn("cannot write event_log %s: %s; keeping events in memory (up to %d MiB) until "
             "it takes lines again",
             buf_str(&ef.path), strerror(errno), EVENTS_BACKLOG_MAX / (1024 * 1024));
    keep(line, len);
}

void events_file_stop(void)
{
    events_file_retry();
    if (ef.wait.lines > 0)
        log_warn("event_log %s: %zu events could not be written and are lost", buf_str(&ef.path),
                 ef.wait.lines);
    events_backlog_destroy(&ef.wait);
    events_file_close();
}
