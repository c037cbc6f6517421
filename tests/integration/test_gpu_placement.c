/*
 * test_gpu_placement.c: GPU placement against a real runtime whose CUDA
 * driver is the test double (tests/cuda_fake, through MODAL_CUDA_LIBRARY,
 * with the devices of MODAL_FAKE_CUDA_DEVICES). Each test starts a runtime
 * with the inventory it needs; each function reports the
 * CUDA_VISIBLE_DEVICES its worker was given. Covered: exact types before
 * upgrades, "!" never upgrading, A100 on an A100-80GB, fallback order
 * (the second choice at once when the first is busy),
 * counts, "any", disjoint devices for concurrent workers, calls waiting
 * for busy devices (visible in health) and an idle worker of another
 * function stopped for them (only one whose devices can serve them; also
 * one that became ready with nothing to do; never an idle batched worker
 * whose call waits for its batch), workers killed with a killed runtime
 * (a stopped one still runs their exit hooks), requests that can never be
 * met (EGPU at once, naming what the runtime has), a runtime without GPUs,
 * --gpus, health's gpus with holders, GPU-seconds (kept when an idle pool
 * is freed; a batch's calls share them), memory-snapshot workers.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

MODAL_APP("itest-gpu");

/* Device UUIDs of the inventories below. */
#define U_H200 "GPU-00000000-0000-4000-8000-000000000200"
#define U_H100A "GPU-00000000-0000-4000-8000-0000000001a0"
#define U_H100B "GPU-00000000-0000-4000-8000-0000000001b0"
#define U_H100C "GPU-00000000-0000-4000-8000-0000000001c0"
#define U_H100D "GPU-00000000-0000-4000-8000-0000000001d0"
#define U_A80A "GPU-00000000-0000-4000-8000-000000080a00"
#define U_A80B "GPU-00000000-0000-4000-8000-000000080b00"

#define H200(u) "NVIDIA H200|144384|9.0|" u
#define H100(u) "NVIDIA H100 80GB HBM3|81559|9.0|" u
#define A100_80(u) "NVIDIA A100-SXM4-80GB|81920|8.0|" u

/* ---- functions ---------------------------------------------------- */

/* Sleep argument 0 seconds, then say which GPUs this worker sees. */
static modal_value *visible(const modal_value *args)
{
    harness_sleep(modal_arg_float(args, 0));
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    return modal_string(v != NULL ? v : "(unset)");
}

MODAL_FUNCTION(on_h100, .gpu = "H100") { return visible(args); }
MODAL_FUNCTION(on_h100_only, .gpu = "H100!") { return visible(args); }
MODAL_FUNCTION(on_a100, .gpu = "A100") { return visible(args); }
MODAL_FUNCTION(on_list, .gpu = "B200, A100-80GB, H100") { return visible(args); }
MODAL_FUNCTION(on_four, .gpu = "h100:4") { return visible(args); }
MODAL_FUNCTION(on_any, .gpu = "any") { return visible(args); }
MODAL_FUNCTION(on_two, .gpu = "h100:2") { return visible(args); }
MODAL_FUNCTION(on_h100_once, .gpu = "H100", .max_inputs = 1) { return visible(args); }
MODAL_FUNCTION(on_h100_or_a100, .gpu = "H100!, A100-80GB") { return visible(args); }

/* The file on_h100_hooked's exit hook writes, from its call's argument. */
static char exit_marker[256];

static int write_exit_marker(modal_ctx *ctx)
{
    harness_sleep(1); /* a hook that takes its time */
    FILE *f = exit_marker[0] != '\0' ? fopen(exit_marker, "w") : NULL;
    if (f != NULL) {
        fputs("exited\n", f);
        fclose(f);
    }
    return 0;
}

MODAL_FUNCTION(on_h100_hooked, .gpu = "H100", .exit = write_exit_marker)
{
    snprintf(exit_marker, sizeof exit_marker, "%s", modal_arg_string(args, 0));
    return modal_string("ok");
}

static int slow_enter(modal_ctx *ctx)
{
    harness_sleep(1.5);
    return 0;
}

