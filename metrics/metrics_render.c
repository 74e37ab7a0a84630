/* metrics_render.c - the Prometheus text exposition format, version 0.0.4:
 * for each metric of the catalogue a "# HELP" and a "# TYPE" line, then
 * its samples "name{label="value",...} number". Label values escape
 * backslash, double quote and line feed; HELP texts backslash and line
 * feed. A metric without labels always has a sample (0 before anything
 * happened), so "absent" never means "none yet". */
#include "metrics/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void metrics_escape_label(buf_t *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            buf_puts(out, "\\\\");
        else if (*v == '"')
            buf_puts(out, "\\\"");
        else if (*v == '\n')
            buf_puts(out, "\\n");
        else
            buf_putc(out, *v);
    }
}

static void escape_help(buf_t *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            buf_puts(out, "\\\\");
        else if (*v == '\n')
            buf_puts(out, "\\n");
        else
            buf_putc(out, *v);
    }
}

void metrics_format_value(buf_t *out, double v)
{
    if (isinf(v))
        buf_puts(out, v > 0 ? "+Inf" : "-Inf");
    else if (isnan(v))
        buf_puts(out, "NaN");
    else if (v == (double)(long long)v && fabs(v) < 1e15)
        buf_printf(out, "%lld", (long long)v);
    else {
        /* the shortest of 15 and 17 digits that reads back as v (0.1, not
         * 0.10000000000000001) */
        char b[40];
        snprintf(b, sizeof(b), "%.15g", v);
        if (strtod(b, NULL) != v)
            snprintf(b, sizeof(b), "%.17g", v);
        buf_puts(out, b);
    }
}

/* name{l1="v1",l2="v2"[,le="B"]} value */
static void sample(buf_t *out, const char *name, const char *suffix, const struct metric_def *d,
                   const char *const *labels, const char *le, double v)
{
    int any = 0;

    buf_printf(out, "%s%s", name, suffix);
    for (size_t i = 0; i < d->nlabels; i++) {
        buf_puts(out, any++ ? "," : "{");
        buf_printf(out, "%s=\"", d->labels[i]);
        metrics_escape_label(out, labels[i] ? labels[i] : "");
        buf_putc(out, '"');
    }
    if (le) {
        buf_puts(out, any++ ? "," : "{");
        buf_printf(out, "le=\"%s\"", le);
    }
    buf_puts(out, any ? "} " : " ");
    metrics_format_value(out, v);
    buf_putc(out, '\n');
}

static void header(buf_t *out, const struct metric_def *d)
{
    static const char *const type[] = {
        [METRIC_COUNTER] = "counter",
        [METRIC_GAUGE] = "gauge",
        [METRIC_HISTOGRAM] = "histogram",
    };

    buf_printf(out, "# HELP %s ", d->name);
    escape_help(out, d->help);
    buf_printf(out, "\n# TYPE %s %s\n", d->name, type[d->type]);
}

static void histogram(buf_t *out, const struct metric_def *d, const struct metrics_series *s)
{
    const char *const *labels = (const char *const *)s->labels;
    unsigned long long cum = 0;
    char le[32];

    for (size_t i = 0; i < metric_latency_nbuckets; i++) {
        buf_t b = BUF_INIT;
        cum += s->bucket[i];
        metrics_format_value(&b, metric_latency_buckets[i]);
        str_lcpy(le, buf_str(&b), sizeof(le));
        buf_destroy(&b);
        sample(out, d->name, "_bucket", d, labels, le, (double)cum);
    }
    sample(out, d->name, "_bucket", d, labels, "+Inf", (double)s->count);
    sample(out, d->name, "_sum", d, labels, NULL, s->value);
    sample(out, d->name, "_count", d, labels, NULL, (double)s->count);
}

static void stored(buf_t *out, enum metric_id id)
{
    const struct metric_def *d = &metric_table[id];
    const struct metrics_series *s = metrics_store_first(id);
    static const struct metrics_series zero;

    if (s == NULL && d->nlabels == 0)
        s = &zero;
    for (; s; s = STAILQ_NEXT(s, link)) {
        if (d->type == METRIC_HISTOGRAM)
            histogram(out, d, s);
        else
            sample(out, d->name, "", d, (const char *const *)s->labels, NULL, s->value);
    }
}

int metrics_gauge_ok(const attr_t *rec)
{
    const char *name = attr_get(rec, "metric"), *v = attr_get(rec, "value");
    int id = name ? metric_find(name) : -1;
    size_t n = 0, pos = 0;
    char *end;

    if (id < 0 || metric_table[id].source != METRIC_FROM_QMGR || v == NULL || *v == '\0')
        return 0;
    double x = strtod(v, &end);
    if (*end != '\0' || !isfinite(x))
        return 0;
    while (attr_next(rec, "label", &pos) != NULL)
        n++;
    return n == metric_table[id].nlabels;
}

static void gauges_of(buf_t *out, enum metric_id id, const attr_t *g, size_t ng)
{
    const struct metric_def *d = &metric_table[id];

    for (size_t i = 0; i < ng; i++) {
        const char *labels[METRIC_LABELS_MAX] = { NULL };
        size_t pos = 0, n = 0;
        if (strcmp(attr_get(&g[i], "metric"), d->name) != 0)
            continue;
        while (n < METRIC_LABELS_MAX && (labels[n] = attr_next(&g[i], "label", &pos)) != NULL)
            n++;
        sample(out, d->name, "", d, labels, NULL, strtod(attr_get(&g[i], "value"), NULL));
    }
}

void metrics_render(buf_t *out, const attr_t *gauges, size_t ngauges, int qmgr_up)
{
    for (int id = 0; id < METRIC_COUNT; id++) {
        const struct metric_def *d = &metric_table[id];
        header(out, d);
        if (d->source == METRIC_FROM_DAEMONS)
            stored(out, (enum metric_id)id);
        else if (d->source == METRIC_FROM_QMGR)
            gauges_of(out, (enum metric_id)id, gauges, ngauges);
        else
            sample(out, d->name, "", d, NULL, NULL, qmgr_up ? 1 : 0);
    }
}
