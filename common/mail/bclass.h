/* bclass.h - why a delivery failed: the bounce category of a reply.
 *
 * Every deferred or failed delivery carries one of the categories below
 * (the names are the ones bulk senders and their tools already use). The
 * category comes from rules in a text file, first match wins:
 *
 *     # category       conditions (all must hold; text= comes last)
 *     bad-mailbox      code=5xx dsn=5.1.1
 *     greylisted       code=4xx text=grey ?list(ed|ing)?
 *
 * code=   reply code or class: three characters, each a digit or x ("5xx",
 *         "421", "55x").
 * dsn=    enhanced status code (RFC 3463) or a pattern of one: three
 *         components, each a number, digits and x, or * ("5.1.1",
 *         "4.7.5xx", "4.7.*", "5.*.*").
 * text=   POSIX extended regular expression, case-insensitive, the rest of
 *         the line. It is matched against the reply text with the reply
 *         code and enhanced code of every line removed and the lines joined
 *         by one space (so a phrase split over lines of a multi-line reply
 *         still matches).
 * The conditions are common/mail/replymatch.h's, as in shaping_rules.
 * Blank lines and lines starting with # are ignored.
 *
 * The rules are process-wide: bounce_classifier_local_rules (optional,
 * read first, so the site's rules win) then bounce_classifier_rules (the
 * shipped file). */
#ifndef POSTINO_BCLASS_H
#define POSTINO_BCLASS_H

#include "common/util/buf.h"

enum bclass {
    BCLASS_OTHER = 0,
    BCLASS_BAD_MAILBOX,
    BCLASS_INACTIVE_MAILBOX,
    BCLASS_BAD_DOMAIN,
    BCLASS_QUOTA_ISSUES,
    BCLASS_SPAM_RELATED,
    BCLASS_POLICY_RELATED,
    BCLASS_CONTENT_RELATED,
    BCLASS_RATE_LIMITED,
    BCLASS_GREYLISTED,
    BCLASS_RELAYING_ISSUES,
    BCLASS_PROTOCOL_ERRORS,
    BCLASS_ROUTING_ERRORS,
    BCLASS_NO_ANSWER_FROM_HOST,
    BCLASS_BAD_CONNECTION,
    BCLASS_MESSAGE_EXPIRED,
};
#define BCLASS_COUNT (BCLASS_MESSAGE_EXPIRED + 1)

/* "bad-mailbox", ...; "other" for anything out of range. */
const char *bclass_name(enum bclass c);
/* Category of a name (case-insensitive): 0, or -1 when unknown. */
int bclass_from_name(const char *name, enum bclass *out);
/* Hard bounce (the address is dead): bad-mailbox, inactive-mailbox,
 * bad-domain. */
int bclass_is_hard(enum bclass c);

/* Load the rules named by bounce_classifier_local_rules and
 * bounce_classifier_rules (process-wide); 0, or -1 with err
 * "FILE, line N: what is wrong" (the rules loaded before stay in force).
 * Call at start and on reload. */
int bclass_init(buf_t *err);
/* Load rules from these files only (NULL or "" skips one); for tests and
 * the CLI. Same result as bclass_init. */
int bclass_load(const char *local_file, const char *file, buf_t *err);
/* Drop the rules (at exit, for leak checks). */
void bclass_reset(void);

/* code: 3-digit reply code or 0; enhanced: "5.1.1" or NULL; text: the
 * whole reply text (multi-line joined with "\n"), with or without the
 * codes at the start of its lines. When code is 0 or enhanced is NULL
 * they are taken from the first line of text if it carries them. First
 * matching rule wins; no match: BCLASS_OTHER. */
enum bclass bclass_classify(int code, const char *enhanced, const char *text);

/* The same, and which rule decided: *file and *line (NULL and 0 when no
 * rule matched). */
struct bclass_match {
    const char *file; /* valid until the next bclass_init/load/reset */
    int line;
};
enum bclass bclass_explain(int code, const char *enhanced, const char *text,
                           struct bclass_match *m);

/* Split a reply as a peer sends it ("550-5.1.1 Gone\n550 5.1.1 Bye"): its
 * code (0 if none), its enhanced code (into enh, "" if none) and the text
 * with the codes removed and lines joined by one space (into out,
 * replacing its contents). Also skips a leading "smtp;" diagnostic type
 * (RFC 3464 Diagnostic-Code). */
void bclass_split_reply(const char *reply, int *code, char enh[16], buf_t *out);

#endif
