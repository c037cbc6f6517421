/*
 * test_batching.c: dynamic batching (.batch_max_size, .batch_wait_ms)
 * against a real runtime. Concurrent calls of a batched function run as
 * one invocation whose arguments are lists, and each caller gets its own
 * item of the returned list; a lone call runs after batch_wait_ms; a bad
 * result fails every call of the batch, a call with another argument
 * count fails alone; a crash, a timeout and a cancel act on each call of
 * the running batch; a call with large arguments runs alone; max_inputs
 * counts calls; map and local calls work unchanged for the caller.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

MODAL_APP("itest-batching");

/* Appends [x + y, batch length] for each call, and says how long the
 * batch was on stdout. */
static modal_value *sum_pairs(modal_ctx *ctx, const modal_value *args)
{
    const modal_value *xs = modal_arg(args, 0), *ys = modal_arg(args, 1);
    size_t n = modal_value_len(xs);
    printf("batch saw %zu calls\n", n);
    modal_value *out = modal_list();
    for (size_t i = 0; i < n; i++) {
        int64_t x = 0, y = 0;
        if (modal_get_int(modal_list_get(xs, i), &x, NULL) != MODAL_OK ||
            modal_get_int(modal_list_get(ys, i), &y, NULL) != MODAL_OK) {
            modal_value_free(out);
            return modal_ctx_fail(ctx, "item %zu is not a pair of ints", i);
        }
        modal_list_append(out, modal_args(modal_int(x + y), modal_int((int64_t)n)), NULL);
    }
    return out;
}

/* A long wait, so that calls spawned together always share a batch. */
MODAL_FUNCTION(batch_add, .batch_max_size = 4, .batch_wait_ms = 2000, .max_containers = 2,
               .scaledown_window = 5)
{
    return sum_pairs(ctx, args);
}

MODAL_FUNCTION(batch_map, .batch_max_size = 8, .batch_wait_ms = 20, .scaledown_window = 5)
{
    return sum_pairs(ctx, args);
}

MODAL_FUNCTION(batch_pairs, .batch_max_size = 3, .batch_wait_ms = 2000, .max_containers = 1,
               .scaledown_window = 5)
{
    return sum_pairs(ctx, args);
}

#define LONE_WAIT_MS 400

/* Returns the batch's length for each call. */
MODAL_FUNCTION(lone, .batch_max_size = 4, .batch_wait_ms = LONE_WAIT_MS, .scaledown_window = 5)
{
    size_t n = modal_value_len(modal_arg(args, 0));
    modal_value *out = modal_list();
    for (size_t i = 0; i < n; i++)
        modal_list_append(out, modal_int((int64_t)n), NULL);
    return out;
}

/* Returns one result too few. */
MODAL_FUNCTION(short_result, .batch_max_size = 3, .batch_wait_ms = 2000, .max_containers = 1,
               .scaledown_window = 5)
{
    size_t n = modal_value_len(modal_arg(args, 0));
    modal_value *out = modal_list();
    for (size_t i = 0; i + 1 < n; i++)
        modal_list_append(out, modal_int(0), NULL);
    return out;
}

/* Arguments (marker path, x): the first attempt of the batch creates the
 * marker and crashes; then returns [x, attempt] for each call. */
MODAL_FUNCTION(crash_once, .batch_max_size = 4, .batch_wait_ms = 2000, .max_containers = 1,
               .retry_policy = MODAL_RETRIES(.max_retries = 2, .initial_delay = 0.01),
               .scaledown_window = 5)
{
    const char *marker = NULL;
    modal_get_string(modal_list_get(modal_arg(args, 0), 0), &marker, NULL, NULL);
    if (marker != NULL && access(marker, F_OK) != 0) {
        FILE *f = fopen(marker, "w");
        if (f != NULL)
            fclose(f);
        abort();
    }
    const modal_value *xs = modal_arg(args, 1);
    modal_value *out = modal_list();
    for (size_t i = 0; i < modal_value_len(xs); i++)
        modal_list_append(out, modal_args(modal_value_copy(modal_list_get(xs, i)),
                                          modal_int(modal_ctx_attempt(ctx))), NULL);
    return out;
}

