/*
 * harness.h: what every integration test includes. It starts the real
 * modal-runtime in a temporary state directory on a free loopback port,
 * points libmodal at it through MODAL_RUNTIME_URL and MODAL_TOKEN, and
 * stops it again; it also speaks raw HTTP to the runtime (libcurl) for
 * protocol-level tests, and runs child processes with their output captured
 * (examples, and this very binary in a "child mode").
 *
 * An integration test binary is itself the worker executable the runtime
 * starts, so its main() must call modal_worker_serve_if_worker(argc, argv)
 * before anything else; in worker mode that call never returns.
 *
 * Everything here is static: each test program is one translation unit.
 */
#ifndef MODAL_HARNESS_H
#define MODAL_HARNESS_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "internal.h"
#include "modal.h"

extern char **environ;

#define HARNESS_FN static __attribute__((unused))

/* How long the runtime may take to print its listening line. */
#define HARNESS_START_SECONDS 10.0
/* How long SIGTERM may take before the harness sends SIGKILL. */
#define HARNESS_STOP_SECONDS 10.0

/* ------------------------------------------------------------------ */
/* Assertions                                                          */
/* ------------------------------------------------------------------ */

/* Assert that a modal call returned `expected`, printing the error if not. */
#define assert_status(st, expected, err)                                       \
    do {                                                                       \
        modal_status st_ = (st);                                               \
        if (st_ != (expected)) {                                               \
            print_error("%s:%d: got %s (\"%s\"), expected %s\n", __FILE__,     \
                        __LINE__, modal_status_name(st_), (err).message,      \
                        modal_status_name(expected));                          \
            fail();                                                            \
        }                                                                      \
    } while (0)

/* Assert that a modal call succeeded, printing the error if not. */
#define assert_ok(st, err) assert_status((st), MODAL_OK, (err))

/* Assert that the string hay contains needle, printing both if not. */
#define assert_contains(hay, needle)                                           \
    do {                                                                       \
        const char *hay_ = (hay), *needle_ = (needle);                         \
        if (hay_ == NULL || strstr(hay_, needle_) == NULL) {                   \
            print_error("%s:%d: \"%s\" lacks \"%s\"\n", __FILE__, __LINE__,    \
                        hay_ ? hay_ : "(null)", needle_);                      \
            fail();                                                            \
        }                                                                      \
    } while (0)

/* Assert that err's message contains needle. */
#define assert_message_contains(err, needle)                                   \
    assert_contains((err).message, (needle))

/* ------------------------------------------------------------------ */
/* Small utilities                                                     */
/* ------------------------------------------------------------------ */

/* Monotonic time in seconds. */
HARNESS_FN double harness_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleep for s seconds (restarting after signals). */
HARNESS_FN void harness_sleep(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* The absolute path of this executable, in a static buffer. */
HARNESS_FN const char *harness_self_exe(void)
{
    static char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    path[n > 0 ? (size_t)n : 0] = '\0';
    return path;
}

/*
 * A path next to this executable's directory: harness_sibling("../examples/
 * hello") from build/tests/test_x gives build/tests/../examples/hello.
 */
HARNESS_FN void harness_sibling(const char *rel, char *out, size_t outsz)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", harness_self_exe());
    char *slash = strrchr(dir, '/');
    if (slash != NULL)
        *slash = '\0';
    int n = snprintf(out, outsz, "%s/%s", dir, rel);
    if (n < 0 || (size_t)n >= outsz)
        out[0] = '\0';
}

/* Read a whole (small) file into a new NUL-terminated buffer, or NULL. */
HARNESS_FN char *harness_read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf != NULL) {
        buf[len] = '\0';
        if (len_out != NULL)
            *len_out = len;
    }
    return buf;
}

