/* mkman_maincf.c - prints the parameter list of main.cf(5) in roff, from
 * the one parameter table (common/mail/params.c), so the man page can never
 * disagree with what postino accepts. "make man" appends its output to
 * conf/man/main.cf.5.in. */
#include <stdio.h>

#include "common/mail/conf.h"

/* Text as roff: backslashes doubled as \e, a leading . or ' escaped. */
static void roff_text(const char *s)
{
    if (*s == '.' || *s == '\'')
        fputs("\\&", stdout);
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", stdout);
        else if (*s == '-')
            fputs("\\-", stdout);
        else
            putchar(*s);
    }
}

static const char *type_name(param_type_t t)
{
    switch (t) {
    case PARAM_INT:
        return "number";
    case PARAM_TIME:
        return "time";
    case PARAM_BOOL:
        return "yes or no";
    case PARAM_LIST:
        return "list";
    case PARAM_STR:
        break;
    }
    return "text";
}

static void print_param(const struct param_def *p)
{
    fputs(".TP\n.B ", stdout);
    roff_text(p->name);
    fputs("\n", stdout);
    roff_text(p->desc);
    fputs(".\n.br\nDefault: ", stdout);
    if (*p->defval) {
        fputs("\\fI", stdout);
        roff_text(p->defval);
        fputs("\\fR", stdout);
    } else {
        fputs("(empty)", stdout);
    }
    printf(" (%s", type_name(p->type));
    if (p->type == PARAM_TIME)
        printf(", default unit %c", p->unit);
    fputs(").\n", stdout);
}

int main(void)
{
    fputs(".SH PARAMETERS\n", stdout);
    for (size_t i = 0; i < param_count; i++)
        print_param(&param_table[i]);
    fputs(".SH SEE ALSO\n.BR postino (1),\n.BR master.cf (5)\n", stdout);
    return 0;
}
