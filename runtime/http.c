/*
 * http.c: the HTTP API's routes and handlers, served by httpd.c. Every
 * request is authenticated from its headers before its body is read;
 * errors are JSON naming what was wrong. A long poll does not hold a
 * thread: the request registers on its call (or map) and is suspended;
 * rt_http_call_changed resumes it when the call changes, and the server
 * resumes it when its wait runs out.
 */
#include "rt.h"
#include "httpd.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define MAX_LISTEN 8
#define MEMFD_BODY_MIN (1u << 20) /* bodies this large go to a memfd */
#define MAX_QUEUED 2000000        /* beyond this, 503 */

rt_http_opts rt_http = {.header_timeout = RT_HTTP_HEADER_TIMEOUT,
                        .idle_timeout = RT_HTTP_IDLE_TIMEOUT,
                        .max_connections = RT_HTTP_MAX_CONNECTIONS};

static char unix_paths[MAX_LISTEN][108];
static int nlisten;

enum { W_NONE, W_CALL, W_MAP };

/* A request's state in the handlers; also what a call's waiter list holds. */
typedef struct rt_http_wait {
    rt_hreq *r;
    modal__buf *body;
    size_t cap;
    int body_fd;            /* large bodies: a memfd of body_len bytes */
    size_t body_len;
    size_t expect;          /* Content-Length, 0 if absent */
    rt_upload *up;          /* artifact upload in progress */
    bool up_failed;
    /* A long poll: what it waits on and until when. */
    int kind;
    char id[64];
    double deadline;
    long long log_offset;
    double after;
    void *on;               /* the rt_call or rt_map whose list holds it (rt.mu) */
    struct rt_http_wait *wnext, **wprev;
} hctx;

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

static void send_json(rt_hreq *r, int status, cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (s == NULL) {
        rt_hreq_error(r, 503, MODAL_ENOMEM, "runtime out of memory");
        return;
    }
    rt_hreq_send(r, status, "application/json", NULL, s, strlen(s));
    free(s);
}

static int http_status_for(modal_status st)
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

/* Send buf with one numeric header. */
static void send_buf(rt_hreq *r, int status, modal__buf *b, const char *ctype, const char *hname,
                     long long hval)
{
    char extra[96] = "";
    if (hname != NULL)
        snprintf(extra, sizeof extra, "%s: %lld\r\n", hname, hval);
    rt_hreq_send_buf(r, status, ctype, extra, b);
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

/* ---- handlers ------------------------------------------------------------------ */

/* Parse a number query argument within [lo, hi]; dflt when absent. */
static int num_arg(rt_hreq *r, const char *name, double lo, double hi, double dflt, double *out)
{
    const char *v = rt_hreq_arg(r, name);
    if (v == NULL) {
        *out = dflt;
        return 0;
    }
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end != '\0' || errno != 0 || !(d >= lo && d <= hi))
        return -1;
    *out = d;
    return 0;
}

/*
 * Copy the id at the start of rest ("ID" or "ID/more") into id; returns
 * where the rest begins ("" or "/more"), or NULL when the id is too long.
 */
static const char *split_id(const char *rest, char *id, size_t idsz)
{
    const char *slash = strchr(rest, '/');
    size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
    if (len >= idsz)
        return NULL;
    memcpy(id, rest, len);
    id[len] = '\0';
    return rest + len;
}

static const char *state_name(const rt_call *c)
{
    switch (c->state) {
    case RT_QUEUED: return "queued";
    case RT_DELAYED: return "retrying";
    case RT_SENT: return "running";
    case RT_DONE: return "done";
    }
    return "?";
}

/* Answer with the call's result, or 202 and new output once the wait runs
 * out or output beyond log_offset appears; until then the request waits
 * on c. Called with rt.mu held; the caller suspends when this returns 1. */
