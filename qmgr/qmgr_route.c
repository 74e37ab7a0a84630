/* qmgr_route.c - recipient -> transport + nexthop.
 *
 * transport_maps tables are tried in order with the domain, then its
 * parents as ".parent" keys; a value is "transport:nexthop". Without a
 * match: relayhost when set, else the recipient's domain, over smtp. */
#include "qmgr/qmgr.h"

#include "common/alloc.h"
#include "common/conf.h"
#include "common/dict.h"
#include "common/log.h"
#include "common/route.h"

static struct dict **route_maps;
static size_t route_nmaps;

void route_init(void)
{
    char **list = conf_list("transport_maps");
    buf_t err = BUF_INIT;

    for (size_t i = 0; list && list[i]; i++) {
        struct dict *d = dict_open(list[i], &err);
        if (d == NULL)
            log_fatal("transport_maps: cannot open %s: %s (build it with \"postino map\")",
                      list[i], buf_str(&err));
        route_maps = xrealloc(route_maps, (route_nmaps + 1) * sizeof(*route_maps));
        route_maps[route_nmaps++] = d;
    }
    strv_free(list);
    buf_free(&err);
}

void route_close(void)
{
    for (size_t i = 0; i < route_nmaps; i++)
        dict_close(route_maps[i]);
    free(route_maps);
    route_maps = NULL;
    route_nmaps = 0;
}

/* First transport_maps value for domain or a parent; 1 found. */
static int route_lookup(const char *domain, buf_t *value)
{
    buf_t key = BUF_INIT;
    int found = 0;

    for (size_t i = 0; i < route_nmaps && !found; i++) {
        size_t state = 0;
        while (!found && route_next_key(domain, &state, &key)) {
            int r = dict_lookup(route_maps[i], buf_str(&key), value);
            if (r < 0)
                log_warn("transport_maps: lookup of \"%s\" failed", buf_str(&key));
            found = r > 0;
        }
    }
    buf_free(&key);
    return found;
}

void route_rcpt(const char *addr, buf_t *transport, buf_t *nexthop)
{
    buf_t domain = BUF_INIT, value = BUF_INIT;
    const char *relay = conf_str("relayhost");

    route_domain(addr, &domain);
    if (domain.len == 0)
        buf_set(&domain, conf_str("myhostname"));
    if (domain.len > 0 && route_lookup(buf_str(&domain), &value)) {
        if (route_split(buf_str(&value), buf_str(&domain), transport, nexthop) == 0)
            goto done;
        log_warn("transport_maps: bad value \"%s\" for %s; using the default route",
                 buf_str(&value), buf_str(&domain));
    }
    buf_set(transport, "smtp");
    buf_set(nexthop, relay && *relay ? relay : buf_str(&domain));
done:
    buf_free(&domain);
    buf_free(&value);
}
