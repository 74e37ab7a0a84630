/*
 * floor_mta.c - the least an MTA can do on this machine, for bench.py's
 * --floor: how fast can any store-and-forward MTA with the fsync-before-250
 * guarantee be here, whatever its design?
 *
 * It speaks just enough SMTP for smtp-source and smtp-sink: one blocking
 * thread per client connection, the message kept in memory until its final
 * dot, then one write, one fsync and one close of a spool file (envelope and
 * content, the content still dot-stuffed as it came, so it can go out as it
 * is), then 250. Delivery threads, each with one connection to the sink that
 * it keeps, read a file in one read, send the envelope and DATA pipelined,
 * then the content, and unlink the file after the 250. No parsing beyond the
 * end of data, no checks, no logging, no index, no scheduling, no retries:
 * everything an MTA must do is left out. What it costs is what the kernel
 * and the load generator cost, the floor under every real MTA. It is a
 * benchmark instrument, never a mail server: it trusts its client.
 *
 * usage: floor_mta PORT SINK_PORT SPOOL_DIR PIDFILE [DELIVERY_THREADS]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define LINE_MAX_LEN 1024
#define MAX_RCPTS    1000

static int sink_port;
static const char *spool;

/* the queue between reception and delivery: spool file numbers */
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static unsigned long *q_items;
static size_t q_head, q_tail, q_cap;
static unsigned long next_id;

static void q_push(unsigned long id)
{
    pthread_mutex_lock(&q_lock);
    if (q_tail - q_head == q_cap) {
        size_t cap = q_cap ? q_cap * 2 : 1024;
        unsigned long *items = malloc(cap * sizeof *items);
        if (items == NULL)
            abort();
        for (size_t i = 0; i < q_tail - q_head; i++)
            items[i] = q_items[(q_head + i) % (q_cap ? q_cap : 1)];
        free(q_items);
        q_items = items;
        q_tail -= q_head;
        q_head = 0;
        q_cap = cap;
    }
    q_items[q_tail++ % q_cap] = id;
    pthread_cond_signal(&q_cond);
    pthread_mutex_unlock(&q_lock);
}

static unsigned long q_pop(void)
{
    pthread_mutex_lock(&q_lock);
    while (q_head == q_tail)
        pthread_cond_wait(&q_cond, &q_lock);
    unsigned long id = q_items[q_head++ % q_cap];
    pthread_mutex_unlock(&q_lock);
    return id;
}

/* a growable byte buffer */
struct bytes {
    char *p;
    size_t len, cap;
};

