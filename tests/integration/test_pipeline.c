/*
 * test_pipeline.c: how many calls a busy worker holds (running or sent
 * ahead) against a real runtime. A worker of a pool whose calls are short
 * holds more of them, so a map of short inputs moves in large messages;
 * a pool of slow calls keeps the pipeline of 16, so no call waits behind a
 * running one longer than that.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

MODAL_APP("itest-pipeline");

/* One worker at most, so every call after the first waits in the queue or
 * sent ahead to it. */
MODAL_FUNCTION(slow_one, .max_containers = 1, .scaledown_window = 2)
{
    harness_sleep(0.05);
    return modal_int(modal_arg_int(args, 0) * 2);
}

MODAL_FUNCTION(quick_one, .max_containers = 1, .scaledown_window = 2)
{
    return modal_int(modal_arg_int(args, 0) + 1);
}

static cJSON *health(void)
{
    long status = 0;
    char *body = NULL;
    harness_http(&rt, "GET", "/v1/health", rt.token, NULL, 0, &status, &body, NULL);
    assert_int_equal(status, 200);
    cJSON *j = cJSON_Parse(body);
    free(body);
    assert_non_null(j);
    return j;
}

/* The health entry of fn's pool among the waiting ones, or NULL. */
static const cJSON *waiting_entry(const cJSON *h, const char *fn)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(
                              cJSON_GetObjectItemCaseSensitive(h, "queue"), "waiting"))
    {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "fn");
        if (cJSON_IsString(f) && strcmp(f->valuestring, fn) == 0)
            return e;
    }
    return NULL;
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

/* 40 calls of a 50 ms function on one worker: while they run, the worker
 * never holds more than 16 (one running, 15 sent ahead); the rest wait in
 * the queue, where another worker could take them. */
static void test_slow_calls_keep_a_short_pipeline(void **state)
{
    enum { N = 40 };
    modal_error err;
    modal_call *calls[N];
    for (int i = 0; i < N; i++)
        assert_ok(modal_fn_spawn(&slow_one, modal_args(modal_int(i)), &calls[i], &err), err);
    int seen = 0;
    double most_ahead = 0;
    for (double end = harness_now() + 20; harness_now() < end; harness_sleep(0.02)) {
        cJSON *h = health();
        const cJSON *e = waiting_entry(h, "slow_one");
        if (e == NULL && seen > 0) {
            cJSON_Delete(h);
            break; /* nothing waits any more */
        }
        if (e != NULL && num(e, "running") == 1) {
            seen++;
            if (num(e, "sent_ahead") > most_ahead)
                most_ahead = num(e, "sent_ahead");
            assert_true(num(e, "sent_ahead") <= 15);
        }
        cJSON_Delete(h);
    }
    assert_true(seen >= 5);       /* looked while they ran */
    assert_true(most_ahead >= 1); /* and the worker did hold calls ahead */
    for (int i = 0; i < N; i++) {
        modal_value *r = NULL;
        assert_ok(modal_call_get(calls[i], 30, &r, &err), err);
        int64_t v = -1;
        assert_ok(modal_get_int(r, &v, &err), err);
        assert_true(v == 2 * i);
        modal_value_free(r);
        modal_call_free(calls[i]);
    }
}

/* A map of short inputs on one worker (which then holds up to 64 at a
 * time): every result comes back once, in order, after the pool has
 * measured its calls as short. */
static void test_short_calls_on_one_worker_in_order(void **state)
{
    modal_error err;
    for (int round = 0; round < 2; round++) {
        size_t n = round == 0 ? 200 : 20000;
        modal_value *in = modal_list();
        for (size_t i = 0; i < n; i++)
            assert_ok(modal_list_append(in, modal_int((int64_t)i), &err), err);
        modal_value *out = NULL;
        assert_ok(modal_fn_map(&quick_one, in, NULL, &out, &err), err);
        assert_int_equal(modal_value_len(out), n);
        for (size_t i = 0; i < n; i++) {
            int64_t v = -1;
            assert_ok(modal_get_int(modal_list_get(out, i), &v, &err), err);
            assert_true(v == (int64_t)i + 1);
        }
        modal_value_free(out);
    }
}

static int setup(void **state)
{
    setenv("MODAL_QUIET_LOGS", "1", 1);
    return harness_group_setup(state);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slow_calls_keep_a_short_pipeline),
        cmocka_unit_test(test_short_calls_on_one_worker_in_order),
    };
    return cmocka_run_group_tests_name("pipeline", tests, setup, harness_group_teardown) != 0;
}
