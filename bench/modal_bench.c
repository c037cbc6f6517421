/*
 * modal_bench.c: libmodal's own workloads, run against a live runtime.
 *
 *   warm     no-op modal_fn_remote round trip, median and p99
 *   map      modal_fn_map over 100,000 no-op inputs, inputs/s
 *   array    round trip of a 1 MiB, 64 MiB and 1 GiB u8 array through a
 *            function that returns a transformed copy of its argument
 *   cold     first call of a function with no pool yet (a new worker is
 *            started for it), minus the warm median of the same run
 *   exec     posix_spawn of this very executable, which exits at once:
 *            the part of a cold start spent loading the worker binary
 *   snapcold a cold start from a memory snapshot: calls of a function with
 *            .memory_snapshot and .max_inputs = 1, so every call runs on a
 *            new worker forked from the pool's template (started and made
 *            ready by one call first), minus the warm median of the same
 *            run: the fork, the worker's HELLO, and the dispatch to it
 *
 * The runtime is the one in MODAL_RUNTIME_URL / MODAL_TOKEN (the TCP
 * listener bench/run.sh starts). With MODAL_BENCH_HOME set to the runtime's
 * state directory, the warm calls run twice more over its Unix socket:
 * named explicitly (MODAL_RUNTIME_URL=unix:<home>/runtime.sock, prefix
 * "unixurl"), then found as the embedded default finds it (no
 * MODAL_RUNTIME_URL, MODAL_HOME=<home>, socket and token read there,
 * prefix "unix").
 *
 * Output: "modal.<prefix>.<metric><TAB>value<TAB>unit" lines on stdout.
 * Nothing asserts on time. Usage:
 *   modal_bench [warm|map|array|cold|snapcold|exec|unix|unixmap]...
 *                                                  (default all but unixmap)
 *   modal_bench array-only MIB [REPS]   one array size only, for profiling
 * MODAL_BENCH_CALLS (2000) and MODAL_BENCH_MAP_N (100000) set the counts.
 *
 * Workers run this same binary, so main() comes from MODAL_LOCAL_ENTRYPOINT.
 */
#include <modal.h>

#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

extern char **environ;

MODAL_APP("modal-bench");

/* ---- the functions ------------------------------------------------- */

MODAL_FUNCTION(noop, .timeout = 60)
{
    return modal_null();
}

/* Returns a copy of its u8 array argument with the first and last bytes
 * inverted, so the result is new data, not the argument echoed back. */
MODAL_FUNCTION(echo_array, .timeout = 600)
{
    size_t n = 0;
    const uint8_t *in = modal_arg_u8(args, 0, &n);
    if (in == NULL || n == 0)
        return modal_ctx_fail(ctx, "echo_array: expected a non-empty u8 array");
    modal_value *out = modal_array_new(MODAL_U8, 1, &n);
    if (out == NULL)
        return modal_ctx_fail(ctx, "echo_array: out of memory for %zu bytes", n);
    uint8_t *o = modal_array_data_mut(out);
    memcpy(o, in, n);
    o[0] ^= 0xff;
    o[n - 1] ^= 0xff;
    return out;
}

/* Cold-start subjects: pools are per function, so the first call of each
 * of these finds no worker and starts one. */
