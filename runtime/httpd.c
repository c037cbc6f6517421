/*
 * httpd.c: the event-driven HTTP/1.1 server (see httpd.h).
 *
 * Each event thread owns an epoll set, the connections it accepted and a
 * min-heap of their deadlines (header, idle, body, write and long-poll
 * times). Listeners sit in every thread's set with EPOLLEXCLUSIVE, so the
 * kernel spreads accepts over the threads. A connection is a small state
 * machine: HEAD (reading the request line and headers), BODY, HANDLER (a
 * callback is running or about to), SUSPENDED (a long poll), WRITE; after
 * the answer it goes back to HEAD when it may be kept alive.
 *
 * Cross-thread resumes go through a per-thread queue and an eventfd; that
 * queue's mutex is the only lock the server takes, and only around list
 * operations.
 */
#include "httpd.h"
#include "http_parse.h"
#include "rt.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/err.h>

#define MAX_LISTENERS 8
#define MAX_THREADS 16
#define READ_EXTRA (64u << 10) /* buffer beyond max_head, for body reads */
#define TLS_CHUNK (64u << 10)

enum { ST_TLS, ST_HEAD, ST_BODY, ST_HANDLER, ST_SUSPENDED, ST_WRITE, ST_LINGER, ST_DEAD };

/* How long a closing connection keeps reading what the client still sends. */
#define LINGER_SECONDS 2.0
enum { B_NONE, B_MEM, B_BUF, B_FD };

typedef struct loop loop;

struct rt_hreq {
    loop *lp;
    int fd;
    SSL *ssl;
    int state;
    bool want_write;         /* TLS: the last operation needs the socket writable */
    unsigned events;         /* epoll interest now */
    double deadline;         /* of the heap entry; 0 when none */
    int heap_idx;            /* -1 when not in the heap */
    bool head_started;       /* the request's first byte has arrived */
    bool resume_queued;      /* on lp's resume queue (lp->qmu) */
    rt_hreq *qnext;
    rt_hreq *prev, *next;    /* lp's connection list */
    rt_hreq *gnext;          /* lp's closed connections, freed after each round */

    char *in;                /* read buffer */
    size_t in_len, in_cap, pos;

    /* The request. */
    rt_http_head head;
    bool in_request;         /* head parsed, ops.free still owed */
    char method[24];
    char *path;              /* decoded path, then the decoded query pairs */
    char **args;             /* name, value, name, value, ..., NULL */
    long long body_left;     /* Content-Length bytes still to read */
    unsigned long long body_seen;
    rt_chunked ck;
    bool body_done;
    bool continue_sent;
    void *user;

    /* The answer. */
    bool answered;
    bool close_after;
    char *out_head;
    size_t out_head_len, out_head_off;
    int body_kind;
    char *body_mem;
    modal__buf *body_buf;
    int body_fd;
    size_t body_len, body_off;
    char *scratch;           /* TLS: file bytes read but not yet written */
    size_t scratch_len, scratch_off;
    bool interim;            /* out_head is a 100 Continue; the request goes on */
};

struct loop {
    pthread_t thread;
    int ep, evfd;
    rt_hreq **heap;
    size_t nheap, heap_cap;
    rt_hreq *conns;
    pthread_mutex_t qmu;
    rt_hreq *rq;             /* resume queue */
    rt_hreq *grave;          /* closed connections: callers up the stack may still look */
    bool stop_seen;
};

static rt_httpd_ops ops;
static rt_httpd_limits lim;
static loop loops[MAX_THREADS];
static int nloops;
static struct {
    int fd;
    SSL_CTX *tls;
} listeners[MAX_LISTENERS];
static int nlisteners;
static atomic_int nconns;
static volatile int stopping;
static atomic_int reserve_fd = -1; /* closed to accept and refuse when out of descriptors */

static void process(rt_hreq *r);
static void conn_close(rt_hreq *r);

/* ---- deadlines: a min-heap per thread --------------------------------- */

static void heap_swap(loop *lp, size_t a, size_t b)
{
    rt_hreq *t = lp->heap[a];
    lp->heap[a] = lp->heap[b];
    lp->heap[b] = t;
    lp->heap[a]->heap_idx = (int)a;
    lp->heap[b]->heap_idx = (int)b;
}

static void heap_fix(loop *lp, size_t i)
{
    while (i > 0 && lp->heap[(i - 1) / 2]->deadline > lp->heap[i]->deadline) {
        heap_swap(lp, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < lp->nheap && lp->heap[l]->deadline < lp->heap[m]->deadline)
            m = l;
        if (l + 1 < lp->nheap && lp->heap[l + 1]->deadline < lp->heap[m]->deadline)
            m = l + 1;
        if (m == i)
            break;
        heap_swap(lp, i, m);
        i = m;
    }
}

static void timer_clear(rt_hreq *r)
{
    loop *lp = r->lp;
    if (r->heap_idx < 0)
        return;
    size_t i = (size_t)r->heap_idx;
    r->heap_idx = -1;
    r->deadline = 0;
    if (i == --lp->nheap)
        return;
    lp->heap[i] = lp->heap[lp->nheap];
    lp->heap[i]->heap_idx = (int)i;
    heap_fix(lp, i);
}

