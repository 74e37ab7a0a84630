/* events_json.c - an event record from a daemon -> one JSON object line.
 *
 * The field table is the schema (docs/events.schema.json says the same
 * for readers): every name a daemon may send, and whether its value is a
 * string, an integer or a decimal number. The record's time= (seconds
 * since the epoch, as the sender saw the event) becomes "timestamp" in
 * RFC 3339 UTC. Strings are made valid UTF-8 (a remote server's reply may
 * carry any bytes) and escaped per RFC 8259. */
#include "events/events.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util/utf8.h"

enum jtype { J_STR, J_INT, J_NUM };

static const struct field {
    const char *name;
    enum jtype type;
} fields[] = {
    { "queue_id", J_STR },
    { "message_id", J_STR },
    { "sender", J_STR },
    { "recipient", J_STR },
    { "site", J_STR },
    { "source_address", J_STR },
    { "remote_host", J_STR },
    { "remote_ip", J_STR },
    { "client_host", J_STR },
    { "client_ip", J_STR },
    { "relay", J_STR },
    { "reply_code", J_INT },
    { "dsn", J_STR },
    { "reply", J_STR },
    { "category", J_STR },
    { "tls_version", J_STR },
    { "tls_cipher", J_STR },
    { "size", J_INT },
    { "attempt", J_INT },
    { "delay", J_NUM },
    { "delays", J_STR },
    { "report_type", J_STR },
    { "original_queue_id", J_STR },
    { "sasl_username", J_STR },
};

static const char *const types[] = {
    "reception",  "delivery",    "transient_failure", "bounce",
    "expiration", "suppression", "feedback",          "oob_bounce",
};

static const struct field *field_of(const char *name)
{
    for (size_t k = 0; k < sizeof(fields) / sizeof(fields[0]); k++)
        if (strcmp(fields[k].name, name) == 0)
            return &fields[k];
    return NULL;
}

static int type_known(const char *t)
{
    for (size_t k = 0; k < sizeof(types) / sizeof(types[0]); k++)
        if (strcmp(types[k], t) == 0)
            return 1;
    return 0;
}

static void json_str(buf_t *out, const char *s)
{
    buf_t clean = BUF_INIT;
    utf8_sanitize(&clean, s, strlen(s), '?');
    buf_putc(out, '"');
    for (const unsigned char *p = (const unsigned char *)buf_str(&clean); *p; p++) {
        if (*p == '"' || *p == '\\') {
            buf_putc(out, '\\');
            buf_putc(out, *p);
        } else if (*p == '\n') {
            buf_puts(out, "\\n");
        } else if (*p == '\t') {
            buf_puts(out, "\\t");
        } else if (*p == '\r') {
            buf_puts(out, "\\r");
        } else if (*p < 0x20 || *p == 0x7f) {
            buf_printf(out, "\\u%04x", *p);
        } else {
            buf_putc(out, *p);
        }
    }
    buf_putc(out, '"');
    buf_destroy(&clean);
}

/* Digits only (J_INT), or digits with one '.' (J_NUM): nothing JSON
 * would read differently. */
static int number_ok(const char *v, enum jtype t)
{
    int dots = 0, digits = 0;
    for (const char *p = v; *p; p++) {
        if (*p >= '0' && *p <= '9')
            digits++;
        else if (*p == '.' && t == J_NUM && digits > 0 && dots++ == 0)
            continue;
        else
            return 0;
    }
    return digits > 0 && digits <= 18 && v[strlen(v) - 1] != '.' &&
           !(v[0] == '0' && v[1] && v[1] != '.');
}

/* "2026-11-30T19:02:03.456Z" from "1796065323.456". */
static int timestamp(const char *v, buf_t *out)
{
    char *end;
    long long secs = strtoll(v, &end, 10);
    long ms = 0;
    struct tm tm;
    char day[32];
    if (end == v || secs < 0 || (*end && *end != '.'))
        return -1;
    if (*end == '.') {
        const char *f = end + 1;
        for (int k = 0; k < 3; k++)
            ms = ms * 10 + (*f >= '0' && *f <= '9' ? *f++ - '0' : 0);
    }
    time_t t = (time_t)secs;
    if (gmtime_r(&t, &tm) == NULL)
        return -1;
    strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
    buf_printf(out, "\"%s.%03ldZ\"", day, ms);
    return 0;
}

int events_json(const attr_t *rec, buf_t *out, const char **why)
{
    const char *type = attr_get(rec, "type"), *t = attr_get(rec, "time");
    size_t start = out->len;
    if (type == NULL || !type_known(type) || t == NULL) {
        *why = type == NULL ? "event without type"
               : t == NULL  ? "event without time"
                            : "unknown event type";
        return -1;
    }
    buf_puts(out, "{\"type\":");
    json_str(out, type);
    buf_puts(out, ",\"timestamp\":");
    if (timestamp(t, out) < 0) {
        *why = "malformed time";
        buf_truncate(out, start);
        return -1;
    }
    for (size_t k = 0; k < rec->n; k++) {
        const char *n = rec->v[k].name, *v = rec->v[k].value;
        if (!strcmp(n, "proto") || !strcmp(n, "request") || !strcmp(n, "type") ||
            !strcmp(n, "time"))
            continue;
        const struct field *f = field_of(n);
        if (f == NULL || (f->type != J_STR && !number_ok(v, f->type))) {
            *why = f == NULL ? "unknown event field" : "malformed number in event";
            buf_truncate(out, start);
            return -1;
        }
        buf_printf(out, ",\"%s\":", n);
        if (f->type == J_STR)
            json_str(out, v);
        else
            buf_puts(out, v);
    }
    buf_puts(out, "}\n");
    return 0;
}
