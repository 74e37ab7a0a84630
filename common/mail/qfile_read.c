/* qfile_read.c - reading queue files and appending records to them.
 *
 * qfile_read parses the envelope (up to the "content" marker), then jumps
 * over the content and replays the records appended since (results, hold,
 * warned, dsn_sent, message_id): the last one for a recipient wins. Parsing is strict
 * because every writer is another postino daemon: an unknown record is a
 * malformed file. Appends are one write(2) each with O_APPEND, no fsync:
 * losing the last result after a crash only means delivering again. */
#include "common/mail/qfile.h"
#include "common/util/alloc.h"
#include "common/util/attr.h"
#include "common/util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <time.h>
#include <unistd.h>

struct rd {
    struct qenv *env;
    buf_t tmp;       /* unescaped value */
    const char *why; /* static reason for a malformed record */
};

/* ---- small parsers ---- */

static int parse_ll(const char *s, long long *out)
{
    if (*s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int unesc(struct rd *r, const char *v)
{
    buf_reset(&r->tmp);
    if (attr_unescape(&r->tmp, v, strlen(v)) < 0) {
        r->why = "bad %XX escape";
        return -1;
    }
    return 0;
}

/* ---- envelope records ---- */

typedef int (*rec_fn)(struct rd *r, const char *value, size_t off);

static int env_str(struct rd *r, const char *v, size_t off)
{
    if (unesc(r, v) < 0)
        return -1;
    qenv_set((char **)((char *)r->env + off), r->tmp.data);
    return 0;
}

static int env_arrival(struct rd *r, const char *v, size_t off)
{
    const char *dot = strchr(v, '.');
    long long sec, usec = 0;
    char *s = xstrndup(v, dot ? (size_t)(dot - v) : strlen(v));
    int bad = parse_ll(s, &sec) < 0 || (dot && (parse_ll(dot + 1, &usec) < 0 || usec > 999999));
    free(s);
    if (bad) {
        r->why = "bad arrival";
        return -1;
    }
    r->env->arrival.tv_sec = (time_t)sec;
    r->env->arrival.tv_usec = (suseconds_t)usec;
    return 0;
}

static int env_size(struct rd *r, const char *v, size_t off)
{
    long long n;
    if (parse_ll(v, &n) < 0) {
        r->why = "bad size";
        return -1;
    }
    return 0;
}

static int env_ret(struct rd *r, const char *v, size_t off)
{
    if (strcmp(v, "FULL") == 0)
        r->env->ret = RET_FULL;
    else if (strcmp(v, "HDRS") == 0)
        r->env->ret = RET_HDRS;
    else {
        r->why = "bad ret";
        return -1;
    }
    return 0;
}

static int env_body(struct rd *r, const char *v, size_t off)
{
    for (int b = QBODY_7BIT; b <= QBODY_BINARYMIME; b++)
        if (strcmp(v, qbody_name(b)) == 0) {
            r->env->body = b;
            return 0;
        }
    r->why = "bad body";
    return -1;
}

static int env_smtputf8(struct rd *r, const char *v, size_t off)
{
    if (strcmp(v, "1") != 0) {
        r->why = "bad smtputf8";
        return -1;
    }
    r->env->smtputf8 = 1;
    return 0;
}

/* Two delimiter characters, never one that could break the address
 * built from them (verp.h); which ones is smtpd's policy. */
static int env_verp(struct rd *r, const char *v, size_t off)
{
    int ok = strlen(v) == 2;
    for (int i = 0; ok && i < 2; i++)
        ok = v[i] > ' ' && v[i] < 0x7f && !strchr("@\"\\<>%", v[i]);
    if (!ok) {
        r->why = "bad verp";
        return -1;
    }
    qenv_set(&r->env->verp, v);
    return 0;
}

static int env_rcpt(struct rd *r, const char *v, size_t off)
{
    if (unesc(r, v) < 0)
        return -1;
    qenv_add_rcpt(r->env, r->tmp.data, NULL, 0);
    return 0;
}

static struct qrcpt *last_rcpt(struct rd *r)
{
    if (r->env->nrcpt == 0) {
        r->why = "recipient attribute before any rcpt";
        return NULL;
    }
    return &r->env->rcpt[r->env->nrcpt - 1];
}

static int env_orcpt(struct rd *r, const char *v, size_t off)
{
    struct qrcpt *q = last_rcpt(r);
    if (q == NULL || unesc(r, v) < 0)
        return -1;
    qenv_set(&q->orcpt, r->tmp.data);
    return 0;
}

static int env_notify(struct rd *r, const char *v, size_t off)
{
    struct qrcpt *q = last_rcpt(r);
    if (q == NULL)
        return -1;
    if (notify_parse(v, &q->notify) < 0) {
        r->why = "bad notify";
        return -1;
    }
    return 0;
}

#define STR(n)                                                                                     \
    {                                                                                              \
#n, env_str, offsetof(struct qenv, n)                                                      \
    }
static const struct rec_def {
    const char *name;
    rec_fn fn;
    size_t off;
} env_recs[] = {
    { "arrival", env_arrival, 0 },
    { "size", env_size, 0 },
    STR(client_name),
    STR(client_addr),
    STR(helo),
    STR(proto),
    STR(sasl_method),
    STR(sasl_username),
    STR(message_id),
    STR(sender),
    STR(envid),
    { "verp", env_verp, 0 },
    STR(verp_return),
    STR(pool),
    STR(priority),
    { "ret", env_ret, 0 },
    { "rcpt", env_rcpt, 0 },
    { "orcpt", env_orcpt, 0 },
    { "notify", env_notify, 0 },
    { "body", env_body, 0 },
    { "smtputf8", env_smtputf8, 0 },
};
#undef STR

/* ---- appended records ---- */

static const char *const status_words[] = { "pending", "sent", "deferred", "bounced" };

/* Split off the next space-separated word of *p (NUL-terminating it). */
static char *word(char **p)
{
    char *s = *p, *sp = strchr(s, ' ');
    if (sp == NULL)
        return NULL;
    *sp = '\0';
    *p = sp + 1;
    return s;
}

static struct qrcpt *rcpt_at(struct rd *r, const char *s)
{
    long long idx;
    if (s == NULL || parse_ll(s, &idx) < 0 || idx < 0 || (size_t)idx >= r->env->nrcpt) {
        r->why = "bad recipient index";
        return NULL;
    }
    return &r->env->rcpt[idx];
}

/* The TAB-separated attributes after a result's reason (cut off from it):
 * category=; others are ignored. */
static int result_attrs(struct rd *r, char *p, struct qrcpt *q)
{
    char *tab = strchr(p, '\t');
    qenv_set(&q->category, NULL);
    if (tab == NULL)
        return 0;
    *tab = '\0';
    while (tab) {
        char *a = tab + 1;
        tab = strchr(a, '\t');
        if (tab)
            *tab = '\0';
        if (strncmp(a, "category=", 9) == 0) {
            if (unesc(r, a + 9) < 0)
                return -1;
            qenv_set(&q->category, r->tmp.len ? r->tmp.data : NULL);
        }
    }
    return 0;
}

static int app_result(struct rd *r, const char *v, size_t off)
{
    char *line = xstrdup(v), *p = line;
    char *idx = word(&p), *st = idx ? word(&p) : NULL, *dsn = st ? word(&p) : NULL;
    char *when = dsn ? word(&p) : NULL, *relay = when ? word(&p) : NULL;
    struct qrcpt *q = relay ? rcpt_at(r, idx) : NULL;
    int status = 0, rc = -1;
    for (int i = QR_SENT; i <= QR_BOUNCED && st; i++)
        if (strcmp(st, status_words[i]) == 0)
            status = i;
    long long t;
    if (q == NULL || status == 0 || parse_ll(when, &t) < 0) {
        r->why = r->why ? r->why : "bad result record";
        goto out;
    }
    if (result_attrs(r, p, q) < 0)
        goto out;
    char **fields[] = { &q->dsn, &q->relay, &q->reason };
    const char *vals[] = { dsn, relay, p };
    for (int i = 0; i < 3; i++) {
        if (unesc(r, vals[i]) < 0)
            goto out;
        qenv_set(fields[i], r->tmp.data);
    }
    q->status = status;
    q->when = t;
    if (status == QR_DEFERRED)
        q->deferrals++;
    rc = 0;
out:
    free(line);
    return rc;
}

static int app_hold(struct rd *r, const char *v, size_t off)
{
    if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0) {
        r->why = "bad hold";
        return -1;
    }
    r->env->hold = v[0] == '1';
    return 0;
}

static int app_warned(struct rd *r, const char *v, size_t off)
{
    if (parse_ll(v, &r->env->warned) < 0) {
        r->why = "bad warned";
        return -1;
    }
    return 0;
}

static int app_dsn_sent(struct rd *r, const char *v, size_t off)
{
    static const struct {
        const char *name;
        int bit;
    } kinds[] = { { "failure", NOTIFY_FAILURE },
                  { "delay", NOTIFY_DELAY },
                  { "success", NOTIFY_SUCCESS } };
    char *line = xstrdup(v), *p = line;
    struct qrcpt *q = rcpt_at(r, word(&p));
    int rc = -1;
    for (size_t i = 0; q && i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (strcmp(p, kinds[i].name) == 0) {
            q->dsn_sent |= kinds[i].bit;
            rc = 0;
        }
    }
    if (rc < 0 && r->why == NULL)
        r->why = "bad dsn_sent";
    free(line);
    return rc;
}

static const struct rec_def app_recs[] = {
    { "result", app_result, 0 },
    { "message_id", env_str, offsetof(struct qenv, message_id) },
    { "dkim", env_str, offsetof(struct qenv, dkim) },
    { "pool", env_str, offsetof(struct qenv, pool) },
    { "priority", env_str, offsetof(struct qenv, priority) },
    { "body", env_body, 0 },
    { "hold", app_hold, 0 },
    { "warned", app_warned, 0 },
    { "dsn_sent", app_dsn_sent, 0 },
};

/* Dispatch one "name=value" line (newline stripped) through a table. */
static int dispatch(struct rd *r, const struct rec_def *tab, size_t n, char *line)
{
    char *eq = strchr(line, '=');
    if (eq == NULL) {
        r->why = "record without '='";
        return -1;
    }
    *eq = '\0';
    for (size_t i = 0; i < n; i++)
        if (strcmp(tab[i].name, line) == 0)
            return tab[i].fn(r, eq + 1, tab[i].off);
    r->why = "unknown record";
    return -1;
}

/* ---- the reader ---- */

static int parse_preamble(const char *p, long long *off, long long *len)
{
    char num[13];
    if (memcmp(p, "POSTINOQ1 c=", 12) != 0 || memcmp(p + 24, " l=", 3) != 0 || p[39] != '\n')
        return -1;
    memcpy(num, p + 12, 12);
    num[12] = '\0';
    if (parse_ll(num, off) < 0)
        return -1;
    memcpy(num, p + 27, 12);
    return parse_ll(num, len);
}

/* Envelope lines until "content"; *pos tracks the file offset. */
static int read_envelope(struct rd *r, FILE *fp, long long *pos)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = -1;
    while ((n = getline(&line, &cap, fp)) > 0) {
        *pos += n;
        if (line[n - 1] != '\n')
            break;
        line[n - 1] = '\0';
        if (strcmp(line, "content") == 0) {
            rc = 0;
            break;
        }
        if (dispatch(r, env_recs, sizeof(env_recs) / sizeof(env_recs[0]), line) < 0)
            goto out;
    }
    if (rc < 0)
        r->why = "envelope without content marker";
out:
    free(line);
    return rc;
}