static void timer_set(rt_hreq *r, double deadline)
{
    loop *lp = r->lp;
    if (r->heap_idx < 0) {
        if (lp->nheap == lp->heap_cap) {
            size_t ncap = lp->heap_cap ? lp->heap_cap * 2 : 256;
            rt_hreq **nh = realloc(lp->heap, ncap * sizeof *nh);
            if (nh == NULL)
                abort(); /* the daemon may abort on out-of-memory */
            lp->heap = nh;
            lp->heap_cap = ncap;
        }
        r->heap_idx = (int)lp->nheap;
        lp->heap[lp->nheap++] = r;
    }
    r->deadline = deadline;
    heap_fix(lp, (size_t)r->heap_idx);
}

/* ---- epoll interest --------------------------------------------------- */

static void set_events(rt_hreq *r, unsigned ev)
{
    if (r->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = r};
    epoll_ctl(r->lp->ep, EPOLL_CTL_MOD, r->fd, &e);
    r->events = ev;
}

/* ---- raw I/O, plain or TLS -------------------------------------------- */

/* What SSL_read or SSL_write returning k means for io_read/io_write: k
 * bytes; -1 with EAGAIN while TLS waits for the socket (want_write says
 * which way); 0 once the peer closed TLS; else -1 with errno fail. */
static ssize_t tls_result(rt_hreq *r, int k, int fail)
{
    if (k > 0) {
        r->want_write = false;
        return k;
    }
    int e = SSL_get_error(r->ssl, k);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        r->want_write = e == SSL_ERROR_WANT_WRITE;
        errno = EAGAIN;
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    errno = fail;
    return -1;
}

/* Returns bytes (> 0), 0 at end of stream, -1 with errno (EAGAIN: later). */
static ssize_t io_read(rt_hreq *r, char *p, size_t n)
{
    if (r->ssl == NULL) {
        ssize_t k;
        do
            k = recv(r->fd, p, n, 0);
        while (k < 0 && errno == EINTR);
        return k;
    }
    ERR_clear_error();
    return tls_result(r, SSL_read(r->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n), EPROTO);
}

static ssize_t io_write(rt_hreq *r, const void *p, size_t n)
{
    if (r->ssl == NULL) {
        ssize_t k;
        do
            k = send(r->fd, p, n, MSG_NOSIGNAL);
        while (k < 0 && errno == EINTR);
        return k;
    }
    ERR_clear_error();
    return tls_result(r, SSL_write(r->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n), EPIPE);
}

/* ---- answers ------------------------------------------------------------ */

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default: return "Status";
    }
}

/* The JSON error body, in a new string. */
static char *error_json(modal_status code, const char *msg)
{
    cJSON *j = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(e, "code", modal_status_name(code));
    cJSON_AddStringToObject(e, "message", msg);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static void body_release(rt_hreq *r)
{
    free(r->body_mem);
    r->body_mem = NULL;
    modal__buf_unref(r->body_buf);
    r->body_buf = NULL;
    if (r->body_fd >= 0)
        close(r->body_fd);
    r->body_fd = -1;
    r->body_kind = B_NONE;
    free(r->scratch);
    r->scratch = NULL;
    r->scratch_len = r->scratch_off = 0;
}

static bool is_head(const rt_hreq *r)
{
    return strcmp(r->method, "HEAD") == 0;
}

/* Set the answer's head; the body is set by the caller. */
static bool answer_begin(rt_hreq *r, int status, const char *ctype, const char *extra, size_t len)
{
    if (r->answered)
        return false;
    r->answered = true;
    /* A request whose body was not read to its end cannot be followed by
     * another on this connection: its remaining bytes would be taken for
     * one. */
    if (!r->in_request || !r->head.keep_alive || !r->body_done || stopping)
        r->close_after = true;
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s\r\n",
                     status, reason(status), ctype ? ctype : MODAL__CT_BINARY, len,
                     extra ? extra : "", status == 503 ? "Retry-After: 1\r\n" : "",
                     r->close_after ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof buf)
        n = snprintf(buf, sizeof buf, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s\r\n", status,
                     reason(status), len, r->close_after ? "Connection: close\r\n" : "");
    free(r->out_head);
    r->out_head = strdup(buf);
    if (r->out_head == NULL)
        abort();
    r->out_head_len = (size_t)n;
    r->out_head_off = 0;
    r->interim = false;
    body_release(r);
    r->body_len = len;
    r->body_off = 0;
    return true;
}

void rt_hreq_send(rt_hreq *r, int status, const char *ctype, const char *extra, const void *p,
                  size_t len)
{
    if (!answer_begin(r, status, ctype, extra, len))
        return;
    if (len > 0 && !is_head(r)) {
        r->body_mem = malloc(len);
        if (r->body_mem == NULL)
            abort();
        memcpy(r->body_mem, p, len);
        r->body_kind = B_MEM;
    }
}

void rt_hreq_send_buf(rt_hreq *r, int status, const char *ctype, const char *extra,
                      modal__buf *b)
{
    if (!answer_begin(r, status, ctype, extra, b->len))
        return;
    if (b->len > 0 && !is_head(r)) {
        r->body_buf = modal__buf_ref(b);
        r->body_kind = B_BUF;
    }
}

void rt_hreq_send_fd(rt_hreq *r, int status, const char *ctype, const char *extra, int fd,
                     size_t len)
{
    if (!answer_begin(r, status, ctype, extra, len) || len == 0 || is_head(r)) {
        close(fd);
        return;
    }
    r->body_fd = fd;
    r->body_kind = B_FD;
}

