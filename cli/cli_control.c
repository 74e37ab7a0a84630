/* cli_control.c - the CLI's side of qmgr's public/control socket: connect,
 * send a request, read reply records (blocking: a command, not an event
 * loop). A malformed reply gets the daemons' policy (conn.h) in a
 * command's terms: nothing of it is used, the command says so and fails.
 * Used by "postino queue ..." and "postino suppress ...". */
#include "cli/cli.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "common/mail/conf.h"
#include "common/mail/proto.h"
#include "common/util/ipc.h"

#define CONTROL_TIMEOUT_MS 60000

int cli_control_connect(void)
{
    buf_t path = BUF_INIT;
    buf_printf(&path, "%s/%s", conf_str("queue_directory"), SOCK_CONTROL);
    int fd = ipc_connect_unix(path.data);
    if (fd < 0 && (errno == EACCES || errno == EPERM))
        cli_err("%s: permission denied (only root and the %s user and group may use the queue)",
                path.data, conf_str("mail_owner"));
    else if (fd < 0)
        cli_err("cannot connect to the queue manager at %s: %s (is postino running?)", path.data,
                strerror(errno));
    buf_destroy(&path);
    return fd;
}

int cli_control_send(const attr_t *req)
{
    int fd = cli_control_connect();
    if (fd >= 0 && attr_write_fd(fd, req) < 0) {
        cli_err("cannot send the request to the queue manager: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

void cli_control_malformed(const char *why)
{
    cli_err("malformed reply from the queue manager: %s", why);
}

int cli_control_read(int fd, buf_t *in, attr_t *rec)
{
    const char *err = NULL;
    if (attr_read_fd(fd, in, rec, CONTROL_TIMEOUT_MS, &err) == 0)
        return 0;
    if (errno == EPROTO)
        cli_control_malformed(err ? err : "undecodable record");
    else
        cli_err("no reply from the queue manager: %s", err ? err : strerror(errno));
    return -1;
}

/* status=ok: 0; status=fail or none: said why, -1. */
static int reply_status(const attr_t *reply)
{
    const char *status = attr_get(reply, "status");
    if (status && strcmp(status, "ok") == 0)
        return 0;
    if (status && strcmp(status, "fail") == 0)
        cli_err("%s", attr_get_def(reply, "reason", "request failed"));
    else
        cli_control_malformed("no status");
    return -1;
}

int cli_control_exchange(int fd, buf_t *in, const attr_t *req, attr_t *reply)
{
    if (attr_write_fd(fd, req) < 0) {
        cli_err("cannot send the request to the queue manager: %s", strerror(errno));
        return -1;
    }
    if (cli_control_read(fd, in, reply) < 0)
        return -1;
    return reply_status(reply);
}

int cli_control_call(const attr_t *req, attr_t *reply)
{
    buf_t in = BUF_INIT;
    int fd = cli_control_connect(), rc = -1;
    if (fd >= 0) {
        rc = cli_control_exchange(fd, &in, req, reply);
        close(fd);
    }
    buf_destroy(&in);
    return rc;
}

attr_t cli_control_request(const char *request)
{
    attr_t req = ATTR_INIT;
    attr_add(&req, "proto", PROTO_VERSION);
    attr_add(&req, "request", request);
    return req;
}
