/* fuzz_dict.c - libFuzzer harness for the table-file loader
 * (common/glue/dict.c: dict_build, what "postino map build" runs, and the
 * lookups daemons make). Table source is text an admin edits by hand;
 * the loader must build exactly what the text says or refuse it with the
 * line number, never crash, never install half a table.
 *
 * Each input is written as the source file in a private temporary
 * directory (on /dev/shm when there is one: every build fsyncs) and built
 * into Berkeley DB. A small model here reads the same text by the rules
 * of dict.h: "key whitespace value" per line, '#' comments and blank
 * lines skipped, white space trimmed, the key lower-cased, the first of
 * duplicate keys kept, a line without a value or with a NUL byte is an
 * error. Then:
 *   - the build fails exactly when the model finds a bad line, and the
 *     message names the file and that line; no table and no temporary
 *     file are left behind;
 *   - otherwise every key the model accepted is found with its value
 *     (in any case), a key it did not is not, and walking the database
 *     finds nothing else. */
#include <ctype.h>
#include <db.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/glue/dict.h"
#include "common/util/log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[128];
static buf_t src = BUF_INIT, spec = BUF_INIT, dbfile = BUF_INIT, tmppath = BUF_INIT;

static void cleanup(void)
{
    unlink(buf_str(&src));
    unlink(buf_str(&dbfile));
    unlink(buf_str(&tmppath));
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init("fuzz_dict");
    log_open("/dev/null");
    const char *base = getenv("FUZZ_TMPDIR");
    struct stat st;
    if (base == NULL)
        base = stat("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof(dir), "%s/postino-fuzz-dict.XXXXXX", base);
    if (mkdtemp(dir) == NULL)
        log_fatal("mkdtemp %s: %s", dir, strerror(errno));
    buf_printf(&src, "%s/table", dir);
    buf_printf(&spec, "hash:%s/table", dir);
    buf_printf(&dbfile, "%s/table.db", dir);
    buf_printf(&tmppath, "%s/table.db.tmp", dir);
    atexit(cleanup);
    return 0;
}

/* ---- the model ---- */

struct entry {
    char *key, *val;
    size_t klen, vlen;
};

struct model {
    struct entry *e;
    size_t n, cap;
    long bad_line; /* first malformed line, 0 when none */
};

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static void trim(const char **p, size_t *n)
{
    while (*n && is_ws((unsigned char)**p)) {
        (*p)++;
        (*n)--;
    }
    while (*n && is_ws((unsigned char)(*p)[*n - 1]))
        (*n)--;
}

static struct entry *model_find(const struct model *m, const char *k, size_t klen)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->e[i].klen == klen && memcmp(m->e[i].key, k, klen) == 0)
            return &m->e[i];
    return NULL;
}

/* One line (without its '\n'); 0 ok or skipped, -1 malformed. */
static int model_line(struct model *m, const char *p, size_t n)
{
    if (memchr(p, '\0', n))
        return -1;
    trim(&p, &n);
    if (n == 0 || p[0] == '#')
        return 0;
    size_t k = 0;
    while (k < n && p[k] != ' ' && p[k] != '\t')
        k++;
    if (k == n)
        return -1;
    const char *v = p + k + 1;
    size_t vn = n - k - 1;
    trim(&v, &vn);
    char *key = xstrndup(p, k);
    for (size_t i = 0; i < k; i++)
        key[i] = (char)tolower((unsigned char)key[i]);
    if (model_find(m, key, k)) {
        free(key);
        return 0;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 16;
        m->e = xrealloc(m->e, m->cap * sizeof(*m->e));
    }
    m->e[m->n++] = (struct entry){ key, xstrndup(v, vn), k, vn };
    return 0;
}

