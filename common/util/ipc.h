/* ipc.h - sockets: UNIX-domain and TCP listeners and connections. */
#ifndef POSTINO_IPC_H
#define POSTINO_IPC_H

#include <sys/socket.h>
#include <sys/types.h>
#include "common/util/buf.h"

/* Create a listening UNIX stream socket at path (stale socket unlinked),
 * chmod to mode. Returns fd (non-blocking, close-on-exec) or -1. */
int ipc_listen_unix(const char *path, int mode, int backlog);
/* Blocking connect to a UNIX stream socket; -1 with errno on failure. */
int ipc_connect_unix(const char *path);
/* Parse "host:port", "[v6]:port", "*:port", "port" and listen (SO_REUSEADDR,
 * non-blocking, close-on-exec). -1 with err on failure. */
int ipc_listen_inet(const char *hostport, int backlog, buf_t *err);
/* Parse "host:port" / "[host]:port" / "host" (port defaults to defport)
 * into host (no brackets) and port. Returns 0 or -1. */
int ipc_split_hostport(const char *s, buf_t *host, int *port, int defport);
int ipc_nonblock(int fd, int on);
int ipc_cloexec(int fd, int on);
/* Writes all n bytes to a blocking fd, retrying on EINTR; -1 on error. */
int ipc_write_all(int fd, const void *p, size_t n);
/* Credentials of the peer of a UNIX socket (SO_PEERCRED). */
int ipc_peer_cred(int fd, uid_t *uid, gid_t *gid, pid_t *pid);
/* Numeric text of an address: "127.0.0.1" / "::1"; port optional. */
void ipc_addr_text(const struct sockaddr *sa, buf_t *host, int *port);

#endif
