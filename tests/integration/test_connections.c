/*
 * test_connections.c: one program, two real runtimes, two connections.
 * Calls, maps and spawned calls land on the runtime of the connection they
 * were made through (checked in each runtime's app log and call table); a
 * spawned call is fetched back through a connection, and not found through
 * the other; closing a connection with calls in flight lets them finish;
 * TLS pins and tokens given as options are used, and errors name them;
 * threads starting calls at once on a new connection upload the executable
 * once.
 * The default connection points nowhere, to prove nothing uses it.
 *
 * This binary is also the worker the runtimes start.
 */
#include "harness.h"

MODAL_APP("itest-conn");

#define NOWHERE "unix:/nonexistent/modal-itest-conn.sock"

/* Print argument 0 (the runtime's app log keeps it), sleep argument 1
 * seconds, return argument 0. */
MODAL_FUNCTION(conn_where)
{
    const char *tag = modal_arg_string(args, 0);
    double nap = modal_value_len(args) > 1 ? modal_arg_float(args, 1) : 0;
    if (tag == NULL)
        return NULL;
    printf("tag %s\n", tag);
    fflush(stdout);
    if (nap > 0)
        harness_sleep(nap);
    return modal_string(tag);
}

static harness ra, rb;
static modal_connection *ca, *cb;
static int tls_port;     /* ra's TLS listener */
static char tls_pin[53]; /* ra's pin */

