/* cli_import.c - "postino config import-postfix [-o DIR] [POSTFIX_DIR]":
 * translate a Postfix main.cf and master.cf into postino's, for an admin
 * moving over. postino keeps Postfix's parameter names and master.cf
 * columns, so most of it carries over as it is; what does not (parameters
 * postino lacks, table types it cannot read, daemons it has no equivalent
 * of, values it would refuse) is left out and listed by name on stderr,
 * one "not mapped" line each, so nothing is dropped silently. Postfix's
 * own locations (queue_directory, daemon_directory, mail_owner, ...) are
 * never carried over: the import must not point postino at Postfix's
 * spool. */
#include "cli/cli.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/mail/conf.h"

/* Postfix's own places and identity: postino keeps its values. */
static const char *const postfix_own[] = {
    "queue_directory",   "command_directory", "daemon_directory",
    "data_directory",    "mail_owner",        "setgid_group",
    "sendmail_path",     "newaliases_path",   "mailq_path",
    "manpage_directory", "sample_directory",  "readme_directory",
    "html_directory",    "meta_directory",    "shlib_directory",
    "config_directory",  "syslog_name",       NULL,
};

/* Postfix lookup table types postino cannot read (it reads hash:, and
 * unix: and static: where Postfix has them too). */
static const char *const unsupported_tables[] = {
    "btree",  "cdb",   "cidr",     "dbm",      "environ", "fail",    "inline", "internal",
    "ldap",   "lmdb",  "memcache", "mongodb",  "mysql",   "netinfo", "nis",    "nisplus",
    "pcre",   "pgsql", "pipemap",  "proxy",    "randmap", "regexp",  "sdbm",   "socketmap",
    "sqlite", "tcp",   "texthash", "unionmap", NULL,
};

/* Services postino cannot run without; appended when the Postfix
 * master.cf has no row of that name. */
static const char *const required_rows[] = {
    "qmgr             unix  -       -       n      300     1       qmgr",
    "smtp             unix  -       -       n      -       -       delivery",
    "bounce           unix  -       -       n      -       1       bounce",
    "anvil            unix  -       -       n      -       1       anvil",
    "feedback         unix  -       -       n      -       -       feedback",
    NULL,
};

struct import {
    buf_t main_cf, master_cf; /* the translations */
    buf_t report;             /* "not mapped" lines */
    buf_t kept;               /* Postfix's own settings left out */
    char **services;          /* service names written to master.cf */
    size_t nservices, cap;
};

static int in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return 1;
    return 0;
}

static int known_param(const char *name)
{
    for (size_t i = 0; i < param_count; i++)
        if (strcmp(param_table[i].name, name) == 0)
            return 1;
    return 0;
}

static void not_mapped(struct import *im, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void not_mapped(struct import *im, const char *file, const char *fmt, ...)
{
    va_list ap;
    buf_printf(&im->report, "postino: not mapped: %s: ", file);
    va_start(ap, fmt);
    buf_vprintf(&im->report, fmt, ap);
    va_end(ap);
    buf_putc(&im->report, '\n');
}

static int read_text(const char *path, buf_t *out)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        cli_err("%s: %s", path, strerror(errno));
        return -1;
    }
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0)
        buf_append(out, chunk, n);
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        cli_err("%s: read error", path);
        return -1;
    }
    return 0;
}

/* Postfix's logical lines: comments and blank lines dropped, a line that
 * starts with white space continues the one before. NULL-terminated. */
static char **logical_lines(const char *text, size_t *count)
{
    char **v = NULL;
    size_t n = 0, cap = 0;
    char **lines = str_split(text, "\n", NULL);
    for (char **l = lines; *l; l++) {
        char *s = *l + strspn(*l, " \t\r");
        s[strcspn(s, "\r")] = 0;
        if (*s == 0 || *s == '#')
            continue;
        if (s != *l && n > 0) {
            buf_t b = BUF_INIT;
            buf_printf(&b, "%s %s", v[n - 1], str_trim(s));
            free(v[n - 1]);
            v[n - 1] = buf_detach(&b);
            continue;
        }
        v = xgrow(v, &cap, n + 2, sizeof(*v));
        v[n++] = xstrdup(str_trim(s));
    }
    strv_free(lines);
    v = xgrow(v, &cap, n + 1, sizeof(*v));
    v[n] = NULL;
    *count = n;
    return v;
}

