/* events_hook.c - event_webhook_url: every event line is appended to a
 * durable spool under queue_directory/events, and the spool is POSTed to
 * the webhook in batches, oldest first, until a 2xx takes each.
 *
 * The spool: lines go to events/open (fsynced in batches: at most
 * HOOK_SYNC_MS after the first unsynced line, and before a batch is
 * sealed). A batch is sealed (renamed to events/B<16 hex seq>) when it has
 * event_webhook_batch_size lines or when the sender is idle and the open
 * file has lines. Sealed batches are sent in order, one POST at a time
 * (body: the batch's JSON lines, NDJSON, Content-Type
 * application/x-ndjson, header X-Postino-Batch: <seq>); a 2xx removes the
 * batch; anything else (a refused connection, a timeout, another status)
 * is retried after 1s, 2s, 4s ... up to event_webhook_max_backoff. A stop
 * or crash loses nothing fsynced: at start the open file (cut back to its
 * last whole line) is sealed and every batch is sent again. A batch whose
 * 2xx was lost on the way is sent twice: the webhook gets every event at
 * least once. The HTTP client is libevent's evhttp, on the daemon's loop.
 *
 * A line the spool does not take (a full disk) is cut back, never left
 * half-written, and waits in memory with the lines after it
 * (events_backlog.c: in order, bounded, beyond that dropped and counted)
 * until the spool takes lines again: tried with each new event and each
 * second. A batch that cannot be sealed (renamed) stays open and grows
 * until it can. One warning when the trouble starts, one line with the
 * counts when it ends; nothing of it stops the daemon. */
#include "events/events.h"

#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/mail/conf.h"
#include "common/mail/mevent.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

#define HOOK_DIR      "events"
#define HOOK_OPEN     HOOK_DIR "/open"
#define HOOK_SYNC_MS  100
#define HOOK_MAX_BODY (64 * 1024 * 1024)

static struct {
    struct event_base *base;
    struct evdns_base *dns;
    struct evhttp_connection *hc;
    char *url;
    struct evhttp_uri *uri;
    int fd;       /* events/open, or -1 */
    size_t nopen; /* lines in it */
    int unsynced;
    uint64_t lo, next; /* sealed batches: lo .. next-1 */
    int inflight;
    int backoff; /* seconds, 0: none */
    int warned;
    int seal_warned;
    struct events_backlog wait; /* lines the spool did not take yet */
    struct event *sync_ev, *send_ev;
} wh = { .fd = -1 };

static void batch_name(uint64_t seq, buf_t *out)
{
    buf_setf(out, "%s/B%016" PRIx64, HOOK_DIR, seq);
}