MODAL_FUNCTION(sleepy, .batch_max_size = 2, .batch_wait_ms = 2000, .timeout = 1,
               .max_containers = 1, .scaledown_window = 5)
{
    harness_sleep(10);
    return modal_list();
}

/* Arguments (marker path, x): creates the marker once running, sleeps
 * long enough for a cancel to arrive, returns the xs. */
MODAL_FUNCTION(slow_batch, .batch_max_size = 3, .batch_wait_ms = 2000, .max_containers = 1,
               .scaledown_window = 5)
{
    const char *marker = NULL;
    modal_get_string(modal_list_get(modal_arg(args, 0), 0), &marker, NULL, NULL);
    FILE *f = marker != NULL ? fopen(marker, "w") : NULL;
    if (f != NULL)
        fclose(f);
    harness_sleep(1.0);
    return modal_value_copy(modal_arg(args, 1));
}

/* Returns [element count of the array, batch length] for each call. */
MODAL_FUNCTION(array_sizes, .batch_max_size = 4, .batch_wait_ms = 300, .max_containers = 1,
               .scaledown_window = 5)
{
    const modal_value *arrays = modal_arg(args, 0);
    size_t n = modal_value_len(arrays);
    modal_value *out = modal_list();
    for (size_t i = 0; i < n; i++) {
        const void *p = NULL;
        size_t count = 0;
        if (modal_get_array(modal_list_get(arrays, i), MODAL_F64, &p, &count, NULL) != MODAL_OK) {
            modal_value_free(out);
            return modal_ctx_fail(ctx, "item %zu is not an f64 array", i);
        }
        modal_list_append(out, modal_args(modal_int((int64_t)count), modal_int((int64_t)n)), NULL);
    }
    return out;
}

/* Returns [pid, batch length] for each call; a worker serves 4 calls. */
MODAL_FUNCTION(counted, .batch_max_size = 3, .batch_wait_ms = 2000, .max_inputs = 4,
               .max_containers = 1, .scaledown_window = 5)
{
    size_t n = modal_value_len(modal_arg(args, 0));
    modal_value *out = modal_list();
    for (size_t i = 0; i < n; i++)
        modal_list_append(out, modal_args(modal_int(getpid()), modal_int((int64_t)n)), NULL);
    return out;
}

/* ---- helpers -------------------------------------------------------- */

/* The [sum, length] pair a sum_pairs call answered. */
static void get_pair(modal_value *r, int64_t *sum, int64_t *len)
{
    modal_error err;
    assert_int_equal(modal_value_type(r), MODAL_TYPE_LIST);
    assert_int_equal(modal_value_len(r), 2);
    assert_ok(modal_get_int(modal_list_get(r, 0), sum, &err), err);
    assert_ok(modal_get_int(modal_list_get(r, 1), len, &err), err);
}

/* A marker path in the runtime's directory, removed first. */
static void marker_path(const char *name, char *out, size_t outsz)
{
    snprintf(out, outsz, "%s/%s", rt.dir, name);
    unlink(out);
}

/* ---- tests ---------------------------------------------------------- */

/* 8 calls spawned together, batches of at most 4: the body saw lists of
 * 2 to 4 calls, each caller got its own sum, and every call of a batch
 * has the batch's output. */
static void test_spawned_calls_run_in_batches(void **state)
{
    enum { N = 8 };
    modal_error err;
    modal_call *calls[N];
    for (int i = 0; i < N; i++)
        assert_ok(modal_fn_spawn(&batch_add, modal_args(modal_int(i), modal_int(100 * i)),
                                 &calls[i], &err), err);
    for (int i = 0; i < N; i++) {
        modal_value *r = NULL;
        assert_ok(modal_call_get(calls[i], 30, &r, &err), err);
        int64_t sum = -1, len = -1;
        get_pair(r, &sum, &len);
        assert_true(sum == 101 * i);
        assert_true(len >= 2 && len <= 4);
        modal_value_free(r);
        char *logs = harness_call_logs(&rt, modal_call_id(calls[i]));
        char want[64];
        snprintf(want, sizeof want, "1 batch saw %lld calls\n", (long long)len);
        assert_contains(logs, want);
        free(logs);
        modal_call_free(calls[i]);
    }
}

