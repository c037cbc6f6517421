/*
 * test_batching_edges.c: dynamic batching at its edges, against a real
 * runtime. A cancel of one call of a running batch leaves its worker
 * serving, and cancelling every call of it frees the worker at once;
 * batch_max_size = 1 and batch_wait_ms = 0 run each call alone and
 * without waiting; workers forked from a memory snapshot take batches; a
 * burst over several workers runs in full batches, none left behind;
 * health counts every call of a running batch as running and the call
 * behind it as queued; a worker whose call waits for its batch outlives
 * its scale-down window and runs it; a batch that times out is retried
 * call by call; large results of a batch reach each caller; a starmap
 * whose odd inputs (another number of arguments) sit first in their
 * batch fails those alone, in order; the runtime stops promptly while a
 * batch waits for its timer.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

MODAL_APP("itest-batching-edges");

/* Arguments (marker path, seconds, x): creates the marker once running,
 * sleeps the longest seconds of the batch, returns [x, batch length, pid]. */
static modal_value *wait_and_echo(modal_ctx *ctx, const modal_value *args)
{
    const modal_value *markers = modal_arg(args, 0), *secs = modal_arg(args, 1),
                      *xs = modal_arg(args, 2);
    size_t n = modal_value_len(xs);
    double most = 0;
    for (size_t i = 0; i < n; i++) {
        const char *marker = NULL;
        double s = 0;
        modal_get_string(modal_list_get(markers, i), &marker, NULL, NULL);
        modal_get_float(modal_list_get(secs, i), &s, NULL);
        if (marker != NULL && marker[0] != '\0') {
            FILE *f = fopen(marker, "w");
            if (f != NULL)
                fclose(f);
        }
        if (s > most)
            most = s;
    }
    harness_sleep(most);
    modal_value *out = modal_list();
    for (size_t i = 0; i < n; i++)
        modal_list_append(out, modal_args(modal_value_copy(modal_list_get(xs, i)),
                                          modal_int((int64_t)n), modal_int(getpid())), NULL);
    return out;
}

MODAL_FUNCTION(stuck, .batch_max_size = 2, .batch_wait_ms = 2000, .max_containers = 1,
               .timeout = 120, .scaledown_window = 5)
{
    return wait_and_echo(ctx, args);
}

/* Returns [pid, batch length] for each call. */
static modal_value *pid_len(const modal_value *args)
{
    size_t n = modal_value_len(modal_arg(args, 0));
    modal_value *out = modal_list();
    for (size_t i = 0; i < n; i++)
        modal_list_append(out, modal_args(modal_int(getpid()), modal_int((int64_t)n)), NULL);
    return out;
}

MODAL_FUNCTION(one_at_a_time, .batch_max_size = 1, .batch_wait_ms = 5000, .max_containers = 1,
               .scaledown_window = 5)
{
    return pid_len(args);
}

MODAL_FUNCTION(no_wait, .batch_max_size = 8, .batch_wait_ms = 0, .max_containers = 1,
               .scaledown_window = 5)
{
    return pid_len(args);
}

MODAL_FUNCTION(snap_batched, .batch_max_size = 4, .batch_wait_ms = 3000, .max_containers = 1,
               .memory_snapshot = true, .scaledown_window = 5)
{
    return pid_len(args);
}

/* A burst of 12 over 3 workers: each worker sleeps a little per batch. */
MODAL_FUNCTION(burst, .batch_max_size = 4, .batch_wait_ms = 3000, .max_containers = 3,
               .scaledown_window = 5)
{
    harness_sleep(0.3);
    return pid_len(args);
}

MODAL_FUNCTION(counted_run, .batch_max_size = 3, .batch_wait_ms = 300, .max_containers = 1,
               .timeout = 60, .scaledown_window = 5)
{
    return wait_and_echo(ctx, args);
}

/* Sums pairs; a pair of other length is refused by the runtime's batching. */
MODAL_FUNCTION(pair_sum, .batch_max_size = 8, .batch_wait_ms = 500, .max_containers = 1,
               .scaledown_window = 5)
{
    const modal_value *xs = modal_arg(args, 0), *ys = modal_arg(args, 1);
    if (xs == NULL || ys == NULL)
        return NULL;
    modal_value *out = modal_list();
    for (size_t i = 0; i < modal_value_len(xs); i++)
        modal_list_append(out, modal_int(modal_arg_int(xs, i) + modal_arg_int(ys, i)), NULL);
    return out;
}

