/* bounce.c - the bounce daemon: accepts qmgr's connections on
 * private/bounce (common/util/conn: framing, the proto check, the policy
 * for a malformed request) and answers one notification request at a time
 * (bounce_notify.c does the work). Requests only touch spool files, the
 * one kind of synchronous I/O the design allows on an event loop. */
#include "bounce/bounce.h"

#include "common/util/conn.h"
#include "common/mail/proto.h"
#include "common/mail/server.h"

static enum conn_verdict on_record(struct conn *c, const attr_t *req, void *arg, const char **why)
{
    struct server *s = arg;
    attr_t reply = ATTR_INIT;
    enum conn_verdict v = bounce_notify_request(s->spool, req, &reply, why);
    if (v == CONN_OK)
        conn_send(c, &reply);
    attr_destroy(&reply);
    return v;
}

static const struct conn_ops bounce_ops = { on_record, NULL, NULL };

/* The connection lives until qmgr closes it (or is dropped). */
static void on_accept(struct server *s, int fd, int idx)
{
    static const struct conn_cfg cfg = { .peer = "qmgr", .proto = PROTO_VERSION, .serving = 1 };
    conn_new(s->base, fd, &cfg, &bounce_ops, s);
}

int main(int argc, char **argv)
{
    static const struct server_hooks hooks = { .on_accept = on_accept };
    return server_main(argc, argv, "bounce", &hooks, NULL);
}