static int answer_call(hctx *h, rt_call *c)
{
    rt_hreq *r = h->r;
    if (c->state != RT_DONE && (long long)c->logs_len <= h->log_offset && !rt.stopping &&
        rt_now() < h->deadline) {
        h->kind = W_CALL;
        snprintf(h->id, sizeof h->id, "%s", c->id);
        wait_link(h, c, &c->http_waits);
        return 1;
    }
    wait_unlink(h);
    if (c->state == RT_DONE && c->result == NULL) {
        rt_hreq_error(r, 503, MODAL_ENOMEM,
                      "call %s finished (%s) but the runtime ran out of memory storing its "
                      "result", c->id, modal_status_name(c->status));
        return 0;
    }
    if (c->state == RT_DONE && c->result != NULL) {
        if (c->fetched_at == 0)
            c->fetched_at = rt_now();
        if (c->result_fd >= 0) {
            /* A large result goes out with sendfile from its memfd. */
            int fd = dup(c->result_fd);
            if (fd >= 0) {
                char extra[64];
                snprintf(extra, sizeof extra, "X-Modal-Log-Size: %zu\r\n", c->logs_len);
                rt_hreq_send_fd(r, 200, "application/x-modal-frame", extra, fd, c->result->len);
                return 0;
            }
        }
        send_buf(r, 200, c->result, "application/x-modal-frame", "X-Modal-Log-Size",
                 (long long)c->logs_len);
        return 0;
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "call_id", c->id);
    cJSON_AddStringToObject(j, "state", state_name(c));
    cJSON_AddNumberToObject(j, "attempt", c->attempt);
    cJSON_AddNumberToObject(j, "log_size", (double)c->logs_len);
    if ((long long)c->logs_len > h->log_offset && h->log_offset >= 0)
        cJSON_AddStringToObject(j, "logs", c->logs + h->log_offset);
    send_json(r, 202, j);
    return 0;
}

static void handle_health(rt_hreq *r)
{
    if (strcmp(rt_hreq_method(r), "GET") != 0 && strcmp(rt_hreq_method(r), "HEAD") != 0) {
        rt_hreq_error(r, 405, MODAL_EINVAL, "use GET /v1/health, not %s", rt_hreq_method(r));
        return;
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "ok", 1);
    cJSON_AddStringToObject(j, "version", MODAL_VERSION_STRING);
    cJSON_AddNumberToObject(j, "pid", getpid());
    cJSON_AddStringToObject(j, "state_dir", rt.state_dir);
    pthread_mutex_lock(&rt.mu);
    cJSON_AddNumberToObject(j, "workers", rt.running_workers);
    cJSON_AddNumberToObject(j, "calls", (double)rt.ncalls);
    cJSON_AddItemToObject(j, "pools", rt_pools_status());
    pthread_mutex_unlock(&rt.mu);
    cJSON_AddNumberToObject(j, "gpus", 0);
    send_json(r, 200, j);
}

static void handle_artifact(hctx *h, const char *sha)
{
    rt_hreq *r = h->r;
    const char *method = rt_hreq_method(r);
    if (!rt_valid_sha(sha)) {
        rt_hreq_error(r, 400, MODAL_EINVAL, "\"%.80s\" is not a SHA-256 (64 hex digits)", sha);
        return;
    }
    if (strcmp(method, "HEAD") == 0 || strcmp(method, "GET") == 0) {
        /* A client asks before its first call: check the stored file here,
         * outside rt.mu, so that a damaged one is uploaded again at once
         * and a new pool finds it checked already. */
        char why[700];
        if (!rt_artifact_exists(sha))
            rt_hreq_error(r, 404, MODAL_ENOTFOUND, "artifact %s is not stored", sha);
        else if (rt_artifact_verify(sha, why, sizeof why) != 0)
            rt_hreq_error(r, 404, MODAL_ENOTFOUND, "%s", why);
        else
            send_json(r, 200, cJSON_CreateObject());
        return;
    }
    if (strcmp(method, "PUT") != 0) {
        rt_hreq_error(r, 405, MODAL_EINVAL, "use HEAD or PUT on /v1/artifacts/<sha256>, not %s",
                      method);
        return;
    }
    char err[1024];
    bool created = false;
    rt_upload *u = h->up;
    h->up = NULL;
    int rc = u ? rt_upload_finish(u, &created, err, sizeof err) : -2;
    if (u == NULL)
        snprintf(err, sizeof err, "cannot store artifact %s: the upload did not start", sha);
    if (rc == -1) {
        rt_hreq_error(r, 400, MODAL_EINVAL, "%s", err);
        return;
    }
    if (rc != 0) {
        rt_log(3, "%s", err);
        rt_hreq_error(r, 507, MODAL_EIO, "%s", err);
        return;
    }
    if (created)
        rt_log(1, "stored artifact %s", sha);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "artifact", sha);
    send_json(r, created ? 201 : 200, j);
}

