/* qmgr_deliver.c - the pool of persistent connections to delivery agents
 * (private/<transport>), one job per connection at a time.
 *
 * The connections are common/util/conn ones. Connecting to a local socket
 * completes or fails at once (the agent is not running: dispatch retries
 * later).
 * A connection that breaks mid-job means the agent died: the job's
 * recipients stay pending in the file and are retried soon.
 *
 * Sites (qmgr_site.c): a delivery agent keeps an SMTP session to a site
 * in its cache after a job, for the site's idle time. So that the site's
 * receiver never sees more sessions than max_connections, a connection
 * that served a site stays pinned to it for that time: the site's next
 * job takes it (its agent reuses the cached session), and no other site
 * does. The pinned connections of a site are thus at most its jobs in
 * flight plus those idle-pinned, which dispatch holds to the limit.
 * With source addresses (qmgr_pool.c) a session is the site's and its
 * source's: a connection is pinned to both, and only a job from that
 * source takes it (another would leave the session idle in the agent's
 * cache and open a second one). */
#include "qmgr/qmgr.h"

#include <errno.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "common/util/alloc.h"
#include "common/util/conn.h"
#include "common/util/log.h"
#include "common/mail/conf.h"
#include "common/mail/mevent.h"
#include "common/mail/proto.h"

struct aconn {
    struct conn *conn;
    char *transport;
    struct qmgr_job *job;
    unsigned uses; /* jobs sent on this connection */
    char *pin;     /* the site it last served, or NULL */
    char *pin_src; /* the source address it served it from, or NULL */
    double pin_until;
    unsigned pin_jobs; /* jobs for that site since it was pinned */
    double idle_since; /* when its last job ended */
    LIST_ENTRY(aconn) link;
};

/* Every connection; idle ones have job NULL. */
static LIST_HEAD(, aconn) conns = LIST_HEAD_INITIALIZER(conns);

/* Transports whose agent could not be reached: skip connecting to them
 * for a second, so a missing agent costs one connect(2) per second, not
 * one per destination. */
#define DOWN_MAX 16
static struct {
    char name[40];
    time_t until;
} down[DOWN_MAX];

static int transport_down(const char *t)
{
    time_t now = time(NULL);

    for (size_t i = 0; i < DOWN_MAX; i++)
        if (down[i].until > now && strcmp(down[i].name, t) == 0)
            return 1;
    return 0;
}

static void transport_mark_down(const char *t)
{
    time_t now = time(NULL);
    size_t slot = 0;

    for (size_t i = 0; i < DOWN_MAX; i++)
        if (down[i].until <= now || strcmp(down[i].name, t) == 0) {
            slot = i;
            break;
        }
    str_lcpy(down[slot].name, t, sizeof(down[slot].name));
    down[slot].until = now + 1;
}

/* Forget c; its connection is the caller's to free (or already gone). */
static void aconn_forget(struct aconn *c)
{
    LIST_REMOVE(c, link);
    free(c->transport);
    free(c->pin);
    free(c->pin_src);
    free(c);
}

/* conn says "connection closed" where the agent hung up; in the middle of
 * a job that has always been logged as below. */
static const char *broken_why(const char *why)
{
    return why == NULL || strcmp(why, "connection closed") == 0 ? "connection closed mid-job" : why;
}

/* The connection is over; what happens to its job depends on why. */
static void aconn_closed(struct conn *conn, const char *why, void *arg)
{
    struct aconn *c = arg;
    struct qmgr_job *j = c->job;

    aconn_forget(c);
    if (j == NULL)
        return; /* an idle connection the agent closed: just forget it */
    /* Mid-job, even on a reused connection with no reply yet, the agent may
     * have delivered and recorded some recipients before it died. The
     * crash path drops the message from memory and reloads it from its
     * file shortly, so the recorded outcomes decide and nothing is sent
     * twice; re-sending the job from memory could. */
    log_warn("%s: delivery agent %s: %s", j->msg->id, j->dest->transport, broken_why(why));
    qmgr_sched_job_done(j, NULL, "delivery agent crashed");
}

/* How long the agent may keep the site's session idle, and a second more. */
static double site_idle_time(const struct qmgr_site *s)
{
    long long t =
        s->pol.idle_timeout ? s->pol.idle_timeout : conf_int("smtp_connection_cache_time_limit");
    return (double)t + 1;
}

/* The agent's reply to the job in flight. One that does not match that
 * job is malformed: the connection is dropped and the job takes the crash
 * path above (nothing of the reply is applied). */