static int read_appended(struct rd *r, FILE *fp, const char *path)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, fp)) > 0) {
        if (line[n - 1] != '\n') {
            /* Only a crash or a full disk mid-append leaves this. */
            log_warn("%s: ignoring unterminated last record", path);
            break;
        }
        line[n - 1] = '\0';
        if (dispatch(r, app_recs, sizeof(app_recs) / sizeof(app_recs[0]), line) < 0) {
            rc = -1;
            break;
        }
    }
    free(line);
    return rc;
}

static int read_fp(struct rd *r, FILE *fp, const struct stat *st, int allow_incomplete)
{
    struct qenv *env = r->env;
    char pre[QFILE_PREAMBLE_LEN];
    long long off, len, pos = QFILE_PREAMBLE_LEN;
    if (fread(pre, 1, sizeof(pre), fp) != sizeof(pre) || parse_preamble(pre, &off, &len) < 0) {
        r->why = "bad preamble";
        return -1;
    }
    if (read_envelope(r, fp, &pos) < 0)
        return -1;
    if (env->sender == NULL) {
        r->why = "no sender record";
        return -1;
    }
    if (!env->complete) {
        /* Uncommitted: no trustworthy length, nothing appended yet. */
        env->content_off = pos;
        env->content_len = (long long)st->st_size - pos;
        return 0;
    }
    if (off < pos || len < 0 || off + len > (long long)st->st_size) {
        r->why = "content offset/length do not match the file";
        return -1;
    }
    env->content_off = off;
    env->content_len = len;
    if (fseeko(fp, (off_t)(off + len), SEEK_SET) < 0) {
        r->why = "cannot seek past content";
        return -1;
    }
    return read_appended(r, fp, "queue file");
}

