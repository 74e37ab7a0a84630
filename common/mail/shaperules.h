/* shaperules.h - adaptive throttling: what to do when a site pushes back.
 *
 * The large mailbox providers say in words when a sender goes too fast
 * ("421 4.7.28 ... unusual rate", "[TSS04]", "4.7.500 Server busy"). The
 * rules in the shaping_rules file map such a reply to an action on the
 * site (qmgr's unit of scheduling) for a time; qmgr runs them on every
 * deferred or failed delivery. First matching rule wins. A rule is one line:
 *
 *     # action       duration  conditions (all must hold; text= comes last)
 *     rate=300/h     30m       code=421 dsn=4.7.28 text=unusual rate
 *     suspend        1h        text=\[TSS04\]
 *     connections=2  15m       mx=.mail.protection.outlook.com dsn=4.7.5xx
 *     bounce         -         site=example text=no such domain
 *
 * Actions:
 *   suspend          no delivery to the site for the duration
 *   suspend_source   no delivery to the site from the source address that
 *                    got the reply (other source addresses go on)
 *   rate=N/UNIT      at most N messages per s, m, h or d for the duration
 *   connections=N    at most N connections for the duration (N >= 1)
 *   bounce           return what is queued for the site to its senders
 *                    (duration "-": it happens once)
 * Duration: a number with s, m, h, d or w (30m, 2h; a bare number is
 * seconds), at most 7 days; "-" only with bounce.
 * Conditions:
 *   code=   reply code or class: three characters, digits or x (421, 4xx)
 *   dsn=    enhanced status code; each component a number, * for any, or a
 *           pattern of digits and x ("4.7.28", "4.7.*", "4.7.5xx" covers
 *           4.7.500-4.7.599)
 *   site=   the site's name (case-insensitive)
 *   mx=     MX host name, exact or, with a leading dot, a suffix
 *           (".google.com" covers "alt1.aspmx.l.google.com")
 *   text=   POSIX extended regular expression, case-insensitive, the rest
 *           of the line, matched against the reply text without its codes,
 *           lines joined by one space (as in bounce_classifier_rules)
 * Blank lines and lines starting with # are ignored. A rule needs at least
 * one of code=, dsn= and text=, so a scope alone never throttles a site on
 * every deferral. */
#ifndef POSTINO_SHAPERULES_H
#define POSTINO_SHAPERULES_H

#include "common/util/buf.h"

enum shaperule_action {
    SHAPERULE_SUSPEND,
    SHAPERULE_SUSPEND_SOURCE,
    SHAPERULE_RATE,
    SHAPERULE_CONNECTIONS,
    SHAPERULE_BOUNCE,
};

/* One parsed rule, as the caller needs it to act. */
struct shaperule {
    enum shaperule_action action;
    double per_sec;   /* SHAPERULE_RATE: messages per second */
    long long rate_n; /* SHAPERULE_RATE: N of "N/unit", for messages */
    char rate_unit;   /* SHAPERULE_RATE: 's', 'm', 'h' or 'd' */
    int conns;        /* SHAPERULE_CONNECTIONS */
    long long secs;   /* duration; 0 for bounce */
    const char *file; /* where it was read, for log lines */
    int line;
};

/* A reply and where it came from. site, mx and enhanced may be NULL; code
 * 0 and a NULL enhanced are taken from the text when it carries them. */
struct shaperule_reply {
    int code;
    const char *enhanced; /* "4.7.28" */
    const char *text;     /* as the peer sent it, lines joined by "\n" */
    const char *site;
    const char *mx;
};

struct shaperules;

/* Read a rules file into a new set, or NULL with err "FILE, line N: what is
 * wrong" (or "FILE: cannot open: ..."). NULL or "" path: an empty set. */
struct shaperules *shaperules_load(const char *path, buf_t *err);
/* The file named by the shaping_rules parameter (start and reload). */
struct shaperules *shaperules_load_conf(buf_t *err);
void shaperules_free(struct shaperules *rs);
size_t shaperules_count(const struct shaperules *rs);

/* The first rule matching the reply, or NULL. The pointer stays valid
 * while the set lives. */
const struct shaperule *shaperules_match(const struct shaperules *rs,
                                         const struct shaperule_reply *reply);

/* The remote reply inside a delivery agent's reason, "host mx.example.com
 * [192.0.2.1] said: 421-4.7.28 first 421 4.7.28 last (in reply to RCPT TO
 * command)": the host name into host, the reply into reply with its lines
 * separated by "\n" again ("421-4.7.28 first\n421 4.7.28 last"); also
 * "host mx.example.com[192.0.2.1] refused to talk to me: 421 ...", a reply
 * to the greeting. 1 when the reason has that form; 0 otherwise (host
 * empty, reply the whole reason). */
int shaperules_split_reason(const char *reason, buf_t *host, buf_t *reply);

/* What a rule does, for log lines and "postino site list": "suspended for
 * 1h", "rate 300/h for 30m", "connections 2 for 15m", "bounce queued",
 * "suspended source for 1h" (replaces out's contents). */
void shaperules_describe(const struct shaperule *r, buf_t *out);
/* A duration as the rules write it: "30m", "1h30m", "45s". */
void shaperules_format_secs(long long secs, buf_t *out);

#endif
