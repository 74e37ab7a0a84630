/* cli_suppress.c - "postino suppress ...": the suppression list.
 *
 *   list [--scope D]          a table of the live entries
 *   add ADDR [--scope D] [--reason R] [--expires DATE|DURATION|never] [--text T]
 *   remove ADDR [--scope D]
 *   import FILE.csv           ("-" for standard input)
 *   export [FILE]             CSV to FILE or standard output
 *
 * Every one is a request to qmgr, the list's one writer (qmgr_suppress_ctl.c),
 * on public/control: the same permission as "postino queue". list and
 * export walk the list in pages on one connection, import sends batches,
 * so a list of millions is never held in memory on either side.
 *
 * CSV (RFC 4180 quoting): address,scope,reason,added,expires,text. A first
 * line naming the columns is read as a header (columns in any order, only
 * address required); without one the columns are in that order and may
 * stop after address. Times: YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ (UTC) or unix
 * seconds; an empty expires is "never", an empty added "now". */
#include "cli/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/mail/conf.h"
#include "common/mail/suppress.h"

#define PAGE         1000 /* entries per list page */
#define IMPORT_BATCH 1000 /* entries per import request */

enum col { C_ADDRESS, C_SCOPE, C_REASON, C_ADDED, C_EXPIRES, C_TEXT, C_COUNT };
static const char *const col_names[C_COUNT] = { "address", "scope",   "reason",
                                                "added",   "expires", "text" };

/* ---- times ---- */

