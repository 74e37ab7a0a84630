/* smtpd_event.c - the reception events (issue #11): one per recipient of
 * a message smtpd accepted. They are built while the session still has
 * the facts (client, TLS, SASL, envelope) and sent once the queue file is
 * durable (smtpd_data.c's commit_done), so an event never names mail
 * that a failed commit lost. */
#include "smtpd/smtpd.h"

#include <openssl/ssl.h>
#include <stdlib.h>

#include "common/mail/mevent.h"
#include "common/util/alloc.h"

struct smtpd_events {
    attr_t *v;
    size_t n;
};

static void add_tls(attr_t *a, const struct smtpd_session *s)
{
    if (!s->tls || s->ssl == NULL)
        return;
    const SSL_CIPHER *c = SSL_get_current_cipher(s->ssl);
    mevent_add(a, "tls_version", SSL_get_version(s->ssl));
    mevent_add(a, "tls_cipher", c ? SSL_CIPHER_get_name(c) : NULL);
}

struct smtpd_events *smtpd_event_reception(const struct smtpd_session *s, const char *id,
                                           const char *message_id, long long size)
{
    struct smtpd_events *ev;
    if (!mevent_enabled() || s->env.nrcpt == 0)
        return NULL;
    ev = xcalloc(1, sizeof(*ev));
    ev->v = xcalloc(s->env.nrcpt, sizeof(*ev->v));
    for (size_t i = 0; i < s->env.nrcpt; i++) {
        attr_t *a = &ev->v[ev->n++];
        attr_init(a);
        mevent_begin(a, "reception");
        mevent_add(a, "queue_id", id);
        mevent_add(a, "message_id", message_id);
        mevent_add(a, "sender", s->env.sender);
        mevent_add(a, "recipient", s->env.rcpt[i].addr);
        mevent_add(a, "client_host", s->name);
        mevent_add(a, "client_ip", s->addr);
        mevent_add(a, "sasl_username", s->sasl_username);
        add_tls(a, s);
        attr_add_ll(a, "size", size);
    }
    return ev;
}

void smtpd_event_send(struct smtpd_events *ev)
{
    for (size_t i = 0; ev && i < ev->n; i++)
        mevent_send(&ev->v[i]);
}

void smtpd_event_free(struct smtpd_events *ev)
{
    if (ev == NULL)
        return;
    for (size_t i = 0; i < ev->n; i++)
        attr_destroy(&ev->v[i]);
    free(ev->v);
    free(ev);
}
