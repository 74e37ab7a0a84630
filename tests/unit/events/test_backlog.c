/* test_backlog.c - the lines a full disk keeps back (events_backlog.c):
 * written in order, a failed line and those after it wait, the bound
 * drops and counts, and the counts are what the recovery line says. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "events/events.h"

/* A sink that takes `room` lines, then fails with ENOSPC. */
struct sink {
    buf_t got;
    int room;
};

static int sink_write(const char *line, size_t len, void *arg)
{
    struct sink *s = arg;
    if (s->room == 0) {
        errno = ENOSPC;
        return -1;
    }
    s->room--;
    buf_append(&s->got, line, len);
    return 0;
}

static void test_in_order_and_partly(void **state)
{
    struct events_backlog b = { BUF_INIT, 0, 0, 0, 0 };
    struct sink s = { BUF_INIT, 1 };
    assert_int_equal(events_backlog_push(&b, "a\n", 2), 0);
    assert_int_equal(events_backlog_push(&b, "bb\n", 3), 0);
    assert_int_equal(events_backlog_push(&b, "ccc\n", 4), 0);
    assert_int_equal(events_backlog_lines(&b), 3);
    assert_int_equal(events_backlog_drain(&b, sink_write, &s), -1);
    assert_string_equal(buf_str(&s.got), "a\n");
    assert_int_equal(events_backlog_lines(&b), 2);
    s.room = 10;
    assert_int_equal(events_backlog_push(&b, "d\n", 2), 0);
    assert_int_equal(events_backlog_drain(&b, sink_write, &s), 0);
    assert_string_equal(buf_str(&s.got), "a\nbb\nccc\nd\n");
    assert_int_equal(events_backlog_lines(&b), 0);
    assert_int_equal(b.written, 4);
    assert_int_equal(b.dropped, 0);
    events_backlog_reset_counts(&b);
    assert_int_equal(b.written, 0);
    /* empty: nothing to write, success */
    assert_int_equal(events_backlog_drain(&b, sink_write, &s), 0);
    events_backlog_destroy(&b);
    buf_destroy(&s.got);
}

static void test_bound_drops_and_counts(void **state)
{
    struct events_backlog b = { BUF_INIT, 0, 0, 0, 0 };
    struct sink s = { BUF_INIT, 0 };
    static char line[1024];
    size_t n = 0;
    memset(line, 'x', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\n';
    while (events_backlog_push(&b, line, sizeof(line)) == 0)
        n++;
    assert_int_equal(n, EVENTS_BACKLOG_MAX / sizeof(line));
    assert_int_equal(b.dropped, 1);
    assert_int_equal(events_backlog_push(&b, line, sizeof(line)), -1);
    assert_int_equal(b.dropped, 2);
    /* half written: room for new lines again, the old ones still first */
    s.room = (int)(n / 2);
    assert_int_equal(events_backlog_drain(&b, sink_write, &s), -1);
    assert_int_equal(events_backlog_lines(&b), n - n / 2);
    assert_int_equal(events_backlog_push(&b, "last\n", 5), 0);
    s.room = (int)n;
    buf_reset(&s.got);
    assert_int_equal(events_backlog_drain(&b, sink_write, &s), 0);
    assert_int_equal(s.got.len, (n - n / 2) * sizeof(line) + 5);
    assert_memory_equal(s.got.data + s.got.len - 5, "last\n", 5);
    assert_int_equal(b.written, n + 1);
    events_backlog_destroy(&b);
    buf_destroy(&s.got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_order_and_partly),
        cmocka_unit_test(test_bound_drops_and_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