/* Always runs past its 1 s timeout; one retry. */
MODAL_FUNCTION(too_slow, .batch_max_size = 2, .batch_wait_ms = 2000, .timeout = 1,
               .retry_policy = MODAL_RETRIES(.max_retries = 1, .initial_delay = 0.01),
               .max_containers = 1, .scaledown_window = 5)
{
    harness_sleep(10);
    return modal_list();
}

/* Returns, for each call, an f64 array of x elements, each x. */
MODAL_FUNCTION(big_results, .batch_max_size = 3, .batch_wait_ms = 2000, .max_containers = 1,
               .scaledown_window = 5)
{
    const modal_value *xs = modal_arg(args, 0);
    modal_value *out = modal_list();
    for (size_t i = 0; i < modal_value_len(xs); i++) {
        size_t n = (size_t)modal_arg_int(xs, i);
        modal_value *a = modal_array_new(MODAL_F64, 1, &n);
        double *d = modal_array_data_mut(a);
        for (size_t k = 0; k < n; k++)
            d[k] = (double)n;
        modal_list_append(out, a, NULL);
    }
    return out;
}

/* Its batch wait outlasts its scale-down window. */
MODAL_FUNCTION(quick_scaledown, .batch_max_size = 4, .batch_wait_ms = 2500, .max_containers = 1,
               .scaledown_window = 1)
{
    return pid_len(args);
}

MODAL_FUNCTION(long_wait, .batch_max_size = 4, .batch_wait_ms = 60000, .max_containers = 1,
               .scaledown_window = 60)
{
    return pid_len(args);
}

/* ---- helpers -------------------------------------------------------- */

static void marker_path(const char *name, char *out, size_t outsz)
{
    snprintf(out, outsz, "%s/%s", rt.dir, name);
    unlink(out);
}

static void wait_for_file(const char *path)
{
    for (double end = harness_now() + 20; access(path, F_OK) != 0; harness_sleep(0.01))
        assert_true(harness_now() < end);
}

/* The first two items of a list of ints (a third, if any, goes to *c). */
static void get_ints(const modal_value *r, int64_t *a, int64_t *b, int64_t *c)
{
    modal_error err;
    assert_int_equal(modal_value_type(r), MODAL_TYPE_LIST);
    assert_true(modal_value_len(r) == (c != NULL ? 3 : 2));
    assert_ok(modal_get_int(modal_list_get(r, 0), a, &err), err);
    assert_ok(modal_get_int(modal_list_get(r, 1), b, &err), err);
    if (c != NULL)
        assert_ok(modal_get_int(modal_list_get(r, 2), c, &err), err);
}

#define get_two(r, a, b) get_ints((r), (a), (b), NULL)

/* ---- tests ---------------------------------------------------------- */

/* One call of a running batch is cancelled: the runtime tells the
 * worker, which finishes the batch and stays, idle, for the next call
 * (the cancel arriving when it has nothing queued does not end it). */
static void test_cancel_in_a_batch_keeps_the_worker(void **state)
{
    char marker[PATH_MAX + 32];
    marker_path("stuck-one", marker, sizeof marker);
    modal_error err;
    modal_call *calls[2];
    for (int i = 0; i < 2; i++)
        assert_ok(modal_fn_spawn(&stuck, modal_args(modal_string(marker), modal_float(1),
                                                     modal_int(i)), &calls[i], &err), err);
    wait_for_file(marker);
    assert_ok(modal_call_cancel(calls[1], &err), err);
    modal_value *r = NULL;
    int64_t x = -1, len = -1, pid = 0, pid2 = 0;
    assert_ok(modal_call_get(calls[0], 30, &r, &err), err);
    get_ints(r, &x, &len, &pid);
    assert_true(x == 0 && len == 2);
    modal_value_free(r);
    assert_status(modal_call_get(calls[1], 5, &r, &err), MODAL_ECANCELLED, err);
    for (int i = 0; i < 2; i++)
        modal_call_free(calls[i]);
    harness_sleep(0.2); /* the worker takes the cancel after the batch */
    assert_ok(modal_fn_remote(&stuck, modal_args(modal_string(""), modal_float(0), modal_int(5)),
                              &r, &err), err);
    get_ints(r, &x, &len, &pid2);
    modal_value_free(r);
    assert_true(x == 5 && len == 1);
    assert_true(pid2 == pid);
}

