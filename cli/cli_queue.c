/* cli_queue.c - "postino queue ...": list, show, flush, stats and the
 * changes (delete, hold, release, requeue). Everything but "show" is a
 * request to qmgr on public/control (qmgr owns the index); "show" reads
 * the queue file directly, like postcat. The request and its replies are
 * blocking (a command, not an event loop); a malformed reply gets the
 * daemons' policy (conn.h) in a command's terms: nothing of it is used,
 * the command says so and fails. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util/attr.h"
#include "common/util/buf.h"
#include "common/mail/conf.h"
#include "common/mail/dsn.h"
#include "common/util/ipc.h"
#include "common/mail/proto.h"
#include "common/mail/qfile.h"

/* ------------------------------------------------------------ list */

struct list_tot {
    long long bytes;
    long count;
};

/* Queue data came from the network: no control characters on the tty. */
static const char *safe(const char *v)
{
    static buf_t b;
    buf_reset(&b);
    dsn_safe_addr(&b, v, 0);
    return buf_str(&b);
}

static void list_entry(const attr_t *m, struct list_tot *t)
{
    const char *state = attr_get_def(m, "state", "");
    const char *sender = attr_get_def(m, "sender", "");
    const char *reason = attr_get(m, "reason");
    long long size = 0;
    char when[40] = "";
    time_t arrival = (time_t)strtoll(attr_get_def(m, "arrival", "0"), NULL, 10);
    struct tm tm;
    size_t pos = 0;
    const char *r;

    attr_get_ll(m, "size", &size);
    if (localtime_r(&arrival, &tm))
        strftime(when, sizeof when, "%a %b %e %H:%M:%S", &tm);
    char mark = strcmp(state, "hold") == 0 ? '!' : strcmp(state, "active") == 0 ? '*' : ' ';
    printf("%s%c %8lld %-20s  ", safe(attr_get_def(m, "queue_id", "?")), mark, size, when);
    printf("%s\n", *sender ? safe(sender) : "MAILER-DAEMON");
    if (reason && *reason)
        printf("(%s)\n", safe(reason));
    while ((r = attr_next(m, "rcpt", &pos)) != NULL)
        printf("%50s%s\n", "", safe(r));
    printf("\n");
    t->bytes += size;
    t->count++;
}

/* One message as a JSON object (the keys are documented in README.md). */
static void list_json(const attr_t *m, struct list_tot *t)
{
    static const char *const strs[] = { "queue_id", "state", "sender", "reason" };
    long long size = 0, arrival = 0;
    size_t pos = 0;
    const char *r;

    attr_get_ll(m, "size", &size);
    attr_get_ll(m, "arrival", &arrival);
    printf("%s{", t->count ? ",\n" : "");
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        cli_json_key(strs[i], i == 0);
        cli_json_str(attr_get_def(m, strs[i], ""));
    }
    cli_json_key("size", 0);
    printf("%lld", size);
    cli_json_key("arrival", 0);
    printf("%lld", arrival);
    cli_json_key("recipients", 0);
    putchar('[');
    for (int n = 0; (r = attr_next(m, "rcpt", &pos)) != NULL; n++) {
        if (n)
            putchar(',');
        cli_json_str(r);
    }
    printf("]}");
    t->bytes += size;
    t->count++;
}

static int list_parse(int argc, char **argv, attr_t *req, int *json)
{
    static const struct option longopts[] = { { "json", no_argument, NULL, 'J' },
                                              { NULL, 0, NULL, 0 } };
    int ch;
    optind = 0;
    while ((ch = getopt_long(argc, argv, "+d:s:", longopts, NULL)) != -1) {
        if (ch == 'd')
            attr_add(req, "domain", optarg);
        else if (ch == 's')
            attr_add(req, "sender", optarg);
        else if (ch == 'J')
            *json = 1;
        else
            return -1;
    }
    for (int i = optind; i < argc; i++)
        attr_add(req, "queue_id", argv[i]);
    return 0;
}

