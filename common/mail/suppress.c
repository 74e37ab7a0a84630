/* suppress.c - the suppression list in a Berkeley DB Concurrent Data Store
 * (see suppress.h for the key and value layout).
 *
 * CDB gives one writer and many readers across processes: every DB call
 * takes a lock on the whole database for its duration, a read cursor holds
 * a read lock until it is closed, and a write waits for the readers to
 * leave. So readers use DB->get only, and walks (suppress_scan,
 * suppress_purge) are bounded and close their cursor before returning.
 * The environment (region files __db.*) lives beside suppress.db and is
 * shared by every process that opens the store; each tracks its threads
 * of control (set_thread_count/set_isalive) so that the writer can clear
 * the read locks of a reader that died holding one (DB_ENV->failchk). */
#include "common/mail/suppress.h"

#include <db.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/util/log.h"

#define SUPPRESS_DB      "suppress.db"
#define SUPPRESS_CACHE   (8 * 1024 * 1024) /* shared pool, set by its creator */
#define SUPPRESS_THREADS 1024              /* processes that may use the store at once */
#define VALUE_FIXED      16                /* added + expires */

struct suppress {
    DB_ENV *env;
    DB *db;
    enum suppress_mode mode;
    buf_t dir;
    buf_t purge_at; /* key where the next purge starts ("" = the first) */
};

/* ---- keys and values ---- */

static int bad_chars(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f || *s == '<' || *s == '>')
            return 1;
    return 0;
}

int suppress_norm_address(const char *addr, buf_t *out)
{
    buf_reset(out);
    if (addr == NULL || *addr == '\0' || strlen(addr) > SUPPRESS_ADDR_MAX || bad_chars(addr))
        return -1;
    const char *at = strrchr(addr, '@');
    if (at == NULL || at == addr || at[1] == '\0')
        return -1;
    buf_puts(out, addr);
    str_lower(out->data);
    return 0;
}

int suppress_norm_scope(const char *scope, buf_t *out)
{
    buf_reset(out);
    if (scope == NULL)
        scope = "";
    if (strlen(scope) > SUPPRESS_SCOPE_MAX || bad_chars(scope) || strchr(scope, '@'))
        return -1;
    buf_puts(out, scope);
    str_lower(out->data);
    return 0;
}

void suppress_sender_scope(const char *sender, buf_t *out)
{
    const char *at = sender ? strrchr(sender, '@') : NULL;

    buf_reset(out);
    if (at && suppress_norm_scope(at + 1, out) < 0)
        buf_reset(out);
}

static void make_key(buf_t *key, const char *scope, const char *addr)
{
    buf_reset(key);
    buf_puts(key, scope);
    buf_putc(key, '\0');
    buf_puts(key, addr);
}

static void put_u64(buf_t *b, long long v)
{
    unsigned char x[8];
    unsigned long long u = v > 0 ? (unsigned long long)v : 0;

    for (int i = 7; i >= 0; i--, u >>= 8)
        x[i] = (unsigned char)(u & 0xff);
    buf_append(b, x, 8);
}

static long long get_u64(const unsigned char *p)
{
    unsigned long long v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v > (unsigned long long)INT64_MAX ? INT64_MAX : (long long)v;
}

static void make_value(buf_t *val, const struct suppress_entry *e)
{
    const char *reason = e->reason && *e->reason ? e->reason : "manual";
    const char *text = e->text ? e->text : "";

    buf_reset(val);
    put_u64(val, e->added);
    put_u64(val, e->expires);
    buf_append(val, reason, strnlen(reason, SUPPRESS_REASON_MAX));
    buf_putc(val, '\0');
    buf_append(val, text, strnlen(text, SUPPRESS_TEXT_MAX));
}

/* Key and value back into an entry; -1 when they are not ours. */
static int decode(const DBT *k, const DBT *v, struct suppress_entry *out)
{
    const char *key = k->data, *val = v->data;
    const char *knul = memchr(key, '\0', k->size);
    const char *vnul =
        v->size > VALUE_FIXED ? memchr(val + VALUE_FIXED, '\0', v->size - VALUE_FIXED) : NULL;

    memset(out, 0, sizeof(*out));
    if (knul == NULL || vnul == NULL)
        return -1;
    out->scope = xstrndup(key, (size_t)(knul - key));
    out->address = xstrndup(knul + 1, k->size - (size_t)(knul + 1 - key));
    out->added = get_u64((const unsigned char *)val);
    out->expires = get_u64((const unsigned char *)val + 8);
    out->reason = xstrndup(val + VALUE_FIXED, (size_t)(vnul - val - VALUE_FIXED));
    out->text = xstrndup(vnul + 1, v->size - (size_t)(vnul + 1 - val));
    return 0;
}

