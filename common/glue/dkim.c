/* dkim.c - DKIM signatures over a message fed in pieces (RFC 6376, RFC 8463).
 *
 * The content arrives as smtpd stores it. It is first given the line ends
 * delivery will send (common/mail/crlf.c), then the header section is kept
 * (bounded) for header selection at the end, and the body streams through
 * its canonicalisation into one SHA-256: nothing of the body is held, and
 * the state machine below carries over piece boundaries, so any split of
 * the same content gives the same hash.
 *
 * One body hash serves every signature of the message (RSA and Ed25519
 * use the same c= and SHA-256). The signature's own header field is hashed
 * last, with an empty b= value, as it will appear (RFC 6376 3.7); b= is
 * placed last so that the folding of its value is inside what verifiers
 * delete. Keys and the key table are in dkim_key.c. */
#include "common/glue/dkim.h"

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

#include "common/mail/conf.h"
#include "common/mail/crlf.h"
#include "common/util/alloc.h"
#include "common/glue/dkim_impl.h"

const char *dkim_alg_name(enum dkim_alg a)
{
    return a == DKIM_ED25519_SHA256 ? "ed25519-sha256" : "rsa-sha256";
}

int dkim_alg_parse(const char *s, enum dkim_alg *out)
{
    if (str_ieq(s, "rsa") || str_ieq(s, "rsa-sha256"))
        *out = DKIM_RSA_SHA256;
    else if (str_ieq(s, "ed25519") || str_ieq(s, "ed25519-sha256"))
        *out = DKIM_ED25519_SHA256;
    else
        return -1;
    return 0;
}

static int canon_word(const char *s, size_t n, enum dkim_canon *out)
{
    if (n == 6 && str_nieq(s, "simple", 6))
        *out = DKIM_SIMPLE;
    else if (n == 7 && str_nieq(s, "relaxed", 7))
        *out = DKIM_RELAXED;
    else
        return -1;
    return 0;
}

int dkim_canon_parse(const char *s, enum dkim_canon *hdr, enum dkim_canon *body)
{
    const char *slash = strchr(s, '/');
    if (!slash) {
        *body = DKIM_SIMPLE;
        return canon_word(s, strlen(s), hdr);
    }
    if (canon_word(s, (size_t)(slash - s), hdr) < 0)
        return -1;
    return canon_word(slash + 1, strlen(slash + 1), body);
}

static const char *canon_name(enum dkim_canon c)
{
    return c == DKIM_RELAXED ? "relaxed" : "simple";
}

static int is_wsp(int c)
{
    return c == ' ' || c == '\t';
}

/* ---- header canonicalisation (RFC 6376 3.4.1, 3.4.2) ---- */

void dkim_canon_header(enum dkim_canon c, const char *f, size_t len, buf_t *out)
{
    if (c == DKIM_SIMPLE) {
        buf_append(out, f, len);
        buf_puts(out, "\r\n");
        return;
    }
    const char *colon = memchr(f, ':', len);
    size_t nlen = colon ? (size_t)(colon - f) : len;
    while (nlen > 0 && is_wsp(f[nlen - 1]))
        nlen--;
    for (size_t i = 0; i < nlen; i++)
        buf_putc(out, f[i] >= 'A' && f[i] <= 'Z' ? f[i] + 32 : f[i]);
    if (colon) {
        buf_putc(out, ':');
        int wsp = 0, started = 0;
        for (const char *p = colon + 1; p < f + len; p++) {
            if (*p == '\r' || *p == '\n')
                continue; /* unfold */
            if (is_wsp(*p)) {
                wsp = 1;
                continue;
            }
            if (wsp && started)
                buf_putc(out, ' ');
            wsp = 0;
            started = 1;
            buf_putc(out, *p);
        }
    }
    buf_puts(out, "\r\n");
}

/* ---- body canonicalisation, streaming (RFC 6376 3.4.3, 3.4.4) ----
 * The input is CRLF lines (every CR is followed by LF). Empty lines are
 * counted, not written, until a non-empty line shows they were not the
 * trailing ones; relaxed keeps a run of white space pending until a
 * non-white byte shows it was not at the end of the line. */

static void body_flush(struct dkim_body *b)
{
    if (b->n)
        b->out(b->arg, b->buf, b->n);
    b->n = 0;
}

