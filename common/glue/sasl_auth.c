/* sasl_auth.c - the SMTP AUTH exchange: client lines in, results out.
 *
 * The loop thread judges the client's text (length, "*", base64, the
 * mechanism name) and answers those cases itself; only well-formed input
 * reaches Cyrus, in a worker thread (sasl_pool.c), because a Cyrus step may
 * wait on saslauthd, PAM or LDAP. Either way the result is delivered on a
 * later loop turn, so callers never see re-entrant callbacks. */
#include <ctype.h>
#include <string.h>

#include "common/util/log.h"
#include "common/glue/sasl_impl.h"

#define MECH_NAME_MAX 20 /* RFC 4422 section 3.1 */

/* Begin a job: the session must be idle. Clears the last result. */
static void job_begin(struct psasl_session *ss, psasl_done_fn cb, void *arg)
{
    if (ss->busy)
        log_panic("sasl: start/step while a step is in progress");
    if (cb == NULL)
        log_panic("sasl: start/step without a callback");
    ss->busy = 1;
    ss->cb = cb;
    ss->arg = arg;
    ss->have_input = 0;
    buf_reset(&ss->input);
    buf_reset(&ss->challenge);
    buf_reset(&ss->username);
    buf_reset(&ss->reason);
    buf_reset(&ss->detail);
}

/* A result known without Cyrus: deliver it on the next loop turn. */
static void post_result(struct psasl_session *ss, psasl_status_t st, const char *reason)
{
    ss->op = PSASL_OP_RESULT;
    ss->status = st;
    buf_set(&ss->reason, reason);
    buf_set(&ss->detail, reason);
    psasl_pool_post(ss->pool, ss);
}

/* Client text -> ss->input. Returns 0, or -1 after posting BADPROT. */
static int take_input(struct psasl_session *ss, const char *text, int initial)
{
    size_t len = strlen(text);
    if (len > ss->max_line) {
        post_result(ss, PSASL_BADPROT, "response line too long");
        return -1;
    }
    ss->have_input = 1;
    /* "=" is the empty initial response (RFC 4954); an empty line is the
     * empty response to a challenge. */
    if ((initial && strcmp(text, "=") == 0) || (!initial && len == 0))
        return 0;
    if (len == 0 || psasl_b64_decode(text, len, &ss->input) != 0) {
        post_result(ss, PSASL_BADPROT, "malformed base64 response");
        return -1;
    }
    return 0;
}

/* Upper-cased into ss->mech if it is a syntactically valid SASL name. */
static int take_mech(struct psasl_session *ss, const char *mech)
{
    size_t n = mech ? strlen(mech) : 0;
    ss->mech[0] = '\0';
    if (n == 0 || n > MECH_NAME_MAX)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)mech[i];
        if (!isalnum(c) && c != '-' && c != '_')
            return -1;
        ss->mech[i] = (char)toupper(c);
    }
    ss->mech[n] = '\0';
    return 0;
}

static int mech_offered(const struct psasl_session *ss)
{
    size_t n = strlen(ss->mech);
    for (const char *p = ss->mechlist; *p;) {
        size_t w = strcspn(p, " ");
        if (w == n && strncmp(p, ss->mech, n) == 0)
            return 1;
        p += w;
        p += strspn(p, " ");
    }
    return 0;
}

void psasl_start(struct psasl_session *ss, const char *mech, const char *initial, psasl_done_fn cb,
                 void *arg)
{
    job_begin(ss, cb, arg);
    ss->in_exchange = 0;
    if (take_mech(ss, mech) != 0 || !mech_offered(ss)) {
        post_result(ss, PSASL_NOMECH, "unsupported authentication mechanism");
        return;
    }
    if (initial && take_input(ss, initial, 1) != 0)
        return;
    ss->op = PSASL_OP_START;
    psasl_pool_submit(ss->pool, ss);
}

