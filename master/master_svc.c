/* master_svc.c - services from master.cf and their listening sockets.
 *
 * master binds every socket before it spawns, so all processes of a
 * service share one listener (fd 3 in the child). On reload a service
 * with the same name, type and private flag keeps its socket, so clients
 * never see a refused connection across "postino reload". */
#include "master/master.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/util/ipc.h"
#include "common/util/log.h"

static char **strv_dup(char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    char **out = xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        out[i] = xstrdup(v[i]);
    return out;
}

static void ent_copy(struct master_ent *dst, const struct master_ent *src)
{
    *dst = *src;
    dst->service = xstrdup(src->service);
    dst->type = xstrdup(src->type);
    dst->argv = strv_dup(src->argv);
}

static void ent_destroy(struct master_ent *e)
{
    free(e->service);
    free(e->type);
    strv_free(e->argv);
    memset(e, 0, sizeof(*e));
}

static int is_unix(const struct master_ent *e)
{
    return strcmp(e->type, "unix") == 0;
}

static int same_key(const struct master_ent *a, const struct master_ent *b)
{
    return strcmp(a->service, b->service) == 0 && strcmp(a->type, b->type) == 0 &&
           (!is_unix(a) || a->private_ == b->private_);
}

/* Daemons whose state lives only in their memory and that can take a new
 * main.cf without a restart: anvil's counters are what per-client limits
 * are made of, and a reload must not forget them; the metrics service's
 * counters would drop to 0 and a replacement could find its HTTP port
 * still held by the one it replaces. events reopens its event_log in
 * place (a reload after logrotate moved it), and its senders keep their
 * connections, so no event in a socket is lost to a restart. */
static const char *const reload_in_place[] = { "anvil", "metrics", "events" };

static int same_argv(char *const *a, char *const *b)
{
    size_t k = 0;
    for (; a[k] && b[k]; k++)
        if (strcmp(a[k], b[k]) != 0)
            return 0;
    return a[k] == NULL && b[k] == NULL;
}

/* May the children of old stay across a reload that brings new? The same
 * master.cf row, a daemon from the table above, and no chroot (main.cf
 * must be readable where the daemon runs). */
static int can_stay(const struct master_ent *old, const struct master_ent *new)
{
    if (old->argv == NULL || new->argv == NULL || new->argv[0] == NULL ||
        old->unpriv != new->unpriv || old->chroot || new->chroot || old->wakeup != new->wakeup ||
        old->maxproc != new->maxproc || !same_argv(old->argv, new->argv))
        return 0;
    for (size_t k = 0; k < sizeof(reload_in_place) / sizeof(reload_in_place[0]); k++)
        if (strcmp(new->argv[0], reload_in_place[k]) == 0)
            return 1;
    return 0;
}

/* Settings that may change on reload without touching the socket. */
static void svc_configure(struct master_service *svc, const struct master_ent *e)
{
    ent_destroy(&svc->ent);
    ent_copy(&svc->ent, e);
    if (e->argv == NULL || e->argv[0] == NULL)
        log_panic("master.cf line %d: service %s without a command", e->line, e->service);
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s/%s", master_state.daemon_dir, e->argv[0]);
    free(svc->path);
    svc->path = buf_detach(&p);
    long long limit = e->maxproc > 0 ? e->maxproc : conf_int("default_process_limit");
    svc->target = (int)(limit > MASTER_PROC_CAP ? MASTER_PROC_CAP : limit);
}

/* At start-up a port still held by the daemons of a master that was
 * killed (they notice within seconds and exit) is waited for briefly
 * instead of failing at once; on reload the loop must not block. */
static int listen_inet(const struct master_ent *e, buf_t *err, int wait)
{
    struct timespec pause = { 0, 250 * 1000 * 1000 };
    for (int tries = wait ? MASTER_BIND_WAIT * 4 : 0;; tries--) {
        buf_reset(err);
        int fd = ipc_listen_inet(e->service, MASTER_LISTEN_BACKLOG, err);
        if (fd >= 0)
            return fd;
        if (err->len == 0)
            buf_printf(err, "cannot listen on %s: %s", e->service, strerror(errno));
        if (tries <= 0 || strstr(buf_str(err), strerror(EADDRINUSE)) == NULL)
            return -1;
        if (tries == MASTER_BIND_WAIT * 4)
            log_warn("%s: address in use; waiting up to %d seconds for old daemons to exit",
                     e->service, MASTER_BIND_WAIT);
        nanosleep(&pause, NULL);
    }
}