static int group_setup(void **state)
{
    setenv("MODAL_QUIET_LOGS", "1", 1);
    setenv("MODAL_RUNTIME_URL", NOWHERE, 1);
    setenv("MODAL_TOKEN", "0123456789abcdef0123456789abcdef", 1);
    static const char *const tls[] = {"--listen", "tls:127.0.0.1:0", NULL};
    if (harness_start_with(&ra, tls, false) != 0 || harness_start_with(&rb, NULL, false) != 0)
        return -1;
    tls_port = harness_log_port(&ra, "listening tls:127.0.0.1:");
    harness_tls_fingerprint(&ra, tls_pin);
    if (tls_port <= 0 || tls_pin[0] == '\0')
        return -1;
    modal_error err;
    /* A by its token, B by its token file. */
    modal_connection_options oa = MODAL_CONNECTION_OPTIONS_INIT;
    oa.token = ra.token;
    modal_connection_options ob = MODAL_CONNECTION_OPTIONS_INIT;
    char tokfile[PATH_MAX + 8];
    snprintf(tokfile, sizeof tokfile, "%s/token", rb.dir);
    ob.token_file = tokfile;
    if (modal_connection_open(ra.url, &oa, &ca, &err) != MODAL_OK ||
        modal_connection_open(rb.url, &ob, &cb, &err) != MODAL_OK) {
        fprintf(stderr, "open: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    modal_connection_close(ca);
    modal_connection_close(cb);
    harness_stop(&ra);
    harness_stop(&rb);
    return 0;
}

/* Assert that v is the string want. */
static void assert_str_value(const modal_value *v, const char *want)
{
    const char *got = NULL;
    assert_int_equal(modal_get_string(v, &got, NULL, NULL), MODAL_OK);
    assert_string_equal(got, want);
}

static modal_value *tag_args(const char *tag, double nap)
{
    return modal_args(modal_string(tag), modal_float(nap));
}

/* Whether h's app log holds "tag TAG", waiting up to wait_s for it. */
static bool log_has(const harness *h, const char *tag, double wait_s)
{
    char path[PATH_MAX + 64], want[128];
    snprintf(path, sizeof path, "%s/logs/itest-conn.log", h->dir);
    snprintf(want, sizeof want, "tag %s\n", tag);
    double deadline = harness_now() + wait_s;
    for (;;) {
        char *log = harness_read_file(path, NULL);
        bool found = log != NULL && strstr(log, want) != NULL;
        free(log);
        if (found || harness_now() >= deadline)
            return found;
        harness_sleep(0.05);
    }
}

/* Each tag is in the log of the runtime it was sent to, and only there. */
static void assert_landed(const char *tag, const harness *on, const harness *other)
{
    if (!log_has(on, tag, 10)) {
        print_error("tag %s is not in the app log of %s\n", tag, on->url);
        fail();
    }
    if (log_has(other, tag, 0)) {
        print_error("tag %s reached %s too\n", tag, other->url);
        fail();
    }
}

static void test_calls_land_on_their_runtime(void **state)
{
    modal_error err;
    assert_string_equal(modal_connection_url(ca), ra.url);
    assert_string_equal(modal_connection_url(cb), rb.url);

    modal_value *out = NULL;
    assert_int_equal(modal_fn_remote_on(ca, &conn_where, tag_args("remote-A", 0), &out, &err),
                     MODAL_OK);
    assert_str_value(out, "remote-A");
    modal_value_free(out);
    assert_int_equal(modal_fn_remote_on(cb, &conn_where, tag_args("remote-B", 0), &out, &err),
                     MODAL_OK);
    assert_str_value(out, "remote-B");
    modal_value_free(out);

    modal_value *inputs = modal_list();
    for (int i = 0; i < 5; i++) {
        char tag[32];
        snprintf(tag, sizeof tag, "map-B-%d", i);
        assert_int_equal(modal_list_append(inputs, modal_string(tag), &err), MODAL_OK);
    }
    modal_value *results = NULL;
    assert_int_equal(modal_fn_map_on(cb, &conn_where, inputs, NULL, &results, &err), MODAL_OK);
    assert_int_equal(modal_value_len(results), 5);
    assert_str_value(modal_list_get(results, 4), "map-B-4");
    modal_value_free(results);

    modal_value *star = modal_list();
    assert_int_equal(modal_list_append(star, tag_args("star-A-0", 0), &err), MODAL_OK);
    assert_int_equal(modal_list_append(star, tag_args("star-A-1", 0), &err), MODAL_OK);
    assert_int_equal(modal_fn_starmap_on(ca, &conn_where, star, NULL, &results, &err), MODAL_OK);
    assert_str_value(modal_list_get(results, 1), "star-A-1");
    modal_value_free(results);

    assert_landed("remote-A", &ra, &rb);
    assert_landed("star-A-0", &ra, &rb);
    assert_landed("star-A-1", &ra, &rb);
    assert_landed("remote-B", &rb, &ra);
    for (int i = 0; i < 5; i++) {
        char tag[32];
        snprintf(tag, sizeof tag, "map-B-%d", i);
        assert_landed(tag, &rb, &ra);
    }

    /* The default connection still points where the environment says. */
    modal_status st = modal_fn_remote(&conn_where, tag_args("default", 0), NULL, &err);
    assert_int_equal(st, MODAL_ETRANSPORT);
    assert_message_contains(err, "/nonexistent/modal-itest-conn.sock");
}

/* HTTP status of GET /v1/calls/ID on h's runtime. */
static long call_status(const harness *h, const char *id)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/calls/%s", id);
    long status = 0;
    harness_http_url(h->url, "GET", path, h->token, NULL, 0, NULL, &status, NULL, NULL);
    return status;
}

static void test_spawn_fetched_through_its_connection(void **state)
{
    modal_error err;
    modal_call *call = NULL;
    assert_int_equal(modal_fn_spawn_on(cb, &conn_where, tag_args("spawn-B", 0), &call, &err),
                     MODAL_OK);
    char id[48];
    snprintf(id, sizeof id, "%s", modal_call_id(call));
    long sb = call_status(&rb, id);
    assert_true(sb == 200 || sb == 202);
    assert_int_equal(call_status(&ra, id), 404);

    /* By id, through B: the result. */
    modal_call *again = NULL;
    modal_value *out = NULL;
    assert_int_equal(modal_call_from_id_on(cb, id, &again, &err), MODAL_OK);
    assert_int_equal(modal_call_get(again, 30, &out, &err), MODAL_OK);
    assert_str_value(out, "spawn-B");
    modal_value_free(out);
    modal_call_free(again);
    /* The spawning handle gets it too. */
    assert_int_equal(modal_call_get(call, 30, &out, &err), MODAL_OK);
    assert_str_value(out, "spawn-B");
    modal_value_free(out);
    modal_call_free(call);

    /* By id, through A: not there, and the error names A. */
    assert_int_equal(modal_call_from_id_on(ca, id, &again, &err), MODAL_OK);
    assert_int_equal(modal_call_get(again, 5, NULL, &err), MODAL_ENOTFOUND);
    assert_message_contains(err, id);
    assert_message_contains(err, ra.url);
    modal_call_free(again);
    assert_landed("spawn-B", &rb, &ra);
}

typedef struct in_flight {
    modal_connection *conn;
    atomic_int started;
    modal_status st;
    modal_value *out;
    modal_error err;
} in_flight;

static void *slow_call(void *arg)
{
    in_flight *f = arg;
    atomic_store(&f->started, 1);
    f->st = modal_fn_remote_on(f->conn, &conn_where, tag_args("slow-A", 1.5), &f->out, &f->err);
    return NULL;
}

static void test_close_with_calls_in_flight(void **state)
{
    modal_error err;
    modal_connection_options o = MODAL_CONNECTION_OPTIONS_INIT;
    o.token = ra.token;

    /* A call running in another thread finishes after the close. */
    in_flight f = {0};
    assert_int_equal(modal_connection_open(ra.url, &o, &f.conn, &err), MODAL_OK);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_call, &f), 0);
    while (!atomic_load(&f.started))
        harness_sleep(0.01);
    harness_sleep(0.5); /* well inside the call's 1.5 s */
    modal_connection_close(f.conn);
    pthread_join(t, NULL);
    if (f.st != MODAL_OK)
        print_error("in-flight call: %s\n", f.err.message);
    assert_int_equal(f.st, MODAL_OK);
    assert_str_value(f.out, "slow-A");
    modal_value_free(f.out);

    /* A spawned call's handle outlives its connection, for get and cancel. */
    modal_connection *c = NULL;
    assert_int_equal(modal_connection_open(ra.url, &o, &c, &err), MODAL_OK);
    modal_call *done = NULL, *cancelled = NULL;
    assert_int_equal(modal_fn_spawn_on(c, &conn_where, tag_args("after-close", 0), &done, &err),
                     MODAL_OK);
    assert_int_equal(modal_fn_spawn_on(c, &conn_where, tag_args("cancel-me", 30), &cancelled,
                                       &err), MODAL_OK);
    modal_connection_close(c);
    modal_value *out = NULL;
    assert_int_equal(modal_call_get(done, 30, &out, &err), MODAL_OK);
    assert_str_value(out, "after-close");
    modal_value_free(out);
    assert_int_equal(modal_call_cancel(cancelled, &err), MODAL_OK);
    assert_int_equal(modal_call_get(cancelled, 30, NULL, &err), MODAL_ECANCELLED);
    modal_call_free(done);
    modal_call_free(cancelled);
}

