/*
 * test_gpu_kernels.c: the GPU helpers (lib/gpu.c) against the CUDA test
 * double: saxpy run remotely equals the CPU's result; a warm worker pays
 * cuInit, the context and the module load once (also when forked from a
 * memory snapshot, whose template never touches the driver); local use;
 * eight threads of one process launching on two devices at once;
 * out of memory; a failed launch and a lost device end the worker, and
 * the next call, the calls sent to it meanwhile and the next batch of a
 * batched function run on a fresh one (every call of a batch that broke
 * the GPU settled once, with the batch's error); an image without code for the device names
 * its architectures and the device's; an unknown kernel; every argument
 * check; no driver at all; a worker whose GPU cannot start fails its start
 * with the driver's error.
 *
 * The images are fatbins built here, byte for byte in nvcc's layout, so
 * this test needs no nvcc: the fake driver checks their magic and
 * architectures and finds kernel names in them, and runs the CPU
 * stand-ins of tests/cuda_fake/kernels.c for the launches. Cases that
 * need another environment for the driver run in a child process (this
 * binary with --case NAME), each in its own runtime when remote.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

#include <math.h>

#include "cuda.h"

MODAL_APP("itest-gpu-kernels");

#define H100 "NVIDIA H100 80GB HBM3|81559|9.0|GPU-11111111-2222-3333-4444-000000000001"
#define H100_2 "NVIDIA H100 80GB HBM3|81559|9.0|GPU-11111111-2222-3333-4444-000000000002"
#define T4 "Tesla T4|15360|7.5|GPU-11111111-2222-3333-4444-0000000000f4"

/* ---- images ------------------------------------------------------- */

/*
 * A fatbin in nvcc's layout: a 16-byte header (magic, version 1, header
 * size, size of what follows), then one entry per architecture, each a
 * 64-byte header (kind 2 for SASS, 1 for PTX; its payload's size; the
 * architecture at byte 28) and a payload holding the kernel names. A
 * kernel named "crash" is in the image but has no CPU stand-in, so the
 * fake fails its launch with CUDA_ERROR_LAUNCH_FAILED.
 */
static unsigned char fatbin[1024];
static modal_gpu_image test_image = {"test.cu", fatbin, 0};

static void put16(unsigned char *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }

static void build_fatbin(void)
{
    static const char names[] = "\0saxpy\0crash\0\0\0";
    const struct { uint16_t kind; uint32_t arch; } ents[] = {{2, 80}, {2, 90}, {1, 90}};
    size_t at = 16, payload = sizeof names - 1; /* a multiple of 8 */
    for (size_t i = 0; i < 3; i++) {
        unsigned char *e = fatbin + at;
        memset(e, 0, 64);
        put16(e, ents[i].kind);
        put16(e + 2, 0x0101);
        put32(e + 4, 64);
        put64(e + 8, payload);
        put16(e + 24, 8);
        put16(e + 26, 1);
        put32(e + 28, ents[i].arch);
        put64(e + 40, 0x11);
        memcpy(e + 64, names, payload);
        at += 64 + payload;
    }
    put32(fatbin, MODAL__FATBIN_MAGIC);
    put16(fatbin + 4, 1);
    put16(fatbin + 6, 16);
    put64(fatbin + 8, at - 16);
}

/* ---- the driver's environment --------------------------------------- */

static char fake_lib[PATH_MAX], fake_kernels[PATH_MAX], log_path[PATH_MAX];

/* Point this process (and so the runtimes and children it starts) at the
 * fake driver with devices, failure rules and a fresh call log. */
static void fake_env(const char *devices, const char *fail)
{
    setenv("MODAL_CUDA_LIBRARY", fake_lib, 1);
    setenv("MODAL_FAKE_CUDA_KERNELS", fake_kernels, 1);
    setenv("MODAL_FAKE_CUDA_DEVICES", devices, 1);
    if (fail != NULL)
        setenv("MODAL_FAKE_CUDA_FAIL", fail, 1);
    else
        unsetenv("MODAL_FAKE_CUDA_FAIL");
    snprintf(log_path, sizeof log_path, "/tmp/modal-gpu-log-%d-XXXXXX", (int)getpid());
    int fd = mkstemp(log_path);
    assert_true(fd >= 0);
    close(fd);
    setenv("MODAL_FAKE_CUDA_LOG", log_path, 1);
}

static void fake_env_clear(void)
{
    if (log_path[0] != '\0')
        unlink(log_path);
    log_path[0] = '\0';
    unsetenv("MODAL_FAKE_CUDA_DEVICES");
    unsetenv("MODAL_FAKE_CUDA_FAIL");
    unsetenv("MODAL_FAKE_CUDA_LOG");
}

