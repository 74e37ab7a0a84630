/* virtual.c - the virtual delivery agent: Maildir delivery for domains
 * whose users are no system accounts (Postfix's virtual(8)).
 *
 * virtual_mailbox_maps maps the recipient (or "@domain") to a path below
 * virtual_mailbox_base ending in "/" (a Maildir); virtual_uid_maps and
 * virtual_gid_maps ("static:N" or tables keyed the same way) name the
 * owner the mailbox is written as. The agent starts as root (master.cf
 * unpriv "n") and writes each message in a child that runs as that owner
 * (lagent_as_user). A recipient the map does not know bounces 5.1.1;
 * a message larger than virtual_mailbox_limit gets 552 5.2.2 (deferred
 * instead with virtual_mailbox_limit_defer = yes). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/glue/dict.h"
#include "common/mail/conf.h"
#include "common/mail/lagent.h"
#include "common/mail/server.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

struct vmaps {
    struct dict **d;
    size_t n;
};
static struct vmaps mailbox_maps, uid_maps, gid_maps;

static void open_maps(const char *param, struct vmaps *m)
{
    char **list = conf_list(param);
    buf_t err = BUF_INIT;
    for (size_t i = 0; list && list[i]; i++) {
        struct dict *d;
        if (strncmp(list[i], "static:", 7) == 0)
            continue;
        if ((d = dict_open(list[i], &err)) == NULL)
            log_fatal("%s: cannot open %s: %s (build it with \"postino map\")", param, list[i],
                      buf_str(&err));
        m->d = xrealloc(m->d, (m->n + 1) * sizeof(*m->d));
        m->d[m->n++] = d;
    }
    strv_free(list);
    buf_destroy(&err);
}

/* The address, then "@domain": Postfix's virtual(8) lookup order.
 * static:V in the parameter answers V for anything. */
static enum dict_result vlookup(const char *param, struct vmaps *m, const char *addr, buf_t *value)
{
    const char *at = strrchr(addr, '@');
    char **list = conf_list(param);
    enum dict_result r = DICT_NOTFOUND;
    size_t k = 0;

    for (size_t i = 0; list && list[i] && r == DICT_NOTFOUND; i++) {
        if (strncmp(list[i], "static:", 7) == 0) {
            buf_set(value, list[i] + 7);
            r = DICT_FOUND;
            continue;
        }
        if (k >= m->n)
            break;
        r = dict_lookup(m->d[k], addr, value);
        if (r == DICT_NOTFOUND && at)
            r = dict_lookup(m->d[k], at, value);
        k++;
    }
    strv_free(list);
    return r;
}

static void post_drop(struct server *s)
{
    open_maps("virtual_mailbox_maps", &mailbox_maps);
    open_maps("virtual_uid_maps", &uid_maps);
    open_maps("virtual_gid_maps", &gid_maps);
}

static int id_value(const char *v, long long min, long long *out)
{
    char *end;
    long long n = strtoll(v, &end, 10);
    if (end == v || *end || n < min)
        return -1;
    *out = n;
    return 0;
}

struct vjob {
    struct lagent_job *job;
    const char *rcpt, *path;
};

static void deliver_child(void *arg, struct lagent_res *res)
{
    struct vjob *v = arg;
    const char *base = conf_str("virtual_mailbox_base");
    /* the base is the administrator's (it may be reached through a
     * symlink, /var/mail on some systems); below it nothing is followed */
    int bfd = open(*base ? base : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (bfd < 0) {
        lagent_set(res, QR_DEFERRED, "4.3.0", BCLASS_OTHER,
                   "cannot open virtual_mailbox_base %s: %s", base, strerror(errno));
        return;
    }
    maildir_deliver(v->job, bfd, v->path, v->rcpt, conf_int("virtual_mailbox_limit"),
                    conf_bool("virtual_mailbox_limit_defer"), res);
    close(bfd);
}

static void deliver(struct lagent_job *job, size_t idx, struct lagent_res *res)
{
    const char *rcpt = job->env.rcpt[idx].addr;
    buf_t path = BUF_INIT, uid = BUF_INIT, gid = BUF_INIT;
    long long u, g, min = conf_int("virtual_minimum_uid");
    enum dict_result r;
    struct vjob v = { job, rcpt, NULL };

    r = vlookup("virtual_mailbox_maps", &mailbox_maps, rcpt, &path);
    if (r == DICT_ERROR) {
        lagent_set(res, QR_DEFERRED, "4.3.0", BCLASS_OTHER, "virtual_mailbox_maps lookup failed");
        goto done;
    }
    if (r == DICT_NOTFOUND) {
        lagent_set(res, QR_BOUNCED, "5.1.1", BCLASS_BAD_MAILBOX,
                   "user unknown in virtual mailbox table");
        goto done;
    }
    if (path.len == 0 || path.data[path.len - 1] != '/' || path.data[0] == '/' ||
        strstr(path.data, "..")) {
        lagent_set(res, QR_DEFERRED, "4.3.5", BCLASS_OTHER,
                   "virtual_mailbox_maps: \"%s\" is no relative Maildir path ending in /",
                   path.data);
        goto done;
    }
    if (vlookup("virtual_uid_maps", &uid_maps, rcpt, &uid) != DICT_FOUND ||
        vlookup("virtual_gid_maps", &gid_maps, rcpt, &gid) != DICT_FOUND ||
        id_value(uid.data, min, &u) < 0 || id_value(gid.data, 1, &g) < 0) {
        lagent_set(res, QR_DEFERRED, "4.3.5", BCLASS_OTHER,
                   "no valid uid/gid for %s in virtual_uid_maps/virtual_gid_maps (uid below "
                   "virtual_minimum_uid %lld?)",
                   rcpt, min);
        goto done;
    }
    v.path = path.data;
    lagent_as_user((uid_t)u, (gid_t)g, NULL, deliver_child, &v, res);
done:
    buf_destroy(&path);
    buf_destroy(&uid);
    buf_destroy(&gid);
}

int main(int argc, char **argv)
{
    static const struct lagent_ops ops = { .name = "virtual",
                                           .post_drop = post_drop,
                                           .deliver = deliver };
    return lagent_main(argc, argv, &ops);
}
