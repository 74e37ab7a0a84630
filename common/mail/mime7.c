/* mime7.c - 8-bit MIME to 7 bit (RFC 6152 section 3, RFC 2045, 2046).
 *
 * Why two passes: a part's headers go out before its body shows whether
 * it has 8-bit bytes, and the decision to convert or to bounce must be
 * taken before MAIL FROM, never in the middle of DATA. The scan pass
 * numbers every entity (header block) in order and records in a plan (two
 * bits each) what the conversion pass does with it; both passes run the
 * same parser over the same bytes, so the numbers agree.
 *
 * The parser is line based (lines end with LF). It keeps at most the first
 * LINE_CAP bytes of a line to parse it; the rest of a longer line streams
 * through (it is never a boundary and never starts a header). Headers of
 * interest (Content-Type, Content-Transfer-Encoding) are kept up to a cap
 * for parsing while their bytes stream. Multipart nesting is limited to
 * DEPTH_MAX levels (Postfix's mime_nesting_limit). What it follows:
 *   - a header block ends at an empty line, or at the first line that is
 *     neither a header field nor a continuation (that line is body);
 *   - the first Content-Type and Content-Transfer-Encoding field count
 *     (as Python's email package reads them); an invalid or missing type
 *     is text/plain, or message/rfc822 inside multipart/digest;
 *   - a boundary line is "--" boundary ["--"] [spaces/tabs] CRLF, checked
 *     from the innermost open multipart outwards (an outer boundary closes
 *     the inner parts);
 *   - message/rfc822 and message/global (RFC 6532) contain a message whose
 *     headers are parsed, unless the part claims a quoted-printable or
 *     base64 encoding: then it is an opaque leaf, like a multipart without
 *     a usable boundary; other message types are leaves.
 * Content that cannot be converted: 8-bit bytes in a part that is already
 * encoded (quoted-printable, base64, other), in message/partial or
 * message/external-body (7 bit only, RFC 2046), in a multipart preamble or
 * epilogue, or anywhere in a message nested deeper than DEPTH_MAX. 8-bit
 * headers are reported (MIME7_HDR8), never changed: the caller decides. */
#include "common/mail/mime7.h"

#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/mail/qp.h"

#define LINE_CAP     1000 /* head of a line kept for parsing (998 + CRLF) */
#define CT_CAP       2048 /* Content-Type text kept for parsing */
#define CTE_CAP      128  /* Content-Transfer-Encoding text kept */
#define BOUNDARY_MAX 200  /* RFC 2046 says 70; be lenient, but bounded */
#define DEPTH_MAX    100

enum { ACT_KEEP, ACT_QP, ACT_7BIT };
enum { ENC_7BIT, ENC_8BIT, ENC_BINARY, ENC_QP, ENC_BASE64, ENC_OTHER };
enum { K_LEAF, K_MULTIPART, K_MESSAGE, K_MESSAGE7 };
enum { ST_HDR, ST_LEAF, ST_FILLER };
enum { H_NONE, H_OTHER, H_CT, H_CTE };

struct frame {
    char boundary[BOUNDARY_MAX + 1];
    size_t blen;
    int digest;       /* multipart/digest: parts default to message/rfc822 */
    size_t msg_depth; /* nested messages outside this multipart */
};

struct mime7 {
    int convert; /* 0 scan, 1 convert */
    buf_t *out;
    int last; /* last byte emitted as is (0: none yet) */
    int result;
    const char *why;
    unsigned char *plan; /* ACT_* per entity, two bits each */
    size_t plan_cap;
    size_t nent; /* entities seen in this pass */
    /* line assembly */
    char line[LINE_CAP];
    size_t llen;
    int in_long; /* the line outgrew LINE_CAP: its head was parsed */
    /* the current entity */
    int st;
    size_t ent;
    int msg_level; /* the header block of a message (not of a part) */
    int in_digest;
    int hdr, drop; /* the header field being read; drop its bytes */
    int saw_ct, saw_cte, saw_mv, cte_done;
    buf_t ct;
    char cte[CTE_CAP];
    size_t ctelen;
    int kind, enc, leaf8;
    char bnd[BOUNDARY_MAX + 1];
    size_t bndlen;
    int digest;
    /* open multiparts */
    struct frame *fr;
    size_t nfr, frcap;
    size_t msg_depth;
    int too_deep;
    struct qp_enc qp; /* the current leaf's encoder */
};

/* ---- small helpers ---- */

static int has8(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if ((unsigned char)p[i] & 0x80)
            return 1;
    return 0;
}

