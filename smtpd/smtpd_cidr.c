/* smtpd_cidr.c - IPv4/IPv6 network matching for client address lists. */
#include "smtpd/smtpd_cidr.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/mail/conf.h"

static const unsigned char v4_mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* A client address ::ffff:a.b.c.d is matched as IPv4 (smtpd_cidr_addr_bytes),
 * so a v4-mapped network of 96 bits or more becomes the IPv4 network it
 * maps; otherwise it could never hold the address it names. */
static void unmap_v4(struct cidr *c)
{
    if (c->family != AF_INET6 || c->bits < 96 || memcmp(c->a, v4_mapped, 12) != 0)
        return;
    memmove(c->a, c->a + 12, 4);
    memset(c->a + 4, 0, 12);
    c->family = AF_INET;
    c->bits -= 96;
}

int smtpd_cidr_parse(const char *s, struct cidr *c)
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
    memset(c->a, 0, sizeof c->a);
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
    unmap_v4(c);
    return 0;
}

int smtpd_cidr_match(const struct cidr *c, int family, const unsigned char *a)
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

int smtpd_cidr_addr_bytes(const char *addr, unsigned char a[16])
{
    memset(a, 0, 16);
    if (inet_pton(AF_INET, addr, a) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, addr, a) != 1)
        return -1;
    if (memcmp(a, v4_mapped, 12) == 0) {
        memmove(a, a + 12, 4);
        memset(a + 4, 0, 12);
        return AF_INET;
    }
    return AF_INET6;
}

int smtpd_cidr_list_match(const char *param, const char *addr)
{
    unsigned char a[16];
    int family = smtpd_cidr_addr_bytes(addr, a);
    if (family < 0)
        return 0;
    char **v = conf_list(param);
    int found = 0;
    for (size_t i = 0; v[i] && !found; i++) {
        struct cidr c;
        if (strncmp(v[i], "hash:", 5) == 0)
            continue; /* lookup tables: not yet */
        if (smtpd_cidr_parse(v[i], &c) == 0)
            found = smtpd_cidr_match(&c, family, a);
    }
    strv_free(v);
    return found;
}

int smtpd_cidr_list_validate(const char *param, buf_t *err)
{
    char **v = conf_list(param);
    int rc = 0;
    for (size_t i = 0; v[i] && rc == 0; i++) {
        struct cidr c;
        if (strncmp(v[i], "hash:", 5) != 0 && smtpd_cidr_parse(v[i], &c) < 0) {
            buf_reset(err);
            buf_printf(err,
                       "parameter %s: bad network \"%s\" (use address or address/bits, "
                       "IPv6 as [addr]/bits)",
                       param, v[i]);
            rc = -1;
        }
    }
    strv_free(v);
    return rc;
}
