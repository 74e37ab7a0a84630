/* sasl.c - Cyrus SASL process set-up and per-session state for SMTP AUTH.
 *
 * Process-wide: sasl_server_init with our log and config-path callbacks
 * and pthread mutexes (steps run in worker threads, sasl_pool.c). Per
 * session: a Cyrus server connection with Postfix's security options and
 * the mechanism list for EHLO. The exchange itself is in sasl_auth.c. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sasl/sasl.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/util/log.h"
#include "common/glue/sasl_impl.h"

static int g_inited;
static char *g_confpath;               /* cyrus_sasl_config_path, or NULL */
static char *g_appname;                /* Cyrus keeps this pointer too */
static sasl_callback_t g_callbacks[3]; /* Cyrus keeps the pointer */

/* ---- callbacks ---- */

static void *mx_alloc(void)
{
    pthread_mutex_t *m = xmalloc(sizeof(*m));
    pthread_mutex_init(m, NULL);
    return m;
}

static int mx_lock(void *m)
{
    return pthread_mutex_lock(m) == 0 ? SASL_OK : SASL_FAIL;
}

static int mx_unlock(void *m)
{
    return pthread_mutex_unlock(m) == 0 ? SASL_OK : SASL_FAIL;
}

static void mx_free(void *m)
{
    pthread_mutex_destroy(m);
    free(m);
}

/* Cyrus log levels -> our log, with Postfix's wording. Called from worker
 * threads too: the log module formats on the stack and writes once. */
static int cb_log(void *ctx, int level, const char *msg)
{
    (void)ctx;
    if (msg == NULL)
        return SASL_OK;
    if (level == SASL_LOG_ERR || level == SASL_LOG_FAIL)
        log_warn("SASL authentication failure: %s", msg);
    else if (level == SASL_LOG_WARN)
        log_warn("SASL authentication problem: %s", msg);
    else if (level == SASL_LOG_NOTE)
        log_info("SASL authentication info: %s", msg);
    else if (level != SASL_LOG_NONE)
        log_debug("SASL authentication debug: %s", msg);
    return SASL_OK;
}

/* The library does not free what we return (Postfix relies on that too). */
static int cb_getconfpath(void *ctx, char **path)
{
    (void)ctx;
    if (g_confpath == NULL)
        return SASL_FAIL;
    *path = g_confpath;
    return SASL_OK;
}

/* Cyrus stores every callback as int (*)(void); going through
 * void (*)(void) keeps -Wcast-function-type quiet. */
#define SASL_CB_FN(f) ((int (*)(void))(void (*)(void))(f))

/* ---- process-wide ---- */

struct secopt {
    const char *name;
    unsigned flag;
};

static const struct secopt secopts[] = {
    { "noanonymous", SASL_SEC_NOANONYMOUS },   { "noplaintext", SASL_SEC_NOPLAINTEXT },
    { "nodictionary", SASL_SEC_NODICTIONARY }, { "noactive", SASL_SEC_NOACTIVE },
    { "mutual_auth", SASL_SEC_MUTUAL_AUTH },   { "forward_secrecy", SASL_SEC_FORWARD_SECRECY },
};

int psasl_security_flags(const char *param, unsigned *flags, buf_t *err)
{
    char **v = conf_list(param);
    int rc = 0;
    *flags = 0;
    for (size_t i = 0; v[i] && rc == 0; i++) {
        size_t k;
        for (k = 0; k < sizeof(secopts) / sizeof(secopts[0]); k++)
            if (str_ieq(v[i], secopts[k].name))
                break;
        if (k < sizeof(secopts) / sizeof(secopts[0])) {
            *flags |= secopts[k].flag;
            continue;
        }
        buf_printf(err,
                   "parameter \"%s\": unknown SASL security option \"%s\" (use noanonymous, "
                   "noplaintext, nodictionary, noactive, mutual_auth, forward_secrecy)",
                   param, v[i]);
        rc = -1;
    }
    strv_free(v);
    return rc;
}

