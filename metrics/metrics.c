/* metrics.c - the metrics service: a Prometheus text endpoint (GET
 * /metrics on metrics_listen) that holds no privileges. master runs it
 * like anvil (master.cf service "metrics", socket private/metrics), as
 * mail_owner. The daemons send it counters and histogram observations as
 * records (common/mail/metric.h, fire-and-forget); at each scrape it asks
 * qmgr for the gauges (queue sizes, oldest message, deliveries in flight,
 * sites by state) and renders the catalogue.
 *
 * With metrics_listen empty the daemons send nothing and this process
 * only idles (no HTTP socket). A reload re-reads metrics_listen and moves
 * the endpoint when it changed; the counters stay (a restart of the
 * service starts them at 0, which Prometheus's rate() takes as a reset). */
#include <stdlib.h>
#include <string.h>

#include "common/mail/conf.h"
#include "common/mail/proto.h"
#include "common/mail/server.h"
#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/util/log.h"
#include "metrics/metrics.h"

static char *listening; /* metrics_listen in force ("" : off) */

static void on_accept(struct server *s, int fd, int idx)
{
    metrics_feed_accept(s->base, fd);
}

static void http_apply(struct server *s)
{
    const char *want = conf_str("metrics_listen");
    buf_t control = BUF_INIT;

    if (listening && strcmp(listening, want) == 0)
        return;
    metrics_http_stop();
    free(listening);
    listening = xstrdup(want);
    if (*want == '\0')
        return;
    server_spool_path(s, SOCK_CONTROL, &control);
    metrics_http_start(s->base, want, buf_str(&control));
    buf_destroy(&control);
}

static void post_drop(struct server *s)
{
    http_apply(s);
}

static void on_reload(struct server *s)
{
    http_apply(s);
}

static void on_stop(struct server *s)
{
    server_stop_accepting(s);
    metrics_http_stop();
    metrics_feed_close_all();
    server_exit(s);
}

int main(int argc, char **argv)
{
    static const struct server_hooks hooks = {
        .post_drop = post_drop,
        .on_accept = on_accept,
        .on_stop = on_stop,
        .on_reload = on_reload,
    };
    int rc = server_main(argc, argv, "metrics", &hooks, NULL);
    metrics_store_free();
    free(listening);
    return rc;
}
