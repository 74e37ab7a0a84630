/* anvil.c - the per-client limit service (Postfix's anvil): counts, over
 * all smtpd processes, each client's concurrent connections and its
 * connection, message, recipient, AUTH and failed-AUTH rates in a window of
 * anvil_rate_time_unit. smtpd decides; anvil only counts.
 *
 * Every smtpd keeps one persistent connection on private/anvil and sends
 * requests (records per attr.h, proto=1), answered in order:
 *   request=connect    ident=SERVICE:ADDR -> status=ok count=N rate=N
 *   request=disconnect ident=...          -> status=ok count=N
 *   request=message|recipient|auth_fail ident=... -> status=ok rate=N
 *   request=auth       ident=...          -> status=ok rate=N auth_fail_rate=N
 *   request=lookup     ident=...          -> status=ok count= rate=
 *       message_rate= recipient_rate= auth_rate= auth_fail_rate=
 *   request=status  (no ident)            -> status=ok size=<idents held>
 *   an unknown request: status=fail reason=TEXT, the connection stays up.
 *   A malformed record (undecodable, without proto=1, without a request,
 *   without a valid ident) is answered status=fail reason=TEXT and the
 *   connection closed, nothing of it applied (the one policy of
 *   common/util/conn.h). anvil_serve.c serves the connections.
 * When an smtpd connection closes, the concurrent connections it reported
 * are released: that smtpd is gone, and so are its clients.
 * Rates use a fixed window per client (see anvil/anvil_rate.h).
 *
 * A reload does not restart anvil (master keeps it unless its master.cf
 * row or a start-up parameter changed): the counters are what the limits
 * are made of, and every smtpd, old or new, keeps its connection. A new
 * anvil_rate_time_unit applies to windows opened from then on. */
#include <stdlib.h>

#include "anvil/anvil.h"
#include "anvil/anvil_rate.h"
#include "common/mail/conf.h"
#include "common/mail/server.h"

static struct anvil_table *table;

static void on_accept(struct server *s, int fd, int idx)
{
    anvil_serve_accept(s->base, fd, table);
}

static void post_drop(struct server *s)
{
    table = anvil_table_new(conf_int("anvil_rate_time_unit") * 1000, ANVIL_DEFAULT_MAX_ENTRIES);
    anvil_timers_start(s, table);
}

static void on_reload(struct server *s)
{
    long long w = conf_int("anvil_rate_time_unit") * 1000;
    if (w == anvil_table_window(table))
        return;
    anvil_table_set_window(table, w);
    anvil_timers_stop();
    anvil_timers_start(s, table);
}

static void on_stop(struct server *s)
{
    server_stop_accepting(s);
    anvil_stats_log(table, anvil_now_ms());
    anvil_serve_close_all();
    anvil_timers_stop();
    server_exit(s);
}

int main(int argc, char **argv)
{
    static const struct server_hooks hooks = {
        .post_drop = post_drop,
        .on_accept = on_accept,
        .on_stop = on_stop,
        .on_reload = on_reload,
    };
    int rc = server_main(argc, argv, "anvil", &hooks, NULL);
    anvil_table_free(table);
    return rc;
}
