/*
 * client.c: HTTP transport to a runtime (libcurl) through a connection
 * (lib/conn.c), and the upload of this process's executable.
 */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <dlfcn.h>

/*
 * libcurl is loaded when the first request is made, not linked: a worker
 * (this same program, started by the runtime) never talks HTTP, and
 * loading libcurl with its dependencies would add tens of milliseconds to
 * every worker's cold start.
 */
static struct {
    CURLcode (*pfn_global_init)(long flags);
    CURL *(*pfn_easy_init)(void);
    void (*pfn_easy_cleanup)(CURL *h);
    void (*pfn_easy_reset)(CURL *h);
    CURLcode (*pfn_easy_setopt)(CURL *h, CURLoption opt, ...);
    CURLcode (*pfn_easy_perform)(CURL *h);
    CURLcode (*pfn_easy_getinfo)(CURL *h, CURLINFO info, ...);
    const char *(*pfn_easy_strerror)(CURLcode rc);
    struct curl_slist *(*pfn_slist_append)(struct curl_slist *l, const char *s);
    void (*pfn_slist_free_all)(struct curl_slist *l);
} cu;
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static char curl_load_error[300];

static void curl_init_once(void)
{
    static const char *const names[] = {"libcurl.so.4", "libcurl-gnutls.so.4", "libcurl.so"};
    void *lib = NULL;
    for (size_t i = 0; i < sizeof names / sizeof *names && lib == NULL; i++)
        lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        snprintf(curl_load_error, sizeof curl_load_error, "%s", dlerror());
        return;
    }
#define LOAD(field, sym)                                                        \
    if ((*(void **)&cu.field = dlsym(lib, sym)) == NULL) {                      \
        snprintf(curl_load_error, sizeof curl_load_error, "libcurl lacks %s", sym); \
        memset(&cu, 0, sizeof cu);                                              \
        return;                                                                 \
    }
    LOAD(pfn_global_init, "curl_global_init");
    LOAD(pfn_easy_init, "curl_easy_init");
    LOAD(pfn_easy_cleanup, "curl_easy_cleanup");
    LOAD(pfn_easy_reset, "curl_easy_reset");
    LOAD(pfn_easy_setopt, "curl_easy_setopt");
    LOAD(pfn_easy_perform, "curl_easy_perform");
    LOAD(pfn_easy_getinfo, "curl_easy_getinfo");
    LOAD(pfn_easy_strerror, "curl_easy_strerror");
    LOAD(pfn_slist_append, "curl_slist_append");
    LOAD(pfn_slist_free_all, "curl_slist_free_all");
#undef LOAD
    if (cu.pfn_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(curl_load_error, sizeof curl_load_error, "curl_global_init failed");
        memset(&cu, 0, sizeof cu);
    }
}

modal_status modal__status_from_name(const char *name)
{
    if (name == NULL)
        return MODAL_ERUNTIME;
    if (strcmp(name, "OK") == 0)
        return MODAL_OK;
    for (int c = 1; c < MODAL__STATUS_COUNT; c++)
        if (strcmp(modal_status_name((modal_status)c), name) == 0)
            return (modal_status)c;
    return MODAL_ERUNTIME;
}

static CURL *handle_get(modal_connection *conn)
{
    CURL *h = modal__conn_handle_take(conn);
    return h != NULL ? h : cu.pfn_easy_init();
}

static void handle_put(modal_connection *conn, CURL *h)
{
    if (!modal__conn_handle_give(conn, h))
        cu.pfn_easy_cleanup(h);
}

void modal__conn_handles_free(modal_connection *conn)
{
    /* Handles exist only once libcurl was loaded. */
    for (int i = 0; i < conn->nhandles; i++)
        cu.pfn_easy_cleanup(conn->handles[i]);
    conn->nhandles = 0;
}

/*
 * Response accumulation. The body is received straight into one buffer
 * sized from Content-Length when the runtime sends one: a result frame's
 * arrays then borrow from it, so the bytes of a large result are written
 * once, into the result array's own memory (a prefaulted or reused mapping
 * from MODAL__BIG_ALLOC up, see modal__buf_new). Without a length the
 * buffer grows by doubling.
 */
typedef struct recv_state {
    modal__buf *buf;
    size_t cap;
    long long log_size, seq;
    int oom;
} recv_state;

#define SMALL_BODY (64u << 10)

