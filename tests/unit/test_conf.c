/* test_conf.c - main.cf and master.cf parsing on real files in a temp
 * directory: expansion, continuation, comments, warnings, exact error
 * messages with file and line, relative paths, master.cf columns. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/mail/conf.h"
#include "common/util/log.h"

static char tmpdir[] = "/tmp/postino-test-conf-XXXXXX";

static void write_file(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static int load(const char *text, buf_t *err)
{
    write_file("main.cf", text);
    buf_reset(err);
    return conf_load(tmpdir, err);
}

static void test_expansion_continuation_comments(void **state)
{
    buf_t err = BUF_INIT;
    int rc = load("# comment\n"
                  "myhostname = mx1.example.com\n"
                  "   # indented comment\n"
                  "\n"
                  "smtpd_banner = ${myhostname} at $mydomain $$5\n"
                  "mynetworks = 10.0.0.0/8,\n"
                  "    192.168.0.0/16\n"
                  "  # comment inside a continuation\n"
                  "\t172.16.0.0/12\n"
                  "relay_domains = ${myorigin?has origin} ${relayhost:no relayhost} $nosuchparam.\n"
                  "message_size_limit=1000\n",
                  &err);
    assert_int_equal(rc, 0);
    assert_string_equal(conf_str("myhostname"), "mx1.example.com");
    assert_string_equal(conf_str("mydomain"), "example.com");
    assert_string_equal(conf_str("myorigin"), "mx1.example.com");
    assert_string_equal(conf_str("smtpd_banner"), "mx1.example.com at example.com $5");
    assert_string_equal(conf_str("mynetworks"), "10.0.0.0/8, 192.168.0.0/16 172.16.0.0/12");
    assert_string_equal(conf_str("relay_domains"), "has origin no relayhost .");
    assert_int_equal(conf_int("message_size_limit"), 1000);
    assert_true(conf_is_set("myhostname"));
    assert_false(conf_is_set("smtpd_timeout"));
    char **v = conf_list("mynetworks");
    assert_string_equal(v[0], "10.0.0.0/8");
    assert_string_equal(v[2], "172.16.0.0/12");
    assert_null(v[3]);
    strv_free(v);
    assert_true(conf_list_has("mydestination", "LOCALHOST.example.com"));
    assert_false(conf_list_has("mydestination", "example.com"));
    /* lazy: a later change shows through $names */
    conf_set("myhostname", "other.example.org");
    assert_string_equal(conf_str("myorigin"), "other.example.org");
    buf_destroy(&err);
}

static void test_loop_and_defaults(void **state)
{
    buf_t err = BUF_INIT;
    assert_int_equal(load("myorigin = $smtpd_banner\nsmtpd_banner = x $myorigin\n", &err), 0);
    /* loop-safe: terminates, the looping reference expands to "" */
    assert_string_equal(conf_str("smtpd_banner"), "x ");
    assert_int_equal(load("", &err), 0);
    assert_true(strlen(conf_str("myhostname")) > 0);
    assert_true(strlen(conf_str("mydomain")) > 0);
    assert_int_equal(conf_int("smtpd_timeout"), 300);
    assert_int_equal(conf_int("maximal_queue_lifetime"), 5 * 86400);
    assert_int_equal(conf_bool("smtpd_delay_reject"), 1);
    assert_false(conf_is_set("myhostname"));
    buf_destroy(&err);
}

struct bad_case {
    const char *text;
    const char *msg; /* after "<dir>/main.cf, " */
};

