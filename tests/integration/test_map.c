/*
 * test_map.c: modal_fn_map and modal_fn_starmap against a real runtime:
 * 10,000 inputs ordered and unordered, starmap, per-input errors with
 * return_errors, the first failure without it, the on_result callback
 * (once per input, and stopping the map), and an empty map.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

MODAL_APP("itest-map");

#define N_INPUTS 10000

static int64_t f(int64_t i)
{
    return i * i + 7;
}

MODAL_FUNCTION(square_plus, .timeout = 60)
{
    return modal_int(f(modal_arg_int(args, 0)));
}

/* Takes a few milliseconds on some inputs so results finish out of order. */
MODAL_FUNCTION(jittery, .timeout = 60)
{
    int64_t i = modal_arg_int(args, 0);
    if (i % 3 == 0)
        harness_sleep(0.002 * (double)(i % 5));
    return modal_int(f(i));
}

MODAL_FUNCTION(mul_add, .timeout = 60)
{
    int64_t a = modal_arg_int(args, 0), b = modal_arg_int(args, 1);
    double c = modal_arg_float(args, 2);
    return modal_float((double)(a * b) + c);
}

/* Fails on every input i with i % 7 == 3. */
MODAL_FUNCTION(unlucky, .timeout = 60)
{
    int64_t i = modal_arg_int(args, 0);
    if (i % 7 == 3)
        return modal_ctx_fail(ctx, "input %lld is unlucky", (long long)i);
    return modal_int(f(i));
}

static modal_value *int_inputs(size_t n)
{
    modal_value *l = modal_list();
    for (size_t i = 0; i < n && l != NULL; i++)
        if (modal_list_append(l, modal_int((int64_t)i), NULL) != MODAL_OK) {
            modal_value_free(l);
            return NULL;
        }
    return l;
}

/* What the on_result callbacks record. */
typedef struct tally {
    size_t n;             /* inputs */
    unsigned *seen;       /* times each index was delivered */
    size_t calls;         /* callbacks so far */
    size_t out_of_order;  /* deliveries with index != previous + 1 */
    size_t last;          /* previous index + 1 */
    size_t wrong_values;  /* OK items whose value is not f(index) */
    size_t errors;        /* items with a non-OK status */
    size_t stop_after;    /* return non-zero at this many calls (0: never) */
} tally;

static int record(const modal_map_item *item, void *user)
{
    tally *t = user;
    t->calls++;
    if (item->index < t->n)
        t->seen[item->index]++;
    if (item->index != t->last)
        t->out_of_order++;
    t->last = item->index + 1;
    if (item->status == MODAL_OK) {
        int64_t v = 0;
        if (modal_get_int(item->value, &v, NULL) != MODAL_OK || v != f((int64_t)item->index))
            t->wrong_values++;
    } else {
        t->errors++;
    }
    return t->stop_after != 0 && t->calls >= t->stop_after;
}

static void tally_init(tally *t, size_t n)
{
    memset(t, 0, sizeof *t);
    t->n = n;
    t->seen = calloc(n ? n : 1, sizeof *t->seen);
    assert_non_null(t->seen);
}

/* Every index delivered exactly once. */
static void assert_each_once(const tally *t)
{
    size_t missing = 0, dup = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (t->seen[i] == 0 && missing++ == 0)
            print_error("index %zu never delivered\n", i);
        if (t->seen[i] > 1 && dup++ == 0)
            print_error("index %zu delivered %u times\n", i, t->seen[i]);
    }
    assert_int_equal(missing, 0);
    assert_int_equal(dup, 0);
    assert_int_equal(t->calls, t->n);
}

static void test_map_ordered(void **state)
{
    modal_value *results = NULL;
    modal_error err;
    tally t;
    tally_init(&t, N_INPUTS);
    modal_map_options opts = {.on_result = record, .user = &t};
    double t0 = harness_now();
    assert_ok(modal_fn_map(&square_plus, int_inputs(N_INPUTS), &opts, &results, &err), err);
    print_message("map of %d inputs in %.2f s\n", N_INPUTS, harness_now() - t0);
    assert_int_equal(modal_value_len(results), N_INPUTS);
    for (size_t i = 0; i < N_INPUTS; i++) {
        int64_t v = -1;
        assert_ok(modal_get_int(modal_list_get(results, i), &v, &err), err);
        if (v != f((int64_t)i))
            print_error("results[%zu] = %lld, expected %lld\n", i, (long long)v,
                        (long long)f((int64_t)i));
        assert_int_equal(v, f((int64_t)i));
    }
    /* The progress callback ran once per input, in input order. */
    assert_each_once(&t);
    assert_int_equal(t.out_of_order, 0);
    assert_int_equal(t.wrong_values, 0);
    assert_int_equal(t.errors, 0);
    modal_value_free(results);
    free(t.seen);
}