static int harness_rm_cb(const char *path, const struct stat *st, int flag,
                         struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    if (remove(path) != 0 && errno != ENOENT)
        fprintf(stderr, "harness: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

/* rm -rf dir (does not follow symlinks). */
HARNESS_FN void harness_rmtree(const char *dir)
{
    if (dir != NULL && dir[0] != '\0')
        nftw(dir, harness_rm_cb, 32, FTW_DEPTH | FTW_PHYS);
}

/*
 * Wait up to `seconds` for child pid to exit; returns its wait status, or -1
 * if it is still running (or is not our child).
 */
HARNESS_FN int harness_wait_pid(pid_t pid, double seconds)
{
    double deadline = harness_now() + seconds;
    for (;;) {
        int ws = 0;
        pid_t r = waitpid(pid, &ws, WNOHANG);
        if (r == pid)
            return ws;
        if (r < 0 && errno != EINTR)
            return -1;
        if (harness_now() >= deadline)
            return -1;
        harness_sleep(0.01);
    }
}

/* Whether a process exists (a zombie of ours is reaped first). */
HARNESS_FN bool harness_pid_alive(pid_t pid)
{
    int ws;
    if (waitpid(pid, &ws, WNOHANG) == pid)
        return false;
    return kill(pid, 0) == 0 || errno == EPERM;
}

/* ------------------------------------------------------------------ */
/* The runtime under test                                              */
/* ------------------------------------------------------------------ */

typedef struct harness {
    char dir[PATH_MAX];   /* temporary state directory */
    char url[PATH_MAX + 16]; /* "http://127.0.0.1:PORT" or "unix:/path" */
    char token[256];
    int port;
    pid_t pid;            /* the runtime, 0 once gone */
    int out_fd;           /* read end of the runtime's stdout */
    pthread_t drain;      /* forwards the runtime's stdout to our stderr */
    bool drain_started;
    volatile bool drain_stop;
} harness;

/* The runtime binary: $MODAL_RUNTIME_BIN, else ../modal-runtime beside us. */
HARNESS_FN const char *harness_runtime_bin(void)
{
    static char path[PATH_MAX];
    const char *env = getenv("MODAL_RUNTIME_BIN");
    if (env != NULL && env[0] != '\0')
        return env;
    harness_sibling("../modal-runtime", path, sizeof path);
    return path;
}

static void *harness_drain_main(void *arg)
{
    harness *h = arg;
    char buf[4096];
    while (!h->drain_stop) {
        struct pollfd p = {h->out_fd, POLLIN, 0};
        int r = poll(&p, 1, 100);
        if (r <= 0)
            continue;
        ssize_t n = read(h->out_fd, buf, sizeof buf);
        if (n <= 0)
            break;
        fprintf(stderr, "[modal-runtime] %.*s", (int)n, buf);
    }
    return NULL;
}

static pthread_once_t harness_curl_once = PTHREAD_ONCE_INIT;
static void harness_curl_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/*
 * Start the runtime with `--state-dir DIR --listen tcp:127.0.0.1:0` plus
 * extra_args (NULL-terminated, may be NULL), wait for its listening line and
 * token, and, when export_env, point libmodal at it (MODAL_RUNTIME_URL,
 * MODAL_TOKEN; MODAL_TOKEN_FILE is unset). Returns 0, or -1 after printing
 * why.
 */
/* Set only by harness_start_in: the state directory to start in. */
static const char *harness_reuse_dir;

HARNESS_FN int harness_start_with(harness *h, const char *const *extra_args,
                                  bool export_env)
{
    pthread_once(&harness_curl_once, harness_curl_init);
    memset(h, 0, sizeof *h);
    h->out_fd = -1;
    snprintf(h->dir, sizeof h->dir, "%s",
             harness_reuse_dir != NULL ? harness_reuse_dir : "/tmp/modal-it-XXXXXX");
    if (harness_reuse_dir == NULL && mkdtemp(h->dir) == NULL) {
        fprintf(stderr, "harness: mkdtemp: %s\n", strerror(errno));
        h->dir[0] = '\0';
        return -1;
    }
    const char *bin = harness_runtime_bin();
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "harness: runtime binary %s is not executable (%s); "
                        "build it with `make` or set MODAL_RUNTIME_BIN\n",
                bin, strerror(errno));
        return -1;
    }
    const char *argv[32];
    size_t argc = 0;
    argv[argc++] = bin;
    argv[argc++] = "--state-dir";
    argv[argc++] = h->dir;
    argv[argc++] = "--listen";
    argv[argc++] = "tcp:127.0.0.1:0";
    for (size_t i = 0; extra_args != NULL && extra_args[i] != NULL && argc < 31; i++)
        argv[argc++] = extra_args[i];
    argv[argc] = NULL;

    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        fprintf(stderr, "harness: pipe: %s\n", strerror(errno));
        return -1;
    }
    pid_t ppid_before = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "harness: fork: %s\n", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls until exec. If the test dies, its
         * runtime gets SIGTERM rather than living on as an orphan. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != ppid_before)
            _exit(127);
        dup2(pfd[1], 1);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    h->pid = pid;
    h->out_fd = pfd[0];

    /* Read stdout until "listening tcp:HOST:PORT" arrives. */
    char buf[8192];
    size_t len = 0;
    double deadline = harness_now() + HARNESS_START_SECONDS;
    while (h->port == 0) {
        double left = deadline - harness_now();
        if (left <= 0) {
            fprintf(stderr, "harness: %s printed no \"listening tcp:\" line "
                            "within %.0f s; it printed: %.*s\n",
                    bin, HARNESS_START_SECONDS, (int)len, buf);
            return -1;
        }
        struct pollfd p = {h->out_fd, POLLIN, 0};
        if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
            continue;
        ssize_t n = read(h->out_fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0) {
            int ws = harness_wait_pid(h->pid, 2.0);
            fprintf(stderr, "harness: %s closed its stdout before listening "
                            "(wait status 0x%x); it printed: %.*s\n",
                    bin, ws, (int)len, buf);
            if (ws != -1)
                h->pid = 0;
            return -1;
        }
        len += (size_t)n;
        buf[len] = '\0';
        char *line = strstr(buf, "listening tcp:");
        if (line != NULL && strchr(line, '\n') != NULL) {
            char *eol = strchr(line, '\n');
            *eol = '\0';
            char *colon = strrchr(line, ':');
            h->port = colon ? atoi(colon + 1) : 0;
            if (h->port <= 0 || h->port > 65535) {
                fprintf(stderr, "harness: cannot read a port from \"%s\"\n", line);
                return -1;
            }
        } else if (len == sizeof buf - 1) {
            len = 0; /* a flood of other output: keep looking */
        }
    }
    snprintf(h->url, sizeof h->url, "http://127.0.0.1:%d", h->port);

    /* The token file is written before the runtime listens; allow a moment
     * anyway so a slow filesystem does not fail the start. */
    char tpath[PATH_MAX + 8];
    snprintf(tpath, sizeof tpath, "%s/token", h->dir);
    char *tok = NULL;
    for (int i = 0; i < 200 && (tok = harness_read_file(tpath, NULL)) == NULL; i++)
        harness_sleep(0.01);
    if (tok == NULL) {
        fprintf(stderr, "harness: no token file at %s\n", tpath);
        return -1;
    }
    size_t tl = strcspn(tok, "\r\n \t");
    tok[tl] = '\0';
    snprintf(h->token, sizeof h->token, "%s", tok);
    free(tok);

    if (pthread_create(&h->drain, NULL, harness_drain_main, h) == 0)
        h->drain_started = true;

    if (export_env) {
        setenv("MODAL_RUNTIME_URL", h->url, 1);
        setenv("MODAL_TOKEN", h->token, 1);
        unsetenv("MODAL_TOKEN_FILE");
    }
    return 0;
}