/* How many lines of the call log are pid's calls of entry. */
static int log_count(const char *log, long pid, const char *entry)
{
    int n = 0;
    char want[96];
    snprintf(want, sizeof want, "%ld %s", pid, entry);
    size_t wl = strlen(want);
    for (const char *l = log; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, want, wl) == 0 && (l[wl] == ' ' || l[wl] == '\n' || l[wl] == '\0'))
            n++;
    return n;
}

/* ---- functions ------------------------------------------------------ */

/* saxpy(kernel, a, x, y): [pid, a * x + y] by the kernel named. */
static modal_value *saxpy_body(modal_ctx *ctx, const modal_value *args)
{
    const char *kernel = modal_arg_string(args, 0);
    float a = (float)modal_arg_float(args, 1);
    size_t n = 0, ny = 0;
    const float *x = modal_arg_f32(args, 2, &n);
    const float *y = modal_arg_f32(args, 3, &ny);
    if (modal_ctx_failed(ctx))
        return NULL;
    if (n != ny)
        return modal_ctx_fail(ctx, "x and y differ in length");
    /* An optional fifth argument: milliseconds to wait before the launch. */
    const modal_value *wait = modal_list_get(args, 4);
    int64_t ms = 0;
    if (wait != NULL && modal_get_int(wait, &ms, NULL) == MODAL_OK && ms > 0)
        harness_sleep((double)ms / 1e3);
    modal_value *out = modal_array_new(MODAL_F32, 1, &n);
    float *r = modal_array_data_mut(out);
    memcpy(r, y, n * sizeof *r);
    int count = (int)n;
    modal_gpu_arg kargs[] = {MODAL_GPU_SCALAR(count), MODAL_GPU_SCALAR(a), MODAL_GPU_IN(x, n),
                             MODAL_GPU_INOUT(r, n)};
    modal_gpu_launch l = {.image = &test_image, .kernel = kernel,
                          .grid = MODAL_DIM3((unsigned)((n + 127) / 128)),
                          .block = MODAL_DIM3(128), .args = kargs, .nargs = 4};
    modal_error err;
    if (modal_gpu_run(&l, NULL, &err) != MODAL_OK) {
        modal_value_free(out);
        return modal_ctx_fail(ctx, "pid %d: %s", (int)getpid(), err.message);
    }
    return modal_args(modal_int(getpid()), out);
}

MODAL_FUNCTION(gpu_saxpy, .gpu = "H100", .timeout = 30)
{
    return saxpy_body(ctx, args);
}

/* The same, for the runtime whose workers cannot retain a context. */
MODAL_FUNCTION(gpu_saxpy_any, .gpu = "any", .timeout = 30)
{
    return saxpy_body(ctx, args);
}

/* Forked from a memory-snapshot template: its contexts are made in the
 * worker, after the fork. */
MODAL_FUNCTION(gpu_saxpy_snap, .gpu = "H100", .memory_snapshot = true, .timeout = 30)
{
    return saxpy_body(ctx, args);
}

/* Batched: one launch of the kernel named by each call; [pid] each. */
MODAL_FUNCTION(gpu_batched, .gpu = "H100", .batch_max_size = 4, .batch_wait_ms = 50,
               .timeout = 30)
{
    const modal_value *names = modal_arg(args, 0);
    modal_value *out = modal_list();
    for (size_t i = 0; i < modal_value_len(names); i++) {
        const char *k = NULL;
        modal_get_string(modal_list_get(names, i), &k, NULL, NULL);
        int one = 1;
        float a = 1, x = 1, y = 1;
        modal_gpu_arg kargs[] = {MODAL_GPU_SCALAR(one), MODAL_GPU_SCALAR(a), MODAL_GPU_IN(&x, 1),
                                 MODAL_GPU_INOUT(&y, 1)};
        modal_gpu_launch l = {.image = &test_image, .kernel = k, .grid = MODAL_DIM3(1),
                              .block = MODAL_DIM3(1), .args = kargs, .nargs = 4};
        modal_error err;
        if (modal_gpu_run(&l, NULL, &err) != MODAL_OK) {
            modal_value_free(out);
            return modal_ctx_fail(ctx, "pid %d: %s", (int)getpid(), err.message);
        }
        modal_list_append(out, modal_int(getpid()), NULL);
    }
    return out;
}

/* ---- helpers -------------------------------------------------------- */

#define N 1000

static float xs[N], ys[N];

static void random_inputs(unsigned seed)
{
    srand(seed);
    for (int i = 0; i < N; i++) {
        xs[i] = (float)rand() / RAND_MAX - 0.5f;
        ys[i] = (float)rand() / RAND_MAX - 0.5f;
    }
}

static modal_value *saxpy_args(const char *kernel, float a)
{
    return modal_args(modal_string(kernel), modal_float(a), modal_array(MODAL_F32, xs, N),
                      modal_array(MODAL_F32, ys, N));
}