static int expired(long long expires, long long now)
{
    return expires > 0 && expires <= now;
}

void suppress_entry_destroy(struct suppress_entry *e)
{
    free(e->scope);
    free(e->address);
    free(e->reason);
    free(e->text);
    memset(e, 0, sizeof(*e));
}

static void dbt_set(DBT *d, const void *p, size_t n)
{
    memset(d, 0, sizeof(*d));
    d->data = (void *)p;
    d->size = (u_int32_t)n;
}

/* ---- the environment ---- */

static int is_alive(DB_ENV *env, pid_t pid, db_threadid_t tid, u_int32_t flags)
{
    (void)env;
    (void)tid;
    (void)flags;
    return kill(pid, 0) == 0 || errno == EPERM;
}

/* Berkeley DB's own words go to the debug log: each failure is also
 * returned to us and logged (or not, for a reader of a missing store). */
static void db_errcall(const DB_ENV *env, const char *pfx, const char *msg)
{
    log_debug("suppression list: %s", msg);
}

/* Its notices (failchk freeing a dead process's locks) are worth a line. */
static void db_msgcall(const DB_ENV *env, const char *msg)
{
    log_info("suppression list: %s", msg);
}

static int env_open(struct suppress *s, u_int32_t flags)
{
    int rc = db_env_create(&s->env, 0);

    if (rc == 0) {
        s->env->set_errcall(s->env, db_errcall);
        s->env->set_msgcall(s->env, db_msgcall);
    }
    if (rc == 0 && s->mode == SUPPRESS_WRITE)
        rc = s->env->set_cachesize(s->env, 0, SUPPRESS_CACHE, 1);
    /* The creator writes every page of the region files at once: a sparse
     * region on a file system that fills later would kill the process
     * touching a new page with SIGBUS; this way a full disk is an ENOSPC
     * at open, which is survived (the store is opened again later). */
    if (rc == 0 && s->mode == SUPPRESS_WRITE)
        rc = s->env->set_flags(s->env, DB_REGION_INIT, 1);
    if (rc == 0)
        rc = s->env->set_thread_count(s->env, SUPPRESS_THREADS);
    if (rc == 0)
        rc = s->env->set_isalive(s->env, is_alive);
    if (rc == 0)
        rc = s->env->open(s->env, s->dir.data, flags | DB_INIT_CDB | DB_INIT_MPOOL, 0600);
    return rc;
}

static void close_handles(struct suppress *s)
{
    if (s->db)
        s->db->close(s->db, 0);
    s->db = NULL;
    if (s->env)
        s->env->close(s->env, 0);
    s->env = NULL;
}

/* The writer clears what dead readers left (their read locks); when the
 * environment itself is damaged (a writer died inside a write), it is
 * recreated: the data is in suppress.db, not in the region files. */
static int db_open(struct suppress *s);

static int writer_check(struct suppress *s, int reopen_db)
{
    int rc = s->env->failchk(s->env, 0);

    if (rc != DB_RUNRECOVERY)
        return rc;
    log_warn("suppression list %s: environment left damaged by a dead process; recreating it",
             s->dir.data);
    close_handles(s);
    DB_ENV *env;
    if (db_env_create(&env, 0) == 0)
        env->remove(env, s->dir.data, DB_FORCE);
    rc = env_open(s, DB_CREATE);
    return rc == 0 && reopen_db ? db_open(s) : rc;
}

int suppress_recover(struct suppress *s)
{
    int rc = s->mode == SUPPRESS_WRITE ? writer_check(s, 1) : 0;

    if (rc != 0)
        log_error("suppression list %s: failchk: %s", s->dir.data, db_strerror(rc));
    return rc == 0 ? 0 : -1;
}

static int db_open(struct suppress *s)
{
    int rc = db_create(&s->db, s->env, 0);
    u_int32_t flags = s->mode == SUPPRESS_WRITE ? DB_CREATE : DB_RDONLY;

    if (rc == 0)
        rc = s->db->open(s->db, NULL, SUPPRESS_DB, NULL, DB_BTREE, flags, 0600);
    return rc;
}

/* No suppress.db: nothing was ever suppressed. (A database without its
 * environment is not "missing": qmgr is about to join it again.) */
static int db_file_missing(const struct suppress *s)
{
    buf_t path = BUF_INIT;
    struct stat st;

    buf_printf(&path, "%s/%s", s->dir.data, SUPPRESS_DB);
    int gone = stat(path.data, &st) < 0 && errno == ENOENT;
    buf_destroy(&path);
    return gone;
}

/* A region the disk had no room for is half written: remove it, so that
 * the next open creates it afresh instead of joining the torso. */
static void env_remove_partial(struct suppress *s)
{
    DB_ENV *env;

    close_handles(s);
    if (db_env_create(&env, 0) == 0)
        env->remove(env, s->dir.data, DB_FORCE);
}

