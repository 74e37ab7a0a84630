/* fuzz_feedback.c - libFuzzer harness for the feedback consumer's report
 * parser (feedback/feedback_parse.c and its parts), which reads whatever
 * strangers send to our bounce domains. Every field must be a terminated
 * string within its array, the recipient count within FB_RCPT_MAX, an
 * unrecognised report must say why; and when the input has no CR at all,
 * the same input with CRLF line ends must give the very same report. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util/alloc.h"
#include "common/util/buf.h"
#include "common/util/log.h"
#include "feedback/feedback_parse.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init("fuzz_feedback");
    log_open("/dev/null");
    return 0;
}

#define TERMINATED(a) (memchr((a), '\0', sizeof(a)) != NULL)

static void check(const struct fb_report *r)
{
    if (r->nrcpt > FB_RCPT_MAX || (r->shape == FB_SHAPE_NONE) != (r->why != NULL))
        abort();
    if (r->shape == FB_SHAPE_NONE && r->nrcpt != 0)
        abort();
    if (!TERMINATED(r->feedback_type) || !TERMINATED(r->arf_mail_from) ||
        !TERMINATED(r->arf_rcpt_to) || !TERMINATED(r->arrival_date) ||
        !TERMINATED(r->reported_domain) || !TERMINATED(r->source_ip) ||
        !TERMINATED(r->orig_message_id) || !TERMINATED(r->orig_to) || !TERMINATED(r->orig_from) ||
        !TERMINATED(r->orig_queue_id))
        abort();
    for (size_t i = 0; i < r->nrcpt; i++) {
        const struct fb_rcpt *t = &r->rcpt[i];
        if (!TERMINATED(t->final_rcpt) || !TERMINATED(t->orig_rcpt) || !TERMINATED(t->action) ||
            !TERMINATED(t->status) || !TERMINATED(t->diag) || !TERMINATED(t->remote_mta))
            abort();
        if (t->code != 0 && (t->code < 200 || t->code > 599))
            abort();
    }
    (void)fb_shape_name(r->shape);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *d = xmalloc(size ? size : 1); /* exact size: ASan catches overreads */
    struct fb_report *a = xmalloc(sizeof(*a)), *b = xmalloc(sizeof(*b));

    memcpy(d, data, size);
    fb_parse(d, size, a);
    check(a);
    if (memchr(d, '\r', size) == NULL) {
        buf_t crlf = BUF_INIT;
        for (size_t i = 0; i < size; i++) {
            if (d[i] == '\n')
                buf_putc(&crlf, '\r');
            buf_putc(&crlf, d[i]);
        }
        fb_parse(crlf.data ? crlf.data : "", crlf.len, b);
        if (memcmp(a, b, sizeof(*a)) != 0)
            abort();
        buf_destroy(&crlf);
    }
    free(a);
    free(b);
    free(d);
    return 0;
}
