/*
 * test_output.c: worker output against a real runtime. Every line is filed
 * under the call that wrote it while calls are sent ahead to a busy worker;
 * stdout and stderr lines stay apart; long lines arrive whole (or cut with
 * a mark past 64 KiB, between UTF-8 characters), also through the client;
 * output over the per-call limit ends with a notice; a function writing
 * 50 MB does not stall warm calls from another process; and output written
 * before the worker is ready reaches the app log once and in order.
 *
 * This binary is also the worker the runtime starts, and a client in
 * "child mode" (--child-long, --child-warm).
 */
#include "harness.h"

MODAL_APP("itest-output");

/* ---- functions ---------------------------------------------------- */

/* Argument 0 lines to stdout and as many to stderr, each naming the call
 * that wrote it. One container: later calls are sent ahead in batches. */
MODAL_FUNCTION(tagged, .max_containers = 1, .scaledown_window = 5)
{
    int64_t n = modal_arg_int(args, 0);
    for (int64_t k = 0; k < n; k++) {
        printf("tag %s out %lld\n", modal_ctx_call_id(ctx), (long long)k);
        fprintf(stderr, "tag %s err %lld\n", modal_ctx_call_id(ctx), (long long)k);
    }
    return modal_int(n);
}

/* A partial stdout line, a stderr line, then the end of the stdout line. */
MODAL_FUNCTION(mixed, .scaledown_window = 5)
{
    printf("partial-out");
    fflush(stdout);
    fprintf(stderr, "err-line\n");
    printf("rest\n");
    printf("to-stdout-marker\n");
    fprintf(stderr, "to-stderr-marker\n");
    return modal_null();
}

/* One line of argument 0 'x' characters. */
MODAL_FUNCTION(long_line, .scaledown_window = 5)
{
    int64_t n = modal_arg_int(args, 0);
    char *line = malloc((size_t)n + 2);
    if (line == NULL)
        return modal_ctx_fail(ctx, "out of memory");
    memset(line, 'x', (size_t)n);
    line[n] = '\n';
    fwrite(line, 1, (size_t)n + 1, stdout);
    free(line);
    return modal_int(n);
}

/* One line: 'a', then argument 0 times "\u00e9" (2 bytes each). */
MODAL_FUNCTION(long_utf8, .scaledown_window = 5)
{
    int64_t n = modal_arg_int(args, 0);
    for (int64_t k = 0; k < n; k++)
        fputs(k == 0 ? "a\u00e9" : "\u00e9", stdout);
    putchar('\n');
    return modal_int(n);
}

/* Argument 0 lines of argument 1 bytes each (newline included). */
MODAL_FUNCTION(flood, .scaledown_window = 5, .timeout = 120)
{
    int64_t lines = modal_arg_int(args, 0), width = modal_arg_int(args, 1);
    char *line = malloc((size_t)width);
    if (line == NULL)
        return modal_ctx_fail(ctx, "out of memory");
    memset(line, 'y', (size_t)width - 1);
    line[width - 1] = '\n';
    for (int64_t i = 0; i < lines; i++)
        fwrite(line, 1, (size_t)width, stdout);
    free(line);
    /* Says when it is done, for the warm-call test. */
    const char *done = modal_arg_string(args, 2);
    if (done != NULL && done[0] != '\0') {
        fflush(stdout);
        FILE *f = fopen(done, "w");
        if (f != NULL)
            fclose(f);
    }
    return modal_int(lines);
}

MODAL_FUNCTION(quick, .scaledown_window = 30)
{
    return modal_int(1);
}

#define ENTER_LINES 20000

/* Numbered lines from the enter hook, before the worker says it is ready. */
static int noisy_enter(modal_ctx *ctx)
{
    for (int i = 0; i < ENTER_LINES; i++)
        printf("enter-line %d\n", i);
    return 0;
}

MODAL_FUNCTION(noisy_start, .enter = noisy_enter, .scaledown_window = 5)
{
    return modal_int(1);
}

/* ---- helpers -------------------------------------------------------- */

