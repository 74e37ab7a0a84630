/* suppress_bench.c - how the suppression list's lookups scale: load N
 * entries (10^5, 10^6, 10^7 by default) into a fresh store, then time
 * random lookups through a second handle on the same environment (as
 * smtpd and qmgr read it), half of them hits, half misses. A B-tree
 * lookup is O(log n): the time per lookup should grow with the tree's
 * depth, not with n. Asserts nothing; prints one row per size.
 *
 *   suppress_bench [DIR [N...]]    (DIR: where the stores go, default /tmp) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/mail/suppress.h"
#include "common/util/buf.h"

#define LOOKUPS 200000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Entry i's address; i's order is the key order, so the load appends.
 * miss: an address that sorts right after it (a leaf anywhere in the tree). */
static void addr_of(unsigned long i, int miss, char *out, size_t n)
{
    snprintf(out, n, "user%09lu@bulk-%02lu.example%s", i, i % 97, miss ? "x" : "");
}

static int load(struct suppress *w, unsigned long n)
{
    struct suppress_entry e = {
        (char *)"", NULL, (char *)"bad-mailbox", (char *)"550 5.1.1 user unknown", 1700000000, 0
    };
    buf_t err = BUF_INIT;
    char a[64];

    for (unsigned long i = 0; i < n; i++) {
        addr_of(i, 0, a, sizeof(a));
        e.address = a;
        if (suppress_put(w, &e, &err) < 0) {
            fprintf(stderr, "put %s: %s\n", a, err.data);
            return -1;
        }
    }
    buf_destroy(&err);
    return suppress_sync(w);
}

/* Mean microseconds per lookup of random entries (or of addresses that
 * sort between them: misses). */
static double lookups(struct suppress *r, unsigned long n, int hit, unsigned *seed)
{
    char a[64];
    long found = 0;
    double t0 = now_s();

    for (int i = 0; i < LOOKUPS; i++) {
        addr_of((unsigned long)rand_r(seed) % n, !hit, a, sizeof(a));
        found += suppress_get(r, "", a, 1, NULL) == SUPPRESS_FOUND;
    }
    double dt = now_s() - t0;
    if (found != (hit ? LOOKUPS : 0))
        fprintf(stderr, "warning: %ld of %d lookups found\n", found, LOOKUPS);
    return dt * 1e6 / LOOKUPS;
}

static int run(const char *base, unsigned long n)
{
    buf_t dir = BUF_INIT, err = BUF_INIT, cmd = BUF_INIT;
    unsigned seed = 12345;
    int rc = -1;

    buf_printf(&dir, "%s/suppress_bench.%ld.%lu", base, (long)getpid(), n);
    struct suppress *w = suppress_open(dir.data, SUPPRESS_WRITE, NULL, &err);
    if (w == NULL) {
        fprintf(stderr, "%s\n", err.data);
        goto out;
    }
    double t0 = now_s();
    if (load(w, n) == 0) {
        double tl = now_s() - t0;
        struct suppress *r = suppress_open(dir.data, SUPPRESS_READ, NULL, &err);
        if (r) {
            double hit = lookups(r, n, 1, &seed), miss = lookups(r, n, 0, &seed);
            printf("%12lu %12.0f %14.2f %14.2f\n", n, n / tl, hit, miss);
            fflush(stdout);
            suppress_close(r);
            rc = 0;
        }
    }
    suppress_close(w);
out:
    buf_printf(&cmd, "rm -rf '%s'", dir.data);
    if (system(cmd.data) != 0)
        fprintf(stderr, "cannot remove %s\n", dir.data);
    buf_destroy(&dir);
    buf_destroy(&err);
    buf_destroy(&cmd);
    return rc;
}

int main(int argc, char **argv)
{
    static const unsigned long sizes[] = { 100000, 1000000, 10000000 };
    const char *base = argc > 1 ? argv[1] : "/tmp";
    int rc = 0;

    printf("%12s %12s %14s %14s\n", "entries", "load/s", "hit us/lookup", "miss us/lookup");
    if (argc > 2)
        for (int i = 2; i < argc; i++)
            rc |= run(base, strtoul(argv[i], NULL, 10));
    else
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
            rc |= run(base, sizes[i]);
    return rc ? 1 : 0;
}
