/*
 * test_specs.c: function specs against a real runtime. POST /v1/functions
 * registers a spec and answers its id, the hash of its canonical form (a
 * GPU fallback list spelt two ways is one spec); calls name a spec by that
 * id; an unknown id is refused precisely; bad specs get the library's own
 * messages; a pool's identity is its spec's id, and a pool left with no
 * worker, queue or call is freed while its spec stays registered.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

MODAL_APP("itest-specs");

MODAL_FUNCTION(spec_echo, .timeout = 30)
{
    return modal_int(modal_arg_int(args, 0));
}

MODAL_FUNCTION(spec_idle, .scaledown_window = 1)
{
    return modal_int(modal_arg_int(args, 0) * 2);
}

/* ---- helpers ------------------------------------------------------ */

/* The spec of fn in this executable, with options given as JSON text. */
static char *spec_text(const char *sha, const char *fn, const char *options)
{
    char *s = NULL;
    if (asprintf(&s, "{\"v\":1,\"artifact\":\"%s\",\"app\":\"itest-specs\",\"fn\":\"%s\","
                     "\"options\":%s}", sha, fn, options) < 0)
        return NULL;
    return s;
}

/* POST a spec to the runtime at url; returns the status and fills id (or
 * code and message). */
static long register_spec_at(const char *url, const char *token, const char *text, char id[65],
                             char *code, char *msg, size_t msgsz)
{
    long status = 0;
    char *resp = NULL;
    harness_http_url(url, "POST", "/v1/functions", token, text, strlen(text),
                     "application/json", &status, &resp, NULL);
    id[0] = '\0';
    if (status == 200) {
        cJSON *j = cJSON_Parse(resp);
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "spec");
        assert_true(cJSON_IsString(s));
        assert_int_equal(strlen(s->valuestring), 64);
        memcpy(id, s->valuestring, 65);
        cJSON_Delete(j);
    } else if (code != NULL) {
        harness_json_error(resp, code, 64, msg, msgsz);
    }
    free(resp);
    return status;
}

static long register_spec(const char *text, char id[65], char *code, char *msg, size_t msgsz)
{
    return register_spec_at(rt.url, rt.token, text, id, code, msg, msgsz);
}

/* POST a call naming spec id with args [x] to the runtime at url; returns
 * the HTTP status, the body in *resp (free it) and its length. */
static long call_by_id_at(const char *url, const char *token, const char *id, int64_t x,
                          char **resp, size_t *rlen)
{
    char call_id[40];
    long status = 0;
    modal__random_id("fc-", call_id, sizeof call_id);
    cJSON *env = cJSON_CreateObject();
    cJSON_AddNumberToObject(env, "v", 1);
    cJSON_AddStringToObject(env, "spec", id);
    cJSON_AddStringToObject(env, "call_id", call_id);
    modal_value *args = modal_args(modal_int(x));
    void *frame = NULL;
    size_t flen = 0;
    modal_error err;
    assert_ok(harness_frame(env, "args", args, &frame, &flen, &err), err);
    modal_value_free(args);
    harness_http_url(url, "POST", "/v1/calls?wait=30", token, frame, flen, NULL, &status, resp,
                     rlen);
    free(frame);
    return status;
}

static long call_by_id(const char *id, int64_t x, char **resp, size_t *rlen)
{
    return call_by_id_at(rt.url, rt.token, id, x, resp, rlen);
}

/* The pools GET /v1/health reports, as JSON (delete it). */
static cJSON *pools(void)
{
    cJSON *j = harness_health(&rt);
    cJSON *p = cJSON_DetachItemFromObjectCaseSensitive(j, "pools");
    cJSON_Delete(j);
    assert_true(cJSON_IsArray(p));
    return p;
}

/* The spec id of the pool serving fn, or "" when there is none. */
static void pool_of(const char *fn, char id[65])
{
    cJSON *list = pools();
    id[0] = '\0';
    const cJSON *p;
    cJSON_ArrayForEach(p, list)
    {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(p, "fn");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "spec");
        if (cJSON_IsString(f) && strcmp(f->valuestring, fn) == 0 && cJSON_IsString(s))
            snprintf(id, 65, "%s", s->valuestring);
    }
    cJSON_Delete(list);
}

