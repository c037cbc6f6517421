/*
 * test_conn.c: connections without a runtime. modal_runtime_url and
 * modal_app_name from many threads while the default connection is first
 * built; the default connection following the environment without
 * changing a string handed out before; modal_connection_open refusing each
 * bad URL and option by name and accepting good ones; the retry policy for
 * transport errors, timed against a socket nobody listens on; the
 * per-runtime spec set.
 */
#include "testutil.h"

#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NOSOCK "unix:/nonexistent/modal-test-conn.sock"
#define TOKEN "0123456789abcdef0123456789abcdef"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- many threads, first use ------------------------------------------ */

#define THREADS 16
#define ROUNDS 2000

static pthread_barrier_t start_line;
static atomic_int wrong;
static const char *seen_url[THREADS];
static const char *seen_app[THREADS];

static void *hammer(void *arg)
{
    size_t me = (size_t)arg;
    pthread_barrier_wait(&start_line);
    for (int i = 0; i < ROUNDS; i++) {
        const char *u = modal_runtime_url();
        const char *a = modal_app_name();
        if (strcmp(u, NOSOCK) != 0 || strcmp(a, "test_conn") != 0)
            atomic_fetch_add(&wrong, 1);
        if (i == 0) {
            seen_url[me] = u;
            seen_app[me] = a;
        } else if (u != seen_url[me] || a != seen_app[me]) {
            atomic_fetch_add(&wrong, 1); /* a string moved under a reader */
        }
    }
    return NULL;
}

/* Runs first: nothing has built the default connection or the app name. */
static void test_threads_build_default(void **state)
{
    (void)state;
    pthread_t t[THREADS];
    pthread_barrier_init(&start_line, NULL, THREADS);
    for (size_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, (void *)i), 0);
    for (size_t i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start_line);
    assert_int_equal(atomic_load(&wrong), 0);
    for (size_t i = 1; i < THREADS; i++) {
        assert_ptr_equal(seen_url[i], seen_url[0]);
        assert_ptr_equal(seen_app[i], seen_app[0]);
    }
}

/* ---- the default connection follows the environment ------------------ */

static void test_default_follows_env(void **state)
{
    (void)state;
    const char *first = modal_runtime_url();
    assert_string_equal(first, NOSOCK);
    setenv("MODAL_RUNTIME_URL", "http://127.0.0.1:9/", 1);
    const char *second = modal_runtime_url();
    assert_string_equal(second, "http://127.0.0.1:9");
    /* What was handed out before still reads the same. */
    assert_string_equal(first, NOSOCK);
    assert_string_equal(modal_connection_url(NULL), "http://127.0.0.1:9");
    setenv("MODAL_RUNTIME_URL", "bogus://x", 1);
    const char *bad = modal_runtime_url();
    assert_non_null(strstr(bad, "(invalid: MODAL_RUNTIME_URL=\"bogus://x\" is not understood"));
    setenv("MODAL_RUNTIME_URL", NOSOCK, 1);
    assert_ptr_equal(modal_runtime_url(), first); /* the same text, kept once */
    assert_string_equal(second, "http://127.0.0.1:9");
}

/* ---- modal_connection_open -------------------------------------------- */

typedef struct refusal {
    const char *url;
    modal_connection_options o;
    modal_status code;
    const char *needle;
} refusal;

