/*
 * test_remote.c: remote calls against a real runtime: results, spawn/get/
 * cancel, retries, timeouts, crashes, function errors, and the HTTP API's
 * answers to unknown functions, bad tokens, malformed and oversize bodies;
 * a 1 GiB array round trip; and the runtime killed in the middle of a call.
 *
 * This binary is also the worker the runtime starts: the functions below
 * run in worker processes of this same executable.
 */
#include "harness.h"

MODAL_APP("itest-remote");

/* ------------------------------------------------------------------ */
/* Functions the tests call                                            */
/* ------------------------------------------------------------------ */

MODAL_FUNCTION(add, .timeout = 60)
{
    return modal_int(modal_arg_int(args, 0) + modal_arg_int(args, 1));
}

/* Returns its argument list unchanged, to check the round trip. */
MODAL_FUNCTION(echo, .timeout = 60)
{
    return modal_value_copy(args);
}

/* Reports what the function saw of its own context. */
MODAL_FUNCTION(whoami, .timeout = 60)
{
    modal_value *m = modal_map();
    modal_map_set(m, "call_id", modal_string(modal_ctx_call_id(ctx)), NULL);
    modal_map_set(m, "attempt", modal_int(modal_ctx_attempt(ctx)), NULL);
    modal_map_set(m, "remote", modal_bool(modal_ctx_is_remote(ctx)), NULL);
    modal_map_set(m, "name", modal_string(modal_function_name(modal_ctx_function(ctx))), NULL);
    return m;
}

/*
 * Sleep for argument 0 seconds, in small steps, and give up early if the
 * runtime that started this worker goes away (so a killed runtime leaves
 * no worker sleeping on after the test). Returns argument 1.
 */
MODAL_FUNCTION(nap, .timeout = 120)
{
    double secs = modal_arg_float(args, 0);
    int64_t ret = modal_arg_int(args, 1);
    pid_t parent = getppid();
    double end = harness_now() + secs;
    while (harness_now() < end) {
        if (getppid() != parent)
            _exit(0);
        harness_sleep(0.02);
    }
    return modal_int(ret);
}

/* Fails its first two attempts, then returns [2 * x, attempt]. */
MODAL_FUNCTION(flaky, .retry_policy = MODAL_RETRIES(.max_retries = 3, .initial_delay = 0.01))
{
    int64_t x = modal_arg_int(args, 0);
    int attempt = modal_ctx_attempt(ctx);
    if (attempt < 3)
        return modal_ctx_fail(ctx, "flaky: attempt %d fails on purpose", attempt);
    return modal_args(modal_int(2 * x), modal_int(attempt));
}

/* Always fails, with retries: the last attempt's error is what comes back. */
MODAL_FUNCTION(always_fails, .retry_policy = MODAL_RETRIES(.max_retries = 2, .initial_delay = 0.01))
{
    return modal_ctx_fail(ctx, "always_fails: attempt %d", modal_ctx_attempt(ctx));
}

MODAL_FUNCTION(too_slow, .timeout = 1)
{
    harness_sleep(5.0);
    return modal_int(1);
}

/* A pointer the compiler cannot prove NULL, so the store really faults
 * instead of being turned into a trap instruction. */
static int *volatile null_pointer;

/* Not checked by UBSan, which would report the store and abort instead of
 * letting it fault (in `make check-asan`). */
__attribute__((noinline, no_sanitize("undefined"))) static void store_42(int *p)
{
    *p = 42;
}

MODAL_FUNCTION(crasher, .timeout = 60)
{
    fprintf(stderr, "crasher: last words before the fault\n");
    fflush(stderr);
    /* Under AddressSanitizer its SEGV handler would turn the fault into
     * exit(1); the default action is what a user's crash looks like. */
    signal(SIGSEGV, SIG_DFL);
    store_42(null_pointer);
    return modal_int(0);
}

MODAL_FUNCTION(refuses, .timeout = 60)
{
    int64_t n = modal_arg_int(args, 0);
    return modal_ctx_fail(ctx, "n must be positive, got %lld", (long long)n);
}

/* Prints to stdout and stderr, for the log tests. */
MODAL_FUNCTION(loud, .timeout = 60)
{
    printf("loud-stdout-marker %s\n", modal_arg_string(args, 0));
    fflush(stdout);
    fprintf(stderr, "loud-stderr-marker %s\n", modal_arg_string(args, 0));
    fflush(stderr);
    return modal_null();
}

/* Adds 1 to every byte of a u8 array. */
MODAL_FUNCTION(bump_bytes, .timeout = 600)
{
    size_t n = 0;
    const uint8_t *in = modal_arg_u8(args, 0, &n);
    if (in == NULL)
        return NULL;
    size_t shape[1] = {n};
    modal_value *out = modal_array_new(MODAL_U8, 1, shape);
    if (out == NULL)
        return modal_ctx_fail(ctx, "bump_bytes: no memory for %zu bytes", n);
    uint8_t *o = modal_array_data_mut(out);
    for (size_t i = 0; i < n; i++)
        o[i] = (uint8_t)(in[i] + 1);
    return out;
}

