/* test_log.c - the log module: syslog facility names (syslog_facility)
 * and the shape of a line written to a file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "common/util/log.h"

static void test_facility_names(void **state)
{
    static const struct {
        const char *name;
        int code;
    } good[] = {
        { "mail", LOG_MAIL },     { "user", LOG_USER },         { "daemon", LOG_DAEMON },
        { "auth", LOG_AUTH },     { "authpriv", LOG_AUTHPRIV }, { "local0", LOG_LOCAL0 },
        { "local1", LOG_LOCAL1 }, { "local2", LOG_LOCAL2 },     { "local3", LOG_LOCAL3 },
        { "local4", LOG_LOCAL4 }, { "local5", LOG_LOCAL5 },     { "local6", LOG_LOCAL6 },
        { "local7", LOG_LOCAL7 }, { "MAIL", LOG_MAIL },         { "Local5", LOG_LOCAL5 },
        { "cron", LOG_CRON },     { "syslog", LOG_SYSLOG },     { "uucp", LOG_UUCP },
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (log_facility_code(good[i].name) != good[i].code)
            fail_msg("%s: got %d, want %d", good[i].name, log_facility_code(good[i].name),
                     good[i].code);
    static const char *const bad[] = { "",          "local8",   "local", "mail ", " mail",
                                       "mail,user", "LOG_MAIL", "16",    "bogus" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (log_facility_code(bad[i]) != -1)
            fail_msg("\"%s\" accepted as a facility", bad[i]);
    assert_int_equal(log_facility_code(NULL), -1);
}

/* Setting a facility does not disturb file logging. */
static void test_file_line(void **state)
{
    char path[] = "/tmp/postino-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    log_init("unit");
    log_set_syslog_name("postino-test");
    log_set_facility(LOG_LOCAL3);
    log_set_fd(fd);
    log_warn("hello %d", 42);
    log_set_fd(-1);
    char text[512] = "";
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    assert_true(n > 0);
    text[n] = '\0';
    close(fd);
    unlink(path);
    assert_non_null(strstr(text, " postino-test/unit["));
    assert_non_null(strstr(text, "]: warning: hello 42\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_facility_names),
        cmocka_unit_test(test_file_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
