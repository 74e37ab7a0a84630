/* proto.h - what the daemons say to each other (records per attr.h).
 *
 * Sockets (created by master unless noted), relative to queue_directory:
 *   private/qmgr     qmgr: notifications from smtpd and bounce
 *   private/<tr>     delivery agent for transport <tr> ("smtp"); qmgr connects
 *   private/bounce   bounce: notification requests from qmgr
 *   public/control   created by qmgr itself: the CLI's queue requests;
 *                    mode 0666, permission checked per request by SO_PEERCRED
 *                    (root, mail_owner and members of its group may do
 *                    everything; others nothing: status=fail reason=permission denied)
 * Every request carries proto=PROTO_VERSION; a peer that sees another
 * version answers status=fail reason=... and closes.
 *
 * smtpd -> qmgr (persistent connection, no reply):
 *   request=new  queue_id=ID
 *
 * qmgr -> delivery (persistent connection; one job at a time per connection):
 *   request=deliver  queue_id=ID  nexthop=NEXTHOP  rcpt=IDX (repeated)
 *     NEXTHOP: "example.com" (MX lookup), "[host]" or "[host]:port" (no MX
 *     lookup), "host:port" (MX lookup off? no: A/AAAA of host, like [host]).
 *   delivery reads sender, DSN parameters and content from the queue file,
 *   appends a result record per recipient to the queue file (BEFORE it
 *   replies), logs the Postfix "to=<..>, relay=..., status=..." line, then
 *   answers:
 *   status=ok  queue_id=ID
 *   rcpt=IDX  result=sent|deferred|bounced  dsn=X.Y.Z  reason=TEXT   (one
 *       quadruple per recipient, in the same order as the request)
 *   dest=ok|fail   "fail": no server of the destination could be reached or
 *       all greeted with 4xx (qmgr suspends the destination for a while)
 *
 * qmgr -> bounce (persistent connection; one request at a time):
 *   request=bounce|delay|success  queue_id=ID  rcpt=IDX (repeated)
 *   bounce builds an RFC 3464 report for those recipients (reasons from the
 *   queue file's result records), queues it with the null sender, appends
 *   dsn_sent records to the original and answers (bounce does NOT send
 *   request=new: qmgr adds NEWID itself when it reads a non-empty one)
 *   status=ok  queue_id=NEWID ("" when nothing was sent: null sender,
 *   NOTIFY=NEVER ...)   or   status=fail reason=TEXT
 *
 * CLI -> qmgr (public/control; request, then reply records):
 *   request=list [queue_id=ID]... [domain=D] [sender=S] [state=S]
 *     -> one record per message: queue_id state size arrival sender
 *        rcpt (repeated, pending ones) reason; then a last record end=1 count=N
 *   request=flush                                   -> status=ok count=N
 *   request=delete|hold|release|requeue  (queue_id=ID... | domain=D |
 *       sender=S | all=1)                           -> status=ok count=N
 *   request=stats -> status=ok incoming= active= deferred= hold= total=
 *   errors: status=fail reason=TEXT
 *
 * daemons -> metrics (private/metrics; records only, no reply; see
 * common/mail/metric.h):
 *   request=add  metric=NAME  value=N  label=V (per label of the metric)
 * metrics -> qmgr (public/control, at each scrape):
 *   request=metrics -> one record per gauge sample: metric=NAME value=N
 *       label=V...; then end=1 count=N
 * any daemon -> events (private/events, persistent, no reply; mevent.h):
 *   request=event  type=TYPE  time=SECS.MSECS  (fields of the event, named
 *       as in docs/events.schema.json)   a malformed one: status=fail, closed
 */
#ifndef POSTINO_PROTO_H
#define POSTINO_PROTO_H

#define PROTO_VERSION "1"

#define SOCK_QMGR        "private/qmgr"
#define SOCK_BOUNCE      "private/bounce"
#define SOCK_CONTROL     "public/control"
#define SOCK_PRIVATE_DIR "private"
#define SOCK_METRICS     "private/metrics"
#define SOCK_EVENTS      "private/events"

#endif