static void emit(struct mime7 *m, const char *p, size_t n)
{
    if (!m->convert || n == 0)
        return;
    buf_append(m->out, p, n);
    m->last = (unsigned char)p[n - 1];
}

/* A header line of our own; after a last line without a line break (a
 * header block at the very end of the content) it starts a new line. */
static void emit_field(struct mime7 *m, const char *s)
{
    if (m->last != 0 && m->last != '\n')
        emit(m, "\r\n", 2);
    emit(m, s, strlen(s));
}

static void stuck(struct mime7 *m, const char *why)
{
    if (m->convert)
        return;
    m->result |= MIME7_STUCK;
    if (!m->why)
        m->why = why;
}

static void plan_set(struct mime7 *m, size_t e, int act)
{
    size_t byte = e / 4;
    int shift = (int)(e % 4) * 2;
    if (byte >= m->plan_cap) {
        size_t old = m->plan_cap;
        m->plan = xgrow(m->plan, &m->plan_cap, byte + 1, 1);
        memset(m->plan + old, 0, m->plan_cap - old);
    }
    m->plan[byte] = (unsigned char)((m->plan[byte] & ~(3 << shift)) | (act << shift));
}

static int plan_get(const struct mime7 *m, size_t e)
{
    size_t byte = e / 4;
    return byte < m->plan_cap ? (m->plan[byte] >> ((e % 4) * 2)) & 3 : ACT_KEEP;
}

/* ---- header field values (RFC 2045 tokens, RFC 5322 comments) ---- */

struct lex {
    const char *p, *e;
};

static void lex_cfws(struct lex *x)
{
    int depth = 0;
    while (x->p < x->e) {
        char c = *x->p;
        if (depth > 0) {
            if (c == '\\' && x->p + 1 < x->e)
                x->p++;
            else if (c == '(')
                depth++;
            else if (c == ')')
                depth--;
        } else if (c == '(') {
            depth = 1;
        } else if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
            return;
        }
        x->p++;
    }
}

static int lex_at(const struct lex *x, char c)
{
    return x->p < x->e && *x->p == c;
}

/* A token into out (truncated to cap-1); returns its full length. */
static size_t lex_token(struct lex *x, char *out, size_t cap)
{
    size_t n = 0;
    while (x->p < x->e) {
        unsigned char c = (unsigned char)*x->p;
        if (c <= 32 || c >= 127 || strchr("()<>@,;:\\\"/[]?=", c))
            break;
        if (n + 1 < cap)
            out[n] = (char)c;
        n++;
        x->p++;
    }
    out[n < cap ? n : cap - 1] = '\0';
    return n;
}

/* A quoted string (at its opening quote) into out; full length. */
static size_t lex_quoted(struct lex *x, char *out, size_t cap)
{
    size_t n = 0;
    x->p++;
    while (x->p < x->e && *x->p != '"') {
        char c = *x->p;
        if (c == '\\' && x->p + 1 < x->e)
            c = *++x->p;
        if (c != '\r' && c != '\n') { /* unfold */
            if (n + 1 < cap)
                out[n] = c;
            n++;
        }
        x->p++;
    }
    if (x->p < x->e)
        x->p++;
    out[n < cap ? n : cap - 1] = '\0';
    return n;
}

/* The boundary parameter of the kept Content-Type, as Python's email
 * reads it (trailing white space dropped). */
static void ct_boundary(struct mime7 *m, struct lex *x)
{
    char attr[16], val[BOUNDARY_MAX + 2];
    size_t alen, vlen;
    for (;;) {
        lex_cfws(x);
        if (!lex_at(x, ';'))
            return;
        x->p++;
        lex_cfws(x);
        alen = lex_token(x, attr, sizeof(attr));
        lex_cfws(x);
        if (alen == 0 || !lex_at(x, '='))
            return;
        x->p++;
        lex_cfws(x);
        if (lex_at(x, '"'))
            vlen = lex_quoted(x, val, sizeof(val));
        else
            vlen = lex_token(x, val, sizeof(val));
        if (alen == 8 && str_ieq(attr, "boundary")) {
            while (vlen > 0 && vlen <= BOUNDARY_MAX &&
                   (val[vlen - 1] == ' ' || val[vlen - 1] == '\t'))
                val[--vlen] = '\0';
            if (vlen > 0 && vlen <= BOUNDARY_MAX) {
                memcpy(m->bnd, val, vlen + 1);
                m->bndlen = vlen;
            }
            return;
        }
    }
}

