/* replymatch.c - conditions on a remote SMTP reply (see replymatch.h): the
 * parser of code=, dsn=, site=, mx= and text=, the normalisation of a
 * reply (codes stripped, lines joined, white space collapsed; done once per
 * reply) and the matcher, which tests the cheap conditions (codes, scope)
 * before the regular expression. */
#include "common/mail/replymatch.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"

/* ---------------------------------------------------------------- parsing */

/* Three characters, each a digit or x, the first 2-5. */
static int parse_code(const char *s, struct replymatch *m)
{
    if (strlen(s) != 3 || s[0] < '2' || s[0] > '5')
        return -1;
    for (int i = 0; i < 3; i++) {
        char c = (char)tolower((unsigned char)s[i]);
        if (!isdigit((unsigned char)c) && c != 'x')
            return -1;
        m->code[i] = c;
    }
    m->code[3] = 0;
    return 0;
}

/* One dsn= component: "*" or 1-3 of digit/'x'. */
static int parse_dsn_part(const char *s, size_t n, char out[4])
{
    if (n == 1 && *s == '*') {
        str_lcpy(out, "*", 4);
        return 0;
    }
    if (n < 1 || n > 3)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = (char)tolower((unsigned char)s[i]);
        if (!isdigit((unsigned char)c) && c != 'x')
            return -1;
        out[i] = c;
    }
    out[n] = 0;
    return 0;
}

/* "4.7.28", "4.7.5xx", "4.7.*", "4.*" (a trailing * covers what is left) */
static int parse_dsn(const char *s, struct replymatch *m)
{
    int k = 0;
    while (k < 3) {
        size_t n = strcspn(s, ".");
        if (parse_dsn_part(s, n, m->dsn[k]) < 0)
            return -1;
        k++;
        s += n;
        if (*s == 0)
            break;
        s++;
        if (*s == 0)
            return -1;
    }
    if (*s != 0 || (k < 3 && strcmp(m->dsn[k - 1], "*") != 0))
        return -1;
    for (; k < 3; k++)
        str_lcpy(m->dsn[k], "*", 4);
    if (strcmp(m->dsn[0], "*") != 0 && strcmp(m->dsn[0], "x") != 0 && strcmp(m->dsn[0], "2") != 0 &&
        strcmp(m->dsn[0], "4") != 0 && strcmp(m->dsn[0], "5") != 0)
        return -1;
    m->has_dsn = 1;
    return 0;
}

static int parse_regex(const char *s, struct replymatch *m, buf_t *why)
{
    if (*s == 0) {
        buf_set(why, "empty text= pattern");
        return -1;
    }
    int rc = regcomp(&m->re, s, REG_EXTENDED | REG_ICASE | REG_NOSUB);
    if (rc != 0) {
        char msg[256];
        regerror(rc, &m->re, msg, sizeof msg);
        buf_setf(why, "bad regular expression \"%.200s\": %s", s, msg);
        return -1;
    }
    m->has_re = 1;
    return 0;
}

/* A scope value: a site name or MX host (suffix), lower-cased. */
static int parse_name(const char *s, char **out)
{
    if (*s == 0 || *out != NULL || strlen(s) > 255)
        return -1;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
            return -1;
    *out = str_lower(xstrdup(s));
    return 0;
}

static int parse_scope(const char *w, struct replymatch *m, buf_t *why)
{
    if (strncmp(w, "site=", 5) == 0) {
        if (parse_name(w + 5, &m->site) < 0) {
            buf_setf(why, "bad or second site= \"%.60s\"", w + 5);
            return -1;
        }
        return 0;
    }
    if (parse_name(w + 3, &m->mx) < 0) {
        buf_setf(why, "bad or second mx= \"%.60s\" (a host name or .suffix)", w + 3);
        return -1;
    }
    return 0;
}

