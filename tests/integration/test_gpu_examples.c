/*
 * test_gpu_examples.c: runs the GPU examples (build/examples/gpu_*) end to
 * end against a real runtime whose GPUs are the CUDA test double's: four
 * H100s and an A100 80GB, with the CPU stand-ins of
 * tests/cuda_fake/kernels.c for their kernels. Each example checks its
 * result against a CPU reference and exits non-zero on a mismatch.
 *
 * Examples listed below are checked for a fragment of their output; any
 * other gpu_* program is still run (no arguments) and must exit 0. The
 * fallback example runs again on a runtime that has only the A100, to see
 * the list fall through. Without nvcc the GPU examples are not built, and
 * this test says so and skips.
 */
#include "harness.h"

#include <dirent.h>

#define EXAMPLE_SECONDS 180.0

#define H100(i) "NVIDIA H100 80GB HBM3|81559|9.0|GPU-11111111-2222-3333-4444-00000000000" #i
#define A100 "NVIDIA A100-SXM4-80GB|81920|8.0|GPU-11111111-2222-3333-4444-0000000000a8"

typedef struct expectation {
    const char *name;        /* binary under build/examples */
    const char *args[4];     /* extra arguments, NULL-terminated */
    const char *expect[4];   /* fragments the output must contain */
} expectation;

static const expectation known[] = {
    {"gpu_saxpy", {NULL}, {"saxpy over 1048576 floats (ran remotely): matches the CPU", NULL}},
    {"gpu_saxpy", {"--local", NULL}, {"saxpy over 1048576 floats (ran locally): matches the CPU", NULL}},
    {"gpu_matmul", {NULL}, {"matmul 256 x 256 (ran remotely): matches the CPU", NULL}},
    {"gpu_matmul", {"100", NULL}, {"matmul 100 x 100 (ran remotely): matches the CPU", NULL}},
    {"gpu_matmul", {"--local", NULL}, {"matmul 256 x 256 (ran locally): matches the CPU", NULL}},
    {"gpu_fallback", {NULL}, {"ran on: H100 (NVIDIA H100 80GB HBM3); saxpy matches the CPU", NULL}},
    {"gpu_exact", {NULL}, {"gpu \"H100!\" ran on: H100; saxpy matches the CPU", NULL}},
    {"gpu_multi", {NULL}, {"split over 4 GPUs: matches the CPU", NULL}},
};

static char examples_dir[PATH_MAX];
static char fake_lib[PATH_MAX], fake_kernels[PATH_MAX];

/* Whether the GPU examples were built (they need nvcc). */
static bool built(void)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/gpu_saxpy", examples_dir);
    return access(path, X_OK) == 0;
}

static int setup(void **state)
{
    harness_sibling("../examples", examples_dir, sizeof examples_dir);
    setenv("MODAL_QUIET_LOGS", "1", 1);
    setenv("MODAL_CUDA_LIBRARY", fake_lib, 1);
    setenv("MODAL_FAKE_CUDA_KERNELS", fake_kernels, 1);
    return 0;
}

/* Run one example; 0 if it passed, after printing why not otherwise. */
static int run_example(const char *name, const char *const *args, const char *const *expect)
{
    char path[PATH_MAX + 64];
    char *argv[8];
    size_t n = 0;
    snprintf(path, sizeof path, "%s/%s", examples_dir, name);
    argv[n++] = path;
    for (size_t i = 0; args != NULL && args[i] != NULL && n < 7; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    char *output = NULL;
    int ws = harness_run(argv, EXAMPLE_SECONDS, &output);
    int rc = 0;
    if (!(ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0)) {
        print_error("%s: exit status %d\n", name, ws == -1 || !WIFEXITED(ws) ? -1 : WEXITSTATUS(ws));
        rc = -1;
    }
    for (size_t i = 0; expect != NULL && expect[i] != NULL; i++)
        if (output == NULL || strstr(output, expect[i]) == NULL) {
            print_error("%s: output lacks \"%s\"\n", name, expect[i]);
            rc = -1;
        }
    if (rc != 0)
        print_error("%s printed:\n%s\n", name, output ? output : "");
    free(output);
    return rc;
}

static bool is_known(const char *name)
{
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(known[i].name, name) == 0)
            return true;
    return false;
}

static void test_gpu_examples(void **state)
{
    if (!built()) {
        print_message("GPU examples skipped: they are not built (nvcc was not found)\n");
        skip();
    }
    harness h;
    setenv("MODAL_FAKE_CUDA_DEVICES", H100(1) ";" H100(2) ";" H100(3) ";" H100(4) ";" A100, 1);
    assert_int_equal(harness_start(&h), 0);
    int failures = 0, ran = 0;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (run_example(known[i].name, known[i].args, known[i].expect) != 0)
            failures++;
    DIR *d = opendir(examples_dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "gpu_", 4) != 0 || is_known(e->d_name))
            continue;
        ran++;
        if (run_example(e->d_name, NULL, NULL) != 0)
            failures++;
    }
    closedir(d);
    print_message("%d other GPU example(s) run\n", ran);
    harness_stop(&h);
    assert_int_equal(failures, 0);
}

static void test_fallback_takes_the_next_type(void **state)
{
    if (!built())
        skip();
    harness h;
    setenv("MODAL_FAKE_CUDA_DEVICES", A100, 1);
    assert_int_equal(harness_start(&h), 0);
    const char *none[] = {NULL};
    const char *want[] = {"ran on: A100-80GB (NVIDIA A100-SXM4-80GB); saxpy matches the CPU",
                          NULL};
    int rc = run_example("gpu_fallback", none, want);
    harness_stop(&h);
    assert_int_equal(rc, 0);
}

int main(int argc, char **argv)
{
    harness_sibling("cuda_fake/libcuda.so.1", fake_lib, sizeof fake_lib);
    harness_sibling("cuda_fake/libfake_kernels.so", fake_kernels, sizeof fake_kernels);
    if (access(fake_lib, R_OK) != 0 || access(fake_kernels, R_OK) != 0) {
        fprintf(stderr, "test_gpu_examples: %s or %s is missing; build them with `make test`\n",
                fake_lib, fake_kernels);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpu_examples),
        cmocka_unit_test(test_fallback_takes_the_next_type),
    };
    return cmocka_run_group_tests_name("gpu_examples", tests, setup, NULL) != 0;
}
