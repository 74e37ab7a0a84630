/* fuzz_attr.c - libFuzzer harness for common/attr.c, the record protocol
 * every daemon speaks. A peer's bytes are decoded record after record;
 * each decoded record is re-encoded and decoded again and must come back
 * identical, so what one daemon writes another reads exactly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/util/attr.h"
#include "common/util/log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init("fuzz_attr");
    log_open("/dev/null");
    return 0;
}

static int attr_equal(const attr_t *a, const attr_t *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i].name, b->v[i].name) != 0 || strcmp(a->v[i].value, b->v[i].value) != 0)
            return 0;
    return 1;
}

static void round_trip(const attr_t *a)
{
    buf_t enc = BUF_INIT;
    attr_t b = ATTR_INIT;
    size_t used = 0;
    const char *err = NULL;
    attr_encode(a, &enc);
    enum attr_decoded r = attr_decode(enc.data, enc.len, &b, &used, &err);
    /* Escaping can triple a line: only then may the limit reject it. */
    if (r == ATTR_MALFORMED && err && strcmp(err, "line too long") == 0)
        goto out;
    if (r != ATTR_DECODED || used != enc.len || !attr_equal(a, &b))
        abort();
    /* Lookups agree with the pairs. */
    for (size_t i = 0; i < a->n; i++) {
        size_t pos = 0;
        if (attr_get(a, a->v[i].name) == NULL || attr_next(a, a->v[i].name, &pos) == NULL)
            abort();
        long long v;
        (void)attr_get_ll(a, a->v[i].name, &v);
    }
out:
    attr_destroy(&b);
    buf_destroy(&enc);
}

/* attr_escape / attr_unescape on the raw bytes (cut at a NUL: values are
 * C strings). */
static void escape_round_trip(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    buf_t e = BUF_INIT, u = BUF_INIT;
    attr_escape(&e, s, len);
    if (attr_unescape(&u, buf_str(&e), e.len) != 0 || u.len != len ||
        memcmp(buf_str(&u), s, len) != 0)
        abort();
    for (size_t i = 0; i < e.len; i++)
        if (e.data[i] == '\n' || e.data[i] == '\0')
            abort();
    buf_reset(&u);
    (void)attr_unescape(&u, s, len);
    buf_destroy(&e);
    buf_destroy(&u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy without slack so ASan sees any read past the end. */
    char *d = xmalloc(size ? size : 1);
    memcpy(d, data, size);
    attr_t a = ATTR_INIT;
    size_t off = 0;
    while (off < size) {
        size_t used = 0;
        const char *err = NULL;
        enum attr_decoded r = attr_decode(d + off, size - off, &a, &used, &err);
        if (r == ATTR_MALFORMED && err == NULL)
            abort();
        if (r != ATTR_DECODED)
            break;
        if (used == 0 || used > size - off || a.n == 0 || a.n > ATTR_COUNT_MAX)
            abort();
        round_trip(&a);
        off += used;
    }
    attr_destroy(&a);
    escape_round_trip(d, size);
    free(d);
    return 0;
}