/* The number after a header's colon (sscanf's cost showed in the warm
 * call's profile). Returns 1 when there is one. The line ends in CRLF, so
 * strtoll stops inside it. */
static int header_num(const char *p, long long *out)
{
    char *end;
    long long v = strtoll(p, &end, 10);
    if (end == p)
        return 0;
    *out = v;
    return 1;
}

static size_t on_header(char *line, size_t size, size_t n, void *user)
{
    recv_state *rs = user;
    size_t len = size * n;
    long long v;
    if (len > 16 && strncasecmp(line, "Content-Length:", 15) == 0 &&
        header_num(line + 15, &v) && v > 0 && rs->buf == NULL &&
        (unsigned long long)v <= SIZE_MAX) {
        rs->buf = modal__buf_new((size_t)v);
        if (rs->buf == NULL)
            rs->oom = 1;
        else
            rs->buf->len = 0; /* capacity is the allocation; len grows */
        rs->cap = (size_t)v;
    } else if (len > sizeof MODAL__H_LOG_SIZE &&
               strncasecmp(line, MODAL__H_LOG_SIZE ":", sizeof MODAL__H_LOG_SIZE) == 0) {
        header_num(line + sizeof MODAL__H_LOG_SIZE, &rs->log_size);
    } else if (len > sizeof MODAL__H_SEQ &&
               strncasecmp(line, MODAL__H_SEQ ":", sizeof MODAL__H_SEQ) == 0) {
        header_num(line + sizeof MODAL__H_SEQ, &rs->seq);
    }
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
    recv_state *rs = user;
    size_t len = size * n;
    if (rs->oom)
        return 0;
    if (rs->buf == NULL || rs->buf->len + len > rs->cap) {
        /* No or wrong Content-Length: grow by doubling. */
        size_t cap = rs->buf != NULL ? rs->cap : 0;
        size_t need = (rs->buf != NULL ? rs->buf->len : 0) + len;
        size_t ncap = cap ? cap : 4096;
        while (ncap < need)
            ncap *= 2;
        if (rs->buf != NULL && rs->buf->kind == MODAL__BUF_HEAP) {
            uint8_t *nb = modal__realloc(rs->buf->base, ncap);
            if (nb == NULL) {
                rs->oom = 1;
                return 0;
            }
            rs->buf->base = nb;
        } else {
            /* A mapping cannot be realloc'd: move to a new buffer. */
            modal__buf *nb = modal__buf_new(ncap);
            if (nb == NULL) {
                rs->oom = 1;
                return 0;
            }
            nb->len = 0;
            if (rs->buf != NULL) {
                memcpy(nb->base, rs->buf->base, rs->buf->len);
                nb->len = rs->buf->len;
                modal__buf_unref(rs->buf);
            }
            rs->buf = nb;
        }
        rs->cap = ncap;
    }
    memcpy(rs->buf->base + rs->buf->len, data, len);
    rs->buf->len += len;
    return len;
}

typedef struct send_state {
    const modal__enc *enc;
    size_t off;
} send_state;

static size_t on_send(char *dst, size_t size, size_t n, void *user)
{
    send_state *ss = user;
    size_t got = modal__enc_read(ss->enc, ss->off, dst, size * n);
    ss->off += got;
    return got;
}

