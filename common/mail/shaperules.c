/* shaperules.c - the shaping_rules file: a remote reply to an action on
 * its site (format in shaperules.h).
 *
 * Pure: reads a file, matches replies, formats descriptions; applying an
 * action to a site is qmgr's business (qmgr_throttle.c); `postino check`
 * loads the file to report what is wrong before a start or reload. A set is built whole and handed to
 * the caller only when every line parsed, so a broken file at reload leaves
 * the running set alone. The conditions and the matching are
 * common/mail/replymatch.c's, as for the bounce classifier, so one pattern
 * means the same in both files. */
#include "common/mail/shaperules.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mail/conf.h"
#include "common/mail/replymatch.h"
#include "common/util/alloc.h"

#define MAX_DURATION (7LL * 86400)
#define MAX_RATE     1000000000LL

struct rule {
    struct shaperule pub;
    struct replymatch m;
};

struct shaperules {
    struct rule *v;
    size_t n, cap;
    char *file;
};

void shaperules_free(struct shaperules *rs)
{
    if (rs == NULL)
        return;
    for (size_t i = 0; i < rs->n; i++)
        replymatch_destroy(&rs->v[i].m);
    free(rs->v);
    free(rs->file);
    free(rs);
}

size_t shaperules_count(const struct shaperules *rs)
{
    return rs ? rs->n : 0;
}

/* ---------------------------------------------------------------- parsing */

/* "300/h" into the rule; -1 when malformed or out of range. */
static int parse_rate(const char *s, struct shaperule *p)
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

static int parse_action(const char *w, struct shaperule *p, buf_t *why)
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

static int parse_duration(const char *w, struct shaperule *p, buf_t *why)
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
    if (replymatch_parse(s, REPLYMATCH_SCOPE, &r->m, why) < 0)
        return -1;
    if (!replymatch_tests_reply(&r->m)) {
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
    replymatch_destroy(&r->m);
}

/* Parse each line of fp into rs; 0 or -1 with err. */
static int load_lines(struct shaperules *rs, FILE *fp, buf_t *err)
{
    buf_t line = BUF_INIT, why = BUF_INIT;
    int lineno = 0, rc = 0, got;
    while (rc == 0 && (got = replymatch_read_line(fp, &line)) != 0) {
        lineno++;
        if (got < 0) {
            buf_setf(err, "%s, line %d: line longer than %d bytes or holding a NUL byte", rs->file,
                     lineno, REPLYMATCH_LINE_MAX);
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

struct shaperules *shaperules_load(const char *path, buf_t *err)
{
    struct shaperules *rs = xcalloc(1, sizeof *rs);
    rs->file = xstrdup(path ? path : "");
    if (path == NULL || *path == 0)
        return rs;
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        buf_setf(err, "%s: cannot open: %s", path, strerror(errno));
        shaperules_free(rs);
        return NULL;
    }
    int rc = load_lines(rs, fp, err);
    fclose(fp);
    if (rc < 0) {
        shaperules_free(rs);
        return NULL;
    }
    return rs;
}

struct shaperules *shaperules_load_conf(buf_t *err)
{
    return shaperules_load(conf_str("shaping_rules"), err);
}

/* ---------------------------------------------------------------- matching */

const struct shaperule *shaperules_match(const struct shaperules *rs,
                                         const struct shaperule_reply *reply)
{
    if (rs == NULL || rs->n == 0)
        return NULL;
    struct replymatch_reply nr;
    replymatch_reply_init(&nr, reply->code, reply->enhanced, reply->text, reply->site, reply->mx);
    const struct shaperule *hit = NULL;
    for (size_t i = 0; i < rs->n && hit == NULL; i++)
        if (replymatch_test(&rs->v[i].m, &nr))
            hit = &rs->v[i].pub;
    replymatch_reply_destroy(&nr);
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

int shaperules_split_reason(const char *reason, buf_t *host, buf_t *reply)
{
    /* "said:" to a command; "refused to talk to me:" is the greeting */
    static const char said[] = " said: ", greeting[] = " refused to talk to me: ",
                      tail[] = " (in reply to ";
    buf_set(host, "");
    buf_set(reply, reason ? reason : "");
    if (reason == NULL || strncmp(reason, "host ", 5) != 0)
        return 0;
    const char *h = reason + 5, *p = strstr(h, said), *text;
    if (p != NULL)
        text = p + sizeof said - 1;
    else if ((p = strstr(h, greeting)) != NULL)
        text = p + sizeof greeting - 1;
    else
        return 0;
    size_t hn = strcspn(h, "[ ");
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

void shaperules_format_secs(long long secs, buf_t *out)
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

void shaperules_describe(const struct shaperule *r, buf_t *out)
{
    buf_t d = BUF_INIT;
    shaperules_format_secs(r->secs, &d);
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