int psasl_init(buf_t *err)
{
    if (g_inited)
        return 0;
    unsigned flags;
    if (psasl_security_flags("smtpd_sasl_security_options", &flags, err) != 0 ||
        psasl_security_flags("smtpd_sasl_tls_security_options", &flags, err) != 0)
        return -1;
    const char *app = conf_str("smtpd_sasl_path");
    if (*app == '\0' || strchr(app, '/') != NULL) {
        buf_printf(err,
                   "parameter \"smtpd_sasl_path\": \"%s\" is not a Cyrus application "
                   "name (use e.g. smtpd, which reads smtpd.conf)",
                   app);
        return -1;
    }
    const char *cp = conf_str("cyrus_sasl_config_path");
    free(g_confpath);
    g_confpath = *cp ? xstrdup(cp) : NULL;
    size_t n = 0;
    g_callbacks[n++] = (sasl_callback_t){ SASL_CB_LOG, SASL_CB_FN(cb_log), NULL };
    if (g_confpath)
        g_callbacks[n++] =
            (sasl_callback_t){ SASL_CB_GETCONFPATH, SASL_CB_FN(cb_getconfpath), NULL };
    g_callbacks[n] = (sasl_callback_t){ SASL_CB_LIST_END, NULL, NULL };
    free(g_appname);
    g_appname = xstrdup(app); /* conf_str's pointer dies at the next conf_set */
    sasl_set_mutex(mx_alloc, mx_lock, mx_unlock, mx_free);
    int rc = sasl_server_init(g_callbacks, g_appname);
    if (rc != SASL_OK) {
        buf_printf(err,
                   "Cyrus SASL server initialization failed: %s (check %s/%s.conf and the "
                   "installed SASL plugins)",
                   sasl_errstring(rc, NULL, NULL),
                   g_confpath ? g_confpath : "the Cyrus default directory", app);
        return -1;
    }
    g_inited = 1;
    return 0;
}

void psasl_shutdown(void)
{
    if (!g_inited)
        return;
    sasl_server_done();
    g_inited = 0;
    free(g_confpath);
    g_confpath = NULL;
    free(g_appname);
    g_appname = NULL;
}

/* ---- per session ---- */

static int set_security(sasl_conn_t *conn, unsigned tls_ssf)
{
    const char *param = tls_ssf ? "smtpd_sasl_tls_security_options" : "smtpd_sasl_security_options";
    buf_t err = BUF_INIT;
    unsigned flags;
    if (psasl_security_flags(param, &flags, &err) != 0)
        log_warn("%s; ignoring that option", buf_str(&err)); /* validated at init */
    buf_destroy(&err);
    sasl_security_properties_t sp;
    memset(&sp, 0, sizeof(sp));
    sp.min_ssf = 0;
    sp.max_ssf = 0; /* no SASL security layer: TLS does that job */
    sp.maxbufsize = 0;
    sp.security_flags = flags;
    int rc = sasl_setprop(conn, SASL_SEC_PROPS, &sp);
    if (rc == SASL_OK && tls_ssf) {
        sasl_ssf_t ssf = tls_ssf;
        rc = sasl_setprop(conn, SASL_SSF_EXTERNAL, &ssf);
    }
    return rc;
}

static char *list_mechs(sasl_conn_t *conn)
{
    const char *list = NULL;
    unsigned len = 0;
    int count = 0;
    if (sasl_listmech(conn, NULL, "", " ", "", &list, &len, &count) != SASL_OK || list == NULL)
        return xstrdup("");
    return xstrndup(list, len);
}

struct psasl_session *psasl_session_new(struct psasl_pool *p, const char *local_ipport,
                                        const char *remote_ipport, unsigned tls_ssf)
{
    if (!g_inited)
        log_panic("psasl_session_new before psasl_init");
    const char *fqdn = conf_str("myhostname");
    const char *realm = conf_str("smtpd_sasl_local_domain");
    sasl_conn_t *conn = NULL;
    int rc = sasl_server_new("smtp", *fqdn ? fqdn : NULL, *realm ? realm : NULL, local_ipport,
                             remote_ipport, NULL, 0, &conn);
    if (rc == SASL_OK)
        rc = set_security(conn, tls_ssf);
    if (rc != SASL_OK) {
        log_warn("SASL per-connection initialization failed: %s",
                 conn ? sasl_errdetail(conn) : sasl_errstring(rc, NULL, NULL));
        if (conn)
            sasl_dispose(&conn);
        return NULL;
    }
    struct psasl_session *ss = xcalloc(1, sizeof(*ss));
    ss->pool = p;
    ss->conn = conn;
    ss->mechlist = list_mechs(conn);
    ss->max_line = (size_t)conf_int("smtpd_sasl_max_line");
    workq_job_init(&ss->job, NULL, NULL, ss); /* run and done: sasl_pool.c */
    psasl_pool_attach(p);
    return ss;
}

const char *psasl_mechanisms(const struct psasl_session *ss)
{
    return ss->mechlist;
}

int psasl_busy(const struct psasl_session *ss)
{
    return ss->busy;
}

void psasl_session_free_now(struct psasl_session *ss)
{
    psasl_pool_detach(ss->pool);
    sasl_dispose(&ss->conn);
    free(ss->mechlist);
    buf_destroy(&ss->input);
    buf_destroy(&ss->challenge);
    buf_destroy(&ss->username);
    buf_destroy(&ss->reason);
    buf_destroy(&ss->detail);
    free(ss);
}

void psasl_session_free(struct psasl_session *ss)
{
    if (ss == NULL)
        return;
    if (psasl_pool_release(ss->pool, ss))
        psasl_session_free_now(ss);
    /* else a worker holds it or its result waits: reclaimed at hand-back */
}