static int on_seek(void *user, curl_off_t offset, int origin)
{
    send_state *ss = user;
    if (origin != SEEK_SET || offset < 0 || (size_t)offset > ss->enc->total)
        return CURL_SEEKFUNC_FAIL;
    ss->off = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

void modal__http_resp_free(modal__http_resp *resp)
{
    modal__buf_unref(resp->body);
    resp->body = NULL;
}

/* Turn an error response's JSON into a status and message. */
static modal_status http_error(const modal__conn_settings *set, long status,
                               const modal__buf *body, const char *method, const char *path,
                               modal_error *err)
{
    modal_status code = status == 401 ? MODAL_EAUTH
                      : status == 404 ? MODAL_ENOTFOUND
                      : status == 413 ? MODAL_ELIMIT
                                      : MODAL_ERUNTIME;
    cJSON *j = body != NULL ? cJSON_ParseWithLength((const char *)body->base, body->len) : NULL;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    if (cJSON_IsString(c) && status != 401)
        code = modal__status_from_name(c->valuestring);
    if (code == MODAL_OK)
        code = MODAL_ERUNTIME;
    if (status == 401)
        modal__fail(err, code,
                    "the runtime at %s refused the token (HTTP 401 on %s %s); make %s "
                    "or %s match the runtime's token file", set->shown, method, path,
                    set->names->token, set->names->token_file);
    else if (cJSON_IsString(m))
        modal__fail(err, code, "%s", m->valuestring);
    else
        modal__fail(err, code, "the runtime answered %s %s with HTTP %ld", method, path, status);
    cJSON_Delete(j);
    return code;
}

/*
 * TLS to the runtime. A pin replaces the CA and host-name checks: the
 * runtime's certificate is usually its own self-signed one, and libcurl
 * compares the pin during the handshake, before any request (or token)
 * is sent.
 */
static CURLcode tls_setopts(CURL *h, const modal__conn_settings *c)
{
    if (strncmp(c->base, "https://", 8) != 0)
        return CURLE_OK;
    if (c->tls_pin[0] != '\0') {
        /* Verification is switched off only once libcurl took the pin: a
         * libcurl whose TLS library cannot pin (CURLE_NOT_BUILT_IN) would
         * otherwise check nothing and send the token to any server. */
        CURLcode rc = cu.pfn_easy_setopt(h, CURLOPT_PINNEDPUBLICKEY, c->tls_pin);
        if (rc != CURLE_OK)
            return rc;
        cu.pfn_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        cu.pfn_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    } else if (c->tls_ca[0] != '\0') {
        cu.pfn_easy_setopt(h, CURLOPT_CAINFO, c->tls_ca);
    }
    return CURLE_OK;
}

/*
 * The server presented a key other than the pinned one. Say which: one
 * more handshake, with verification off and nothing sent after it, yields
 * the server's certificate, whose pin is computed here.
 */
static modal_status pin_mismatch(const modal__conn_settings *c, modal_error *err)
{
    char actual[MODAL__PIN_SIZE] = "", why[MODAL_ERROR_MESSAGE_SIZE] = "";
    CURL *h = cu.pfn_easy_init();
    if (h != NULL) {
        cu.pfn_easy_setopt(h, CURLOPT_URL, c->base);
        cu.pfn_easy_setopt(h, CURLOPT_CONNECT_ONLY, 1L);
        cu.pfn_easy_setopt(h, CURLOPT_CERTINFO, 1L);
        cu.pfn_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        cu.pfn_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
        cu.pfn_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        cu.pfn_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
        CURLcode rc = cu.pfn_easy_perform(h);
        struct curl_certinfo *ci = NULL;
        if (rc != CURLE_OK)
            snprintf(why, sizeof why, "%s", cu.pfn_easy_strerror(rc));
        else if (cu.pfn_easy_getinfo(h, CURLINFO_CERTINFO, &ci) != CURLE_OK || ci == NULL ||
                 ci->num_of_certs < 1)
            snprintf(why, sizeof why, "libcurl gave no certificate");
        else
            for (struct curl_slist *l = ci->certinfo[0]; l != NULL; l = l->next)
                if (strncmp(l->data, "Cert:", 5) == 0) {
                    modal_error perr;
                    if (modal__pem_cert_pin(l->data + 5, actual, &perr) != MODAL_OK)
                        snprintf(why, sizeof why, "%s", perr.message);
                    break;
                }
        cu.pfn_easy_cleanup(h);
    }
    if (actual[0] == '\0' && why[0] == '\0')
        snprintf(why, sizeof why, "%s", h == NULL ? "out of memory" : "libcurl gave no certificate");
    if (actual[0] == '\0')
        return modal__fail(err, MODAL_EAUTH,
                           "the TLS key of the runtime at %s does not match "
                           "%s: expected %s, the server's fingerprint could "
                           "not be read (%s); nothing was sent", c->base, c->names->pin,
                           c->tls_pin, why);
    return modal__fail(err, MODAL_EAUTH,
                       "the TLS key of the runtime at %s does not match %s: "
                       "expected %s, the server presented %s; nothing was sent. If the "
                       "runtime's certificate changed on purpose, set %s to "
                       "its new \"tls fingerprint\"", c->base, c->names->pin, c->tls_pin, actual,
                       c->names->pin);
}

static int transient(CURLcode rc)
{
    return rc == CURLE_COULDNT_CONNECT || rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR ||
           rc == CURLE_GOT_NOTHING || rc == CURLE_PARTIAL_FILE;
}

static struct curl_slist *make_headers(const char *auth, const char *ctype)
{
    /* "Expect:" stops curl from waiting for 100-continue before a body. */
    const char *lines[] = {auth, "Expect:", ctype};
    struct curl_slist *hdrs = NULL, *h1;
    for (size_t i = 0; i < 3; i++)
        if ((h1 = cu.pfn_slist_append(hdrs, lines[i])) != NULL)
            hdrs = h1;
    return hdrs;
}

static modal_status http_snap(modal_connection *conn, modal__conn_snap *snap,
                              const modal__http_req *req, modal__http_resp *resp,
                              modal_error *err)
{
    const modal__conn_settings *c = &snap->s;
    modal_status st;
    char url[1200], auth[300];
    snprintf(url, sizeof url, "%s%s", c->base, req->path);
    snprintf(auth, sizeof auth, MODAL__H_AUTH ": " MODAL__AUTH_BEARER "%s", snap->token);
    char ctype[128];
    snprintf(ctype, sizeof ctype, MODAL__H_CTYPE ": %s",
             req->content_type != NULL ? req->content_type : MODAL__CT_BINARY);
    struct curl_slist *hdrs = make_headers(auth, ctype);

    /* Transient failures (runtime restarting, connection reset, 503) are
     * retried with backoff as the connection's policy says (by default
     * about 2.4 s in all); requests are idempotent because calls carry
     * client-chosen ids. */
    CURLcode rc = CURLE_OK;
    long status = 0;
    recv_state rs;
    char *small_body = NULL;
    if (req->enc != NULL && req->enc->total <= SMALL_BODY) {
        small_body = modal__malloc(req->enc->total ? req->enc->total : 1);
        if (small_body == NULL) {
            cu.pfn_slist_free_all(hdrs);
            free(small_body);
            return modal__fail(err, MODAL_ENOMEM, "out of memory sending %s %s", req->method,
                               req->path);
        }
        modal__enc_read(req->enc, 0, small_body, req->enc->total);
    }
    char curl_err[CURL_ERROR_SIZE];
    for (int attempt = 0;; attempt++) {
        CURL *h = handle_get(conn);
        if (h == NULL) {
            cu.pfn_slist_free_all(hdrs);
            free(small_body);
            return modal__fail(err, MODAL_ENOMEM, "out of memory creating an HTTP handle");
        }
        memset(&rs, 0, sizeof rs);
        rs.log_size = rs.seq = -1;
        send_state ss = {req->enc, 0};
        FILE *f = NULL;
        curl_err[0] = '\0';
        cu.pfn_easy_reset(h);
        cu.pfn_easy_setopt(h, CURLOPT_URL, url);
        if (c->unix_path[0] != '\0')
            cu.pfn_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->unix_path);
        CURLcode trc = tls_setopts(h, c);
        if (trc != CURLE_OK) {
            handle_put(conn, h);
            cu.pfn_slist_free_all(hdrs);
            free(small_body);
            return modal__fail(err, MODAL_ETRANSPORT,
                               "the libcurl this program loaded cannot check "
                               "%s=\"%s\" (%s), so nothing was sent to %s; "
                               "install a libcurl built with OpenSSL or GnuTLS (libcurl4), or "
                               "unset %s and set %s", c->names->pin,
                               c->tls_pin, cu.pfn_easy_strerror(trc), c->base, c->names->pin,
                               c->names->ca);
        }
        cu.pfn_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        cu.pfn_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        cu.pfn_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
        cu.pfn_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
        cu.pfn_easy_setopt(h, CURLOPT_TIMEOUT, req->timeout > 0 ? req->timeout : 120L);
        cu.pfn_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
        /* Large buffers: bulk arrays move in big writes and reads. */
        cu.pfn_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, 2L << 20);
        cu.pfn_easy_setopt(h, CURLOPT_BUFFERSIZE, 512L << 10);
        cu.pfn_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        cu.pfn_easy_setopt(h, CURLOPT_HEADERDATA, &rs);
        cu.pfn_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        cu.pfn_easy_setopt(h, CURLOPT_WRITEDATA, &rs);
        if (strcmp(req->method, "HEAD") == 0) {
            cu.pfn_easy_setopt(h, CURLOPT_NOBODY, 1L);
        } else if (strcmp(req->method, "GET") != 0) {
            cu.pfn_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
            if (small_body != NULL) {
                /* Small frames go out as one buffer, so headers and body
                 * leave in a single write and wake the runtime once. */
                cu.pfn_easy_setopt(h, CURLOPT_POSTFIELDS, small_body);
                cu.pfn_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->enc->total);
            } else if (req->enc != NULL) {
                cu.pfn_easy_setopt(h, CURLOPT_UPLOAD, 1L);
                cu.pfn_easy_setopt(h, CURLOPT_READFUNCTION, on_send);
                cu.pfn_easy_setopt(h, CURLOPT_READDATA, &ss);
                cu.pfn_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
                cu.pfn_easy_setopt(h, CURLOPT_SEEKDATA, &ss);
                cu.pfn_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->enc->total);
            } else if (req->file != NULL) {
                f = fopen(req->file, "rbe");
                struct stat sb;
                if (f == NULL || fstat(fileno(f), &sb) != 0) {
                    int e = errno;
                    if (f != NULL)
                        fclose(f);
                    handle_put(conn, h);
                    cu.pfn_slist_free_all(hdrs);
                    free(small_body);
                    return modal__fail(err, MODAL_EIO, "cannot read %s to upload it: %s",
                                       req->file, strerror(e));
                }
                cu.pfn_easy_setopt(h, CURLOPT_UPLOAD, 1L);
                cu.pfn_easy_setopt(h, CURLOPT_READDATA, f);
                cu.pfn_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)sb.st_size);
            } else {
                cu.pfn_easy_setopt(h, CURLOPT_POSTFIELDS, req->body != NULL ? req->body : "");
                cu.pfn_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
            }
        }
        rc = cu.pfn_easy_perform(h);
        if (f != NULL)
            fclose(f);
        status = 0;
        if (rc == CURLE_OK)
            cu.pfn_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        handle_put(conn, h);
        if (rs.oom) {
            modal__buf_unref(rs.buf);
            cu.pfn_slist_free_all(hdrs);
            free(small_body);
            return modal__fail(err, MODAL_ENOMEM, "out of memory receiving the answer to %s %s",
                               req->method, req->path);
        }
        int retry_after = 0;
        if (rc == CURLE_OK && status == 503)
            retry_after = 1;
        if (rc == CURLE_COULDNT_CONNECT && c->embedded_dir[0] != '\0' && attempt == 0) {
            /* The embedded runtime went away (idle exit, or stopped): start
             * it again before retrying. A new runtime may have made a new
             * token. */
            st = modal__conn_embedded_restart(conn, snap, err);
            snprintf(auth, sizeof auth, MODAL__H_AUTH ": " MODAL__AUTH_BEARER "%s", snap->token);
            cu.pfn_slist_free_all(hdrs);
            hdrs = make_headers(auth, ctype);
            if (st != MODAL_OK) {
                modal__buf_unref(rs.buf);
                cu.pfn_slist_free_all(hdrs);
                free(small_body);
                return st;
            }
        }
        if ((transient(rc) || retry_after) && attempt < c->retries) {
            modal__buf_unref(rs.buf);
            rs.buf = NULL;
            double delay = c->retry_delay * (double)(1 << (attempt < 4 ? attempt : 4));
            struct timespec ts = {(time_t)delay, (long)((delay - (double)(time_t)delay) * 1e9)};
            nanosleep(&ts, NULL);
            continue;
        }
        break;
    }
    cu.pfn_slist_free_all(hdrs);
    free(small_body);
    if (rc != CURLE_OK) {
        modal__buf_unref(rs.buf);
        const char *where = c->unix_path[0] != '\0' ? c->unix_path : c->base;
        if (rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH)
            return pin_mismatch(c, err);
        if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE)
            return modal__fail(err, MODAL_ETRANSPORT,
                               "cannot verify the TLS certificate of the runtime at %s: %s; for "
                               "the runtime's own self-signed certificate set "
                               "%s to its \"tls fingerprint\" (also in "
                               "<state>/tls/fingerprint), for a private CA set %s",
                               where, curl_err[0] ? curl_err : cu.pfn_easy_strerror(rc),
                               c->names->pin, c->names->ca);
        if (rc == CURLE_OPERATION_TIMEDOUT)
            return modal__fail(err, MODAL_ETRANSPORT,
                               "the runtime at %s did not answer %s %s within %ld s",
                               where, req->method, req->path, req->timeout);
        return modal__fail(err, MODAL_ETRANSPORT,
                           "cannot reach the runtime at %s for %s %s: %s; is modal-runtime "
                           "running there?", where, req->method, req->path,
                           curl_err[0] ? curl_err : cu.pfn_easy_strerror(rc));
    }
    resp->status = status;
    resp->body = rs.buf;
    resp->log_size = rs.log_size;
    resp->seq = rs.seq;
    if (status >= 400) {
        st = http_error(c, status, rs.buf, req->method, req->path, err);
        modal__http_resp_free(resp);
        return st;
    }
    return MODAL_OK;
}