int cli_cmd_queue_list(struct cli *c, int argc, char **argv)
{
    attr_t req = cli_control_request("list"), rec = ATTR_INIT;
    buf_t in = BUF_INIT;
    struct list_tot tot = { 0, 0 };
    int rc = CLI_ERR, fd, json = 0;

    if (list_parse(argc, argv, &req, &json) < 0) {
        attr_destroy(&req);
        return cli_usage("queue");
    }
    if ((fd = cli_control_send(&req)) >= 0) {
        while (cli_control_read(fd, &in, &rec) == 0) {
            if (attr_get(&rec, "end")) {
                rc = CLI_OK;
                break;
            }
            if (attr_get(&rec, "status") && !attr_get(&rec, "queue_id")) {
                cli_err("%s", attr_get_def(&rec, "reason", "list failed"));
                break;
            }
            if (!attr_get(&rec, "queue_id")) {
                cli_control_malformed("a listed message without a queue_id");
                break;
            }
            if (json && tot.count == 0)
                printf("{\"messages\":[\n");
            if (json) {
                list_json(&rec, &tot);
                continue;
            }
            if (tot.count == 0)
                printf("%-18s %8s %-20s  %s\n", "-Queue ID-", "--Size--", "----Arrival Time----",
                       "-Sender/Recipient-------");
            list_entry(&rec, &tot);
        }
        close(fd);
    }
    if (rc == CLI_OK && json)
        printf("%s],\"count\":%ld,\"bytes\":%lld}\n", tot.count ? "\n" : "{\"messages\":[",
               tot.count, tot.bytes);
    else if (rc == CLI_OK && tot.count == 0)
        printf("Mail queue is empty\n");
    else if (rc == CLI_OK)
        printf("-- %lld Kbytes in %ld Request%s.\n", (tot.bytes + 1023) / 1024, tot.count,
               tot.count == 1 ? "" : "s");
    attr_destroy(&req);
    attr_destroy(&rec);
    buf_destroy(&in);
    return rc;
}

/* ------------------------------------------------- flush, stats, changes */

static int cmd_flush(struct cli *c, int argc, char **argv)
{
    if (argc != 1)
        return cli_usage("queue");
    attr_t req = cli_control_request("flush"), reply = ATTR_INIT;
    int rc = cli_control_call(&req, &reply);
    if (rc == 0)
        printf("postino: %s message(s) flushed\n", attr_get_def(&reply, "count", "0"));
    attr_destroy(&req);
    attr_destroy(&reply);
    return rc == 0 ? CLI_OK : CLI_ERR;
}

static int cmd_stats(struct cli *c, int argc, char **argv)
{
    static const char *const fields[] = { "incoming", "active", "deferred", "hold", "total" };
    if (argc != 1)
        return cli_usage("queue");
    attr_t req = cli_control_request("stats"), reply = ATTR_INIT;
    int rc = cli_control_call(&req, &reply);
    /* qmgr's start-up scan still runs: the counts below are partial. */
    if (rc == 0 && attr_get(&reply, "scan"))
        printf("%s: %s files scanned\n", attr_get(&reply, "scan"),
               attr_get_def(&reply, "scanned", "0"));
    for (size_t i = 0; rc == 0 && i < sizeof fields / sizeof fields[0]; i++)
        printf("%-10s %s\n", fields[i], attr_get_def(&reply, fields[i], "0"));
    attr_destroy(&req);
    attr_destroy(&reply);
    return rc == 0 ? CLI_OK : CLI_ERR;
}

/* Selection for delete/hold/release/requeue: IDs | -d D | -s S | ALL.
 * CLI_USAGE and CLI_ERR are reported already. */
