/* The native data plane (docs/dataplane.md): an HTTP/1.1 server for SageMaker's runtime on a port of its
 * own, run by one thread of the server's process with the GIL released. It serves the common case of
 * InvokeEndpoint whole: a request signed by a key it holds a grant for, to an endpoint it holds an idle
 * worker's lease for. Every other request it relays to the Python server whole (an event the Python side
 * takes, answers through the app, and writes back through ``respond``), so that every error and every
 * uncommon case keeps one implementation.
 *
 * Between the two threads: commands from Python (``respond``, ``lease``, ``recall``, ``grant``, ...) go on a
 * list under a mutex and wake the loop through an eventfd; events for Python (relayed requests, the
 * records of requests served here, failures, leases given back) go on another list and wake Python's event
 * loop through a second eventfd (``fileno``), once per batch. The loop never touches a Python object.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "sha256.h"
#include "py_sigv4.h"
#include "sigv4.h"

#define MAX_HEAD (64 * 1024) /* a worker's answer head, and the most a request's may be */
#define READ_CHUNK (64 * 1024)
#define MAX_FDS (1 << 20)
/* The largest body the plane serves itself: its SHA-256 runs on the one thread every connection shares,
 * so a larger one goes to the Python server. With the CPU's SHA instructions (sha256.c) a megabyte takes
 * about 0.6 ms; in portable C about 3.7 ms, so then 128 KB (under half a millisecond). */
#define FAST_BODY_MAX (1024 * 1024)
#define FAST_BODY_MAX_PORTABLE (128 * 1024)

/* ------------------------------------------------------------------------------------------------------ */
/* buffers */

typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

