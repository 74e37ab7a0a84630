/* sasl.h - SMTP AUTH (RFC 4954) on top of Cyrus SASL, without blocking the loop.
 *
 * Life cycle in smtpd:
 *   1. psasl_init(&err) once per process, BEFORE privileges drop (pre_drop):
 *      sasl_server_init(smtpd_sasl_path) reads <cyrus_sasl_config_path>/
 *      <smtpd_sasl_path>.conf and loads the plugins while we may still read
 *      root-only files. Also validates smtpd_sasl_security_options and
 *      smtpd_sasl_tls_security_options. On -1 the caller should log_fatal
 *      with err (a configuration problem).
 *   2. psasl_pool_new(base, n) once per event loop (post_drop): n worker
 *      threads run the Cyrus calls that can block (saslauthd, PAM, LDAP)
 *      and hand results back to the loop (util/workq).
 *   3. psasl_session_new() per SMTP session (again after STARTTLS, with the
 *      TLS cipher strength: RFC 4954 forgets the SASL state there anyway).
 *      psasl_mechanisms() gives the text for the EHLO "AUTH ..." line.
 *   4. AUTH <mech> [initial] -> psasl_start(); each following client line
 *      -> psasl_step(). The callback runs later ON THE LOOP THREAD, never from
 *      inside psasl_start/psasl_step, exactly once per call, and never after
 *      psasl_session_free(). One exchange step at a time per session.
 *   5. psasl_session_free() at any time (also while a step runs in a worker:
 *      the session is then reclaimed when the worker is done, no callback).
 *
 * All strings on the wire are BASE64 exactly as the client sent them (no
 * CRLF). Reply mapping for smtpd (Postfix's texts):
 *   PSASL_OK        235 2.7.0 Authentication successful
 *   PSASL_CONTINUE  334 <challenge>
 *   PSASL_FAIL      535 5.7.8 Error: authentication failed: <reason>
 *   PSASL_TEMPFAIL  454 4.7.0 Temporary authentication failure: <reason>
 *   PSASL_CANCELLED 501 5.7.0 Authentication aborted
 *   PSASL_BADPROT   501 5.5.2 Cannot decode response  (bad base64, long line)
 *   PSASL_NOMECH    504 5.5.4 Unsupported authentication mechanism
 * Every status but CONTINUE ends the exchange; a new psasl_start() may follow
 * (smtpd refuses a second AUTH after OK with 503 itself).
 *
 * Only psasl_session_* / psasl_start / psasl_step / psasl_pool_* must be
 * called on the loop thread of the pool's event_base. */
#ifndef POSTINO_SASL_H
#define POSTINO_SASL_H

#include <stddef.h>

struct event_base;
struct buf;

typedef enum {
    PSASL_OK,        /* authenticated: username and mechanism are set */
    PSASL_CONTINUE,  /* send "334 challenge", pass the next line to step */
    PSASL_FAIL,      /* wrong credentials or mechanism error: reason set */
    PSASL_TEMPFAIL,  /* backend unavailable (saslauthd down...): reason set */
    PSASL_CANCELLED, /* client sent "*" */
    PSASL_BADPROT,   /* malformed base64 or line longer than smtpd_sasl_max_line */
    PSASL_NOMECH,    /* mechanism unknown or not offered in this session */
} psasl_status_t;

/* Valid only during the callback, and only until the callback calls
 * psasl_start/psasl_step/psasl_session_free on that session: copy what you
 * keep first. */
struct psasl_result {
    psasl_status_t status;
    const char *challenge; /* CONTINUE: base64 text, may be "" ("334 ") */
    const char *username;  /* OK: SASL_USERNAME (as Cyrus canonicalised it) */
    const char *mechanism; /* upper-case mechanism name, "" if NOMECH syntax */
    const char *reason;    /* not OK/CONTINUE: short text ("authentication failure") */
    const char *detail;    /* not OK/CONTINUE: longer text for the log, may equal reason */
};

struct psasl_pool;
struct psasl_session;

typedef void (*psasl_done_fn)(struct psasl_session *ss, const struct psasl_result *r, void *arg);

/* Process-wide Cyrus start-up (see above). Returns 0, or -1 with err. Calling
 * it again after success is a no-op returning 0. */
int psasl_init(struct buf *err);
/* sasl_server_done(); after every pool and session is freed (tests, exit). */
void psasl_shutdown(void);

/* Postfix security option tokens (noanonymous, noplaintext, nodictionary,
 * noactive, mutual_auth, forward_secrecy) of list parameter `param` ->
 * SASL_SEC_* flags. Returns 0, or -1 with err naming the bad token. */
int psasl_security_flags(const char *param, unsigned *flags, struct buf *err);

/* Worker pool bound to one event loop; nthreads is clamped to 1..8 (2-4 is
 * plenty: only saslauthd/PAM/LDAP waits need them). Creates the threads
 * (all signals blocked in them). Free only after every session of the pool
 * was freed (sessions freed while a step ran are reclaimed here; sessions
 * still owned are a caller bug, logged as an error and leaked). */
struct psasl_pool *psasl_pool_new(struct event_base *base, int nthreads);
void psasl_pool_free(struct psasl_pool *p);

/* New server session: service "smtp", FQDN $myhostname, realm
 * $smtpd_sasl_local_domain (none if empty). local_ipport/remote_ipport are
 * Cyrus "a.b.c.d;port" (or "ipv6;port") strings, may be NULL. tls_ssf is
 * the TLS cipher strength in bits, 0 without TLS: with TLS the
 * smtpd_sasl_tls_security_options apply and the strength is set as external
 * SSF (so noplaintext still allows PLAIN over TLS, like Postfix). Returns
 * NULL (after log_warn) when Cyrus refuses: then do not offer AUTH. */
struct psasl_session *psasl_session_new(struct psasl_pool *p, const char *local_ipport,
                                        const char *remote_ipport, unsigned tls_ssf);
/* Space separated mechanism list for "250-AUTH <list>"; "" if none. */
const char *psasl_mechanisms(const struct psasl_session *ss);
/* Is a step queued or running (psasl_start/step not allowed now)? smtpd
 * must not read the next AUTH line until the callback has run. */
int psasl_busy(const struct psasl_session *ss);
/* Begin an exchange. initial: the AUTH command's initial response as on the
 * wire ("=" = empty response), or NULL when the client sent none. Calling
 * it while busy is a bug (log_panic). */
void psasl_start(struct psasl_session *ss, const char *mech, const char *initial, psasl_done_fn cb,
                 void *arg);
/* Next client line of the exchange (without CRLF; "*" cancels; "" is an
 * empty response). Only after a CONTINUE result; otherwise log_panic. */
void psasl_step(struct psasl_session *ss, const char *line, psasl_done_fn cb, void *arg);
void psasl_session_free(struct psasl_session *ss);

/* "OK", "CONTINUE", ... for logs and tests. */
const char *psasl_status_name(psasl_status_t st);

/* Strict RFC 4648 base64 (no white space, padding required). decode appends
 * to out and returns 0, or -1 on malformed input; encode appends. */
int psasl_b64_decode(const char *in, size_t len, struct buf *out);
void psasl_b64_encode(const void *in, size_t len, struct buf *out);

#endif
