/* test_params.c - every parameter in the table (common/mail/params.c) is read
 * by some program, so main.cf never accepts a setting that does nothing.
 *
 * The rule is deliberately plain: a parameter counts as read when its
 * name appears as a C string literal (adjacent literals joined, comments
 * skipped) in a source file of a program or of libpostino, that is any
 * *.c or *.h under the source tree except params.c itself and the tests,
 * fuzz and bench trees. That covers conf_str("name") and friends as well
 * as names passed around as constants ("smtp_data_done_timeout"). A
 * parameter whose name is only used as $name in the default of a
 * parameter that is read counts too (its value flows into that one).
 *
 * The tree is found through $POSTINO_SRCDIR, else the directory the
 * Makefile compiled in as POSTINO_SRCDIR. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/mail/conf.h"

/* ---- string literals of C source ---- */

struct strset {
    char **v;
    size_t n, cap;
};

static void set_add(struct strset *s, const char *p, size_t n)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = xstrndup(p, n);
}

static int set_has(const struct strset *s, const char *str)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], str) == 0)
            return 1;
    return 0;
}

static void set_destroy(struct strset *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

/* Past a comment starting at p (p[0] == '/'), or p when there is none. */
static const char *skip_comment(const char *p, const char *end)
{
    if (p + 1 < end && p[1] == '*') {
        const char *q = p + 2;
        while (q + 1 < end && !(q[0] == '*' && q[1] == '/'))
            q++;
        return q + 1 < end ? q + 2 : end;
    }
    if (p + 1 < end && p[1] == '/') {
        while (p < end && *p != '\n')
            p++;
        return p;
    }
    return p;
}

/* Past white space and comments. */
static const char *skip_space(const char *p, const char *end)
{
    for (;;) {
        while (p < end && isspace((unsigned char)*p))
            p++;
        const char *q = p < end && *p == '/' ? skip_comment(p, end) : p;
        if (q == p)
            return p;
        p = q;
    }
}

/* The body of a quoted literal at p (p[0] is the quote) appended to out;
 * returns the position after the closing quote. */
static const char *take_quoted(const char *p, const char *end, buf_t *out)
{
    char q = *p++;
    while (p < end && *p != q && *p != '\n') {
        if (*p == '\\' && p + 1 < end) {
            if (out)
                buf_append(out, p, 2);
            p += 2;
            continue;
        }
        if (out)
            buf_putc(out, *p);
        p++;
    }
    return p < end ? p + 1 : end;
}

/* Every string literal of C text (adjacent ones joined) into set. */
static void scan_c(const char *text, size_t len, struct strset *set)
{
    const char *p = text, *end = text + len;
    buf_t lit = BUF_INIT;
    while (p < end) {
        if (*p == '/') {
            const char *q = skip_comment(p, end);
            p = q == p ? p + 1 : q;
        } else if (*p == '\'') {
            p = take_quoted(p, end, NULL);
        } else if (*p == '"') {
            buf_reset(&lit);
            p = take_quoted(p, end, &lit);
            const char *q;
            while ((q = skip_space(p, end)) < end && *q == '"')
                p = take_quoted(q, end, &lit);
            set_add(set, buf_str(&lit), lit.len);
        } else {
            p++;
        }
    }
    buf_destroy(&lit);
}

/* ---- the source tree ---- */

static struct strset literals;
static size_t files_scanned;

static int skipped_dir(const char *name)
{
    static const char *const skip[] = { "tests", "fuzz", "bench", "build", "bin", "var" };
    if (name[0] == '.')
        return 1;
    for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
        if (strcmp(name, skip[i]) == 0)
            return 1;
    return 0;
}

static int program_source(const char *name)
{
    size_t n = strlen(name);
    if (strcmp(name, "params.c") == 0)
        return 0;
    return n > 2 && name[n - 2] == '.' && (name[n - 1] == 'c' || name[n - 1] == 'h');
}

static int visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    const char *name = path + ftw->base;
    if (type == FTW_D)
        return ftw->level > 0 && skipped_dir(name) ? FTW_SKIP_SUBTREE : FTW_CONTINUE;
    if (type != FTW_F || !program_source(name))
        return FTW_CONTINUE;
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        fail_msg("cannot read %s", path);
    buf_t text = BUF_INIT;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        buf_append(&text, chunk, n);
    fclose(fp);
    scan_c(buf_str(&text), text.len, &literals);
    buf_destroy(&text);
    files_scanned++;
    return FTW_CONTINUE;
}

