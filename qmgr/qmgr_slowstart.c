/* qmgr_slowstart.c - AIMD concurrency per site (see qmgr_slowstart.h for the
 * rules). Integers only, no clock: the unit of time is a delivery result,
 * which is what a round of TCP's window is made of too. */
#include "qmgr/qmgr_slowstart.h"

static int clamp(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

void qmgr_slowstart_init(struct qmgr_slowstart *ss, int initial, int cap)
{
    ss->cap = cap < 1 ? 1 : cap;
    ss->limit = clamp(initial, 1, ss->cap);
    ss->ssthresh = ss->cap;
    ss->credit = 0;
    ss->grace = 0;
}

void qmgr_slowstart_set_cap(struct qmgr_slowstart *ss, int cap)
{
    ss->cap = cap < 1 ? 1 : cap;
    ss->limit = clamp(ss->limit, 1, ss->cap);
    ss->ssthresh = clamp(ss->ssthresh, 1, ss->cap);
    if (ss->grace > ss->cap)
        ss->grace = ss->cap;
}

void qmgr_slowstart_success(struct qmgr_slowstart *ss)
{
    if (ss->grace > 0) {
        ss->grace--; /* under way before the last cut: no growth yet */
        return;
    }
    if (ss->limit >= ss->cap) {
        ss->credit = 0;
        return;
    }
    if (ss->limit < ss->ssthresh) {
        ss->limit++;
        return;
    }
    if (++ss->credit >= ss->limit) {
        ss->credit = 0;
        ss->limit++;
    }
}

void qmgr_slowstart_failure(struct qmgr_slowstart *ss)
{
    if (ss->grace > 0) {
        ss->grace--; /* under way before the last cut: already accounted */
        return;
    }
    /* what was in flight at this cut may still report; ourselves excluded */
    ss->grace = ss->limit - 1;
    ss->limit = ss->limit / 2 < 1 ? 1 : ss->limit / 2;
    ss->ssthresh = ss->limit;
    ss->credit = 0;
}

int qmgr_slowstart_limit(const struct qmgr_slowstart *ss)
{
    return ss->limit;
}