/* ------------------------------------------------------------------ */
/* Fixtures                                                            */
/* ------------------------------------------------------------------ */

static harness small_rt; /* a runtime with --max-body 1024 */

static int setup_runtime(void **state)
{
    return harness_start(&rt);
}

static int teardown_runtime(void **state)
{
    harness_stop(&rt);
    return 0;
}

static int setup_small(void **state)
{
    static const char *const extra[] = {"--max-body", "1024", NULL};
    /* Raw HTTP only: libmodal keeps pointing at the main runtime. */
    return harness_start_with(&small_rt, extra, false);
}

static int teardown_small(void **state)
{
    harness_stop(&small_rt);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Results                                                             */
/* ------------------------------------------------------------------ */

static void test_remote_add(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_remote(&add, modal_args(modal_int(2), modal_int(40)), &out, &err), err);
    int64_t v = 0;
    assert_ok(modal_get_int(out, &v, &err), err);
    assert_int_equal(v, 42);
    modal_value_free(out);

    /* A warm worker serves the next calls; each gets its own result. */
    for (int i = 0; i < 20; i++) {
        assert_ok(modal_fn_remote(&add, modal_args(modal_int(i), modal_int(i * 1000)), &out, &err), err);
        assert_ok(modal_get_int(out, &v, &err), err);
        assert_int_equal(v, i + i * 1000);
        modal_value_free(out);
    }
}

static modal_value *value_zoo(void)
{
    float f2d[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e30f, -1e-30f};
    size_t shape[2] = {2, 3};
    double nan = __builtin_nan("");
    unsigned char raw[300];
    for (size_t i = 0; i < sizeof raw; i++)
        raw[i] = (unsigned char)(i * 7);
    modal_value *m = modal_map();
    modal_map_set(m, "name", modal_string("zoo"), NULL);
    modal_map_set(m, "nested", modal_args(modal_int(1), modal_args(modal_null(), modal_bool(false))), NULL);
    modal_map_set(m, "empty", modal_map(), NULL);
    return modal_args(modal_null(), modal_bool(true), modal_int(INT64_MIN),
                      modal_int(INT64_MAX), modal_int(-(1LL << 60)),
                      modal_float(nan), modal_float(-0.0), modal_float(1e-310),
                      modal_string("héllo, wörld"), modal_string(""),
                      modal_bytes(raw, sizeof raw), modal_bytes(NULL, 0),
                      modal_array_nd(MODAL_F32, f2d, 2, shape),
                      modal_array(MODAL_I64, NULL, 0), modal_list(), m);
}

static void test_remote_round_trip_every_type(void **state)
{
    modal_value *args = value_zoo(), *expect = value_zoo(), *out = NULL;
    modal_error err;
    assert_non_null(args);
    assert_ok(modal_fn_remote(&echo, args, &out, &err), err);
    assert_true(modal_value_equal(out, expect));
    modal_value_free(out);
    modal_value_free(expect);
}

static void test_remote_context(void **state)
{
    modal_call *call = NULL;
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_spawn(&whoami, modal_list(), &call, &err), err);
    assert_ok(modal_call_get(call, 60, &out, &err), err);
    const char *s = NULL;
    bool remote = false;
    int64_t attempt = 0;
    assert_ok(modal_get_string(modal_map_get(out, "call_id"), &s, NULL, &err), err);
    assert_string_equal(s, modal_call_id(call));
    assert_ok(modal_get_string(modal_map_get(out, "name"), &s, NULL, &err), err);
    assert_string_equal(s, "whoami");
    assert_ok(modal_get_bool(modal_map_get(out, "remote"), &remote, &err), err);
    assert_true(remote);
    assert_ok(modal_get_int(modal_map_get(out, "attempt"), &attempt, &err), err);
    assert_int_equal(attempt, 1);
    modal_value_free(out);
    modal_call_free(call);
}

/* ------------------------------------------------------------------ */
/* Spawn, get, cancel                                                  */
/* ------------------------------------------------------------------ */

