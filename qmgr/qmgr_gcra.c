/* qmgr_gcra.c - the Generic Cell Rate Algorithm (see qmgr_gcra.h for why).
 *
 * A unit that arrives at now conforms when the theoretical arrival time
 * TAT is at most now + tau; taking it moves TAT to max(TAT, now) +
 * interval. A limiter idle for long does not bank credit beyond tau. */
#include "qmgr/qmgr_gcra.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void qmgr_gcra_set(struct gcra *g, double per_sec, int burst)
{
    if (burst < 1)
        burst = 1;
    g->interval = per_sec > 0 ? 1.0 / per_sec : 0;
    g->tau = (double)(burst - 1) * g->interval;
}

void qmgr_gcra_init(struct gcra *g, double per_sec, int burst)
{
    g->tat = 0;
    qmgr_gcra_set(g, per_sec, burst);
}

int qmgr_gcra_peek(const struct gcra *g, double now, double *wait)
{
    double tat = g->tat > now ? g->tat : now;

    *wait = 0;
    if (g->interval <= 0)
        return 1;
    if (tat - now > g->tau) {
        *wait = tat - g->tau - now;
        return 0;
    }
    return 1;
}

int qmgr_gcra_take(struct gcra *g, double now, double *wait)
{
    if (!qmgr_gcra_peek(g, now, wait))
        return 0;
    if (g->interval > 0)
        g->tat = (g->tat > now ? g->tat : now) + g->interval;
    return 1;
}

double qmgr_gcra_rate(const struct gcra *g)
{
    return g->interval > 0 ? 1.0 / g->interval : 0;
}

int qmgr_gcra_parse_rate(const char *s, double *per_sec)
{
    char *end;
    double n, unit;

    *per_sec = 0;
    if (s == NULL || strcmp(s, "0") == 0 || strcmp(s, "unlimited") == 0)
        return 0;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    n = strtod(s, &end);
    if (errno || n <= 0 || *end != '/' || end[1] == '\0' || end[2] != '\0')
        return -1;
    switch (end[1]) {
    case 's':
        unit = 1;
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    case 'd':
        unit = 86400;
        break;
    default:
        return -1;
    }
    *per_sec = n / unit;
    return 0;
}
