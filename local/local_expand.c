/* local_expand.c - a local part -> the places its mail goes, following
 * alias_maps (aliases(5) values), :include: files and self references.
 *
 * |command and /file items are honoured only from a trusted source: an
 * alias table whose .db file belongs to root (or to the agent's own user
 * when it does not run as root), or an :include: file owned likewise that
 * was itself reached from a trusted source. Anything else naming them
 * bounces (5.7.1): user data never runs commands. An alias that comes
 * back to one being expanded is a loop (5.4.6), except a direct self
 * reference ("a: a, b" delivers to the mailbox a) or a "\name" item; more
 * than local_alias_max_depth levels bounce as well. A target met twice
 * is delivered once. */
#include "local/local.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/glue/dict.h"
#include "common/mail/aliases.h"
#include "common/mail/conf.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

#define INCLUDE_MAX (1024 * 1024)
#define CHAIN_MAX   1000

static struct dict **maps;
static char **map_db; /* the .db file, whose owner decides the trust */
static size_t nmaps;

static int owner_trusted(uid_t uid)
{
    return uid == 0 || (geteuid() != 0 && uid == geteuid());
}

void local_expand_init(void)
{
    char **list = conf_list("alias_maps");
    buf_t err = BUF_INIT, db = BUF_INIT;

    for (size_t i = 0; list && list[i]; i++) {
        struct dict *d = dict_open(list[i], &err);
        if (d == NULL) {
            log_warn("alias_maps: cannot open %s: %s (build it with \"postino newaliases\")",
                     list[i], buf_str(&err));
            continue;
        }
        buf_setf(&db, "%s.db", strncmp(list[i], "hash:", 5) == 0 ? list[i] + 5 : list[i]);
        maps = xrealloc(maps, (nmaps + 1) * sizeof(*maps));
        map_db = xrealloc(map_db, (nmaps + 1) * sizeof(*map_db));
        maps[nmaps] = d;
        map_db[nmaps] = xstrdup(db.data);
        nmaps++;
    }
    strv_free(list);
    buf_destroy(&err);
    buf_destroy(&db);
}

int local_domain_is_ours(const char *domain)
{
    char **list = conf_list("mydestination");
    int ours = 0;
    for (size_t i = 0; list && list[i] && !ours; i++)
        ours = strcasecmp(list[i], domain) == 0;
    strv_free(list);
    return ours;
}

struct ctx {
    struct local_exp *e;
    const char *chain[CHAIN_MAX];
    size_t depth;
};

static void fail(struct local_exp *e, int status, const char *dsn, enum bclass cat, const char *fmt,
                 ...) __attribute__((format(printf, 5, 6)));
static void fail(struct local_exp *e, int status, const char *dsn, enum bclass cat, const char *fmt,
                 ...)
{
    va_list ap;
    if (e->failed)
        return;
    e->failed = 1;
    e->res.status = status;
    str_lcpy(e->res.dsn, dsn, sizeof(e->res.dsn));
    e->res.cat = cat;
    va_start(ap, fmt);
    vsnprintf(e->res.reason, sizeof(e->res.reason), fmt, ap);
    va_end(ap);
}

static void add(struct local_exp *e, enum local_kind k, const char *what)
{
    for (size_t i = 0; i < e->n; i++)
        if (e->t[i].kind == k && strcmp(e->t[i].what, what) == 0)
            return; /* each destination once */
    e->t = xrealloc(e->t, (e->n + 1) * sizeof(*e->t));
    e->t[e->n].kind = k;
    e->t[e->n].what = xstrdup(what);
    e->n++;
}

static void add_user(struct local_exp *e, const char *name)
{
    if (getpwnam(name) == NULL)
        fail(e, QR_BOUNCED, "5.1.1", BCLASS_BAD_MAILBOX, "unknown user: \"%s\"", name);
    else
        add(e, LT_USER, name);
}

static void expand_name(struct ctx *c, const char *name);
static void expand_list(struct ctx *c, const char *value, int trusted, const char *self);

/* An :include: file: one or more items a line, # comments. */
static void expand_include(struct ctx *c, const char *path, int trusted, const char *self)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    buf_t text = BUF_INIT, list = BUF_INIT;
    char buf[4096];
    ssize_t n;

    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        log_warn("cannot open include file %s: %s", path,
                 fd < 0 ? strerror(errno) : "not a regular file");
        fail(c->e, QR_DEFERRED, "4.3.0", BCLASS_OTHER, "cannot open include file %s", path);
        goto done;
    }
    while ((n = read(fd, buf, sizeof(buf))) > 0 && text.len < INCLUDE_MAX)
        buf_append(&text, buf, (size_t)n);
    if (n < 0) {
        fail(c->e, QR_DEFERRED, "4.3.0", BCLASS_OTHER, "cannot read include file %s", path);
        goto done;
    }
    for (char *line = text.data, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *t = str_trim(line);
        if (*t == '\0' || *t == '#')
            continue;
        if (list.len)
            buf_putc(&list, ',');
        buf_puts(&list, t);
    }
    if (list.len)
        expand_list(c, list.data, trusted && owner_trusted(st.st_uid), self);