/* ---- tests -------------------------------------------------------- */

static void test_register_answers_canonical_id(void **state)
{
    char sha[65], a[65], b[65], c[65], local[65];
    assert_int_equal(harness_upload_self(&rt, sha), 0);
    char *t1 = spec_text(sha, "spec_echo", "{\"gpu\":\"h100,a100-80gb\"}");
    char *t2 = spec_text(sha, "spec_echo", "{\"gpu\":\"H100, A100-80GB\",\"timeout\":300}");
    char *t3 = spec_text(sha, "spec_echo", "{\"gpu\":\"A100-80GB, H100\"}");
    assert_int_equal(register_spec(t1, a, NULL, NULL, 0), 200);
    assert_int_equal(register_spec(t2, b, NULL, NULL, 0), 200);
    assert_int_equal(register_spec(t3, c, NULL, NULL, 0), 200);
    /* One request spelt two ways, defaults written out or not: one spec. */
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    /* Registering again answers the same id. */
    assert_int_equal(register_spec(t1, b, NULL, NULL, 0), 200);
    assert_string_equal(a, b);

    /* The id is the hash of the canonical form the library computes. */
    cJSON *j = cJSON_Parse(t2);
    modal__spec s;
    modal_error err;
    assert_ok(modal__spec_parse(j, "function spec", &s, &err), err);
    assert_string_equal(s.gpu, "H100, A100-80GB");
    assert_int_equal(modal__spec_hash(&s, local), 0);
    assert_string_equal(local, a);
    modal__spec_clear(&s);
    cJSON_Delete(j);

    /* A call by reference to that spec reaches the GPU refusal of this
     * runtime, which has no GPU; it names the canonical request. */
    char *resp = NULL, code[64], msg[512];
    size_t rlen = 0;
    assert_int_equal(call_by_id(a, 1, &resp, &rlen), 422);
    harness_json_error(resp, code, sizeof code, msg, sizeof msg);
    assert_string_equal(code, "EGPU");
    assert_contains(msg, "spec_echo: asks for gpu \"H100, A100-80GB\" but this runtime has");
    free(resp);
    free(t1);
    free(t2);
    free(t3);
}

static void test_call_by_reference(void **state)
{
    char sha[65], id[65], status_s[32], msg[512];
    assert_int_equal(harness_upload_self(&rt, sha), 0);
    char *t = spec_text(sha, "spec_echo", "{\"timeout\":30}");
    assert_int_equal(register_spec(t, id, NULL, NULL, 0), 200);
    free(t);
    char *resp = NULL;
    size_t rlen = 0;
    long status = call_by_id(id, 41, &resp, &rlen);
    if (status != 200)
        print_error("status %ld, body %s\n", status, resp);
    assert_int_equal(status, 200);
    modal_error err;
    assert_ok(harness_result_status(resp, rlen, status_s, sizeof status_s, msg, sizeof msg, &err),
              err);
    assert_string_equal(status_s, "OK");
    free(resp);
    /* Its pool is the spec's. */
    char pool[65];
    pool_of("spec_echo", pool);
    assert_string_equal(pool, id);
}

static void test_unknown_spec_refused(void **state)
{
    char *resp = NULL, code[64], msg[512];
    size_t rlen = 0;
    const char *id = "5555555555555555555555555555555555555555555555555555555555555555";
    assert_int_equal(call_by_id(id, 1, &resp, &rlen), 404);
    harness_json_error(resp, code, sizeof code, msg, sizeof msg);
    assert_string_equal(code, "ENOTFOUND");
    assert_contains(msg, MODAL__SPEC_UNKNOWN " 5555555555555555");
    assert_contains(msg, "POST /v1/functions");
    free(resp);
    /* Not an id at all. */
    assert_int_equal(call_by_id("../x", 1, &resp, &rlen), 400);
    harness_json_error(resp, code, sizeof code, msg, sizeof msg);
    assert_string_equal(code, "ECODEC");
    assert_contains(msg, "\"spec\"");
    free(resp);
}

