/*
 * test_pools.c: worker pools against a real runtime: enter and exit hooks
 * run once per worker, warm workers are reused, max_inputs retires a
 * worker, max_containers bounds the pool, min_containers keeps a worker
 * through the scale-down window, a failing enter hook fails the call, and
 * executables that cannot be workers are refused with the reason.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

MODAL_APP("itest-pools");

/* ---- functions ---------------------------------------------------- */

static int enters;          /* per worker process */
static int calls;
static char exit_marker[512];

static int count_enter(modal_ctx *ctx)
{
    enters++;
    return 0;
}

static int write_exit_marker(modal_ctx *ctx)
{
    if (exit_marker[0] != '\0') {
        FILE *f = fopen(exit_marker, "w");
        if (f != NULL) {
            fprintf(f, "exit %d after %d calls\n", (int)getpid(), calls);
            fclose(f);
        }
    }
    return 0;
}

static modal_value *pid_report(void)
{
    modal_value *m = modal_map();
    if (modal_map_set(m, "pid", modal_int(getpid()), NULL) != MODAL_OK ||
        modal_map_set(m, "enters", modal_int(enters), NULL) != MODAL_OK ||
        modal_map_set(m, "calls", modal_int(calls), NULL) != MODAL_OK) {
        modal_value_free(m);
        return NULL;
    }
    return m;
}

/* Argument 0: where the exit hook should write (or ""). */
MODAL_FUNCTION(hooked, .enter = count_enter, .exit = write_exit_marker,
               .scaledown_window = 1)
{
    const char *marker = modal_arg_string(args, 0);
    if (marker != NULL && marker[0] != '\0')
        snprintf(exit_marker, sizeof exit_marker, "%s", marker);
    calls++;
    return pid_report();
}

MODAL_FUNCTION(limited, .max_inputs = 2, .scaledown_window = 1)
{
    calls++;
    return pid_report();
}

MODAL_FUNCTION(three_each, .max_inputs = 3, .scaledown_window = 1)
{
    return modal_int(getpid());
}

/* Sleeps argument 0 seconds; one container, so calls queue behind it. */
MODAL_FUNCTION(one_slow, .max_containers = 1, .timeout = 1, .scaledown_window = 1)
{
    harness_sleep(modal_arg_float(args, 0));
    return modal_int(getpid());
}

/* Sleeps argument 0 seconds, then reports its pid. */
MODAL_FUNCTION(single, .max_containers = 1, .scaledown_window = 1)
{
    harness_sleep(modal_arg_float(args, 0));
    return modal_int(getpid());
}

MODAL_FUNCTION(three, .max_containers = 3, .scaledown_window = 1)
{
    harness_sleep(modal_arg_float(args, 0));
    return modal_int(getpid());
}

MODAL_FUNCTION(kept_warm, .min_containers = 1, .scaledown_window = 1)
{
    return modal_int(getpid());
}

static int refuse_enter(modal_ctx *ctx)
{
    modal_ctx_fail(ctx, "model file /models/m.bin is missing");
    return 1;
}

MODAL_FUNCTION(bad_enter, .enter = refuse_enter, .scaledown_window = 1)
{
    return modal_null();
}

/* Appends its index to the file named by argument 1; input 5 kills its
 * worker. With one container, later inputs were sent ahead in the same
 * batch and must be run again elsewhere, exactly once. */
MODAL_FUNCTION(crashy, .max_containers = 1, .scaledown_window = 1)
{
    int64_t i = modal_arg_int(args, 0);
    const char *log = modal_arg_string(args, 1);
    FILE *f = log != NULL ? fopen(log, "a") : NULL;
    if (f != NULL) {
        fprintf(f, "%lld\n", (long long)i);
        fclose(f);
    }
    if (i == 5)
        raise(SIGKILL);
    return modal_int(i);
}

/* ---- helpers ------------------------------------------------------ */

static int64_t field(const modal_value *m, const char *key)
{
    int64_t v = -1;
    modal_get_int(modal_map_get(m, key), &v, NULL);
    return v;
}

static modal_value *call(modal_function *fn, modal_value *args)
{
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_remote(fn, args, &out, &err), err);
    return out;
}

/* ---- tests -------------------------------------------------------- */