/* Start the runtime and point libmodal at it. Returns 0 or -1. */
HARNESS_FN int harness_start(harness *h)
{
    return harness_start_with(h, NULL, true);
}

/* The runtime a test program's tests share. */
static harness rt;

HARNESS_FN int harness_stop(harness *h);

/* cmocka group setup: start rt, with worker output kept off the test log. */
HARNESS_FN int harness_group_setup(void **state)
{
    setenv("MODAL_QUIET_LOGS", "1", 1);
    return harness_start(&rt);
}

/* cmocka group teardown: stop rt and remove its state. */
HARNESS_FN int harness_group_teardown(void **state)
{
    harness_stop(&rt);
    return 0;
}

static void harness_release(harness *h)
{
    if (h->drain_started) {
        h->drain_stop = true;
        pthread_join(h->drain, NULL);
        h->drain_started = false;
    }
    if (h->out_fd >= 0) {
        close(h->out_fd);
        h->out_fd = -1;
    }
}

/*
 * Stop the runtime: SIGTERM, wait up to HARNESS_STOP_SECONDS, then SIGKILL;
 * remove the state directory. Returns the runtime's wait status (-1 if it
 * was already gone or never started).
 */
HARNESS_FN int harness_stop(harness *h)
{
    int ws = -1;
    if (h->pid > 0) {
        kill(h->pid, SIGTERM);
        ws = harness_wait_pid(h->pid, HARNESS_STOP_SECONDS);
        if (ws == -1) {
            fprintf(stderr, "harness: runtime %d ignored SIGTERM for %.0f s; "
                            "killing it\n", (int)h->pid, HARNESS_STOP_SECONDS);
            kill(h->pid, SIGKILL);
            harness_wait_pid(h->pid, HARNESS_STOP_SECONDS);
        }
        h->pid = 0;
    }
    harness_release(h);
    if (getenv("MODAL_TEST_KEEP_STATE") != NULL)
        fprintf(stderr, "harness: kept runtime state in %s\n", h->dir);
    else
        harness_rmtree(h->dir);
    h->dir[0] = '\0';
    return ws;
}

