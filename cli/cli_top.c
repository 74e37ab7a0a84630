/* cli_top.c - "postino top": a live view of the sites (state, connections,
 * messages sent in the last minute, jobs in qmgr's memory, messages queued
 * in the index, the last deferral's reason) and the queue's totals,
 * redrawn each second with ANSI escapes (no curses), q to quit. When
 * stdout is not a terminal it prints the table once and exits, for
 * scripts and tests.
 *
 * Each second costs qmgr one site_list (its in-memory sites). The totals
 * (request=stats) and the queued messages per site (request=summary) are
 * one pass over the index each, so they are asked again only after ten
 * times as long as they took (at least each second): top never keeps qmgr
 * busy more than a tenth of the time, however big the queue. */
#include "cli/cli.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/util/attr.h"
#include "common/util/buf.h"
#include "common/mail/dsn.h"

struct top_site {
    char *name, *state, *last_defer;
    long long conns, limit, rate, jobs, queued;
    int live; /* in qmgr's site table now */
};

struct top {
    struct top_site *s;
    size_t n, cap;
    long long totals[5];  /* incoming active deferred hold total */
    struct top_site *idx; /* queued messages per site from the index */
    size_t nidx, capidx;
    double slow_next; /* when to ask stats and summary again */
};

static const char *const total_names[5] = { "incoming", "active", "deferred", "hold", "total" };
static volatile sig_atomic_t top_stop;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void site_clear(struct top_site *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].state);
        free(v[i].last_defer);
    }
}

static long long ll(const attr_t *r, const char *name)
{
    long long v = 0;
    attr_get_ll(r, name, &v);
    return v;
}

/* One request, its records until end=1: each to fn. 0, or -1 (said why). */
static int ask(attr_t *req, void (*fn)(struct top *t, const attr_t *rec), struct top *t)
{
    attr_t rec = ATTR_INIT, reply = ATTR_INIT;
    buf_t in = BUF_INIT;
    int fd = cli_control_send(req), rc = -1;

    while (fd >= 0 && cli_control_read(fd, &in, &rec) == 0) {
        if (attr_get(&rec, "status") && !attr_get(&rec, "end")) {
            if (strcmp(attr_get(&rec, "status"), "ok") == 0) {
                fn(t, &rec); /* stats: one record */
                rc = 0;
            } else {
                cli_err("%s", attr_get_def(&rec, "reason", "request failed"));
            }
            break;
        }
        if (attr_get(&rec, "end")) {
            rc = 0;
            break;
        }
        fn(t, &rec);
    }
    if (fd >= 0)
        close(fd);
    attr_destroy(&rec);
    attr_destroy(&reply);
    buf_destroy(&in);
    return rc;
}

static void on_site(struct top *t, const attr_t *r)
{
    t->s = xgrow(t->s, &t->cap, t->n + 1, sizeof(*t->s));
    struct top_site *s = &t->s[t->n++];
    memset(s, 0, sizeof(*s));
    s->name = xstrdup(attr_get_def(r, "name", "?"));
    s->state = xstrdup(attr_get_def(r, "state", "?"));
    s->last_defer = xstrdup(attr_get_def(r, "last_defer", ""));
    s->conns = ll(r, "conns");
    s->limit = ll(r, "limit");
    s->rate = ll(r, "rate");
    s->jobs = ll(r, "queued");
    s->live = 1;
}

static void on_stats(struct top *t, const attr_t *r)
{
    for (int i = 0; i < 5; i++)
        t->totals[i] = ll(r, total_names[i]);
}

static void on_summary_row(struct top *t, const attr_t *r)
{
    t->idx = xgrow(t->idx, &t->capidx, t->nidx + 1, sizeof(*t->idx));
    struct top_site *s = &t->idx[t->nidx++];
    memset(s, 0, sizeof(*s));
    s->name = xstrdup(attr_get_def(r, "name", "?"));
    s->queued = ll(r, "total");
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct top_site *)a)->name, ((const struct top_site *)b)->name);
}

static int by_size(const void *a, const void *b)
{
    const struct top_site *x = a, *y = b;
    if (x->queued != y->queued)
        return x->queued > y->queued ? -1 : 1;
    if (x->jobs != y->jobs)
        return x->jobs > y->jobs ? -1 : 1;
    if (x->rate != y->rate)
        return x->rate > y->rate ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* The index's queued counts go to the live sites; the rest (sites qmgr
 * holds nothing of in memory) become rows of their own. */
static void merge(struct top *t)
{
    qsort(t->s, t->n, sizeof(*t->s), by_name);
    size_t live = t->n;
    for (size_t i = 0; i < t->nidx; i++) {
        struct top_site *hit = bsearch(&t->idx[i], t->s, live, sizeof(*t->s), by_name);
        if (hit) {
            hit->queued = t->idx[i].queued;
            continue;
        }
        t->s = xgrow(t->s, &t->cap, t->n + 1, sizeof(*t->s));
        struct top_site *s = &t->s[t->n++];
        memset(s, 0, sizeof(*s));
        s->name = xstrdup(t->idx[i].name);
        s->state = xstrdup("-");
        s->last_defer = xstrdup("");
        s->queued = t->idx[i].queued;
    }
    qsort(t->s, t->n, sizeof(*t->s), by_size);
}

