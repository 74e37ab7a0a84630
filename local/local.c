/* local.c - the local delivery agent (local.h says what the parts do).
 *
 * For one recipient: a message that already carries "Delivered-To:" with
 * this recipient has been here before (a forwarding loop: 5.4.6). Else
 * the local part is expanded through alias_maps; every target it yields
 * is delivered once (mailboxes, files, commands; the remote ones
 * together as one new message), and the recipient's result is the worst
 * of them (deferred before bounced before sent). A deferral retries the
 * whole recipient later, so targets already delivered may see the
 * message twice then, as with Postfix.
 *
 * The agent runs as root (master.cf unpriv "n") only to switch to each
 * mailbox owner; every write happens in a child process with that
 * owner's rights (lagent_as_user). */
#include "local/local.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/mail/server.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

#define HEADER_MAX (1024 * 1024)

/* Does the header section hold "Delivered-To: rcpt"? */
static int delivered_before(struct lagent_job *job, const char *rcpt)
{
    size_t want = job->content_len < HEADER_MAX ? (size_t)job->content_len : HEADER_MAX;
    char *h = xmalloc(want + 1);
    ssize_t n = pread(job->fd, h, want, job->env.content_off);
    int found = 0;

    h[n > 0 ? n : 0] = '\0';
    for (char *line = h; line && *line && !found;) {
        char *next = strstr(line, "\r\n");
        if (next)
            *next = '\0';
        if (*line == '\0')
            break; /* end of the header */
        if (strncasecmp(line, "Delivered-To:", 13) == 0) {
            char *v = line + 13;
            while (*v == ' ' || *v == '\t')
                v++;
            found = strcasecmp(str_trim(v), rcpt) == 0;
        }
        line = next ? next + 2 : NULL;
    }
    free(h);
    return found;
}

static int worse(const struct lagent_res *a, const struct lagent_res *b)
{
    static const int rank[] = { [QR_SENT] = 0, [QR_BOUNCED] = 1, [QR_DEFERRED] = 2 };
    return rank[a->status] > rank[b->status];
}

static void deliver(struct lagent_job *job, size_t idx, struct lagent_res *res)
{
    const char *rcpt = job->env.rcpt[idx].addr, *at = strrchr(rcpt, '@');
    char *name = at ? xstrndup(rcpt, (size_t)(at - rcpt)) : xstrdup(rcpt);
    struct local_exp e;
    char **remote = NULL;
    size_t nremote = 0, nlocal = 0;
    int have = 0;

    for (char *p = name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (delivered_before(job, rcpt)) {
        lagent_set(res, QR_BOUNCED, "5.4.6", BCLASS_ROUTING_ERRORS, "mail forwarding loop for %s",
                   rcpt);
        free(name);
        return;
    }
    local_expand(name, &e);
    if (e.failed) {
        *res = e.res;
        goto done;
    }
    for (size_t i = 0; i < e.n; i++) {
        struct lagent_res r;
        const struct local_target *t = &e.t[i];
        lagent_set(&r, QR_DEFERRED, "4.3.0", BCLASS_OTHER, "no outcome");
        switch (t->kind) {
        case LT_REMOTE:
            remote = xrealloc(remote, (nremote + 1) * sizeof(*remote));
            remote[nremote++] = t->what;
            continue;
        case LT_USER:
            local_deliver_user(job, t->what, rcpt, &r);
            break;
        case LT_FILE:
            local_deliver_file(job, t->what, rcpt, &r);
            break;
        case LT_COMMAND:
            local_deliver_command(job, t->what, rcpt, &r);
            break;
        }
        nlocal++;
        if (e.n > 1)
            log_info("%s: %s: %s \"%s\": %s", job->id, rcpt,
                     t->kind == LT_USER   ? "mailbox"
                     : t->kind == LT_FILE ? "file"
                                          : "command",
                     t->what, r.reason);
        if (!have || worse(&r, res)) {
            *res = r;
            have = 1;
        }
    }
    if (e.n == 0) /* an empty :include: file */
        lagent_set(res, QR_BOUNCED, "5.3.0", BCLASS_OTHER, "alias \"%s\" expands to no destination",
                   name);
    if (nremote > 0) {
        struct lagent_res r;
        local_forward(job, rcpt, remote, nremote, &r);
        if (!have || worse(&r, res))
            *res = r;
    }
    if (res->status == QR_SENT && nlocal + nremote > 1)
        lagent_set(res, QR_SENT, "2.0.0", BCLASS_OTHER, "delivered to %zu destinations",
                   nlocal + nremote);
done:
    local_exp_destroy(&e);
    free(remote);
    free(name);
}

static void post_drop(struct server *s)
{
    local_expand_init();
}

int main(int argc, char **argv)
{
    static const struct lagent_ops ops = { .name = "local",
                                           .post_drop = post_drop,
                                           .deliver = deliver };
    return lagent_main(argc, argv, &ops);
}
