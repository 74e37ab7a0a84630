/* qmgr.c - the queue manager: main, server hooks, the 1-second timer, and
 * the notification listener (private/qmgr: request=new from smtpd/bounce).
 *
 * qmgr is one process that owns the queue index and schedules every
 * delivery; see qmgr.h for how the parts fit together. */
#include "qmgr/qmgr.h"

#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/util/alloc.h"
#include "common/util/conn.h"
#include "common/mail/conf.h"
#include "common/util/log.h"
#include "common/mail/bclass.h"
#include "common/mail/metric.h"
#include "common/mail/proto.h"
#include "qmgr/qmgr_shared.h"

struct qmgr qmgr_g;

static struct event *tick_ev;

/* ---- notifications from smtpd and bounce ---- */

/* One "proto=1 request=new queue_id=ID" record per new queue file. */
static enum conn_verdict notify_record(struct conn *c, const attr_t *rec, void *arg,
                                       const char **why)
{
    const char *req = attr_get(rec, "request");
    const char *id = attr_get(rec, "queue_id");

    if (req == NULL || strcmp(req, "new") != 0) {
        *why = "unknown request (want request=new)";
        return CONN_DROP;
    }
    if (id == NULL || !qid_valid(id)) {
        *why = "missing or malformed queue_id";
        return CONN_DROP;
    }
    if (!qmgr_g.stopping)
        qmgr_index_new_mail(id);
    return CONN_OK;
}

static void qmgr_accept(struct server *s, int fd, int idx)
{
    static const struct conn_ops ops = { .on_record = notify_record };
    static const struct conn_cfg cfg = {
        .peer = SOCK_QMGR " client",
        .proto = PROTO_VERSION,
        .serving = 1,
    };

    conn_new(s->base, fd, &cfg, &ops, NULL);
}

/* ---- timers and life cycle ---- */

static void qmgr_tick(evutil_socket_t fd, short what, void *arg)
{
    static time_t last_scan;
    time_t now = time(NULL);
    if (qmgr_g.stopping)
        return;
    if (last_scan == 0)
        last_scan = now; /* qmgr_index_startup just scanned */
    if (qmgr_index_scanning(NULL) != QSCAN_NONE)
        last_scan = now; /* the rebuild reads every file anyway */
    else if (now - last_scan >= (time_t)conf_int("queue_run_delay")) {
        last_scan = now;
        qmgr_index_rescan();
    }
    qmgr_index_pull_due();
    qmgr_sched_tick();
    qmgr_bounce_tick();
    qmgr_suppress_tick();
    qmgr_pool_tick();
    qmgr_deliver_tick();
}

static void qmgr_pre_drop(struct server *s)
{
    qmgr_perm_init();
    qmgr_route_init(); /* table paths may lie outside a chroot */
    qmgr_pool_init();
    qmgr_site_init();
    qmgr_throttle_init(); /* the rules file may lie outside a chroot */
    /* The rules classify replies that come without a category (for the
     * suppression list, qmgr_suppress.c). */
    buf_t err = BUF_INIT;
    if (bclass_init(&err) < 0)
        log_warn("bounce classifier rules: %s", buf_str(&err));
    buf_destroy(&err);
}

/* One qmgr per spool, before the control socket is replaced and before
 * the index is opened (and maybe wiped): an orphaned qmgr whose master
 * was killed may still run for a moment. Master restarts us with back-off
 * when this is fatal. */
static void qmgr_lock(void)
{
    buf_t err = BUF_INIT, path = BUF_INIT;
    int fd;

    qmgr_g.lock_fd = qmgr_qindex_lock(qmgr_g.spool, QMGR_LOCK_WAIT_MS, &err);
    if (qmgr_g.lock_fd >= 0) {
        buf_destroy(&err);
        return;
    }
    /* qmgr_qindex_lock fails for two reasons: the lock file cannot be made or
     * opened (ownership, a read-only spool), or another qmgr holds it.
     * If we can open the file now, it was the lock. */
    buf_printf(&path, "%s/index/lock", qmgr_g.spool);
    fd = open(buf_str(&path), O_RDWR | O_CLOEXEC);
    if (fd < 0)
        log_fatal("%s; %s/index must be writable by mail_owner %s (fix its ownership or mode)",
                  buf_str(&err), conf_str("queue_directory"), conf_str("mail_owner"));
    close(fd);
    log_fatal("%s; not starting a second one (stop the other, or wait for it to exit)",
              buf_str(&err));
}

/* A shared token or lease answer came for site: schedule again. */
static void qmgr_shared_wake(void *arg, const char *site)
{
    if (qmgr_g.stopping)
        return;
    qmgr_site_wake(site);
    qmgr_sched_dispatch();
}

/* shaping_shared_state (issue #9): per-site limits joint with other nodes.
 * Connects in the background; the node id names this process's leases. */
static void qmgr_shared_start(struct server *s)
{
    const char *spec = conf_str("shaping_shared_state");
    buf_t id = BUF_INIT, err = BUF_INIT;

    if (!*spec)
        return;
    buf_printf(&id, "%s:%ld", conf_str("myhostname"), (long)getpid());
    qmgr_g.shared = qmgr_shared_new(s->base, spec, (int)conf_int("shaping_node_count"),
                                    buf_str(&id), NULL, qmgr_shared_wake, NULL, &err);
    if (!qmgr_g.shared)
        log_fatal("shaping_shared_state: %s", buf_str(&err));
    buf_destroy(&id);
    buf_destroy(&err);
}

static void qmgr_post_drop(struct server *s)
{
    struct timeval one = { 1, 0 };

    qmgr_g.srv = s;
    qmgr_g.spool = s->spool;
    qmgr_g.active_limit = conf_int("qmgr_message_active_limit");
    qmgr_g.rcpt_limit = conf_int("qmgr_message_recipient_limit");
    if (s->nlisten < 1)
        log_warn("no private/qmgr socket passed (-s 0): no new-mail notifications");
    qmgr_lock();
    qmgr_suppress_init(); /* the one writer: after the lock */
    qmgr_pool_load();
    qmgr_control_init(); /* early: CLI requests queue up during a rebuild */
    metric_client_open(s->base, s->spool);
    qmgr_shared_start(s); /* before any site takes a token */
    qmgr_site_start();
    qmgr_index_startup();
    tick_ev = event_new(s->base, -1, EV_PERSIST, qmgr_tick, NULL);
    event_add(tick_ev, &one);
}

static void qmgr_stop(struct server *s)
{
    server_stop_accepting(s);
    qmgr_g.stopping = 1;
    if (tick_ev)
        event_free(tick_ev);
    tick_ev = NULL;
    qmgr_control_close();
    metric_client_close();
    qmgr_deliver_close_all();
    qmgr_bounce_close();
    qmgr_index_shutdown();
    qmgr_suppress_close();
    qmgr_route_close();
    qmgr_pool_close();
    qmgr_site_close();
    qmgr_throttle_close();
    qmgr_shared_free(qmgr_g.shared); /* its leases lapse in Redis */
    qmgr_g.shared = NULL;
    /* A reload replaces qmgr as a matter of course: not worth a line. */
    if (s->retiring)
        log_debug("retired");
    else
        log_info("stopped");
    server_exit(s);
}

int main(int argc, char **argv)
{
    static const struct server_hooks hooks = {
        .pre_drop = qmgr_pre_drop,
        .post_drop = qmgr_post_drop,
        .on_accept = qmgr_accept,
        .on_stop = qmgr_stop,
    };

    return server_main(argc, argv, "qmgr", &hooks, &qmgr_g);
}
