/* addr.h - RFC 5321 mailbox paths, domains and RFC 3461 xtext.
 *
 * smtpd never expands or interprets envelope data: these functions only
 * validate, split and normalise it. */
#ifndef POSTINO_ADDR_H
#define POSTINO_ADDR_H

#include <stddef.h>
#include "common/util/buf.h"

/* Parse the argument of MAIL FROM: / RCPT TO: (the text after the colon,
 * leading spaces allowed): "<path>" optionally followed by " PARAM[=VALUE]..."
 * The path may hold UTF-8 (RFC 6531), which must be well-formed and free
 * of control characters; the caller decides whether SMTPUTF8 allows it.
 * Accepts "<>" (null path) when allow_null. A source route "<@a,@b:u@d>"
 * is stripped to "u@d" (RFC 5321 4.1.2 says accept and ignore it). Quoted
 * local parts are kept quoted. Without angle brackets the address is
 * rejected (strict) unless allow_bare. Output: the address without
 * brackets in addr (""=null path); *params points into arg at the first
 * parameter (or at ""). Returns 0, or -1 with *err a short reason
 * suitable after "501 5.1.7 " / "501 5.1.3 ". Length limits: local part
 * 64, domain 255, path 256 (RFC 5321 4.5.3.1). */
int addr_parse_path(const char *arg, int allow_null, int allow_bare, buf_t *addr,
                    const char **params, const char **err);

/* Split "local@domain" at the last '@' outside quotes. domain is lower-cased.
 * Returns 0, or -1 when there is no domain part. */
int addr_split(const char *addr, buf_t *local, buf_t *domain);
/* Lower-cased domain of addr into out; "" when none. */
void addr_domain(const char *addr, buf_t *out);
/* Syntax check of an ASCII domain name or address literal "[1.2.3.4]". */
int addr_domain_valid(const char *domain);
/* The same, also allowing U-labels (RFC 6531: UTF-8, well-formed, no
 * control characters, at most 63 characters a label, 255 bytes in all). */
int addr_domain_valid_utf8(const char *domain);
/* Is domain a fully-qualified name (contains a dot, valid, UTF-8 allowed)? */
int addr_domain_fqdn(const char *domain);
/* No byte >= 0x80 in s (an address that needs no SMTPUTF8)? */
int addr_is_ascii(const char *s);
/* What addr_next_param found (the values of its former int result). */
enum addr_param {
    ADDR_PARAM_MALFORMED = -1,
    ADDR_PARAM_END = 0,
    ADDR_PARAM_FOUND = 1, /* name and value set (value "" if none) */
};
/* Parse next "NAME=VALUE" / "NAME" from a parameter string; *p advances. */
enum addr_param addr_next_param(const char **p, buf_t *name, buf_t *value);

/* RFC 3461 xtext: "+XX" escapes. decode replaces out and returns -1 when
 * malformed (also for +00); encode appends to out. */
int xtext_decode(const char *s, buf_t *out);
void xtext_encode(const char *s, buf_t *out);

#endif
