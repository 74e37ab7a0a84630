/* gcra.c - GCRA rate limiting (see gcra.h); the Lua twin is in
 * qmgr/qmgr_shared.c. */
#include "common/mail/gcra.h"

/* Slack for rounding: a TAT that lands a hair after now (0.1 added ten
 * times) still counts as due. Redis stores the TAT to the microsecond. */
#define GCRA_SLACK 1e-6

void gcra_set_rate(struct gcra *g, double per_sec, int burst)
{
    if (burst < 1)
        burst = 1;
    g->interval = per_sec > 0 ? 1.0 / per_sec : 0;
    g->tolerance = g->interval * (burst - 1);
}

void gcra_init(struct gcra *g, double per_sec, int burst)
{
    g->tat = 0;
    gcra_set_rate(g, per_sec, burst);
}

int gcra_take(struct gcra *g, double now, double *wait)
{
    double tat = g->tat > now ? g->tat : now;

    if (g->interval <= 0 || tat - now <= g->tolerance + GCRA_SLACK) {
        g->tat = tat + g->interval;
        if (wait)
            *wait = 0;
        return 1;
    }
    if (wait)
        *wait = tat - now - g->tolerance;
    return 0;
}
