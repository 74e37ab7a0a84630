/* cli_site.c - "postino site list [--json]" and "postino site show NAME
 * [--json]": qmgr's sites (issue #9) with their domains, state,
 * connections, rate over the last minute and queued jobs; and "postino
 * site suspend|throttle|limit|resume|bounce", the administrator's hand on a
 * site's state. qmgr owns the sites; this asks it over public/control
 * (request=site_list and site_set, qmgr_site_ctl.c). */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util/attr.h"
#include "common/util/buf.h"
#include "common/mail/conf.h"
#include "common/mail/dsn.h"

/* Site data came partly from DNS: no control characters on the tty. */
static const char *safe(const char *v)
{
    static buf_t b;
    buf_reset(&b);
    dsn_safe_addr(&b, v, 0);
    return buf_str(&b);
}

static void json_site(const attr_t *r, int first)
{
    static const char *const strs[] = { "name",       "state",  "reason",
                                        "rate_limit", "policy", "last_defer" };
    static const char *const nums[] = { "until", "conns",  "limit",        "window",
                                        "rate",  "queued", "last_defer_at" };
    size_t pos = 0;
    const char *v;
    int n = 0;

    printf("%s{", first ? "" : ",");
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        printf("%s\"%s\":", i ? "," : "", strs[i]);
        cli_json_str(attr_get_def(r, strs[i], ""));
    }
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
        printf(",\"%s\":%lld", nums[i], strtoll(attr_get_def(r, nums[i], "0"), NULL, 10));
    printf(",\"domains\":[");
    while ((v = attr_next(r, "domain", &pos)) != NULL) {
        printf("%s", n++ ? "," : "");
        cli_json_str(v);
    }
    printf("]}");
}

static void state_text(const attr_t *r, buf_t *out)
{
    const char *state = attr_get_def(r, "state", "?");
    time_t until = (time_t)strtoll(attr_get_def(r, "until", "0"), NULL, 10);
    char when[32] = "";
    struct tm tm;

    buf_set(out, state);
    if (strcmp(state, "normal") == 0 || until == 0)
        return;
    if (localtime_r(&until, &tm))
        strftime(when, sizeof when, "%H:%M:%S", &tm);
    buf_printf(out, " until %s (%s)", when, attr_get_def(r, "reason", ""));
}

static void text_row(const attr_t *r)
{
    buf_t st = BUF_INIT, doms = BUF_INIT, conns = BUF_INIT;
    size_t pos = 0;
    const char *v;

    state_text(r, &st);
    while ((v = attr_next(r, "domain", &pos)) != NULL)
        buf_printf(&doms, "%s%s", doms.len ? "," : "", v);
    buf_printf(&conns, "%s/%s", attr_get_def(r, "conns", "0"), attr_get_def(r, "limit", "0"));
    /* safe() returns one static buffer: one call per printf */
    printf("%-28s ", safe(attr_get_def(r, "name", "?")));
    printf("%-10s %6s %8s %7s  ", safe(buf_str(&st)), buf_str(&conns), attr_get_def(r, "rate", "0"),
           attr_get_def(r, "queued", "0"));
    printf("%s\n", safe(buf_str(&doms)));
    buf_destroy(&st);
    buf_destroy(&doms);
    buf_destroy(&conns);
}

static void text_show(const attr_t *r)
{
    buf_t st = BUF_INIT;
    size_t pos = 0;
    const char *v;

    state_text(r, &st);
    printf("site: %s\n", safe(attr_get_def(r, "name", "?")));
    printf("state: %s\n", safe(buf_str(&st)));
    printf("connections: %s (limit %s, slow start %s)\n", attr_get_def(r, "conns", "0"),
           attr_get_def(r, "limit", "0"), attr_get_def(r, "window", "0"));
    printf("rate: %s messages in the last minute (limit %s)\n", attr_get_def(r, "rate", "0"),
           *attr_get_def(r, "rate_limit", "") ? attr_get_def(r, "rate_limit", "") : "none");
    printf("queued: %s\n", attr_get_def(r, "queued", "0"));
    printf("policy: %s\n", safe(attr_get_def(r, "policy", "")));
    if (*attr_get_def(r, "last_defer", ""))
        printf("last deferral: %s\n", safe(attr_get_def(r, "last_defer", "")));
    while ((v = attr_next(r, "domain", &pos)) != NULL)
        printf("domain: %s\n", safe(v));
    buf_destroy(&st);
}

