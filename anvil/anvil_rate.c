/* anvil_rate.c - per-client counters for the anvil service: entries in a
 * common/util/htable by ident and on an LRU TAILQ (for expiry and the size
 * cap), fixed rate windows per client, and concurrent counts kept per
 * owner so a vanished smtpd's connections can be released. No I/O here:
 * the daemon (anvil/) and the unit tests drive it with their own clock. */
#include "anvil/anvil_rate.h"

#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/util/htable.h"
#include "common/util/log.h"

struct owner_cnt {
    unsigned long owner;
    long n;
};

#define EVICT_SCAN     64 /* live entries skipped looking for one to evict */
#define TABLE_EXPECTED 1024

struct entry {
    struct hlink hash;      /* t->by_ident */
    TAILQ_ENTRY(entry) lru; /* t->lru, first = most recently used */
    char *ident;
    long long touched; /* last use: LRU order and expiry */
    long long window_start;
    long count;
    long rate[ANVIL_EV_N];
    struct owner_cnt *owners;
    size_t nowners, owners_cap;
};

TAILQ_HEAD(entry_list, entry);

struct anvil_table {
    struct htable by_ident;
    struct entry_list lru;
    size_t max_entries;
    long long window;
    struct anvil_stats stats;
};

struct anvil_table *anvil_table_new(long long window_ms, size_t max_entries)
{
    struct anvil_table *t = xcalloc(1, sizeof *t);
    htable_init(&t->by_ident, TABLE_EXPECTED);
    TAILQ_INIT(&t->lru);
    t->max_entries = max_entries ? max_entries : ANVIL_DEFAULT_MAX_ENTRIES;
    t->window = window_ms > 0 ? window_ms : 1;
    return t;
}

static void entry_free(struct entry *e)
{
    free(e->ident);
    free(e->owners);
    free(e);
}

void anvil_table_free(struct anvil_table *t)
{
    if (t == NULL)
        return;
    struct entry *e;
    while ((e = TAILQ_FIRST(&t->lru)) != NULL) {
        TAILQ_REMOVE(&t->lru, e, lru);
        entry_free(e);
    }
    htable_destroy(&t->by_ident);
    free(t);
}

void anvil_table_set_window(struct anvil_table *t, long long window_ms)
{
    t->window = window_ms > 0 ? window_ms : 1;
}

long long anvil_table_window(const struct anvil_table *t)
{
    return t->window;
}

size_t anvil_table_size(const struct anvil_table *t)
{
    return htable_count(&t->by_ident);
}

const struct anvil_stats *anvil_table_stats(const struct anvil_table *t)
{
    return &t->stats;
}

void anvil_table_stats_reset(struct anvil_table *t)
{
    memset(&t->stats, 0, sizeof t->stats);
}

/* ---- the index and the LRU list ---- */

static void touch(struct anvil_table *t, struct entry *e, long long now)
{
    e->touched = now;
    if (TAILQ_FIRST(&t->lru) != e) {
        TAILQ_REMOVE(&t->lru, e, lru);
        TAILQ_INSERT_HEAD(&t->lru, e, lru);
    }
}

static struct entry *find(const struct anvil_table *t, const char *ident)
{
    unsigned h = htable_hash_str(ident);
    for (struct hlink *l = htable_first(&t->by_ident, h); l; l = htable_next(l, h)) {
        struct entry *e = HTABLE_ENTRY(l, struct entry, hash);
        if (strcmp(e->ident, ident) == 0)
            return e;
    }
    return NULL;
}

static void remove_entry(struct anvil_table *t, struct entry *e)
{
    htable_remove(&t->by_ident, &e->hash);
    TAILQ_REMOVE(&t->lru, e, lru);
    entry_free(e);
}

static struct entry *add_entry(struct anvil_table *t, const char *ident, long long now)
{
    struct entry *e = xcalloc(1, sizeof *e);
    e->ident = xstrdup(ident);
    e->window_start = now;
    htable_insert(&t->by_ident, &e->hash, htable_hash_str(ident));
    TAILQ_INSERT_HEAD(&t->lru, e, lru);
    size_t size = htable_count(&t->by_ident);
    if (size > t->stats.max_size) {
        t->stats.max_size = size;
        t->stats.max_size_at = now;
    }
    return e;
}

static void note_max(struct anvil_max *m, long value, const char *ident, long long now)
{
    if (value <= m->value)
        return;
    m->value = value;
    str_lcpy(m->ident, ident, sizeof m->ident);
    m->at = now;
}