/* The first table type in value postino cannot read, or NULL. */
static const char *unsupported_table(const char *value, buf_t *type)
{
    char **items = str_split(value, ", \t", NULL);
    const char *found = NULL;
    for (char **it = items; *it && !found; it++) {
        const char *colon = strchr(*it, ':');
        if (colon == NULL)
            continue;
        buf_reset(type);
        buf_append(type, *it, (size_t)(colon - *it));
        if (in_list(unsupported_tables, buf_str(type)))
            found = buf_str(type);
    }
    strv_free(items);
    return found;
}

/* Postfix reads myorigin = /etc/mailname from the file; postino takes
 * the name itself. 0, or -1 when the file has no name. */
static int origin_from_file(const char *path, buf_t *out)
{
    buf_t text = BUF_INIT;
    int rc = -1;
    if (read_text(path, &text) == 0) {
        char *first = str_trim(text.data ? text.data : (char *)"");
        first[strcspn(first, " \t\r\n")] = 0;
        if (*first) {
            buf_set(out, first);
            rc = 0;
        }
    }
    buf_destroy(&text);
    return rc;
}

static void import_param(struct import *im, const char *line)
{
    const char *eq = strchr(line, '=');
    if (eq == NULL) {
        not_mapped(im, "main.cf", "\"%s\" (not name = value)", line);
        return;
    }
    char *name_mem = xstrndup(line, (size_t)(eq - line)), *value_mem = xstrdup(eq + 1);
    const char *name = str_trim(name_mem), *value = str_trim(value_mem);
    buf_t why = BUF_INIT, type = BUF_INIT, origin = BUF_INIT;
    if (strcmp(name, "myorigin") == 0 && *value == '/') {
        if (origin_from_file(value, &origin) == 0)
            value = buf_str(&origin);
    }
    if (strcmp(name, "myorigin") == 0 && *value == '/') {
        not_mapped(im, "main.cf", "myorigin (no domain name in %s)", value);
    } else if (in_list(postfix_own, name)) {
        buf_printf(&im->kept, "%s%s", im->kept.len ? ", " : "", name);
    } else if (!known_param(name)) {
        not_mapped(im, "main.cf", "%s (postino has no such parameter)", name);
    } else if (unsupported_table(value, &type)) {
        not_mapped(im, "main.cf", "%s (%s: tables; postino reads hash:)", name, buf_str(&type));
    } else if (conf_override(name, value, &why) < 0) {
        not_mapped(im, "main.cf", "%s (%s)", name, buf_str(&why));
    } else {
        buf_printf(&im->main_cf, "%s = %s\n", name, value);
    }
    buf_destroy(&why);
    buf_destroy(&type);
    buf_destroy(&origin);
    free(name_mem);
    free(value_mem);
}

/* Where this postino keeps its spool and daemons, when main.cf says, and
 * its shipped rules (the output directory need not have them). */
static void carry_own_locations(struct import *im)
{
    static const char *const own[] = { "queue_directory", "daemon_directory", "mail_owner" };
    static const char *const rules[] = { "bounce_classifier_rules", "shaping_rules" };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (conf_is_set(own[i]))
            buf_printf(&im->main_cf, "%s = %s\n", own[i], conf_str(own[i]));
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (*conf_str(rules[i]))
            buf_printf(&im->main_cf, "%s = %s\n", rules[i], conf_str(rules[i]));
}