/* A call alone runs in a batch of one, once it has waited batch_wait_ms. */
static void test_lone_call_waits_then_runs_alone(void **state)
{
    modal_error err;
    /* A warm worker first, so that the wait is the batch's alone. */
    modal_value *r = NULL;
    assert_ok(modal_fn_remote(&lone, modal_args(modal_int(0)), &r, &err), err);
    modal_value_free(r);
    double t0 = harness_now();
    assert_ok(modal_fn_remote(&lone, modal_args(modal_int(1)), &r, &err), err);
    double took = harness_now() - t0;
    int64_t n = -1;
    assert_ok(modal_get_int(r, &n, &err), err);
    assert_true(n == 1);
    modal_value_free(r);
    assert_true(took >= LONE_WAIT_MS / 1000.0);
    assert_true(took < LONE_WAIT_MS / 1000.0 + 5.0);
}

/* A result list of the wrong length fails every call of the batch. */
static void test_wrong_result_length_fails_every_call(void **state)
{
    enum { N = 3 };
    modal_error err;
    modal_call *calls[N];
    for (int i = 0; i < N; i++)
        assert_ok(modal_fn_spawn(&short_result, modal_args(modal_int(i)), &calls[i], &err), err);
    for (int i = 0; i < N; i++) {
        modal_value *r = NULL;
        assert_status(modal_call_get(calls[i], 30, &r, &err), MODAL_EFUNC, err);
        assert_null(r);
        assert_message_contains(err, "short_result: batched function returned a list of 2 "
                                     "results for a batch of 3 calls");
        modal_call_free(calls[i]);
    }
}

/* A call with another number of arguments fails alone, naming its place
 * in the batch and both counts; the others run. */
static void test_other_argument_count_fails_alone(void **state)
{
    modal_error err;
    modal_call *calls[3];
    assert_ok(modal_fn_spawn(&batch_pairs, modal_args(modal_int(1), modal_int(2)), &calls[0],
                             &err), err);
    assert_ok(modal_fn_spawn(&batch_pairs, modal_args(modal_int(3)), &calls[1], &err), err);
    assert_ok(modal_fn_spawn(&batch_pairs, modal_args(modal_int(5), modal_int(6)), &calls[2],
                             &err), err);
    modal_value *r = NULL;
    int64_t sum = -1, len = -1;
    assert_ok(modal_call_get(calls[0], 30, &r, &err), err);
    get_pair(r, &sum, &len);
    assert_true(sum == 3 && len == 2);
    modal_value_free(r);
    assert_status(modal_call_get(calls[1], 30, &r, &err), MODAL_EINVAL, err);
    assert_message_contains(err, "batch_pairs: call 1 of a batch of 3 has 1 argument, call 0 "
                                 "has 2");
    assert_ok(modal_call_get(calls[2], 30, &r, &err), err);
    get_pair(r, &sum, &len);
    assert_true(sum == 11 && len == 2);
    modal_value_free(r);
    for (int i = 0; i < 3; i++)
        modal_call_free(calls[i]);
}

/* A crash in the middle of a batch charges every call of it an attempt;
 * each is retried and succeeds on its second. */
static void test_crash_retries_each_call(void **state)
{
    enum { N = 4 };
    char marker[PATH_MAX + 32];
    marker_path("crash-once", marker, sizeof marker);
    modal_error err;
    modal_call *calls[N];
    for (int i = 0; i < N; i++)
        assert_ok(modal_fn_spawn(&crash_once, modal_args(modal_string(marker), modal_int(i)),
                                 &calls[i], &err), err);
    for (int i = 0; i < N; i++) {
        modal_value *r = NULL;
        assert_ok(modal_call_get(calls[i], 30, &r, &err), err);
        int64_t x = -1, attempt = -1;
        get_pair(r, &x, &attempt);
        assert_true(x == i);
        assert_true(attempt == 2);
        modal_value_free(r);
        modal_call_free(calls[i]);
    }
    assert_int_equal(access(marker, F_OK), 0);
}

