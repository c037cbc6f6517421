/*
 * test_httpd_tls.c: the runtime's HTTP server (runtime/httpd.c) over TLS,
 * on its own: a self-signed certificate made here with the OpenSSL API, a
 * listener on a loopback port, and libcurl as the client. Answers from
 * memory and from a file descriptor (which cannot use sendfile under TLS),
 * large request bodies, suspended requests resumed from another thread or
 * by their deadline, and a plain-HTTP client refused.
 */
#include "harness.h"
#include "httpd.h"

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* What httpd.c needs from the rest of the runtime. */
double rt_now(void);
void rt_log(int level, const char *fmt, ...);
double rt_now(void)
{
    return harness_now();
}
void rt_log(int level, const char *fmt, ...)
{
    (void)level;
    (void)fmt;
}

#define BIG (3u << 20)

typedef struct req_state {
    modal__sha256 sha;
    size_t len;
} req_state;

static rt_hreq *volatile to_resume;

static void on_head(rt_hreq *r)
{
    req_state *s = calloc(1, sizeof *s);
    modal__sha256_init(&s->sha);
    rt_hreq_set_user(r, s);
}

static void on_body(rt_hreq *r, const char *p, size_t n)
{
    req_state *s = rt_hreq_user(r);
    modal__sha256_update(&s->sha, p, n);
    s->len += n;
}

static void on_done(rt_hreq *r)
{
    req_state *s = rt_hreq_user(r);
    const char *path = rt_hreq_path(r);
    if (strcmp(path, "/echo") == 0) {
        char hex[65], out[128];
        modal__sha256_hex(&s->sha, hex);
        int n = snprintf(out, sizeof out, "%zu %s", s->len, hex);
        rt_hreq_send(r, 200, "text/plain", NULL, out, (size_t)n);
    } else if (strcmp(path, "/file") == 0) {
        int fd = modal__memfd_new("tls-test", 0);
        uint8_t *buf = malloc(BIG);
        for (size_t i = 0; i < BIG; i++)
            buf[i] = (uint8_t)(i % 251);
        assert_int_equal(write(fd, buf, BIG), BIG);
        free(buf);
        rt_hreq_send_fd(r, 200, "application/octet-stream", NULL, fd, BIG);
    } else if (strcmp(path, "/mem") == 0) {
        char *buf = malloc(BIG);
        for (size_t i = 0; i < BIG; i++)
            buf[i] = (char)(i % 251);
        rt_hreq_send(r, 200, "application/octet-stream", NULL, buf, BIG);
        free(buf);
    } else if (strcmp(path, "/wait") == 0) {
        rt_hreq_suspend(r, rt_now() + 0.3);
    } else if (strcmp(path, "/resume") == 0) {
        rt_hreq_suspend(r, rt_now() + 30);
        to_resume = r;
    } else {
        rt_hreq_error(r, 404, MODAL_ENOTFOUND, "no route %s", path);
    }
}

static void on_resume(rt_hreq *r)
{
    rt_hreq_send(r, 200, "text/plain", NULL, "resumed", 7);
}

static void on_free(rt_hreq *r)
{
    free(rt_hreq_user(r));
}

static const rt_httpd_ops ops = {on_head, on_body, on_done, on_resume, on_free};

/* A self-signed certificate for 127.0.0.1 in a new server context. */
static SSL_CTX *make_ctx(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(key);
    assert_non_null(x);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_use_certificate(ctx, x), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
    X509_free(x);
    EVP_PKEY_free(key);
    return ctx;
}

static int port;

static size_t to_buf(char *p, size_t sz, size_t n, void *ud)
{
    harness_buf *b = ud;
    return harness_curl_write(p, sz, n, b);
}

/* One request with libcurl; returns the status, body in *out (to free). */
static long request(const char *scheme, const char *method, const char *path, const void *body,
                    size_t len, harness_buf *out)
{
    CURL *c = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "%s://127.0.0.1:%d%s", scheme, port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, to_buf);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    return status;
}

