/* cli.h - the postino command: shared context and the command handlers
 * (postino.c dispatches; cli_daemon.c, cli_queue.c, cli_config.c implement). */
#ifndef POSTINO_CLI_H
#define POSTINO_CLI_H

#include <sys/types.h>

#include "common/util/attr.h"
#include "common/util/buf.h"

/* Exit statuses (what every command returns). */
enum cli_status {
    CLI_OK = 0,    /* done */
    CLI_ERR = 1,   /* failed (said why on stderr) */
    CLI_USAGE = 2, /* not understood (usage printed) */
};

struct cli {
    const char *config_dir; /* absolute */
    const char *exe_dir;    /* directory of the postino executable */
    int verbose;
};

/* A command gets its own name in argv[0]. */
typedef int (*cli_fn)(struct cli *c, int argc, char **argv);

/* "postino: <message>\n" to stderr. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Usage error: message plus the command's usage line; returns CLI_USAGE. */
int cli_usage(const char *cmd);

/* Find and load the configuration (dir: -c, or NULL for the default:
 * POSTINO_CONFIG_DIR, <exe>/../conf, /etc/postino) and set exe_dir and
 * config_dir. 0, or -1 after saying why. */
int cli_setup(struct cli *c, const char *dir);
/* cli_sendmail.c: the program run as "sendmail" (or "newaliases": the
 * same options, the mode -bi); a sysexits.h status. */
int cli_sendmail_main(struct cli *c, int argc, char **argv, int newaliases);

/* Is master running? 1 yes (*pid set), 0 no. */
int cli_master_running(pid_t *pid);

int cli_cmd_start(struct cli *c, int argc, char **argv);
int cli_cmd_start_fg(struct cli *c, int argc, char **argv);
int cli_cmd_stop(struct cli *c, int argc, char **argv);
int cli_cmd_reload(struct cli *c, int argc, char **argv);
int cli_cmd_status(struct cli *c, int argc, char **argv);
int cli_cmd_check(struct cli *c, int argc, char **argv);
/* cli_control.c: requests to qmgr on public/control. Each reports its
 * failure on stderr itself. */
int cli_control_connect(void); /* fd or -1 */
/* Connect and send one request: the fd, or -1. */
int cli_control_send(const attr_t *req);
/* Read one reply record (in keeps bytes read past it): 0 or -1. */
int cli_control_read(int fd, buf_t *in, attr_t *rec);
/* Send req on fd, read one reply: 0 for status=ok, else -1. */
int cli_control_exchange(int fd, buf_t *in, const attr_t *req, attr_t *reply);
/* Connect, one request, one reply (as cli_control_exchange), close. */
int cli_control_call(const attr_t *req, attr_t *reply);
void cli_control_malformed(const char *why);
/* A request record: proto= and request=. */
attr_t cli_control_request(const char *request);

int cli_cmd_queue(struct cli *c, int argc, char **argv);
int cli_cmd_queue_list(struct cli *c, int argc, char **argv);
int cli_cmd_queue_show(struct cli *c, int argc, char **argv);
int cli_cmd_config(struct cli *c, int argc, char **argv);
int cli_cmd_map(struct cli *c, int argc, char **argv);
/* cli_import.c: config import-postfix (argv[0] is "import-postfix") */
int cli_cmd_config_import_postfix(struct cli *c, int argc, char **argv);
/* cli_aliases.c */
int cli_cmd_newaliases(struct cli *c, int argc, char **argv);
int cli_cmd_bounce(struct cli *c, int argc, char **argv);
int cli_cmd_dkim(struct cli *c, int argc, char **argv);
/* DKIM settings and every key of dkim_key_maps: 0, or -1 (said why). */
int cli_dkim_check(struct cli *c);
int cli_cmd_suppress(struct cli *c, int argc, char **argv);
/* cli_site.c: postino site list|show (issue #9) */
int cli_cmd_site(struct cli *c, int argc, char **argv);
/* cli_events.c: postino check's part on the event stream (issue #11) */
struct master_ent;
int cli_events_check(const struct master_ent *ents, size_t n);

/* cli_json.c: a JSON string (quoted, escaped, always valid UTF-8) and an
 * object key ("," first unless first, then "key":) on stdout. */
void cli_json_str(const char *s);
void cli_json_key(const char *key, int first);
/* cli_summary.c: postino queue summary (issue #11) */
int cli_cmd_queue_summary(struct cli *c, int argc, char **argv);
/* cli_top.c: postino top (issue #11) */
int cli_cmd_top(struct cli *c, int argc, char **argv);

#endif
