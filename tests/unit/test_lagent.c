/* test_lagent.c - the final delivery agents' message writer (CRLF to LF,
 * mbox From_ line and >From quoting, Return-Path/Delivered-To first) and
 * the symlink-refusing directory walk, on real files in a temp dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/mail/lagent.h"

static char tmpdir[] = "/tmp/test_lagent.XXXXXX";

static const char content[] = "Received: from x\r\n"
                              "Subject: hi\r\n"
                              "\r\n"
                              "From the start\r\n"
                              ">From quoted\r\n"
                              "last";

static char *copy_out(int mbox, const char *rp, const char *dt)
{
    struct lagent_job job;
    char in[600], out[600];
    static char got[4096];
    int ifd, ofd;
    ssize_t n;

    memset(&job, 0, sizeof(job));
    qenv_init(&job.env);
    qenv_set(&job.env.sender, "s@example.org");
    snprintf(in, sizeof(in), "%s/in", tmpdir);
    snprintf(out, sizeof(out), "%s/out", tmpdir);
    ifd = open(in, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(ifd >= 0);
    assert_int_equal(write(ifd, "XXXX", 4), 4);
    assert_int_equal(write(ifd, content, strlen(content)), (ssize_t)strlen(content));
    job.fd = ifd;
    job.env.content_off = 4;
    job.content_len = (long long)strlen(content);
    ofd = open(out, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(ofd >= 0);
    assert_int_equal(lagent_copy(&job, ofd, rp, dt, mbox), 0);
    n = pread(ofd, got, sizeof(got) - 1, 0);
    assert_true(n > 0);
    got[n] = '\0';
    close(ifd);
    close(ofd);
    qenv_destroy(&job.env);
    return got;
}

static void test_copy_maildir(void **state)
{
    assert_string_equal(copy_out(0, "s@example.org", "u@example.test"),
                        "Return-Path: <s@example.org>\n"
                        "Delivered-To: u@example.test\n"
                        "Received: from x\nSubject: hi\n\nFrom the start\n>From quoted\nlast\n");
}

static void test_copy_mbox(void **state)
{
    char *got = copy_out(1, NULL, "u@example.test");
    assert_true(strncmp(got, "From s@example.org ", 19) == 0);
    got = strchr(got, '\n') + 1;
    assert_string_equal(got, "Delivered-To: u@example.test\n"
                             "Received: from x\nSubject: hi\n\n>From the start\n>From quoted\n"
                             "last\n\n");
}

static void test_open_dir_refuses_symlinks(void **state)
{
    char p[600], t[600];
    int fd;

    snprintf(p, sizeof(p), "%s/real/a/b", tmpdir);
    fd = lagent_open_dir(AT_FDCWD, p, 1);
    assert_true(fd >= 0);
    close(fd);
    snprintf(t, sizeof(t), "%s/real", tmpdir);
    snprintf(p, sizeof(p), "%s/link", tmpdir);
    assert_int_equal(symlink(t, p), 0);
    snprintf(p, sizeof(p), "%s/link/a", tmpdir);
    errno = 0;
    assert_int_equal(lagent_open_dir(AT_FDCWD, p, 1), -1);
    assert_true(errno == ELOOP || errno == ENOTDIR);
    snprintf(p, sizeof(p), "%s/real/../real", tmpdir);
    assert_int_equal(lagent_open_dir(AT_FDCWD, p, 0), -1);
}

static int setup(void **state)
{
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_maildir),
        cmocka_unit_test(test_copy_mbox),
        cmocka_unit_test(test_open_dir_refuses_symlinks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
