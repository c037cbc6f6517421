/*
 * http.c: the HTTP API's shared parts, served by httpd.c: the request
 * context, the token check, body accumulation, the send helpers, long-poll
 * suspension and resumption, and the route table with its dispatch. The
 * handlers live in one file per resource (http_calls.c, http_maps.c,
 * http_artifacts.c, http_apps.c, http_status.c; see http_routes.h).
 * Every request is authenticated from its headers before its body is
 * read; errors are JSON naming what was wrong. A long poll does not hold
 * a thread: the request registers on its call (or map) and is suspended;
 * rt_http_call_changed resumes it when the call changes, and the server
 * resumes it when its wait runs out.
 */
#include "http_routes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define MAX_LISTEN 8
#define MEMFD_BODY_MIN (1u << 20) /* bodies this large go to a memfd */

rt_http_opts rt_http = {.header_timeout = RT_HTTP_HEADER_TIMEOUT,
                        .idle_timeout = RT_HTTP_IDLE_TIMEOUT,
                        .max_connections = RT_HTTP_MAX_CONNECTIONS};

static char unix_paths[MAX_LISTEN][108];
static int nlisten;

typedef rt_hctx hctx;

/* ---- waiting --------------------------------------------------------------- */

/* Take h off the list it waits on. With rt.mu held. */
static void wait_unlink(hctx *h)
{
    if (h->on == NULL)
        return;
    *h->wprev = h->wnext;
    if (h->wnext)
        h->wnext->wprev = h->wprev;
    h->on = NULL;
    h->wnext = NULL;
    h->wprev = NULL;
}

static void wait_link(hctx *h, void *on, struct rt_http_wait **head)
{
    wait_unlink(h);
    h->on = on;
    h->wnext = *head;
    if (*head)
        (*head)->wprev = &h->wnext;
    *head = h;
    h->wprev = head;
}

static void wake_all(struct rt_http_wait **head)
{
    while (*head) {
        hctx *h = *head;
        wait_unlink(h);
        rt_hreq_resume(h->r);
    }
}

void rt_http_wait_on(hctx *h, void *on, struct rt_http_wait **head, void (*poll)(hctx *h))
{
    h->poll = poll;
    wait_link(h, on, head);
}

void rt_http_wait_end(hctx *h)
{
    wait_unlink(h);
}

void rt_http_call_changed(rt_call *c)
{
    wake_all(&c->http_waits);
    if (c->map != NULL)
        wake_all(&c->map->http_waits);
}

void rt_http_map_changed(rt_map *m)
{
    wake_all(&m->http_waits);
}

/* ---- responses ------------------------------------------------------------- */

void rt_http_send_json(rt_hreq *r, int status, cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (s == NULL) {
        rt_hreq_error(r, 503, MODAL_ENOMEM, "runtime out of memory");
        return;
    }
    rt_hreq_send(r, status, MODAL__CT_JSON, NULL, s, strlen(s));
    free(s);
}

int rt_http_status_for(modal_status st)
{
    switch (st) {
    case MODAL_ENOTFOUND: return 404;
    case MODAL_EAUTH: return 401;
    case MODAL_ELIMIT: return 413;
    case MODAL_ENOMEM: return 503;
    case MODAL_EIO: return 500;
    case MODAL_EWORKER: case MODAL_EGPU: case MODAL_EOPTION: return 422;
    default: return 400;
    }
}

void rt_http_send_buf(rt_hreq *r, int status, modal__buf *b, const char *ctype,
                      const char *hname, long long hval)
{
    char extra[96] = "";
    if (hname != NULL)
        snprintf(extra, sizeof extra, "%s: %lld\r\n", hname, hval);
    rt_hreq_send_buf(r, status, ctype, extra, b);
}

void rt_http_unknown_id(hctx *h, const char *what, const char *problem, const char *why)
{
    if (problem != NULL)
        rt_hreq_error(h->r, 404, MODAL_ENOTFOUND, "no %s \"%.64s\" on this runtime: it %s", what,
                      h->id, problem);
    else
        rt_hreq_error(h->r, 404, MODAL_ENOTFOUND, "no %s %s on this runtime%s", what, h->id, why);
}

/* ---- request bodies ---------------------------------------------------------- */