static void test_errors(void **state)
{
    static const struct bad_case cases[] = {
        { "# x\nmyhostname = a\nmessage_size_limit = 10MB\n",
          "line 3: parameter \"message_size_limit\": invalid number \"10MB\"" },
        { "\n\nfoo\n", "line 3: missing '=' after \"foo\"" },
        { "maximal_queue_lifetime = 5x\n",
          "line 1: parameter \"maximal_queue_lifetime\": invalid time value \"5x\" "
          "(use a number with s, m, h, d or w)" },
        { "smtpd_timeout = 2d\n",
          "line 1: parameter \"smtpd_timeout\": value \"2d\" out of range (must be between "
          "1s and 86400s)" },
        { "smtpd_recipient_limit = 0\n",
          "line 1: parameter \"smtpd_recipient_limit\": value \"0\" out of range (must be "
          "between 1 and 1000000)" },
        { "a = 1\n\n smtpd_helo_required = maybe\n"
          "smtpd_helo_required = maybe\n",
          "line 4: parameter \"smtpd_helo_required\": invalid boolean value \"maybe\" "
          "(use yes or no)" },
        { "smtpd_forbid_bare_newline = sometimes\n",
          "line 1: parameter \"smtpd_forbid_bare_newline\": invalid value \"sometimes\" "
          "(use normalize, reject or no)" },
        { "syslog_name = x\nsyslog_facility = local8\n",
          "line 2: parameter \"syslog_facility\": invalid syslog facility \"local8\" (use "
          "mail, user, daemon, local0 .. local7, or another name from syslog.conf)" },
        { "smtpd_sasl_type = dovecot\n",
          "line 1: parameter \"smtpd_sasl_type\": unsupported SASL type \"dovecot\" (only "
          "cyrus is supported)" },
        { "  indented = 1\n", "line 1: continuation line (starting with white space) "
                              "without a parameter before it" },
        { "bad-name = 1\n", "line 1: invalid parameter name \"bad-name\"" },
        { "shaping_shared_state = redis:10.0.0.5\n",
          "line 1: parameter \"shaping_shared_state\": invalid value \"redis:10.0.0.5\" "
          "(use redis:HOST:PORT, or nothing)" },
        { "shaping_shared_state = 10.0.0.5:6379\n",
          "line 1: parameter \"shaping_shared_state\": invalid value \"10.0.0.5:6379\" "
          "(use redis:HOST:PORT, or nothing)" },
        { "line_length_limit = 100\n", "line 1: parameter \"line_length_limit\": value "
                                       "\"100\" out of range (must be between 512 and 1000000)" },
    };
    buf_t err = BUF_INIT, want = BUF_INIT;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        buf_reset(&want);
        buf_printf(&want, "%s/main.cf, %s", tmpdir, cases[k].msg);
        int rc = load(cases[k].text, &err);
        if (rc != -1 || strcmp(err.data, want.data) != 0)
            fail_msg("case %zu: rc=%d\n got: %s\nwant: %s", k, rc, buf_str(&err), want.data);
    }
    buf_destroy(&err);
    buf_destroy(&want);
}

static void test_failed_reload_keeps_old(void **state)
{
    buf_t err = BUF_INIT;
    assert_int_equal(load("shaping_shared_state = redis:127.0.0.1:6379\n", &err), 0);
    assert_int_equal(load("shaping_shared_state =\n", &err), 0);
    assert_int_equal(load("myhostname = keep.example\n", &err), 0);
    assert_int_equal(load("myhostname = new.example\nsmtpd_timeout = x\n", &err), -1);
    assert_string_equal(conf_str("myhostname"), "keep.example");
    buf_destroy(&err);
}

static void test_unknown_warns(void **state)
{
    char logpath[600];
    snprintf(logpath, sizeof(logpath), "%s/log", tmpdir);
    int fd = open(logpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    log_set_fd(fd);
    buf_t err = BUF_INIT;
    assert_int_equal(load("myhostname = h.example\nno_such_thing = 1\n", &err), 0);
    log_set_fd(-1);
    char text[1024] = "";
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    assert_true(n > 0);
    text[n] = '\0';
    close(fd);
    char want[700];
    snprintf(want, sizeof(want),
             "warning: %s/main.cf, line 2: unknown parameter \"no_such_thing\" (ignored)", tmpdir);
    if (strstr(text, want) == NULL)
        fail_msg("log: %s", text);
    buf_destroy(&err);
}

static void test_relative_paths(void **state)
{
    buf_t err = BUF_INIT, want = BUF_INIT;
    assert_int_equal(load("queue_directory = ../var\nmaillog_file = log/mail.log\n"
                          "daemon_directory = /usr/lib/postino\n",
                          &err),
                     0);
    buf_printf(&want, "%s/../var", tmpdir);
    assert_string_equal(conf_str("queue_directory"), want.data);
    buf_reset(&want);
    buf_printf(&want, "%s/log/mail.log", tmpdir);
    assert_string_equal(conf_str("maillog_file"), want.data);
    assert_string_equal(conf_str("daemon_directory"), "/usr/lib/postino");
    assert_string_equal(conf_str("config_directory"), tmpdir);
    assert_int_equal(load("maillog_file = /dev/stderr\n", &err), 0);
    assert_string_equal(conf_str("maillog_file"), "/dev/stderr");
    /* the events daemon's file too (issue #11) */
    assert_int_equal(load("event_log = events.json\n", &err), 0);
    buf_reset(&want);
    buf_printf(&want, "%s/events.json", tmpdir);
    assert_string_equal(conf_str("event_log"), want.data);
    assert_string_equal(conf_str("queue_directory"), "/var/spool/postino");
    /* a relative -c directory becomes absolute */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(tmpdir), 0);
    assert_int_equal(conf_load(".", &err), 0);
    assert_string_equal(conf_str("config_directory"), tmpdir);
    assert_int_equal(chdir(cwd), 0);
    buf_destroy(&err);
    buf_destroy(&want);
}

