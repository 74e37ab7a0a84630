/* bounce.h - the bounce daemon's parts: connection handling (bounce.c)
 * and building/queueing one notification (bounce_notify.c). */
#ifndef POSTINO_BOUNCE_H
#define POSTINO_BOUNCE_H

#include "common/util/attr.h"

/* Handle one request record from qmgr (proto.h) and fill the reply.
 * Returns 0 to keep the connection, -1 to close it after the reply
 * (protocol version mismatch). */
int bounce_request(const char *spool, const attr_t *req, attr_t *reply);

#endif