static void body_put(struct dkim_body *b, const char *p, size_t n)
{
    b->any = 1;
    while (n > 0) {
        size_t k = sizeof(b->buf) - b->n;
        if (k > n)
            k = n;
        memcpy(b->buf + b->n, p, k);
        b->n += k;
        p += k;
        n -= k;
        if (b->n == sizeof(b->buf))
            body_flush(b);
    }
}

void dkim_body_init(struct dkim_body *b, enum dkim_canon c,
                    void (*out)(void *, const char *, size_t), void *arg)
{
    memset(b, 0, sizeof(*b));
    b->c = c;
    b->out = out;
    b->arg = arg;
    b->empty = 1;
}

/* The first byte of a line that is not empty: the held empty lines were
 * not trailing after all. */
static void body_line_start(struct dkim_body *b)
{
    for (; b->blank > 0; b->blank--)
        body_put(b, "\r\n", 2);
    b->empty = 0;
}

void dkim_body_feed(struct dkim_body *b, const char *p, size_t n)
{
    int relaxed = b->c == DKIM_RELAXED;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '\r')
            continue; /* always followed by its LF */
        if (ch == '\n') {
            b->wsp = 0; /* relaxed: white space at the end of a line goes */
            if (b->empty)
                b->blank++;
            else
                body_put(b, "\r\n", 2);
            b->empty = 1;
            continue;
        }
        if (relaxed && is_wsp(ch)) {
            b->wsp = 1;
            continue;
        }
        if (b->empty)
            body_line_start(b);
        if (b->wsp) {
            body_put(b, " ", 1);
            b->wsp = 0;
        }
        /* Copy the run of ordinary bytes up to the next special one. */
        size_t j = i + 1;
        while (j < n && p[j] != '\r' && p[j] != '\n' && !(relaxed && is_wsp(p[j])))
            j++;
        body_put(b, p + i, j - i);
        i = j - 1;
    }
}

void dkim_body_end(struct dkim_body *b)
{
    if (!b->empty) /* a last line without CRLF gets one */
        body_put(b, "\r\n", 2);
    /* simple: an empty body is one CRLF; relaxed: it is empty */
    if (!b->any && b->c == DKIM_SIMPLE)
        body_put(b, "\r\n", 2);
    body_flush(b);
}

static void to_buf(void *arg, const char *p, size_t n)
{
    buf_append(arg, p, n);
}

void dkim_canon_body(enum dkim_canon c, const char *body, size_t len, buf_t *out)
{
    struct dkim_body b;
    dkim_body_init(&b, c, to_buf, out);
    dkim_body_feed(&b, body, len);
    dkim_body_end(&b);
}

/* ---- configuration ---- */

int dkim_sign_config_load(struct dkim_sign_config *cf, buf_t *err)
{
    memset(cf, 0, sizeof(*cf));
    const char *c = conf_str("dkim_canonicalization");
    if (dkim_canon_parse(c, &cf->hdr, &cf->body) < 0) {
        buf_setf(err,
                 "dkim_canonicalization = %s: expected relaxed/relaxed, simple/simple, "
                 "relaxed/simple or simple/relaxed",
                 c);
        return -1;
    }
    cf->headers = conf_list("dkim_signed_headers");
    cf->oversign = conf_list("dkim_oversigned_headers");
    cf->ttl = conf_int("dkim_signature_ttl");
    cf->hdr_limit = (size_t)conf_int("header_size_limit") + 65536;
    return 0;
}

void dkim_sign_config_destroy(struct dkim_sign_config *cf)
{
    strv_free(cf->headers);
    strv_free(cf->oversign);
    cf->headers = cf->oversign = NULL;
}

/* ---- one message ---- */

struct dkim_msg {
    const struct dkim_sign_config *cf;
    struct crlf crlf;
    buf_t tmp;      /* the piece with its line ends made CRLF */
    int in_hdr;     /* still in the header section */
    unsigned tail;  /* last four header bytes (end: CR LF CR LF) */
    buf_t hdr;      /* the header section, bounded by cf->hdr_limit */
    int hdr_over;   /* it was longer */
    EVP_MD_CTX *bh; /* body hash */
    struct dkim_body body;
    unsigned char bh_sum[32];
    int ended;
    char *from_domain;
};