static void test_override_and_time(void **state)
{
    buf_t err = BUF_INIT;
    assert_int_equal(load("", &err), 0);
    assert_int_equal(conf_override("smtpd_timeout", "2m", &err), 0);
    assert_int_equal(conf_int("smtpd_timeout"), 120);
    assert_int_equal(conf_override("smtpd_timeout", "0", &err), -1);
    assert_int_equal(conf_int("smtpd_timeout"), 120);
    assert_int_equal(conf_override("nope", "1", &err), -1);
    assert_string_equal(err.data, "unknown parameter \"nope\"");
    assert_int_equal(conf_override("smtpd_helo_required", "true", &err), 0);
    assert_int_equal(conf_bool("smtpd_helo_required"), 1);
    assert_true(conf_is_set("smtpd_helo_required"));
    assert_int_equal(conf_override("syslog_facility", "local3", &err), 0);
    assert_int_equal(conf_override("syslog_facility", "bogus", &err), -1);
    assert_non_null(strstr(err.data, "parameter \"syslog_facility\": invalid syslog facility"));
    assert_string_equal(conf_str("syslog_facility"), "local3");
    long long t;
    assert_int_equal(conf_parse_time("3", 'h', &t, NULL), 0);
    assert_int_equal(t, 3 * 3600);
    assert_int_equal(conf_parse_time("1w", 's', &t, NULL), 0);
    assert_int_equal(t, 7 * 86400);
    assert_int_equal(conf_parse_time("", 's', &t, NULL), -1);
    assert_int_equal(conf_parse_time("-1s", 's', &t, NULL), -1);
    assert_int_equal(conf_parse_time("1y", 's', &t, NULL), -1);
    assert_int_equal(conf_parse_time("s", 's', &t, NULL), -1);
    int b;
    assert_int_equal(conf_parse_bool("No", &b), 0);
    assert_int_equal(b, 0);
    assert_int_equal(conf_parse_bool("2", &b), -1);
    char *out = NULL;
    size_t outlen = 0;
    FILE *fp = open_memstream(&out, &outlen);
    conf_print(fp, 1);
    fclose(fp);
    assert_non_null(strstr(out, "smtpd_timeout = 2m\n"));
    assert_null(strstr(out, "message_size_limit"));
    free(out);
    buf_destroy(&err);
}

