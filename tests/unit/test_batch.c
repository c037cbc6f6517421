/*
 * test_batch.c: the batching helpers of lib/batch.c. modal__batch_columns
 * turns the calls' argument lists into one list per position, moving the
 * items, and refuses (changing nothing) calls with different counts;
 * modal__batch_result_check accepts a list of exactly one result per call
 * and names what is wrong otherwise; modal__batched reads the option.
 */
#include "testutil.h"

MODAL_APP("unit-batch");

MODAL_FUNCTION(batched_fn, .batch_max_size = 4)
{
    return modal_value_copy(modal_arg(args, 0));
}

MODAL_FUNCTION(plain_fn)
{
    return modal_null();
}

static void test_columns_move_items_by_position(void **state)
{
    modal_error err;
    modal_value *calls[3];
    for (int i = 0; i < 3; i++)
        calls[i] = modal_args(modal_int(i), modal_string(i == 1 ? "b" : "a"));
    modal_value *cols = NULL;
    assert_int_equal(modal__batch_columns(calls, 3, &cols, &err), MODAL_OK);
    assert_int_equal(modal_value_len(cols), 2);
    const modal_value *xs = modal_list_get(cols, 0), *ss = modal_list_get(cols, 1);
    assert_int_equal(modal_value_len(xs), 3);
    assert_int_equal(modal_value_len(ss), 3);
    for (int i = 0; i < 3; i++) {
        int64_t x = -1;
        const char *s = NULL;
        assert_int_equal(modal_get_int(modal_list_get(xs, (size_t)i), &x, &err), MODAL_OK);
        assert_true(x == i);
        assert_int_equal(modal_get_string(modal_list_get(ss, (size_t)i), &s, NULL, &err),
                         MODAL_OK);
        assert_string_equal(s, i == 1 ? "b" : "a");
        /* Moved, not copied: the call's slot is empty now. */
        assert_null(modal_list_get(calls[i], 0));
        modal_value_free(calls[i]);
    }
    modal_value_free(cols);
}

static void test_columns_of_calls_without_arguments(void **state)
{
    modal_error err;
    modal_value *calls[2] = {modal_list(), modal_list()};
    modal_value *cols = NULL;
    assert_int_equal(modal__batch_columns(calls, 2, &cols, &err), MODAL_OK);
    assert_int_equal(modal_value_type(cols), MODAL_TYPE_LIST);
    assert_int_equal(modal_value_len(cols), 0);
    modal_value_free(cols);
    modal_value_free(calls[0]);
    modal_value_free(calls[1]);
}

static void test_columns_refuse_different_counts(void **state)
{
    modal_error err;
    modal_value *calls[3] = {modal_args(modal_int(1), modal_int(2)),
                             modal_args(modal_int(3), modal_int(4)), modal_args(modal_int(5))};
    modal_value *cols = modal_null();
    modal_value *before = cols;
    assert_int_equal(modal__batch_columns(calls, 3, &cols, &err), MODAL_EINVAL);
    modal_value_free(before);
    assert_null(cols);
    assert_message_contains(err, "call 2 has 1 argument, call 0 has 2");
    /* Nothing moved. */
    for (int i = 0; i < 3; i++) {
        assert_non_null(modal_list_get(calls[i], 0));
        modal_value_free(calls[i]);
    }
}

static void test_result_check(void **state)
{
    modal_error err;
    modal_value *r = modal_args(modal_int(1), modal_int(2), modal_int(3));
    assert_int_equal(modal__batch_result_check(&batched_fn, r, 3, &err), MODAL_OK);
    assert_int_equal(modal__batch_result_check(&batched_fn, r, 4, &err), MODAL_EFUNC);
    assert_message_contains(err, "batched_fn: batched function returned a list of 3 results "
                                 "for a batch of 4 calls");
    assert_int_equal(modal__batch_result_check(&batched_fn, r, 1, &err), MODAL_EFUNC);
    assert_message_contains(err, "a list of 3 results for a batch of 1 call");
    modal_value_free(r);
    modal_value *i = modal_int(7);
    assert_int_equal(modal__batch_result_check(&batched_fn, i, 2, &err), MODAL_EFUNC);
    assert_message_contains(err, "batched_fn: batched function returned a value of type int, not a list of 2 "
                                 "results (one per call of the batch)");
    modal_value_free(i);
}

static void test_batched_reads_the_option(void **state)
{
    assert_true(modal__batched(&batched_fn));
    assert_false(modal__batched(&plain_fn));
    assert_false(modal__batched(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_columns_move_items_by_position),
        cmocka_unit_test(test_columns_of_calls_without_arguments),
        cmocka_unit_test(test_columns_refuse_different_counts),
        cmocka_unit_test(test_result_check),
        cmocka_unit_test(test_batched_reads_the_option),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