static void test_open_refusals(void **state)
{
    (void)state;
    char longurl[700];
    memset(longurl, 'a', sizeof longurl);
    memcpy(longurl, "http://", 7);
    longurl[sizeof longurl - 1] = '\0';
    const char *pin = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    char longtok[300];
    memset(longtok, 'k', sizeof longtok);
    longtok[sizeof longtok - 1] = '\0';
#define O(...) {.size = sizeof(modal_connection_options), __VA_ARGS__}
    const refusal cases[] = {
        {"ftp://host", O(.token = TOKEN), MODAL_EINVAL,
         "url=\"ftp://host\" is not understood; use unix:/path/to.sock"},
        {"http://", O(.token = TOKEN), MODAL_EINVAL, "url=\"http://\" is not understood"},
        {"unix:relative.sock", O(.token = TOKEN), MODAL_EINVAL,
         "url=\"unix:relative.sock\": after \"unix:\" give an absolute socket path"},
        {longurl, O(.token = TOKEN), MODAL_EINVAL, "is 699 bytes long; at most 511"},
        {"https://127.0.0.1:1", O(0), MODAL_EINVAL,
         "no token for the runtime at https://127.0.0.1:1: set opts->token or "
         "opts->token_file"},
        {"unix:/tmp/x.sock", O(.token = TOKEN, .token_file = "/tmp/t"), MODAL_EINVAL,
         "both opts->token and opts->token_file are set"},
        {"unix:/tmp/x.sock", O(.token = "two words"), MODAL_EINVAL,
         "opts->token holds a space, control or non-ASCII character"},
        {"unix:/tmp/x.sock", O(.token = "line\r\nX-Evil: 1"), MODAL_EINVAL,
         "opts->token holds a space, control"},
        {"unix:/tmp/x.sock", O(.token = ""), MODAL_EINVAL, "opts->token is empty"},
        {"unix:/tmp/x.sock", O(.token = longtok), MODAL_EINVAL,
         "opts->token is 299 bytes long; at most 255"},
        {"unix:/tmp/x.sock", O(.token_file = ""), MODAL_EINVAL, "opts->token_file is empty"},
        {"unix:/tmp/x.sock", O(.token_file = "/nonexistent/token"), MODAL_EAUTH,
         "/nonexistent/token"},
        {"https://127.0.0.1:1", O(.token = TOKEN, .tls_fingerprint = "sha256//short"),
         MODAL_EINVAL, "opts->tls_fingerprint=\"sha256//short\" is not a public-key fingerprint"},
        {"http://127.0.0.1:1", O(.token = TOKEN, .tls_fingerprint = pin), MODAL_EINVAL,
         "opts->tls_fingerprint is set but url=\"http://127.0.0.1:1\" is plain HTTP"},
        {"https://127.0.0.1:1", O(.token = TOKEN, .tls_ca = "/nonexistent/ca.pem"),
         MODAL_EINVAL, "opts->tls_ca=\"/nonexistent/ca.pem\": cannot read it"},
        {"unix:/tmp/x.sock", O(.token = TOKEN, .transport_retries = 101), MODAL_EINVAL,
         "opts->transport_retries is 101; give 0"},
        {"unix:/tmp/x.sock", O(.token = TOKEN, .transport_retries = -2), MODAL_EINVAL,
         "opts->transport_retries is -2"},
        {"unix:/tmp/x.sock", O(.token = TOKEN, .retry_delay = -1), MODAL_EINVAL,
         "opts->retry_delay is -1; give seconds from 0"},
        {"unix:/tmp/x.sock", O(.token = TOKEN, .retry_delay = 61), MODAL_EINVAL,
         "opts->retry_delay is 61"},
        {"unix:/tmp/x.sock", O(.token = TOKEN, .retry_delay = NAN), MODAL_EINVAL,
         "opts->retry_delay is nan"},
        {"unix:/tmp/x.sock", {.size = 0, .token = TOKEN}, MODAL_EINVAL,
         "opts->size is 0, not the size of a modal_connection_options"},
        {"unix:/tmp/x.sock", {.size = sizeof(modal_connection_options) + 8, .token = TOKEN},
         MODAL_EINVAL, "start from MODAL_CONNECTION_OPTIONS_INIT"},
    };
#undef O
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        modal_error err;
        modal_connection *c = (modal_connection *)&err; /* must be reset to NULL */
        modal_status st = modal_connection_open(cases[i].url, &cases[i].o, &c, &err);
        if (st != cases[i].code || strstr(err.message, cases[i].needle) == NULL ||
            strncmp(err.message, "modal_connection_open: ", 23) != 0) {
            print_error("case %zu (%s): got %s \"%s\", expected %s with \"%s\"\n", i,
                        cases[i].url, modal_status_name(st), err.message,
                        modal_status_name(cases[i].code), cases[i].needle);
            fail();
        }
        assert_int_equal(err.code, cases[i].code);
        assert_null(c);
        assert_null(strstr(err.message, "kkkkkkkk")); /* a token is never shown */
    }
}

static void test_open_accepts(void **state)
{
    (void)state;
    modal_error err;
    modal_connection *c = NULL;
    modal_connection_options o = MODAL_CONNECTION_OPTIONS_INIT;
    o.token = TOKEN;
    assert_int_equal(modal_connection_open("http://127.0.0.1:9///", &o, &c, &err), MODAL_OK);
    assert_string_equal(modal_connection_url(c), "http://127.0.0.1:9");
    assert_int_equal(err.code, MODAL_OK);
    modal_connection_close(c);

    /* A token file is read when the connection opens. */
    char path[] = "/tmp/modal-test-conn-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, TOKEN "\n", sizeof TOKEN), (ssize_t)sizeof TOKEN);
    close(fd);
    modal_connection_options of = MODAL_CONNECTION_OPTIONS_INIT;
    of.token_file = path;
    assert_int_equal(modal_connection_open("unix:/tmp/x.sock", &of, &c, &err), MODAL_OK);
    assert_string_equal(modal_connection_url(c), "unix:/tmp/x.sock");
    assert_string_equal(c->token, TOKEN);
    modal_connection_close(c);
    /* The same file readable by others is refused, naming it. */
    chmod(path, 0644);
    assert_int_equal(modal_connection_open("unix:/tmp/x.sock", &of, &c, &err), MODAL_EAUTH);
    assert_message_contains(err, path);
    assert_null(c);
    unlink(path);

    /* No URL: the embedded runtime of MODAL_HOME; nothing is started. */
    char home[] = "/tmp/modal-test-conn-home-XXXXXX";
    assert_non_null(mkdtemp(home));
    char *saved = getenv("MODAL_HOME") ? strdup(getenv("MODAL_HOME")) : NULL;
    setenv("MODAL_HOME", home, 1);
    assert_int_equal(modal_connection_open(NULL, NULL, &c, &err), MODAL_OK);
    char want[128];
    snprintf(want, sizeof want, "unix:%s/runtime.sock", home);
    assert_string_equal(modal_connection_url(c), want);
    assert_int_equal(access(want + 5, F_OK), -1);
    modal_connection_close(c);
    if (saved != NULL)
        setenv("MODAL_HOME", saved, 1);
    else
        unsetenv("MODAL_HOME");
    free(saved);
    rmdir(home);
}