/* Check a [pid, y] result against the CPU; returns the pid. */
static long check_saxpy(const modal_value *out, float a)
{
    int64_t pid = 0;
    const float *r = NULL;
    size_t n = 0;
    modal_error err;
    assert_int_equal(modal_get_int(modal_list_get(out, 0), &pid, &err), MODAL_OK);
    assert_int_equal(modal_get_array(modal_list_get(out, 1), MODAL_F32, (const void **)&r, &n,
                                     &err), MODAL_OK);
    assert_int_equal(n, N);
    for (int i = 0; i < N; i++)
        assert_true(fabsf(r[i] - (a * xs[i] + ys[i])) <= 1e-6f);
    return (long)pid;
}

/* Run this binary's --case name with the current environment; assert it
 * exits 0, and return its output (free it). */
static char *run_case(const char *name)
{
    const char *args[] = {"--case", name, NULL};
    char *out = NULL;
    int ws = harness_run_self(args, 60, &out);
    if (!(ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0))
        fail_msg("case %s failed (status %d): %s", name, ws, out ? out : "");
    return out;
}

/* ---- remote --------------------------------------------------------- */

static void test_remote_saxpy_and_warm_reuse(void **state)
{
    harness h;
    fake_env(H100, NULL);
    assert_int_equal(harness_start(&h), 0);
    random_inputs(1);
    long pid = 0;
    const int calls = 5;
    for (int i = 0; i < calls; i++) {
        modal_value *out = NULL;
        modal_error err;
        modal_status st = modal_fn_remote(&gpu_saxpy, saxpy_args("saxpy", 1.5f + i), &out, &err);
        assert_ok(st, err);
        long p = check_saxpy(out, 1.5f + i);
        if (i > 0)
            assert_int_equal(p, pid); /* one warm worker */
        pid = p;
        modal_value_free(out);
    }
    harness_stop(&h);
    char *log = harness_read_file(log_path, NULL);
    assert_non_null(log);
    /* The worker: one cuInit, one context, one module, a launch per call. */
    assert_int_equal(log_count(log, pid, "cuInit"), 1);
    assert_int_equal(log_count(log, pid, "cuDevicePrimaryCtxRetain"), 1);
    assert_int_equal(log_count(log, pid, "cuModuleLoadData"), 1);
    assert_int_equal(log_count(log, pid, "cuModuleGetFunction"), 1);
    assert_int_equal(log_count(log, pid, "cuLaunchKernel"), calls);
    free(log);
    fake_env_clear();
}

static void test_remote_snapshot_worker_warms_after_the_fork(void **state)
{
    harness h;
    fake_env(H100, NULL);
    assert_int_equal(harness_start(&h), 0);
    random_inputs(7);
    long pid = 0;
    for (int i = 0; i < 3; i++) {
        modal_value *out = NULL;
        modal_error err;
        assert_ok(modal_fn_remote(&gpu_saxpy_snap, saxpy_args("saxpy", 1), &out, &err), err);
        long p = check_saxpy(out, 1);
        assert_true(i == 0 || p == pid);
        pid = p;
        modal_value_free(out);
    }
    long rt_pid = (long)h.pid;
    harness_stop(&h);
    char *log = harness_read_file(log_path, NULL);
    assert_non_null(log);
    assert_int_equal(log_count(log, pid, "cuInit"), 1);
    assert_int_equal(log_count(log, pid, "cuDevicePrimaryCtxRetain"), 1);
    assert_int_equal(log_count(log, pid, "cuModuleLoadData"), 1);
    assert_int_equal(log_count(log, pid, "cuLaunchKernel"), 3);
    /* Only the runtime (its inventory) and the worker used the driver,
     * not the template the worker was forked from. */
    for (const char *l = log; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (atol(l) != pid && atol(l) != rt_pid)
            fail_msg("process %ld, neither the runtime nor the worker, used the driver: %.80s",
                     atol(l), l);
    free(log);
    fake_env_clear();
}

static void test_remote_launch_failure_restarts_worker(void **state)
{
    harness h;
    fake_env(H100, NULL);
    assert_int_equal(harness_start(&h), 0);
    random_inputs(2);
    modal_value *out = NULL;
    modal_error err;
    /* "crash" has no stand-in: the fake fails its launch. */
    modal_status st = modal_fn_remote(&gpu_saxpy, saxpy_args("crash", 2), &out, &err);
    assert_int_equal(st, MODAL_EFUNC);
    assert_message_contains(err, "CUDA_ERROR_LAUNCH_FAILED");
    assert_message_contains(err, "crash: cuLaunchKernel");
    long bad_pid = atol(strstr(err.message, "pid ") + 4);
    assert_true(bad_pid > 0);
    /* That worker exited after answering; a fresh one runs the next call. */
    st = modal_fn_remote(&gpu_saxpy, saxpy_args("saxpy", 2), &out, &err);
    assert_ok(st, err);
    long pid = check_saxpy(out, 2);
    modal_value_free(out);
    assert_true(pid != bad_pid);
    assert_false(harness_pid_alive((pid_t)bad_pid));
    harness_stop(&h);
    fake_env_clear();
}

/* The worker bad_pid exited after its GPU broke: the next call of
 * gpu_batched runs on a fresh worker. */
static void batched_runs_on_fresh_worker(long bad_pid)
{
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_remote(&gpu_batched, modal_args(modal_string("saxpy")), &out, &err), err);
    int64_t pid = 0;
    assert_ok(modal_get_int(out, &pid, &err), err);
    modal_value_free(out);
    assert_true(pid > 0 && pid != bad_pid);
    assert_false(harness_pid_alive((pid_t)bad_pid));
}