static size_t count_lines_with(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* ---- tests ---------------------------------------------------------- */

#define NCALLS 40
#define NLINES 25

static void test_lines_filed_under_their_call(void **state)
{
    modal_call *calls[NCALLS];
    modal_error err;
    for (int i = 0; i < NCALLS; i++)
        assert_ok(modal_fn_spawn(&tagged, modal_args(modal_int(NLINES)), &calls[i], &err), err);
    for (int i = 0; i < NCALLS; i++) {
        modal_value *out = NULL;
        assert_ok(modal_call_get(calls[i], 60, &out, &err), err);
        modal_value_free(out);
    }
    /* Each call's streamed output holds its own lines, all of them, and
     * no other call's. */
    for (int i = 0; i < NCALLS; i++) {
        const char *id = modal_call_id(calls[i]);
        char *logs = harness_call_logs(&rt, id);
        char want[128];
        snprintf(want, sizeof want, "1 tag %s out ", id);
        assert_int_equal(count_lines_with(logs, want), NLINES);
        snprintf(want, sizeof want, "2 tag %s err ", id);
        assert_int_equal(count_lines_with(logs, want), NLINES);
        assert_int_equal(count_lines_with(logs, "tag "), 2 * NLINES);
        free(logs);
    }
    /* The app log files every line under the call it names. The event
     * loop writes it just after the results, so it is read until whole. */
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/logs/itest-output.log", rt.dir);
    size_t seen = 0, wrong = 0;
    double deadline = harness_now() + 10;
    do {
        harness_sleep(0.05);
        char *log = harness_read_file(path, NULL);
        assert_non_null(log);
        seen = wrong = 0;
        for (char *line = strtok(log, "\n"); line != NULL; line = strtok(NULL, "\n")) {
            /* "<stamp> <call id> tagged <stream> tag <call id> ..." */
            char stamp[40], filed[64], fn[64], stream[16], named[64];
            if (sscanf(line, "%39s %63s %63s %15s tag %63s", stamp, filed, fn, stream, named) != 5)
                continue;
            seen++;
            if (strcmp(filed, named) != 0 && wrong++ == 0)
                print_error("line filed under %s: %s\n", filed, line);
        }
        free(log);
    } while (seen < (size_t)NCALLS * NLINES * 2 && harness_now() < deadline);
    assert_int_equal(seen, (size_t)NCALLS * NLINES * 2);
    assert_int_equal(wrong, 0);
    for (int i = 0; i < NCALLS; i++)
        modal_call_free(calls[i]);
}

static void test_streams_stay_apart(void **state)
{
    modal_call *c = NULL;
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_spawn(&mixed, modal_list(), &c, &err), err);
    assert_ok(modal_call_get(c, 60, &out, &err), err);
    modal_value_free(out);
    char *logs = harness_call_logs(&rt, modal_call_id(c));
    assert_contains(logs, "2 err-line\n");
    assert_contains(logs, "1 partial-outrest\n");
    free(logs);
    modal_call_free(c);
}

static void test_long_lines_whole_or_marked(void **state)
{
    modal_error err;
    size_t sizes[] = {2000, 60000, 150000};
    for (size_t k = 0; k < 3; k++) {
        modal_call *c = NULL;
        modal_value *out = NULL;
        assert_ok(modal_fn_spawn(&long_line, modal_args(modal_int((int64_t)sizes[k])), &c, &err),
                  err);
        assert_ok(modal_call_get(c, 60, &out, &err), err);
        modal_value_free(out);
        char *logs = harness_call_logs(&rt, modal_call_id(c));
        /* Lines as the call's output holds them, each "1 " + text. */
        size_t pieces = 0, total = 0, marked = 0;
        for (char *line = strtok(logs, "\n"); line != NULL; line = strtok(NULL, "\n")) {
            assert_true(strncmp(line, "1 x", 3) == 0);
            size_t n = strspn(line + 2, "x");
            total += n;
            pieces++;
            if (strcmp(line + 2 + n, " [line continues]") == 0)
                marked++;
            else
                assert_string_equal(line + 2 + n, "");
        }
        free(logs);
        assert_int_equal(total, sizes[k]);
        size_t want = (sizes[k] + 65535) / 65536;
        assert_int_equal(pieces, want);
        assert_int_equal(marked, want - 1);
        modal_call_free(c);
    }
}