static void test_spawn_get(void **state)
{
    modal_call *call = NULL, *again = NULL;
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_spawn(&nap, modal_args(modal_float(1.5), modal_int(7)), &call, &err), err);
    const char *id = modal_call_id(call);
    assert_non_null(id);
    assert_int_equal(strlen(id), 29);
    assert_memory_equal(id, "fc-", 3);

    /* Timeout 0 only looks; a short timeout waits a little. */
    assert_status(modal_call_get(call, 0, &out, &err), MODAL_EPENDING, err);
    assert_null(out);
    double t0 = harness_now();
    assert_status(modal_call_get(call, 0.2, &out, &err), MODAL_EPENDING, err);
    assert_true(harness_now() - t0 >= 0.15);
    assert_null(out);

    assert_ok(modal_call_get(call, 60, &out, &err), err);
    int64_t v = 0;
    assert_ok(modal_get_int(out, &v, &err), err);
    assert_int_equal(v, 7);
    modal_value_free(out);

    /* The same result again, from this handle and from a second one. */
    assert_ok(modal_call_get(call, 0, &out, &err), err);
    assert_ok(modal_get_int(out, &v, &err), err);
    assert_int_equal(v, 7);
    modal_value_free(out);
    assert_ok(modal_call_from_id(id, &again, &err), err);
    assert_string_equal(modal_call_id(again), id);
    assert_ok(modal_call_get(again, 10, &out, &err), err);
    assert_ok(modal_get_int(out, &v, &err), err);
    assert_int_equal(v, 7);
    modal_value_free(out);
    modal_call_free(again);
    modal_call_free(call);
}

static void test_get_from_second_handle_while_running(void **state)
{
    modal_call *call = NULL, *again = NULL;
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_spawn(&nap, modal_args(modal_float(1.0), modal_int(99)), &call, &err), err);
    assert_ok(modal_call_from_id(modal_call_id(call), &again, &err), err);
    modal_call_free(call); /* freeing a handle does not cancel the call */
    assert_ok(modal_call_get(again, 60, &out, &err), err);
    int64_t v = 0;
    assert_ok(modal_get_int(out, &v, &err), err);
    assert_int_equal(v, 99);
    modal_value_free(out);
    modal_call_free(again);
}

static void test_call_ids_checked(void **state)
{
    modal_call *call = NULL;
    modal_value *out = NULL;
    modal_error err;
    assert_status(modal_call_from_id("bogus", &call, &err), MODAL_EINVAL, err);
    assert_null(call);
    /* Well formed, but no such call on this runtime. */
    assert_ok(modal_call_from_id("fc-0123456789abcdefghjkmnpqrs", &call, &err), err);
    assert_status(modal_call_get(call, 1, &out, &err), MODAL_ENOTFOUND, err);
    assert_null(out);
    modal_call_free(call);
    modal_call_free(NULL);
}

static void test_cancel(void **state)
{
    modal_call *call = NULL;
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_spawn(&nap, modal_args(modal_float(30), modal_int(1)), &call, &err), err);
    harness_sleep(0.5); /* let it start running */
    double t0 = harness_now();
    assert_ok(modal_call_cancel(call, &err), err);
    assert_status(modal_call_get(call, 20, &out, &err), MODAL_ECANCELLED, err);
    assert_null(out);
    assert_true(harness_now() - t0 < 20);
    /* Cancelling again changes nothing. */
    assert_ok(modal_call_cancel(call, &err), err);
    assert_status(modal_call_get(call, 0, &out, &err), MODAL_ECANCELLED, err);
    modal_call_free(call);

    /* The function still works after its worker was stopped. */
    assert_ok(modal_fn_remote(&nap, modal_args(modal_float(0), modal_int(5)), &out, &err), err);
    modal_value_free(out);
}

static void test_cancel_finished_call(void **state)
{
    modal_call *call = NULL;
    modal_value *out = NULL;
    modal_error err;
    int64_t v = 0;
    assert_ok(modal_fn_spawn(&add, modal_args(modal_int(1), modal_int(2)), &call, &err), err);
    assert_ok(modal_call_get(call, 60, &out, &err), err);
    modal_value_free(out);
    assert_ok(modal_call_cancel(call, &err), err);
    assert_ok(modal_call_get(call, 0, &out, &err), err);
    assert_ok(modal_get_int(out, &v, &err), err);
    assert_int_equal(v, 3);
    modal_value_free(out);
    modal_call_free(call);
}

/* ------------------------------------------------------------------ */
/* Failures                                                            */
/* ------------------------------------------------------------------ */

static void test_retries_until_success(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    int64_t v = 0;
    assert_ok(modal_fn_remote(&flaky, modal_args(modal_int(21)), &out, &err), err);
    assert_int_equal(modal_value_len(out), 2);
    assert_ok(modal_get_int(modal_list_get(out, 0), &v, &err), err);
    assert_int_equal(v, 42);
    assert_ok(modal_get_int(modal_list_get(out, 1), &v, &err), err);
    assert_int_equal(v, 3); /* the attempt that succeeded */
    modal_value_free(out);
}

static void test_retries_exhausted(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    assert_status(modal_fn_remote(&always_fails, modal_list(), &out, &err), MODAL_EFUNC, err);
    assert_null(out);
    /* 1 attempt + 2 retries: the error is the third attempt's. */
    assert_message_contains(err, "always_fails: attempt 3");
}