static void test_remote_calls_sent_ahead_go_to_a_fresh_worker(void **state)
{
    harness h;
    fake_env(H100, NULL);
    assert_int_equal(harness_start(&h), 0);
    random_inputs(6);
    modal_call *calls[4];
    modal_error err;
    /* The first call's launch fails after a while; the others, sent to the
     * same worker meanwhile (the runtime has one GPU), were not started. */
    modal_status st = modal_fn_spawn(&gpu_saxpy, modal_args(modal_string("crash"), modal_float(1),
                                                            modal_array(MODAL_F32, xs, N),
                                                            modal_array(MODAL_F32, ys, N),
                                                            modal_int(500)),
                                     &calls[0], &err);
    assert_ok(st, err);
    for (int i = 1; i < 4; i++)
        assert_ok(modal_fn_spawn(&gpu_saxpy, saxpy_args("saxpy", 2), &calls[i], &err), err);
    modal_value *out = NULL;
    st = modal_call_get(calls[0], 30, &out, &err);
    assert_int_equal(st, MODAL_EFUNC);
    assert_message_contains(err, "CUDA_ERROR_LAUNCH_FAILED");
    long bad_pid = atol(strstr(err.message, "pid ") + 4);
    for (int i = 1; i < 4; i++) {
        assert_ok(modal_call_get(calls[i], 30, &out, &err), err);
        assert_true(check_saxpy(out, 2) != bad_pid);
        modal_value_free(out);
    }
    for (int i = 0; i < 4; i++)
        modal_call_free(calls[i]);
    harness_stop(&h);
    fake_env_clear();
}

static void test_remote_batched_launch_failure_restarts_worker(void **state)
{
    harness h;
    fake_env(H100, NULL);
    assert_int_equal(harness_start(&h), 0);
    modal_value *out = NULL;
    modal_error err;
    modal_status st = modal_fn_remote(&gpu_batched, modal_args(modal_string("crash")), &out, &err);
    assert_int_equal(st, MODAL_EFUNC);
    assert_message_contains(err, "crash: cuLaunchKernel");
    long bad_pid = atol(strstr(err.message, "pid ") + 4);
    batched_runs_on_fresh_worker(bad_pid);
    harness_stop(&h);
    fake_env_clear();
}

/* A batch of 4 whose second call breaks the GPU (a sticky launch
 * failure: the worker exits 75 once it has answered): every call of that
 * batch gets the body's error once, none is given back to run again, and
 * the next call runs on a fresh worker. */
static void test_remote_batch_with_sticky_error_settles_each_call_once(void **state)
{
    harness h;
    fake_env(H100, NULL);
    assert_int_equal(harness_start(&h), 0);
    modal_call *calls[4];
    modal_error err;
    for (int i = 0; i < 4; i++)
        assert_ok(modal_fn_spawn(&gpu_batched, modal_args(modal_string(i == 1 ? "crash" : "saxpy")),
                                 &calls[i], &err), err);
    long bad_pid = 0;
    bool failed[4] = {false};
    for (int i = 0; i < 4; i++) {
        modal_value *out = NULL;
        modal_status st = modal_call_get(calls[i], 30, &out, &err);
        failed[i] = st != MODAL_OK;
        if (i == 1 || st != MODAL_OK) {
            /* The calls that shared the broken batch fail with its error. */
            assert_int_equal(st, MODAL_EFUNC);
            assert_message_contains(err, "crash: cuLaunchKernel");
            long pid = atol(strstr(err.message, "pid ") + 4);
            assert_true(bad_pid == 0 || pid == bad_pid);
            bad_pid = pid;
        }
        modal_value_free(out);
    }
    /* Each failed call finished once: a call given back after it ran
     * would be run (and logged) again. (A success is logged only at the
     * debug level.) */
    harness_sleep(0.5);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/runtime.log", h.dir);
    char *log = harness_read_file(path, NULL);
    assert_non_null(log);
    for (int i = 0; i < 4; i++) {
        char want[128];
        snprintf(want, sizeof want, "call %s (gpu_batched) finished", modal_call_id(calls[i]));
        int seen = 0;
        for (const char *p = log; (p = strstr(p, want)) != NULL; p++)
            seen++;
        if (seen != (failed[i] ? 1 : 0))
            fail_msg("call %d finished %d times:\n%s", i, seen, log);
        modal_call_free(calls[i]);
    }
    free(log);
    batched_runs_on_fresh_worker(bad_pid);
    harness_stop(&h);
    fake_env_clear();
}

