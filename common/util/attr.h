/* attr.h - the one record protocol between postino daemons.
 *
 * A record is "name=value\n" lines ended by an empty line. Names are
 * [a-z0-9_]{1,64}. Values are escaped: '%', bytes below 0x20 and 0x7f are
 * written as %XX (upper-case hex); on decode any %XX is accepted and other
 * bytes are taken literally. A name may repeat (e.g. one "rcpt" per
 * recipient); order is kept. Parsing is strict: a malformed record is an
 * error (between daemons that is a bug, so callers log_panic or drop the
 * peer). Limits: one line <= ATTR_LINE_MAX bytes, <= ATTR_COUNT_MAX
 * attributes per record. The first record a client sends on a new
 * connection carries "proto=<PROTO_VERSION>" (see proto.h). */
#ifndef POSTINO_ATTR_H
#define POSTINO_ATTR_H

#include <stddef.h>
#include "common/util/buf.h"

#define ATTR_LINE_MAX  65536
#define ATTR_COUNT_MAX 20000

struct attr_pair {
    char *name;
    char *value;
};

typedef struct attr {
    struct attr_pair *v;
    size_t n, cap;
} attr_t;

#define ATTR_INIT                                                                                  \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

void attr_init(attr_t *a);
void attr_clear(attr_t *a); /* drop all pairs, keep allocation */
void attr_destroy(attr_t *a);
void attr_add(attr_t *a, const char *name, const char *value);
void attr_addf(attr_t *a, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void attr_add_ll(attr_t *a, const char *name, long long v);
/* First value for name, or NULL. */
const char *attr_get(const attr_t *a, const char *name);
/* Value or def when absent. */
const char *attr_get_def(const attr_t *a, const char *name, const char *def);
/* Parse a decimal value; returns 0 ok, -1 absent or malformed. */
int attr_get_ll(const attr_t *a, const char *name, long long *out);
/* Iterate over repeated names: start with *pos = 0; returns value or NULL. */
const char *attr_next(const attr_t *a, const char *name, size_t *pos);

/* Append the encoded record (including the final empty line) to out. */
void attr_encode(const attr_t *a, buf_t *out);
/* What decoding found. The values are those of the former int result
 * (callers that compare with 0 keep working while they move to the names). */
enum attr_decoded {
    ATTR_MALFORMED = -1, /* *err set to a static reason */
    ATTR_INCOMPLETE = 0, /* more data needed */
    ATTR_DECODED = 1,    /* a whole record */
};

/* Decode one record from data[0..len) into out (cleared first); on
 * ATTR_DECODED *used is its length. */
enum attr_decoded attr_decode(const char *data, size_t len, attr_t *out, size_t *used,
                              const char **err);

/* Escape/unescape one value (also used by the queue file). */
void attr_escape(buf_t *out, const char *value, size_t len);
/* Returns 0 or -1 on a bad %XX. */
int attr_unescape(buf_t *out, const char *s, size_t len);

/* Blocking helpers for simple peers (CLI, notifications). inbuf keeps
 * bytes read past the record between calls. timeout_ms < 0: no timeout.
 * Return 0 ok, -1 error/EOF/timeout/malformed (errno or *err set). */
int attr_write_fd(int fd, const attr_t *a);
int attr_read_fd(int fd, buf_t *inbuf, attr_t *out, int timeout_ms, const char **err);

/* libevent glue: decode one record from an evbuffer, draining it (as
 * attr_decode). (struct evbuffer from event2/buffer.h) */
struct evbuffer;
enum attr_decoded attr_from_evbuffer(struct evbuffer *in, attr_t *out, const char **err);
void attr_to_evbuffer(struct evbuffer *outbuf, const attr_t *a);

#endif