static void test_map_ordered_without_callback(void **state)
{
    modal_value *results = NULL;
    modal_error err;
    /* Small batches and few in flight exercise the flow control. */
    modal_map_options opts = {.batch_size = 7, .max_in_flight = 13};
    assert_ok(modal_fn_map(&jittery, int_inputs(500), &opts, &results, &err), err);
    assert_int_equal(modal_value_len(results), 500);
    for (size_t i = 0; i < 500; i++) {
        int64_t v = -1;
        assert_ok(modal_get_int(modal_list_get(results, i), &v, &err), err);
        assert_int_equal(v, f((int64_t)i));
    }
    modal_value_free(results);
    /* NULL opts and NULL results are accepted. */
    assert_ok(modal_fn_map(&square_plus, int_inputs(10), NULL, NULL, &err), err);
}

static void test_map_unordered(void **state)
{
    modal_error err;
    tally t;
    tally_init(&t, N_INPUTS);
    modal_map_options opts = {.unordered = true, .on_result = record, .user = &t};
    assert_ok(modal_fn_map(&jittery, int_inputs(N_INPUTS), &opts, NULL, &err), err);
    assert_each_once(&t);
    assert_int_equal(t.wrong_values, 0);
    assert_int_equal(t.errors, 0);
    print_message("unordered map: %zu of %d deliveries out of input order\n", t.out_of_order,
                  N_INPUTS);
    free(t.seen);
}

static void test_starmap(void **state)
{
    modal_value *inputs = modal_list(), *results = NULL;
    modal_error err;
    const size_t n = 1000;
    for (size_t i = 0; i < n; i++)
        assert_ok(modal_list_append(inputs,
                                    modal_args(modal_int((int64_t)i), modal_int(3),
                                               modal_float(0.5)),
                                    &err),
                  err);
    assert_ok(modal_fn_starmap(&mul_add, inputs, NULL, &results, &err), err);
    assert_int_equal(modal_value_len(results), n);
    for (size_t i = 0; i < n; i++) {
        double v = -1;
        assert_ok(modal_get_float(modal_list_get(results, i), &v, &err), err);
        assert_true(v == (double)(i * 3) + 0.5);
    }
    modal_value_free(results);
}

static void test_starmap_rejects_non_list_input(void **state)
{
    modal_value *results = NULL;
    modal_error err;
    /* Each starmap input must be an argument list. */
    modal_status st = modal_fn_starmap(&mul_add, modal_args(modal_int(1), modal_int(2)), NULL,
                                       &results, &err);
    assert_int_not_equal(st, MODAL_OK);
    assert_null(results);
    print_message("starmap over [1, 2]: %s: %s\n", modal_status_name(st), err.message);
}

static void test_map_return_errors(void **state)
{
    modal_value *results = NULL;
    modal_error err;
    const size_t n = 700;
    tally t;
    tally_init(&t, n);
    modal_map_options opts = {.return_errors = true, .on_result = record, .user = &t};
    assert_ok(modal_fn_map(&unlucky, int_inputs(n), &opts, &results, &err), err);
    assert_int_equal(modal_value_len(results), n);
    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
        const modal_value *r = modal_list_get(results, i);
        if (i % 7 == 3) {
            failed++;
            assert_int_equal(modal_value_type(r), MODAL_TYPE_MAP);
            const char *msg = NULL, *status = NULL;
            assert_ok(modal_get_string(modal_map_get(r, "error"), &msg, NULL, &err), err);
            assert_ok(modal_get_string(modal_map_get(r, "status"), &status, NULL, &err), err);
            char want[64];
            snprintf(want, sizeof want, "input %zu is unlucky", i);
            assert_contains(msg, want);
            assert_string_equal(status, "EFUNC");
        } else {
            int64_t v = -1;
            assert_ok(modal_get_int(r, &v, &err), err);
            assert_int_equal(v, f((int64_t)i));
        }
    }
    /* The callback saw the failures too, with their status and message. */
    assert_each_once(&t);
    assert_int_equal(t.errors, failed);
    assert_int_equal(t.wrong_values, 0);
    modal_value_free(results);
    free(t.seen);
}

