/* qmgr_shaperules.c - the shaping_rules file: a remote reply to an action on
 * its site (format in qmgr_shaperules.h).
 *
 * Pure: reads a file, matches replies, formats descriptions; applying an
 * action to a site is qmgr's business. A set is built whole and handed to
 * the caller only when every line parsed, so a broken file at reload leaves
 * the running set alone. Matching tests the cheap conditions (codes, scope)
 * before the regular expression; the reply is normalised the way the bounce
 * classifier does it (bclass_split_reply), so one pattern serves both files. */
#include "qmgr/qmgr_shaperules.h"

#include <ctype.h>
#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mail/bclass.h"
#include "common/mail/conf.h"
#include "common/util/alloc.h"

#define RULE_LINE_MAX 4096
#define MAX_DURATION  (7LL * 86400)
#define MAX_RATE      1000000000LL

struct rule {
    struct qmgr_shaperule pub;
    char code[4];   /* "" or three of digit/'x' */
    char dsn[3][4]; /* "" (no dsn=), "*", or 1-3 of digit/'x' */
    int has_dsn;
    char *site;
    char *mx;
    int has_re;
    regex_t re;
};

struct qmgr_shaperules {
    struct rule *v;
    size_t n, cap;
    char *file;
};

void qmgr_shaperules_free(struct qmgr_shaperules *rs)
{
    if (rs == NULL)
        return;
    for (size_t i = 0; i < rs->n; i++) {
        if (rs->v[i].has_re)
            regfree(&rs->v[i].re);
        free(rs->v[i].site);
        free(rs->v[i].mx);
    }
    free(rs->v);
    free(rs->file);
    free(rs);
}

size_t qmgr_shaperules_count(const struct qmgr_shaperules *rs)
{
    return rs ? rs->n : 0;
}

/* ---------------------------------------------------------------- parsing */

/* "300/h" into the rule; -1 when malformed or out of range. */
static int parse_rate(const char *s, struct qmgr_shaperule *p)
{
    static const struct {
        char unit;
        double secs;
    } units[] = { { 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 } };
    char *end;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    if (errno || end == s || !isdigit((unsigned char)*s) || n < 1 || n > MAX_RATE || *end != '/' ||
        end[1] == 0 || end[2] != 0)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (units[i].unit == tolower((unsigned char)end[1])) {
            p->rate_n = n;
            p->rate_unit = units[i].unit;
            p->per_sec = (double)n / units[i].secs;
            return 0;
        }
    }
    return -1;
}

static int parse_action(const char *w, struct qmgr_shaperule *p, buf_t *why)
{
    if (strcmp(w, "suspend") == 0)
        p->action = SHAPERULE_SUSPEND;
    else if (strcmp(w, "suspend_source") == 0)
        p->action = SHAPERULE_SUSPEND_SOURCE;
    else if (strcmp(w, "bounce") == 0)
        p->action = SHAPERULE_BOUNCE;
    else if (strncmp(w, "rate=", 5) == 0) {
        p->action = SHAPERULE_RATE;
        if (parse_rate(w + 5, p) < 0) {
            buf_setf(why, "bad rate \"%.60s\" (use N/s, N/m, N/h or N/d, N >= 1)", w + 5);
            return -1;
        }
    } else if (strncmp(w, "connections=", 12) == 0) {
        char *end;
        long v = strtol(w + 12, &end, 10);
        if (!isdigit((unsigned char)w[12]) || *end != 0 || v < 1 || v > 10000) {
            buf_setf(why, "bad connections \"%.60s\" (use a number from 1 to 10000)", w + 12);
            return -1;
        }
        p->action = SHAPERULE_CONNECTIONS;
        p->conns = (int)v;
    } else {
        buf_setf(why,
                 "unknown action \"%.60s\" (use suspend, suspend_source, rate=N/UNIT, "
                 "connections=N or bounce)",
                 w);
        return -1;
    }
    return 0;
}