static void test_timeout(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    double t0 = harness_now();
    assert_status(modal_fn_remote(&too_slow, modal_list(), &out, &err), MODAL_ETIMEOUT, err);
    assert_null(out);
    assert_int_equal(err.code, MODAL_ETIMEOUT);
    assert_message_contains(err, "timed out");
    /* The worker was stopped at 1 s, not left to finish its 5 s. */
    assert_true(harness_now() - t0 < 4.5);
}

static void test_crash(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    assert_status(modal_fn_remote(&crasher, modal_list(), &out, &err), MODAL_ECRASH, err);
    assert_null(out);
    assert_message_contains(err, "SIGSEGV");
    assert_message_contains(err, "last words before the fault");

    /* A new worker serves the next call. */
    int64_t v = 0;
    assert_ok(modal_fn_remote(&add, modal_args(modal_int(1), modal_int(1)), &out, &err), err);
    assert_ok(modal_get_int(out, &v, &err), err);
    assert_int_equal(v, 2);
    modal_value_free(out);
}

static void test_function_error(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    assert_status(modal_fn_remote(&refuses, modal_args(modal_int(-3)), &out, &err), MODAL_EFUNC, err);
    assert_null(out);
    assert_message_contains(err, "n must be positive, got -3");
}

static void test_bad_argument_type(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    assert_status(modal_fn_remote(&add, modal_args(modal_string("two"), modal_int(1)), &out, &err),
                  MODAL_ETYPE, err);
    assert_message_contains(err, "add");
    assert_message_contains(err, "argument 0");
}

/* ------------------------------------------------------------------ */
/* Logs                                                                */
/* ------------------------------------------------------------------ */

static void test_logs_over_http(void **state)
{
    modal_call *call = NULL;
    modal_value *out = NULL;
    modal_error err;
    char path[256], *body = NULL;
    long status = 0;
    assert_ok(modal_fn_spawn(&loud, modal_args(modal_string("L0g")), &call, &err), err);
    assert_ok(modal_call_get(call, 60, &out, &err), err);
    modal_value_free(out);

    snprintf(path, sizeof path, "/v1/calls/%s/logs?offset=0", modal_call_id(call));
    harness_http(&rt, "GET", path, rt.token, NULL, 0, &status, &body, NULL);
    assert_int_equal(status, 200);
    assert_contains(body, "loud-stdout-marker L0g");
    assert_contains(body, "loud-stderr-marker L0g");
    free(body);

    /* The app's log names the call, the function and the stream. */
    harness_http(&rt, "GET", "/v1/apps/itest-remote/logs", rt.token, NULL, 0, &status, &body, NULL);
    assert_int_equal(status, 200);
    assert_contains(body, "loud-stdout-marker L0g");
    assert_contains(body, modal_call_id(call));
    free(body);
    modal_call_free(call);
}

/* Child mode: one remote call whose worker prints; exits with its status. */
static int child_loud(void)
{
    modal_value *out = NULL;
    modal_error err;
    modal_status st = modal_fn_remote(&loud, modal_args(modal_string("streamed")), &out, &err);
    if (st != MODAL_OK)
        fprintf(stderr, "child: %s: %s\n", modal_status_name(st), err.message);
    modal_value_free(out);
    return (int)st;
}

static void test_worker_output_streamed_to_stderr(void **state)
{
    static const char *const args[] = {"--child-loud", NULL};
    char *output = NULL;
    unsetenv("MODAL_QUIET_LOGS");
    int ws = harness_run_self(args, 120, &output);
    if (!(WIFEXITED(ws) && WEXITSTATUS(ws) == 0))
        print_error("child wait status 0x%x, output:\n%s\n", ws, output);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    assert_contains(output, "loud-stderr-marker streamed");
    assert_contains(output, "loud-stdout-marker streamed");
    /* Each streamed line is prefixed with the function's name. */
    const char *line = strstr(output, "loud-stderr-marker streamed");
    const char *bol = line;
    while (bol > output && bol[-1] != '\n')
        bol--;
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%.*s", (int)(line - bol), bol);
    assert_contains(prefix, "loud");
    free(output);
}

/* ------------------------------------------------------------------ */
/* The HTTP API                                                        */
/* ------------------------------------------------------------------ */

static void test_health(void **state)
{
    long status = 0;
    char *body = NULL;
    harness_http(&rt, "GET", "/v1/health", rt.token, NULL, 0, &status, &body, NULL);
    assert_int_equal(status, 200);
    cJSON *j = cJSON_Parse(body);
    assert_non_null(j);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "ok")));
    const cJSON *pid = cJSON_GetObjectItemCaseSensitive(j, "pid");
    assert_true(cJSON_IsNumber(pid));
    assert_int_equal((long)pid->valuedouble, (long)rt.pid);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(j, "version"));
    cJSON_Delete(j);
    free(body);
}

