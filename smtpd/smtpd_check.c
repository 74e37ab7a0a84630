/* smtpd_check.c - the facts restrictions are decided on: client networks,
 * our own domains, access tables and address tricks.
 *
 * Network lists are smtpd_cidr.c; this file adds what is specific to
 * smtpd: our own domains (address classes, common/glue/addrclass), the address forms that a
 * host behind us could re-route (so they are never relayed for untrusted
 * clients) and Postfix's access-table lookup order for addresses and
 * clients. Tables are opened once per process and kept (dict.c notices a
 * rebuilt table by itself). */
#include "smtpd/smtpd.h"

#include <stdlib.h>
#include <string.h>

#include "common/mail/addr.h"
#include "common/util/alloc.h"
#include "smtpd/smtpd_cidr.h"
#include "common/mail/conf.h"
#include "common/mail/feedback_dom.h"
#include "common/glue/dict.h"
#include "common/glue/addrclass.h"
#include "common/util/log.h"

#define TABLES_MAX 32

static struct {
    char *spec;
    struct dict *d;
} tables[TABLES_MAX];
static size_t ntables;

static void validate_list(const char *param)
{
    buf_t err = BUF_INIT;
    if (smtpd_cidr_list_validate(param, &err) < 0)
        log_fatal("%s", buf_str(&err));
    buf_destroy(&err);
}

void smtpd_check_init(void)
{
    buf_t err = BUF_INIT;
    if (addrclass_validate(&err) < 0)
        log_fatal("%s", buf_str(&err));
    buf_destroy(&err);
    validate_list("mynetworks");
    validate_list("smtpd_forbid_bare_newline_exclusions");
    smtpd_restrict_init();
    smtpd_verp_init();
    smtpd_prio_init();
}

int smtpd_check_mynetworks(const char *addr)
{
    return smtpd_cidr_list_match("mynetworks", addr);
}

int smtpd_check_bare_exempt(const char *addr)
{
    return smtpd_cidr_list_match("smtpd_forbid_bare_newline_exclusions", addr);
}

/* A table failure counts as ours here: the recipient check that follows
 * answers it with 451 (never relay for anyone because of it). */
int smtpd_check_local_domain(const char *domain)
{
    return addrclass_of(domain) != ADDRCLASS_DEFAULT || feedback_dom_match(domain);
}

/* Local part with '@', '%' or '!' (quoted or not) could be re-routed by a
 * host behind us; so could an address without a proper domain. */
int smtpd_check_tricky(const char *addr)
{
    buf_t local = BUF_INIT, domain = BUF_INIT;
    int bad = addr_split(addr, &local, &domain) < 0 || domain.len == 0 ||
              strpbrk(buf_str(&local), "@%!") != NULL;
    buf_destroy(&local);
    buf_destroy(&domain);
    return bad;
}

struct dict *smtpd_table(const char *spec)
{
    for (size_t i = 0; i < ntables; i++)
        if (strcmp(tables[i].spec, spec) == 0)
            return tables[i].d;
    buf_t err = BUF_INIT;
    struct dict *d = dict_open(spec, &err);
    if (!d) {
        log_warn("%s: table lookup problem: %s", spec, buf_str(&err));
        buf_destroy(&err);
        return NULL;
    }
    buf_destroy(&err);
    if (ntables == TABLES_MAX)
        log_fatal("more than %d different lookup tables in the smtpd restrictions", TABLES_MAX);
    tables[ntables].spec = xstrdup(spec);
    tables[ntables].d = d;
    ntables++;
    return d;
}

void smtpd_check_done(void)
{
    for (size_t i = 0; i < ntables; i++) {
        dict_close(tables[i].d);
        free(tables[i].spec);
    }
    ntables = 0;
    addrclass_done();
}

/* dict_lookup: 1 found, 0 not found, -1 table error. */
enum smtpd_lookup smtpd_lookup(struct dict *t, const char *key, buf_t *value)
{
    int rc = dict_lookup(t, key, value);
    return rc > 0 ? SMTPD_LOOKUP_FOUND : rc == 0 ? SMTPD_LOOKUP_NONE : SMTPD_LOOKUP_ERROR;
}

/* Try one key; found or a table error ends the search. */
static int try_key(struct dict *t, const char *key, buf_t *value, enum smtpd_lookup *rc)
{
    *rc = smtpd_lookup(t, key, value);
    return *rc != SMTPD_LOOKUP_NONE;
}

enum smtpd_lookup smtpd_access_addr(struct dict *t, const char *addr, buf_t *value)
{
    enum smtpd_lookup rc = SMTPD_LOOKUP_NONE;
    if (!*addr)
        return smtpd_lookup(t, "<>", value);
    if (try_key(t, addr, value, &rc))
        return rc;
    buf_t local = BUF_INIT, domain = BUF_INIT;
    if (addr_split(addr, &local, &domain) == 0 && domain.len) {
        /* "domain", then parents "example.com" and ".example.com" */
        const char *d = buf_str(&domain);
        if (!try_key(t, d, value, &rc)) {
            for (const char *p = strchr(d, '.'); p && rc == SMTPD_LOOKUP_NONE;
                 p = strchr(p + 1, '.')) {
                if (!try_key(t, p + 1, value, &rc))
                    try_key(t, p, value, &rc);
            }
        }
        if (rc == SMTPD_LOOKUP_NONE) {
            buf_putc(&local, '@');
            try_key(t, buf_str(&local), value, &rc);
        }
    }
    buf_destroy(&local);
    buf_destroy(&domain);
    return rc;
}

enum smtpd_lookup smtpd_access_client(struct dict *t, const char *name, const char *addr,
                                      buf_t *value)
{
    enum smtpd_lookup rc = SMTPD_LOOKUP_NONE;
    if (strcmp(name, "unknown") != 0 && try_key(t, name, value, &rc))
        return rc;
    char *a = xstrdup(addr);
    char sep = strchr(a, ':') ? ':' : '.';
    /* "1.2.3.4", "1.2.3", "1.2", "1" (IPv6: by ':' groups) */
    while (*a && !try_key(t, a, value, &rc)) {
        char *cut = strrchr(a, sep);
        if (!cut)
            break;
        *cut = '\0';
    }
    free(a);
    return rc;
}
