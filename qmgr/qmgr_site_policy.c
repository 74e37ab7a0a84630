/* qmgr_site_policy.c - the pure half of sites: the shaping_maps row
 * syntax, shaping_mx_rollup, and how MX host lists group into sites.
 *
 * A row is whitespace-separated name=value pairs (values take no spaces;
 * the retry schedule is comma-separated), e.g.
 *   max_connections=2 max_message_rate=300/h retry=5m,10m,30m,1h
 * Kept free of qmgr's state so tests/unit/qmgr/test_site.c can check it. */
#include "qmgr/qmgr_site.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"

static int parse_count(const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    long long n;

    if (*v < '0' || *v > '9')
        return -1;
    errno = 0;
    n = strtoll(v, &end, 10);
    if (errno || *end || n < lo || n > hi)
        return -1;
    *out = n;
    return 0;
}

static int parse_rate(const char *v, double *rate, char **text)
{
    if (qmgr_gcra_parse_rate(v, rate) < 0)
        return -1;
    free(*text);
    *text = *rate > 0 ? xstrdup(v) : NULL;
    return 0;
}

static int parse_retry(const char *v, struct qmgr_shaping *p, buf_t *err)
{
    size_t n = 0;
    char **items = str_split(v, ",", &n);
    int rc = 0;

    if (n == 0 || n > QMGR_SITE_MAX_RETRY) {
        buf_printf(err, "retry: 1 to %d times", QMGR_SITE_MAX_RETRY);
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        buf_t e = BUF_INIT;
        if (conf_parse_time(items[i], 's', &p->retry[i], &e) < 0 || p->retry[i] < 1) {
            buf_printf(err, "retry: bad time \"%s\"", items[i]);
            rc = -1;
        }
        buf_destroy(&e);
    }
    if (rc == 0)
        p->nretry = n;
    strv_free(items);
    return rc;
}

static int parse_time(const char *name, const char *v, long long *out, buf_t *err)
{
    buf_t e = BUF_INIT;
    int rc = conf_parse_time(v, 's', out, &e) < 0 || *out < 1 || *out > 3600 ? -1 : 0;

    if (rc < 0)
        buf_printf(err, "%s: bad time \"%s\" (1s to 1h)", name, v);
    buf_destroy(&e);
    return rc;
}

/* One name=value pair onto p. */
static int parse_pair(const char *name, const char *v, struct qmgr_shaping *p, buf_t *err)
{
    long long n;

    if (strcmp(name, "max_connections_per_source") == 0) {
        if (parse_count(v, 1, 10000, &n) < 0) {
            buf_printf(err, "%s: want a number from 1 to 10000, not \"%s\"", name, v);
            return -1;
        }
        p->max_connections_per_source = (int)n;
        return 0;
    }
    if (strcmp(name, "max_connections") == 0 || strcmp(name, "message_burst") == 0 ||
        strcmp(name, "connection_burst") == 0) {
        if (parse_count(v, 1, 10000, &n) < 0) {
            buf_printf(err, "%s: want a number from 1 to 10000, not \"%s\"", name, v);
            return -1;
        }
        if (name[0] == 'm' && name[1] == 'a')
            p->max_connections = (int)n;
        else if (name[0] == 'm')
            p->message_burst = (int)n;
        else
            p->connection_burst = (int)n;
        return 0;
    }
    if (strcmp(name, "max_deliveries_per_connection") == 0) {
        if (parse_count(v, 1, 1000000, &n) < 0) {
            buf_printf(err, "%s: want a number from 1 to 1000000, not \"%s\"", name, v);
            return -1;
        }
        p->max_deliveries_per_connection = (int)n;
        return 0;
    }
    if (strcmp(name, "max_message_rate") == 0 || strcmp(name, "max_connection_rate") == 0) {
        int msg = strcmp(name, "max_message_rate") == 0;
        if (parse_rate(v, msg ? &p->max_message_rate : &p->max_connection_rate,
                       msg ? &p->msg_rate_text : &p->conn_rate_text) < 0) {
            buf_printf(err, "%s: want N/s, N/m, N/h or N/d, not \"%s\"", name, v);
            return -1;
        }
        return 0;
    }
    if (strcmp(name, "connect_timeout") == 0)
        return parse_time(name, v, &p->connect_timeout, err);
    if (strcmp(name, "idle_timeout") == 0)
        return parse_time(name, v, &p->idle_timeout, err);
    if (strcmp(name, "retry") == 0)
        return parse_retry(v, p, err);
    buf_printf(err, "unknown setting \"%s\"", name);
    return -1;
}

int qmgr_shaping_parse(const char *row, struct qmgr_shaping *p, buf_t *err)
{
    size_t n = 0;
    char **tok = str_split(row, " \t", &n);
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < n; i++) {
        char *eq = strchr(tok[i], '=');
        if (eq == NULL || eq == tok[i] || eq[1] == '\0') {
            buf_printf(err, "\"%s\": want name=value", tok[i]);
            rc = -1;
            break;
        }
        *eq = '\0';
        rc = parse_pair(tok[i], eq + 1, p, err);
    }
    strv_free(tok);
    return rc;
}

