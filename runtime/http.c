/*
 * http.c: the HTTP API on libmicrohttpd, one thread per connection so a
 * long poll simply waits on rt.cv. Every request is authenticated before
 * its body is read; errors are JSON naming what was wrong.
 */
#include "rt.h"

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
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#define MAX_DAEMONS 8
#define MEMFD_BODY_MIN (1u << 20) /* bodies this large go to a memfd */
#define MAX_QUEUED 2000000        /* beyond this, 503 */

static struct MHD_Daemon *daemons[MAX_DAEMONS];
static char unix_paths[MAX_DAEMONS][108];
static int ndaemons;

typedef struct conn {
    modal__buf *body;
    size_t cap;
    int body_fd;            /* large bodies: a memfd of body_len bytes */
    size_t body_len;
    size_t expect;          /* Content-Length, 0 if absent */
    int over;               /* body larger than allowed or announced */
    int up_fd;              /* artifact upload temp file */
    char up_tmp[700];
    EVP_MD_CTX *md;
} conn;

/* ---- responses ------------------------------------------------------ */

static enum MHD_Result send_response(struct MHD_Connection *con, unsigned status,
                                     struct MHD_Response *r, const char *ctype)
{
    if (r == NULL)
        return MHD_NO;
    if (ctype != NULL)
        MHD_add_response_header(r, "Content-Type", ctype);
    if (status == 503)
        MHD_add_response_header(r, "Retry-After", "1");
    enum MHD_Result ok = MHD_queue_response(con, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result send_json(struct MHD_Connection *con, unsigned status, cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (s == NULL)
        return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    return send_response(con, status, r, "application/json");
}

static unsigned http_status_for(modal_status st)
{
    switch (st) {
    case MODAL_ENOTFOUND: return 404;
    case MODAL_EAUTH: return 401;
    case MODAL_ELIMIT: return 413;
    case MODAL_ENOMEM: return 503;
    case MODAL_EWORKER: case MODAL_EGPU: case MODAL_EOPTION: return 422;
    default: return 400;
    }
}

static enum MHD_Result send_error(struct MHD_Connection *con, unsigned status, modal_status code,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(struct MHD_Connection *con, unsigned status, modal_status code,
                                  const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *j = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(e, "code", modal_status_name(code));
    cJSON_AddStringToObject(e, "message", msg);
    return send_json(con, status, j);
}

static void unref_cb(void *cls)
{
    modal__buf_unref(cls);
}

/* Send buf (a reference is taken and dropped once sent). */
static enum MHD_Result send_buf(struct MHD_Connection *con, unsigned status, modal__buf *b,
                                const char *ctype, const char *hname, long long hval)
{
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback_cls(
        b->len, b->base, unref_cb, modal__buf_ref(b));
    if (r == NULL) {
        modal__buf_unref(b);
        return MHD_NO;
    }
    if (hname != NULL) {
        char v[32];
        snprintf(v, sizeof v, "%lld", hval);
        MHD_add_response_header(r, hname, v);
    }
    return send_response(con, status, r, ctype);
}

/* ---- request bodies --------------------------------------------------- */

static int body_append(conn *c, const char *data, size_t n)
{
    if (c->over)
        return 0;
    size_t have = c->body_fd >= 0 ? c->body_len : c->body ? c->body->len : 0;
    if (have + n > rt.max_body || (c->expect && have + n > c->expect)) {
        c->over = 1;
        return 0;
    }
    if (c->body_fd >= 0 || (c->body == NULL && c->expect >= MEMFD_BODY_MIN)) {
        /* Large bodies are written to a memfd the worker maps directly:
         * write() fills fresh pages far faster than faulting them in
         * through a mapping. */
        if (c->body_fd < 0 && (c->body_fd = modal__memfd_new("modal-body", 0)) < 0)
            return -1;
        while (n > 0) {
            ssize_t w = write(c->body_fd, data, n);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return -1;
            data += w;
            n -= (size_t)w;
            c->body_len += (size_t)w;
        }
        return 0;
    }
    if (c->body == NULL) {
        {
            c->cap = c->expect ? c->expect : 4096;
            c->body = modal__buf_new(c->cap);
            if (c->body == NULL)
                return -1;
        }
        c->body->len = 0;
    }
    if (c->body->len + n > c->cap) {
        size_t ncap = c->cap * 2;
        while (ncap < c->body->len + n)
            ncap *= 2;
        uint8_t *nb = realloc(c->body->base, ncap);
        if (nb == NULL)
            return -1;
        c->body->base = nb;
        c->cap = ncap;
    }
    memcpy(c->body->base + c->body->len, data, n);
    c->body->len += n;
    return 0;
}

/* ---- handlers --------------------------------------------------------- */

static const char *arg(struct MHD_Connection *con, const char *name)
{
    return MHD_lookup_connection_value(con, MHD_GET_ARGUMENT_KIND, name);
}

/* Parse a number query argument within [lo, hi]; dflt when absent. */
static int num_arg(struct MHD_Connection *con, const char *name, double lo, double hi,
                   double dflt, double *out)
{
    const char *v = arg(con, name);
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

static void cond_wait_until(double deadline)
{
    double left = deadline - rt_now();
    if (left <= 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double t = (double)ts.tv_sec + ts.tv_nsec / 1e9 + left;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(&rt.cv, &rt.mu, &ts);
}

/* Answer with the call's result, or 202 and new output once wait runs out
 * or output beyond log_offset appears. Called with rt.mu held. */
static enum MHD_Result answer_call(struct MHD_Connection *con, rt_call *c, double wait,
                                   long long log_offset)
{
    double deadline = rt_now() + wait;
    c->waiters++;
    while (c->state != RT_DONE && (long long)c->logs_len <= log_offset && !rt.stopping &&
           rt_now() < deadline)
        cond_wait_until(deadline);
    c->waiters--;
    if (c->state == RT_DONE && c->result == NULL)
        return send_error(con, 503, MODAL_ENOMEM,
                          "call %s finished (%s) but the runtime ran out of memory storing its "
                          "result", c->id, modal_status_name(c->status));
    if (c->state == RT_DONE && c->result != NULL) {
        if (c->fetched_at == 0)
            c->fetched_at = rt_now();
        if (c->result_fd >= 0) {
            /* A large result goes out with sendfile from its memfd. */
            int fd = dup(c->result_fd);
            struct MHD_Response *r = fd >= 0 ? MHD_create_response_from_fd64(c->result->len, fd)
                                             : NULL;
            if (r == NULL && fd >= 0)
                close(fd);
            if (r != NULL) {
                char v[32];
                snprintf(v, sizeof v, "%zu", c->logs_len);
                MHD_add_response_header(r, "X-Modal-Log-Size", v);
            }
            return send_response(con, 200, r, "application/x-modal-frame");
        }
        return send_buf(con, 200, c->result, "application/x-modal-frame", "X-Modal-Log-Size",
                        (long long)c->logs_len);
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "call_id", c->id);
    cJSON_AddStringToObject(j, "state", state_name(c));
    cJSON_AddNumberToObject(j, "attempt", c->attempt);
    cJSON_AddNumberToObject(j, "log_size", (double)c->logs_len);
    if ((long long)c->logs_len > log_offset && log_offset >= 0)
        cJSON_AddStringToObject(j, "logs", c->logs + log_offset);
    return send_json(con, 202, j);
}

static enum MHD_Result handle_health(struct MHD_Connection *con)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "ok", 1);
    cJSON_AddStringToObject(j, "version", MODAL_VERSION_STRING);
    cJSON_AddNumberToObject(j, "pid", getpid());
    cJSON_AddStringToObject(j, "state_dir", rt.state_dir);
    pthread_mutex_lock(&rt.mu);
    cJSON_AddNumberToObject(j, "workers", rt.running_workers);
    cJSON_AddNumberToObject(j, "calls", (double)rt.ncalls);
    pthread_mutex_unlock(&rt.mu);
    cJSON_AddNumberToObject(j, "gpus", 0);
    return send_json(con, 200, j);
}

static enum MHD_Result handle_artifact(struct MHD_Connection *con, const char *method,
                                       const char *sha, conn *c)
{
    if (!rt_valid_sha(sha))
        return send_error(con, 400, MODAL_EINVAL, "\"%.80s\" is not a SHA-256 (64 hex digits)", sha);
    if (strcmp(method, "HEAD") == 0 || strcmp(method, "GET") == 0) {
        if (!rt_artifact_exists(sha))
            return send_error(con, 404, MODAL_ENOTFOUND, "artifact %s is not stored", sha);
        return send_json(con, 200, cJSON_CreateObject());
    }
    if (strcmp(method, "PUT") != 0)
        return send_error(con, 405, MODAL_EINVAL, "use HEAD or PUT on /v1/artifacts/<sha256>");
    unsigned char digest[32];
    unsigned dlen = 0;
    char hex[65];
    EVP_DigestFinal_ex(c->md, digest, &dlen);
    for (int i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02x", digest[i]);
    int fd = c->up_fd;
    c->up_fd = -1;
    if (strcmp(hex, sha) != 0) {
        close(fd);
        unlink(c->up_tmp);
        return send_error(con, 400, MODAL_EINVAL,
                          "the uploaded bytes hash to %s, not %s; the upload was discarded", hex, sha);
    }
    char path[600];
    rt_artifact_path(sha, path, sizeof path);
    bool existed = rt_artifact_exists(sha);
    int ok = fchmod(fd, 0755) == 0 && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(c->up_tmp, path) != 0) {
        unlink(c->up_tmp);
        return send_error(con, 503, MODAL_EIO, "cannot store artifact %s: %s", sha, strerror(errno));
    }
    if (!existed)
        rt_log(1, "stored artifact %s", sha);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "artifact", sha);
    return send_json(con, existed ? 200 : 201, j);
}

static enum MHD_Result handle_calls(struct MHD_Connection *con, const char *method,
                                    const char *rest, conn *cc)
{
    double wait;
    if (num_arg(con, "wait", 0, 60, 0, &wait) != 0)
        return send_error(con, 400, MODAL_EINVAL, "\"wait\" must be a number of seconds from 0 to 60");
    if (rest[0] == '\0') {
        if (strcmp(method, "POST") != 0)
            return send_error(con, 405, MODAL_EINVAL, "use POST /v1/calls to start a call");
        if (cc->body == NULL)
            return send_error(con, 400, MODAL_ECODEC, "POST /v1/calls needs a call frame as its body");
        modal_error err;
        rt_call *c;
        pthread_mutex_lock(&rt.mu);
        if (rt.stopping || rt.ncalls > MAX_QUEUED) {
            pthread_mutex_unlock(&rt.mu);
            return send_error(con, 503, MODAL_ERUNTIME, "the runtime is %s; try again",
                              rt.stopping ? "shutting down" : "overloaded");
        }
        modal_status st = rt_call_submit(cc->body, cc->body_fd, cc->body->len, &c, &err);
        if (st != MODAL_OK) {
            pthread_mutex_unlock(&rt.mu);
            return send_error(con, http_status_for(st), st, "%s", err.message);
        }
        enum MHD_Result r = answer_call(con, c, wait, 0);
        pthread_mutex_unlock(&rt.mu);
        return r;
    }
    char id[64];
    const char *slash = split_id(rest, id, sizeof id);
    if (slash == NULL)
        return send_error(con, 404, MODAL_ENOTFOUND, "no such call \"%.64s\"", rest);
    pthread_mutex_lock(&rt.mu);
    rt_call *c = rt_call_find(id);
    if (c == NULL) {
        pthread_mutex_unlock(&rt.mu);
        return send_error(con, 404, MODAL_ENOTFOUND,
                          "no call %s on this runtime (unknown, or its result expired)", id);
    }
    enum MHD_Result r;
    double off;
    if (strcmp(slash, "/logs") == 0 && strcmp(method, "GET") == 0) {
        if (num_arg(con, "offset", 0, 1e15, 0, &off) != 0) {
            r = send_error(con, 400, MODAL_EINVAL, "\"offset\" must be a byte offset");
        } else {
            size_t o = (size_t)off < c->logs_len ? (size_t)off : c->logs_len;
            struct MHD_Response *resp = MHD_create_response_from_buffer(
                c->logs_len - o, c->logs ? c->logs + o : "", MHD_RESPMEM_MUST_COPY);
            r = send_response(con, 200, resp, "text/plain; charset=utf-8");
        }
    } else if (*slash != '\0') {
        r = send_error(con, 404, MODAL_ENOTFOUND, "no route %s /v1/calls/%s", method, rest);
    } else if (strcmp(method, "GET") == 0) {
        if (num_arg(con, "log_offset", 0, 1e15, 0, &off) != 0)
            r = send_error(con, 400, MODAL_EINVAL, "\"log_offset\" must be a byte offset");
        else
            r = answer_call(con, c, wait, (long long)off);
    } else if (strcmp(method, "DELETE") == 0) {
        rt_call_cancel(c);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "call_id", c->id);
        cJSON_AddStringToObject(j, "state", c->status == MODAL_ECANCELLED ? "cancelled" : "done");
        r = send_json(con, 200, j);
    } else {
        r = send_error(con, 405, MODAL_EINVAL, "use GET or DELETE on /v1/calls/<id>");
    }
    pthread_mutex_unlock(&rt.mu);
    return r;
}


static enum MHD_Result map_results(struct MHD_Connection *con, const char *id)
{
    double after, wait;
    if (num_arg(con, "after", 0, 1e15, 0, &after) != 0 || num_arg(con, "wait", 0, 60, 0, &wait) != 0)
        return send_error(con, 400, MODAL_EINVAL,
                          "\"after\" must be a sequence number and \"wait\" 0 to 60 seconds");
    double deadline = rt_now() + wait;
    pthread_mutex_lock(&rt.mu);
    rt_map *m = rt_map_find(id);
    if (m != NULL)
        rt_map_ack(m, (long long)after);
    while (m != NULL && m->done_head == NULL && !rt.stopping && rt_now() < deadline) {
        cond_wait_until(deadline);
        m = rt_map_find(id); /* it may have been deleted meanwhile */
    }
    if (m == NULL) {
        pthread_mutex_unlock(&rt.mu);
        return send_error(con, 404, MODAL_ENOTFOUND, "no map %s on this runtime", id);
    }
    m->touched = rt_now();
    size_t n = 0, bytes = 0;
    long long last = (long long)after;
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
    if (st != MODAL_OK)
        return send_error(con, 503, MODAL_ENOMEM, "runtime out of memory");
    enum MHD_Result r = send_buf(con, 200, b, "application/x-modal-bundle", "X-Modal-Seq", last);
    modal__buf_unref(b);
    return r;
}

static enum MHD_Result handle_maps(struct MHD_Connection *con, const char *method,
                                   const char *rest, conn *cc)
{
    modal_error err;
    modal_status st;
    if (rest[0] == '\0') {
        if (strcmp(method, "POST") != 0 || cc->body == NULL)
            return send_error(con, 400, MODAL_EINVAL, "POST /v1/maps needs a map frame as its body");
        rt_map *m;
        pthread_mutex_lock(&rt.mu);
        if (rt.stopping) {
            pthread_mutex_unlock(&rt.mu);
            return send_error(con, 503, MODAL_ERUNTIME, "the runtime is shutting down; try again");
        }
        st = rt_map_create(cc->body, &m, &err);
        cJSON *j = NULL;
        if (st == MODAL_OK) {
            j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "map_id", m->id);
        }
        pthread_mutex_unlock(&rt.mu);
        if (st != MODAL_OK)
            return send_error(con, http_status_for(st), st, "%s", err.message);
        return send_json(con, 201, j);
    }
    char id[64];
    const char *slash = split_id(rest, id, sizeof id);
    if (slash == NULL)
        return send_error(con, 404, MODAL_ENOTFOUND, "no such map \"%.64s\"", rest);
    if (strcmp(slash, "/results") == 0 && strcmp(method, "GET") == 0)
        return map_results(con, id);
    pthread_mutex_lock(&rt.mu);
    rt_map *m = rt_map_find(id);
    enum MHD_Result r;
    if (m == NULL) {
        r = send_error(con, 404, MODAL_ENOTFOUND, "no map %s on this runtime", id);
    } else if (strcmp(slash, "/inputs") == 0 && strcmp(method, "POST") == 0) {
        size_t accepted = 0;
        st = cc->body ? rt_map_add_inputs(m, cc->body, &accepted, &err)
                      : modal__fail(&err, MODAL_ECODEC, "POST .../inputs needs a bundle of input frames");
        if (st != MODAL_OK) {
            r = send_error(con, http_status_for(st), st, "%s", err.message);
        } else {
            cJSON *j = cJSON_CreateObject();
            cJSON_AddNumberToObject(j, "accepted", (double)accepted);
            r = send_json(con, 202, j);
        }
    } else if (*slash == '\0' && strcmp(method, "DELETE") == 0) {
        rt_map_free(m);
        r = send_json(con, 200, cJSON_CreateObject());
    } else {
        r = send_error(con, 404, MODAL_ENOTFOUND, "no route %s /v1/maps/%s", method, rest);
    }
    pthread_mutex_unlock(&rt.mu);
    return r;
}