static enum conn_verdict aconn_record(struct conn *conn, const attr_t *reply, void *arg,
                                      const char **why)
{
    struct aconn *c = arg;
    struct qmgr_job *j = c->job;
    const char *qid = attr_get(reply, "queue_id");

    if (j == NULL) {
        *why = "a reply to no job";
        return CONN_DROP;
    }
    if (qid && strcmp(qid, j->msg->id) != 0) {
        *why = "a reply for another message";
        return CONN_DROP;
    }
    if (!qmgr_sched_reply_matches(j, reply)) {
        *why = "recipient results that do not match the job";
        return CONN_DROP;
    }
    c->job = NULL; /* idle again before the scheduler looks for one */
    c->idle_since = qmgr_now();
    c->pin_until = c->idle_since + site_idle_time(j->dest->site);
    qmgr_sched_job_done(j, reply, NULL);
    return CONN_OK;
}

static struct aconn *aconn_new(const char *transport)
{
    static const struct conn_ops ops = { .on_record = aconn_record, .on_close = aconn_closed };
    static time_t last_warn;
    buf_t rel = BUF_INIT, path = BUF_INIT, peer = BUF_INIT;
    struct conn_cfg cfg = { 0 };
    struct aconn *c;

    if (transport_down(transport))
        return NULL;
    buf_printf(&rel, "%s/%s", SOCK_PRIVATE_DIR, transport);
    server_spool_path(qmgr_g.srv, buf_str(&rel), &path);
    buf_printf(&peer, "delivery agent %s", transport);
    cfg.peer = buf_str(&peer);
    c = xcalloc(1, sizeof(*c));
    c->conn = conn_connect_unix(qmgr_g.srv->base, buf_str(&path), &cfg, &ops, c);
    if (c->conn == NULL) {
        transport_mark_down(transport);
        if (time(NULL) - last_warn >= 10) {
            log_warn("connect to %s: %s (delivery agent not running?)", buf_str(&path),
                     strerror(errno));
            last_warn = time(NULL);
        }
        free(c);
        c = NULL;
    } else {
        c->transport = xstrdup(transport);
        LIST_INSERT_HEAD(&conns, c, link);
    }
    buf_destroy(&rel);
    buf_destroy(&path);
    buf_destroy(&peer);
    return c;
}

static int aconn_pinned(const struct aconn *c, const char *site, double now)
{
    return c->pin && now < c->pin_until && (site == NULL || strcmp(c->pin, site) == 0);
}