static void bytes_add(struct bytes *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 8192;
        while (cap < b->len + n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            abort();
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* buffered reading from a socket */
struct rd {
    int fd;
    char buf[65536];
    size_t pos, end;
};

static int rd_fill(struct rd *r)
{
    if (r->pos == r->end)
        r->pos = r->end = 0;
    ssize_t n;
    do
        n = read(r->fd, r->buf + r->end, sizeof r->buf - r->end);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return -1;
    r->end += (size_t)n;
    return 0;
}

/* one line (CRLF or LF ended) into line, NUL-terminated; -1 at EOF */
static int rd_line(struct rd *r, char *line, size_t size)
{
    size_t n = 0;
    for (;;) {
        if (r->pos == r->end && rd_fill(r) < 0)
            return -1;
        char c = r->buf[r->pos++];
        if (c == '\n')
            break;
        if (n + 1 < size)
            line[n++] = c;
    }
    if (n > 0 && line[n - 1] == '\r')
        n--;
    line[n] = '\0';
    return 0;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int reply(int fd, const char *s)
{
    return send_all(fd, s, strlen(s));
}

/*
 * The content up to and including the final "." line, appended to msg as it
 * came (still dot-stuffed).
 */
static int read_content(struct rd *r, struct bytes *msg)
{
    /* state: 0 mid-line, 1 at line start, 2 saw "." at line start,
     * 3 saw ".\r" at line start */
    int state = 1;
    for (;;) {
        if (r->pos == r->end && rd_fill(r) < 0)
            return -1;
        size_t start = r->pos;
        while (r->pos < r->end) {
            char c = r->buf[r->pos++];
            if (state == 0) {
                /* skip quickly to the next LF */
                char *lf = memchr(r->buf + r->pos - 1, '\n', r->end - r->pos + 1);
                if (lf == NULL) {
                    r->pos = r->end;
                    break;
                }
                r->pos = (size_t)(lf - r->buf) + 1;
                state = 1;
            } else if (state == 1) {
                state = c == '.' ? 2 : c == '\n' ? 1 : 0;
            } else if (state == 2) {
                state = c == '\r' ? 3 : c == '\n' ? 4 : 0;
            } else if (state == 3) {
                state = c == '\n' ? 4 : 0;
            }
            if (state == 4) {
                bytes_add(msg, r->buf + start, r->pos - start);
                return 0;
            }
        }
        bytes_add(msg, r->buf + start, r->pos - start);
    }
}

static int store(const struct bytes *msg, unsigned long *id_out)
{
    char path[4096];
    pthread_mutex_lock(&q_lock);
    unsigned long id = ++next_id;
    pthread_mutex_unlock(&q_lock);
    snprintf(path, sizeof path, "%s/%lu", spool, id);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (send_all(fd, msg->p, msg->len) < 0 || fsync(fd) < 0) {
        close(fd);
        unlink(path);
        return -1;
    }
    close(fd);
    *id_out = id;
    return 0;
}

static void *session(void *arg)
{
    int fd = (int)(long)arg;
    struct rd *r = calloc(1, sizeof *r);
    struct bytes msg = { 0 };
    char line[LINE_MAX_LEN];
    if (r == NULL)
        abort();
    r->fd = fd;
    reply(fd, "220 floor ESMTP\r\n");
    while (rd_line(r, line, sizeof line) == 0) {
        if (strncasecmp(line, "EHLO", 4) == 0) {
            reply(fd, "250-floor\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
        } else if (strncasecmp(line, "MAIL", 4) == 0) {
            msg.len = 0;
            bytes_add(&msg, line, strlen(line));
            bytes_add(&msg, "\r\n", 2);
            reply(fd, "250 ok\r\n");
        } else if (strncasecmp(line, "RCPT", 4) == 0) {
            bytes_add(&msg, line, strlen(line));
            bytes_add(&msg, "\r\n", 2);
            reply(fd, "250 ok\r\n");
        } else if (strncasecmp(line, "DATA", 4) == 0) {
            bytes_add(&msg, "DATA\r\n", 6);
            reply(fd, "354 go\r\n");
            unsigned long id;
            if (read_content(r, &msg) < 0)
                break;
            if (store(&msg, &id) < 0) {
                reply(fd, "451 not stored\r\n");
            } else {
                reply(fd, "250 queued\r\n");
                q_push(id);
            }
            msg.len = 0;
        } else if (strncasecmp(line, "RSET", 4) == 0) {
            msg.len = 0;
            reply(fd, "250 ok\r\n");
        } else if (strncasecmp(line, "QUIT", 4) == 0) {
            reply(fd, "221 bye\r\n");
            break;
        } else {
            reply(fd, "250 ok\r\n");
        }
    }
    close(fd);
    free(msg.p);
    free(r);
    return NULL;
}

/* reads replies until `count` final lines (a space after the code) came */
static int read_replies(struct rd *r, int count, int *bad)
{
    char line[LINE_MAX_LEN];
    while (count > 0) {
        if (rd_line(r, line, sizeof line) < 0)
            return -1;
        if (strlen(line) >= 4 && line[3] == ' ') {
            if (line[0] != '2' && line[0] != '3')
                (*bad)++;
            count--;
        }
    }
    return 0;
}

static int sink_connect(struct rd *r)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)sink_port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int bad = 0;
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    r->fd = fd;
    r->pos = r->end = 0;
    if (read_replies(r, 1, &bad) < 0 || reply(fd, "EHLO floor\r\n") < 0 ||
        read_replies(r, 1, &bad) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* sends one spool file over the kept connection; -1 when the connection broke */
static int deliver(struct rd *r, const char *p, size_t n)
{
    const char *data = strstr(p, "DATA\r\n");
    if (data == NULL)
        return 0; /* not ours: drop it */
    data += 6;
    int rcpts = 0;
    for (const char *s = p; s < data; s = strchr(s, '\n') + 1)
        rcpts += strncasecmp(s, "RCPT", 4) == 0;
    int bad = 0;
    if (send_all(r->fd, p, (size_t)(data - p)) < 0 || read_replies(r, 2 + rcpts, &bad) < 0)
        return -1;
    if (send_all(r->fd, data, n - (size_t)(data - p)) < 0 || read_replies(r, 1, &bad) < 0)
        return -1;
    return 0;
}

static void *delivery(void *arg)
{
    (void)arg;
    struct rd *r = calloc(1, sizeof *r);
    struct bytes file = { 0 };
    char path[4096];
    int fd = -1;
    if (r == NULL)
        abort();
    for (;;) {
        unsigned long id = q_pop();
        snprintf(path, sizeof path, "%s/%lu", spool, id);
        int qf = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (qf < 0 || fstat(qf, &st) < 0) {
            if (qf >= 0)
                close(qf);
            continue;
        }
        if ((size_t)st.st_size + 1 > file.cap) {
            free(file.p);
            file.cap = (size_t)st.st_size + 1;
            file.p = malloc(file.cap);
            if (file.p == NULL)
                abort();
        }
        ssize_t got = read(qf, file.p, (size_t)st.st_size);
        close(qf);
        if (got != st.st_size)
            continue;
        file.p[got] = '\0';
        for (int attempt = 0; attempt < 2; attempt++) {
            if (fd < 0 && (fd = sink_connect(r)) < 0)
                break;
            if (deliver(r, file.p, (size_t)got) == 0)
                break;
            close(fd);
            fd = -1;
        }
        unlink(path);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: floor_mta PORT SINK_PORT SPOOL_DIR PIDFILE [THREADS]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    sink_port = atoi(argv[2]);
    spool = argv[3];
    int threads = argc > 5 ? atoi(argv[5]) : 20;
    signal(SIGPIPE, SIG_IGN);

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 1024) < 0) {
        perror("floor_mta: listen");
        return 1;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, delivery, NULL) != 0)
            abort();
    }
    FILE *pf = fopen(argv[4], "w"); /* written last: bench.py waits for it */
    if (pf == NULL) {
        perror("floor_mta: pidfile");
        return 1;
    }
    fprintf(pf, "%d\n", (int)getpid());
    fclose(pf);
    for (;;) {
        int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        pthread_t t;
        if (pthread_create(&t, &attr, session, (void *)(long)c) != 0)
            close(c);
    }
}