struct suppress *suppress_open(const char *dir, enum suppress_mode mode, int *missing, buf_t *err)
{
    struct suppress *s = xcalloc(1, sizeof(*s));
    int rc;

    if (missing)
        *missing = 0;
    s->mode = mode;
    buf_set(&s->dir, dir);
    if (mode == SUPPRESS_WRITE && mkdir(dir, 0700) < 0 && errno != EEXIST) {
        buf_setf(err, "suppression list %s: cannot create the directory: %s", dir, strerror(errno));
        suppress_close(s);
        return NULL;
    }
    rc = env_open(s, mode == SUPPRESS_WRITE ? DB_CREATE : 0);
    if (rc == ENOSPC && mode == SUPPRESS_WRITE)
        env_remove_partial(s);
    if (rc == 0 && mode == SUPPRESS_WRITE)
        rc = writer_check(s, 0);
    if (rc == 0)
        rc = db_open(s);
    if (rc != 0) {
        if (missing)
            *missing = db_file_missing(s);
        buf_setf(err, "suppression list %s: %s", dir, db_strerror(rc));
        suppress_close(s);
        return NULL;
    }
    return s;
}

void suppress_close(struct suppress *s)
{
    if (s == NULL)
        return;
    close_handles(s);
    buf_destroy(&s->dir);
    buf_destroy(&s->purge_at);
    free(s);
}

int suppress_sync(struct suppress *s)
{
    int rc = s->db->sync(s->db, 0);

    if (rc != 0)
        log_error("suppression list %s: sync: %s", s->dir.data, db_strerror(rc));
    return rc == 0 ? 0 : -1;
}

/* ---- lookups and changes ---- */

static enum suppress_result db_fail(struct suppress *s, const char *what, int rc)
{
    log_error("suppression list %s: %s: %s", s->dir.data, what, db_strerror(rc));
    return SUPPRESS_FAILED;
}

/* Normalise scope and address into the key; -1 when they cannot be one. */
static int norm_key(const char *scope, const char *addr, buf_t *key)
{
    buf_t a = BUF_INIT, sc = BUF_INIT;
    int rc = suppress_norm_scope(scope, &sc) == 0 && suppress_norm_address(addr, &a) == 0 ? 0 : -1;

    if (rc == 0)
        make_key(key, buf_str(&sc), buf_str(&a));
    buf_destroy(&a);
    buf_destroy(&sc);
    return rc;
}

enum suppress_result suppress_get(struct suppress *s, const char *scope, const char *addr,
                                  long long now, struct suppress_entry *out)
{
    buf_t key = BUF_INIT;
    DBT k, v;
    struct suppress_entry e;
    enum suppress_result res = SUPPRESS_NONE;

    if (norm_key(scope, addr, &key) < 0) {
        buf_destroy(&key);
        return SUPPRESS_NONE; /* nothing can be stored under it */
    }
    dbt_set(&k, key.data, key.len);
    dbt_set(&v, NULL, 0);
    int rc = s->db->get(s->db, NULL, &k, &v, 0);
    if (rc == DB_NOTFOUND)
        res = SUPPRESS_NONE;
    else if (rc != 0)
        res = db_fail(s, "get", rc);
    else if (decode(&k, &v, &e) < 0)
        res = db_fail(s, "get", DB_NOTFOUND); /* not ours: say so, suppress nothing */
    else if (expired(e.expires, now)) {
        if (s->mode == SUPPRESS_WRITE)
            s->db->del(s->db, NULL, &k, 0);
        suppress_entry_destroy(&e);
    } else {
        res = SUPPRESS_FOUND;
        if (out)
            *out = e;
        else
            suppress_entry_destroy(&e);
    }
    buf_destroy(&key);
    return res;
}

enum suppress_result suppress_check(struct suppress *s, const char *sender_scope, const char *addr,
                                    long long now, struct suppress_entry *out)
{
    enum suppress_result r = suppress_get(s, "", addr, now, out);

    if (r == SUPPRESS_NONE && sender_scope && *sender_scope)
        r = suppress_get(s, sender_scope, addr, now, out);
    return r;
}

int suppress_put(struct suppress *s, const struct suppress_entry *e, buf_t *err)
{
    buf_t key = BUF_INIT, val = BUF_INIT;
    DBT k, v;
    int rc = -1;

    if (norm_key(e->scope, e->address, &key) < 0) {
        buf_setf(err, "invalid %s", suppress_norm_scope(e->scope, &val) < 0 ? "scope" : "address");
    } else {
        make_value(&val, e);
        dbt_set(&k, key.data, key.len);
        dbt_set(&v, val.data, val.len);
        int dbrc = s->db->put(s->db, NULL, &k, &v, 0);
        if (dbrc != 0) {
            db_fail(s, "put", dbrc);
            buf_setf(err, "suppression list: %s", db_strerror(dbrc));
        }
        rc = dbrc == 0 ? 0 : -1;
    }
    buf_destroy(&key);
    buf_destroy(&val);
    return rc;
}