static int body_append(hctx *c, const char *data, size_t n)
{
    size_t have = c->body_fd >= 0 ? c->body_len : c->body ? c->body->len : 0;
    if (c->expect && have + n > c->expect)
        return -2;
    if (c->body_fd >= 0 || (c->body == NULL && c->expect >= MEMFD_BODY_MIN) ||
        (c->body != NULL && c->expect == 0 && c->body->len + n >= MEMFD_BODY_MIN)) {
        /* Large bodies are written to a memfd the worker maps directly:
         * write() fills fresh pages far faster than faulting them in
         * through a mapping. A chunked body moves there once it is large. */
        if (c->body_fd < 0) {
            if ((c->body_fd = modal__memfd_new("modal-body", 0)) < 0)
                return -1;
            if (c->body != NULL) {
                if (modal__write_all(c->body_fd, c->body->base, c->body->len) != c->body->len)
                    return -1;
                c->body_len = c->body->len;
                modal__buf_unref(c->body);
                c->body = NULL;
            }
        }
        size_t done = modal__write_all(c->body_fd, data, n);
        c->body_len += done;
        return done == n ? 0 : -1;
    }
    if (c->body == NULL) {
        c->cap = c->expect ? c->expect : 4096;
        c->body = modal__buf_new(c->cap);
        if (c->body == NULL)
            return -1;
        c->body->len = 0;
    }
    uint8_t *nb = modal__reserve(c->body->base, &c->cap, c->body->len + n, 4096);
    if (nb == NULL)
        return -1;
    c->body->base = nb;
    memcpy(c->body->base + c->body->len, data, n);
    c->body->len += n;
    return 0;
}

/* ---- the route table --------------------------------------------------------- */

int rt_http_num_arg(rt_hreq *r, const char *name, double lo, double hi, double dflt,
                    const char *what, double *out)
{
    const char *v = rt_hreq_arg(r, name);
    if (v == NULL) {
        *out = dflt;
        return 0;
    }
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end != '\0' || errno != 0 || !(d >= lo && d <= hi)) {
        rt_hreq_error(r, 400, MODAL_EINVAL, "%s=\"%.40s\": must be %s", name, v, what);
        return -1;
    }
    *out = d;
    return 0;
}

const rt_route rt_routes[] = {
#define RT_ROUTE_ENTRY(method, pattern, fn, body, flags) {method, pattern, fn, body, flags},
    RT_ROUTES(RT_ROUTE_ENTRY)
#undef RT_ROUTE_ENTRY
};
const size_t rt_nroutes = sizeof rt_routes / sizeof rt_routes[0];

/* Whether path fits pattern; its id segment (if any) goes to id. */
static bool pattern_match(const char *pattern, const char *path, char id[RT_ROUTE_ID_MAX])
{
    const char *open = strchr(pattern, '<');
    id[0] = '\0';
    if (open == NULL)
        return strcmp(pattern, path) == 0;
    size_t plen = (size_t)(open - pattern);
    if (strncmp(pattern, path, plen) != 0)
        return false;
    const char *seg = path + plen;
    size_t len = strcspn(seg, "/");
    const char *close = strchr(open, '>');
    if (len == 0 || len >= RT_ROUTE_ID_MAX || close == NULL || strcmp(seg + len, close + 1) != 0)
        return false;
    memcpy(id, seg, len);
    id[len] = '\0';
    return true;
}

const rt_route *rt_route_find(const char *method, const char *path, char id[RT_ROUTE_ID_MAX],
                              char *allow, size_t allowsz)
{
    size_t used = 0;
    allow[0] = '\0';
    for (size_t i = 0; i < rt_nroutes; i++) {
        if (!pattern_match(rt_routes[i].pattern, path, id))
            continue;
        if (strcmp(rt_routes[i].method, method) == 0)
            return &rt_routes[i];
        int k = snprintf(allow + used, allowsz - used, "%s%s", used ? ", " : "",
                         rt_routes[i].method);
        if (k > 0 && (size_t)k < allowsz - used)
            used += (size_t)k;
    }
    id[0] = '\0';
    return NULL;
}

/* The pattern of the first route whose path fits (for a 405's message). */
static const char *pattern_of(const char *path)
{
    char id[RT_ROUTE_ID_MAX];
    for (size_t i = 0; i < rt_nroutes; i++)
        if (pattern_match(rt_routes[i].pattern, path, id))
            return rt_routes[i].pattern;
    return path;
}

