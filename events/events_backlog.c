/* events_backlog.c - the lines the events daemon could not write yet.
 *
 * When event_log or the webhook's spool cannot take a line (a full disk,
 * most often), the line waits here, in order, and the next line goes
 * after it: nothing is written out of order. The daemon's one-second tick
 * and every new event try again. The bound is the one the daemons' own
 * event buffers have (EVENTS_BACKLOG_MAX); a line beyond it is dropped
 * and counted, so a disk that stays full costs a fixed amount of memory. */
#include "events/events.h"

#include <string.h>

/* Compact once the written part is this large and half of the buffer. */
#define BACKLOG_COMPACT (64 * 1024)

int events_backlog_push(struct events_backlog *b, const char *line, size_t len)
{
    if (b->data.len - b->head + len > EVENTS_BACKLOG_MAX) {
        b->dropped++;
        return -1;
    }
    buf_append(&b->data, line, len);
    b->lines++;
    return 0;
}

size_t events_backlog_lines(const struct events_backlog *b)
{
    return b->lines;
}

static void compact(struct events_backlog *b)
{
    if (b->head == b->data.len) {
        buf_reset(&b->data);
        b->head = 0;
    } else if (b->head >= BACKLOG_COMPACT && b->head * 2 >= b->data.len) {
        buf_consume(&b->data, b->head);
        b->head = 0;
    }
}

int events_backlog_drain(struct events_backlog *b, events_write_fn *fn, void *arg)
{
    int rc = 0;
    while (b->lines > 0) {
        const char *start = b->data.data + b->head;
        const char *nl = memchr(start, '\n', b->data.len - b->head);
        size_t len = nl ? (size_t)(nl - start) + 1 : b->data.len - b->head;
        if (fn(start, len, arg) < 0) {
            rc = -1;
            break;
        }
        b->head += len;
        b->lines--;
        b->written++;
    }
    compact(b);
    return rc;
}

void events_backlog_reset_counts(struct events_backlog *b)
{
    b->written = 0;
    b->dropped = 0;
}

void events_backlog_destroy(struct events_backlog *b)
{
    buf_destroy(&b->data);
    memset(b, 0, sizeof(*b));
}
