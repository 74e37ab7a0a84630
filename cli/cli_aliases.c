/* cli_aliases.c - "postino newaliases": build the alias_database tables
 * from their aliases(5) text (common/mail/aliases.h), as Postfix's
 * newaliases does: hash:/etc/postino/aliases -> /etc/postino/aliases.db.
 * Keys are the lower-cased names, values the right-hand sides as written;
 * the local agent parses the values when it delivers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/glue/dict.h"
#include "common/mail/aliases.h"
#include "common/mail/conf.h"
#include "common/util/alloc.h"

struct pairs {
    char **k, **v;
    size_t n;
};

static int add_pair(const char *name, const char *value, void *arg)
{
    struct pairs *p = arg;
    p->k = xrealloc(p->k, (p->n + 1) * sizeof(*p->k));
    p->v = xrealloc(p->v, (p->n + 1) * sizeof(*p->v));
    p->k[p->n] = xstrdup(name);
    p->v[p->n] = xstrdup(value);
    p->n++;
    return 0;
}

static int build_one(const char *spec)
{
    struct pairs p = { NULL, NULL, 0 };
    buf_t err = BUF_INIT;
    const char *path = strncmp(spec, "hash:", 5) == 0 ? spec + 5 : spec;
    FILE *fp = fopen(path, "re");
    int rc = CLI_ERR;

    if (fp == NULL) {
        cli_err("newaliases: open %s: %s", path, strerror(errno));
        return CLI_ERR;
    }
    if (aliases_parse(fp, path, add_pair, &p, &err) < 0)
        cli_err("newaliases: %s", buf_str(&err));
    else if (dict_build_pairs(spec, p.k, p.v, p.n, &err) < 0)
        cli_err("newaliases: %s", buf_str(&err));
    else
        rc = CLI_OK;
    fclose(fp);
    for (size_t i = 0; i < p.n; i++) {
        free(p.k[i]);
        free(p.v[i]);
    }
    free(p.k);
    free(p.v);
    buf_destroy(&err);
    return rc;
}

int cli_cmd_newaliases(struct cli *c, int argc, char **argv)
{
    char **list;
    int rc = CLI_OK;

    if (argc != 1)
        return cli_usage("newaliases");
    list = conf_list("alias_database");
    for (size_t i = 0; list && list[i]; i++)
        if (build_one(list[i]) != CLI_OK)
            rc = CLI_ERR;
    strv_free(list);
    return rc;
}