static void verror(rt_hreq *r, int status, const char *extra, modal_status code,
                   const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    char *s = error_json(code, msg);
    if (s == NULL)
        abort();
    rt_hreq_send(r, status, MODAL__CT_JSON, extra, s, strlen(s));
    free(s);
}

void rt_hreq_error(rt_hreq *r, int status, modal_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror(r, status, NULL, code, fmt, ap);
    va_end(ap);
}

void rt_hreq_error_with(rt_hreq *r, int status, const char *extra_headers, modal_status code,
                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror(r, status, extra_headers, code, fmt, ap);
    va_end(ap);
}

void rt_hreq_suspend(rt_hreq *r, double deadline)
{
    if (r->answered)
        return;
    r->state = ST_SUSPENDED;
    set_events(r, 0);
    timer_set(r, deadline);
}

/* Wakes held back by this thread (rt_httpd_hold_wakes): a bit per loop. */
static __thread bool wakes_held;
static __thread unsigned wakes_owed;

static void wake_loop(loop *lp)
{
    uint64_t one = 1;
    ssize_t w = write(lp->evfd, &one, sizeof one);
    (void)w;
}

void rt_hreq_resume(rt_hreq *r)
{
    loop *lp = r->lp;
    pthread_mutex_lock(&lp->qmu);
    bool wake = lp->rq == NULL;
    if (!r->resume_queued) {
        r->resume_queued = true;
        r->qnext = lp->rq;
        lp->rq = r;
    } else {
        wake = false;
    }
    pthread_mutex_unlock(&lp->qmu);
    if (wake && wakes_held)
        wakes_owed |= 1u << (lp - loops);
    else if (wake)
        wake_loop(lp);
}

void rt_httpd_hold_wakes(void)
{
    wakes_held = true;
}

void rt_httpd_release_wakes(void)
{
    wakes_held = false;
    for (int i = 0; wakes_owed != 0 && i < MAX_THREADS; i++)
        if (wakes_owed & (1u << i)) {
            wakes_owed &= ~(1u << i);
            wake_loop(&loops[i]);
        }
}

/* ---- request accessors -------------------------------------------------- */

const char *rt_hreq_method(const rt_hreq *r) { return r->method; }
const char *rt_hreq_path(const rt_hreq *r) { return r->path; }
long long rt_hreq_content_length(const rt_hreq *r) { return r->head.content_length; }
bool rt_hreq_chunked(const rt_hreq *r) { return r->head.chunked; }
void *rt_hreq_user(const rt_hreq *r) { return r->user; }
void rt_hreq_set_user(rt_hreq *r, void *user) { r->user = user; }
bool rt_hreq_answered(const rt_hreq *r) { return r->answered; }

const char *rt_hreq_header(const rt_hreq *r, const char *name, size_t *len)
{
    return rt_http_find_header(&r->head, name, len);
}

const char *rt_hreq_arg(const rt_hreq *r, const char *name)
{
    for (char **a = r->args; a && a[0]; a += 2)
        if (strcmp(a[0], name) == 0)
            return a[1];
    return NULL;
}

static int hex(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Percent-decode p[0, n) into out (n + 1 bytes); plus as space when form.
 * Returns -1 for a bad escape or an encoded NUL. */
static int decode(const char *p, size_t n, char *out, bool form)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%') {
            int a = i + 1 < n ? hex(p[i + 1]) : -1;
            int b = i + 2 < n ? hex(p[i + 2]) : -1;
            if (a < 0 || b < 0 || (a == 0 && b == 0)) {
                out[k] = '\0';
                return -1;
            }
            out[k++] = (char)(a * 16 + b);
            i += 2;
            continue;
        }
        out[k++] = form && p[i] == '+' ? ' ' : p[i];
    }
    out[k] = '\0';
    return 0;
}

/* Split the target into a decoded path and query pairs. */
static int split_target(rt_hreq *r, char *msg, size_t msgsz)
{
    const char *t = r->head.target;
    size_t tl = r->head.tlen;
    const char *q = memchr(t, '?', tl);
    size_t pl = q ? (size_t)(q - t) : tl;
    r->path = malloc(pl + 1);
    if (r->path == NULL)
        abort();
    if (decode(t, pl, r->path, false) != 0) {
        snprintf(msg, msgsz, "the request path \"%.100s\" holds a bad %%-escape", r->path);
        return -1;
    }
    size_t npairs = 0;
    const char *qs = q ? q + 1 : NULL;
    size_t ql = q ? tl - pl - 1 : 0;
    for (size_t i = 0; qs && i < ql; i++)
        if (qs[i] == '&')
            npairs++;
    npairs++;
    if (npairs > 32) {
        snprintf(msg, msgsz, "more than 32 query arguments");
        return -1;
    }
    /* One block: the pointer array, then the strings. */
    size_t need = (2 * npairs + 1) * sizeof(char *) + 2 * (ql + 2);
    r->args = calloc(1, need);
    if (r->args == NULL)
        abort();
    char *s = (char *)(r->args + 2 * npairs + 1);
    size_t k = 0;
    for (size_t i = 0; qs && i < ql;) {
        size_t e = i;
        while (e < ql && qs[e] != '&')
            e++;
        if (e > i) {
            const char *eq = memchr(qs + i, '=', e - i);
            size_t nl = eq ? (size_t)(eq - (qs + i)) : e - i;
            r->args[k] = s;
            if (decode(qs + i, nl, s, true) != 0) {
                snprintf(msg, msgsz, "query argument \"%.*s\" holds a bad %%-escape", (int)nl,
                         qs + i);
                return -1;
            }
            s += strlen(s) + 1;
            r->args[k + 1] = s;
            size_t vs = eq ? nl + 1 : e - i;
            if (decode(qs + i + vs, e - i - vs, s, true) != 0) {
                snprintf(msg, msgsz, "query argument \"%.*s\" holds a bad %%-escape", (int)nl,
                         qs + i);
                return -1;
            }
            s += strlen(s) + 1;
            k += 2;
        }
        i = e + 1;
    }
    return 0;
}