/* Both calls of a running batch are cancelled: nothing needs the batch
 * any more, so its worker stops, and the next call (the function may
 * have one worker) runs at once rather than after the cancelled batch's
 * 20 s. */
static void test_cancel_every_call_frees_the_worker(void **state)
{
    char marker[PATH_MAX + 32];
    marker_path("stuck", marker, sizeof marker);
    modal_error err;
    modal_call *calls[2];
    for (int i = 0; i < 2; i++)
        assert_ok(modal_fn_spawn(&stuck, modal_args(modal_string(marker), modal_float(20),
                                                     modal_int(i)), &calls[i], &err), err);
    wait_for_file(marker);
    for (int i = 0; i < 2; i++)
        assert_ok(modal_call_cancel(calls[i], &err), err);
    for (int i = 0; i < 2; i++) {
        modal_value *r = NULL;
        assert_status(modal_call_get(calls[i], 5, &r, &err), MODAL_ECANCELLED, err);
        modal_call_free(calls[i]);
    }
    double t0 = harness_now();
    modal_value *r = NULL;
    assert_ok(modal_fn_remote(&stuck, modal_args(modal_string(""), modal_float(0), modal_int(7)),
                              &r, &err), err);
    int64_t x = -1, len = -1, pid = 0;
    get_ints(r, &x, &len, &pid);
    modal_value_free(r);
    assert_true(x == 7 && len == 1);
    assert_true(harness_now() - t0 < 10);
}

/* batch_max_size = 1: every call is a batch of one and runs without
 * waiting for batch_wait_ms (a full batch never waits). */
static void test_batch_of_one_never_waits(void **state)
{
    modal_error err;
    modal_value *r = NULL;
    assert_ok(modal_fn_remote(&one_at_a_time, modal_args(modal_int(0)), &r, &err), err);
    modal_value_free(r);
    enum { N = 3 };
    modal_call *calls[N];
    double t0 = harness_now();
    for (int i = 0; i < N; i++)
        assert_ok(modal_fn_spawn(&one_at_a_time, modal_args(modal_int(i)), &calls[i], &err), err);
    for (int i = 0; i < N; i++) {
        assert_ok(modal_call_get(calls[i], 30, &r, &err), err);
        int64_t pid = 0, len = -1;
        get_two(r, &pid, &len);
        assert_true(len == 1);
        modal_value_free(r);
        modal_call_free(calls[i]);
    }
    assert_true(harness_now() - t0 < 4.0);
}

/* batch_wait_ms = 0: a lone call runs at once. */
static void test_wait_zero_runs_at_once(void **state)
{
    modal_error err;
    modal_value *r = NULL;
    assert_ok(modal_fn_remote(&no_wait, modal_args(modal_int(0)), &r, &err), err);
    modal_value_free(r);
    double t0 = harness_now();
    for (int i = 0; i < 5; i++) {
        assert_ok(modal_fn_remote(&no_wait, modal_args(modal_int(i)), &r, &err), err);
        int64_t pid = 0, len = -1;
        get_two(r, &pid, &len);
        assert_true(len == 1);
        modal_value_free(r);
    }
    assert_true(harness_now() - t0 < 2.0);
}

/* A worker forked from a memory snapshot takes a batch like any other. */
static void test_snapshot_worker_takes_batches(void **state)
{
    enum { N = 4 };
    modal_error err;
    modal_call *calls[N];
    for (int i = 0; i < N; i++)
        assert_ok(modal_fn_spawn(&snap_batched, modal_args(modal_int(i)), &calls[i], &err), err);
    int64_t first = 0;
    for (int i = 0; i < N; i++) {
        modal_value *r = NULL;
        assert_ok(modal_call_get(calls[i], 30, &r, &err), err);
        int64_t pid = 0, len = -1;
        get_two(r, &pid, &len);
        assert_true(len == N);
        if (i == 0)
            first = pid;
        assert_true(pid == first);
        modal_value_free(r);
        modal_call_free(calls[i]);
    }
}

/* 12 calls at once over up to 3 workers, batches of 4: every call
 * answers, in full batches, on more than one worker, long before a
 * batch_wait_ms would pass for any of them. */