done:
    if (fd >= 0)
        close(fd);
    buf_destroy(&text);
    buf_destroy(&list);
}

/* A source that may not name commands or files. */
static void restricted(struct ctx *c, const char *what, const char *item)
{
    log_warn("refusing %s \"%s\": the alias or include file it comes from is not owned by root",
             what, item);
    fail(c->e, QR_BOUNCED, "5.7.1", BCLASS_POLICY_RELATED,
         "mail to %s is restricted: its alias or include file is not owned by root",
         what[0] == 'c' ? "command" : "file");
}

static void expand_address(struct ctx *c, const char *item, const char *self)
{
    int escaped = item[0] == '\\';
    const char *a = item + escaped, *at = strrchr(a, '@');
    char *name;

    if (at && !local_domain_is_ours(at + 1)) {
        add(c->e, LT_REMOTE, a);
        return;
    }
    name = at ? xstrndup(a, (size_t)(at - a)) : xstrdup(a);
    for (char *p = name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (escaped || (self && strcmp(name, self) == 0)) {
        add_user(c->e, name);
    } else {
        for (size_t i = 0; i < c->depth; i++)
            if (strcmp(c->chain[i], name) == 0) {
                log_warn("alias loop: \"%s\" comes back to \"%s\"", self ? self : "", name);
                fail(c->e, QR_BOUNCED, "5.4.6", BCLASS_ROUTING_ERRORS,
                     "mail forwarding loop: alias \"%s\" expands to itself", name);
                free(name);
                return;
            }
        expand_name(c, name);
    }
    free(name);
}

static void expand_list(struct ctx *c, const char *value, int trusted, const char *self)
{
    char **items = aliases_split(value);

    for (size_t i = 0; items[i] && !c->e->failed; i++) {
        const char *it = items[i];
        if (it[0] == '|') {
            if (!trusted)
                restricted(c, "command", it);
            else
                add(c->e, LT_COMMAND, it + 1);
        } else if (it[0] == '/') {
            if (!trusted)
                restricted(c, "file", it);
            else
                add(c->e, LT_FILE, it);
        } else if (strncasecmp(it, ":include:", 9) == 0) {
            if (c->depth >= (size_t)conf_int("local_alias_max_depth"))
                fail(c->e, QR_BOUNCED, "5.4.6", BCLASS_ROUTING_ERRORS,
                     "alias expansion too deep at :include:%s", it + 9);
            else
                expand_include(c, it + 9, trusted, self);
        } else {
            expand_address(c, it, self);
        }
    }
    strv_free(items);
}

static void expand_name(struct ctx *c, const char *name)
{
    buf_t value = BUF_INIT;
    enum dict_result r = DICT_NOTFOUND;
    size_t i;

    for (i = 0; i < nmaps && r == DICT_NOTFOUND; i++)
        r = dict_lookup(maps[i], name, &value);
    if (r == DICT_ERROR) {
        fail(c->e, QR_DEFERRED, "4.3.0", BCLASS_OTHER, "alias_maps lookup of \"%s\" failed", name);
    } else if (r == DICT_NOTFOUND) {
        add_user(c->e, name);
    } else if (c->depth >= (size_t)conf_int("local_alias_max_depth") || c->depth >= CHAIN_MAX) {
        fail(c->e, QR_BOUNCED, "5.4.6", BCLASS_ROUTING_ERRORS, "alias expansion too deep at \"%s\"",
             name);
    } else {
        struct stat st; /* checked now: a rebuild may have changed it */
        int trusted = stat(map_db[i - 1], &st) == 0 && owner_trusted(st.st_uid);
        c->chain[c->depth++] = name;
        expand_list(c, value.data, trusted, name);
        c->depth--;
    }
    buf_destroy(&value);
}

void local_expand(const char *name, struct local_exp *e)
{
    struct ctx c;
    memset(e, 0, sizeof(*e));
    memset(&c, 0, sizeof(c));
    c.e = e;
    expand_name(&c, name);
}

void local_exp_destroy(struct local_exp *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->t[i].what);
    free(e->t);
    e->t = NULL;
    e->n = 0;
}
