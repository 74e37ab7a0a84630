/* addrclass.c - Postfix's address classes over main.cf lists and tables.
 *
 * Why here: smtpd refuses unknown recipients and rewrites virtual
 * aliases at reception, qmgr routes by class; both need the same answer
 * to "which class is this domain in", with Berkeley DB tables (glue/dict)
 * in the lists. The system's users ("unix:passwd.byname") are read once,
 * before the daemon chroots or drops privileges, and kept sorted. */
#include "common/glue/addrclass.h"

#include <pwd.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/glue/dict.h"
#include "common/util/log.h"

#define PASSWD_SPEC          "unix:passwd.byname"
#define ADDRCLASS_TABLES_MAX 32

static struct {
    char *spec;
    struct dict *d;
} tables[ADDRCLASS_TABLES_MAX];
static size_t ntables;

static char **users; /* sorted user names */
static size_t nusers;
static int users_loaded;

static const char *const class_params[] = { "mydestination", "virtual_alias_domains",
                                            "virtual_mailbox_domains", "relay_domains" };

/* ---- pure helpers ---- */

int addrclass_elem_is_table(const char *elem)
{
    const char *colon = strchr(elem, ':');
    return colon != NULL && colon != elem && elem[0] != '[';
}

int addrclass_elem_match(const char *elem, const char *domain)
{
    if (elem[0] == '.')
        return str_iendswith(domain, elem) && strlen(domain) > strlen(elem);
    return str_ieq(domain, elem);
}

int addrclass_split(const char *addr, buf_t *local, buf_t *domain)
{
    const char *at = strrchr(addr, '@');
    buf_reset(local);
    buf_reset(domain);
    if (at == NULL)
        return -1;
    buf_append(local, addr, (size_t)(at - addr));
    buf_puts(domain, at + 1);
    return 0;
}

/* ---- tables and users ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void addrclass_passwd_load(void)
{
    struct passwd *pw;
    size_t cap = 0;

    for (size_t i = 0; i < nusers; i++)
        free(users[i]);
    nusers = 0;
    setpwent();
    while ((pw = getpwent()) != NULL) {
        users = xgrow(users, &cap, nusers + 1, sizeof(*users));
        users[nusers] = xstrdup(pw->pw_name);
        str_lower(users[nusers]);
        nusers++;
    }
    endpwent();
    if (nusers)
        qsort(users, nusers, sizeof(*users), cmp_str);
    users_loaded = 1;
}

static int user_exists(const char *name)
{
    if (!users_loaded)
        addrclass_passwd_load();
    return nusers && bsearch(&name, users, nusers, sizeof(*users), cmp_str) != NULL;
}

void addrclass_done(void)
{
    for (size_t i = 0; i < ntables; i++) {
        dict_close(tables[i].d);
        free(tables[i].spec);
    }
    ntables = 0;
    for (size_t i = 0; i < nusers; i++)
        free(users[i]);
    free(users);
    users = NULL;
    nusers = 0;
    users_loaded = 0;
}

static struct dict *table(const char *spec)
{
    buf_t err = BUF_INIT;

    for (size_t i = 0; i < ntables; i++)
        if (strcmp(tables[i].spec, spec) == 0)
            return tables[i].d;
    struct dict *d = dict_open(spec, &err);
    if (d == NULL) {
        log_warn("%s: table lookup problem: %s", spec, buf_str(&err));
    } else if (ntables == ADDRCLASS_TABLES_MAX) {
        log_warn("%s: more than %d address class tables", spec, ADDRCLASS_TABLES_MAX);
        dict_close(d);
        d = NULL;
    } else {
        tables[ntables].spec = xstrdup(spec);
        tables[ntables++].d = d;
    }
    buf_destroy(&err);
    return d;
}

/* Look key up in one table element; the users table answers local
 * parts only. */
