/* qfile.c - queue ids and writing queue files (smtpd, bounce).
 *
 * The hot path of the whole MTA: one open(O_EXCL) under the final name,
 * buffered writes, and at commit one fchmod + one fsync. The preamble and
 * envelope are kept in the write buffer until the first flush, so a small
 * message costs a single write(2) (with the preamble already patched).
 * Reading and updates live in qfile_read.c. */
#include "common/mail/qfile.h"
#include "common/util/alloc.h"
#include "common/util/attr.h"
#include "common/util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define QFILE_BUFSIZE      (64 * 1024)
#define QFILE_CREATE_TRIES 100

struct qfile_w {
    int fd;
    char id[QID_LEN + 1];
    buf_t path;
    buf_t buf;         /* pending bytes, starting at file offset flushed */
    buf_t head;        /* preamble .. size line, re-written at commit */
    size_t size_off;   /* offset of the size digits within head */
    long long flushed; /* bytes already written to the file */
    long long content_off;
    long long content_len;
    char *message_id; /* appended at commit when set */
    char *dkim;       /* the same */
    char *pool;       /* the same */
    char *priority;   /* the same */
    int body;         /* enum qbody for an appended body= record, or 0 */
    int failed;       /* errno of the first write error, 0 = fine */
};

/* ---- queue ids ---- */

void qid_new(char out[QID_LEN + 1])
{
    static unsigned counter;
    static unsigned mix;
    struct timeval tv;

    if (mix == 0)
        mix = ((unsigned)getpid() * 40503u) | 1u;
    gettimeofday(&tv, NULL);
    /* The counter keeps ids from one process distinct within a microsecond;
     * the pid mix spreads processes apart; O_EXCL settles the rest. */
    unsigned uniq = (mix + counter++) & 0xffffu;
    snprintf(out, QID_LEN + 1, "%08llX%05lX%04X", (unsigned long long)tv.tv_sec & 0xffffffffULL,
             (unsigned long)tv.tv_usec & 0xfffffUL, uniq);
}

