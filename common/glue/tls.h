/* tls.h - the OpenSSL 3 layer for smtpd (STARTTLS, wrapper mode) and
 * delivery (opportunistic and mandatory TLS).
 *
 * This module only builds configured OpenSSL objects and judges finished
 * handshakes; the I/O is done by the callers with libevent's
 * bufferevent_openssl (bufferevent_openssl_filter_new over an existing
 * bufferevent for STARTTLS, bufferevent_openssl_socket_new for wrapper
 * mode), handing it the SSL from tls_server_ssl_new / tls_client_ssl_new.
 *
 * Parameters read (Postfix names and meanings, declared in params.c):
 *   server: smtpd_tls_cert_file, smtpd_tls_key_file (default: the cert
 *           file), smtpd_tls_chain_files, smtpd_tls_protocols,
 *           smtpd_tls_mandatory_protocols, smtpd_tls_ciphers,
 *           smtpd_tls_exclude_ciphers, smtpd_tls_mandatory_ciphers and
 *           smtpd_tls_mandatory_exclude_ciphers (mandatory contexts; the
 *           latter adds to smtpd_tls_exclude_ciphers, as in Postfix)
 *   client: smtp_tls_CAfile, smtp_tls_CApath, smtp_tls_cert_file,
 *           smtp_tls_key_file, smtp_tls_protocols (level may),
 *           smtp_tls_mandatory_protocols (encrypt and above),
 *           smtp_tls_security_level, smtp_tls_policy_maps,
 *           smtp_tls_ciphers + smtp_tls_exclude_ciphers (level may),
 *           smtp_tls_mandatory_ciphers + smtp_tls_exclude_ciphers +
 *           smtp_tls_mandatory_exclude_ciphers (encrypt and above)
 *   both:   tls_high_cipherlist, tls_medium_cipherlist (what the cipher
 *           grades "high" and "medium" mean to OpenSSL)
 *
 * Errors are one line in `err` and name the file and the parameter, e.g.
 *   "smtpd_tls_key_file: private key /etc/k.pem does not match the
 *    certificate in /etc/c.pem (key values mismatch)"
 * The caller decides: log_fatal at start-up, 4.7.5 deferral per message. */
#ifndef POSTINO_TLS_H
#define POSTINO_TLS_H

#include <openssl/ssl.h>
#include "common/util/buf.h"

/* Client security levels, weakest first (Postfix smtp_tls_security_level). */
typedef enum {
    TLS_LEV_NONE = 0, /* never STARTTLS */
    TLS_LEV_MAY,      /* STARTTLS if offered; any certificate; plain on failure */
    TLS_LEV_ENCRYPT,  /* TLS required, certificate not checked */
    TLS_LEV_VERIFY,   /* TLS + trusted chain + MX hostname (or match=) */
    TLS_LEV_SECURE,   /* TLS + trusted chain + nexthop / .nexthop (or match=) */
} tls_level_t;

/* How much we know about the peer, for "<Trust> TLS connection established". */
typedef enum {
    TLS_TRUST_ANONYMOUS = 0, /* no certificate */
    TLS_TRUST_UNTRUSTED,     /* certificate whose chain did not verify */
    TLS_TRUST_TRUSTED,       /* chain verified, name not checked or no match */
    TLS_TRUST_VERIFIED,      /* chain verified and a match name matched */
} tls_trust_t;

/* ---- protocols and levels (parsing helpers, also for tests) ---- */

/* Result of a Postfix protocol list: SSL_CTX_set_min/max_proto_version
 * values plus SSL_OP_NO_* bits for holes inside the range. */
struct tls_protos {
    int min;          /* e.g. TLS1_2_VERSION */
    int max;          /* e.g. TLS1_3_VERSION */
    unsigned long no; /* SSL_OP_NO_TLSvX for excluded versions in between */
};
/* Parse ">=TLSv1.2", "!SSLv2, !SSLv3, !TLSv1", "TLSv1.2 TLSv1.3",
 * "<=TLSv1.2" (any mix). An empty spec means ">=TLSv1.2". SSLv2/SSLv3 are
 * never enabled. 0, or -1 with err ("unknown TLS protocol \"TLSv9\""). */
int tls_parse_protocols(const char *spec, struct tls_protos *out, buf_t *err);
/* Apply to a context (or use tls_apply_protocols_ssl for one SSL). */
void tls_apply_protocols(SSL_CTX *ctx, const struct tls_protos *p);
void tls_apply_protocols_ssl(SSL *ssl, const struct tls_protos *p);

/* "none", "may", "encrypt", "verify", "secure" (case-insensitive) ->
 * level; 0 or -1 for an unknown word. */
int tls_level_parse(const char *word, tls_level_t *out);
const char *tls_level_name(tls_level_t level);
/* "Anonymous", "Untrusted", "Trusted", "Verified". */
const char *tls_trust_name(tls_trust_t trust);

/* Cipher grade "high"/"medium" + exclusions -> OpenSSL cipher string:
 * the value of tls_<grade>_cipherlist followed by ":!name" per exclusion
 * (TLS 1.2 and below; TLS 1.3 suites are always the OpenSSL defaults).
 * 0, or -1 with err for an unknown grade or an empty grade list. */
