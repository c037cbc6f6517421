/*
 * test_examples.c: runs every example program (each file in build/examples)
 * against a real runtime and checks that it exits 0 and prints what it
 * should.
 *
 * Examples listed below are checked for a fragment of their output; any
 * other program found in the examples directory is still run (no
 * arguments) and must exit 0, so a new example is never left out of CI.
 * The GPU examples (gpu_*) are run by test_gpu_examples, against the CUDA
 * test double.
 */
#include "harness.h"

#include <dirent.h>

#define EXAMPLE_SECONDS 180.0

typedef struct expectation {
    const char *name;        /* binary under build/examples */
    const char *args[4];     /* extra arguments, NULL-terminated */
    const char *expect[4];   /* fragments the output must contain */
} expectation;

static const expectation known[] = {
    {"hello", {NULL}, {"sum of squares of 1..10 = 385 (ran remotely)", "runtime at http://127.0.0.1:", NULL}},
    {"hello", {"--local", NULL}, {"sum of squares of 1..10 = 385 (ran locally)", NULL}},
    {"map", {NULL}, {"results: [1, 4, 9, 16, 25]", "sum of squares of 0..999 = 332833500", NULL}},
    {"starmap", {NULL}, {"lr=0.001 batch_size=32 accuracy=0.850", "best: lr=0.01 batch_size=64", NULL}},
    {"spawn", {NULL}, {"spawned call fc-", "slow_sum(1000000) = 500000500000", NULL}},
    {"retries", {NULL}, {"flaky_download: succeeded on attempt 3", "long_training: timed out as expected", NULL}},
    {"sweep", {NULL}, {"Best config: lr=0.0001 batch_size=32 epochs=10 accuracy=0.900", NULL}},
    {"batch_inference", {NULL}, {"10 batches, 1000 completions", "first: completion of 'prompt 0': PROMPT 0", "last: completion of 'prompt 999': PROMPT 999", NULL}},
    {"batched", {NULL}, {"batch_add: [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]", "embed: 20 prompts, 20 vectors of 4 floats; first: [", NULL}},
};

static char examples_dir[PATH_MAX];

static int setup(void **state)
{
    harness_sibling("../examples", examples_dir, sizeof examples_dir);
    /* Worker output would only clutter the captured output. */
    setenv("MODAL_QUIET_LOGS", "1", 1);
    return harness_start(&rt);
}

static int teardown(void **state)
{
    harness_stop(&rt);
    return 0;
}

/* Run one example; 0 if it passed, after printing why not otherwise. */
static int run_example(const char *name, const char *const *args, const char *const *expect)
{
    char path[PATH_MAX + 64];
    char *argv[8];
    size_t n = 0;
    snprintf(path, sizeof path, "%s/%s", examples_dir, name);
    if (access(path, X_OK) != 0) {
        print_error("example %s is not built (%s); run `make examples`\n", path, strerror(errno));
        return -1;
    }
    argv[n++] = path;
    for (size_t i = 0; args != NULL && args[i] != NULL && n < 7; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;

    char *output = NULL;
    double t0 = harness_now();
    int ws = harness_run(argv, EXAMPLE_SECONDS, &output);
    int rc = 0;
    if (!(ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0)) {
        if (ws != -1 && WIFSIGNALED(ws))
            print_error("%s: killed by signal %d\n", name, WTERMSIG(ws));
        else
            print_error("%s: exit status %d\n", name, ws == -1 ? -1 : WEXITSTATUS(ws));
        rc = -1;
    }
    for (size_t i = 0; expect != NULL && expect[i] != NULL; i++)
        if (output == NULL || strstr(output, expect[i]) == NULL) {
            print_error("%s: output lacks \"%s\"\n", name, expect[i]);
            rc = -1;
        }
    if (rc != 0)
        print_error("---- output of %s ----\n%s\n----\n", name, output ? output : "");
    else
        print_message("%s%s%s: ok in %.2f s\n", name, args && args[0] ? " " : "",
                      args && args[0] ? args[0] : "", harness_now() - t0);
    free(output);
    return rc;
}

static void test_known_examples(void **state)
{
    int failures = 0;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (run_example(known[i].name, known[i].args, known[i].expect) != 0)
            failures++;
    assert_int_equal(failures, 0);
}

static bool is_known(const char *name)
{
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(known[i].name, name) == 0)
            return true;
    return false;
}

static void test_other_examples(void **state)
{
    DIR *d = opendir(examples_dir);
    if (d == NULL) {
        print_error("cannot open %s: %s\n", examples_dir, strerror(errno));
        fail();
    }
    int failures = 0, ran = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[PATH_MAX + 300];
        struct stat st;
        if (e->d_name[0] == '.' || is_known(e->d_name) || strncmp(e->d_name, "gpu_", 4) == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", examples_dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || access(path, X_OK) != 0)
            continue;
        ran++;
        if (run_example(e->d_name, NULL, NULL) != 0)
            failures++;
    }
    closedir(d);
    print_message("%d other example(s) run\n", ran);
    assert_int_equal(failures, 0);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_examples),
        cmocka_unit_test(test_other_examples),
    };
    return cmocka_run_group_tests_name("examples", tests, setup, teardown) != 0;
}
