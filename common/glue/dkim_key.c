/* dkim_key.c - DKIM private keys and the key table (dkim_key_maps).
 *
 * Every key is checked when it is loaded - at smtpd's start and by
 * "postino check" - so a bad key file stops the start with a message
 * naming the file and the table line, never fails the first message.
 * The table is walked once into a hash table (common/util/htable) keyed
 * by domain: a lookup per message is one hash, however many domains.
 * Domains that share a key file share one loaded key. */
#include "common/glue/dkim.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/glue/dict.h"
#include "common/glue/dkim_impl.h"
#include "common/util/alloc.h"
#include "common/util/htable.h"

struct dkim_key {
    enum dkim_alg alg;
    char *selector;
    EVP_PKEY *pkey;
};

EVP_PKEY *dkim_key_pkey(const struct dkim_key *k)
{
    return k->pkey;
}

enum dkim_alg dkim_key_alg(const struct dkim_key *k)
{
    return k->alg;
}

const char *dkim_key_selector(const struct dkim_key *k)
{
    return k->selector;
}

void dkim_key_free(struct dkim_key *k)
{
    if (!k)
        return;
    EVP_PKEY_free(k->pkey);
    free(k->selector);
    free(k);
}

/* Never prompt for a pass phrase: an encrypted key is refused. */
static int no_pass(char *buf, int size, int rw, void *u)
{
    return -1;
}

