/* fuzz_addr.c - libFuzzer harness for common/addr.c: what smtpd makes of
 * the envelope text a client sends (paths, ESMTP parameters, domains,
 * xtext). Beyond "no crash" it checks the invariants callers rely on:
 * a parsed path fits RFC 5321 limits and has no control characters, a
 * parsed domain is valid, parameters make progress, xtext round-trips. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/mail/addr.h"
#include "common/util/alloc.h"
#include "common/util/log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init("fuzz_addr");
    log_open("/dev/null");
    return 0;
}

/* The ESMTP parameter loop as smtpd runs it: it must end and make progress. */
static void check_params(const char *params)
{
    buf_t name = BUF_INIT, value = BUF_INIT;
    const char *p = params;
    while (addr_next_param(&p, &name, &value) == ADDR_PARAM_FOUND) {
        if (name.len == 0)
            abort();
        for (size_t i = 0; i < value.len; i++)
            if ((unsigned char)value.data[i] < 33 || (unsigned char)value.data[i] > 126)
                abort();
        buf_t dec = BUF_INIT;
        (void)xtext_decode(buf_str(&value), &dec); /* as ENVID / ORCPT do */
        buf_destroy(&dec);
    }
    buf_destroy(&name);
    buf_destroy(&value);
}

/* A successfully parsed path: length, characters, domain, params. */
static void check_path(const char *arg, const buf_t *addr, const char *params)
{
    if (addr->len > 256 || strlen(buf_str(addr)) != addr->len)
        abort();
    for (size_t i = 0; i < addr->len; i++)
        if ((unsigned char)addr->data[i] < 0x20 || (unsigned char)addr->data[i] == 0x7f)
            abort();
    if (params < arg || params > arg + strlen(arg))
        abort();
    buf_t local = BUF_INIT, domain = BUF_INIT;
    if (addr_split(buf_str(addr), &local, &domain) == 0 && addr->len > 0) {
        /* addr_parse_path validated the domain; addr_split must agree. */
        if (!addr_domain_valid_utf8(buf_str(&domain)))
            abort();
        (void)addr_domain_fqdn(buf_str(&domain));
    }
    buf_destroy(&local);
    buf_destroy(&domain);
    check_params(params);
}

static void check_xtext(const char *s)
{
    buf_t d1 = BUF_INIT, e = BUF_INIT, d2 = BUF_INIT;
    /* Anything encoded decodes back to itself. */
    xtext_encode(s, &e);
    if (xtext_decode(buf_str(&e), &d2) != 0 || strcmp(buf_str(&d2), s) != 0)
        abort();
    /* Anything that decodes re-encodes to something decoding the same. */
    if (xtext_decode(s, &d1) == 0) {
        buf_reset(&e);
        xtext_encode(buf_str(&d1), &e);
        if (xtext_decode(buf_str(&e), &d2) != 0 || d1.len != d2.len ||
            memcmp(buf_str(&d1), buf_str(&d2), d1.len) != 0)
            abort();
    }
    buf_destroy(&d1);
    buf_destroy(&e);
    buf_destroy(&d2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = xstrndup((const char *)data, size); /* stops at a NUL, like a line */
    buf_t addr = BUF_INIT;
    for (int mode = 0; mode < 4; mode++) {
        const char *params = NULL, *err = NULL;
        if (addr_parse_path(s, mode & 1, (mode >> 1) & 1, &addr, &params, &err) == 0)
            check_path(s, &addr, params);
        else if (err == NULL)
            abort(); /* a failure must say why: it goes into the 501 reply */
    }
    check_params(s);
    (void)addr_domain_valid(s);
    (void)addr_domain_valid_utf8(s);
    buf_t local = BUF_INIT, domain = BUF_INIT;
    (void)addr_split(s, &local, &domain);
    addr_domain(s, &domain);
    check_xtext(s);
    buf_destroy(&local);
    buf_destroy(&domain);
    buf_destroy(&addr);
    free(s);
    return 0;
}
