/* anvil_serve.c - anvil's end of each smtpd's connection: requests in,
 * replies out, over common/util/conn (framing, the proto check, the
 * close after the last reply, a peer that does not read its replies and
 * the one policy for a malformed record all live there).
 *
 * Each connection is an owner in the table: the concurrent connections an
 * smtpd reported go when its connection does (that smtpd is gone, and so
 * are its clients). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/queue.h>

#include "anvil/anvil.h"
#include "anvil/anvil_rate.h"
#include "common/mail/proto.h"
#include "common/util/alloc.h"
#include "common/util/conn.h"
#include "common/util/log.h"

/* A peer with this much unread output is not reading its replies. */
#define ANVIL_OUTPUT_MAX (1024 * 1024)

struct anvil_peer {
    LIST_ENTRY(anvil_peer) link;
    struct conn *conn;
    struct anvil_table *table;
    unsigned long owner;
};

static LIST_HEAD(, anvil_peer) peers = LIST_HEAD_INITIALIZER(peers);
static unsigned long next_owner = 1;

static enum conn_verdict on_record(struct conn *c, const attr_t *req, void *arg, const char **why)
{
    struct anvil_peer *p = arg;
    attr_t reply = ATTR_INIT;
    enum anvil_req_result r =
        anvil_table_request(p->table, p->owner, req, &reply, anvil_now_ms(), why);
    if (r == ANVIL_REQ_REFUSED)
        log_warn("refused request from %s: %s", conn_peer(c), *why);
    if (r != ANVIL_REQ_MALFORMED)
        conn_send(c, &reply);
    attr_destroy(&reply);
    return r == ANVIL_REQ_MALFORMED ? CONN_DROP : CONN_OK;
}

static void peer_free(struct anvil_peer *p)
{
    long n = anvil_table_release(p->table, p->owner);
    if (n > 0)
        log_debug("client connection %lu closed: released %ld connection%s", p->owner, n,
                  n == 1 ? "" : "s");
    LIST_REMOVE(p, link);
    free(p);
}

static void on_close(struct conn *c, const char *why, void *arg)
{
    peer_free(arg);
}

static const struct conn_ops peer_ops = {
    .on_record = on_record,
    .on_close = on_close,
};

void anvil_serve_accept(struct event_base *base, int fd, struct anvil_table *t)
{
    struct anvil_peer *p = xcalloc(1, sizeof(*p));
    char name[48];
    p->owner = next_owner++;
    p->table = t;
    snprintf(name, sizeof(name), "client connection %lu", p->owner);
    struct conn_cfg cfg = {
        .peer = name,
        .proto = PROTO_VERSION,
        .serving = 1,
        .output_max = ANVIL_OUTPUT_MAX,
    };
    LIST_INSERT_HEAD(&peers, p, link);
    p->conn = conn_new(base, fd, &cfg, &peer_ops, p);
}

void anvil_serve_close_all(void)
{
    struct anvil_peer *p;
    while ((p = LIST_FIRST(&peers)) != NULL) {
        conn_free(p->conn); /* no on_close */
        peer_free(p);
    }
}
