/* prio.c - priority class names (see prio.h). */
#include "common/mail/prio.h"

#include <string.h>

#include "common/util/buf.h"

static const char *const names[PRIO_NCLASS] = { "bulk", "transactional" };

int prio_from_name(const char *name, enum prio_class *out)
{
    size_t n;

    if (name == NULL)
        return -1;
    while (*name == ' ' || *name == '\t')
        name++;
    n = strlen(name);
    while (n > 0 && (name[n - 1] == ' ' || name[n - 1] == '\t'))
        n--;
    for (int c = 0; c < PRIO_NCLASS; c++)
        if (strlen(names[c]) == n && str_nieq(name, names[c], n)) {
            *out = (enum prio_class)c;
            return 0;
        }
    return -1;
}

const char *prio_name(enum prio_class c)
{
    return (unsigned)c < PRIO_NCLASS ? names[c] : "bulk";
}
