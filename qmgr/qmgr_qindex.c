/* qmgr_qindex.c - the queue index (qmgr only) in Berkeley DB 5.3.
 *
 * <spool>/index/ holds a private environment (mpool only: one process,
 * no locks, no transactions) and three B-trees:
 *   queue.db   id -> serialised qmgr_qidx_rec (primary)
 *   due.db     8-byte big-endian next_attempt + id -> "" (not for HOLD)
 *   domain.db  lower-cased domain -> id (sorted duplicates)
 * The secondaries are maintained by hand on put/del (the old record is
 * read first) because one record has many domains. Nothing is fsync'ed
 * except at a clean close; after an unclean stop the DB files are thrown
 * away at open and qmgr rebuilds from the queue files. */
#include "qmgr/qmgr_qindex.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

#include <db.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DUE_KEY_LEN (8 + QID_LEN)

struct qindex {
    DB_ENV *env;
    DB *queue, *due, *domain;
    buf_t dir;
    size_t count;
};

static const char *const db_files[] = { "queue.db", "due.db", "domain.db" };

/* ---- serialisation: fixed numbers then length-prefixed strings ---- */

static void put_u64(buf_t *b, unsigned long long v)
{
    unsigned char x[8];
    for (int i = 7; i >= 0; i--, v >>= 8)
        x[i] = (unsigned char)(v & 0xff);
    buf_append(b, x, 8);
}

static void put_str(buf_t *b, const char *s)
{
    /* length + 1 so that 0 can stand for NULL */
    put_u64(b, s ? strlen(s) + 1 : 0);
    if (s)
        buf_append(b, s, strlen(s));
}

static void put_strv(buf_t *b, char **v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    put_u64(b, n);
    for (size_t i = 0; i < n; i++)
        put_str(b, v[i]);
}

static void encode(const struct qmgr_qidx_rec *r, buf_t *b)
{
    put_u64(b, (unsigned long long)r->state);
    put_u64(b, (unsigned long long)r->arrival);
    put_u64(b, (unsigned long long)r->next_attempt);
    put_u64(b, (unsigned long long)r->attempts);
    put_u64(b, (unsigned long long)r->size);
    put_str(b, r->sender);
    put_str(b, r->reason);
    put_strv(b, r->rcpts);
    put_strv(b, r->domains);
}

struct rdr {
    const unsigned char *p;
    size_t left;
    int bad;
};

static unsigned long long get_u64(struct rdr *r)
{
    unsigned long long v = 0;
    if (r->left < 8) {
        r->bad = 1;
        return 0;
    }
    for (int i = 0; i < 8; i++)
        v = (v << 8) | r->p[i];
    r->p += 8;
    r->left -= 8;
    return v;
}

static char *get_str(struct rdr *r)
{
    unsigned long long n = get_u64(r);
    if (r->bad || n == 0)
        return NULL;
    if (n - 1 > r->left) {
        r->bad = 1;
        return NULL;
    }
    char *s = xstrndup((const char *)r->p, (size_t)(n - 1));
    r->p += n - 1;
    r->left -= (size_t)(n - 1);
    return s;
}

static char **get_strv(struct rdr *r)
{
    unsigned long long n = get_u64(r);
    if (r->bad || n > r->left / 8) { /* every string needs >= 8 bytes */
        r->bad = 1;
        n = 0;
    }
    char **v = xcalloc((size_t)n + 1, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        v[i] = get_str(r);
        if (v[i] == NULL)
            v[i] = xstrdup("");
    }
    return v;
}

static int decode(const char *id, const void *data, size_t len, struct qmgr_qidx_rec *out)
{
    struct rdr r = { data, len, 0 };
    memset(out, 0, sizeof(*out));
    str_lcpy(out->id, id, sizeof(out->id));
    out->state = (int)get_u64(&r);
    out->arrival = (long long)get_u64(&r);
    out->next_attempt = (long long)get_u64(&r);
    out->attempts = (int)get_u64(&r);
    out->size = (long long)get_u64(&r);
    out->sender = get_str(&r);
    out->reason = get_str(&r);
    out->rcpts = get_strv(&r);
    out->domains = get_strv(&r);
    if (r.bad || r.left != 0) {
        log_error("queue index: malformed record for %s", id);
        qmgr_qidx_rec_destroy(out);
        return -1;
    }
    if (out->sender == NULL)
        out->sender = xstrdup("");
    return 0;
}