static void test_burst_over_workers(void **state)
{
    enum { N = 12 };
    modal_error err;
    modal_call *calls[N];
    double t0 = harness_now();
    for (int i = 0; i < N; i++)
        assert_ok(modal_fn_spawn(&burst, modal_args(modal_int(i)), &calls[i], &err), err);
    int64_t pids[N];
    int distinct = 0;
    for (int i = 0; i < N; i++) {
        modal_value *r = NULL;
        assert_ok(modal_call_get(calls[i], 30, &r, &err), err);
        int64_t len = -1;
        get_two(r, &pids[i], &len);
        assert_true(len == 4);
        bool seen = false;
        for (int j = 0; j < i; j++)
            seen = seen || pids[j] == pids[i];
        distinct += !seen;
        modal_value_free(r);
        modal_call_free(calls[i]);
    }
    assert_true(distinct >= 2);
    assert_true(harness_now() - t0 < 3.0);
}

/* While a batch of 3 runs on the only worker and a fourth call waits,
 * health shows 3 running, 1 queued, none sent ahead, one worker. */
static void test_health_during_a_batch(void **state)
{
    char marker[PATH_MAX + 32];
    marker_path("counted", marker, sizeof marker);
    modal_error err;
    modal_value *r = NULL;
    /* A warm worker, so the first three share a batch. */
    assert_ok(modal_fn_remote(&counted_run, modal_args(modal_string(""), modal_float(0),
                                                       modal_int(0)), &r, &err), err);
    modal_value_free(r);
    modal_call *calls[4];
    for (int i = 0; i < 3; i++)
        assert_ok(modal_fn_spawn(&counted_run, modal_args(modal_string(marker), modal_float(2),
                                                          modal_int(i)), &calls[i], &err), err);
    wait_for_file(marker);
    assert_ok(modal_fn_spawn(&counted_run, modal_args(modal_string(""), modal_float(0),
                                                      modal_int(3)), &calls[3], &err), err);
    cJSON *h = harness_health(&rt);
    const cJSON *e = harness_waiting_entry(h, "counted_run");
    assert_non_null(e);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(e, "queued")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(e, "sent_ahead")->valueint, 0);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(e, "running")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(e, "workers")->valueint, 1);
    cJSON_Delete(h);
    for (int i = 0; i < 4; i++) {
        assert_ok(modal_call_get(calls[i], 30, &r, &err), err);
        int64_t x = -1, len = -1, pid = 0;
        get_ints(r, &x, &len, &pid);
        assert_true(x == i);
        assert_true(len == (i < 3 ? 3 : 1));
        modal_value_free(r);
        modal_call_free(calls[i]);
    }
}

/* A starmap with return_errors over a batched function: inputs with one
 * argument fail alone, wherever they sit in their batch (also first),
 * and every other input gets its own sum, in input order. */
static void test_starmap_per_input_errors(void **state)
{
    enum { N = 20 };
    modal_error err;
    modal_value *in = modal_list();
    for (int i = 0; i < N; i++) {
        modal_value *a = i % 8 == 0 ? modal_args(modal_int(i)) : modal_args(modal_int(i), modal_int(i));
        assert_ok(modal_list_append(in, a, &err), err);
    }
    modal_map_options o = {.return_errors = true};
    modal_value *out = NULL;
    assert_ok(modal_fn_starmap(&pair_sum, in, &o, &out, &err), err);
    assert_int_equal(modal_value_len(out), N);
    for (int i = 0; i < N; i++) {
        const modal_value *r = modal_list_get(out, (size_t)i);
        if (i % 8 == 0) {
            const modal_value *st = modal_map_get(r, "status");
            assert_non_null(st);
            const char *s = NULL;
            assert_ok(modal_get_string(st, &s, NULL, &err), err);
            assert_string_equal(s, "EINVAL");
        } else {
            int64_t v = -1;
            if (modal_get_int(r, &v, &err) != MODAL_OK)
                fail_msg("input %d: %s", i, modal_value_type(r) == MODAL_TYPE_MAP ?
                         "an error entry" : "not an int");
            assert_true(v == 2 * i);
        }
    }
    modal_value_free(out);
}

/* A batch that times out on every attempt: each call is retried by its
 * policy and ends after its second attempt, saying so. */
static void test_timeout_retries_each_call(void **state)
{
    modal_error err;
    modal_call *calls[2];
    for (int i = 0; i < 2; i++)
        assert_ok(modal_fn_spawn(&too_slow, modal_args(modal_int(i)), &calls[i], &err), err);
    for (int i = 0; i < 2; i++) {
        modal_value *r = NULL;
        assert_status(modal_call_get(calls[i], 30, &r, &err), MODAL_ETIMEOUT, err);
        assert_message_contains(err, "too_slow: timed out after 1 s in a batch (attempt 2 of 2)");
        modal_call_free(calls[i]);
    }
}