/* ---- retry policy ------------------------------------------------------ */

/* Seconds a call fetch through a connection to a socket nobody serves
 * takes to fail, with retries and delay as given. */
static double time_failure(int retries, double delay)
{
    modal_error err;
    modal_connection *c = NULL;
    modal_connection_options o = MODAL_CONNECTION_OPTIONS_INIT;
    o.token = TOKEN;
    o.transport_retries = retries;
    o.retry_delay = delay;
    assert_int_equal(modal_connection_open(NOSOCK, &o, &c, &err), MODAL_OK);
    modal_call *call = NULL;
    assert_int_equal(modal_call_from_id_on(c, "fc-0123456789abcdefghjkmnpqrs", &call, &err),
                     MODAL_OK);
    modal_connection_close(c); /* the handle keeps it */
    double t0 = now_s();
    assert_int_equal(modal_call_get(call, 0, NULL, &err), MODAL_ETRANSPORT);
    double took = now_s() - t0;
    assert_message_contains(err, "/nonexistent/modal-test-conn.sock");
    modal_call_free(call);
    return took;
}

static void test_retry_policy(void **state)
{
    (void)state;
    time_failure(MODAL_CONNECTION_NO_RETRY, 0); /* loads libcurl: not timed */
    double none = time_failure(MODAL_CONNECTION_NO_RETRY, 0);
    double two = time_failure(2, 0.25); /* 0.25 s, then 0.5 s */
    print_message("no retry: %.3f s; 2 retries from 0.25 s: %.3f s\n", none, two);
    assert_true(none < 0.2);
    assert_true(two >= 0.75);
    assert_true(two < 3.0);
}

/* ---- per-runtime spec set ---------------------------------------------- */

static void test_spec_set(void **state)
{
    (void)state;
    modal_error err;
    modal_connection *c = NULL;
    modal_connection_options o = MODAL_CONNECTION_OPTIONS_INIT;
    o.token = TOKEN;
    assert_int_equal(modal_connection_open(NOSOCK, &o, &c, &err), MODAL_OK);
    char h[100][65];
    for (int i = 0; i < 100; i++)
        snprintf(h[i], sizeof h[i], "%064x", i);
    unsigned long gen = modal__conn_generation(c);
    assert_false(modal__conn_spec_known(c, h[0]));
    for (int i = 0; i < 100; i++)
        assert_int_equal(modal__conn_spec_add(c, h[i], gen, &err), MODAL_OK);
    assert_int_equal(modal__conn_spec_add(c, h[5], gen, &err), MODAL_OK); /* again: once */
    assert_int_equal(c->nspecs, 100);
    for (int i = 0; i < 100; i++)
        assert_true(modal__conn_spec_known(c, h[i]));
    modal__conn_spec_forget(c, h[5]);
    assert_false(modal__conn_spec_known(c, h[5]));
    assert_true(modal__conn_spec_known(c, h[99]));
    /* A registration made against an older runtime is not recorded. */
    assert_int_equal(modal__conn_spec_add(c, h[5], gen + 1, &err), MODAL_OK);
    assert_false(modal__conn_spec_known(c, h[5]));
    assert_int_equal(modal__conn_spec_add(c, "abc", gen, &err), MODAL_EINVAL);
    assert_message_contains(err, "\"abc\"");
    modal_connection_close(c);
}

int main(void)
{
    /* Nothing here may reach a runtime. */
    setenv("MODAL_RUNTIME_URL", NOSOCK, 1);
    setenv("MODAL_TOKEN", TOKEN, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_build_default), /* first: builds the default */
        cmocka_unit_test(test_default_follows_env),
        cmocka_unit_test(test_open_refusals),
        cmocka_unit_test(test_open_accepts),
        cmocka_unit_test(test_retry_policy),
        cmocka_unit_test(test_spec_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
