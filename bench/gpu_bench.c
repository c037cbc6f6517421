/*
 * gpu_bench.c: the GPU measurements of tests/gpu/run.sh, against the
 * runtime MODAL_RUNTIME_URL names (docs/gpu.md, "Checking on a real GPU").
 *
 *   warm GPU call        median of no-op calls of a .gpu = "any" function
 *                        with a small argument, on a warm worker
 *   GPU worker cold start the first call of that function (its worker starts,
 *                        creates its CUDA context) against cuInit + primary
 *                        context in a fresh process (this program, run with
 *                        --bare-init), in the same run and, like the cold
 *                        start, while no other process holds the GPU
 *   remote kernel launch an empty kernel through modal_gpu_run_remote
 *                        against modal_gpu_run here
 *   saxpy device time    stats.kernel_s of saxpy inside a remote launch
 *                        against a local one, results checked on the CPU
 *
 * Prints one "row|check|value|target|PASS or FAIL" line per check (run.sh
 * makes the table) and exits 1 when one failed. With --fake (the CUDA test
 * double) the numbers mean nothing and the targets are not judged.
 */
#include <modal.h>

#include "bench.h"
#include "cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

MODAL_APP("gpu-bench");

MODAL_GPU_IMAGE(saxpy);
MODAL_GPU_IMAGE(empty);

/* Uploads the executable before anything is timed. */
MODAL_FUNCTION(cpu_noop)
{
    return modal_int(0);
}

MODAL_FUNCTION(gpu_noop, .gpu = "any")
{
    return modal_int(modal_arg_int(args, 0));
}

static bool fake;
static int failures;

static void row(const char *check, const char *value, const char *target, bool ok)
{
    const char *r = ok ? "PASS" : "FAIL";
    if (fake && ok)
        r = "PASS (fake)";
    printf("row|%s|%s|%s|%s\n", check, value, target, r);
    fflush(stdout);
    failures += !ok;
}

/* A timing target: judged on a real GPU only. */
static bool target(bool met)
{
    return fake || met;
}

static bool failed(const char *what, modal_status st, const modal_error *err)
{
    if (st == MODAL_OK)
        return false;
    fprintf(stderr, "gpu_bench: %s: %s: %s\n", what, modal_status_name(st), err->message);
    return true;
}

/* ---- cuInit + primary context, in a fresh process ------------------------------ */

static int bare_init(void)
{
    double t0 = now();
    modal_error err;
    const modal__cuda *cu = modal__cuda_get(&err);
    if (cu == NULL) {
        fprintf(stderr, "gpu_bench --bare-init: %s\n", err.message);
        return 1;
    }
    CUdevice dev;
    CUcontext ctx;
    CUresult r = cu->cuDeviceGet(&dev, 0);
    if (r == 0)
        r = cu->cuDevicePrimaryCtxRetain(&ctx, dev);
    if (r == 0)
        r = cu->cuCtxSetCurrent(ctx);
    if (r != 0) {
        char text[160];
        modal__cuda_error_text(r, text, sizeof text);
        fprintf(stderr, "gpu_bench --bare-init: %s\n", text);
        return 1;
    }
    printf("%.9f\n", now() - t0);
    return 0;
}

/* Seconds of cuInit + primary context in a fresh process, or -1. */
static double bare_init_seconds(void)
{
    char self[4096], cmd[4200];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0 || memchr(self, '\'', (size_t)n) != NULL)
        return -1;
    self[n] = '\0';
    snprintf(cmd, sizeof cmd, "'%s' --bare-init", self);
    FILE *p = popen(cmd, "r");
    double s = -1;
    if (p == NULL || fscanf(p, "%lf", &s) != 1)
        s = -1;
    if (p != NULL && pclose(p) != 0)
        s = -1;
    return s;
}

/* ---- the measurements ---------------------------------------------------------- */

static double call_noop(void)
{
    modal_error err;
    modal_value *out = NULL;
    double t0 = now();
    modal_status st = modal_fn_remote(&gpu_noop, modal_args(modal_int(7)), &out, &err);
    double t = now() - t0;
    int64_t v = 0;
    bool ok = !failed("gpu_noop", st, &err) && modal_get_int(out, &v, NULL) == MODAL_OK &&
              v == 7;
    modal_value_free(out);
    return ok ? t : -1;
}

static void calls(void)
{
    /* cuInit + context in fresh processes first, while no process holds
     * the GPU: the state the cold start below starts from too (a driver
     * without persistence mode pays its own start-up in both). */
    enum { WARM = 200, BARE = 3 };
    double bare[BARE];
    size_t nb = 0;
    for (int i = 0; i < BARE; i++)
        if ((bare[nb] = bare_init_seconds()) >= 0)
            nb++;

    modal_error err;
    modal_value *out = NULL;
    if (failed("cpu_noop", modal_fn_remote(&cpu_noop, modal_list(), &out, &err), &err)) {
        row("runtime reachable", "no", "a first call", false);
        return;
    }
    modal_value_free(out);

    double cold = call_noop();
    double warm[WARM];
    size_t nw = 0;
    for (int i = 0; i < WARM && cold >= 0; i++)
        if ((warm[nw] = call_noop()) >= 0)
            nw++;
    char v[64];
    if (nw == WARM) {
        double med = quantile(warm, nw, 0.5);
        snprintf(v, sizeof v, "%.0f us (p90 %.0f)", med * 1e6, quantile(warm, nw, 0.9) * 1e6);
        row("warm GPU call, small args (median)", v, "< 200 us", target(med < 200e-6));
    } else {
        row("warm GPU call, small args (median)", "calls failed", "< 200 us", false);
    }

    if (cold < 0 || nb == 0) {
        row("GPU worker cold start / bare CUDA init", cold < 0 ? "first call failed"
                                                               : "--bare-init failed",
            "<= 1.2x", false);
        return;
    }
    double b = quantile(bare, nb, 0.5);
    snprintf(v, sizeof v, "%.1f ms", b * 1e3);
    row("bare cuInit + primary context (median of 3)", v, "reference", true);
    snprintf(v, sizeof v, "%.1f ms = %.2fx", cold * 1e3, cold / b);
    row("GPU worker cold start (first call)", v, "<= 1.2x", target(cold <= 1.2 * b));
}