/* ---- connection life ----------------------------------------------------- */

static void request_end(rt_hreq *r)
{
    if (r->in_request) {
        r->in_request = false;
        if (ops.free)
            ops.free(r);
    }
    r->user = NULL;
    free(r->path);
    r->path = NULL;
    free(r->args);
    r->args = NULL;
    body_release(r);
    free(r->out_head);
    r->out_head = NULL;
    r->answered = false;
    r->close_after = false;
    r->interim = false;
}

/* Close r. Its memory stays until the end of the event round (the
 * functions that led here may still read r->state, which is ST_DEAD). */
static void conn_close(rt_hreq *r)
{
    loop *lp = r->lp;
    if (r->state == ST_DEAD)
        return;
    request_end(r);
    timer_clear(r);
    pthread_mutex_lock(&lp->qmu);
    if (r->resume_queued)
        for (rt_hreq **pp = &lp->rq; *pp; pp = &(*pp)->qnext)
            if (*pp == r) {
                *pp = r->qnext;
                break;
            }
    pthread_mutex_unlock(&lp->qmu);
    if (r->prev)
        r->prev->next = r->next;
    else
        lp->conns = r->next;
    if (r->next)
        r->next->prev = r->prev;
    epoll_ctl(lp->ep, EPOLL_CTL_DEL, r->fd, NULL);
    if (r->ssl) {
        SSL_shutdown(r->ssl);
        SSL_free(r->ssl);
    }
    close(r->fd);
    r->state = ST_DEAD;
    r->gnext = lp->grave;
    lp->grave = r;
    atomic_fetch_sub(&nconns, 1);
}

static void bury(loop *lp)
{
    while (lp->grave) {
        rt_hreq *r = lp->grave;
        lp->grave = r->gnext;
        free(r->in);
        free(r);
    }
}

/* Wait for the next request on a kept-alive connection. */
static void await_request(rt_hreq *r)
{
    r->state = ST_HEAD;
    r->head_started = false;
    set_events(r, EPOLLIN);
    timer_set(r, rt_now() + lim.idle_timeout);
}

/* Write what the answer still holds. Returns 1 when all is written, 0
 * when the socket is full, -1 when the connection is lost. */
static int flush(rt_hreq *r)
{
    while (r->out_head_off < r->out_head_len) {
        ssize_t k;
        if (r->ssl == NULL && r->body_kind != B_NONE && r->body_kind != B_FD) {
            /* Head and a memory body leave in one write. */
            const char *bp = r->body_kind == B_MEM ? r->body_mem : (const char *)r->body_buf->base;
            struct iovec iov[2] = {
                {r->out_head + r->out_head_off, r->out_head_len - r->out_head_off},
                {(char *)bp + r->body_off, r->body_len - r->body_off}};
            struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
            do
                k = sendmsg(r->fd, &mh, MSG_NOSIGNAL);
            while (k < 0 && errno == EINTR);
            if (k > 0) {
                size_t hk = (size_t)k < iov[0].iov_len ? (size_t)k : iov[0].iov_len;
                r->out_head_off += hk;
                r->body_off += (size_t)k - hk;
                continue;
            }
        } else {
            k = io_write(r, r->out_head + r->out_head_off, r->out_head_len - r->out_head_off);
            if (k > 0) {
                r->out_head_off += (size_t)k;
                continue;
            }
        }
        return k < 0 && errno == EAGAIN ? 0 : -1;
    }
    while (r->body_kind != B_NONE && r->body_off < r->body_len) {
        ssize_t k;
        if (r->body_kind == B_MEM || r->body_kind == B_BUF) {
            const char *bp = r->body_kind == B_MEM ? r->body_mem : (const char *)r->body_buf->base;
            k = io_write(r, bp + r->body_off, r->body_len - r->body_off);
            if (k > 0) {
                r->body_off += (size_t)k;
                continue;
            }
        } else if (r->ssl == NULL) {
            off_t off = (off_t)r->body_off;
            do
                k = sendfile(r->fd, r->body_fd, &off, r->body_len - r->body_off);
            while (k < 0 && errno == EINTR);
            if (k > 0) {
                r->body_off = (size_t)off;
                continue;
            }
            if (k == 0) {
                errno = EIO; /* the file is shorter than announced */
                return -1;
            }
        } else {
            /* No sendfile through TLS: read the file into the stream. */
            if (r->scratch_off == r->scratch_len) {
                if (r->scratch == NULL && (r->scratch = malloc(TLS_CHUNK)) == NULL)
                    abort();
                size_t want = r->body_len - r->body_off;
                ssize_t got = pread(r->body_fd, r->scratch, want < TLS_CHUNK ? want : TLS_CHUNK,
                                    (off_t)r->body_off);
                if (got <= 0)
                    return -1;
                r->scratch_len = (size_t)got;
                r->scratch_off = 0;
            }
            k = io_write(r, r->scratch + r->scratch_off, r->scratch_len - r->scratch_off);
            if (k > 0) {
                r->scratch_off += (size_t)k;
                r->body_off += (size_t)k;
                continue;
            }
        }
        return k < 0 && errno == EAGAIN ? 0 : -1;
    }
    return 1;
}