/* A stdio stream over a descriptor that stays open when the stream is
 * closed: it reads with pread at its own offset, so the descriptor's
 * offset is untouched (a delivery agent keeps the descriptor for the
 * content and for appending its results: one open per delivery). */
struct fd_cookie {
    int fd;
    off_t pos;
};

static ssize_t cookie_read(void *c, char *buf, size_t n)
{
    struct fd_cookie *k = c;
    ssize_t r;
    do
        r = pread(k->fd, buf, n, k->pos);
    while (r < 0 && errno == EINTR);
    if (r > 0)
        k->pos += r;
    return r;
}

static int cookie_seek(void *c, off64_t *off, int whence)
{
    struct fd_cookie *k = c;
    off_t base = 0;
    if (whence == SEEK_CUR) {
        base = k->pos;
    } else if (whence == SEEK_END) {
        struct stat st;
        if (fstat(k->fd, &st) < 0)
            return -1;
        base = st.st_size;
    } else if (whence != SEEK_SET) {
        errno = EINVAL;
        return -1;
    }
    if (base + *off < 0) {
        errno = EINVAL;
        return -1;
    }
    k->pos = base + (off_t)*off;
    *off = k->pos;
    return 0;
}

static int cookie_close(void *c)
{
    (void)c;
    return 0;
}

