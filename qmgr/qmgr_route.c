/* qmgr_route.c - recipient -> transport + nexthop.
 *
 * transport_maps tables are tried in order with the domain, then its
 * parents as ".parent" keys; a value is "transport:nexthop". Without a
 * match: the transport of the domain's address class (local_transport,
 * virtual_transport, relay_transport, default_transport; see
 * common/glue/addrclass), to relayhost when set (default and relay
 * classes without a nexthop of their own), else the recipient's domain.
 * Domains in feedback_domains go to transport "feedback" before any of
 * that (the feedback agent reads them; they are never relayed). */
#include "qmgr/qmgr.h"

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/glue/dict.h"
#include "common/glue/addrclass.h"
#include "common/mail/feedback_dom.h"
#include "common/util/log.h"
#include "qmgr/qmgr_route.h"
#include <ctype.h>
#include <string.h>

static struct dict **route_maps;
static size_t route_nmaps;

void qmgr_route_init(void)
{
    char **list = conf_list("transport_maps");
    buf_t err = BUF_INIT;

    for (size_t i = 0; list && list[i]; i++) {
        struct dict *d = dict_open(list[i], &err);
        if (d == NULL)
            log_fatal("transport_maps: cannot open %s: %s (build it with \"postino map\")", list[i],
                      buf_str(&err));
        route_maps = xrealloc(route_maps, (route_nmaps + 1) * sizeof(*route_maps));
        route_maps[route_nmaps++] = d;
    }
    strv_free(list);
    if (addrclass_validate(&err) < 0)
        log_fatal("%s", buf_str(&err));
    buf_destroy(&err);
}

void qmgr_route_close(void)
{
    for (size_t i = 0; i < route_nmaps; i++)
        dict_close(route_maps[i]);
    free(route_maps);
    route_maps = NULL;
    route_nmaps = 0;
    addrclass_done();
}

/* First transport_maps value for domain or a parent; 1 found. */
static int route_lookup(const char *domain, buf_t *value)
{
    buf_t key = BUF_INIT;
    int found = 0;

    for (size_t i = 0; i < route_nmaps && !found; i++) {
        size_t state = 0;
        while (!found && qmgr_route_next_key(domain, &state, &key)) {
            int r = dict_lookup(route_maps[i], buf_str(&key), value);
            if (r < 0)
                log_warn("transport_maps: lookup of \"%s\" failed", buf_str(&key));
            found = r > 0;
        }
    }
    buf_destroy(&key);
    return found;
}

/* No transport_maps entry: the transport of the domain's address class
 * (local_transport, virtual_transport, relay_transport,
 * default_transport). nexthop is left empty when the value names none
 * and relayhost or the domain applies (default and relay classes; the
 * other transports get the domain). A virtual alias domain address that
 * survived expansion has no mailbox: transport "error", as Postfix. */
static void route_class(const char *domain, buf_t *transport, buf_t *nexthop)
{
    enum addrclass c = addrclass_of(domain);

    if (c == ADDRCLASS_ERROR) {
        log_warn("%s: address class lookup failed; using default_transport", domain);
        c = ADDRCLASS_DEFAULT;
    }
    if (c == ADDRCLASS_VIRTUAL_ALIAS) {
        buf_set(transport, "error");
        buf_set(nexthop, "5.1.1 User unknown in virtual alias table");
        return;
    }
    const char *param = addrclass_transport_param(c);
    if (qmgr_route_split(conf_str(param), "", transport, nexthop) < 0) {
        log_warn("%s: bad value \"%s\"; using smtp", param, conf_str(param));
        buf_set(transport, "smtp");
        buf_reset(nexthop);
    }
    if (nexthop->len == 0 && c != ADDRCLASS_DEFAULT && c != ADDRCLASS_RELAY)
        buf_set(nexthop, domain);
}

void qmgr_route_rcpt(const char *addr, buf_t *transport, buf_t *nexthop)
{
    buf_t domain = BUF_INIT, value = BUF_INIT;
    const char *relay = conf_str("relayhost");

    qmgr_route_domain(addr, &domain);
    if (domain.len == 0)
        buf_set(&domain, conf_str("myhostname"));
    /* Bounces and complaints to our VERP domains: the feedback agent. */
    if (feedback_dom_match(buf_str(&domain))) {
        buf_set(transport, "feedback");
        buf_set(nexthop, buf_str(&domain));
        goto done;
    }
    if (domain.len > 0 && route_lookup(buf_str(&domain), &value)) {
        if (qmgr_route_split(buf_str(&value), buf_str(&domain), transport, nexthop) == 0)
            goto done;
        log_warn("transport_maps: bad value \"%s\" for %s; using the default route",
                 buf_str(&value), buf_str(&domain));
    }
    route_class(buf_str(&domain), transport, nexthop);
    if (nexthop->len == 0)
        buf_set(nexthop, relay && *relay ? relay : buf_str(&domain));
done:
    buf_destroy(&domain);
    buf_destroy(&value);
}

/* ---- pure helpers: transport_maps values, lookup keys, back-off ---- */

int qmgr_route_transport_valid(const char *t)
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

int qmgr_route_split(const char *value, const char *domain, buf_t *transport, buf_t *nexthop)
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
    return qmgr_route_transport_valid(buf_str(transport)) ? 0 : -1;
}

void qmgr_route_domain(const char *addr, buf_t *out)
{
    const char *at = strrchr(addr, '@');

    buf_reset(out);
    if (at == NULL)
        return;
    buf_puts(out, at + 1);
    if (out->len > 0)
        str_lower(out->data);
}

int qmgr_route_next_key(const char *domain, size_t *state, buf_t *key)
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

long long qmgr_route_backoff(long long minimal, long long maximal, int attempts)
{
    long long b = minimal;

    if (attempts < 1)
        attempts = 1;
    for (int i = 1; i < attempts && b < maximal; i++)
        b *= 2;
    return b > maximal ? maximal : b;
}

void qmgr_route_rebuild_retry(const struct qenv *env, long long minimal, long long maximal,
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
        *next = last + qmgr_route_backoff(minimal, maximal, *attempts);
}