/* After a callback: get ready to write the answer, or stay suspended.
 * The caller then runs process(), which does the writing: nothing here
 * calls back into the state machine, so a connection never closes under
 * a function that still uses it. */
static void after_callback(rt_hreq *r)
{
    if (r->answered) {
        r->state = ST_WRITE;
        timer_set(r, rt_now() + lim.idle_timeout);
        return;
    }
    if (r->state == ST_SUSPENDED)
        return;
    if (r->state == ST_HANDLER) {
        /* A handler that neither answered nor suspended: a bug, but the
         * client still gets an answer. */
        rt_hreq_error(r, 500, MODAL_ERUNTIME, "the runtime did not answer %s %s", r->method,
                      r->path ? r->path : "");
        r->state = ST_WRITE;
    }
}

/* A protocol error: answer it and close. */
static void proto_error(rt_hreq *r, int status, modal_status code, const char *msg)
{
    r->body_done = false; /* whatever follows cannot be trusted: close after */
    rt_hreq_error(r, status, code, "%s", msg);
    r->state = ST_WRITE;
    timer_set(r, rt_now() + lim.idle_timeout);
}

static void deliver_body(rt_hreq *r, const char *p, size_t n)
{
    r->body_seen += n;
    if (r->body_seen > lim.max_body) {
        char m[200];
        snprintf(m, sizeof m, "request body is larger than %zu bytes (the runtime's --max-body)",
                 lim.max_body);
        proto_error(r, 413, MODAL_ELIMIT, m);
        return;
    }
    if (ops.body && n > 0)
        ops.body(r, p, n);
}

/* Use what the read buffer holds, as far as the state allows. */
static void consume(rt_hreq *r)
{
    char msg[512];
    for (;;) {
        if (r->state == ST_HEAD) {
            if (r->pos == r->in_len)
                return;
            if (!r->head_started) {
                r->head_started = true;
                /* The header time counts from the first byte; later bytes
                 * do not extend it. */
                timer_set(r, rt_now() + lim.header_timeout);
            }
            int status = 0;
            int rc = rt_http_parse_head(r->in + r->pos, r->in_len - r->pos, lim.max_head,
                                        &r->head, &status, msg, sizeof msg);
            if (rc == 0)
                return;
            r->in_request = false;
            if (rc < 0) {
                proto_error(r, status, status == 431 ? MODAL_ELIMIT : MODAL_EINVAL, msg);
                return;
            }
            size_t ml = r->head.mlen < sizeof r->method ? r->head.mlen : sizeof r->method - 1;
            memcpy(r->method, r->head.method, ml);
            r->method[ml] = '\0';
            r->pos += r->head.head_len;
            r->body_left = r->head.content_length > 0 ? r->head.content_length : 0;
            r->body_seen = 0;
            memset(&r->ck, 0, sizeof r->ck);
            r->body_done = !r->head.chunked && r->body_left == 0;
            r->continue_sent = false;
            if (split_target(r, msg, sizeof msg) != 0) {
                proto_error(r, 400, MODAL_EINVAL, msg);
                return;
            }
            r->in_request = true;
            r->state = ST_BODY;
            timer_set(r, rt_now() + lim.idle_timeout);
            if (ops.head)
                ops.head(r);
            if (!r->answered && r->head.content_length > (long long)lim.max_body)
                rt_hreq_error(r, 413, MODAL_ELIMIT,
                              "request body of %lld bytes is larger than %zu bytes (the "
                              "runtime's --max-body)", r->head.content_length, lim.max_body);
            if (r->answered) {
                r->state = ST_WRITE;
                return;
            }
            if (r->head.expect_continue && !r->body_done && r->pos == r->in_len) {
                /* The client waits for this before sending the body; only
                 * now, with the headers checked, is it worth sending. */
                r->out_head = strdup("HTTP/1.1 100 Continue\r\n\r\n");
                if (r->out_head == NULL)
                    abort();
                r->out_head_len = strlen(r->out_head);
                r->out_head_off = 0;
                r->interim = true;
                r->state = ST_WRITE;
                return;
            }
            continue;
        }
        if (r->state == ST_BODY) {
            while (!r->body_done && r->pos < r->in_len && !r->answered) {
                size_t avail = r->in_len - r->pos;
                if (!r->head.chunked) {
                    size_t take = avail < (unsigned long long)r->body_left ? avail
                                                                          : (size_t)r->body_left;
                    r->pos += take;
                    r->body_left -= (long long)take;
                    r->body_done = r->body_left == 0;
                    deliver_body(r, r->in + r->pos - take, take);
                } else {
                    const char *d;
                    size_t dl;
                    long used = rt_chunked_decode(&r->ck, r->in + r->pos, avail, &d, &dl, msg,
                                                  sizeof msg);
                    if (used < 0) {
                        char m2[600];
                        snprintf(m2, sizeof m2, "malformed chunked body: %s", msg);
                        proto_error(r, 400, MODAL_EINVAL, m2);
                        return;
                    }
                    r->pos += (size_t)used;
                    r->body_done = r->ck.done;
                    if (dl > 0)
                        deliver_body(r, d, dl);
                }
            }
            if (r->answered) {
                r->state = ST_WRITE;
                return;
            }
            /* Bytes used up: reuse the buffer behind the head. */
            /* The head's bytes stay where the parsed head points. */
            if (r->pos == r->in_len && r->pos > r->head.head_len)
                r->in_len = r->pos = r->head.head_len;
            if (!r->body_done)
                return;
            r->state = ST_HANDLER;
            timer_clear(r);
            if (ops.done)
                ops.done(r);
            after_callback(r);
            return;
        }
        return;
    }
}