/* Each call of a batch gets its own large result (these travel in
 * memfds), whole. */
static void test_large_results_of_a_batch(void **state)
{
    static const int64_t sizes[3] = {300000, 5, 200000};
    modal_error err;
    modal_call *calls[3];
    for (int i = 0; i < 3; i++)
        assert_ok(modal_fn_spawn(&big_results, modal_args(modal_int(sizes[i])), &calls[i], &err),
                  err);
    for (int i = 0; i < 3; i++) {
        modal_value *r = NULL;
        assert_ok(modal_call_get(calls[i], 30, &r, &err), err);
        const double *d = NULL;
        size_t n = 0;
        assert_ok(modal_get_array(r, MODAL_F64, (const void **)&d, &n, &err), err);
        assert_true(n == (size_t)sizes[i]);
        assert_true(d[0] == (double)sizes[i] && d[n - 1] == (double)sizes[i]);
        modal_value_free(r);
        modal_call_free(calls[i]);
    }
}

/* A worker whose call waits for its batch to fill is not idle: it does
 * not exit at its scale-down window (1 s) while the call waits 2.5 s, and
 * the call runs on it rather than on a worker started cold. */
static void test_waiting_batch_keeps_its_worker(void **state)
{
    enum { N = 4 };
    modal_error err;
    modal_call *calls[N];
    for (int i = 0; i < N; i++)
        assert_ok(modal_fn_spawn(&quick_scaledown, modal_args(modal_int(i)), &calls[i], &err),
                  err);
    int64_t warm = 0, len = -1;
    for (int i = 0; i < N; i++) {
        modal_value *r = NULL;
        assert_ok(modal_call_get(calls[i], 30, &r, &err), err);
        get_two(r, &warm, &len);
        modal_value_free(r);
        modal_call_free(calls[i]);
    }
    harness_sleep(0.5);
    modal_value *r = NULL;
    int64_t pid = 0;
    assert_ok(modal_fn_remote(&quick_scaledown, modal_args(modal_int(9)), &r, &err), err);
    get_two(r, &pid, &len);
    modal_value_free(r);
    assert_true(len == 1);
    assert_true(pid == warm);
}

/* The runtime stops promptly while a call waits for its batch to fill
 * (a 60 s batch_wait_ms) with an idle worker ready for it. */
static void test_shutdown_while_a_batch_waits(void **state)
{
    harness h;
    assert_int_equal(harness_start(&h), 0);
    modal_error err;
    modal_call *c = NULL;
    assert_ok(modal_fn_spawn(&long_wait, modal_args(modal_int(1)), &c, &err), err);
    for (double end = harness_now() + 20;; harness_sleep(0.05)) {
        if (harness_count_workers(h.dir, "") > 0)
            break;
        assert_true(harness_now() < end);
    }
    harness_sleep(0.3);
    double t0 = harness_now();
    assert_int_equal(harness_stop(&h), 0);
    assert_true(harness_now() - t0 < 5.0);
    modal_call_free(c);
    setenv("MODAL_RUNTIME_URL", rt.url, 1); /* back to the group's runtime */
    setenv("MODAL_TOKEN", rt.token, 1);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    setenv("MODAL_QUIET_LOGS", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_in_a_batch_keeps_the_worker),
        cmocka_unit_test(test_cancel_every_call_frees_the_worker),
        cmocka_unit_test(test_batch_of_one_never_waits),
        cmocka_unit_test(test_wait_zero_runs_at_once),
        cmocka_unit_test(test_snapshot_worker_takes_batches),
        cmocka_unit_test(test_burst_over_workers),
        cmocka_unit_test(test_health_during_a_batch),
        cmocka_unit_test(test_starmap_per_input_errors),
        cmocka_unit_test(test_timeout_retries_each_call),
        cmocka_unit_test(test_large_results_of_a_batch),
        cmocka_unit_test(test_waiting_batch_keeps_its_worker),
        cmocka_unit_test(test_shutdown_while_a_batch_waits),
    };
    return cmocka_run_group_tests_name("batching_edges", tests, harness_group_setup,
                                       harness_group_teardown) != 0;
}
