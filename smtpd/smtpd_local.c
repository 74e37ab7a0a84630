/* smtpd_local.c - local submission: sessions on a UNIX socket (public/submit).
 *
 * The sendmail command (cli/cli_sendmail.c) speaks SMTP to smtpd over a
 * UNIX stream socket, so no program is setuid or setgid and no port is
 * open: the kernel names the user (SO_PEERCRED). Such a session is local,
 * and like Postfix's smtpd on a UNIX socket its client is
 * localhost[127.0.0.1]:
 *   - the client, HELO and relay restrictions do not apply (they judge a
 *     network client; a local user may send anywhere, as mail picked up
 *     by Postfix's pickup never meets them); the sender and recipient
 *     restrictions do, and so do the recipient address classes;
 *   - the user is logged as Postfix's pickup does, after the client
 *     pflogsumm counts ("QUEUEID: client=localhost[127.0.0.1], uid=1000
 *     from=<sender>"), and named in the Received: header ("from userid");
 *   - local_login_sender_maps says which envelope senders a user may use
 *     (empty: any, Postfix's static:* default);
 *   - it counts as authenticated for DKIM signing and suppression. */
#include "smtpd/smtpd.h"

#include <pwd.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/util/ipc.h"
#include "common/util/log.h"
#include "common/mail/conf.h"
#include "common/mail/server.h"

/* The service's type says it (master.cf "unix"): no system call for a
 * network client. */
int smtpd_local_peer(struct smtpd_session *s, int fd)
{
    uid_t uid;
    if (strcmp(s->d->srv->type, "unix") != 0)
        return 0;
    s->addr = xstrdup("127.0.0.1");
    free(s->name);
    s->name = xstrdup("localhost");
    s->local = 1;
    if (ipc_peer_cred(fd, &uid, NULL, NULL) < 0) {
        /* Not a user we can name: the session may not submit. */
        log_warn("local submission: cannot read peer credentials: %m");
        return 1;
    }
    s->local_uid = (long long)uid;
    return 1;
}

/* The login name, looked up when first needed: only local_login_sender_maps
 * needs it, and the passwd lookup is the one blocking step here. */
static const char *login_of(struct smtpd_session *s)
{
    if (!s->local_login) {
        struct passwd *pw = getpwuid((uid_t)s->local_uid);
        s->local_login = pw ? xstrdup(pw->pw_name) : NULL;
    }
    return s->local_login;
}

void smtpd_local_release(struct smtpd_session *s)
{
    free(s->local_login);
    s->local_login = NULL;
}

void smtpd_local_received(const struct smtpd_session *s, const char *date, buf_t *b)
{
    buf_printf(b, "Received: by %s (%s, from userid %lld)\r\n\tid %s", smtpd_hostname(),
               conf_str("mail_name"), s->local_uid, s->env.id);
    if (s->env.nrcpt == 1)
        buf_printf(b, "\r\n\tfor <%s>; %s\r\n", s->env.rcpt[0].addr, date);
    else
        buf_printf(b, "; %s\r\n", date);
}

void smtpd_local_log(const struct smtpd_session *s)
{
    log_info("%s: client=%s, uid=%lld from=<%s>", s->env.id, smtpd_client(s), s->local_uid,
             s->env.sender ? s->env.sender : "");
}

/* One pattern of a local_login_sender_maps value: "*" any sender, "<>"
 * the null sender, "@domain" any address there, else the address. */
static int pattern_match(const char *pat, const char *sender)
{
    if (strcmp(pat, "*") == 0)
        return 1;
    if (strcmp(pat, "<>") == 0)
        return *sender == 0;
    if (*sender == 0)
        return 0;
    if (pat[0] == '@') {
        const char *at = strrchr(sender, '@');
        return at && str_ieq(at, pat);
    }
    return str_ieq(pat, sender);
}

/* The user's own address: the login, alone or at $myorigin. */
static int own_address(const char *login, const char *sender)
{
    size_t n = strlen(login);
    if (strncmp(sender, login, n) != 0)
        return 0;
    return sender[n] == 0 || (sender[n] == '@' && str_ieq(sender + n + 1, conf_str("myorigin")));
}

/* The patterns for login (or the "*" key) in the tables: FOUND with
 * value set, NONE, or ERROR. */
static enum smtpd_lookup sender_patterns(const char *login, buf_t *value)
{
    char **tables = conf_list("local_login_sender_maps");
    enum smtpd_lookup rc = SMTPD_LOOKUP_NONE;
    for (size_t i = 0; tables[i] && rc == SMTPD_LOOKUP_NONE; i++) {
        struct dict *t = smtpd_table(tables[i]);
        if (!t) {
            rc = SMTPD_LOOKUP_ERROR;
            break;
        }
        if (login)
            rc = smtpd_lookup(t, login, value);
        if (rc == SMTPD_LOOKUP_NONE)
            rc = smtpd_lookup(t, "*", value);
    }
    strv_free(tables);
    return rc;
}

static int sender_allowed(const char *login, const char *sender, const char *patterns)
{
    if (login && *sender && own_address(login, sender))
        return 1;
    char **v = str_split(patterns, ", \t", NULL);
    int ok = 0;
    for (size_t i = 0; v[i] && !ok; i++)
        ok = pattern_match(v[i], sender);
    strv_free(v);
    return ok;
}

enum smtpd_outcome smtpd_local_sender(struct smtpd_session *s, buf_t *reply)
{
    const char *sender = s->env.sender ? s->env.sender : "";
    if (!s->local)
        return SMTPD_PASS;
    if (s->local_uid < 0) {
        buf_printf(reply, "451 4.3.0 <%s>: Sender address rejected: unknown local user", sender);
        return SMTPD_REFUSED;
    }
    if (*conf_str("local_login_sender_maps") == 0)
        return SMTPD_PASS;
    buf_t pats = BUF_INIT;
    const char *login = login_of(s);
    enum smtpd_lookup rc = sender_patterns(login, &pats);
    enum smtpd_outcome out = SMTPD_PASS;
    if (rc == SMTPD_LOOKUP_ERROR) {
        buf_printf(reply, "451 4.3.0 <%s>: Sender address rejected: Server configuration error",
                   sender);
        out = SMTPD_REFUSED;
    } else if (!sender_allowed(login, sender, rc == SMTPD_LOOKUP_FOUND ? buf_str(&pats) : "")) {
        buf_printf(reply, "553 5.7.1 <%s>: Sender address rejected: not owned by user %s", sender,
                   login ? login : "(unknown)");
        out = SMTPD_REFUSED;
    }
    buf_destroy(&pats);
    return out;
}
