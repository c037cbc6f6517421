/*
 * test_tls.c: the runtime's TLS listeners and the client's pinning. A
 * call over TLS with the runtime's self-signed certificate pinned; a wrong
 * pin refused before any request, with both fingerprints in the message;
 * plain HTTP to the TLS port refused while the runtime keeps serving; an
 * operator's certificate and key; a key that does not match its
 * certificate; a non-loopback tcp: listener that serves TLS unless
 * --insecure-plain-http says otherwise; malformed client settings.
 *
 * Only loopback traffic: a non-loopback listener is bound on 0.0.0.0 and
 * reached through 127.0.0.1.
 */
#include "harness.h"

MODAL_APP("itest-tls");

MODAL_FUNCTION(add, .timeout = 60)
{
    return modal_int(modal_arg_int(args, 0) + modal_arg_int(args, 1));
}

/* Creates the file named by argument 0: proof that the call ran. */
MODAL_FUNCTION(mark, .timeout = 60)
{
    FILE *f = fopen(modal_arg_string(args, 0), "w");
    if (f != NULL)
        fclose(f);
    return modal_int(1);
}

static int tls_port;              /* rt's tls:127.0.0.1:0 listener */
static char tls_pin[53];          /* rt's pin, from <state>/tls/fingerprint */

static int group_setup(void **state)
{
    static const char *const extra[] = {"--listen", "tls:127.0.0.1:0", NULL};
    setenv("MODAL_QUIET_LOGS", "1", 1);
    if (harness_start_with(&rt, extra, true) != 0)
        return -1;
    tls_port = harness_log_port(&rt, "listening tls:127.0.0.1:");
    harness_tls_fingerprint(&rt, tls_pin);
    return tls_port > 0 && tls_pin[0] != '\0' ? 0 : -1;
}

static int group_teardown(void **state)
{
    unsetenv("MODAL_TLS_FINGERPRINT");
    harness_stop(&rt);
    return 0;
}

/* The "calls" count of rt's GET /v1/health over its plain listener. */
static long calls_seen(void)
{
    long status = 0, n = -1;
    char *body = NULL;
    harness_http(&rt, "GET", "/v1/health", rt.token, NULL, 0, &status, &body, NULL);
    cJSON *j = cJSON_Parse(body ? body : "");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "calls");
    if (status == 200 && cJSON_IsNumber(c))
        n = (long)c->valuedouble;
    cJSON_Delete(j);
    free(body);
    return n;
}

static void expect_add_works(void)
{
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_remote(&add, modal_args(modal_int(2), modal_int(40)), &out, &err), err);
    int64_t v = 0;
    assert_ok(modal_get_int(out, &v, &err), err);
    assert_int_equal(v, 42);
    modal_value_free(out);
}

