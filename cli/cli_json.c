/* cli_json.c - JSON output for the CLI's --json options (queue list,
 * queue summary, site list/show, config): one string writer, so every
 * command escapes alike. Queue and site data came from the network: the
 * output is always valid JSON in UTF-8 (a malformed byte becomes U+FFFD,
 * control characters are \u escapes), so json.loads and jq take it. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

#include "common/util/utf8.h"

void cli_json_str(const char *s)
{
    size_t n = strlen(s);

    putchar('"');
    for (size_t i = 0; i < n;) {
        unsigned char ch = (unsigned char)s[i];
        unsigned long cp;
        size_t len = ch < 0x80 ? 1 : utf8_decode(s + i, n - i, &cp);
        if (len == 0) {
            fputs("\\ufffd", stdout);
            i++;
        } else if (ch == '"' || ch == '\\') {
            printf("\\%c", ch);
            i++;
        } else if (ch < 0x20 || ch == 0x7f || (len > 1 && utf8_is_control(cp))) {
            printf("\\u%04lx", len > 1 ? cp : (unsigned long)ch);
            i += len;
        } else {
            fwrite(s + i, 1, len, stdout);
            i += len;
        }
    }
    putchar('"');
}

void cli_json_key(const char *key, int first)
{
    if (!first)
        putchar(',');
    cli_json_str(key);
    putchar(':');
}