static void hash_out(void *arg, const char *p, size_t n)
{
    EVP_DigestUpdate(arg, p, n);
}

struct dkim_msg *dkim_msg_new(const struct dkim_sign_config *cf)
{
    struct dkim_msg *m = xcalloc(1, sizeof(*m));
    m->cf = cf;
    crlf_init(&m->crlf);
    buf_init(&m->tmp, 0);
    buf_init(&m->hdr, 1024);
    m->in_hdr = 1;
    m->bh = EVP_MD_CTX_new();
    if (!m->bh || !EVP_DigestInit_ex(m->bh, EVP_sha256(), NULL))
        log_fatal("dkim: cannot set up SHA-256 (out of memory?)");
    dkim_body_init(&m->body, cf->body, hash_out, m->bh);
    return m;
}

void dkim_msg_free(struct dkim_msg *m)
{
    if (!m)
        return;
    EVP_MD_CTX_free(m->bh);
    buf_destroy(&m->tmp);
    buf_destroy(&m->hdr);
    free(m->from_domain);
    free(m);
}

/* Header bytes until the empty line; returns how many were header. */
static size_t take_header(struct dkim_msg *m, const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n && m->in_hdr; i++) {
        m->tail = (m->tail << 8) | (unsigned char)p[i];
        if (m->hdr.len < m->cf->hdr_limit)
            buf_putc(&m->hdr, p[i]);
        else
            m->hdr_over = 1;
        /* CRLF CRLF, or CRLF as the very first line (no header at all) */
        if (m->tail == 0x0d0a0d0aU || (m->hdr.len == 2 && m->tail == 0x0d0aU && !m->hdr_over))
            m->in_hdr = 0;
    }
    return i;
}

static void feed_normal(struct dkim_msg *m, const char *p, size_t n)
{
    size_t h = m->in_hdr ? take_header(m, p, n) : 0;
    if (h < n)
        dkim_body_feed(&m->body, p + h, n - h);
}

void dkim_msg_feed(struct dkim_msg *m, const void *p, size_t n)
{
    if (n == 0 || m->ended)
        return;
    buf_reset(&m->tmp);
    buf_reserve(&m->tmp, crlf_bound(n));
    m->tmp.len = crlf_chunk(&m->crlf, p, n, m->tmp.data);
    feed_normal(m, m->tmp.data, m->tmp.len);
}

void dkim_msg_end(struct dkim_msg *m)
{
    char fin[CRLF_FINISH_MAX];
    unsigned int len = 0;
    if (m->ended)
        return;
    feed_normal(m, fin, crlf_finish(&m->crlf, fin));
    dkim_body_end(&m->body);
    EVP_DigestFinal_ex(m->bh, m->bh_sum, &len);
    m->ended = 1;
}

/* ---- header fields ---- */

/* Split the kept header section into fields (offset, length without the
 * final CRLF); a line starting with white space continues the field. */
static size_t split_fields(const buf_t *h, struct dkim_field **out)
{
    struct dkim_field *v = NULL;
    size_t n = 0, cap = 0, i = 0;
    while (i + 1 < h->len) {
        const char *s = h->data + i;
        if (s[0] == '\r' && s[1] == '\n')
            break; /* the empty line */
        size_t j = i;
        for (;;) { /* to the end of this field */
            const char *e = memchr(h->data + j, '\n', h->len - j);
            j = e ? (size_t)(e - h->data) + 1 : h->len;
            if (j >= h->len || !is_wsp(h->data[j]))
                break;
        }
        v = xgrow(v, &cap, n + 1, sizeof(*v));
        v[n].off = i;
        v[n].len = j - i >= 2 && h->data[j - 1] == '\n' ? j - i - 2 : j - i;
        n++;
        i = j;
    }
    *out = v;
    return n;
}

/* Is field f named name (case-insensitive, white space before ':' ok)? */
static int field_is(const buf_t *h, const struct dkim_field *f, const char *name)
{
    size_t nl = strlen(name);
    const char *s = h->data + f->off;
    if (f->len <= nl || !str_nieq(s, name, nl))
        return 0;
    size_t k = nl;
    while (k < f->len && is_wsp(s[k]))
        k++;
    return k < f->len && s[k] == ':';
}

