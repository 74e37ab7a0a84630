/* feedback_dom.h - the bounce (VERP) domains whose mail the feedback
 * consumer reads (parameter feedback_domains, issue #8).
 *
 * smtpd accepts any local part at these domains from anyone (like
 * relay_domains), qmgr routes them to transport "feedback" without a
 * transport_maps entry, and the consumer tells a VERP return address of
 * ours from a sender's. An element "example.com" matches that domain,
 * ".example.com" its subdomains (as relay_domains does). */
#ifndef POSTINO_FEEDBACK_DOM_H
#define POSTINO_FEEDBACK_DOM_H

/* Is domain (case-insensitive) one of feedback_domains? */
int feedback_dom_match(const char *domain);
/* Is the domain of addr ("local@domain") one of them? */
int feedback_dom_addr(const char *addr);

#endif