static void expect_json_error(const char *body, long status, long expected_status,
                              const char *expected_code)
{
    char code[64], message[512];
    if (status != expected_status)
        print_error("status %ld, expected %ld; body: %s\n", status, expected_status,
                    body ? body : "(none)");
    assert_int_equal(status, expected_status);
    if (harness_json_error(body, code, sizeof code, message, sizeof message) != 0)
        print_error("not a JSON error object: %s\n", body ? body : "(none)");
    assert_int_equal(harness_json_error(body, code, sizeof code, message, sizeof message), 0);
    if (expected_code != NULL)
        assert_string_equal(code, expected_code);
    assert_true(strlen(message) > 0);
}

static void test_wrong_token_http(void **state)
{
    long status = 0;
    char *body = NULL;
    harness_http(&rt, "GET", "/v1/health", "not-the-token", NULL, 0, &status, &body, NULL);
    expect_json_error(body, status, 401, "EAUTH");
    free(body);
    harness_http(&rt, "GET", "/v1/health", NULL, NULL, 0, &status, &body, NULL);
    expect_json_error(body, status, 401, "EAUTH");
    free(body);
    /* A token that only shares a prefix with the real one is refused too. */
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%.*s", (int)(strlen(rt.token) / 2), rt.token);
    harness_http(&rt, "GET", "/v1/health", prefix, NULL, 0, &status, &body, NULL);
    expect_json_error(body, status, 401, "EAUTH");
    free(body);
    /* Refused before the body is looked at. */
    harness_http(&rt, "POST", "/v1/calls", "not-the-token", "junk", 4, &status, &body, NULL);
    assert_int_equal(status, 401);
    free(body);
}

/* Child mode: a remote call with a garbage token; exits with its status. */
static int child_eauth(void)
{
    modal_value *out = NULL;
    modal_error err;
    setenv("MODAL_TOKEN", "garbage-token", 1);
    unsetenv("MODAL_TOKEN_FILE");
    modal_status st = modal_fn_remote(&add, modal_args(modal_int(1), modal_int(2)), &out, &err);
    printf("child-eauth: %s: %s\n", modal_status_name(st), st ? err.message : "");
    modal_value_free(out);
    return (int)st;
}

/*
 * MODAL_EAUTH through the API. The call runs in a child process so that a
 * library that reads the token once per process is tested as fairly as one
 * that reads it every time.
 */
static void test_wrong_token_api(void **state)
{
    static const char *const args[] = {"--child-eauth", NULL};
    char *output = NULL;
    int ws = harness_run_self(args, 60, &output);
    if (!(WIFEXITED(ws) && WEXITSTATUS(ws) == MODAL_EAUTH))
        print_error("child wait status 0x%x, output:\n%s\n", ws, output);
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), MODAL_EAUTH);
    assert_contains(output, "child-eauth: EAUTH: ");
    assert_contains(output, "token");
    free(output);
}

/* A call frame naming function fn, as the client would build it. */
static void *call_frame(const char *artifact, const char *fn, const char *call_id,
                        size_t *len)
{
    cJSON *env = cJSON_CreateObject();
    cJSON_AddNumberToObject(env, "v", 1);
    cJSON_AddStringToObject(env, "app", "itest-remote");
    cJSON_AddStringToObject(env, "fn", fn);
    cJSON_AddStringToObject(env, "artifact", artifact);
    cJSON_AddStringToObject(env, "call_id", call_id);
    cJSON *opts = cJSON_AddObjectToObject(env, "options");
    cJSON_AddNumberToObject(opts, "timeout", 30);
    cJSON *r = cJSON_AddObjectToObject(opts, "retry_policy");
    cJSON_AddNumberToObject(r, "max_retries", 0);
    cJSON_AddNumberToObject(r, "backoff_coefficient", 2.0);
    cJSON_AddNumberToObject(r, "initial_delay", 1.0);
    cJSON_AddNumberToObject(r, "max_delay", 60.0);
    cJSON_AddNumberToObject(opts, "cpu", 0);
    cJSON_AddNumberToObject(opts, "memory", 0);
    cJSON_AddNumberToObject(opts, "min_containers", 0);
    cJSON_AddNumberToObject(opts, "max_containers", 10);
    cJSON_AddNumberToObject(opts, "scaledown_window", 60);
    modal_value *args = modal_args(modal_int(1));
    void *frame = NULL;
    modal_error err;
    modal_status st = harness_frame(env, "args", args, &frame, len, &err);
    modal_value_free(args);
    if (st != MODAL_OK)
        print_error("cannot build a call frame: %s\n", err.message);
    return frame;
}

