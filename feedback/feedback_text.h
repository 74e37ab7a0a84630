/* feedback_text.h - the parts of the report parser that feedback_parse.c
 * (MIME reports) and feedback_text.c (non-standard text bounces) share. */
#ifndef POSTINO_FEEDBACK_TEXT_H
#define POSTINO_FEEDBACK_TEXT_H

#include <stddef.h>

#include "feedback/feedback_parse.h"

/* A new, empty recipient of r; NULL (and r->rcpt_cut set) when full. */
struct fb_rcpt *fb_rcpt_add(struct fb_report *r);
/* A header field of the original message (fb_header_fn; arg is the
 * report): fills orig_message_id, orig_to, orig_from, orig_queue_id when
 * still empty, so the first (topmost) one wins. */
void fb_orig_field(const char *name, const char *value, void *arg);
/* Recognise a non-standard bounce text; its recipients go into r. */
enum fb_shape fb_text_parse(const char *text, size_t n, struct fb_report *r);
/* Header lines of the original message quoted in a text ("> " quoting
 * too) through fb_orig_field. */
void fb_text_orig_headers(const char *text, size_t n, struct fb_report *r);

#endif