static void test_call_over_tls_with_pinned_self_signed_cert(void **state)
{
    /* The runtime made its own certificate, private to it, and its pin is
     * what OpenSSL computes for that certificate. */
    char path[PATH_MAX + 32], pin[53];
    struct stat st;
    snprintf(path, sizeof path, "%s/tls/key.pem", rt.dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(path, sizeof path, "%s/tls/cert.pem", rt.dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    harness_openssl_pin(path, pin);
    assert_string_equal(pin, tls_pin);
    snprintf(path, sizeof path, "%s/runtime.log", rt.dir);
    char *log = harness_read_file(path, NULL);
    char line[100];
    snprintf(line, sizeof line, "tls fingerprint %s", tls_pin);
    assert_contains(log, line);
    free(log);

    harness_point_tls(tls_port, tls_pin);
    assert_string_equal(modal_runtime_url(), getenv("MODAL_RUNTIME_URL"));
    expect_add_works();
    /* Several pins (a key being replaced) are accepted when one matches. */
    char two[120];
    snprintf(two, sizeof two, "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=;%s", tls_pin);
    setenv("MODAL_TLS_FINGERPRINT", two, 1);
    expect_add_works();
}

static void test_wrong_pin_refused_before_any_request(void **state)
{
    /* A first call uploads the executable, so the refused one below would
     * go straight to POST /v1/calls with the token if the pin let it. */
    harness_point_tls(tls_port, tls_pin);
    expect_add_works();
    long before = calls_seen();
    assert_true(before > 0);

    const char *wrong = "sha256//n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=";
    harness_point_tls(tls_port, wrong);
    char marker[PATH_MAX + 16];
    snprintf(marker, sizeof marker, "%s/ran", rt.dir);
    modal_value *out = NULL;
    modal_error err;
    assert_status(modal_fn_remote(&mark, modal_args(modal_string(marker)), &out, &err),
                  MODAL_EAUTH, err);
    assert_null(out);
    assert_message_contains(err, "does not match MODAL_TLS_FINGERPRINT");
    char expected[80], actual[80];
    snprintf(expected, sizeof expected, "expected %s", wrong);
    snprintf(actual, sizeof actual, "presented %s", tls_pin);
    assert_message_contains(err, expected);
    assert_message_contains(err, actual);

    harness_sleep(0.3);
    assert_int_equal(access(marker, F_OK), -1);
    assert_int_equal(calls_seen(), before);
}

static void test_plain_http_to_tls_port_refused(void **state)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", tls_port);
    long status = 0;
    char *body = NULL;
    int rc = harness_http_url(url, "GET", "/v1/health", rt.token, NULL, 0, NULL, &status, &body,
                              NULL);
    assert_int_not_equal(rc, CURLE_OK);
    assert_int_equal(status, 0);
    free(body);
    /* The runtime is still there and still serves TLS. */
    assert_true(harness_pid_alive(rt.pid));
    harness_point_tls(tls_port, tls_pin);
    expect_add_works();
}

static void test_client_settings_checked(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    /* A malformed pin is named, and nothing is sent. */
    harness_point_tls(tls_port, "sha256//not-a-pin");
    assert_status(modal_fn_remote(&add, modal_args(modal_int(1), modal_int(1)), &out, &err),
                  MODAL_EINVAL, err);
    assert_message_contains(err, "MODAL_TLS_FINGERPRINT=\"sha256//not-a-pin\"");
    /* Too long a value: the message says which variable, and shows it. */
    char longpin[700];
    snprintf(longpin, sizeof longpin, "%s", tls_pin);
    for (size_t n = strlen(longpin); n + 54 < sizeof longpin; n = strlen(longpin))
        snprintf(longpin + n, sizeof longpin - n, ";%s", tls_pin);
    harness_point_tls(tls_port, longpin);
    assert_status(modal_fn_remote(&add, modal_args(modal_int(1), modal_int(1)), &out, &err),
                  MODAL_EINVAL, err);
    char shown[80];
    snprintf(shown, sizeof shown, "MODAL_TLS_FINGERPRINT=\"%s;", tls_pin);
    assert_message_contains(err, shown);
    assert_null(strstr(err.message, "MODAL_TLS_CA"));
    /* A pin with plain HTTP would protect nothing. */
    setenv("MODAL_RUNTIME_URL", rt.url, 1);
    setenv("MODAL_TLS_FINGERPRINT", tls_pin, 1);
    assert_status(modal_fn_remote(&add, modal_args(modal_int(1), modal_int(1)), &out, &err),
                  MODAL_EINVAL, err);
    assert_message_contains(err, "is plain HTTP");
    /* Without a pin, the self-signed certificate fails CA verification,
     * and the message says what to set. */
    harness_point_tls(tls_port, NULL);
    assert_status(modal_fn_remote(&add, modal_args(modal_int(1), modal_int(1)), &out, &err),
                  MODAL_ETRANSPORT, err);
    assert_message_contains(err, "MODAL_TLS_FINGERPRINT");
    /* A private CA file that cannot be read is named. */
    setenv("MODAL_TLS_CA", "/nonexistent/ca.pem", 1);
    assert_status(modal_fn_remote(&add, modal_args(modal_int(1), modal_int(1)), &out, &err),
                  MODAL_EINVAL, err);
    assert_message_contains(err, "MODAL_TLS_CA=\"/nonexistent/ca.pem\"");
    unsetenv("MODAL_TLS_CA");
    /* The runtime's own certificate as the CA: verified without a pin
     * (its names include 127.0.0.1). */
    char ca[PATH_MAX + 32];
    snprintf(ca, sizeof ca, "%s/tls/cert.pem", rt.dir);
    setenv("MODAL_TLS_CA", ca, 1);
    expect_add_works();
    unsetenv("MODAL_TLS_CA");
    harness_point_tls(tls_port, tls_pin);
}

/* Run modal-runtime with args until it exits (--idle-exit), output kept. */
static int run_runtime(const char *const *args, char **output)
{
    const char *argv[24];
    size_t n = 0;
    argv[n++] = harness_runtime_bin();
    for (size_t i = 0; args[i] != NULL && n < 23; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return harness_run((char *const *)argv, 20, output);
}

static void test_operator_cert_and_key(void **state)
{
    char dir[] = "/tmp/modal-tls-XXXXXX", key[64], cert[64], st_dir[80], pin[53];
    assert_non_null(mkdtemp(dir));
    snprintf(key, sizeof key, "%s/op.key", dir);
    snprintf(cert, sizeof cert, "%s/op.crt", dir);
    snprintf(st_dir, sizeof st_dir, "%s/state", dir);
    assert_int_equal(harness_make_cert(key, cert, "operator"), 0);
    harness_openssl_pin(cert, pin);
    assert_true(pin[0] != '\0');

    /* It prints the operator certificate's fingerprint on stdout. */
    const char *args[] = {"--state-dir", st_dir, "--listen", "tls:127.0.0.1:0", "--tls-cert",
                          cert, "--tls-key", key, "--idle-exit", "1", NULL};
    char *out = NULL;
    int ws = run_runtime(args, &out);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    char line[100];
    snprintf(line, sizeof line, "tls fingerprint %s\n", pin);
    assert_contains(out, line);
    assert_contains(out, "listening tls:127.0.0.1:");
    free(out);
    /* No self-signed certificate was made beside it. */
    char path[200];
    snprintf(path, sizeof path, "%s/tls/key.pem", st_dir);
    assert_int_equal(access(path, F_OK), -1);

    /* And serves it: a call pinned to it works. */
    harness h;
    const char *extra[] = {"--listen", "tls:127.0.0.1:0", "--tls-cert", cert, "--tls-key", key,
                           NULL};
    assert_int_equal(harness_start_with(&h, extra, false), 0);
    int port = harness_log_port(&h, "listening tls:127.0.0.1:");
    assert_true(port > 0);
    char url[64];
    snprintf(url, sizeof url, "https://127.0.0.1:%d", port);
    setenv("MODAL_RUNTIME_URL", url, 1);
    setenv("MODAL_TOKEN", h.token, 1);
    setenv("MODAL_TLS_FINGERPRINT", pin, 1);
    expect_add_works();
    /* The shared runtime's pin is refused here: keys differ. */
    setenv("MODAL_TLS_FINGERPRINT", tls_pin, 1);
    modal_value *r = NULL;
    modal_error err;
    assert_status(modal_fn_remote(&add, modal_args(modal_int(1), modal_int(1)), &r, &err),
                  MODAL_EAUTH, err);
    assert_message_contains(err, pin);
    harness_stop(&h);
    setenv("MODAL_TOKEN", rt.token, 1);
    harness_point_tls(tls_port, tls_pin);
    harness_rmtree(dir);
}

static void test_mismatched_cert_and_key_refused(void **state)
{
    char dir[] = "/tmp/modal-tls-XXXXXX", k1[64], c1[64], k2[64], c2[64], st_dir[80];
    assert_non_null(mkdtemp(dir));
    snprintf(k1, sizeof k1, "%s/a.key", dir);
    snprintf(c1, sizeof c1, "%s/a.crt", dir);
    snprintf(k2, sizeof k2, "%s/b.key", dir);
    snprintf(c2, sizeof c2, "%s/b.crt", dir);
    snprintf(st_dir, sizeof st_dir, "%s/state", dir);
    assert_int_equal(harness_make_cert(k1, c1, "a"), 0);
    assert_int_equal(harness_make_cert(k2, c2, "b"), 0);
    const char *args[] = {"--state-dir", st_dir, "--listen", "tls:127.0.0.1:0", "--tls-cert",
                          c1, "--tls-key", k2, "--idle-exit", "1", NULL};
    char *out = NULL;
    int ws = run_runtime(args, &out);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 1);
    char want[200];
    snprintf(want, sizeof want, "the TLS key %s does not match the certificate %s", k2, c1);
    assert_contains(out, want);
    assert_contains(out, "key values mismatch"); /* OpenSSL's reason */
    assert_true(strstr(out, "listening") == NULL);
    free(out);

    /* A missing file and a lone --tls-cert are named too. */
    const char *missing[] = {"--state-dir", st_dir, "--listen", "tls:127.0.0.1:0", "--tls-cert",
                             "/nonexistent/c.pem", "--tls-key", k1, NULL};
    ws = run_runtime(missing, &out);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 1);
    assert_contains(out, "--tls-cert /nonexistent/c.pem: No such file or directory");
    free(out);
    const char *lone[] = {"--state-dir", st_dir, "--listen", "tls:127.0.0.1:0", "--tls-cert",
                          c1, NULL};
    ws = run_runtime(lone, &out);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 2);
    assert_contains(out, "give both --tls-cert and --tls-key");
    free(out);
    harness_rmtree(dir);
}

