/* qmgr_perm.c - who may use the control socket (issue #3).
 *
 * public/control is world-connectable (0666); the decision is made per
 * request from the peer's SO_PEERCRED credentials:
 *   - uid 0, the mail_owner uid, and qmgr's own euid may do everything;
 *   - so may members of mail_owner's primary group: the peer's primary
 *     gid (SO_PEERCRED), or a supplementary group of the peer, taken
 *     from the "Groups:" line of /proc/<peer pid>/status (after checking
 *     that the "Uid:" line still names the peer, against pid reuse), or,
 *     when /proc cannot be read, from getgrouplist() of the peer's user;
 *   - everyone else may do nothing at all, not even list: the queue
 *     shows other people's addresses, and qmgr cannot tell which mail
 *     is "theirs" (a local user's mail arrives over SMTP like anyone's).
 * In a chroot neither /proc nor /etc/group may be visible: then only the
 * primary gid counts, so admins in the group should use it as primary
 * (newgrp/sg) or run qmgr without chroot. */
#include "qmgr/qmgr.h"

#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util/alloc.h"
#include "common/mail/conf.h"
#include "common/util/ipc.h"
#include "common/util/log.h"

#define PERM_MAX_GROUPS 1024

void qmgr_perm_init(void)
{
    struct passwd *pw = getpwnam(conf_str("mail_owner"));

    qmgr_g.owner_uid = pw ? pw->pw_uid : 0;
    qmgr_g.owner_gid = pw ? pw->pw_gid : 0;
    qmgr_g.owner_known = pw != NULL;
}

/* Does the whitespace-separated number list s contain want? */
static int list_has(const char *s, unsigned long want)
{
    while (*s) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s)
            return 0;
        if (v == want)
            return 1;
        s = end;
    }
    return 0;
}

enum membership { IN_GROUP, NOT_IN_GROUP, MEMBERSHIP_UNKNOWN };

/* Unknown: no /proc, or the pid now names another user. */
static enum membership proc_in_group(pid_t pid, uid_t uid, gid_t gid)
{
    char path[64], line[4096];
    int uid_ok = 0;
    enum membership found = MEMBERSHIP_UNKNOWN;
    FILE *fp;

    snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
    if (pid <= 0 || (fp = fopen(path, "re")) == NULL)
        return MEMBERSHIP_UNKNOWN;
    while (fgets(line, sizeof(line), fp)) {
        if (strncmp(line, "Uid:", 4) == 0)
            uid_ok = strtoul(line + 4, NULL, 10) == (unsigned long)uid;
        else if (strncmp(line, "Groups:", 7) == 0)
            found = list_has(line + 7, (unsigned long)gid) ? IN_GROUP : NOT_IN_GROUP;
    }
    fclose(fp);
    return uid_ok ? found : MEMBERSHIP_UNKNOWN;
}

static int user_in_group(uid_t uid, gid_t pgid, gid_t gid)
{
    struct passwd *pw = getpwuid(uid);
    gid_t groups[PERM_MAX_GROUPS];
    int n = PERM_MAX_GROUPS;

    if (pw == NULL || getgrouplist(pw->pw_name, pgid, groups, &n) < 0)
        return 0;
    for (int i = 0; i < n; i++)
        if (groups[i] == gid)
            return 1;
    return 0;
}

int qmgr_perm_may_manage(int fd)
{
    uid_t uid;
    gid_t gid;
    pid_t pid;
    enum membership r;

    if (ipc_peer_cred(fd, &uid, &gid, &pid) < 0)
        return 0;
    if (uid == 0 || uid == geteuid() || (qmgr_g.owner_known && uid == qmgr_g.owner_uid))
        return 1;
    if (!qmgr_g.owner_known)
        return 0;
    if (gid == qmgr_g.owner_gid)
        return 1;
    if ((r = proc_in_group(pid, uid, qmgr_g.owner_gid)) != MEMBERSHIP_UNKNOWN)
        return r == IN_GROUP;
    return user_in_group(uid, gid, qmgr_g.owner_gid);
}