static void test_hooks_once_per_worker(void **state)
{
    char marker[PATH_MAX + 32];
    snprintf(marker, sizeof marker, "%s/exit-marker", rt.dir);
    modal_value *a = call(&hooked, modal_args(modal_string(marker)));
    modal_value *b = call(&hooked, modal_args(modal_string("")));
    modal_value *c = call(&hooked, modal_args(modal_string("")));
    int64_t pid = field(a, "pid");
    /* One warm worker served all three; its enter hook ran once. */
    assert_int_equal(field(b, "pid"), pid);
    assert_int_equal(field(c, "pid"), pid);
    assert_int_equal(field(a, "enters"), 1);
    assert_int_equal(field(c, "enters"), 1);
    assert_int_equal(field(c, "calls"), 3);
    modal_value_free(a);
    modal_value_free(b);
    modal_value_free(c);

    /* After the 1 s scale-down window the worker exits, running its exit
     * hook once. */
    char *text = NULL;
    for (double t0 = harness_now(); harness_now() - t0 < 10 && text == NULL;) {
        harness_sleep(0.1);
        text = harness_read_file(marker, NULL);
    }
    assert_non_null(text);
    char expect[64];
    snprintf(expect, sizeof expect, "exit %lld after 3 calls", (long long)pid);
    assert_contains(text, expect);
    free(text);
    assert_false(harness_pid_alive((pid_t)pid) && harness_wait_pid((pid_t)pid, 5) != 0);

    /* The next call starts a fresh worker, with its own enter hook. */
    modal_value *d = call(&hooked, modal_args(modal_string("")));
    assert_int_not_equal(field(d, "pid"), pid);
    assert_int_equal(field(d, "enters"), 1);
    modal_value_free(d);
}

static void test_max_inputs_retires_worker(void **state)
{
    modal_value *r[3];
    for (int i = 0; i < 3; i++)
        r[i] = call(&limited, modal_list());
    assert_int_equal(field(r[0], "pid"), field(r[1], "pid"));
    assert_int_equal(field(r[1], "calls"), 2);
    assert_int_not_equal(field(r[2], "pid"), field(r[0], "pid"));
    assert_int_equal(field(r[2], "calls"), 1);
    for (int i = 0; i < 3; i++)
        modal_value_free(r[i]);
}

static void test_max_inputs_holds_for_maps(void **state)
{
    /* Maps send calls ahead in batches; none may exceed max_inputs. */
    modal_value *inputs = modal_list();
    for (int i = 0; i < 40; i++)
        modal_list_append(inputs, modal_int(i), NULL);
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_map(&three_each, inputs, NULL, &out, &err), err);
    assert_int_equal(modal_value_len(out), 40);
    for (size_t i = 0; i < 40; i++) {
        int64_t pid = -1, same = 0;
        modal_get_int(modal_list_get(out, i), &pid, NULL);
        for (size_t j = 0; j < 40; j++) {
            int64_t other = -2;
            modal_get_int(modal_list_get(out, j), &other, NULL);
            same += other == pid;
        }
        if (same > 3) {
            print_error("worker %lld served %lld inputs (max_inputs 3)\n", (long long)pid,
                        (long long)same);
            fail();
        }
    }
    modal_value_free(out);
}

/* Spawn n calls of fn sleeping `sleep` seconds; return distinct pids. */
static size_t distinct_pids(modal_function *fn, int n, double sleep)
{
    modal_call *calls_[16];
    int64_t pids[16];
    modal_error err;
    for (int i = 0; i < n; i++)
        assert_ok(modal_fn_spawn(fn, modal_args(modal_float(sleep)), &calls_[i], &err), err);
    size_t distinct = 0;
    for (int i = 0; i < n; i++) {
        modal_value *out = NULL;
        assert_ok(modal_call_get(calls_[i], 60, &out, &err), err);
        assert_ok(modal_get_int(out, &pids[i], &err), err);
        modal_value_free(out);
        modal_call_free(calls_[i]);
        bool seen = false;
        for (int j = 0; j < i; j++)
            seen = seen || pids[j] == pids[i];
        distinct += !seen;
    }
    return distinct;
}

static void test_max_containers_bounds_pool(void **state)
{
    assert_int_equal(distinct_pids(&single, 4, 0.2), 1);
    size_t n = distinct_pids(&three, 6, 0.5);
    assert_true(n >= 2);
    assert_true(n <= 3);
}