/* A fixed window per client: once it has passed, the rates start over. */
static void roll_window(const struct anvil_table *t, struct entry *e, long long now)
{
    if (now - e->window_start >= t->window) {
        memset(e->rate, 0, sizeof e->rate);
        e->window_start = now;
    }
}

/* Full: drop the least recently used client with no connection open.
 * Evicting a live one would reset its concurrency count and let it past
 * smtpd_client_connection_count_limit; if the oldest entries are all
 * live, the table grows instead (live entries are bounded by the
 * connections smtpd accepts). */
static void make_room(struct anvil_table *t)
{
    if (htable_count(&t->by_ident) < t->max_entries)
        return;
    struct entry *v = TAILQ_LAST(&t->lru, entry_list);
    for (int k = 0; v && v->count > 0 && k < EVICT_SCAN; k++)
        v = TAILQ_PREV(v, entry_list, lru);
    if (v && v->count == 0) {
        remove_entry(t, v);
        t->stats.evicted++;
    }
}

/* Entry for ident, created when missing (dropping the oldest when full);
 * touched and with its window rolled. */
static struct entry *get(struct anvil_table *t, const char *ident, long long now)
{
    struct entry *e = find(t, ident);
    if (e == NULL) {
        make_room(t);
        e = add_entry(t, ident, now);
    }
    touch(t, e, now);
    roll_window(t, e, now);
    return e;
}

static void fill(const struct entry *e, struct anvil_counts *out)
{
    memset(out, 0, sizeof *out);
    if (e == NULL)
        return;
    out->count = e->count;
    memcpy(out->rate, e->rate, sizeof out->rate);
}

/* ---- counting ---- */

static struct owner_cnt *owner_slot(struct entry *e, unsigned long owner, int create)
{
    for (size_t k = 0; k < e->nowners; k++)
        if (e->owners[k].owner == owner)
            return &e->owners[k];
    if (!create)
        return NULL;
    e->owners = xgrow(e->owners, &e->owners_cap, e->nowners + 1, sizeof *e->owners);
    e->owners[e->nowners] = (struct owner_cnt){ owner, 0 };
    return &e->owners[e->nowners++];
}

static void owner_drop(struct entry *e, struct owner_cnt *o)
{
    *o = e->owners[--e->nowners];
}

void anvil_table_connect(struct anvil_table *t, const char *ident, unsigned long owner,
                         long long now, struct anvil_counts *out)
{
    struct entry *e = get(t, ident, now);
    owner_slot(e, owner, 1)->n++;
    e->count++;
    e->rate[ANVIL_EV_CONN]++;
    note_max(&t->stats.count, e->count, ident, now);
    note_max(&t->stats.rate[ANVIL_EV_CONN], e->rate[ANVIL_EV_CONN], ident, now);
    if (out)
        fill(e, out);
}

long anvil_table_disconnect(struct anvil_table *t, const char *ident, unsigned long owner,
                            long long now)
{
    struct entry *e = find(t, ident);
    if (e == NULL)
        return 0;
    struct owner_cnt *o = owner_slot(e, owner, 0);
    if (o == NULL)
        return e->count; /* released already (owner reconnected) or never counted */
    e->count--;
    if (--o->n == 0)
        owner_drop(e, o);
    touch(t, e, now);
    return e->count;
}

long anvil_table_event(struct anvil_table *t, const char *ident, enum anvil_event ev, long long now,
                       struct anvil_counts *out)
{
    if ((unsigned)ev >= ANVIL_EV_N)
        log_panic("anvil_table_event: bad event %d", (int)ev);
    struct entry *e = get(t, ident, now);
    long r = ++e->rate[ev];
    note_max(&t->stats.rate[ev], r, ident, now);
    if (out)
        fill(e, out);
    return r;
}

void anvil_table_lookup(struct anvil_table *t, const char *ident, long long now,
                        struct anvil_counts *out)
{
    struct entry *e = find(t, ident);
    if (e)
        roll_window(t, e, now);
    fill(e, out);
}

long anvil_table_release(struct anvil_table *t, unsigned long owner)
{
    long released = 0;
    struct entry *e;
    TAILQ_FOREACH(e, &t->lru, lru)
    {
        struct owner_cnt *o = owner_slot(e, owner, 0);
        if (o == NULL)
            continue;
        released += o->n;
        e->count -= o->n;
        owner_drop(e, o);
    }
    return released;
}

