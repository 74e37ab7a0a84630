/* bclass.c - bounce classification: reply code, enhanced status code and
 * reply text to a category, by rules read from text files (see bclass.h
 * for the format).
 *
 * The rules are loaded whole into a new set and swapped in only when every
 * file parsed, so a broken file at reload leaves the running rules alone.
 * Matching checks the cheap conditions (codes) before the regular
 * expression, and the text is normalised once per reply: codes stripped,
 * lines joined, white space collapsed. */
#include "common/mail/bclass.h"

#include <ctype.h>
#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mail/conf.h"
#include "common/util/alloc.h"

#define RULE_LINE_MAX 4096

static const char *const names[BCLASS_COUNT] = {
    [BCLASS_OTHER] = "other",
    [BCLASS_BAD_MAILBOX] = "bad-mailbox",
    [BCLASS_INACTIVE_MAILBOX] = "inactive-mailbox",
    [BCLASS_BAD_DOMAIN] = "bad-domain",
    [BCLASS_QUOTA_ISSUES] = "quota-issues",
    [BCLASS_SPAM_RELATED] = "spam-related",
    [BCLASS_POLICY_RELATED] = "policy-related",
    [BCLASS_CONTENT_RELATED] = "content-related",
    [BCLASS_RATE_LIMITED] = "rate-limited",
    [BCLASS_GREYLISTED] = "greylisted",
    [BCLASS_RELAYING_ISSUES] = "relaying-issues",
    [BCLASS_PROTOCOL_ERRORS] = "protocol-errors",
    [BCLASS_ROUTING_ERRORS] = "routing-errors",
    [BCLASS_NO_ANSWER_FROM_HOST] = "no-answer-from-host",
    [BCLASS_BAD_CONNECTION] = "bad-connection",
    [BCLASS_MESSAGE_EXPIRED] = "message-expired",
};

const char *bclass_name(enum bclass c)
{
    if ((int)c < 0 || (int)c >= BCLASS_COUNT)
        return names[BCLASS_OTHER];
    return names[c];
}

int bclass_from_name(const char *name, enum bclass *out)
{
    for (int i = 0; name && i < BCLASS_COUNT; i++) {
        if (str_ieq(name, names[i])) {
            *out = (enum bclass)i;
            return 0;
        }
    }
    return -1;
}

int bclass_is_hard(enum bclass c)
{
    return c == BCLASS_BAD_MAILBOX || c == BCLASS_INACTIVE_MAILBOX || c == BCLASS_BAD_DOMAIN;
}

/* ---------------------------------------------------------------- rules */

#define ANY (-1)

struct rule {
    enum bclass cat;
    int has_code;
    char code[3]; /* digit or 'x' */
    int has_dsn;
    int dsn[3]; /* number or ANY */
    int has_re;
    regex_t re;
    size_t file; /* index into rules.files */
    int line;
};

struct ruleset {
    struct rule *v;
    size_t n, cap;
    char **files;
    size_t nfiles;
};

static struct ruleset rules;

static void ruleset_free(struct ruleset *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        if (rs->v[i].has_re)
            regfree(&rs->v[i].re);
    for (size_t i = 0; i < rs->nfiles; i++)
        free(rs->files[i]);
    free(rs->v);
    free(rs->files);
    memset(rs, 0, sizeof *rs);
}

void bclass_reset(void)
{
    ruleset_free(&rules);
}

/* "5xx", "421", "55x" */
static int parse_code(const char *s, struct rule *r)
{
    if (strlen(s) != 3 || (s[0] < '2' || s[0] > '5'))
        return -1;
    for (int i = 0; i < 3; i++) {
        char c = (char)tolower((unsigned char)s[i]);
        if (!isdigit((unsigned char)c) && c != 'x')
            return -1;
        r->code[i] = c;
    }
    r->has_code = 1;
    return 0;
}

/* One enhanced-code component: 1-3 digits; the rest of s after it in *end. */
static int parse_num(const char *s, const char **end)
{
    int v = 0, n = 0;
    while (isdigit((unsigned char)s[n]) && n < 4)
        v = v * 10 + (s[n++] - '0');
    *end = s + n;
    return n >= 1 && n <= 3 ? v : -1;
}