/* The domain of a From: value: inside the last <...>, else the bare
 * address; NULL when there is none. */
static char *addr_domain(const char *v, size_t len)
{
    const char *end = v + len, *lt = NULL;
    for (const char *p = v; p < end; p++)
        if (*p == '<')
            lt = p;
    const char *start = lt ? lt + 1 : v;
    const char *stop = lt ? memchr(start, '>', (size_t)(end - start)) : NULL;
    if (stop)
        end = stop;
    const char *at = NULL;
    for (const char *p = start; p < end; p++)
        if (*p == '@')
            at = p;
    if (!at)
        return NULL;
    const char *d = at + 1, *e = d;
    while (e < end && ((*e >= 'a' && *e <= 'z') || (*e >= 'A' && *e <= 'Z') ||
                       (*e >= '0' && *e <= '9') || *e == '-' || *e == '.'))
        e++;
    if (e == d)
        return NULL;
    return str_lower(xstrndup(d, (size_t)(e - d)));
}

const char *dkim_msg_from_domain(const struct dkim_msg *m)
{
    struct dkim_msg *mm = (struct dkim_msg *)m;
    if (mm->from_domain)
        return mm->from_domain;
    struct dkim_field *f = NULL;
    size_t n = split_fields(&m->hdr, &f);
    for (size_t i = 0; i < n; i++) {
        if (!field_is(&m->hdr, &f[i], "From"))
            continue;
        const char *s = m->hdr.data + f[i].off;
        const char *colon = memchr(s, ':', f[i].len);
        mm->from_domain = addr_domain(colon + 1, f[i].len - (size_t)(colon + 1 - s));
        break;
    }
    free(f);
    return mm->from_domain;
}

static int name_in(char **v, size_t upto, const char *name)
{
    for (size_t i = 0; v && v[i] && i < upto; i++)
        if (str_ieq(v[i], name))
            return 1;
    return 0;
}

/* One configured name: list it once per field of that name (+1 when
 * over-signed) in h=, hash those fields from the bottom up. */
static void select_name(struct dkim_msg *m, const struct dkim_field *f, size_t nf, const char *name,
                        int over, buf_t *h, buf_t *data)
{
    size_t count = 0;
    for (size_t i = nf; i-- > 0;) {
        if (!field_is(&m->hdr, &f[i], name))
            continue;
        dkim_canon_header(m->cf->hdr, m->hdr.data + f[i].off, f[i].len, data);
        count++;
    }
    for (size_t k = 0; k < count + (over ? 1 : 0); k++) {
        if (h->len)
            buf_putc(h, ':');
        buf_puts(h, name);
    }
}

static void select_headers(struct dkim_msg *m, buf_t *h, buf_t *data)
{
    struct dkim_field *f = NULL;
    size_t nf = split_fields(&m->hdr, &f);
    char **hv = m->cf->headers, **ov = m->cf->oversign;
    for (size_t i = 0; hv && hv[i]; i++)
        if (!name_in(hv, i, hv[i]))
            select_name(m, f, nf, hv[i], name_in(ov, (size_t)-1, hv[i]), h, data);
    for (size_t i = 0; ov && ov[i]; i++)
        if (!name_in(hv, (size_t)-1, ov[i]) && !name_in(ov, i, ov[i]))
            select_name(m, f, nf, ov[i], 1, h, data);
    free(f);
}

/* ---- the signature ---- */

static void b64(const unsigned char *p, size_t n, buf_t *out)
{
    size_t need = 4 * ((n + 2) / 3) + 1;
    buf_reserve(out, need);
    int k = EVP_EncodeBlock((unsigned char *)out->data + out->len, p, (int)n);
    out->len += (size_t)k;
    out->data[out->len] = '\0';
}

/* Fold text into out: a break (CRLF TAB) before a piece that would pass
 * column 76; pieces are split at `sep` (kept at the end of a piece). */
static void fold_list(buf_t *out, size_t *col, const char *s, int sep)
{
    while (*s) {
        const char *e = strchr(s, sep);
        size_t n = e ? (size_t)(e - s) + 1 : strlen(s);
        if (*col + n > 76) {
            buf_puts(out, "\r\n\t");
            *col = 1;
        }
        buf_append(out, s, n);
        *col += n;
        s += n;
    }
}