static void test_remote_device_lost(void **state)
{
    harness h;
    /* Every worker's first wait for its stream finds the device gone. */
    fake_env(H100, "cuStreamSynchronize@1=CUDA_ERROR_ECC_UNCORRECTABLE");
    assert_int_equal(harness_start(&h), 0);
    random_inputs(3);
    long pids[2];
    for (int i = 0; i < 2; i++) {
        modal_value *out = NULL;
        modal_error err;
        modal_status st = modal_fn_remote(&gpu_saxpy, saxpy_args("saxpy", 1), &out, &err);
            assert_int_equal(st, MODAL_EFUNC);
        assert_message_contains(err, "saxpy: running the kernel (cuStreamSynchronize): "
                                     "CUDA_ERROR_ECC_UNCORRECTABLE");
        pids[i] = atol(strstr(err.message, "pid ") + 4);
    }
    assert_true(pids[0] != pids[1]); /* the broken worker was not used again */
    harness_stop(&h);
    fake_env_clear();
}

static void test_remote_context_failure_fails_start(void **state)
{
    harness h;
    fake_env(H100, "cuDevicePrimaryCtxRetain=CUDA_ERROR_DEVICE_UNAVAILABLE");
    assert_int_equal(harness_start(&h), 0);
    random_inputs(4);
    modal_value *out = NULL;
    modal_error err;
    modal_status st = modal_fn_remote(&gpu_saxpy_any, saxpy_args("saxpy", 1), &out, &err);
    assert_int_equal(st, MODAL_EGPU);
    assert_message_contains(err, "making the worker's CUDA contexts: cuDevicePrimaryCtxRetain on "
                                 "device 0 (NVIDIA H100 80GB HBM3): CUDA_ERROR_DEVICE_UNAVAILABLE");
    harness_stop(&h);
    fake_env_clear();
}

/* ---- local, each case in a process of its own ------------------------- */

static void test_local_use(void **state)
{
    fake_env(H100 ";" H100_2, NULL);
    char *out = run_case("local");
    assert_contains(out, "local: ok");
    free(out);
    char *log = harness_read_file(log_path, NULL);
    assert_non_null(log);
    assert_contains(log, "cuLaunchKernel");
    free(log);
    fake_env_clear();
}

static void test_threads(void **state)
{
    fake_env(H100 ";" H100_2, NULL);
    char *out = run_case("threads");
    assert_contains(out, "threads: ok");
    free(out);
    fake_env_clear();
}

static void test_out_of_memory(void **state)
{
    fake_env(H100, "cuMemAlloc_v2=CUDA_ERROR_OUT_OF_MEMORY");
    free(run_case("oom"));
    fake_env_clear();
}

static void test_arch_mismatch(void **state)
{
    fake_env(T4, NULL);
    free(run_case("arch"));
    fake_env_clear();
}

static void test_unknown_kernel(void **state)
{
    fake_env(H100, NULL);
    free(run_case("unknown"));
    fake_env_clear();
}

static void test_bad_arguments(void **state)
{
    fake_env(H100, NULL);
    free(run_case("args"));
    fake_env_clear();
}

static void test_no_driver(void **state)
{
    setenv("MODAL_CUDA_LIBRARY", "/nonexistent/libcuda.so.1", 1);
    free(run_case("nodriver"));
    setenv("MODAL_CUDA_LIBRARY", fake_lib, 1);
}

/* ---- the cases, run in a child ---------------------------------------- */

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "line %d: ", __LINE__);                          \
            fprintf(stderr, __VA_ARGS__);                                    \
            fprintf(stderr, "\n");                                           \
            return 1;                                                        \
        }                                                                    \
    } while (0)

/* The launch of saxpy over xs, ys into r on device dev. */
static modal_gpu_launch saxpy_launch(modal_gpu_arg *kargs, int *n, float *a, float *r, int dev)
{
    kargs[0] = MODAL_GPU_SCALAR(*n);
    kargs[1] = MODAL_GPU_SCALAR(*a);
    kargs[2] = MODAL_GPU_IN(xs, N);
    kargs[3] = MODAL_GPU_INOUT(r, N);
    return (modal_gpu_launch){.image = &test_image, .kernel = "saxpy",
                              .grid = MODAL_DIM3((N + 127) / 128), .block = MODAL_DIM3(128),
                              .args = kargs, .nargs = 4, .device = dev};
}

/* The status and message of a launch expected to fail. */
static int expect_fail(const modal_gpu_launch *l, modal_status want, const char *fragment)
{
    modal_error err = {0};
    modal_status st = modal_gpu_run(l, NULL, &err);
    CHECK(st == want, "status %s, not %s: %s", modal_status_name(st),
          modal_status_name(want), err.message);
    CHECK(strstr(err.message, fragment) != NULL, "\"%s\" lacks \"%s\"", err.message, fragment);
    return 0;
}