static modal_status http_on(modal_connection *conn, const modal__http_req *req,
                            modal__http_resp *resp, modal_error *err)
{
    memset(resp, 0, sizeof *resp);
    resp->log_size = resp->seq = -1;
    pthread_once(&curl_once, curl_init_once);
    if (cu.pfn_easy_init == NULL)
        return modal__fail(err, MODAL_ETRANSPORT,
                           "cannot load libcurl, which libmodal uses to reach the runtime (%s); "
                           "install libcurl4", curl_load_error);

    /* A snapshot of the connection: nothing below holds its lock while
     * talking to the runtime. */
    modal__conn_snap snap;
    modal_status st = modal__conn_snapshot(conn, &snap, err);
    return st != MODAL_OK ? st : http_snap(conn, &snap, req, resp, err);
}

modal_status modal__http(modal_connection *conn, const modal__http_req *req,
                         modal__http_resp *resp, modal_error *err)
{
    /* The request holds the connection, so a close in another thread
     * while it runs frees nothing under it. */
    modal_connection *c = modal__conn_acquire(conn);
    modal_status st = http_on(c, req, resp, err);
    modal__conn_release(c);
    return st;
}

/* ---- the executable as an artifact ------------------------------------ */

/* The executable's hash is a fact of this process, computed once; whether
 * it is on a runtime is the connection's to know. */
