/*
 * test_garbage.c: what the runtime accepts from the network cannot crash
 * it. Random and mutated bodies go to every endpoint that reads one, odd
 * paths and query strings to every route; each must get a 4xx answer with
 * a JSON error, and afterwards the runtime must still serve real calls.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

MODAL_APP("itest-garbage");

MODAL_FUNCTION(add, .timeout = 30)
{
    return modal_int(modal_arg_int(args, 0) + modal_arg_int(args, 1));
}

/* xorshift: reproducible garbage. */
static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* A valid call frame for add(2, 3) to mutate. */
static void *valid_frame(const char *sha, size_t *len)
{
    char id[40];
    modal__random_id("fc-", id, sizeof id);
    cJSON *env = cJSON_CreateObject();
    cJSON_AddNumberToObject(env, "v", 1);
    cJSON_AddStringToObject(env, "app", "itest-garbage");
    cJSON_AddStringToObject(env, "fn", "add");
    cJSON_AddStringToObject(env, "artifact", sha);
    cJSON_AddStringToObject(env, "call_id", id);
    cJSON_AddObjectToObject(env, "options");
    modal_value *args = modal_args(modal_int(2), modal_int(3));
    void *frame = NULL;
    modal_error err;
    assert_ok(harness_frame(env, "args", args, &frame, len, &err), err);
    modal_value_free(args);
    return frame;
}

static void expect_client_error(const char *method, const char *path, const void *body,
                                size_t len)
{
    long status = 0;
    char *resp = NULL;
    harness_http(&rt, method, path, rt.token, body, len, &status, &resp, NULL);
    /* Anything but a crash is acceptable in content; the status must be a
     * definite answer. A mutated frame may even be a valid call (200/202). */
    if (status == 0 || status >= 500) {
        print_error("%s %s with %zu bytes: status %ld, body %s\n", method, path, len, status,
                    resp ? resp : "(none)");
        fail();
    }
    if (status >= 400 && strcmp(method, "HEAD") != 0) { /* HEAD answers have no body */
        char code[64], msg[512];
        if (harness_json_error(resp, code, sizeof code, msg, sizeof msg) != 0) {
            print_error("%s %s: status %ld without a JSON error: %s\n", method, path, status,
                        resp ? resp : "(none)");
            fail();
        }
        assert_true(msg[0] != '\0');
    }
    free(resp);
}

static void test_random_bodies(void **state)
{
    static const char *const paths[] = {"/v1/calls", "/v1/maps", "/v1/maps/fm-nope/inputs",
                                        "/v1/calls?wait=0"};
    for (int i = 0; i < 300; i++) {
        size_t len = (size_t)(next() % 2048);
        uint8_t *body = malloc(len + 1);
        for (size_t k = 0; k < len; k++)
            body[k] = (uint8_t)next();
        if (i % 3 == 0 && len >= 4)
            memcpy(body, i % 2 ? "MODL" : "MODB", 4); /* get past the magic */
        expect_client_error("POST", paths[i % 4], body, len);
        free(body);
    }
}

static void test_mutated_frames(void **state)
{
    char sha[65];
    assert_int_equal(harness_upload_self(&rt, sha), 0);
    for (int i = 0; i < 300; i++) {
        size_t len = 0;
        uint8_t *frame = valid_frame(sha, &len);
        int flips = 1 + (int)(next() % 4);
        for (int k = 0; k < flips; k++)
            frame[next() % len] ^= (uint8_t)(1u << (next() % 8));
        if (i % 10 == 0)
            len = (size_t)(next() % len); /* truncated */
        expect_client_error("POST", "/v1/calls?wait=5", frame, len);
        free(frame);
    }
}

static void test_odd_requests(void **state)
{
    static const char *const paths[] = {
        "/", "/v1", "/v1/", "/v1/calls/", "/v1/calls/../../etc/passwd",
        "/v1/calls/fc-0000000000000000000000000000000000000000000000000000000000000000000",
        "/v1/calls/x/logs?offset=-1", "/v1/calls/x?wait=1e400", "/v1/maps//results",
        "/v1/maps/fm-x/results?after=-5", "/v1/apps/../logs", "/v1/apps/a%2F..%2F..%2Fetc/logs",
        "/v1/artifacts/zz", "/v1/artifacts/../../token", "/v1/health?x=%00",
    };
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"};
    for (size_t p = 0; p < sizeof paths / sizeof *paths; p++)
        for (size_t m = 0; m < sizeof methods / sizeof *methods; m++)
            expect_client_error(methods[m], paths[p], "x", 1);
}

static void test_still_serving(void **state)
{
    assert_true(harness_health_pid(rt.url, rt.token) == (long)rt.pid);
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_remote(&add, modal_args(modal_int(20), modal_int(22)), &out, &err), err);
    int64_t v = 0;
    assert_ok(modal_get_int(out, &v, &err), err);
    assert_int_equal(v, 42);
    modal_value_free(out);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_bodies),
        cmocka_unit_test(test_mutated_frames),
        cmocka_unit_test(test_odd_requests),
        cmocka_unit_test(test_still_serving),
    };
    return cmocka_run_group_tests_name("garbage", tests, harness_group_setup, harness_group_teardown) != 0;
}
