/* gcra.h - the Generic Cell Rate Algorithm: a smooth message-rate limit.
 *
 * A limit of per_sec with a burst of b lets a message go when its
 * theoretical arrival time (TAT) is no more than (b - 1) emission
 * intervals ahead of now; each message moves the TAT one interval on.
 * No bucket refills at the top of the hour, so sending is spread evenly.
 * Pure arithmetic on caller-supplied times (seconds, any epoch), so the
 * same steps run in qmgr and, for several nodes, in Redis's Lua
 * (qmgr/qmgr_shared.c): the two must stay identical. */
#ifndef POSTINO_GCRA_H
#define POSTINO_GCRA_H

struct gcra {
    double interval;  /* seconds between messages (0: no limit) */
    double tolerance; /* how far the TAT may run ahead of now */
    double tat;       /* theoretical arrival time of the next message */
};

/* per_sec <= 0: unlimited; burst < 1 counts as 1. Keeps no history. */
void gcra_init(struct gcra *g, double per_sec, int burst);
/* Changes the limit, keeping the TAT (a reload or a throttle). */
void gcra_set_rate(struct gcra *g, double per_sec, int burst);
/* 1: a message may go now (and is counted); 0: *wait seconds until one may
 * (nothing counted). wait may be NULL. */
int gcra_take(struct gcra *g, double now, double *wait);

#endif