void qmgr_qidx_rec_destroy(struct qmgr_qidx_rec *rec)
{
    free(rec->sender);
    free(rec->reason);
    strv_free(rec->rcpts);
    strv_free(rec->domains);
    rec->sender = rec->reason = NULL;
    rec->rcpts = rec->domains = NULL;
}

const char *qmgr_qidx_state_name(int state)
{
    static const char *const names[] = { "incoming", "active", "deferred", "hold" };
    return state >= 0 && state <= QS_HOLD ? names[state] : "unknown";
}

/* ---- Berkeley DB plumbing ---- */

static void dbt_set(DBT *d, const void *p, size_t n)
{
    memset(d, 0, sizeof(*d));
    d->data = (void *)p;
    d->size = (u_int32_t)n;
}

static void due_key(unsigned char k[DUE_KEY_LEN], long long when, const char *id)
{
    unsigned long long v = when > 0 ? (unsigned long long)when : 0;
    for (int i = 7; i >= 0; i--, v >>= 8)
        k[i] = (unsigned char)(v & 0xff);
    memcpy(k + 8, id, QID_LEN);
}

static int db_fail(const char *what, int rc)
{
    log_error("queue index: %s: %s", what, db_strerror(rc));
    return -1;
}

static int open_db(struct qindex *qi, DB **dbp, const char *file, u_int32_t flags, buf_t *err)
{
    int rc = db_create(dbp, qi->env, 0);
    if (rc == 0 && flags)
        rc = (*dbp)->set_flags(*dbp, flags);
    if (rc == 0)
        rc = (*dbp)->open(*dbp, NULL, file, NULL, DB_BTREE, DB_CREATE, 0600);
    if (rc != 0) {
        buf_printf(err, "queue index %s/%s: %s", qi->dir.data, file, db_strerror(rc));
        if (*dbp)
            (*dbp)->close(*dbp, DB_NOSYNC);
        *dbp = NULL;
        return -1;
    }
    return 0;
}

static void close_all(struct qindex *qi, u_int32_t flags)
{
    DB **dbs[] = { &qi->queue, &qi->due, &qi->domain };
    for (size_t i = 0; i < 3; i++) {
        if (*dbs[i])
            (*dbs[i])->close(*dbs[i], flags);
        *dbs[i] = NULL;
    }
    if (qi->env)
        qi->env->close(qi->env, 0);
    qi->env = NULL;
}

static void path_in(const struct qindex *qi, const char *file, buf_t *out)
{
    buf_reset(out);
    buf_printf(out, "%s/%s", qi->dir.data, file);
}

/* After an unclean stop the files may be inconsistent: start afresh. */
static void remove_db_files(struct qindex *qi)
{
    buf_t p = BUF_INIT;
    for (size_t i = 0; i < 3; i++) {
        path_in(qi, db_files[i], &p);
        if (unlink(p.data) < 0 && errno != ENOENT)
            log_warn("cannot remove %s: %m", p.data);
    }
    buf_destroy(&p);
}

static size_t count_records(DB *db)
{
    DBC *c;
    DBT k, d;
    size_t n = 0;
    if (db->cursor(db, NULL, &c, 0) != 0)
        return 0;
    dbt_set(&k, NULL, 0);
    dbt_set(&d, NULL, 0);
    d.flags = DB_DBT_PARTIAL; /* keys only: dlen 0 */
    while (c->get(c, &k, &d, DB_NEXT) == 0)
        n++;
    c->close(c);
    return n;
}

static int open_env(struct qindex *qi, buf_t *err)
{
    int rc = db_env_create(&qi->env, 0);
    if (rc == 0)
        rc = qi->env->set_cachesize(qi->env, 0, 16 * 1024 * 1024, 1);
    if (rc == 0)
        rc = qi->env->open(qi->env, qi->dir.data, DB_CREATE | DB_INIT_MPOOL | DB_PRIVATE, 0600);
    if (rc != 0) {
        buf_printf(err, "queue index environment %s: %s", qi->dir.data, db_strerror(rc));
        return -1;
    }
    if (open_db(qi, &qi->queue, "queue.db", 0, err) < 0 ||
        open_db(qi, &qi->due, "due.db", 0, err) < 0 ||
        open_db(qi, &qi->domain, "domain.db", DB_DUP | DB_DUPSORT, err) < 0)
        return -1;
    return 0;
}

