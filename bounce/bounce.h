/* bounce.h - the bounce daemon's parts: connection handling (bounce.c)
 * and building/queueing one notification (bounce_notify.c). */
#ifndef POSTINO_BOUNCE_H
#define POSTINO_BOUNCE_H

#include "common/util/attr.h"
#include "common/util/conn.h"

/* Handle one request record from qmgr (proto.h; conn checked its proto)
 * and fill the reply. A request qmgr cannot have meant (no valid
 * queue_id, a recipient index out of range) is malformed: CONN_DROP with
 * *why, no reply, and nothing of it applied. A request that cannot be
 * done now (an unknown kind, an unreadable queue file) is answered
 * status=fail and the connection stays. */
enum conn_verdict bounce_notify_request(const char *spool, const attr_t *req, attr_t *reply,
                                        const char **why);

#endif
