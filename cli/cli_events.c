/* cli_events.c - what "postino check" says about the event stream (issue
 * #11): a webhook URL the events daemon could not use, and events asked
 * for (event_log, event_webhook_url) while master.cf runs no events
 * service to write them. */
#include "cli/cli.h"

#include <string.h>

#include "common/mail/conf.h"
#include "common/mail/mevent.h"
#include "common/util/buf.h"

int cli_events_check(const struct master_ent *ents, size_t n)
{
    const char *url = conf_str("event_webhook_url");
    buf_t err = BUF_INIT;
    int rc = 0, served = 0;
    if (*url && mevent_url_check(url, &err) < 0) {
        cli_err("%s", buf_str(&err));
        rc = -1;
    }
    for (size_t i = 0; i < n; i++)
        served |= ents[i].argv && ents[i].argv[0] && strcmp(ents[i].argv[0], "events") == 0;
    if ((*url || *conf_str("event_log")) && !served) {
        cli_err("event_log or event_webhook_url is set, but master.cf runs no events service "
                "(add: events unix - - n - 1 events)");
        rc = -1;
    }
    buf_destroy(&err);
    return rc;
}