int tls_cipher_list(const char *grade, char *const *exclude, buf_t *out, buf_t *err);

/* ---- server (smtpd) ---- */

/* Build the server context from the smtpd_tls_* parameters. Call BEFORE
 * dropping privileges (keys may be readable by root only). `mandatory`
 * selects smtpd_tls_mandatory_protocols and smtpd_tls_mandatory_ciphers
 * (plus smtpd_tls_mandatory_exclude_ciphers) instead of
 * smtpd_tls_protocols and smtpd_tls_ciphers (smtpd uses it for
 * smtpd_tls_security_level=encrypt, wrapper mode and the submission
 * ports 587/465).
 * Stateful session cache off, session tickets on (works across the N
 * smtpd processes without shared state: a client that comes back to
 * another process simply does a full handshake). NULL with err. */
SSL_CTX *tls_server_ctx_new(int mandatory, buf_t *err);
/* A new server-side SSL for one connection (never NULL). */
SSL *tls_server_ssl_new(SSL_CTX *ctx);

/* ---- client (delivery) ---- */

/* Build the client context: CA file/path, optional client certificate,
 * both protocol lists (chosen per connection by level). NULL with err. */
SSL_CTX *tls_client_ctx_new(buf_t *err);
/* A new client SSL for one connection (never NULL): protocols for the
 * level (smtp_tls_protocols for may, smtp_tls_mandatory_protocols for
 * encrypt and above), SNI = `sni` when it is a host name (not NULL, not
 * an IP literal, no brackets). The chain is verified during the
 * handshake but never aborts it: judge it with tls_client_check after. */
SSL *tls_client_ssl_new(SSL_CTX *ctx, const char *sni, tls_level_t level);

/* The policy for one destination. */
struct tls_policy {
    tls_level_t level;
    char **match; /* NULL-terminated names from "match=a:b", or NULL */
};
/* Level for nexthop ("example.com" or "[host]:port" as given): the first
 * smtp_tls_policy_maps table that has the nexthop, else (for a domain)
 * ".parent" entries for its parent domains, else smtp_tls_security_level.
 * Table value: "LEVEL [match=name1:name2]". 0, or -1 with err for a bad
 * table entry / unopenable table (caller defers with 4.7.5). Tables are
 * opened once and kept (a rebuilt table is noticed by dict.c). */
int tls_client_policy(const char *nexthop, struct tls_policy *out, buf_t *err);
void tls_policy_destroy(struct tls_policy *p);
/* Close cached policy tables (reload, tests). */
void tls_policy_reset(void);

/* Names the certificate must match for this policy; NULL-terminated,
 * free with strv_free. Defaults: verify -> { mxhost }, secure ->
 * { nexthop, ".nexthop" } (Postfix's "nexthop, dot-nexthop"); the
 * nexthop has brackets/port stripped. match= entries may use the
 * keywords "hostname", "nexthop", "dot-nexthop". Below verify: NULL. */
char **tls_match_names(const struct tls_policy *pol, const char *nexthop, const char *mxhost);

/* Judge the server certificate after the handshake. `names` (may be
 * NULL: no name check) from tls_match_names; `peer` labels the server in
 * reasons: "mx.example.com[127.0.0.2]:25". Returns the trust level; when
 * it is below Verified (or below Trusted if names is NULL), `why` (may be
 * NULL) gets the reason, e.g.
 *   "certificate verification failed for mx.example.com[127.0.0.2]:25:
 *    untrusted issuer /CN=Test CA"
 *   "server certificate name mismatch for mx.example.com[127.0.0.2]:25:
 *    certificate names mx.other.test, expected other.example.test" */
tls_trust_t tls_peer_trust(SSL *ssl, char *const *names, const char *peer, buf_t *why);

/* Is this finished handshake good enough for the policy? Computes the
 * match names, the trust (returned in *trust, may be NULL) and decides:
 * none/may/encrypt -> always 0; verify/secure -> 0 only when Verified.
 * -1 with why = the log reason (see tls_peer_trust); the DSN text for the
 * deferral is tls_check_status(*trust). */
int tls_client_check(SSL *ssl, const struct tls_policy *pol, const char *nexthop,
                     const char *mxhost, const char *peer, tls_trust_t *trust, buf_t *why);
/* "Server certificate not trusted" (no/untrusted chain) or "Server
 * certificate not verified" (name mismatch): Postfix's 4.7.5 texts. */
const char *tls_check_status(tls_trust_t trust);

/* ---- log lines and headers ---- */

/* "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)" into out
 * (replaces its contents). */
void tls_summary(SSL *ssl, buf_t *out);
/* "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))"
 * appended to out, for the Received: header. */
void tls_received_text(SSL *ssl, buf_t *out);
/* log_info "<Trust> TLS connection established to|from <peer>: <summary>",
 * e.g. "Untrusted TLS connection established to mx.example.com[1.2.3.4]:25:
 * TLSv1.3 with cipher ..." (server: is_server=1 -> "from client[ip]"). */
void tls_log_established(SSL *ssl, tls_trust_t trust, int is_server, const char *peer);

/* Append the most useful queued OpenSSL error ("...: reason") to out and
 * clear the error queue. */
void tls_append_ssl_error(buf_t *out);

#endif