static void test_long_line_cut_between_characters(void **state)
{
    const int64_t chars = 40000; /* 80,001 bytes: 65,536 falls inside one */
    modal_call *c = NULL;
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_spawn(&long_utf8, modal_args(modal_int(chars)), &c, &err), err);
    assert_ok(modal_call_get(c, 60, &out, &err), err);
    modal_value_free(out);
    char *logs = harness_call_logs(&rt, modal_call_id(c));
    /* Each piece is whole characters: "1 ", 'a' in the first, then pairs. */
    size_t pieces = 0, pairs = 0;
    for (char *line = strtok(logs, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        assert_true(strncmp(line, pieces == 0 ? "1 a" : "1 ", pieces == 0 ? 3 : 2) == 0);
        const char *p = line + (pieces == 0 ? 3 : 2);
        for (; strncmp(p, "\u00e9", 2) == 0; p += 2)
            pairs++;
        if (*p != '\0')
            assert_string_equal(p, " [line continues]");
        pieces++;
    }
    free(logs);
    assert_int_equal(pieces, 2);
    assert_int_equal(pairs, chars);
    modal_call_free(c);
}

/* Child mode: call long_line(2000) and mixed() with output shown. */
static int child_long(void)
{
    modal_value *out = NULL;
    modal_error err;
    modal_status st = modal_fn_remote(&long_line, modal_args(modal_int(2000)), &out, &err);
    modal_value_free(out);
    if (st == MODAL_OK)
        st = modal_fn_remote(&mixed, modal_list(), &out, &err);
    modal_value_free(out);
    fprintf(stderr, "child: %s %s\n", modal_status_name(st), st == MODAL_OK ? "" : err.message);
    return st == MODAL_OK ? 0 : 1;
}

static void test_client_prints_whole_lines_by_stream(void **state)
{
    /* The client prints stdout lines to stdout: with stderr discarded,
     * only those remain. */
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "'%s' --child-long 2>/dev/null", harness_self_exe());
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    unsetenv("MODAL_QUIET_LOGS");
    char *output = NULL;
    int ws = harness_run(argv, 60, &output);
    setenv("MODAL_QUIET_LOGS", "1", 1);
    assert_int_equal(ws, 0);
    char want[2100] = "[long_line] ";
    memset(want + 12, 'x', 2000);
    strcpy(want + 2012, "\n");
    assert_contains(output, want);
    assert_contains(output, "[mixed] partial-outrest\n");
    assert_contains(output, "[mixed] to-stdout-marker\n");
    assert_null(strstr(output, "to-stderr-marker"));
    free(output);
}

static void test_limit_says_what_it_left_out(void **state)
{
    const int64_t lines = 60000, width = 100; /* 6 MB, over the 4 MiB limit */
    modal_call *c = NULL;
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_spawn(&flood, modal_args(modal_int(lines), modal_int(width),
                                                modal_string("")), &c, &err), err);
    assert_ok(modal_call_get(c, 120, &out, &err), err);
    modal_value_free(out);
    char *logs = harness_call_logs(&rt, modal_call_id(c));
    /* Whole lines ("1 " + text) fit in 4 MiB; the rest are counted. */
    long long kept = (4ll << 20) / (width + 2), dropped = lines - kept;
    assert_int_equal(count_lines_with(logs, "1 yyy"), kept);
    char notice[128];
    snprintf(notice, sizeof notice, "! \u2026 %lld,%03lld lines not shown; see logs/itest-output.log\n",
             dropped / 1000, dropped % 1000);
    assert_contains(logs, notice);
    size_t len = strlen(logs);
    assert_true(len >= strlen(notice) && strcmp(logs + len - strlen(notice), notice) == 0);
    free(logs);
    /* The app log has every line (written by the event loop just after
     * the result: read until whole). */
    char path[PATH_MAX + 64], grep[PATH_MAX + 200];
    snprintf(path, sizeof path, "%s/logs/itest-output.log", rt.dir);
    snprintf(grep, sizeof grep, "grep -c ' %s flood stdout y' '%s'", modal_call_id(c), path);
    long long n = 0;
    double deadline = harness_now() + 10;
    do {
        harness_sleep(0.05);
        FILE *p = popen(grep, "r");
        assert_non_null(p);
        assert_int_equal(fscanf(p, "%lld", &n), 1);
        pclose(p);
    } while (n < lines && harness_now() < deadline);
    assert_int_equal(n, lines);
    modal_call_free(c);
}