/* Starts slowly (1.5 s in its enter hook), then keeps the H100 idle. */
MODAL_FUNCTION(on_h100_slow_start, .gpu = "H100!", .enter = slow_enter) { return visible(args); }
MODAL_FUNCTION(on_cpu) { return visible(args); }

/* A batched GPU function: sleeps 0.3 s once per batch and answers each
 * call with the size of the batch it ran in. */
MODAL_FUNCTION(on_h100_batched, .gpu = "H100", .batch_max_size = 4, .batch_wait_ms = 2000)
{
    size_t n = modal_value_len(modal_arg(args, 0));
    harness_sleep(0.3);
    modal_value *out = modal_list();
    for (size_t i = 0; i < n; i++)
        modal_list_append(out, modal_int((int64_t)n), NULL);
    return out;
}

/* What the memory-snapshot template saw, inherited by its forks. */
static char template_saw[256] = "(not run)";

static int note_template(modal_ctx *ctx)
{
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    snprintf(template_saw, sizeof template_saw, "%s", v != NULL ? v : "(unset)");
    return 0;
}

MODAL_FUNCTION(on_h100_snapshot, .gpu = "H100", .memory_snapshot = true,
               .snapshot_enter = note_template)
{
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    char out[600];
    snprintf(out, sizeof out, "template=[%s] worker=[%s]", template_saw, v ? v : "(unset)");
    return modal_string(out);
}

MODAL_FUNCTION(on_h100_snapshot_sleep, .gpu = "H100", .memory_snapshot = true)
{
    return visible(args);
}

/* ---- helpers ------------------------------------------------------ */

/* The string v holds ("(not a string)" otherwise). */
static const char *str(const modal_value *v)
{
    const char *s = NULL;
    return modal_get_string(v, &s, NULL, NULL) == MODAL_OK ? s : "(not a string)";
}

/*
 * Start rt with the devices given (";"-separated, as MODAL_FAKE_CUDA_DEVICES
 * takes them), or, with NULL, with no CUDA driver at all.
 */
static void start_with(const char *devices)
{
    if (devices != NULL) {
        setenv("MODAL_CUDA_LIBRARY", harness_cuda_fake("libcuda.so.1"), 1);
        setenv("MODAL_FAKE_CUDA_DEVICES", devices, 1);
    } else {
        setenv("MODAL_CUDA_LIBRARY", "/nonexistent/libcuda.so.1", 1);
        unsetenv("MODAL_FAKE_CUDA_DEVICES");
    }
    unsetenv("CUDA_VISIBLE_DEVICES");
    assert_int_equal(harness_start_with(&rt, NULL, true), 0);
}

static int stop(void **state)
{
    harness_stop(&rt);
    return 0;
}

/* Call fn(sleep) and return what it saw (free it). */
static char *run_on(modal_function *fn, double sleep)
{
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_remote(fn, modal_args(modal_float(sleep)), &out, &err), err);
    char *s = strdup(str(out));
    modal_value_free(out);
    return s;
}

static void expect_on(modal_function *fn, const char *want)
{
    char *got = run_on(fn, 0);
    assert_string_equal(got, want);
    free(got);
}

/* Call fn, which must fail at once with EGPU; its message into msg. */
static void expect_egpu(modal_function *fn, char *msg, size_t msgsz)
{
    modal_value *out = NULL;
    modal_error err;
    double t0 = harness_now();
    assert_int_equal(modal_fn_remote(fn, modal_args(modal_float(0)), &out, &err), MODAL_EGPU);
    assert_true(harness_now() - t0 < 5);
    snprintf(msg, msgsz, "%s", err.message);
}

/* health.gpus.devices[i] of rt; the caller deletes *health. */
static const cJSON *gpu_entry(cJSON **health, int i)
{
    *health = harness_health(&rt);
    const cJSON *devs = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(*health, "gpus"), "devices");
    return cJSON_GetArrayItem(devs, i);
}

/* The health pool entry of fn. */
static const cJSON *pool_entry(const cJSON *health, const char *fn)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(health, "pools"))
    {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "fn");
        if (cJSON_IsString(f) && strcmp(f->valuestring, fn) == 0)
            return e;
    }
    return NULL;
}