static void import_main(struct import *im, const char *text, const char *from)
{
    size_t n;
    char **lines = logical_lines(text, &n);
    buf_printf(&im->main_cf,
               "# main.cf imported from %s by \"postino config import-postfix\".\n"
               "# Lookup tables keep their paths: build them with \"postino map build\".\n",
               from);
    carry_own_locations(im);
    for (size_t i = 0; i < n; i++)
        import_param(im, lines[i]);
    strv_free(lines);
}

/* Postfix daemon -> postino program for this service, or NULL. */
static const char *map_command(const char *service, const char *type, const char *cmd)
{
    static const char *const same[] = { "anvil", "local", "virtual", "pipe", "discard", NULL };
    if (strcmp(cmd, "smtpd") == 0)
        return strcmp(type, "inet") == 0 ? "smtpd" : NULL;
    if (strcmp(type, "unix") != 0)
        return NULL;
    if (strcmp(cmd, "smtp") == 0 || strcmp(cmd, "lmtp") == 0)
        return "delivery";
    if (strcmp(cmd, "qmgr") == 0 || strcmp(cmd, "nqmgr") == 0)
        return "qmgr";
    if (strcmp(cmd, "bounce") == 0) /* defer, trace: Postfix's own */
        return strcmp(service, "bounce") == 0 ? "bounce" : NULL;
    if (strcmp(cmd, "error") == 0) /* retry: Postfix's error in defer mode */
        return strcmp(service, "retry") == 0 ? NULL : "error";
    return in_list(same, cmd) ? cmd : NULL;
}

/* "smtp", "127.0.0.1:submission" -> "25", "127.0.0.1:587"; 0 or -1. */
static int inet_service(const char *service, buf_t *out)
{
    const char *colon = strrchr(service, ':');
    const char *port = colon ? colon + 1 : service;
    buf_reset(out);
    if (colon)
        buf_append(out, service, (size_t)(colon - service + 1));
    if (*port && strspn(port, "0123456789") == strlen(port)) {
        buf_puts(out, port);
        return 0;
    }
    struct servent *se = getservbyname(port, "tcp");
    if (se == NULL)
        return -1;
    buf_printf(out, "%d", ntohs((uint16_t)se->s_port));
    return 0;
}

/* -o name=value for this service, or a reason it is left out. */
static void import_option(struct import *im, const char *service, const char *opt, buf_t *rows)
{
    const char *eq = strchr(opt, '=');
    char *name = xstrndup(opt, eq ? (size_t)(eq - opt) : strlen(opt));
    if (eq == NULL || !known_param(name)) {
        not_mapped(im, "master.cf", "%s: -o %s", service, name);
    } else if (strcmp(name, "syslog_name") == 0 && strncmp(eq + 1, "postfix", 7) == 0) {
        buf_printf(rows, "  -o syslog_name=postino%s\n", eq + 8);
    } else {
        buf_printf(rows, "  -o %s\n", opt);
    }
    free(name);
}

/* A pipe row's flags= (postino's pipe knows D and R; the others are
 * listed and left out). */
static void import_pipe_flags(struct import *im, const char *service, const char *flags,
                              buf_t *rows)
{
    buf_puts(rows, " flags=");
    for (const char *f = flags; *f; f++) {
        if (*f == 'D' || *f == 'R')
            buf_putc(rows, *f);
        else
            not_mapped(im, "master.cf", "%s: flags=%c", service, *f);
    }
}

/* A pipe row's arguments: flags=, user=, argv= and the command. NULL,
 * or why postino's pipe agent could not run it (it would refuse to
 * start). */
static const char *import_pipe(struct import *im, const char *service, char **f, size_t n,
                               buf_t *rows)
{
    for (size_t i = 8; i < n; i++) {
        if (strncmp(f[i], "flags=", 6) == 0) {
            import_pipe_flags(im, service, f[i] + 6, rows);
        } else if (strncmp(f[i], "user=", 5) == 0) {
            char *user = xstrndup(f[i] + 5, strcspn(f[i] + 5, ":"));
            struct passwd *pw = getpwnam(user);
            free(user);
            if (pw == NULL)
                return "user= names no user here";
            if (pw->pw_uid == 0)
                return "user= is root";
            buf_printf(rows, " %s", f[i]);
        } else if (strncmp(f[i], "argv=", 5) == 0) {
            if (f[i][5] != '/')
                return "argv= command is not an absolute path";
            for (; i < n; i++)
                buf_printf(rows, " %s", f[i]);
        } else {
            return "an argument postino's pipe does not know";
        }
    }
    buf_putc(rows, '\n');
    return NULL;
}

