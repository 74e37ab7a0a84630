/* smtpd_restrict.h - what the restriction engine (smtpd_restrict.c) and the
 * restrictions themselves (smtpd_rules.c) share. Private to smtpd. */
#ifndef POSTINO_SMTPD_RESTRICT_H
#define POSTINO_SMTPD_RESTRICT_H

#include "smtpd/smtpd.h"

/* What a restriction decides. */
enum smtpd_verdict {
    V_DUNNO = 0, /* no opinion: next restriction */
    V_PERMIT,    /* this list says yes */
    V_REJECT,    /* the reply is in ctx->reply */
    V_PENDING,   /* a DNS lookup runs: evaluate again when it is done */
};

/* What a reply is about ("<x>: Sender address rejected: ..."). */
enum smtpd_object { OBJ_CLIENT, OBJ_HELO, OBJ_SENDER, OBJ_RCPT };

struct smtpd_rctx {
    struct smtpd_session *s;
    const char *list;      /* parameter name, for warnings */
    enum smtpd_object obj; /* default object of the list */
    const char *rcpt;      /* NULL before RCPT */
    int source_routed;
    buf_t *reply;
};

struct smtpd_rule {
    const char *name;
    int takes_table; /* the next list element is a "hash:" table */
    enum smtpd_verdict (*fn)(struct smtpd_rctx *c, const char *table);
};

/* smtpd_rules.c: the table, NULL-terminated. */
extern const struct smtpd_rule smtpd_rules[];
/* Compose "CODE DSN <what>: <Object> rejected: text" into c->reply. */
void smtpd_reject_obj(struct smtpd_rctx *c, enum smtpd_object obj, const char *code,
                      const char *dsn, const char *text);

/* smtpd_restrict.c: DNS status of domain (enum dns_status) from the
 * session's cache, or -1 after starting a lookup (the caller returns
 * V_PENDING). */
int smtpd_dns_status(struct smtpd_session *s, const char *domain);

#endif
