/* dict.c - "hash:" lookup tables in Berkeley DB, built from text (postmap).
 *
 * Keys are stored lower-cased, keys and values without a trailing NUL. A
 * build writes <path>.db.tmp and renames it over <path>.db, so a daemon
 * never sees a half-built table; an open table notices the rename (new
 * inode, checked at most once a second) and reopens itself, so a rebuilt
 * table takes effect without a reload.
 *
 * One process opens each table once: the open tables are kept in a list
 * by file name, dict_open of a table already open returns the same handle
 * with one more reference, and dict_close drops one (the last closes the
 * database). smtpd's restrictions, its sender login maps and the TLS
 * policy all look in the same handle, and a rebuild is noticed once. */
#include "common/glue/dict.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

#include <db.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct dict {
    LIST_ENTRY(dict) link; /* open_tables */
    int refs;              /* dict_open calls not yet dict_close'd */
    DB *db;
    char *dbpath; /* "<path>.db" */
    ino_t ino;    /* of the open file, to notice a rebuild */
    dev_t dev;
    time_t checked; /* last time we looked for a rebuild */
};

/* Every table open in this process (loop thread only, like the rest). */
static LIST_HEAD(, dict) open_tables = LIST_HEAD_INITIALIZER(open_tables);

/* "hash:/path" or "/path" -> "/path"; NULL for another table type. */
static const char *spec_path(const char *spec, buf_t *err)
{
    const char *colon = strchr(spec, ':');
    const char *slash = strchr(spec, '/');
    if (colon == NULL || (slash && slash < colon))
        return spec;
    if ((size_t)(colon - spec) == 4 && strncmp(spec, "hash", 4) == 0)
        return colon + 1;
    buf_setf(err, "unsupported lookup table type in \"%s\" (only hash: is supported)", spec);
    return NULL;
}

static void dbt_set(DBT *d, const void *p, size_t n)
{
    memset(d, 0, sizeof(*d));
    d->data = (void *)p;
    d->size = (u_int32_t)n;
}

static int open_db(struct dict *d, buf_t *err)
{
    struct stat st;
    int rc = db_create(&d->db, NULL, 0);
    if (rc == 0)
        rc = d->db->open(d->db, NULL, d->dbpath, NULL, DB_HASH, DB_RDONLY, 0);
    if (rc != 0) {
        buf_setf(err, "open table %s: %s", d->dbpath, rc > 0 ? strerror(rc) : db_strerror(rc));
        if (d->db)
            d->db->close(d->db, 0);
        d->db = NULL;
        return -1;
    }
    int fd;
    if (d->db->fd(d->db, &fd) == 0 && fstat(fd, &st) == 0) {
        d->ino = st.st_ino;
        d->dev = st.st_dev;
    }
    d->checked = time(NULL);
    return 0;
}

/* The open table whose file is dbpath, or NULL. */
static struct dict *find_open(const char *dbpath)
{
    struct dict *d;
    LIST_FOREACH(d, &open_tables, link)
    if (strcmp(d->dbpath, dbpath) == 0)
        return d;
    return NULL;
}

struct dict *dict_open(const char *spec, buf_t *err)
{
    const char *path = spec_path(spec, err);
    if (path == NULL)
        return NULL;
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s.db", path);
    struct dict *d = find_open(buf_str(&p));
    if (d) {
        buf_destroy(&p);
        d->refs++;
        return d;
    }
    d = xcalloc(1, sizeof(*d));
    d->dbpath = buf_detach(&p);
    if (open_db(d, err) < 0) {
        free(d->dbpath);
        free(d);
        return NULL;
    }
    d->refs = 1;
    LIST_INSERT_HEAD(&open_tables, d, link);
    return d;
}

