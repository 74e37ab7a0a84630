/* route.c - pure helpers for qmgr's routing and retry arithmetic (route.h). */
#include "common/route.h"

#include <ctype.h>
#include <string.h>

int route_transport_valid(const char *t)
{
    size_t n = strlen(t);

    if (n == 0 || n > 32)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (!(islower(c) || isdigit(c) || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

int route_split(const char *value, const char *domain, buf_t *transport, buf_t *nexthop)
{
    const char *colon = strchr(value, ':');

    buf_reset(transport);
    buf_reset(nexthop);
    if (colon == NULL) {
        buf_puts(transport, value);
    } else {
        buf_append(transport, value, (size_t)(colon - value));
        buf_puts(nexthop, colon + 1);
    }
    if (transport->len == 0)
        buf_set(transport, "smtp");
    str_lower(transport->data);
    if (nexthop->len == 0)
        buf_set(nexthop, domain);
    return route_transport_valid(buf_str(transport)) ? 0 : -1;
}

void route_domain(const char *addr, buf_t *out)
{
    const char *at = strrchr(addr, '@');

    buf_reset(out);
    if (at == NULL)
        return;
    buf_puts(out, at + 1);
    if (out->len > 0)
        str_lower(out->data);
}

int route_next_key(const char *domain, size_t *state, buf_t *key)
{
    size_t pos = *state;
    size_t len = strlen(domain);

    if (pos > len || len == 0)
        return 0;
    buf_reset(key);
    if (pos == 0) {
        buf_puts(key, domain);
    } else {
        buf_puts(key, domain + pos - 1); /* the '.' before the parent */
    }
    /* Advance to just past the next '.' at or after pos. */
    const char *dot = strchr(domain + pos, '.');
    *state = dot ? (size_t)(dot - domain) + 1 : len + 1;
    return 1;
}

long long route_backoff(long long minimal, long long maximal, int attempts)
{
    long long b = minimal;

    if (attempts < 1)
        attempts = 1;
    for (int i = 1; i < attempts && b < maximal; i++)
        b *= 2;
    return b > maximal ? maximal : b;
}

void route_rebuild_retry(const struct qenv *env, long long minimal, long long maximal,
                         int *attempts, long long *next, const char **reason)
{
    long long last = 0;

    *attempts = 0;
    *next = 0;
    *reason = NULL;
    for (size_t i = 0; i < env->nrcpt; i++) {
        const struct qrcpt *r = &env->rcpt[i];
        if (r->status == QR_SENT || r->status == QR_BOUNCED)
            continue;
        if (r->deferrals > *attempts)
            *attempts = r->deferrals;
        if (r->status == QR_DEFERRED && r->when >= last) {
            last = r->when;
            *reason = r->reason;
        }
    }
    if (*attempts > 0)
        *next = last + route_backoff(minimal, maximal, *attempts);
}