/* Read what the socket has, as long as the state wants input. */
static void do_read(rt_hreq *r)
{
    if (r->in == NULL) {
        /* Only now: a connection that never sends costs no buffer. */
        r->in_cap = lim.max_head + READ_EXTRA;
        if ((r->in = malloc(r->in_cap)) == NULL)
            abort();
    }
    while (r->state == ST_HEAD || r->state == ST_BODY) {
        if (r->in_len == r->in_cap) {
            consume(r);
            if (r->in_len == r->in_cap || !(r->state == ST_HEAD || r->state == ST_BODY))
                break;
            continue;
        }
        ssize_t k = io_read(r, r->in + r->in_len, r->in_cap - r->in_len);
        if (k == 0 || (k < 0 && errno != EAGAIN)) {
            if (r->state == ST_BODY && !r->answered) {
                conn_close(r); /* the client gave up mid-body */
                return;
            }
            conn_close(r);
            return;
        }
        if (k < 0)
            break;
        r->in_len += (size_t)k;
        if (r->state == ST_BODY) /* a body that keeps coming is not stalled */
            timer_set(r, rt_now() + lim.idle_timeout);
        consume(r);
    }
    if (r->state == ST_HEAD || r->state == ST_BODY)
        set_events(r, r->want_write ? EPOLLOUT : EPOLLIN);
}

/* Read and drop input until the client closes. */
static void linger_read(rt_hreq *r)
{
    char drop[4096];
    for (;;) {
        ssize_t k = recv(r->fd, drop, sizeof drop, 0);
        if (k > 0)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        conn_close(r);
        return;
    }
}

/* Drive r forward from its state, in a loop rather than by recursion, so
 * that pipelined requests cannot deepen the stack. */
static void process(rt_hreq *r)
{
    for (;;) {
        switch (r->state) {
        case ST_LINGER:
            linger_read(r);
            return;
        case ST_HEAD:
        case ST_BODY:
            do_read(r);
            if (r->state == ST_WRITE)
                continue;
            return;
        case ST_WRITE:
            break;
        default:
            return; /* TLS handshake, suspended, closed */
        }
        size_t sent = r->out_head_off + r->body_off;
        int rc = flush(r);
        if (rc < 0) {
            conn_close(r);
            return;
        }
        if (rc == 0) {
            if (r->out_head_off + r->body_off != sent) /* an answer that leaves is not stalled */
                timer_set(r, rt_now() + lim.idle_timeout);
            set_events(r, r->want_write || r->ssl == NULL ? EPOLLOUT : EPOLLIN);
            return;
        }
        if (r->interim) {
            /* 100 Continue went out: now the body. */
            free(r->out_head);
            r->out_head = NULL;
            r->interim = false;
            r->state = ST_BODY;
            timer_set(r, rt_now() + lim.idle_timeout);
            set_events(r, EPOLLIN);
            continue;
        }
        bool close_it = r->close_after || stopping;
        request_end(r);
        if (close_it && r->ssl == NULL && !stopping) {
            /* Closing with unread bytes would reset the connection, and the
             * client could lose the answer (an early 413 or 401 while it is
             * still sending): stop writing, read and drop what still
             * comes, for a short while. */
            shutdown(r->fd, SHUT_WR);
            r->state = ST_LINGER;
            set_events(r, EPOLLIN);
            timer_set(r, rt_now() + LINGER_SECONDS);
            continue;
        }
        if (close_it) {
            conn_close(r);
            return;
        }
        /* Keep what the client sent ahead (pipelining) for the next one. */
        memmove(r->in, r->in + r->pos, r->in_len - r->pos);
        r->in_len -= r->pos;
        r->pos = 0;
        await_request(r);
        if (r->in_len > 0)
            consume(r);
    }
}

static void tls_handshake(rt_hreq *r)
{
    ERR_clear_error();
    int k = SSL_accept(r->ssl);
    if (k == 1) {
        r->state = ST_HEAD;
        r->want_write = false;
        set_events(r, EPOLLIN);
        process(r);
        return;
    }
    int e = SSL_get_error(r->ssl, k);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        set_events(r, e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN);
        return;
    }
    rt_log(0, "http: TLS handshake failed: %s", ERR_reason_error_string(ERR_peek_error())
                                                     ? ERR_reason_error_string(ERR_peek_error())
                                                     : "connection closed");
    conn_close(r);
}