/* The arguments after the command: -o options (a pipe row's own
 * arguments go to import_pipe); anything else is Postfix's. */
static void import_args(struct import *im, const char *service, char **f, size_t n, buf_t *rows)
{
    for (size_t i = 8; i < n; i++) {
        if (strcmp(f[i], "-o") == 0 && i + 1 < n)
            import_option(im, service, f[++i], rows);
        else if (strncmp(f[i], "-o", 2) == 0 && f[i][2])
            import_option(im, service, f[i] + 2, rows);
        else
            not_mapped(im, "master.cf", "%s: argument %s", service, f[i]);
    }
}

static void import_service(struct import *im, const char *line)
{
    size_t n;
    char **f = str_split(line, " \t", &n);
    buf_t svc = BUF_INIT, rows = BUF_INIT, args = BUF_INIT;
    const char *prog = n >= 8 ? map_command(f[0], f[1], f[7]) : NULL, *why = NULL;
    if (n < 8) {
        not_mapped(im, "master.cf", "\"%s\" (fewer than 8 fields)", line);
    } else if (prog == NULL) {
        not_mapped(im, "master.cf", "%s (%s %s: no postino equivalent)", f[0], f[1], f[7]);
    } else if (strcmp(f[1], "inet") == 0 && inet_service(f[0], &svc) < 0) {
        not_mapped(im, "master.cf", "%s (unknown service port)", f[0]);
    } else if (strcmp(prog, "pipe") == 0 && (why = import_pipe(im, f[0], f, n, &args))) {
        not_mapped(im, "master.cf", "%s (pipe: %s)", f[0], why);
    } else {
        int unix_ = strcmp(f[1], "unix") == 0;
        if (unix_)
            buf_set(&svc, f[0]);
        f[5][strcspn(f[5], "?")] = 0; /* Postfix's "wake up only when used" */
        /* private: postino's unix services are all private (the CLI has
         * qmgr's own control socket); chroot: n, postino's daemons run
         * unchrooted; maxproc 0 (no limit): the default */
        buf_printf(&rows, "%-16s %-5s %-7s %-7s n      %-7s %-7s %s", buf_str(&svc), f[1],
                   unix_ ? "-" : "n", f[3], *f[5] ? f[5] : "-", strcmp(f[6], "0") == 0 ? "-" : f[6],
                   prog);
        if (strcmp(prog, "pipe") == 0) {
            buf_append(&rows, args.data, args.len);
        } else {
            buf_putc(&rows, '\n');
            import_args(im, f[0], f, n, &rows);
        }
        buf_append(&im->master_cf, rows.data, rows.len);
        im->services = xgrow(im->services, &im->cap, im->nservices + 1, sizeof(char *));
        im->services[im->nservices++] = xstrdup(buf_str(&svc));
    }
    buf_destroy(&svc);
    buf_destroy(&rows);
    buf_destroy(&args);
    strv_free(f);
}

static int have_service(const struct import *im, const char *name)
{
    for (size_t i = 0; i < im->nservices; i++)
        if (strcmp(im->services[i], name) == 0)
            return 1;
    return 0;
}

static void import_master(struct import *im, const char *text, const char *from)
{
    size_t n;
    char **lines = logical_lines(text, &n);
    buf_printf(&im->master_cf,
               "# master.cf imported from %s by \"postino config import-postfix\".\n"
               "# service        type  private unpriv chroot wakeup maxproc command + args\n",
               from);
    for (size_t i = 0; i < n; i++)
        import_service(im, lines[i]);
    strv_free(lines);
    for (const char *const *r = required_rows; *r; r++) {
        char *name = xstrndup(*r, strcspn(*r, " "));
        if (!have_service(im, name))
            buf_printf(&im->master_cf, "# added: postino needs it\n%s\n", *r);
        free(name);
    }
}