/* Reopen when the file was replaced by a rebuild (checked once a second). */
static void maybe_reopen(struct dict *d)
{
    struct stat st;
    time_t now = time(NULL);
    if (now == d->checked)
        return;
    d->checked = now;
    if (stat(d->dbpath, &st) < 0 || (st.st_ino == d->ino && st.st_dev == d->dev))
        return;
    DB *old = d->db;
    buf_t err = BUF_INIT;
    if (open_db(d, &err) == 0) {
        old->close(old, 0);
    } else {
        log_warn("%s (keeping the previous table)", err.data);
        d->db = old;
    }
    buf_destroy(&err);
}

enum dict_result dict_lookup(struct dict *d, const char *key, buf_t *value)
{
    DBT k, v;
    maybe_reopen(d);
    char *lk = str_lower(xstrdup(key));
    dbt_set(&k, lk, strlen(lk));
    dbt_set(&v, NULL, 0);
    int rc = d->db->get(d->db, NULL, &k, &v, 0);
    free(lk);
    if (rc == DB_NOTFOUND)
        return DICT_NOTFOUND;
    if (rc != 0) {
        log_error("table %s: lookup \"%s\": %s", d->dbpath, key, db_strerror(rc));
        return DICT_ERROR;
    }
    buf_reset(value);
    buf_append(value, v.data, v.size);
    return DICT_FOUND;
}

int dict_walk(struct dict *d, int (*fn)(const char *key, const char *value, void *arg), void *arg,
              buf_t *err)
{
    DBC *c = NULL;
    DBT k, v;
    int rc = d->db->cursor(d->db, NULL, &c, 0), ret = 0;
    if (rc != 0) {
        buf_setf(err, "table %s: %s", d->dbpath, db_strerror(rc));
        return -1;
    }
    dbt_set(&k, NULL, 0);
    dbt_set(&v, NULL, 0);
    while (ret == 0 && (rc = c->get(c, &k, &v, DB_NEXT)) == 0) {
        char *ks = xstrndup(k.data, k.size), *vs = xstrndup(v.data, v.size);
        ret = fn(ks, vs, arg);
        free(ks);
        free(vs);
    }
    if (ret == 0 && rc != DB_NOTFOUND) {
        buf_setf(err, "table %s: %s", d->dbpath, db_strerror(rc));
        ret = -1;
    }
    c->close(c);
    return ret;
}

void dict_close(struct dict *d)
{
    if (d == NULL || --d->refs > 0)
        return;
    LIST_REMOVE(d, link);
    if (d->db)
        d->db->close(d->db, 0);
    free(d->dbpath);
    free(d);
}

/* ---- building ---- */

/* One source line (len bytes) into the table. 0 ok (or skipped), -1
 * malformed. A NUL byte would silently cut the line short (or hide it as
 * blank), so it makes the line malformed. */
static int build_line(DB *db, char *line, size_t len, const char *src, long lineno, buf_t *err)
{
    if (memchr(line, '\0', len)) {
        buf_setf(err, "%s, line %ld: NUL byte in line", src, lineno);
        return -1;
    }
    char *s = str_trim(line);
    if (*s == '\0' || *s == '#')
        return 0;
    size_t klen = strcspn(s, " \t");
    if (s[klen] == '\0') {
        buf_setf(err, "%s, line %ld: expected \"key whitespace value\"", src, lineno);
        return -1;
    }
    s[klen] = '\0';
    char *val = str_trim(s + klen + 1);
    str_lower(s);
    DBT k, v;
    dbt_set(&k, s, klen);
    dbt_set(&v, val, strlen(val));
    int rc = db->put(db, NULL, &k, &v, DB_NOOVERWRITE);
    if (rc == DB_KEYEXIST) {
        log_warn("%s, line %ld: duplicate entry: \"%s\" (keeping the first)", src, lineno, s);
        return 0;
    }
    if (rc != 0) {
        buf_setf(err, "%s, line %ld: %s", src, lineno, db_strerror(rc));
        return -1;
    }
    return 0;
}