static void test_raw_call_known_function(void **state)
{
    /* The control for the unknown-function test: the same frame naming a
     * function the worker has must succeed. */
    char sha[65], id[40], status_s[32], msg[512];
    size_t len = 0, rlen = 0;
    long status = 0;
    char *resp = NULL;
    modal_error err;
    assert_int_equal(harness_upload_self(&rt, sha), 0);
    modal__random_id("fc-", id, sizeof id);
    void *frame = call_frame(sha, "echo", id, &len);
    assert_non_null(frame);
    harness_http(&rt, "POST", "/v1/calls?wait=30", rt.token, frame, len, &status, &resp, &rlen);
    free(frame);
    if (status != 200)
        print_error("status %ld, body %s\n", status, resp);
    assert_int_equal(status, 200);
    assert_ok(harness_result_status(resp, rlen, status_s, sizeof status_s, msg, sizeof msg, &err), err);
    assert_string_equal(status_s, "OK");
    free(resp);

    /* Resending the same call id does not run it again; the result is
     * the same call's. */
    frame = call_frame(sha, "echo", id, &len);
    harness_http(&rt, "POST", "/v1/calls?wait=30", rt.token, frame, len, &status, &resp, &rlen);
    free(frame);
    assert_true(status == 200 || status == 409);
    free(resp);
}

static void test_unknown_function(void **state)
{
    char sha[65], id[40], status_s[32], msg[512], path[128];
    size_t len = 0, rlen = 0;
    long status = 0;
    char *resp = NULL;
    modal_error err;
    assert_int_equal(harness_upload_self(&rt, sha), 0);
    modal__random_id("fc-", id, sizeof id);
    void *frame = call_frame(sha, "nope", id, &len);
    assert_non_null(frame);
    harness_http(&rt, "POST", "/v1/calls?wait=30", rt.token, frame, len, &status, &resp, &rlen);
    free(frame);
    if (status == 202) {
        /* Accepted, then failed in the worker: fetch the outcome. */
        free(resp);
        snprintf(path, sizeof path, "/v1/calls/%s?wait=30", id);
        harness_http(&rt, "GET", path, rt.token, NULL, 0, &status, &resp, &rlen);
    }
    if (status == 404) {
        char code[64];
        assert_int_equal(harness_json_error(resp, code, sizeof code, msg, sizeof msg), 0);
        assert_string_equal(code, "ENOTFOUND");
        assert_contains(msg, "nope");
    } else {
        if (status != 200)
            print_error("status %ld, body %s\n", status, resp);
        assert_int_equal(status, 200);
        assert_ok(harness_result_status(resp, rlen, status_s, sizeof status_s, msg, sizeof msg, &err), err);
        assert_string_equal(status_s, "ENOTFOUND");
        assert_contains(msg, "nope");
    }
    free(resp);
}

static void test_unknown_artifact(void **state)
{
    char id[40];
    size_t len = 0;
    long status = 0;
    char *resp = NULL;
    modal__random_id("fc-", id, sizeof id);
    void *frame = call_frame("0000000000000000000000000000000000000000000000000000000000000000",
                             "echo", id, &len);
    harness_http(&rt, "POST", "/v1/calls?wait=5", rt.token, frame, len, &status, &resp, NULL);
    free(frame);
    expect_json_error(resp, status, 404, "ENOTFOUND");
    free(resp);
}

static void test_unknown_call_http(void **state)
{
    long status = 0;
    char *resp = NULL;
    harness_http(&rt, "GET", "/v1/calls/fc-0123456789abcdefghjkmnpqrs?wait=0", rt.token, NULL, 0,
                 &status, &resp, NULL);
    expect_json_error(resp, status, 404, "ENOTFOUND");
    free(resp);
}

static void test_artifact_hash_checked(void **state)
{
    long status = 0;
    char *resp = NULL;
    const char junk[] = "these bytes do not hash to the name";
    harness_http_url(rt.url, "PUT",
                     "/v1/artifacts/1111111111111111111111111111111111111111111111111111111111111111",
                     rt.token, junk, sizeof junk, "application/octet-stream", &status, &resp, NULL);
    expect_json_error(resp, status, 400, NULL);
    free(resp);
    harness_http(&rt, "HEAD",
                 "/v1/artifacts/1111111111111111111111111111111111111111111111111111111111111111",
                 rt.token, NULL, 0, &status, NULL, NULL);
    assert_int_equal(status, 404);
}

