/* log.h - the one logging module.
 *
 * Lines have Postfix's shape so pflogsumm and existing tooling work:
 *   "Nov 26 16:34:58 myhost postino/smtpd[123]: 4A1B...: from=<a@b>, ..."
 * Destinations: syslog (facility syslog_facility, default mail), a file
 * opened O_APPEND before the
 * daemon drops privileges, or stderr. Before log_open() everything goes to
 * stderr. warn/error/fatal/panic add Postfix's "warning: ", "error: ",
 * "fatal: ", "panic: " prefixes. */
#ifndef POSTINO_LOG_H
#define POSTINO_LOG_H

#include <stdarg.h>

/* progname is the daemon's short name ("smtpd", "smtp", "qmgr"); the tag in
 * each line is "<syslog_name>/<progname>" (syslog_name default "postino"). */
void log_init(const char *progname);
void log_set_syslog_name(const char *name);
/* A daemon that learns its role late (the delivery agent run as "lmtp"). */
void log_set_progname(const char *progname);
void log_set_hostname(const char *host);
/* syslog facility code (LOG_MAIL, LOG_LOCAL0, ...) for a name as in
 * syslog.conf: auth, authpriv, cron, daemon, ftp, kern, lpr, mail, news,
 * syslog, user, uucp, local0 .. local7 (any case). -1 for anything else. */
int log_facility_code(const char *name);
/* The facility log_open uses for syslog from now on (default LOG_MAIL). */
void log_set_facility(int facility);
/* target: "" or "syslog" -> syslog; "/dev/stderr" or "-" -> stderr;
 * anything else -> that file, opened O_APPEND|O_CREAT (mode 0644).
 * Returns 0, or -1 with errno set (and logging stays where it was). */
int log_open(const char *target);
/* Use an already open descriptor (e.g. inherited); -1 = stderr. */
void log_set_fd(int fd);
void log_set_verbose(int level);
int log_verbose(void);

void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Broken environment or configuration: log and exit(1). */
void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Broken invariant or peer daemon: log and abort(). */
void log_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