/* The request is complete: answer it from its route. */
static void dispatch(hctx *h)
{
    rt_hreq *r = h->r;
    const char *method = rt_hreq_method(r), *path = rt_hreq_path(r);
    if (h->route == NULL) {
        char allow[96], id[RT_ROUTE_ID_MAX];
        rt_route_find(method, path, id, allow, sizeof allow);
        if (allow[0] == '\0') {
            rt_hreq_error(r, 404, MODAL_ENOTFOUND, "no route %s %.200s", method, path);
        } else {
            char extra[128];
            snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
            rt_hreq_error_with(r, 405, extra, MODAL_EINVAL, "use %s on %s, not %s", allow,
                               pattern_of(path), method);
        }
        return;
    }
    if (h->body_fd >= 0 && h->body == NULL) {
        /* Sealed before it is mapped or passed on, so nobody can shrink it
         * under a mapping. Only the envelope at its start is read here; the
         * mapping faults in just those pages. */
        if (modal__memfd_seal(h->body_fd) != 0) {
            rt_hreq_error(r, 503, MODAL_EIO, "cannot seal a %zu-byte body: %s", h->body_len,
                          strerror(errno));
            return;
        }
        h->body = modal__buf_map_fd(h->body_fd, h->body_len, 0);
        if (h->body == NULL) {
            rt_hreq_error(r, 503, MODAL_ENOMEM, "cannot map a %zu-byte body: %s", h->body_len,
                          strerror(errno));
            return;
        }
    }
    if (h->route->body != NULL && !(h->route->flags & RT_ROUTE_UPLOAD) && h->body == NULL) {
        rt_hreq_error(r, 400, MODAL_ECODEC, "%s %s needs a body (%s, as docs/wire.md describes)",
                      method, h->route->pattern, h->route->body);
        return;
    }
    if (h->route->flags & RT_ROUTE_WAITS) {
        double wait;
        if (rt_http_num_arg(r, "wait", 0, 60, 0, "a number of seconds from 0 to 60", &wait) != 0)
            return;
        h->deadline = rt_now() + wait;
    }
    h->route->fn(h);
}

static int token_ok(rt_hreq *r)
{
    size_t n;
    const char *h = rt_hreq_header(r, MODAL__H_AUTH, &n);
    size_t skip = strlen(MODAL__AUTH_BEARER);
    if (h == NULL || n < skip || strncmp(h, MODAL__AUTH_BEARER, skip) != 0)
        return 0;
    h += skip;
    n -= skip;
    size_t m = strlen(rt.token);
    /* Compare in constant time over the expected length. */
    return n == m && CRYPTO_memcmp(h, rt.token, m) == 0;
}

/* ---- the server's callbacks ------------------------------------------------------ */

static void on_head(rt_hreq *r)
{
    hctx *h = calloc(1, sizeof *h);
    if (h == NULL)
        abort(); /* the daemon may abort on out-of-memory */
    h->r = r;
    h->body_fd = -1;
    rt_hreq_set_user(r, h);
    if (!token_ok(r)) {
        rt_hreq_error(r, 401, MODAL_EAUTH,
                      "missing or wrong token: send \"" MODAL__H_AUTH ": " MODAL__AUTH_BEARER
                      "<token>\" with "
                      "the token from the runtime's token file");
        return;
    }
    long long cl = rt_hreq_content_length(r);
    if (cl > (long long)rt.max_body) {
        rt_hreq_error(r, 413, MODAL_ELIMIT,
                      "request body of %lld bytes is larger than %zu bytes (the runtime's "
                      "--max-body)", cl, rt.max_body);
        return;
    }
    h->expect = cl > 0 ? (size_t)cl : 0;
    char allow[96];
    h->route = rt_route_find(rt_hreq_method(r), rt_hreq_path(r), h->id, allow, sizeof allow);
    if (h->route != NULL && (h->route->flags & RT_ROUTE_UPLOAD) &&
        modal__artifact_problem(h->id) == NULL) {
        char err[1024];
        h->up = rt_upload_begin(h->id, err, sizeof err);
        if (h->up == NULL) {
            rt_log(3, "%s", err);
            rt_hreq_error(r, 507, MODAL_EIO, "%s", err);
        }
    }
}

static void on_body(rt_hreq *r, const char *p, size_t n)
{
    hctx *h = rt_hreq_user(r);
    if (h->up != NULL) {
        char err[1024];
        if (rt_upload_append(h->up, p, n, err, sizeof err) != 0) {
            rt_log(3, "%s", err);
            rt_upload_abort(h->up);
            h->up = NULL;
            rt_hreq_error(r, 507, MODAL_EIO, "%s", err);
        }
        return;
    }
    if (h->route == NULL || h->route->body == NULL)
        return; /* a body on a route that takes none is read and dropped */
    int rc = body_append(h, p, n);
    if (rc == -2)
        rt_hreq_error(r, 400, MODAL_EINVAL, "request body is longer than its Content-Length");
    else if (rc < 0)
        rt_hreq_error(r, 503, MODAL_ENOMEM, "runtime out of memory reading a %zu-byte body",
                      h->body_fd >= 0 ? h->body_len + n : n);
}

static void on_done(rt_hreq *r)
{
    dispatch(rt_hreq_user(r));
}