/* Kill the runtime with SIGKILL (no cleanup of its own), keep the state. */
HARNESS_FN void harness_kill(harness *h)
{
    if (h->pid > 0) {
        kill(h->pid, SIGKILL);
        harness_wait_pid(h->pid, HARNESS_STOP_SECONDS);
        h->pid = 0;
    }
}

/* ------------------------------------------------------------------ */
/* Raw HTTP                                                            */
/* ------------------------------------------------------------------ */

typedef struct harness_buf {
    char *p;
    size_t len, cap;
} harness_buf;

static size_t harness_curl_write(char *data, size_t size, size_t nmemb,
                                 void *user)
{
    harness_buf *b = user;
    size_t n = size * nmemb;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (np == NULL)
            return 0;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return n;
}

/*
 * One HTTP request to the runtime at base_url ("http://host:port" or
 * "unix:/path/to.sock"): method ("GET", "POST", "PUT", "DELETE", "HEAD"),
 * path ("/v1/health"), token (NULL: no Authorization header), body (NULL
 * for none; sent as application/x-modal-frame unless content_type says
 * otherwise). On return *status is the HTTP status (0 on a transport
 * failure) and *resp (if non-NULL) a malloc'd NUL-terminated body to free,
 * *resp_len (if non-NULL) its length. Returns the CURLcode.
 */
HARNESS_FN int harness_http_url(const char *base_url, const char *method,
                                const char *path, const char *token,
                                const void *body, size_t len,
                                const char *content_type, long *status,
                                char **resp, size_t *resp_len)
{
    pthread_once(&harness_curl_once, harness_curl_init);
    CURL *c = curl_easy_init();
    harness_buf b = {0};
    struct curl_slist *hdrs = NULL;
    char url[PATH_MAX + 512], auth[320], ctype[128];
    *status = 0;
    if (c == NULL)
        return CURLE_FAILED_INIT;
    if (strncmp(base_url, "unix:", 5) == 0) {
        curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, base_url + 5);
        snprintf(url, sizeof url, "http://localhost%s", path);
    } else {
        snprintf(url, sizeof url, "%s%s", base_url, path);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, harness_curl_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (token != NULL) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    /* No "Expect: 100-continue": the runtime answers at once. */
    hdrs = curl_slist_append(hdrs, "Expect:");
    if (body != NULL) {
        snprintf(ctype, sizeof ctype, "Content-Type: %s",
                 content_type ? content_type : "application/x-modal-frame");
        hdrs = curl_slist_append(hdrs, ctype);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    else
        fprintf(stderr, "harness: %s %s: %s\n", method, url, curl_easy_strerror(rc));
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    if (resp_len != NULL)
        *resp_len = b.len;
    if (resp != NULL) {
        if (b.p == NULL)
            b.p = calloc(1, 1);
        *resp = b.p;
    } else {
        free(b.p);
    }
    return (int)rc;
}

/* harness_http_url against h's runtime. */
HARNESS_FN int harness_http(harness *h, const char *method, const char *path,
                            const char *token, const void *body, size_t len,
                            long *status, char **resp, size_t *resp_len)
{
    return harness_http_url(h->url, method, path, token, body, len, NULL,
                            status, resp, resp_len);
}

/*
 * The runtime's error object in a JSON answer body: fills code and message
 * (empty strings when absent). Returns 0 when body is {"error":{...}}.
 */
HARNESS_FN int harness_json_error(const char *body, char *code, size_t codesz,
                                  char *message, size_t msgsz)
{
    int rc = -1;
    code[0] = message[0] = '\0';
    cJSON *j = cJSON_Parse(body ? body : "");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (cJSON_IsObject(e)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        if (cJSON_IsString(c))
            snprintf(code, codesz, "%s", c->valuestring);
        if (cJSON_IsString(m))
            snprintf(message, msgsz, "%s", m->valuestring);
        rc = 0;
    }
    cJSON_Delete(j);
    return rc;
}

/* The "pid" of GET /v1/health at base_url, or -1 (printing why). */
HARNESS_FN long harness_health_pid(const char *base_url, const char *token)
{
    long status = 0, pid = -1;
    char *body = NULL;
    harness_http_url(base_url, "GET", "/v1/health", token, NULL, 0, NULL,
                     &status, &body, NULL);
    cJSON *j = cJSON_Parse(body ? body : "");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "pid");
    if (status == 200 && cJSON_IsNumber(p))
        pid = (long)p->valuedouble;
    else
        fprintf(stderr, "harness: GET /v1/health at %s: status %ld, body %s\n",
                base_url, status, body ? body : "(none)");
    cJSON_Delete(j);
    free(body);
    return pid;
}