int qid_valid(const char *id)
{
    if (id == NULL)
        return 0;
    for (size_t i = 0; i < QID_LEN; i++) {
        char c = id[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F')))
            return 0;
    }
    return id[QID_LEN] == '\0';
}

void qid_hash_dir(const char *id, char out[3])
{
    uint32_t h = 2166136261u; /* FNV-1a: cheap and spreads similar ids */
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    h ^= h >> 16; /* fold the high bits in so the low byte is well mixed */
    h ^= h >> 8;
    snprintf(out, 3, "%02x", (unsigned)(h & 0xffu));
}

void qfile_path(const char *spool, const char *id, buf_t *out)
{
    char dir[3];
    qid_hash_dir(id, dir);
    buf_reset(out);
    buf_printf(out, "%s/queue/%s/%s", spool, dir, id);
}

long long qid_time(const char *id)
{
    long long t = 0;
    for (int i = 0; i < 8 && id[i]; i++) {
        char c = id[i];
        int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (v < 0)
            return 0;
        t = t * 16 + v;
    }
    return t;
}

/* ---- envelopes ---- */

void qenv_init(struct qenv *env)
{
    memset(env, 0, sizeof(*env));
    env->ret = RET_NONE;
}

static void qrcpt_destroy(struct qrcpt *r)
{
    free(r->addr);
    free(r->orcpt);
    free(r->dsn);
    free(r->relay);
    free(r->reason);
    free(r->category);
}

void qenv_destroy(struct qenv *env)
{
    char **strs[] = { &env->client_name, &env->client_addr,   &env->helo,        &env->proto,
                      &env->sasl_method, &env->sasl_username, &env->message_id,  &env->sender,
                      &env->envid,       &env->verp,          &env->verp_return, &env->dkim,
                      &env->pool,        &env->priority };
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        free(*strs[i]);
    for (size_t i = 0; i < env->nrcpt; i++)
        qrcpt_destroy(&env->rcpt[i]);
    free(env->rcpt);
    qenv_init(env);
}

void qenv_set(char **field, const char *value)
{
    char *old = *field;
    *field = value ? xstrdup(value) : NULL;
    free(old);
}

struct qrcpt *qenv_add_rcpt(struct qenv *env, const char *addr, const char *orcpt, int notify)
{
    env->rcpt = xgrow(env->rcpt, &env->rcpt_cap, env->nrcpt + 1, sizeof(*env->rcpt));
    struct qrcpt *r = &env->rcpt[env->nrcpt++];
    memset(r, 0, sizeof(*r));
    r->addr = xstrdup(addr ? addr : "");
    r->orcpt = orcpt ? xstrdup(orcpt) : NULL;
    r->notify = notify;
    r->status = QR_PENDING;
    return r;
}

const char *qrcpt_status_name(int status)
{
    static const char *const names[] = { "pending", "sent", "deferred", "bounced" };
    if (status < 0 || status > QR_BOUNCED)
        return "unknown";
    return names[status];
}

const char *qbody_name(int body)
{
    static const char *const names[] = { NULL, "7BIT", "8BITMIME", "BINARYMIME" };
    if (body < QBODY_7BIT || body > QBODY_BINARYMIME)
        return NULL;
    return names[body];
}

static const struct {
    const char *name;
    int bit;
} notify_names[] = {
    { "SUCCESS", NOTIFY_SUCCESS },
    { "FAILURE", NOTIFY_FAILURE },
    { "DELAY", NOTIFY_DELAY },
};

int notify_parse(const char *s, int *bits)
{
    if (str_ieq(s, "NEVER")) {
        *bits = NOTIFY_NEVER;
        return 0;
    }
    char **v = str_split(s, ",", NULL);
    int out = 0;
    for (char **p = v; *p; p++) {
        size_t i;
        for (i = 0; i < sizeof(notify_names) / sizeof(notify_names[0]); i++)
            if (str_ieq(*p, notify_names[i].name))
                break;
        if (i == sizeof(notify_names) / sizeof(notify_names[0])) {
            strv_free(v);
            return -1;
        }
        out |= notify_names[i].bit;
    }
    strv_free(v);
    if (out == 0)
        return -1;
    *bits = out;
    return 0;
}

void notify_format(int bits, buf_t *out)
{
    if (bits & NOTIFY_NEVER) {
        buf_puts(out, "NEVER");
        return;
    }
    int first = 1;
    for (size_t i = 0; i < sizeof(notify_names) / sizeof(notify_names[0]); i++) {
        if (!(bits & notify_names[i].bit))
            continue;
        if (!first)
            buf_putc(out, ',');
        buf_puts(out, notify_names[i].name);
        first = 0;
    }
}

/* ---- writing ---- */

/* Write all of p: at the file position (off < 0) or at offset off. A
 * write that makes no progress is a full disk. */
static int put_all(int fd, const char *p, size_t n, off_t off)
{
    while (n > 0) {
        ssize_t w = off < 0 ? write(fd, p, n) : pwrite(fd, p, n, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = ENOSPC;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        if (off >= 0)
            off += w;
    }
    return 0;
}

static void put_rec(buf_t *b, const char *name, const char *value)
{
    buf_puts(b, name);
    buf_putc(b, '=');
    attr_escape(b, value, strlen(value));
    buf_putc(b, '\n');
}

static void put_opt(buf_t *b, const char *name, const char *value)
{
    if (value)
        put_rec(b, name, value);
}

static void format_preamble(char out[QFILE_PREAMBLE_LEN + 1], long long off, long long len)
{
    snprintf(out, QFILE_PREAMBLE_LEN + 1, "POSTINOQ1 c=%012lld l=%012lld\n", off, len);
}

/* Preamble, arrival and size go into w->head (patched at commit); the
 * rest of the envelope straight into the write buffer after them. */
static void build_envelope(struct qfile_w *w, const struct qenv *env)
{
    char pre[QFILE_PREAMBLE_LEN + 1];
    format_preamble(pre, 0, 0);
    buf_append(&w->head, pre, QFILE_PREAMBLE_LEN);
    buf_printf(&w->head, "arrival=%lld.%06ld\n", (long long)env->arrival.tv_sec,
               (long)env->arrival.tv_usec);
    buf_puts(&w->head, "size=");
    w->size_off = w->head.len;
    buf_puts(&w->head, "000000000000\n");
    buf_append(&w->buf, w->head.data, w->head.len);

    buf_t *b = &w->buf;
    put_opt(b, "client_name", env->client_name);
    put_opt(b, "client_addr", env->client_addr);
    put_opt(b, "helo", env->helo);
    put_opt(b, "proto", env->proto);
    put_opt(b, "sasl_method", env->sasl_method);
    put_opt(b, "sasl_username", env->sasl_username);
    put_opt(b, "message_id", env->message_id);
    put_rec(b, "sender", env->sender ? env->sender : "");
    put_opt(b, "verp", env->verp);
    put_opt(b, "verp_return", env->verp_return);
    put_opt(b, "pool", env->pool);
    put_opt(b, "envid", env->envid);
    if (env->ret == RET_FULL || env->ret == RET_HDRS)
        put_rec(b, "ret", env->ret == RET_FULL ? "FULL" : "HDRS");
    if (qbody_name(env->body))
        put_rec(b, "body", qbody_name(env->body));
    if (env->smtputf8)
        put_rec(b, "smtputf8", "1");
    for (size_t i = 0; i < env->nrcpt; i++) {
        const struct qrcpt *r = &env->rcpt[i];
        put_rec(b, "rcpt", r->addr ? r->addr : "");
        put_opt(b, "orcpt", r->orcpt);
        if (r->notify) {
            buf_puts(b, "notify=");
            notify_format(r->notify, b);
            buf_putc(b, '\n');
        }
    }
    buf_puts(b, "content\n");
    w->content_off = (long long)b->len;
}

/* Create <spool>/queue/XY (and <spool>/queue) when missing. */
static int make_dirs(const char *path)
{
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    int rc = -1;
    if (slash) {
        *slash = '\0';
        if (mkdir(dir, 0700) == 0 || errno == EEXIST) {
            rc = 0;
        } else if (errno == ENOENT) {
            char *up = strrchr(dir, '/');
            if (up) {
                *up = '\0';
                if (mkdir(dir, 0700) == 0 || errno == EEXIST) {
                    *up = '/';
                    rc = (mkdir(dir, 0700) == 0 || errno == EEXIST) ? 0 : -1;
                }
            }
        }
    }
    int saved = errno;
    free(dir);
    errno = saved;
    return rc;
}

/* The writer holds an exclusive flock(2) on its file until the file is
 * complete and closed (or the writer dies: the kernel drops the lock).
 * An incomplete file nobody holds was abandoned by a writer killed
 * mid-transaction, and qmgr's spool scan removes it at once (see
 * qfile_abandoned) instead of an hour later. A file that sweep unlinks
 * in the instant before the lock fails the nlink check at commit: it is
 * never acknowledged. */
static int writer_lock(int fd)
{
    return flock(fd, LOCK_EX | LOCK_NB);
}

int qfile_abandoned(const char *path)
{
    struct stat sb;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    int gone = 0;

    if (fd < 0)
        return 0;
    /* Mode looked at under the lock: the writer marks the file complete
     * while it holds it, so a complete file is never taken for abandoned. */
    if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &sb) == 0 && !(sb.st_mode & S_IXUSR) &&
        sb.st_nlink > 0 && unlink(path) == 0)
        gone = 1;
    close(fd);
    return gone;
}