enum suppress_result suppress_del(struct suppress *s, const char *scope, const char *addr)
{
    buf_t key = BUF_INIT;
    DBT k;
    enum suppress_result res = SUPPRESS_NONE;

    if (norm_key(scope, addr, &key) == 0) {
        dbt_set(&k, key.data, key.len);
        int rc = s->db->del(s->db, NULL, &k, 0);
        res = rc == 0 ? SUPPRESS_FOUND : rc == DB_NOTFOUND ? SUPPRESS_NONE : db_fail(s, "del", rc);
    }
    buf_destroy(&key);
    return res;
}

/* ---- walks ---- */

/* Position c at the first key after (after_scope, after_addr), or at the
 * first key of scope, or at the very first; DB_NOTFOUND at the end. */
static int scan_start(DBC *c, DBT *k, DBT *v, buf_t *start, const char *scope,
                      const char *after_scope, const char *after_addr)
{
    int rc;

    if (after_scope && after_addr)
        make_key(start, after_scope, after_addr);
    else if (scope)
        make_key(start, scope, "");
    else
        return c->get(c, k, v, DB_FIRST);
    dbt_set(k, start->data, start->len);
    dbt_set(v, NULL, 0);
    rc = c->get(c, k, v, DB_SET_RANGE);
    if (rc == 0 && after_scope && after_addr && k->size == start->len &&
        memcmp(k->data, start->data, start->len) == 0)
        rc = c->get(c, k, v, DB_NEXT); /* strictly after */
    return rc;
}

static int in_scope(const DBT *k, const char *scope)
{
    size_t n = strlen(scope);

    return k->size > n && memcmp(k->data, scope, n) == 0 && ((const char *)k->data)[n] == '\0';
}

long suppress_scan(struct suppress *s, const char *scope, const char *after_scope,
                   const char *after_addr, size_t limit, suppress_cb cb, void *arg)
{
    buf_t start = BUF_INIT, sc = BUF_INIT;
    DBC *c = NULL;
    DBT k, v;
    long n = 0;

    if (scope && suppress_norm_scope(scope, &sc) < 0) {
        buf_destroy(&sc);
        return 0; /* no entry can have it */
    }
    scope = scope ? buf_str(&sc) : NULL;
    int rc = s->db->cursor(s->db, NULL, &c, 0);

    if (rc != 0) {
        db_fail(s, "cursor", rc);
        buf_destroy(&sc);
        return -1;
    }
    dbt_set(&k, NULL, 0);
    dbt_set(&v, NULL, 0);
    for (rc = scan_start(c, &k, &v, &start, scope, after_scope, after_addr); rc == 0;
         rc = c->get(c, &k, &v, DB_NEXT)) {
        struct suppress_entry e;
        if (scope && !in_scope(&k, scope))
            break;
        if (decode(&k, &v, &e) < 0)
            continue;
        int stop = cb(&e, arg);
        suppress_entry_destroy(&e);
        n++;
        if (stop || (limit > 0 && (size_t)n >= limit))
            break;
    }
    c->close(c);
    buf_destroy(&start);
    buf_destroy(&sc);
    if (rc != 0 && rc != DB_NOTFOUND) {
        db_fail(s, "scan", rc);
        return -1;
    }
    return n;
}

long suppress_purge(struct suppress *s, long long now, size_t max)
{
    DBC *c = NULL;
    DBT k, v;
    long gone = 0;
    size_t seen = 0;
    int rc = s->db->cursor(s->db, NULL, &c, DB_WRITECURSOR);

    if (rc != 0) {
        db_fail(s, "cursor", rc);
        return -1;
    }
    dbt_set(&k, s->purge_at.data, s->purge_at.len);
    dbt_set(&v, NULL, 0);
    rc = s->purge_at.len ? c->get(c, &k, &v, DB_SET_RANGE) : c->get(c, &k, &v, DB_FIRST);
    for (; rc == 0 && seen < max; rc = c->get(c, &k, &v, DB_NEXT), seen++) {
        if (v.size >= VALUE_FIXED && expired(get_u64((unsigned char *)v.data + 8), now) &&
            c->del(c, 0) == 0)
            gone++;
    }
    buf_reset(&s->purge_at); /* at the end: start again at the first */
    if (rc == 0)
        buf_append(&s->purge_at, k.data, k.size);
    c->close(c);
    if (rc != 0 && rc != DB_NOTFOUND) {
        db_fail(s, "purge", rc);
        return -1;
    }
    return gone;
}
