/* smtpd_rcpt.c - the recipient side of Postfix's address classes at RCPT.
 *
 * Why here: an unknown user in a domain whose users we know is refused
 * at RCPT (550 5.1.1 "User unknown in ... table"), never accepted and
 * bounced later (backscatter); and virtual_alias_maps are expanded as the
 * recipient is accepted (Postfix's cleanup does it at reception), so the
 * queue file holds the final recipients, each once, with the address the
 * client gave as ORCPT. The class logic itself is common/glue/addrclass. */
#include "smtpd/smtpd.h"

#include <stdlib.h>
#include <string.h>

#include "common/mail/addr.h"
#include "common/glue/addrclass.h"
#include "common/util/log.h"

enum smtpd_outcome smtpd_rcpt_known(struct smtpd_session *s, const char *rcpt, buf_t *reply)
{
    if (addrclass_rcpt_known(rcpt, reply) == ADDRCLASS_KNOWN)
        return SMTPD_PASS;
    smtpd_log_reject(s, "RCPT", buf_str(reply), rcpt);
    return SMTPD_REFUSED;
}

static int env_has(const struct qenv *env, const char *addr)
{
    for (size_t i = 0; i < env->nrcpt; i++)
        if (str_ieq(env->rcpt[i].addr, addr))
            return 1;
    return 0;
}

enum smtpd_outcome smtpd_rcpt_add(struct smtpd_session *s, const char *rcpt, const char *orcpt,
                                  int notify, buf_t *reply)
{
    char **list = NULL;
    buf_t err = BUF_INIT, orig = BUF_INIT;
    enum smtpd_outcome rc = SMTPD_PASS;

    switch (addrclass_expand(rcpt, &list, &err)) {
    case ADDRCLASS_EXPAND_NONE:
        if (!env_has(&s->env, rcpt)) /* Postfix's cleanup drops duplicates */
            qenv_add_rcpt(&s->env, rcpt, orcpt, notify);
        break;
    case ADDRCLASS_EXPAND_DONE:
        if (orcpt == NULL) { /* the address the client gave, as DSNs report it */
            buf_puts(&orig, "rfc822;");
            xtext_encode(rcpt, &orig);
            orcpt = buf_str(&orig);
        }
        for (size_t i = 0; list[i]; i++)
            if (!env_has(&s->env, list[i]))
                qenv_add_rcpt(&s->env, list[i], orcpt, notify);
        strv_free(list);
        break;
    default:
        log_warn("%s: %s", smtpd_client(s), buf_str(&err));
        buf_reset(reply);
        buf_printf(reply, "451 4.3.0 <%s>: Recipient address rejected: alias expansion error",
                   rcpt);
        smtpd_log_reject(s, "RCPT", buf_str(reply), rcpt);
        rc = SMTPD_REFUSED;
        break;
    }
    buf_destroy(&err);
    buf_destroy(&orig);
    return rc;
}