static void test_self_signed_kept_across_restarts(void **state)
{
    char d[] = "/tmp/modal-tls-XXXXXX", path[80], line[100];
    assert_non_null(mkdtemp(d));
    const char *args[] = {"--state-dir", d, "--listen", "tls:127.0.0.1:0", "--idle-exit", "1",
                          NULL};
    char *first = NULL, *second = NULL;
    assert_int_equal(run_runtime(args, &first), 0);
    char pin[53];
    snprintf(path, sizeof path, "%s/tls/cert.pem", d);
    harness_openssl_pin(path, pin);
    snprintf(line, sizeof line, "tls fingerprint %s\n", pin);
    assert_contains(first, line);
    /* A restart serves the same key: clients' pins stay valid. */
    assert_int_equal(run_runtime(args, &second), 0);
    assert_contains(second, line);
    free(first);
    free(second);
    /* A damaged certificate stops the start, named, with what to do. */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", f);
    fclose(f);
    int ws = run_runtime(args, &first);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 1);
    char want[200];
    snprintf(want, sizeof want, "cannot load the TLS certificate %s: error:", path);
    assert_contains(first, want);
    assert_contains(first, "to have a new certificate made");
    free(first);
    harness_rmtree(d);
}

static void test_non_loopback_tcp_serves_tls(void **state)
{
    /* tcp: on a non-loopback address (0.0.0.0, reached through loopback)
     * serves TLS with the self-signed certificate. */
    harness h;
    const char *extra[] = {"--listen", "tcp:0.0.0.0:0", NULL};
    assert_int_equal(harness_start_with(&h, extra, false), 0);
    int port = harness_log_port(&h, "listening tls:0.0.0.0:");
    assert_true(port > 0);
    char pin[53], url[64];
    harness_tls_fingerprint(&h, pin);
    assert_true(pin[0] != '\0');
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    long status = 0;
    assert_int_not_equal(harness_http_url(url, "GET", "/v1/health", h.token, NULL, 0, NULL,
                                          &status, NULL, NULL),
                         CURLE_OK);
    setenv("MODAL_TOKEN", h.token, 1);
    harness_point_tls(port, pin);
    expect_add_works();
    harness_stop(&h);
    setenv("MODAL_TOKEN", rt.token, 1);
    harness_point_tls(tls_port, tls_pin);
}

