/* local_forward.c - alias targets elsewhere (other domains) go out as a
 * new message, as Postfix's local agent forwards through cleanup: a new
 * queue file with the original sender, the content behind a
 * "Delivered-To: <recipient>" header (the next hop's loop check), written
 * as mail_owner like smtpd's files, then announced to qmgr (a lost
 * announcement only waits for qmgr's next scan). */
#include "local/local.h"

#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/mail/conf.h"
#include "common/mail/proto.h"
#include "common/mail/server.h"
#include "common/util/alloc.h"
#include "common/util/attr.h"
#include "common/util/ipc.h"
#include "common/util/log.h"

struct fwd {
    struct lagent_job *job;
    const char *rcpt;
    char *const *addrs;
    size_t n;
};

static int copy_content(struct lagent_job *job, struct qfile_w *w)
{
    char buf[65536];
    long long left = job->content_len;
    if (lseek(job->fd, job->env.content_off, SEEK_SET) < 0)
        return -1;
    while (left > 0) {
        ssize_t n = read(job->fd, buf, left < (long long)sizeof(buf) ? (size_t)left : sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        if (qfile_write(w, buf, (size_t)n) < 0)
            return -1;
        left -= n;
    }
    return 0;
}

static void notify_qmgr(const char *id)
{
    int fd = ipc_connect_unix(SOCK_QMGR);
    attr_t a = ATTR_INIT;
    if (fd < 0)
        return;
    attr_add(&a, "proto", PROTO_VERSION);
    attr_add(&a, "request", "new");
    attr_add(&a, "queue_id", id);
    if (attr_write_fd(fd, &a) < 0)
        log_warn("cannot tell qmgr about %s (it will find it)", id);
    attr_destroy(&a);
    close(fd);
}

static void fwd_child(void *arg, struct lagent_res *res)
{
    struct fwd *f = arg;
    struct lagent_job *job = f->job;
    struct qenv env;
    buf_t err = BUF_INIT, hdr = BUF_INIT;
    struct qfile_w *w;

    qenv_init(&env);
    qenv_set(&env.sender, job->env.sender);
    qenv_set(&env.client_name, "localhost");
    qenv_set(&env.client_addr, "127.0.0.1");
    qenv_set(&env.helo, "localhost");
    qenv_set(&env.proto, "local");
    env.body = job->env.body;
    env.smtputf8 = job->env.smtputf8;
    for (size_t i = 0; i < f->n; i++)
        qenv_add_rcpt(&env, f->addrs[i], NULL, 0);
    if ((w = qfile_create(job->srv->spool, &env, &err)) == NULL) {
        lagent_set(res, QR_DEFERRED, "4.3.0", BCLASS_OTHER, "cannot forward: %s", buf_str(&err));
        goto done;
    }
    buf_setf(&hdr, "Delivered-To: %s\r\n", f->rcpt);
    if (qfile_write(w, hdr.data, hdr.len) < 0 ||
        (job->env.dkim && qfile_write(w, job->env.dkim, strlen(job->env.dkim)) < 0) ||
        copy_content(job, w) < 0) {
        lagent_set(res, QR_DEFERRED, "4.3.0", BCLASS_OTHER, "cannot forward: %s", strerror(errno));
        qfile_abort(w);
        goto done;
    }
    char id[QID_LEN + 1];
    str_lcpy(id, qfile_w_id(w), sizeof(id));
    if (qfile_commit(w, &err) < 0) {
        lagent_set(res, QR_DEFERRED, "4.3.0", BCLASS_OTHER, "cannot forward: %s", buf_str(&err));
        goto done;
    }
    log_info("%s: forwarded as %s to %zu recipient(s)", job->id, id, f->n);
    notify_qmgr(id);
    lagent_set(res, QR_SENT, "2.0.0", BCLASS_OTHER, "forwarded as %s", id);
done:
    qenv_destroy(&env);
    buf_destroy(&err);
    buf_destroy(&hdr);
}

void local_forward(struct lagent_job *job, const char *rcpt, char *const *addrs, size_t n,
                   struct lagent_res *res)
{
    struct fwd f = { job, rcpt, addrs, n };
    struct passwd *pw = geteuid() == 0 ? getpwnam(conf_str("mail_owner")) : NULL;

    if (geteuid() == 0 && pw == NULL) {
        lagent_set(res, QR_DEFERRED, "4.3.5", BCLASS_OTHER, "mail_owner %s: no such user",
                   conf_str("mail_owner"));
        return;
    }
    lagent_as_user(pw ? pw->pw_uid : geteuid(), pw ? pw->pw_gid : getegid(), NULL, fwd_child, &f,
                   res);
}