static void sig_header(const struct dkim_msg *m, const struct dkim_key *k, const char *d,
                       time_t now, const buf_t *h, buf_t *sig)
{
    buf_printf(sig, "DKIM-Signature: v=1; a=%s; c=%s/%s; d=%s;\r\n\ts=%s; t=%lld;",
               dkim_alg_name(dkim_key_alg(k)), canon_name(m->cf->hdr), canon_name(m->cf->body), d,
               dkim_key_selector(k), (long long)now);
    if (m->cf->ttl > 0)
        buf_printf(sig, " x=%lld;", (long long)now + m->cf->ttl);
    buf_puts(sig, "\r\n\th=");
    size_t col = 3;
    fold_list(sig, &col, buf_str(h), ':');
    buf_puts(sig, ";\r\n\tbh=");
    b64(m->bh_sum, sizeof(m->bh_sum), sig);
    buf_puts(sig, ";\r\n\tb=");
}

/* RSA: PKCS#1 v1.5 over SHA-256 of the data. Ed25519 (RFC 8463 3): the
 * PureEdDSA signature of the SHA-256 digest itself. */
static int sign_digest(const struct dkim_key *k, const unsigned char dg[32], buf_t *out, buf_t *err)
{
    EVP_PKEY *pk = dkim_key_pkey(k);
    unsigned char *sig = NULL;
    size_t len = 0;
    int ok = 0;
    if (dkim_key_alg(k) == DKIM_RSA_SHA256) {
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(pk, NULL);
        ok = c && EVP_PKEY_sign_init(c) > 0 &&
             EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) > 0 &&
             EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) > 0 &&
             EVP_PKEY_sign(c, NULL, &len, dg, 32) > 0 && (sig = xmalloc(len)) &&
             EVP_PKEY_sign(c, sig, &len, dg, 32) > 0;
        EVP_PKEY_CTX_free(c);
    } else {
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        ok = c && EVP_DigestSignInit(c, NULL, NULL, NULL, pk) > 0 &&
             EVP_DigestSign(c, NULL, &len, dg, 32) > 0 && (sig = xmalloc(len)) &&
             EVP_DigestSign(c, sig, &len, dg, 32) > 0;
        EVP_MD_CTX_free(c);
    }
    if (ok)
        b64(sig, len, out);
    else
        buf_setf(err, "%s signing failed (OpenSSL)", dkim_alg_name(dkim_key_alg(k)));
    free(sig);
    return ok ? 0 : -1;
}

/* The base64 signature after "b=", folded at 76 columns. */
static void put_b(buf_t *sig, const char *b)
{
    size_t n = strlen(b), w = 73; /* "\tb=" and 73 characters */
    while (n > 0) {
        size_t k = w < n ? w : n;
        buf_append(sig, b, k);
        b += k;
        n -= k;
        if (n)
            buf_puts(sig, "\r\n\t");
        w = 75;
    }
    buf_puts(sig, "\r\n");
}

int dkim_msg_sign(struct dkim_msg *m, const struct dkim_key *k, const char *d, time_t now,
                  buf_t *out, buf_t *err)
{
    if (!m->ended)
        dkim_msg_end(m);
    if (m->hdr_over) {
        buf_setf(err, "header section longer than %zu bytes", m->cf->hdr_limit);
        return -1;
    }
    buf_t h = BUF_INIT, data = BUF_INIT, sig = BUF_INIT, b = BUF_INIT;
    unsigned char dg[32];
    unsigned int dlen = 0;
    select_headers(m, &h, &data);
    sig_header(m, k, d, now, &h, &sig);
    dkim_canon_header(m->cf->hdr, sig.data, sig.len, &data);
    buf_truncate(&data, data.len - 2); /* hashed without its CRLF */
    int rc = EVP_Digest(data.data, data.len, dg, &dlen, EVP_sha256(), NULL) ? 0 : -1;
    if (rc < 0)
        buf_set(err, "SHA-256 failed (OpenSSL)");
    if (rc == 0)
        rc = sign_digest(k, dg, &b, err);
    if (rc == 0) {
        put_b(&sig, buf_str(&b));
        buf_append(out, sig.data, sig.len);
    }
    buf_destroy(&h);
    buf_destroy(&data);
    buf_destroy(&sig);
    buf_destroy(&b);
    return rc;
}