static pthread_mutex_t sha_lock = PTHREAD_MUTEX_INITIALIZER;
static char art_sha[65];

bool modal__artifact_refused(modal_connection *conn, modal_status st, const modal_error *err,
                             const char *sha)
{
    if ((st != MODAL_ENOTFOUND && st != MODAL_EIO) || err == NULL || sha == NULL ||
        strstr(err->message, sha) == NULL)
        return false;
    modal_connection *c = modal__conn_acquire(conn);
    modal__conn_artifact_forget(c);
    modal__conn_release(c);
    return st == MODAL_ENOTFOUND;
}

static modal_status self_sha(modal_error *err)
{
    pthread_mutex_lock(&sha_lock);
    modal_status st = MODAL_OK;
    if (art_sha[0] == '\0')
        st = modal__sha256_file("/proc/self/exe", art_sha, err);
    pthread_mutex_unlock(&sha_lock);
    return st;
}

modal_status modal__artifact_ensure(modal_connection *conn, const char **sha, modal_error *err)
{
    modal_status st = self_sha(err);
    *sha = art_sha;
    if (st != MODAL_OK)
        return st;
    modal_connection *c = modal__conn_acquire(conn);
    /* The default connection may have just been pointed elsewhere. */
    if ((st = modal__conn_refresh(c, err)) != MODAL_OK) {
        modal__conn_release(c);
        return st;
    }
    if (modal__conn_artifact_known(c)) {
        modal__conn_release(c);
        return MODAL_OK;
    }
    /* One upload at a time per connection: threads that start calling at
     * once wait for the first one's upload instead of sending their own. */
    pthread_mutex_lock(&c->art_lock);
    unsigned long gen = modal__conn_generation(c);
    if (!modal__conn_artifact_known(c)) {
        char path[128];
        snprintf(path, sizeof path, MODAL__PATH_ARTIFACTS "/%s", art_sha);
        modal__http_req head = {.method = "HEAD", .path = path, .timeout = 30};
        modal__http_resp resp;
        modal_error herr;
        st = modal__http(c, &head, &resp, &herr);
        modal__http_resp_free(&resp);
        if (st == MODAL_ENOTFOUND) {
            modal__http_req put = {.method = "PUT", .path = path, .file = "/proc/self/exe",
                                   .timeout = 600};
            st = modal__http(c, &put, &resp, err);
            modal__http_resp_free(&resp);
            if (st == MODAL_OK)
                modal__log(MODAL_LOG_INFO, "uploaded this executable as %s to %s", art_sha,
                           modal__conn_url(c));
        } else if (st != MODAL_OK && err != NULL) {
            *err = herr;
        }
        if (st == MODAL_OK)
            modal__conn_artifact_mark(c, gen);
    }
    pthread_mutex_unlock(&c->art_lock);
    modal__conn_release(c);
    return st;
}