static double num(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

/* ---- tests -------------------------------------------------------- */

/* An H100 request takes an H100 even when an H200 has a lower index; a
 * second concurrent worker gets the H200 (the upgrade), never the same
 * device; "H100!" never takes the H200 and stops an idle worker of
 * another function that holds an H100. */
static void test_exact_upgrade_disjoint(void **state)
{
    start_with(H200(U_H200) ";" H100(U_H100A));
    expect_on(&on_h100, U_H100A);
    modal_call *c[2];
    modal_error err;
    for (int i = 0; i < 2; i++)
        assert_ok(modal_fn_spawn(&on_h100, modal_args(modal_float(0.5)), &c[i], &err), err);
    char *got[2];
    for (int i = 0; i < 2; i++) {
        modal_value *out = NULL;
        assert_ok(modal_call_get(c[i], 30, &out, &err), err);
        got[i] = strdup(str(out));
        modal_value_free(out);
        modal_call_free(c[i]);
    }
    assert_string_not_equal(got[0], got[1]);
    assert_true(strcmp(got[0], U_H200) == 0 || strcmp(got[1], U_H200) == 0);
    assert_true(strcmp(got[0], U_H100A) == 0 || strcmp(got[1], U_H100A) == 0);
    free(got[0]);
    free(got[1]);
    /* Both on_h100 workers idle now, holding both devices: "H100!" takes
     * the H100 of one of them (stopped for it), not the free-able H200. */
    expect_on(&on_h100_only, U_H100A);
    /* A function without GPUs sees none on a runtime with GPUs. */
    expect_on(&on_cpu, "");
}

/* Busy devices: the call waits (health says it waits for "gpu", and shows
 * the holder), then runs when they are free. */
static void test_busy_waits_then_runs(void **state)
{
    start_with(H100(U_H100A) ";" H200(U_H200));
    modal_call *first, *second;
    modal_error err;
    assert_ok(modal_fn_spawn(&on_h100_only, modal_args(modal_float(1.0)), &first, &err), err);
    /* The first worker holds the H100 once it runs. */
    cJSON *health = NULL;
    const cJSON *dev = NULL;
    for (double t0 = harness_now(); harness_now() - t0 < 10;) {
        cJSON_Delete(health);
        dev = gpu_entry(&health, 0);
        if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(dev, "held_by")))
            break;
        harness_sleep(0.02);
    }
    const cJSON *held = cJSON_GetObjectItemCaseSensitive(dev, "held_by");
    assert_true(cJSON_IsObject(held));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(held, "fn")->valuestring, "on_h100_only");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(held, "app")->valuestring, "itest-gpu");
    assert_true(num(held, "pid") > 1);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(dev, "uuid")->valuestring, U_H100A);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(dev, "type")->valuestring, "H100");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(dev, "cc")->valuestring, "9.0");
    assert_true(num(dev, "memory_mib") == 81559);
    const cJSON *h200 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(health, "gpus"), "devices"), 1);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(h200, "held_by")));
    cJSON_Delete(health);

    double t0 = harness_now();
    assert_ok(modal_fn_spawn(&on_h100_only, modal_args(modal_float(0)), &second, &err), err);
    const char *waits = NULL;
    for (double t1 = harness_now(); harness_now() - t1 < 5 && waits == NULL;) {
        health = harness_health(&rt);
        const cJSON *e = harness_waiting_entry(health, "on_h100_only");
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(e, "waits_for");
        if (cJSON_IsString(w) && strcmp(w->valuestring, "gpu") == 0)
            waits = "gpu";
        cJSON_Delete(health);
        if (waits == NULL)
            harness_sleep(0.02);
    }
    assert_non_null(waits);
    modal_value *out = NULL;
    assert_ok(modal_call_get(second, 30, &out, &err), err);
    assert_string_equal(str(out), U_H100A);
    assert_true(harness_now() - t0 > 0.5); /* it waited for the first */
    modal_value_free(out);
    assert_ok(modal_call_get(first, 30, &out, &err), err);
    assert_string_equal(str(out), U_H100A);
    modal_value_free(out);
    modal_call_free(first);
    modal_call_free(second);
}