static int buf_reserve(buf_t *b, size_t more) {
    if (b->len + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more) cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_put(buf_t *b, const void *data, size_t n) {
    if (buf_reserve(b, n) != 0) return -1;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

static int buf_str(buf_t *b, const char *s) { return buf_put(b, s, strlen(s)); }

/* Room for one more entry in the array ``*items`` of ``n`` entries of ``size`` bytes (its capacity ``*cap``,
 * doubled when full): 0, or -1 out of memory (the array as it was). */
static int room(void **items, size_t *cap, size_t n, size_t size) {
    if (n < *cap) return 0;
    size_t more = *cap ? *cap * 2 : 64;
    void *grown = realloc(*items, more * size);
    if (grown == NULL) return -1;
    *items = grown;
    *cap = more;
    return 0;
}

static void buf_drop(buf_t *b, size_t n) { /* the first n bytes */
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

static void buf_free(buf_t *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static char *dup_bytes(const char *p, size_t n) {
    char *d = malloc(n ? n : 1);
    if (d != NULL && n) memcpy(d, p, n);
    return d;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double wall_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------------------------------------------ */
/* connections, leases, grants */

enum { C_READ, C_FAST, C_RELAY, C_QUEUED };

typedef struct conn {
    uint64_t id;
    int fd;
    int state;
    buf_t in, out;
    int gone;        /* the client closed or failed: drop what is written, close once idle */
    int close_after; /* HTTP/1.0 or Connection: close: close once this answer is out */
    int writing;     /* EPOLLOUT armed */
    int full;        /* Python was told to hold its answer's next pieces (EV_FULL) until EV_DRAINED */
    int unread;      /* bytes came while it was not read (an answer in progress, or closing) */
    int peer_done;   /* the client shut its side: nothing more will come (edge-triggered: seen once) */
    uint64_t deadline_ns; /* the request's head, then its body, must be in by then (0: no request begun) */
    int body_phase;       /* its head is in: the deadline is the body's */
    uint64_t idle_since_ns;
    size_t req_len;  /* head + body of the request being answered, at the start of ``in`` */
    size_t head_len;
    uint64_t started_ns;
    char host[64];
    int port;
    /* queued behind the plane's busy leases of ``q_endpoint``'s ``q_variant`` (C_QUEUED), until q_deadline_ns */
    struct conn *q_prev, *q_next;
    uint64_t q_since_ns, q_deadline_ns; /* q_since_ns stays set until the request is answered */
    char q_endpoint[64], q_variant[64];
    char relay_ep[64]; /* relayed while ``relay_ep`` was routed: counted in its route's ``relaying`` */
} conn_t;

enum { L_IDLE, L_BUSY };

typedef struct lease {
    uint64_t id;
    int fd;
    int state;
    int recalled;
    int used; /* a slot of the table in use */
    char endpoint[64];
    char variant[64];
    char worker[64]; /* the worker's id, for the usage journal */
    int memory_mb, provisioned;
    double timeout_s;
    size_t max_answer, max_request;
    buf_t w; /* the request being written */
    size_t w_off;
    buf_t r; /* the answer being read */
    conn_t *client;
    uint64_t client_id;
    uint64_t sent_ns, deadline_ns, idle_since_ns;
    size_t bytes_in;
    int writing;
} lease_t;

typedef struct {
    char *akid;
    char *secret;
    char *endpoint;
} grant_t;

/* An endpoint the plane may serve: its production variants and their weights (the Python server's
 * ``EndpointRoute.choose``, as cumulative shares of 1), and the workers its variants may have together
 * (their MaxConcurrency). A request picks its variant by the weights, then an idle lease of that variant.
 * None idle: while the plane's leases of the endpoint and its requests relayed to the pool leave room under
 * ``max_conc``, it is relayed (the pool serves it, starting a worker if it may, and lends that worker when
 * it is free); with no room, it waits here for one of its variant's leases (the pool could serve it no
 * sooner: every worker it may have is the plane's or busy with what the plane relayed). */
#define MAX_VARIANTS 10
typedef struct {
    char endpoint[64];
    int n;
    char variant[MAX_VARIANTS][64];
    double upto[MAX_VARIANTS];
    int max_conc;
    int relaying; /* requests of it relayed, not answered yet */
    int queued;   /* requests of it waiting for a lease */
} route_t;

/* An open-addressing index of an array's entries by a string key (grants, secrets, routes: a request looks
 * each up, so that thousands of endpoints or keys cost one probe, not a scan). ``slot`` holds entry numbers,
 * -1 where empty; ``cap`` is a power of two, at least twice the entries. Rebuilt whole when it grows or an
 * entry goes (rare: grants go all at once, routes when an endpoint is served no more). */
typedef struct {
    int32_t *slot;
    size_t cap;
} index_t;

static uint64_t fnv(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

#define FNV0 14695981039346656037ull

/* Empties ``ix`` to hold at least ``n`` entries; 0, or -1 out of memory. */
static int index_reset(index_t *ix, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n + 2) cap *= 2;
    if (cap != ix->cap) {
        int32_t *slot = malloc(cap * sizeof *slot);
        if (slot == NULL) return -1;
        free(ix->slot);
        ix->slot = slot;
        ix->cap = cap;
    }
    memset(ix->slot, 0xff, ix->cap * sizeof *ix->slot);
    return 0;
}

static void index_put(index_t *ix, uint64_t h, int32_t entry) {
    size_t i = (size_t)h & (ix->cap - 1);
    while (ix->slot[i] >= 0) i = (i + 1) & (ix->cap - 1);
    ix->slot[i] = entry;
}

/* ------------------------------------------------------------------------------------------------------ */
/* commands (Python -> loop) and events (loop -> Python) */

enum { CMD_RESPOND, CMD_LEASE, CMD_RECALL, CMD_GRANT, CMD_CLEAR_GRANTS, CMD_ROUTE, CMD_STOP };

typedef struct cmd {
    int kind;
    uint64_t id;
    int fd;
    int end, close;
    char *data;
    size_t len;
    char *a, *b, *c; /* grant: akid, secret, endpoint; lease: endpoint, variant, worker */
    int memory_mb, provisioned;
    double timeout_s;
    size_t max_answer, max_request;
    route_t *route; /* CMD_ROUTE: the endpoint's route (n 0: it has none) */
    struct cmd *next;
} cmd_t;

enum { EV_REQUEST, EV_DONE, EV_FAILED, EV_RETURNED, EV_GONE, EV_FULL, EV_DRAINED };

/* A relayed answer (a response stream) written faster than its client reads: Python holds its next pieces
 * past FULL_BYTES waiting here, until they are down to DRAINED_BYTES. */
#define FULL_BYTES (1024 * 1024)
#define DRAINED_BYTES (256 * 1024)

typedef struct event {
    int kind;
    uint64_t conn_id, lease_id;
    char *req; /* request: head and body, as received */
    size_t head_len, req_len;
    char host[64];
    int port;
    char akid[129];
    char endpoint[64];
    double waited_s; /* since the request was whole */
    double queued_s; /* of which waiting for a lease (a relayed request: the pool waits the rest) */
    /* done / failed */
    double at, model_s, total_s;
    size_t bytes_in, bytes_out;
    int status;
    char fail[24]; /* timeout | broken | not_delivered | answer | too_large | refused */
    char *answer; /* failed "answer": the answer's head and (decoded) body */
    size_t answer_head, answer_len;
    int broken;
    long segment, offset; /* done: the usage journal's position after its line */
    struct event *next;
} event_t;

static void event_free(event_t *e) {
    free(e->req);
    free(e->answer);
    free(e);
}

/* ------------------------------------------------------------------------------------------------------ */
/* the plane */

typedef struct {
    PyObject_HEAD int listen_fd, epoll_fd, wake_fd, notify_fd;
    pthread_t thread;
    int running;
    pthread_mutex_t mu;
    cmd_t *cmds, *cmds_tail;
    event_t *events, *events_tail;
    int signalled;     /* Python was woken for the events waiting (under mu) */
    size_t lazy_count; /* records waiting without a wake-up (under mu) */
    uint64_t lazy_at;  /* since when the oldest of them waits */
    int stopping;
    /* settings */
    char region[64], service[64], id_prefix[32], trailer[64];
    size_t payload_limit;
    double keep_alive_s, lease_idle_s, header_s, body_s;
    size_t max_conns, max_per_client, max_head;
    size_t fast_body_max; /* FAST_BODY_MAX, or FAST_BODY_MAX_PORTABLE without the CPU's SHA instructions */
    double queue_wait_s;  /* the longest a request waits here for a lease (then relayed) */
    size_t max_queue;     /* the most requests of one endpoint that wait here */
    /* the loop's own (no lock) */
    conn_t **conns; /* by fd */
    size_t n_conns;
    uint64_t next_conn;
    int max_fd;
    lease_t *leases;
    size_t n_leases, cap_leases;
    grant_t *grants;
    size_t n_grants, cap_grants;
    route_t *routes;
    size_t n_routes, cap_routes;
    conn_t *q_head, *q_tail; /* requests waiting for a lease, oldest first */
    uint64_t waiting;        /* how many */
    int q_dirty;             /* a lease went or a route changed: the waiting ones are checked */
    index_t by_grant, by_key, by_route; /* grants by (key, endpoint), a secret by key, routes by endpoint */
    uint64_t rng; /* xorshift64*: which variant a request goes to */
    uint64_t next_request;
    char journal_dir[1024]; /* "" without a usage journal */
    int journal_fd;
    long journal_segment, journal_offset;
    time_t date_at;
    char date[64];
    /* counters (read without lock: approximate) */
    uint64_t served, relayed;
} Plane;

#define LAZY_NS 10000000ull /* a served request's record reaches Python within 10 ms */
#define LAZY_MAX 256

#define TAG_LISTEN 1ull
#define TAG_WAKE 2ull
#define TAG_CONN 3ull
#define TAG_LEASE 4ull
#define TAG(kind, n) (((kind) << 56) | (uint64_t)(n))

static void ring(Plane *p) {
    uint64_t one = 1;
    ssize_t w = write(p->notify_fd, &one, sizeof one);
    (void)w;
}

/* An event for Python. A request, a failure or a lease given back wakes its event loop at once (unless a
 * wake-up is on its way); a served request's record waits for others, up to LAZY_NS or LAZY_MAX of them:
 * at a low rate each wake-up of the event loop costs more than the record's own work. */
static void emit(Plane *p, event_t *e) {
    int urgent = e->kind != EV_DONE, wake = 0;
    pthread_mutex_lock(&p->mu);
    if (p->events_tail) p->events_tail->next = e;
    else p->events = e;
    p->events_tail = e;
    if (!urgent && p->lazy_count++ == 0) p->lazy_at = now_ns();
    if (!p->signalled && (urgent || p->lazy_count >= LAZY_MAX)) p->signalled = wake = 1;
    pthread_mutex_unlock(&p->mu);
    if (wake) ring(p);
}

/* Records that waited LAZY_NS wake Python; the milliseconds until the oldest waiting would, else -1. */
static int flush_lazy(Plane *p) {
    int wake = 0, wait = -1;
    uint64_t t = now_ns();
    pthread_mutex_lock(&p->mu);
    if (!p->signalled && p->lazy_count) {
        if (t >= p->lazy_at + LAZY_NS) p->signalled = wake = 1;
        else wait = (int)((p->lazy_at + LAZY_NS - t) / 1000000ull) + 1;
    }
    pthread_mutex_unlock(&p->mu);
    if (wake) ring(p);
    return wait;
}

static event_t *new_event(int kind) { return calloc(1, sizeof(event_t)); }

/* ---- grants ---- */

static uint64_t grant_hash(const char *akid, size_t akid_len, const char *endpoint) {
    return fnv(fnv(FNV0, akid, akid_len) ^ 0xff, endpoint, strlen(endpoint));
}

static int akid_is(const grant_t *g, const char *akid, size_t akid_len) {
    return strlen(g->akid) == akid_len && memcmp(g->akid, akid, akid_len) == 0;
}

/* The indexes of the grants, rebuilt: 0, or -1 out of memory (then no grant is found: requests relay). */
static int grants_indexed(Plane *p) {
    if (index_reset(&p->by_grant, p->n_grants) != 0 || index_reset(&p->by_key, p->n_grants) != 0) {
        p->n_grants = 0;
        return -1;
    }
    for (size_t i = 0; i < p->n_grants; i++) {
        grant_t *g = &p->grants[i];
        size_t n = strlen(g->akid);
        index_put(&p->by_grant, grant_hash(g->akid, n, g->endpoint), (int32_t)i);
        size_t k = (size_t)fnv(FNV0, g->akid, n) & (p->by_key.cap - 1); /* one entry a key: its first grant */
        int seen = 0;
        for (; p->by_key.slot[k] >= 0; k = (k + 1) & (p->by_key.cap - 1))
            if (akid_is(&p->grants[p->by_key.slot[k]], g->akid, n)) seen = 1;
        if (!seen) p->by_key.slot[k] = (int32_t)i;
    }
    return 0;
}

static const char *grant_secret(void *ctx, const char *akid, size_t akid_len, size_t *secret_len) {
    Plane *p = ctx;
    if (p->by_key.cap == 0) return NULL;
    for (size_t k = (size_t)fnv(FNV0, akid, akid_len) & (p->by_key.cap - 1); p->by_key.slot[k] >= 0;
         k = (k + 1) & (p->by_key.cap - 1)) {
        grant_t *g = &p->grants[p->by_key.slot[k]];
        if (akid_is(g, akid, akid_len)) {
            *secret_len = strlen(g->secret);
            return g->secret;
        }
    }
    return NULL;
}

static int granted(Plane *p, const char *akid, size_t akid_len, const char *endpoint) {
    if (p->by_grant.cap == 0) return 0;
    for (size_t k = (size_t)grant_hash(akid, akid_len, endpoint) & (p->by_grant.cap - 1); p->by_grant.slot[k] >= 0;
         k = (k + 1) & (p->by_grant.cap - 1)) {
        grant_t *g = &p->grants[p->by_grant.slot[k]];
        if (akid_is(g, akid, akid_len) && strcmp(g->endpoint, endpoint) == 0) return 1;
    }
    return 0;
}

static void clear_grants(Plane *p) {
    for (size_t i = 0; i < p->n_grants; i++) {
        free(p->grants[i].akid);
        free(p->grants[i].secret);
        free(p->grants[i].endpoint);
    }
    p->n_grants = 0;
    grants_indexed(p);
}

/* ---- epoll ---- */

static void ep_set(Plane *p, int op, int fd, uint32_t events, uint64_t tag) {
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    epoll_ctl(p->epoll_fd, op, fd, &ev);
}

/* Connections and leases are watched edge-triggered for everything from the start (WATCHED): nothing is
 * re-armed per request. (Re-arming took an epoll_ctl several times a request, a third of the plane's system
 * calls.) Bytes a client sends while its request is answered wait in the kernel, noted by ``unread``. */
#define WATCHED (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

static route_t *route_of(Plane *p, const char *endpoint);

/* A relay counted in its route's ``relaying`` is answered, or its client went. */
static void relay_ended(Plane *p, conn_t *c) {
    if (!c->relay_ep[0]) return;
    route_t *r = route_of(p, c->relay_ep);
    if (r != NULL && r->relaying > 0) r->relaying--;
    c->relay_ep[0] = 0;
}

/* The waiting list changes under ``mu``: Python reads it (``Plane.waiting``) from its own thread. */
static void queue_remove(Plane *p, conn_t *c) {
    pthread_mutex_lock(&p->mu);
    if (c->q_prev) c->q_prev->q_next = c->q_next;
    else p->q_head = c->q_next;
    if (c->q_next) c->q_next->q_prev = c->q_prev;
    else p->q_tail = c->q_prev;
    c->q_prev = c->q_next = NULL;
    p->waiting--;
    pthread_mutex_unlock(&p->mu);
    route_t *r = route_of(p, c->q_endpoint);
    if (r != NULL && r->queued > 0) r->queued--;
}

static void conn_close(Plane *p, conn_t *c) {
    if (c->state == C_QUEUED) queue_remove(p, c);
    relay_ended(p, c);
    if (c->state == C_RELAY) { /* Python is answering it: tell it the client is gone */
        event_t *e = new_event(EV_GONE);
        if (e) {
            e->kind = EV_GONE;
            e->conn_id = c->id;
            emit(p, e);
        }
    }
    epoll_ctl(p->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    p->conns[c->fd] = NULL;
    p->n_conns--;
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

static void conn_tell(Plane *p, conn_t *c, int kind) {
    event_t *e = new_event(kind);
    if (e == NULL) return;
    e->kind = kind;
    e->conn_id = c->id;
    emit(p, e);
}

/* Write what is pending; 0, or -1 when the connection failed (then closed). */
static int conn_flush(Plane *p, conn_t *c) {
    while (c->out.len) {
        ssize_t n = send(c->fd, c->out.p, c->out.len, MSG_NOSIGNAL);
        if (n > 0) {
            buf_drop(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        conn_close(p, c);
        return -1;
    }
    if (c->full && c->out.len <= DRAINED_BYTES) {
        c->full = 0;
        conn_tell(p, c, EV_DRAINED);
    }
    return 0;
}

static void process_conn(Plane *p, conn_t *c);
static void conn_readable(Plane *p, conn_t *c);

/* The answer to the request at the start of ``in`` is out (or queued): on to the next one. */
static void conn_answered(Plane *p, conn_t *c) {
    relay_ended(p, c);
    c->q_since_ns = 0;
    buf_drop(&c->in, c->req_len);
    c->req_len = 0;
    c->state = C_READ;
    c->deadline_ns = 0;
    c->body_phase = 0;
    c->full = 0;
    c->idle_since_ns = now_ns();
    if (conn_flush(p, c) != 0) return;
    if (c->gone || (c->close_after && c->out.len == 0)) {
        conn_close(p, c);
        return;
    }
    if (c->close_after) return; /* closed once the rest is written (EPOLLOUT) */
    if (c->unread) { /* a request pipelined behind it, still in the kernel */
        c->unread = 0;
        conn_readable(p, c);
    } else {
        process_conn(p, c); /* one read already */
    }
}

/* A plain answer of the plane's own (a request it cannot read), then the connection closes. */
static void conn_refuse(Plane *p, conn_t *c, int status, const char *reason, const char *message) {
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nx-amzn-errortype: %s\r\n"
                     "connection: close\r\ncontent-length: %zu\r\n\r\n",
                     status, reason, status == 413 ? "ValidationError" : "BadRequest", strlen(message));
    buf_put(&c->out, head, (size_t)n);
    buf_str(&c->out, message);
    c->req_len = c->in.len;
    c->close_after = 1;
    conn_answered(p, c);
}

static void date_header(Plane *p) {
    time_t t = time(NULL);
    if (t == p->date_at) return;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(p->date, sizeof p->date, "date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    p->date_at = t;
}

/* ---- the usage journal (metering/journal.py's format, a directory of its own) ---- */

#define JOURNAL_SEGMENT_BYTES (32L * 1024 * 1024)

static int journal_open(Plane *p, long segment) {
    char path[1100];
    snprintf(path, sizeof path, "%s/journal-%08ld.log", p->journal_dir, segment);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return -1;
    }
    if (p->journal_fd >= 0) close(p->journal_fd);
    p->journal_fd = fd;
    p->journal_segment = segment;
    p->journal_offset = (long)st.st_size;
    return 0;
}

/* One invocation's usage line, written before its answer: 0, or -1 when it could not be (nothing of it
 * stays: a short write is undone). */
static int journal_append(Plane *p, lease_t *l, double at, double model_s, double total_s, size_t out) {
    if (p->journal_dir[0] == 0) return 0;
    char line[512];
    int n = snprintf(line, sizeof line, "%s\t%s\t%s\t%.17g\t%.17g\t%.17g\t%zu\t%zu\t200\t\t%d\tNone\t%d\t1\n",
                     l->endpoint, l->variant, l->worker, at, model_s, total_s, l->bytes_in, out, l->memory_mb,
                     l->provisioned);
    if (n <= 0 || (size_t)n >= sizeof line) return -1;
    if (p->journal_fd < 0 || (p->journal_offset + n > JOURNAL_SEGMENT_BYTES && p->journal_offset > 0)) {
        if (journal_open(p, p->journal_fd < 0 ? p->journal_segment : p->journal_segment + 1) != 0) return -1;
    }
    ssize_t w = write(p->journal_fd, line, (size_t)n);
    if (w != n) {
        if (w > 0 && ftruncate(p->journal_fd, p->journal_offset) != 0) {
            /* the torn line stays: a reader skips it */
        }
        return -1;
    }
    p->journal_offset += n;
    return 0;
}

/* ---- the fast path ---- */

static route_t *route_of(Plane *p, const char *endpoint) {
    if (p->by_route.cap == 0) return NULL;
    for (size_t k = (size_t)fnv(FNV0, endpoint, strlen(endpoint)) & (p->by_route.cap - 1);
         p->by_route.slot[k] >= 0; k = (k + 1) & (p->by_route.cap - 1))
        if (strcmp(p->routes[p->by_route.slot[k]].endpoint, endpoint) == 0) return &p->routes[p->by_route.slot[k]];
    return NULL;
}

static void routes_indexed(Plane *p) {
    if (index_reset(&p->by_route, p->n_routes) != 0) {
        p->n_routes = 0; /* out of memory: no route, every request relayed */
        return;
    }
    for (size_t i = 0; i < p->n_routes; i++)
        index_put(&p->by_route, fnv(FNV0, p->routes[i].endpoint, strlen(p->routes[i].endpoint)), (int32_t)i);
}

/* The variant a request of ``r`` goes to, by the weights. */
static const char *choose_variant(Plane *p, const route_t *r) {
    if (r->n == 1) return r->variant[0];
    uint64_t x = p->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    p->rng = x;
    double u = (double)((x * 2685821657736338717ull) >> 11) / 9007199254740992.0; /* [0, 1) */
    for (int i = 0; i < r->n - 1; i++)
        if (u < r->upto[i]) return r->variant[i];
    return r->variant[r->n - 1];
}

static lease_t *idle_lease(Plane *p, const char *endpoint, const char *variant, size_t body_len) {
    lease_t *best = NULL;
    for (size_t i = 0; i < p->n_leases; i++) {
        lease_t *l = &p->leases[i];
        if (l->used && l->state == L_IDLE && !l->recalled && strcmp(l->endpoint, endpoint) == 0 &&
            strcmp(l->variant, variant) == 0 && body_len <= l->max_request) {
            if (best == NULL || l->idle_since_ns > best->idle_since_ns) best = l; /* the most recently used */
        }
    }
    return best;
}


/* A lease's state, and whether its slot is in use, change under ``mu``: Python reads which leases are idle
 * (``Plane.idle_leases``) from its own thread. */
static void lease_set(Plane *p, lease_t *l, int used, int state) {
    pthread_mutex_lock(&p->mu);
    l->used = used;
    l->state = state;
    pthread_mutex_unlock(&p->mu);
}

/* Its slot freed and its connection closed before Python is told: Python never sees a lease it was told
 * came back among the idle ones, nor a worker it got back still connected to the plane. */
static void lease_return(Plane *p, lease_t *l, int broken) {
    p->q_dirty = 1; /* the requests waiting for its variant may have no lease left */
    lease_set(p, l, 0, L_IDLE);
    epoll_ctl(p->epoll_fd, EPOLL_CTL_DEL, l->fd, NULL);
    close(l->fd);
    buf_free(&l->w);
    buf_free(&l->r);
    l->fd = -1;
    event_t *e = new_event(EV_RETURNED);
    if (e) {
        e->kind = EV_RETURNED;
        e->lease_id = l->id;
        e->broken = broken;
        emit(p, e);
    }
}

/* The request event's common part: the request as it came, where from, how long it has waited. */
static event_t *request_event(Plane *p, conn_t *c, int kind) {
    event_t *e = new_event(kind);
    if (e == NULL) return NULL;
    e->kind = kind;
    e->conn_id = c->id;
    e->req = dup_bytes(c->in.p, c->req_len);
    if (e->req == NULL) {
        free(e);
        return NULL;
    }
    e->head_len = c->head_len;
    e->req_len = c->req_len;
    memcpy(e->host, c->host, sizeof e->host);
    e->port = c->port;
    uint64_t t = now_ns();
    e->waited_s = (double)(t - c->started_ns) / 1e9;
    e->queued_s = c->q_since_ns ? (double)(t - c->q_since_ns) / 1e9 : 0.0;
    return e;
}

static void relay(Plane *p, conn_t *c, const char *akid, size_t akid_len, const char *endpoint) {
    event_t *e = request_event(p, c, EV_REQUEST);
    if (e == NULL) {
        conn_refuse(p, c, 503, "Service Unavailable", "{\"message\": \"out of memory\"}");
        return;
    }
    if (akid != NULL && akid_len < sizeof e->akid) memcpy(e->akid, akid, akid_len);
    if (endpoint != NULL) snprintf(e->endpoint, sizeof e->endpoint, "%s", endpoint);
    c->state = C_RELAY;
    p->relayed++;
    emit(p, e);
}

/* A request of a routed endpoint relayed: counted as taking one of the pool's workers until answered. */
static void relay_routed(Plane *p, conn_t *c, const char *akid, size_t akid_len, const char *endpoint, route_t *r) {
    relay(p, c, akid, akid_len, endpoint);
    if (r != NULL && c->state == C_RELAY) {
        r->relaying++;
        snprintf(c->relay_ep, sizeof c->relay_ep, "%s", endpoint);
    }
}

/* The plane's leases of ``endpoint`` not recalled; ``of_variant``: those of ``variant`` a body of
 * ``body_len`` may go to. */
static int leases_held(Plane *p, const char *endpoint, const char *variant, size_t body_len, int *of_variant) {
    int held = 0;
    *of_variant = 0;
    for (size_t i = 0; i < p->n_leases; i++) {
        lease_t *l = &p->leases[i];
        if (!l->used || l->recalled || strcmp(l->endpoint, endpoint) != 0) continue;
        held++;
        if (strcmp(l->variant, variant) == 0 && body_len <= l->max_request) (*of_variant)++;
    }
    return held;
}

/* No lease of ``variant`` idle: whether the request waits here for one (see route_t) rather than relayed. */
static int waits_for_lease(Plane *p, const route_t *r, const char *endpoint, const char *variant, size_t body_len) {
    int of_variant;
    int held = leases_held(p, endpoint, variant, body_len, &of_variant);
    return of_variant > 0 && held + r->relaying >= r->max_conc && (size_t)r->queued < p->max_queue;
}

static void queue_add(Plane *p, conn_t *c, route_t *r, const char *endpoint, const char *variant) {
    snprintf(c->q_endpoint, sizeof c->q_endpoint, "%s", endpoint);
    snprintf(c->q_variant, sizeof c->q_variant, "%s", variant);
    c->q_since_ns = now_ns();
    c->q_deadline_ns = c->q_since_ns + (uint64_t)(p->queue_wait_s * 1e9);
    c->state = C_QUEUED;
    r->queued++;
    pthread_mutex_lock(&p->mu);
    c->q_prev = p->q_tail;
    c->q_next = NULL;
    if (p->q_tail) p->q_tail->q_next = c;
    else p->q_head = c;
    p->q_tail = c;
    p->waiting++;
    pthread_mutex_unlock(&p->mu);
}

/* Waiting requests that wait no more: past their time, or with no lease of their variant left (recalled,
 * returned, the endpoint served here no more). Relayed, oldest first: the pool serves them. */
static void queue_check(Plane *p) {
    uint64_t t = now_ns();
    p->q_dirty = 0;
    for (conn_t *c = p->q_head, *next; c != NULL; c = next) {
        next = c->q_next;
        route_t *r = route_of(p, c->q_endpoint);
        int of_variant = 0;
        if (r != NULL) leases_held(p, c->q_endpoint, c->q_variant, c->req_len - c->head_len, &of_variant);
        if (t < c->q_deadline_ns && of_variant > 0) continue;
        queue_remove(p, c);
        c->state = C_READ;
        relay_routed(p, c, NULL, 0, c->q_endpoint, r);
    }
}

/* The request headers a worker gets, under the names it gets them (api/invoke.py _FORWARDED), with the
 * lengths InvokeEndpoint's shape holds their values to (``_check_header``). */
static const struct {
    const char *lower, *wire;
    size_t min_len, max_len;
} FORWARDED[] = {
    {"content-type", "Content-Type", 0, 1024},
    {"accept", "Accept", 0, 1024},
    {"x-amzn-sagemaker-custom-attributes", "X-Amzn-SageMaker-Custom-Attributes", 0, 1024},
    {"x-amzn-sagemaker-inference-id", "X-Amzn-SageMaker-Inference-Id", 1, 64},
};
#define N_FORWARDED (sizeof FORWARDED / sizeof FORWARDED[0])

/* Which of FORWARDED ``h`` is, else -1. */
static int forwarded(const zs_header *h) {
    for (size_t k = 0; k < N_FORWARDED; k++)
        if (zs_ieq(h->name, h->name_len, FORWARDED[k].lower)) return (int)k;
    return -1;
}

static int ascii_visible(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f) return 0;
    return 1;
}

/* Whether the plane serves this request's headers itself: every header it does not know is one Python
 * answers (a TargetVariant, a session token, ...). Fills the worker's request head. */
static int fast_headers(const zs_request *req, buf_t *w, size_t body_len) {
    char line[96];
    int n = snprintf(line, sizeof line, "POST /invocations HTTP/1.1\r\nHost: worker\r\nContent-Length: %zu\r\n", body_len);
    if (buf_put(w, line, (size_t)n) != 0) return 0;
    int seen[N_FORWARDED] = {0};
    for (size_t i = 0; i < req->n_headers; i++) {
        const zs_header *h = &req->headers[i];
        int k = forwarded(h);
        if (k >= 0) { /* twice, out of its shape or not plain ASCII: Python's to answer (or refuse) */
            if (seen[k]++ || h->value_len < FORWARDED[k].min_len || h->value_len > FORWARDED[k].max_len ||
                !ascii_visible(h->value, h->value_len))
                return 0;
            if (buf_str(w, FORWARDED[k].wire) || buf_put(w, ": ", 2) || buf_put(w, h->value, h->value_len) ||
                buf_put(w, "\r\n", 2))
                return 0;
            continue;
        }
        if (h->name_len >= 6 && (zs_ieq(h->name, 6, "x-amz-") || (h->name_len >= 7 && zs_ieq(h->name, 7, "x-amzn-")))) {
            if (zs_ieq(h->name, h->name_len, "x-amz-date") || zs_ieq(h->name, h->name_len, "x-amzn-trace-id")) continue;
            return 0;
        }
        if (zs_ieq(h->name, h->name_len, "expect") || zs_ieq(h->name, h->name_len, "transfer-encoding") ||
            zs_ieq(h->name, h->name_len, "upgrade"))
            return 0;
    }
    return buf_put(w, "\r\n", 2) == 0;
}

/* "/endpoints/<name>/invocations": the name, else 0. */
static int endpoint_of(const zs_request *req, char *name, size_t cap) {
    static const char pre[] = "/endpoints/", suf[] = "/invocations";
    size_t lp = sizeof pre - 1, ls = sizeof suf - 1, n = req->target_len;
    if (n <= lp + ls || memcmp(req->target, pre, lp) != 0 || memcmp(req->target + n - ls, suf, ls) != 0) return 0;
    size_t len = n - lp - ls;
    if (len >= cap) return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = req->target[lp + i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-')) return 0;
    }
    memcpy(name, req->target + lp, len);
    name[len] = 0;
    return 1;
}

static void lease_send(Plane *p, lease_t *l);

/* A worker's connection failed so that the request cannot have reached it: reset or closed with it unread
 * (a peer that closes with a request unread resets the connection), or never made (a TCP worker's lease is
 * handed over while its connection is still being made, and the worker refused it). A timeout or an
 * unreachable host may come after the request went: not these. */
static int not_delivered(int err) { return err == ECONNRESET || err == EPIPE || err == ECONNREFUSED; }

/* ``given``: an idle lease that takes this request, which waited for it (its signature and grant checked
 * again: a grant may have gone meanwhile). */
static void serve_request(Plane *p, conn_t *c, const zs_request *req, const char *body, size_t body_len,
                          lease_t *given) {
    char endpoint[64];
    int shaped = req->minor == 1 && !c->close_after && req->method_len == 4 && memcmp(req->method, "POST", 4) == 0 &&
                 endpoint_of(req, endpoint, sizeof endpoint);
    if (!shaped) {
        relay(p, c, NULL, 0, NULL);
        return;
    }
    if (body_len > p->fast_body_max) { /* hashing it here would hold every other connection up */
        relay(p, c, NULL, 0, NULL);
        return;
    }
    const char *akid = NULL;
    size_t akid_len = 0;
    int sig = zs_sigv4_check(req->method, req->method_len, req->target, req->target_len, "", 0, req->headers,
                             req->n_headers, (const uint8_t *)body, body_len, p->region, p->service,
                             (int64_t)time(NULL), grant_secret, p, &akid, &akid_len);
    route_t *route = route_of(p, endpoint);
    if (sig != 0) {
        relay_routed(p, c, NULL, 0, endpoint, route);
        return;
    }
    lease_t *l = NULL;
    if (route != NULL && granted(p, akid, akid_len, endpoint)) {
        if (given != NULL) {
            if (strcmp(given->endpoint, endpoint) == 0 && body_len <= given->max_request) l = given;
        } else {
            const char *variant = choose_variant(p, route);
            l = idle_lease(p, endpoint, variant, body_len);
            if (l == NULL && waits_for_lease(p, route, endpoint, variant, body_len)) {
                queue_add(p, c, route, endpoint, variant);
                return;
            }
        }
    }
    if (l == NULL) {
        relay_routed(p, c, akid, akid_len, endpoint, route);
        return;
    }
    l->w.len = 0;
    l->w_off = 0;
    if (!fast_headers(req, &l->w, body_len) || buf_put(&l->w, body, body_len) != 0) {
        relay_routed(p, c, akid, akid_len, endpoint, route);
        return;
    }
    l->r.len = 0;
    lease_set(p, l, 1, L_BUSY);
    l->client = c;
    l->client_id = c->id;
    l->bytes_in = body_len;
    l->sent_ns = now_ns();
    l->deadline_ns = l->sent_ns + (uint64_t)(l->timeout_s * 1e9);
    c->state = C_FAST;
    lease_send(p, l);
}

/* Parse and answer what ``in`` holds, as long as whole requests are there. */
static void process_conn(Plane *p, conn_t *c) {
    if (c->close_after) return; /* its last answer is on its way out: nothing after it is read */
    while (c->state == C_READ && c->in.len > 0) {
        if (c->deadline_ns == 0) {
            c->started_ns = now_ns();
            c->deadline_ns = c->started_ns + (uint64_t)(p->header_s * 1e9);
        }
        zs_request req;
        long head = zs_parse_request(c->in.p, c->in.len, p->max_head, &req);
        if (head == ZS_MORE) break;
        if (head == ZS_TOO_LARGE) {
            conn_refuse(p, c, 431, "Request Header Fields Too Large", "{\"message\": \"request head too large\"}");
            return;
        }
        if (head < 0) {
            conn_refuse(p, c, 400, "Bad Request", "{\"message\": \"malformed HTTP request\"}");
            return;
        }
        size_t count = 0;
        const zs_header *te = zs_find_header(req.headers, req.n_headers, "transfer-encoding", NULL);
        const zs_header *cl = zs_find_header(req.headers, req.n_headers, "content-length", &count);
        if (te != NULL) {
            conn_refuse(p, c, 411, "Length Required",
                        "{\"message\": \"this port takes request bodies with a Content-Length, not chunked\"}");
            return;
        }
        int64_t length = 0;
        if (cl != NULL) {
            length = count == 1 ? zs_content_length(cl->value, cl->value_len) : -1;
            if (length < 0) {
                conn_refuse(p, c, 400, "Bad Request", "{\"message\": \"invalid Content-Length\"}");
                return;
            }
        }
        const zs_header *conn_h = zs_find_header(req.headers, req.n_headers, "connection", NULL);
        c->close_after = req.minor == 0 ? !(conn_h && zs_ieq(conn_h->value, conn_h->value_len, "keep-alive"))
                                        : (conn_h != NULL && zs_ieq(conn_h->value, conn_h->value_len, "close"));
        const zs_header *expect = zs_find_header(req.headers, req.n_headers, "expect", NULL);
        int oversize = (uint64_t)length > p->payload_limit;
        size_t want = (size_t)head + (oversize ? 0 : (size_t)length);
        if (c->in.len < want) {
            if (!c->body_phase) { /* the head is in: the body has its own time */
                c->body_phase = 1;
                c->deadline_ns = now_ns() + (uint64_t)(p->body_s * 1e9);
                if (expect != NULL && zs_ieq(expect->value, expect->value_len, "100-continue")) {
                    buf_str(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
                    if (conn_flush(p, c) != 0) return;
                }
            }
            break;
        }
        c->head_len = (size_t)head;
        if (oversize) { /* Python answers its error, the body unread; then the connection closes */
            c->req_len = (size_t)head;
            c->close_after = 1;
            relay(p, c, NULL, 0, NULL);
            return;
        }
        c->req_len = want;
        /* ``req`` points into ``in``, which nothing grows until this request is answered */
        serve_request(p, c, &req, c->in.p + head, (size_t)length, NULL);
        return;
    }
    if (c->state == C_READ && c->peer_done) { /* no more will come: what is here is all there is */
        if (c->out.len == 0) conn_close(p, c);
        else c->close_after = 1; /* once its answer is out */
    }
}

/* An idle lease takes the oldest request waiting for its variant (one relayed instead, its grant gone
 * meanwhile: the next). */
static void queue_take(Plane *p, lease_t *l) {
    conn_t *c = p->q_head;
    while (c != NULL && l->used && l->state == L_IDLE && !l->recalled) {
        if (strcmp(c->q_endpoint, l->endpoint) != 0 || strcmp(c->q_variant, l->variant) != 0) {
            c = c->q_next;
            continue;
        }
        queue_remove(p, c);
        c->state = C_READ;
        zs_request req; /* parsed whole before it waited: it parses the same */
        long head = zs_parse_request(c->in.p, c->req_len, p->max_head, &req);
        if (head != (long)c->head_len) relay(p, c, NULL, 0, NULL);
        else serve_request(p, c, &req, c->in.p + head, c->req_len - c->head_len, l);
        c = p->q_head; /* from the oldest again: serving it may have changed the list */
    }
}

static void conn_readable(Plane *p, conn_t *c) {
    for (;;) {
        if (c->in.len >= p->max_head + p->payload_limit + 1) break; /* a whole request fits: parse first */
        if (buf_reserve(&c->in, READ_CHUNK) != 0) {
            conn_close(p, c);
            return;
        }
        ssize_t n = recv(c->fd, c->in.p + c->in.len, READ_CHUNK, 0);
        if (n > 0) {
            c->in.len += (size_t)n;
            if ((size_t)n < READ_CHUNK) break;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        conn_close(p, c); /* EOF or an error: between requests, or mid-request; nothing to answer */
        return;
    }
    process_conn(p, c);
}

/* ---- the worker's answer ---- */

static void fail_event(Plane *p, lease_t *l, const char *kind, int status, const char *answer, size_t head,
                       size_t len) {
    conn_t *c = l->client;
    uint64_t t = now_ns();
    event_t *e = NULL;
    if (c != NULL && c->id == l->client_id && p->conns[c->fd] == c) {
        e = request_event(p, c, EV_FAILED);
        c->state = C_RELAY; /* Python answers it */
    } else {
        e = new_event(EV_FAILED);
        if (e) e->kind = EV_FAILED;
    }
    if (e == NULL) return;
    e->lease_id = l->id;
    e->model_s = (double)(t - l->sent_ns) / 1e9;
    e->bytes_in = l->bytes_in;
    e->status = status;
    snprintf(e->fail, sizeof e->fail, "%s", kind);
    if (answer != NULL) {
        e->answer = dup_bytes(answer, len);
        e->answer_head = head;
        e->answer_len = len;
    }
    snprintf(e->endpoint, sizeof e->endpoint, "%s", l->endpoint);
    emit(p, e);
}

/* The lease's request failed as ``kind``: Python answers the client and decides about the worker. */
static void lease_failed(Plane *p, lease_t *l, const char *kind, int status, const char *answer, size_t head,
                         size_t len) {
    fail_event(p, l, kind, status, answer, head, len);
    l->client = NULL;
    lease_return(p, l, strcmp(kind, "answer") != 0 && strcmp(kind, "too_large") != 0);
}

static int header_bad_value(const zs_header *h) {
    if (h->value_len > 1024) return 1;
    return !ascii_visible(h->value, h->value_len);
}

/* A whole answer: 2xx with a Content-Type and CustomAttributes the client may get, else Python's. */
static void lease_answered(Plane *p, lease_t *l, const zs_response *resp, size_t head, const char *body,
                           size_t body_len, int reusable, const char *trailer, size_t trailer_len) {
    conn_t *c = l->client;
    uint64_t t = now_ns();
    const zs_header *ct = zs_find_header(resp->headers, resp->n_headers, "content-type", NULL);
    const zs_header *ca = zs_find_header(resp->headers, resp->n_headers, "x-amzn-sagemaker-custom-attributes", NULL);
    int trailer_error = trailer_len > 0; /* only the stream's error trailer is sent as a trailer */
    if (resp->status < 200 || resp->status >= 300 || trailer_error || (ct && header_bad_value(ct)) ||
        (ca && header_bad_value(ca))) {
        /* the answer, its head then its body, for Python's error: it makes the ModelError */
        buf_t a = {0}; /* the trailers join the head's headers, last (as Python's parser gives them) */
        buf_put(&a, l->r.p, head - 2);
        if (trailer_len) buf_put(&a, trailer, trailer_len);
        buf_put(&a, "\r\n", 2);
        size_t with_trailers = a.len;
        buf_put(&a, body, body_len);
        fail_event(p, l, "answer", resp->status, a.p, with_trailers, a.len);
        buf_free(&a);
        l->client = NULL;
        lease_return(p, l, 0);
        return;
    }
    int alive = c != NULL && c->id == l->client_id && p->conns[c->fd] == c;
    double at = wall_s(), model_s = (double)(t - l->sent_ns) / 1e9;
    double total_s = alive ? (double)(t - c->started_ns) / 1e9 : model_s;
    if (journal_append(p, l, at, model_s, total_s, body_len) != 0) { /* metered before answered, or not answered */
        fail_event(p, l, "unrecorded", resp->status, NULL, 0, 0);
        l->client = NULL;
        lease_return(p, l, 0);
        return;
    }
    if (alive) {
        char line[160];
        date_header(p);
        buf_str(&c->out, "HTTP/1.1 200 OK\r\n");
        buf_str(&c->out, p->date);
        buf_str(&c->out, "server: zeroscale\r\ncontent-type: ");
        if (ct) buf_put(&c->out, ct->value, ct->value_len);
        else buf_str(&c->out, "application/octet-stream");
        buf_str(&c->out, "\r\nx-content-type-options: nosniff\r\ncontent-security-policy: sandbox; default-src 'none'\r\n"
                         "x-amzn-invoked-production-variant: ");
        buf_str(&c->out, l->variant);
        int n = snprintf(line, sizeof line, "\r\nx-amzn-requestid: %s%012llx\r\n", p->id_prefix,
                         (unsigned long long)p->next_request++);
        buf_put(&c->out, line, (size_t)n);
        if (ca) {
            buf_str(&c->out, "x-amzn-sagemaker-custom-attributes: ");
            buf_put(&c->out, ca->value, ca->value_len);
            buf_str(&c->out, "\r\n");
        }
        n = snprintf(line, sizeof line, "content-length: %zu\r\n\r\n", body_len);
        buf_put(&c->out, line, (size_t)n);
        buf_put(&c->out, body, body_len);
    }
    event_t *e = new_event(EV_DONE);
    if (e) {
        e->kind = EV_DONE;
        e->lease_id = l->id;
        e->at = at;
        e->model_s = model_s;
        e->total_s = total_s;
        e->segment = p->journal_dir[0] ? p->journal_segment : 0;
        e->offset = p->journal_dir[0] ? p->journal_offset : 0;
        e->bytes_in = l->bytes_in;
        e->bytes_out = body_len;
        e->status = resp->status;
        emit(p, e);
    }
    p->served++;
    l->client = NULL;
    lease_set(p, l, 1, L_IDLE);
    l->idle_since_ns = t;
    l->r.len = 0;
    if (!reusable || l->recalled) lease_return(p, l, 0);
    if (alive) conn_answered(p, c);
    if (l->used && l->state == L_IDLE && !l->recalled) queue_take(p, l);
}

/* What the lease's answer buffer holds: whole yet? */
static void lease_parse(Plane *p, lease_t *l, int eof) {
    size_t at = 0;
    for (;;) { /* interim 1xx heads first */
        zs_response resp;
        long head = zs_parse_response(l->r.p + at, l->r.len - at, MAX_HEAD, &resp);
        if (head == ZS_MORE) {
            if (eof) lease_failed(p, l, at || l->r.len ? "broken" : "closed", 0, NULL, 0, 0);
            return;
        }
        if (head < 0) {
            lease_failed(p, l, "refused", 0, NULL, 0, 0);
            return;
        }
        size_t count = 0;
        const zs_header *cl = zs_find_header(resp.headers, resp.n_headers, "content-length", &count);
        const zs_header *te = zs_find_header(resp.headers, resp.n_headers, "transfer-encoding", NULL);
        if (resp.status >= 100 && resp.status < 200) {
            if (resp.status == 101 || cl || te) {
                lease_failed(p, l, "refused", 0, NULL, 0, 0);
                return;
            }
            at += (size_t)head;
            continue;
        }
        const zs_header *conn_h = zs_find_header(resp.headers, resp.n_headers, "connection", NULL);
        int keep = resp.minor == 1 && !(conn_h && zs_ieq(conn_h->value, conn_h->value_len, "close"));
        const char *base = l->r.p + at;
        size_t avail = l->r.len - at;
        if (te != NULL) {
            if (!zs_ieq(te->value, te->value_len, "chunked") || cl) {
                lease_failed(p, l, "refused", 0, NULL, 0, 0);
                return;
            }
            size_t body_len = 0, tlen = 0;
            const char *trailer = NULL;
            long end = zs_chunked_scan(base + head, avail - (size_t)head, l->max_answer, MAX_HEAD, &body_len,
                                       &trailer, &tlen);
            if (end == ZS_MORE) {
                if (eof) lease_failed(p, l, "broken", 0, NULL, 0, 0);
                return;
            }
            if (end == ZS_TOO_LARGE) {
                lease_failed(p, l, "too_large", resp.status, NULL, 0, 0);
                return;
            }
            if (end < 0 || (size_t)head + (size_t)end != avail) {
                lease_failed(p, l, "refused", 0, NULL, 0, 0);
                return;
            }
            char *body = malloc(body_len ? body_len : 1);
            if (body == NULL) {
                lease_failed(p, l, "broken", 0, NULL, 0, 0);
                return;
            }
            zs_chunked_copy(base + head, avail - (size_t)head, body);
            if (at) buf_drop(&l->r, at); /* the interim heads: the answer's head now starts the buffer */
            /* the trailer section, when it names the stream's error */
            int named = 0;
            for (size_t i = 0; tlen && i + strlen(p->trailer) <= tlen; i++) {
                if ((i == 0 || trailer[i - 1] == '\n') && zs_ieq(trailer + i, strlen(p->trailer), p->trailer) &&
                    i + strlen(p->trailer) < tlen && trailer[i + strlen(p->trailer)] == ':') {
                    named = 1;
                    break;
                }
            }
            /* re-point the head's headers into the (moved) buffer */
            zs_parse_response(l->r.p, (size_t)head, MAX_HEAD, &resp);
            char *tcopy = named ? dup_bytes(trailer, tlen) : NULL;
            lease_answered(p, l, &resp, (size_t)head, body, body_len, keep, tcopy, named ? tlen : 0);
            free(tcopy);
            free(body);
            return;
        }
        if (cl == NULL) { /* the body ends with the connection */
            if (avail - (size_t)head > l->max_answer) {
                lease_failed(p, l, "too_large", resp.status, NULL, 0, 0);
                return;
            }
            if (!eof) return;
            if (at) buf_drop(&l->r, at);
            zs_parse_response(l->r.p, (size_t)head, MAX_HEAD, &resp);
            lease_answered(p, l, &resp, (size_t)head, l->r.p + head, l->r.len - (size_t)head, 0, NULL, 0);
            return;
        }
        int64_t length = count == 1 ? zs_content_length(cl->value, cl->value_len) : -1;
        if (length < 0) {
            lease_failed(p, l, "refused", 0, NULL, 0, 0);
            return;
        }
        if ((uint64_t)length > l->max_answer) {
            lease_failed(p, l, "too_large", resp.status, NULL, 0, 0);
            return;
        }
        if (avail < (size_t)head + (size_t)length) {
            if (eof) lease_failed(p, l, "broken", 0, NULL, 0, 0);
            return;
        }
        if (avail > (size_t)head + (size_t)length) {
            lease_failed(p, l, "refused", 0, NULL, 0, 0); /* bytes no request asked for */
            return;
        }
        if (at) buf_drop(&l->r, at);
        zs_parse_response(l->r.p, (size_t)head, MAX_HEAD, &resp);
        lease_answered(p, l, &resp, (size_t)head, l->r.p + head, (size_t)length, keep && !eof, NULL, 0);
        return;
    }
}

static void lease_readable(Plane *p, lease_t *l) {
    if (l->state == L_IDLE) { /* an idle worker's connection that speaks: it closed, or sent what no one asked */
        lease_return(p, l, 0);
        return;
    }
    int eof = 0;
    for (;;) {
        if (buf_reserve(&l->r, READ_CHUNK) != 0) {
            lease_failed(p, l, "broken", 0, NULL, 0, 0);
            return;
        }
        ssize_t n = recv(l->fd, l->r.p + l->r.len, READ_CHUNK, 0);
        if (n > 0) {
            l->r.len += (size_t)n;
            if (l->r.len > MAX_HEAD + l->max_answer + 64 * 1024 + (l->max_answer / 8)) {
                lease_failed(p, l, "too_large", 0, NULL, 0, 0);
                return;
            }
            if ((size_t)n < READ_CHUNK) break;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0 && l->r.len == 0 && not_delivered(errno)) {
            lease_failed(p, l, "not_delivered", 0, NULL, 0, 0);
            return;
        }
        eof = 1;
        break;
    }
    lease_parse(p, l, eof);
}

static void lease_send(Plane *p, lease_t *l) {
    while (l->w_off < l->w.len) {
        ssize_t n = send(l->fd, l->w.p + l->w_off, l->w.len - l->w_off, MSG_NOSIGNAL);
        if (n > 0) {
            l->w_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        /* the worker is gone: nothing of the answer came, and (reset, broken pipe) nothing was read */
        lease_failed(p, l, not_delivered(errno) && l->r.len == 0 ? "not_delivered" : "broken", 0,
                     NULL, 0, 0);
        return;
    }
}

/* ---- commands ---- */

static lease_t *lease_by_id(Plane *p, uint64_t id) {
    for (size_t i = 0; i < p->n_leases; i++)
        if (p->leases[i].used && p->leases[i].id == id) return &p->leases[i];
    return NULL;
}

static void run_command(Plane *p, cmd_t *m) {
    switch (m->kind) {
    case CMD_RESPOND: {
        int fd = (int)(m->id & 0xffffff);
        conn_t *c = fd < MAX_FDS ? p->conns[fd] : NULL;
        if (c == NULL || c->id != m->id || c->state != C_RELAY) break; /* gone meanwhile */
        buf_put(&c->out, m->data, m->len);
        if (m->close) c->close_after = 1;
        if (m->end) {
            conn_answered(p, c);
        } else if (conn_flush(p, c) == 0) {
            if (!c->full && c->out.len > FULL_BYTES) {
                c->full = 1;
                conn_tell(p, c, EV_FULL);
            }
        }
        break;
    }
    case CMD_LEASE: {
        size_t slot = p->n_leases;
        for (size_t i = 0; i < p->n_leases; i++)
            if (!p->leases[i].used) {
                slot = i;
                break;
            }
        pthread_mutex_lock(&p->mu); /* the array may move; an unused slot is read by Python too */
        if (slot == p->n_leases) {
            if (room((void **)&p->leases, &p->cap_leases, p->n_leases, sizeof *p->leases) != 0) {
                pthread_mutex_unlock(&p->mu);
                close(m->fd);
                break;
            }
            p->n_leases++;
        }
        lease_t *l = &p->leases[slot];
        memset(l, 0, sizeof *l);
        l->used = 1;
        l->id = m->id;
        l->state = L_IDLE;
        pthread_mutex_unlock(&p->mu);
        l->fd = m->fd;
        snprintf(l->endpoint, sizeof l->endpoint, "%s", m->a);
        snprintf(l->variant, sizeof l->variant, "%s", m->b);
        snprintf(l->worker, sizeof l->worker, "%s", m->c);
        l->memory_mb = m->memory_mb;
        l->provisioned = m->provisioned;
        l->timeout_s = m->timeout_s;
        l->max_answer = m->max_answer;
        l->max_request = m->max_request;
        l->idle_since_ns = now_ns();
        ep_set(p, EPOLL_CTL_ADD, l->fd, WATCHED, TAG(TAG_LEASE, slot));
        queue_take(p, l);
        break;
    }
    case CMD_RECALL: {
        lease_t *l = lease_by_id(p, m->id);
        if (l == NULL) break;
        if (l->state == L_IDLE) lease_return(p, l, 0);
        else l->recalled = 1;
        p->q_dirty = 1;
        break;
    }
    case CMD_GRANT: {
        if (room((void **)&p->grants, &p->cap_grants, p->n_grants, sizeof *p->grants) != 0) break;
        size_t akid_len = strlen(m->a), secret_len = 0;
        if (granted(p, m->a, akid_len, m->c)) break; /* held already */
        int new_key = grant_secret(p, m->a, akid_len, &secret_len) == NULL;
        int32_t entry = (int32_t)p->n_grants;
        p->grants[entry].akid = m->a;
        p->grants[entry].secret = m->b;
        p->grants[entry].endpoint = m->c;
        m->a = m->b = m->c = NULL;
        p->n_grants++;
        if (p->by_grant.cap < 2 * p->n_grants + 2) {
            grants_indexed(p); /* grown: rebuilt */
        } else {
            grant_t *g = &p->grants[entry];
            index_put(&p->by_grant, grant_hash(g->akid, akid_len, g->endpoint), entry);
            if (new_key) index_put(&p->by_key, fnv(FNV0, g->akid, akid_len), entry);
        }
        break;
    }
    case CMD_CLEAR_GRANTS:
        clear_grants(p);
        break;
    case CMD_ROUTE: {
        route_t *r = route_of(p, m->route->endpoint);
        if (m->route->n == 0) { /* none: the last one takes its place */
            if (r != NULL) {
                *r = p->routes[--p->n_routes];
                routes_indexed(p);
            }
            p->q_dirty = 1;
            break;
        }
        if (r == NULL) {
            if (room((void **)&p->routes, &p->cap_routes, p->n_routes, sizeof *p->routes) != 0) break;
            r = &p->routes[p->n_routes++];
            *r = *m->route;
            if (p->by_route.cap < 2 * p->n_routes + 2) routes_indexed(p);
            else index_put(&p->by_route, fnv(FNV0, r->endpoint, strlen(r->endpoint)), (int32_t)(p->n_routes - 1));
            break;
        }
        int relaying = r->relaying, queued = r->queued; /* the same requests still count */
        *r = *m->route;
        r->relaying = relaying;
        r->queued = queued;
        p->q_dirty = 1;
        break;
    }
    case CMD_STOP:
        p->stopping = 1;
        break;
    }
}

static void cmd_free(cmd_t *m) {
    free(m->route);
    free(m->data);
    free(m->a);
    free(m->b);
    free(m->c);
    free(m);
}

static void run_commands(Plane *p) {
    uint64_t v;
    ssize_t r = read(p->wake_fd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&p->mu);
    cmd_t *m = p->cmds;
    p->cmds = p->cmds_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (m != NULL) {
        cmd_t *next = m->next;
        run_command(p, m);
        cmd_free(m);
        m = next;
    }
}

/* ---- the loop ---- */

static void accept_all(Plane *p) {
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa;
        int fd = accept4(p->listen_fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN, or out of descriptors for now */
        char host[64] = "";
        if (sa.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, host, sizeof host);
        else if (sa.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, host, sizeof host);
        size_t same = 0;
        for (int k = 0; k <= p->max_fd && same < p->max_per_client; k++)
            if (p->conns[k] != NULL && strcmp(p->conns[k]->host, host) == 0) same++;
        if (fd >= MAX_FDS || p->n_conns >= p->max_conns || same >= p->max_per_client) {
            /* as the main port: 503 and closed, never an accept() left waiting */
            static const char busy[] =
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
                "content-length: 64\r\n\r\n{\"message\": \"too many connections: close some, or retry later.\"}";
            ssize_t w = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)w;
            close(fd);
            continue;
        }
        conn_t *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->fd = fd;
        c->id = ((++p->next_conn) << 24) | (uint64_t)fd;
        c->state = C_READ;
        c->idle_since_ns = now_ns();
        if (sa.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&sa;
            inet_ntop(AF_INET, &in->sin_addr, c->host, sizeof c->host);
            c->port = ntohs(in->sin_port);
        } else if (sa.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&sa;
            inet_ntop(AF_INET6, &in6->sin6_addr, c->host, sizeof c->host);
            c->port = ntohs(in6->sin6_port);
        }
        p->conns[fd] = c;
        p->n_conns++;
        if (fd > p->max_fd) p->max_fd = fd;
        ep_set(p, EPOLL_CTL_ADD, fd, WATCHED, TAG(TAG_CONN, fd));
    }
}

/* Deadlines: requests not whole in time, idle keep-alive connections, leases idle past lease_idle_s, worker
 * requests past their timeout. Returns the milliseconds until the next check. */
static int sweep(Plane *p) {
    uint64_t t = now_ns();
    for (size_t i = 0; i < p->n_leases; i++) {
        lease_t *l = &p->leases[i];
        if (!l->used) continue;
        if (l->state == L_BUSY && t >= l->deadline_ns) lease_failed(p, l, "timeout", 0, NULL, 0, 0);
        else if (l->state == L_IDLE && t - l->idle_since_ns >= (uint64_t)(p->lease_idle_s * 1e9)) lease_return(p, l, 0);
    }
    for (int fd = 0; fd <= p->max_fd; fd++) {
        conn_t *c = p->conns[fd];
        if (c == NULL || c->state != C_READ) continue;
        if (c->deadline_ns && t >= c->deadline_ns) {
            conn_refuse(p, c, 408, "Request Timeout", "{\"message\": \"the request did not arrive in time\"}");
        } else if (!c->deadline_ns && c->out.len == 0 && t - c->idle_since_ns >= (uint64_t)(p->keep_alive_s * 1e9)) {
            conn_close(p, c);
        }
    }
    queue_check(p);
    return 100;
}

static void *loop_main(void *arg) {
    Plane *p = arg;
    struct epoll_event evs[256];
    uint64_t next_sweep = now_ns() + 100000000ull;
    while (!p->stopping) {
        uint64_t t = now_ns();
        int wait_ms = t >= next_sweep ? 0 : (int)((next_sweep - t) / 1000000ull) + 1;
        int lazy_ms = flush_lazy(p);
        if (lazy_ms >= 0 && lazy_ms < wait_ms) wait_ms = lazy_ms;
        int n = epoll_wait(p->epoll_fd, evs, 256, wait_ms);
        /* Python's commands before any request of the batch: a grant dropped is never served after */
        for (int i = 0; i < n; i++)
            if ((evs[i].data.u64 >> 56) == TAG_WAKE) run_commands(p);
        for (int i = 0; i < n && !p->stopping; i++) {
            uint64_t tag = evs[i].data.u64;
            uint64_t kind = tag >> 56, idx = tag & ((1ull << 56) - 1);
            uint32_t e = evs[i].events;
            if (kind == TAG_LISTEN) {
                accept_all(p);
            } else if (kind == TAG_CONN) {
                conn_t *c = p->conns[idx];
                if (c == NULL) continue;
                if ((e & EPOLLOUT) && c->out.len) {
                    if (conn_flush(p, c) != 0) continue;
                    if (c->out.len == 0 && c->state == C_READ && (c->close_after || c->gone)) {
                        conn_close(p, c);
                        continue;
                    }
                }
                if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->peer_done = 1;
                int reading = c->state == C_READ && !c->close_after;
                if (reading && (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
                    conn_readable(p, c);
                } else if (c->state != C_READ && (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
                    /* gone while answered: its answer is dropped; Python's, or the worker's, still ends */
                    if (c->state == C_RELAY || c->state == C_QUEUED) conn_close(p, c);
                    else c->gone = 1; /* the worker's answer ends it (conn_answered) */
                } else if (e & EPOLLIN) {
                    c->unread = 1;
                }
            } else if (kind == TAG_LEASE) {
                if (idx >= p->n_leases || !p->leases[idx].used) continue;
                lease_t *l = &p->leases[idx];
                if ((e & EPOLLOUT) && l->state == L_BUSY) {
                    lease_send(p, l);
                    if (!l->used) continue;
                }
                if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) lease_readable(p, l);
            }
        }
        if (p->q_dirty) queue_check(p);
        if (now_ns() >= next_sweep) {
            sweep(p);
            next_sweep = now_ns() + 100000000ull;
        }
    }
    /* stopping: every lease back, every connection closed */
    for (size_t i = 0; i < p->n_leases; i++)
        if (p->leases[i].used) lease_return(p, &p->leases[i], p->leases[i].state == L_BUSY);
    for (int fd = 0; fd <= p->max_fd; fd++)
        if (p->conns[fd] != NULL) conn_close(p, p->conns[fd]);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------ */
/* the Python type */

static void push(Plane *p, cmd_t *m) {
    pthread_mutex_lock(&p->mu);
    if (p->cmds_tail) p->cmds_tail->next = m;
    else p->cmds = m;
    p->cmds_tail = m;
    pthread_mutex_unlock(&p->mu);
    uint64_t one = 1;
    ssize_t w = write(p->wake_fd, &one, sizeof one);
    (void)w;
}

static cmd_t *new_cmd(int kind) {
    cmd_t *m = calloc(1, sizeof *m);
    if (m == NULL) PyErr_NoMemory();
    else m->kind = kind;
    return m;
}

static int Plane_init(Plane *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"listen_fd", "region", "service", "payload_limit", "request_id_prefix",
                            "error_trailer", "keep_alive_s", "lease_idle_s", "header_timeout_s", "body_timeout_s",
                            "max_header_bytes", "max_connections", "max_connections_per_client", "journal_dir",
                            "journal_segment", "queue_wait_s", "max_queue", NULL};
    int listen_fd;
    const char *region, *service, *prefix, *trailer, *journal_dir;
    Py_ssize_t limit, max_head, max_conns, max_per_client, max_queue;
    long journal_segment;
    double keep_alive, lease_idle, header_s, body_s, queue_wait;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "issnssddddnnnsldn", names, &listen_fd, &region, &service, &limit,
                                     &prefix, &trailer, &keep_alive, &lease_idle, &header_s, &body_s, &max_head,
                                     &max_conns, &max_per_client, &journal_dir, &journal_segment, &queue_wait,
                                     &max_queue))
        return -1;
    if (max_head < 1024 || max_head > MAX_HEAD || limit < 0 || max_conns < 1 || max_per_client < 1 ||
        max_queue < 0 || !(queue_wait >= 0 && queue_wait < 1e6)) {
        PyErr_SetString(PyExc_ValueError, "max_header_bytes is 1 KB to 64 KB; the limits are positive");
        return -1;
    }
    if (strlen(journal_dir) >= sizeof self->journal_dir) {
        PyErr_SetString(PyExc_ValueError, "journal_dir is too long");
        return -1;
    }
    snprintf(self->journal_dir, sizeof self->journal_dir, "%s", journal_dir);
    self->journal_fd = -1;
    self->journal_segment = journal_segment;
    self->rng = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ 0x9E3779B97F4A7C15ull;
    self->fast_body_max = strcmp(zs_sha256_impl(), "sha-ni") == 0 ? FAST_BODY_MAX : FAST_BODY_MAX_PORTABLE;
    if (self->conns != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a Plane is initialised once");
        return -1;
    }
    self->listen_fd = listen_fd;
    snprintf(self->region, sizeof self->region, "%s", region);
    snprintf(self->service, sizeof self->service, "%s", service);
    snprintf(self->id_prefix, sizeof self->id_prefix, "%s", prefix);
    snprintf(self->trailer, sizeof self->trailer, "%s", trailer);
    self->payload_limit = (size_t)limit;
    self->keep_alive_s = keep_alive;
    self->lease_idle_s = lease_idle;
    self->header_s = header_s;
    self->body_s = body_s;
    self->max_head = (size_t)max_head;
    self->max_conns = (size_t)max_conns;
    self->max_per_client = (size_t)max_per_client;
    self->queue_wait_s = queue_wait;
    self->max_queue = (size_t)max_queue;
    self->conns = calloc(MAX_FDS, sizeof(conn_t *));
    if (self->conns == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    pthread_mutex_init(&self->mu, NULL);
    self->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    self->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    self->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->epoll_fd < 0 || self->wake_fd < 0 || self->notify_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    ep_set(self, EPOLL_CTL_ADD, self->wake_fd, EPOLLIN, TAG(TAG_WAKE, 0));
    return 0;
}

static PyObject *Plane_start(Plane *self, PyObject *unused) {
    if (self->running || self->conns == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the plane is running, or was not initialised");
        return NULL;
    }
    ep_set(self, EPOLL_CTL_ADD, self->listen_fd, EPOLLIN, TAG(TAG_LISTEN, 0));
    if (pthread_create(&self->thread, NULL, loop_main, self) != 0) {
        PyErr_SetString(PyExc_OSError, "cannot start the plane's thread");
        return NULL;
    }
    self->running = 1;
    Py_RETURN_NONE;
}

static PyObject *Plane_stop(Plane *self, PyObject *unused) {
    if (!self->running) Py_RETURN_NONE;
    cmd_t *m = new_cmd(CMD_STOP);
    if (m == NULL) return NULL;
    push(self, m);
    Py_BEGIN_ALLOW_THREADS pthread_join(self->thread, NULL);
    Py_END_ALLOW_THREADS self->running = 0;
    epoll_ctl(self->epoll_fd, EPOLL_CTL_DEL, self->listen_fd, NULL);
    Py_RETURN_NONE;
}

static PyObject *Plane_fileno(Plane *self, PyObject *unused) { return PyLong_FromLong(self->notify_fd); }

static PyObject *headers_list(const zs_header *h, size_t n) {
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (list == NULL) return NULL;
    for (size_t i = 0; i < n; i++) {
        char name[256];
        size_t nl = h[i].name_len < sizeof name ? h[i].name_len : sizeof name;
        for (size_t k = 0; k < nl; k++) name[k] = (char)((h[i].name[k] >= 'A' && h[i].name[k] <= 'Z') ? h[i].name[k] + 32 : h[i].name[k]);
        PyObject *t = Py_BuildValue("(y#y#)", name, (Py_ssize_t)nl, h[i].value, (Py_ssize_t)h[i].value_len);
        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    return list;
}

/* A relayed (or failed) request as Python takes it: (method, target, minor, headers, body). */
static PyObject *request_tuple(event_t *e) {
    zs_request req;
    if (zs_parse_request(e->req, e->head_len, e->head_len, &req) <= 0) {
        PyErr_SetString(PyExc_RuntimeError, "a relayed request's head no longer parses");
        return NULL;
    }
    PyObject *headers = headers_list(req.headers, req.n_headers);
    if (headers == NULL) return NULL;
    return Py_BuildValue("(y#y#iNy#)", req.method, (Py_ssize_t)req.method_len, req.target,
                         (Py_ssize_t)req.target_len, req.minor, headers, e->req + e->head_len,
                         (Py_ssize_t)(e->req_len - e->head_len));
}

static PyObject *event_tuple(event_t *e) {
    switch (e->kind) {
    case EV_REQUEST: {
        PyObject *r = request_tuple(e);
        if (r == NULL) return NULL;
        return Py_BuildValue("(sKN(si)ssd)", "request", (unsigned long long)e->conn_id, r, e->host, e->port, e->akid,
                             e->endpoint, e->queued_s);
    }
    case EV_DONE:
        return Py_BuildValue("(sKdddnni(ll))", "done", (unsigned long long)e->lease_id, e->at, e->model_s, e->total_s,
                             (Py_ssize_t)e->bytes_in, (Py_ssize_t)e->bytes_out, e->status, e->segment, e->offset);
    case EV_FAILED: {
        PyObject *r, *answer;
        if (e->req != NULL) {
            r = request_tuple(e);
            if (r == NULL) return NULL;
        } else {
            r = Py_NewRef(Py_None);
        }
        if (e->answer != NULL) {
            zs_response resp;
            long head = zs_parse_response(e->answer, e->answer_head, MAX_HEAD, &resp);
            PyObject *hl = head > 0 ? headers_list(resp.headers, resp.n_headers) : PyList_New(0);
            if (hl == NULL) {
                Py_DECREF(r);
                return NULL;
            }
            answer = Py_BuildValue("(Ny#)", hl, e->answer + e->answer_head, (Py_ssize_t)(e->answer_len - e->answer_head));
        } else {
            answer = Py_NewRef(Py_None);
        }
        if (answer == NULL) {
            Py_DECREF(r);
            return NULL;
        }
        return Py_BuildValue("(sKKsiNNdd(si))", "failed", (unsigned long long)e->conn_id, (unsigned long long)e->lease_id,
                             e->fail, e->status, r, answer, e->model_s, e->waited_s, e->host, e->port);
    }
    case EV_RETURNED:
        return Py_BuildValue("(sKi)", "returned", (unsigned long long)e->lease_id, e->broken);
    case EV_GONE:
        return Py_BuildValue("(sK)", "gone", (unsigned long long)e->conn_id);
    case EV_FULL:
        return Py_BuildValue("(sK)", "full", (unsigned long long)e->conn_id);
    case EV_DRAINED:
        return Py_BuildValue("(sK)", "drained", (unsigned long long)e->conn_id);
    }
    PyErr_SetString(PyExc_RuntimeError, "unknown event");
    return NULL;
}

static PyObject *Plane_take(Plane *self, PyObject *unused) {
    uint64_t v;
    ssize_t r = read(self->notify_fd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&self->mu);
    event_t *e = self->events;
    self->events = self->events_tail = NULL;
    self->signalled = 0;
    self->lazy_count = 0;
    pthread_mutex_unlock(&self->mu);
    PyObject *list = PyList_New(0);
    int failed = list == NULL;
    while (e != NULL) {
        event_t *next = e->next;
        if (!failed) {
            PyObject *t = event_tuple(e);
            if (t == NULL || PyList_Append(list, t) != 0) failed = 1;
            Py_XDECREF(t);
        }
        event_free(e);
        e = next;
    }
    if (failed) {
        Py_XDECREF(list);
        return NULL;
    }
    return list;
}

static PyObject *Plane_respond(Plane *self, PyObject *args) {
    unsigned long long id;
    const char *data;
    Py_ssize_t len;
    int end, close_after;
    if (!PyArg_ParseTuple(args, "Ky#pp", &id, &data, &len, &end, &close_after)) return NULL;
    cmd_t *m = new_cmd(CMD_RESPOND);
    if (m == NULL) return NULL;
    m->id = id;
    m->data = dup_bytes(data, (size_t)len);
    m->len = (size_t)len;
    m->end = end;
    m->close = close_after;
    push(self, m);
    Py_RETURN_NONE;
}

static PyObject *Plane_lease(Plane *self, PyObject *args) {
    unsigned long long id;
    int fd;
    const char *endpoint, *variant;
    const char *worker;
    int memory_mb, provisioned;
    double timeout_s;
    Py_ssize_t max_answer, max_request;
    if (!PyArg_ParseTuple(args, "Kisssipdnn", &id, &fd, &endpoint, &variant, &worker, &memory_mb, &provisioned,
                          &timeout_s, &max_answer, &max_request))
        return NULL;
    cmd_t *m = new_cmd(CMD_LEASE);
    if (m == NULL) return NULL;
    m->id = id;
    m->fd = fd;
    m->a = strdup(endpoint);
    m->b = strdup(variant);
    m->c = strdup(worker);
    m->memory_mb = memory_mb;
    m->provisioned = provisioned;
    m->timeout_s = timeout_s;
    m->max_answer = (size_t)max_answer;
    m->max_request = (size_t)max_request;
    push(self, m);
    Py_RETURN_NONE;
}

/* The leases idle now (a lent worker the plane has no request on): their pools count them free. */
static PyObject *Plane_idle_leases(Plane *self, PyObject *unused) {
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    pthread_mutex_lock(&self->mu);
    size_t n = self->n_leases, k = 0;
    uint64_t *ids = n ? malloc(n * sizeof *ids) : NULL;
    for (size_t i = 0; ids != NULL && i < n; i++)
        if (self->leases[i].used && self->leases[i].state == L_IDLE) ids[k++] = self->leases[i].id;
    pthread_mutex_unlock(&self->mu);
    if (n && ids == NULL) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    for (size_t i = 0; i < k; i++) {
        PyObject *id = PyLong_FromUnsignedLongLong(ids[i]);
        if (id == NULL || PyList_Append(out, id) != 0) {
            Py_XDECREF(id);
            Py_DECREF(out);
            free(ids);
            return NULL;
        }
        Py_DECREF(id);
    }
    free(ids);
    return out;
}

/* The requests waiting now for a lease, by (endpoint, variant): their pools count them queued. */
static PyObject *Plane_waiting(Plane *self, PyObject *unused) {
    typedef struct {
        char endpoint[64], variant[64];
    } pair_t;
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    pthread_mutex_lock(&self->mu);
    size_t n = (size_t)self->waiting, k = 0;
    pair_t *pairs = n ? malloc(n * sizeof *pairs) : NULL;
    for (conn_t *c = self->q_head; pairs != NULL && c != NULL && k < n; c = c->q_next, k++) {
        memcpy(pairs[k].endpoint, c->q_endpoint, sizeof pairs[k].endpoint);
        memcpy(pairs[k].variant, c->q_variant, sizeof pairs[k].variant);
    }
    pthread_mutex_unlock(&self->mu);
    if (n && pairs == NULL) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    for (size_t i = 0; i < k; i++) {
        PyObject *key = Py_BuildValue("(ss)", pairs[i].endpoint, pairs[i].variant);
        PyObject *was = key ? PyDict_GetItemWithError(out, key) : NULL;
        PyObject *now = key && !PyErr_Occurred() ? PyLong_FromLong(was ? PyLong_AsLong(was) + 1 : 1) : NULL;
        if (now == NULL || PyDict_SetItem(out, key, now) != 0) {
            Py_XDECREF(key);
            Py_XDECREF(now);
            Py_DECREF(out);
            free(pairs);
            return NULL;
        }
        Py_DECREF(key);
        Py_DECREF(now);
    }
    free(pairs);
    return out;
}

static PyObject *Plane_recall(Plane *self, PyObject *args) {
    unsigned long long id;
    if (!PyArg_ParseTuple(args, "K", &id)) return NULL;
    cmd_t *m = new_cmd(CMD_RECALL);
    if (m == NULL) return NULL;
    m->id = id;
    push(self, m);
    Py_RETURN_NONE;
}

static PyObject *Plane_grant(Plane *self, PyObject *args) {
    const char *akid, *secret, *endpoint;
    if (!PyArg_ParseTuple(args, "sss", &akid, &secret, &endpoint)) return NULL;
    cmd_t *m = new_cmd(CMD_GRANT);
    if (m == NULL) return NULL;
    m->a = strdup(akid);
    m->b = strdup(secret);
    m->c = strdup(endpoint);
    push(self, m);
    Py_RETURN_NONE;
}

static PyObject *Plane_route(Plane *self, PyObject *args) {
    const char *endpoint;
    PyObject *variants;
    if (!PyArg_ParseTuple(args, "sO", &endpoint, &variants)) return NULL;
    PyObject *seq = PySequence_Fast(variants, "variants: a sequence of (name, weight, max_concurrency)");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_VARIANTS || strlen(endpoint) >= 64) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "at most 10 variants, an endpoint name under 64 characters");
        return NULL;
    }
    route_t *r = calloc(1, sizeof *r);
    if (r == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    snprintf(r->endpoint, sizeof r->endpoint, "%s", endpoint);
    double total = 0, weights[MAX_VARIANTS];
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *name;
        double weight;
        int max_conc;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "sdi", &name, &weight, &max_conc) ||
            strlen(name) >= 64 || !(weight >= 0) || max_conc < 0 || max_conc > 1000000) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError,
                                "a variant: (name under 64 characters, weight >= 0, max_concurrency >= 0)");
            free(r);
            Py_DECREF(seq);
            return NULL;
        }
        snprintf(r->variant[i], sizeof r->variant[i], "%s", name);
        weights[i] = weight;
        total += weight;
        r->max_conc += max_conc;
    }
    Py_DECREF(seq);
    if (n > 0 && !(total > 0 && total < 1e300)) {
        free(r);
        PyErr_SetString(PyExc_ValueError, "the weights' sum must be positive and finite");
        return NULL;
    }
    double sum = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        sum += weights[i];
        r->upto[i] = sum / total;
    }
    r->n = (int)n;
    cmd_t *m = new_cmd(CMD_ROUTE);
    if (m == NULL) {
        free(r);
        return NULL;
    }
    m->route = r;
    push(self, m);
    Py_RETURN_NONE;
}

static PyObject *Plane_clear_grants(Plane *self, PyObject *unused) {
    cmd_t *m = new_cmd(CMD_CLEAR_GRANTS);
    if (m == NULL) return NULL;
    push(self, m);
    Py_RETURN_NONE;
}

static PyObject *Plane_counts(Plane *self, PyObject *unused) {
    return Py_BuildValue("{sKsKsK}", "served", (unsigned long long)self->served, "relayed",
                         (unsigned long long)self->relayed, "waiting", (unsigned long long)self->waiting);
}

static void Plane_dealloc(Plane *self) {
    if (self->running) {
        cmd_t *m = calloc(1, sizeof *m);
        if (m != NULL) {
            m->kind = CMD_STOP;
            push(self, m);
            pthread_join(self->thread, NULL);
        }
    }
    if (self->conns != NULL) {
        pthread_mutex_lock(&self->mu);
        cmd_t *m = self->cmds;
        while (m) {
            cmd_t *n = m->next;
            cmd_free(m);
            m = n;
        }
        event_t *e = self->events;
        while (e) {
            event_t *n = e->next;
            event_free(e);
            e = n;
        }
        pthread_mutex_unlock(&self->mu);
        clear_grants(self);
        free(self->grants);
        free(self->routes);
        free(self->by_grant.slot);
        free(self->by_key.slot);
        free(self->by_route.slot);
        free(self->leases);
        free(self->conns);
        if (self->journal_fd >= 0) close(self->journal_fd);
        close(self->epoll_fd);
        close(self->wake_fd);
        close(self->notify_fd);
        pthread_mutex_destroy(&self->mu);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Plane_methods[] = {
    {"start", (PyCFunction)Plane_start, METH_NOARGS, "Start the plane's thread (it serves the listening socket)."},
    {"stop", (PyCFunction)Plane_stop, METH_NOARGS, "Stop it: every lease returned, every connection closed."},
    {"fileno", (PyCFunction)Plane_fileno, METH_NOARGS, "The descriptor that is readable when events wait."},
    {"take", (PyCFunction)Plane_take, METH_NOARGS, "The events that wait, as tuples."},
    {"respond", (PyCFunction)Plane_respond, METH_VARARGS, "respond(conn_id, data, end, close): write to a relayed request's client."},
    {"lease", (PyCFunction)Plane_lease, METH_VARARGS,
     "lease(id, fd, endpoint, variant, timeout_s, max_answer, max_request): lend a worker's connection."},
    {"recall", (PyCFunction)Plane_recall, METH_VARARGS, "recall(id): give the lease back once its request ends."},
    {"grant", (PyCFunction)Plane_grant, METH_VARARGS, "grant(akid, secret, endpoint): the key may invoke the endpoint."},
    {"clear_grants", (PyCFunction)Plane_clear_grants, METH_NOARGS, "Drop every grant."},
    {"route", (PyCFunction)Plane_route, METH_VARARGS,
     "route(endpoint, [(variant, weight, max_concurrency), ...]): the variants a request picks from by weight, "
     "and the workers they may have together ([]: none)."},
    {"counts", (PyCFunction)Plane_counts, METH_NOARGS, "Requests served here and relayed so far, and waiting now."},
    {"idle_leases", (PyCFunction)Plane_idle_leases, METH_NOARGS, "The ids of the leases idle now."},
    {"waiting", (PyCFunction)Plane_waiting, METH_NOARGS, "The requests waiting for a lease, by (endpoint, variant)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PlaneType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "zeroscale._dataplane.Plane",
    .tp_basicsize = sizeof(Plane),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The native data plane's loop (docs/dataplane.md).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Plane_init,
    .tp_dealloc = (destructor)Plane_dealloc,
    .tp_methods = Plane_methods,
};

static PyMethodDef methods[] = {
    {"sigv4_check", zs_py_sigv4_check, METH_VARARGS, "SigV4 as the native plane checks it (tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "zeroscale._dataplane", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__dataplane(void) {
    if (PyType_Ready(&PlaneType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Plane", (PyObject *)&PlaneType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