/* Create the listener; returns fd or -1 with err. */
static int svc_listen(struct master_service *svc, const struct master_ent *e, buf_t *err, int wait)
{
    if (!is_unix(e))
        return listen_inet(e, err, wait);
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s/%s/%s", master_state.queue_dir, e->private_ ? "private" : "public",
               e->service);
    svc->sock_path = buf_detach(&p);
    int fd = ipc_listen_unix(svc->sock_path, e->private_ ? 0600 : 0666, MASTER_LISTEN_BACKLOG);
    if (fd < 0) {
        buf_printf(err, "cannot listen on %s: %s", svc->sock_path, strerror(errno));
        return -1;
    }
    /* lchown: never follow a symlink the mail user may have put there. */
    if (master_state.as_root &&
        lchown(svc->sock_path, master_state.owner_uid, master_state.owner_gid) < 0) {
        buf_printf(err, "chown %s: %s", svc->sock_path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static struct master_service *svc_new(const struct master_ent *e, buf_t *err, int wait)
{
    struct master_service *svc = xcalloc(1, sizeof(*svc));
    svc->fd = -1;
    svc_configure(svc, e);
    svc->fd = svc_listen(svc, e, err, wait);
    if (svc->fd < 0) {
        master_service_free(svc);
        return NULL;
    }
    return svc;
}

void master_service_free(struct master_service *svc)
{
    if (svc->timer)
        event_free(svc->timer);
    if (svc->fd >= 0)
        close(svc->fd);
    ent_destroy(&svc->ent);
    free(svc->path);
    free(svc->sock_path);
    free(svc);
}

int master_services_create(const struct master_ent *ents, size_t n, int fatal_errors)
{
    int made = 0;
    buf_t err = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        buf_reset(&err);
        struct master_service *svc = svc_new(&ents[i], &err, fatal_errors);
        if (svc == NULL) {
            if (fatal_errors)
                master_fatal("%s/master.cf, line %d: service %s/%s: %s", master_state.config_dir,
                             ents[i].line, ents[i].service, ents[i].type, buf_str(&err));
            log_error("%s/master.cf, line %d: service %s/%s: %s (service skipped)",
                      master_state.config_dir, ents[i].line, ents[i].service, ents[i].type,
                      buf_str(&err));
            continue;
        }
        TAILQ_INSERT_TAIL(&master_state.services, svc, link);
        made++;
    }
    buf_destroy(&err);
    return made;
}

/* Find a live service with the same key as e. */
static struct master_service *svc_find(const struct master_ent *e)
{
    struct master_service *svc;
    TAILQ_FOREACH(svc, &master_state.services, link)
    if (!svc->removed && same_key(&svc->ent, e))
        return svc;
    return NULL;
}

/* A service gone from master.cf: close its listener at once; the struct
 * lives until its last child is reaped. */
static void svc_remove(struct master_service *svc)
{
    svc->removed = 1;
    svc->in_place = 0;
    svc->target = 0;
    if (svc->fd >= 0)
        close(svc->fd);
    svc->fd = -1;
    if (svc->sock_path)
        unlink(svc->sock_path);
}

void master_services_reload(const struct master_ent *ents, size_t n, int startup_same)
{
    int *keep = xcalloc(n ? n : 1, sizeof(int));
    struct master_service *svc;
    TAILQ_FOREACH(svc, &master_state.services, link)
    {
        if (svc->removed)
            continue;
        int found = 0;
        for (size_t i = 0; i < n && !found; i++) {
            if (!keep[i] && same_key(&svc->ent, &ents[i])) {
                keep[i] = 1;
                found = 1;
                svc->in_place = startup_same && can_stay(&svc->ent, &ents[i]);
                svc_configure(svc, &ents[i]);
            }
        }
        if (!found)
            svc_remove(svc);
    }
    for (size_t i = 0; i < n; i++)
        if (!keep[i] && svc_find(&ents[i]) == NULL)
            master_services_create(&ents[i], 1, 0);
    free(keep);
}

void master_services_close(void)
{
    struct master_service *svc;
    TAILQ_FOREACH(svc, &master_state.services, link)
    {
        if (svc->timer)
            event_del(svc->timer);
        svc->waiting = 0;
        if (svc->fd >= 0)
            close(svc->fd);
        svc->fd = -1;
    }
}
