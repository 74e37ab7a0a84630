/* local.h - the local delivery agent (Postfix's local(8)): its parts.
 *
 *   local.c          main, one recipient: loop check, alias expansion,
 *                    the deliveries it produces, the combined result
 *   local_expand.c   alias_maps and :include: expansion into targets
 *   local_mailbox.c  mailbox (Maildir or mbox), /file and |command
 *                    deliveries, each in a child as the right user
 *   local_forward.c  remote targets re-injected as a new queue file
 */
#ifndef POSTINO_LOCAL_H
#define POSTINO_LOCAL_H

#include <stddef.h>

#include "common/mail/lagent.h"

enum local_kind { LT_USER, LT_FILE, LT_COMMAND, LT_REMOTE };

/* One place the message goes to. */
struct local_target {
    enum local_kind kind;
    char *what; /* user name, /path, command line, or address */
};

/* What a recipient expands to; a failure stops the expansion. */
struct local_exp {
    struct local_target *t;
    size_t n;
    int failed; /* res holds why */
    struct lagent_res res;
};

/* ---- local_expand.c ---- */
/* Open alias_maps (after the privilege drop: they are read as root). */
void local_expand_init(void);
/* Expand the local part name (lower case) into targets. */
void local_expand(const char *name, struct local_exp *e);
void local_exp_destroy(struct local_exp *e);
/* Is the domain one of ours (mydestination)? */
int local_domain_is_ours(const char *domain);

/* ---- local_mailbox.c ---- */
void local_deliver_user(struct lagent_job *job, const char *user, const char *rcpt,
                        struct lagent_res *res);
void local_deliver_file(struct lagent_job *job, const char *path, const char *rcpt,
                        struct lagent_res *res);
void local_deliver_command(struct lagent_job *job, const char *cmd, const char *rcpt,
                           struct lagent_res *res);

/* ---- local_forward.c ---- */
/* A new queue file for addrs (n of them), with the original sender and a
 * Delivered-To: rcpt header first; qmgr is told. */
void local_forward(struct lagent_job *job, const char *rcpt, char *const *addrs, size_t n,
                   struct lagent_res *res);

#endif