static enum dict_result lookup_elem(const char *spec, const char *key, buf_t *value)
{
    buf_reset(value);
    if (strcmp(spec, PASSWD_SPEC) == 0) {
        if (strchr(key, '@') != NULL)
            return DICT_NOTFOUND;
        buf_t low = BUF_INIT;
        buf_puts(&low, key);
        if (low.len)
            str_lower(low.data);
        int found = user_exists(buf_str(&low));
        buf_destroy(&low);
        return found ? DICT_FOUND : DICT_NOTFOUND;
    }
    struct dict *d = table(spec);
    return d ? dict_lookup(d, key, value) : DICT_ERROR;
}

/* First table of list parameter param holding key. A table error is
 * remembered in *error and the search goes on (another table may know). */
static int list_lookup(char **list, const char *key, buf_t *value, int *error)
{
    for (size_t i = 0; list[i]; i++) {
        enum dict_result r = lookup_elem(list[i], key, value);
        if (r == DICT_FOUND)
            return 1;
        if (r == DICT_ERROR)
            *error = 1;
    }
    return 0;
}

/* ---- classes ---- */

int addrclass_validate(buf_t *err)
{
    size_t n = sizeof(class_params) / sizeof(class_params[0]);
    int rc = 0;

    for (size_t a = 0; a < n && rc == 0; a++) {
        char **la = conf_list(class_params[a]);
        for (size_t b = a + 1; b < n && rc == 0; b++) {
            char **lb = conf_list(class_params[b]);
            for (size_t i = 0; la[i] && rc == 0; i++) {
                if (addrclass_elem_is_table(la[i]))
                    continue;
                for (size_t j = 0; lb[j] && rc == 0; j++) {
                    if (!addrclass_elem_is_table(lb[j]) && str_ieq(la[i], lb[j])) {
                        buf_reset(err);
                        buf_printf(err, "do not list domain %s in BOTH %s and %s", la[i],
                                   class_params[a], class_params[b]);
                        rc = -1;
                    }
                }
            }
            strv_free(lb);
        }
        strv_free(la);
    }
    return rc;
}

/* 1 in the list, 0 not, -1 table error. */
static int domain_in(const char *param, const char *domain)
{
    char **list = conf_list(param);
    buf_t value = BUF_INIT;
    int found = 0;

    for (size_t i = 0; list[i] && found == 0; i++) {
        if (!addrclass_elem_is_table(list[i])) {
            found = addrclass_elem_match(list[i], domain);
            continue;
        }
        buf_t low = BUF_INIT;
        buf_puts(&low, domain);
        if (low.len)
            str_lower(low.data);
        enum dict_result r = lookup_elem(list[i], buf_str(&low), &value);
        buf_destroy(&low);
        found = r == DICT_FOUND ? 1 : r == DICT_ERROR ? -1 : 0;
    }
    strv_free(list);
    buf_destroy(&value);
    return found;
}

enum addrclass addrclass_of(const char *domain)
{
    static const enum addrclass classes[] = { ADDRCLASS_LOCAL, ADDRCLASS_VIRTUAL_ALIAS,
                                              ADDRCLASS_VIRTUAL_MAILBOX, ADDRCLASS_RELAY };

    if (domain == NULL || *domain == '\0')
        return ADDRCLASS_DEFAULT;
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++) {
        int r = domain_in(class_params[i], domain);
        if (r < 0)
            return ADDRCLASS_ERROR;
        if (r > 0)
            return classes[i];
    }
    return ADDRCLASS_DEFAULT;
}

const char *addrclass_transport_param(enum addrclass c)
{
    switch (c) {
    case ADDRCLASS_LOCAL:
        return "local_transport";
    case ADDRCLASS_VIRTUAL_MAILBOX:
        return "virtual_transport";
    case ADDRCLASS_RELAY:
        return "relay_transport";
    case ADDRCLASS_DEFAULT:
        return "default_transport";
    default:
        return NULL;
    }
}

/* Keys for addr in Postfix's order: "user@domain", "user" (when
 * with_local), "@domain". Returns how many were set in keys[3]. */
