/* cli_bounce.c - "postino bounce classify": which category the rules give
 * a reply, and which rule decided (so a site can check and tune its own
 * bounce_classifier_local_rules before a real bounce shows it). */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

#include "common/util/buf.h"
#include "common/mail/bclass.h"

#define CLASSIFY_INPUT_MAX (64 * 1024)

/* The argument with "\n" (backslash, n) turned into line breaks. */
static void unescape_lines(buf_t *out, const char *s)
{
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] == 'n') {
            buf_putc(out, '\n');
            s++;
        } else {
            buf_putc(out, *s);
        }
    }
}

static int read_stdin(buf_t *out)
{
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) {
        if (out->len + n > CLASSIFY_INPUT_MAX) {
            cli_err("bounce classify: input longer than %d bytes", CLASSIFY_INPUT_MAX);
            return -1;
        }
        buf_append(out, chunk, n);
    }
    if (memchr(buf_str(out), 0, out->len)) {
        cli_err("bounce classify: input holds a NUL byte");
        return -1;
    }
    return 0;
}

static int classify(int argc, char **argv)
{
    buf_t text = BUF_INIT, err = BUF_INIT;
    int rc = CLI_ERR;
    if (argc > 3)
        return cli_usage("bounce");
    if (argc == 3 && strcmp(argv[2], "-") != 0)
        unescape_lines(&text, argv[2]);
    else if (read_stdin(&text) < 0)
        goto out;
    if (bclass_init(&err) < 0) {
        cli_err("%s", buf_str(&err));
        goto out;
    }
    struct bclass_match m;
    enum bclass c = bclass_explain(0, NULL, buf_str(&text), &m);
    printf("%s\n", bclass_name(c));
    if (m.file)
        printf("%s:%d\n", m.file, m.line);
    else
        printf("no rule matched\n");
    bclass_reset();
    rc = CLI_OK;
out:
    buf_destroy(&text);
    buf_destroy(&err);
    return rc;
}

int cli_cmd_bounce(struct cli *c, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "classify") == 0)
        return classify(argc, argv);
    return cli_usage("bounce");
}