/* A batch that runs past the timeout fails each of its calls. */
static void test_timeout_ends_every_call(void **state)
{
    modal_error err;
    modal_call *calls[2];
    for (int i = 0; i < 2; i++)
        assert_ok(modal_fn_spawn(&sleepy, modal_args(modal_int(i)), &calls[i], &err), err);
    for (int i = 0; i < 2; i++) {
        modal_value *r = NULL;
        assert_status(modal_call_get(calls[i], 30, &r, &err), MODAL_ETIMEOUT, err);
        assert_message_contains(err, "sleepy: timed out after 1 s in a batch (attempt 1 of 1)");
        modal_call_free(calls[i]);
    }
}

/* A call cancelled while its batch runs is answered cancelled; the
 * others of the batch finish with their results. */
static void test_cancel_one_of_a_running_batch(void **state)
{
    enum { N = 3 };
    char marker[PATH_MAX + 32];
    marker_path("slow-batch", marker, sizeof marker);
    modal_error err;
    modal_call *calls[N];
    for (int i = 0; i < N; i++)
        assert_ok(modal_fn_spawn(&slow_batch, modal_args(modal_string(marker), modal_int(i)),
                                 &calls[i], &err), err);
    for (double end = harness_now() + 20; access(marker, F_OK) != 0; harness_sleep(0.01))
        assert_true(harness_now() < end);
    /* All three run: none is shown as waiting (sent ahead) meanwhile. */
    cJSON *h = harness_health(&rt);
    assert_null(harness_waiting_entry(h, "slow_batch"));
    cJSON_Delete(h);
    assert_ok(modal_call_cancel(calls[1], &err), err);
    for (int i = 0; i < N; i++) {
        modal_value *r = NULL;
        if (i == 1) {
            assert_status(modal_call_get(calls[i], 30, &r, &err), MODAL_ECANCELLED, err);
        } else {
            assert_ok(modal_call_get(calls[i], 30, &r, &err), err);
            int64_t x = -1;
            assert_ok(modal_get_int(r, &x, &err), err);
            assert_true(x == i);
            modal_value_free(r);
        }
        modal_call_free(calls[i]);
    }
}

/* A call whose arguments are large (they reach the worker in a memfd) runs
 * as a batch of its own; the small calls queued behind it batch together. */
static void test_large_argument_runs_alone(void **state)
{
    enum { BIG = 300000 };
    modal_error err;
    double *data = calloc(BIG, sizeof *data);
    assert_non_null(data);
    modal_call *calls[3];
    assert_ok(modal_fn_spawn(&array_sizes, modal_args(modal_array(MODAL_F64, data, BIG)),
                             &calls[0], &err), err);
    free(data);
    double one = 1.5;
    for (int i = 1; i < 3; i++)
        assert_ok(modal_fn_spawn(&array_sizes, modal_args(modal_array(MODAL_F64, &one, 1)),
                                 &calls[i], &err), err);
    for (int i = 0; i < 3; i++) {
        modal_value *r = NULL;
        assert_ok(modal_call_get(calls[i], 30, &r, &err), err);
        int64_t count = -1, len = -1;
        get_pair(r, &count, &len);
        assert_true(count == (i == 0 ? BIG : 1));
        if (i == 0)
            assert_true(len == 1);
        modal_value_free(r);
        modal_call_free(calls[i]);
    }
}

/* .max_inputs counts calls: a worker that may serve 4 takes a batch of 3,
 * then a batch of 1, and exits; a new worker takes the last 2. */