/* What can never be met fails at once, naming what the runtime has;
 * A100 runs on an A100-80GB; a fallback list is tried in order, skipping
 * a choice that can never fit; "any" takes the lowest free device. */
static void test_rules_and_refusals(void **state)
{
    start_with(H200(U_H200) ";" A100_80(U_A80A) ";" A100_80(U_A80B));
    char msg[MODAL_ERROR_MESSAGE_SIZE];
    expect_egpu(&on_four, msg, sizeof msg);
    assert_contains(msg, "on_four: asks for gpu \"H100:4\" but this runtime has 1 H200 "
                         "(141 GiB) and 2 A100-80GB (80 GiB)");
    expect_egpu(&on_h100_only, msg, sizeof msg);
    assert_contains(msg, "on_h100_only: asks for gpu \"H100!\" but this runtime has 1 H200");
    expect_on(&on_list, U_A80A); /* B200 never fits; A100-80GB comes before H100 */
    expect_on(&on_any, U_H200);
    expect_on(&on_a100, U_A80B); /* the other one is held by on_list's worker */
    /* Calls to an H100 go to the H200 (an upgrade) once it is free: the
     * idle worker of on_any holding it is stopped for them. */
    expect_on(&on_h100, U_H200);
}

/* "h100:4" gets four distinct H100s, in index order; GPU-seconds are the
 * run time times four, summed per function and per app. */
static void test_count_and_gpu_seconds(void **state)
{
    start_with(H200(U_H200) ";" H100(U_H100A) ";" H100(U_H100B) ";" H100(U_H100C) ";"
               H100(U_H100D));
    char *got = run_on(&on_four, 0.2);
    assert_string_equal(got, U_H100A "," U_H100B "," U_H100C "," U_H100D);
    free(got);
    got = run_on(&on_four, 0.1);
    free(got);
    cJSON *health = harness_health(&rt);
    const cJSON *p = pool_entry(health, "on_four");
    assert_non_null(p);
    double fn_s = num(p, "gpu_seconds");
    assert_true(fn_s >= 4 * 0.3 - 1e-6);
    assert_true(fn_s < 4 * 0.3 + 4.0);
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(health, "usage"), "itest-gpu");
    assert_non_null(u);
    assert_true(num(u, "gpu_seconds") == fn_s);
    assert_true(num(u, "calls") == 2);
    cJSON_Delete(health);
}

/* The calls of a batch ran in one invocation on one GPU: together they
 * are charged its run time once (each its share), not once per call. */
static void test_batch_shares_gpu_seconds(void **state)
{
    start_with(H100(U_H100A));
    modal_call *calls[4];
    modal_error err;
    double t0 = harness_now();
    for (int i = 0; i < 4; i++)
        assert_ok(modal_fn_spawn(&on_h100_batched, modal_args(modal_int(i)), &calls[i], &err),
                  err);
    for (int i = 0; i < 4; i++) {
        modal_value *out = NULL;
        assert_ok(modal_call_get(calls[i], 30, &out, &err), err);
        int64_t n = 0;
        assert_int_equal(modal_get_int(out, &n, NULL), MODAL_OK);
        assert_int_equal(n, 4); /* one batch of all four */
        modal_value_free(out);
        modal_call_free(calls[i]);
    }
    double wall = harness_now() - t0;
    cJSON *health = harness_health(&rt);
    const cJSON *p = pool_entry(health, "on_h100_batched");
    assert_non_null(p);
    double fn_s = num(p, "gpu_seconds");
    /* At least the batch's 0.3 s on one GPU; at most the test's own wall
     * time (charging each call the whole batch would give 4 x 0.3 s). */
    assert_true(fn_s >= 0.3 - 1e-6);
    assert_true(fn_s <= wall);
    cJSON_Delete(health);
}

/* The device holder's pid and function in health (0 and "" when free). */
static long holder(char *fn, size_t fnsz)
{
    cJSON *health = NULL;
    const cJSON *held = cJSON_GetObjectItemCaseSensitive(gpu_entry(&health, 0), "held_by");
    long pid = cJSON_IsObject(held) ? (long)num(held, "pid") : 0;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(held, "fn");
    snprintf(fn, fnsz, "%s", cJSON_IsString(f) ? f->valuestring : "");
    cJSON_Delete(health);
    return pid;
}

