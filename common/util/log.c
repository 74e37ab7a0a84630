/* log.c - Postfix-shaped log lines to syslog, a file or stderr.
 *
 * Each line is formatted completely in memory and written with a single
 * write(2) on an O_APPEND descriptor, so lines from many processes sharing
 * one log file never interleave. */
#include "common/util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "common/util/utf8.h"

#define LOG_LINE_MAX 4096

static char log_prog[64] = "postino";
static char log_sysname[64] = "postino";
static char log_host[256] = "localhost";
static int log_fd = 2;
static int log_use_syslog;
static int log_facility = LOG_MAIL;
static int log_level_verbose;

static void copy(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void log_set_progname(const char *progname)
{
    copy(log_prog, sizeof(log_prog), progname);
}

void log_init(const char *progname)
{
    copy(log_prog, sizeof(log_prog), progname);
    char host[256];
    if (gethostname(host, sizeof(host)) == 0) {
        host[sizeof(host) - 1] = '\0';
        char *dot = strchr(host, '.');
        if (dot)
            *dot = '\0';
        copy(log_host, sizeof(log_host), host);
    }
}

void log_set_syslog_name(const char *name)
{
    copy(log_sysname, sizeof(log_sysname), name);
}

void log_set_hostname(const char *host)
{
    char tmp[256];
    copy(tmp, sizeof(tmp), host);
    char *dot = strchr(tmp, '.');
    if (dot)
        *dot = '\0';
    copy(log_host, sizeof(log_host), tmp);
}

int log_facility_code(const char *name)
{
    static const struct {
        const char *name;
        int code;
    } fac[] = {
        { "auth", LOG_AUTH },     { "authpriv", LOG_AUTHPRIV }, { "cron", LOG_CRON },
        { "daemon", LOG_DAEMON }, { "ftp", LOG_FTP },           { "kern", LOG_KERN },
        { "lpr", LOG_LPR },       { "mail", LOG_MAIL },         { "news", LOG_NEWS },
        { "syslog", LOG_SYSLOG }, { "user", LOG_USER },         { "uucp", LOG_UUCP },
        { "local0", LOG_LOCAL0 }, { "local1", LOG_LOCAL1 },     { "local2", LOG_LOCAL2 },
        { "local3", LOG_LOCAL3 }, { "local4", LOG_LOCAL4 },     { "local5", LOG_LOCAL5 },
        { "local6", LOG_LOCAL6 }, { "local7", LOG_LOCAL7 },
    };
    for (size_t i = 0; name && i < sizeof(fac) / sizeof(fac[0]); i++)
        if (strcasecmp(name, fac[i].name) == 0)
            return fac[i].code;
    return -1;
}

void log_set_facility(int facility)
{
    log_facility = facility;
}

int log_open(const char *target)
{
    if (target == NULL || *target == '\0' || strcmp(target, "syslog") == 0) {
        char ident[160];
        snprintf(ident, sizeof(ident), "%s/%s", log_sysname, log_prog);
        static char ident_keep[160];
        copy(ident_keep, sizeof(ident_keep), ident);
        openlog(ident_keep, LOG_PID | LOG_NDELAY, log_facility);
        log_use_syslog = 1;
        return 0;
    }
    if (strcmp(target, "/dev/stderr") == 0 || strcmp(target, "-") == 0) {
        log_use_syslog = 0;
        log_fd = 2;
        return 0;
    }
    int fd = open(target, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    log_use_syslog = 0;
    log_fd = fd;
    return 0;
}

void log_set_fd(int fd)
{
    log_use_syslog = 0;
    log_fd = fd < 0 ? 2 : fd;
}

void log_set_verbose(int level)
{
    log_level_verbose = level;
}

int log_verbose(void)
{
    return log_level_verbose;
}

/* The pid in every line, asked of the kernel once per process (a daemon
 * logs several lines per message); a fork without exec forgets it. */
static long log_pid;

static void log_pid_forget(void);

static void log_pid_register(void)
{
    pthread_atfork(NULL, NULL, log_pid_forget);
}

static void log_pid_forget(void)
{
    log_pid = 0;
}

static long log_getpid(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    if (log_pid == 0) {
        pthread_once(&once, log_pid_register);
        log_pid = (long)getpid();
    }
    return log_pid;
}

static void emit(int prio, const char *prefix, const char *fmt, va_list ap)
{
    int saved = errno;
    char msg[LOG_LINE_MAX];
    size_t plen = strlen(prefix);
    copy(msg, sizeof(msg), prefix);
    vsnprintf(msg + plen, sizeof(msg) - plen, fmt, ap);
    /* Never let control characters from the network split a log line or
     * reach a terminal (C1 and malformed UTF-8 too); UTF-8 text stays. */
    utf8_sanitize_inplace(msg, '?');
    if (log_use_syslog) {
        syslog(prio, "%s", msg);
        errno = saved;
        return;
    }
    char line[LOG_LINE_MAX + 512];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char stamp[32];
    strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S", &tm);
    int n = snprintf(line, sizeof(line), "%s %s %s/%s[%ld]: %s\n", stamp, log_host, log_sysname,
                     log_prog, log_getpid(), msg);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(line)) {
        n = (int)sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(log_fd, line, (size_t)n);
    (void)w;
    errno = saved;
}

#define LOG_BODY(prio, prefix)                                                                     \
    do {                                                                                           \
        va_list ap;                                                                                \
        va_start(ap, fmt);                                                                         \
        emit(prio, prefix, fmt, ap);                                                               \
        va_end(ap);                                                                                \
    } while (0)

void log_info(const char *fmt, ...)
{
    LOG_BODY(LOG_INFO, "");
}
void log_warn(const char *fmt, ...)
{
    LOG_BODY(LOG_WARNING, "warning: ");
}
void log_error(const char *fmt, ...)
{
    LOG_BODY(LOG_ERR, "error: ");
}

void log_debug(const char *fmt, ...)
{
    if (log_level_verbose)
        LOG_BODY(LOG_DEBUG, "");
}

void log_fatal(const char *fmt, ...)
{
    LOG_BODY(LOG_CRIT, "fatal: ");
    exit(1);
}

void log_panic(const char *fmt, ...)
{
    LOG_BODY(LOG_CRIT, "panic: ");
    abort();
}