static void test_max_inputs_counts_calls(void **state)
{
    enum { N = 6 };
    modal_error err;
    modal_call *calls[N];
    for (int i = 0; i < N; i++)
        assert_ok(modal_fn_spawn(&counted, modal_args(modal_int(i)), &calls[i], &err), err);
    int64_t pid[N], len[N];
    for (int i = 0; i < N; i++) {
        modal_value *r = NULL;
        assert_ok(modal_call_get(calls[i], 30, &r, &err), err);
        get_pair(r, &pid[i], &len[i]);
        modal_value_free(r);
        modal_call_free(calls[i]);
    }
    static const int64_t want_len[N] = {3, 3, 3, 1, 2, 2};
    for (int i = 0; i < N; i++)
        assert_true(len[i] == want_len[i]);
    for (int i = 1; i < 4; i++)
        assert_true(pid[i] == pid[0]);
    assert_true(pid[4] != pid[0]);
    assert_true(pid[5] == pid[4]);
}

/* starmap of 100 pairs over batches: 100 results, in order. */
static void test_starmap_of_100(void **state)
{
    enum { N = 100 };
    modal_error err;
    modal_value *in = modal_list();
    for (int i = 0; i < N; i++)
        assert_ok(modal_list_append(in, modal_args(modal_int(i), modal_int(2 * i)), &err), err);
    modal_value *out = NULL;
    assert_ok(modal_fn_starmap(&batch_map, in, NULL, &out, &err), err);
    assert_int_equal(modal_value_len(out), N);
    int64_t most = 0;
    for (int i = 0; i < N; i++) {
        int64_t sum = -1, len = -1;
        get_pair((modal_value *)modal_list_get(out, (size_t)i), &sum, &len);
        assert_true(sum == 3 * i);
        assert_true(len >= 1 && len <= 8);
        if (len > most)
            most = len;
    }
    assert_true(most >= 2); /* inputs did share batches */
    modal_value_free(out);
}

/* A local call passes single inputs: the body sees one-item lists, and
 * the caller gets the one result; a wrong length fails it. */
static void test_local_call(void **state)
{
    modal_error err;
    modal_value *r = NULL;
    assert_ok(modal_fn_local(&batch_add, modal_args(modal_int(2), modal_int(40)), &r, &err), err);
    int64_t sum = -1, len = -1;
    get_pair(r, &sum, &len);
    assert_true(sum == 42 && len == 1);
    modal_value_free(r);
    assert_status(modal_fn_local(&short_result, modal_args(modal_int(1)), &r, &err), MODAL_EFUNC,
                  err);
    assert_null(r);
    assert_message_contains(err, "short_result: batched function returned a list of 0 results "
                                 "for a batch of 1 call");
}

/* Once every batch is done, the health endpoint shows nothing waiting
 * for these functions and no worker holding a call. */
static void test_health_after_batches(void **state)
{
    for (double end = harness_now() + 20;; harness_sleep(0.05)) {
        cJSON *h = harness_health(&rt);
        bool waiting = false;
        const char *fns[] = {"batch_add", "batch_map", "batch_pairs", "lone", "short_result",
                             "crash_once", "sleepy", "slow_batch", "array_sizes", "counted"};
        for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
            waiting = waiting || harness_waiting_entry(h, fns[i]) != NULL;
        cJSON_Delete(h);
        if (!waiting)
            break;
        assert_true(harness_now() < end);
    }
    modal_error err;
    modal_value *r = NULL;
    assert_ok(modal_fn_remote(&batch_add, modal_args(modal_int(1), modal_int(1)), &r, &err), err);
    modal_value_free(r);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spawned_calls_run_in_batches),
        cmocka_unit_test(test_lone_call_waits_then_runs_alone),
        cmocka_unit_test(test_wrong_result_length_fails_every_call),
        cmocka_unit_test(test_other_argument_count_fails_alone),
        cmocka_unit_test(test_crash_retries_each_call),
        cmocka_unit_test(test_timeout_ends_every_call),
        cmocka_unit_test(test_cancel_one_of_a_running_batch),
        cmocka_unit_test(test_large_argument_runs_alone),
        cmocka_unit_test(test_max_inputs_counts_calls),
        cmocka_unit_test(test_starmap_of_100),
        cmocka_unit_test(test_local_call),
        cmocka_unit_test(test_health_after_batches),
    };
    return cmocka_run_group_tests_name("batching", tests, harness_group_setup,
                                       harness_group_teardown) != 0;
}
