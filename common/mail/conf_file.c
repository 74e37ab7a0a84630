/* conf_file.c - the text side of configuration: logical lines (comments,
 * continuation lines), the main.cf "name = value" syntax and master.cf's
 * service table. Every error names the file and line so an admin can fix
 * it without guessing. */
#include "common/mail/conf.h"
#include "common/mail/conf_impl.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char conf_master_default[] =
    "127.0.0.1:2525   inet  n       -       n      -       2       smtpd\n"
    "qmgr             unix  -       -       n      300     1       qmgr\n"
    "smtp             unix  -       -       n      -       2       delivery\n"
    "bounce           unix  -       -       n      -       1       bounce\n"
    "anvil            unix  -       -       n      -       1       anvil\n"
    "feedback         unix  -       -       n      -       -       feedback\n"
    "virtual          unix  -       n       n      -       -       virtual\n"
    "error            unix  -       -       n      -       -       error\n"
    "discard          unix  -       -       n      -       -       discard\n"
    "local            unix  -       n       n      -       -       local\n"
    "events           unix  -       -       n      -       1       events\n";

/* One physical line: returns 0 at the end of the text. */
static int phys_line(struct conf_reader *r, const char **s, size_t *n)
{
    if (*r->p == '\0')
        return 0;
    const char *nl = strchr(r->p, '\n');
    size_t len = nl ? (size_t)(nl - r->p) : strlen(r->p);
    *s = r->p;
    *n = len;
    if (len > 0 && r->p[len - 1] == '\r')
        (*n)--;
    r->p += len + (nl ? 1 : 0);
    r->lineno++;
    return 1;
}

/* 1: blank or comment line (skipped everywhere). */
static int ignorable(const char *s, size_t n)
{
    size_t k = 0;
    while (k < n && isspace((unsigned char)s[k]))
        k++;
    return k == n || s[k] == '#';
}