static void test_insecure_plain_http_is_explicit_and_loud(void **state)
{
    harness h;
    const char *extra[] = {"--listen", "tcp:0.0.0.0:0", "--insecure-plain-http", NULL};
    assert_int_equal(harness_start_with(&h, extra, false), 0);
    int port = harness_log_port(&h, "listening tcp:0.0.0.0:");
    assert_true(port > 0);
    char url[64], path[PATH_MAX + 16];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    long status = 0;
    assert_int_equal(harness_http_url(url, "GET", "/v1/health", h.token, NULL, 0, NULL, &status,
                                      NULL, NULL),
                     CURLE_OK);
    assert_int_equal(status, 200);
    snprintf(path, sizeof path, "%s/runtime.log", h.dir);
    char *log = harness_read_file(path, NULL);
    assert_contains(log, "WARNING: --insecure-plain-http: tcp:0.0.0.0:0 serves plain HTTP");
    free(log);
    snprintf(path, sizeof path, "%s/tls", h.dir);
    assert_int_equal(access(path, F_OK), -1); /* no certificate was needed */
    harness_stop(&h);

    /* On stderr too; and a loopback tcp: listener stays plain and quiet. */
    char d[] = "/tmp/modal-tls-XXXXXX";
    assert_non_null(mkdtemp(d));
    const char *args[] = {"--state-dir", d, "--listen", "tcp:0.0.0.0:0", "--insecure-plain-http",
                          "--listen", "tcp:127.0.0.1:0", "--idle-exit", "1", NULL};
    char *out = NULL;
    int ws = run_runtime(args, &out);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    assert_contains(out, "WARNING: --insecure-plain-http: tcp:0.0.0.0:0");
    assert_true(strstr(out, "tcp:127.0.0.1:0 serves plain") == NULL);
    assert_contains(out, "listening tcp:127.0.0.1:");
    assert_true(strstr(out, "tls fingerprint") == NULL);
    free(out);
    harness_rmtree(d);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_over_tls_with_pinned_self_signed_cert),
        cmocka_unit_test(test_wrong_pin_refused_before_any_request),
        cmocka_unit_test(test_plain_http_to_tls_port_refused),
        cmocka_unit_test(test_client_settings_checked),
        cmocka_unit_test(test_operator_cert_and_key),
        cmocka_unit_test(test_mismatched_cert_and_key_refused),
        cmocka_unit_test(test_self_signed_kept_across_restarts),
        cmocka_unit_test(test_non_loopback_tcp_serves_tls),
        cmocka_unit_test(test_insecure_plain_http_is_explicit_and_loud),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
