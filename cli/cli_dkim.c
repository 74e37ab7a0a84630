/* cli_dkim.c - "postino dkim keygen" and the DKIM key check that "postino
 * check", "start" and "reload" run, so a bad key file is refused before
 * any daemon sees it (smtpd makes the same check at its start).
 *
 * keygen writes DIR/DOMAIN.SELECTOR.key (0600, never over an existing
 * file) and DIR/DOMAIN.SELECTOR.txt (the DNS record), and prints the
 * record, its TXT strings split at 255 bytes (RFC 1035 3.3.14; RFC 6376
 * 3.6.2.2 joins them), and the dkim_key_maps line to add. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/glue/dkim.h"
#include "common/mail/conf.h"
#include "common/util/buf.h"

int cli_dkim_check(struct cli *c)
{
    buf_t err = BUF_INIT;
    enum dkim_canon h, b;
    int rc = 0;
    if (dkim_canon_parse(conf_str("dkim_canonicalization"), &h, &b) < 0) {
        cli_err("dkim_canonicalization = %s: expected relaxed/relaxed, simple/simple, "
                "relaxed/simple or simple/relaxed",
                conf_str("dkim_canonicalization"));
        rc = -1;
    }
    if (*conf_str("dkim_key_maps")) {
        struct dkim_keyring *kr = dkim_keyring_load(conf_str("dkim_key_maps"), &err);
        if (!kr) {
            cli_err("%s", buf_str(&err));
            rc = -1;
        }
        dkim_keyring_free(kr);
    }
    buf_destroy(&err);
    return rc;
}

/* Domain and selector become file names: letters, digits, '-', '.', '_'
 * (no '/', no leading dot). */
static int name_ok(const char *s)
{
    if (!*s || *s == '.' || strlen(s) > 253)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '.' || *s == '_'))
            return 0;
    return 1;
}

/* NAME IN TXT "..." "..." with strings of at most 255 bytes. */
static void zone_line(const char *domain, const char *sel, const char *txt, buf_t *out)
{
    size_t n = strlen(txt);
    buf_printf(out, "%s._domainkey.%s IN TXT", sel, domain);
    for (size_t off = 0; off < n; off += 255)
        buf_printf(out, " \"%.*s\"", (int)(n - off < 255 ? n - off : 255), txt + off);
    buf_putc(out, '\n');
}

static int write_text(const char *path, const buf_t *text)
{
    FILE *fp = fopen(path, "wx");
    if (!fp) {
        cli_err("create %s: %s", path, strerror(errno));
        return -1;
    }
    fwrite(text->data, 1, text->len, fp);
    if (fclose(fp) != 0) {
        cli_err("write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int keygen(struct cli *c, const char *dir, enum dkim_alg alg, int bits, const char *domain,
                  const char *sel)
{
    buf_t key = BUF_INIT, txtf = BUF_INIT, txt = BUF_INIT, err = BUF_INIT, zone = BUF_INIT;
    int rc = CLI_ERR;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        cli_err("mkdir %s: %s", dir, strerror(errno));
        goto out;
    }
    char real[PATH_MAX];
    if (!realpath(dir, real)) {
        cli_err("%s: %s", dir, strerror(errno));
        goto out;
    }
    buf_printf(&key, "%s/%s.%s.key", real, domain, sel);
    buf_printf(&txtf, "%s/%s.%s.txt", real, domain, sel);
    if (dkim_key_generate(key.data, alg, bits, &txt, &err) < 0) {
        cli_err("%s", buf_str(&err));
        goto out;
    }
    zone_line(domain, sel, txt.data, &zone);
    if (write_text(txtf.data, &zone) < 0)
        goto out;
    fputs(zone.data, stdout);
    printf("# dkim_key_maps line (then: postino map build TABLE):\n%s %s:%s:%s\n", domain, sel,
           dkim_alg_name(alg), key.data);
    rc = CLI_OK;
out:
    buf_destroy(&key);
    buf_destroy(&txtf);
    buf_destroy(&txt);
    buf_destroy(&err);
    buf_destroy(&zone);
    return rc;
}

int cli_cmd_dkim(struct cli *c, int argc, char **argv)
{
    enum dkim_alg alg = DKIM_RSA_SHA256;
    int bits = 0, ch;
    buf_t dir = BUF_INIT;
    if (argc < 2 || strcmp(argv[1], "keygen") != 0)
        return cli_usage("dkim");
    buf_printf(&dir, "%s/dkim", c->config_dir);
    optind = 2;
    while ((ch = getopt(argc, argv, "a:b:d:")) != -1) {
        if (ch == 'a' && dkim_alg_parse(optarg, &alg) == 0)
            continue;
        if (ch == 'b' && (bits = atoi(optarg)) > 0)
            continue;
        if (ch == 'd') {
            buf_set(&dir, optarg);
            continue;
        }
        buf_destroy(&dir);
        return cli_usage("dkim");
    }
    if (argc - optind != 2 || !name_ok(argv[optind]) || !name_ok(argv[optind + 1])) {
        buf_destroy(&dir);
        return cli_usage("dkim");
    }
    if (bits && alg != DKIM_RSA_SHA256) {
        cli_err("-b applies to RSA keys only");
        buf_destroy(&dir);
        return CLI_USAGE;
    }
    int rc = keygen(c, dir.data, alg, bits, argv[optind], argv[optind + 1]);
    buf_destroy(&dir);
    return rc;
}
