/* conf_impl.h - internals shared by conf.c and conf_file.c (not for daemons). */
#ifndef POSTINO_CONF_IMPL_H
#define POSTINO_CONF_IMPL_H

#include <stddef.h>
#include "common/util/buf.h"

/* Logical-line reader over a whole file's text: skips blank and comment
 * lines, joins continuation lines (leading white space) with one space. */
struct conf_reader {
    const char *p; /* next unread byte */
    int lineno;    /* physical lines consumed so far */
};
enum conf_line {
    CONF_LINE_ORPHAN = -1, /* a continuation line with nothing to continue */
    CONF_LINE_END = 0,
    CONF_LINE_OK = 1, /* the trimmed logical line is in out */
};
/* The next logical line; *line is its first physical line number. */
enum conf_line conf_next_line(struct conf_reader *r, buf_t *out, int *line);
enum conf_read {
    CONF_READ_ERROR = -1, /* err set */
    CONF_READ_OK = 0,
    CONF_READ_MISSING = 1, /* ENOENT */
};
/* Read a whole file. */
enum conf_read conf_read_file(const char *path, buf_t *text, buf_t *err);

long conf_param_index(const char *name);
void conf_expand(buf_t *out, const char *s, int depth);
int conf_validate_value(size_t i, const char *s, buf_t *why);
void conf_absdir(const char *dir, buf_t *out);
void conf_file_setting(const char *name, const char *value, int line);
/* Parse main.cf at path into the state being loaded (missing file: ok). */
int conf_parse_main(const char *path, buf_t *err);
/* The same over text already in memory (NUL-terminated); path is for messages. */
int conf_parse_main_text(const char *path, const char *text, buf_t *err);

#endif
