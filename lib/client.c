/*
 * client.c: HTTP transport to the runtime (libcurl), its configuration
 * from the environment, and the upload of this process's executable.
 */
#include "internal.h"

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
 * The connection settings, re-read when the environment changes so a
 * program (or a test) may point at another runtime between calls.
 */
typedef struct conn_config {
    char url_env[512];      /* MODAL_RUNTIME_URL as read ("" when unset) */
    char token_env[256];    /* MODAL_TOKEN as read */
    char token_file[512];   /* MODAL_TOKEN_FILE as read */
    char tls_pin[512];      /* MODAL_TLS_FINGERPRINT as read: "sha256//..." pins */
    char tls_ca[512];       /* MODAL_TLS_CA as read: a CA bundle file */
    char base[512];         /* "http://host:port" or "http://localhost" */
    char unix_path[512];    /* socket path, "" for TCP */
    char token[256];
    char embedded_dir[512]; /* non-empty for the embedded runtime */
    int valid;
} conn_config;

static pthread_mutex_t cfg_lock = PTHREAD_MUTEX_INITIALIZER;
static conn_config cfg;
static char url_shown[600];

/* Handles kept for reuse: each keeps its connection to the runtime open. */
#define POOL_MAX 16
static CURL *handle_pool[POOL_MAX];
static int handle_count;
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

static const char *env_or_empty(const char *name)
{
    const char *v = getenv(name);
    return v != NULL ? v : "";
}

static modal_status read_token_file(const char *path, char *out, size_t outsz,
                                    modal_error *err)
{
    /* The same checks as the runtime's: a token others can read is no secret. */
    return modal__token_file_read(path, out, outsz, NULL, err);
}

/* Fill cfg from the environment (caller holds cfg_lock). */
static modal_status load_config(modal_error *err)
{
    const char *url = env_or_empty("MODAL_RUNTIME_URL");
    const char *tok = env_or_empty("MODAL_TOKEN");
    const char *tokf = env_or_empty("MODAL_TOKEN_FILE");
    const char *pin = env_or_empty("MODAL_TLS_FINGERPRINT");
    const char *ca = env_or_empty("MODAL_TLS_CA");
    if (cfg.valid && strcmp(url, cfg.url_env) == 0 && strcmp(tok, cfg.token_env) == 0 &&
        strcmp(tokf, cfg.token_file) == 0 && strcmp(pin, cfg.tls_pin) == 0 &&
        strcmp(ca, cfg.tls_ca) == 0)
        return MODAL_OK;
    conn_config c;
    memset(&c, 0, sizeof c);
    if (strlen(url) >= sizeof c.url_env || strlen(tok) >= sizeof c.token_env ||
        strlen(tokf) >= sizeof c.token_file)
        return modal__fail(err, MODAL_EINVAL,
                           "MODAL_RUNTIME_URL, MODAL_TOKEN or MODAL_TOKEN_FILE is too long");
    strcpy(c.url_env, url);
    strcpy(c.token_env, tok);
    strcpy(c.token_file, tokf);
    if (strlen(pin) >= sizeof c.tls_pin || strlen(ca) >= sizeof c.tls_ca) {
        bool long_pin = strlen(pin) >= sizeof c.tls_pin;
        const char *v = long_pin ? pin : ca;
        return modal__fail(err, MODAL_EINVAL, "%s=\"%.200s...\" is %zu bytes long; at most %zu "
                           "are accepted", long_pin ? "MODAL_TLS_FINGERPRINT" : "MODAL_TLS_CA", v,
                           strlen(v), (long_pin ? sizeof c.tls_pin : sizeof c.tls_ca) - 1);
    }
    strcpy(c.tls_pin, pin);
    strcpy(c.tls_ca, ca);
    if (pin[0] != '\0') {
        modal_status st = modal__pin_check(pin, err);
        if (st != MODAL_OK)
            return st;
    }
    if (ca[0] != '\0' && access(ca, R_OK) != 0)
        return modal__fail(err, MODAL_EINVAL, "MODAL_TLS_CA=\"%s\": cannot read it: %s; give a "
                           "PEM file of the CA that signed the runtime's certificate", ca,
                           strerror(errno));
    if ((pin[0] != '\0' || ca[0] != '\0') && strncmp(url, "http://", 7) == 0)
        return modal__fail(err, MODAL_EINVAL,
                           "%s is set but MODAL_RUNTIME_URL=\"%s\" is plain HTTP, where it "
                           "would protect nothing; use https://HOST:PORT",
                           pin[0] != '\0' ? "MODAL_TLS_FINGERPRINT" : "MODAL_TLS_CA", url);
    if (url[0] == '\0') {
        modal_status st = modal__embedded_dir(c.embedded_dir, sizeof c.embedded_dir, err);
        if (st != MODAL_OK)
            return st;
        if ((size_t)snprintf(c.unix_path, sizeof c.unix_path, "%s/runtime.sock",
                             c.embedded_dir) >= 108)
            return modal__fail(err, MODAL_EINVAL,
                               "the runtime socket path %s/runtime.sock is longer than a Unix "
                               "socket allows (107 bytes); set MODAL_HOME to a shorter directory",
                               c.embedded_dir);
        strcpy(c.base, "http://localhost");
    } else if (strncmp(url, "unix:", 5) == 0) {
        if (url[5] != '/' || strlen(url + 5) >= 108)
            return modal__fail(err, MODAL_EINVAL,
                               "MODAL_RUNTIME_URL=\"%s\": after \"unix:\" give an absolute socket "
                               "path of at most 107 bytes", url);
        snprintf(c.unix_path, sizeof c.unix_path, "%s", url + 5);
        strcpy(c.base, "http://localhost");
    } else if (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0) {
        snprintf(c.base, sizeof c.base, "%s", url);
        size_t n = strlen(c.base);
        while (n > 0 && c.base[n - 1] == '/')
            c.base[--n] = '\0';
    } else {
        return modal__fail(err, MODAL_EINVAL,
                           "MODAL_RUNTIME_URL=\"%s\" is not understood; use unix:/path/to.sock, "
                           "https://host:port or http://host:port", url);
    }
    c.valid = 1;
    cfg = c;
    return MODAL_OK;
}