/* The SHA-256 of this executable as 64 hex digits in hex (65 bytes). */
HARNESS_FN int harness_self_sha256(char hex[65])
{
    size_t len = 0;
    char *exe = harness_read_file(harness_self_exe(), &len);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    hex[0] = '\0';
    if (exe == NULL)
        return -1;
    int ok = EVP_Digest(exe, len, md, &mdlen, EVP_sha256(), NULL);
    free(exe);
    if (!ok || mdlen != 32)
        return -1;
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/*
 * Make sure this executable is stored on h's runtime as an artifact (HEAD,
 * then PUT when missing), the way the client does before its first call.
 * Fills hex with its SHA-256. Returns 0, or -1 after printing why.
 */
HARNESS_FN int harness_upload_self(harness *h, char hex[65])
{
    char path[128];
    long status = 0;
    if (harness_self_sha256(hex) != 0) {
        fprintf(stderr, "harness: cannot hash %s\n", harness_self_exe());
        return -1;
    }
    snprintf(path, sizeof path, "/v1/artifacts/%s", hex);
    harness_http(h, "HEAD", path, h->token, NULL, 0, &status, NULL, NULL);
    if (status == 200)
        return 0;
    size_t len = 0;
    char *exe = harness_read_file(harness_self_exe(), &len);
    char *resp = NULL;
    if (exe == NULL)
        return -1;
    harness_http_url(h->url, "PUT", path, h->token, exe, len,
                     "application/octet-stream", &status, &resp, NULL);
    free(exe);
    if (status != 200 && status != 201) {
        fprintf(stderr, "harness: PUT %s: status %ld: %s\n", path, status,
                resp ? resp : "");
        free(resp);
        return -1;
    }
    free(resp);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Child processes                                                     */
/* ------------------------------------------------------------------ */

/*
 * Run argv (argv[0] a path) with this process's environment, stdout and
 * stderr captured together, for at most timeout_s seconds (then SIGKILL).
 * Returns the wait status (-1 if it could not start); *output (if non-NULL)
 * receives the captured output, malloc'd and NUL-terminated. Output is read
 * until the child exits, not until EOF, so a grandchild that keeps the pipe
 * open (a daemon it started) cannot hang the test.
 */
HARNESS_FN int harness_run(char *const argv[], double timeout_s, char **output)
{
    int pfd[2];
    harness_buf b = {0};
    if (output != NULL)
        *output = NULL;
    if (pipe2(pfd, O_CLOEXEC) != 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    if (rc != 0) {
        fprintf(stderr, "harness: cannot run %s: %s\n", argv[0], strerror(rc));
        close(pfd[0]);
        return -1;
    }
    double deadline = harness_now() + timeout_s;
    int ws = -1;
    bool eof = false, exited = false;
    double drain_until = 0;
    for (;;) {
        if (!exited) {
            pid_t r = waitpid(pid, &ws, WNOHANG);
            if (r == pid) {
                exited = true;
                drain_until = harness_now() + 0.5;
            }
        }
        if (exited && (eof || harness_now() >= drain_until))
            break;
        if (!exited && harness_now() >= deadline) {
            fprintf(stderr, "harness: %s ran past %.0f s; killing it\n",
                    argv[0], timeout_s);
            kill(pid, SIGKILL);
            waitpid(pid, &ws, 0);
            exited = true;
            drain_until = harness_now() + 0.5;
            continue;
        }
        if (eof) {
            harness_sleep(0.01);
            continue;
        }
        struct pollfd p = {pfd[0], POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        char chunk[4096];
        ssize_t n = read(pfd[0], chunk, sizeof chunk);
        if (n <= 0)
            eof = true;
        else
            harness_curl_write(chunk, 1, (size_t)n, &b);
    }
    close(pfd[0]);
    if (output != NULL)
        *output = b.p ? b.p : calloc(1, 1);
    else
        free(b.p);
    return ws;
}

/* Run this very executable with the given arguments (NULL-terminated). */
HARNESS_FN int harness_run_self(const char *const *args, double timeout_s,
                                char **output)
{
    char *argv[32];
    size_t n = 0;
    argv[n++] = (char *)harness_self_exe();
    for (size_t i = 0; args != NULL && args[i] != NULL && n < 31; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    return harness_run(argv, timeout_s, output);
}

/*
 * Count the live worker processes of the runtime whose state directory is
 * dir: processes whose /proc/PID/exe lies under dir (the artifact store),
 * or, for a sandbox that shows another path, whose executable is named
 * after sha (the artifact's name). Zombies do not count. A concurrent run
 * of this same test binary elsewhere would be counted too.
 */
HARNESS_FN size_t harness_count_workers(const char *dir, const char *sha)
{
    size_t n = 0;
    DIR *d = opendir("/proc");
    if (d == NULL)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end != '\0' || pid <= 0 || pid == (long)getpid())
            continue;
        char link[64], exe[PATH_MAX], stat_path[64];
        snprintf(link, sizeof link, "/proc/%ld/exe", pid);
        ssize_t len = readlink(link, exe, sizeof exe - 1);
        if (len <= 0)
            continue;
        exe[len] = '\0';
        const char *base = strrchr(exe, '/');
        base = base ? base + 1 : exe;
        bool ours = (dir[0] != '\0' && strncmp(exe, dir, strlen(dir)) == 0) ||
                    (sha[0] != '\0' && strncmp(base, sha, 64) == 0);
        if (!ours)
            continue;
        /* Skip zombies: field 3 of /proc/PID/stat is the state. */
        snprintf(stat_path, sizeof stat_path, "/proc/%ld/stat", pid);
        char *st = harness_read_file(stat_path, NULL);
        const char *rp = st ? strrchr(st, ')') : NULL;
        if (rp == NULL || (rp[1] == ' ' && rp[2] != 'Z'))
            n++;
        free(st);
    }
    closedir(d);
    return n;
}

/* Wait up to seconds for harness_count_workers(dir, sha) to reach 0;
 * returns the last count. */
HARNESS_FN size_t harness_wait_no_workers(const char *dir, const char *sha,
                                          double seconds)
{
    double deadline = harness_now() + seconds;
    size_t n;
    while ((n = harness_count_workers(dir, sha)) != 0 && harness_now() < deadline)
        harness_sleep(0.05);
    return n;
}

/* ------------------------------------------------------------------ */
/* Frames for protocol-level tests                                     */
/* ------------------------------------------------------------------ */

/*
 * Encode a message, the way the client does: the envelope env (consumed)
 * with v (may be NULL) under key. On success *frame is a malloc'd copy of
 * the whole frame and *len its size.
 */
HARNESS_FN modal_status harness_frame(cJSON *env, const char *key,
                                      const modal_value *v, void **frame,
                                      size_t *len, modal_error *err)
{
    modal__enc enc;
    modal__buf *buf = NULL;
    *frame = NULL;
    *len = 0;
    modal_status st = modal__msg_build(env, key, v, &enc, err);
    if (st != MODAL_OK)
        return st;
    st = modal__enc_flatten(&enc, &buf, err);
    modal__enc_free(&enc);
    if (st != MODAL_OK)
        return st;
    *frame = malloc(buf->len ? buf->len : 1);
    if (*frame == NULL) {
        modal__buf_unref(buf);
        return MODAL_ENOMEM;
    }
    memcpy(*frame, buf->base, buf->len);
    *len = buf->len;
    modal__buf_unref(buf);
    return MODAL_OK;
}

/*
 * Parse a result frame and copy its "status" (and "message") strings out.
 * Returns MODAL_OK when the frame parsed.
 */
HARNESS_FN modal_status harness_result_status(const void *frame, size_t len,
                                              char *status, size_t statussz,
                                              char *message, size_t msgsz,
                                              modal_error *err)
{
    status[0] = message[0] = '\0';
    modal__buf *buf = modal__buf_new(len);
    if (buf == NULL)
        return MODAL_ENOMEM;
    memcpy(buf->base, frame, len);
    modal__dec dec;
    modal_status st = modal__dec_open(buf, 0, &dec, err);
    modal__buf_unref(buf);
    if (st != MODAL_OK)
        return st;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(dec.env, "status");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(dec.env, "message");
    if (cJSON_IsString(s))
        snprintf(status, statussz, "%s", s->valuestring);
    if (cJSON_IsString(m))
        snprintf(message, msgsz, "%s", m->valuestring);
    modal__dec_close(&dec);
    return MODAL_OK;
}

/* ------------------------------------------------------------------ */
/* TLS listeners                                                       */
/* ------------------------------------------------------------------ */

/*
 * The port of h's listener whose runtime.log line starts with prefix
 * ("listening tls:127.0.0.1:"), waiting up to 5 s for it; 0 (printing why)
 * when none appears.
 */
HARNESS_FN int harness_log_port(harness *h, const char *prefix)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/runtime.log", h->dir);
    for (double end = harness_now() + 5; harness_now() < end; harness_sleep(0.02)) {
        char *log = harness_read_file(path, NULL);
        const char *line = log ? strstr(log, prefix) : NULL;
        int port = line ? atoi(line + strlen(prefix)) : 0;
        free(log);
        if (port > 0)
            return port;
    }
    fprintf(stderr, "harness: no \"%s\" line in %s\n", prefix, path);
    return 0;
}

/* The pin of h's runtime from <state>/tls/fingerprint, or "" (53 bytes). */
HARNESS_FN void harness_tls_fingerprint(harness *h, char out[53])
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/tls/fingerprint", h->dir);
    char *f = harness_read_file(path, NULL);
    snprintf(out, 53, "%.*s", f ? (int)strcspn(f, "\r\n") : 0, f ? f : "");
    free(f);
}

/*
 * The pin of a PEM certificate file computed with OpenSSL itself
 * ("sha256//" + base64 of the SHA-256 of the DER SubjectPublicKeyInfo),
 * independently of the library's own code; "" when the file is unreadable.
 */
HARNESS_FN void harness_openssl_pin(const char *cert_path, char out[53])
{
    out[0] = '\0';
    FILE *f = fopen(cert_path, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f != NULL)
        fclose(f);
    unsigned char *der = NULL, md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    int n = x ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der) : -1;
    if (n > 0 && EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL) == 1) {
        memcpy(out, "sha256//", 8);
        EVP_EncodeBlock((unsigned char *)out + 8, md, (int)mdlen);
    }
    OPENSSL_free(der);
    X509_free(x);
}