/* The envelope and appended records of the open queue file fd. */
static int read_env_fd(int fd, const char *path, const char *id, struct qenv *env,
                       int allow_incomplete, buf_t *err)
{
    struct rd r = { env, BUF_INIT, NULL };
    struct fd_cookie ck = { fd, 0 };
    static const cookie_io_functions_t io = { cookie_read, NULL, cookie_seek, cookie_close };
    struct stat st;
    FILE *fp = NULL;
    int rc = -1;
    if (fstat(fd, &st) < 0) {
        buf_setf(err, "%s: %s", path, strerror(errno));
        goto done;
    }
    env->complete = (st.st_mode & S_IXUSR) != 0;
    if (!env->complete && !allow_incomplete) {
        buf_setf(err, "%s: incomplete queue file", path);
        goto done;
    }
    if ((fp = fopencookie(&ck, "r", io)) == NULL) {
        buf_setf(err, "%s: %s", path, strerror(errno));
        goto done;
    }
    str_lcpy(env->id, id, sizeof(env->id));
    rc = read_fp(&r, fp, &st, allow_incomplete);
    if (rc < 0)
        buf_setf(err, "%s: malformed queue file: %s", path, r.why ? r.why : "read error");
done:
    if (fp)
        fclose(fp);
    if (rc < 0) {
        int complete = env->complete;
        qenv_destroy(env);
        env->complete = complete;
    }
    buf_destroy(&r.tmp);
    return rc;
}

/* Open a queue file by id: fd, or -1 with err. */
static int open_by_id(const char *spool, const char *id, int flags, buf_t *path, buf_t *err)
{
    if (!qid_valid(id)) { /* ids may come from the command line */
        buf_setf(err, "invalid queue id \"%s\"", id);
        return -1;
    }
    qfile_path(spool, id, path);
    int fd = open(path->data, flags | O_CLOEXEC);
    if (fd < 0)
        buf_setf(err, "%s: %s", path->data, strerror(errno));
    return fd;
}

int qfile_read(const char *spool, const char *id, struct qenv *env, int allow_incomplete,
               buf_t *err)
{
    buf_t path = BUF_INIT;
    int rc = -1;
    qenv_init(env);
    int fd = open_by_id(spool, id, O_RDONLY, &path, err);
    if (fd >= 0) {
        rc = read_env_fd(fd, path.data, id, env, allow_incomplete, err);
        close(fd);
    }
    buf_destroy(&path);
    return rc;
}

int qfile_open_job(const char *spool, const char *id, struct qenv *env, buf_t *err)
{
    buf_t path = BUF_INIT;
    qenv_init(env);
    int fd = open_by_id(spool, id, O_RDWR | O_APPEND, &path, err);
    if (fd >= 0 && read_env_fd(fd, path.data, id, env, 0, err) < 0) {
        close(fd);
        fd = -1;
    }
    buf_destroy(&path);
    return fd;
}

int qfile_open_content(const char *spool, const char *id, long long *len, buf_t *err)
{
    buf_t path = BUF_INIT;
    char pre[QFILE_PREAMBLE_LEN];
    long long off;
    if (!qid_valid(id)) {
        buf_setf(err, "invalid queue id \"%s\"", id);
        return -1;
    }
    qfile_path(spool, id, &path);
    int fd = open(path.data, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        buf_setf(err, "%s: %s", path.data, strerror(errno));
    } else if (pread(fd, pre, sizeof(pre), 0) != (ssize_t)sizeof(pre) ||
               parse_preamble(pre, &off, len) < 0 || off == 0 ||
               lseek(fd, (off_t)off, SEEK_SET) < 0) {
        buf_setf(err, "%s: malformed or uncommitted queue file", path.data);
        close(fd);
        fd = -1;
    }
    buf_destroy(&path);
    return fd;
}

