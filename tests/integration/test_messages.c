/*
 * test_messages.c: the messages docs/errors.md quotes, word for word, as a
 * real runtime produces them (a map failure, a failure after retries, the
 * refusal of volumes, secrets and images), and the naming rules of the
 * call frame: a NUL escaped into an app or function name, apps "." and
 * "..", and two apps that call the same function of the same executable,
 * which must get separate workers and separate logs.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

MODAL_APP("itest-messages");

MODAL_FUNCTION(msg_sq, .timeout = 60)
{
    int64_t x = modal_arg_int(args, 0);
    if (x == 1)
        return modal_ctx_fail(ctx, "one is unlucky");
    return modal_int(x * x);
}

MODAL_FUNCTION(msg_always, .timeout = 60,
               .retry_policy = MODAL_RETRIES(.max_retries = 2, .initial_delay = 0.01))
{
    return modal_ctx_fail(ctx, "no luck on attempt %d", modal_ctx_attempt(ctx));
}

MODAL_FUNCTION(msg_once, .timeout = 60)
{
    return modal_ctx_fail(ctx, "no luck");
}

MODAL_VOLUME(msg_ckpt, "checkpoints");
MODAL_FUNCTION(msg_vol, .volumes = MODAL_MOUNTS({"/ckpt", &msg_ckpt}))
{
    return modal_null();
}

MODAL_FUNCTION(msg_secret, .secrets = MODAL_SECRETS("hf"))
{
    return modal_null();
}

MODAL_FUNCTION(msg_image, .image = "pytorch:2.3")
{
    return modal_null();
}

/* Prints its call id (so the app log shows where output went) and
 * returns the pid of the worker that ran it. */
MODAL_FUNCTION(msg_pid, .timeout = 60)
{
    printf("ran %s\n", modal_ctx_call_id(ctx));
    fflush(stdout);
    return modal_int((int64_t)getpid());
}

/* ------------------------------------------------------------------ */
/* Messages                                                            */
/* ------------------------------------------------------------------ */

static void test_map_failure_names_fn_then_input(void **state)
{
    modal_error err;
    modal_value *inputs = modal_args(modal_int(0), modal_int(1), modal_int(2));
    assert_status(modal_fn_map(&msg_sq, inputs, NULL, NULL, &err), MODAL_EFUNC, err);
    assert_string_equal(err.message, "msg_sq: input 1: msg_sq: one is unlucky");
}

static void test_failure_after_retries_says_attempt(void **state)
{
    modal_error err;
    assert_status(modal_fn_remote(&msg_always, modal_list(), NULL, &err), MODAL_EFUNC, err);
    assert_string_equal(err.message, "msg_always: no luck on attempt 3 (attempt 3 of 3)");
    /* Without retries the function's message stands alone. */
    assert_status(modal_fn_remote(&msg_once, modal_list(), NULL, &err), MODAL_EFUNC, err);
    assert_string_equal(err.message, "msg_once: no luck");
}

static void test_unsupported_options_named(void **state)
{
    modal_error err;
    assert_status(modal_fn_remote(&msg_vol, modal_list(), NULL, &err), MODAL_EOPTION, err);
    assert_string_equal(err.message,
                        "msg_vol: volume \"checkpoints\" at /ckpt: this runtime does not "
                        "provide volumes yet; drop the .volumes option or use a runtime that "
                        "provides them");
    assert_status(modal_fn_remote(&msg_secret, modal_list(), NULL, &err), MODAL_EOPTION, err);
    assert_string_equal(err.message,
                        "msg_secret: secret \"hf\": this runtime does not provide secrets yet; "
                        "drop the .secrets option or use a runtime that provides them");
    assert_status(modal_fn_remote(&msg_image, modal_list(), NULL, &err), MODAL_EOPTION, err);
    assert_string_equal(err.message,
                        "msg_image: image \"pytorch:2.3\": this runtime does not provide "
                        "images yet; drop the .image option to run on the runtime host's own "
                        "system");
}

/* ------------------------------------------------------------------ */
/* Names in call frames                                                */
/* ------------------------------------------------------------------ */

/*
 * A call frame for fn of this executable under app. cJSON cannot write a
 * NUL into a string, so a name holding the 8 characters "a\u0000b" is made
 * by writing an 8-character stand-in and patching the frame's bytes.
 */
static void *raw_frame(const char *sha, const char *app, const char *fn, const char *id,
                       size_t *len)
{
    const char *app_in = strstr(app, "\\u0000") ? "aXXXXXXb" : app;
    const char *fn_in = strstr(fn, "\\u0000") ? "fXXXXXXx" : fn;
    cJSON *env = cJSON_CreateObject();
    cJSON_AddNumberToObject(env, "v", 1);
    cJSON_AddStringToObject(env, "app", app_in);
    cJSON_AddStringToObject(env, "fn", fn_in);
    cJSON_AddStringToObject(env, "artifact", sha);
    cJSON_AddStringToObject(env, "call_id", id);
    cJSON *opts = cJSON_AddObjectToObject(env, "options");
    cJSON_AddNumberToObject(opts, "timeout", 30);
    modal_value *args = modal_list();
    void *frame = NULL;
    modal_error err;
    if (harness_frame(env, "args", args, &frame, len, &err) != MODAL_OK)
        print_error("cannot build a call frame: %s\n", err.message);
    modal_value_free(args);
    const char *pairs[2][2] = {{app_in, app}, {fn_in, fn}};
    for (int k = 0; k < 2 && frame != NULL; k++) {
        if (pairs[k][0] == pairs[k][1])
            continue;
        assert_int_equal(strlen(pairs[k][0]), strlen(pairs[k][1]));
        char *at = memmem(frame, *len, pairs[k][0], strlen(pairs[k][0]));
        assert_non_null(at);
        memcpy(at, pairs[k][1], strlen(pairs[k][1]));
    }
    return frame;
}