struct qindex *qmgr_qindex_open(const char *spool, int *was_clean, buf_t *err)
{
    struct qindex *qi = xcalloc(1, sizeof(*qi));
    buf_t marker = BUF_INIT;
    buf_init(&qi->dir, 128);
    buf_printf(&qi->dir, "%s/index", spool);
    if (err)
        buf_reset(err);
    buf_t dummy = BUF_INIT;
    buf_t *e = err ? err : &dummy;
    if (mkdir(qi->dir.data, 0700) < 0 && errno != EEXIST) {
        buf_printf(e, "cannot create %s: %s", qi->dir.data, strerror(errno));
        goto fail;
    }
    path_in(qi, "clean", &marker);
    *was_clean = unlink(marker.data) == 0;
    if (!*was_clean)
        remove_db_files(qi);
    if (open_env(qi, e) < 0)
        goto fail;
    qi->count = count_records(qi->queue);
    buf_destroy(&marker);
    buf_destroy(&dummy);
    return qi;
fail:
    close_all(qi, DB_NOSYNC);
    buf_destroy(&qi->dir);
    buf_destroy(&marker);
    buf_destroy(&dummy);
    free(qi);
    return NULL;
}

static void write_marker(struct qindex *qi)
{
    buf_t p = BUF_INIT;
    path_in(qi, "clean", &p);
    int fd = open(p.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || fsync(fd) < 0)
        log_warn("cannot write %s: %m (the index will be rebuilt at next start)", p.data);
    if (fd >= 0)
        close(fd);
    buf_destroy(&p);
}

void qmgr_qindex_close(struct qindex *qi, int clean)
{
    if (qi == NULL)
        return;
    int ok = 1;
    if (clean) {
        DB *dbs[] = { qi->queue, qi->due, qi->domain };
        for (size_t i = 0; i < 3; i++) {
            int rc = dbs[i]->sync(dbs[i], 0);
            if (rc != 0) {
                db_fail("sync", rc);
                ok = 0;
            }
        }
    }
    close_all(qi, clean ? 0 : DB_NOSYNC);
    /* The marker only after the data is on disk, or it would lie. */
    if (clean && ok)
        write_marker(qi);
    buf_destroy(&qi->dir);
    free(qi);
}

int qmgr_qindex_clear(struct qindex *qi)
{
    DB *dbs[] = { qi->queue, qi->due, qi->domain };
    for (size_t i = 0; i < 3; i++) {
        u_int32_t n;
        int rc = dbs[i]->truncate(dbs[i], NULL, &n, 0);
        if (rc != 0)
            return db_fail("truncate", rc);
    }
    qi->count = 0;
    return 0;
}

size_t qmgr_qindex_count(struct qindex *qi)
{
    return qi->count;
}

/* ---- records and secondaries ---- */

static enum qmgr_qidx_lookup get_raw(struct qindex *qi, const char *id, struct qmgr_qidx_rec *out)
{
    DBT k, d;
    dbt_set(&k, id, strlen(id));
    dbt_set(&d, NULL, 0);
    int rc = qi->queue->get(qi->queue, NULL, &k, &d, 0);
    if (rc == DB_NOTFOUND)
        return QIDX_MISSING;
    if (rc != 0) {
        db_fail("get", rc);
        return QIDX_FAILED;
    }
    return decode(id, d.data, d.size, out) < 0 ? QIDX_FAILED : QIDX_FOUND;
}

enum qmgr_qidx_lookup qmgr_qindex_get(struct qindex *qi, const char *id, struct qmgr_qidx_rec *out)
{
    if (!qid_valid(id))
        return QIDX_MISSING;
    return get_raw(qi, id, out);
}

static int del_domain_pair(struct qindex *qi, const char *domain, const char *id)
{
    DBC *c;
    DBT k, d;
    char *dom = str_lower(xstrdup(domain));
    int rc = qi->domain->cursor(qi->domain, NULL, &c, 0);
    if (rc == 0) {
        dbt_set(&k, dom, strlen(dom));
        dbt_set(&d, id, QID_LEN);
        rc = c->get(c, &k, &d, DB_GET_BOTH);
        if (rc == 0)
            rc = c->del(c, 0);
        c->close(c);
    }
    free(dom);
    return rc == 0 || rc == DB_NOTFOUND ? 0 : db_fail("domain delete", rc);
}