/* Ask qmgr what a refresh needs: 0, or -1 (said why). */
static int refresh(struct top *t)
{
    attr_t req = cli_control_request("site_list");
    int rc;

    site_clear(t->s, t->n);
    t->n = 0;
    rc = ask(&req, on_site, t);
    attr_destroy(&req);
    double start = now_s();
    if (rc == 0 && start >= t->slow_next) {
        attr_t st = cli_control_request("stats"), sum = cli_control_request("summary");
        site_clear(t->idx, t->nidx);
        t->nidx = 0;
        rc = ask(&st, on_stats, t);
        if (rc == 0)
            rc = ask(&sum, on_summary_row, t);
        attr_destroy(&st);
        attr_destroy(&sum);
        double took = now_s() - start;
        t->slow_next = start + (took * 10 > 1 ? took * 10 : 1);
    }
    if (rc == 0)
        merge(t);
    return rc;
}

static const char *safe(const char *v, buf_t *b)
{
    buf_reset(b);
    dsn_safe_addr(b, v, 0);
    return buf_str(b);
}

/* The screen: rows 0 = all of them; width 0 = lines not cut. */
static void draw(const struct top *t, size_t rows, size_t width, int live)
{
    char when[32] = "";
    time_t now = time(NULL);
    struct tm tm;
    long long rate = 0;
    buf_t line = BUF_INIT, a = BUF_INIT, b = BUF_INIT;

    for (size_t i = 0; i < t->n; i++)
        rate += t->s[i].rate;
    if (localtime_r(&now, &tm))
        strftime(when, sizeof when, "%H:%M:%S", &tm);
    if (live)
        fputs("\033[H\033[2J", stdout);
    printf("postino top - %s%s\n", when, live ? "  (q to quit)" : "");
    printf("queue: %lld incoming, %lld active, %lld deferred, %lld hold, %lld total; "
           "%lld msg/min sent; %zu sites\n\n",
           t->totals[0], t->totals[1], t->totals[2], t->totals[3], t->totals[4], rate, t->n);
    printf("%-32s %-9s %7s %7s %6s %8s  %s\n", "SITE", "STATE", "CONNS", "MSG/MIN", "JOBS",
           "QUEUED", "LAST DEFERRAL");
    for (size_t i = 0; i < t->n && (rows == 0 || i + 4 < rows); i++) {
        const struct top_site *s = &t->s[i];
        buf_reset(&line);
        buf_printf(&line, "%-32s %-9s ", safe(s->name, &a), s->state);
        if (s->live)
            buf_printf(&line, "%3lld/%-3lld %7lld %6lld", s->conns, s->limit, s->rate, s->jobs);
        else
            buf_printf(&line, "%7s %7s %6s", "-", "-", "-");
        buf_printf(&line, " %8lld  %s", s->queued, safe(s->last_defer, &b));
        if (width > 0 && line.len > width)
            buf_truncate(&line, width);
        printf("%s\n", buf_str(&line));
    }
    fflush(stdout);
    buf_destroy(&line);
    buf_destroy(&a);
    buf_destroy(&b);
}

static void on_signal(int sig)
{
    top_stop = 1;
}

/* Live mode: raw keys, the alternate screen, redraw each second. */
static int top_live(struct top *t)
{
    struct termios saved, raw;
    struct sigaction sa;
    int rc = CLI_OK, tty_in = tcgetattr(STDIN_FILENO, &saved) == 0;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (tty_in) {
        raw = saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    }
    fputs("\033[?1049h\033[?25l", stdout);
    while (!top_stop) {
        struct winsize ws = { 0, 0, 0, 0 };
        ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws);
        if (refresh(t) < 0) {
            rc = CLI_ERR;
            break;
        }
        draw(t, ws.ws_row, ws.ws_col, 1);
        struct pollfd p = { STDIN_FILENO, POLLIN, 0 };
        char ch;
        if (poll(&p, 1, 1000) > 0 && read(STDIN_FILENO, &ch, 1) == 1 && (ch == 'q' || ch == 'Q'))
            break;
    }
    fputs("\033[?25h\033[?1049l", stdout);
    fflush(stdout);
    if (tty_in)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    return rc;
}

int cli_cmd_top(struct cli *c, int argc, char **argv)
{
    struct top t;
    int rc;

    if (argc != 1)
        return cli_usage("top");
    memset(&t, 0, sizeof(t));
    if (isatty(STDOUT_FILENO))
        rc = top_live(&t);
    else
        rc = refresh(&t) == 0 ? (draw(&t, 0, 0, 0), CLI_OK) : CLI_ERR;
    site_clear(t.s, t.n);
    site_clear(t.idx, t.nidx);
    free(t.s);
    free(t.idx);
    return rc;
}
