/* fuzz_conf.c - libFuzzer harness for the configuration parsers: main.cf
 * (through conf_load_text, the in-memory twin of conf_load), master.cf,
 * and the time/boolean value parsers. After a main.cf is accepted every
 * parameter is looked up with its typed accessor: validation promised the
 * values fit, so no lookup may log_fatal (exit) or panic. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/util/log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init("fuzz_conf");
    log_open("/dev/null");
    return 0;
}

static void lookup_all(void)
{
    for (size_t i = 0; i < param_count; i++) {
        const struct param_def *d = &param_table[i];
        (void)conf_str(d->name);
        (void)conf_is_set(d->name);
        if (d->type == PARAM_INT || d->type == PARAM_TIME) {
            long long v = conf_int(d->name);
            if (v < d->min || v > d->max)
                abort();
        } else if (d->type == PARAM_BOOL) {
            (void)conf_bool(d->name);
        } else if (d->type == PARAM_LIST) {
            strv_free(conf_list(d->name));
            (void)conf_list_has(d->name, "localhost");
        }
    }
}

static void fuzz_master(const char *text)
{
    struct master_ent *ents = NULL;
    size_t n = 0;
    buf_t err = BUF_INIT;
    if (conf_master_parse_text("master.cf", text, &ents, &n, &err) == 0) {
        for (size_t i = 0; i < n; i++)
            if (ents[i].service == NULL || ents[i].argv == NULL || ents[i].argv[0] == NULL)
                abort();
        conf_master_free(ents, n);
    } else if (err.len == 0) {
        abort(); /* an error must tell the admin what to fix */
    }
    buf_destroy(&err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    buf_t err = BUF_INIT;
    if (conf_load_text((const char *)data, size, "/fuzz/main.cf", &err) == 0)
        lookup_all();
    else if (err.len == 0)
        abort();
    char *s = xstrndup((const char *)data, size);
    fuzz_master(s);
    long long t;
    int b;
    static const char units[] = { 's', 'm', 'h', 'd', 'w', 0 };
    for (size_t k = 0; k < sizeof(units); k++)
        if (conf_parse_time(s, units[k], &t, &err) == 0 && t < 0)
            abort();
    (void)conf_parse_bool(s, &b);
    free(s);
    buf_destroy(&err);
    return 0;
}