/* Ask qmgr; print each site as text (show: one, in detail) or JSON. */
static int site_query(const char *name, int json)
{
    attr_t req = cli_control_request("site_list"), rec = ATTR_INIT;
    buf_t in = BUF_INIT;
    int rc = CLI_ERR, fd;
    size_t n = 0;

    if (name)
        attr_add(&req, "name", name);
    if ((fd = cli_control_send(&req)) >= 0) {
        if (json && !name)
            printf("[");
        while (cli_control_read(fd, &in, &rec) == 0) {
            if (attr_get(&rec, "end")) {
                rc = CLI_OK;
                break;
            }
            if (attr_get(&rec, "status")) {
                cli_err("%s", attr_get_def(&rec, "reason", "site list failed"));
                break;
            }
            if (!attr_get(&rec, "name")) {
                cli_control_malformed("a listed site without a name");
                break;
            }
            if (json)
                json_site(&rec, n == 0);
            else if (name)
                text_show(&rec);
            else {
                if (n == 0)
                    printf("%-28s %-10s %6s %8s %7s  %s\n", "-Site-", "-State-", "-Conns-",
                           "-Msg/min-", "-Queued-", "-Domains-");
                text_row(&rec);
            }
            n++;
        }
        if (json && !name)
            printf("]\n");
        else if (json)
            printf("\n");
        close(fd);
    }
    attr_destroy(&req);
    attr_destroy(&rec);
    buf_destroy(&in);
    return rc;
}

/* site suspend NAME DURATION [REASON] | throttle NAME RATE DURATION
 * [REASON] | limit NAME CONNECTIONS DURATION [REASON] | resume NAME |
 * bounce NAME [REASON] */
static int site_change(int argc, char **argv)
{
    static const struct {
        const char *cmd, *action;
        int nargs; /* after NAME, before REASON */
    } acts[] = {
        { "suspend", "suspend", 1 }, { "throttle", "rate", 2 }, { "limit", "connections", 2 },
        { "resume", "resume", 0 },   { "bounce", "bounce", 0 },
    };
    attr_t req = cli_control_request("site_set"), reply = ATTR_INIT;
    int rc = CLI_USAGE;

    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) {
        int n = acts[i].nargs;
        int reason_ok = strcmp(acts[i].cmd, "resume") != 0;
        if (strcmp(argv[1], acts[i].cmd) != 0 || argc < 3 + n || argc > 3 + n + reason_ok)
            continue;
        buf_t err = BUF_INIT;
        long long secs = 0;
        attr_add(&req, "name", argv[2]);
        attr_add(&req, "action", acts[i].action);
        if (n == 2)
            attr_add(&req, "value", argv[3]);
        if (n > 0 && conf_parse_time(argv[2 + n], 's', &secs, &err) < 0) {
            cli_err("bad duration \"%s\": %s", argv[2 + n], buf_str(&err));
            buf_destroy(&err);
            break;
        }
        buf_destroy(&err);
        if (n > 0)
            attr_add_ll(&req, "secs", secs);
        if (argc == 4 + n)
            attr_add(&req, "reason", argv[3 + n]);
        rc = cli_control_call(&req, &reply) == 0 ? CLI_OK : CLI_ERR;
        break;
    }
    attr_destroy(&req);
    attr_destroy(&reply);
    return rc == CLI_USAGE ? cli_usage("site") : rc;
}

int cli_cmd_site(struct cli *c, int argc, char **argv)
{
    int json = 0;
    const char *name = NULL;

    if (argc < 2)
        return cli_usage("site");
    if (strcmp(argv[1], "list") != 0 && strcmp(argv[1], "show") != 0)
        return site_change(argc, argv);
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (name == NULL && argv[i][0] != '-')
            name = argv[i];
        else
            return cli_usage("site");
    }
    if (strcmp(argv[1], "list") == 0 && name == NULL)
        return site_query(NULL, json);
    if (strcmp(argv[1], "show") == 0 && name != NULL)
        return site_query(name, json);
    return cli_usage("site");
}
