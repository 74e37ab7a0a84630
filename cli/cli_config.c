/* cli_config.c - "postino config" (effective parameter values, like
 * postconf) and "postino map" (build/query hash: tables, like postmap). */
#include "cli/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "common/util/buf.h"
#include "common/mail/conf.h"
#include "common/glue/dict.h"

static int param_known(const char *name)
{
    for (size_t i = 0; i < param_count; i++)
        if (strcmp(param_table[i].name, name) == 0)
            return 1;
    return 0;
}

/* --json: one object, parameter name -> its effective value (a string,
 * as main.cf writes it, $name expanded): all, the named ones, or with -n
 * those set in main.cf. */
static int config_json(int nondefault, int argc, char **argv)
{
    int first = 1, rc = CLI_OK;

    for (int i = 0; i < argc; i++)
        if (!param_known(argv[i])) {
            cli_err("unknown parameter: %s", argv[i]);
            rc = CLI_ERR;
        }
    if (rc != CLI_OK)
        return rc;
    putchar('{');
    for (size_t i = 0; i < param_count; i++) {
        const char *name = param_table[i].name;
        int named = argc == 0;
        for (int j = 0; j < argc && !named; j++)
            named = strcmp(argv[j], name) == 0;
        if (!named || (nondefault && !conf_is_set(name)))
            continue;
        printf("%s", first ? "\n" : ",\n");
        cli_json_key(name, 1);
        cli_json_str(conf_str(name));
        first = 0;
    }
    printf("\n}\n");
    return CLI_OK;
}

int cli_cmd_config(struct cli *c, int argc, char **argv)
{
    static const struct option longopts[] = { { "json", no_argument, NULL, 'J' },
                                              { NULL, 0, NULL, 0 } };
    int ch, nondefault = 0, value_only = 0, json = 0, rc = CLI_OK;
    if (argc >= 2 && strcmp(argv[1], "import-postfix") == 0)
        return cli_cmd_config_import_postfix(c, argc - 1, argv + 1);
    optind = 0;
    while ((ch = getopt_long(argc, argv, "+nh", longopts, NULL)) != -1) {
        if (ch == 'n')
            nondefault = 1;
        else if (ch == 'h')
            value_only = 1;
        else if (ch == 'J')
            json = 1;
        else
            return cli_usage("config");
    }
    if (json)
        return config_json(nondefault, argc - optind, argv + optind);
    if (optind == argc) {
        conf_print(stdout, nondefault);
        return CLI_OK;
    }
    for (int i = optind; i < argc; i++) {
        if (!param_known(argv[i])) {
            cli_err("unknown parameter: %s", argv[i]);
            rc = CLI_ERR;
        } else if (nondefault && !conf_is_set(argv[i])) {
            continue;
        } else if (value_only) {
            printf("%s\n", conf_str(argv[i]));
        } else {
            printf("%s = %s\n", argv[i], conf_str(argv[i]));
        }
    }
    return rc;
}

/* "FILE" or "hash:FILE" -> "hash:FILE". */
static void map_spec(const char *file, buf_t *out)
{
    if (strncmp(file, "hash:", 5) != 0)
        buf_puts(out, "hash:");
    buf_puts(out, file);
}

static int map_build(int argc, char **argv)
{
    buf_t spec = BUF_INIT, err = BUF_INIT;
    int rc = CLI_OK;
    if (argc != 3)
        return cli_usage("map");
    map_spec(argv[2], &spec);
    if (dict_build(spec.data, &err) < 0) {
        cli_err("%s", buf_str(&err));
        rc = CLI_ERR;
    }
    buf_destroy(&spec);
    buf_destroy(&err);
    return rc;
}

static int map_query(int argc, char **argv)
{
    buf_t spec = BUF_INIT, err = BUF_INIT, value = BUF_INIT;
    int rc = CLI_ERR;
    if (argc != 4)
        return cli_usage("map");
    map_spec(argv[2], &spec);
    struct dict *d = dict_open(spec.data, &err);
    if (!d) {
        cli_err("%s", buf_str(&err));
    } else {
        int found = dict_lookup(d, argv[3], &value);
        if (found > 0) {
            printf("%s\n", buf_str(&value));
            rc = CLI_OK;
        } else if (found < 0) {
            cli_err("%s: lookup error for \"%s\"", argv[2], argv[3]);
        }
        dict_close(d);
    }
    buf_destroy(&spec);
    buf_destroy(&err);
    buf_destroy(&value);
    return rc;
}

int cli_cmd_map(struct cli *c, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "build") == 0)
        return map_build(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "query") == 0)
        return map_query(argc, argv);
    return cli_usage("map");
}