int qfile_lock_shared(int fd)
{
    while (flock(fd, LOCK_SH) < 0)
        if (errno != EINTR)
            return -1;
    return 0;
}

enum qfile_lock_state qfile_busy(const char *spool, const char *id)
{
    buf_t path = BUF_INIT;
    qfile_path(spool, id, &path);
    int fd = open(path.data, O_RDONLY | O_CLOEXEC);
    buf_destroy(&path);
    if (fd < 0)
        return QFILE_BUSY_UNKNOWN;
    enum qfile_lock_state busy = QFILE_BUSY_FREE;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0)
        busy = errno == EWOULDBLOCK ? QFILE_BUSY_HELD : QFILE_BUSY_UNKNOWN;
    close(fd); /* releases our probe lock, if we got it */
    return busy;
}

/* ---- updates ---- */

/* One write(2) of the whole line with O_APPEND, so concurrent appenders
 * (delivery agents, qmgr, bounce) never interleave within a record. */
static int append_fd(int fd, const buf_t *line)
{
    ssize_t w;
    do
        w = write(fd, line->data, line->len);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)line->len) {
        if (w >= 0)
            errno = ENOSPC;
        return -1;
    }
    return 0;
}

static int append_line(const char *spool, const char *id, const buf_t *line)
{
    if (!qid_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    buf_t path = BUF_INIT;
    qfile_path(spool, id, &path);
    int fd = open(path.data, O_WRONLY | O_APPEND | O_CLOEXEC);
    buf_destroy(&path);
    if (fd < 0)
        return -1;
    int rc = append_fd(fd, line);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* Escape a value that must stay one space-free word. */
static void put_word(buf_t *b, const char *s)
{
    while (*s) {
        size_t n = strcspn(s, " ");
        attr_escape(b, s, n);
        s += n;
        if (*s == ' ') {
            buf_puts(b, "%20");
            s++;
        }
    }
}

static int result_line(buf_t *line, size_t idx, int status, const char *dsn, const char *relay,
                       const char *reason, const char *category);

int qfile_append_result(const char *spool, const char *id, size_t idx, int status, const char *dsn,
                        const char *relay, const char *reason, const char *category)
{
    buf_t line = BUF_INIT;
    int rc = result_line(&line, idx, status, dsn, relay, reason, category);
    if (rc == 0)
        rc = append_line(spool, id, &line);
    buf_destroy(&line);
    return rc;
}

int qfile_append_result_fd(int fd, size_t idx, int status, const char *dsn, const char *relay,
                           const char *reason, const char *category)
{
    buf_t line = BUF_INIT;
    int rc = result_line(&line, idx, status, dsn, relay, reason, category);
    if (rc == 0)
        rc = append_fd(fd, &line);
    buf_destroy(&line);
    return rc;
}

static int result_line(buf_t *line_out, size_t idx, int status, const char *dsn, const char *relay,
                       const char *reason, const char *category)
{
    static const char *const defdsn[] = { "", "2.0.0", "4.0.0", "5.0.0" };
    if (status < QR_SENT || status > QR_BOUNCED) {
        errno = EINVAL;
        return -1;
    }
    buf_t line = BUF_INIT;
    buf_printf(&line, "result=%zu %s ", idx, status_words[status]);
    put_word(&line, dsn && *dsn ? dsn : defdsn[status]);
    buf_printf(&line, " %lld ", (long long)time(NULL));
    put_word(&line, relay && *relay ? relay : "none");
    buf_putc(&line, ' ');
    if (reason)
        attr_escape(&line, reason, strlen(reason));
    if (category && *category) {
        buf_puts(&line, "\tcategory=");
        put_word(&line, category);
    }
    buf_putc(&line, '\n');
    buf_destroy(line_out);
    *line_out = line;
    return 0;
}

int qfile_append_record(const char *spool, const char *id, const char *name, const char *value)
{
    buf_t line = BUF_INIT;
    buf_puts(&line, name);
    buf_putc(&line, '=');
    if (value)
        attr_escape(&line, value, strlen(value));
    buf_putc(&line, '\n');
    int rc = append_line(spool, id, &line);
    buf_destroy(&line);
    return rc;
}

int qfile_remove(const char *spool, const char *id)
{
    if (!qid_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    buf_t path = BUF_INIT;
    qfile_path(spool, id, &path);
    int rc = unlink(path.data);
    if (rc < 0 && errno == ENOENT)
        rc = 0;
    buf_destroy(&path);
    return rc;
}