static size_t addr_keys(const char *addr, int with_local, buf_t keys[3])
{
    buf_t local = BUF_INIT, domain = BUF_INIT;
    size_t n = 0;

    buf_set(&keys[n++], addr);
    if (addrclass_split(addr, &local, &domain) == 0) {
        if (with_local && local.len)
            buf_set(&keys[n++], buf_str(&local));
        if (domain.len) {
            buf_set(&keys[n], "@");
            buf_puts(&keys[n++], buf_str(&domain));
        }
    }
    buf_destroy(&local);
    buf_destroy(&domain);
    return n;
}

/* Found addr under any of its keys in the tables of param? 1, 0, or -1
 * (not found, some table failed). */
static int maps_find(const char *param, const char *addr, int with_local, buf_t *value)
{
    char **list = conf_list(param);
    buf_t keys[3] = { BUF_INIT, BUF_INIT, BUF_INIT };
    size_t n = addr_keys(addr, with_local, keys);
    int error = 0, found = 0;

    for (size_t k = 0; k < n && !found; k++)
        found = list_lookup(list, buf_str(&keys[k]), value, &error);
    for (size_t k = 0; k < 3; k++)
        buf_destroy(&keys[k]);
    strv_free(list);
    return found ? 1 : error ? -1 : 0;
}

static int list_empty(const char *param)
{
    char **list = conf_list(param);
    int empty = list[0] == NULL;
    strv_free(list);
    return empty;
}

static void unknown_reply(buf_t *reply, const char *code_param, const char *addr,
                          const char *table_name)
{
    long long code = conf_int(code_param);
    buf_reset(reply);
    buf_printf(reply, "%lld %c.1.1 <%s>: Recipient address rejected: User unknown in %s", code,
               code >= 500 ? '5' : '4', addr, table_name);
}

enum addrclass_known addrclass_rcpt_known(const char *addr, buf_t *reply)
{
    buf_t local = BUF_INIT, domain = BUF_INIT, value = BUF_INIT;
    enum addrclass_known rc = ADDRCLASS_KNOWN;
    const char *maps = NULL, *code = NULL, *name = NULL;
    int found = 0;

    addrclass_split(addr, &local, &domain);
    enum addrclass c = addrclass_of(buf_str(&domain));
    if (c == ADDRCLASS_ERROR || c == ADDRCLASS_DEFAULT) {
        rc = c == ADDRCLASS_DEFAULT ? ADDRCLASS_KNOWN : ADDRCLASS_TEMPFAIL;
        goto done;
    }
    found = maps_find("virtual_alias_maps", addr, c == ADDRCLASS_LOCAL, &value);
    if (found == 0) {
        switch (c) {
        case ADDRCLASS_LOCAL:
            maps = "local_recipient_maps", code = "unknown_local_recipient_reject_code",
            name = "local recipient table";
            break;
        case ADDRCLASS_VIRTUAL_ALIAS:
            code = "unknown_virtual_alias_reject_code", name = "virtual alias table";
            break;
        case ADDRCLASS_VIRTUAL_MAILBOX:
            maps = "virtual_mailbox_maps", code = "unknown_virtual_mailbox_reject_code",
            name = "virtual mailbox table";
            break;
        default:
            maps = "relay_recipient_maps", code = "unknown_relay_recipient_reject_code",
            name = "relay recipient table";
            break;
        }
        /* An empty recipient table means "any user" (not for aliases). */
        if (maps != NULL && list_empty(maps))
            found = 1;
        else if (maps != NULL)
            found = maps_find(maps, addr, c == ADDRCLASS_LOCAL, &value);
    }
    if (found > 0) {
        rc = ADDRCLASS_KNOWN;
    } else if (found < 0) {
        rc = ADDRCLASS_TEMPFAIL;
    } else {
        unknown_reply(reply, code, addr, name);
        rc = ADDRCLASS_UNKNOWN;
    }
done:
    if (rc == ADDRCLASS_TEMPFAIL) {
        buf_reset(reply);
        buf_printf(reply, "451 4.3.0 <%s>: Temporary lookup failure", addr);
    }
    buf_destroy(&local);
    buf_destroy(&domain);
    buf_destroy(&value);
    return rc;
}

