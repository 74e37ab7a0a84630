/* smtpd_dkim.c - DKIM signing at reception: which mail, which domain, which
 * keys, and the signature(s) stored with the queue file.
 *
 * Keys are loaded once, before privileges are dropped (they may be
 * readable by root only), into a hash table (common/glue/dkim_key.c); a
 * bad key file stops smtpd at start with the file and table line. Mail is
 * signed when the client authenticated or is a local user submitting with
 * sendmail (dkim_sign_authenticated) or is in
 * mynetworks (dkim_sign_mynetworks), never other mail. The body is hashed
 * as it is stored; at the end of data the signing domain and its keys are
 * chosen on the loop, the private-key operations (0.3 ms of CPU for
 * RSA-2048) run on a worker pool of their own, one thread per CPU, and
 * the fields go into the queue file with the commit, before the 250.
 *
 * Why a pool of their own: signing is all CPU, the commit pool's threads
 * mostly wait on fsync. In the commit pool, fsyncs queued behind
 * signatures, and up to 8 RSA operations per process competed for the
 * CPUs with each other and with the event loop; more threads signing than
 * there are CPUs cannot sign faster. (The gain measured on a shared 2-CPU
 * machine was small, 0-10% less smtpd CPU per signed message, near the
 * noise: the RSA operation itself is the cost, see README.) Signing and
 * the fsync stay two jobs: one job doing both was slower when measured
 * (spread out in time, its fsyncs likely share fewer disk flushes). */
#include "smtpd/smtpd.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/glue/dict.h"
#include "common/glue/dkim.h"
#include "common/mail/mime7.h"
#include "common/mail/qfile.h"
#include "common/mail/conf.h"
#include "common/util/alloc.h"
#include "common/util/log.h"
#include "common/util/workq.h"

static struct {
    struct dkim_keyring *keys;
    struct dkim_sign_config cf;
    int cf_loaded;
    struct dict **signers; /* dkim_signer_maps, NULL-terminated */
} dk;

void smtpd_dkim_pre_drop(void)
{
    buf_t err = BUF_INIT;
    if (!*conf_str("dkim_key_maps"))
        return;
    if (dkim_sign_config_load(&dk.cf, &err) < 0)
        log_fatal("%s", buf_str(&err));
    dk.cf_loaded = 1;
    dk.keys = dkim_keyring_load(conf_str("dkim_key_maps"), &err);
    if (!dk.keys)
        log_fatal("%s", buf_str(&err));
    char **v = conf_list("dkim_signer_maps");
    size_t n = 0;
    while (v[n])
        n++;
    dk.signers = xcalloc(n + 1, sizeof(*dk.signers));
    for (size_t i = 0; i < n; i++)
        if (!(dk.signers[i] = dict_open(v[i], &err)))
            log_fatal("dkim_signer_maps: %s", buf_str(&err));
    strv_free(v);
    log_debug("dkim: %zu signing domains", dkim_keyring_count(dk.keys));
    buf_destroy(&err);
}

void smtpd_dkim_done(void)
{
    for (size_t i = 0; dk.signers && dk.signers[i]; i++)
        dict_close(dk.signers[i]);
    free(dk.signers);
    dkim_keyring_free(dk.keys);
    if (dk.cf_loaded)
        dkim_sign_config_destroy(&dk.cf);
    memset(&dk, 0, sizeof(dk));
}

struct workq *smtpd_dkim_pool(struct event_base *base)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (dkim_keyring_count(dk.keys) == 0)
        return NULL;
    if (ncpu < 1)
        ncpu = 1;
    if (ncpu > SMTPD_SIGN_THREADS)
        ncpu = SMTPD_SIGN_THREADS;
    return workq_new(base, (int)ncpu);
}

struct dkim_msg *smtpd_dkim_begin(const struct smtpd_session *s)
{
    if (dkim_keyring_count(dk.keys) == 0)
        return NULL;
    int sign = ((s->sasl_username || s->local) && conf_bool("dkim_sign_authenticated")) ||
               (conf_bool("dkim_sign_mynetworks") && smtpd_check_mynetworks(s->addr));
    return sign ? dkim_msg_new(&dk.cf) : NULL;
}

/* dkim_signer_maps: "sasl:USER", then the sender address, then
 * "@DOMAIN" of the sender; the first table that has one wins. */
static char *signer_lookup(const struct smtpd_session *s)
{
    const char *sender = s->env.sender ? s->env.sender : "";
    const char *at = strrchr(sender, '@');
    buf_t keys[3] = { BUF_INIT, BUF_INIT, BUF_INIT }, val = BUF_INIT;
    char *found = NULL;
    if (s->sasl_username)
        buf_printf(&keys[0], "sasl:%s", s->sasl_username);
    buf_puts(&keys[1], sender);
    if (at)
        buf_puts(&keys[2], at);
    for (size_t t = 0; !found && dk.signers && dk.signers[t]; t++)
        for (size_t k = 0; !found && k < 3; k++)
            if (keys[k].len && dict_lookup(dk.signers[t], keys[k].data, &val) == DICT_FOUND)
                found = str_lower(xstrdup(str_trim(val.data)));
    for (size_t k = 0; k < 3; k++)
        buf_destroy(&keys[k]);
    buf_destroy(&val);
    return found;
}

