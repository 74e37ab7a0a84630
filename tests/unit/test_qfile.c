/* test_qfile.c - queue file round trips, appended records, completeness. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/file.h>
#include <unistd.h>

#include "common/util/buf.h"
#include "common/mail/qfile.h"

static char spool[64];

static int setup(void **state)
{
    str_lcpy(spool, "/tmp/test_qfile.XXXXXX", sizeof(spool));
    return mkdtemp(spool) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", spool);
    return system(cmd) == 0 ? 0 : -1;
}

static void fill_env(struct qenv *env, size_t nrcpt)
{
    qenv_init(env);
    qenv_set(&env->client_name, "client.example");
    qenv_set(&env->client_addr, "192.0.2.1");
    qenv_set(&env->helo, "helo name with spaces");
    qenv_set(&env->proto, "ESMTP");
    qenv_set(&env->sender, "s\xc3\xa9nder@example.com");
    qenv_set(&env->envid, "env%id\nx");
    env->ret = RET_HDRS;
    env->body = QBODY_8BITMIME;
    env->smtputf8 = 1;
    qenv_set(&env->verp, "+=");
    qenv_set(&env->verp_return, "bounces@bounce.example.com");
    for (size_t i = 0; i < nrcpt; i++) {
        char addr[64], orcpt[80];
        /* every fifth one UTF-8 (RFC 6531): stored as is, read back the same */
        snprintf(addr, sizeof(addr),
                 i % 5 ? "rcpt%zu@dom%zu.example" : "r\xc3\xa9%zu@d\xc3\xb6m%zu.example", i, i % 7);
        snprintf(orcpt, sizeof(orcpt), "rfc822;%s", addr);
        qenv_add_rcpt(env, addr, i % 2 ? orcpt : NULL,
                      i % 3 == 0   ? 0
                      : i % 3 == 1 ? NOTIFY_NEVER
                                   : NOTIFY_SUCCESS | NOTIFY_DELAY);
    }
}

/* Write a committed message with content of len bytes; returns its id. */
static void make_msg(struct qenv *env, size_t nrcpt, size_t len, char id[QID_LEN + 1])
{
    buf_t err = BUF_INIT;
    fill_env(env, nrcpt);
    struct qfile_w *w = qfile_create(spool, env, &err);
    assert_non_null(w);
    assert_string_equal(qfile_w_id(w), env->id);
    for (size_t i = 0; i < len; i += 1000) {
        char chunk[1000];
        size_t n = len - i < sizeof(chunk) ? len - i : sizeof(chunk);
        for (size_t k = 0; k < n; k++)
            chunk[k] = (char)('a' + (i + k) % 26);
        assert_int_equal(qfile_write(w, chunk, n), 0);
    }
    assert_int_equal(qfile_w_size(w), (long long)len);
    assert_int_equal(qfile_commit(w, &err), 0);
    str_lcpy(id, env->id, QID_LEN + 1);
    buf_destroy(&err);
}

static void check_content(const char *id, size_t len)
{
    long long clen = -1;
    buf_t err = BUF_INIT;
    int fd = qfile_open_content(spool, id, &clen, &err);
    assert_true(fd >= 0);
    assert_int_equal(clen, (long long)len);
    char *data = malloc(len + 10);
    size_t got = 0;
    ssize_t n;
    while ((n = read(fd, data + got, len + 10 - got)) > 0)
        got += (size_t)n;
    close(fd);
    assert_true(got >= len);
    for (size_t k = 0; k < len; k++)
        assert_int_equal(data[k], (char)('a' + k % 26));
    free(data);
    buf_destroy(&err);
}

