/* anvil_stats.c - the table's clock and its housekeeping: idle entries expire
 * (memory stays bounded by the active clients) and, every
 * ANVIL_STATUS_UPDATE_SECS, the maxima are logged in Postfix's shape:
 *   statistics: max connection count 3 for (smtp:127.0.0.1) at Nov 26 16:34:58 */
#include <event2/event.h>
#include <time.h>

#include "anvil/anvil.h"
#include "anvil/anvil_rate.h"
#include "common/util/log.h"
#include "common/mail/server.h"

static struct event *expire_ev, *stats_ev;

long long anvil_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wall-clock text for a table time (monotonic ms). */
static void when_text(long long at, long long now, char *out, size_t size)
{
    time_t t = time(NULL) - (time_t)((now - at) / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    if (strftime(out, size, "%b %e %H:%M:%S", &tm) == 0 && size > 0)
        out[0] = '\0';
}

static const char *const ev_label[ANVIL_EV_N] = {
    "connection", "message", "recipient", "auth", "auth failure",
};

void anvil_stats_log(struct anvil_table *t, long long now)
{
    const struct anvil_stats *st = anvil_table_stats(t);
    long long unit = anvil_table_window(t) / 1000;
    char when[64];
    for (int k = 0; k < ANVIL_EV_N; k++) {
        if (st->rate[k].value == 0)
            continue;
        when_text(st->rate[k].at, now, when, sizeof when);
        log_info("statistics: max %s rate %ld/%llds for (%s) at %s", ev_label[k], st->rate[k].value,
                 unit, st->rate[k].ident, when);
    }
    if (st->count.value > 0) {
        when_text(st->count.at, now, when, sizeof when);
        log_info("statistics: max connection count %ld for (%s) at %s", st->count.value,
                 st->count.ident, when);
    }
    if (st->max_size > 0) {
        when_text(st->max_size_at, now, when, sizeof when);
        log_info("statistics: max cache size %zu at %s", st->max_size, when);
    }
    if (st->evicted > 0)
        log_warn("statistics: %zu client entries dropped because the table was full", st->evicted);
    anvil_table_stats_reset(t);
}

static void on_expire(evutil_socket_t fd, short what, void *arg)
{
    size_t n = anvil_table_expire(arg, anvil_now_ms());
    if (n > 0)
        log_debug("expired %zu idle client entries", n);
}

static void on_stats(evutil_socket_t fd, short what, void *arg)
{
    anvil_stats_log(arg, anvil_now_ms());
}

void anvil_timers_start(struct server *s, struct anvil_table *t)
{
    /* Expire at least once per window so idle clients go within about
     * two windows, and not more often than once a second. */
    long long w = anvil_table_window(t) / 1000;
    struct timeval ex = { (time_t)(w < 1 ? 1 : w > 60 ? 60 : w), 0 };
    struct timeval st = { ANVIL_STATUS_UPDATE_SECS, 0 };
    expire_ev = event_new(s->base, -1, EV_PERSIST, on_expire, t);
    stats_ev = event_new(s->base, -1, EV_PERSIST, on_stats, t);
    if (expire_ev == NULL || stats_ev == NULL)
        log_fatal("cannot create timers (libevent)");
    event_add(expire_ev, &ex);
    event_add(stats_ev, &st);
}

void anvil_timers_stop(void)
{
    if (expire_ev)
        event_free(expire_ev);
    if (stats_ev)
        event_free(stats_ev);
    expire_ev = stats_ev = NULL;
}