/* Write text to dir/name unless that exists. 0 or -1 (said why). */
static int write_new(const char *dir, const char *name, const buf_t *text)
{
    buf_t path = BUF_INIT;
    buf_printf(&path, "%s/%s", dir, name);
    FILE *fp = fopen(path.data, "wx");
    int rc = -1;
    if (fp == NULL) {
        cli_err("%s: %s%s", path.data, strerror(errno),
                errno == EEXIST ? " (not overwriting it)" : "");
    } else if (fwrite(text->data, 1, text->len, fp) != text->len || fclose(fp) != 0) {
        cli_err("%s: write error", path.data);
    } else {
        rc = 0;
    }
    buf_destroy(&path);
    return rc;
}

static int output(const struct import *im, const char *dir)
{
    if (dir == NULL) {
        printf("# ---- main.cf ----\n%s\n# ---- master.cf ----\n%s", buf_str(&im->main_cf),
               buf_str(&im->master_cf));
        return 0;
    }
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        cli_err("%s: %s", dir, strerror(errno));
        return -1;
    }
    if (write_new(dir, "main.cf", &im->main_cf) < 0 ||
        write_new(dir, "master.cf", &im->master_cf) < 0)
        return -1;
    printf("postino: wrote %s/main.cf and %s/master.cf\n", dir, dir);
    return 0;
}

/* What we wrote must be a master.cf postino reads (else it is our bug). */
static int check_master(const struct import *im)
{
    struct master_ent *ents = NULL;
    size_t n = 0;
    buf_t err = BUF_INIT;
    int rc = conf_master_parse_text("imported master.cf", buf_str(&im->master_cf), &ents, &n, &err);
    if (rc < 0)
        cli_err("%s", buf_str(&err));
    else
        conf_master_free(ents, n);
    buf_destroy(&err);
    return rc;
}

static int import_run(struct import *im, const char *from, const char *dir)
{
    buf_t path = BUF_INIT, text = BUF_INIT;
    int rc = -1;
    buf_printf(&path, "%s/main.cf", from);
    if (read_text(path.data, &text) < 0)
        goto out;
    import_main(im, buf_str(&text), path.data);
    buf_reset(&path);
    buf_reset(&text);
    buf_printf(&path, "%s/master.cf", from);
    if (read_text(path.data, &text) < 0)
        goto out;
    import_master(im, buf_str(&text), path.data);
    if (check_master(im) < 0 || output(im, dir) < 0)
        goto out;
    if (im->kept.len)
        fprintf(stderr, "postino: kept postino's own: %s\n", buf_str(&im->kept));
    fputs(buf_str(&im->report), stderr);
    rc = 0;
out:
    buf_destroy(&path);
    buf_destroy(&text);
    return rc;
}

int cli_cmd_config_import_postfix(struct cli *c, int argc, char **argv)
{
    const char *dir = NULL;
    int ch;
    optind = 0;
    while ((ch = getopt(argc, argv, "+o:")) != -1) {
        if (ch == 'o')
            dir = optarg;
        else
            return cli_usage("config");
    }
    if (argc - optind > 1)
        return cli_usage("config");
    const char *from = optind < argc ? argv[optind] : "/etc/postfix";
    struct import im = { BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT, NULL, 0, 0 };
    int rc = import_run(&im, from, dir);
    buf_destroy(&im.main_cf);
    buf_destroy(&im.master_cf);
    buf_destroy(&im.report);
    buf_destroy(&im.kept);
    for (size_t i = 0; i < im.nservices; i++)
        free(im.services[i]);
    free(im.services);
    return rc < 0 ? CLI_ERR : CLI_OK;
}
