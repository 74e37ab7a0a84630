/* test_ipc.c - listeners and connects on real loopback / UNIX sockets in a
 * temp directory; host:port splitting; peer credentials. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util/buf.h"
#include "common/util/ipc.h"

static void test_split(void **state)
{
    static const struct {
        const char *in;
        int rc;
        const char *host;
        int port;
    } cases[] = {
        { "mx.example.com", 0, "mx.example.com", 25 },
        { "mx.example.com:587", 0, "mx.example.com", 587 },
        { "[192.0.2.1]", 0, "192.0.2.1", 25 },
        { "[192.0.2.1]:2525", 0, "192.0.2.1", 2525 },
        { "[::1]:26", 0, "::1", 26 },
        { "2001:db8::1", 0, "2001:db8::1", 25 },
        { "host:0", -1, NULL, 0 },
        { "host:70000", -1, NULL, 0 },
        { "host:x", -1, NULL, 0 },
        { "[::1", -1, NULL, 0 },
        { "[::1]x", -1, NULL, 0 },
        { "", -1, NULL, 0 },
    };
    buf_t host = BUF_INIT;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        int port = 0;
        int rc = ipc_split_hostport(cases[k].in, &host, &port, 25);
        if (rc != cases[k].rc)
            fail_msg("\"%s\": rc %d", cases[k].in, rc);
        if (rc == 0 && (strcmp(buf_str(&host), cases[k].host) != 0 || port != cases[k].port))
            fail_msg("\"%s\": %s %d", cases[k].in, buf_str(&host), port);
    }
    buf_destroy(&host);
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    int port = 0;
    ipc_addr_text((struct sockaddr *)&ss, NULL, &port);
    return port;
}

static void test_listen_inet(void **state)
{
    buf_t err = BUF_INIT, host = BUF_INIT;
    int fd = ipc_listen_inet("127.0.0.1:0", 10, &err);
    /* port 0 is refused: a listener must name its port */
    assert_int_equal(fd, -1);
    /* pick a free port by binding an ephemeral one, then reuse it */
    int tmp = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(tmp, (struct sockaddr *)&sin, sizeof(sin)), 0);
    int port = bound_port(tmp);
    close(tmp);
    char spec[64];
    snprintf(spec, sizeof(spec), "127.0.0.1:%d", port);
    fd = ipc_listen_inet(spec, 10, &err);
    assert_true(fd >= 0);
    assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    assert_int_equal(bound_port(fd), port);
    /* a real client connects and we see its address */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    sin.sin_port = htons((uint16_t)port);
    assert_int_equal(connect(c, (struct sockaddr *)&sin, sizeof(sin)), 0);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int a = accept(fd, (struct sockaddr *)&ss, &len);
    assert_true(a >= 0);
    ipc_addr_text((struct sockaddr *)&ss, &host, NULL);
    assert_string_equal(host.data, "127.0.0.1");
    close(a);
    close(c);
    /* same port again while listening: fails with a message */
    assert_int_equal(ipc_listen_inet(spec, 10, &err), -1);
    assert_non_null(strstr(err.data, "cannot listen"));
    close(fd);
    snprintf(spec, sizeof(spec), "%d", port);
    fd = ipc_listen_inet(spec, 10, &err);
    assert_true(fd >= 0);
    close(fd);
    snprintf(spec, sizeof(spec), "*:%d", port);
    fd = ipc_listen_inet(spec, 10, &err);
    assert_true(fd >= 0);
    close(fd);
    snprintf(spec, sizeof(spec), "[::1]:%d", port);
    fd = ipc_listen_inet(spec, 10, &err);
    assert_true(fd >= 0);
    assert_int_equal(bound_port(fd), port);
    close(fd);
    static const char *bad[] = { "", "localhost:x", "nohost", "999999", "example.com:25" };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
        if (ipc_listen_inet(bad[k], 10, &err) != -1)
            fail_msg("listened on \"%s\"", bad[k]);
    buf_destroy(&err);
    buf_destroy(&host);
}

static void test_unix(void **state)
{
    char dir[] = "/tmp/postino-test-ipc-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/sock", dir);
    /* a stale file at the path is replaced */
    FILE *fp = fopen(path, "w");
    fclose(fp);
    int l = ipc_listen_unix(path, 0622, 5);
    assert_true(l >= 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0622);
    int c = ipc_connect_unix(path);
    assert_true(c >= 0);
    int a = accept(l, NULL, NULL);
    assert_true(a >= 0);
    uid_t uid;
    gid_t gid;
    pid_t pid;
    assert_int_equal(ipc_peer_cred(a, &uid, &gid, &pid), 0);
    assert_int_equal(uid, getuid());
    assert_int_equal(pid, getpid());
    close(a);
    close(c);
    close(l);
    unlink(path);
    assert_int_equal(ipc_connect_unix(path), -1);
    rmdir(dir);
}

/* More than a pipe holds, written by a writer blocked until a reader drains it. */
static void test_write_all(void **state)
{
    (void)state;
    int fds[2];
    size_t n = 200000, got = 0;
    char *big = malloc(n), chunk[4096];
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        _exit(ipc_write_all(fds[1], big, n) == 0 ? 0 : 1);
    }
    close(fds[1]);
    ssize_t r;
    while ((r = read(fds[0], chunk, sizeof chunk)) > 0) {
        assert_memory_equal(chunk, big + got, (size_t)r);
        got += (size_t)r;
    }
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(got, n);
    /* a closed reader: an error, not a loop */
    assert_int_equal(pipe(fds), 0);
    close(fds[0]);
    signal(SIGPIPE, SIG_IGN);
    assert_int_equal(ipc_write_all(fds[1], big, n), -1);
    close(fds[1]);
    free(big);
}

/* Postfix's delay shapes: "0", two decimals below 1 s, one below 10 s. */
static void test_put_delay(void **state)
{
    (void)state;
    static const struct {
        double secs;
        const char *want;
    } cases[] = { { 0, "0" },      { 0.004, "0" },  { 0.02, "0.02" }, { 0.5, "0.50" },
                  { 1.23, "1.2" }, { 9.94, "9.9" }, { 23.4, "23" },   { 3600, "3600" } };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf_t b = BUF_INIT;
        buf_put_delay(&b, cases[i].secs);
        assert_string_equal(buf_str(&b), cases[i].want);
        buf_destroy(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),     cmocka_unit_test(test_listen_inet),
        cmocka_unit_test(test_unix),      cmocka_unit_test(test_write_all),
        cmocka_unit_test(test_put_delay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