static void test_min_containers_keeps_worker(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_remote(&kept_warm, modal_list(), &out, &err), err);
    int64_t pid = -1;
    modal_get_int(out, &pid, NULL);
    modal_value_free(out);
    /* Well past the 1 s scale-down window, the one worker is still there
     * and serves the next call. */
    harness_sleep(2.5);
    assert_true(harness_pid_alive((pid_t)pid));
    assert_ok(modal_fn_remote(&kept_warm, modal_list(), &out, &err), err);
    int64_t again = -2;
    modal_get_int(out, &again, NULL);
    modal_value_free(out);
    assert_int_equal(again, pid);
}

static void test_enter_hook_failure(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    modal_status st = modal_fn_remote(&bad_enter, modal_list(), &out, &err);
    assert_status(st, MODAL_EFUNC, err);
    assert_message_contains(err, "enter hook failed");
    assert_message_contains(err, "model file /models/m.bin is missing");
    assert_null(out);
}

static void test_crash_in_batch_runs_others_once(void **state)
{
    char log[PATH_MAX + 32];
    snprintf(log, sizeof log, "%s/crashy.log", rt.dir);
    const int n = 40;
    modal_value *inputs = modal_list();
    for (int i = 0; i < n; i++)
        modal_list_append(inputs, modal_args(modal_int(i), modal_string(log)), NULL);
    modal_map_options o = {.return_errors = true};
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_starmap(&crashy, inputs, &o, &out, &err), err);
    assert_int_equal(modal_value_len(out), n);
    for (int i = 0; i < n; i++) {
        const modal_value *r = modal_list_get(out, (size_t)i);
        if (i == 5) {
            const char *status = NULL;
            assert_ok(modal_get_string(modal_map_get(r, "status"), &status, NULL, &err), err);
            assert_string_equal(status, "ECRASH");
        } else {
            int64_t v = -1;
            assert_ok(modal_get_int(r, &v, &err), err);
            assert_int_equal(v, i);
        }
    }
    modal_value_free(out);
    /* Every input ran exactly once: those sent ahead of the crash were
     * put back without running, not run twice. */
    char *text = harness_read_file(log, NULL);
    assert_non_null(text);
    int seen[40] = {0};
    for (char *p = text; *p;) {
        long v = strtol(p, &p, 10);
        assert_true(v >= 0 && v < n);
        seen[v]++;
        while (*p == '\n')
            p++;
    }
    free(text);
    for (int i = 0; i < n; i++)
        if (seen[i] != 1) {
            print_error("input %d ran %d times\n", i, seen[i]);
            fail();
        }
}

static void test_timeout_keeps_calls_behind_it(void **state)
{
    /* Input 0 runs past its 1 s timeout while the others wait behind it
     * in the same worker; they must still run, in a new worker. */
    modal_value *inputs = modal_list();
    modal_list_append(inputs, modal_float(5.0), NULL);
    for (int i = 1; i < 10; i++)
        modal_list_append(inputs, modal_float(0.0), NULL);
    modal_map_options o = {.return_errors = true};
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_map(&one_slow, inputs, &o, &out, &err), err);
    const char *status = NULL;
    assert_ok(modal_get_string(modal_map_get(modal_list_get(out, 0), "status"), &status, NULL,
                               &err), err);
    assert_string_equal(status, "ETIMEOUT");
    for (size_t i = 1; i < 10; i++) {
        int64_t pid = 0;
        assert_ok(modal_get_int(modal_list_get(out, i), &pid, &err), err);
    }
    modal_value_free(out);
}

/* ---- executables that cannot be workers ---------------------------- */

