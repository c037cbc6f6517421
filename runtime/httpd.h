/*
 * httpd.h: the runtime's HTTP/1.1 server, event-driven: a few event
 * threads, each with its own epoll set, serve every connection with
 * nonblocking sockets, so a slow or idle client costs a little memory and
 * no thread. It knows nothing of routes or calls: a table of callbacks
 * (rt_httpd_ops) receives each request, and a handler that must wait (a
 * long poll) suspends its request and has it resumed later from any thread.
 *
 * Every error the server itself answers (a malformed request, a body over
 * the limit, headers too slow) is the runtime's JSON error
 * {"error":{"code","message"}}, like the handlers' own.
 */
#ifndef RT_HTTPD_H
#define RT_HTTPD_H

#include "internal.h"

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

/* A request being served; valid from ops.head until ops.free. */
typedef struct rt_hreq rt_hreq;

/*
 * What the server calls, always on the event thread that owns the request.
 * Each request gets head, then body zero or more times, then done; or, once
 * suspended, resume. Any of them may answer (rt_hreq_send_*, rt_hreq_error);
 * done and resume must answer or suspend. free comes last, exactly once,
 * whether the request was answered or its connection was lost.
 */
typedef struct rt_httpd_ops {
    void (*head)(rt_hreq *r);
    void (*body)(rt_hreq *r, const char *p, size_t n);
    void (*done)(rt_hreq *r);
    void (*resume)(rt_hreq *r);
    void (*free)(rt_hreq *r);
} rt_httpd_ops;

/* The server's limits; rt_httpd_init copies them. */
typedef struct rt_httpd_limits {
    size_t max_body;        /* bytes of a request body, whatever its encoding */
    size_t max_head;        /* bytes of a request line and headers */
    double header_timeout;  /* seconds from a request's first byte to its blank line */
    double idle_timeout;    /* seconds a keep-alive connection may wait for a request,
                             * and a body or an answer may go without progress */
    int max_conns;          /* open connections; more are answered 503 and closed */
    int threads;            /* event threads */
} rt_httpd_limits;

/* Start the event threads. Returns 0, or -1 with err filled. */
int rt_httpd_init(const rt_httpd_ops *ops, const rt_httpd_limits *lim, char *err, size_t errsz);

/* Serve the listening socket fd (nonblocking), with TLS when tls is not
 * NULL (the server takes a reference). Returns 0, or -1 with err filled. */
int rt_httpd_listen(int fd, SSL_CTX *tls, char *err, size_t errsz);

/* Stop: suspended requests are resumed so they answer, answers in flight
 * get a moment to leave, then every connection and listener is closed. */
void rt_httpd_stop(void);

/* ---- a request -------------------------------------------------------- */

const char *rt_hreq_method(const rt_hreq *r);   /* "GET", ... */
const char *rt_hreq_path(const rt_hreq *r);     /* percent-decoded, without the query */
/* A query argument, percent-decoded, or NULL when absent. Lives as long as r. */
const char *rt_hreq_arg(const rt_hreq *r, const char *name);
/* A header's value (not NUL-terminated, *len bytes), or NULL. */
const char *rt_hreq_header(const rt_hreq *r, const char *name, size_t *len);
/* The Content-Length, or -1 (none, or chunked). */
long long rt_hreq_content_length(const rt_hreq *r);
bool rt_hreq_chunked(const rt_hreq *r);
/* The handler's own pointer, NULL until set. */
void *rt_hreq_user(const rt_hreq *r);
void rt_hreq_set_user(rt_hreq *r, void *user);
/* Whether r has been answered. */
bool rt_hreq_answered(const rt_hreq *r);

/*
 * Answer r. extra_headers is "" or complete "Name: value\r\n" lines. The
 * body comes from a copy of p, from a reference to b, or from len bytes of
 * fd starting at offset 0 (the server closes fd). The first answer wins;
 * later ones are ignored (their fd closed).
 */
void rt_hreq_send(rt_hreq *r, int status, const char *ctype, const char *extra_headers,
                  const void *p, size_t len);
void rt_hreq_send_buf(rt_hreq *r, int status, const char *ctype, const char *extra_headers,
                      modal__buf *b);
void rt_hreq_send_fd(rt_hreq *r, int status, const char *ctype, const char *extra_headers,
                     int fd, size_t len);
/* Answer the JSON error {"error":{"code":<code's name>,"message":...}}. */
void rt_hreq_error(rt_hreq *r, int status, modal_status code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The same with extra_headers ("Name: value\r\n" lines, or NULL), such as
 * the Allow of a 405. */
void rt_hreq_error_with(rt_hreq *r, int status, const char *extra_headers, modal_status code,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Suspend r (from done or resume) until rt_hreq_resume or the monotonic
 * time deadline (rt_now()), whichever comes first; then ops.resume runs. */
void rt_hreq_suspend(rt_hreq *r, double deadline);
/* Resume a suspended r from any thread; cheap, no I/O but an eventfd
 * write. A resume that finds r no longer suspended is ignored, so the
 * caller must make sure r is not freed meanwhile (ops.free is the place to
 * stop resuming it). */
void rt_hreq_resume(rt_hreq *r);

/*
 * Hold back, on the calling thread, the eventfd writes of the resumes it
 * makes, until rt_httpd_release_wakes writes them. A thread that resumes
 * requests while holding a lock their handlers take (the runtime's event
 * loop settling a call under rt.mu) holds its wakes until it unlocks, so
 * an event thread is not woken only to sleep again on that lock. Release
 * without a hold is harmless.
 */
void rt_httpd_hold_wakes(void);
void rt_httpd_release_wakes(void);

#endif