static int case_local(void)
{
    random_inputs(5);
    modal_value *out = NULL;
    modal_error err;
    CHECK(modal_gpu_count() == 2, "%d GPUs", modal_gpu_count());
    modal_gpu_info info;
    CHECK(modal_gpu_info_get(1, &info, &err) == MODAL_OK, "%s", err.message);
    CHECK(strcmp(info.type, "H100") == 0 && info.cc_major == 9 &&
          strcmp(info.uuid, "GPU-11111111-2222-3333-4444-000000000002") == 0,
          "device 1 is %s %s %d.%d", info.type, info.uuid, info.cc_major, info.cc_minor);
    CHECK(modal_fn_local(&gpu_saxpy, saxpy_args("saxpy", 3), &out, &err) == MODAL_OK, "%s",
          err.message);
    const float *r = NULL;
    size_t n = 0;
    modal_get_array(modal_list_get(out, 1), MODAL_F32, (const void **)&r, &n, &err);
    CHECK(n == N, "%zu results", n);
    for (int i = 0; i < N; i++)
        CHECK(fabsf(r[i] - (3 * xs[i] + ys[i])) <= 1e-6f, "element %d", i);
    modal_value_free(out);
    /* Device 1 directly, twice: stats filled, one module per device. */
    float y1[N], a = -2;
    int cnt = N;
    memcpy(y1, ys, sizeof y1);
    modal_gpu_arg kargs[4];
    modal_gpu_launch l = saxpy_launch(kargs, &cnt, &a, y1, 1);
    modal_gpu_stats stats = {-1, -1, -1};
    CHECK(modal_gpu_run(&l, &stats, &err) == MODAL_OK, "%s", err.message);
    CHECK(stats.copy_in_s >= 0 && stats.kernel_s >= 0 && stats.copy_out_s >= 0, "stats");
    for (int i = 0; i < N; i++)
        CHECK(fabsf(y1[i] - (a * xs[i] + ys[i])) <= 1e-6f, "device 1 element %d", i);
    void *ctx0 = NULL, *ctx1 = NULL, *fn = NULL, *fn2 = NULL;
    CHECK(modal_gpu_context(0, &ctx0, &err) == MODAL_OK && ctx0 != NULL, "%s", err.message);
    CHECK(modal_gpu_context(1, &ctx1, &err) == MODAL_OK && ctx1 != ctx0, "%s", err.message);
    CHECK(modal_gpu_kernel(1, &test_image, "saxpy", &fn, &err) == MODAL_OK, "%s", err.message);
    CHECK(modal_gpu_kernel(1, &test_image, "saxpy", &fn2, &err) == MODAL_OK && fn2 == fn,
          "the kernel was looked up again");
    printf("local: ok\n");
    return 0;
}

static int case_oom(void)
{
    float y1[N], a = 1;
    int cnt = N;
    modal_gpu_arg kargs[4];
    modal_gpu_launch l = saxpy_launch(kargs, &cnt, &a, y1, 0);
    return expect_fail(&l, MODAL_ENOMEM, "saxpy: cuMemAlloc of 8192 bytes of device memory "
                       "for the arrays: CUDA_ERROR_OUT_OF_MEMORY");
}

static int case_arch(void)
{
    float y1[N], a = 1;
    int cnt = N;
    modal_gpu_arg kargs[4];
    modal_gpu_launch l = saxpy_launch(kargs, &cnt, &a, y1, 0);
    if (expect_fail(&l, MODAL_EGPU, "CUDA_ERROR_NO_BINARY_FOR_GPU") != 0)
        return 1;
    modal_error err;
    modal_gpu_run(&l, NULL, &err);
    CHECK(strstr(err.message, "test.cu has sm_80, sm_90") != NULL &&
          strstr(err.message, "compute_90") != NULL &&
          strstr(err.message, "device 0 (Tesla T4) needs sm_75") != NULL,
          "the message does not name the architectures: %s", err.message);
    return 0;
}

static int case_unknown(void)
{
    float y1[N], a = 1;
    int cnt = N;
    modal_gpu_arg kargs[4];
    modal_gpu_launch l = saxpy_launch(kargs, &cnt, &a, y1, 0);
    l.kernel = "saxpi";
    if (expect_fail(&l, MODAL_EGPU, "saxpi: cuModuleGetFunction in test.cu: "
                    "CUDA_ERROR_NOT_FOUND") != 0)
        return 1;
    void *fn = NULL;
    modal_error err;
    CHECK(modal_gpu_kernel(0, &test_image, "nope", &fn, &err) == MODAL_EGPU &&
          strstr(err.message, "test.cu has no kernel named \"nope\"") != NULL, "%s",
          err.message);
    /* The image stays loaded: a right name works afterwards. */
    l.kernel = "saxpy";
    CHECK(modal_gpu_run(&l, NULL, &err) == MODAL_OK, "%s", err.message);
    return 0;
}