static void test_round_trip(void **state)
{
    struct qenv env, rd;
    char id[QID_LEN + 1];
    buf_t err = BUF_INIT;
    /* 200 KB: crosses the 64 KB buffer several times. */
    make_msg(&env, 300, 200000, id);
    assert_true(qid_valid(id));
    assert_int_equal(qfile_read(spool, id, &rd, 0, &err), 0);
    assert_true(rd.complete);
    assert_string_equal(rd.id, id);
    assert_string_equal(rd.sender, "s\xc3\xa9nder@example.com");
    assert_string_equal(rd.helo, "helo name with spaces");
    assert_string_equal(rd.envid, "env%id\nx");
    assert_null(rd.sasl_username);
    assert_int_equal(rd.ret, RET_HDRS);
    assert_int_equal(rd.body, QBODY_8BITMIME);
    assert_int_equal(rd.smtputf8, 1);
    assert_string_equal(rd.verp, "+=");
    assert_string_equal(rd.verp_return, "bounces@bounce.example.com");
    assert_int_equal(rd.arrival.tv_sec, env.arrival.tv_sec);
    assert_int_equal(rd.arrival.tv_usec, env.arrival.tv_usec);
    assert_int_equal(rd.nrcpt, 300);
    for (size_t i = 0; i < 300; i++) {
        assert_string_equal(rd.rcpt[i].addr, env.rcpt[i].addr);
        if (env.rcpt[i].orcpt)
            assert_string_equal(rd.rcpt[i].orcpt, env.rcpt[i].orcpt);
        else
            assert_null(rd.rcpt[i].orcpt);
        assert_int_equal(rd.rcpt[i].notify, env.rcpt[i].notify);
        assert_int_equal(rd.rcpt[i].status, QR_PENDING);
    }
    assert_int_equal(rd.content_len, 200000);
    check_content(id, 200000);
    qenv_destroy(&rd);
    qenv_destroy(&env);
    buf_destroy(&err);
}

static void test_empty_and_small(void **state)
{
    struct qenv env, rd;
    char id[QID_LEN + 1];
    buf_t err = BUF_INIT;
    make_msg(&env, 1, 0, id);
    assert_int_equal(qfile_read(spool, id, &rd, 0, &err), 0);
    assert_int_equal(rd.content_len, 0);
    qenv_destroy(&rd);
    qenv_destroy(&env);
    make_msg(&env, 1, 4096, id);
    assert_int_equal(qfile_read(spool, id, &rd, 0, &err), 0);
    assert_int_equal(rd.content_len, 4096);
    check_content(id, 4096);
    /* The file holds exactly preamble + envelope + content. */
    buf_t path = BUF_INIT;
    struct stat st;
    qfile_path(spool, id, &path);
    assert_int_equal(stat(path.data, &st), 0);
    assert_int_equal((long long)st.st_size, rd.content_off + 4096);
    assert_int_equal(st.st_mode & 0777, 0700);
    qenv_destroy(&rd);
    qenv_destroy(&env);
    buf_destroy(&path);
    buf_destroy(&err);
}

static void test_appended(void **state)
{
    struct qenv env, rd;
    char id[QID_LEN + 1];
    buf_t err = BUF_INIT;
    make_msg(&env, 3, 5000, id);
    assert_int_equal(qfile_append_result(spool, id, 0, QR_DEFERRED, "4.4.1",
                                         "mx.example[192.0.2.9]:25", "connect refused", NULL),
                     0);
    assert_int_equal(qfile_append_result(spool, id, 2, QR_BOUNCED, "5.1.1", "host with space",
                                         "550 no such\nuser %", NULL),
                     0);
    assert_int_equal(qfile_append_result(spool, id, 0, QR_SENT, "2.0.0", NULL, "", NULL), 0);
    assert_int_equal(qfile_append_record(spool, id, "hold", "1"), 0);
    assert_int_equal(qfile_append_record(spool, id, "warned", "12345"), 0);
    assert_int_equal(qfile_append_record(spool, id, "dsn_sent", "2 failure"), 0);
    assert_int_equal(qfile_append_record(spool, id, "dsn_sent", "2 delay"), 0);
    assert_int_equal(qfile_append_record(spool, id, "hold", "0"), 0);
    assert_int_equal(qfile_read(spool, id, &rd, 0, &err), 0);
    assert_int_equal(rd.rcpt[0].status, QR_SENT);
    assert_string_equal(rd.rcpt[0].dsn, "2.0.0");
    assert_string_equal(rd.rcpt[0].relay, "none");
    assert_string_equal(rd.rcpt[0].reason, "");
    assert_true(rd.rcpt[0].when > 0);
    assert_int_equal(rd.rcpt[1].status, QR_PENDING);
    assert_null(rd.rcpt[1].dsn);
    assert_int_equal(rd.rcpt[2].status, QR_BOUNCED);
    assert_string_equal(rd.rcpt[2].relay, "host with space");
    assert_string_equal(rd.rcpt[2].reason, "550 no such\nuser %");
    assert_int_equal(rd.rcpt[2].dsn_sent, NOTIFY_FAILURE | NOTIFY_DELAY);
    assert_int_equal(rd.hold, 0);
    assert_int_equal(rd.warned, 12345);
    assert_int_equal(rd.content_len, 5000);
    check_content(id, 5000);
    qenv_destroy(&rd);
    /* An unknown record makes the file malformed; a bad index too. */
    assert_int_equal(qfile_append_record(spool, id, "bogus", "1"), 0);
    assert_int_equal(qfile_read(spool, id, &rd, 0, &err), -1);
    assert_non_null(strstr(err.data, "malformed"));
    qenv_destroy(&env);
    make_msg(&env, 3, 10, id);
    assert_int_equal(qfile_append_result(spool, id, 3, QR_SENT, "2.0.0", "x", "y", NULL), 0);
    assert_int_equal(qfile_read(spool, id, &rd, 0, &err), -1);
    qenv_destroy(&env);
    buf_destroy(&err);
}