static enum MHD_Result handle_app_logs(struct MHD_Connection *con, const char *rest)
{
    char app[160];
    const char *slash = strchr(rest, '/');
    size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
    if (slash == NULL || strcmp(slash, "/logs") != 0 || len == 0 || len >= sizeof app)
        return send_error(con, 404, MODAL_ENOTFOUND, "use GET /v1/apps/<app>/logs");
    memcpy(app, rest, len);
    app[len] = '\0';
    for (size_t i = 0; i < len; i++)
        if (!(app[i] == '-' || app[i] == '_' || app[i] == '.' || (app[i] >= '0' && app[i] <= '9') ||
              (app[i] >= 'a' && app[i] <= 'z') || (app[i] >= 'A' && app[i] <= 'Z')) ||
            strcmp(app, ".") == 0 || strcmp(app, "..") == 0)
            return send_error(con, 400, MODAL_EINVAL, "\"%s\" is not an app name", app);
    char path[700];
    snprintf(path, sizeof path, "%s/logs/%s.log", rt.state_dir, app);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        if (fd >= 0)
            close(fd);
        return send_error(con, 404, MODAL_ENOTFOUND, "no logs for app %s", app);
    }
    struct MHD_Response *r = MHD_create_response_from_fd64((uint64_t)sb.st_size, fd);
    return send_response(con, 200, r, "text/plain; charset=utf-8");
}

