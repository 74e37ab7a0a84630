/* discard.c - the discard agent: every recipient counts as delivered and
 * the message goes nowhere (Postfix's discard(8)); the nexthop is the
 * reason logged. */
#include "common/mail/lagent.h"

static void deliver(struct lagent_job *job, size_t idx, struct lagent_res *res)
{
    lagent_set(res, QR_SENT, "2.0.0", BCLASS_OTHER, "%s",
               *job->nexthop ? job->nexthop : "discarded");
}

int main(int argc, char **argv)
{
    static const struct lagent_ops ops = { .name = "discard", .deliver = deliver };
    return lagent_main(argc, argv, &ops);
}
