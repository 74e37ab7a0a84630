/* fuzz_dkim.c - libFuzzer harness for the DKIM signer (common/glue/dkim.c):
 * the content smtpd stores, fed whole, byte by byte and in 1..7-byte
 * pieces, must give the same signature (body hash, header selection,
 * signature: Ed25519 is deterministic), since a client must not change
 * what we sign by how it splits its packets.
 *
 * Input: byte 0 picks the canonicalisation (header, body) and the
 * over-signing, byte 1 seeds the split, the rest is the content. Checked
 * too: the canonical body (dkim_canon_body) has no white space before a
 * line end in relaxed mode, ends with CRLF unless empty (relaxed), and is
 * never empty in simple mode. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/glue/dkim.h"
#include "common/util/buf.h"
#include "common/util/log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct dkim_key *key;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char dir[] = "/tmp/fuzz_dkim.XXXXXX";
    char path[64];
    buf_t txt = BUF_INIT, err = BUF_INIT;
    log_init("fuzz_dkim");
    log_open("/dev/null");
    if (!mkdtemp(dir))
        abort();
    snprintf(path, sizeof(path), "%s/k", dir);
    if (dkim_key_generate(path, DKIM_ED25519_SHA256, 0, &txt, &err) < 0 ||
        !(key = dkim_key_load(path, DKIM_ED25519_SHA256, "s", &err)))
        abort();
    remove(path);
    remove(dir);
    buf_destroy(&txt);
    buf_destroy(&err);
    return 0;
}

static char *hdrs[] = { "From", "To", "Subject", "Date", "Message-ID", NULL };
static char *over[] = { "From", "Subject", NULL };

static size_t piece(int mode, uint32_t *seed)
{
    if (mode == 1)
        return 1;
    *seed = *seed * 1103515245u + 12345u;
    return 1 + (*seed >> 16) % 7;
}

static void sign(const struct dkim_sign_config *cf, const uint8_t *p, size_t n, int mode,
                 uint32_t seed, buf_t *out)
{
    buf_t err = BUF_INIT;
    struct dkim_msg *m = dkim_msg_new(cf);
    for (size_t off = 0; off < n;) {
        size_t k = mode == 0 ? n - off : piece(mode, &seed);
        if (k > n - off)
            k = n - off;
        dkim_msg_feed(m, p + off, k);
        off += k;
    }
    dkim_msg_end(m);
    const char *d = dkim_msg_from_domain(m);
    if (dkim_msg_sign(m, key, d ? d : "example.com", 1700000000, out, &err) < 0)
        buf_puts(out, "error");
    dkim_msg_free(m);
    buf_destroy(&err);
}

static void check_canon(enum dkim_canon c, const uint8_t *p, size_t n)
{
    buf_t in = BUF_INIT, out = BUF_INIT;
    /* dkim_canon_body takes CRLF lines: make them so (as the signer does) */
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' || p[i] == '\n') {
            buf_puts(&in, "\r\n");
            if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
                i++;
        } else {
            buf_putc(&in, p[i]);
        }
    }
    dkim_canon_body(c, in.data ? in.data : "", in.len, &out);
    if (c == DKIM_SIMPLE && out.len < 2)
        abort();
    if (out.len && (out.len < 2 || memcmp(out.data + out.len - 2, "\r\n", 2) != 0))
        abort();
    if (c == DKIM_RELAXED && out.len >= 4 && memcmp(out.data + out.len - 4, "\r\n\r\n", 4) == 0)
        abort(); /* trailing empty lines are dropped */
    for (size_t i = 1; c == DKIM_RELAXED && i + 1 < out.len; i++)
        if (out.data[i] == '\r' && (out.data[i - 1] == ' ' || out.data[i - 1] == '\t'))
            abort();
    buf_destroy(&in);
    buf_destroy(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    struct dkim_sign_config cf = {
        .hdr = data[0] & 1 ? DKIM_RELAXED : DKIM_SIMPLE,
        .body = data[0] & 2 ? DKIM_RELAXED : DKIM_SIMPLE,
        .headers = hdrs,
        .oversign = data[0] & 4 ? over : NULL,
        .ttl = data[0] & 8 ? 3600 : 0,
        .hdr_limit = data[0] & 16 ? 64 : 100000,
    };
    uint32_t seed = data[1];
    const uint8_t *p = data + 2;
    size_t n = size - 2;
    buf_t whole = BUF_INIT, part = BUF_INIT;
    sign(&cf, p, n, 0, seed, &whole);
    for (int mode = 1; mode <= 2; mode++) {
        buf_reset(&part);
        sign(&cf, p, n, mode, seed, &part);
        if (whole.len != part.len || memcmp(whole.data, part.data, whole.len) != 0)
            abort();
    }
    check_canon(cf.body, p, n);
    buf_destroy(&whole);
    buf_destroy(&part);
    return 0;
}
