/* feedback_dom.c - membership in feedback_domains (feedback_dom.h). Read
 * from the configuration at each call, so a reload applies at once; the
 * list is short (a few bounce domains). */
#include "common/mail/feedback_dom.h"

#include <string.h>

#include "common/mail/conf.h"
#include "common/util/buf.h"

int feedback_dom_match(const char *domain)
{
    char **v;
    int found = 0;
    size_t dl = strlen(domain);

    if (dl > 0 && domain[dl - 1] == '.')
        dl--; /* "bounce.example.com." is the same domain */
    if (dl == 0)
        return 0;
    v = conf_list("feedback_domains");
    for (size_t i = 0; v[i] && !found; i++) {
        const char *e = v[i];
        size_t el = strlen(e);
        if (e[0] == '.')
            found = dl > el && str_nieq(domain + dl - el, e, el);
        else
            found = dl == el && str_nieq(domain, e, el);
    }
    strv_free(v);
    return found;
}

int feedback_dom_addr(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at != NULL && feedback_dom_match(at + 1);
}