/* A batched function's idle worker whose call waits for its batch to
 * fill is not idle for others: a call of another function that wants its
 * GPU waits for the batch to run, rather than having the worker stopped
 * under the call that came first. */
static void test_batch_waiting_keeps_its_gpu(void **state)
{
    start_with(H100(U_H100A));
    modal_call *calls[4], *lone, *other;
    modal_error err;
    for (int i = 0; i < 4; i++)
        assert_ok(modal_fn_spawn(&on_h100_batched, modal_args(modal_int(i)), &calls[i], &err),
                  err);
    for (int i = 0; i < 4; i++) {
        modal_value *out = NULL;
        assert_ok(modal_call_get(calls[i], 30, &out, &err), err);
        modal_value_free(out);
        modal_call_free(calls[i]);
    }
    char fn[64];
    long warm = holder(fn, sizeof fn);
    assert_string_equal(fn, "on_h100_batched");
    double t0 = harness_now();
    assert_ok(modal_fn_spawn(&on_h100_batched, modal_args(modal_int(9)), &lone, &err), err);
    assert_ok(modal_fn_spawn(&on_h100_only, modal_args(modal_float(0)), &other, &err), err);
    harness_sleep(0.6);
    assert_true(harness_now() - t0 < 1.9); /* the batch still waits */
    assert_int_equal(holder(fn, sizeof fn), warm);
    assert_string_equal(fn, "on_h100_batched");
    modal_value *out = NULL;
    assert_ok(modal_call_get(lone, 30, &out, &err), err);
    int64_t n = 0;
    assert_int_equal(modal_get_int(out, &n, NULL), MODAL_OK);
    assert_int_equal(n, 1);
    modal_value_free(out);
    assert_ok(modal_call_get(other, 30, &out, &err), err);
    assert_string_equal(str(out), U_H100A);
    modal_value_free(out);
    modal_call_free(lone);
    modal_call_free(other);
}

/* Without a CUDA driver, GPU requests fail at once saying so; health says
 * why there are no GPUs; --gpus prints the same. */
static void test_no_gpus(void **state)
{
    start_with(NULL);
    char msg[MODAL_ERROR_MESSAGE_SIZE];
    expect_egpu(&on_h100, msg, sizeof msg);
    assert_contains(msg, "on_h100: asks for gpu \"H100\" but this runtime has no GPU (");
    assert_contains(msg, "no CUDA driver");
    expect_on(&on_cpu, "(unset)"); /* nothing to hide from it */
    cJSON *health = harness_health(&rt);
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(health, "gpus");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(g, "devices")), 0);
    assert_contains(cJSON_GetObjectItemCaseSensitive(g, "why")->valuestring, "no CUDA driver");
    cJSON_Delete(health);
    char *const argv[] = {(char *)harness_runtime_bin(), "--gpus", NULL};
    char *out = NULL;
    int ws = harness_run(argv, 30, &out);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    assert_contains(out, "no GPUs: no CUDA driver");
    free(out);
}

static void test_gpus_flag(void **state)
{
    setenv("MODAL_CUDA_LIBRARY", harness_cuda_fake("libcuda.so.1"), 1);
    setenv("MODAL_FAKE_CUDA_DEVICES", H100(U_H100A) ";" A100_80(U_A80A), 1);
    unsetenv("CUDA_VISIBLE_DEVICES");
    char *const argv[] = {(char *)harness_runtime_bin(), "--gpus", NULL};
    char *out = NULL;
    int ws = harness_run(argv, 30, &out);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    /* index, Modal type, driver name, memory, compute capability, UUID */
    assert_non_null(strstr(out, "0     H100       NVIDIA H100 80GB HBM3"));
    assert_non_null(strstr(out, "80 GiB  9.0  " U_H100A));
    assert_non_null(strstr(out, "1     A100-80GB  NVIDIA A100-SXM4-80GB"));
    assert_non_null(strstr(out, "80 GiB  8.0  " U_A80A));
    free(out);
}

/* A memory-snapshot worker gets its devices in the fork request; its
 * template saw none. */