/* A delivery agent's one descriptor: envelope with earlier results, the
 * content by pread, its own results appended through it; an incomplete
 * file is refused. */
static void test_open_job(void **state)
{
    struct qenv env, rd, again;
    char id[QID_LEN + 1];
    buf_t err = BUF_INIT;
    make_msg(&env, 3, 70000, id); /* content beyond the stdio buffer */
    assert_int_equal(qfile_append_result(spool, id, 1, QR_DEFERRED, "4.4.1", "mx", "later", NULL),
                     0);
    int fd = qfile_open_job(spool, id, &rd, &err);
    assert_true(fd >= 0);
    assert_int_equal(rd.nrcpt, 3);
    assert_int_equal(rd.rcpt[1].status, QR_DEFERRED);
    assert_int_equal(rd.content_len, 70000);
    char c[3];
    assert_int_equal(pread(fd, c, 3, (off_t)rd.content_off + 26), 3);
    assert_memory_equal(c, "abc", 3);
    assert_int_equal(qfile_lock_shared(fd), 0);
    assert_int_equal(qfile_busy(spool, id), QFILE_BUSY_HELD);
    assert_int_equal(qfile_append_result_fd(fd, 0, QR_SENT, "2.0.0", "mx", "250 ok", NULL), 0);
    assert_int_equal(
        qfile_append_result_fd(fd, 2, QR_BOUNCED, "5.1.1", "mx", "550 no", "bad-mailbox"), 0);
    assert_int_equal(qfile_append_result_fd(fd, 2, 99, "5.1.1", "mx", "x", NULL), -1);
    assert_int_equal(qfile_read(spool, id, &again, 0, &err), 0);
    assert_int_equal(again.rcpt[0].status, QR_SENT);
    assert_int_equal(again.rcpt[1].status, QR_DEFERRED);
    assert_int_equal(again.rcpt[2].status, QR_BOUNCED);
    assert_int_equal(again.content_len, 70000);
    check_content(id, 70000);
    close(fd);
    assert_int_equal(qfile_busy(spool, id), QFILE_BUSY_FREE);
    qenv_destroy(&again);
    qenv_destroy(&rd);
    qenv_destroy(&env);

    fill_env(&env, 1);
    struct qfile_w *w = qfile_create(spool, &env, &err);
    assert_non_null(w);
    assert_int_equal(qfile_open_job(spool, env.id, &rd, &err), -1);
    assert_non_null(strstr(err.data, "incomplete"));
    qfile_abort(w);
    assert_int_equal(qfile_open_job(spool, "NOTANID", &rd, &err), -1);
    qenv_destroy(&env);
    buf_destroy(&err);
}

/* VERP records: optional, the return address optional with them, and
 * delimiters that could break an address make the file malformed. */
