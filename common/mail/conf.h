/* conf.h - main.cf and master.cf: parameters a Postfix admin already knows.
 *
 * Every parameter is declared once in the table in params.c (name, type,
 * default, limits, one-line description). main.cf is "name = value" with
 * comments (#), continuation lines (a line starting with white space
 * continues the previous one) and $name / ${name} expansion, evaluated
 * lazily at lookup time like Postfix. Unknown names in main.cf are warned
 * about; a value that does not fit its type or limits is an error naming
 * file, line, parameter and reason.
 *
 * Time values take Postfix's suffixes s m h d w; a bare number uses the
 * parameter's default unit. Sizes are plain byte counts. Booleans are
 * yes/no (also true/false, 1/0). Lists are separated by commas and/or
 * white space. */
#ifndef POSTINO_CONF_H
#define POSTINO_CONF_H

#include <stdio.h>
#include "common/util/buf.h"

typedef enum {
    PARAM_STR,  /* free text */
    PARAM_INT,  /* integer within [min,max] */
    PARAM_TIME, /* seconds within [min,max]; unit suffix s/m/h/d/w */
    PARAM_BOOL, /* yes/no */
    PARAM_LIST, /* comma/space separated list of text */
} param_type_t;

struct param_def {
    const char *name;
    param_type_t type;
    const char *defval; /* may reference $other parameters */
    long long min, max; /* for INT and TIME (seconds) */
    char unit;          /* TIME default unit: 's','m','h','d','w' */
    const char *desc;   /* one line */
};

extern const struct param_def param_table[];
extern const size_t param_count;

/* Load <dir>/main.cf (a missing file means "all defaults"). Records
 * config_directory = dir. Returns 0 or -1 with a one-line message in err
 * ("/etc/postino/main.cf, line 12: parameter \"maximal_queue_lifetime\":
 *  invalid time value \"5x\" (use a number with s, m, h, d or w)").
 * Calls log_warn for unknown parameters. Validates every parameter's
 * expanded value (type and limits). May be called again (reload). */
int conf_load(const char *dir, buf_t *err);
/* The same over main.cf text in memory (fuzzing, tests): filename names it
 * in messages and its directory part becomes config_directory. A NUL byte
 * in text[0..len) is an error, as in a file. */
int conf_load_text(const char *text, size_t len, const char *filename, buf_t *err);
/* Set a parameter from a master.cf "-o name=value" or a command line. The
 * value is validated; returns 0 or -1 with err. */
int conf_override(const char *name, const char *value, buf_t *err);
/* Set/replace a parameter value without validation (tests, internal). */
void conf_set(const char *name, const char *value);

/* Expanded value of a declared parameter. Asking for an undeclared name is
 * a bug: log_panic. Returned pointers stay valid until the next
 * conf_load/conf_override/conf_set. */
const char *conf_str(const char *name);
long long conf_int(const char *name); /* INT and TIME (in seconds) */
int conf_bool(const char *name);
/* List value split on ", \t"; NULL-terminated; free with strv_free. */
char **conf_list(const char *name);
/* Does list parameter `name` contain `item` (case-insensitive)? Elements of
 * the form "hash:/path" are NOT consulted here. */
int conf_list_has(const char *name, const char *item);
/* Is this parameter set in main.cf or by override (not just default)? */
int conf_is_set(const char *name);

/* Parse helpers, also used by tests. Return 0 or -1 with err. */
int conf_parse_time(const char *s, char default_unit, long long *out, buf_t *err);
int conf_parse_bool(const char *s, int *out);

/* "postino config": print "name = value" for every parameter (expanded),
 * or only those set explicitly when nondefault is true. */
void conf_print(FILE *fp, int nondefault);

/* ---- master.cf ---- */
struct master_ent {
    char *service; /* "127.0.0.1:2525", "smtp", "qmgr" */
    char *type;    /* "inet" or "unix" */
    int private_;  /* unix: 1 -> private/, 0 -> public/ */
    int unpriv;    /* 1: run as mail_owner (default) */
    int chroot;    /* 1: chroot into queue_directory */
    int wakeup;    /* seconds, 0 = none */
    int maxproc;   /* 0 = default_process_limit */
    char **argv;   /* command name then args (incl. -o name=value pairs) */
    int line;      /* line number in master.cf */
};
/* Load <dir>/master.cf (a missing file means the built-in default table,
 * conf_master_default). Returns 0, or -1 with "file, line N: reason". */
int conf_master_load(const char *dir, struct master_ent **out, size_t *count, buf_t *err);
void conf_master_free(struct master_ent *ents, size_t count);
/* Parse master.cf text in memory (path names it in messages). */
int conf_master_parse_text(const char *path, const char *text, struct master_ent **out,
                           size_t *count, buf_t *err);
extern const char conf_master_default[];

#endif
