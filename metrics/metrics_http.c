/* metrics_http.c - the endpoint: GET (or HEAD) /metrics on metrics_listen,
 * over libevent's evhttp, bounded (small headers, no body, a timeout per
 * connection, at most METRICS_SCRAPES_MAX scrapes at once: 503 beyond).
 *
 * A scrape asks qmgr for the gauges over public/control (request=metrics,
 * the reply records until end=1), then renders the catalogue. When qmgr
 * does not answer within metrics_scrape_timeout, fails or is not running,
 * the answer has the daemons' counters and postino_qmgr_up 0: a scrape
 * never hangs on the queue manager. */
#include "metrics/metrics.h"

#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "common/mail/conf.h"
#include "common/mail/proto.h"
#include "common/util/alloc.h"
#include "common/util/conn.h"
#include "common/util/log.h"

#define METRICS_SCRAPES_MAX  16
#define METRICS_GAUGES_MAX   50000 /* samples taken from one qmgr answer */
#define METRICS_HTTP_TIMEOUT 30

struct scrape {
    LIST_ENTRY(scrape) link;
    struct evhttp_request *req; /* NULL: the client went away */
    struct conn *conn;          /* to qmgr, NULL once done */
    struct event *timer;
    attr_t *g; /* gauge samples */
    size_t ng, gcap;
};

static struct {
    struct event_base *base;
    struct evhttp *http;
    char *control; /* path of qmgr's public/control */
    LIST_HEAD(, scrape) scrapes;
    size_t nscrapes;
} h;

static void scrape_free(struct scrape *s)
{
    if (s->conn)
        conn_free(s->conn);
    event_free(s->timer);
    for (size_t i = 0; i < s->ng; i++)
        attr_destroy(&s->g[i]);
    free(s->g);
    LIST_REMOVE(s, link);
    h.nscrapes--;
    free(s);
}

static void reply(struct evhttp_request *req, const struct scrape *s, int qmgr_up)
{
    struct evbuffer *body = evbuffer_new();
    buf_t text = BUF_INIT;

    metrics_render(&text, s->g, qmgr_up ? s->ng : 0, qmgr_up);
    evbuffer_add(body, text.data, text.len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, HTTP_OK, "OK", body);
    evbuffer_free(body);
    buf_destroy(&text);
}

/* Answer the scrape (qmgr_up: the gauges are complete) and forget it. A
 * request its connection dropped (detached, see on_client_gone) is only
 * freed. */
static void scrape_finish(struct scrape *s, int qmgr_up)
{
    if (s->req) {
        struct evhttp_connection *evcon = evhttp_request_get_connection(s->req);
        if (evcon) {
            evhttp_connection_set_closecb(evcon, NULL, NULL);
            reply(s->req, s, qmgr_up);
        } else {
            evhttp_request_free(s->req);
        }
    }
    s->req = NULL; /* answered: evhttp owns it again */
    scrape_free(s);
}

static enum conn_verdict on_gauge(struct conn *c, const attr_t *rec, void *arg, const char **why)
{
    struct scrape *s = arg;
    const char *status = attr_get(rec, "status");

    if (status && strcmp(status, "fail") == 0) {
        log_warn("qmgr refused the metrics request: %s", attr_get_def(rec, "reason", "?"));
        scrape_finish(s, 0);
        return CONN_OK;
    }
    if (attr_get(rec, "end")) {
        scrape_finish(s, 1);
        return CONN_OK;
    }
    if (!metrics_gauge_ok(rec) || s->ng >= METRICS_GAUGES_MAX) {
        *why = "not a gauge sample";
        return CONN_DROP; /* on_gauge_closed answers */
    }
    s->g = xgrow(s->g, &s->gcap, s->ng + 1, sizeof(*s->g));
    attr_init(&s->g[s->ng]);
    for (size_t i = 0; i < rec->n; i++)
        attr_add(&s->g[s->ng], rec->v[i].name, rec->v[i].value);
    s->ng++;
    return CONN_OK;
}

static void on_gauge_closed(struct conn *c, const char *why, void *arg)
{
    struct scrape *s = arg;

    s->conn = NULL; /* conn frees itself */
    log_warn("gauges from qmgr: %s", why ? why : "connection closed");
    scrape_finish(s, 0);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    log_warn("qmgr did not send the gauges within metrics_scrape_timeout");
    scrape_finish(arg, 0);
}

