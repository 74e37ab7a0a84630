/* test_mevent.c - the daemons' event client (common/mail/mevent.c) against
 * a real UNIX socket in a temp dir: off without configuration, events
 * buffered while the events service is down and delivered once it is up
 * (the retry timer), the buffer's bound with drops counted, and records a
 * serving conn accepts with proto=1. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/event.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/mail/conf.h"
#include "common/mail/mevent.h"
#include "common/mail/proto.h"
#include "common/util/conn.h"
#include "common/util/ipc.h"
#include "common/util/log.h"

static char tmpdir[64], olddir[PATH_MAX];
static struct event_base *base;

/* The events service's end: counts records of type "delivery". */
static struct {
    int lfd;
    struct event *lev;
    int got;
    struct conn *c;
} srv = { .lfd = -1 };

static enum conn_verdict on_rec(struct conn *c, const attr_t *r, void *arg, const char **why)
{
    const char *t = attr_get(r, "type");
    if (t && strcmp(t, "delivery") == 0 && attr_get(r, "time") && attr_get(r, "recipient"))
        srv.got++;
    return CONN_OK;
}

static void on_cls(struct conn *c, const char *why, void *arg)
{
    srv.c = NULL;
}

static const struct conn_ops sops = { .on_record = on_rec, .on_close = on_cls };

static void on_acc(evutil_socket_t lfd, short what, void *arg)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    struct conn_cfg cfg = { .peer = "test client", .proto = PROTO_VERSION, .serving = 1 };
    if (fd >= 0)
        srv.c = conn_new(base, fd, &cfg, &sops, NULL);
}

static void srv_up(void)
{
    srv.lfd = ipc_listen_unix(SOCK_EVENTS, 0600, 16);
    assert_true(srv.lfd >= 0);
    srv.lev = event_new(base, srv.lfd, EV_READ | EV_PERSIST, on_acc, NULL);
    event_add(srv.lev, NULL);
}

static void srv_down(void)
{
    conn_free(srv.c);
    srv.c = NULL;
    event_free(srv.lev);
    close(srv.lfd);
    unlink(SOCK_EVENTS);
}

static void emit(int n)
{
    attr_t a = ATTR_INIT;
    for (int k = 0; k < n; k++) {
        mevent_begin(&a, "delivery");
        mevent_add(&a, "recipient", "a@example.test");
        mevent_send(&a);
    }
    attr_destroy(&a);
}

static void run_for(int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static void wait_got(int n)
{
    for (int k = 0; k < 50 && srv.got < n; k++)
        run_for(100);
    assert_int_equal(srv.got, n);
}

static void test_off_without_configuration(void **state)
{
    conf_set("event_log", "");
    conf_set("event_webhook_url", "");
    mevent_start(base);
    assert_false(mevent_enabled());
    srv_up();
    emit(3);
    run_for(200);
    assert_int_equal(srv.got, 0);
    assert_null(srv.c); /* not even a connection */
    srv_down();
    mevent_stop();
}

static void test_buffered_while_down(void **state)
{
    srv.got = 0;
    conf_set("event_log", "/nonexistent/events.json");
    mevent_start(base);
    assert_true(mevent_enabled());
    emit(5); /* nobody listens: they wait */
    run_for(100);
    srv_up();
    wait_got(5); /* the retry timer connects and sends them */
    emit(2);
    wait_got(7);
    assert_int_equal(mevent_dropped(), 0);
    srv_down();
    mevent_stop();
}

static void test_bounded_buffer(void **state)
{
    srv.got = 0;
    mevent_start(base);
    /* some 100 bytes each: 4 MiB hold about 40000 */
    emit(60000);
    assert_true(mevent_dropped() > 0);
    unsigned long dropped = mevent_dropped();
    srv_up();
    wait_got(60000 - (int)dropped);
    srv_down();
    mevent_stop();
}

static int setup(void **state)
{
    buf_t err = BUF_INIT;
    assert_int_equal(conf_load_text("", 0, "/nonexistent/main.cf", &err), 0);
    buf_destroy(&err);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_mevent.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    assert_non_null(getcwd(olddir, sizeof(olddir)));
    assert_int_equal(chdir(tmpdir), 0);
    assert_int_equal(mkdir("private", 0700), 0);
    base = event_base_new();
    return 0;
}

static int teardown(void **state)
{
    event_base_free(base);
    rmdir("private");
    assert_int_equal(chdir(olddir), 0);
    rmdir(tmpdir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_without_configuration),
        cmocka_unit_test(test_buffered_while_down),
        cmocka_unit_test(test_bounded_buffer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
