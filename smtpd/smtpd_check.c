/* smtpd_check.c - relay control: who may send where.
 *
 * A client inside mynetworks may relay to any domain; anyone else may only
 * send to domains we accept mail for (mydestination, relay_domains). This is
 * the fixed core of Postfix's default smtpd_relay_restrictions
 * (permit_mynetworks, reject_unauth_destination); smtpd_check_rcpt() is
 * where restriction lists (permit_sasl_authenticated, access maps) will be
 * evaluated later. Address tricks that could make a downstream host relay
 * ("a%b@us", "b!a@us", "\"a@b\"@us", source routes) are refused for
 * untrusted clients outright. */
#include "smtpd/smtpd.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "common/addr.h"
#include "common/alloc.h"
#include "common/conf.h"
#include "common/log.h"

struct cidr {
    int family;            /* AF_INET or AF_INET6 */
    unsigned char a[16];
    int bits;
};

/* Parse "1.2.3.4", "10.0.0.0/8", "[::1]/128", "[2001:db8::]/32", "::1".
 * Returns 0 or -1. */
static int cidr_parse(const char *s, struct cidr *c)
{
    char host[128];
    const char *slash = strrchr(s, '/');
    size_t hl = slash ? (size_t)(slash - s) : strlen(s);
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
        s++;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof(host))
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (inet_pton(AF_INET, host, c->a) == 1) {
        c->family = AF_INET;
        c->bits = 32;
    } else if (inet_pton(AF_INET6, host, c->a) == 1) {
        c->family = AF_INET6;
        c->bits = 128;
    } else {
        return -1;
    }
    if (slash) {
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (!slash[1] || *end || b < 0 || b > c->bits)
            return -1;
        c->bits = (int)b;
    }
    return 0;
}

static int cidr_match(const struct cidr *c, int family, const unsigned char *a)
{
    if (family != c->family)
        return 0;
    int full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(a, c->a, (size_t)full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[full] & mask) == (c->a[full] & mask);
}

/* Client address text to bytes; v4-mapped IPv6 counts as IPv4. */
static int addr_bytes(const char *addr, unsigned char a[16])
{
    if (inet_pton(AF_INET, addr, a) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, addr, a) != 1)
        return -1;
    static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (memcmp(a, mapped, 12) == 0) {
        memmove(a, a + 12, 4);
        return AF_INET;
    }
    return AF_INET6;
}

/* Is addr inside any network of list parameter `param`? */
static int addr_in_list(const char *param, const char *addr)
{
    unsigned char a[16];
    int family = addr_bytes(addr, a);
    if (family < 0)
        return 0;
    char **v = conf_list(param);
    int found = 0;
    for (size_t i = 0; v[i] && !found; i++) {
        struct cidr c;
        if (strncmp(v[i], "hash:", 5) == 0)
            continue; /* lookup tables: not yet */
        if (cidr_parse(v[i], &c) == 0)
            found = cidr_match(&c, family, a);
    }
    strv_free(v);
    return found;
}

static void validate_list(const char *param)
{
    char **v = conf_list(param);
    for (size_t i = 0; v[i]; i++) {
        struct cidr c;
        if (strncmp(v[i], "hash:", 5) != 0 && cidr_parse(v[i], &c) < 0)
            log_fatal("parameter %s: bad network \"%s\" (use address or address/bits, "
                      "IPv6 as [addr]/bits)",
                      param, v[i]);
    }
    strv_free(v);
}

void smtpd_check_init(void)
{
    validate_list("mynetworks");
    validate_list("smtpd_forbid_bare_newline_exclusions");
}

int smtpd_check_mynetworks(const char *addr)
{
    return addr_in_list("mynetworks", addr);
}

int smtpd_check_bare_exempt(const char *addr)
{
    return addr_in_list("smtpd_forbid_bare_newline_exclusions", addr);
}

/* Exact (case-insensitive) match, or ".example.com" matching subdomains. */
static int domain_in_list(const char *param, const char *domain)
{
    char **v = conf_list(param);
    int found = 0;
    for (size_t i = 0; v[i] && !found; i++) {
        const char *e = v[i];
        if (e[0] == '.')
            found = str_iendswith(domain, e) && strlen(domain) > strlen(e);
        else
            found = str_ieq(domain, e);
    }
    strv_free(v);
    return found;
}

/* Local part with '@', '%' or '!' (quoted or not) could be re-routed by a
 * host behind us. */
static int local_tricky(const char *local)
{
    return strpbrk(local, "@%!") != NULL;
}

int smtpd_check_rcpt(struct smtpd_session *s, const char *rcpt, int source_routed, buf_t *reply)
{
    if (smtpd_check_mynetworks(s->addr))
        return 0;
    buf_t local = BUF_INIT, domain = BUF_INIT;
    int rc = 0;
    if (addr_split(rcpt, &local, &domain) < 0 || source_routed || local_tricky(buf_str(&local))) {
        buf_printf(reply, "550 5.7.1 <%s>: Relay access denied", rcpt);
        rc = -1;
    } else if (!domain_in_list("mydestination", buf_str(&domain)) &&
               !domain_in_list("relay_domains", buf_str(&domain))) {
        buf_printf(reply, "554 5.7.1 <%s>: Relay access denied", rcpt);
        rc = -1;
    }
    buf_free(&local);
    buf_free(&domain);
    return rc;
}