/* The file itself: regular, private to its owner, a PEM private key. */
static EVP_PKEY *read_pkey(const char *path, buf_t *err)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 || fstat(fd, &st) < 0) {
        buf_setf(err, "DKIM key file %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077)) {
        buf_setf(err, "DKIM key file %s: %s (mode %04o): make it 0600 or 0400", path,
                 S_ISREG(st.st_mode) ? "group or others have access" : "not a regular file",
                 (unsigned)(st.st_mode & 07777));
        close(fd);
        return NULL;
    }
    FILE *fp = fdopen(fd, "r");
    if (!fp) {
        buf_setf(err, "DKIM key file %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    EVP_PKEY *pk = PEM_read_PrivateKey(fp, NULL, no_pass, NULL);
    fclose(fp);
    if (!pk)
        buf_setf(err, "DKIM key file %s: not a PEM private key (or encrypted)", path);
    return pk;
}

static int check_pkey(EVP_PKEY *pk, enum dkim_alg alg, const char *path, buf_t *err)
{
    int id = EVP_PKEY_get_base_id(pk);
    if (alg == DKIM_RSA_SHA256 && id != EVP_PKEY_RSA) {
        buf_setf(err, "DKIM key file %s: not an RSA key (the table says rsa-sha256)", path);
        return -1;
    }
    if (alg == DKIM_ED25519_SHA256 && id != EVP_PKEY_ED25519) {
        buf_setf(err, "DKIM key file %s: not an Ed25519 key (the table says ed25519-sha256)", path);
        return -1;
    }
    if (alg == DKIM_RSA_SHA256 && EVP_PKEY_get_bits(pk) < 2048) {
        buf_setf(err, "DKIM key file %s: RSA key of %d bits is too short (2048 at least)", path,
                 EVP_PKEY_get_bits(pk));
        return -1;
    }
    return 0;
}

static struct dkim_key *key_new(EVP_PKEY *pk, enum dkim_alg alg, const char *selector)
{
    struct dkim_key *k = xcalloc(1, sizeof(*k));
    k->alg = alg;
    k->selector = xstrdup(selector);
    k->pkey = pk;
    return k;
}

struct dkim_key *dkim_key_load(const char *path, enum dkim_alg alg, const char *selector,
                               buf_t *err)
{
    EVP_PKEY *pk = read_pkey(path, err);
    if (!pk)
        return NULL;
    if (check_pkey(pk, alg, path, err) < 0) {
        EVP_PKEY_free(pk);
        return NULL;
    }
    return key_new(pk, alg, selector);
}

static void b64_append(buf_t *out, const unsigned char *p, size_t n)
{
    buf_reserve(out, 4 * ((n + 2) / 3) + 1);
    out->len += (size_t)EVP_EncodeBlock((unsigned char *)out->data + out->len, p, (int)n);
    out->data[out->len] = '\0';
}

/* RSA: p= is the DER SubjectPublicKeyInfo; Ed25519 (RFC 8463 4): the
 * raw 32-byte public key. */
static void pkey_txt(EVP_PKEY *pk, enum dkim_alg alg, buf_t *txt)
{
    buf_printf(txt, "v=DKIM1; k=%s; p=", alg == DKIM_ED25519_SHA256 ? "ed25519" : "rsa");
    if (alg == DKIM_ED25519_SHA256) {
        unsigned char raw[64];
        size_t n = sizeof(raw);
        if (EVP_PKEY_get_raw_public_key(pk, raw, &n) > 0)
            b64_append(txt, raw, n);
        return;
    }
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(pk, &der);
    if (n > 0)
        b64_append(txt, der, (size_t)n);
    OPENSSL_free(der);
}

void dkim_key_txt(const struct dkim_key *k, buf_t *txt)
{
    pkey_txt(k->pkey, k->alg, txt);
}

int dkim_key_generate(const char *path, enum dkim_alg alg, int bits, buf_t *txt, buf_t *err)
{
    if (alg == DKIM_RSA_SHA256 && bits == 0)
        bits = 2048;
    if (alg == DKIM_RSA_SHA256 && (bits < 2048 || bits > 16384)) {
        buf_setf(err, "RSA key size %d: use 2048 to 16384 bits", bits);
        return -1;
    }
    EVP_PKEY *pk = alg == DKIM_RSA_SHA256 ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits)
                                          : EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!pk) {
        buf_set(err, "key generation failed (OpenSSL)");
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
    int rc = -1;
    if (!fp) {
        buf_setf(err, "create %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
    } else if (!PEM_write_PrivateKey(fp, pk, NULL, NULL, 0, NULL, NULL) || fflush(fp) != 0 ||
               fsync(fd) != 0) {
        buf_setf(err, "write %s: %s", path, errno ? strerror(errno) : "OpenSSL error");
        fclose(fp);
        unlink(path);
    } else {
        fclose(fp);
        pkey_txt(pk, alg, txt);
        rc = 0;
    }
    EVP_PKEY_free(pk);
    return rc;
}

/* ---- the key table ---- */

struct kdom {
    struct hlink link;
    char *domain;
    size_t n;
    struct dkim_key *k[DKIM_MAX_KEYS];
};

/* A key file loaded once however many domains name it. */
struct kfile {
    struct hlink link;
    char *path;
    EVP_PKEY *pkey;
};

struct dkim_keyring {
    struct htable doms;
};

struct load {
    struct dkim_keyring *kr;
    struct htable files;
    const char *table; /* "hash:/path" being walked */
    buf_t *err;
};

static struct kdom *find_dom(const struct htable *t, const char *domain)
{
    unsigned h = htable_hash_str(domain);
    for (struct hlink *l = htable_first(t, h); l; l = htable_next(l, h)) {
        struct kdom *d = HTABLE_ENTRY(l, struct kdom, link);
        if (strcmp(d->domain, domain) == 0)
            return d;
    }
    return NULL;
}

static EVP_PKEY *load_file(struct load *ld, const char *path, buf_t *err)
{
    unsigned h = htable_hash_str(path);
    for (struct hlink *l = htable_first(&ld->files, h); l; l = htable_next(l, h)) {
        struct kfile *f = HTABLE_ENTRY(l, struct kfile, link);
        if (strcmp(f->path, path) == 0)
            return f->pkey;
    }
    EVP_PKEY *pk = read_pkey(path, err);
    if (!pk)
        return NULL;
    struct kfile *f = xcalloc(1, sizeof(*f));
    f->path = xstrdup(path);
    f->pkey = pk;
    htable_insert(&ld->files, &f->link, h);
    return pk;
}

/* "selector:algorithm:/path" into d. 0 or -1 with err. */
static int add_item(struct load *ld, struct kdom *d, char *item, buf_t *err)
{
    char *a = strchr(item, ':'), *p = a ? strchr(a + 1, ':') : NULL;
    enum dkim_alg alg;
    if (!a || !p || a == item || p[1] != '/') {
        buf_setf(err, "\"%s\": expected selector:algorithm:/absolute/path/key.pem", item);
        return -1;
    }
    *a++ = '\0';
    *p++ = '\0';
    if (dkim_alg_parse(a, &alg) < 0) {
        buf_setf(err, "\"%s\": unknown algorithm (rsa-sha256, rsa, ed25519-sha256, ed25519)", a);
        return -1;
    }
    if (d->n == DKIM_MAX_KEYS) {
        buf_setf(err, "more than %d keys for %s", DKIM_MAX_KEYS, d->domain);
        return -1;
    }
    EVP_PKEY *pk = load_file(ld, p, err);
    if (!pk || check_pkey(pk, alg, p, err) < 0)
        return -1;
    EVP_PKEY_up_ref(pk);
    d->k[d->n++] = key_new(pk, alg, item);
    return 0;
}

static void free_dom(struct kdom *d)
{
    for (size_t i = 0; i < d->n; i++)
        dkim_key_free(d->k[i]);
    free(d->domain);
    free(d);
}

/* Where the entry for key is in the table's text source ("FILE, line N"),
 * or the table and key when the text is not at hand. */
static void entry_place(const char *table, const char *key, buf_t *out)
{
    const char *path = strchr(table, ':') && table[0] != '/' ? strchr(table, ':') + 1 : table;
    FILE *fp = fopen(path, "re");
    char *line = NULL;
    size_t cap = 0;
    long no = 0;
    while (fp && getline(&line, &cap, fp) >= 0) {
        no++;
        char *s = str_trim(line);
        size_t k = strcspn(s, " \t");
        if (k == strlen(key) && str_nieq(s, key, k)) {
            buf_printf(out, "%s, line %ld", path, no);
            break;
        }
    }
    if (fp)
        fclose(fp);
    free(line);
    if (out->len == 0)
        buf_printf(out, "%s, entry \"%s\"", table, key);
}

static int walk_entry(const char *key, const char *value, void *arg)
{
    struct load *ld = arg;
    if (find_dom(&ld->kr->doms, key))
        return 0; /* an earlier table has it: the first wins, as in lookups */
    struct kdom *d = xcalloc(1, sizeof(*d));
    d->domain = xstrdup(key);
    buf_t why = BUF_INIT;
    char **items = str_split(value, ", \t", NULL);
    int rc = 0;
    for (char **it = items; rc == 0 && *it; it++)
        rc = add_item(ld, d, *it, &why);
    if (rc == 0 && d->n == 0) {
        buf_set(&why, "no key");
        rc = -1;
    }
    strv_free(items);
    if (rc < 0) {
        buf_t place = BUF_INIT;
        entry_place(ld->table, key, &place);
        buf_setf(ld->err, "dkim_key_maps %s: %s", buf_str(&place), buf_str(&why));
        buf_destroy(&place);
        free_dom(d);
    } else {
        htable_insert(&ld->kr->doms, &d->link, htable_hash_str(d->domain));
    }
    buf_destroy(&why);
    return rc;
}

static int load_table(struct load *ld, const char *spec)
{
    struct dict *t = dict_open(spec, ld->err);
    if (!t) {
        buf_t e = BUF_INIT;
        buf_setf(&e, "dkim_key_maps: %s", buf_str(ld->err));
        buf_set(ld->err, buf_str(&e));
        buf_destroy(&e);
        return -1;
    }
    ld->table = spec;
    int rc = dict_walk(t, walk_entry, ld, ld->err);
    dict_close(t);
    return rc < 0 ? -1 : 0;
}

struct dkim_keyring *dkim_keyring_load(const char *maps, buf_t *err)
{
    struct dkim_keyring *kr = xcalloc(1, sizeof(*kr));
    struct load ld = { .kr = kr, .err = err };
    htable_init(&kr->doms, 16);
    htable_init(&ld.files, 16);
    char **v = str_split(maps, ", \t", NULL);
    int rc = 0;
    for (char **p = v; rc == 0 && *p; p++)
        rc = load_table(&ld, *p);
    strv_free(v);
    struct hlink *l, *nx;
    HTABLE_EACH(&ld.files, l, nx)
    {
        struct kfile *f = HTABLE_ENTRY(l, struct kfile, link);
        htable_remove(&ld.files, l);
        EVP_PKEY_free(f->pkey); /* the keys hold their own references */
        free(f->path);
        free(f);
    }
    htable_destroy(&ld.files);
    if (rc < 0) {
        dkim_keyring_free(kr);
        return NULL;
    }
    return kr;
}

void dkim_keyring_free(struct dkim_keyring *kr)
{
    if (!kr)
        return;
    struct hlink *l, *nx;
    HTABLE_EACH(&kr->doms, l, nx)
    {
        htable_remove(&kr->doms, l);
        free_dom(HTABLE_ENTRY(l, struct kdom, link));
    }
    htable_destroy(&kr->doms);
    free(kr);
}

size_t dkim_keyring_count(const struct dkim_keyring *kr)
{
    return kr ? htable_count(&kr->doms) : 0;
}

size_t dkim_keyring_find(const struct dkim_keyring *kr, const char *domain,
                         const struct dkim_key *out[DKIM_MAX_KEYS])
{
    if (!kr || !domain)
        return 0;
    char *lc = str_lower(xstrdup(domain));
    const struct kdom *d = find_dom(&kr->doms, lc);
    free(lc);
    if (!d)
        return 0;
    for (size_t i = 0; i < d->n; i++)
        out[i] = d->k[i];
    return d->n;
}