static void test_snapshot_worker(void **state)
{
    start_with(H100(U_H100A) ";" H100(U_H100B));
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_remote(&on_h100_snapshot, modal_list(), &out, &err), err);
    assert_string_equal(str(out), "template=[] worker=[" U_H100A "]");
    modal_value_free(out);
}

/* The pid of the worker holding device i of rt, 0 when none does. */
static long holder_pid(int i)
{
    cJSON *health = NULL;
    const cJSON *held = cJSON_GetObjectItemCaseSensitive(gpu_entry(&health, i), "held_by");
    long pid = cJSON_IsObject(held) ? (long)num(held, "pid") : 0;
    cJSON_Delete(health);
    return pid;
}

/* A call waiting for "h100:2" stops only an idle worker whose devices can
 * be part of two H100s (or two H200s): not the one holding the runtime's
 * only H200, which no placement of that request can use. */
static void test_reclaim_only_what_fits(void **state)
{
    start_with(H200(U_H200) ";" H100(U_H100A) ";" H100(U_H100B));
    expect_on(&on_h100_only, U_H100A);
    expect_on(&on_any, U_H200); /* the newer worker, found first */
    long any_pid = holder_pid(0);
    assert_true(any_pid > 1);
    expect_on(&on_two, U_H100A "," U_H100B);
    assert_int_equal(holder_pid(0), any_pid);
}

/* A function's GPU-seconds count from the runtime's start: its idle pool
 * freed (no worker, no call kept) and made again by the next call still
 * has what the calls before it used. */
static void test_gpu_seconds_outlive_the_pool(void **state)
{
    start_with(H100(U_H100A));
    free(run_on(&on_h100_once, 0.3));
    bool freed = false;
    for (double t0 = harness_now(); harness_now() - t0 < 60 && !freed;) {
        cJSON *health = harness_health(&rt);
        freed = pool_entry(health, "on_h100_once") == NULL;
        cJSON_Delete(health);
        if (!freed)
            harness_sleep(0.25);
    }
    assert_true(freed);
    free(run_on(&on_h100_once, 0.3));
    cJSON *health = harness_health(&rt);
    const cJSON *p = pool_entry(health, "on_h100_once");
    assert_non_null(p);
    assert_true(num(p, "gpu_seconds") >= 0.6 - 1e-6);
    cJSON_Delete(health);
}

/* A worker that becomes ready with nothing to do (the call it was started
 * for was cancelled meanwhile) gives its GPU to a call waiting for it at
 * once, not after its scaledown window (60 s). */
static void test_ready_idle_worker_gives_way(void **state)
{
    start_with(H100(U_H100A));
    modal_call *a, *b;
    modal_error err;
    assert_ok(modal_fn_spawn(&on_h100_slow_start, modal_args(modal_float(0)), &a, &err), err);
    while (holder_pid(0) == 0) /* its worker starts, holding the H100 */
        harness_sleep(0.02);
    assert_ok(modal_call_cancel(a, &err), err);
    double t0 = harness_now();
    assert_ok(modal_fn_spawn(&on_h100_only, modal_args(modal_float(0)), &b, &err), err);
    modal_value *out = NULL;
    assert_ok(modal_call_get(b, 20, &out, &err), err);
    assert_string_equal(str(out), U_H100A);
    assert_true(harness_now() - t0 < 10);
    modal_value_free(out);
    modal_call_free(a);
    modal_call_free(b);
}

/* A fallback list whose first choice is busy runs on its second at once,
 * stopping an idle worker of another function that holds it. */
static void test_second_choice_when_first_busy(void **state)
{
    start_with(H100(U_H100A) ";" A100_80(U_A80A));
    expect_on(&on_a100, U_A80A); /* its worker stays, idle, on the A100 */
    modal_call *busy, *c;
    modal_error err;
    assert_ok(modal_fn_spawn(&on_h100_only, modal_args(modal_float(3)), &busy, &err), err);
    while (holder_pid(0) == 0)
        harness_sleep(0.02);
    double t0 = harness_now();
    assert_ok(modal_fn_spawn(&on_h100_or_a100, modal_args(modal_float(0)), &c, &err), err);
    modal_value *out = NULL;
    assert_ok(modal_call_get(c, 20, &out, &err), err);
    assert_string_equal(str(out), U_A80A);
    assert_true(harness_now() - t0 < 2.5); /* it did not wait for the H100 */
    modal_value_free(out);
    assert_ok(modal_call_get(busy, 20, &out, &err), err);
    assert_string_equal(str(out), U_H100A);
    modal_value_free(out);
    modal_call_free(busy);
    modal_call_free(c);
}

