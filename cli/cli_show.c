/* cli_show.c - "postino queue show ID": print a queue file's envelope,
 * each recipient's latest outcome and the message, like postcat. It reads
 * the file directly, so it works while the mail system is stopped. */
#include "cli/cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util/buf.h"
#include "common/mail/conf.h"
#include "common/mail/dsn.h"
#include "common/mail/qfile.h"

static void show_time(const char *label, long long t)
{
    char when[64] = "";
    time_t tt = (time_t)t;
    struct tm tm;
    if (localtime_r(&tt, &tm))
        strftime(when, sizeof when, "%a %b %e %H:%M:%S %Y", &tm);
    printf("%s: %s\n", label, when);
}

/* Envelope text came from the network: no control characters reach the
 * terminal. Returns a static buffer (one use per printf). */
static const char *safe(const char *v)
{
    static buf_t b;
    buf_reset(&b);
    dsn_safe_addr(&b, v ? v : "", 0);
    return buf_str(&b);
}

/* Optional envelope fields, printed only when present. */
static void show_opt(const char *label, const char *v)
{
    if (v && *v)
        printf("%s: %s\n", label, safe(v));
}

static void show_rcpt(const struct qrcpt *r, size_t i)
{
    buf_t nb = BUF_INIT;
    printf("recipient[%zu]: %s\n", i, safe(r->addr));
    show_opt("  orcpt", r->orcpt);
    if (r->notify) {
        notify_format(r->notify, &nb);
        printf("  notify: %s\n", buf_str(&nb));
    }
    printf("  status: %s", qrcpt_status_name(r->status));
    if (r->dsn) {
        printf(", dsn=%s", safe(r->dsn));
        printf(", relay=%s", safe(r->relay ? r->relay : "none"));
        printf(" (%s)", safe(r->reason));
        if (r->category)
            printf(", category=%s", safe(r->category));
    }
    printf("\n");
    if (r->dsn_sent)
        printf("  notified: %s%s%s\n", r->dsn_sent & NOTIFY_FAILURE ? "failure " : "",
               r->dsn_sent & NOTIFY_DELAY ? "delay " : "",
               r->dsn_sent & NOTIFY_SUCCESS ? "success" : "");
    buf_destroy(&nb);
}

static void show_envelope(const struct qenv *e, const char *path)
{
    static const char *const rets[] = { "", "FULL", "HDRS" };
    printf("*** ENVELOPE RECORDS %s ***\n", path);
    printf("queue_id: %s\n", e->id);
    show_time("arrival_time", (long long)e->arrival.tv_sec);
    printf("message_size: %lld\n", e->content_len);
    printf("client: %s", safe(e->client_name ? e->client_name : "unknown"));
    printf("[%s]\n", safe(e->client_addr ? e->client_addr : "unknown"));
    show_opt("helo", e->helo);
    show_opt("protocol", e->proto);
    show_opt("sasl_method", e->sasl_method);
    show_opt("sasl_username", e->sasl_username);
    show_opt("message_id", e->message_id);
    printf("sender: %s\n", safe(e->sender && *e->sender ? e->sender : "<>"));
    printf("priority: %s\n", e->priority ? safe(e->priority) : "bulk");
    show_opt("verp", e->verp);
    show_opt("verp_return", e->verp_return);
    show_opt("envid", e->envid);
    show_opt("ret", e->ret >= 0 && e->ret <= RET_HDRS ? rets[e->ret] : "?");
    show_opt("body", qbody_name(e->body));
    if (e->smtputf8)
        printf("smtputf8: yes\n");
    if (e->dkim) /* sent ahead of the content shown below */
        printf("dkim: signed\n");
    if (e->hold)
        printf("state: hold\n");
    if (e->warned)
        show_time("delay_warning_sent", e->warned);
    if (!e->complete)
        printf("state: incomplete\n");
    for (size_t i = 0; i < e->nrcpt; i++)
        show_rcpt(&e->rcpt[i], i);
}

/* Copy the content, CRLF shown as LF. */
static int show_content(const char *spool, const char *id)
{
    buf_t err = BUF_INIT;
    long long left = 0;
    char data[65536];
    int fd = qfile_open_content(spool, id, &left, &err);
    if (fd < 0) {
        cli_err("%s: %s", id, buf_str(&err));
        buf_destroy(&err);
        return CLI_ERR;
    }
    printf("*** MESSAGE CONTENTS %s ***\n", id);
    while (left > 0) {
        ssize_t n = read(fd, data, left < (long long)sizeof data ? (size_t)left : sizeof data);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            if (data[i] != '\r' || (i + 1 < n && data[i + 1] != '\n'))
                putchar(data[i]);
        left -= n;
    }
    close(fd);
    printf("*** END OF MESSAGE ***\n");
    buf_destroy(&err);
    return CLI_OK;
}

int cli_cmd_queue_show(struct cli *c, int argc, char **argv)
{
    struct qenv env;
    buf_t err = BUF_INIT, path = BUF_INIT;
    const char *spool = conf_str("queue_directory");
    int rc = CLI_ERR;

    if (argc != 2)
        return cli_usage("queue");
    if (!qid_valid(argv[1])) {
        cli_err("invalid queue id: %s", argv[1]);
        return CLI_ERR;
    }
    qenv_init(&env);
    if (qfile_read(spool, argv[1], &env, 1, &err) < 0) {
        cli_err("%s: %s", argv[1], buf_str(&err));
    } else {
        qfile_path(spool, argv[1], &path);
        show_envelope(&env, path.data);
        rc = show_content(spool, argv[1]);
    }
    qenv_destroy(&env);
    buf_destroy(&err);
    buf_destroy(&path);
    return rc;
}