static void fmt_time(long long t, int date_only, char *out, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (t <= 0 || gmtime_r(&tt, &tm) == NULL)
        str_lcpy(out, "", n);
    else
        strftime(out, n, date_only ? "%Y-%m-%d" : "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* YYYY-MM-DD[THH:MM:SS[Z]] (UTC) or unix seconds; 0 or -1. */
static int parse_when(const char *s, long long *out)
{
    struct tm tm;
    char *end;

    memset(&tm, 0, sizeof(tm));
    if (strspn(s, "0123456789") == strlen(s) && *s) {
        *out = strtoll(s, NULL, 10);
        return 0;
    }
    end = strptime(s, "%Y-%m-%d", &tm);
    if (end && (*end == 'T' || *end == ' '))
        end = strptime(end + 1, "%H:%M:%S", &tm);
    if (end && *end == 'Z')
        end++;
    if (end == NULL || *end != '\0')
        return -1;
    *out = (long long)timegm(&tm);
    return 0;
}

/* --expires: a date, a duration from now (180d, 12h; bare number: days)
 * or "never". */
static int parse_expires(const char *s, long long *out)
{
    buf_t err = BUF_INIT;
    long long secs;
    int rc = 0;

    if (strcmp(s, "never") == 0)
        *out = 0;
    else if (strchr(s, '-') && parse_when(s, out) == 0)
        ;
    else if (conf_parse_time(s, 'd', &secs, &err) == 0 && secs > 0)
        *out = (long long)time(NULL) + secs;
    else
        rc = -1;
    buf_destroy(&err);
    return rc;
}

/* Text from the network or a file: no control characters on the tty. */
static const char *printable(const char *s)
{
    static buf_t b;

    buf_reset(&b);
    for (; *s; s++)
        buf_putc(&b, (unsigned char)*s < ' ' || *s == 0x7f ? '?' : *s);
    return buf_str(&b);
}

/* ---- list and export: pages on one connection ---- */

typedef void (*entry_fn)(const attr_t *e, void *arg);

/* Walk every page of request suppress_list (scope may be NULL: all);
 * fn gets each entry record. Returns the number of entries or -1. */
static long walk(const char *scope, entry_fn fn, void *arg)
{
    buf_t in = BUF_INIT, last_scope = BUF_INIT, last_addr = BUF_INIT;
    attr_t rec = ATTR_INIT;
    long total = 0;
    int fd = cli_control_connect(), more = 1, bad = fd < 0;

    while (!bad && more) {
        attr_t req = cli_control_request("suppress_list");
        if (scope)
            attr_add(&req, "scope", scope);
        if (last_addr.len) {
            attr_add(&req, "after_scope", buf_str(&last_scope));
            attr_add(&req, "after_address", buf_str(&last_addr));
        }
        attr_add_ll(&req, "limit", PAGE);
        bad = attr_write_fd(fd, &req) < 0;
        attr_destroy(&req);
        while (!bad && (bad = cli_control_read(fd, &in, &rec) < 0) == 0) {
            if (attr_get(&rec, "end")) {
                more = strcmp(attr_get_def(&rec, "more", "0"), "1") == 0;
                buf_set(&last_scope, attr_get_def(&rec, "last_scope", ""));
                buf_set(&last_addr, attr_get_def(&rec, "last_address", ""));
                break;
            }
            if (!attr_get(&rec, "address")) {
                if (attr_get(&rec, "status"))
                    cli_err("%s", attr_get_def(&rec, "reason", "list failed"));
                else
                    cli_control_malformed("an entry without an address");
                bad = 1;
                break;
            }
            fn(&rec, arg);
            total++;
        }
    }
    if (fd >= 0)
        close(fd);
    attr_destroy(&rec);
    buf_destroy(&in);
    buf_destroy(&last_scope);
    buf_destroy(&last_addr);
    return bad ? -1 : total;
}

static void list_entry(const attr_t *e, void *arg)
{
    long *n = arg;
    char added[32], expires[32];
    long long t = 0;

    attr_get_ll(e, "added", &t);
    fmt_time(t, 1, added, sizeof(added));
    t = 0;
    attr_get_ll(e, "expires", &t);
    fmt_time(t, 1, expires, sizeof(expires));
    if ((*n)++ == 0)
        printf("%-40s %-20s %-18s %-10s %-10s %s\n", "-Address-", "-Scope-", "-Reason-", "-Added-",
               "-Expires-", "-Text-");
    const char *scope = attr_get_def(e, "scope", "");
    printf("%-40s ", printable(attr_get_def(e, "address", "")));
    printf("%-20s ", *scope ? printable(scope) : "(global)"); /* one printable() a call */
    printf("%-18s %-10s %-10s ", printable(attr_get_def(e, "reason", "")), added,
           *expires ? expires : "never");
    printf("%s\n", printable(attr_get_def(e, "text", "")));
}

static const struct option scope_opts[] = {
    { "scope", required_argument, NULL, 's' },
    { NULL, 0, NULL, 0 },
};

static int cmd_list(struct cli *c, int argc, char **argv)
{
    const char *scope = NULL;
    long n = 0;
    int ch;

    optind = 0;
    while ((ch = getopt_long(argc, argv, "s:", scope_opts, NULL)) != -1) {
        if (ch != 's')
            return cli_usage("suppress");
        scope = optarg;
    }
    if (optind != argc)
        return cli_usage("suppress");
    if (walk(scope, list_entry, &n) < 0)
        return CLI_ERR;
    printf("-- %ld entr%s\n", n, n == 1 ? "y" : "ies");
    return CLI_OK;
}

/* ---- CSV ---- */

static void csv_field(FILE *fp, const char *v, int last)
{
    if (strpbrk(v, ",\"\r\n") || (*v && (v[0] == ' ' || v[strlen(v) - 1] == ' '))) {
        fputc('"', fp);
        for (; *v; v++) {
            if (*v == '"')
                fputc('"', fp);
            fputc(*v, fp);
        }
        fputc('"', fp);
    } else {
        fputs(v, fp);
    }
    fputc(last ? '\n' : ',', fp);
}

struct export_ctx {
    FILE *fp;
    long n;
    int progress;
};

static void export_entry(const attr_t *e, void *arg)
{
    struct export_ctx *x = arg;
    char added[32], expires[32];
    long long t = 0;

    attr_get_ll(e, "added", &t);
    fmt_time(t, 0, added, sizeof(added));
    t = 0;
    attr_get_ll(e, "expires", &t);
    fmt_time(t, 0, expires, sizeof(expires));
    csv_field(x->fp, attr_get_def(e, "address", ""), 0);
    csv_field(x->fp, attr_get_def(e, "scope", ""), 0);
    csv_field(x->fp, attr_get_def(e, "reason", ""), 0);
    csv_field(x->fp, added, 0);
    csv_field(x->fp, expires, 0);
    csv_field(x->fp, attr_get_def(e, "text", ""), 1);
    if (++x->n % PAGE == 0 && x->progress)
        fprintf(stderr, "\rexported %ld", x->n);
}

static int cmd_export(struct cli *c, int argc, char **argv)
{
    struct export_ctx x = { stdout, 0, isatty(STDERR_FILENO) };
    const char *file = argc == 2 ? argv[1] : NULL;

    if (argc > 2)
        return cli_usage("suppress");
    if (file && strcmp(file, "-") != 0 && (x.fp = fopen(file, "w")) == NULL) {
        cli_err("cannot create %s: %m", file);
        return CLI_ERR;
    }
    for (int i = 0; i < C_COUNT; i++)
        csv_field(x.fp, col_names[i], i == C_COUNT - 1);
    long n = walk(NULL, export_entry, &x);
    int bad = n < 0 || fflush(x.fp) != 0 || ferror(x.fp);
    if (x.fp != stdout && fclose(x.fp) != 0)
        bad = 1;
    if (x.progress && x.n >= PAGE)
        fputc('\n', stderr);
    if (bad) {
        if (n >= 0)
            cli_err("cannot write %s: %m", file ? file : "the standard output");
        return CLI_ERR;
    }
    fprintf(stderr, "postino: %ld entr%s exported\n", n, n == 1 ? "y" : "ies");
    return CLI_OK;
}

/* Split one CSV line into fields (quotes removed); -1 for an unbalanced
 * quote (a field spread over lines is not supported). */
static int csv_split(const char *line, buf_t f[C_COUNT + 1], size_t *nf)
{
    size_t n = 0;
    const char *p = line;

    for (;;) {
        buf_t *b = &f[n < C_COUNT ? n : C_COUNT];
        buf_reset(b);
        if (*p == '"') {
            for (p++;; p++) {
                if (*p == '\0')
                    return -1;
                if (*p == '"' && p[1] == '"')
                    buf_putc(b, *p++);
                else if (*p == '"')
                    break;
                else
                    buf_putc(b, *p);
            }
            p++;
        }
        while (*p && *p != ',')
            buf_putc(b, *p++);
        n++;
        if (*p != ',')
            break;
        p++;
    }
    *nf = n;
    return 0;
}

struct import_ctx {
    const char *file;
    int map[C_COUNT + 1]; /* input column -> enum col, or C_COUNT: ignored */
    size_t ncols;
    attr_t req;
    long queued, done, skipped, lineno;
    int fd;
    buf_t in;
};

/* A header names the columns (then x->map follows it); 1 if line is one. */
static int import_header(struct import_ctx *x, buf_t *f, size_t nf)
{
    int map[C_COUNT + 1], seen = 0;

    for (size_t i = 0; i < nf && i <= C_COUNT; i++) {
        map[i] = C_COUNT;
        for (int k = 0; k < C_COUNT; k++) {
            if (!str_ieq(str_trim(f[i].data), col_names[k]))
                continue;
            map[i] = k;
            seen |= k == C_ADDRESS;
        }
    }
    if (seen) {
        memcpy(x->map, map, sizeof(map));
        x->ncols = nf;
    }
    return seen;
}

static void import_skip(struct import_ctx *x, const char *why)
{
    cli_err("%s, line %ld: %s; skipped", x->file, x->lineno, why);
    x->skipped++;
}

/* One data line into the request being built. */
static void import_line(struct import_ctx *x, buf_t *f, size_t nf)
{
    const char *v[C_COUNT] = { "", "", "manual", "", "", "" };
    long long t;
    buf_t norm = BUF_INIT;

    for (size_t i = 0; i < nf && i < x->ncols && i <= C_COUNT; i++)
        if (x->map[i] < C_COUNT && f[i].data)
            v[x->map[i]] = str_trim(f[i].data);
    if (!*v[C_REASON])
        v[C_REASON] = "manual";
    if (suppress_norm_address(v[C_ADDRESS], &norm) < 0)
        import_skip(x, "invalid address");
    else if (suppress_norm_scope(v[C_SCOPE], &norm) < 0)
        import_skip(x, "invalid scope");
    else if ((*v[C_ADDED] && parse_when(v[C_ADDED], &t) < 0) ||
             (*v[C_EXPIRES] && parse_when(v[C_EXPIRES], &t) < 0))
        import_skip(x, "invalid time (use YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or unix seconds)");
    else {
        attr_add(&x->req, "address", v[C_ADDRESS]);
        attr_add(&x->req, "scope", v[C_SCOPE]);
        attr_add(&x->req, "reason", v[C_REASON]);
        /* the list keeps SUPPRESS_TEXT_MAX bytes of it; a longer value
         * could pass the record protocol's line limit */
        buf_reset(&norm);
        buf_append(&norm, v[C_TEXT], strnlen(v[C_TEXT], SUPPRESS_TEXT_MAX));
        attr_add(&x->req, "text", buf_str(&norm));
        if (*v[C_ADDED] && parse_when(v[C_ADDED], &t) == 0)
            attr_add_ll(&x->req, "added", t);
        t = 0;
        if (*v[C_EXPIRES])
            parse_when(v[C_EXPIRES], &t);
        attr_add_ll(&x->req, "expires", t);
        x->queued++;
    }
    buf_destroy(&norm);
}

/* Send what is queued; -1 when qmgr refused (it said why). */
static int import_flush(struct import_ctx *x)
{
    attr_t reply = ATTR_INIT;
    long long n = 0;
    int rc = 0;

    if (x->queued == 0)
        return 0;
    if (cli_control_exchange(x->fd, &x->in, &x->req, &reply) < 0 ||
        attr_get_ll(&reply, "count", &n) < 0)
        rc = -1;
    x->done += (long)n;
    x->queued = 0;
    attr_destroy(&x->req);
    x->req = cli_control_request("suppress_import");
    attr_destroy(&reply);
    if (rc == 0 && isatty(STDERR_FILENO))
        fprintf(stderr, "\rimported %ld", x->done);
    return rc;
}

static int import_stream(struct import_ctx *x, FILE *fp)
{
    buf_t f[C_COUNT + 1];
    char *line = NULL;
    size_t cap = 0, nf;
    ssize_t len;
    int rc = 0;

    for (int i = 0; i <= C_COUNT; i++)
        buf_init(&f[i], 64);
    while (rc == 0 && (len = getline(&line, &cap, fp)) >= 0) {
        x->lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        if (csv_split(line, f, &nf) < 0)
            import_skip(x, "unbalanced quote");
        else if (x->lineno == 1 && import_header(x, f, nf))
            continue;
        else
            import_line(x, f, nf);
        if (x->queued >= IMPORT_BATCH)
            rc = import_flush(x);
    }
    if (rc == 0)
        rc = import_flush(x);
    free(line);
    for (int i = 0; i <= C_COUNT; i++)
        buf_destroy(&f[i]);
    return rc;
}

static int cmd_import(struct cli *c, int argc, char **argv)
{
    struct import_ctx x;
    FILE *fp;

    if (argc != 2)
        return cli_usage("suppress");
    memset(&x, 0, sizeof(x));
    x.file = argv[1];
    for (int i = 0; i <= C_COUNT; i++)
        x.map[i] = i; /* no header: the columns in their order */
    x.ncols = C_COUNT;
    if (strcmp(x.file, "-") == 0) {
        fp = stdin;
        x.file = "(stdin)";
    } else if ((fp = fopen(x.file, "r")) == NULL) {
        cli_err("cannot open %s: %m", x.file);
        return CLI_ERR;
    }
    x.req = cli_control_request("suppress_import");
    x.fd = cli_control_connect();
    int rc = x.fd >= 0 ? import_stream(&x, fp) : -1;
    if (fp != stdin)
        fclose(fp);
    if (x.fd >= 0)
        close(x.fd);
    if (x.done > 0 && isatty(STDERR_FILENO))
        fputc('\n', stderr);
    attr_destroy(&x.req);
    buf_destroy(&x.in);
    if (x.fd >= 0)
        printf("postino: %ld entr%s imported, %ld skipped\n", x.done, x.done == 1 ? "y" : "ies",
               x.skipped);
    return rc == 0 && x.skipped == 0 ? CLI_OK : CLI_ERR;
}

/* ---- add, remove ---- */

static int cmd_add(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "scope", required_argument, NULL, 's' },
        { "reason", required_argument, NULL, 'r' },
        { "expires", required_argument, NULL, 'e' },
        { "text", required_argument, NULL, 't' },
        { NULL, 0, NULL, 0 },
    };
    attr_t req = cli_control_request("suppress_add"), reply = ATTR_INIT;
    long long exp;
    int ch, rc = CLI_OK;

    optind = 0;
    while (rc == CLI_OK && (ch = getopt_long(argc, argv, "s:r:e:t:", opts, NULL)) != -1) {
        if (ch == 's' || ch == 'r' || ch == 't')
            attr_add(&req, ch == 's' ? "scope" : ch == 'r' ? "reason" : "text", optarg);
        else if (ch == 'e' && parse_expires(optarg, &exp) == 0)
            attr_add_ll(&req, "expires", exp);
        else if (ch == 'e') {
            cli_err("invalid --expires \"%s\" (a date YYYY-MM-DD, a duration such as 180d, "
                    "or never)",
                    optarg);
            rc = CLI_ERR;
        } else
            rc = cli_usage("suppress");
    }
    if (rc == CLI_OK && optind != argc - 1)
        rc = cli_usage("suppress");
    if (rc == CLI_OK) {
        attr_add(&req, "address", argv[optind]);
        if (cli_control_call(&req, &reply) < 0)
            rc = CLI_ERR;
        else
            printf("postino: %s suppressed\n", printable(argv[optind]));
    }
    attr_destroy(&req);
    attr_destroy(&reply);
    return rc;
}