#define COLD_FN(i)                                                             \
    MODAL_FUNCTION(cold_##i, .timeout = 60)                                    \
    {                                                                          \
        return modal_int(i);                                                   \
    }
COLD_FN(0)
COLD_FN(1)
COLD_FN(2)
COLD_FN(3)
COLD_FN(4)
COLD_FN(5)
COLD_FN(6)
COLD_FN(7)
COLD_FN(8)
COLD_FN(9)
COLD_FN(10)
COLD_FN(11)
/* A cold start from a memory snapshot: each call gets a new worker, a
 * fork of the template that ran snapshot_enter once. */
static int snap_ready;
static int snap_setup(modal_ctx *ctx)
{
    snap_ready = 1;
    return 0;
}
MODAL_FUNCTION(snap_cold, .timeout = 60, .memory_snapshot = true, .snapshot_enter = snap_setup,
               .max_inputs = 1)
{
    return modal_int(snap_ready);
}

static modal_function *const cold_fns[] = {&cold_0, &cold_1, &cold_2, &cold_3,
                                           &cold_4, &cold_5, &cold_6, &cold_7,
                                           &cold_8, &cold_9, &cold_10, &cold_11};
#define NCOLD (sizeof cold_fns / sizeof cold_fns[0])

/* ---- helpers ------------------------------------------------------- */

static void emit(const char *prefix, const char *metric, double value, const char *unit)
{
    printf("modal.%s.%s\t%.6g\t%s\n", prefix, metric, value, unit);
    fflush(stdout);
}

static void fail(const char *what, const modal_error *err)
{
    fprintf(stderr, "modal_bench: %s failed: %s: %s\n", what, modal_status_name(err->code),
            err->message);
    exit(1);
}

static void call_noop(void)
{
    modal_value *out = NULL;
    modal_error err;
    if (modal_fn_remote(&noop, modal_list(), &out, &err) != MODAL_OK)
        fail("noop call", &err);
    modal_value_free(out);
}

/* ---- workloads ----------------------------------------------------- */

/* Warm no-op round trips; returns the median in seconds. */
static double bench_warm(const char *prefix, size_t iters)
{
    for (size_t i = 0; i < 200; i++) /* worker started, connection open */
        call_noop();
    double *t = malloc(iters * sizeof *t);
    if (t == NULL)
        exit(1);
    for (size_t i = 0; i < iters; i++) {
        double t0 = now();
        call_noop();
        t[i] = now() - t0;
    }
    double med = quantile(t, iters, 0.5);
    emit(prefix, "warm.median", med * 1e6, "us");
    emit(prefix, "warm.p99", quantile(t, iters, 0.99) * 1e6, "us");
    free(t);
    return med;
}

static void bench_map(const char *prefix, size_t n)
{
    modal_value *inputs = modal_list();
    modal_error err;
    for (size_t i = 0; inputs != NULL && i < n; i++)
        if (modal_list_append(inputs, modal_int((int64_t)i), &err) != MODAL_OK)
            fail("building map inputs", &err);
    modal_value *results = NULL;
    double t0 = now();
    if (modal_fn_map(&noop, inputs, NULL, &results, &err) != MODAL_OK)
        fail("modal_fn_map", &err);
    double dt = now() - t0;
    if (modal_value_len(results) != n) {
        fprintf(stderr, "modal_bench: map returned %zu results for %zu inputs\n",
                modal_value_len(results), n);
        exit(1);
    }
    modal_value_free(results);
    emit(prefix, "map.inputs", (double)n, "inputs");
    emit(prefix, "map.rate", (double)n / dt, "inputs/s");
}

/* One round trip of a len-byte array; returns seconds. */
static double array_once(size_t len)
{
    modal_value *a = modal_array_new(MODAL_U8, 1, &len);
    if (a == NULL) {
        fprintf(stderr, "modal_bench: cannot allocate %zu bytes\n", len);
        exit(1);
    }
    uint8_t *p = modal_array_data_mut(a);
    for (size_t i = 0; i < len; i++) /* touched: no page faults in the timing */
        p[i] = (uint8_t)(i * 31u);
    unsigned want_first = (p[0] ^ 0xffu) & 0xffu, want_last = (p[len - 1] ^ 0xffu) & 0xffu;
    unsigned want_mid = (unsigned)((len / 2) * 31u) & 0xffu;
    modal_value *out = NULL;
    modal_error err;
    double t0 = now();
    if (modal_fn_remote(&echo_array, modal_args(a), &out, &err) != MODAL_OK)
        fail("echo_array call", &err);
    double dt = now() - t0;
    size_t n = 0;
    const uint8_t *r = NULL;
    if (modal_get_array(out, MODAL_U8, (const void **)&r, &n, &err) != MODAL_OK)
        fail("reading the echo_array result", &err);
    if (n != len || r[0] != want_first || r[len - 1] != want_last || r[len / 2] != want_mid) {
        fprintf(stderr, "modal_bench: echo_array returned wrong data for %zu bytes\n", len);
        exit(1);
    }
    modal_value_free(out);
    return dt;
}

static void bench_array(const char *prefix, size_t len, int reps, const char *label)
{
    double t[8];
    array_once(len < ((size_t)64 << 20) ? len : ((size_t)64 << 20)); /* warm pool */
    for (int i = 0; i < reps; i++)
        t[i] = array_once(len);
    double med = quantile(t, (size_t)reps, 0.5);
    char m[64];
    snprintf(m, sizeof m, "array_%s.ms", label);
    emit(prefix, m, med * 1e3, "ms");
    snprintf(m, sizeof m, "array_%s.min_ms", label);
    emit(prefix, m, t[0] * 1e3, "ms");
    snprintf(m, sizeof m, "array_%s.max_ms", label);
    emit(prefix, m, t[reps - 1] * 1e3, "ms");
    /* Bytes moved: the argument to the worker and the result back. */
    snprintf(m, sizeof m, "array_%s.bw", label);
    emit(prefix, m, 2.0 * (double)len / med / 1e9, "GB/s");
}

static void bench_cold(const char *prefix, double warm_median)
{
    double t[NCOLD];
    for (size_t i = 0; i < NCOLD; i++) {
        modal_value *out = NULL;
        modal_error err;
        double t0 = now();
        if (modal_fn_remote(cold_fns[i], modal_list(), &out, &err) != MODAL_OK)
            fail("cold call", &err);
        t[i] = now() - t0;
        modal_value_free(out);
    }
    double med = quantile(t, NCOLD, 0.5);
    emit(prefix, "cold.first_call", med * 1e3, "ms");
    emit(prefix, "cold.median", (med - warm_median) * 1e3, "ms");
    emit(prefix, "cold.min", (t[0] - warm_median) * 1e3, "ms");
    emit(prefix, "cold.n", (double)NCOLD, "starts");
}

static void bench_snapshot_cold(const char *prefix, double warm_median)
{
    enum { N = 30 };
    double t[N];
    modal_value *out = NULL;
    modal_error err;
    /* The first call starts the template (an exec and snapshot_enter). */
    if (modal_fn_remote(&snap_cold, modal_list(), &out, &err) != MODAL_OK)
        fail("snapshot warm-up call", &err);
    modal_value_free(out);
    for (size_t i = 0; i < N; i++) {
        out = NULL;
        double t0 = now();
        if (modal_fn_remote(&snap_cold, modal_list(), &out, &err) != MODAL_OK)
            fail("snapshot cold call", &err);
        t[i] = now() - t0;
        modal_value_free(out);
    }
    double med = quantile(t, N, 0.5);
    emit(prefix, "snapshot_cold.first_call", med * 1e3, "ms");
    emit(prefix, "snapshot_cold.median", (med - warm_median) * 1e3, "ms");
    emit(prefix, "snapshot_cold.min", (quantile(t, N, 0) - warm_median) * 1e3, "ms");
    emit(prefix, "snapshot_cold.n", (double)N, "starts");
}

/* posix_spawn of this executable with --exit-at-once, waited for. */
static void bench_exec(const char *prefix)
{
    const size_t n = 50, warm = 5;
    double t[50];
    char *argv[] = {"modal_bench", "--exit-at-once", NULL};
    for (size_t i = 0; i < warm + n; i++) {
        pid_t pid;
        int ws;
        double t0 = now();
        int rc = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, environ);
        if (rc != 0) {
            fprintf(stderr, "modal_bench: posix_spawn: %s\n", strerror(rc));
            exit(1);
        }
        waitpid(pid, &ws, 0);
        if (i >= warm)
            t[i - warm] = now() - t0;
    }
    emit(prefix, "exec_self.median", quantile(t, n, 0.5) * 1e3, "ms");
}

