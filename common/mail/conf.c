/* conf.c - main.cf: parameter values, lazy $name expansion, validation.
 *
 * Values are stored raw, as written; expansion happens at lookup time (like
 * Postfix) and is cached until the next change. A reload parses into a new
 * state and only replaces the old one when every parameter validates, so a
 * broken main.cf never leaves a running daemon half-configured. */
#include "common/mail/conf.h"
#include "common/mail/conf_impl.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXPAND_DEPTH_MAX 30

struct pval {
    char *raw;  /* NULL: the table default */
    int line;   /* main.cf line, 0 when not from main.cf */
    int set;    /* set in main.cf or by override */
    char *exp;  /* cached expansion, NULL when not computed */
    int busy;   /* expansion in progress: loop guard */
    int num_ok; /* num holds exp parsed (conf_int) */
    long long num;
};

struct conf_state {
    struct pval *pv;
    char *file; /* "<dir>/main.cf" for messages */
};

static struct conf_state cs;

static void state_init(struct conf_state *st)
{
    st->pv = xcalloc(param_count, sizeof(*st->pv));
    st->file = xstrdup("main.cf");
}

static void state_destroy(struct conf_state *st)
{
    if (st->pv == NULL)
        return;
    for (size_t i = 0; i < param_count; i++) {
        free(st->pv[i].raw);
        free(st->pv[i].exp);
    }
    free(st->pv);
    free(st->file);
    st->pv = NULL;
    st->file = NULL;
}

static void ensure_state(void)
{
    if (cs.pv == NULL)
        state_init(&cs);
}

static void cache_flush(void)
{
    for (size_t i = 0; i < param_count; i++) {
        free(cs.pv[i].exp);
        cs.pv[i].exp = NULL;
        cs.pv[i].num_ok = 0;
    }
}

/* Daemons look parameters up by name on every message (a few dozen
 * lookups each), so the names are hashed once into an open-addressing
 * table instead of compared one by one against a table of hundreds. */
#define NAME_SLOTS 2048           /* a power of two, over twice the parameter count */
static int name_slot[NAME_SLOTS]; /* param index + 1; 0: empty */
static pthread_once_t name_once = PTHREAD_ONCE_INIT;

static unsigned name_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static void name_index_build(void)
{
    if (param_count * 2 > NAME_SLOTS)
        log_panic("parameter table (%zu) outgrew its name index", param_count);
    for (size_t i = 0; i < param_count; i++) {
        unsigned h = name_hash(param_table[i].name) & (NAME_SLOTS - 1);
        while (name_slot[h])
            h = (h + 1) & (NAME_SLOTS - 1);
        name_slot[h] = (int)i + 1;
    }
}

long conf_param_index(const char *name)
{
    pthread_once(&name_once, name_index_build);
    unsigned h = name_hash(name) & (NAME_SLOTS - 1);
    for (; name_slot[h]; h = (h + 1) & (NAME_SLOTS - 1))
        if (strcmp(param_table[name_slot[h] - 1].name, name) == 0)
            return name_slot[h] - 1;
    return -1;
}

static const char *raw_value(size_t i)
{
    return cs.pv[i].raw ? cs.pv[i].raw : param_table[i].defval;
}

static const char *value_of(size_t i, int depth);

static int is_name_char(int c)
{
    return isalnum(c) || c == '_';
}

static void expand_name(buf_t *out, const char *name, size_t n, int depth)
{
    char tmp[128];
    if (n >= sizeof(tmp))
        return;
    memcpy(tmp, name, n);
    tmp[n] = '\0';
    long i = conf_param_index(tmp);
    if (i >= 0)
        buf_puts(out, value_of((size_t)i, depth + 1));
}

/* ${name}, ${name?text}, ${name:text} (and the same with parentheses).
 * Returns the number of bytes consumed after the '$', 0 if malformed. */