struct smtpd_dkim_job {
    struct dkim_msg *m;
    char *domain;
    size_t n;
    const struct dkim_key *k[DKIM_MAX_KEYS];
    time_t now;
    buf_t fields; /* the signatures (worker thread) */
    buf_t err;
    int failed;
    struct mime7 *m7; /* content to make 7 bit first, or NULL */
    struct qfile_w *qf;
    struct dkim_msg *conv; /* hashing the converted content */
};

void smtpd_dkim_job_free(struct smtpd_dkim_job *j)
{
    if (!j)
        return;
    dkim_msg_free(j->m);
    dkim_msg_free(j->conv);
    mime7_free(j->m7);
    free(j->domain);
    buf_destroy(&j->fields);
    buf_destroy(&j->err);
    free(j);
}

struct smtpd_dkim_job *smtpd_dkim_job_new(const struct smtpd_session *s, struct dkim_msg *m)
{
    dkim_msg_end(m);
    char *domain = signer_lookup(s);
    if (!domain && dkim_msg_from_domain(m))
        domain = xstrdup(dkim_msg_from_domain(m));
    const struct dkim_key *k[DKIM_MAX_KEYS];
    size_t n = dkim_keyring_find(dk.keys, domain, k);
    if (n == 0) {
        log_debug("%s: not DKIM-signed: no key for signing domain %s", s->env.id,
                  domain ? domain : "(no From: domain)");
        free(domain);
        dkim_msg_free(m);
        return NULL;
    }
    struct smtpd_dkim_job *j = xcalloc(1, sizeof(*j));
    j->m = m;
    j->domain = domain;
    j->n = n;
    memcpy(j->k, k, sizeof(k));
    j->now = time(NULL);
    buf_init(&j->fields, 1024);
    buf_init(&j->err, 0);
    return j;
}

void smtpd_dkim_job_convert(struct smtpd_dkim_job *j, const struct smtpd_session *s,
                            struct mime7 **m7, struct qfile_w *qf)
{
    mime7_end(*m7, NULL);
    int r = mime7_result(*m7);
    /* Not convertible (8-bit headers, SMTPUTF8, no MIME way): signed as
     * it is; delivery refuses it to a 7-bit receiver (5.6.3) as before. */
    if (!(r & MIME7_BODY8) || (r & (MIME7_HDR8 | MIME7_STUCK)) || s->env.smtputf8 ||
        conf_bool("disable_mime_output_conversion"))
        return;
    j->m7 = *m7;
    *m7 = NULL;
    j->qf = qf;
}

/* The conversion's output is the new content, hashed as it is written. */
static void convert_piece(void *arg, const char *p, size_t n, int last, buf_t *out)
{
    struct smtpd_dkim_job *j = arg;
    if (last)
        mime7_end(j->m7, out);
    else
        mime7_feed(j->m7, p, n, out);
    dkim_msg_feed(j->conv, out->data, out->len);
}

static void convert(struct smtpd_dkim_job *j)
{
    j->conv = dkim_msg_new(&dk.cf);
    mime7_convert_begin(j->m7);
    if (qfile_w_convert(j->qf, convert_piece, j) < 0) {
        buf_set(&j->err, "queue file error while converting to 7 bit");
        j->failed = 1;
        return;
    }
    dkim_msg_end(j->conv);
    dkim_msg_free(j->m);
    j->m = j->conv;
    j->conv = NULL;
}

/* Worker thread: touches only the job, its queue file, the keys and the
 * configuration, which nothing changes while smtpd runs. */
void smtpd_dkim_job_run(struct smtpd_dkim_job *j)
{
    if (j->m7)
        convert(j);
    for (size_t i = 0; i < j->n && !j->failed; i++)
        if (dkim_msg_sign(j->m, j->k[i], j->domain, j->now, &j->fields, &j->err) < 0)
            j->failed = 1;
}

int smtpd_dkim_job_finish(struct smtpd_dkim_job *j, const char *id, struct qfile_w *qf)
{
    if (j->failed) {
        log_warn("%s: DKIM signing for d=%s failed: %s", id, j->domain, buf_str(&j->err));
        return -1;
    }
    qfile_w_set_dkim(qf, buf_str(&j->fields));
    if (j->m7) {
        qfile_w_set_body(qf, QBODY_7BIT);
        log_info("%s: 8-bit content converted to 7 bit for DKIM signing", id);
    }
    for (size_t i = 0; i < j->n; i++)
        log_info("%s: dkim-signed d=%s s=%s a=%s", id, j->domain, dkim_key_selector(j->k[i]),
                 dkim_alg_name(dkim_key_alg(j->k[i])));
    return 0;
}