static void sync_dir(void)
{
    int dfd = open(HOOK_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}

/* A failing fsync is said once until one works again (not every 100 ms). */
static void sync_open(void)
{
    static int failing;
    if (wh.fd < 0 || !wh.unsynced)
        return;
    if (fsync(wh.fd) < 0) {
        if (!failing++)
            log_warn("cannot fsync %s: %s", HOOK_OPEN, strerror(errno));
    } else {
        failing = 0;
    }
    wh.unsynced = 0;
}

/* events/open -> events/B<next>. When the rename fails (a full
 * directory block) the file stays open and takes more lines. */
static void seal(void)
{
    buf_t name = BUF_INIT;
    if (wh.fd < 0 || wh.nopen == 0)
        return;
    sync_open();
    batch_name(wh.next, &name);
    if (rename(HOOK_OPEN, name.data) < 0) {
        if (!wh.seal_warned++)
            log_warn("cannot rename %s to %s: %s; sending it later", HOOK_OPEN, name.data,
                     strerror(errno));
        buf_destroy(&name);
        return;
    }
    if (wh.seal_warned)
        log_info("webhook spool: %s sealed again", name.data);
    wh.seal_warned = 0;
    close(wh.fd);
    wh.fd = -1;
    wh.nopen = 0;
    sync_dir();
    wh.next++;
    buf_destroy(&name);
}

static void kick(void);

static void on_sync(evutil_socket_t fd, short what, void *arg)
{
    sync_open();
    kick();
}

static void on_send_timer(evutil_socket_t fd, short what, void *arg)
{
    kick();
}

static void retry_later(const char *why)
{
    int max = (int)conf_int("event_webhook_max_backoff");
    wh.backoff = wh.backoff ? wh.backoff * 2 : 1;
    if (wh.backoff > max)
        wh.backoff = max;
    if (!wh.warned++)
        log_warn("event webhook %s: %s; keeping events in the spool, retrying", wh.url, why);
    struct timeval tv = { wh.backoff, 0 };
    evtimer_add(wh.send_ev, &tv);
}

static void on_response(struct evhttp_request *req, void *arg)
{
    int code = req ? evhttp_request_get_response_code(req) : 0;
    buf_t name = BUF_INIT, why = BUF_INIT;
    wh.inflight = 0;
    if (code >= 200 && code < 300) {
        batch_name(wh.lo, &name);
        if (unlink(name.data) < 0 && errno != ENOENT)
            log_warn("cannot remove %s: %s", name.data, strerror(errno));
        wh.lo++;
        wh.backoff = 0;
        if (wh.warned)
            log_info("event webhook %s takes events again", wh.url);
        wh.warned = 0;
        struct timeval now = { 0, 0 };
        evtimer_add(wh.send_ev, &now); /* the next batch, from the loop */
    } else {
        if (code)
            buf_printf(&why, "HTTP status %d", code);
        else
            buf_puts(&why, "no response (connection failed or timed out)");
        retry_later(why.data);
    }
    buf_destroy(&name);
    buf_destroy(&why);
}

static int read_batch(const char *path, struct evbuffer *body)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size > HOOK_MAX_BODY) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    /* evbuffer_add_file takes the descriptor (and closes it). */
    return evbuffer_add_file(body, fd, 0, st.st_size);
}

static void connection_new(void)
{
    const char *host = evhttp_uri_get_host(wh.uri);
    int port = evhttp_uri_get_port(wh.uri);
    wh.hc =
        evhttp_connection_base_new(wh.base, wh.dns, host, (unsigned short)(port > 0 ? port : 80));
    if (wh.hc == NULL)
        log_fatal("cannot create the webhook HTTP connection (libevent)");
    evhttp_connection_set_timeout(wh.hc, (int)conf_int("event_webhook_timeout"));
    evhttp_connection_set_retries(wh.hc, 0);
}

static void send_batch(void)
{
    buf_t name = BUF_INIT, target = BUF_INIT, seq = BUF_INIT, host = BUF_INIT;
    batch_name(wh.lo, &name);
    struct evhttp_request *req = evhttp_request_new(on_response, NULL);
    if (read_batch(name.data, evhttp_request_get_output_buffer(req)) < 0) {
        log_warn("cannot read webhook batch %s: %s; skipping it", name.data, strerror(errno));
        evhttp_request_free(req);
        wh.lo++;
        struct timeval now = { 0, 0 };
        evtimer_add(wh.send_ev, &now);
        goto out;
    }
    const char *path = evhttp_uri_get_path(wh.uri), *query = evhttp_uri_get_query(wh.uri);
    buf_printf(&target, "%s%s%s", path && *path ? path : "/", query ? "?" : "", query ? query : "");
    buf_printf(&seq, "%" PRIu64, wh.lo);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    int port = evhttp_uri_get_port(wh.uri);
    buf_printf(&host, "%s", evhttp_uri_get_host(wh.uri));
    if (port > 0 && port != 80)
        buf_printf(&host, ":%d", port);
    evhttp_add_header(h, "Host", host.data); /* RFC 9110 7.2: with a port not the default */
    evhttp_add_header(h, "Content-Type", "application/x-ndjson");
    evhttp_add_header(h, "X-Postino-Batch", seq.data);
    if (wh.hc == NULL)
        connection_new();
    wh.inflight = 1;
    if (evhttp_make_request(wh.hc, req, EVHTTP_REQ_POST, target.data) < 0) {
        wh.inflight = 0;
        retry_later("cannot send the request");
    }
out:
    buf_destroy(&name);
    buf_destroy(&target);
    buf_destroy(&seq);
    buf_destroy(&host);
}