/* One condition word other than text=, NUL-terminated. */
static int parse_cond(const char *w, unsigned flags, struct replymatch *m, buf_t *why)
{
    int scope = (flags & REPLYMATCH_SCOPE) != 0;

    if (strncmp(w, "code=", 5) == 0) {
        if (m->code[0] || parse_code(w + 5, m) < 0) {
            buf_setf(why, "%s code= \"%.60s\" (use three characters, digits or x: 421, 5xx)",
                     m->code[0] ? "second" : "bad", w + 5);
            return -1;
        }
        return 0;
    }
    if (strncmp(w, "dsn=", 4) == 0) {
        if (m->has_dsn || parse_dsn(w + 4, m) < 0) {
            buf_setf(why,
                     "%s dsn= \"%.60s\" (use an enhanced status code or pattern: 5.1.1, "
                     "4.7.*, 4.7.5xx)",
                     m->has_dsn ? "second" : "bad", w + 4);
            return -1;
        }
        return 0;
    }
    if (scope && (strncmp(w, "site=", 5) == 0 || strncmp(w, "mx=", 3) == 0))
        return parse_scope(w, m, why);
    buf_setf(why, "unknown condition \"%.60s\" (use code=, dsn=%s or text=)", w,
             scope ? ", site=, mx=" : "");
    return -1;
}

/* Next white-space separated word of *s, NUL-terminated in place. */
static char *next_word(char **s)
{
    char *p = *s + strspn(*s, " \t");
    size_t n = strcspn(p, " \t");
    *s = p + n;
    if (**s) {
        **s = 0;
        (*s)++;
    }
    return p;
}

int replymatch_parse(char *s, unsigned flags, struct replymatch *m, buf_t *why)
{
    for (;;) {
        s += strspn(s, " \t");
        if (*s == 0)
            return 0;
        if (strncmp(s, "text=", 5) == 0) {
            if (parse_regex(str_trim(s + 5), m, why) == 0)
                return 0;
            break;
        }
        if (parse_cond(next_word(&s), flags, m, why) < 0)
            break;
    }
    replymatch_destroy(m);
    return -1;
}

void replymatch_destroy(struct replymatch *m)
{
    if (m->has_re)
        regfree(&m->re);
    free(m->site);
    free(m->mx);
    memset(m, 0, sizeof(*m));
}

int replymatch_tests_reply(const struct replymatch *m)
{
    return m->code[0] || m->has_dsn || m->has_re;
}

/* ---------------------------------------------------------------- replies */

/* One enhanced-code component: 1-3 digits; the rest of s after it in *end. */
static int parse_num(const char *s, const char **end)
{
    int v = 0, n = 0;
    while (isdigit((unsigned char)s[n]) && n < 4)
        v = v * 10 + (s[n++] - '0');
    *end = s + n;
    return n >= 1 && n <= 3 ? v : -1;
}

/* Length of an enhanced status code at s ("5.1.1" -> 5), or 0. */
static size_t enh_len(const char *s)
{
    if (*s != '2' && *s != '4' && *s != '5')
        return 0;
    const char *p = s + 1;
    for (int k = 0; k < 2; k++) {
        const char *end;
        if (*p != '.' || parse_num(p + 1, &end) < 0)
            return 0;
        p = end;
    }
    return (*p == 0 || *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') ? (size_t)(p - s) : 0;
}

/* Append s[0..n) to out collapsing white space runs to one space. */
static void put_text(buf_t *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == ' ' || c == '\t' || c == '\r') {
            if (out->len && out->data[out->len - 1] != ' ')
                buf_putc(out, ' ');
        } else {
            buf_putc(out, c);
        }
    }
}

/* One line: strip "550-" / "550 " and an enhanced code; keep the rest. */
static void split_line(const char *s, size_t n, int *code, char enh[16], buf_t *out)
{
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    if (n >= 3 && isdigit((unsigned char)s[0]) && isdigit((unsigned char)s[1]) &&
        isdigit((unsigned char)s[2]) && (n == 3 || s[3] == ' ' || s[3] == '-')) {
        if (*code == 0)
            *code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
        s += n == 3 ? 3 : 4;
        n -= n == 3 ? 3 : 4;
        while (n && *s == ' ') {
            s++;
            n--;
        }
    }
    char tmp[16];
    size_t k = n < sizeof tmp ? n : sizeof tmp - 1;
    memcpy(tmp, s, k);
    tmp[k] = 0;
    size_t e = enh_len(tmp);
    if (e) {
        if (enh[0] == 0)
            str_lcpy(enh, tmp, e + 1);
        s += e;
        n -= e;
    }
    if (out->len && out->data[out->len - 1] != ' ')
        buf_putc(out, ' ');
    put_text(out, s, n);
}