/*
 * Write an EC P-256 key and a self-signed certificate for it (CN=cn) to
 * key_path and cert_path with OpenSSL, as an operator would bring them.
 * Returns 0 or -1.
 */
HARNESS_FN int harness_make_cert(const char *key_path, const char *cert_path, const char *cn)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    int ok = k != NULL && x != NULL && X509_set_version(x, 2) == 1 &&
             ASN1_INTEGER_set(X509_get_serialNumber(x), 7) == 1 &&
             X509_gmtime_adj(X509_getm_notBefore(x), -60) != NULL &&
             X509_gmtime_adj(X509_getm_notAfter(x), 86400) != NULL &&
             X509_set_pubkey(x, k) == 1 &&
             X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                        (const unsigned char *)cn, -1, -1, 0) == 1 &&
             X509_set_issuer_name(x, X509_get_subject_name(x)) == 1 &&
             X509_sign(x, k, EVP_sha256()) > 0;
    FILE *kf = ok ? fopen(key_path, "w") : NULL, *cf = ok ? fopen(cert_path, "w") : NULL;
    ok = kf && cf && PEM_write_PrivateKey(kf, k, NULL, NULL, 0, NULL, NULL) == 1 &&
         PEM_write_X509(cf, x) == 1;
    if (kf)
        fclose(kf);
    if (cf)
        fclose(cf);
    X509_free(x);
    EVP_PKEY_free(k);
    return ok ? 0 : -1;
}