static const char *source_dir(void)
{
    const char *d = getenv("POSTINO_SRCDIR");
#ifdef POSTINO_SRCDIR
    if (d == NULL || *d == '\0')
        d = POSTINO_SRCDIR;
#endif
    return d;
}

static int group_setup(void **state)
{
    const char *dir = source_dir();
    if (dir == NULL || *dir == '\0') {
        fprintf(stderr, "test_params: set POSTINO_SRCDIR to the source tree\n");
        return -1;
    }
    if (nftw(dir, visit, 16, FTW_PHYS | FTW_ACTIONRETVAL) != 0) {
        fprintf(stderr, "test_params: cannot walk %s\n", dir);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    set_destroy(&literals);
    return 0;
}

/* ---- tests ---- */

/* The scanner itself: comments and character constants are not code,
 * adjacent literals are one string. */
static void test_scanner(void **state)
{
    static const char src[] = "/* conf_str(\"in_block_comment\") */\n"
                              "// conf_int(\"in_line_comment\")\n"
                              "int c = '\"'; const char *a = conf_str(\"plain\");\n"
                              "t = timeout(\"smtp_\" /* x */ \"data_done\"\n  \"_timeout\");\n"
                              "s = \"esc\\\"aped\"; u = \"a // b\"; v = \"/* c */\";\n";
    struct strset s = { 0 };
    scan_c(src, sizeof(src) - 1, &s);
    assert_true(set_has(&s, "plain"));
    assert_true(set_has(&s, "smtp_data_done_timeout"));
    assert_true(set_has(&s, "esc\\\"aped"));
    assert_true(set_has(&s, "a // b"));
    assert_true(set_has(&s, "/* c */"));
    assert_false(set_has(&s, "in_block_comment"));
    assert_false(set_has(&s, "in_line_comment"));
    assert_false(set_has(&s, "smtp_"));
    assert_int_equal(s.n, 5);
    set_destroy(&s);
}

/* The walk found the programs: a name only the tests use is not read. */
static void test_tree_found(void **state)
{
    assert_true(files_scanned > 20);
    assert_true(set_has(&literals, "queue_directory"));
    assert_false(set_has(&literals, "test_params_no_such_parameter"));
}

static void test_names_unique(void **state)
{
    for (size_t i = 0; i < param_count; i++)
        for (size_t k = i + 1; k < param_count; k++)
            if (strcmp(param_table[i].name, param_table[k].name) == 0)
                fail_msg("parameter \"%s\" is declared twice", param_table[i].name);
}

/* Mark the parameters named as $name, ${name...} or $(name...) in s. */
static int mark_refs(const char *s, int *read)
{
    int added = 0;
    for (const char *p = strchr(s, '$'); p; p = strchr(p + 1, '$')) {
        const char *q = p + 1;
        if (*q == '{' || *q == '(')
            q++;
        size_t n = 0;
        while (isalnum((unsigned char)q[n]) || q[n] == '_')
            n++;
        for (size_t i = 0; n && i < param_count; i++)
            if (!read[i] && strlen(param_table[i].name) == n &&
                strncmp(param_table[i].name, q, n) == 0)
                read[i] = added = 1;
    }
    return added;
}

static void test_every_parameter_read(void **state)
{
    int *read = xcalloc(param_count, sizeof(*read));
    int *direct = xcalloc(param_count, sizeof(*direct));
    for (size_t i = 0; i < param_count; i++)
        read[i] = direct[i] = set_has(&literals, param_table[i].name);
    /* $name in the default of a read parameter, to a fixed point. */
    for (int more = 1; more;) {
        more = 0;
        for (size_t i = 0; i < param_count; i++)
            if (read[i])
                more |= mark_refs(param_table[i].defval, read);
    }
    buf_t unread = BUF_INIT;
    for (size_t i = 0; i < param_count; i++) {
        if (!read[i])
            buf_printf(&unread, " %s", param_table[i].name);
        else if (!direct[i])
            print_message("read only through $%s in another default\n", param_table[i].name);
    }
    free(read);
    free(direct);
    if (unread.len)
        fail_msg("parameters declared in params.c that no program reads:%s "
                 "(read them where they matter, or remove them)",
                 buf_str(&unread));
    buf_destroy(&unread);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scanner),
        cmocka_unit_test(test_tree_found),
        cmocka_unit_test(test_names_unique),
        cmocka_unit_test(test_every_parameter_read),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
