/* smtpd_cidr.h - IPv4/IPv6 network matching for client address lists
 * (mynetworks-style parameters: "127.0.0.0/8 [::1]/128 192.0.2.7").
 * Written for the anvil limit exceptions; generic enough for smtpd's
 * mynetworks checks too. */
#ifndef POSTINO_SMTPD_CIDR_H
#define POSTINO_SMTPD_CIDR_H

#include "common/util/buf.h"

struct cidr {
    int family; /* AF_INET or AF_INET6 */
    unsigned char a[16];
    int bits;
};

/* Parse "1.2.3.4", "10.0.0.0/8", "[::1]/128", "[2001:db8::]/32", "::1".
 * A v4-mapped network of at least 96 bits ("[::ffff:10.0.0.0]/104") is
 * stored as the IPv4 network it maps (10.0.0.0/8). Returns 0 or -1. */
int smtpd_cidr_parse(const char *s, struct cidr *c);
/* Client address text to bytes; v4-mapped IPv6 counts as IPv4. Returns
 * AF_INET, AF_INET6, or -1 when addr is not a numeric address. */
int smtpd_cidr_addr_bytes(const char *addr, unsigned char a[16]);
int smtpd_cidr_match(const struct cidr *c, int family, const unsigned char *a);
/* Is addr inside any network of list parameter `param`? Lookup table
 * elements ("hash:...") and unparsable ones are skipped. */
int smtpd_cidr_list_match(const char *param, const char *addr);
/* Check every element of list parameter `param`; returns 0, or -1 with a
 * message naming the bad element in err. */
int smtpd_cidr_list_validate(const char *param, buf_t *err);

#endif