static size_t expand_braced(buf_t *out, const char *p, int depth)
{
    char open = p[0], close = open == '{' ? '}' : ')';
    size_t n = 1;
    while (is_name_char((unsigned char)p[n]))
        n++;
    size_t nlen = n - 1;
    if (nlen == 0)
        return 0;
    if (p[n] == close) {
        expand_name(out, p + 1, nlen, depth);
        return n + 1;
    }
    if (p[n] != '?' && p[n] != ':')
        return 0;
    char op = p[n];
    size_t start = n + 1, level = 1, k = start;
    for (; p[k] && level; k++) {
        if (p[k] == open)
            level++;
        else if (p[k] == close)
            level--;
    }
    if (level)
        return 0;
    buf_t v = BUF_INIT;
    expand_name(&v, p + 1, nlen, depth);
    int nonempty = v.len > 0;
    buf_destroy(&v);
    if ((op == '?') == nonempty) {
        char *text = xstrndup(p + start, k - 1 - start);
        conf_expand(out, text, depth + 1);
        free(text);
    }
    return k;
}

void conf_expand(buf_t *out, const char *s, int depth)
{
    for (const char *p = s; *p; p++) {
        if (*p != '$') {
            buf_putc(out, *p);
            continue;
        }
        if (p[1] == '$') {
            buf_putc(out, '$');
            p++;
        } else if (p[1] == '{' || p[1] == '(') {
            size_t used = expand_braced(out, p + 1, depth);
            if (used == 0)
                buf_putc(out, '$');
            p += used;
        } else if (is_name_char((unsigned char)p[1])) {
            size_t n = 1;
            while (is_name_char((unsigned char)p[n]))
                n++;
            expand_name(out, p + 1, n - 1, depth);
            p += n - 1;
        } else {
            buf_putc(out, '$');
        }
    }
}

static void computed_default(size_t i, buf_t *v, int depth)
{
    const char *name = param_table[i].name;
    if (v->len)
        return;
    if (strcmp(name, "myhostname") == 0) {
        char host[256];
        if (gethostname(host, sizeof(host)) != 0)
            str_lcpy(host, "localhost", sizeof(host));
        host[sizeof(host) - 1] = '\0';
        buf_puts(v, host);
    } else if (strcmp(name, "mydomain") == 0) {
        const char *h = value_of((size_t)conf_param_index("myhostname"), depth + 1);
        const char *dot = strchr(h, '.');
        buf_puts(v, dot && dot[1] ? dot + 1 : "localdomain");
    }
}

static const char *value_of(size_t i, int depth)
{
    struct pval *p = &cs.pv[i];
    if (p->exp)
        return p->exp;
    if (p->busy || depth > EXPAND_DEPTH_MAX) {
        log_warn("parameter \"%s\": recursive $name expansion (using \"\")", param_table[i].name);
        return "";
    }
    p->busy = 1;
    buf_t v = BUF_INIT;
    conf_expand(&v, raw_value(i), depth);
    computed_default(i, &v, depth);
    p->busy = 0;
    if (p->exp == NULL)
        p->exp = buf_detach(&v);
    else
        buf_destroy(&v);
    return p->exp;
}

static size_t must_index(const char *name)
{
    long i = conf_param_index(name);
    if (i < 0)
        log_panic("lookup of undeclared parameter \"%s\"", name);
    return (size_t)i;
}

const char *conf_str(const char *name)
{
    ensure_state();
    return value_of(must_index(name), 0);
}

