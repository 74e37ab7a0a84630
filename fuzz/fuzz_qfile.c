/* fuzz_qfile.c - libFuzzer harness for the queue file reader
 * (common/qfile_read.c). Queue files are written by postino itself, but a
 * full disk, a crash mid-append or an admin's editor can leave anything in
 * them, and qmgr reads every file at start-up: the reader must reject or
 * accept, never crash. Each input becomes the whole file (committed, mode
 * 0700) of one queue id in a private temporary spool. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/util/log.h"
#include "common/mail/qfile.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char spool[64];
static char qid[QID_LEN + 1];
static buf_t qpath = BUF_INIT;

static void cleanup(void)
{
    buf_t dir = BUF_INIT;
    char xy[3];
    unlink(buf_str(&qpath));
    qid_hash_dir(qid, xy);
    buf_printf(&dir, "%s/queue/%s", spool, xy);
    rmdir(buf_str(&dir));
    buf_reset(&dir);
    buf_printf(&dir, "%s/queue", spool);
    rmdir(buf_str(&dir));
    rmdir(spool);
    buf_destroy(&dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init("fuzz_qfile");
    log_open("/dev/null");
    str_lcpy(spool, "/tmp/postino-fuzz-qfile.XXXXXX", sizeof(spool));
    if (mkdtemp(spool) == NULL)
        log_fatal("mkdtemp %s: %s", spool, strerror(errno));
    qid_new(qid);
    qfile_path(spool, qid, &qpath);
    char xy[3];
    buf_t dir = BUF_INIT;
    qid_hash_dir(qid, xy);
    buf_printf(&dir, "%s/queue", spool);
    mkdir(buf_str(&dir), 0700);
    buf_printf(&dir, "/%s", xy);
    if (mkdir(buf_str(&dir), 0700) < 0)
        log_fatal("mkdir %s: %s", buf_str(&dir), strerror(errno));
    buf_destroy(&dir);
    atexit(cleanup);
    return 0;
}

static void put_file(const uint8_t *data, size_t size, mode_t mode)
{
    int fd = open(buf_str(&qpath), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size) || fchmod(fd, mode) < 0)
        log_fatal("write %s: %s", buf_str(&qpath), strerror(errno));
    close(fd);
}

/* What qmgr, delivery and bounce rely on after a successful read. */
static void check_env(const struct qenv *env, size_t size)
{
    if (env->sender == NULL || env->content_off < 0 || env->content_len < 0 ||
        env->content_off + env->content_len > (long long)size)
        abort();
    if (env->verp && strlen(env->verp) != 2) /* delivery builds addresses with them */
        abort();
    for (size_t i = 0; i < env->nrcpt; i++) {
        const struct qrcpt *r = &env->rcpt[i];
        if (r->addr == NULL || r->status < QR_PENDING || r->status > QR_BOUNCED)
            abort();
        if (r->status != QR_PENDING && (r->dsn == NULL || r->relay == NULL || r->reason == NULL))
            abort();
        if (r->category && *r->category == 0)
            abort();
        (void)qrcpt_status_name(r->status);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct qenv env;
    buf_t err = BUF_INIT;
    put_file(data, size, 0700);
    if (qfile_read(spool, qid, &env, 0, &err) == 0) {
        check_env(&env, size);
        long long len = -1;
        int fd = qfile_open_content(spool, qid, &len, &err);
        if (fd >= 0)
            close(fd);
    } else if (err.len == 0) {
        abort();
    }
    qenv_destroy(&env);
    /* The same bytes as an uncommitted file (qmgr's start-up scan). */
    if (chmod(buf_str(&qpath), 0600) == 0 && qfile_read(spool, qid, &env, 1, &err) == 0)
        check_env(&env, size);
    qenv_destroy(&env);
    buf_destroy(&err);
    return 0;
}