/* Token lookup is separate: the embedded runtime creates its token when
 * it starts, after the configuration is known. */
static modal_status load_token(modal_error *err)
{
    if (cfg.token[0] != '\0')
        return MODAL_OK;
    if (cfg.token_env[0] != '\0') {
        snprintf(cfg.token, sizeof cfg.token, "%s", cfg.token_env);
        return MODAL_OK;
    }
    char path[600];
    if (cfg.token_file[0] != '\0')
        snprintf(path, sizeof path, "%s", cfg.token_file);
    else if (cfg.embedded_dir[0] != '\0')
        snprintf(path, sizeof path, "%s/token", cfg.embedded_dir);
    else
        return modal__fail(err, MODAL_EAUTH,
                           "no token for the runtime at %s: set MODAL_TOKEN or MODAL_TOKEN_FILE",
                           cfg.url_env);
    return read_token_file(path, cfg.token, sizeof cfg.token, err);
}

const char *modal_runtime_url(void)
{
    pthread_mutex_lock(&cfg_lock);
    modal_error err;
    if (load_config(&err) != MODAL_OK)
        snprintf(url_shown, sizeof url_shown, "(invalid: %s)", err.message);
    else if (cfg.unix_path[0] != '\0')
        snprintf(url_shown, sizeof url_shown, "unix:%s", cfg.unix_path);
    else
        snprintf(url_shown, sizeof url_shown, "%s", cfg.base);
    pthread_mutex_unlock(&cfg_lock);
    return url_shown;
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

static CURL *handle_get(void)
{
    CURL *h = NULL;
    pthread_mutex_lock(&cfg_lock);
    if (handle_count > 0)
        h = handle_pool[--handle_count];
    pthread_mutex_unlock(&cfg_lock);
    return h != NULL ? h : cu.pfn_easy_init();
}

static void handle_put(CURL *h)
{
    pthread_mutex_lock(&cfg_lock);
    if (handle_count < POOL_MAX) {
        handle_pool[handle_count++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&cfg_lock);
    if (h != NULL)
        cu.pfn_easy_cleanup(h);
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
    } else if (len > 17 && strncasecmp(line, "X-Modal-Log-Size:", 17) == 0) {
        header_num(line + 17, &rs->log_size);
    } else if (len > 12 && strncasecmp(line, "X-Modal-Seq:", 12) == 0) {
        header_num(line + 12, &rs->seq);
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
static modal_status http_error(long status, const modal__buf *body, const char *method,
                               const char *path, modal_error *err)
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
                    "the runtime at %s refused the token (HTTP 401 on %s %s); make MODAL_TOKEN "
                    "or MODAL_TOKEN_FILE match the runtime's token file", modal_runtime_url(),
                    method, path);
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
static CURLcode tls_setopts(CURL *h, const conn_config *c)
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
static modal_status pin_mismatch(const conn_config *c, modal_error *err)
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
                           "MODAL_TLS_FINGERPRINT: expected %s, the server's fingerprint could "
                           "not be read (%s); nothing was sent", c->base, c->tls_pin, why);
    return modal__fail(err, MODAL_EAUTH,
                       "the TLS key of the runtime at %s does not match MODAL_TLS_FINGERPRINT: "
                       "expected %s, the server presented %s; nothing was sent. If the "
                       "runtime's certificate changed on purpose, set MODAL_TLS_FINGERPRINT to "
                       "its new \"tls fingerprint\"", c->base, c->tls_pin, actual);
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

modal_status modal__http(const modal__http_req *req, modal__http_resp *resp,
                         modal_error *err)
{
    memset(resp, 0, sizeof *resp);
    resp->log_size = resp->seq = -1;
    pthread_once(&curl_once, curl_init_once);
    if (cu.pfn_easy_init == NULL)
        return modal__fail(err, MODAL_ETRANSPORT,
                           "cannot load libcurl, which libmodal uses to reach the runtime (%s); "
                           "install libcurl4", curl_load_error);

    pthread_mutex_lock(&cfg_lock);
    modal_status st = load_config(err);
    conn_config c = cfg;
    pthread_mutex_unlock(&cfg_lock);
    if (st != MODAL_OK)
        return st;
    /* The embedded runtime is looked for (and started) on first use, and
     * again only after a request could not connect. */
    static int embedded_seen;
    if (c.embedded_dir[0] != '\0' && !__atomic_load_n(&embedded_seen, __ATOMIC_ACQUIRE)) {
        if ((st = modal__embedded_ensure(c.embedded_dir, c.unix_path, err)) != MODAL_OK)
            return st;
        __atomic_store_n(&embedded_seen, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_lock(&cfg_lock);
    st = load_token(err);
    c = cfg;
    pthread_mutex_unlock(&cfg_lock);
    if (st != MODAL_OK)
        return st;

    char url[1200], auth[300];
    snprintf(url, sizeof url, "%s%s", c.base, req->path);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", c.token);
    char ctype[128];
    snprintf(ctype, sizeof ctype, "Content-Type: %s",
             req->content_type != NULL ? req->content_type : "application/octet-stream");
    struct curl_slist *hdrs = make_headers(auth, ctype);

    /* Transient failures (runtime restarting, connection reset, 503) are
     * retried with backoff, about 2.4 s in all; requests are idempotent
     * because calls carry client-chosen ids. */
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
        CURL *h = handle_get();
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
        if (c.unix_path[0] != '\0')
            cu.pfn_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c.unix_path);
        CURLcode trc = tls_setopts(h, &c);
        if (trc != CURLE_OK) {
            handle_put(h);
            cu.pfn_slist_free_all(hdrs);
            free(small_body);
            return modal__fail(err, MODAL_ETRANSPORT,
                               "the libcurl this program loaded cannot check "
                               "MODAL_TLS_FINGERPRINT=\"%s\" (%s), so nothing was sent to %s; "
                               "install a libcurl built with OpenSSL or GnuTLS (libcurl4), or "
                               "unset MODAL_TLS_FINGERPRINT and set MODAL_TLS_CA",
                               c.tls_pin, cu.pfn_easy_strerror(trc), c.base);
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
                    handle_put(h);
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
        handle_put(h);
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
        if (rc == CURLE_COULDNT_CONNECT && c.embedded_dir[0] != '\0' && attempt == 0) {
            /* The embedded runtime went away (idle exit, or stopped): start
             * it again before retrying. */
            modal_error eerr;
            if (modal__embedded_ensure(c.embedded_dir, c.unix_path, &eerr) != MODAL_OK) {
                modal__buf_unref(rs.buf);
                cu.pfn_slist_free_all(hdrs);
                free(small_body);
                if (err != NULL)
                    *err = eerr;
                return eerr.code;
            }
            /* A new runtime may have made a new token. */
            pthread_mutex_lock(&cfg_lock);
            cfg.token[0] = '\0';
            st = load_token(err);
            snprintf(auth, sizeof auth, "Authorization: Bearer %s", cfg.token);
            pthread_mutex_unlock(&cfg_lock);
            cu.pfn_slist_free_all(hdrs);
            hdrs = make_headers(auth, ctype);
            if (st != MODAL_OK) {
                modal__buf_unref(rs.buf);
                cu.pfn_slist_free_all(hdrs);
                free(small_body);
                return st;
            }
        }
        if ((transient(rc) || retry_after) && attempt < 6) {
            modal__buf_unref(rs.buf);
            rs.buf = NULL;
            struct timespec ts = {0, (long)(50000000L << (attempt < 4 ? attempt : 4))};
            nanosleep(&ts, NULL);
            continue;
        }
        break;
    }
    cu.pfn_slist_free_all(hdrs);
    free(small_body);
    if (rc != CURLE_OK) {
        modal__buf_unref(rs.buf);
        const char *where = c.unix_path[0] != '\0' ? c.unix_path : c.base;
        if (rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH)
            return pin_mismatch(&c, err);
        if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE)
            return modal__fail(err, MODAL_ETRANSPORT,
                               "cannot verify the TLS certificate of the runtime at %s: %s; for "
                               "the runtime's own self-signed certificate set "
                               "MODAL_TLS_FINGERPRINT to its \"tls fingerprint\" (also in "
                               "<state>/tls/fingerprint), for a private CA set MODAL_TLS_CA",
                               where, curl_err[0] ? curl_err : cu.pfn_easy_strerror(rc));
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
        st = http_error(status, rs.buf, req->method, req->path, err);
        modal__http_resp_free(resp);
        return st;
    }
    return MODAL_OK;
}

/* ---- the executable as an artifact ------------------------------------ */

static pthread_mutex_t art_lock = PTHREAD_MUTEX_INITIALIZER;
static char art_sha[65];
static char art_uploaded_to[600]; /* runtime URL it was last uploaded to */

bool modal__artifact_refused(modal_status st, const modal_error *err, const char *sha)
{
    if ((st != MODAL_ENOTFOUND && st != MODAL_EIO) || err == NULL || sha == NULL ||
        strstr(err->message, sha) == NULL)
        return false;
    pthread_mutex_lock(&art_lock);
    art_uploaded_to[0] = '\0';
    pthread_mutex_unlock(&art_lock);
    return st == MODAL_ENOTFOUND;
}

modal_status modal__artifact_ensure(const char **sha, modal_error *err)
{
    pthread_mutex_lock(&art_lock);
    modal_status st = MODAL_OK;
    if (art_sha[0] == '\0')
        st = modal__sha256_file("/proc/self/exe", art_sha, err);
    const char *url = modal_runtime_url();
    if (st == MODAL_OK && strcmp(art_uploaded_to, url) != 0) {
        char path[128];
        snprintf(path, sizeof path, "/v1/artifacts/%s", art_sha);
        modal__http_req head = {.method = "HEAD", .path = path, .timeout = 30};
        modal__http_resp resp;
        modal_error herr;
        st = modal__http(&head, &resp, &herr);
        modal__http_resp_free(&resp);
        if (st == MODAL_ENOTFOUND) {
            modal__http_req put = {.method = "PUT", .path = path, .file = "/proc/self/exe",
                                   .timeout = 600};
            st = modal__http(&put, &resp, err);
            modal__http_resp_free(&resp);
            if (st == MODAL_OK)
                modal__log(MODAL_LOG_INFO, "uploaded this executable as %s", art_sha);
        } else if (st != MODAL_OK && err != NULL) {
            *err = herr;
        }
        if (st == MODAL_OK)
            snprintf(art_uploaded_to, sizeof art_uploaded_to, "%s", url);
    }
    pthread_mutex_unlock(&art_lock);
    *sha = art_sha;
    return st;
}