/* POST a frame naming app and fn; expect 400 and a message with needles. */
static void expect_name_refused(const char *app, const char *fn, const char *needle1,
                                const char *needle2)
{
    char sha[65], id[40], code[64], msg[512];
    size_t len = 0;
    long status = 0;
    char *resp = NULL;
    assert_int_equal(harness_upload_self(&rt, sha), 0);
    modal__random_id("fc-", id, sizeof id);
    void *frame = raw_frame(sha, app, fn, id, &len);
    assert_non_null(frame);
    harness_http(&rt, "POST", "/v1/calls?wait=10", rt.token, frame, len, &status, &resp, NULL);
    free(frame);
    if (status != 400)
        print_error("app %s fn %s: status %ld, body %s\n", app, fn, status, resp);
    assert_int_equal(status, 400);
    assert_int_equal(harness_json_error(resp, code, sizeof code, msg, sizeof msg), 0);
    assert_string_equal(code, "ECODEC");
    assert_contains(msg, needle1);
    assert_contains(msg, needle2);
    free(resp);
}

static void test_nul_in_app_refused(void **state)
{
    expect_name_refused("a\\u0000b", "msg_pid", "\"app\" = \"a\\u0000b\"", "NUL");
}

static void test_nul_in_fn_refused(void **state)
{
    expect_name_refused("itest-messages", "f\\u0000x", "\"fn\" = \"f\\u0000x\"", "NUL");
}

static void test_dot_apps_refused(void **state)
{
    expect_name_refused(".", "msg_pid", "\"app\" = \".\"", "cannot name an app");
    expect_name_refused("..", "msg_pid", "\"app\" = \"..\"", "cannot name an app");
}

/* Run msg_pid under app; return the worker's pid and the call id. */
static long call_as_app(const char *sha, const char *app, char id[40])
{
    size_t len = 0, rlen = 0;
    long status = 0;
    char *resp = NULL;
    modal__random_id("fc-", id, 40);
    void *frame = raw_frame(sha, app, "msg_pid", id, &len);
    harness_http(&rt, "POST", "/v1/calls?wait=30", rt.token, frame, len, &status, &resp, &rlen);
    free(frame);
    /* The long poll also returns (202) when output appears: poll on from
     * the output already seen, as a client does, for up to 30 s. */
    char path[128];
    for (double end = harness_now() + 30; status == 202 && harness_now() < end;) {
        const char *size = resp != NULL ? strstr(resp, "\"log_size\":") : NULL;
        long long seen = size != NULL ? strtoll(size + 11, NULL, 10) : 0;
        snprintf(path, sizeof path, "/v1/calls/%s?wait=30&log_offset=%lld", id, seen);
        free(resp);
        resp = NULL;
        harness_http(&rt, "GET", path, rt.token, NULL, 0, &status, &resp, &rlen);
    }
    if (status != 200)
        print_error("app %s: status %ld, body %s\n", app, status, resp);
    assert_int_equal(status, 200);
    modal__buf *buf = modal__buf_new(rlen);
    memcpy(buf->base, resp, rlen);
    free(resp);
    modal__dec dec;
    modal_error err;
    modal_value *v = NULL;
    assert_ok(modal__dec_open(buf, 0, &dec, &err), err);
    modal__buf_unref(buf);
    assert_ok(modal__msg_value(&dec, "result", &v, &err), err);
    modal__dec_close(&dec);
    int64_t pid = 0;
    assert_ok(modal_get_int(v, &pid, &err), err);
    modal_value_free(v);
    return (long)pid;
}

/* Wait up to 10 s for the app's log to hold needle; return the log. */
static char *log_with(const char *app, const char *needle)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/logs/%s.log", rt.dir, app);
    char *log = NULL;
    for (double end = harness_now() + 10; harness_now() < end; harness_sleep(0.05)) {
        free(log);
        log = harness_read_file(path, NULL);
        if (log != NULL && strstr(log, needle) != NULL)
            break;
    }
    return log;
}

static void test_apps_kept_apart(void **state)
{
    char sha[65], id_a[40], id_b[40], id_a2[40];
    assert_int_equal(harness_upload_self(&rt, sha), 0);
    long pid_a = call_as_app(sha, "msg-app-a", id_a);
    long pid_b = call_as_app(sha, "msg-app-b", id_b);
    long pid_a2 = call_as_app(sha, "msg-app-a", id_a2);
    /* One warm worker per app: app A's second call reuses A's worker. */
    assert_true(pid_a != pid_b);
    assert_int_equal(pid_a, pid_a2);
    char *log_a = log_with("msg-app-a", id_a2), *log_b = log_with("msg-app-b", id_b);
    assert_contains(log_a, id_a);
    assert_contains(log_a, id_a2);
    assert_contains(log_b, id_b);
    assert_null(strstr(log_a, id_b));
    assert_null(strstr(log_b, id_a));
    free(log_a);
    free(log_b);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_failure_names_fn_then_input),
        cmocka_unit_test(test_failure_after_retries_says_attempt),
        cmocka_unit_test(test_unsupported_options_named),
        cmocka_unit_test(test_nul_in_app_refused),
        cmocka_unit_test(test_nul_in_fn_refused),
        cmocka_unit_test(test_dot_apps_refused),
        cmocka_unit_test(test_apps_kept_apart),
    };
    return cmocka_run_group_tests(tests, harness_group_setup, harness_group_teardown);
}