static size_t env_count(const char *name, size_t dflt)
{
    const char *v = getenv(name);
    return v != NULL && atol(v) > 0 ? (size_t)atol(v) : dflt;
}

MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    if (argc > 1 && strcmp(argv[1], "--exit-at-once") == 0)
        return 0; /* for bench_exec */
    setenv("MODAL_QUIET_LOGS", "1", 1);
    size_t map_n = env_count("MODAL_BENCH_MAP_N", 100000);
    size_t calls = env_count("MODAL_BENCH_CALLS", 2000);
    const char *url = getenv("MODAL_RUNTIME_URL");
    const char *home = getenv("MODAL_BENCH_HOME");
    printf("# libmodal %s, runtime %s\n", modal_version(), url ? url : "(embedded default)");

    if (argc > 2 && strcmp(argv[1], "array-only") == 0) { /* for profiling */
        size_t mib = (size_t)atol(argv[2]);
        int reps = argc > 3 ? atoi(argv[3]) : 1;
        if (mib == 0 || reps < 1 || reps > 8) {
            fprintf(stderr, "usage: modal_bench array-only MIB [REPS 1..8]\n");
            return 2;
        }
        char label[32];
        snprintf(label, sizeof label, "%zuMiB", mib);
        bench_array("tcp", mib << 20, reps, label);
        return 0;
    }
    double warm = 0;
    if (wanted(argc, argv, "warm") || wanted(argc, argv, "cold") ||
        wanted(argc, argv, "snapcold"))
        warm = bench_warm("tcp", calls);
    if (wanted(argc, argv, "map"))
        bench_map("tcp", map_n);
    if (wanted(argc, argv, "array")) {
        bench_array("tcp", (size_t)1 << 20, 7, "1MiB");
        bench_array("tcp", (size_t)64 << 20, 5, "64MiB");
        bench_array("tcp", (size_t)1 << 30, 3, "1GiB");
    }
    if (wanted(argc, argv, "cold"))
        bench_cold("tcp", warm);
    if (wanted(argc, argv, "snapcold"))
        bench_snapshot_cold("tcp", warm);
    if (wanted(argc, argv, "exec"))
        bench_exec("host");

    if (home != NULL && home[0] != '\0' && wanted(argc, argv, "unix")) {
        /* The runtime's Unix socket named explicitly... */
        char sock[4200];
        snprintf(sock, sizeof sock, "unix:%s/runtime.sock", home);
        setenv("MODAL_RUNTIME_URL", sock, 1);
        bench_warm("unixurl", calls);
        /* ...and found the way the embedded default finds it: no
         * MODAL_RUNTIME_URL, MODAL_HOME holding the socket and token. */
        unsetenv("MODAL_RUNTIME_URL");
        unsetenv("MODAL_TOKEN");
        unsetenv("MODAL_TOKEN_FILE");
        setenv("MODAL_HOME", home, 1);
        printf("# then the embedded default: %s\n", modal_runtime_url());
        bench_warm("unix", calls);
        for (int i = 1; i < argc; i++) /* only when asked for by name */
            if (strcmp(argv[i], "unixmap") == 0)
                bench_map("unix", map_n);
    }
    return 0;
}