void qmgr_shaping_copy(struct qmgr_shaping *dst, const struct qmgr_shaping *src)
{
    *dst = *src;
    dst->msg_rate_text = src->msg_rate_text ? xstrdup(src->msg_rate_text) : NULL;
    dst->conn_rate_text = src->conn_rate_text ? xstrdup(src->conn_rate_text) : NULL;
}

void qmgr_shaping_destroy(struct qmgr_shaping *p)
{
    free(p->msg_rate_text);
    free(p->conn_rate_text);
    memset(p, 0, sizeof(*p));
}

void qmgr_shaping_format(const struct qmgr_shaping *p, buf_t *out)
{
    if (p->max_connections)
        buf_printf(out, " max_connections=%d", p->max_connections);
    if (p->max_connections_per_source)
        buf_printf(out, " max_connections_per_source=%d", p->max_connections_per_source);
    if (p->max_deliveries_per_connection)
        buf_printf(out, " max_deliveries_per_connection=%d", p->max_deliveries_per_connection);
    if (p->msg_rate_text)
        buf_printf(out, " max_message_rate=%s", p->msg_rate_text);
    if (p->message_burst)
        buf_printf(out, " message_burst=%d", p->message_burst);
    if (p->conn_rate_text)
        buf_printf(out, " max_connection_rate=%s", p->conn_rate_text);
    if (p->connection_burst)
        buf_printf(out, " connection_burst=%d", p->connection_burst);
    if (p->connect_timeout)
        buf_printf(out, " connect_timeout=%llds", p->connect_timeout);
    if (p->idle_timeout)
        buf_printf(out, " idle_timeout=%llds", p->idle_timeout);
    for (size_t i = 0; i < p->nretry; i++)
        buf_printf(out, "%s%llds", i ? "," : " retry=", p->retry[i]);
    if (out->len && out->data[0] == ' ')
        buf_consume(out, 1);
}

int qmgr_rollup_parse(const char *text, struct qmgr_rollup **out, buf_t *err)
{
    size_t n = 0;
    char **items = str_split(text ? text : "", ", \t", &n);
    struct qmgr_rollup *r = xcalloc(n + 1, sizeof(*r));
    size_t k = 0;

    for (size_t i = 0; i < n; i++) {
        char *eq = strchr(items[i], '=');
        if (eq == NULL || eq == items[i] || eq[1] == '\0' || strchr(eq + 1, '=')) {
            buf_printf(err, "shaping_mx_rollup: \"%s\": want .suffix=name", items[i]);
            qmgr_rollup_free(r, k);
            strv_free(items);
            return -1;
        }
        *eq = '\0';
        buf_t s = BUF_INIT;
        if (items[i][0] != '.')
            buf_putc(&s, '.');
        buf_puts(&s, items[i]);
        r[k].suffix = str_lower(buf_detach(&s));
        r[k++].name = xstrdup(eq + 1);
    }
    strv_free(items);
    *out = r;
    return (int)k;
}

void qmgr_rollup_free(struct qmgr_rollup *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        free(r[i].suffix);
        free(r[i].name);
    }
    free(r);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A host name without a trailing dot, lower case; anything but letters,
 * digits, '.', '-' and '_' (from a hostile DNS answer) becomes '?', so a
 * site name is always one safe word in logs and requests. */
static char *host_norm(const char *h)
{
    char *s = str_lower(xstrdup(h));
    size_t n = strlen(s);

    if (n > 0 && s[n - 1] == '.')
        s[--n] = '\0';
    for (char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
            *p = '?';
    return s;
}

void qmgr_site_group(const char *const *hosts, const int *prefs, size_t n,
                     const struct qmgr_rollup *r, size_t nr, buf_t *key, buf_t *name)
{
    char **v = xcalloc(n + 1, sizeof(*v));
    size_t k = 0;
    int best = 0;

    buf_reset(key);
    buf_reset(name);
    for (size_t i = 0; i < n; i++) {
        char *h = host_norm(hosts[i]);
        int pref = prefs ? prefs[i] : 0;
        for (size_t j = 0; j < nr; j++)
            if (str_iendswith(h, r[j].suffix)) {
                buf_printf(key, "rollup:%s", r[j].name);
                buf_set(name, r[j].name);
                free(h);
                goto done;
            }
        /* The name: the first in order among the most preferred hosts
         * (equal preferences come back in random order). */
        if (k == 0 || pref < best || (pref == best && strcmp(h, buf_str(name)) < 0)) {
            buf_set(name, h);
            best = pref;
        }
        v[k++] = h;
    }
    qsort(v, k, sizeof(*v), cmp_str);
    buf_puts(key, "mx:");
    for (size_t i = 0; i < k; i++)
        if (i == 0 || strcmp(v[i], v[i - 1]) != 0)
            buf_printf(key, "%s%s", i ? "," : "", v[i]);
done:
    for (size_t i = 0; i < k; i++)
        free(v[i]);
    free(v);
}