static void on_timeout(rt_hreq *r)
{
    r->heap_idx = -1;
    r->deadline = 0;
    switch (r->state) {
    case ST_SUSPENDED:
        r->state = ST_HANDLER;
        if (ops.resume)
            ops.resume(r);
        after_callback(r);
        process(r);
        return;
    case ST_HEAD:
        if (!r->head_started) {
            conn_close(r); /* idle keep-alive, or a connection that never spoke */
            return;
        }
        r->in_request = false;
        {
            char m[160];
            snprintf(m, sizeof m,
                     "the request line and headers did not arrive within %g s (the runtime's "
                     "--header-timeout)", lim.header_timeout);
            proto_error(r, 408, MODAL_ETIMEOUT, m);
        }
        process(r);
        return;
    case ST_BODY:
        {
            char m[160];
            snprintf(m, sizeof m, "the request body stalled for %g s", lim.idle_timeout);
            proto_error(r, 408, MODAL_ETIMEOUT, m);
            r->close_after = true;
        }
        process(r);
        return;
    default:
        conn_close(r); /* TLS handshake or an answer that does not leave */
        return;
    }
}

/* ---- accepting ----------------------------------------------------------- */

static void refuse(int fd, bool tls)
{
    if (!tls) {
        char m[200];
        snprintf(m, sizeof m, "the runtime has %d connections open (its --max-connections); "
                 "try again", lim.max_conns);
        char *body = error_json(MODAL_ERUNTIME, m);
        if (body != NULL) {
            char buf[512];
            int n = snprintf(buf, sizeof buf,
                             "HTTP/1.1 503 Service Unavailable\r\nContent-Type: " MODAL__CT_JSON "\r\n"
                             "Content-Length: %zu\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s",
                             strlen(body), body);
            if (n > 0 && (size_t)n < sizeof buf) {
                ssize_t w = send(fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
                (void)w;
            }
            free(body);
        }
    }
    close(fd);
}

static void on_accept(loop *lp, int li)
{
    for (int i = 0; i < 256; i++) {
        int fd = accept4(listeners[li].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int spare; /* taken by one thread only: two closing it could close another's fd */
            if ((errno == EMFILE || errno == ENFILE) &&
                (spare = atomic_exchange(&reserve_fd, -1)) >= 0) {
                /* Out of descriptors: free the reserve to take one
                 * connection off the backlog and refuse it, rather than
                 * leave clients waiting there. */
                close(spare);
                fd = accept4(listeners[li].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd >= 0)
                    refuse(fd, listeners[li].tls != NULL);
                reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                continue;
            }
            return;
        }
        if (atomic_fetch_add(&nconns, 1) >= lim.max_conns || stopping) {
            atomic_fetch_sub(&nconns, 1);
            refuse(fd, listeners[li].tls != NULL);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails harmlessly on unix */
        rt_hreq *r = calloc(1, sizeof *r);
        if (r == NULL)
            abort();
        r->lp = lp;
        r->fd = fd;
        r->heap_idx = -1;
        r->body_fd = -1;
        r->next = lp->conns;
        if (lp->conns)
            lp->conns->prev = r;
        lp->conns = r;
        r->events = EPOLLIN;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = r};
        epoll_ctl(lp->ep, EPOLL_CTL_ADD, fd, &e);
        if (listeners[li].tls != NULL) {
            r->ssl = SSL_new(listeners[li].tls);
            if (r->ssl == NULL || SSL_set_fd(r->ssl, fd) != 1) {
                conn_close(r);
                continue;
            }
            SSL_set_mode(r->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                     SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
            r->state = ST_TLS;
            timer_set(r, rt_now() + lim.header_timeout);
            tls_handshake(r);
        } else {
            /* A connection that never sends a byte is closed after the
             * header time, like one that sends too slowly. */
            r->state = ST_HEAD;
            r->head_started = true;
            timer_set(r, rt_now() + lim.header_timeout);
            process(r);
        }
    }
}

/* ---- the event thread ------------------------------------------------------ */

/* Hand a suspended request back to its handler, on its own thread. */
static void resume_now(rt_hreq *r)
{
    timer_clear(r);
    r->state = ST_HANDLER;
    if (ops.resume)
        ops.resume(r);
    after_callback(r);
    process(r);
}

static void take_resumes(loop *lp)
{
    uint64_t v;
    ssize_t rd = read(lp->evfd, &v, sizeof v);
    (void)rd;
    pthread_mutex_lock(&lp->qmu);
    rt_hreq *list = lp->rq;
    lp->rq = NULL;
    /* Walk a copy: a resumed request may close its connection, and a
     * request resumed again meanwhile goes on the queue anew, through the
     * qnext this list uses: so the copy is made before unlocking. */
    size_t n = 0;
    for (rt_hreq *r = list; r; r = r->qnext)
        n++;
    rt_hreq **v2 = malloc((n ? n : 1) * sizeof *v2);
    if (v2 == NULL)
        abort();
    n = 0;
    for (rt_hreq *r = list; r; r = r->qnext) {
        v2[n++] = r;
        r->resume_queued = false;
    }
    pthread_mutex_unlock(&lp->qmu);
    for (size_t i = 0; i < n; i++) {
        rt_hreq *r = v2[i];
        /* Stale entries (the request was answered meanwhile, or its
         * connection closed in this round) are skipped. */
        if (r->state == ST_SUSPENDED)
            resume_now(r);
    }
    free(v2);
}

static void *loop_main(void *arg)
{
    loop *lp = arg;
    pthread_setname_np(pthread_self(), "modal-http");
    struct epoll_event evs[128];
    double stop_at = 0;
    for (;;) {
        if (stopping && !lp->stop_seen) {
            lp->stop_seen = true;
            stop_at = rt_now() + 1.0;
            for (int i = 0; i < nlisteners; i++)
                epoll_ctl(lp->ep, EPOLL_CTL_DEL, listeners[i].fd, NULL);
            /* Everyone waiting is answered now. */
            for (rt_hreq *r = lp->conns, *next; r; r = next) {
                next = r->next;
                if (r->state == ST_SUSPENDED)
                    resume_now(r);
            }
        }
        if (lp->stop_seen) {
            /* Connections with nothing to send go now; answers in flight
             * get until stop_at. */
            for (rt_hreq *r = lp->conns, *next; r; r = next) {
                next = r->next;
                if (r->state != ST_WRITE || rt_now() >= stop_at)
                    conn_close(r);
            }
            if (lp->conns == NULL)
                break;
        }
        int timeout = -1;
        double now = rt_now();
        if (lp->nheap > 0) {
            double left = lp->heap[0]->deadline - now;
            timeout = left <= 0 ? 0 : (int)ceil(left * 1000);
        }
        if (lp->stop_seen && (timeout < 0 || timeout > 50))
            timeout = 50;
        int n = epoll_wait(lp->ep, evs, 128, timeout);
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &lp->evfd) {
                take_resumes(lp);
                continue;
            }
            if ((char *)p >= (char *)listeners && (char *)p < (char *)(listeners + MAX_LISTENERS)) {
                on_accept(lp, (int)((char *)p - (char *)listeners) / (int)sizeof listeners[0]);
                continue;
            }
            rt_hreq *r = p;
            if (r->state == ST_DEAD)
                continue; /* closed earlier in this round */
            if (r->state == ST_TLS)
                tls_handshake(r);
            else if ((evs[i].events & (EPOLLERR | EPOLLHUP)) && r->state != ST_HEAD &&
                     r->state != ST_BODY && r->state != ST_WRITE)
                conn_close(r);
            else
                process(r);
        }
        now = rt_now();
        while (lp->nheap > 0 && lp->heap[0]->deadline <= now) {
            rt_hreq *r = lp->heap[0];
            timer_clear(r);
            on_timeout(r);
        }
        bury(lp);
    }
    bury(lp);
    return NULL;
}