static modal_status launch_empty(bool remote, double *t)
{
    modal_gpu_launch l = {.image = &empty_gpu_image, .kernel = "empty",
                          .grid = MODAL_DIM3(1), .block = MODAL_DIM3(1)};
    modal_error err;
    double t0 = now();
    modal_status st = remote ? modal_gpu_run_remote("any", &l, NULL, &err)
                             : modal_gpu_run(&l, NULL, &err);
    *t = now() - t0;
    failed(remote ? "remote empty kernel" : "local empty kernel", st, &err);
    return st;
}

static void launches(void)
{
    enum { N = 100 };
    double r[N], l[N], t;
    bool ok = true;
    /* The first of each starts the kernel worker or loads the module. */
    for (int i = 0; i < 3 && ok; i++)
        ok = launch_empty(true, &t) == MODAL_OK && launch_empty(false, &t) == MODAL_OK;
    for (int i = 0; i < N && ok; i++)
        ok = launch_empty(true, &r[i]) == MODAL_OK && launch_empty(false, &l[i]) == MODAL_OK;
    if (!ok) {
        row("remote kernel launch overhead", "launches failed", "works", false);
        return;
    }
    double mr = quantile(r, N, 0.5), ml = quantile(l, N, 0.5);
    char v[64];
    snprintf(v, sizeof v, "%.0f us (local %.0f us)", (mr - ml) * 1e6, ml * 1e6);
    row("remote kernel launch overhead (empty, median)", v, "measured", true);
}

/* saxpy(n, a, x, y): y = a * x + y, checked against the CPU. */
static bool saxpy_once(bool remote, int n, float a, const float *x, const float *y0, float *y,
                       double *kernel_s)
{
    memcpy(y, y0, (size_t)n * sizeof *y);
    modal_gpu_arg args[] = {MODAL_GPU_SCALAR(n), MODAL_GPU_SCALAR(a), MODAL_GPU_IN(x, n),
                            MODAL_GPU_INOUT(y, n)};
    modal_gpu_launch l = {.image = &saxpy_gpu_image, .kernel = "saxpy",
                          .grid = MODAL_DIM3(((unsigned)n + 255) / 256),
                          .block = MODAL_DIM3(256), .args = args, .nargs = 4};
    modal_gpu_stats stats;
    modal_error err;
    modal_status st = remote ? modal_gpu_run_remote("any", &l, &stats, &err)
                             : modal_gpu_run(&l, &stats, &err);
    if (failed(remote ? "remote saxpy" : "local saxpy", st, &err))
        return false;
    for (int i = 0; i < n; i++)
        if (fabsf(y[i] - (a * x[i] + y0[i])) > 1e-5f * (1 + fabsf(y[i]))) {
            fprintf(stderr, "gpu_bench: %s saxpy: y[%d] = %g, the CPU says %g\n",
                    remote ? "remote" : "local", i, y[i], a * x[i] + y0[i]);
            return false;
        }
    *kernel_s = stats.kernel_s;
    return true;
}

static void saxpy_times(void)
{
    /* 256 MiB per vector: long enough a kernel for 10% to be measurable. */
    int n = fake ? 1 << 16 : 1 << 26;
    enum { RUNS = 5 };
    float *x = malloc((size_t)n * sizeof *x), *y0 = malloc((size_t)n * sizeof *y0),
          *y = malloc((size_t)n * sizeof *y);
    bool ok = x != NULL && y0 != NULL && y != NULL;
    srand48(getpid());
    for (int i = 0; ok && i < n; i++) {
        x[i] = (float)(drand48() * 2 - 1);
        y0[i] = (float)(drand48() * 2 - 1);
    }
    float a = (float)(drand48() * 4 - 2);
    double r[RUNS], l[RUNS], t;
    ok = ok && saxpy_once(true, n, a, x, y0, y, &t) && saxpy_once(false, n, a, x, y0, y, &t);
    for (int i = 0; ok && i < RUNS; i++)
        ok = saxpy_once(true, n, a, x, y0, y, &r[i]) && saxpy_once(false, n, a, x, y0, y, &l[i]);
    free(x);
    free(y0);
    free(y);
    if (!ok) {
        row("saxpy device time, remote / local", "runs failed", "within 10%", false);
        return;
    }
    double mr = quantile(r, RUNS, 0.5), ml = quantile(l, RUNS, 0.5);
    char v[80];
    snprintf(v, sizeof v, "%.3f / %.3f ms = %.2f", mr * 1e3, ml * 1e3, ml > 0 ? mr / ml : 0);
    row("saxpy device time (median), remote/local", v, "within 10%",
        target(ml > 0 && fabs(mr / ml - 1) <= 0.10));
}

MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bare-init") == 0)
            return bare_init();
        if (strcmp(argv[i], "--fake") == 0) {
            fake = true;
        } else {
            fprintf(stderr, "usage: gpu_bench [--fake] (run by tests/gpu/run.sh)\n");
            return 2;
        }
    }
    calls();
    launches();
    saxpy_times();
    return failures != 0;
}