/* GET /v1/calls/<id>?wait=...: (re)evaluated on each resume. */
static void call_poll(hctx *h)
{
    pthread_mutex_lock(&rt.mu);
    rt_call *c = rt_call_find(h->id);
    int wait = 0;
    if (c == NULL)
        rt_hreq_error(h->r, 404, MODAL_ENOTFOUND,
                      "no call %s on this runtime (unknown, or its result expired)", h->id);
    else
        wait = answer_call(h, c);
    pthread_mutex_unlock(&rt.mu);
    if (wait)
        rt_hreq_suspend(h->r, h->deadline);
}

static void handle_calls(hctx *h, const char *rest)
{
    rt_hreq *r = h->r;
    const char *method = rt_hreq_method(r);
    double wait;
    if (num_arg(r, "wait", 0, 60, 0, &wait) != 0) {
        rt_hreq_error(r, 400, MODAL_EINVAL, "wait=\"%.40s\": must be a number of seconds from 0 "
                      "to 60", rt_hreq_arg(r, "wait"));
        return;
    }
    h->deadline = rt_now() + wait;
    if (rest[0] == '\0') {
        if (strcmp(method, "POST") != 0) {
            rt_hreq_error(r, 405, MODAL_EINVAL, "use POST /v1/calls to start a call, not %s",
                          method);
            return;
        }
        if (h->body == NULL) {
            rt_hreq_error(r, 400, MODAL_ECODEC, "POST /v1/calls needs a call frame as its body");
            return;
        }
        modal_error err;
        rt_call *c;
        pthread_mutex_lock(&rt.mu);
        if (rt.stopping || rt.ncalls > MAX_QUEUED) {
            pthread_mutex_unlock(&rt.mu);
            rt_hreq_error(r, 503, MODAL_ERUNTIME, "the runtime is %s; try again",
                          rt.stopping ? "shutting down" : "overloaded");
            return;
        }
        modal_status st = rt_call_submit(h->body, h->body_fd, h->body->len, &c, &err);
        if (st != MODAL_OK) {
            pthread_mutex_unlock(&rt.mu);
            rt_hreq_error(r, http_status_for(st), st, "%s", err.message);
            return;
        }
        h->log_offset = 0;
        int w = answer_call(h, c);
        pthread_mutex_unlock(&rt.mu);
        if (w)
            rt_hreq_suspend(r, h->deadline);
        return;
    }
    char id[64];
    const char *slash = split_id(rest, id, sizeof id);
    if (slash == NULL) {
        rt_hreq_error(r, 404, MODAL_ENOTFOUND, "no such call \"%.64s\"", rest);
        return;
    }
    double off;
    if (*slash != '\0' && strcmp(slash, "/logs") != 0) {
        rt_hreq_error(r, 404, MODAL_ENOTFOUND, "no route %s /v1/calls/%.200s", method, rest);
        return;
    }
    if (strcmp(slash, "/logs") == 0 && strcmp(method, "GET") != 0) {
        rt_hreq_error(r, 405, MODAL_EINVAL, "use GET on /v1/calls/<id>/logs, not %s", method);
        return;
    }
    if (*slash == '\0' && strcmp(method, "GET") != 0 && strcmp(method, "DELETE") != 0) {
        rt_hreq_error(r, 405, MODAL_EINVAL, "use GET or DELETE on /v1/calls/<id>, not %s", method);
        return;
    }
    if (*slash == '\0' && strcmp(method, "GET") == 0) {
        if (num_arg(r, "log_offset", 0, 1e15, 0, &off) != 0) {
            rt_hreq_error(r, 400, MODAL_EINVAL, "log_offset=\"%.40s\": must be a byte offset",
                          rt_hreq_arg(r, "log_offset"));
            return;
        }
        h->log_offset = (long long)off;
        snprintf(h->id, sizeof h->id, "%s", id);
        call_poll(h);
        return;
    }
    pthread_mutex_lock(&rt.mu);
    rt_call *c = rt_call_find(id);
    if (c == NULL) {
        pthread_mutex_unlock(&rt.mu);
        rt_hreq_error(r, 404, MODAL_ENOTFOUND,
                      "no call %s on this runtime (unknown, or its result expired)", id);
        return;
    }
    if (strcmp(slash, "/logs") == 0) {
        if (num_arg(r, "offset", 0, 1e15, 0, &off) != 0) {
            rt_hreq_error(r, 400, MODAL_EINVAL, "offset=\"%.40s\": must be a byte offset",
                          rt_hreq_arg(r, "offset"));
        } else {
            size_t o = (size_t)off < c->logs_len ? (size_t)off : c->logs_len;
            rt_hreq_send(r, 200, "text/plain; charset=utf-8", NULL, c->logs ? c->logs + o : "",
                         c->logs_len - o);
        }
    } else {
        rt_call_cancel(c);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "call_id", c->id);
        cJSON_AddStringToObject(j, "state", c->status == MODAL_ECANCELLED ? "cancelled" : "done");
        send_json(r, 200, j);
    }
    pthread_mutex_unlock(&rt.mu);
}

