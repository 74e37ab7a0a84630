/* fuzz_cidr.c - libFuzzer harness for the network lists of smtpd/smtpd_cidr.c
 * (mynetworks, smtpd_client_event_limit_exceptions,
 * smtpd_forbid_bare_newline_exclusions): main.cf text an admin wrote and
 * client addresses smtpd is handed. The input's first line is a client
 * address, the rest the list's value. Checked, beyond "no crash":
 *   - every element that parses is a sane network, prints and parses back
 *     to itself, contains its own address, and contains exactly the
 *     addresses that agree with it on its first `bits` bits;
 *   - an address matches the full-length network of itself;
 *   - smtpd_cidr_list_match is the OR of the elements' matches, and
 *     smtpd_cidr_list_validate fails exactly when an element is bad, naming it.
 * An IPv4 network never matches an IPv6 address and vice versa; a
 * v4-mapped address counts as IPv4 (cidr.h). */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "smtpd/smtpd_cidr.h"
#include "common/mail/conf.h"
#include "common/util/log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char param[] = "mynetworks";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init("fuzz_cidr");
    log_open("/dev/null");
    return 0;
}

static int bit_of(const unsigned char *a, int k)
{
    return (a[k / 8] >> (7 - k % 8)) & 1;
}

/* "addr/bits" as a human would write it back: IPv6 in brackets. */
static void format_net(const struct cidr *c, buf_t *out)
{
    char host[INET6_ADDRSTRLEN];
    if (inet_ntop(c->family, c->a, host, sizeof(host)) == NULL)
        abort();
    buf_reset(out);
    if (c->family == AF_INET6)
        buf_printf(out, "[%s]/%d", host, c->bits);
    else
        buf_printf(out, "%s/%d", host, c->bits);
}

/* Flip each of a few bits of the network address: inside the prefix the
 * result is outside the network, past it the result is inside. */
static void check_prefix(const struct cidr *c, const uint8_t *seed, size_t n)
{
    int len = c->family == AF_INET ? 32 : 128;
    for (size_t i = 0; i < n && i < 8; i++) {
        unsigned char a[16];
        memcpy(a, c->a, 16);
        int k = seed[i] % len;
        a[k / 8] ^= (unsigned char)(0x80 >> (k % 8));
        if (smtpd_cidr_match(c, c->family, a) != (k >= c->bits))
            abort();
        if (smtpd_cidr_match(c, c->family == AF_INET ? AF_INET6 : AF_INET, a))
            abort();
    }
    /* Bits past the prefix never matter, whatever they are. */
    unsigned char a[16];
    memcpy(a, c->a, 16);
    for (int k = c->bits; k < len; k++)
        if (bit_of(c->a, k) == 0)
            a[k / 8] |= (unsigned char)(0x80 >> (k % 8));
    if (!smtpd_cidr_match(c, c->family, a))
        abort();
}

/* One list element; returns whether it matched addr (family fam, bytes a). */
static int check_element(const char *el, int fam, const unsigned char *a, const uint8_t *seed,
                         size_t nseed)
{
    struct cidr c, c2;
    buf_t text = BUF_INIT;
    memset(&c, 0x5a, sizeof(c));
    if (smtpd_cidr_parse(el, &c) < 0)
        return 0;
    if (!((c.family == AF_INET && c.bits >= 0 && c.bits <= 32) ||
          (c.family == AF_INET6 && c.bits >= 0 && c.bits <= 128)))
        abort();
    /* Printed back, it parses to the same network. */
    format_net(&c, &text);
    if (smtpd_cidr_parse(buf_str(&text), &c2) < 0 || c2.family != c.family || c2.bits != c.bits ||
        memcmp(c2.a, c.a, 16) != 0)
        abort();
    /* Its own address (as written, brackets off) is inside it. */
    const char *slash = strrchr(el, '/');
    size_t hl = slash ? (size_t)(slash - el) : strlen(el);
    if (hl >= 2 && el[0] == '[' && el[hl - 1] == ']') {
        el++;
        hl -= 2;
    }
    buf_reset(&text);
    buf_append(&text, el, hl);
    unsigned char own[16];
    int ofam = smtpd_cidr_addr_bytes(buf_str(&text), own);
    if (ofam == c.family) {
        if (!smtpd_cidr_match(&c, ofam, own))
            abort();
    } else if (!(ofam == AF_INET && c.family == AF_INET6 && c.bits < 96)) {
        /* Only a v4-mapped address under an IPv6 prefix shorter than the
         * mapping's 96 bits may land in the other family. */
        abort();
    }
    check_prefix(&c, seed, nseed);
    buf_destroy(&text);
    return fam >= 0 && smtpd_cidr_match(&c, fam, a);
}

static void must_hold(const char *net, int fam, const unsigned char *a)
{
    struct cidr c;
    if (smtpd_cidr_parse(net, &c) < 0 || c.family != fam || c.bits != (fam == AF_INET ? 32 : 128) ||
        !smtpd_cidr_match(&c, fam, a))
        abort();
}

/* The client address: parsed both ways, it is in its own /32 or /128. */
static int check_addr(const char *addr, unsigned char a[16])
{
    int fam = smtpd_cidr_addr_bytes(addr, a);
    if (fam < 0)
        return fam;
    if (fam != AF_INET && fam != AF_INET6)
        abort();
    /* Canonical text gives the same bytes. */
    char host[INET6_ADDRSTRLEN];
    unsigned char b[16];
    if (inet_ntop(fam, a, host, sizeof(host)) == NULL || smtpd_cidr_addr_bytes(host, b) != fam ||
        memcmp(a, b, 16) != 0)
        abort();
    /* The address as written, its canonical /32 or /128 and, when written
     * as IPv6, "[addr]/128" are each a network holding just it. */
    buf_t text = BUF_INIT;
    buf_printf(&text, fam == AF_INET6 ? "[%s]/128" : "%s/32", host);
    must_hold(buf_str(&text), fam, a);
    must_hold(addr, fam, a);
    if (strchr(addr, ':')) {
        buf_reset(&text);
        buf_printf(&text, "[%s]/128", addr);
        must_hold(buf_str(&text), fam, a);
    }
    buf_destroy(&text);
    return fam;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t alen = nl ? (size_t)(nl - data) : size;
    char *addr = xstrndup((const char *)data, alen);
    char *list = nl ? xstrndup((const char *)nl + 1, size - alen - 1) : xstrdup("");
    unsigned char a[16];
    int fam = check_addr(addr, a);

    conf_set(param, list);
    char **v = conf_list(param);
    int any = 0, bad = 0;
    const char *first_bad = NULL;
    struct cidr scratch;
    for (size_t i = 0; v[i]; i++) {
        if (strncmp(v[i], "hash:", 5) == 0)
            continue;
        if (smtpd_cidr_parse(v[i], &scratch) < 0 && !bad++)
            first_bad = v[i];
        any |= check_element(v[i], fam, a, data, size);
    }
    if (smtpd_cidr_list_match(param, addr) != any)
        abort();
    buf_t err = BUF_INIT;
    int rc = smtpd_cidr_list_validate(param, &err);
    if ((rc < 0) != (bad > 0))
        abort();
    if (rc < 0 &&
        (strstr(buf_str(&err), first_bad) == NULL || strstr(buf_str(&err), param) == NULL))
        abort();
    buf_destroy(&err);
    strv_free(v);
    free(addr);
    free(list);
    return 0;
}