void psasl_step(struct psasl_session *ss, const char *line, psasl_done_fn cb, void *arg)
{
    if (!ss->in_exchange)
        log_panic("sasl: step without an exchange in progress (or while busy)");
    job_begin(ss, cb, arg);
    ss->in_exchange = 0;
    if (strcmp(line, "*") == 0) {
        post_result(ss, PSASL_CANCELLED, "authentication aborted by client");
        return;
    }
    if (take_input(ss, line, 0) != 0)
        return;
    ss->op = PSASL_OP_STEP;
    psasl_pool_submit(ss->pool, ss);
}

/* ---- worker side ---- */

static const struct {
    int rc;
    psasl_status_t st;
} rc_map[] = {
    { SASL_OK, PSASL_OK },
    { SASL_CONTINUE, PSASL_CONTINUE },
    { SASL_NOMECH, PSASL_NOMECH },
    { SASL_TRYAGAIN, PSASL_TEMPFAIL },
    { SASL_UNAVAIL, PSASL_TEMPFAIL },
    { SASL_NOMEM, PSASL_TEMPFAIL },
};

static psasl_status_t map_rc(int rc)
{
    for (size_t i = 0; i < sizeof(rc_map) / sizeof(rc_map[0]); i++)
        if (rc_map[i].rc == rc)
            return rc_map[i].st;
    return PSASL_FAIL; /* bad credentials, mechanism protocol errors, ... */
}

void psasl_job_run(struct psasl_session *ss)
{
    const char *out = NULL;
    unsigned outlen = 0;
    const char *in = ss->have_input ? buf_str(&ss->input) : NULL;
    unsigned inlen = (unsigned)ss->input.len;
    int rc;
    if (ss->op == PSASL_OP_START)
        rc = sasl_server_start(ss->conn, ss->mech, in, inlen, &out, &outlen);
    else
        rc = sasl_server_step(ss->conn, in ? in : "", inlen, &out, &outlen);
    ss->status = map_rc(rc);
    if (ss->status == PSASL_CONTINUE) {
        psasl_b64_encode(out ? out : "", out ? outlen : 0, &ss->challenge);
    } else if (ss->status == PSASL_OK) {
        const void *user = NULL;
        if (sasl_getprop(ss->conn, SASL_USERNAME, &user) != SASL_OK || user == NULL) {
            ss->status = PSASL_FAIL;
            buf_set(&ss->reason, "no username after authentication");
            buf_set(&ss->detail, "SASL_USERNAME not available");
        } else {
            buf_set(&ss->username, user);
        }
    } else {
        buf_set(&ss->reason, sasl_errstring(rc, NULL, NULL));
        buf_set(&ss->detail, sasl_errdetail(ss->conn));
    }
}

/* ---- back on the loop thread ---- */

void psasl_job_deliver(struct psasl_session *ss)
{
    if (ss->dead) {
        psasl_session_free_now(ss);
        return;
    }
    ss->busy = 0;
    ss->in_exchange = ss->status == PSASL_CONTINUE;
    struct psasl_result r = {
        .status = ss->status,
        .challenge = buf_str(&ss->challenge),
        .username = buf_str(&ss->username),
        .mechanism = ss->mech,
        .reason = buf_str(&ss->reason),
        .detail = buf_str(&ss->detail),
    };
    psasl_done_fn cb = ss->cb;
    void *arg = ss->arg;
    ss->cb = NULL;
    ss->arg = NULL;
    cb(ss, &r, arg); /* may free ss or start the next step */
}

static const char *const status_names[] = {
    [PSASL_OK] = "OK",
    [PSASL_CONTINUE] = "CONTINUE",
    [PSASL_FAIL] = "FAIL",
    [PSASL_TEMPFAIL] = "TEMPFAIL",
    [PSASL_CANCELLED] = "CANCELLED",
    [PSASL_BADPROT] = "BADPROT",
    [PSASL_NOMECH] = "NOMECH",
};

const char *psasl_status_name(psasl_status_t st)
{
    if ((unsigned)st < sizeof(status_names) / sizeof(status_names[0]) && status_names[st])
        return status_names[st];
    return "UNKNOWN";
}
