/* fuzz_reply.c - libFuzzer harness for delivery/delivery_reply.c, the parser the
 * delivery agent runs over whatever a remote (possibly hostile) SMTP
 * server sends. The input is parsed twice, all at once and one byte at a
 * time: the replies and the final verdict must be the same, because TCP
 * may split a reply anywhere. Each reply must respect the parser's limits. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/util/log.h"
#include "delivery/delivery_reply.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init("fuzz_reply");
    log_open("/dev/null");
    return 0;
}

/* Check one complete reply and append a transcript of it to out. */
static void record(const struct smtp_reply *r, buf_t *out)
{
    char dsn[16];
    if (r->code < 100 || r->code > 599 || r->nlines < 1 || r->nlines > SMTP_REPLY_LINES_MAX)
        abort();
    if (r->text.len > (size_t)r->nlines * (SMTP_REPLY_LINE_MAX + 1))
        abort();
    if (r->enh[0] &&
        (r->enh[0] != '0' + r->code / 100 || dlv_reply_enh_code_len(r->enh, r->enh[0]) == 0))
        abort();
    dlv_reply_dsn(r, dsn, sizeof(dsn));
    if (strlen(dsn) < 5 || dsn[1] != '.')
        abort();
    buf_printf(out, "%d|%s|%d|%s|", r->code, r->enh, r->nlines, dsn);
    buf_append(out, buf_str(&r->text), r->text.len);
    buf_putc(out, '|');
    buf_append(out, buf_str(&r->lines), r->lines.len);
    buf_putc(out, '\n');
}

/* Feed data in pieces of at most step bytes; returns the final status
 * (an error, or more needed) and the replies in out. */
static enum dlv_rparser_result parse(const char *d, size_t size, size_t step, buf_t *out)
{
    struct smtp_rparser p;
    size_t off = 0;
    enum dlv_rparser_result rc = SMTP_RP_MORE;
    dlv_rparser_init(&p);
    while (off < size) {
        size_t n = size - off < step ? size - off : step, used = 0;
        rc = dlv_rparser_feed(&p, d + off, n, &used);
        if (rc == SMTP_RP_ERROR) {
            if (p.err == NULL || dlv_rparser_feed(&p, d, size, &used) != SMTP_RP_ERROR)
                abort(); /* must say why, and stay failed */
            break;
        }
        if (used > n || (rc == SMTP_RP_MORE && used != n) || (rc == SMTP_RP_REPLY && used == 0))
            abort();
        if (rc == SMTP_RP_REPLY)
            record(&p.reply, out);
        off += used;
    }
    buf_printf(out, "rc=%d pending=%d\n", rc == SMTP_RP_ERROR ? -1 : 0,
               rc == SMTP_RP_ERROR ? 0 : dlv_rparser_pending(&p));
    dlv_rparser_destroy(&p);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *d = xmalloc(size ? size : 1); /* exact size: ASan catches overreads */
    memcpy(d, data, size);
    buf_t whole = BUF_INIT, bytes = BUF_INIT;
    parse(d, size, size ? size : 1, &whole);
    parse(d, size, 1, &bytes);
    if (whole.len != bytes.len || memcmp(buf_str(&whole), buf_str(&bytes), whole.len) != 0)
        abort();
    (void)dlv_reply_enh_code_len(buf_str(&whole), '2');
    buf_destroy(&whole);
    buf_destroy(&bytes);
    free(d);
    return 0;
}
