/* qmgr_gcra.h - the Generic Cell Rate Algorithm: a smooth rate limit.
 *
 * Why GCRA: it keeps one number per limit (the theoretical arrival time
 * of the next unit), spaces units evenly at 1/rate (no burst at the top
 * of an hour as a fixed window has), allows a configurable burst, and its
 * arithmetic is a few lines, so a shared limiter (a Redis Lua script) can
 * run exactly the same computation. Pure: the caller passes the time. */
#ifndef POSTINO_QMGR_GCRA_H
#define POSTINO_QMGR_GCRA_H

struct gcra {
    double interval; /* seconds per unit (1 / rate); 0: unlimited */
    double tau;      /* burst tolerance: (burst - 1) * interval */
    double tat;      /* theoretical arrival time of the next unit */
};

/* per_sec <= 0: unlimited. burst < 1 counts as 1. */
void qmgr_gcra_init(struct gcra *g, double per_sec, int burst);
/* Change the rate/burst keeping the state (a reload, a throttle). */
void qmgr_gcra_set(struct gcra *g, double per_sec, int burst);
/* 1: a unit may go now (taken); 0: not before *wait seconds from now. */
int qmgr_gcra_take(struct gcra *g, double now, double *wait);
/* Like qmgr_gcra_take without taking: 1 when a unit could go now. */
int qmgr_gcra_peek(const struct gcra *g, double now, double *wait);
/* The configured rate in units per second (0: unlimited). */
double qmgr_gcra_rate(const struct gcra *g);

/* Parse a rate "N/s", "N/m", "N/h" or "N/d" (N a positive number; "0"
 * or "unlimited" for none) into units per second. 0 or -1 (malformed). */
int qmgr_gcra_parse_rate(const char *s, double *per_sec);

#endif