/* "5.1.1", "4.7.*", "5.*" (a trailing * covers the missing components) */
static int parse_dsn(const char *s, struct rule *r)
{
    int k = 0;
    for (;;) {
        if (*s == '*') {
            r->dsn[k++] = ANY;
            s++;
        } else {
            const char *end;
            int v = parse_num(s, &end);
            if (v < 0)
                return -1;
            r->dsn[k++] = v;
            s = end;
        }
        if (*s == 0)
            break;
        if (*s != '.' || k == 3)
            return -1;
        s++;
    }
    if (k < 3 && r->dsn[k - 1] != ANY)
        return -1;
    while (k < 3)
        r->dsn[k++] = ANY;
    if (r->dsn[0] != ANY && r->dsn[0] != 2 && r->dsn[0] != 4 && r->dsn[0] != 5)
        return -1;
    r->has_dsn = 1;
    return 0;
}

static int parse_regex(const char *s, struct rule *r, buf_t *why)
{
    if (*s == 0) {
        buf_set(why, "empty text= pattern");
        return -1;
    }
    int rc = regcomp(&r->re, s, REG_EXTENDED | REG_ICASE | REG_NOSUB);
    if (rc != 0) {
        char msg[256];
        regerror(rc, &r->re, msg, sizeof msg);
        buf_setf(why, "bad regular expression \"%s\": %s", s, msg);
        return -1;
    }
    r->has_re = 1;
    return 0;
}

/* One condition word (not text=): code= or dsn=. */
static int parse_cond(const char *w, size_t len, struct rule *r, buf_t *why)
{
    char tmp[32];
    if (len >= 5 && strncmp(w, "code=", 5) == 0 && len - 5 < sizeof tmp) {
        memcpy(tmp, w + 5, len - 5);
        tmp[len - 5] = 0;
        if (r->has_code || parse_code(tmp, r) < 0) {
            buf_setf(why, "%s code= \"%s\" (use three characters, digits or x: 5xx, 421)",
                     r->has_code ? "second" : "bad", tmp);
            return -1;
        }
        return 0;
    }
    if (len >= 4 && strncmp(w, "dsn=", 4) == 0 && len - 4 < sizeof tmp) {
        memcpy(tmp, w + 4, len - 4);
        tmp[len - 4] = 0;
        if (r->has_dsn || parse_dsn(tmp, r) < 0) {
            buf_setf(why, "%s dsn= \"%s\" (use an enhanced status code or prefix: 5.1.1, 4.7.*)",
                     r->has_dsn ? "second" : "bad", tmp);
            return -1;
        }
        return 0;
    }
    buf_setf(why, "unknown condition \"%.*s\" (use code=, dsn= or text=)",
             (int)(len > 60 ? 60 : len), w);
    return -1;
}

/* "category cond cond text=regex" (line already trimmed, not a comment). */
static int parse_rule(char *s, struct rule *r, buf_t *why)
{
    size_t n = strcspn(s, " \t");
    char save = s[n];
    s[n] = 0;
    if (bclass_from_name(s, &r->cat) < 0) {
        buf_setf(why, "unknown category \"%.60s\"", s);
        return -1;
    }
    s[n] = save;
    s += n;
    for (;;) {
        s += strspn(s, " \t");
        if (*s == 0)
            return 0;
        if (strncmp(s, "text=", 5) == 0)
            return parse_regex(str_trim(s + 5), r, why);
        n = strcspn(s, " \t");
        if (parse_cond(s, n, r, why) < 0) {
            if (r->has_re)
                regfree(&r->re);
            return -1;
        }
        s += n;
    }
}

static void ruleset_add(struct ruleset *rs, const struct rule *r)
{
    rs->v = xgrow(rs->v, &rs->cap, rs->n + 1, sizeof *rs->v);
    rs->v[rs->n++] = *r;
}

/* Read one line into line (without the newline); 1, 0 at EOF, -1 when
 * too long or holding a NUL byte. */
static int read_line(FILE *fp, buf_t *line)
{
    int c;
    buf_reset(line);
    while ((c = getc(fp)) != EOF && c != '\n') {
        if (c == 0 || line->len >= RULE_LINE_MAX)
            return -1;
        buf_putc(line, c);
    }
    if (c == EOF && line->len == 0)
        return 0;
    if (line->len && line->data[line->len - 1] == '\r')
        buf_truncate(line, line->len - 1);
    return 1;
}