/* Kind of the entity from its Content-Type (and the boundary). */
static int ct_kind(struct mime7 *m)
{
    struct lex x = { m->ct.data, m->ct.data + m->ct.len };
    char type[32], sub[32];
    const char *colon = m->ct.len ? memchr(m->ct.data, ':', m->ct.len) : NULL;
    int deflt = m->in_digest ? K_MESSAGE : K_LEAF;

    m->bndlen = 0;
    m->digest = 0;
    if (!colon)
        return deflt;
    x.p = colon + 1;
    lex_cfws(&x);
    if (lex_token(&x, type, sizeof(type)) == 0)
        return deflt;
    lex_cfws(&x);
    if (!lex_at(&x, '/'))
        return deflt;
    x.p++;
    lex_cfws(&x);
    if (lex_token(&x, sub, sizeof(sub)) == 0)
        return deflt;
    if (str_ieq(type, "multipart")) {
        m->digest = str_ieq(sub, "digest");
        ct_boundary(m, &x);
        return K_MULTIPART;
    }
    if (!str_ieq(type, "message"))
        return K_LEAF;
    if (str_ieq(sub, "rfc822") || str_ieq(sub, "global"))
        return K_MESSAGE;
    if (str_ieq(sub, "partial") || str_ieq(sub, "external-body"))
        return K_MESSAGE7;
    return K_LEAF;
}

static int cte_value(const struct mime7 *m)
{
    static const char *const names[] = { "7bit", "8bit", "binary", "quoted-printable", "base64" };
    struct lex x = { m->cte, m->cte + m->ctelen };
    const char *colon = memchr(m->cte, ':', m->ctelen);
    char tok[24];
    size_t i;
    if (!m->saw_cte || !colon)
        return ENC_7BIT;
    x.p = colon + 1;
    lex_cfws(&x);
    if (lex_token(&x, tok, sizeof(tok)) >= sizeof(tok))
        return ENC_OTHER;
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (str_ieq(tok, names[i]))
            return (int)i; /* the ENC_* order */
    return ENC_OTHER;
}

static int enc_is_transform(int enc)
{
    return enc == ENC_QP || enc == ENC_BASE64 || enc == ENC_OTHER;
}

/* ---- entities and header blocks ---- */

static void ent_begin(struct mime7 *m, int msg_level, int in_digest)
{
    m->ent = m->nent++;
    m->st = ST_HDR;
    m->msg_level = msg_level;
    m->in_digest = in_digest;
    m->hdr = H_NONE;
    m->drop = 0;
    m->saw_ct = m->saw_cte = m->saw_mv = m->cte_done = 0;
    buf_reset(&m->ct);
    m->ctelen = 0;
}

static void put_cte(struct mime7 *m)
{
    emit_field(m, plan_get(m, m->ent) == ACT_QP ? "Content-Transfer-Encoding: quoted-printable\r\n"
                                                : "Content-Transfer-Encoding: 7bit\r\n");
    m->cte_done = 1;
}

/* A field starts: "Name:" (or the obsolete "Name :"). 0 if not a field. */
static int field_start(struct mime7 *m, const char *l, size_t n)
{
    size_t i = 0, nl;
    while (i < n && (unsigned char)l[i] > 32 && (unsigned char)l[i] < 127 && l[i] != ':')
        i++;
    nl = i;
    while (i < n && (l[i] == ' ' || l[i] == '\t'))
        i++;
    if (nl == 0 || i >= n || l[i] != ':')
        return 0;
    m->hdr = H_OTHER;
    m->drop = 0;
    if (nl == 12 && str_nieq(l, "Content-Type", 12)) {
        if (!m->saw_ct)
            m->hdr = H_CT;
        m->saw_ct = 1;
    } else if (nl == 25 && str_nieq(l, "Content-Transfer-Encoding", 25)) {
        if (!m->saw_cte)
            m->hdr = H_CTE;
        m->saw_cte = 1;
        if (m->convert && plan_get(m, m->ent) != ACT_KEEP) {
            m->drop = 1; /* replaced in place by the first one */
            if (!m->cte_done)
                put_cte(m);
        }
    } else if (nl == 12 && str_nieq(l, "MIME-Version", 12)) {
        m->saw_mv = 1;
    }
    return 1;
}

/* Bytes of the current header field (any part of any of its lines). */
static void hdr_bytes(struct mime7 *m, const char *p, size_t n)
{
    if (has8(p, n))
        m->result |= MIME7_HDR8;
    if (m->hdr == H_CT && m->ct.len < CT_CAP)
        buf_append(&m->ct, p, n < CT_CAP - m->ct.len ? n : CT_CAP - m->ct.len);
    else if (m->hdr == H_CTE) {
        size_t k = n < CTE_CAP - m->ctelen ? n : CTE_CAP - m->ctelen;
        memcpy(m->cte + m->ctelen, p, k);
        m->ctelen += k;
    }
    if (!m->drop)
        emit(m, p, n);
}

