/*
 * test_http.c: the runtime's HTTP server at the protocol level. Malformed
 * requests sent over a raw socket each get one status line and the
 * documented JSON error; --max-body holds for chunked bodies; slow and
 * idle connections by the thousand do not slow a well-behaved caller;
 * headers must arrive in time; connections over the limit are refused at
 * once; an upload that cannot be stored is discarded, and a stored
 * executable that was damaged is removed and uploaded again.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

MODAL_APP("itest-http");

MODAL_FUNCTION(noop, .timeout = 30)
{
    return modal_int(1);
}

MODAL_FUNCTION(noop2, .timeout = 30)
{
    return modal_int(2);
}

MODAL_FUNCTION(noop3, .timeout = 30)
{
    return modal_int(3);
}

/* Its worker exits after 1 idle second, so the next call starts another. */
MODAL_FUNCTION(brief, .timeout = 30, .scaledown_window = 1)
{
    return modal_int(4);
}

MODAL_FUNCTION(sleeper, .timeout = 60)
{
    harness_sleep(modal_arg_float(args, 0));
    return modal_int(5);
}

#define BIG_RESULT (8u << 20)

MODAL_FUNCTION(big_result, .timeout = 60)
{
    char *p = calloc(1, BIG_RESULT);
    modal_value *v = modal_bytes(p, BIG_RESULT);
    free(p);
    return v;
}

/* ---- helpers ---------------------------------------------------------- */

static void cut_stored_copy(const char *file);

/* The status of a raw answer ("HTTP/1.1 404 ..."), or 0. */
static int raw_status(const char *resp)
{
    int st = 0;
    if (resp == NULL || sscanf(resp, "HTTP/1.%*d %d", &st) != 1)
        return 0;
    return st;
}

/* How many times needle occurs in hay. */
static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* Check one raw answer: the status, one status line, and a JSON error
 * body with a code and a message. */
static void check_json_error(const char *what, const char *resp, int want)
{
    int st = raw_status(resp);
    if (st != want) {
        print_error("%s: status %d, expected %d; answer:\n%s\n", what, st, want,
                    resp ? resp : "(none)");
        fail();
    }
    if (count(resp, "\nHTTP/1.") != 0 || count(resp, "\r\nContent-Length:") != 1) {
        print_error("%s: more than one status line or Content-Length in:\n%s\n", what, resp);
        fail();
    }
    const char *body = strstr(resp, "\r\n\r\n");
    char code[64], msg[600];
    if (body == NULL || harness_json_error(body + 4, code, sizeof code, msg, sizeof msg) != 0 ||
        code[0] == '\0' || msg[0] == '\0') {
        print_error("%s: no JSON error body in:\n%s\n", what, resp);
        fail();
    }
}

/* Send a raw request to h and return the answer (to free). */
static char *raw(harness *h, const char *req, size_t len)
{
    int fd = harness_tcp_connect(h->port);
    assert_true(fd >= 0);
    char *out = NULL;
    long n = harness_raw_exchange(fd, req, len, 10.0, &out);
    close(fd);
    if (n < 0)
        print_error("the runtime did not close the connection after: %.200s\n", req);
    assert_true(n >= 0);
    return out;
}

static double median(double *v, size_t n)
{
    for (size_t i = 1; i < n; i++)
        for (size_t k = i; k > 0 && v[k - 1] > v[k]; k--) {
            double t = v[k];
            v[k] = v[k - 1];
            v[k - 1] = t;
        }
    return v[n / 2];
}

/* Median seconds of n warm calls of noop. */
static double warm_median(size_t n)
{
    double *t = calloc(n, sizeof *t);
    assert_non_null(t);
    for (size_t i = 0; i < n; i++) {
        modal_value *res = NULL;
        modal_error err;
        double t0 = harness_now();
        modal_status st = modal_fn_remote(&noop, modal_args(modal_int(0)), &res, &err);
        t[i] = harness_now() - t0;
        assert_ok(st, err);
        modal_value_free(res);
    }
    double m = median(t, n);
    free(t);
    return m;
}

static modal_status call_fn(modal_function *fn, modal_error *err)
{
    modal_value *res = NULL;
    modal_status st = modal_fn_remote(fn, modal_args(modal_int(0)), &res, err);
    modal_value_free(res);
    return st;
}

/* Start a runtime of this test's own, call fn on it so this executable is
 * stored there, and give its SHA-256 and the stored file's path. */
