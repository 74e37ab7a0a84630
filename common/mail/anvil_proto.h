/* anvil_proto.h - what smtpd's anvil client and the anvil service agree
 * on: the events counted, their request and reply attribute names, and the
 * counters a reply carries (see anvil/anvil.c for the protocol). */
#ifndef POSTINO_ANVIL_PROTO_H
#define POSTINO_ANVIL_PROTO_H

#define ANVIL_SOCK "private/anvil" /* relative to queue_directory */

enum anvil_event {
    ANVIL_EV_CONN,      /* connection (rate; the count is separate) */
    ANVIL_EV_MSG,       /* message (MAIL FROM) */
    ANVIL_EV_RCPT,      /* recipient (RCPT TO) */
    ANVIL_EV_AUTH,      /* AUTH command */
    ANVIL_EV_AUTH_FAIL, /* failed AUTH */
    ANVIL_EV_N
};
#define ANVIL_IDENT_MAX 300 /* longest ident accepted */

/* Counters of one ident, as the service reports them. */
struct anvil_counts {
    long count;            /* concurrent connections */
    long rate[ANVIL_EV_N]; /* events in the current window */
    int unavailable;       /* client side only: anvil did not answer,
                               * the counters are 0 (fail open) */
};

/* Attribute name of each event's rate in lookup replies ("rate",
 * "message_rate", ...), and request name ("connect", "message", ...). */
const char *anvil_rate_attr(enum anvil_event ev);
const char *anvil_event_request(enum anvil_event ev);

#endif