/* ---- virtual alias expansion ---- */

struct expansion {
    char **out;
    size_t n, cap;
    long long depth_limit, count_limit;
    buf_t *err;
    int failed;
};

static int strv_has(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (str_ieq(v[i], s))
            return 1;
    return 0;
}

static void expansion_add(struct expansion *x, const char *addr)
{
    if (strv_has(x->out, x->n, addr))
        return;
    if ((long long)x->n >= x->count_limit) {
        if (!x->failed)
            buf_printf(x->err,
                       "virtual alias expansion of more than %lld addresses "
                       "(virtual_alias_expansion_limit)",
                       x->count_limit);
        x->failed = 1;
        return;
    }
    x->out = xgrow(x->out, &x->cap, x->n + 2, sizeof(*x->out));
    x->out[x->n++] = xstrdup(addr);
    x->out[x->n] = NULL;
}

/* One alias value item as an address: without a domain it gets myorigin. */
static void item_addr(const char *item, buf_t *out)
{
    buf_set(out, item);
    if (strchr(item, '@') == NULL) {
        buf_putc(out, '@');
        buf_puts(out, conf_str("myorigin"));
    }
}

/* Expand addr whose ancestors (the chain of aliases leading to it) are
 * chain[0..depth). 1 expanded, 0 not an alias, -1 failed. */
static int expand_rec(struct expansion *x, const char *addr, char **chain, size_t depth)
{
    buf_t value = BUF_INIT, item = BUF_INIT, domain = BUF_INIT, local = BUF_INIT;
    int rc;

    if ((long long)depth > x->depth_limit) {
        buf_printf(x->err,
                   "virtual alias expansion of <%s> nested deeper than %lld "
                   "(virtual_alias_recursion_limit)",
                   chain[0], x->depth_limit);
        x->failed = 1;
        return -1;
    }
    addrclass_split(addr, &local, &domain);
    enum addrclass c = addrclass_of(buf_str(&domain));
    rc = c == ADDRCLASS_ERROR ? -1
                              : maps_find("virtual_alias_maps", addr, c == ADDRCLASS_LOCAL, &value);
    if (rc < 0) {
        buf_printf(x->err, "virtual_alias_maps: temporary lookup failure for <%s>", addr);
        x->failed = 1;
    } else if (rc == 0) {
        expansion_add(x, addr);
    } else {
        char **items = str_split(buf_str(&value), ", \t", NULL);
        chain[depth] = (char *)addr;
        for (size_t i = 0; items[i] && !x->failed; i++) {
            item_addr(items[i], &item);
            /* Itself or an alias it came from: a loop, kept as is. */
            if (strv_has(chain, depth + 1, buf_str(&item)))
                expansion_add(x, buf_str(&item));
            else
                expand_rec(x, buf_str(&item), chain, depth + 1);
        }
        strv_free(items);
    }
    buf_destroy(&value);
    buf_destroy(&item);
    buf_destroy(&domain);
    buf_destroy(&local);
    return x->failed ? -1 : rc;
}

enum addrclass_expand addrclass_expand(const char *addr, char ***out, buf_t *err)
{
    struct expansion x = { 0 };
    x.depth_limit = conf_int("virtual_alias_recursion_limit");
    x.count_limit = conf_int("virtual_alias_expansion_limit");
    x.err = err;
    *out = NULL;
    if (list_empty("virtual_alias_maps"))
        return ADDRCLASS_EXPAND_NONE;
    char **chain = xcalloc((size_t)x.depth_limit + 2, sizeof(*chain));
    int rc = expand_rec(&x, addr, chain, 0);
    free(chain);
    if (rc <= 0 || x.failed) {
        for (size_t i = 0; i < x.n; i++)
            free(x.out[i]);
        free(x.out);
        return rc == 0 && !x.failed ? ADDRCLASS_EXPAND_NONE : ADDRCLASS_EXPAND_TEMPFAIL;
    }
    *out = x.out;
    return ADDRCLASS_EXPAND_DONE;
}