static int parse_duration(const char *w, struct qmgr_shaperule *p, buf_t *why)
{
    if (strcmp(w, "-") == 0) {
        if (p->action != SHAPERULE_BOUNCE) {
            buf_set(why, "duration \"-\" is only for bounce (use 30m, 2h, ...)");
            return -1;
        }
        p->secs = 0;
        return 0;
    }
    if (p->action == SHAPERULE_BOUNCE) {
        buf_setf(why, "bounce takes no duration (use \"-\"), not \"%.60s\"", w);
        return -1;
    }
    buf_t e = BUF_INIT;
    int rc = conf_parse_time(w, 's', &p->secs, &e);
    buf_destroy(&e);
    if (rc < 0 || p->secs < 1 || p->secs > MAX_DURATION) {
        buf_setf(why, "bad duration \"%.60s\" (use 1s to 7d: 30s, 30m, 2h, 1d)", w);
        return -1;
    }
    return 0;
}

/* Three characters, each a digit or x, the first 2-5. */
static int parse_code(const char *s, struct rule *r)
{
    if (strlen(s) != 3 || s[0] < '2' || s[0] > '5')
        return -1;
    for (int i = 0; i < 3; i++) {
        char c = (char)tolower((unsigned char)s[i]);
        if (!isdigit((unsigned char)c) && c != 'x')
            return -1;
        r->code[i] = c;
    }
    r->code[3] = 0;
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
static int parse_dsn(const char *s, struct rule *r)
{
    int k = 0;
    while (k < 3) {
        size_t n = strcspn(s, ".");
        if (parse_dsn_part(s, n, r->dsn[k]) < 0)
            return -1;
        k++;
        s += n;
        if (*s == 0)
            break;
        s++;
        if (*s == 0)
            return -1;
    }
    if (*s != 0 || (k < 3 && strcmp(r->dsn[k - 1], "*") != 0))
        return -1;
    for (; k < 3; k++)
        str_lcpy(r->dsn[k], "*", 4);
    if (r->dsn[0][0] != '*' && strcmp(r->dsn[0], "4") != 0 && strcmp(r->dsn[0], "5") != 0 &&
        strcmp(r->dsn[0], "x") != 0)
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
        buf_setf(why, "bad regular expression \"%.200s\": %s", s, msg);
        return -1;
    }
    r->has_re = 1;
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
    *out = xstrdup(s);
    for (char *p = *out; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return 0;
}

/* One condition word other than text=, NUL-terminated. */
static int parse_cond(const char *w, struct rule *r, buf_t *why)
{
    if (strncmp(w, "code=", 5) == 0) {
        if (r->code[0] || parse_code(w + 5, r) < 0) {
            buf_setf(why, "%s code= \"%.60s\" (use three characters, digits or x: 421, 4xx)",
                     r->code[0] ? "second" : "bad", w + 5);
            return -1;
        }
    } else if (strncmp(w, "dsn=", 4) == 0) {
        if (r->has_dsn || parse_dsn(w + 4, r) < 0) {
            buf_setf(why, "%s dsn= \"%.60s\" (use an enhanced status code: 4.7.28, 4.7.5xx, 4.7.*)",
                     r->has_dsn ? "second" : "bad", w + 4);
            return -1;
        }
    } else if (strncmp(w, "site=", 5) == 0) {
        if (parse_name(w + 5, &r->site) < 0) {
            buf_setf(why, "bad or second site= \"%.60s\"", w + 5);
            return -1;
        }
    } else if (strncmp(w, "mx=", 3) == 0) {
        if (parse_name(w + 3, &r->mx) < 0) {
            buf_setf(why, "bad or second mx= \"%.60s\" (a host name or .suffix)", w + 3);
            return -1;
        }
    } else {
        buf_setf(why, "unknown condition \"%.60s\" (use code=, dsn=, site=, mx= or text=)", w);
        return -1;
    }
    return 0;
}

/* Next white-space separated word of *s, NUL-terminated in place; NULL at
 * the end of the line. */
static char *next_word(char **s)
{
    char *p = *s + strspn(*s, " \t");
    if (*p == 0)
        return NULL;
    size_t n = strcspn(p, " \t");
    *s = p + n;
    if (**s) {
        **s = 0;
        (*s)++;
    }
    return p;
}

/* The conditions after action and duration. */
static int parse_conds(char *s, struct rule *r, buf_t *why)
{
    for (;;) {
        s += strspn(s, " \t");
        if (*s == 0)
            break;
        if (strncmp(s, "text=", 5) == 0) {
            if (parse_regex(str_trim(s + 5), r, why) < 0)
                return -1;
            break;
        }
        if (parse_cond(next_word(&s), r, why) < 0)
            return -1;
    }
    if (!r->code[0] && !r->has_dsn && !r->has_re) {
        buf_set(why, "a rule needs code=, dsn= or text= (a scope alone matches every deferral)");
        return -1;
    }
    return 0;
}

/* "action duration cond cond text=regex" (trimmed, not a comment). */
static int parse_rule(char *s, struct rule *r, buf_t *why)
{
    char *action = next_word(&s);
    if (parse_action(action, &r->pub, why) < 0)
        return -1;
    char *dur = next_word(&s);
    if (dur == NULL) {
        buf_set(why, "missing duration after the action (30m, 2h; \"-\" for bounce)");
        return -1;
    }
    if (parse_duration(dur, &r->pub, why) < 0)
        return -1;
    return parse_conds(s, r, why);
}

static void rule_destroy(struct rule *r)
{
    if (r->has_re)
        regfree(&r->re);
    free(r->site);
    free(r->mx);
}

/* One line into line (no newline); 1, 0 at EOF, -1 too long or a NUL. */
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

/* Parse each line of fp into rs; 0 or -1 with err. */
static int load_lines(struct qmgr_shaperules *rs, FILE *fp, buf_t *err)
{
    buf_t line = BUF_INIT, why = BUF_INIT;
    int lineno = 0, rc = 0, got;
    while (rc == 0 && (got = read_line(fp, &line)) != 0) {
        lineno++;
        if (got < 0) {
            buf_setf(err, "%s, line %d: line longer than %d bytes or holding a NUL byte", rs->file,
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
            buf_setf(err, "%s, line %d: %s", rs->file, lineno, buf_str(&why));
            rule_destroy(&r);
            rc = -1;
            break;
        }
        r.pub.file = rs->file;
        r.pub.line = lineno;
        rs->v = xgrow(rs->v, &rs->cap, rs->n + 1, sizeof *rs->v);
        rs->v[rs->n++] = r;
    }
    if (rc == 0 && ferror(fp)) {
        buf_setf(err, "%s: read error: %s", rs->file, strerror(errno));
        rc = -1;
    }
    buf_destroy(&line);
    buf_destroy(&why);
    return rc;
}

struct qmgr_shaperules *qmgr_shaperules_load(const char *path, buf_t *err)
{
    struct qmgr_shaperules *rs = xcalloc(1, sizeof *rs);
    rs->file = xstrdup(path ? path : "");
    if (path == NULL || *path == 0)
        return rs;
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        buf_setf(err, "%s: cannot open: %s", path, strerror(errno));
        qmgr_shaperules_free(rs);
        return NULL;
    }
    int rc = load_lines(rs, fp, err);
    fclose(fp);
    if (rc < 0) {
        qmgr_shaperules_free(rs);
        return NULL;
    }
    return rs;
}

struct qmgr_shaperules *qmgr_shaperules_load_conf(buf_t *err)
{
    return qmgr_shaperules_load(conf_str("shaping_rules"), err);
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

/* "4.7.28" -> {4,7,28}; {-1,-1,-1} when absent or malformed. */
static void split_enhanced(const char *s, int v[3])
{
    v[0] = v[1] = v[2] = -1;
    if (s == NULL || *s == 0)
        return;
    int t[3];
    const char *p = s;
    for (int k = 0; k < 3; k++) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || end - p > 3 || !isdigit((unsigned char)*p) ||
            (k < 2 ? *end != '.' : *end != 0))
            return;
        t[k] = (int)x;
        p = end + 1;
    }
    memcpy(v, t, sizeof t);
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

struct norm_reply {
    int code;
    int dsn[3];
    buf_t text;
};

static int rule_matches(const struct rule *r, const struct qmgr_shaperule_reply *in,
                        const struct norm_reply *nr)
{
    if (r->site && (in->site == NULL || !str_ieq(r->site, in->site)))
        return 0;
    if (r->mx && !mx_matches(r->mx, in->mx))
        return 0;
    if (r->code[0]) {
        char d[8];
        if (nr->code < 200 || nr->code > 599)
            return 0;
        snprintf(d, sizeof d, "%d", nr->code);
        for (int i = 0; i < 3; i++)
            if (r->code[i] != 'x' && r->code[i] != d[i])
                return 0;
    }
    if (r->has_dsn)
        for (int i = 0; i < 3; i++)
            if (!part_matches(r->dsn[i], nr->dsn[i]))
                return 0;
    return !r->has_re || regexec(&r->re, buf_str(&nr->text), 0, NULL, 0) == 0;
}

const struct qmgr_shaperule *qmgr_shaperules_match(const struct qmgr_shaperules *rs,
                                                   const struct qmgr_shaperule_reply *reply)
{
    if (rs == NULL || rs->n == 0)
        return NULL;
    struct norm_reply nr = { 0, { -1, -1, -1 }, BUF_INIT };
    char enh[16];
    bclass_split_reply(reply->text, &nr.code, enh, &nr.text);
    if (reply->code)
        nr.code = reply->code;
    split_enhanced(reply->enhanced && *reply->enhanced ? reply->enhanced : enh, nr.dsn);
    const struct qmgr_shaperule *hit = NULL;
    for (size_t i = 0; i < rs->n && hit == NULL; i++)
        if (rule_matches(&rs->v[i], reply, &nr))
            hit = &rs->v[i].pub;
    buf_destroy(&nr.text);
    return hit;
}

/* ---------------------------------------------------------------- reasons */

/* Append text to out, starting a new line where the agent joined the
 * reply's lines with one space: before each " CCC-" (CCC the reply code)
 * and, when the reply started with "CCC-", before the first " CCC " after
 * them (the last line). A one-line reply is left alone, whatever numbers
 * its text holds. */
static void put_relined(buf_t *out, const char *s, size_t n, const char code[3])
{
    int multi = n > 3 && s[3] == '-', last_seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (multi && !last_seen && s[i] == ' ' && i + 4 < n && memcmp(s + i + 1, code, 3) == 0 &&
            (s[i + 4] == '-' || s[i + 4] == ' ')) {
            last_seen = s[i + 4] == ' ';
            buf_putc(out, '\n');
            continue;
        }
        buf_putc(out, s[i]);
    }
}

