/* aliases.c - the aliases(5) reader (aliases.h). */
#include "common/mail/aliases.h"

#include <stdlib.h>
#include <string.h>

#include "common/mail/conf.h"
#include "common/util/alloc.h"

/* "name: value" (name possibly quoted): -1 without a colon. */
static int split_entry(char *line, buf_t *name, buf_t *value)
{
    char *p = line, *colon;
    buf_reset(name);
    buf_reset(value);
    if (*p == '"') {
        char *q = strchr(p + 1, '"');
        if (q == NULL)
            return -1;
        buf_append(name, p + 1, (size_t)(q - p - 1));
        colon = q + 1;
        while (*colon == ' ' || *colon == '\t')
            colon++;
        if (*colon != ':')
            return -1;
    } else {
        if ((colon = strchr(p, ':')) == NULL || colon == p)
            return -1;
        buf_append(name, p, (size_t)(colon - p));
        str_trim(name->data);
        name->len = strlen(name->data);
        if (name->len == 0 || strpbrk(name->data, " \t"))
            return -1;
    }
    buf_puts(value, colon + 1);
    return 0;
}

/* The entry collected so far: -1 (err) when it has no value. */
static int flush(buf_t *name, buf_t *value, int (*fn)(const char *, const char *, void *),
                 void *arg, const char *src, buf_t *err)
{
    int rc;
    if (name->len == 0)
        return 0;
    buf_putc(value, '\0'); /* a string even when empty */
    value->len--;
    char *v = str_trim(value->data);
    if (*v == '\0') {
        buf_setf(err, "%s: entry \"%s\" has no value", src, name->data);
        return -1;
    }
    rc = fn(name->data, v, arg);
    buf_reset(name);
    buf_reset(value);
    return rc;
}

int aliases_parse(FILE *fp, const char *src,
                  int (*fn)(const char *name, const char *value, void *arg), void *arg, buf_t *err)
{
    buf_t name = BUF_INIT, value = BUF_INIT;
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    ssize_t n;
    int rc = 0;

    while (rc == 0 && (n = getline(&line, &cap, fp)) >= 0) {
        lineno++;
        if (memchr(line, '\0', (size_t)n)) {
            buf_setf(err, "%s, line %ld: NUL byte in line", src, lineno);
            rc = -1;
            break;
        }
        if (line[0] == '#')
            continue;
        if (line[0] == ' ' || line[0] == '\t') {
            char *t = str_trim(line);
            if (*t == '\0' || *t == '#')
                continue;
            if (name.len == 0) {
                buf_setf(err, "%s, line %ld: continuation line without an entry", src, lineno);
                rc = -1;
                break;
            }
            buf_putc(&value, ' ');
            buf_puts(&value, t);
            continue;
        }
        if ((rc = flush(&name, &value, fn, arg, src, err)) != 0)
            break;
        char *t = str_trim(line);
        if (*t == '\0')
            continue;
        if (split_entry(t, &name, &value) < 0) {
            buf_setf(err, "%s, line %ld: expected \"name: value\"", src, lineno);
            rc = -1;
            break;
        }
    }
    if (rc == 0)
        rc = flush(&name, &value, fn, arg, src, err);
    free(line);
    buf_destroy(&name);
    buf_destroy(&value);
    return rc;
}

char **aliases_split(const char *value)
{
    char **v = xcalloc(1, sizeof(*v));
    size_t n = 0;
    const char *p = value;

    while (*p) {
        const char *s = p;
        int quoted = 0;
        while (*p && (quoted || *p != ',')) {
            if (*p == '"')
                quoted = !quoted;
            p++;
        }
        char *item = xstrndup(s, (size_t)(p - s));
        char *t = str_trim(item);
        size_t len = strlen(t);
        if (len >= 2 && t[0] == '"' && t[len - 1] == '"') {
            t[len - 1] = '\0';
            t++;
        }
        if (*t) {
            v = xrealloc(v, (n + 2) * sizeof(*v));
            v[n++] = xstrdup(t);
            v[n] = NULL;
        }
        free(item);
        if (*p == ',')
            p++;
    }
    return v;
}