static int del_secondaries(struct qindex *qi, const struct qmgr_qidx_rec *old)
{
    unsigned char key[DUE_KEY_LEN];
    DBT k;
    due_key(key, old->next_attempt, old->id);
    dbt_set(&k, key, sizeof(key));
    int rc = qi->due->del(qi->due, NULL, &k, 0);
    if (rc != 0 && rc != DB_NOTFOUND)
        return db_fail("due delete", rc);
    for (char **p = old->domains; p && *p; p++)
        if (del_domain_pair(qi, *p, old->id) < 0)
            return -1;
    return 0;
}

static int put_secondaries(struct qindex *qi, const struct qmgr_qidx_rec *rec)
{
    unsigned char key[DUE_KEY_LEN];
    DBT k, d;
    int rc;
    if (rec->state != QS_HOLD) {
        due_key(key, rec->next_attempt, rec->id);
        dbt_set(&k, key, sizeof(key));
        dbt_set(&d, "", 0);
        if ((rc = qi->due->put(qi->due, NULL, &k, &d, 0)) != 0)
            return db_fail("due put", rc);
    }
    for (char **p = rec->domains; p && *p; p++) {
        char *dom = str_lower(xstrdup(*p));
        dbt_set(&k, dom, strlen(dom));
        dbt_set(&d, rec->id, QID_LEN);
        rc = qi->domain->put(qi->domain, NULL, &k, &d, DB_NODUPDATA);
        free(dom);
        if (rc != 0 && rc != DB_KEYEXIST)
            return db_fail("domain put", rc);
    }
    return 0;
}

int qmgr_qindex_put(struct qindex *qi, const struct qmgr_qidx_rec *rec)
{
    struct qmgr_qidx_rec old;
    if (!qid_valid(rec->id))
        log_panic("qmgr_qindex_put: bad queue id \"%s\"", rec->id);
    enum qmgr_qidx_lookup found = get_raw(qi, rec->id, &old);
    if (found == QIDX_FAILED)
        return -1;
    if (found == QIDX_FOUND) {
        int rc = del_secondaries(qi, &old);
        qmgr_qidx_rec_destroy(&old);
        if (rc < 0)
            return -1;
    }
    buf_t b = BUF_INIT;
    DBT k, d;
    encode(rec, &b);
    dbt_set(&k, rec->id, QID_LEN);
    dbt_set(&d, b.data, b.len);
    int rc = qi->queue->put(qi->queue, NULL, &k, &d, 0);
    buf_destroy(&b);
    if (rc != 0)
        return db_fail("put", rc);
    if (found == QIDX_MISSING)
        qi->count++;
    return put_secondaries(qi, rec);
}

int qmgr_qindex_del(struct qindex *qi, const char *id)
{
    struct qmgr_qidx_rec old;
    enum qmgr_qidx_lookup found = qid_valid(id) ? get_raw(qi, id, &old) : QIDX_MISSING;
    if (found != QIDX_FOUND)
        return found == QIDX_FAILED ? -1 : 0;
    int rc = del_secondaries(qi, &old);
    qmgr_qidx_rec_destroy(&old);
    DBT k;
    dbt_set(&k, id, QID_LEN);
    int drc = qi->queue->del(qi->queue, NULL, &k, 0);
    if (drc != 0 && drc != DB_NOTFOUND)
        return db_fail("delete", drc);
    if (drc == 0 && qi->count > 0)
        qi->count--;
    return rc;
}

/* ---- scans ---- */

enum visit { VISIT_NEXT, VISIT_STOP, VISIT_FAILED };

/* Look the id up and hand it to the callback. */
static enum visit visit(struct qindex *qi, const char *id, qmgr_qindex_cb cb, void *arg)
{
    struct qmgr_qidx_rec rec;
    enum qmgr_qidx_lookup found = get_raw(qi, id, &rec);
    if (found != QIDX_FOUND) /* missing: a stale secondary entry, skip it */
        return found == QIDX_FAILED ? VISIT_FAILED : VISIT_NEXT;
    int stop = cb(&rec, arg);
    qmgr_qidx_rec_destroy(&rec);
    return stop ? VISIT_STOP : VISIT_NEXT;
}