int qmgr_shaperules_split_reason(const char *reason, buf_t *host, buf_t *reply)
{
    static const char said[] = " said: ", tail[] = " (in reply to ";
    buf_set(host, "");
    buf_set(reply, reason ? reason : "");
    if (reason == NULL || strncmp(reason, "host ", 5) != 0)
        return 0;
    const char *h = reason + 5, *p = strstr(h, said);
    if (p == NULL)
        return 0;
    size_t hn = strcspn(h, "[ ");
    const char *text = p + sizeof said - 1;
    const char *end = strstr(text, tail);
    size_t n = end ? (size_t)(end - text) : strlen(text);
    if (n < 3 || !isdigit((unsigned char)text[0]) || !isdigit((unsigned char)text[1]) ||
        !isdigit((unsigned char)text[2]))
        return 0;
    buf_set(host, "");
    buf_append(host, h, hn);
    buf_set(reply, "");
    put_relined(reply, text, n, text);
    return 1;
}

/* ---------------------------------------------------------------- describing */

void qmgr_shaperules_format_secs(long long secs, buf_t *out)
{
    static const struct {
        char unit;
        long long secs;
    } units[] = { { 'd', 86400 }, { 'h', 3600 }, { 'm', 60 }, { 's', 1 } };
    buf_set(out, "");
    if (secs <= 0) {
        buf_set(out, "0s");
        return;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (secs >= units[i].secs) {
            buf_printf(out, "%lld%c", secs / units[i].secs, units[i].unit);
            secs %= units[i].secs;
        }
    }
}

void qmgr_shaperules_describe(const struct qmgr_shaperule *r, buf_t *out)
{
    buf_t d = BUF_INIT;
    qmgr_shaperules_format_secs(r->secs, &d);
    switch (r->action) {
    case SHAPERULE_SUSPEND:
        buf_setf(out, "suspended for %s", buf_str(&d));
        break;
    case SHAPERULE_SUSPEND_SOURCE:
        buf_setf(out, "suspended source for %s", buf_str(&d));
        break;
    case SHAPERULE_RATE:
        buf_setf(out, "rate %lld/%c for %s", r->rate_n, r->rate_unit, buf_str(&d));
        break;
    case SHAPERULE_CONNECTIONS:
        buf_setf(out, "connections %d for %s", r->conns, buf_str(&d));
        break;
    case SHAPERULE_BOUNCE:
        buf_set(out, "bounce queued");
        break;
    }
    buf_destroy(&d);
}
