/* bclass.c - bounce classification: reply code, enhanced status code and
 * reply text to a category, by rules read from text files (see bclass.h
 * for the format).
 *
 * The rules are loaded whole into a new set and swapped in only when every
 * file parsed, so a broken file at reload leaves the running rules alone.
 * The conditions of a rule and the matching are common/mail/replymatch.c's
 * (the shaping rules use the same). */
#include "common/mail/bclass.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mail/conf.h"
#include "common/mail/replymatch.h"
#include "common/util/alloc.h"

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

struct rule {
    enum bclass cat;
    struct replymatch m;
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

static void ruleset_destroy(struct ruleset *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        replymatch_destroy(&rs->v[i].m);
    for (size_t i = 0; i < rs->nfiles; i++)
        free(rs->files[i]);
    free(rs->v);
    free(rs->files);
    memset(rs, 0, sizeof *rs);
}

void bclass_reset(void)
{
    ruleset_destroy(&rules);
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
    return replymatch_parse(s + n, 0, &r->m, why);
}

static void ruleset_add(struct ruleset *rs, const struct rule *r)
{
    rs->v = xgrow(rs->v, &rs->cap, rs->n + 1, sizeof *rs->v);
    rs->v[rs->n++] = *r;
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
    while (rc == 0 && (got = replymatch_read_line(fp, &line)) != 0) {
        lineno++;
        if (got < 0) {
            buf_setf(err, "%s, line %d: line longer than %d bytes or holding a NUL byte", path,
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
            ruleset_destroy(&rs);
            return -1;
        }
    }
    ruleset_destroy(&rules);
    rules = rs;
    return 0;
}

int bclass_init(buf_t *err)
{
    return bclass_load(conf_str("bounce_classifier_local_rules"),
                       conf_str("bounce_classifier_rules"), err);
}

/* ---------------------------------------------------------------- replies */

void bclass_split_reply(const char *reply, int *code, char enh[16], buf_t *out)
{
    replymatch_split_reply(reply, code, enh, out);
}

enum bclass bclass_explain(int code, const char *enhanced, const char *text, struct bclass_match *m)
{
    struct replymatch_reply reply;
    enum bclass cat = BCLASS_OTHER;

    replymatch_reply_init(&reply, code, enhanced, text, NULL, NULL);
    m->file = NULL;
    m->line = 0;
    for (size_t i = 0; i < rules.n; i++) {
        const struct rule *r = &rules.v[i];
        if (!replymatch_test(&r->m, &reply))
            continue;
        cat = r->cat;
        m->file = rules.files[r->file];
        m->line = r->line;
        break;
    }
    replymatch_reply_destroy(&reply);
    return cat;
}

enum bclass bclass_classify(int code, const char *enhanced, const char *text)
{
    struct bclass_match m;
    return bclass_explain(code, enhanced, text, &m);
}
