/* cli_summary.c - "postino queue summary [-d] [--json] [STATE...]": the
 * queue's shape like Postfix's qshape, sites (or recipient domains with
 * -d) by age bucket, biggest first. qmgr answers from its index
 * (request=summary, qmgr/qmgr_shape_ctl.c); this prints the table or JSON.
 *
 *                         T  5 10 20 40 80 160 320 640 1280 1280+
 *            TOTAL       12 ...
 *        gmail.com        7 ...
 *
 * A column N counts the messages younger than N minutes (and at least as
 * old as the column before); 1280+ the older ones; T all. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/util/attr.h"
#include "common/util/buf.h"
#include "common/mail/dsn.h"

#define NBUCKETS 10

static const char *const labels[NBUCKETS] = { "5",   "10",  "20",  "40",   "80",
                                              "160", "320", "640", "1280", "1280+" };

struct srow {
    char *name;
    long long total, n[NBUCKETS];
};

struct summary {
    struct srow *rows;
    size_t nrows, cap;
    struct srow all;
};

/* total= and buckets= of a reply record into r: 0, or -1 (malformed). */
static int parse_row(const attr_t *rec, struct srow *r)
{
    const char *b = attr_get(rec, "buckets");
    char *end;

    if (attr_get_ll(rec, "total", &r->total) < 0 || b == NULL)
        return -1;
    for (int i = 0; i < NBUCKETS; i++) {
        errno = 0;
        r->n[i] = strtoll(b, &end, 10);
        if (errno || end == b || *end != (i == NBUCKETS - 1 ? '\0' : ','))
            return -1;
        b = end + 1;
    }
    return 0;
}

/* Read the rows and the end record: 0, or -1 (said why). */
static int read_summary(int fd, struct summary *s)
{
    attr_t rec = ATTR_INIT;
    buf_t in = BUF_INIT;
    int rc = -1;

    while (cli_control_read(fd, &in, &rec) == 0) {
        if (attr_get(&rec, "status")) {
            cli_err("%s", attr_get_def(&rec, "reason", "summary failed"));
            break;
        }
        if (attr_get(&rec, "end")) {
            if (parse_row(&rec, &s->all) == 0)
                rc = 0;
            else
                cli_control_malformed("a summary total without counts");
            break;
        }
        s->rows = xgrow(s->rows, &s->cap, s->nrows + 1, sizeof(*s->rows));
        struct srow *r = &s->rows[s->nrows];
        memset(r, 0, sizeof(*r));
        if (!attr_get(&rec, "name") || parse_row(&rec, r) < 0) {
            cli_control_malformed("a summary row without a name or counts");
            break;
        }
        r->name = xstrdup(attr_get(&rec, "name"));
        s->nrows++;
    }
    attr_destroy(&rec);
    buf_destroy(&in);
    return rc;
}

static int digits(long long v)
{
    int n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

static void text_row(const char *name, const struct srow *r, int wname, const int *w)
{
    buf_t safe = BUF_INIT;

    dsn_safe_addr(&safe, name, 0);
    printf("%*s %*lld", wname, buf_str(&safe), w[0], r->total);
    for (int i = 0; i < NBUCKETS; i++)
        printf(" %*lld", w[i + 1], r->n[i]);
    printf("\n");
    buf_destroy(&safe);
}

static void print_text(const struct summary *s)
{
    int wname = 5, w[NBUCKETS + 1];

    w[0] = digits(s->all.total);
    for (int i = 0; i < NBUCKETS; i++) {
        w[i + 1] = (int)strlen(labels[i]);
        if (digits(s->all.n[i]) > w[i + 1]) /* no row beats the total */
            w[i + 1] = digits(s->all.n[i]);
    }
    for (size_t i = 0; i < s->nrows; i++)
        if ((int)strlen(s->rows[i].name) > wname)
            wname = (int)strlen(s->rows[i].name);
    printf("%*s %*s", wname, "", w[0], "T");
    for (int i = 0; i < NBUCKETS; i++)
        printf(" %*s", w[i + 1], labels[i]);
    printf("\n");
    text_row("TOTAL", &s->all, wname, w);
    for (size_t i = 0; i < s->nrows; i++)
        text_row(s->rows[i].name, &s->rows[i], wname, w);
}

static void json_row(const char *name, const struct srow *r)
{
    putchar('{');
    cli_json_key("name", 1);
    cli_json_str(name);
    cli_json_key("total", 0);
    printf("%lld", r->total);
    cli_json_key("buckets", 0);
    for (int i = 0; i < NBUCKETS; i++)
        printf("%s%lld", i ? "," : "[", r->n[i]);
    printf("]}");
}

static void print_json(const struct summary *s, int by_domain, char **states, int nstates)
{
    putchar('{');
    cli_json_key("by", 1);
    cli_json_str(by_domain ? "domain" : "site");
    cli_json_key("states", 0);
    putchar('[');
    for (int i = 0; i < nstates; i++) {
        if (i)
            putchar(',');
        cli_json_str(states[i]);
    }
    putchar(']');
    cli_json_key("buckets", 0);
    for (int i = 0; i < NBUCKETS; i++) {
        putchar(i ? ',' : '[');
        cli_json_str(labels[i]);
    }
    putchar(']');
    cli_json_key("total", 0);
    json_row("TOTAL", &s->all);
    cli_json_key("rows", 0);
    putchar('[');
    for (size_t i = 0; i < s->nrows; i++) {
        if (i)
            putchar(',');
        json_row(s->rows[i].name, &s->rows[i]);
    }
    printf("]}\n");
}

int cli_cmd_queue_summary(struct cli *c, int argc, char **argv)
{
    static const struct option longopts[] = { { "json", no_argument, NULL, 'J' },
                                              { NULL, 0, NULL, 0 } };
    attr_t req = cli_control_request("summary");
    struct summary s;
    int ch, json = 0, by_domain = 0, rc = CLI_ERR, fd;

    memset(&s, 0, sizeof(s));
    optind = 0;
    while ((ch = getopt_long(argc, argv, "+d", longopts, NULL)) != -1) {
        if (ch == 'd')
            by_domain = 1;
        else if (ch == 'J')
            json = 1;
        else {
            attr_destroy(&req);
            return cli_usage("queue");
        }
    }
    attr_add(&req, "by", by_domain ? "domain" : "site");
    for (int i = optind; i < argc; i++)
        attr_add(&req, "state", argv[i]);
    if ((fd = cli_control_send(&req)) >= 0) {
        if (read_summary(fd, &s) == 0) {
            if (json)
                print_json(&s, by_domain, argv + optind, argc - optind);
            else
                print_text(&s);
            rc = CLI_OK;
        }
        close(fd);
    }
    for (size_t i = 0; i < s.nrows; i++)
        free(s.rows[i].name);
    free(s.rows);
    attr_destroy(&req);
    return rc;
}