static int build_from(FILE *fp, DB *db, const char *src, buf_t *err)
{
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    int rc = 0;
    ssize_t n;
    while (rc == 0 && (n = getline(&line, &cap, fp)) >= 0) {
        lineno++;
        rc = build_line(db, line, (size_t)n, src, lineno, err);
    }
    if (rc == 0 && ferror(fp)) {
        buf_setf(err, "read %s: %s", src, strerror(errno));
        rc = -1;
    }
    free(line);
    return rc;
}

/* Make the finished temp file durable before it replaces the table. */
static int sync_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* One key/value pair (the key lower-cased) into the table. */
static int put_pair(DB *db, char *key, const char *val, const char *src, buf_t *err)
{
    DBT k, v;
    str_lower(key);
    dbt_set(&k, key, strlen(key));
    dbt_set(&v, val, strlen(val));
    int rc = db->put(db, NULL, &k, &v, DB_NOOVERWRITE);
    if (rc == DB_KEYEXIST) {
        log_warn("%s: duplicate entry: \"%s\" (keeping the first)", src, key);
        return 0;
    }
    if (rc != 0) {
        buf_setf(err, "%s: %s", src, db_strerror(rc));
        return -1;
    }
    return 0;
}

int dict_build_pairs(const char *spec, char *const *keys, char *const *values, size_t n, buf_t *err)
{
    const char *path = spec_path(spec, err);
    if (path == NULL)
        return -1;
    buf_t tmp = BUF_INIT, dst = BUF_INIT;
    buf_printf(&tmp, "%s.db.tmp", path);
    buf_printf(&dst, "%s.db", path);
    DB *db = NULL;
    int rc = db_create(&db, NULL, 0);
    if (rc == 0)
        rc = db->open(db, NULL, tmp.data, NULL, DB_HASH, DB_CREATE | DB_TRUNCATE, 0644);
    if (rc != 0) {
        buf_setf(err, "create %s: %s", tmp.data, rc > 0 ? strerror(rc) : db_strerror(rc));
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char *k = xstrdup(keys[i]);
        rc = put_pair(db, k, values[i], path, err);
        free(k);
    }
    if (db && db->close(db, 0) != 0 && rc == 0) {
        buf_setf(err, "write %s: close failed", tmp.data);
        rc = -1;
    }
    if (rc == 0 && (sync_file(tmp.data) < 0 || rename(tmp.data, dst.data) < 0)) {
        buf_setf(err, "install %s: %s", dst.data, strerror(errno));
        rc = -1;
    }
    if (rc < 0)
        unlink(tmp.data);
    buf_destroy(&tmp);
    buf_destroy(&dst);
    return rc;
}

int dict_build(const char *spec, buf_t *err)
{
    const char *path = spec_path(spec, err);
    if (path == NULL)
        return -1;
    FILE *fp = fopen(path, "re");
    if (fp == NULL) {
        buf_setf(err, "open %s: %s", path, strerror(errno));
        return -1;
    }
    buf_t tmp = BUF_INIT, dst = BUF_INIT;
    buf_printf(&tmp, "%s.db.tmp", path);
    buf_printf(&dst, "%s.db", path);
    DB *db = NULL;
    int rc = db_create(&db, NULL, 0);
    if (rc == 0)
        rc = db->open(db, NULL, tmp.data, NULL, DB_HASH, DB_CREATE | DB_TRUNCATE, 0644);
    if (rc != 0) {
        buf_setf(err, "create %s: %s", tmp.data, rc > 0 ? strerror(rc) : db_strerror(rc));
        rc = -1;
    } else {
        rc = build_from(fp, db, path, err);
    }
    if (db && db->close(db, 0) != 0 && rc == 0) {
        buf_setf(err, "write %s: close failed", tmp.data);
        rc = -1;
    }
    if (rc == 0 && (sync_file(tmp.data) < 0 || rename(tmp.data, dst.data) < 0)) {
        buf_setf(err, "install %s: %s", dst.data, strerror(errno));
        rc = -1;
    }
    if (rc < 0)
        unlink(tmp.data);
    fclose(fp);
    buf_destroy(&tmp);
    buf_destroy(&dst);
    return rc;
}