static int load_file(struct ruleset *rs, const char *path, buf_t *err)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        buf_setf(err, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    rs->files = xrealloc(rs->files, (rs->nfiles + 1) * sizeof *rs->files);
    rs->files[rs->nfiles++] = xstrdup(path);
    buf_t line = BUF_INIT, why = BUF_INIT;
    int lineno = 0, rc = 0, got;
    while (rc == 0 && (got = read_line(fp, &line)) != 0) {
        lineno++;
        if (got < 0) {
            buf_setf(err, "%s, line %d: line longer than %d bytes or holding a NUL byte", path,
                     lineno, RULE_LINE_MAX);
            rc = -1;
            break;
        }
        if (line.len == 0)
            continue;
        char *s = str_trim(line.data);
        if (*s == 0 || *s == '#')
            continue;
        struct rule r;
        memset(&r, 0, sizeof r);
        if (parse_rule(s, &r, &why) < 0) {
            buf_setf(err, "%s, line %d: %s", path, lineno, buf_str(&why));
            rc = -1;
            break;
        }
        r.file = rs->nfiles - 1;
        r.line = lineno;
        ruleset_add(rs, &r);
    }
    if (rc == 0 && ferror(fp)) {
        buf_setf(err, "%s: read error: %s", path, strerror(errno));
        rc = -1;
    }
    fclose(fp);
    buf_destroy(&line);
    buf_destroy(&why);
    return rc;
}

int bclass_load(const char *local_file, const char *file, buf_t *err)
{
    struct ruleset rs;
    memset(&rs, 0, sizeof rs);
    const char *paths[2] = { local_file, file };
    for (int i = 0; i < 2; i++) {
        if (paths[i] && *paths[i] && load_file(&rs, paths[i], err) < 0) {
            ruleset_free(&rs);
            return -1;
        }
    }
    ruleset_free(&rules);
    rules = rs;
    return 0;
}

int bclass_init(buf_t *err)
{
    return bclass_load(conf_str("bounce_classifier_local_rules"),
                       conf_str("bounce_classifier_rules"), err);
}

/* ---------------------------------------------------------------- replies */

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

void bclass_split_reply(const char *reply, int *code, char enh[16], buf_t *out)
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

/* ---------------------------------------------------------------- matching */

static int code_matches(const struct rule *r, int code)
{
    if (code < 200 || code > 599)
        return 0;
    char d[3] = { (char)('0' + code / 100), (char)('0' + code / 10 % 10), (char)('0' + code % 10) };
    for (int i = 0; i < 3; i++)
        if (r->code[i] != 'x' && r->code[i] != d[i])
            return 0;
    return 1;
}

static int dsn_matches(const struct rule *r, const int dsn[3])
{
    if (dsn[0] < 0)
        return 0;
    for (int i = 0; i < 3; i++)
        if (r->dsn[i] != ANY && r->dsn[i] != dsn[i])
            return 0;
    return 1;
}

/* "5.1.1" -> {5,1,1}; {-1,..} when absent or malformed. */
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

enum bclass bclass_explain(int code, const char *enhanced, const char *text, struct bclass_match *m)
{
    buf_t norm = BUF_INIT;
    int tcode;
    char tenh[16];
    int dsn[3];
    bclass_split_reply(text, &tcode, tenh, &norm);
    if (code == 0)
        code = tcode;
    parse_enhanced(enhanced && *enhanced ? enhanced : tenh, dsn);
    enum bclass cat = BCLASS_OTHER;
    m->file = NULL;
    m->line = 0;
    for (size_t i = 0; i < rules.n; i++) {
        const struct rule *r = &rules.v[i];
        if ((r->has_code && !code_matches(r, code)) || (r->has_dsn && !dsn_matches(r, dsn)))
            continue;
        if (r->has_re && regexec(&r->re, buf_str(&norm), 0, NULL, 0) != 0)
            continue;
        cat = r->cat;
        m->file = rules.files[r->file];
        m->line = r->line;
        break;
    }
    buf_destroy(&norm);
    return cat;
}

enum bclass bclass_classify(int code, const char *enhanced, const char *text)
{
    struct bclass_match m;
    return bclass_explain(code, enhanced, text, &m);
}
