/*
 * test_pipeline.c: how many calls a busy worker holds (running or sent
 * ahead) against a real runtime. A worker of a pool whose calls are short
 * holds more of them, so a map of short inputs moves in large messages;
 * a pool of slow calls keeps the pipeline of 16, so no call waits behind a
 * running one longer than that. A batch of map inputs with a bad frame
 * (its frames are parsed before the runtime's lock is taken) keeps the
 * frames before the bad one and names it.
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
        cJSON *h = harness_health(&rt);
        const cJSON *e = harness_waiting_entry(h, "slow_one");
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

/* The spec id of fn's pool, from GET /v1/health. */
static void spec_of(const char *fn, char id[65])
{
    cJSON *h = harness_health(&rt);
    id[0] = '\0';
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(h, "pools"))
    {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(p, "fn");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "spec");
        if (cJSON_IsString(f) && strcmp(f->valuestring, fn) == 0 && cJSON_IsString(s))
            snprintf(id, 65, "%s", s->valuestring);
    }
    cJSON_Delete(h);
    assert_int_equal(strlen(id), 64);
}

/* One map input frame: {"v":1,"index":i} with args [x]; no index when
 * i < 0. */
static modal__buf *input_frame(long long i, int64_t x)
{
    cJSON *env = cJSON_CreateObject();
    cJSON_AddNumberToObject(env, "v", 1);
    if (i >= 0)
        cJSON_AddNumberToObject(env, "index", (double)i);
    modal_value *args = modal_args(modal_int(x));
    void *frame = NULL;
    size_t len = 0;
    modal_error err;
    assert_ok(harness_frame(env, "args", args, &frame, &len, &err), err);
    modal_value_free(args);
    modal__buf *b = modal__buf_new(len);
    assert_non_null(b);
    memcpy(b->base, frame, len);
    free(frame);
    return b;
}

/* Inputs 0, (no index), 2 in one batch: the answer names frame 1, input 0
 * runs and comes back, input 2 is never taken. */
static void test_bad_frame_keeps_those_before_it(void **state)
{
    modal_error err;
    /* Registers quick_one's spec, so its pool (and id) exist. */
    modal_value *out = NULL;
    assert_ok(modal_fn_map(&quick_one, modal_args(modal_int(1)), NULL, &out, &err), err);
    modal_value_free(out);
    char spec[65];
    spec_of("quick_one", spec);

    void *mf = NULL;
    size_t mlen = 0;
    assert_ok(harness_frame(modal__call_envelope(spec, NULL), "args", NULL, &mf, &mlen, &err),
              err);
    long status = 0;
    char *resp = NULL;
    harness_http(&rt, "POST", MODAL__PATH_MAPS, rt.token, mf, mlen, &status, &resp, NULL);
    free(mf);
    assert_int_equal(status, 201);
    cJSON *j = cJSON_Parse(resp);
    free(resp);
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(j, "map_id");
    assert_true(cJSON_IsString(jid));
    char map_id[64];
    snprintf(map_id, sizeof map_id, "%s", jid->valuestring);
    cJSON_Delete(j);

    modal__buf *frames[3] = {input_frame(0, 10), input_frame(-1, 11), input_frame(2, 12)};
    modal__bundle_part parts[3];
    for (int i = 0; i < 3; i++)
        parts[i] = (modal__bundle_part){frames[i]->base, frames[i]->len};
    modal__buf *bundle = NULL;
    assert_ok(modal__bundle_build(parts, 3, &bundle, &err), err);
    char path[160];
    snprintf(path, sizeof path, MODAL__PATH_MAPS "/%s" MODAL__PATH_INPUTS, map_id);
    harness_http_url(rt.url, "POST", path, rt.token, bundle->base, bundle->len,
                     MODAL__CT_BUNDLE, &status, &resp, NULL);
    for (int i = 0; i < 3; i++)
        modal__buf_unref(frames[i]);
    modal__buf_unref(bundle);
    assert_int_equal(status, 400);
    assert_contains(resp, "map input frame 1: needs an integer \\\"index\\\"");
    free(resp);

    /* Long enough for input 2 to have run had it been taken. */
    harness_sleep(0.5);
    snprintf(path, sizeof path, MODAL__PATH_MAPS "/%s" MODAL__PATH_RESULTS "?after=0&wait=10",
             map_id);
    size_t rlen = 0;
    harness_http(&rt, "GET", path, rt.token, NULL, 0, &status, &resp, &rlen);
    assert_int_equal(status, 200);
    modal__buf *body = modal__buf_new(rlen);
    assert_non_null(body);
    memcpy(body->base, resp, rlen);
    free(resp);
    modal__bundle_part *got = NULL;
    size_t n = 0;
    assert_ok(modal__bundle_parse(body, &got, &n, &err), err);
    assert_int_equal(n, 1); /* input 0's result, and no other */
    modal__buf *view = modal__buf_view(body, (size_t)((const uint8_t *)got[0].p - body->base),
                                       got[0].len);
    modal__dec dec;
    assert_ok(modal__dec_open(view, 1, &dec, &err), err);
    const cJSON *ji = cJSON_GetObjectItemCaseSensitive(dec.env, "index");
    assert_true(cJSON_IsNumber(ji) && ji->valuedouble == 0);
    modal_value *v = NULL;
    char msg[MODAL_ERROR_MESSAGE_SIZE];
    assert_int_equal(modal__result_read(&dec, &v, msg, sizeof msg), MODAL_OK);
    int64_t x = -1;
    assert_ok(modal_get_int(v, &x, &err), err);
    assert_true(x == 11);
    modal_value_free(v);
    modal__dec_close(&dec);
    modal__buf_unref(view);
    free(got);
    modal__buf_unref(body);

    snprintf(path, sizeof path, MODAL__PATH_MAPS "/%s", map_id);
    harness_http(&rt, "DELETE", path, rt.token, NULL, 0, &status, NULL, NULL);
    assert_int_equal(status, 200);
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
        cmocka_unit_test(test_bad_frame_keeps_those_before_it),
    };
    return cmocka_run_group_tests_name("pipeline", tests, setup, harness_group_teardown) != 0;
}
