/* replymatch.h - conditions on a remote SMTP reply: the one parser and
 * matcher behind the bounce classifier's rules (bclass.c) and the shaping
 * rules (shaperules.c), so a condition means the same in both files.
 *
 * A condition list is white-space separated words, text= last:
 *
 *     code=421 dsn=4.7.28 site=gmail text=unusual rate
 *
 * code=   reply code or class: three characters, each a digit or x ("5xx",
 *         "421", "55x"), the first 2 to 5.
 * dsn=    enhanced status code (RFC 3463) or a pattern of one: three
 *         components, each a number, a pattern of digits and x ("5xx"
 *         covers 500-599) or * for any; a trailing * covers the missing
 *         components ("4.7.*", "5.*"). The first is 2, 4, 5, x or *.
 * site=   the site's name (case-insensitive)           } only with
 * mx=     MX host name, exact or, with a leading dot,   } REPLYMATCH_SCOPE
 *         a suffix (".google.com")                      }
 * text=   POSIX extended regular expression, case-insensitive, the rest of
 *         the line, matched against the reply text with the reply code and
 *         enhanced code of every line removed and the lines joined by one
 *         space (so a phrase split over lines still matches).
 * A list with no condition matches every reply. */
#ifndef POSTINO_REPLYMATCH_H
#define POSTINO_REPLYMATCH_H

#include <regex.h>
#include <stdio.h>

#include "common/util/buf.h"

/* What a caller's rules may name besides code=, dsn= and text=. */
#define REPLYMATCH_SCOPE 1u /* site= and mx= */

/* One parsed condition list. */
struct replymatch {
    char code[4];   /* "" or three of digit/'x' */
    int has_dsn;    /* dsn[] holds a pattern */
    char dsn[3][4]; /* "*", or 1-3 of digit/'x' */
    char *site, *mx;
    int has_re;
    regex_t re;
};

/* Parse the conditions in s (modified in place) into *m, which must be
 * zeroed. 0, or -1 with why (what is wrong, without file or line); *m is
 * then already released. flags: REPLYMATCH_SCOPE. */
int replymatch_parse(char *s, unsigned flags, struct replymatch *m, buf_t *why);
void replymatch_destroy(struct replymatch *m);
/* Does m test the reply itself (code=, dsn= or text=), not just a scope? */
int replymatch_tests_reply(const struct replymatch *m);

/* A reply normalised once, to be matched against many lists. */
struct replymatch_reply {
    int code;   /* 0 if none */
    int dsn[3]; /* -1 when absent */
    buf_t text; /* codes removed, lines joined */
    const char *site, *mx;
};

/* code: 3-digit reply code or 0; enhanced: "5.1.1" or NULL; text: the
 * whole reply (multi-line joined with "\n"), with or without the codes at
 * the start of its lines: a code or enhanced code not given is taken from
 * it. site and mx may be NULL. */
void replymatch_reply_init(struct replymatch_reply *r, int code, const char *enhanced,
                           const char *text, const char *site, const char *mx);
void replymatch_reply_destroy(struct replymatch_reply *r);
int replymatch_test(const struct replymatch *m, const struct replymatch_reply *r);

/* Split a reply as a peer sends it ("550-5.1.1 Gone\n550 5.1.1 Bye"): its
 * code (0 if none), its enhanced code (into enh, "" if none) and the text
 * with the codes removed and lines joined by one space (into out,
 * replacing its contents). Also skips a leading "smtp;" diagnostic type
 * (RFC 3464 Diagnostic-Code). */
void replymatch_split_reply(const char *reply, int *code, char enh[16], buf_t *out);

/* The rules files' line reader (bounce_classifier_rules, shaping_rules):
 * one line into line, without its newline or a CR before it; 1, 0 at
 * EOF, -1 when longer than REPLYMATCH_LINE_MAX or holding a NUL byte. */
#define REPLYMATCH_LINE_MAX 4096
int replymatch_read_line(FILE *fp, buf_t *line);

#endif
