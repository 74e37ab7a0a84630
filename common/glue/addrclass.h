/* addrclass.h - Postfix's address classes: which class a recipient
 * domain is in, whether the recipient exists, virtual alias rewriting.
 *
 * Classes, in Postfix's order of precedence: local (mydestination),
 * virtual alias (virtual_alias_domains), virtual mailbox
 * (virtual_mailbox_domains), relay (relay_domains), else default. A
 * domain list element is a domain, ".domain" (its subdomains) or a table
 * "type:name" in which the domain is looked up as a key. Shared by smtpd
 * (RCPT checks, alias rewriting) and qmgr (routing by class). Tables are
 * opened on first use and kept until addrclass_done(). */
#ifndef POSTINO_ADDRCLASS_H
#define POSTINO_ADDRCLASS_H

#include "common/util/buf.h"

enum addrclass {
    ADDRCLASS_ERROR = -1, /* a table could not be read (logged) */
    ADDRCLASS_DEFAULT = 0,
    ADDRCLASS_LOCAL,
    ADDRCLASS_VIRTUAL_ALIAS,
    ADDRCLASS_VIRTUAL_MAILBOX,
    ADDRCLASS_RELAY,
};

/* Does a recipient exist in its class's tables? */
enum addrclass_known {
    ADDRCLASS_TEMPFAIL = -1, /* a table could not be read: answer 4xx */
    ADDRCLASS_UNKNOWN = 0,   /* reply set to Postfix's "User unknown in ..." */
    ADDRCLASS_KNOWN = 1,
};

/* Outcome of virtual alias expansion. */
enum addrclass_expand {
    ADDRCLASS_EXPAND_TEMPFAIL = -1, /* table error or a limit exceeded; err says */
    ADDRCLASS_EXPAND_NONE = 0,      /* the address is not an alias: kept as is */
    ADDRCLASS_EXPAND_DONE = 1,      /* out holds the final addresses */
};

/* Check the class parameters: a domain listed literally in two class
 * lists is an error naming both parameters. 0, or -1 with err. */
int addrclass_validate(buf_t *err);
/* Read the system's users (for "unix:passwd.byname" in
 * local_recipient_maps) now, before a chroot or privilege drop. */
void addrclass_passwd_load(void);
/* Close the tables and forget the users. */
void addrclass_done(void);

/* The class of a (lower- or mixed-case) domain. */
enum addrclass addrclass_of(const char *domain);
/* Name of the class's transport parameter ("local_transport", ...). */
const char *addrclass_transport_param(enum addrclass c);

/* Is addr (local@domain) a known recipient? virtual_alias_maps first (an
 * alias is known in any class), then the class's own tables. On
 * ADDRCLASS_UNKNOWN or ADDRCLASS_TEMPFAIL, reply holds the full SMTP reply
 * ("550 5.1.1 <addr>: Recipient address rejected: User unknown in local
 * recipient table"). */
enum addrclass_known addrclass_rcpt_known(const char *addr, buf_t *reply);

/* Rewrite addr through virtual_alias_maps, recursively: each address is
 * looked up as "user@domain", then "user" (local domains only), then
 * "@domain"; a result that is the address itself or one of the addresses
 * it came from is kept as is (loop), duplicates are dropped (first
 * kept). Depth above virtual_alias_recursion_limit or more than
 * virtual_alias_expansion_limit addresses is ADDRCLASS_EXPAND_TEMPFAIL.
 * out: NULL-terminated list (strv_free) on ADDRCLASS_EXPAND_DONE. */
enum addrclass_expand addrclass_expand(const char *addr, char ***out, buf_t *err);

/* ---- pure helpers (unit tested) ---- */

/* Does list element elem (not a table) match domain? "example.com"
 * exactly, ".example.com" any subdomain; case-insensitive. */
int addrclass_elem_match(const char *elem, const char *domain);
/* Is a list element a table ("hash:/path", "unix:passwd.byname")? */
int addrclass_elem_is_table(const char *elem);
/* Split local@domain at the last '@'; 0, or -1 when there is none. */
int addrclass_split(const char *addr, buf_t *local, buf_t *domain);

#endif