int qmgr_qindex_scan_due(struct qindex *qi, long long now, qmgr_qindex_cb cb, void *arg)
{
    DBC *c;
    DBT k, d;
    char id[QID_LEN + 1];
    unsigned char limit[8];
    int rc = qi->due->cursor(qi->due, NULL, &c, 0);
    enum visit res = VISIT_NEXT;
    if (rc != 0)
        return db_fail("cursor", rc);
    unsigned long long lim = now > 0 ? (unsigned long long)now : 0;
    for (int i = 7; i >= 0; i--, lim >>= 8)
        limit[i] = (unsigned char)(lim & 0xff);
    dbt_set(&k, NULL, 0);
    dbt_set(&d, NULL, 0);
    while (res == VISIT_NEXT && (rc = c->get(c, &k, &d, DB_NEXT)) == 0) {
        if (k.size != DUE_KEY_LEN)
            continue;
        if (memcmp(k.data, limit, 8) > 0)
            break;
        memcpy(id, (char *)k.data + 8, QID_LEN);
        id[QID_LEN] = '\0';
        res = visit(qi, id, cb, arg);
    }
    c->close(c);
    if (rc != 0 && rc != DB_NOTFOUND)
        return db_fail("due scan", rc);
    return res == VISIT_FAILED ? -1 : 0;
}

int qmgr_qindex_scan_domain(struct qindex *qi, const char *domain, qmgr_qindex_cb cb, void *arg)
{
    return qmgr_qindex_scan_domain_after(qi, domain, "", cb, arg);
}

/* Duplicates are sorted (DB_DUPSORT): the ids of a domain come in id
 * order, so a scan resumes at the first id after "after". */
int qmgr_qindex_scan_domain_after(struct qindex *qi, const char *domain, const char *after,
                                  qmgr_qindex_cb cb, void *arg)
{
    DBC *c;
    DBT k, d;
    char id[QID_LEN + 1];
    char *dom = str_lower(xstrdup(domain));
    int rc = qi->domain->cursor(qi->domain, NULL, &c, 0);
    enum visit res = VISIT_NEXT;
    if (rc != 0) {
        free(dom);
        return db_fail("cursor", rc);
    }
    dbt_set(&k, dom, strlen(dom));
    dbt_set(&d, after, strlen(after));
    for (rc = c->get(c, &k, &d, *after ? DB_GET_BOTH_RANGE : DB_SET); rc == 0 && res == VISIT_NEXT;
         rc = c->get(c, &k, &d, DB_NEXT_DUP)) {
        if (d.size != QID_LEN || (*after && memcmp(d.data, after, QID_LEN) == 0))
            continue;
        memcpy(id, d.data, QID_LEN);
        id[QID_LEN] = '\0';
        res = visit(qi, id, cb, arg);
    }
    c->close(c);
    free(dom);
    if (rc != 0 && rc != DB_NOTFOUND)
        return db_fail("domain scan", rc);
    return res == VISIT_FAILED ? -1 : 0;
}

int qmgr_qindex_scan_all(struct qindex *qi, qmgr_qindex_cb cb, void *arg)
{
    return qmgr_qindex_scan_all_after(qi, "", cb, arg);
}

int qmgr_qindex_scan_all_after(struct qindex *qi, const char *after, qmgr_qindex_cb cb, void *arg)
{
    DBC *c;
    DBT k, d;
    char id[QID_LEN + 1];
    int rc = qi->queue->cursor(qi->queue, NULL, &c, 0), res = 0;
    u_int32_t op = *after ? DB_SET_RANGE : DB_NEXT;
    if (rc != 0)
        return db_fail("cursor", rc);
    dbt_set(&k, after, strlen(after));
    dbt_set(&d, NULL, 0);
    while (res == 0 && (rc = c->get(c, &k, &d, op)) == 0) {
        struct qmgr_qidx_rec rec;
        op = DB_NEXT;
        if (k.size != QID_LEN || (*after && memcmp(k.data, after, QID_LEN) == 0))
            continue;
        memcpy(id, k.data, QID_LEN);
        id[QID_LEN] = '\0';
        if (decode(id, d.data, d.size, &rec) < 0)
            continue;
        res = cb(&rec, arg) ? 1 : 0;
        qmgr_qidx_rec_destroy(&rec);
    }
    c->close(c);
    if (rc != 0 && rc != DB_NOTFOUND)
        return db_fail("scan", rc);
    return 0;
}