static void test_malformed_bodies(void **state)
{
    long status = 0;
    char *resp = NULL, code[64], msg[512];

    /* Not a frame at all. */
    const char junk[] = "this is not a frame, it is a sentence";
    harness_http(&rt, "POST", "/v1/calls", rt.token, junk, sizeof junk - 1, &status, &resp, NULL);
    expect_json_error(resp, status, 400, NULL);
    harness_json_error(resp, code, sizeof code, msg, sizeof msg);
    print_message("malformed frame -> %s: %s\n", code, msg);
    free(resp);

    /* A truncated frame: the header promises more than arrives. */
    size_t len = 0;
    char id[40];
    modal__random_id("fc-", id, sizeof id);
    void *frame = call_frame("0000000000000000000000000000000000000000000000000000000000000000",
                             "echo", id, &len);
    assert_non_null(frame);
    harness_http(&rt, "POST", "/v1/calls", rt.token, frame, len / 2, &status, &resp, NULL);
    expect_json_error(resp, status, 400, NULL);
    free(resp);
    free(frame);

    /* A valid frame whose envelope lacks "fn": the error names it. */
    cJSON *env = cJSON_CreateObject();
    cJSON_AddNumberToObject(env, "v", 1);
    cJSON_AddStringToObject(env, "app", "itest-remote");
    cJSON_AddStringToObject(env, "call_id", id);
    modal_value *args = modal_list();
    modal_error err;
    assert_ok(harness_frame(env, "args", args, &frame, &len, &err), err);
    modal_value_free(args);
    harness_http(&rt, "POST", "/v1/calls", rt.token, frame, len, &status, &resp, NULL);
    free(frame);
    expect_json_error(resp, status, 400, NULL);
    harness_json_error(resp, code, sizeof code, msg, sizeof msg);
    assert_contains(msg, "fn");
    free(resp);

    /* A malformed call id is refused, not stored. */
    env = cJSON_CreateObject();
    cJSON_AddNumberToObject(env, "v", 1);
    cJSON_AddStringToObject(env, "app", "itest-remote");
    cJSON_AddStringToObject(env, "fn", "echo");
    cJSON_AddStringToObject(env, "artifact",
                            "0000000000000000000000000000000000000000000000000000000000000000");
    cJSON_AddStringToObject(env, "call_id", "../../etc/passwd");
    args = modal_list();
    assert_ok(harness_frame(env, "args", args, &frame, &len, &err), err);
    modal_value_free(args);
    harness_http(&rt, "POST", "/v1/calls", rt.token, frame, len, &status, &resp, NULL);
    free(frame);
    expect_json_error(resp, status, 400, NULL);
    harness_json_error(resp, code, sizeof code, msg, sizeof msg);
    assert_contains(msg, "call_id");
    free(resp);

    /* A bad wait parameter. */
    harness_http(&rt, "GET", "/v1/calls/fc-0123456789abcdefghjkmnpqrs?wait=banana", rt.token,
                 NULL, 0, &status, &resp, NULL);
    expect_json_error(resp, status, 400, NULL);
    harness_json_error(resp, code, sizeof code, msg, sizeof msg);
    assert_contains(msg, "wait");
    free(resp);

    /* The runtime is still healthy. */
    assert_true(harness_health_pid(rt.url, rt.token) == (long)rt.pid);
}

static void test_oversize_body(void **state)
{
    long status = 0;
    char *resp = NULL;
    size_t big = 4096;
    char *body = malloc(big);
    assert_non_null(body);
    memset(body, 'x', big);
    harness_http(&small_rt, "POST", "/v1/calls", small_rt.token, body, big, &status, &resp, NULL);
    expect_json_error(resp, status, 413, NULL);
    free(resp);
    /* An artifact upload over the limit too. */
    harness_http_url(small_rt.url, "PUT",
                     "/v1/artifacts/2222222222222222222222222222222222222222222222222222222222222222",
                     small_rt.token, body, big, "application/octet-stream", &status, &resp, NULL);
    assert_int_equal(status, 413);
    free(resp);
    free(body);
    /* Small requests still work. */
    assert_true(harness_health_pid(small_rt.url, small_rt.token) == (long)small_rt.pid);
}

/* ------------------------------------------------------------------ */
/* Big payloads                                                        */
/* ------------------------------------------------------------------ */

static void test_one_gib_round_trip(void **state)
{
    if (getenv("MODAL_TEST_SKIP_BIG") != NULL) {
        print_message("MODAL_TEST_SKIP_BIG is set: skipping the 1 GiB round trip\n");
        skip();
    }
    size_t n = (size_t)1 << 30;
    size_t shape[1] = {n};
    modal_value *arr = modal_array_new(MODAL_U8, 1, shape);
    assert_non_null(arr);
    uint8_t *p = modal_array_data_mut(arr);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 2654435761u >> 13);
    modal_value *out = NULL;
    modal_error err;
    double t0 = harness_now();
    assert_ok(modal_fn_remote(&bump_bytes, modal_args(arr), &out, &err), err);
    double secs = harness_now() - t0;
    print_message("1 GiB round trip in %.2f s\n", secs);

    const uint8_t *q = NULL;
    size_t count = 0;
    assert_ok(modal_get_array(out, MODAL_U8, (const void **)&q, &count, &err), err);
    assert_int_equal(count, n);
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t want = (uint8_t)((uint8_t)(i * 2654435761u >> 13) + 1);
        if (q[i] != want && bad++ == 0)
            first_bad = i;
    }
    if (bad != 0)
        print_error("%zu of %zu bytes wrong, first at %zu\n", bad, n, first_bad);
    assert_int_equal(bad, 0);
    modal_value_free(out);
}