static int open_new(struct qfile_w *w, const char *spool, buf_t *err)
{
    for (int tries = 0; tries < QFILE_CREATE_TRIES; tries++) {
        qid_new(w->id);
        qfile_path(spool, w->id, &w->path);
        w->fd = open(w->path.data, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (w->fd < 0 && errno == ENOENT && make_dirs(w->path.data) == 0)
            w->fd = open(w->path.data, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (w->fd >= 0) {
            if (writer_lock(w->fd) == 0)
                return 0;
            close(w->fd); /* qmgr's sweep took it in this instant: it removes it */
            w->fd = -1;
            continue;
        }
        if (errno == EEXIST)
            continue;
        buf_setf(err, "create queue file %s: %s", w->path.data, strerror(errno));
        return -1;
    }
    buf_setf(err, "create queue file under %s/queue: no unique id after %d tries", spool,
             QFILE_CREATE_TRIES);
    return -1;
}

static int w_flush(struct qfile_w *w);

static void w_free(struct qfile_w *w)
{
    if (w->fd >= 0)
        close(w->fd);
    buf_destroy(&w->path);
    buf_destroy(&w->buf);
    buf_destroy(&w->head);
    free(w->message_id);
    free(w->dkim);
    free(w->pool);
    free(w->priority);
    free(w);
}

struct qfile_w *qfile_create(const char *spool, struct qenv *env, buf_t *err)
{
    struct qfile_w *w = xcalloc(1, sizeof(*w));
    w->fd = -1;
    buf_init(&w->path, 128);
    buf_init(&w->buf, QFILE_BUFSIZE + 1024);
    buf_init(&w->head, 96);
    if (open_new(w, spool, err) < 0) {
        w_free(w);
        return NULL;
    }
    if (env->arrival.tv_sec == 0)
        gettimeofday(&env->arrival, NULL);
    str_lcpy(env->id, w->id, sizeof(env->id));
    build_envelope(w, env);
    /* Written now so an uncommitted file can still be inspected. */
    if (w_flush(w) < 0) {
        buf_setf(err, "write queue file %s: %s", w->path.data, strerror(w->failed));
        unlink(w->path.data);
        w_free(w);
        return NULL;
    }
    return w;
}

const char *qfile_w_id(const struct qfile_w *w)
{
    return w->id;
}

long long qfile_w_size(const struct qfile_w *w)
{
    return w->content_len;
}

/* A write error makes the file useless: remove it now, report at commit. */
static int w_fail(struct qfile_w *w)
{
    if (!w->failed)
        w->failed = errno ? errno : EIO;
    unlink(w->path.data);
    return -1;
}

static int w_flush(struct qfile_w *w)
{
    if (w->buf.len == 0)
        return 0;
    if (put_all(w->fd, w->buf.data, w->buf.len, -1) < 0)
        return w_fail(w);
    w->flushed += (long long)w->buf.len;
    buf_reset(&w->buf);
    return 0;
}

int qfile_write(struct qfile_w *w, const void *data, size_t len)
{
    if (w->failed)
        return -1;
    w->content_len += (long long)len;
    if (w->buf.len + len <= QFILE_BUFSIZE) {
        buf_append(&w->buf, data, len);
        return 0;
    }
    if (w_flush(w) < 0)
        return -1;
    if (len >= QFILE_BUFSIZE) { /* big chunk: no point copying it */
        if (put_all(w->fd, data, len, -1) < 0)
            return w_fail(w);
        w->flushed += (long long)len;
        return 0;
    }
    buf_append(&w->buf, data, len);
    return 0;
}

void qfile_w_set_message_id(struct qfile_w *w, const char *id)
{
    free(w->message_id);
    w->message_id = id && *id ? xstrdup(id) : NULL;
}

void qfile_w_set_pool(struct qfile_w *w, const char *pool)
{
    free(w->pool);
    w->pool = pool && *pool ? xstrdup(pool) : NULL;
}

void qfile_w_set_priority(struct qfile_w *w, const char *prio)
{
    free(w->priority);
    w->priority = prio && *prio ? xstrdup(prio) : NULL;
}

void qfile_w_set_dkim(struct qfile_w *w, const char *fields)
{
    free(w->dkim);
    w->dkim = fields && *fields ? xstrdup(fields) : NULL;
}

void qfile_w_set_body(struct qfile_w *w, int body)
{
    w->body = body;
}

/* Read [off, off+len) back through fn into the file as the new content. */
static int convert_from(struct qfile_w *w, int rfd, long long off, long long len, qfile_conv_fn fn,
                        void *arg)
{
    char chunk[64 * 1024];
    buf_t out = BUF_INIT;
    int rc = 0;
    while (rc == 0 && len > 0) {
        size_t want = len < (long long)sizeof(chunk) ? (size_t)len : sizeof(chunk);
        ssize_t n = pread(rfd, chunk, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            errno = n < 0 ? errno : EIO;
            rc = w_fail(w);
            break;
        }
        buf_reset(&out);
        fn(arg, chunk, (size_t)n, 0, &out);
        rc = qfile_write(w, out.data, out.len);
        off += n;
        len -= n;
    }
    if (rc == 0) {
        buf_reset(&out);
        fn(arg, NULL, 0, 1, &out);
        rc = qfile_write(w, out.data, out.len);
    }
    buf_destroy(&out);
    return rc;
}

int qfile_w_convert(struct qfile_w *w, qfile_conv_fn fn, void *arg)
{
    if (w->failed || w_flush(w) < 0)
        return -1;
    int rfd = open(w->path.data, O_RDONLY | O_CLOEXEC);
    if (rfd < 0)
        return w_fail(w);
    long long off = w->content_off, len = w->content_len;
    w->content_off = w->flushed; /* the new content starts at the end */
    w->content_len = 0;
    int rc = convert_from(w, rfd, off, len, fn, arg);
    close(rfd);
    return rc;
}

/* Fill the real content offset/length and size into the head bytes. */
static void patch_head(struct qfile_w *w, char *head)
{
    char pre[QFILE_PREAMBLE_LEN + 1], num[16];
    format_preamble(pre, w->content_off, w->content_len);
    memcpy(head, pre, QFILE_PREAMBLE_LEN);
    snprintf(num, sizeof(num), "%012lld", w->content_len);
    memcpy(head + w->size_off, num, 12);
}

/* Everything of the commit but the flush to disk. */
static int w_prepare(struct qfile_w *w)
{
    if (w->failed)
        return -1;
    /* After the content (whose length the preamble gives), as the first
     * appended record: readers replay it like any later append. */
    if (w->message_id)
        put_rec(&w->buf, "message_id", w->message_id);
    if (qbody_name(w->body))
        put_rec(&w->buf, "body", qbody_name(w->body));
    if (w->pool)
        put_rec(&w->buf, "pool", w->pool);
    if (w->priority)
        put_rec(&w->buf, "priority", w->priority);
    if (w->dkim)
        put_rec(&w->buf, "dkim", w->dkim);
    if (w_flush(w) < 0)
        return -1;
    patch_head(w, w->head.data);
    if (put_all(w->fd, w->head.data, w->head.len, 0) < 0)
        return w_fail(w);
    /* The completeness mark goes in before the one fsync that makes
     * content, mode and directory entry durable together. */
    if (fchmod(w->fd, 0700) < 0)
        return w_fail(w);
    /* A file someone removed meanwhile (qmgr's sweep of abandoned
     * incomplete files, see writer_lock) would fsync fine and vanish:
     * never acknowledge it. */
    struct stat sb;
    if (fstat(w->fd, &sb) < 0)
        return w_fail(w);
    if (sb.st_nlink == 0) {
        errno = ENOENT;
        return w_fail(w);
    }
    return 0;
}

/* The flush: touches only w->fd and w->failed, so it may run on another
 * thread while the caller's loop goes on. */
static void w_sync(struct qfile_w *w)
{
    if (w->fd < 0)
        return;
    if (fsync(w->fd) < 0 && !w->failed)
        w->failed = errno ? errno : EIO;
    if (close(w->fd) < 0 && !w->failed)
        w->failed = errno ? errno : EIO;
    w->fd = -1;
}

/* Report and free; a failed file is removed. */
static int w_end(struct qfile_w *w, buf_t *err)
{
    int rc = w->failed ? -1 : 0;
    if (rc < 0) {
        buf_setf(err, "queue file %s: %s", w->path.data, strerror(w->failed));
        unlink(w->path.data);
    }
    w_free(w);
    return rc;
}

int qfile_commit(struct qfile_w *w, buf_t *err)
{
    if (w_prepare(w) == 0)
        w_sync(w);
    return w_end(w, err);
}

int qfile_commit_begin(struct qfile_w *w, buf_t *err)
{
    if (w_prepare(w) == 0)
        return 0;
    return w_end(w, err);
}

void qfile_commit_sync(struct qfile_w *w)
{
    w_sync(w);
}

int qfile_commit_end(struct qfile_w *w, buf_t *err)
{
    return w_end(w, err);
}

void qfile_abort(struct qfile_w *w)
{
    if (w == NULL)
        return;
    unlink(w->path.data);
    w_free(w);
}
