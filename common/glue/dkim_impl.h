/* dkim_impl.h - what dkim.c and dkim_key.c share (not for other modules). */
#ifndef POSTINO_DKIM_IMPL_H
#define POSTINO_DKIM_IMPL_H

#include <openssl/evp.h>

#include "common/glue/dkim.h"
#include "common/util/log.h"

/* The streaming body canonicaliser (dkim.c). */
struct dkim_body {
    enum dkim_canon c;
    void (*out)(void *arg, const char *p, size_t n);
    void *arg;
    char buf[4096]; /* output not yet handed to out */
    size_t n;
    size_t blank; /* empty lines held back (trailing ones are dropped) */
    int empty;    /* nothing written of the current line yet */
    int wsp;      /* relaxed: white space held back */
    int any;      /* anything written at all */
};

void dkim_body_init(struct dkim_body *b, enum dkim_canon c,
                    void (*out)(void *, const char *, size_t), void *arg);
void dkim_body_feed(struct dkim_body *b, const char *p, size_t n);
void dkim_body_end(struct dkim_body *b);

/* One header field in the kept header section. */
struct dkim_field {
    size_t off, len; /* without the final CRLF */
};

EVP_PKEY *dkim_key_pkey(const struct dkim_key *k);

#endif