static void test_route_refusals(void **state)
{
    char sha[65], id[65], code[64], msg[512];
    long status = 0;
    char *resp = NULL;
    assert_int_equal(harness_upload_self(&rt, sha), 0);
    harness_http(&rt, "GET", "/v1/functions", rt.token, NULL, 0, &status, &resp, NULL);
    assert_int_equal(status, 405);
    free(resp);
    assert_int_equal(register_spec("not json", id, code, msg, sizeof msg), 400);
    assert_string_equal(code, "ECODEC");
    assert_contains(msg, "JSON object");

    /* A bad option gets the library's own message for it. */
    char *t = spec_text(sha, "spec_echo", "{\"timeout\":0}");
    assert_int_equal(register_spec(t, id, code, msg, sizeof msg), 422);
    free(t);
    assert_string_equal(code, "EOPTION");
    assert_string_equal(msg, "function spec_echo: option .timeout = 0 is out of range; use 1 "
                             "to 86400 seconds");
    t = spec_text(sha, "spec_echo", "{\"retry_policy\":{\"initial_delay\":0}}");
    assert_int_equal(register_spec(t, id, code, msg, sizeof msg), 422);
    free(t);
    assert_string_equal(msg, "function spec_echo: option .retry_policy.initial_delay = 0 is "
                             "out of range; use 0.001 to 60 seconds");
    t = spec_text(sha, "spec_echo", "{\"warp\":9}");
    assert_int_equal(register_spec(t, id, code, msg, sizeof msg), 422);
    free(t);
    assert_contains(msg, "unknown option .warp");
    t = spec_text(sha, "spec-echo", "{}");
    assert_int_equal(register_spec(t, id, code, msg, sizeof msg), 400);
    free(t);
    assert_string_equal(code, "ECODEC");
    assert_contains(msg, "function spec: \"fn\" = \"spec-echo\"");
}

static void test_idle_pool_freed(void **state)
{
    modal_error err;
    modal_value *out = NULL;
    char first[65], again[65];
    for (int round = 0; round < 2; round++) {
        modal_value *in = modal_args(modal_int(1), modal_int(2), modal_int(3));
        assert_ok(modal_fn_map(&spec_idle, in, NULL, &out, &err), err);
        assert_int_equal(modal_value_len(out), 3);
        modal_value_free(out);
        /* Its pool is there while its worker is warm... */
        pool_of("spec_idle", round == 0 ? first : again);
        assert_int_equal(strlen(round == 0 ? first : again), 64);
        /* ...and goes once the worker scaled down (1 s) and nothing refers
         * to it: the map is deleted, its inputs with it. */
        char now[65] = "x";
        double deadline = harness_now() + 20;
        while (now[0] != '\0' && harness_now() < deadline) {
            harness_sleep(0.2);
            pool_of("spec_idle", now);
        }
        assert_string_equal(now, "");
    }
    /* The spec stayed registered: the pool came back with the same id. */
    assert_string_equal(first, again);
}

/*
 * A runtime that restarts at the same address, with a new state directory,
 * has forgotten both the function's spec and the executable. The client
 * only knows it registered and uploaded them there; its next call is
 * refused for the unknown spec, then for the missing executable, and it
 * registers and uploads again and succeeds, with no error for the program.
 */