/* GET /v1/maps/<id>/results: (re)evaluated on each resume. */
static void map_poll(hctx *h)
{
    rt_hreq *r = h->r;
    pthread_mutex_lock(&rt.mu);
    rt_map *m = rt_map_find(h->id);
    if (m != NULL && m->done_head == NULL && !rt.stopping && rt_now() < h->deadline) {
        h->kind = W_MAP;
        wait_link(h, m, &m->http_waits);
        pthread_mutex_unlock(&rt.mu);
        rt_hreq_suspend(r, h->deadline);
        return;
    }
    wait_unlink(h);
    if (m == NULL) {
        pthread_mutex_unlock(&rt.mu);
        rt_hreq_error(r, 404, MODAL_ENOTFOUND, "no map %s on this runtime", h->id);
        return;
    }
    m->touched = rt_now();
    size_t n = 0, bytes = 0;
    long long last = (long long)h->after;
    for (rt_call *c = m->done_head; c && n < 10000 && bytes < (64u << 20); c = c->dnext)
        n++, bytes += c->result ? c->result->len : 0;
    modal__bundle_part *parts = calloc(n ? n : 1, sizeof *parts);
    size_t k = 0;
    for (rt_call *c = m->done_head; parts && c && k < n; c = c->dnext, k++) {
        parts[k].p = c->result ? c->result->base : NULL;
        parts[k].len = c->result ? c->result->len : 0;
        last = c->seq;
    }
    modal__buf *b = NULL;
    modal_error err;
    modal_status st = parts ? modal__bundle_build(parts, n, &b, &err) : MODAL_ENOMEM;
    pthread_mutex_unlock(&rt.mu);
    free(parts);
    if (st != MODAL_OK) {
        rt_hreq_error(r, 503, MODAL_ENOMEM, "runtime out of memory");
        return;
    }
    send_buf(r, 200, b, "application/x-modal-bundle", "X-Modal-Seq", last);
    modal__buf_unref(b);
}