/* Every check that comes before the driver, each leaving the outputs alone. */
static int case_args(void)
{
    float y1[N], a = 1;
    int cnt = N;
    for (int i = 0; i < N; i++)
        y1[i] = 7;
    modal_gpu_arg kargs[4];
    modal_gpu_launch good = saxpy_launch(kargs, &cnt, &a, y1, 0), l;
    modal_gpu_arg many[MODAL_GPU_MAX_ARGS + 1];
    for (int i = 0; i <= MODAL_GPU_MAX_ARGS; i++)
        many[i] = MODAL_GPU_SCALAR(cnt);
    unsigned char big[257] = {0};
    modal_gpu_image no_data = {"none.cu", NULL, 0};
    unsigned char notfat[16] = "not a fatbin";
    modal_gpu_image not_fatbin = {"plain.cu", notfat, 0};
    modal_error err;
    int rc = 0;
    CHECK(modal_gpu_run(NULL, NULL, &err) == MODAL_EINVAL &&
          strstr(err.message, "launch is NULL") != NULL, "%s", err.message);
    l = good, l.image = NULL;
    rc |= expect_fail(&l, MODAL_EINVAL, "saxpy: image is NULL");
    l = good, l.image = &no_data;
    rc |= expect_fail(&l, MODAL_EINVAL, "saxpy: none.cu: data is NULL");
    l = good, l.image = &not_fatbin;
    rc |= expect_fail(&l, MODAL_EINVAL, "plain.cu: size is 0 but the data is not a fatbin");
    l = good, l.kernel = NULL;
    rc |= expect_fail(&l, MODAL_EINVAL, "the kernel name is NULL");
    l = good, l.kernel = "";
    rc |= expect_fail(&l, MODAL_EINVAL, "the kernel name is empty");
    l = good, l.grid.y = 0;
    rc |= expect_fail(&l, MODAL_EINVAL, "saxpy: the grid is 8 x 0 x 1");
    l = good, l.block.z = 0;
    rc |= expect_fail(&l, MODAL_EINVAL, "saxpy: the block is 128 x 1 x 0");
    l = good, l.args = many, l.nargs = MODAL_GPU_MAX_ARGS + 1;
    rc |= expect_fail(&l, MODAL_ELIMIT, "saxpy: 33 arguments; a launch takes at most 32");
    l = good, l.args = NULL;
    rc |= expect_fail(&l, MODAL_EINVAL, "saxpy: nargs is 4 but args is NULL");
    modal_gpu_arg bad[4];
    memcpy(bad, kargs, sizeof bad);
    bad[1].size = 0;
    l = good, l.args = bad;
    rc |= expect_fail(&l, MODAL_EINVAL, "saxpy: argument 1 is a scalar of 0 bytes; a scalar "
                      "has 1 to 256");
    bad[1] = (modal_gpu_arg){MODAL_GPU_ARG_SCALAR, big, sizeof big};
    rc |= expect_fail(&l, MODAL_EINVAL, "argument 1 is a scalar of 257 bytes");
    memcpy(bad, kargs, sizeof bad);
    bad[2].data = NULL;
    rc |= expect_fail(&l, MODAL_EINVAL, "saxpy: argument 2 is an array of 4000 bytes whose "
                      "data is NULL");
    memcpy(bad, kargs, sizeof bad);
    bad[3].kind = (modal_gpu_arg_kind)9;
    rc |= expect_fail(&l, MODAL_EINVAL, "saxpy: argument 3 has kind 9");
    l = good, l.device = 1;
    rc |= expect_fail(&l, MODAL_EINVAL, "saxpy: device 1 is out of range: this process has 1 "
                      "GPU (0..0)");
    l = good, l.device = -1;
    rc |= expect_fail(&l, MODAL_EINVAL, "device -1 is out of range");
    for (int i = 0; i < N; i++)
        CHECK(y1[i] == 7, "a refused launch wrote its output");
    modal_gpu_info info;
    CHECK(modal_gpu_info_get(0, NULL, &err) == MODAL_EINVAL, "info NULL");
    CHECK(modal_gpu_info_get(2, &info, &err) == MODAL_EINVAL &&
          strstr(err.message, "device 2 is out of range") != NULL, "%s", err.message);
    CHECK(modal_gpu_context(0, NULL, &err) == MODAL_EINVAL, "context NULL");
    void *fn;
    CHECK(modal_gpu_kernel(0, &test_image, NULL, &fn, &err) == MODAL_EINVAL, "kernel NULL");
    /* An array of no bytes is fine: the kernel gets a NULL pointer. */
    int zero = 0;
    modal_gpu_arg empty[4] = {MODAL_GPU_SCALAR(zero), MODAL_GPU_SCALAR(a), MODAL_GPU_IN(xs, 0),
                              MODAL_GPU_INOUT(y1, 0)};
    l = good, l.args = empty;
    CHECK(modal_gpu_run(&l, NULL, &err) == MODAL_OK, "%s", err.message);
    return rc;
}