static int same_src(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static int aconn_usable(const struct aconn *c, const char *transport)
{
    return c->job == NULL && !conn_closing(c->conn) && strcmp(c->transport, transport) == 0;
}

/* Has c's agent probably an open session for site s: c is pinned to it
 * and the session has not reached its deliveries per connection (the
 * agent then closes it)? An estimate: an agent may hand a cached session
 * to another of qmgr's connections; it serves max_connection_rate. */
static int aconn_has_session(const struct aconn *c, const struct qmgr_site *s)
{
    long long per = s->pol.max_deliveries_per_connection
                        ? s->pol.max_deliveries_per_connection
                        : conf_int("smtp_connection_reuse_count_limit");

    return per <= 0 || c->pin_jobs % (unsigned long long)per != 0;
}

/* An idle connection for job j: pinned to its site and source address
 * (one whose session is still open first), else one pinned to none.
 * Sites without a max_connections of their own do not hold on to
 * connections when there are many (a queue of many small domains). */
static struct aconn *aconn_idle(const struct qmgr_job *j)
{
    const struct qmgr_dest *d = j->dest;
    const char *src = qmgr_pool_source(j);
    double now = qmgr_now();
    struct aconn *c, *free_one = NULL, *loose = NULL, *pinned = NULL;
    size_t n = 0;

    LIST_FOREACH(c, &conns, link)
    {
        n++;
        if (!aconn_usable(c, d->transport))
            continue;
        if (aconn_pinned(c, d->site->name, now)) {
            if (!same_src(c->pin_src, src))
                continue; /* the site's, from another address: kept for it */
            if (aconn_has_session(c, d->site))
                return c;
            pinned = c;
            continue;
        }
        if (!aconn_pinned(c, NULL, now))
            free_one = c;
        else if (loose == NULL) {
            const struct qmgr_site *s = qmgr_site_find(c->pin);
            if (s == NULL || s->pol.max_connections == 0)
                loose = c;
        }
    }
    if (pinned || free_one)
        return pinned ? pinned : free_one;
    return n >= 2 * (size_t)conf_int("default_process_concurrency") ? loose : NULL;
}

int qmgr_deliver_site_idle(const struct qmgr_dest *d)
{
    double now = qmgr_now();
    const struct aconn *c;

    LIST_FOREACH(c, &conns, link)
    if (aconn_usable(c, d->transport) && aconn_pinned(c, d->site->name, now) &&
        aconn_has_session(c, d->site))
        return 1;
    return 0;
}

int qmgr_deliver_idle_sessions(const struct qmgr_site *s, const char *src)
{
    double now = qmgr_now();
    const struct aconn *c;
    int n = 0;

    LIST_FOREACH(c, &conns, link)
    if (c->job == NULL && !conn_closing(c->conn) && aconn_pinned(c, s->name, now) &&
        (src == NULL || same_src(c->pin_src, src)) && aconn_has_session(c, s))
        n++;
    return n;
}

int qmgr_deliver_pinned(const struct qmgr_site *s)
{
    double now = qmgr_now();
    const struct aconn *c;
    int n = 0;

    LIST_FOREACH(c, &conns, link)
    n += aconn_pinned(c, s->name, now);
    return n;
}

int qmgr_deliver_adds_pin(const struct qmgr_site *s, const struct qmgr_job *j)
{
    double now = qmgr_now();
    const struct aconn *c;

    if (j) {
        c = aconn_idle(j);
        return c == NULL || !aconn_pinned(c, s->name, now);
    }
    LIST_FOREACH(c, &conns, link)
    if (c->job == NULL && !conn_closing(c->conn) && aconn_pinned(c, s->name, now))
        return 0;
    return 1;
}

/* The site's settings the delivery agent needs: its name (logs, the
 * connection cache), deliveries per connection and timeouts. */
static void add_site_attrs(attr_t *req, const struct qmgr_site *s)
{
    attr_add(req, "site", s->name);
    if (s->pol.max_deliveries_per_connection)
        attr_add_ll(req, "site_max_deliveries", s->pol.max_deliveries_per_connection);
    if (s->pol.connect_timeout)
        attr_add_ll(req, "site_connect_timeout", s->pol.connect_timeout);
    if (s->pol.idle_timeout)
        attr_add_ll(req, "site_idle_timeout", s->pol.idle_timeout);
}

int qmgr_deliver_start(struct qmgr_job *j)
{
    struct aconn *c = aconn_idle(j);
    attr_t req = ATTR_INIT;

    if (c == NULL && (c = aconn_new(j->dest->transport)) == NULL)
        return -1;
    c->job = j;
    c->uses++;
    if (c->pin == NULL || strcmp(c->pin, j->dest->site->name) != 0 ||
        !same_src(c->pin_src, qmgr_pool_source(j)) || qmgr_now() >= c->pin_until) {
        free(c->pin);
        free(c->pin_src);
        c->pin = xstrdup(j->dest->site->name);
        c->pin_src = qmgr_pool_source(j) ? xstrdup(qmgr_pool_source(j)) : NULL;
        c->pin_jobs = 0;
    }
    c->pin_jobs++;
    c->pin_until = 1e300; /* busy: pinned until the job is done */
    attr_add(&req, "proto", PROTO_VERSION);
    attr_add(&req, "request", "deliver");
    attr_add(&req, "queue_id", j->msg->id);
    attr_add(&req, "nexthop", j->dest->nexthop);
    if (qmgr_pool_source(j)) {
        attr_add(&req, "source", qmgr_pool_source(j));
        attr_add(&req, "helo", qmgr_pool_helo(j));
    }
    add_site_attrs(&req, j->dest->site);
    if (mevent_enabled()) /* for the agent's events (issue #11) */
        attr_add_ll(&req, "attempt", (long long)j->msg->attempts + 1);
    for (size_t i = 0; i < j->n; i++)
        attr_add_ll(&req, "rcpt", (long long)j->rcpt[i]);
    conn_send(c->conn, &req);
    attr_destroy(&req);
    return 0;
}

/* A busy hour leaves as many agent connections as there were jobs in
 * flight at its peak, each a descriptor here and one in an agent. One
 * that has had no job for AGENT_IDLE_CLOSE seconds past its pin is
 * closed, so an idle qmgr holds few (the soak checks descriptors flat). */
#define AGENT_IDLE_CLOSE 10.0

void qmgr_deliver_tick(void)
{
    double now = qmgr_now();
    struct aconn *c, *next;

    for (c = LIST_FIRST(&conns); c != NULL; c = next) {
        next = LIST_NEXT(c, link);
        if (c->job != NULL || conn_closing(c->conn) || aconn_pinned(c, NULL, now))
            continue;
        if (now - c->idle_since < AGENT_IDLE_CLOSE)
            continue;
        conn_free(c->conn);
        aconn_forget(c);
    }
}

void qmgr_deliver_close_all(void)
{
    struct aconn *c;

    while ((c = LIST_FIRST(&conns)) != NULL) {
        conn_free(c->conn);
        aconn_forget(c);
    }
}