/* Send the oldest batch unless one is in flight or a retry waits. */
static void kick(void)
{
    if (wh.uri == NULL || wh.inflight || evtimer_pending(wh.send_ev, NULL))
        return;
    if (wh.lo == wh.next)
        seal();
    if (wh.lo < wh.next)
        send_batch();
}

/* A short write took n bytes of a line: take them back off the end. */
static void cut_back(ssize_t n)
{
    off_t end = lseek(wh.fd, 0, SEEK_END);
    if (end < n || ftruncate(wh.fd, end - n) < 0)
        log_warn("cannot remove a partial line from %s: %s", HOOK_OPEN, strerror(errno));
}

/* One whole line into events/open (sealed when the batch is full), or
 * nothing. */
static int spool_line(const char *line, size_t len, void *arg)
{
    if (wh.fd < 0) {
        wh.fd = open(HOOK_OPEN, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (wh.fd < 0)
            return -1;
    }
    ssize_t n = write(wh.fd, line, len);
    if (n != (ssize_t)len) {
        int err = n < 0 ? errno : ENOSPC; /* a short write: the disk is full */
        if (n > 0)
            cut_back(n);
        errno = err;
        return -1;
    }
    wh.nopen++;
    wh.unsynced = 1;
    if (wh.nopen >= (size_t)conf_int("event_webhook_batch_size")) {
        seal();
        kick();
    } else if (!evtimer_pending(wh.sync_ev, NULL)) {
        struct timeval tv = { 0, HOOK_SYNC_MS * 1000 };
        evtimer_add(wh.sync_ev, &tv);
    }
    return 0;
}

static void keep(const char *line, size_t len)
{
    if (events_backlog_push(&wh.wait, line, len) < 0 && wh.wait.dropped == 1)
        log_warn("webhook spool %s: %d MiB of events wait to be written; dropping new ones "
                 "until it takes lines again",
                 HOOK_DIR, EVENTS_BACKLOG_MAX / (1024 * 1024));
}

void events_hook_retry(void)
{
    if (wh.uri == NULL || wh.wait.lines == 0 ||
        events_backlog_drain(&wh.wait, spool_line, NULL) < 0)
        return;
    log_info("webhook spool %s takes events again: %llu written late, %llu dropped", HOOK_DIR,
             wh.wait.written, wh.wait.dropped);
    events_backlog_reset_counts(&wh.wait);
}

void events_hook_add(const char *line, size_t len)
{
    if (wh.uri == NULL)
        return;
    if (wh.wait.lines > 0) {
        keep(line, len); /* after the lines that wait: in order */
        events_hook_retry();
        return;
    }
    if (spool_line(line, len, NULL) == 0)
        return;
    log_warn("cannot write the webhook spool %s: %s; keeping events in memory (up to %d MiB) "
             "until it takes lines again",
             HOOK_OPEN, strerror(errno), EVENTS_BACKLOG_MAX / (1024 * 1024));
    keep(line, len);
}

/* Cut events/open back to its last whole line (a crash mid-write). */
static void trim_open(void)
{
    int fd = open(HOOK_OPEN, O_RDWR | O_CLOEXEC);
    struct stat st;
    char c;
    off_t end;
    if (fd < 0)
        return;
    for (end = fstat(fd, &st) == 0 ? st.st_size : 0; end > 0; end--)
        if (pread(fd, &c, 1, end - 1) == 1 && c == '\n')
            break;
    if (ftruncate(fd, end) < 0)
        log_warn("cannot trim %s: %s", HOOK_OPEN, strerror(errno));
    close(fd);
    if (end == 0)
        unlink(HOOK_OPEN);
    else
        wh.nopen = 1; /* not 0: seal() takes it */
}

/* The batches left by an earlier run, and its open file. */
static void recover(void)
{
    DIR *d;
    struct dirent *e;
    int any = 0;
    if (mkdir(HOOK_DIR, 0700) < 0 && errno != EEXIST)
        log_fatal("cannot create the webhook spool %s: %s", HOOK_DIR, strerror(errno));
    if ((d = opendir(HOOK_DIR)) == NULL)
        log_fatal("cannot read the webhook spool %s: %s", HOOK_DIR, strerror(errno));
    while ((e = readdir(d)) != NULL) {
        char *end;
        if (e->d_name[0] != 'B' || strlen(e->d_name) != 17)
            continue;
        uint64_t seq = strtoull(e->d_name + 1, &end, 16);
        if (*end)
            continue;
        if (!any || seq < wh.lo)
            wh.lo = seq;
        if (!any || seq >= wh.next)
            wh.next = seq + 1;
        any = 1;
    }
    closedir(d);
    trim_open();
    if (wh.nopen) {
        wh.fd = open(HOOK_OPEN, O_WRONLY | O_APPEND | O_CLOEXEC);
        seal();
    }
    if (wh.next > wh.lo)
        log_info("event webhook: %" PRIu64 " batch%s left in the spool to send", wh.next - wh.lo,
                 wh.next - wh.lo == 1 ? "" : "es");
}

static void configure(void)
{
    const char *url = conf_str("event_webhook_url");
    if (*url == 0)
        return;
    buf_t err = BUF_INIT;
    if (mevent_url_check(url, &err) < 0)
        log_fatal("%s", buf_str(&err));
    buf_destroy(&err);
    wh.uri = evhttp_uri_parse(url);
    wh.url = xstrdup(url);
    recover();
}

void events_hook_start(struct event_base *base)
{
    wh.base = base;
    wh.sync_ev = evtimer_new(base, on_sync, NULL);
    wh.send_ev = evtimer_new(base, on_send_timer, NULL);
    wh.dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (wh.sync_ev == NULL || wh.send_ev == NULL)
        log_fatal("cannot create the webhook timers (libevent)");
    configure();
    kick();
}

static void unconfigure(void)
{
    sync_open();
    if (wh.fd >= 0)
        close(wh.fd);
    wh.fd = -1;
    wh.nopen = 0;
    if (wh.hc)
        evhttp_connection_free(wh.hc); /* a request in flight is cancelled */
    wh.hc = NULL;
    wh.inflight = 0;
    if (wh.uri)
        evhttp_uri_free(wh.uri);
    wh.uri = NULL;
    free(wh.url);
    wh.url = NULL;
    wh.lo = wh.next = 0;
    wh.backoff = 0;
    wh.warned = 0;
    evtimer_del(wh.send_ev);
}

void events_hook_reload(void)
{
    const char *url = conf_str("event_webhook_url");
    if (wh.url && strcmp(url, wh.url) == 0) {
        if (wh.hc)
            evhttp_connection_set_timeout(wh.hc, (int)conf_int("event_webhook_timeout"));
        return;
    }
    unconfigure();
    configure();
    kick();
}

void events_hook_stop(void)
{
    events_hook_retry();
    if (wh.wait.lines > 0)
        log_warn("webhook spool %s: %zu events could not be written and are lost", HOOK_DIR,
                 wh.wait.lines);
    events_backlog_destroy(&wh.wait);
    unconfigure();
    if (wh.sync_ev)
        event_free(wh.sync_ev);
    if (wh.send_ev)
        event_free(wh.send_ev);
    wh.sync_ev = wh.send_ev = NULL;
    if (wh.dns)
        evdns_base_free(wh.dns, 0);
    wh.dns = NULL;
}
