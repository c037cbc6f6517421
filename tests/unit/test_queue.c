/*
 * test_queue.c: the runtime's in-process call queue (runtime/queue.c),
 * through its interface only: order, batches, the bound, acknowledgement,
 * requeue at the front in order, cancel, bulk removal and the delayed set.
 */
#include "testutil.h"

#include "../../runtime/queue.c"

rt_runtime rt;

static rt_call calls[8];
static rt_pool pool, other;

static int setup(void **state)
{
    memset(&rt, 0, sizeof rt);
    memset(&pool, 0, sizeof pool);
    memset(&other, 0, sizeof other);
    memset(calls, 0, sizeof calls);
    for (int i = 0; i < 8; i++) {
        snprintf(calls[i].id, sizeof calls[i].id, "c%d", i);
        calls[i].pool = &pool;
        calls[i].args_fd = -1;
        calls[i].result_fd = -1;
    }
    rt_queue_max = RT_QUEUE_MAX_DEFAULT;
    return 0;
}

/* Take everything queued on p; returns the ids concatenated. */
static const char *drain_ids(rt_pool *p)
{
    static char ids[64];
    rt_call *out[8];
    size_t n = rt_queue_take(p, out, 8);
    ids[0] = '\0';
    for (size_t i = 0; i < n; i++)
        strcat(ids, out[i]->id);
    return ids;
}

static void test_fifo_and_batches(void **state)
{
    for (int i = 0; i < 5; i++)
        assert_int_equal(rt_queue_put(&pool, &calls[i], RT_QUEUE_NEW), 0);
    assert_int_equal(rt_queue_length(&pool), 5);
    assert_ptr_equal(rt_queue_peek(&pool), &calls[0]);
    assert_int_equal(calls[0].state, RT_QUEUED);
    rt_call *out[8];
    assert_int_equal(rt_queue_take(&pool, out, 2), 2);
    assert_ptr_equal(out[0], &calls[0]);
    assert_ptr_equal(out[1], &calls[1]);
    assert_int_equal(rt_queue_length(&pool), 3);
    assert_int_equal(rt_queue_taken(&pool), 2);
    rt_queue_ack(out[0]);
    rt_queue_ack(out[1]);
    assert_int_equal(rt_queue_taken(&pool), 0);
    assert_string_equal(drain_ids(&pool), "c2c3c4");
    assert_null(rt_queue_peek(&pool));
    assert_int_equal(rt_queue_take(&pool, out, 4), 0);
}

/* A call whose arguments are in a memfd travels alone. */
static void test_memfd_call_alone(void **state)
{
    calls[1].args_fd = 99;
    for (int i = 0; i < 4; i++)
        rt_queue_put(&pool, &calls[i], RT_QUEUE_NEW);
    rt_call *out[8];
    assert_int_equal(rt_queue_take(&pool, out, 8), 1); /* c0, then c1 would join */
    assert_int_equal(rt_queue_take(&pool, out, 8), 1); /* c1 alone */
    assert_ptr_equal(out[0], &calls[1]);
    assert_int_equal(rt_queue_take(&pool, out, 8), 2);
    calls[1].args_fd = -1;
}

/* New calls are refused beyond the bound; retries and calls given back
 * are always taken. */
static void test_bound(void **state)
{
    rt_queue_max = 2;
    assert_int_equal(rt_queue_put(&pool, &calls[0], RT_QUEUE_NEW), 0);
    assert_int_equal(rt_queue_put(&pool, &calls[1], RT_QUEUE_NEW), 0);
    assert_int_equal(rt_queue_put(&pool, &calls[2], RT_QUEUE_NEW), -1);
    assert_int_equal(rt_queue_length(&pool), 2);
    assert_int_equal(rt_queue_put(&pool, &calls[3], RT_QUEUE_RETRY), 0);
    assert_int_equal(rt_queue_put(&pool, &calls[4], RT_QUEUE_FRONT), 0);
    assert_string_equal(drain_ids(&pool), "c4c0c1c3");
}

static bool keep_even(rt_call *c)
{
    return (c->id[1] - '0') % 2 == 0;
}

static char dropped[64];
static void note_drop(rt_call *c)
{
    strcat(dropped, c->id);
}

/* Calls given back go to the front in their own order; those not kept
 * are acknowledged and handed over. */
static void test_requeue_in_order(void **state)
{
    for (int i = 0; i < 6; i++)
        rt_queue_put(&pool, &calls[i], RT_QUEUE_NEW);
    rt_call *out[8];
    assert_int_equal(rt_queue_take(&pool, out, 5), 5);
    for (int i = 0; i < 4; i++)
        out[i]->qnext = out[i + 1];
    out[4]->qnext = NULL;
    rt_queue_ack(out[0]); /* the running one ended */
    dropped[0] = '\0';
    rt_queue_requeue(&pool, out[1], keep_even, note_drop);
    assert_string_equal(dropped, "c3c1");
    assert_int_equal(rt_queue_taken(&pool), 0);
    assert_string_equal(drain_ids(&pool), "c2c4c5");
}

static bool in_other(const rt_call *c, const void *arg)
{
    return c->pool == arg;
}

static void test_cancel_and_remove_if(void **state)
{
    for (int i = 0; i < 6; i++) {
        if (i % 2)
            calls[i].pool = &other; /* the test's match: "in other" */
        rt_queue_put(&pool, &calls[i], RT_QUEUE_NEW);
    }
    rt_queue_cancel(&calls[2]);
    assert_int_equal(rt_queue_length(&pool), 5);
    rt_call *gone = rt_queue_remove_if(&pool, in_other, &other);
    char ids[64] = "";
    for (rt_call *c = gone; c; c = c->qnext)
        strcat(ids, c->id);
    assert_string_equal(ids, "c1c3c5");
    assert_int_equal(rt_queue_length(&pool), 2);
    assert_string_equal(drain_ids(&pool), "c0c4");
    /* The tail moved with the removals: a new call lands last. */
    rt_queue_put(&pool, &calls[6], RT_QUEUE_NEW);
    rt_queue_put(&pool, &calls[7], RT_QUEUE_NEW);
    assert_string_equal(drain_ids(&pool), "c6c7");
}

static void test_delayed(void **state)
{
    assert_false(rt_queue_any_delayed());
    rt_queue_delay(&calls[0], 10);
    rt_queue_delay(&calls[1], 5);
    rt_queue_delay(&calls[2], 20);
    assert_int_equal(calls[0].state, RT_DELAYED);
    assert_true(rt_queue_any_delayed());
    assert_int_equal(rt_queue_delayed(&pool), 3);
    assert_true(rt_queue_next_due(100) == 5);
    assert_true(rt_queue_next_due(1) == 1);
    rt_queue_cancel(&calls[2]);
    assert_int_equal(rt_queue_delayed(&pool), 2);
    assert_null(rt_queue_due(4));
    rt_call *due = rt_queue_due(10);
    char ids[64] = "";
    for (rt_call *c = due; c; c = c->qnext)
        strcat(ids, c->id);
    assert_true(strcmp(ids, "c0c1") == 0 || strcmp(ids, "c1c0") == 0);
    assert_false(rt_queue_any_delayed());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_fifo_and_batches, setup),
        cmocka_unit_test_setup(test_memfd_call_alone, setup),
        cmocka_unit_test_setup(test_bound, setup),
        cmocka_unit_test_setup(test_requeue_in_order, setup),
        cmocka_unit_test_setup(test_cancel_and_remove_if, setup),
        cmocka_unit_test_setup(test_delayed, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