static int setup(void **state)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rt_httpd_limits lim = {.max_body = 64u << 20, .max_head = 16384, .header_timeout = 5,
                           .idle_timeout = 10, .max_conns = 100, .threads = 2};
    char err[256];
    assert_int_equal(rt_httpd_init(&ops, &lim, err, sizeof err), 0);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 128), 0);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    port = ntohs(sa.sin_port);
    SSL_CTX *ctx = make_ctx();
    assert_int_equal(rt_httpd_listen(fd, ctx, err, sizeof err), 0);
    SSL_CTX_free(ctx); /* the server holds its own reference */
    return 0;
}

static int teardown(void **state)
{
    rt_httpd_stop();
    return 0;
}

static void check_pattern(const harness_buf *b)
{
    assert_int_equal(b->len, BIG);
    for (size_t i = 0; i < BIG; i++)
        if ((uint8_t)b->p[i] != (uint8_t)(i % 251)) {
            print_error("byte %zu is %u, expected %u\n", i, (uint8_t)b->p[i],
                        (unsigned)(i % 251));
            fail();
        }
}

static void test_answers_over_tls(void **state)
{
    harness_buf b = {0};
    assert_int_equal(request("https", "GET", "/mem", NULL, 0, &b), 200);
    check_pattern(&b);
    free(b.p);
    memset(&b, 0, sizeof b);
    assert_int_equal(request("https", "GET", "/file", NULL, 0, &b), 200);
    check_pattern(&b);
    free(b.p);
    memset(&b, 0, sizeof b);
    assert_int_equal(request("https", "GET", "/nope", NULL, 0, &b), 404);
    char code[64], msg[256];
    assert_int_equal(harness_json_error(b.p, code, sizeof code, msg, sizeof msg), 0);
    free(b.p);
}

static void test_large_body_over_tls(void **state)
{
    char *body = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        body[i] = (char)(i * 13);
    modal__sha256 s;
    modal__sha256_init(&s);
    modal__sha256_update(&s, body, BIG);
    char hex[65], want[128];
    modal__sha256_hex(&s, hex);
    snprintf(want, sizeof want, "%u %s", BIG, hex);
    harness_buf b = {0};
    assert_int_equal(request("https", "POST", "/echo", body, BIG, &b), 200);
    assert_string_equal(b.p, want);
    free(b.p);
    free(body);
}

static void *resume_later(void *arg)
{
    for (int i = 0; i < 200 && to_resume == NULL; i++)
        harness_sleep(0.01);
    harness_sleep(0.1);
    if (to_resume != NULL)
        rt_hreq_resume(to_resume);
    return NULL;
}

static void test_suspended_requests(void **state)
{
    harness_buf b = {0};
    double t0 = harness_now();
    assert_int_equal(request("https", "GET", "/wait", NULL, 0, &b), 200);
    double took = harness_now() - t0;
    assert_string_equal(b.p, "resumed");
    assert_true(took >= 0.29 && took < 5);
    free(b.p);
    memset(&b, 0, sizeof b);
    pthread_t t;
    pthread_create(&t, NULL, resume_later, NULL);
    t0 = harness_now();
    assert_int_equal(request("https", "GET", "/resume", NULL, 0, &b), 200);
    took = harness_now() - t0;
    pthread_join(t, NULL);
    assert_string_equal(b.p, "resumed");
    assert_true(took < 5); /* resumed, long before its 30 s deadline */
    free(b.p);
}

static void test_plain_http_refused(void **state)
{
    harness_buf b = {0};
    double t0 = harness_now();
    assert_int_equal(request("http", "GET", "/mem", NULL, 0, &b), 0);
    assert_true(harness_now() - t0 < 5);
    free(b.p);
    /* The server still serves TLS. */
    memset(&b, 0, sizeof b);
    assert_int_equal(request("https", "GET", "/mem", NULL, 0, &b), 200);
    free(b.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answers_over_tls),
        cmocka_unit_test(test_large_body_over_tls),
        cmocka_unit_test(test_suspended_requests),
        cmocka_unit_test(test_plain_http_refused),
    };
    return cmocka_run_group_tests_name("httpd_tls", tests, setup, teardown) != 0;
}
