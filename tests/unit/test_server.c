/* test_server.c - the daemon skeleton run for real in a child process: a
 * listening socket on fd 3, -o overrides, accept events, wakeup timer,
 * SIGTERM shutdown with exit status 0, fatal exit on bad options, and
 * SIGHUP and SIGQUIT: a reload in place (main.cf read again, -o kept) or
 * a retirement. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/mail/conf.h"
#include "common/util/log.h"
#include "common/mail/server.h"

static char tmpdir[] = "/tmp/postino-test-server-XXXXXX";
static int wakeups;

static void on_accept(struct server *s, int fd, int idx)
{
    char line[128];
    int n = snprintf(line, sizeof(line), "hello %lld %s %d %d\n", conf_int("smtpd_timeout"),
                     s->service, idx, wakeups);
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    close(fd);
}

static void on_wakeup(struct server *s)
{
    wakeups++;
}

static int reloads, retired;

/* "<smtpd_timeout> <smtpd_hard_error_limit> <reloads>" */
static void on_accept_reload(struct server *s, int fd, int idx)
{
    char line[128];
    int n = snprintf(line, sizeof(line), "%lld %lld %d\n", conf_int("smtpd_timeout"),
                     conf_int("smtpd_hard_error_limit"), reloads);
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    close(fd);
}

static void on_reload(struct server *s)
{
    reloads++;
}

static void on_retire(struct server *s)
{
    retired = 1;
    server_stop_accepting(s);
    server_exit(s);
}

/* The child's exit status: server_main's, plus 40 once on_retire ran. */
static pid_t start_hooks(int lfd, const char *const *extra, const struct server_hooks *h)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    if (lfd != 3) {
        dup2(lfd, 3);
        close(lfd);
    }
    char *argv[32] = { "test_server", "-c", tmpdir, "-n", "svc", "-t", "inet", "-s", "1" };
    int n = 9;
    for (int k = 0; extra[k] && n < 30; k++)
        argv[n++] = (char *)extra[k];
    argv[n] = NULL;
    int rc = server_main(n, argv, "test", h, NULL);
    _exit(rc + (retired ? 40 : 0));
}

static pid_t start(int lfd, const char *const *extra)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    if (lfd != 3) {
        dup2(lfd, 3);
        close(lfd);
    }
    char *argv[32] = { "test_server", "-c", tmpdir, "-n", "svc", "-t", "inet", "-s", "1" };
    int n = 9;
    for (int k = 0; extra[k] && n < 30; k++)
        argv[n++] = (char *)extra[k];
    argv[n] = NULL;
    struct server_hooks h = { .on_accept = on_accept, .on_wakeup = on_wakeup };
    _exit(server_main(n, argv, "test", &h, NULL));
}

static int listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(fd, 10), 0);
    socklen_t len = sizeof(sin);
    getsockname(fd, (struct sockaddr *)&sin, &len);
    *port = ntohs(sin.sin_port);
    return fd;
}

static void talk(int port, char *out, size_t size)
{
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET,
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                               .sin_port = htons((uint16_t)port) };
    assert_int_equal(connect(c, (struct sockaddr *)&sin, sizeof(sin)), 0);
    size_t got = 0;
    ssize_t r;
    while (got < size - 1 && (r = read(c, out + got, size - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    close(c);
}

static void test_accept_wakeup_term(void **state)
{
    int port;
    int lfd = listener(&port);
    const char *const extra[] = { "-o", "smtpd_timeout=7s", "-w", "1", NULL };
    pid_t pid = start(lfd, extra);
    close(lfd);
    char line[128];
    talk(port, line, sizeof(line));
    assert_string_equal(line, "hello 7 svc 0 0\n");
    usleep(1300 * 1000);
    talk(port, line, sizeof(line));
    assert_true(strncmp(line, "hello 7 svc 0 ", 14) == 0 && line[14] >= '1');
    assert_int_equal(kill(pid, SIGTERM), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_fatal_options(void **state)
{
    static const char *const bad[][4] = {
        { "-o", "no_such_param=1", NULL },
        { "-o", "smtpd_timeout=0", NULL },
        { "-s", "99", NULL },
        { "stray", NULL },
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        int port;
        int lfd = listener(&port);
        pid_t pid = start(lfd, bad[k]);
        close(lfd);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 1)
            fail_msg("case %zu: status %d", k, status);
    }
}

static void write_main_cf(const char *extra)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/main.cf", tmpdir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "queue_directory = var\nmaillog_file = log\nmyhostname = t.example\n%s", extra);
    fclose(fp);
}

/* Ask until the answer is the expected one: the daemon takes the signal
 * from its event loop, maybe after an accept that was ready too. */
static void talk_until(int port, const char *want)
{
    char line[128] = "";
    for (int k = 0; k < 200 && strcmp(line, want) != 0; k++) {
        usleep(10 * 1000);
        talk(port, line, sizeof(line));
    }
    assert_string_equal(line, want);
}

static void stop_child(pid_t pid, int want_status)
{
    int status;
    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), want_status);
}