static void test_tls_and_token_options(void **state)
{
    modal_error err;
    char url[64];
    snprintf(url, sizeof url, "https://127.0.0.1:%d", tls_port);
    modal_connection_options o = MODAL_CONNECTION_OPTIONS_INIT;
    o.token = ra.token;
    o.tls_fingerprint = tls_pin;
    modal_connection *c = NULL;
    assert_int_equal(modal_connection_open(url, &o, &c, &err), MODAL_OK);
    modal_value *out = NULL;
    assert_int_equal(modal_fn_remote_on(c, &conn_where, tag_args("tls-A", 0), &out, &err),
                     MODAL_OK);
    assert_str_value(out, "tls-A");
    modal_value_free(out);
    modal_connection_close(c);
    assert_landed("tls-A", &ra, &rb);

    /* Another key pinned: refused before anything is sent, naming the
     * option and both fingerprints. */
    const char *wrong = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    o.tls_fingerprint = wrong;
    assert_int_equal(modal_connection_open(url, &o, &c, &err), MODAL_OK);
    assert_int_equal(modal_fn_remote_on(c, &conn_where, tag_args("pinned-wrong", 0), NULL, &err),
                     MODAL_EAUTH);
    assert_message_contains(err, "does not match opts->tls_fingerprint");
    assert_message_contains(err, wrong);
    assert_message_contains(err, tls_pin);
    modal_connection_close(c);

    /* A token the runtime does not know: the message names the options. */
    modal_connection_options bad = MODAL_CONNECTION_OPTIONS_INIT;
    bad.token = "not-the-token";
    assert_int_equal(modal_connection_open(rb.url, &bad, &c, &err), MODAL_OK);
    assert_int_equal(modal_fn_remote_on(c, &conn_where, tag_args("bad-token", 0), NULL, &err),
                     MODAL_EAUTH);
    assert_message_contains(err, rb.url);
    assert_message_contains(err, "make opts->token or opts->token_file match");
    modal_connection_close(c);
    assert_false(log_has(&ra, "pinned-wrong", 0));
    assert_false(log_has(&rb, "bad-token", 0));
}