static void test_master_cf(void **state)
{
    write_file("master.cf", "# comment\n"
                            "127.0.0.1:2525 inet n - n - 2 smtpd\n"
                            "  -o smtpd_timeout=10s\n"
                            "  -o myhostname=$mydomain\n"
                            "qmgr unix - - y 300? 1 qmgr\n"
                            "smtp unix - n - - - delivery -v\n");
    struct master_ent *e = NULL;
    size_t n = 0;
    buf_t err = BUF_INIT;
    assert_int_equal(conf_master_load(tmpdir, &e, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(e[0].service, "127.0.0.1:2525");
    assert_string_equal(e[0].type, "inet");
    assert_int_equal(e[0].private_, 0);
    assert_int_equal(e[0].unpriv, 1);
    assert_int_equal(e[0].maxproc, 2);
    assert_int_equal(e[0].line, 2);
    const char *argv0[] = {
        "smtpd", "-o", "smtpd_timeout=10s", "-o", "myhostname=$mydomain", NULL
    };
    for (int k = 0; argv0[k]; k++)
        assert_string_equal(e[0].argv[k], argv0[k]);
    assert_null(e[0].argv[5]);
    assert_int_equal(e[1].wakeup, 300);
    assert_int_equal(e[1].chroot, 1);
    assert_int_equal(e[1].private_, 1);
    assert_int_equal(e[2].unpriv, 0);
    assert_int_equal(e[2].maxproc, 0);
    assert_string_equal(e[2].argv[1], "-v");
    conf_master_free(e, n);
    buf_destroy(&err);
}

static void test_master_errors(void **state)
{
    static const struct bad_case cases[] = {
        { "smtp tcp n - n - 2 smtpd\n",
          "line 1: service \"smtp\": invalid type \"tcp\" (use inet or unix)" },
        { "#\nsmtp inet n - n - 2\n",
          "line 2: expected at least 8 fields (service type private unpriv chroot wakeup "
          "maxproc command), found 7" },
        { "smtp inet x - n - 2 smtpd\n",
          "line 1: service \"smtp\": private field \"x\" (use y, n or -)" },
        { "smtp inet n - n 5m 2 smtpd\n", "line 1: service \"smtp\": invalid wakeup time \"5m\"" },
        { "smtp inet n - n - many smtpd\n",
          "line 1: service \"smtp\": invalid process limit \"many\"" },
        { "smtp inet n - n - 2 smtpd\n -o smtpd_timeout=forever\n",
          "line 1: -o smtpd_timeout=forever: invalid time value \"forever\" (use a number "
          "with s, m, h, d or w)" },
        { "smtp inet n - n - 2 smtpd -o bogus_param=1\n",
          "line 1: -o bogus_param=1: unknown parameter \"bogus_param\"" },
        { "smtp inet n - n - 2 smtpd -o\n", "line 1: -o without name=value" },
        { "a unix - - n - 1 qmgr\nb unix - - n - 1 x\na unix - - n - 1 y\n",
          "line 3: duplicate service \"a\" type unix" },
    };
    buf_t err = BUF_INIT, want = BUF_INIT;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        write_file("master.cf", cases[k].text);
        struct master_ent *e = NULL;
        size_t n = 0;
        buf_reset(&want);
        buf_printf(&want, "%s/master.cf, %s", tmpdir, cases[k].msg);
        int rc = conf_master_load(tmpdir, &e, &n, &err);
        if (rc != -1 || strcmp(buf_str(&err), want.data) != 0)
            fail_msg("case %zu: rc=%d\n got: %s\nwant: %s", k, rc, buf_str(&err), want.data);
    }
    buf_destroy(&err);
    buf_destroy(&want);
}

static void test_master_default(void **state)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/master.cf", tmpdir);
    unlink(path);
    struct master_ent *e = NULL;
    size_t n = 0;
    buf_t err = BUF_INIT;
    assert_int_equal(conf_master_load(tmpdir, &e, &n, &err), 0);
    assert_int_equal(n, 11);
    assert_string_equal(e[1].service, "qmgr");
    assert_int_equal(e[1].wakeup, 300);
    assert_string_equal(e[3].argv[0], "bounce");
    assert_string_equal(e[5].argv[0], "feedback");
    assert_string_equal(e[6].argv[0], "virtual");
    assert_int_equal(e[6].unpriv, 0);
    assert_string_equal(e[10].argv[0], "events");
    assert_int_equal(e[10].maxproc, 1);
    conf_master_free(e, n);
    /* the shipped conf/master.cf (run from the checkout) parses too */
    if (access("conf/master.cf", R_OK) == 0) {
        assert_int_equal(conf_master_load("conf", &e, &n, &err), 0);
        assert_int_equal(n, 14); /* the built-in rows, lmtp, submit, metrics and events */
        conf_master_free(e, n);
    }
    buf_destroy(&err);
}

static int setup(void **state)
{
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    const char *files[] = { "main.cf", "master.cf", "log" };
    char path[600];
    for (size_t k = 0; k < 3; k++) {
        snprintf(path, sizeof(path), "%s/%s", tmpdir, files[k]);
        unlink(path);
    }
    return rmdir(tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expansion_continuation_comments),
        cmocka_unit_test(test_loop_and_defaults),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_failed_reload_keeps_old),
        cmocka_unit_test(test_unknown_warns),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_override_and_time),
        cmocka_unit_test(test_master_cf),
        cmocka_unit_test(test_master_errors),
        cmocka_unit_test(test_master_default),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