static int case_nodriver(void)
{
    float y1[N], a = 1;
    int cnt = N;
    modal_gpu_arg kargs[4];
    modal_gpu_launch l = saxpy_launch(kargs, &cnt, &a, y1, 0);
    CHECK(modal_gpu_count() == 0, "%d GPUs without a driver", modal_gpu_count());
    if (expect_fail(&l, MODAL_EGPU, "saxpy: no GPU in this process: no CUDA driver: "
                    "/nonexistent/libcuda.so.1") != 0)
        return 1;
    void *ctx;
    modal_error err;
    CHECK(modal_gpu_context(0, &ctx, &err) == MODAL_EGPU &&
          strstr(err.message, "no CUDA driver") != NULL, "%s", err.message);
    return 0;
}

/* Several threads of one process launch at once, from the first launch
 * (contexts, modules and buffers made under contention) on: each result
 * is its own thread's. */
#define THREADS 8
#define LAUNCHES 60

static void *launch_thread(void *arg)
{
    long t = (long)arg;
    float y[N], a = (float)(t + 1);
    int cnt = N;
    modal_gpu_arg kargs[4];
    for (int k = 0; k < LAUNCHES; k++) {
        memcpy(y, ys, sizeof y);
        modal_gpu_launch l = saxpy_launch(kargs, &cnt, &a, y, (int)((t + k) % 2));
        modal_error err;
        if (modal_gpu_run(&l, NULL, &err) != MODAL_OK) {
            fprintf(stderr, "thread %ld launch %d: %s\n", t, k, err.message);
            return (void *)1;
        }
        for (int i = 0; i < N; i++)
            if (fabsf(y[i] - (a * xs[i] + ys[i])) > 1e-6f) {
                fprintf(stderr, "thread %ld launch %d: element %d is %g, not %g\n", t, k, i,
                        y[i], a * xs[i] + ys[i]);
                return (void *)1;
            }
    }
    return NULL;
}

static int case_threads(void)
{
    random_inputs(11);
    pthread_t th[THREADS];
    for (long t = 0; t < THREADS; t++)
        CHECK(pthread_create(&th[t], NULL, launch_thread, (void *)t) == 0, "pthread_create");
    int bad = 0;
    for (int t = 0; t < THREADS; t++) {
        void *r = NULL;
        pthread_join(th[t], &r);
        bad += r != NULL;
    }
    CHECK(bad == 0, "%d threads failed", bad);
    printf("threads: ok\n");
    return 0;
}

static int run_named_case(const char *name)
{
    static const struct {
        const char *name;
        int (*fn)(void);
    } cases[] = {{"local", case_local}, {"oom", case_oom}, {"arch", case_arch},
                 {"unknown", case_unknown}, {"args", case_args}, {"nodriver", case_nodriver},
                 {"threads", case_threads}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        if (strcmp(cases[i].name, name) == 0)
            return cases[i].fn();
    fprintf(stderr, "no case %s\n", name);
    return 2;
}

int main(int argc, char **argv)
{
    build_fatbin();
    modal_worker_serve_if_worker(argc, argv);
    if (argc == 3 && strcmp(argv[1], "--case") == 0)
        return run_named_case(argv[2]);
    harness_sibling("cuda_fake/libcuda.so.1", fake_lib, sizeof fake_lib);
    harness_sibling("cuda_fake/libfake_kernels.so", fake_kernels, sizeof fake_kernels);
    if (access(fake_lib, R_OK) != 0 || access(fake_kernels, R_OK) != 0) {
        fprintf(stderr, "test_gpu_kernels: %s or %s is missing; build them with `make test`\n",
                fake_lib, fake_kernels);
        return 1;
    }
    setenv("MODAL_QUIET_LOGS", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_use),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_arch_mismatch),
        cmocka_unit_test(test_unknown_kernel),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_no_driver),
        cmocka_unit_test(test_remote_saxpy_and_warm_reuse),
        cmocka_unit_test(test_remote_snapshot_worker_warms_after_the_fork),
        cmocka_unit_test(test_remote_launch_failure_restarts_worker),
        cmocka_unit_test(test_remote_calls_sent_ahead_go_to_a_fresh_worker),
        cmocka_unit_test(test_remote_batched_launch_failure_restarts_worker),
        cmocka_unit_test(test_remote_batch_with_sticky_error_settles_each_call_once),
        cmocka_unit_test(test_remote_device_lost),
        cmocka_unit_test(test_remote_context_failure_fails_start),
    };
    return cmocka_run_group_tests_name("gpu_kernels", tests, NULL, NULL) != 0;
}