static int check_failed_item(const modal_map_item *item, void *user)
{
    size_t *bad = user;
    if (item->status != MODAL_OK &&
        (item->status != MODAL_EFUNC || item->message == NULL ||
         strstr(item->message, "is unlucky") == NULL))
        (*bad)++;
    return 0;
}

static void test_map_item_message(void **state)
{
    modal_error err;
    size_t bad = 0;
    modal_map_options opts = {.return_errors = true, .on_result = check_failed_item, .user = &bad};
    assert_ok(modal_fn_map(&unlucky, int_inputs(50), &opts, NULL, &err), err);
    assert_int_equal(bad, 0);
}

static void test_map_stops_at_first_failure(void **state)
{
    modal_value *results = NULL;
    modal_error err;
    assert_status(modal_fn_map(&unlucky, int_inputs(2000), NULL, &results, &err), MODAL_EFUNC, err);
    assert_null(results);
    assert_message_contains(err, "is unlucky");

    /* Unordered too. */
    modal_map_options opts = {.unordered = true};
    assert_status(modal_fn_map(&unlucky, int_inputs(2000), &opts, &results, &err), MODAL_EFUNC,
                  err);
    assert_null(results);
    assert_message_contains(err, "is unlucky");

    /* The runtime still serves maps afterwards. */
    assert_ok(modal_fn_map(&square_plus, int_inputs(100), NULL, &results, &err), err);
    assert_int_equal(modal_value_len(results), 100);
    modal_value_free(results);
}

static void test_map_callback_stops(void **state)
{
    modal_value *results = NULL;
    modal_error err;
    tally t;
    tally_init(&t, 5000);
    t.stop_after = 10;
    modal_map_options opts = {.on_result = record, .user = &t};
    assert_status(modal_fn_map(&square_plus, int_inputs(5000), &opts, &results, &err),
                  MODAL_ECANCELLED, err);
    assert_null(results);
    assert_int_equal(t.calls, 10); /* no callback after the one that said stop */
    free(t.seen);
}

static void test_map_empty(void **state)
{
    modal_value *results = NULL;
    modal_error err;
    tally t;
    tally_init(&t, 0);
    modal_map_options opts = {.on_result = record, .user = &t};
    assert_ok(modal_fn_map(&square_plus, modal_list(), &opts, &results, &err), err);
    assert_int_equal(modal_value_type(results), MODAL_TYPE_LIST);
    assert_int_equal(modal_value_len(results), 0);
    assert_int_equal(t.calls, 0);
    modal_value_free(results);
    free(t.seen);
}

static void test_map_bad_inputs(void **state)
{
    modal_value *results = NULL;
    modal_error err;
    assert_status(modal_fn_map(&square_plus, NULL, NULL, &results, &err), MODAL_ENOMEM, err);
    assert_status(modal_fn_map(&square_plus, modal_int(3), NULL, &results, &err), MODAL_EINVAL,
                  err);
    assert_null(results);
}

/* Runs last: a clean stop ends every worker of the runtime. */
static void test_stop_leaves_no_workers(void **state)
{
    char dir[PATH_MAX], sha[65];
    snprintf(dir, sizeof dir, "%s", rt.dir);
    assert_int_equal(harness_self_sha256(sha), 0);
    assert_true(harness_count_workers(dir, sha) > 0); /* the maps left warm ones */
    int ws = harness_stop(&rt);
    if (!(ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0))
        print_error("runtime wait status after SIGTERM: 0x%x\n", ws);
    assert_true(ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    size_t left = harness_wait_no_workers(dir, sha, 15);
    if (left != 0)
        print_error("%zu worker(s) still running 15 s after the runtime stopped\n", left);
    assert_int_equal(left, 0);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_ordered),
        cmocka_unit_test(test_map_ordered_without_callback),
        cmocka_unit_test(test_map_unordered),
        cmocka_unit_test(test_starmap),
        cmocka_unit_test(test_starmap_rejects_non_list_input),
        cmocka_unit_test(test_map_return_errors),
        cmocka_unit_test(test_map_item_message),
        cmocka_unit_test(test_map_stops_at_first_failure),
        cmocka_unit_test(test_map_callback_stops),
        cmocka_unit_test(test_map_empty),
        cmocka_unit_test(test_map_bad_inputs),
        cmocka_unit_test(test_stop_leaves_no_workers), /* last: stops rt */
    };
    return cmocka_run_group_tests_name("map", tests, harness_group_setup, harness_group_teardown) != 0;
}