static void test_sighup_reload_in_place(void **state)
{
    int port;
    int lfd = listener(&port);
    const char *const extra[] = { "-o", "smtpd_hard_error_limit=7", NULL };
    struct server_hooks h = { .on_accept = on_accept_reload, .on_reload = on_reload };
    write_main_cf("");
    pid_t pid = start_hooks(lfd, extra, &h);
    close(lfd);
    talk_until(port, "300 7 0\n");
    write_main_cf("smtpd_timeout = 9s\nsmtpd_hard_error_limit = 2\n");
    assert_int_equal(kill(pid, SIGHUP), 0);
    /* The new main.cf, and the -o override still over it. */
    talk_until(port, "9 7 1\n");
    /* A main.cf that no longer parses: the old values stay. */
    write_main_cf("smtpd_timeout = banana\n");
    assert_int_equal(kill(pid, SIGHUP), 0);
    usleep(200 * 1000);
    talk_until(port, "9 7 1\n");
    write_main_cf("");
    stop_child(pid, 0);
}

static void test_sighup_retires(void **state)
{
    int port;
    int lfd = listener(&port);
    const char *const none[] = { NULL };
    struct server_hooks h = { .on_accept = on_accept_reload, .on_retire = on_retire };
    pid_t pid = start_hooks(lfd, none, &h);
    close(lfd);
    talk_until(port, "300 20 0\n");
    assert_int_equal(kill(pid, SIGHUP), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 40);
}

/* A daemon that can reload in place still retires on SIGQUIT: master
 * replaces it when its master.cf row changed. */
static void test_sigquit_retires_reloadable(void **state)
{
    int port;
    int lfd = listener(&port);
    const char *const none[] = { NULL };
    struct server_hooks h = { .on_accept = on_accept_reload,
                              .on_reload = on_reload,
                              .on_retire = on_retire };
    pid_t pid = start_hooks(lfd, none, &h);
    close(lfd);
    talk_until(port, "300 20 0\n");
    assert_int_equal(kill(pid, SIGQUIT), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 40);
}

/* Without on_reload or on_retire a reload stops the daemon like SIGTERM;
 * a SIGHUP sent before the handler is armed waits for it (blocked). */
static void test_sighup_default_stops(void **state)
{
    int port;
    int lfd = listener(&port);
    const char *const none[] = { NULL };
    sigset_t hup, old;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    sigaddset(&hup, SIGQUIT);
    sigprocmask(SIG_BLOCK, &hup, &old); /* as master spawns */
    pid_t pid = start(lfd, none);
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(lfd);
    assert_int_equal(kill(pid, SIGHUP), 0); /* most likely still starting */
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static int setup(void **state)
{
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    char path[256];
    snprintf(path, sizeof(path), "%s/main.cf", tmpdir);
    FILE *fp = fopen(path, "w");
    if (fp == NULL)
        return -1;
    fprintf(fp, "queue_directory = var\nmaillog_file = log\nmyhostname = t.example\n");
    fclose(fp);
    snprintf(path, sizeof(path), "%s/var", tmpdir);
    return mkdir(path, 0700);
}

static int teardown(void **state)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/var", tmpdir);
    rmdir(path);
    snprintf(path, sizeof(path), "%s/main.cf", tmpdir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/log", tmpdir);
    unlink(path);
    return rmdir(tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_wakeup_term),
        cmocka_unit_test(test_fatal_options),
        cmocka_unit_test(test_sighup_reload_in_place),
        cmocka_unit_test(test_sighup_retires),
        cmocka_unit_test(test_sigquit_retires_reloadable),
        cmocka_unit_test(test_sighup_default_stops),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
