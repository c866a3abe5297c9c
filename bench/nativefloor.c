/* The floor of a front end in native code: the least a proxy can do between a client and zeroscale's workers,
 * in C, one thread, epoll. It is bench/floor.py's proxy mode without Python: no signature, no routing, no
 * records. Each request's body (Content-Length only) goes to a free worker's keep-alive Unix-socket
 * connection as `POST /invocations`, and the worker's body comes back to the client in a 200. Requests wait
 * in arrival order for a free worker. Built and run by bench/nativefloor.py:
 *
 *     cc -O2 -o nativefloor bench/nativefloor.c && ./nativefloor PORT WORKER_SOCKET...
 *
 * A measuring instrument for loopback benchmarks, not a server: it trusts its clients and its workers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_WORKERS 64
#define BUF_CAP (1 << 20)

typedef struct conn {
    int fd;
    int is_worker;
    char *buf;
    size_t len;
    struct conn *peer;    /* a client's worker while its request is out, a worker's client */
    struct conn *next;    /* a client waiting for a worker */
    int waiting;
} conn;

static conn *workers[MAX_WORKERS];
static int n_workers;
static conn *queue_head, *queue_tail;
static int ep;

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* A complete message in c->buf: its head's length, its body's length; 0 while incomplete. */
static int complete(conn *c, size_t *head, size_t *body) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    *head = (size_t)(end - c->buf) + 4;
    *body = 0;
    for (char *p = c->buf; p < end; p++) {
        if ((p == c->buf || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0) {
            *body = strtoul(p + 15, NULL, 10);
            break;
        }
    }
    return c->len >= *head + *body;
}

static void write_all(int fd, struct iovec *iov, int n) {
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
}

static void consume(conn *c, size_t n) {
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static void send_to_worker(conn *client, conn *worker) {
    size_t head, body;
    complete(client, &head, &body);
    char line[160];
    int k = snprintf(line, sizeof line,
                     "POST /invocations HTTP/1.1\r\nHost: w\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     body);
    struct iovec iov[2] = {{line, (size_t)k}, {client->buf + head, body}};
    client->peer = worker;
    worker->peer = client;
    write_all(worker->fd, iov, 2);
    consume(client, head + body);
}

static conn *free_worker(void) {
    for (int i = 0; i < n_workers; i++)
        if (!workers[i]->peer) return workers[i];
    return NULL;
}

static void dispatch(conn *client) {
    conn *w = free_worker();
    if (w) {
        send_to_worker(client, w);
        return;
    }
    client->waiting = 1;
    client->next = NULL;
    if (queue_tail) queue_tail->next = client;
    else queue_head = client;
    queue_tail = client;
}

static void answer(conn *worker) {
    size_t head, body;
    if (!complete(worker, &head, &body)) return;
    conn *client = worker->peer;
    char line[128];
    int k = snprintf(line, sizeof line,
                     "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %zu\r\n\r\n", body);
    struct iovec iov[2] = {{line, (size_t)k}, {worker->buf + head, body}};
    if (client) {
        client->peer = NULL;
        write_all(client->fd, iov, 2);
    }
    consume(worker, head + body);
    worker->peer = NULL;
    if (queue_head) {
        conn *next = queue_head;
        queue_head = next->next;
        if (!queue_head) queue_tail = NULL;
        next->waiting = 0;
        send_to_worker(next, worker);
    }
}

static conn *new_conn(int fd, int is_worker) {
    conn *c = calloc(1, sizeof *c);
    c->fd = fd;
    c->is_worker = is_worker;
    c->buf = malloc(BUF_CAP);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    return c;
}

static void drop_client(conn *c) {
    if (c->waiting) {
        conn **p = &queue_head;
        conn *prev = NULL;
        while (*p && *p != c) {
            prev = *p;
            p = &(*p)->next;
        }
        if (*p) *p = c->next;
        if (queue_tail == c) queue_tail = prev;
    }
    if (c->peer) c->peer->peer = NULL; /* its worker's answer then goes nowhere */
    close(c->fd);
    free(c->buf);
    free(c);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s PORT WORKER_SOCKET...\n", argv[0]);
        return 2;
    }
    ep = epoll_create1(0);
    for (int i = 2; i < argc && n_workers < MAX_WORKERS; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        strncpy(a.sun_path, argv[i], sizeof a.sun_path - 1);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) die("connect");
        workers[n_workers++] = new_conn(fd, 1);
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&la, sizeof la) < 0) die("bind");
    if (listen(lfd, 128) < 0) die("listen");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    struct epoll_event events[64];
    for (;;) {
        int n = epoll_wait(ep, events, 64, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            conn *c = events[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    new_conn(fd, 0);
                }
                continue;
            }
            ssize_t r = read(c->fd, c->buf + c->len, BUF_CAP - c->len);
            if (r <= 0) {
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                if (c->is_worker) {
                    fprintf(stderr, "a worker's connection closed\n");
                    exit(1);
                }
                drop_client(c);
                continue;
            }
            c->len += (size_t)r;
            if (c->is_worker) {
                answer(c);
            } else {
                size_t head, body;
                if (!c->peer && !c->waiting && complete(c, &head, &body)) dispatch(c);
            }
        }
    }
}