static void append_trimmed(buf_t *out, const char *s, size_t n)
{
    while (n > 0 && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    if (out->len)
        buf_putc(out, ' ');
    buf_append(out, s, n);
}

enum conf_line conf_next_line(struct conf_reader *r, buf_t *out, int *line)
{
    const char *s;
    size_t n;
    buf_reset(out);
    for (;;) {
        if (!phys_line(r, &s, &n))
            return CONF_LINE_END;
        if (ignorable(s, n))
            continue;
        *line = r->lineno;
        if (isspace((unsigned char)s[0]))
            return CONF_LINE_ORPHAN;
        append_trimmed(out, s, n);
        break;
    }
    /* Absorb continuation lines (and comments between them). */
    for (;;) {
        struct conf_reader save = *r;
        if (!phys_line(r, &s, &n))
            break;
        if (ignorable(s, n))
            continue;
        if (!isspace((unsigned char)s[0])) {
            *r = save;
            break;
        }
        append_trimmed(out, s, n);
    }
    return CONF_LINE_OK;
}

enum conf_read conf_read_file(const char *path, buf_t *text, buf_t *err)
{
    FILE *fp = fopen(path, "r");
    buf_reset(text);
    if (fp == NULL) {
        if (errno == ENOENT)
            return CONF_READ_MISSING;
        buf_reset(err);
        buf_printf(err, "%s: cannot open: %s", path, strerror(errno));
        return CONF_READ_ERROR;
    }
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        buf_append(text, chunk, n);
    int bad = ferror(fp);
    fclose(fp);
    if (bad || memchr(buf_str(text), '\0', text->len)) {
        buf_reset(err);
        buf_printf(err, "%s: read error or NUL byte in file", path);
        return CONF_READ_ERROR;
    }
    buf_reserve(text, 0);
    return CONF_READ_OK;
}

static int valid_param_name(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_')
            return 0;
    return 1;
}

static int main_line(const char *path, char *l, int line, buf_t *err)
{
    char *eq = strchr(l, '=');
    if (eq == NULL) {
        buf_reset(err);
        buf_printf(err, "%s, line %d: missing '=' after \"%s\"", path, line, l);
        return -1;
    }
    *eq = '\0';
    char *name = str_trim(l), *value = str_trim(eq + 1);
    if (!valid_param_name(name)) {
        buf_reset(err);
        buf_printf(err, "%s, line %d: invalid parameter name \"%s\"", path, line, name);
        return -1;
    }
    conf_file_setting(name, value, line);
    return 0;
}

int conf_parse_main(const char *path, buf_t *err)
{
    buf_t text = BUF_INIT;
    int rc = 0;
    enum conf_read got = conf_read_file(path, &text, err);
    if (got == CONF_READ_ERROR)
        rc = -1;
    else if (got == CONF_READ_OK)
        rc = conf_parse_main_text(path, buf_str(&text), err);
    buf_destroy(&text);
    return rc;
}

int conf_parse_main_text(const char *path, const char *text, buf_t *err)
{
    buf_t l = BUF_INIT;
    struct conf_reader r = { text, 0 };
    int line = 0, rc = 0;
    enum conf_line got;
    while ((got = conf_next_line(&r, &l, &line)) != CONF_LINE_END) {
        if (got == CONF_LINE_ORPHAN) {
            buf_reset(err);
            buf_printf(err,
                       "%s, line %d: continuation line (starting with white space) "
                       "without a parameter before it",
                       path, line);
            rc = -1;
            break;
        }
        if ((rc = main_line(path, l.data, line, err)) < 0)
            break;
    }
    buf_destroy(&l);
    return rc;
}

/* ---- master.cf ---- */

static int yn_field(const char *f, int def, int *out)
{
    if (strcmp(f, "-") == 0)
        *out = def;
    else if (strcmp(f, "y") == 0 || strcmp(f, "yes") == 0)
        *out = 1;
    else if (strcmp(f, "n") == 0 || strcmp(f, "no") == 0)
        *out = 0;
    else
        return -1;
    return 0;
}

static int num_field(const char *f, int allow_q, int *out)
{
    size_t n = strlen(f);
    if (strcmp(f, "-") == 0) {
        *out = 0;
        return 0;
    }
    if (allow_q && n > 1 && f[n - 1] == '?')
        n--;
    if (n == 0 || n > 9)
        return -1;
    int v = 0;
    for (size_t k = 0; k < n; k++) {
        if (!isdigit((unsigned char)f[k]))
            return -1;
        v = v * 10 + (f[k] - '0');
    }
    *out = v;
    return 0;
}

/* "-o name=value": the name must be known and the value (unless it uses
 * $expansion, resolved later) must fit the parameter's type. */
static int check_override(const char *arg, buf_t *why)
{
    const char *eq = strchr(arg, '=');
    if (eq == NULL || eq == arg) {
        buf_printf(why, "-o \"%s\": expected name=value", arg);
        return -1;
    }
    char *name = xstrndup(arg, (size_t)(eq - arg));
    long i = conf_param_index(name);
    int rc = 0;
    if (i < 0) {
        buf_printf(why, "-o %s: unknown parameter \"%s\"", arg, name);
        rc = -1;
    } else if (strchr(eq + 1, '$') == NULL) {
        buf_t r = BUF_INIT;
        if (conf_validate_value((size_t)i, eq + 1, &r) < 0) {
            buf_printf(why, "-o %s: %s", arg, r.data);
            rc = -1;
        }
        buf_destroy(&r);
    }
    free(name);
    return rc;
}

static int master_args(struct master_ent *e, char **f, size_t nf, buf_t *why)
{
    e->argv = xcalloc(nf - 7 + 1, sizeof(char *));
    for (size_t k = 7; k < nf; k++)
        e->argv[k - 7] = xstrdup(f[k]);
    for (size_t k = 8; k < nf; k++) {
        if (strcmp(f[k], "-o") != 0)
            continue;
        if (k + 1 >= nf) {
            buf_puts(why, "-o without name=value");
            return -1;
        }
        if (check_override(f[++k], why) < 0)
            return -1;
    }
    return 0;
}

static int master_fields(struct master_ent *e, char **f, size_t nf, buf_t *why)
{
    if (nf < 8) {
        buf_printf(why,
                   "expected at least 8 fields (service type private unpriv chroot "
                   "wakeup maxproc command), found %zu",
                   nf);
        return -1;
    }
    e->service = xstrdup(f[0]);
    e->type = xstrdup(f[1]);
    if (strcmp(f[1], "inet") != 0 && strcmp(f[1], "unix") != 0)
        buf_printf(why, "service \"%s\": invalid type \"%s\" (use inet or unix)", f[0], f[1]);
    else if (yn_field(f[2], 1, &e->private_) < 0)
        buf_printf(why, "service \"%s\": private field \"%s\" (use y, n or -)", f[0], f[2]);
    else if (yn_field(f[3], 1, &e->unpriv) < 0)
        buf_printf(why, "service \"%s\": unpriv field \"%s\" (use y, n or -)", f[0], f[3]);
    else if (yn_field(f[4], 0, &e->chroot) < 0)
        buf_printf(why, "service \"%s\": chroot field \"%s\" (use y, n or -)", f[0], f[4]);
    else if (num_field(f[5], 1, &e->wakeup) < 0)
        buf_printf(why, "service \"%s\": invalid wakeup time \"%s\"", f[0], f[5]);
    else if (num_field(f[6], 0, &e->maxproc) < 0)
        buf_printf(why, "service \"%s\": invalid process limit \"%s\"", f[0], f[6]);
    if (why->len)
        return -1;
    return master_args(e, f, nf, why);
}

static int master_dup(const struct master_ent *ents, size_t n, const struct master_ent *e)
{
    for (size_t k = 0; k < n; k++)
        if (strcmp(ents[k].service, e->service) == 0 && strcmp(ents[k].type, e->type) == 0)
            return 1;
    return 0;
}

int conf_master_parse_text(const char *path, const char *text, struct master_ent **out,
                           size_t *count, buf_t *err)
{
    struct conf_reader r = { text, 0 };
    buf_t l = BUF_INIT, why = BUF_INIT;
    struct master_ent *ents = NULL;
    size_t n = 0, cap = 0;
    int line = 0, rc = 0;
    enum conf_line got;
    while (rc == 0 && (got = conf_next_line(&r, &l, &line)) != CONF_LINE_END) {
        buf_reset(&why);
        if (got == CONF_LINE_ORPHAN) {
            buf_puts(&why, "continuation line (starting with white space) without a service");
        } else {
            ents = xgrow(ents, &cap, n + 1, sizeof(*ents));
            struct master_ent *e = &ents[n++];
            memset(e, 0, sizeof(*e));
            e->line = line;
            size_t nf;
            char **f = str_split(l.data, " \t", &nf);
            if (master_fields(e, f, nf, &why) == 0 && master_dup(ents, n - 1, e))
                buf_printf(&why, "duplicate service \"%s\" type %s", e->service, e->type);
            strv_free(f);
        }
        if (why.len) {
            buf_reset(err);
            buf_printf(err, "%s, line %d: %s", path, line, why.data);
            rc = -1;
        }
    }
    buf_destroy(&l);
    buf_destroy(&why);
    if (rc < 0) {
        conf_master_free(ents, n);
        return -1;
    }
    *out = ents;
    *count = n;
    return 0;
}

int conf_master_load(const char *dir, struct master_ent **out, size_t *count, buf_t *err)
{
    buf_t abs = BUF_INIT, path = BUF_INIT, text = BUF_INIT;
    conf_absdir(dir, &abs);
    buf_printf(&path, "%s/master.cf", abs.data);
    int rc = -1;
    enum conf_read got = conf_read_file(path.data, &text, err);
    if (got == CONF_READ_OK)
        rc = conf_master_parse_text(path.data, text.data, out, count, err);
    else if (got == CONF_READ_MISSING)
        rc = conf_master_parse_text("(built-in master.cf)", conf_master_default, out, count, err);
    buf_destroy(&abs);
    buf_destroy(&path);
    buf_destroy(&text);
    return rc;
}

void conf_master_free(struct master_ent *ents, size_t count)
{
    for (size_t k = 0; k < count; k++) {
        free(ents[k].service);
        free(ents[k].type);
        strv_free(ents[k].argv);
    }
    free(ents);
}