static int cmd_remove(struct cli *c, int argc, char **argv)
{
    attr_t req = cli_control_request("suppress_remove"), reply = ATTR_INIT;
    int ch, rc = CLI_OK;

    optind = 0;
    while (rc == CLI_OK && (ch = getopt_long(argc, argv, "s:", scope_opts, NULL)) != -1) {
        if (ch == 's')
            attr_add(&req, "scope", optarg);
        else
            rc = cli_usage("suppress");
    }
    if (rc == CLI_OK && optind != argc - 1)
        rc = cli_usage("suppress");
    if (rc == CLI_OK) {
        attr_add(&req, "address", argv[optind]);
        if (cli_control_call(&req, &reply) < 0) {
            rc = CLI_ERR;
        } else if (strcmp(attr_get_def(&reply, "count", "0"), "0") == 0) {
            cli_err("%s is not on the suppression list", printable(argv[optind]));
            rc = CLI_ERR;
        } else {
            printf("postino: %s removed from the suppression list\n", printable(argv[optind]));
        }
    }
    attr_destroy(&req);
    attr_destroy(&reply);
    return rc;
}

static const struct {
    const char *name;
    cli_fn fn;
} suppress_cmds[] = {
    { "list", cmd_list },     { "add", cmd_add },       { "remove", cmd_remove },
    { "import", cmd_import }, { "export", cmd_export },
};

int cli_cmd_suppress(struct cli *c, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage("suppress");
    for (size_t i = 0; i < sizeof suppress_cmds / sizeof suppress_cmds[0]; i++)
        if (strcmp(suppress_cmds[i].name, argv[1]) == 0)
            return suppress_cmds[i].fn(c, argc - 1, argv + 1);
    cli_err("unknown suppress command \"%s\"", argv[1]);
    return cli_usage("suppress");
}