static enum MHD_Result route(struct MHD_Connection *con, const char *url, const char *method,
                             conn *c)
{
    if (c->body_fd >= 0 && c->body == NULL && !c->over) {
        /* Sealed before it is mapped or passed on, so nobody can shrink it
         * under a mapping. Only the envelope at its start is read here; the
         * mapping faults in just those pages. */
        if (modal__memfd_seal(c->body_fd) != 0)
            return send_error(con, 503, MODAL_EIO, "cannot seal a %zu-byte body: %s",
                              c->body_len, strerror(errno));
        c->body = modal__buf_map_fd(c->body_fd, c->body_len, 0);
        if (c->body == NULL)
            return send_error(con, 503, MODAL_ENOMEM, "cannot map a %zu-byte body: %s",
                              c->body_len, strerror(errno));
    }
    if (c->over)
        return send_error(con, 413, MODAL_ELIMIT,
                          "request body is larger than %zu bytes (the runtime's --max-body) or than "
                          "its Content-Length", rt.max_body);
    if (strcmp(url, "/v1/health") == 0)
        return handle_health(con);
    if (strncmp(url, "/v1/artifacts/", 14) == 0)
        return handle_artifact(con, method, url + 14, c);
    if (strcmp(url, "/v1/calls") == 0)
        return handle_calls(con, method, "", c);
    if (strncmp(url, "/v1/calls/", 10) == 0)
        return handle_calls(con, method, url + 10, c);
    if (strcmp(url, "/v1/maps") == 0)
        return handle_maps(con, method, "", c);
    if (strncmp(url, "/v1/maps/", 9) == 0)
        return handle_maps(con, method, url + 9, c);
    if (strncmp(url, "/v1/apps/", 9) == 0 && strcmp(method, "GET") == 0)
        return handle_app_logs(con, url + 9);
    return send_error(con, 404, MODAL_ENOTFOUND, "no route %s %.200s", method, url);
}

