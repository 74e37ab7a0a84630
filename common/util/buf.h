/* buf.h - the one growable byte buffer for all protocol text.
 *
 * A buf_t always keeps data NUL-terminated (data[len] == 0) so it can be
 * used as a C string when it holds text. It grows on demand through the
 * allocators in alloc.h, so appends never fail and never overflow. */
#ifndef POSTINO_BUF_H
#define POSTINO_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct buf {
    char *data;
    size_t len;
    size_t cap;
} buf_t;

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

void buf_init(buf_t *b, size_t initial);
void buf_destroy(buf_t *b);
void buf_reset(buf_t *b);
void buf_reserve(buf_t *b, size_t extra);
void buf_append(buf_t *b, const void *p, size_t n);
void buf_puts(buf_t *b, const char *s);
void buf_putc(buf_t *b, int c);
void buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A delay in seconds as Postfix logs it: "0", "0.02", "1.2", "23". */
void buf_put_delay(buf_t *b, double secs);
void buf_vprintf(buf_t *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Replace contents. */
void buf_set(buf_t *b, const char *s);
/* Replace contents with formatted text; does nothing when b is NULL (for
 * optional error-message arguments). */
void buf_setf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drop the first n bytes. */
void buf_consume(buf_t *b, size_t n);
/* Truncate to n bytes (n <= len). */
void buf_truncate(buf_t *b, size_t n);
/* NUL-terminated contents ("" for an empty, never-grown buffer). */
const char *buf_str(const buf_t *b);
/* Detach the data as a malloc'd string; the buffer becomes empty. */
char *buf_detach(buf_t *b);

/* Bounded string helpers (no strcpy/strcat/sprintf anywhere). */
/* Copy with truncation, always NUL-terminates; returns strlen(src). */
size_t str_lcpy(char *dst, const char *src, size_t size);
/* ASCII case-insensitive equality. */
int str_ieq(const char *a, const char *b);
int str_nieq(const char *a, const char *b, size_t n);
/* In-place ASCII lower-casing; returns s. */
char *str_lower(char *s);
/* Value of one hex digit (either case), or -1. */
int str_hexval(int c);
/* Does s end with suffix (case-insensitive)? */
int str_iendswith(const char *s, const char *suffix);
/* Strip leading and trailing white space in place; returns start. */
char *str_trim(char *s);
/* Split s on any of seps (e.g. ", \t"), skipping empty fields. Returns a
 * NULL-terminated malloc'd vector; free with strv_free. *count may be NULL. */
char **str_split(const char *s, const char *seps, size_t *count);
void strv_free(char **v);

#endif
