/* metrics_feed.c - the daemons' connections on private/metrics: records
 * in (request=add, see common/mail/metric.h), nothing out. A record the
 * catalogue does not allow is malformed (a sender with another catalogue
 * is a bug): conn's one policy drops that connection; the sender
 * reconnects and goes on. */
#include "metrics/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "common/mail/proto.h"
#include "common/util/alloc.h"
#include "common/util/conn.h"
#include "common/util/log.h"

struct feed {
    LIST_ENTRY(feed) link;
    struct conn *conn;
};

static LIST_HEAD(, feed) feeds = LIST_HEAD_INITIALIZER(feeds);
static unsigned long next_feed = 1;

static enum conn_verdict on_record(struct conn *c, const attr_t *rec, void *arg, const char **why)
{
    const char *req = attr_get(rec, "request");

    if (req == NULL || strcmp(req, "add") != 0) {
        *why = "not request=add";
        return CONN_DROP;
    }
    return metrics_store_add(rec, why) == METRICS_REFUSED ? CONN_DROP : CONN_OK;
}

static void on_close(struct conn *c, const char *why, void *arg)
{
    struct feed *f = arg;

    LIST_REMOVE(f, link);
    free(f);
}

void metrics_feed_accept(struct event_base *base, int fd)
{
    static const struct conn_ops ops = { .on_record = on_record, .on_close = on_close };
    struct feed *f = xcalloc(1, sizeof(*f));
    char name[48];

    snprintf(name, sizeof(name), "metrics client %lu", next_feed++);
    struct conn_cfg cfg = {
        .peer = name, .proto = PROTO_VERSION, .serving = 1, .output_max = 4096
    };
    LIST_INSERT_HEAD(&feeds, f, link);
    f->conn = conn_new(base, fd, &cfg, &ops, f);
}

void metrics_feed_close_all(void)
{
    struct feed *f;

    while ((f = LIST_FIRST(&feeds)) != NULL) {
        conn_free(f->conn); /* no on_close */
        LIST_REMOVE(f, link);
        free(f);
    }
}
