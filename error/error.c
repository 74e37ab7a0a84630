/* error.c - the error agent: every recipient fails with the text of the
 * nexthop, as Postfix's error(8): transport_maps "example.test
 * error:5.1.1 no such users here" bounces, "error:4.7.1 try later"
 * defers. A nexthop without a status code bounces with 5.0.0. */
#include <ctype.h>
#include <string.h>

#include "common/mail/lagent.h"

/* "X.Y.Z" with X 4 or 5: its length, else 0. */
static size_t dsn_len(const char *s)
{
    size_t i = 1;
    if (s[0] != '4' && s[0] != '5')
        return 0;
    for (int part = 0; part < 2; part++) {
        size_t d = 0;
        if (s[i++] != '.')
            return 0;
        while (isdigit((unsigned char)s[i]) && d < 3)
            i++, d++;
        if (d == 0)
            return 0;
    }
    return s[i] == '\0' || s[i] == ' ' ? i : 0;
}

static void deliver(struct lagent_job *job, size_t idx, struct lagent_res *res)
{
    const char *t = job->nexthop;
    size_t n = dsn_len(t);
    char dsn[12] = "5.0.0";

    if (n > 0 && n < sizeof(dsn)) {
        memcpy(dsn, t, n);
        dsn[n] = '\0';
        t += n;
        while (*t == ' ')
            t++;
    }
    lagent_set(res, dsn[0] == '4' ? QR_DEFERRED : QR_BOUNCED, dsn, BCLASS_OTHER, "%s",
               *t ? t : "delivery refused by the error transport");
}

int main(int argc, char **argv)
{
    static const struct lagent_ops ops = { .name = "error", .deliver = deliver };
    return lagent_main(argc, argv, &ops);
}