static void start_with_stored_self(harness *h, modal_function *fn, char hex[65],
                                   char file[PATH_MAX + 100])
{
    assert_int_equal(harness_start_with(h, NULL, true), 0);
    modal_error err;
    assert_ok(call_fn(fn, &err), err);
    assert_int_equal(harness_self_sha256(hex), 0);
    snprintf(file, PATH_MAX + 100, "%s/artifacts/%s", h->dir, hex);
}

/* Files in dir/artifacts (temporary ones included). */
/* Files in h's artifact store but the kernel worker it stores itself. */
static int artifact_files(const harness *h)
{
    cJSON *health = harness_health(h);
    const char *kw = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(health, "kernel_worker"));
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/artifacts", h->dir);
    DIR *d = opendir(path);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
            (kw == NULL || strcmp(e->d_name, kw) != 0))
            n++;
    cJSON_Delete(health);
    if (d)
        closedir(d);
    return n;
}

/* ---- malformed requests --------------------------------------------------- */

typedef struct bad_request {
    const char *name;
    const char *text; /* "%T" is replaced by the token */
    int status;
} bad_request;

static const bad_request bad[] = {
    {"garbage line", "GARBAGE\r\n\r\n", 400},
    {"method only", "GET\r\n\r\n", 400},
    {"HTTP/0.9 style", "GET /v1/health\r\n\r\n", 400},
    {"HTTP/2.0", "GET /v1/health HTTP/2.0\r\nHost: x\r\n\r\n", 505},
    {"HTTP/1.2", "GET /v1/health HTTP/1.2\r\nHost: x\r\n\r\n", 505},
    {"bad version", "GET /v1/health HTTP/x.y\r\nHost: x\r\n\r\n", 400},
    {"lowercase version", "GET /v1/health http/1.1\r\nHost: x\r\n\r\n", 400},
    {"relative target", "GET v1/health HTTP/1.1\r\nHost: x\r\n\r\n", 400},
    {"absolute-form target", "GET http://x/v1/health HTTP/1.1\r\nHost: x\r\n\r\n", 400},
    {"space in target", "GET /v1/he alth HTTP/1.1\r\nHost: x\r\n\r\n", 400},
    {"control byte in target", "GET /v1/\x01health HTTP/1.1\r\nHost: x\r\n\r\n", 400},
    {"no Host", "GET /v1/health HTTP/1.1\r\nAuthorization: Bearer %T\r\n\r\n", 400},
    {"two Hosts", "GET /v1/health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
    {"header without colon", "GET /v1/health HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400},
    {"space before colon", "GET /v1/health HTTP/1.1\r\nHost : x\r\n\r\n", 400},
    {"folded header", "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  2\r\n\r\n", 400},
    {"control byte in value", "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-A: a\x02" "b\r\n\r\n", 400},
    {"Content-Length not a number",
     "POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400},
    {"negative Content-Length",
     "POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400},
    {"Content-Length in exponent form",
     "POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n", 400},
    {"Content-Length with 20 digits",
     "POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
    {"two different Content-Lengths",
     "POST /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %T\r\nContent-Length: 5\r\n"
     "Content-Length: 6\r\n\r\nhello!", 400},
    {"Content-Length list", "POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n",
     400},
    {"Content-Length and chunked",
     "POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
    {"Transfer-Encoding gzip",
     "POST /v1/calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
    {"Transfer-Encoding twice",
     "POST /v1/calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
    {"chunked in HTTP/1.0",
     "POST /v1/calls HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
    {"bad chunk size",
     "POST /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %T\r\n"
     "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400},
    {"chunk longer than its size",
     "POST /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %T\r\n"
     "Transfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n", 400},
    {"chunk size of 16 hex digits",
     "POST /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %T\r\n"
     "Transfer-Encoding: chunked\r\n\r\n1000000000000000\r\n", 400},
    {"unknown Expect", "POST /v1/calls HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 417},
    {"bad %-escape in path", "GET /v1/calls/%zz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %T\r\n"
     "Connection: close\r\n\r\n", 400},
    {"encoded NUL in path", "GET /v1/apps/a%00b/logs HTTP/1.1\r\nHost: x\r\n"
     "Authorization: Bearer %T\r\nConnection: close\r\n\r\n", 400},
    {"DELETE /v1/health", "DELETE /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %T\r\n"
     "Connection: close\r\n\r\n", 405},
    {"PATCH /v1/calls", "PATCH /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %T\r\n"
     "Connection: close\r\n\r\n", 405},
    {"PUT /v1/calls/<id>", "PUT /v1/calls/fc-x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %T\r\n"
     "Content-Length: 0\r\nConnection: close\r\n\r\n", 405},
    {"GET /v1/maps", "GET /v1/maps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %T\r\n"
     "Connection: close\r\n\r\n", 405},
    {"unknown route", "GET /nope HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %T\r\n"
     "Connection: close\r\n\r\n", 404},
    {"no token", "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 401},
    {"Content-Length over --max-body",
     "POST /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %T\r\n"
     "Content-Length: 999999999999999\r\n\r\n", 413},
};

/* The request with %T replaced by h's token. */
static char *fill_token(harness *h, const char *text, size_t *len)
{
    size_t cap = strlen(text) + strlen(h->token) * 4 + 1;
    char *out = malloc(cap);
    assert_non_null(out);
    size_t n = 0;
    for (const char *p = text; *p; p++) {
        if (p[0] == '%' && p[1] == 'T') {
            n += (size_t)snprintf(out + n, cap - n, "%s", h->token);
            p++;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    *len = n;
    return out;
}

static void test_malformed_requests(void **state)
{
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len;
        char *req = fill_token(&rt, bad[i].text, &len);
        char *resp = raw(&rt, req, len);
        check_json_error(bad[i].name, resp, bad[i].status);
        free(resp);
        free(req);
    }
    /* Headers larger than the limit: 431. */
    size_t big = 20000;
    char *req = malloc(big + 200);
    assert_non_null(req);
    int n = snprintf(req, 200, "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + n, 'a', big);
    memcpy(req + n + big, "\r\n\r\n", 5);
    char *resp = raw(&rt, req, strlen(req));
    check_json_error("20 KB header", resp, 431);
    free(resp);
    /* So are too many header fields. */
    n = snprintf(req, big, "GET /v1/health HTTP/1.1\r\nHost: x\r\n");
    for (int k = 0; k < 100; k++)
        n += snprintf(req + n, big - (size_t)n, "X-H%d: v\r\n", k);
    snprintf(req + n, big - (size_t)n, "\r\n");
    resp = raw(&rt, req, strlen(req));
    check_json_error("100 header fields", resp, 431);
    free(resp);
    free(req);

    /* Identical duplicate Content-Lengths are one length. */
    size_t len;
    req = fill_token(&rt, "GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %T\r\n"
                          "Content-Length: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                     &len);
    resp = raw(&rt, req, len);
    assert_int_equal(raw_status(resp), 200);
    free(resp);
    free(req);

    /* The runtime still serves, over libcurl and the API. */
    long status = 0;
    harness_http(&rt, "GET", "/v1/health", rt.token, NULL, 0, &status, NULL, NULL);
    assert_int_equal(status, 200);
    modal_error err;
    assert_ok(call_fn(&noop, &err), err);
}

/* Two requests in one write (pipelining) get two answers, in order, and a
 * keep-alive connection serves the next request. */
static void test_keep_alive_and_pipelining(void **state)
{
    size_t len;
    char *req = fill_token(&rt, "GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %T\r\n"
                                "\r\nGET /nope HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %T\r\n"
                                "Connection: close\r\n\r\n", &len);
    char *resp = raw(&rt, req, len);
    assert_int_equal(raw_status(resp), 200);
    assert_int_equal(count(resp, "\r\nContent-Length:"), 2);
    assert_non_null(strstr(resp, "HTTP/1.1 404"));
    free(resp);
    free(req);
}

/* "Expect: 100-continue" gets 100 Continue only after the headers passed
 * the checks: without the token, the answer is 401 at once. */
static void test_expect_continue(void **state)
{
    char req[512];
    int fd = harness_tcp_connect(rt.port);
    assert_true(fd >= 0);
    snprintf(req, sizeof req, "POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
             "Expect: 100-continue\r\n\r\n");
    char *resp = NULL;
    assert_true(harness_raw_exchange(fd, req, strlen(req), 5.0, &resp) > 0);
    close(fd);
    check_json_error("Expect without a token", resp, 401);
    assert_null(strstr(resp, "100 Continue"));
    free(resp);

    fd = harness_tcp_connect(rt.port);
    assert_true(fd >= 0);
    snprintf(req, sizeof req, "POST /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
             "Content-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
             rt.token);
    assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    char got[256] = "";
    struct pollfd pf = {fd, POLLIN, 0};
    assert_int_equal(poll(&pf, 1, 5000), 1);
    ssize_t n = recv(fd, got, sizeof got - 1, 0);
    assert_true(n > 0);
    got[n] = '\0';
    assert_contains(got, "HTTP/1.1 100 Continue\r\n\r\n");
    /* Then the body, which is not a frame. */
    assert_true(harness_raw_exchange(fd, "hello", 5, 5.0, &resp) >= 0);
    close(fd);
    char *all = malloc(strlen(got) + strlen(resp) + 1);
    strcpy(all, got + strlen("HTTP/1.1 100 Continue\r\n\r\n"));
    strcat(all, resp);
    check_json_error("Expect with the token, then a bad frame", all, 400);
    free(all);
    free(resp);
}

static void test_delete_health_is_405(void **state)
{
    long status = 0;
    char *resp = NULL;
    harness_http(&rt, "DELETE", "/v1/health", rt.token, NULL, 0, &status, &resp, NULL);
    assert_int_equal(status, 405);
    char code[64], msg[512];
    assert_int_equal(harness_json_error(resp, code, sizeof code, msg, sizeof msg), 0);
    assert_contains(msg, "GET");
    free(resp);
}

/* Long polls are suspended requests: 1000 of them waiting on a running call
 * do not slow a warm call beside them, and each is resumed and answered
 * when the call ends. */
static void test_long_polls_hold_no_thread(void **state)
{
    enum { WAITERS = 1000 };
    if (harness_raise_nofile() < WAITERS + 200) {
        print_message("skipping: too low a descriptor limit for %d connections\n", WAITERS);
        skip();
    }
    modal_error err;
    modal_call *call = NULL;
    assert_ok(call_fn(&noop, &err), err); /* noop's worker is warm */
    double unloaded = warm_median(21);
    assert_ok(modal_fn_spawn(&sleeper, modal_args(modal_float(3.0)), &call, &err), err);
    char req[512];
    snprintf(req, sizeof req, "GET /v1/calls/%s?wait=30 HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer %s\r\nConnection: close\r\n\r\n", modal_call_id(call),
             rt.token);
    static int fds[WAITERS];
    for (int i = 0; i < WAITERS; i++) {
        fds[i] = harness_tcp_connect(rt.port);
        assert_true(fds[i] >= 0);
        assert_int_equal(send(fds[i], req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    }
    double loaded = warm_median(21);
    print_message("warm call median: %.3f ms alone, %.3f ms beside %d long polls\n",
                  unloaded * 1e3, loaded * 1e3, WAITERS);
    assert_true(loaded <= 2 * unloaded + 0.002);
    int answered = 0;
    for (int i = 0; i < WAITERS; i++) {
        char *resp = NULL;
        if (harness_raw_exchange(fds[i], "", 0, 20.0, &resp) > 0 && raw_status(resp) == 200)
            answered++;
        free(resp);
        close(fds[i]);
    }
    assert_int_equal(answered, WAITERS);
    modal_value *res = NULL;
    assert_ok(modal_call_get(call, 10, &res, &err), err);
    modal_value_free(res);
    modal_call_free(call);
}

/* ---- body limits -------------------------------------------------------------- */

/* PUT body (len bytes) to /v1/artifacts/<its sha> chunked over a raw socket,
 * in 64 KiB chunks; returns the answer. */
static char *chunked_put(harness *h, const uint8_t *body, size_t len, char hex[65])
{
    unsigned char md[32];
    EVP_Digest(body, len, md, NULL, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    size_t cap = len + len / 1000 + 4096;
    char *req = malloc(cap);
    assert_non_null(req);
    size_t n = (size_t)snprintf(req, cap,
                                "PUT /v1/artifacts/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                "%s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                                hex, h->token);
    for (size_t off = 0; off < len; off += 65536) {
        size_t k = len - off < 65536 ? len - off : 65536;
        n += (size_t)snprintf(req + n, cap - n, "%zx\r\n", k);
        memcpy(req + n, body + off, k);
        n += k;
        memcpy(req + n, "\r\n", 2);
        n += 2;
    }
    n += (size_t)snprintf(req + n, cap - n, "0\r\n\r\n");
    char *resp = raw(h, req, n);
    free(req);
    return resp;
}

static void test_chunked_body_limit(void **state)
{
    harness h;
    const char *args[] = {"--max-body", "1048576", NULL};
    assert_int_equal(harness_start_with(&h, args, false), 0);
    size_t len = 2u << 20;
    uint8_t *body = malloc(len);
    assert_non_null(body);
    for (size_t i = 0; i < len; i++)
        body[i] = (uint8_t)(i * 7 + 3);
    char hex[65], path[128];
    char *resp = chunked_put(&h, body, len, hex);
    check_json_error("chunked 2 MiB PUT over a 1 MiB --max-body", resp, 413);
    assert_contains(resp, "1048576");
    free(resp);
    long status = 0;
    snprintf(path, sizeof path, "/v1/artifacts/%s", hex);
    harness_http(&h, "HEAD", path, h.token, NULL, 0, &status, NULL, NULL);
    assert_int_equal(status, 404);
    assert_int_equal(artifact_files(&h), 0);

    /* Under the limit, a chunked upload is stored. */
    resp = chunked_put(&h, body, 512u << 10, hex);
    assert_int_equal(raw_status(resp), 201);
    free(resp);
    snprintf(path, sizeof path, "/v1/artifacts/%s", hex);
    harness_http(&h, "HEAD", path, h.token, NULL, 0, &status, NULL, NULL);
    assert_int_equal(status, 200);
    free(body);
    harness_stop(&h);
}

/* ---- many slow clients ----------------------------------------------------------- */

#define SLOW_CONNS 10000
#define CALLS 200

typedef struct drip {
    int *fds;
    size_t n;
    volatile bool stop;
} drip;

/* Send one header byte every 200 ms on each connection. */
static void *drip_main(void *arg)
{
    drip *d = arg;
    static const char text[] = "GET /v1/health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    size_t k = 0;
    while (!d->stop) {
        char c = text[k < sizeof text - 1 ? k : sizeof text - 2];
        for (size_t i = 0; i < d->n && !d->stop; i++)
            send(d->fds[i], &c, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        k++;
        harness_sleep(0.2);
    }
    return NULL;
}

static void test_slow_clients_do_not_shut_out_others(void **state)
{
    rlim_t nofile = harness_raise_nofile();
    if (nofile < SLOW_CONNS + 500) {
        print_message("skipping: the descriptor limit is %llu, %d are needed\n",
                      (unsigned long long)nofile, SLOW_CONNS + 500);
        skip();
    }
    harness h;
    /* A header time longer than the test, so the slow connections stay. */
    const char *args[] = {"--header-timeout", "120", NULL};
    assert_int_equal(harness_start_with(&h, args, true), 0);
    modal_error err;
    assert_ok(call_fn(&noop, &err), err); /* upload, start the worker */
    double unloaded = warm_median(CALLS);

    int *fds = malloc(SLOW_CONNS * sizeof *fds);
    assert_non_null(fds);
    for (size_t i = 0; i < SLOW_CONNS; i++) {
        fds[i] = harness_tcp_connect(h.port);
        if (fds[i] < 0)
            print_error("connection %zu: %s\n", i, strerror(errno));
        assert_true(fds[i] >= 0);
    }
    drip d = {.fds = fds + SLOW_CONNS / 2, .n = SLOW_CONNS / 2};
    pthread_t t;
    pthread_create(&t, NULL, drip_main, &d);
    harness_sleep(1.0);
    double loaded = warm_median(CALLS);
    d.stop = true;
    pthread_join(t, NULL);

    /* Every slow connection is still open and unanswered: the runtime
     * holds them all, rather than refusing them. */
    size_t open_conns = 0;
    for (size_t i = 0; i < SLOW_CONNS; i++) {
        char c;
        if (recv(fds[i], &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN)
            open_conns++;
        close(fds[i]);
    }
    free(fds);
    print_message("warm call median: %.3f ms alone, %.3f ms beside %d slow connections "
                  "(%zu still open)\n", unloaded * 1e3, loaded * 1e3, SLOW_CONNS, open_conns);
    assert_int_equal(open_conns, SLOW_CONNS);
    assert_true(loaded <= 2 * unloaded + 0.002);
    harness_stop(&h);
}

static void test_header_timeout(void **state)
{
    harness h;
    const char *args[] = {"--header-timeout", "1", NULL};
    assert_int_equal(harness_start_with(&h, args, false), 0);
    int fd = harness_tcp_connect(h.port);
    assert_true(fd >= 0);
    static const char text[] = "GET /v1/health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    double t0 = harness_now(), closed_at = 0;
    char resp[2048];
    size_t n = 0;
    for (size_t k = 0; closed_at == 0 && harness_now() - t0 < 10; k++) {
        send(fd, &text[k % (sizeof text - 1)], 1, MSG_NOSIGNAL);
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 200) > 0) {
            ssize_t r = recv(fd, resp + n, sizeof resp - 1 - n, 0);
            if (r <= 0)
                closed_at = harness_now();
            else
                n += (size_t)r;
        }
    }
    resp[n] = '\0';
    close(fd);
    double took = closed_at - t0;
    print_message("a dripping connection was closed after %.2f s\n", took);
    assert_true(closed_at > 0);
    assert_true(took >= 0.9 && took <= 3.0);
    check_json_error("header timeout", resp, 408);
    assert_contains(resp, "--header-timeout");
    harness_stop(&h);
}

static void test_connection_limit(void **state)
{
    harness h;
    const char *args[] = {"--max-connections", "50", NULL};
    assert_int_equal(harness_start_with(&h, args, true), 0);
    int fds[59];
    for (int i = 0; i < 59; i++) {
        fds[i] = harness_tcp_connect(h.port);
        assert_true(fds[i] >= 0);
    }
    harness_sleep(0.3);
    /* Connection 60 is answered 503 and closed at once, not left waiting. */
    int fd = harness_tcp_connect(h.port);
    assert_true(fd >= 0);
    double t0 = harness_now();
    char *resp = NULL;
    long n = harness_raw_exchange(fd, "", 0, 5.0, &resp);
    double took = harness_now() - t0;
    close(fd);
    assert_true(n > 0);
    assert_true(took < 1.0);
    check_json_error("connection over --max-connections", resp, 503);
    assert_contains(resp, "--max-connections");
    free(resp);
    /* The first 50 are held; the rest were refused the same way. */
    int open_conns = 0;
    for (int i = 0; i < 59; i++) {
        char c;
        if (recv(fds[i], &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN)
            open_conns++;
        close(fds[i]);
    }
    assert_int_equal(open_conns, 50);
    harness_sleep(0.2);
    modal_error err;
    assert_ok(call_fn(&noop, &err), err);
    harness_stop(&h);
}

/* ---- uploads that fail, files that go bad ------------------------------------------ */

static void test_upload_write_error_discards(void **state)
{
    harness h;
    /* The runtime may write files of at most 256 KiB; this executable is
     * larger, so storing it fails with EFBIG partway. */
    assert_int_equal(harness_start_fsize(&h, NULL, false, 256u << 10), 0);
    char hex[65], path[128];
    assert_int_equal(harness_self_sha256(hex), 0);
    size_t len = 0;
    char *exe = harness_read_file(harness_self_exe(), &len);
    assert_non_null(exe);
    assert_true(len > (256u << 10));
    snprintf(path, sizeof path, "/v1/artifacts/%s", hex);
    long status = 0;
    char *resp = NULL;
    harness_http(&h, "PUT", path, h.token, exe, len, &status, &resp, NULL);
    free(exe);
    char code[64], msg[1024];
    assert_int_equal(harness_json_error(resp, code, sizeof code, msg, sizeof msg), 0);
    print_message("PUT beyond RLIMIT_FSIZE: %ld %s %s\n", status, code, msg);
    assert_int_equal(status, 507);
    assert_contains(code, "EIO");
    assert_contains(msg, hex);
    assert_contains(msg, strerror(EFBIG));
    assert_contains(msg, h.dir);
    free(resp);
    harness_http(&h, "HEAD", path, h.token, NULL, 0, &status, NULL, NULL);
    assert_int_equal(status, 404);
    assert_int_equal(artifact_files(&h), 0);
    harness_stop(&h);
}

static void test_damaged_artifact_is_uploaded_again(void **state)
{
    harness h;
    modal_error err;
    char hex[65], file[PATH_MAX + 100];
    start_with_stored_self(&h, &noop, hex, file);

    /* Cut the stored executable short: a new pool must not start from it. */
    struct stat sb;
    cut_stored_copy(file);
    assert_status(call_fn(&noop2, &err), MODAL_EIO, err);
    assert_message_contains(err, hex);
    assert_message_contains(err, "damaged");
    assert_message_contains(err, "removed");
    assert_false(access(file, F_OK) == 0);
    /* The next call uploads it again and runs. */
    assert_ok(call_fn(&noop2, &err), err);
    assert_int_equal(stat(file, &sb), 0);

    /* A file that is gone is uploaded again without a failed call. */
    assert_int_equal(unlink(file), 0);
    assert_ok(call_fn(&noop3, &err), err);
    assert_int_equal(access(file, F_OK), 0);

    /* HEAD, which a client sends before its first call, checks the file
     * too: a damaged one is removed and reported missing. */
    cut_stored_copy(file);
    char path[128], *resp = NULL, code[64], msg[1024];
    long status = 0;
    snprintf(path, sizeof path, "/v1/artifacts/%s", hex);
    harness_http(&h, "GET", path, h.token, NULL, 0, &status, &resp, NULL);
    assert_int_equal(status, 404);
    assert_int_equal(harness_json_error(resp, code, sizeof code, msg, sizeof msg), 0);
    assert_contains(msg, "damaged");
    free(resp);
    assert_false(access(file, F_OK) == 0);
    harness_stop(&h);
}

/* Replace the stored copy of this executable by its first 8 KiB, still
 * executable (a running executable cannot be opened for writing; a copy
 * cut short by a full disk looks like this). */
static void cut_stored_copy(const char *file)
{
    size_t len = 0;
    char *exe = harness_read_file(file, &len);
    assert_non_null(exe);
    char tmp[PATH_MAX + 120];
    snprintf(tmp, sizeof tmp, "%s.cut", file);
    FILE *f = fopen(tmp, "wb");
    assert_non_null(f);
    assert_true(len > 8192);
    assert_int_equal(fwrite(exe, 1, 8192, f), 8192);
    fchmod(fileno(f), 0755);
    fclose(f);
    free(exe);
    assert_int_equal(rename(tmp, file), 0);
}

/* A pool whose worker failed to start from a damaged file recovers once the
 * executable is uploaded again, without a restart of the runtime. */
static void test_broken_pool_recovers(void **state)
{
    harness h;
    modal_error err;
    char hex[65], file[PATH_MAX + 100];
    start_with_stored_self(&h, &brief, hex, file);
    cut_stored_copy(file);
    /* Workers of this runtime only: other runtimes run this executable too. */
    assert_int_equal(harness_wait_no_workers(h.dir, "", 10), 0);
    /* The pool's next worker cannot start from the damaged file. */
    modal_status st = call_fn(&brief, &err);
    print_message("call with a damaged executable: %s: %s\n", modal_status_name(st), err.message);
    assert_int_not_equal(st, MODAL_OK);
    /* Asked again, the runtime finds the damage, removes the file and says so. */
    if (st != MODAL_EIO) {
        st = call_fn(&brief, &err);
        print_message("next call: %s: %s\n", modal_status_name(st), err.message);
        assert_status(st, MODAL_EIO, err);
    }
    assert_message_contains(err, "damaged");
    assert_false(access(file, F_OK) == 0);
    /* The next call uploads it again, and the pool serves once more. */
    assert_ok(call_fn(&brief, &err), err);
    assert_ok(call_fn(&brief, &err), err);
    harness_stop(&h);
}

/* The executable is uploaded again when the runtime lost it, also for a
 * caller that passes no modal_error. */
static void test_lost_artifact_uploaded_again_without_err(void **state)
{
    harness h;
    char hex[65], file[PATH_MAX + 100];
    start_with_stored_self(&h, &noop, hex, file);
    assert_int_equal(unlink(file), 0);
    assert_int_equal(call_fn(&noop2, NULL), MODAL_OK);
    assert_int_equal(access(file, F_OK), 0);
    /* A map, too. */
    assert_int_equal(unlink(file), 0);
    modal_value *res = NULL;
    assert_int_equal(modal_fn_map(&noop3, modal_args(modal_int(1), modal_int(2)), NULL, &res,
                                  NULL),
                     MODAL_OK);
    modal_value_free(res);
    assert_int_equal(access(file, F_OK), 0);
    harness_stop(&h);
}

/* A bad query argument is refused with a message that shows it. */
static void test_bad_query_argument_named(void **state)
{
    modal_call *c = NULL;
    modal_error err;
    assert_ok(modal_fn_spawn(&noop, modal_args(modal_int(0)), &c, &err), err);
    char logs[160];
    snprintf(logs, sizeof logs, "/v1/calls/%s/logs?offset=zz9", modal_call_id(c));
    struct {
        const char *path, *shown;
    } cases[] = {
        {"/v1/calls/fc-x?wait=abc", "wait=\"abc\""},
        {"/v1/calls/fc-x?wait=61", "wait=\"61\""},
        {"/v1/calls/fc-x?log_offset=-5", "log_offset=\"-5\""},
        {logs, "offset=\"zz9\""},
        {"/v1/maps/m-x/results?after=q1", "after=\"q1\""},
        {"/v1/maps/m-x/results?wait=nan", "wait=\"nan\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long status = 0;
        char *resp = NULL, code[64], msg[1024];
        harness_http(&rt, "GET", cases[i].path, rt.token, NULL, 0, &status, &resp, NULL);
        assert_int_equal(harness_json_error(resp, code, sizeof code, msg, sizeof msg), 0);
        print_message("GET %s: %ld %s\n", cases[i].path, status, msg);
        assert_int_equal(status, 400);
        assert_contains(msg, cases[i].shown);
        free(resp);
    }
    modal_call_free(c);
}

/* --idle-timeout bounds a stall, not a transfer: a body that keeps coming,
 * and an answer that keeps being read, may take longer. */
static void test_slow_transfers_that_progress(void **state)
{
    harness h;
    const char *args[] = {"--idle-timeout", "2", NULL};
    assert_int_equal(harness_start_with(&h, args, true), 0);

    /* An upload of 12 bytes, one every 0.25 s. */
    static const char data[] = "slow but on!";
    modal__sha256 sh;
    modal__sha256_init(&sh);
    modal__sha256_update(&sh, data, sizeof data - 1);
    char hex[65], head[512];
    modal__sha256_hex(&sh, hex);
    int n = snprintf(head, sizeof head, "PUT /v1/artifacts/%s HTTP/1.1\r\nHost: x\r\n"
                     "Authorization: Bearer %s\r\nContent-Length: %zu\r\nConnection: close\r\n"
                     "\r\n", hex, h.token, sizeof data - 1);
    int fd = harness_tcp_connect(h.port);
    assert_true(fd >= 0);
    assert_int_equal(send(fd, head, (size_t)n, MSG_NOSIGNAL), n);
    for (size_t i = 0; i + 1 < sizeof data; i++) {
        harness_sleep(0.25);
        send(fd, data + i, 1, MSG_NOSIGNAL);
    }
    char *resp = NULL;
    harness_raw_exchange(fd, "", 0, 5.0, &resp);
    close(fd);
    print_message("slow upload: %.60s\n", resp ? resp : "(none)");
    assert_int_equal(raw_status(resp), 201);
    free(resp);

    /* An answer of 8 MiB, read at most 128 KiB every 0.1 s. */
    modal_call *c = NULL;
    modal_error err;
    assert_ok(modal_fn_spawn(&big_result, modal_args(modal_int(0)), &c, &err), err);
    fd = harness_tcp_connect(h.port);
    assert_true(fd >= 0);
    n = snprintf(head, sizeof head, "GET /v1/calls/%s?wait=30 HTTP/1.1\r\nHost: x\r\n"
                 "Authorization: Bearer %s\r\nConnection: close\r\n\r\n", modal_call_id(c),
                 h.token);
    assert_int_equal(send(fd, head, (size_t)n, MSG_NOSIGNAL), n);
    char *buf = malloc(128 << 10);
    size_t total = 0;
    double t0 = harness_now();
    for (;;) {
        ssize_t k = recv(fd, buf, 128 << 10, 0);
        if (k <= 0)
            break;
        total += (size_t)k;
        harness_sleep(0.1);
    }
    close(fd);
    free(buf);
    print_message("slow download: %zu bytes in %.1f s\n", total, harness_now() - t0);
    assert_true(total > BIG_RESULT);
    modal_call_free(c);
    harness_stop(&h);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_requests),
        cmocka_unit_test(test_keep_alive_and_pipelining),
        cmocka_unit_test(test_delete_health_is_405),
        cmocka_unit_test(test_bad_query_argument_named),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_long_polls_hold_no_thread),
        cmocka_unit_test(test_chunked_body_limit),
        cmocka_unit_test(test_header_timeout),
        cmocka_unit_test(test_slow_transfers_that_progress),
        cmocka_unit_test(test_connection_limit),
        cmocka_unit_test(test_upload_write_error_discards),
        cmocka_unit_test(test_damaged_artifact_is_uploaded_again),
        cmocka_unit_test(test_broken_pool_recovers),
        cmocka_unit_test(test_lost_artifact_uploaded_again_without_err),
        cmocka_unit_test(test_slow_clients_do_not_shut_out_others),
    };
    int rc = cmocka_run_group_tests_name("http", tests, harness_group_setup,
                                         harness_group_teardown);
    /* The group's runtime is the default for libmodal calls; tests that
     * start their own point libmodal at it only while they run. */
    return rc != 0;
}
