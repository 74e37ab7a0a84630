/* lagent_cmd.c - running a command for the local and pipe agents.
 *
 * The message goes to the command's stdin from an unlinked temporary file
 * (written before the command starts, so a command that never reads
 * cannot block the agent); stdout and stderr come back through one pipe,
 * of which the first LAGENT_OUTPUT_MAX bytes are kept for the reason. The
 * command runs in its own process group, as uid/gid (never root); when
 * the time limit passes, the whole group is killed and the delivery
 * deferred. Exit statuses follow sysexits.h as Postfix maps them: 0
 * delivered, 75 (EX_TEMPFAIL) and 71 (EX_OSERR) deferred, 67 (EX_NOUSER)
 * and the other EX_* codes bounced with their enhanced status. */
#include "common/mail/lagent.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/util/log.h"

#define LAGENT_OUTPUT_MAX 400

struct sysexit {
    int code;
    int defer;
    const char *dsn, *text;
};
static const struct sysexit sysexits[] = {
    { 64, 0, "5.3.0", "command line usage error" },
    { 65, 0, "5.6.0", "data format error" },
    { 66, 0, "5.3.0", "cannot open input" },
    { 67, 0, "5.1.1", "user unknown" },
    { 68, 0, "5.1.2", "host name unknown" },
    { 69, 0, "5.3.0", "service unavailable" },
    { 70, 0, "5.3.0", "internal software error" },
    { 71, 1, "4.3.0", "system resource problem" },
    { 72, 0, "5.3.0", "critical OS file missing" },
    { 73, 0, "5.2.0", "can't create user output file" },
    { 74, 0, "5.3.0", "input/output error" },
    { 75, 1, "4.3.0", "temporary failure" },
    { 76, 0, "5.5.0", "remote error in protocol" },
    { 77, 0, "5.7.0", "permission denied" },
    { 78, 0, "5.3.5", "local configuration error" },
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The message in an unlinked file, positioned at its start. */
static int message_file(struct lagent_job *job, const char *rp, const char *dt)
{
    char path[] = "./lagent.XXXXXX";
    int fd = open(".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        if ((fd = mkostemp(path, O_CLOEXEC)) < 0)
            return -1;
        unlink(path);
    }
    if (lagent_copy(job, fd, rp, dt, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void child(int in, int out, char *const argv[], char *const envp[], uid_t uid, gid_t gid,
                  const char *user)
{
    setpgid(0, 0);
    signal(SIGPIPE, SIG_DFL);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
        _exit(71);
    /* nothing of the agent's (tables, queue file, qmgr sockets) goes along */
    for (long fd = 3, max = sysconf(_SC_OPEN_MAX); fd < (max > 0 && max < 65536 ? max : 65536);
         fd++)
        close((int)fd);
    if (geteuid() != 0 && uid == geteuid()) {
        /* an agent that is not root runs commands as itself */
    } else if ((user ? initgroups(user, gid) < 0 : setgroups(1, &gid) < 0) || setgid(gid) < 0 ||
               setuid(uid) < 0 || geteuid() == 0 || getuid() == 0)
        _exit(71);
    execve(argv[0], argv, envp);
    fprintf(stderr, "cannot execute %s: %s", argv[0], strerror(errno));
    _exit(errno == ENOENT ? 69 : 126);
}

/* Printable output for the reason (no control characters). */
static void clean(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            *s = ' ';
}

static void outcome(int st, const char *out, struct lagent_res *res)
{
    const char *sep = *out ? ". Command output: " : "";
    if (WIFSIGNALED(st)) {
        lagent_set(res, QR_DEFERRED, "4.3.0", BCLASS_OTHER, "command killed by signal %d%s%s",
                   WTERMSIG(st), sep, out);
        return;
    }
    int code = WEXITSTATUS(st);
    if (code == 0) {
        lagent_set(res, QR_SENT, "2.0.0", BCLASS_OTHER, "delivered via command");
        return;
    }
    for (size_t i = 0; i < sizeof(sysexits) / sizeof(sysexits[0]); i++) {
        if (sysexits[i].code != code)
            continue;
        lagent_set(res, sysexits[i].defer ? QR_DEFERRED : QR_BOUNCED, sysexits[i].dsn,
                   code == 67 ? BCLASS_BAD_MAILBOX : BCLASS_OTHER,
                   "command died with status %d (%s)%s%s", code, sysexits[i].text, sep, out);
        return;
    }
    lagent_set(res, QR_BOUNCED, "5.3.0", BCLASS_OTHER, "command died with status %d%s%s", code, sep,
               out);
}

void lagent_run(struct lagent_job *job, char *const argv[], char *const envp[], uid_t uid,
                gid_t gid, const char *user, long long limit, const char *return_path,
                const char *delivered_to, struct lagent_res *res)
{
    char out[LAGENT_OUTPUT_MAX + 1];
    size_t olen = 0;
    int p[2], in, st = 0, done = 0, timed_out = 0;
    double deadline = mono() + (double)limit;
    pid_t pid;

    if (uid == 0) {
        lagent_set(res, QR_DEFERRED, "4.3.5", BCLASS_OTHER, "refusing to run a command as root");
        return;
    }
    if ((in = message_file(job, return_path, delivered_to)) < 0) {
        lagent_set_errno(res, errno, "the message for the command");
        return;
    }
    if (pipe2(p, O_CLOEXEC) < 0) {
        lagent_set_errno(res, errno, "a pipe");
        close(in);
        return;
    }
    if ((pid = fork()) < 0) {
        lagent_set(res, QR_DEFERRED, "4.3.0", BCLASS_OTHER, "cannot fork: %s", strerror(errno));
        close(in);
        close(p[0]);
        close(p[1]);
        return;
    }
    if (pid == 0)
        child(in, p[1], argv, envp, uid, gid, user);
    setpgid(pid, pid); /* either side may win the race */
    close(in);
    close(p[1]);
    for (int eof = 0; !done;) {
        double left = deadline - mono();
        if (left <= 0) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            timed_out = 1;
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
            break;
        }
        if (!eof) {
            struct pollfd pf = { p[0], POLLIN, 0 };
            int ms = left > 1 ? 1000 : (int)(left * 1000) + 1;
            if (poll(&pf, 1, ms) > 0) {
                char tmp[4096];
                ssize_t n = read(p[0], tmp, sizeof(tmp));
                if (n <= 0 && !(n < 0 && errno == EINTR))
                    eof = 1;
                else if (n > 0 && olen < LAGENT_OUTPUT_MAX) {
                    size_t take =
                        (size_t)n < LAGENT_OUTPUT_MAX - olen ? (size_t)n : LAGENT_OUTPUT_MAX - olen;
                    memcpy(out + olen, tmp, take);
                    olen += take;
                }
            }
        } else {
            struct timespec ts = { 0, 20 * 1000 * 1000 };
            nanosleep(&ts, NULL);
        }
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            done = 1;
    }
    close(p[0]);
    kill(-pid, SIGKILL); /* whatever it left running in its group */
    out[olen] = '\0';
    clean(out);
    if (timed_out) {
        log_warn("%s: command %s: killed after the time limit of %llds", job->id, argv[0], limit);
        lagent_set(res, QR_DEFERRED, "4.3.0", BCLASS_OTHER,
                   "command time limit exceeded (%llds): killed", limit);
        return;
    }
    outcome(st, out, res);
}