/* A runtime stopped with SIGTERM still lets its idle workers run their
 * exit hooks (dying with the runtime is for a runtime that is killed). */
static void test_stop_runs_exit_hooks(void **state)
{
    start_with(H100(U_H100A));
    char marker[128];
    snprintf(marker, sizeof marker, "/tmp/modal-gpu-exit-%d", (int)getpid());
    unlink(marker);
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_remote(&on_h100_hooked, modal_args(modal_string(marker)), &out, &err),
              err);
    modal_value_free(out);
    harness_stop(&rt);
    bool written = access(marker, F_OK) == 0;
    unlink(marker);
    assert_true(written);
}

/* A runtime killed while a GPU worker runs a call takes the worker with
 * it: an orphan would keep running (the dead runtime enforces no timeout)
 * on devices that a restarted runtime hands to a new worker. */
static void dies_with_runtime(modal_function *fn)
{
    start_with(H100(U_H100A));
    modal_call *c;
    modal_error err;
    assert_ok(modal_fn_spawn(fn, modal_args(modal_float(60)), &c, &err), err);
    pid_t pid = 0;
    for (double t0 = harness_now(); harness_now() - t0 < 10 && pid == 0;) {
        cJSON *health = NULL;
        const cJSON *held = cJSON_GetObjectItemCaseSensitive(gpu_entry(&health, 0), "held_by");
        if (cJSON_IsObject(held))
            pid = (pid_t)num(held, "pid");
        cJSON_Delete(health);
        if (pid == 0)
            harness_sleep(0.02);
    }
    assert_true(pid > 1);
    harness_sleep(0.2); /* the call is running in it */
    harness_kill(&rt);
    bool gone = false;
    for (double t0 = harness_now(); harness_now() - t0 < 5 && !gone;) {
        gone = kill(pid, 0) != 0 && errno == ESRCH;
        if (!gone)
            harness_sleep(0.05);
    }
    if (!gone)
        kill(pid, SIGKILL); /* leave nothing behind */
    modal_call_free(c);
    assert_true(gone);
}

static void test_worker_dies_with_runtime(void **state)
{
    dies_with_runtime(&on_h100_only);
}

/* The same for a worker forked from a memory-snapshot template. */
static void test_snapshot_worker_dies_with_runtime(void **state)
{
    dies_with_runtime(&on_h100_snapshot_sleep);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    setenv("MODAL_QUIET_LOGS", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_exact_upgrade_disjoint, stop),
        cmocka_unit_test_teardown(test_busy_waits_then_runs, stop),
        cmocka_unit_test_teardown(test_rules_and_refusals, stop),
        cmocka_unit_test_teardown(test_count_and_gpu_seconds, stop),
        cmocka_unit_test_teardown(test_batch_shares_gpu_seconds, stop),
        cmocka_unit_test_teardown(test_batch_waiting_keeps_its_gpu, stop),
        cmocka_unit_test_teardown(test_no_gpus, stop),
        cmocka_unit_test(test_gpus_flag),
        cmocka_unit_test_teardown(test_snapshot_worker, stop),
        cmocka_unit_test_teardown(test_worker_dies_with_runtime, stop),
        cmocka_unit_test_teardown(test_snapshot_worker_dies_with_runtime, stop),
        cmocka_unit_test_teardown(test_reclaim_only_what_fits, stop),
        cmocka_unit_test_teardown(test_gpu_seconds_outlive_the_pool, stop),
        cmocka_unit_test_teardown(test_ready_idle_worker_gives_way, stop),
        cmocka_unit_test_teardown(test_second_choice_when_first_busy, stop),
        cmocka_unit_test_teardown(test_stop_runs_exit_hooks, stop),
    };
    return cmocka_run_group_tests_name("gpu_placement", tests, NULL, NULL) != 0;
}