void replymatch_split_reply(const char *reply, int *code, char enh[16], buf_t *out)
{
    *code = 0;
    enh[0] = 0;
    buf_set(out, "");
    if (reply == NULL)
        return;
    reply += strspn(reply, " \t\r\n");
    if (str_nieq(reply, "smtp;", 5))
        reply += 5;
    while (*reply) {
        size_t n = strcspn(reply, "\n");
        split_line(reply, n, code, enh, out);
        reply += n;
        if (*reply == '\n')
            reply++;
    }
    while (out->len && out->data[out->len - 1] == ' ')
        buf_truncate(out, out->len - 1);
}

/* "5.1.1" -> {5,1,1}; {-1,-1,-1} when absent or malformed. */
static void parse_enhanced(const char *s, int dsn[3])
{
    dsn[0] = dsn[1] = dsn[2] = -1;
    if (s == NULL || enh_len(s) == 0)
        return;
    const char *p = s;
    for (int k = 0; k < 3; k++) {
        dsn[k] = parse_num(p, &p);
        p++;
    }
}

void replymatch_reply_init(struct replymatch_reply *r, int code, const char *enhanced,
                           const char *text, const char *site, const char *mx)
{
    char enh[16];
    int tcode;

    buf_init(&r->text, 0);
    replymatch_split_reply(text, &tcode, enh, &r->text);
    r->code = code ? code : tcode;
    parse_enhanced(enhanced && *enhanced ? enhanced : enh, r->dsn);
    r->site = site;
    r->mx = mx;
}

void replymatch_reply_destroy(struct replymatch_reply *r)
{
    buf_destroy(&r->text);
}

/* ---------------------------------------------------------------- matching */

/* Does the decimal value v fit the pattern ("28", "5xx", "*")? */
static int part_matches(const char *pat, int v)
{
    if (pat[0] == '*')
        return 1;
    if (v < 0)
        return 0;
    char d[8];
    int n = snprintf(d, sizeof d, "%d", v);
    if (n < 0 || (size_t)n != strlen(pat))
        return 0;
    for (int i = 0; i < n; i++)
        if (pat[i] != 'x' && pat[i] != d[i])
            return 0;
    return 1;
}

/* Host h equals pattern, or pattern is ".suffix" and h ends with it. */
static int mx_matches(const char *pat, const char *h)
{
    if (h == NULL)
        return 0;
    size_t hl = strlen(h), pl = strlen(pat);
    if (hl && h[hl - 1] == '.')
        hl--; /* a fully qualified "mx.example.com." */
    if (pat[0] != '.')
        return hl == pl && str_nieq(h, pat, pl);
    return hl > pl && str_nieq(h + hl - pl, pat, pl);
}

static int code_matches(const char code[4], int v)
{
    char d[8];
    if (v < 200 || v > 599)
        return 0;
    snprintf(d, sizeof d, "%d", v);
    for (int i = 0; i < 3; i++)
        if (code[i] != 'x' && code[i] != d[i])
            return 0;
    return 1;
}

int replymatch_test(const struct replymatch *m, const struct replymatch_reply *r)
{
    if (m->site && (r->site == NULL || !str_ieq(m->site, r->site)))
        return 0;
    if (m->mx && !mx_matches(m->mx, r->mx))
        return 0;
    if (m->code[0] && !code_matches(m->code, r->code))
        return 0;
    if (m->has_dsn)
        for (int i = 0; i < 3; i++)
            if (!part_matches(m->dsn[i], r->dsn[i]))
                return 0;
    return !m->has_re || regexec(&m->re, buf_str(&r->text), 0, NULL, 0) == 0;
}

int replymatch_read_line(FILE *fp, buf_t *line)
{
    int c;
    buf_reset(line);
    while ((c = getc(fp)) != EOF && c != '\n') {
        if (c == 0 || line->len >= REPLYMATCH_LINE_MAX)
            return -1;
        buf_putc(line, c);
    }
    if (c == EOF && line->len == 0)
        return 0;
    if (line->len && line->data[line->len - 1] == '\r')
        buf_truncate(line, line->len - 1);
    return 1;
}