static void map_results(hctx *h, const char *id)
{
    rt_hreq *r = h->r;
    double after, wait;
    if (num_arg(r, "after", 0, 1e15, 0, &after) != 0) {
        rt_hreq_error(r, 400, MODAL_EINVAL, "after=\"%.40s\": must be a sequence number",
                      rt_hreq_arg(r, "after"));
        return;
    }
    if (num_arg(r, "wait", 0, 60, 0, &wait) != 0) {
        rt_hreq_error(r, 400, MODAL_EINVAL, "wait=\"%.40s\": must be a number of seconds from 0 "
                      "to 60", rt_hreq_arg(r, "wait"));
        return;
    }
    h->deadline = rt_now() + wait;
    h->after = after;
    snprintf(h->id, sizeof h->id, "%s", id);
    pthread_mutex_lock(&rt.mu);
    rt_map *m = rt_map_find(id);
    if (m != NULL)
        rt_map_ack(m, (long long)after);
    pthread_mutex_unlock(&rt.mu);
    map_poll(h);
}

static void handle_maps(hctx *h, const char *rest)
{
    rt_hreq *r = h->r;
    const char *method = rt_hreq_method(r);
    modal_error err;
    modal_status st;
    if (rest[0] == '\0') {
        if (strcmp(method, "POST") != 0) {
            rt_hreq_error(r, 405, MODAL_EINVAL, "use POST /v1/maps to start a map, not %s", method);
            return;
        }
        if (h->body == NULL) {
            rt_hreq_error(r, 400, MODAL_EINVAL, "POST /v1/maps needs a map frame as its body");
            return;
        }
        rt_map *m;
        pthread_mutex_lock(&rt.mu);
        if (rt.stopping) {
            pthread_mutex_unlock(&rt.mu);
            rt_hreq_error(r, 503, MODAL_ERUNTIME, "the runtime is shutting down; try again");
            return;
        }
        st = rt_map_create(h->body, &m, &err);
        cJSON *j = NULL;
        if (st == MODAL_OK) {
            j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "map_id", m->id);
        }
        pthread_mutex_unlock(&rt.mu);
        if (st != MODAL_OK)
            rt_hreq_error(r, http_status_for(st), st, "%s", err.message);
        else
            send_json(r, 201, j);
        return;
    }
    char id[64];
    const char *slash = split_id(rest, id, sizeof id);
    if (slash == NULL) {
        rt_hreq_error(r, 404, MODAL_ENOTFOUND, "no such map \"%.64s\"", rest);
        return;
    }
    const char *want = strcmp(slash, "/results") == 0 ? "GET"
                     : strcmp(slash, "/inputs") == 0 ? "POST"
                     : *slash == '\0' ? "DELETE" : NULL;
    if (want == NULL) {
        rt_hreq_error(r, 404, MODAL_ENOTFOUND, "no route %s /v1/maps/%.200s", method, rest);
        return;
    }
    if (strcmp(method, want) != 0) {
        rt_hreq_error(r, 405, MODAL_EINVAL, "use %s on /v1/maps/<id>%s, not %s", want, slash,
                      method);
        return;
    }
    if (strcmp(slash, "/results") == 0) {
        map_results(h, id);
        return;
    }
    pthread_mutex_lock(&rt.mu);
    rt_map *m = rt_map_find(id);
    if (m == NULL) {
        rt_hreq_error(r, 404, MODAL_ENOTFOUND, "no map %s on this runtime", id);
    } else if (strcmp(slash, "/inputs") == 0) {
        size_t accepted = 0;
        st = h->body ? rt_map_add_inputs(m, h->body, &accepted, &err)
                     : modal__fail(&err, MODAL_ECODEC, "POST .../inputs needs a bundle of input frames");
        if (st != MODAL_OK) {
            rt_hreq_error(r, http_status_for(st), st, "%s", err.message);
        } else {
            cJSON *j = cJSON_CreateObject();
            cJSON_AddNumberToObject(j, "accepted", (double)accepted);
            send_json(r, 202, j);
        }
    } else {
        rt_map_free(m);
        send_json(r, 200, cJSON_CreateObject());
    }
    pthread_mutex_unlock(&rt.mu);
}