static void sha256_hex(const void *p, size_t len, char hex[65])
{
    unsigned char md[32];
    unsigned mdlen = 0;
    EVP_Digest(p, len, md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* Upload bytes as an artifact and submit a call to it; returns the HTTP
 * status and fills code/message from the error or result. */
static long submit_to(const void *exe, size_t len, char *code, size_t codesz, char *msg,
                      size_t msgsz)
{
    char sha[65], path[128], id[40];
    long status = 0;
    char *resp = NULL;
    size_t rlen = 0;
    sha256_hex(exe, len, sha);
    snprintf(path, sizeof path, "/v1/artifacts/%s", sha);
    harness_http_url(rt.url, "PUT", path, rt.token, exe, len, "application/octet-stream",
                     &status, &resp, NULL);
    assert_true(status == 200 || status == 201);
    free(resp);
    resp = NULL;

    modal__random_id("fc-", id, sizeof id);
    cJSON *env = cJSON_CreateObject();
    cJSON_AddNumberToObject(env, "v", 1);
    cJSON_AddStringToObject(env, "app", "itest-pools");
    cJSON_AddStringToObject(env, "fn", "main");
    cJSON_AddStringToObject(env, "artifact", sha);
    cJSON_AddStringToObject(env, "call_id", id);
    modal_value *args = modal_list();
    void *frame = NULL;
    size_t flen = 0;
    modal_error err;
    assert_ok(harness_frame(env, "args", args, &frame, &flen, &err), err);
    modal_value_free(args);
    harness_http(&rt, "POST", "/v1/calls?wait=30", rt.token, frame, flen, &status, &resp, &rlen);
    free(frame);
    if (status == 200)
        assert_ok(harness_result_status(resp, rlen, code, codesz, msg, msgsz, &err), err);
    else
        harness_json_error(resp, code, codesz, msg, msgsz);
    free(resp);
    return status;
}

static void test_not_a_worker(void **state)
{
    char code[64], msg[2048];
    size_t len = 0;
    /* A real program that is not linked with libmodal. */
    char *exe = harness_read_file("/bin/true", &len);
    assert_non_null(exe);
    assert_int_equal(submit_to(exe, len, code, sizeof code, msg, sizeof msg), 200);
    free(exe);
    assert_string_equal(code, "EWORKER");
    assert_contains(msg, "before answering as a libmodal worker");
    assert_contains(msg, "exited with status 0");
}

static void test_wrong_architecture(void **state)
{
    char code[64], msg[2048];
    /* An ELF header for aarch64. */
    unsigned char elf[64] = {0x7f, 'E', 'L', 'F', 2, 1, 1};
    elf[16] = 2;   /* ET_EXEC */
    elf[18] = 183; /* EM_AARCH64 */
    assert_int_equal(submit_to(elf, sizeof elf, code, sizeof code, msg, sizeof msg), 422);
    assert_string_equal(code, "EWORKER");
    assert_contains(msg, "built for aarch64");

    const char script[] = "#!/bin/sh\necho hi\n";
    assert_int_equal(submit_to(script, sizeof script - 1, code, sizeof code, msg, sizeof msg), 422);
    assert_contains(msg, "not an ELF executable");
}

static void test_missing_shared_library(void **state)
{
    char dir[PATH_MAX + 16], cmd[5 * PATH_MAX], exe_path[PATH_MAX + 32], code[64], msg[2048];
    snprintf(dir, sizeof dir, "%s/solib", rt.dir);
    mkdir(dir, 0700);
    snprintf(cmd, sizeof cmd,
             "cd '%s' && printf 'int gone(void){return 1;}\\n' > gone.c && "
             "printf 'int gone(void);\\nint main(void){return gone();}\\n' > main.c && "
             "cc -shared -fPIC -o libmodalgone.so gone.c && "
             "cc -o prog main.c -L. -lmodalgone && rm libmodalgone.so",
             dir);
    if (system(cmd) != 0)
        skip(); /* no C compiler here */
    snprintf(exe_path, sizeof exe_path, "%s/prog", dir);
    size_t len = 0;
    char *exe = harness_read_file(exe_path, &len);
    assert_non_null(exe);
    assert_int_equal(submit_to(exe, len, code, sizeof code, msg, sizeof msg), 200);
    free(exe);
    assert_string_equal(code, "EWORKER");
    assert_contains(msg, "libmodalgone.so");
    assert_contains(msg, "exited with status 127");
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hooks_once_per_worker),
        cmocka_unit_test(test_max_inputs_retires_worker),
        cmocka_unit_test(test_max_inputs_holds_for_maps),
        cmocka_unit_test(test_max_containers_bounds_pool),
        cmocka_unit_test(test_min_containers_keeps_worker),
        cmocka_unit_test(test_enter_hook_failure),
        cmocka_unit_test(test_crash_in_batch_runs_others_once),
        cmocka_unit_test(test_timeout_keeps_calls_behind_it),
        cmocka_unit_test(test_not_a_worker),
        cmocka_unit_test(test_wrong_architecture),
        cmocka_unit_test(test_missing_shared_library),
    };
    return cmocka_run_group_tests_name("pools", tests, harness_group_setup, harness_group_teardown) != 0;
}
