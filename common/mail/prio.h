/* prio.h - priority classes of messages (issue #9).
 *
 * Two classes: "bulk" (the default: campaigns, newsletters, anything not
 * said otherwise) and "transactional" (password resets, receipts: mail a
 * person waits for). smtpd decides a message's class at reception
 * (priority_header, sender_dependent_priority_maps, smtpd_default_priority)
 * and stores its name in the queue file's "priority=" record when it is not
 * bulk; qmgr serves transactional jobs of a destination first. The names
 * are shared by smtpd, qmgr and the CLI, hence here. */
#ifndef POSTINO_PRIO_H
#define POSTINO_PRIO_H

/* Higher value: served first. */
enum prio_class {
    PRIO_BULK = 0,
    PRIO_TRANSACTIONAL = 1,
};
#define PRIO_NCLASS 2

/* The class a name (case-insensitive, surrounding blanks ignored) stands
 * for: 0, or -1 when it names none. */
int prio_from_name(const char *name, enum prio_class *out);
const char *prio_name(enum prio_class c);

#endif
