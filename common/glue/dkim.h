/* dkim.h - DKIM signing (RFC 6376) with RSA-SHA256 and Ed25519-SHA256
 * (RFC 8463), on OpenSSL 3's EVP interface.
 *
 * smtpd signs at the end of data: the content goes through dkim_msg_feed
 * in pieces of any size as it is stored (the result never depends on the
 * split), dkim_msg_end finishes the body hash, dkim_msg_sign makes one
 * DKIM-Signature field per key. The CLI makes keys (dkim_key_generate)
 * and checks them (dkim_keyring_load, the same check smtpd makes at
 * start).
 *
 * What is signed is what delivery sends: bare CR and bare LF are made
 * CRLF first (common/mail/crlf.c, the rule of delivery's encoders).
 * Signatures never carry l= (a body length would let anyone append
 * content); t= always, x= when a lifetime is configured. */
#ifndef POSTINO_DKIM_H
#define POSTINO_DKIM_H

#include <stddef.h>
#include <time.h>

#include "common/util/buf.h"

enum dkim_alg { DKIM_RSA_SHA256 = 0, DKIM_ED25519_SHA256 };
enum dkim_canon { DKIM_SIMPLE = 0, DKIM_RELAXED };

/* "rsa-sha256" / "ed25519-sha256". */
const char *dkim_alg_name(enum dkim_alg a);
/* Also the short forms "rsa" and "ed25519". 0, or -1 when unknown. */
int dkim_alg_parse(const char *s, enum dkim_alg *out);
/* "relaxed/relaxed", "simple", "relaxed/simple"... (one word: the body
 * is simple, as for c= in RFC 6376 3.5). 0 or -1. */
int dkim_canon_parse(const char *s, enum dkim_canon *hdr, enum dkim_canon *body);

/* ---- canonicalisation (RFC 6376 3.4), exposed for the tests ---- */
/* One header field (name ":" value, folded lines included, without its
 * final CRLF) in canonical form, with CRLF, appended to out. */
void dkim_canon_header(enum dkim_canon c, const char *field, size_t len, buf_t *out);
/* A whole body (CRLF lines) in canonical form, appended to out; the
 * streaming code that the signer uses, fed in one piece. */
void dkim_canon_body(enum dkim_canon c, const char *body, size_t len, buf_t *out);

/* ---- keys ---- */
struct dkim_key;
/* Load and check a private key file: it must be a regular file that is
 * not group or world readable, hold a PEM private key of the algorithm
 * given, and (RSA) have at least 2048 bits. NULL with err (naming the
 * file) otherwise. */
struct dkim_key *dkim_key_load(const char *path, enum dkim_alg alg, const char *selector,
                               buf_t *err);
void dkim_key_free(struct dkim_key *k);
enum dkim_alg dkim_key_alg(const struct dkim_key *k);
const char *dkim_key_selector(const struct dkim_key *k);
/* New key pair (bits: RSA only, 0 = 2048) written PEM to path, created
 * 0600 with O_EXCL (an existing file is never overwritten). The DNS TXT
 * value "v=DKIM1; k=...; p=..." goes to txt. 0 or -1 with err. */
int dkim_key_generate(const char *path, enum dkim_alg alg, int bits, buf_t *txt, buf_t *err);
/* The TXT record value of a loaded key. */
void dkim_key_txt(const struct dkim_key *k, buf_t *txt);

/* ---- the key table: signing domain -> one or two keys ---- */
#define DKIM_MAX_KEYS 2
struct dkim_keyring;
/* Every entry of the tables in dkim_key_maps (a list of hash: tables):
 * "domain  selector:algorithm:/path/key.pem[, selector:algorithm:/path]"
 * (items separated by white space or commas). NULL with err naming the
 * table, its source line when the text file is at hand, and the file. An
 * empty list gives an empty ring. */
struct dkim_keyring *dkim_keyring_load(const char *maps, buf_t *err);
void dkim_keyring_free(struct dkim_keyring *kr);
size_t dkim_keyring_count(const struct dkim_keyring *kr);
/* The keys of a domain (case-insensitive); returns how many (0..2). */
size_t dkim_keyring_find(const struct dkim_keyring *kr, const char *domain,
                         const struct dkim_key *out[DKIM_MAX_KEYS]);

/* ---- signing one message ---- */
struct dkim_sign_config {
    enum dkim_canon hdr, body;
    char **headers;   /* dkim_signed_headers (names, any case) */
    char **oversign;  /* dkim_oversigned_headers */
    long long ttl;    /* dkim_signature_ttl: x = t + ttl; 0: no x= */
    size_t hdr_limit; /* header bytes kept; more is an error at sign */
};
/* From the dkim_* parameters; 0, or -1 with err (bad canonicalization).
 * Free with dkim_sign_config_destroy. */
int dkim_sign_config_load(struct dkim_sign_config *cf, buf_t *err);
void dkim_sign_config_destroy(struct dkim_sign_config *cf);

struct dkim_msg;
/* cf must outlive the message. */
struct dkim_msg *dkim_msg_new(const struct dkim_sign_config *cf);
void dkim_msg_free(struct dkim_msg *m);
/* The content as stored (header, empty line, body), any split. */
void dkim_msg_feed(struct dkim_msg *m, const void *p, size_t n);
/* End of the content: the body hash is final. */
void dkim_msg_end(struct dkim_msg *m);
/* The domain of the (first) From: address, lower case, or NULL. */
const char *dkim_msg_from_domain(const struct dkim_msg *m);
/* One signature by k for domain d at time now: "DKIM-Signature: ...CRLF"
 * appended to out. 0, or -1 with err. */
int dkim_msg_sign(struct dkim_msg *m, const struct dkim_key *k, const char *d, time_t now,
                  buf_t *out, buf_t *err);

#endif