static void test_verp_records(void **state)
{
    static const struct {
        const char *verp, *ret;
        int rc;
    } cases[] = {
        { NULL, NULL, 0 },   { "+=", NULL, 0 },  { "-=", "b@x.example", 0 }, { "+", NULL, -1 },
        { "+=+", NULL, -1 }, { "+@", NULL, -1 }, { "+ ", NULL, -1 },         { "\"=", NULL, -1 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct qenv env, rd;
        buf_t err = BUF_INIT;
        fill_env(&env, 2);
        qenv_set(&env.verp, cases[i].verp);
        qenv_set(&env.verp_return, cases[i].ret);
        struct qfile_w *w = qfile_create(spool, &env, &err);
        assert_non_null(w);
        assert_int_equal(qfile_write(w, "x\r\n", 3), 0);
        assert_int_equal(qfile_commit(w, &err), 0);
        int rc = qfile_read(spool, env.id, &rd, 0, &err);
        if (rc != cases[i].rc)
            fail_msg("case %zu: verp \"%s\" read %d", i, cases[i].verp ? cases[i].verp : "", rc);
        if (rc == 0) {
            if (cases[i].verp)
                assert_string_equal(rd.verp, cases[i].verp);
            else
                assert_null(rd.verp);
            if (cases[i].ret)
                assert_string_equal(rd.verp_return, cases[i].ret);
            else
                assert_null(rd.verp_return);
        } else {
            assert_non_null(strstr(err.data, "bad verp"));
        }
        qenv_destroy(&rd);
        qenv_destroy(&env);
        buf_destroy(&err);
    }
}

/* The category attribute after a result's reason (issue #8): written and
 * read back; results written before it existed read with none; the last
 * result wins for the category too; unknown attributes are ignored. */
static void test_result_category(void **state)
{
    struct qenv env, rd;
    char id[QID_LEN + 1];
    buf_t err = BUF_INIT, path = BUF_INIT;
    make_msg(&env, 3, 100, id);
    assert_int_equal(qfile_append_result(spool, id, 0, QR_BOUNCED, "5.1.1", "mx[192.0.2.1]:25",
                                         "550 5.1.1 no such\tuser", "bad-mailbox"),
                     0);
    assert_int_equal(
        qfile_append_result(spool, id, 1, QR_DEFERRED, "4.2.2", "none", "full", "quota-issues"), 0);
    assert_int_equal(qfile_append_result(spool, id, 1, QR_DEFERRED, "4.0.0", "none", "later", ""),
                     0);
    /* an old-format line, and one with an attribute we do not know */
    qfile_path(spool, id, &path);
    FILE *fp = fopen(path.data, "a");
    assert_non_null(fp);
    fputs("result=2 deferred 4.4.1 1716560891 none connect refused\n", fp);
    fputs("result=2 deferred 4.4.1 1716560892 none refused\tfuture=1\tcategory=no-answer-from-host"
          "\n",
          fp);
    fclose(fp);
    assert_int_equal(qfile_read(spool, id, &rd, 0, &err), 0);
    assert_string_equal(rd.rcpt[0].category, "bad-mailbox");
    assert_string_equal(rd.rcpt[0].reason, "550 5.1.1 no such\tuser");
    assert_null(rd.rcpt[1].category);
    assert_string_equal(rd.rcpt[1].reason, "later");
    assert_string_equal(rd.rcpt[2].category, "no-answer-from-host");
    assert_string_equal(rd.rcpt[2].reason, "refused");
    qenv_destroy(&rd);
    qenv_destroy(&env);
    buf_destroy(&path);
    buf_destroy(&err);
}

/* A Message-ID learnt while streaming goes in as the first appended
 * record: read back, content untouched, later appends still replayed. */
static void test_message_id(void **state)
{
    struct qenv env, rd;
    buf_t err = BUF_INIT;
    const char *mid = "<weird id %41\n with space@example.com>";

    fill_env(&env, 2);
    qenv_set(&env.message_id, "<envelope@example.com>");
    struct qfile_w *w = qfile_create(spool, &env, &err);
    assert_non_null(w);
    qfile_w_set_message_id(w, "<first@example.com>");
    qfile_w_set_message_id(w, mid); /* the last call wins */
    assert_int_equal(qfile_write(w, "abcdefghij", 10), 0);
    assert_int_equal(qfile_commit(w, &err), 0);
    check_content(env.id, 10);
    assert_int_equal(qfile_append_result(spool, env.id, 1, QR_SENT, "2.0.0", "h", "ok", NULL), 0);
    assert_int_equal(qfile_read(spool, env.id, &rd, 0, &err), 0);
    assert_string_equal(rd.message_id, mid);
    assert_int_equal(rd.content_len, 10);
    assert_int_equal(rd.rcpt[1].status, QR_SENT);
    qenv_destroy(&rd);
    qenv_destroy(&env);

    /* Without the call nothing is appended: the envelope value stays. */
    fill_env(&env, 1);
    qenv_set(&env.message_id, "<envelope@example.com>");
    w = qfile_create(spool, &env, &err);
    qfile_w_set_message_id(w, "<dropped@example.com>");
    qfile_w_set_message_id(w, NULL);
    assert_int_equal(qfile_write(w, "abcdefghij", 10), 0);
    assert_int_equal(qfile_commit(w, &err), 0);
    assert_int_equal(qfile_read(spool, env.id, &rd, 0, &err), 0);
    assert_string_equal(rd.message_id, "<envelope@example.com>");
    qenv_destroy(&rd);
    qenv_destroy(&env);

    /* Aborted writers free it too (no leak under ASan). */
    fill_env(&env, 1);
    w = qfile_create(spool, &env, &err);
    qfile_w_set_message_id(w, "<aborted@example.com>");
    qfile_abort(w);
    qenv_destroy(&env);
    buf_destroy(&err);
}

/* Upper-cases the content (the conversion of test_convert_dkim). */
static void upper(void *arg, const char *p, size_t n, int last, buf_t *out)
{
    for (size_t i = 0; i < n; i++)
        buf_putc(out, p[i] >= 'a' && p[i] <= 'z' ? p[i] - 32 : p[i]);
    if (last)
        buf_puts(out, "END");
}

/* A converted content replaces the one written (the preamble names it),
 * body=7BIT and the DKIM fields come back from the appended records. */
static void test_convert_dkim(void **state)
{
    struct qenv env, rd;
    buf_t err = BUF_INIT;
    const char *sig = "DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\n";
    fill_env(&env, 2);
    struct qfile_w *w = qfile_create(spool, &env, &err);
    assert_non_null(w);
    for (int i = 0; i < 20000; i++) /* past the write buffer */
        assert_int_equal(qfile_write(w, "abcdefghij", 10), 0);
    assert_int_equal(qfile_w_convert(w, upper, NULL), 0);
    qfile_w_set_body(w, QBODY_7BIT);
    qfile_w_set_dkim(w, sig);
    assert_int_equal(qfile_commit(w, &err), 0);
    assert_int_equal(qfile_read(spool, env.id, &rd, 0, &err), 0);
    assert_int_equal(rd.content_len, 200003);
    assert_int_equal(rd.body, QBODY_7BIT);
    assert_string_equal(rd.dkim, sig);
    long long len = 0;
    int fd = qfile_open_content(spool, env.id, &len, &err);
    assert_true(fd >= 0);
    char head[16] = { 0 };
    assert_int_equal(read(fd, head, 10), 10);
    assert_string_equal(head, "ABCDEFGHIJ");
    close(fd);
    qenv_destroy(&rd);
    qenv_destroy(&env);
    buf_destroy(&err);
}

/* Each deferred result counts as one attempt for its recipient. */
/* The priority class smtpd chose: an appended record; none: NULL (bulk). */
static void test_priority(void **state)
{
    struct qenv env, rd;
    buf_t err = BUF_INIT;

    for (int set = 0; set < 2; set++) {
        fill_env(&env, 1);
        struct qfile_w *w = qfile_create(spool, &env, &err);
        assert_non_null(w);
        qfile_w_set_pool(w, "bulk-pool");
        if (set)
            qfile_w_set_priority(w, "transactional");
        assert_int_equal(qfile_write(w, "abcdefghij", 10), 0);
        assert_int_equal(qfile_commit(w, &err), 0);
        check_content(env.id, 10);
        assert_int_equal(qfile_read(spool, env.id, &rd, 0, &err), 0);
        if (set)
            assert_string_equal(rd.priority, "transactional");
        else
            assert_null(rd.priority);
        assert_string_equal(rd.pool, "bulk-pool");
        qenv_destroy(&rd);
        qenv_destroy(&env);
    }
    buf_destroy(&err);
}

static void test_deferrals(void **state)
{
    struct qenv env, rd;
    char id[QID_LEN + 1];
    buf_t err = BUF_INIT;

    make_msg(&env, 2, 10, id);
    for (int i = 0; i < 3; i++)
        assert_int_equal(
            qfile_append_result(spool, id, 0, QR_DEFERRED, "4.0.0", "h", "later", NULL), 0);
    assert_int_equal(qfile_append_result(spool, id, 1, QR_DEFERRED, "4.0.0", "h", "later", NULL),
                     0);
    assert_int_equal(qfile_append_result(spool, id, 1, QR_SENT, "2.0.0", "h", "ok", NULL), 0);
    assert_int_equal(qfile_read(spool, id, &rd, 0, &err), 0);
    assert_int_equal(rd.rcpt[0].deferrals, 3);
    assert_int_equal(rd.rcpt[0].status, QR_DEFERRED);
    assert_int_equal(rd.rcpt[1].deferrals, 1);
    assert_int_equal(rd.rcpt[1].status, QR_SENT);
    qenv_destroy(&rd);
    qenv_destroy(&env);
    buf_destroy(&err);
}

static void test_incomplete_and_abort(void **state)
{
    struct qenv env, rd;
    buf_t err = BUF_INIT, path = BUF_INIT;
    fill_env(&env, 2);
    struct qfile_w *w = qfile_create(spool, &env, &err);
    assert_non_null(w);
    assert_int_equal(qfile_write(w, "hello\r\n", 7), 0);
    assert_int_equal(qfile_read(spool, env.id, &rd, 0, &err), -1);
    assert_non_null(strstr(err.data, "incomplete"));
    assert_int_equal(qfile_read(spool, env.id, &rd, 1, &err), 0);
    assert_false(rd.complete);
    assert_int_equal(rd.nrcpt, 2);
    qenv_destroy(&rd);
    long long len;
    assert_int_equal(qfile_open_content(spool, env.id, &len, &err), -1);
    qfile_path(spool, env.id, &path);
    assert_int_equal(access(path.data, F_OK), 0);
    qfile_abort(w);
    assert_int_equal(access(path.data, F_OK), -1);
    assert_int_equal(qfile_read(spool, env.id, &rd, 1, &err), -1);
    assert_int_equal(qfile_remove(spool, env.id), 0); /* ENOENT is fine */
    qenv_destroy(&env);
    buf_destroy(&err);
    buf_destroy(&path);
}

/* An incomplete file is "abandoned" only when its writer's lock is gone;
 * a complete one never is; a file removed before the writer committed is
 * never acknowledged. */
static void test_abandoned(void **state)
{
    struct qenv env;
    buf_t err = BUF_INIT, path = BUF_INIT;
    fill_env(&env, 1);
    struct qfile_w *w = qfile_create(spool, &env, &err);
    assert_non_null(w);
    qfile_path(spool, env.id, &path);
    assert_int_equal(qfile_abandoned(path.data), 0); /* its writer holds it */
    assert_int_equal(access(path.data, F_OK), 0);
    assert_int_equal(qfile_commit(w, &err), 0);
    assert_int_equal(qfile_abandoned(path.data), 0); /* complete: kept */
    assert_int_equal(access(path.data, F_OK), 0);
    assert_int_equal(qfile_remove(spool, env.id), 0);

    /* the writer is gone (its descriptor closed without a commit, as at
     * its death): the file is removed */
    w = qfile_create(spool, &env, &err);
    assert_non_null(w);
    qfile_path(spool, env.id, &path);
    int fd = open(path.data, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), -1); /* held by w */
    close(fd);
    qfile_abort(w); /* unlinks; recreate a lock-less incomplete file */
    fd = open(path.data, O_CREAT | O_EXCL | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(qfile_abandoned(path.data), 1);
    assert_int_equal(access(path.data, F_OK), -1);
    qenv_destroy(&env);
    buf_destroy(&err);
    buf_destroy(&path);
}

static void test_remove(void **state)
{
    struct qenv env, rd;
    char id[QID_LEN + 1];
    buf_t err = BUF_INIT;
    make_msg(&env, 1, 10, id);
    assert_int_equal(qfile_remove(spool, id), 0);
    assert_int_equal(qfile_read(spool, id, &rd, 1, &err), -1);
    assert_int_equal(qfile_append_result(spool, id, 0, QR_SENT, "2.0.0", "x", "y", NULL), -1);
    qenv_destroy(&env);
    buf_destroy(&err);
}

/* A write error (here: the file size limit, as a stand-in for a full
 * disk) fails the message and removes its file. */
static void test_write_error(void **state)
{
    struct qenv env;
    struct rlimit old, lim;
    buf_t err = BUF_INIT, path = BUF_INIT;
    char chunk[1000];
    memset(chunk, 'x', sizeof(chunk));
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 150000;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    fill_env(&env, 1);
    struct qfile_w *w = qfile_create(spool, &env, &err);
    assert_non_null(w);
    qfile_path(spool, env.id, &path);
    int failed = 0;
    for (int i = 0; i < 300 && !failed; i++)
        failed = qfile_write(w, chunk, sizeof(chunk)) < 0;
    assert_int_equal(qfile_commit(w, &err), -1);
    assert_true(strlen(err.data) > 0);
    assert_int_equal(access(path.data, F_OK), -1);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    qenv_destroy(&env);
    buf_destroy(&err);
    buf_destroy(&path);
}

static void test_qid(void **state)
{
    char prev[QID_LEN + 1], cur[QID_LEN + 1], dir[3];
    int counts[256] = { 0 };
    qid_new(prev);
    assert_true(qid_valid(prev));
    for (int i = 0; i < 20000; i++) {
        qid_new(cur);
        assert_true(qid_valid(cur));
        assert_true(strcmp(prev, cur) < 0 || strncmp(prev, cur, 13) == 0);
        qid_hash_dir(cur, dir);
        assert_int_equal(strlen(dir), 2);
        counts[strtol(dir, NULL, 16)]++;
        memcpy(prev, cur, sizeof(prev));
    }
    for (int i = 0; i < 256; i++)
        assert_true(counts[i] > 20); /* expected ~78 each */
    long long now = (long long)time(NULL);
    /* time() may lag gettimeofday() by up to a tick (coarse clock). */
    assert_true(qid_time(cur) >= now - 2 && qid_time(cur) <= now + 1);
    assert_false(qid_valid("0123456789ABCDEF"));
    assert_false(qid_valid("0123456789ABCDEFG"));
    assert_false(qid_valid("0123456789abcdef0"));
    assert_false(qid_valid("0123456789ABCDEF01"));
    assert_false(qid_valid("../../etc/passwd0"));
    assert_true(qid_valid("0123456789ABCDEF0"));
    struct qenv rd;
    buf_t err = BUF_INIT;
    assert_int_equal(qfile_read(spool, "../../../etc/pass", &rd, 1, &err), -1);
    assert_non_null(strstr(err.data, "invalid queue id"));
    assert_int_equal(qfile_remove(spool, "../x"), -1);
    buf_destroy(&err);
}

static void test_notify(void **state)
{
    int bits = 0;
    buf_t b = BUF_INIT;
    assert_int_equal(notify_parse("NEVER", &bits), 0);
    assert_int_equal(bits, NOTIFY_NEVER);
    assert_int_equal(notify_parse("success,Delay", &bits), 0);
    assert_int_equal(bits, NOTIFY_SUCCESS | NOTIFY_DELAY);
    assert_int_equal(notify_parse("SUCCESS,BOGUS", &bits), -1);
    assert_int_equal(notify_parse("", &bits), -1);
    notify_format(NOTIFY_FAILURE | NOTIFY_SUCCESS, &b);
    assert_string_equal(buf_str(&b), "SUCCESS,FAILURE");
    assert_string_equal(qrcpt_status_name(QR_DEFERRED), "deferred");
    buf_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_verp_records),
        cmocka_unit_test(test_empty_and_small),
        cmocka_unit_test(test_appended),
        cmocka_unit_test(test_open_job),
        cmocka_unit_test(test_result_category),
        cmocka_unit_test(test_incomplete_and_abort),
        cmocka_unit_test(test_message_id),
        cmocka_unit_test(test_deferrals),
        cmocka_unit_test(test_remove),
        cmocka_unit_test(test_abandoned),
        cmocka_unit_test(test_priority),
        cmocka_unit_test(test_write_error),
        cmocka_unit_test(test_qid),
        cmocka_unit_test(test_notify),
        cmocka_unit_test(test_convert_dkim),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