static void handle_app_logs(rt_hreq *r, const char *rest)
{
    char app[160];
    const char *slash = strchr(rest, '/');
    size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
    if (slash == NULL || strcmp(slash, "/logs") != 0 || len == 0 || len >= sizeof app) {
        rt_hreq_error(r, 404, MODAL_ENOTFOUND, "use GET /v1/apps/<app>/logs");
        return;
    }
    if (strcmp(rt_hreq_method(r), "GET") != 0) {
        rt_hreq_error(r, 405, MODAL_EINVAL, "use GET on /v1/apps/<app>/logs, not %s",
                      rt_hreq_method(r));
        return;
    }
    memcpy(app, rest, len);
    app[len] = '\0';
    for (size_t i = 0; i < len; i++)
        if (!(app[i] == '-' || app[i] == '_' || app[i] == '.' || (app[i] >= '0' && app[i] <= '9') ||
              (app[i] >= 'a' && app[i] <= 'z') || (app[i] >= 'A' && app[i] <= 'Z')) ||
            strcmp(app, ".") == 0 || strcmp(app, "..") == 0) {
            rt_hreq_error(r, 400, MODAL_EINVAL, "\"%s\" is not an app name", app);
            return;
        }
    char path[700];
    snprintf(path, sizeof path, "%s/logs/%s.log", rt.state_dir, app);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        if (fd >= 0)
            close(fd);
        rt_hreq_error(r, 404, MODAL_ENOTFOUND, "no logs for app %s", app);
        return;
    }
    rt_hreq_send_fd(r, 200, "text/plain; charset=utf-8", NULL, fd, (size_t)sb.st_size);
}

static void route(hctx *h)
{
    rt_hreq *r = h->r;
    const char *url = rt_hreq_path(r);
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
    if (strcmp(url, "/v1/health") == 0)
        handle_health(r);
    else if (strncmp(url, "/v1/artifacts/", 14) == 0)
        handle_artifact(h, url + 14);
    else if (strcmp(url, "/v1/calls") == 0)
        handle_calls(h, "");
    else if (strncmp(url, "/v1/calls/", 10) == 0)
        handle_calls(h, url + 10);
    else if (strcmp(url, "/v1/maps") == 0)
        handle_maps(h, "");
    else if (strncmp(url, "/v1/maps/", 9) == 0)
        handle_maps(h, url + 9);
    else if (strncmp(url, "/v1/apps/", 9) == 0)
        handle_app_logs(r, url + 9);
    else if (strcmp(url, "/v1/functions") == 0)
        rt_http_functions(r, h->body);
    else
        rt_hreq_error(r, 404, MODAL_ENOTFOUND, "no route %s %.200s", rt_hreq_method(r), url);
}

static int token_ok(rt_hreq *r)
{
    size_t n;
    const char *h = rt_hreq_header(r, "Authorization", &n);
    if (h == NULL || n < 7 || strncmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    n -= 7;
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
                      "missing or wrong token: send \"Authorization: Bearer <token>\" with "
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
    const char *path = rt_hreq_path(r);
    if (strcmp(rt_hreq_method(r), "PUT") == 0 && strncmp(path, "/v1/artifacts/", 14) == 0 &&
        rt_valid_sha(path + 14)) {
        char err[1024];
        h->up = rt_upload_begin(path + 14, err, sizeof err);
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
    if (strncmp(rt_hreq_path(r), "/v1/artifacts/", 14) == 0)
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
    route(rt_hreq_user(r));
}

static void on_resume(rt_hreq *r)
{
    hctx *h = rt_hreq_user(r);
    if (h->kind == W_CALL)
        call_poll(h);
    else if (h->kind == W_MAP)
        map_poll(h);
}

static void on_free(rt_hreq *r)
{
    hctx *h = rt_hreq_user(r);
    if (h == NULL)
        return;
    /* h->on is read under rt.mu: rt_http_call_changed may be waking h on
     * another thread right now, and must be done with h before it goes. */
    if (h->kind != W_NONE) {
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