/* The header block is complete: what is this entity, what does the
 * conversion add to its header? */
static void hdr_end(struct mime7 *m)
{
    int kind = ct_kind(m);
    int composite;

    m->enc = cte_value(m);
    if (kind == K_MESSAGE && enc_is_transform(m->enc))
        kind = K_LEAF;
    if (kind == K_MULTIPART && m->bndlen == 0)
        kind = K_LEAF;
    composite = kind == K_MULTIPART || kind == K_MESSAGE;
    if (composite && m->nfr + m->msg_depth + 1 >= DEPTH_MAX) {
        kind = K_LEAF;
        m->too_deep = 1;
    }
    m->kind = kind;
    m->hdr = H_NONE;
    m->drop = 0;
    if (!m->convert) {
        if (composite && kind != K_LEAF)
            plan_set(m, m->ent, m->enc == ENC_8BIT || m->enc == ENC_BINARY ? ACT_7BIT : ACT_KEEP);
        return;
    }
    if (plan_get(m, m->ent) != ACT_KEEP && !m->cte_done)
        put_cte(m);
    if (plan_get(m, m->ent) == ACT_QP) {
        if (!m->saw_ct && !m->in_digest)
            emit_field(m, "Content-Type: text/plain; charset=unknown-8bit\r\n");
        if (m->msg_level && !m->saw_mv)
            emit_field(m, "MIME-Version: 1.0\r\n");
    }
}

static void body_begin(struct mime7 *m)
{
    if (m->kind == K_MULTIPART) {
        struct frame *f;
        m->fr = xgrow(m->fr, &m->frcap, m->nfr + 1, sizeof(*m->fr));
        f = &m->fr[m->nfr++];
        memcpy(f->boundary, m->bnd, m->bndlen + 1);
        f->blen = m->bndlen;
        f->digest = m->digest;
        f->msg_depth = m->msg_depth;
        m->st = ST_FILLER; /* the preamble */
    } else if (m->kind == K_MESSAGE) {
        m->msg_depth++;
        ent_begin(m, 1, 0);
    } else {
        m->st = ST_LEAF;
        m->leaf8 = 0;
        qp_enc_init(&m->qp);
    }
}

/* End of a leaf's body: the scan decides its plan. */
static void leaf_end(struct mime7 *m)
{
    int act = ACT_KEEP;
    if (m->convert) {
        if (plan_get(m, m->ent) == ACT_QP)
            qp_enc_end(&m->qp, m->out);
        return;
    }
    if (m->leaf8) {
        if (m->kind == K_MESSAGE7)
            stuck(m, "8-bit data in a message/partial or message/external-body part");
        else if (enc_is_transform(m->enc))
            stuck(m,
                  "8-bit data in a part that claims a quoted-printable, base64 or other encoding");
        else
            act = ACT_QP;
    } else if (m->enc == ENC_8BIT || m->enc == ENC_BINARY) {
        act = ACT_7BIT;
    }
    plan_set(m, m->ent, act);
}

/* ---- lines ---- */

static void body_bytes(struct mime7 *m, const char *p, size_t n)
{
    if (m->st == ST_LEAF && m->convert && plan_get(m, m->ent) == ACT_QP) {
        qp_enc_feed(&m->qp, p, n, m->out);
        return;
    }
    if (!m->convert && has8(p, n)) {
        m->result |= MIME7_BODY8;
        if (m->st == ST_LEAF)
            m->leaf8 = 1;
        else
            stuck(m, "8-bit data in a multipart preamble or epilogue");
    }
    emit(m, p, n);
}

/* Is l (a whole line) a boundary of f? *close: the closing one. */
static int boundary_match(const struct frame *f, const char *l, size_t n, int *close)
{
    size_t i = 2 + f->blen;
    if (n < i || memcmp(l + 2, f->boundary, f->blen) != 0)
        return 0;
    *close = n >= i + 2 && l[i] == '-' && l[i + 1] == '-';
    if (*close)
        i += 2;
    while (i < n && (l[i] == ' ' || l[i] == '\t'))
        i++;
    return (n - i == 1 && l[i] == '\n') || (n - i == 2 && l[i] == '\r' && l[i + 1] == '\n');
}

