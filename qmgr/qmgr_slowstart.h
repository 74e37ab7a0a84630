/* qmgr_slowstart.h - a site's concurrency from how its deliveries go.
 *
 * Feedback without rules: a site starts with few connections, gets more
 * while deliveries succeed and fewer when it defers or refuses connections,
 * never more than its cap (max_connections) and never fewer than one. The
 * shape is TCP's congestion control (AIMD):
 *
 *   slow start      below the threshold each success adds one connection,
 *                   so the limit doubles per round of deliveries;
 *   avoidance       at or above the threshold it takes `limit` successes
 *                   (one round) to add one;
 *   decrease        a deferral or a connection failure halves the limit
 *                   (rounded down, at least 1) and sets the threshold
 *                   there, so growth after it is linear;
 *   one cut a round the results of deliveries that were already under way
 *                   at a cut (up to the limit before it) do not cut again:
 *                   ten connections that all get the same 421 halve the
 *                   limit once, not ten times; nor do their successes
 *                   grow it.
 *
 * Pure arithmetic on integers; qmgr feeds it each delivery's outcome and
 * reads the limit when it opens connections. */
#ifndef POSTINO_QMGR_SLOWSTART_H
#define POSTINO_QMGR_SLOWSTART_H

struct qmgr_slowstart {
    int limit;    /* connections allowed now, 1..cap */
    int cap;      /* the configured maximum, >= 1 */
    int ssthresh; /* slow start below, linear growth at or above */
    int credit;   /* successes counted towards the next +1 (avoidance) */
    int grace;    /* results still exempt from another cut */
};

/* Start at `initial` (clamped to 1..cap) with the threshold at the cap. */
void qmgr_slowstart_init(struct qmgr_slowstart *ss, int initial, int cap);
/* A new cap (a reload, a rule's connections=N): the limit is clamped to it
 * at once, the threshold too. */
void qmgr_slowstart_set_cap(struct qmgr_slowstart *ss, int cap);
/* A delivery that succeeded (2xx for the message). */
void qmgr_slowstart_success(struct qmgr_slowstart *ss);
/* A deferral (4xx) or a connection that could not be made. */
void qmgr_slowstart_failure(struct qmgr_slowstart *ss);
/* Connections allowed now. */
int qmgr_slowstart_limit(const struct qmgr_slowstart *ss);

#endif