/* ------------------------------------------------------------------ */
/* The runtime killed mid-call (runs last: it ends the runtime)         */
/* ------------------------------------------------------------------ */

struct get_job {
    modal_call *call;
    modal_status st;
    modal_error err;
    volatile bool done;
};

static void *get_thread(void *arg)
{
    struct get_job *job = arg;
    modal_value *out = NULL;
    job->st = modal_call_get(job->call, -1, &out, &job->err);
    modal_value_free(out);
    job->done = true;
    return NULL;
}

static void test_runtime_killed_mid_call(void **state)
{
    modal_call *call = NULL;
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_spawn(&nap, modal_args(modal_float(60), modal_int(1)), &call, &err), err);
    assert_status(modal_call_get(call, 1.0, &out, &err), MODAL_EPENDING, err);

    /* A waiting get in another thread, then the runtime dies under it. */
    static struct get_job job;
    job.call = call;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, get_thread, &job), 0);
    harness_sleep(0.5);
    harness_kill(&rt);

    /* The unbounded wait must end, with ETRANSPORT; give it 60 s. */
    double t0 = harness_now();
    while (!job.done && harness_now() - t0 < 60)
        harness_sleep(0.05);
    if (!job.done) {
        print_error("modal_call_get(timeout -1) still waiting 60 s after the runtime was killed\n");
        fail(); /* the thread is left behind; the process ends soon */
    }
    pthread_join(t, NULL);
    print_message("get returned %.1f s after the kill: %s\n", harness_now() - t0, job.err.message);
    assert_status(job.st, MODAL_ETRANSPORT, job.err);

    /* New calls fail the same way, promptly, and start no other runtime. */
    t0 = harness_now();
    assert_status(modal_call_get(call, 5, &out, &err), MODAL_ETRANSPORT, err);
    assert_status(modal_fn_remote(&add, modal_args(modal_int(1), modal_int(2)), &out, &err),
                  MODAL_ETRANSPORT, err);
    assert_message_contains(err, "127.0.0.1");
    assert_true(harness_now() - t0 < 60);
    modal_call_free(call);

    /* The dead runtime's workers, busy and idle, do not live on. */
    char sha[65];
    assert_int_equal(harness_self_sha256(sha), 0);
    size_t left = harness_wait_no_workers(rt.dir, sha, 15);
    if (left != 0)
        print_error("%zu worker(s) still running 15 s after their runtime was killed\n", left);
    assert_int_equal(left, 0);
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    if (argc > 1 && strcmp(argv[1], "--child-eauth") == 0)
        return child_eauth();
    if (argc > 1 && strcmp(argv[1], "--child-loud") == 0)
        return child_loud();

    const struct CMUnitTest small[] = {
        cmocka_unit_test(test_oversize_body),
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_remote_add),
        cmocka_unit_test(test_remote_round_trip_every_type),
        cmocka_unit_test(test_remote_context),
        cmocka_unit_test(test_spawn_get),
        cmocka_unit_test(test_get_from_second_handle_while_running),
        cmocka_unit_test(test_call_ids_checked),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_cancel_finished_call),
        cmocka_unit_test(test_retries_until_success),
        cmocka_unit_test(test_retries_exhausted),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_crash),
        cmocka_unit_test(test_function_error),
        cmocka_unit_test(test_bad_argument_type),
        cmocka_unit_test(test_logs_over_http),
        cmocka_unit_test(test_worker_output_streamed_to_stderr),
        cmocka_unit_test(test_wrong_token_http),
        cmocka_unit_test(test_wrong_token_api),
        cmocka_unit_test(test_raw_call_known_function),
        cmocka_unit_test(test_unknown_function),
        cmocka_unit_test(test_unknown_artifact),
        cmocka_unit_test(test_unknown_call_http),
        cmocka_unit_test(test_artifact_hash_checked),
        cmocka_unit_test(test_malformed_bodies),
        cmocka_unit_test(test_one_gib_round_trip),
        cmocka_unit_test(test_runtime_killed_mid_call), /* last: kills rt */
    };
    int failed = cmocka_run_group_tests_name("max-body runtime", small, setup_small, teardown_small);
    failed += cmocka_run_group_tests_name("remote", tests, setup_runtime, teardown_runtime);
    return failed != 0;
}