static int token_ok(struct MHD_Connection *con)
{
    const char *h = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Authorization");
    if (h == NULL || strncmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    size_t n = strlen(h), m = strlen(rt.token);
    /* Compare in constant time over the expected length. */
    return n == m && CRYPTO_memcmp(h, rt.token, m) == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls)
{
    conn *c = *con_cls;
    if (c == NULL) {
        c = calloc(1, sizeof *c);
        if (c == NULL)
            return MHD_NO;
        c->body_fd = c->up_fd = -1;
        *con_cls = c;
        if (!token_ok(con))
            return send_error(con, 401, MODAL_EAUTH,
                              "missing or wrong token: send \"Authorization: Bearer <token>\" with "
                              "the token from the runtime's token file");
        const char *cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Length");
        if (cl != NULL) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (end == cl || *end != '\0' || errno != 0)
                return send_error(con, 400, MODAL_EINVAL, "Content-Length \"%.40s\" is not a number", cl);
            if (v > rt.max_body)
                return send_error(con, 413, MODAL_ELIMIT,
                                  "request body of %llu bytes is larger than %zu bytes (the "
                                  "runtime's --max-body)", v, rt.max_body);
            c->expect = (size_t)v;
        }
        if (strcmp(method, "PUT") == 0 && strncmp(url, "/v1/artifacts/", 14) == 0 &&
            rt_valid_sha(url + 14)) {
            char rnd[40];
            modal__random_id(".up-", rnd, sizeof rnd);
            snprintf(c->up_tmp, sizeof c->up_tmp, "%s/artifacts/%s", rt.state_dir, rnd);
            c->up_fd = open(c->up_tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            c->md = EVP_MD_CTX_new();
            if (c->up_fd < 0 || c->md == NULL || EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1)
                return send_error(con, 503, MODAL_EIO, "cannot store an upload under %s: %s",
                                  rt.state_dir, strerror(errno));
        }
        return MHD_YES;
    }
    if (*data_size > 0) {
        if (c->up_fd >= 0) {
            const char *p = data;
            size_t left = *data_size;
            while (left > 0) {
                ssize_t w = write(c->up_fd, p, left);
                if (w <= 0 && errno != EINTR) {
                    c->over = 0;
                    break;
                }
                if (w > 0)
                    p += w, left -= (size_t)w;
            }
            EVP_DigestUpdate(c->md, data, *data_size);
        } else if (body_append(c, data, *data_size) < 0) {
            *data_size = 0;
            return MHD_NO; /* out of memory: drop the connection */
        }
        *data_size = 0;
        return MHD_YES;
    }
    return route(con, url, method, c);
}

static void on_completed(void *cls, struct MHD_Connection *con, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    conn *c = *con_cls;
    if (c == NULL)
        return;
    if (c->up_fd >= 0) {
        /* An upload that did not finish leaves nothing behind. */
        close(c->up_fd);
        unlink(c->up_tmp);
    }
    EVP_MD_CTX_free(c->md);
    modal__buf_unref(c->body);
    if (c->body_fd >= 0)
        close(c->body_fd);
    free(c);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    rt_log(2, "http: %s", buf);
}

int rt_http_start(const char *listen_spec, char *err, size_t errsz)
{
    if (ndaemons == MAX_DAEMONS) {
        snprintf(err, errsz, "at most %d --listen addresses", MAX_DAEMONS);
        return -1;
    }
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
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        mode_t old = umask(0177);
        int ok = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 128) == 0;
        umask(old);
        if (!ok) {
            snprintf(err, errsz, "--listen %s: %s", listen_spec, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        snprintf(unix_paths[ndaemons], sizeof unix_paths[0], "%s", path);
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
        if ((ntohl(sa.sin_addr.s_addr) >> 24) != 127)
            rt_log(2, "listening on %s without TLS: the token travels in clear text; keep this "
                   "network trusted", listen_spec);
        sa.sin_port = htons((uint16_t)port);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd >= 0)
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 128) != 0) {
            snprintf(err, errsz, "--listen %s: %s", listen_spec, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        socklen_t sl = sizeof sa;
        getsockname(fd, (struct sockaddr *)&sa, &sl);
        snprintf(shown, sizeof shown, "tcp:%s:%d", host, ntohs(sa.sin_port));
    } else {
        snprintf(err, errsz, "--listen \"%s\": use unix:/path/to.sock or tcp:HOST:PORT", listen_spec);
        return -1;
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG, 0,
        NULL, NULL, on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300, MHD_OPTION_CONNECTION_LIMIT, (unsigned)512,
        /* The per-connection pool is cleared between requests: 64 KiB
         * keeps that cheap while bodies still arrive in large reads. */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64u << 10),
        MHD_OPTION_END);
    if (d == NULL) {
        snprintf(err, errsz, "--listen %s: the HTTP server did not start", listen_spec);
        close(fd);
        return -1;
    }
    daemons[ndaemons++] = d;
    printf("listening %s\n", shown);
    fflush(stdout);
    rt_log(1, "listening %s", shown);
    rt_set_listen_url(shown); /* workers' nested calls come back here */
    return 0;
}

void rt_http_stop(void)
{
    for (int i = 0; i < ndaemons; i++) {
        MHD_stop_daemon(daemons[i]);
        if (unix_paths[i][0] != '\0')
            unlink(unix_paths[i]);
    }
    ndaemons = 0;
}