int rt_httpd_init(const rt_httpd_ops *o, const rt_httpd_limits *l, char *err, size_t errsz)
{
    if (nloops > 0)
        return 0;
    ops = *o;
    lim = *l;
    if (lim.threads < 1)
        lim.threads = 1;
    if (lim.threads > MAX_THREADS)
        lim.threads = MAX_THREADS;
    reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (int i = 0; i < lim.threads; i++) {
        loop *lp = &loops[i];
        lp->ep = epoll_create1(EPOLL_CLOEXEC);
        lp->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        pthread_mutex_init(&lp->qmu, NULL);
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = &lp->evfd};
        if (lp->ep < 0 || lp->evfd < 0 || epoll_ctl(lp->ep, EPOLL_CTL_ADD, lp->evfd, &e) != 0 ||
            pthread_create(&lp->thread, NULL, loop_main, lp) != 0) {
            snprintf(err, errsz, "cannot start the HTTP server's event thread: %s",
                     strerror(errno));
            return -1;
        }
        nloops++;
    }
    return 0;
}

int rt_httpd_listen(int fd, SSL_CTX *tls, char *err, size_t errsz)
{
    if (nlisteners == MAX_LISTENERS) {
        snprintf(err, errsz, "at most %d listening addresses", MAX_LISTENERS);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    if (tls != NULL)
        SSL_CTX_up_ref(tls);
    int li = nlisteners;
    listeners[li].fd = fd;
    listeners[li].tls = tls;
    nlisteners++;
    for (int i = 0; i < nloops; i++) {
        struct epoll_event e = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &listeners[li]};
        if (epoll_ctl(loops[i].ep, EPOLL_CTL_ADD, fd, &e) != 0) {
            snprintf(err, errsz, "cannot watch a listening socket: %s", strerror(errno));
            return -1;
        }
    }
    return 0;
}

void rt_httpd_stop(void)
{
    if (nloops == 0)
        return;
    stopping = 1;
    for (int i = 0; i < nloops; i++) {
        uint64_t one = 1;
        ssize_t w = write(loops[i].evfd, &one, sizeof one);
        (void)w;
    }
    for (int i = 0; i < nloops; i++) {
        pthread_join(loops[i].thread, NULL);
        close(loops[i].ep);
        close(loops[i].evfd);
        free(loops[i].heap);
    }
    nloops = 0;
    for (int i = 0; i < nlisteners; i++) {
        close(listeners[i].fd);
        if (listeners[i].tls)
            SSL_CTX_free(listeners[i].tls);
    }
    nlisteners = 0;
    if (reserve_fd >= 0)
        close(reserve_fd);
    reserve_fd = -1;
}
