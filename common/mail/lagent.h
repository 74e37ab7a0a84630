/* lagent.h - the skeleton shared by the final delivery agents (local,
 * virtual, pipe, error, discard).
 *
 * qmgr speaks to them exactly as to the SMTP delivery agent (proto.h:
 * request=deliver queue_id nexthop rcpt...). The skeleton reads the queue
 * file, holds its shared lock, calls the agent's deliver() once per
 * recipient, appends each result to the queue file before it answers,
 * logs Postfix's "to=<..>, relay=<agent>, ... status=" line and replies.
 * Deliveries are synchronous: these agents write local files or run a
 * command, and a process serves one request at a time (master may run
 * several processes of a service).
 *
 * Work done as another user goes through lagent_as_user: a child process
 * drops to uid/gid (setgroups, setgid, setuid, verified) and reports its
 * result back through a pipe, so the agent itself never writes a user's
 * files with root's rights. */
#ifndef POSTINO_LAGENT_H
#define POSTINO_LAGENT_H

#include <stddef.h>
#include <sys/types.h>

#include "common/mail/bclass.h"
#include "common/mail/qfile.h"
#include "common/util/buf.h"

struct server;

/* One recipient's outcome, filled by the agent's deliver(). */
struct lagent_res {
    int status; /* enum qrcpt_status: QR_SENT, QR_DEFERRED, QR_BOUNCED */
    char dsn[12];
    enum bclass cat;
    char reason[1024];
};

/* The job as the agent sees it. */
struct lagent_job {
    struct server *srv;
    char id[QID_LEN + 1];
    const char *nexthop;
    struct qenv env;
    int fd; /* the queue file, shared-locked */
    long long content_len;
    long long attempt; /* qmgr's attempt number (events), 0: not sent */
};

struct lagent_ops {
    const char *name; /* progname and relay= in the logs */
    int takes_args;   /* reads its master.cf arguments (pipe) */
    /* Optional, as the starting user (before any privilege drop). */
    void (*pre_drop)(struct server *s);
    void (*post_drop)(struct server *s);
    /* Deliver to recipient idx; fill res (it starts as a deferral). */
    void (*deliver)(struct lagent_job *job, size_t idx, struct lagent_res *res);
};

int lagent_main(int argc, char **argv, const struct lagent_ops *ops);

/* res = status/dsn/category with a printf reason. */
void lagent_set(struct lagent_res *res, int status, const char *dsn, enum bclass cat,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* The usual deferral for an errno of a local write: disk full and over
 * quota defer as such, anything else as a local error. */
void lagent_set_errno(struct lagent_res *res, int err, const char *what);

/* Write the message to fd: Return-Path: and Delivered-To: first (when
 * not NULL), then the DKIM fields and the content, CRLF turned into LF.
 * mbox: a "From sender date" line first, ">From " quoting, an empty line
 * last. 0, or -1 with errno. */
int lagent_copy(struct lagent_job *job, int fd, const char *return_path, const char *delivered_to,
                int mbox);

/* Run fn(arg, res) in a child as uid/gid (and the supplementary groups
 * of user, when not NULL); fn's res comes back. A child that dies or
 * cannot drop privileges gives a deferral. */
void lagent_as_user(uid_t uid, gid_t gid, const char *user,
                    void (*fn)(void *arg, struct lagent_res *res), void *arg,
                    struct lagent_res *res);

/* Run argv[0] (a path; no shell unless argv says so) as uid/gid (and
 * user's groups when not NULL; never root) with environment envp, the
 * message on stdin (Return-Path/Delivered-To first when not NULL), in its
 * own process group; killed with its group after limit seconds (a
 * deferral); the exit status mapped per sysexits.h (lagent_cmd.c). */
void lagent_run(struct lagent_job *job, char *const argv[], char *const envp[], uid_t uid,
                gid_t gid, const char *user, long long limit, const char *return_path,
                const char *delivered_to, struct lagent_res *res);

/* Maildir delivery (maildir.c) below dirfd-relative path dir (created
 * 0700 when missing, each component opened without following symlinks),
 * as the current user: tmp/ then new/, fsync of file and directory.
 * limit > 0: a message larger than that many bytes is refused (552 5.2.2,
 * or 452 4.2.2 when limit_defer). */
void maildir_deliver(struct lagent_job *job, int dirfd, const char *dir, const char *rcpt,
                     long long limit, int limit_defer, struct lagent_res *res);
/* Open path (relative to dirfd, or absolute) one component at a time with
 * O_NOFOLLOW|O_DIRECTORY, creating missing ones 0700 when create. The
 * fd, or -1 with errno (ELOOP/ENOTDIR for a symlink). */
int lagent_open_dir(int dirfd, const char *path, int create);

#endif
