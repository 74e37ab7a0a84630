/* anvil_proto.c - the names of the anvil protocol (anvil_proto.h). */
#include "common/mail/anvil_proto.h"

static const char *const rate_attrs[ANVIL_EV_N] = {
    "rate", "message_rate", "recipient_rate", "auth_rate", "auth_fail_rate",
};
static const char *const ev_requests[ANVIL_EV_N] = {
    "connect", "message", "recipient", "auth", "auth_fail",
};

const char *anvil_rate_attr(enum anvil_event ev)
{
    return (unsigned)ev < ANVIL_EV_N ? rate_attrs[ev] : "?";
}

const char *anvil_event_request(enum anvil_event ev)
{
    return (unsigned)ev < ANVIL_EV_N ? ev_requests[ev] : "?";
}