size_t anvil_table_expire(struct anvil_table *t, long long now)
{
    size_t n = 0;
    struct entry *e = TAILQ_LAST(&t->lru, entry_list);
    while (e && now - e->touched >= t->window) {
        struct entry *prev = TAILQ_PREV(e, entry_list, lru);
        if (e->count == 0 && now - e->window_start >= t->window) {
            remove_entry(t, e);
            n++;
        } else {
            /* Still connected: keep it, and off the end of the list so
             * the next pass does not walk it again. */
            touch(t, e, now);
        }
        e = prev;
    }
    return n;
}

/* ---- the service protocol ---- */

struct req_ctx {
    struct anvil_table *t;
    const char *ident;
    unsigned long owner;
    long long now;
    attr_t *reply;
};

static void do_connect(struct req_ctx *r)
{
    struct anvil_counts c;
    anvil_table_connect(r->t, r->ident, r->owner, r->now, &c);
    attr_add_ll(r->reply, "count", c.count);
    attr_add_ll(r->reply, "rate", c.rate[ANVIL_EV_CONN]);
}

static void do_disconnect(struct req_ctx *r)
{
    attr_add_ll(r->reply, "count", anvil_table_disconnect(r->t, r->ident, r->owner, r->now));
}

static void do_rate(struct req_ctx *r, enum anvil_event ev)
{
    struct anvil_counts c;
    attr_add_ll(r->reply, "rate", anvil_table_event(r->t, r->ident, ev, r->now, &c));
    /* AUTH is refused on either limit: save smtpd a second round trip. */
    if (ev == ANVIL_EV_AUTH)
        attr_add_ll(r->reply, anvil_rate_attr(ANVIL_EV_AUTH_FAIL), c.rate[ANVIL_EV_AUTH_FAIL]);
}

static void do_message(struct req_ctx *r)
{
    do_rate(r, ANVIL_EV_MSG);
}
static void do_recipient(struct req_ctx *r)
{
    do_rate(r, ANVIL_EV_RCPT);
}
static void do_auth(struct req_ctx *r)
{
    do_rate(r, ANVIL_EV_AUTH);
}
static void do_auth_fail(struct req_ctx *r)
{
    do_rate(r, ANVIL_EV_AUTH_FAIL);
}

static void do_lookup(struct req_ctx *r)
{
    struct anvil_counts c;
    anvil_table_lookup(r->t, r->ident, r->now, &c);
    attr_add_ll(r->reply, "count", c.count);
    for (int k = 0; k < ANVIL_EV_N; k++)
        attr_add_ll(r->reply, anvil_rate_attr((enum anvil_event)k), c.rate[k]);
}

static const struct {
    const char *name;
    void (*fn)(struct req_ctx *r);
} handlers[] = {
    { "connect", do_connect }, { "disconnect", do_disconnect },
    { "message", do_message }, { "recipient", do_recipient },
    { "auth", do_auth },       { "auth_fail", do_auth_fail },
    { "lookup", do_lookup },
};

static const char *ident_problem(const char *ident)
{
    if (ident == NULL || *ident == '\0')
        return "missing ident";
    if (strlen(ident) > ANVIL_IDENT_MAX)
        return "ident too long";
    const char *colon = strchr(ident, ':');
    if (colon == NULL || colon == ident || colon[1] == '\0')
        return "ident is not service:address";
    return NULL;
}

static int find_handler(const char *name)
{
    for (size_t k = 0; k < sizeof handlers / sizeof handlers[0]; k++)
        if (strcmp(handlers[k].name, name) == 0)
            return (int)k;
    return -1;
}

enum anvil_req_result anvil_table_request(struct anvil_table *t, unsigned long owner,
                                          const attr_t *req, attr_t *reply, long long now,
                                          const char **why)
{
    attr_clear(reply);
    *why = NULL;
    const char *name = attr_get(req, "request");
    if (name == NULL) {
        *why = "missing request";
        return ANVIL_REQ_MALFORMED;
    }
    if (strcmp(name, "status") == 0) {
        attr_add(reply, "status", "ok");
        attr_add_ll(reply, "size", (long long)anvil_table_size(t));
        return ANVIL_REQ_OK;
    }
    int k = find_handler(name);
    if (k < 0) {
        *why = "unknown request";
        attr_add(reply, "status", "fail");
        attr_add(reply, "reason", *why);
        return ANVIL_REQ_REFUSED;
    }
    const char *ident = attr_get(req, "ident");
    if ((*why = ident_problem(ident)) != NULL)
        return ANVIL_REQ_MALFORMED;
    struct req_ctx r = { t, ident, owner, now, reply };
    attr_add(reply, "status", "ok");
    handlers[k].fn(&r);
    return ANVIL_REQ_OK;
}