static void test_startup_output_once_in_order(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_remote(&noisy_start, modal_list(), &out, &err), err);
    modal_value_free(out);
    /* The app log holds every line of the enter hook once, in order. */
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/logs/itest-output.log", rt.dir);
    int next = 0, bad = 0;
    double deadline = harness_now() + 10;
    do {
        harness_sleep(0.05);
        char *log = harness_read_file(path, NULL);
        assert_non_null(log);
        next = bad = 0;
        for (char *p = log; (p = strstr(p, "noisy_start stdout ")) != NULL; p++) {
            int k = -1;
            if (sscanf(p, "noisy_start stdout enter-line %d\n", &k) != 1 || k != next) {
                if (bad++ == 0)
                    print_error("expected enter-line %d: %.60s\n", next, p);
            } else {
                next++;
            }
        }
        free(log);
    } while (next + bad < ENTER_LINES && harness_now() < deadline);
    assert_int_equal(bad, 0);
    assert_int_equal(next, ENTER_LINES);
}

/* Child mode: warm calls to quick until the file argv[2] exists; prints
 * how many calls ran and the slowest. */
static int child_warm(const char *done)
{
    modal_value *out = NULL;
    modal_error err;
    if (modal_fn_remote(&quick, modal_list(), &out, &err) != MODAL_OK) { /* warms the pool */
        printf("child: %s\n", err.message);
        return 1;
    }
    modal_value_free(out);
    double worst = 0, start = harness_now();
    int n = 0;
    while (access(done, F_OK) != 0 && harness_now() - start < 60) {
        double t0 = harness_now();
        if (modal_fn_remote(&quick, modal_list(), &out, &err) != MODAL_OK) {
            printf("child: %s\n", err.message);
            return 1;
        }
        modal_value_free(out);
        double dt = harness_now() - t0;
        if (dt > worst)
            worst = dt;
        n++;
        harness_sleep(0.002);
    }
    printf("warm calls %d slowest %.1f ms\n", n, worst * 1e3);
    return 0;
}

static void test_noisy_function_does_not_stall_others(void **state)
{
    char done[PATH_MAX + 32];
    snprintf(done, sizeof done, "%s/noisy-done", rt.dir);
    modal_call *c = NULL;
    modal_value *out = NULL;
    modal_error err;
    /* quick's worker is warm before the noise starts. */
    assert_ok(modal_fn_remote(&quick, modal_list(), &out, &err), err);
    modal_value_free(out);
    /* 50 MB in 100-byte lines. */
    assert_ok(modal_fn_spawn(&flood, modal_args(modal_int(500000), modal_int(100),
                                                modal_string(done)), &c, &err), err);
    static const char *const args[] = {"--child-warm", NULL, NULL};
    const char *a[] = {args[0], done, NULL};
    char *output = NULL;
    int ws = harness_run_self(a, 120, &output);
    assert_ok(modal_call_get(c, 120, &out, &err), err);
    modal_value_free(out);
    modal_call_free(c);
    assert_int_equal(ws, 0);
    int n = 0;
    double worst = 0;
    const char *line = strstr(output, "warm calls ");
    assert_non_null(line);
    assert_int_equal(sscanf(line, "warm calls %d slowest %lf ms", &n, &worst), 2);
    print_message("%s", line);
    free(output);
    assert_true(n >= 10);     /* they overlapped the output */
    assert_true(worst < 200); /* ms; normally well under 10 */
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    if (argc > 1 && strcmp(argv[1], "--child-long") == 0)
        return child_long();
    if (argc > 2 && strcmp(argv[1], "--child-warm") == 0)
        return child_warm(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_filed_under_their_call),
        cmocka_unit_test(test_streams_stay_apart),
        cmocka_unit_test(test_long_lines_whole_or_marked),
        cmocka_unit_test(test_long_line_cut_between_characters),
        cmocka_unit_test(test_client_prints_whole_lines_by_stream),
        cmocka_unit_test(test_limit_says_what_it_left_out),
        cmocka_unit_test(test_noisy_function_does_not_stall_others),
        cmocka_unit_test(test_startup_output_once_in_order),
    };
    return cmocka_run_group_tests_name("output", tests, harness_group_setup,
                                       harness_group_teardown);
}