static void at_boundary(struct mime7 *m, size_t k, int close, const char *l, size_t n)
{
    if (m->st == ST_LEAF)
        leaf_end(m);
    m->nfr = k + 1; /* inner multiparts end here too */
    m->msg_depth = m->fr[k].msg_depth;
    emit(m, l, n);
    if (close) {
        m->nfr = k;
        m->st = ST_FILLER; /* the epilogue */
    } else {
        ent_begin(m, 0, m->fr[k].digest);
    }
}

static void line_done(struct mime7 *m, const char *l, size_t n, int complete);

static void body_line(struct mime7 *m, const char *l, size_t n, int complete)
{
    if (complete && m->nfr > 0 && n >= 3 && l[0] == '-' && l[1] == '-') {
        size_t k = m->nfr;
        int close;
        while (k-- > 0)
            if (boundary_match(&m->fr[k], l, n, &close)) {
                at_boundary(m, k, close, l, n);
                return;
            }
    }
    body_bytes(m, l, n);
}

static void hdr_line(struct mime7 *m, const char *l, size_t n, int complete)
{
    if (complete && (n == 1 || (n == 2 && l[0] == '\r'))) { /* the empty line */
        hdr_end(m);
        emit(m, l, n);
        body_begin(m);
        return;
    }
    if ((l[0] == ' ' || l[0] == '\t') && m->hdr != H_NONE) {
        hdr_bytes(m, l, n);
        return;
    }
    if (field_start(m, l, n)) {
        hdr_bytes(m, l, n);
        return;
    }
    /* Not a header: the header block ends here and this line is body (of
     * this entity, or the start of a message it contains). */
    hdr_end(m);
    body_begin(m);
    line_done(m, l, n, complete);
}

static void line_done(struct mime7 *m, const char *l, size_t n, int complete)
{
    if (m->st == ST_HDR)
        hdr_line(m, l, n, complete);
    else
        body_line(m, l, n, complete);
}

/* More of a line whose head was parsed. */
static void tail_bytes(struct mime7 *m, const char *p, size_t n)
{
    if (m->st == ST_HDR)
        hdr_bytes(m, p, n);
    else
        body_bytes(m, p, n);
}

/* ---- interface ---- */

static void pass_begin(struct mime7 *m)
{
    m->llen = 0;
    m->in_long = 0;
    m->nent = 0;
    m->nfr = 0;
    m->msg_depth = 0;
    m->too_deep = 0;
    m->last = 0;
    qp_enc_init(&m->qp);
    ent_begin(m, 1, 0);
}

struct mime7 *mime7_new(void)
{
    struct mime7 *m = xcalloc(1, sizeof(*m));
    buf_init(&m->ct, 256);
    pass_begin(m);
    return m;
}

void mime7_free(struct mime7 *m)
{
    if (!m)
        return;
    buf_destroy(&m->ct);
    free(m->plan);
    free(m->fr);
    free(m);
}

void mime7_convert_begin(struct mime7 *m)
{
    m->convert = 1;
    pass_begin(m);
}

void mime7_feed(struct mime7 *m, const void *data, size_t len, buf_t *out)
{
    const char *p = data;
    m->out = out;
    while (len > 0) {
        const char *nl = memchr(p, '\n', len);
        size_t seg = nl ? (size_t)(nl - p) + 1 : len;
        size_t room = LINE_CAP - m->llen;
        if (m->in_long) {
            tail_bytes(m, p, seg);
        } else if (seg <= room) {
            memcpy(m->line + m->llen, p, seg);
            m->llen += seg;
            if (nl) {
                line_done(m, m->line, m->llen, 1);
                m->llen = 0;
            }
        } else {
            memcpy(m->line + m->llen, p, room);
            line_done(m, m->line, LINE_CAP, 0);
            m->llen = 0;
            m->in_long = 1;
            tail_bytes(m, p + room, seg - room);
        }
        if (nl)
            m->in_long = 0;
        p += seg;
        len -= seg;
    }
}

void mime7_end(struct mime7 *m, buf_t *out)
{
    m->out = out;
    if (m->llen > 0)
        line_done(m, m->line, m->llen, 0);
    m->llen = 0;
    m->in_long = 0;
    while (m->st == ST_HDR) { /* headers up to the end: an empty body */
        hdr_end(m);
        body_begin(m);
    }
    if (m->st == ST_LEAF)
        leaf_end(m);
    m->nfr = 0;
    if (!m->convert && m->too_deep && (m->result & MIME7_BODY8))
        stuck(m, "MIME nesting exceeds the safety limit");
}

int mime7_result(const struct mime7 *m)
{
    return m->result;
}

const char *mime7_why(const struct mime7 *m)
{
    return m->why;
}