/* Log hook: count "uploaded this executable" messages naming hook_url. */
static const char *hook_url;
static atomic_int uploads;

static void count_uploads(modal_log_level level, const char *msg, void *user)
{
    if (strstr(msg, "uploaded this executable") != NULL && strstr(msg, hook_url) != NULL)
        atomic_fetch_add(&uploads, 1);
}

typedef struct first_call {
    modal_connection *conn;
    pthread_barrier_t *go;
    int n;
    modal_status st;
    modal_error err;
} first_call;

static void *first_call_main(void *arg)
{
    first_call *f = arg;
    char tag[32];
    snprintf(tag, sizeof tag, "first-%d", f->n);
    pthread_barrier_wait(f->go);
    f->st = modal_fn_remote_on(f->conn, &conn_where, tag_args(tag, 0), NULL, &f->err);
    return NULL;
}

static void test_first_calls_at_once_upload_once(void **state)
{
    enum { N = 8 };
    harness rc;
    assert_int_equal(harness_start_with(&rc, NULL, false), 0);
    modal_error err;
    modal_connection_options o = MODAL_CONNECTION_OPTIONS_INIT;
    o.token = rc.token;
    modal_connection *c = NULL;
    assert_int_equal(modal_connection_open(rc.url, &o, &c, &err), MODAL_OK);
    hook_url = rc.url;
    modal_set_log_hook(count_uploads, NULL);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N);
    first_call f[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        f[i] = (first_call){.conn = c, .go = &go, .n = i};
        assert_int_equal(pthread_create(&t[i], NULL, first_call_main, &f[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        if (f[i].st != MODAL_OK)
            print_error("thread %d: %s\n", i, f[i].err.message);
        assert_int_equal(f[i].st, MODAL_OK);
    }
    pthread_barrier_destroy(&go);
    modal_set_log_hook(NULL, NULL);
    assert_int_equal(atomic_load(&uploads), 1);
    for (int i = 0; i < N; i++) {
        char tag[32];
        snprintf(tag, sizeof tag, "first-%d", i);
        assert_landed(tag, &rc, &ra);
    }
    modal_connection_close(c);
    harness_stop(&rc);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calls_land_on_their_runtime),
        cmocka_unit_test(test_spawn_fetched_through_its_connection),
        cmocka_unit_test(test_close_with_calls_in_flight),
        cmocka_unit_test(test_tls_and_token_options),
        cmocka_unit_test(test_first_calls_at_once_upload_once),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