static int change_parse(int argc, char **argv, attr_t *req)
{
    int ch, nsel = 0;
    optind = 0;
    while ((ch = getopt(argc, argv, "+d:s:")) != -1) {
        if (ch != 'd' && ch != 's')
            return cli_usage("queue");
        attr_add(req, ch == 'd' ? "domain" : "sender", optarg);
        nsel++;
    }
    if (optind == argc - 1 && strcmp(argv[optind], "ALL") == 0 && nsel == 0) {
        attr_add(req, "all", "1");
        return CLI_OK;
    }
    for (int i = optind; i < argc; i++, nsel++) {
        if (!qid_valid(argv[i])) {
            cli_err("invalid queue id: %s", argv[i]);
            return CLI_ERR;
        }
        attr_add(req, "queue_id", argv[i]);
    }
    return nsel > 0 ? CLI_OK : cli_usage("queue");
}

/* "\rpostino: deleting 1500 of 100000 messages" on a terminal only. */
static void change_progress(const attr_t *rec, const char *verb)
{
    if (!isatty(STDERR_FILENO))
        return;
    fprintf(stderr, "\rpostino: %s %s of %s messages", verb, attr_get_def(rec, "progress", "?"),
            attr_get_def(rec, "total", "?"));
    fflush(stderr);
}

/* Send the change, show qmgr's progress records, end with the count
 * line "postino: deleted N messages". */
static int cmd_change(struct cli *c, int argc, char **argv, const char *verb, const char *done)
{
    attr_t req = cli_control_request(argv[0]), rec = ATTR_INIT;
    buf_t in = BUF_INIT;
    int rc = change_parse(argc, argv, &req), fd = -1, shown = 0;

    if (rc == CLI_OK && (fd = cli_control_send(&req)) < 0)
        rc = CLI_ERR;
    while (fd >= 0 && (rc = cli_control_read(fd, &in, &rec) == 0 ? CLI_OK : CLI_ERR) == CLI_OK &&
           attr_get(&rec, "progress") && !attr_get(&rec, "status")) {
        change_progress(&rec, verb);
        shown = 1;
    }
    if (shown && isatty(STDERR_FILENO))
        fputs("\r\033[K", stderr); /* the progress line goes */
    if (fd >= 0 && rc == CLI_OK) {
        const char *status = attr_get(&rec, "status");
        long long n = 0;
        if (status && strcmp(status, "ok") == 0 && attr_get_ll(&rec, "count", &n) == 0) {
            printf("postino: %s %lld message%s\n", done, n, n == 1 ? "" : "s");
        } else if (status && strcmp(status, "fail") == 0) {
            cli_err("%s", attr_get_def(&rec, "reason", "request failed"));
            rc = CLI_ERR;
        } else {
            cli_control_malformed("no status");
            rc = CLI_ERR;
        }
    }
    if (fd >= 0)
        close(fd);
    attr_destroy(&req);
    attr_destroy(&rec);
    buf_destroy(&in);
    return rc;
}

static int cmd_delete(struct cli *c, int argc, char **argv)
{
    return cmd_change(c, argc, argv, "deleting", "deleted");
}
static int cmd_hold(struct cli *c, int argc, char **argv)
{
    return cmd_change(c, argc, argv, "holding", "held");
}
static int cmd_release(struct cli *c, int argc, char **argv)
{
    return cmd_change(c, argc, argv, "releasing", "released");
}
static int cmd_requeue(struct cli *c, int argc, char **argv)
{
    return cmd_change(c, argc, argv, "requeueing", "requeued");
}

static const struct {
    const char *name;
    cli_fn fn;
} queue_cmds[] = {
    { "list", cli_cmd_queue_list },
    { "show", cli_cmd_queue_show },
    { "flush", cmd_flush },
    { "stats", cmd_stats },
    { "delete", cmd_delete },
    { "hold", cmd_hold },
    { "release", cmd_release },
    { "requeue", cmd_requeue },
    { "summary", cli_cmd_queue_summary },
};

int cli_cmd_queue(struct cli *c, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage("queue");
    for (size_t i = 0; i < sizeof queue_cmds / sizeof queue_cmds[0]; i++)
        if (strcmp(queue_cmds[i].name, argv[1]) == 0)
            return queue_cmds[i].fn(c, argc - 1, argv + 1);
    cli_err("unknown queue command \"%s\"", argv[1]);
    return cli_usage("queue");
}
