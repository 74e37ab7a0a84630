/* utf8.h - strict UTF-8 (RFC 3629) for envelope addresses and for text
 * that reaches a log line, a terminal or a report.
 *
 * Strict means: no overlong forms, no surrogates (U+D800..U+DFFF), nothing
 * above U+10FFFF, no truncated or stray bytes. Control characters (C0, DEL
 * and the C1 range U+0080..U+009F) are valid UTF-8 but never wanted in an
 * address or a log line; the helpers below say which they allow. */
#ifndef POSTINO_UTF8_H
#define POSTINO_UTF8_H

#include <stddef.h>

#include "common/util/buf.h"

/* Length (1..4) of the well-formed sequence at s (n bytes available) and
 * its code point in *cp; 0 when the bytes there are not well-formed. */
size_t utf8_decode(const char *s, size_t n, unsigned long *cp);

/* Is c a control character: C0, DEL or C1? */
int utf8_is_control(unsigned long c);

/* n bytes of s are well-formed UTF-8 with no control character. */
int utf8_valid_text(const char *s, size_t n);

/* Does s hold any byte >= 0x80? */
int utf8_has_8bit(const char *s, size_t n);

/* Append s to out, well-formed UTF-8 kept; every control character and
 * every byte of a malformed sequence becomes repl (one per character or
 * byte). The result is valid UTF-8 without control characters. */
void utf8_sanitize(buf_t *out, const char *s, size_t n, char repl);

/* The same in place on a C string (never longer): for log lines. */
void utf8_sanitize_inplace(char *s, char repl);

#endif