static void on_resume(rt_hreq *r)
{
    hctx *h = rt_hreq_user(r);
    if (h->poll != NULL)
        h->poll(h);
}

static void on_free(rt_hreq *r)
{
    hctx *h = rt_hreq_user(r);
    if (h == NULL)
        return;
    /* h->on is read under rt.mu: rt_http_call_changed may be waking h on
     * another thread right now, and must be done with h before it goes. */
    if (h->poll != NULL) {
        pthread_mutex_lock(&rt.mu);
        wait_unlink(h);
        pthread_mutex_unlock(&rt.mu);
    }
    /* An upload that did not finish leaves nothing behind. */
    rt_upload_abort(h->up);
    modal__buf_unref(h->body);
    if (h->body_fd >= 0)
        close(h->body_fd);
    free(h);
    rt_hreq_set_user(r, NULL);
}

static const rt_httpd_ops handlers = {
    .head = on_head, .body = on_body, .done = on_done, .resume = on_resume, .free = on_free};

int rt_http_start(const char *listen_spec, SSL_CTX *tls, char *err, size_t errsz)
{
    if (nlisten == MAX_LISTEN) {
        snprintf(err, errsz, "at most %d --listen addresses", MAX_LISTEN);
        return -1;
    }
    rt_httpd_limits lim = {.max_body = rt.max_body, .max_head = RT_HTTP_MAX_HEAD,
                           .header_timeout = rt_http.header_timeout,
                           .idle_timeout = rt_http.idle_timeout,
                           .max_conns = rt_http.max_connections, .threads = 2};
    if (rt_httpd_init(&handlers, &lim, err, errsz) != 0)
        return -1;
    int fd = -1;
    char shown[200];
    if (strncmp(listen_spec, "unix:", 5) == 0) {
        const char *path = listen_spec + 5;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (path[0] != '/' || strlen(path) >= sizeof sa.sun_path) {
            snprintf(err, errsz, "--listen %s: give an absolute socket path of at most %zu bytes",
                     listen_spec, sizeof sa.sun_path - 1);
            return -1;
        }
        strcpy(sa.sun_path, path);
        unlink(path); /* the state lock guarantees no live runtime owns it */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        mode_t old = umask(0177);
        int ok = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
                 listen(fd, 4096) == 0;
        umask(old);
        if (!ok) {
            snprintf(err, errsz, "--listen %s: %s", listen_spec, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        snprintf(unix_paths[nlisten], sizeof unix_paths[0], "%s", path);
        snprintf(shown, sizeof shown, "%s", listen_spec);
    } else if (strncmp(listen_spec, "tcp:", 4) == 0) {
        char host[64];
        const char *colon = strrchr(listen_spec + 4, ':');
        char *end;
        long port = colon ? strtol(colon + 1, &end, 10) : -1;
        size_t hl = colon ? (size_t)(colon - (listen_spec + 4)) : 0;
        struct sockaddr_in sa = {.sin_family = AF_INET};
        if (colon == NULL || *end != '\0' || port < 0 || port > 65535 || hl == 0 || hl >= sizeof host) {
            snprintf(err, errsz, "--listen %s: use tcp:HOST:PORT, e.g. tcp:127.0.0.1:7070", listen_spec);
            return -1;
        }
        memcpy(host, listen_spec + 4, hl);
        host[hl] = '\0';
        if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
            snprintf(err, errsz, "--listen %s: \"%s\" is not an IPv4 address", listen_spec, host);
            return -1;
        }
        sa.sin_port = htons((uint16_t)port);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        int one = 1;
        if (fd >= 0)
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 4096) != 0) {
            snprintf(err, errsz, "--listen %s: %s", listen_spec, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        socklen_t sl = sizeof sa;
        getsockname(fd, (struct sockaddr *)&sa, &sl);
        snprintf(shown, sizeof shown, "%s:%s:%d", tls != NULL ? "tls" : "tcp", host,
                 ntohs(sa.sin_port));
    } else {
        snprintf(err, errsz, "--listen \"%s\": use unix:/path/to.sock or tcp:HOST:PORT", listen_spec);
        return -1;
    }
    if (rt_httpd_listen(fd, tls, err, errsz) != 0) {
        close(fd);
        return -1;
    }
    nlisten++;
    printf("listening %s\n", shown);
    fflush(stdout);
    rt_log(1, "listening %s", shown);
    rt_set_listen_url(shown); /* workers' nested calls come back here */
    return 0;
}

void rt_http_stop(void)
{
    rt_httpd_stop();
    for (int i = 0; i < nlisten; i++)
        if (unix_paths[i][0] != '\0')
            unlink(unix_paths[i]);
    nlisten = 0;
}