/* Point libmodal at https://127.0.0.1:port, pinning pin (NULL: no pin). */
HARNESS_FN void harness_point_tls(int port, const char *pin)
{
    char url[64];
    snprintf(url, sizeof url, "https://127.0.0.1:%d", port);
    setenv("MODAL_RUNTIME_URL", url, 1);
    if (pin != NULL)
        setenv("MODAL_TLS_FINGERPRINT", pin, 1);
    else
        unsetenv("MODAL_TLS_FINGERPRINT");
}

/* ------------------------------------------------------------------ */
/* Raw sockets and process limits (HTTP-level tests)                   */
/* ------------------------------------------------------------------ */

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/resource.h>
#include <sys/socket.h>

/* Raise this process's descriptor limit to its hard limit; returns it. */
HARNESS_FN rlim_t harness_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return rl.rlim_cur;
}

/*
 * harness_start_with, the runtime (and its workers) limited to files of
 * fsize bytes (RLIMIT_FSIZE): this process sets the limit, starts the
 * runtime, which inherits it, and restores its own.
 */
HARNESS_FN int harness_start_fsize(harness *h, const char *const *extra_args, bool export_env,
                                   rlim_t fsize)
{
    struct rlimit old, rl;
    getrlimit(RLIMIT_FSIZE, &old);
    rl = old;
    rl.rlim_cur = fsize;
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) {
        fprintf(stderr, "harness: setrlimit(RLIMIT_FSIZE): %s\n", strerror(errno));
        return -1;
    }
    int rc = harness_start_with(h, extra_args, export_env);
    setrlimit(RLIMIT_FSIZE, &old);
    return rc;
}

