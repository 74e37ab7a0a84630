/* smtpd_prio.c - the priority class of a message, decided at reception
 * (issue #9; common/mail/prio.h has the classes).
 *
 * Why here: the class must survive in the queue file (qmgr schedules by
 * it, "postino queue show" shows it), and smtpd is where all three
 * sources are known. First match wins:
 *   1. the priority_header field the injector set (smtpd removed it from
 *      the content while storing it, like the pool header);
 *   2. sender_dependent_priority_maps: "sasl:LOGIN", the sender address,
 *      "@domain" (the first key found in any table wins, as with
 *      sender_verp_maps);
 *   3. smtpd_default_priority (a master.cf -o override on the submission
 *      service: "everything injected here is transactional").
 * A name that is no class is logged and skipped. Bulk is not recorded:
 * a queue file without "priority=" is bulk. */
#include "smtpd/smtpd.h"

#include <string.h>

#include "common/glue/dict.h"
#include "common/mail/addr.h"
#include "common/mail/conf.h"
#include "common/mail/prio.h"
#include "common/util/log.h"

#define PRIO_KEYS 3

void smtpd_prio_init(void)
{
    enum prio_class c;
    if (prio_from_name(conf_str("smtpd_default_priority"), &c) < 0)
        log_fatal("smtpd_default_priority = %s: want bulk or transactional",
                  conf_str("smtpd_default_priority"));
}

/* The map keys of this transaction, most specific first. */
static size_t prio_keys(const struct smtpd_session *s, buf_t keys[PRIO_KEYS])
{
    size_t n = 0;
    buf_t domain = BUF_INIT;

    if (s->sasl_username && *s->sasl_username)
        buf_printf(&keys[n++], "sasl:%s", s->sasl_username);
    if (s->env.sender && *s->env.sender) {
        buf_puts(&keys[n++], s->env.sender);
        addr_domain(s->env.sender, &domain);
        if (domain.len)
            buf_printf(&keys[n++], "@%s", buf_str(&domain));
    }
    buf_destroy(&domain);
    return n;
}

/* sender_dependent_priority_maps: 1 and *c when a key names a class. */
static int prio_by_maps(const struct smtpd_session *s, enum prio_class *c)
{
    char **maps = conf_list("sender_dependent_priority_maps");
    buf_t keys[PRIO_KEYS] = { BUF_INIT, BUF_INIT, BUF_INIT }, val = BUF_INIT;
    size_t nkeys = maps[0] ? prio_keys(s, keys) : 0;
    int found = 0;

    for (size_t k = 0; k < nkeys && !found; k++)
        for (size_t i = 0; maps[i] && !found; i++) {
            struct dict *t = smtpd_table(maps[i]);
            enum smtpd_lookup rc =
                t ? smtpd_lookup(t, buf_str(&keys[k]), &val) : SMTPD_LOOKUP_ERROR;
            if (rc == SMTPD_LOOKUP_ERROR)
                log_warn("sender_dependent_priority_maps: %s: table lookup problem", maps[i]);
            else if (rc == SMTPD_LOOKUP_FOUND && prio_from_name(buf_str(&val), c) < 0)
                log_warn("sender_dependent_priority_maps: %s: \"%s\" is no priority class",
                         buf_str(&keys[k]), buf_str(&val));
            else if (rc == SMTPD_LOOKUP_FOUND)
                found = 1;
        }
    for (size_t k = 0; k < PRIO_KEYS; k++)
        buf_destroy(&keys[k]);
    buf_destroy(&val);
    strv_free(maps);
    return found;
}

const char *smtpd_prio_class(const struct smtpd_session *s, const char *header)
{
    enum prio_class c = PRIO_BULK;

    if (header && prio_from_name(header, &c) == 0)
        return c == PRIO_BULK ? NULL : prio_name(c);
    if (header)
        log_warn("%s: %s: \"%.64s\" is no priority class (bulk or transactional); ignored",
                 s->env.id, conf_str("priority_header"), header);
    if (!prio_by_maps(s, &c) && prio_from_name(conf_str("smtpd_default_priority"), &c) < 0)
        c = PRIO_BULK;
    return c == PRIO_BULK ? NULL : prio_name(c);
}