/* The HTTP client closed (or timed out) before its answer. evhttp frees
 * the requests still queued on the connection; one that a callback is
 * working on is detached from it instead (no connection any more) and
 * left to that callback, which frees it here. */
static void on_client_gone(struct evhttp_connection *evcon, void *arg)
{
    struct scrape *s = arg;

    scrape_finish(s, 0); /* frees a detached request */
}

static int ask_qmgr(struct scrape *s)
{
    static const struct conn_ops ops = { .on_record = on_gauge, .on_close = on_gauge_closed };
    struct conn_cfg cfg = { .peer = "qmgr control" };
    attr_t r = ATTR_INIT;

    s->conn = conn_connect_unix(h.base, h.control, &cfg, &ops, s);
    if (s->conn == NULL)
        return -1;
    attr_add(&r, "proto", PROTO_VERSION);
    attr_add(&r, "request", "metrics");
    conn_send(s->conn, &r);
    attr_destroy(&r);
    return 0;
}

static void scrape_start(struct evhttp_request *req)
{
    struct scrape *s = xcalloc(1, sizeof(*s));
    struct timeval tv = { conf_int("metrics_scrape_timeout"), 0 };

    s->req = req;
    s->timer = evtimer_new(h.base, on_timeout, s);
    LIST_INSERT_HEAD(&h.scrapes, s, link);
    h.nscrapes++;
    if (ask_qmgr(s) < 0) {
        scrape_finish(s, 0); /* qmgr not running: the counters alone */
        return;
    }
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), on_client_gone, s);
    evtimer_add(s->timer, &tv);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));

    if (path == NULL || strcmp(path, "/metrics") != 0) {
        evhttp_send_error(req, HTTP_NOTFOUND, "Not Found: try /metrics");
        return;
    }
    if (h.nscrapes >= METRICS_SCRAPES_MAX) {
        evhttp_send_error(req, 503, "Too many scrapes at once");
        return;
    }
    scrape_start(req);
}

/* "host:port" or "[v6]:port" into host (brackets gone) and port. */
static int split_listen(const char *listen, buf_t *host, unsigned short *port)
{
    const char *colon = strrchr(listen, ':');
    char *end;

    if (colon == NULL || colon == listen)
        return -1;
    long p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || p <= 0 || p > 65535)
        return -1;
    if (listen[0] == '[' && colon[-1] == ']')
        buf_append(host, listen + 1, (size_t)(colon - listen - 2));
    else
        buf_append(host, listen, (size_t)(colon - listen));
    *port = (unsigned short)p;
    return 0;
}

int metrics_http_start(struct event_base *base, const char *listen, const char *control)
{
    buf_t host = BUF_INIT;
    unsigned short port;
    int rc = -1;

    h.base = base;
    free(h.control);
    h.control = xstrdup(control);
    if (split_listen(listen, &host, &port) < 0) {
        log_error("metrics_listen = %s: want host:port (e.g. 127.0.0.1:9153)", listen);
    } else {
        h.http = evhttp_new(base);
        evhttp_set_max_headers_size(h.http, 8192);
        evhttp_set_max_body_size(h.http, 0);
        evhttp_set_timeout(h.http, METRICS_HTTP_TIMEOUT);
        evhttp_set_allowed_methods(h.http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
        evhttp_set_gencb(h.http, on_request, NULL);
        if (evhttp_bind_socket(h.http, buf_str(&host), port) < 0) {
            log_error("metrics_listen = %s: cannot listen there", listen);
            evhttp_free(h.http);
            h.http = NULL;
        } else {
            log_info("serving metrics on http://%s/metrics", listen);
            rc = 0;
        }
    }
    buf_destroy(&host);
    return rc;
}

void metrics_http_stop(void)
{
    struct scrape *s;

    while ((s = LIST_FIRST(&h.scrapes)) != NULL)
        scrape_finish(s, 0);
    if (h.http)
        evhttp_free(h.http);
    h.http = NULL;
    free(h.control);
    h.control = NULL;
}