static void model_build(struct model *m, const char *d, size_t size)
{
    long lineno = 0;
    size_t off = 0;
    memset(m, 0, sizeof(*m));
    while (off < size) {
        const char *nl = memchr(d + off, '\n', size - off);
        size_t n = nl ? (size_t)(nl - (d + off)) : size - off;
        lineno++;
        if (model_line(m, d + off, n) < 0) {
            m->bad_line = lineno;
            return;
        }
        off += n + (nl != NULL);
    }
}

static void model_destroy(struct model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->e[i].key);
        free(m->e[i].val);
    }
    free(m->e);
}

/* ---- checks ---- */

static void put_source(const uint8_t *data, size_t size)
{
    int fd = open(buf_str(&src), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
        log_fatal("write %s: %s", buf_str(&src), strerror(errno));
    close(fd);
}

static void check_failure(const struct model *m, const buf_t *err)
{
    char want[64];
    snprintf(want, sizeof(want), ", line %ld: ", m->bad_line);
    if (strstr(buf_str(err), buf_str(&src)) == NULL || strstr(buf_str(err), want) == NULL)
        abort();
    if (access(buf_str(&dbfile), F_OK) == 0 || access(buf_str(&tmppath), F_OK) == 0)
        abort(); /* a refused source leaves no table behind */
}

static void check_lookup(struct dict *d, const char *key, const struct entry *want)
{
    buf_t v = BUF_INIT;
    enum dict_result r = dict_lookup(d, key, &v);
    if (want == NULL ? r != DICT_NOTFOUND
                     : (r != DICT_FOUND || v.len != want->vlen || memcmp(v.data, want->val, v.len)))
        abort();
    buf_destroy(&v);
}

/* Every record in the database is one the model accepted. */
static void check_walk(const struct model *m)
{
    DB *db = NULL;
    DBC *cur = NULL;
    DBT k, v;
    size_t count = 0;
    if (db_create(&db, NULL, 0) != 0 ||
        db->open(db, NULL, buf_str(&dbfile), NULL, DB_HASH, DB_RDONLY, 0) != 0 ||
        db->cursor(db, NULL, &cur, 0) != 0)
        abort();
    memset(&k, 0, sizeof(k));
    memset(&v, 0, sizeof(v));
    while (cur->get(cur, &k, &v, DB_NEXT) == 0) {
        const struct entry *e = model_find(m, k.data, k.size);
        if (e == NULL || e->vlen != v.size || memcmp(e->val, v.data, v.size) != 0)
            abort();
        count++;
    }
    if (count != m->n)
        abort();
    cur->close(cur);
    db->close(db, 0);
}

static void check_success(const struct model *m)
{
    buf_t err = BUF_INIT;
    struct dict *d = dict_open(buf_str(&spec), &err);
    if (d == NULL)
        abort();
    for (size_t i = 0; i < m->n; i++) {
        const struct entry *e = &m->e[i];
        check_lookup(d, e->key, e);
        char *up = xstrdup(e->key);
        for (char *p = up; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        check_lookup(d, up, e);
        free(up);
        buf_t other = BUF_INIT;
        buf_printf(&other, "%s.x", e->key);
        check_lookup(d, buf_str(&other), model_find(m, other.data, other.len));
        buf_destroy(&other);
    }
    dict_close(d);
    check_walk(m);
    buf_destroy(&err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct model m;
    buf_t err = BUF_INIT;
    put_source(data, size);
    model_build(&m, (const char *)data, size);
    int rc = dict_build(buf_str(&spec), &err);
    if (rc < 0 && m.bad_line == 0)
        abort(); /* refused a good table (err says why) */
    if (rc == 0 && m.bad_line != 0)
        abort(); /* accepted a bad line */
    if (rc < 0)
        check_failure(&m, &err);
    else
        check_success(&m);
    model_destroy(&m);
    buf_destroy(&err);
    /* Nothing of this input stays behind (a crash leaves only the dir). */
    unlink(buf_str(&src));
    unlink(buf_str(&dbfile));
    return 0;
}