static void test_restarted_runtime_gets_spec_again(void **state)
{
    char port_arg[64], url[64], old_url[PATH_MAX + 16], old_token[256];
    snprintf(old_url, sizeof old_url, "%s", getenv("MODAL_RUNTIME_URL"));
    snprintf(old_token, sizeof old_token, "%s", getenv("MODAL_TOKEN"));
    int port = harness_free_port();
    snprintf(port_arg, sizeof port_arg, "tcp:127.0.0.1:%d", port);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    const char *const args[] = {"--listen", port_arg, NULL};
    modal_error err;
    modal_value *out = NULL;
    int64_t v = 0;

    harness a, b;
    assert_int_equal(harness_start_with(&a, args, false), 0);
    setenv("MODAL_RUNTIME_URL", url, 1);
    setenv("MODAL_TOKEN", a.token, 1);
    assert_ok(modal_fn_remote(&spec_echo, modal_args(modal_int(7)), &out, &err), err);
    assert_ok(modal_get_int(out, &v, &err), err);
    assert_int_equal(v, 7);
    modal_value_free(out);
    harness_stop(&a);

    assert_int_equal(harness_start_with(&b, args, false), 0);
    setenv("MODAL_TOKEN", b.token, 1);
    assert_ok(modal_fn_remote(&spec_echo, modal_args(modal_int(8)), &out, &err), err);
    assert_ok(modal_get_int(out, &v, &err), err);
    assert_int_equal(v, 8);
    modal_value_free(out);
    /* A map finds its way the same way after another restart. */
    harness_stop(&b);
    assert_int_equal(harness_start_with(&b, args, false), 0);
    setenv("MODAL_TOKEN", b.token, 1);
    assert_ok(modal_fn_map(&spec_echo, modal_args(modal_int(1), modal_int(2)), NULL, &out, &err),
              err);
    assert_int_equal(modal_value_len(out), 2);
    modal_value_free(out);
    harness_stop(&b);
    setenv("MODAL_RUNTIME_URL", old_url, 1);
    setenv("MODAL_TOKEN", old_token, 1);
}

/*
 * A spec registered with POST /v1/functions is kept in the state directory:
 * a runtime restarted on it answers a call by that id at once, with no new
 * registration.
 */
static void test_specs_kept_across_restart(void **state)
{
    harness h;
    char sha[65], id[65], sock[PATH_MAX + 32], url[PATH_MAX + 40], status_s[32], msg[512];
    assert_int_equal(harness_start_with(&h, NULL, false), 0);
    assert_int_equal(harness_upload_self(&h, sha), 0);
    char *t = spec_text(sha, "spec_echo", "{\"timeout\":30}");
    assert_int_equal(register_spec_at(h.url, h.token, t, id, NULL, NULL, 0), 200);
    free(t);
    harness_kill(&h); /* SIGKILL: nothing is written at exit */

    snprintf(sock, sizeof sock, "%s/again.sock", h.dir);
    snprintf(url, sizeof url, "unix:%s", sock);
    char listen[PATH_MAX + 40];
    snprintf(listen, sizeof listen, "unix:%s", sock);
    /* If the test fails half-way, the runtime stops by itself once idle,
     * and holds none of this process's output pipes meanwhile. */
    char *const argv[] = {(char *)harness_runtime_bin(), "--state-dir", h.dir, "--listen",
                          listen, "--idle-exit", "20", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, argv[0], &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    for (double end = harness_now() + HARNESS_START_SECONDS;
         access(sock, F_OK) != 0 && harness_now() < end;)
        harness_sleep(0.02);
    assert_int_equal(harness_health_pid(url, h.token), (long)pid);

    char *resp = NULL;
    size_t rlen = 0;
    long status = call_by_id_at(url, h.token, id, 9, &resp, &rlen);
    if (status != 200)
        print_error("status %ld, body %s\n", status, resp);
    assert_int_equal(status, 200);
    modal_error err;
    assert_ok(harness_result_status(resp, rlen, status_s, sizeof status_s, msg, sizeof msg, &err),
              err);
    assert_string_equal(status_s, "OK");
    free(resp);

    kill(pid, SIGTERM);
    assert_true(harness_wait_pid(pid, HARNESS_STOP_SECONDS) != -1);
    harness_stop(&h);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    /* The runtime has no GPU, even on a machine with one. */
    setenv("MODAL_CUDA_LIBRARY", "/nonexistent/libcuda.so.1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_answers_canonical_id),
        cmocka_unit_test(test_call_by_reference),
        cmocka_unit_test(test_unknown_spec_refused),
        cmocka_unit_test(test_route_refusals),
        cmocka_unit_test(test_idle_pool_freed),
        cmocka_unit_test(test_restarted_runtime_gets_spec_again),
        cmocka_unit_test(test_specs_kept_across_restart),
    };
    return cmocka_run_group_tests_name("specs", tests, harness_group_setup,
                                       harness_group_teardown) != 0;
}