static int parse_ll(const char *s, long long *out)
{
    if (*s == '\0' || isspace((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

int conf_parse_time(const char *s, char default_unit, long long *out, buf_t *err)
{
    static const struct {
        char unit;
        long long mult;
    } units[] = {
        { 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 }, { 'w', 604800 },
    };
    size_t n = strlen(s);
    char unit = default_unit ? default_unit : 's';
    buf_t num = BUF_INIT;
    if (n > 0 && isalpha((unsigned char)s[n - 1])) {
        unit = (char)tolower((unsigned char)s[n - 1]);
        n--;
    }
    buf_append(&num, s, n);
    long long v = 0, mult = 0;
    for (size_t k = 0; k < sizeof(units) / sizeof(units[0]); k++)
        if (units[k].unit == unit)
            mult = units[k].mult;
    int bad = mult == 0 || n == 0 || !isdigit((unsigned char)num.data[0]) ||
              parse_ll(num.data, &v) < 0 || v > LLONG_MAX / mult;
    buf_destroy(&num);
    if (bad) {
        if (err) {
            buf_reset(err);
            buf_printf(err, "invalid time value \"%s\" (use a number with s, m, h, d or w)", s);
        }
        return -1;
    }
    *out = v * mult;
    return 0;
}

int conf_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = { "yes", "true", "1" }, *const no[] = { "no", "false", "0" };
    for (size_t k = 0; k < 3; k++) {
        if (str_ieq(s, yes[k])) {
            *out = 1;
            return 0;
        }
        if (str_ieq(s, no[k])) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

static int check_range(const struct param_def *d, long long v, const char *s, buf_t *why)
{
    if (v >= d->min && v <= d->max)
        return 0;
    const char *u = d->type == PARAM_TIME ? "s" : "";
    if (d->max == LLONG_MAX)
        buf_printf(why, "value \"%s\" out of range (must be at least %lld%s)", s, d->min, u);
    else
        buf_printf(why, "value \"%s\" out of range (must be between %lld%s and %lld%s)", s, d->min,
                   u, d->max, u);
    return -1;
}

/* Text parameters that take one of a fixed set of words. */
static int check_bare_newline(const char *s, buf_t *why)
{
    if (strcmp(s, "normalize") == 0 || strcmp(s, "reject") == 0 || strcmp(s, "no") == 0)
        return 0;
    buf_printf(why, "invalid value \"%s\" (use normalize, reject or no)", s);
    return -1;
}

static int check_facility(const char *s, buf_t *why)
{
    if (log_facility_code(s) >= 0)
        return 0;
    buf_printf(why,
               "invalid syslog facility \"%s\" (use mail, user, daemon, local0 .. "
               "local7, or another name from syslog.conf)",
               s);
    return -1;
}

/* Postfix also knows "dovecot"; saying so beats using Cyrus silently. */
static int check_sasl_type(const char *s, buf_t *why)
{
    if (strcmp(s, "cyrus") == 0)
        return 0;
    buf_printf(why, "unsupported SASL type \"%s\" (only cyrus is supported)", s);
    return -1;
}

static int check_suppression_scope(const char *s, buf_t *why)
{
    if (strcmp(s, "global") == 0 || strcmp(s, "sender_domain") == 0)
        return 0;
    buf_printf(why, "invalid value \"%s\" (use global or sender_domain)", s);
    return -1;
}

/* shaping_shared_state: empty or redis:HOST:PORT (glue/redis parses it). */
static int check_shared_state(const char *s, buf_t *why)
{
    const char *port = strrchr(s, ':');
    char *end;
    long p = port ? strtol(port + 1, &end, 10) : 0;

    if (!*s ||
        (strncmp(s, "redis:", 6) == 0 && port > s + 6 && port[1] && !*end && p > 0 && p < 65536))
        return 0;
    buf_printf(why, "invalid value \"%s\" (use redis:HOST:PORT, or nothing)", s);
    return -1;
}

static const struct {
    const char *name;
    int (*check)(const char *s, buf_t *why);
} word_params[] = {
    { "smtpd_forbid_bare_newline", check_bare_newline },
    { "syslog_facility", check_facility },
    { "smtpd_sasl_type", check_sasl_type },
    { "suppression_scope", check_suppression_scope },
    { "feedback_suppression_scope", check_suppression_scope },
    { "shaping_shared_state", check_shared_state },
};

int conf_validate_value(size_t i, const char *s, buf_t *why)
{
    const struct param_def *d = &param_table[i];
    long long v;
    int b;
    buf_reset(why);
    switch (d->type) {
    case PARAM_INT:
        if (parse_ll(s, &v) < 0) {
            buf_printf(why, "invalid number \"%s\"", s);
            return -1;
        }
        return check_range(d, v, s, why);
    case PARAM_TIME:
        if (conf_parse_time(s, d->unit, &v, why) < 0)
            return -1;
        return check_range(d, v, s, why);
    case PARAM_BOOL:
        if (conf_parse_bool(s, &b) < 0) {
            buf_printf(why, "invalid boolean value \"%s\" (use yes or no)", s);
            return -1;
        }
        return 0;
    default:
        break;
    }
    for (size_t k = 0; k < sizeof(word_params) / sizeof(word_params[0]); k++)
        if (strcmp(d->name, word_params[k].name) == 0)
            return word_params[k].check(s, why);
    return 0;
}

long long conf_int(const char *name)
{
    ensure_state();
    size_t i = must_index(name);
    const struct param_def *d = &param_table[i];
    struct pval *p = &cs.pv[i];
    const char *s = value_of(i, 0);
    if (p->num_ok && p->exp == s)
        return p->num;
    long long v = 0;
    int bad = d->type == PARAM_TIME ? conf_parse_time(s, d->unit, &v, NULL) : parse_ll(s, &v);
    if (bad < 0 || (d->type != PARAM_INT && d->type != PARAM_TIME))
        log_fatal("parameter \"%s\": invalid numeric value \"%s\"", name, s);
    if (p->exp == s) {
        p->num = v;
        p->num_ok = 1;
    }
    return v;
}

int conf_bool(const char *name)
{
    const char *s = conf_str(name);
    int b;
    if (conf_parse_bool(s, &b) < 0)
        log_fatal("parameter \"%s\": invalid boolean value \"%s\" (use yes or no)", name, s);
    return b;
}

char **conf_list(const char *name)
{
    return str_split(conf_str(name), ", \t\r\n", NULL);
}

int conf_list_has(const char *name, const char *item)
{
    char **v = conf_list(name);
    int found = 0;
    for (char **p = v; *p && !found; p++)
        found = str_ieq(*p, item);
    strv_free(v);
    return found;
}

int conf_is_set(const char *name)
{
    ensure_state();
    return cs.pv[must_index(name)].set;
}

static void set_raw(size_t i, const char *value, int line, int set)
{
    free(cs.pv[i].raw);
    cs.pv[i].raw = xstrdup(value);
    cs.pv[i].line = line;
    cs.pv[i].set = set;
    cache_flush();
}

void conf_set(const char *name, const char *value)
{
    ensure_state();
    set_raw(must_index(name), value, 0, 1);
}

/* Paths in main.cf are relative to the configuration directory. */
static void resolve_path(size_t i)
{
    static const char *const paths[] = { "queue_directory",
                                         "daemon_directory",
                                         "maillog_file",
                                         "bounce_classifier_rules",
                                         "bounce_classifier_local_rules",
                                         "shaping_rules",
                                         "event_log" };
    const char *name = param_table[i].name;
    int is_path = 0;
    for (size_t k = 0; k < sizeof(paths) / sizeof(paths[0]); k++)
        is_path |= strcmp(name, paths[k]) == 0;
    if (!is_path)
        return;
    const char *v = value_of(i, 0);
    if (*v == '\0' || *v == '/' || strcmp(v, "syslog") == 0 || strcmp(v, "-") == 0)
        return;
    buf_t abs = BUF_INIT;
    buf_printf(&abs, "%s/%s", value_of(must_index("config_directory"), 0), v);
    if (strncmp(v, "./", 2) == 0) {
        buf_reset(&abs);
        buf_printf(&abs, "%s/%s", value_of(must_index("config_directory"), 0), v + 2);
    }
    struct pval *p = &cs.pv[i];
    set_raw(i, abs.data, p->line, p->set);
    buf_destroy(&abs);
}

int conf_override(const char *name, const char *value, buf_t *err)
{
    ensure_state();
    long i = conf_param_index(name);
    if (i < 0) {
        buf_set(err, "");
        buf_printf(err, "unknown parameter \"%s\"", name);
        return -1;
    }
    struct pval old = cs.pv[i];
    free(old.exp);
    old.exp = NULL;
    cs.pv[i].raw = xstrdup(value);
    cs.pv[i].set = 1;
    cs.pv[i].line = 0;
    cs.pv[i].exp = NULL;
    cache_flush();
    buf_t why = BUF_INIT;
    if (conf_validate_value((size_t)i, value_of((size_t)i, 0), &why) < 0) {
        free(cs.pv[i].raw);
        free(cs.pv[i].exp);
        cs.pv[i] = old;
        cache_flush();
        buf_set(err, "");
        buf_printf(err, "parameter \"%s\": %s", name, why.data);
        buf_destroy(&why);
        return -1;
    }
    buf_destroy(&why);
    free(old.raw);
    resolve_path((size_t)i);
    return 0;
}

/* Validate every parameter of the current state after a load. */
static int validate_all(buf_t *err)
{
    buf_t why = BUF_INIT;
    int rc = 0;
    for (size_t i = 0; i < param_count && rc == 0; i++) {
        if (conf_validate_value(i, value_of(i, 0), &why) == 0)
            continue;
        buf_reset(err);
        if (cs.pv[i].line)
            buf_printf(err, "%s, line %d: ", cs.file, cs.pv[i].line);
        else
            buf_printf(err, "%s: ", cs.file);
        buf_printf(err, "parameter \"%s\": %s", param_table[i].name, why.data);
        rc = -1;
    }
    buf_destroy(&why);
    return rc;
}

void conf_absdir(const char *dir, buf_t *out)
{
    buf_reset(out);
    if (dir[0] != '/') {
        char cwd[PATH_MAX];
        if (getcwd(cwd, sizeof(cwd)) == NULL)
            log_fatal("cannot determine the current directory: %s", strerror(errno));
        buf_puts(out, cwd);
        if (strcmp(dir, ".") != 0) {
            buf_putc(out, '/');
            buf_puts(out, strncmp(dir, "./", 2) == 0 ? dir + 2 : dir);
        }
    } else {
        buf_puts(out, dir);
    }
    while (out->len > 1 && out->data[out->len - 1] == '/')
        buf_truncate(out, out->len - 1);
}

/* Called by the main.cf parser for each "name = value". */
void conf_file_setting(const char *name, const char *value, int line)
{
    long i = conf_param_index(name);
    if (i < 0) {
        log_warn("%s, line %d: unknown parameter \"%s\" (ignored)", cs.file, line, name);
        return;
    }
    set_raw((size_t)i, value, line, 1);
}

/* Load into a fresh state: main.cf at file, or text when not NULL. */
static int load_state(const char *absdir, char *file, const char *text, buf_t *err)
{
    struct conf_state old = cs;
    state_init(&cs);
    free(cs.file);
    cs.file = file;
    set_raw(must_index("config_directory"), absdir, 0, 0);
    int rc = text ? conf_parse_main_text(cs.file, text, err) : conf_parse_main(cs.file, err);
    if (rc == 0)
        rc = validate_all(err);
    for (size_t i = 0; rc == 0 && i < param_count; i++)
        resolve_path(i);
    if (rc < 0) {
        state_destroy(&cs);
        cs = old;
        return -1;
    }
    state_destroy(&old);
    return 0;
}

int conf_load(const char *dir, buf_t *err)
{
    buf_t abs = BUF_INIT, f = BUF_INIT;
    conf_absdir(dir, &abs);
    buf_printf(&f, "%s/main.cf", abs.data);
    int rc = load_state(abs.data, buf_detach(&f), NULL, err);
    buf_destroy(&abs);
    return rc;
}

int conf_load_text(const char *text, size_t len, const char *filename, buf_t *err)
{
    if (memchr(text, '\0', len)) {
        buf_reset(err);
        buf_printf(err, "%s: NUL byte in file", filename);
        return -1;
    }
    const char *slash = strrchr(filename, '/');
    buf_t dir = BUF_INIT, abs = BUF_INIT, t = BUF_INIT;
    if (slash)
        buf_append(&dir, filename, (size_t)(slash - filename));
    conf_absdir(slash == filename ? "/" : dir.len ? dir.data : ".", &abs);
    buf_append(&t, text, len);
    int rc = load_state(abs.data, xstrdup(filename), buf_str(&t), err);
    buf_destroy(&dir);
    buf_destroy(&abs);
    buf_destroy(&t);
    return rc;
}

void conf_print(FILE *fp, int nondefault)
{
    ensure_state();
    for (size_t i = 0; i < param_count; i++) {
        if (nondefault && !cs.pv[i].set)
            continue;
        fprintf(fp, "%s = %s\n", param_table[i].name, value_of(i, 0));
    }
}