/* A blocking TCP connection to 127.0.0.1:port, or -1. */
HARNESS_FN int harness_tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/*
 * Send req[0, len) on fd and read until the peer closes or timeout_s
 * passes. *out is a malloc'd NUL-terminated copy of what came back (free
 * it). Returns how many bytes came back, or -1 when the peer did not close
 * within the time.
 */
HARNESS_FN long harness_raw_exchange(int fd, const void *req, size_t len, double timeout_s,
                                     char **out)
{
    const char *p = req;
    while (len > 0) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the server may answer and close before all is sent */
        p += w;
        len -= (size_t)w;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    double end = harness_now() + timeout_s;
    bool closed = false;
    while (buf != NULL) {
        double left = end - harness_now();
        struct pollfd pf = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, (int)(left * 1000) + 1) <= 0)
            break;
        if (n + 1024 > cap) {
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL)
                break;
            buf = nb;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
        if (r <= 0) {
            closed = true;
            break;
        }
        n += (size_t)r;
    }
    if (buf != NULL)
        buf[n] = '\0';
    *out = buf;
    return closed ? (long)n : -1;
}

/*
 * Start a runtime in the existing state directory dir (a restart after
 * harness_kill, which keeps it), with extra_args and export_env as for
 * harness_start_with; the token is the one the directory holds. Returns 0
 * or -1 after printing why.
 */
HARNESS_FN int harness_start_in(harness *h, const char *dir, const char *const *extra_args,
                                bool export_env)
{
    char keep[PATH_MAX];
    snprintf(keep, sizeof keep, "%s", dir);
    harness_reuse_dir = keep;
    int rc = harness_start_with(h, extra_args, export_env);
    harness_reuse_dir = NULL;
    return rc;
}

/* GET /v1/health of h, parsed (the caller deletes it); asserts a 200. */
HARNESS_FN cJSON *harness_health(const harness *h)
{
    long status = 0;
    char *body = NULL;
    harness_http_url(h->url, "GET", MODAL__PATH_HEALTH, h->token, NULL, 0, NULL, &status, &body,
                     NULL);
    assert_int_equal(status, 200);
    cJSON *j = cJSON_Parse(body);
    free(body);
    assert_non_null(j);
    return j;
}

/* The entry of fn among the calls a health answer lists as waiting for
 * resources ("queue": {"waiting": [...]}), or NULL. */
HARNESS_FN const cJSON *harness_waiting_entry(const cJSON *health, const char *fn)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(
                              cJSON_GetObjectItemCaseSensitive(health, "queue"), "waiting"))
    {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "fn");
        if (cJSON_IsString(f) && strcmp(f->valuestring, fn) == 0)
            return e;
    }
    return NULL;
}

/* A free loopback port (bound, read, closed), for a runtime that must come
 * back at the same address. */
HARNESS_FN int harness_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* A call's whole output as h serves it (tagged lines); free it. Asserts a 200. */
HARNESS_FN char *harness_call_logs(const harness *h, const char *call_id)
{
    char path[160];
    snprintf(path, sizeof path, MODAL__PATH_CALLS "/%s" MODAL__PATH_LOGS "?offset=0", call_id);
    long status = 0;
    char *logs = NULL;
    harness_http_url(h->url, "GET", path, h->token, NULL, 0, NULL, &status, &logs, NULL);
    assert_int_equal(status, 200);
    assert_non_null(logs);
    return logs;
}

/*
 * The path of FILE of the CUDA test double, built beside the test binaries
 * (build/tests/cuda_fake/FILE, e.g. "libcuda.so.1"), for MODAL_CUDA_LIBRARY.
 * Returns a static buffer.
 */
HARNESS_FN const char *harness_cuda_fake(const char *file)
{
    static char path[4096 + 64];
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    snprintf(path, sizeof path, "%s/cuda_fake/%s", self, file);
    return path;
}

#endif /* MODAL_HARNESS_H */
