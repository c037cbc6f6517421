/*
 * test_null.c: every public function of modal.h called with NULL in each
 * pointer parameter it cannot accept. Status-returning functions answer
 * MODAL_EINVAL (or the code their declaration documents) with a message
 * naming the function and the parameter; argument lists they take are
 * freed all the same (the ASan and valgrind builds catch a leak); nothing
 * crashes. Parameters documented as optional are exercised too, to prove
 * NULL is accepted there.
 */
#include "testutil.h"

MODAL_FUNCTION(null_square)
{
    int64_t x = modal_arg_int(args, 0);
    return modal_int(x * x);
}

/* Assert st is code and the message names api and the parameter. */
#define assert_null_refused(st, want, err, needle)                             \
    do {                                                                       \
        modal_status st__ = (st);                                              \
        if (st__ != (want)) {                                                  \
            print_error("got %s (\"%s\"), expected %s\n",                      \
                        modal_status_name(st__), (err).message,                \
                        modal_status_name(want));                              \
            fail();                                                            \
        }                                                                      \
        assert_int_equal((err).code, (want));                                  \
        assert_message_contains(err, needle);                                  \
    } while (0)

static modal_value *one_arg(void)
{
    return modal_args(modal_int(3));
}

static void test_fn_spawn_null_call(void **state)
{
    (void)state;
    modal_error err;
    /* The argument list is consumed even though the call is refused. */
    assert_null_refused(modal_fn_spawn(&null_square, one_arg(), NULL, &err), MODAL_EINVAL, err,
                        "modal_fn_spawn: call is NULL");
    assert_int_equal(modal_fn_spawn(&null_square, one_arg(), NULL, NULL), MODAL_EINVAL);
    modal_call *call = (modal_call *)&err; /* must be reset to NULL */
    assert_null_refused(modal_fn_spawn(NULL, one_arg(), &call, &err), MODAL_EINVAL, err,
                        "modal_fn_spawn: fn is NULL");
    assert_null(call);
}

static void test_fn_remote_null_fn(void **state)
{
    (void)state;
    modal_error err;
    modal_value *out = (modal_value *)&err;
    assert_null_refused(modal_fn_remote(NULL, one_arg(), &out, &err), MODAL_EINVAL, err,
                        "modal_fn_remote: fn is NULL");
    assert_null(out);
    assert_int_equal(modal_fn_remote(NULL, one_arg(), NULL, NULL), MODAL_EINVAL);
    /* A NULL argument list is what a failed constructor gives: ENOMEM. */
    assert_null_refused(modal_fn_remote(&null_square, NULL, &out, &err), MODAL_ENOMEM, err,
                        "null_square: the argument list is NULL");
}

static void test_fn_local_nulls(void **state)
{
    (void)state;
    modal_error err;
    modal_value *out = NULL;
    assert_null_refused(modal_fn_local(NULL, one_arg(), &out, &err), MODAL_EINVAL, err,
                        "modal_fn_local: fn is NULL");
    assert_null_refused(modal_fn_local(&null_square, NULL, &out, &err), MODAL_ENOMEM, err,
                        "null_square: the argument list is NULL");
    /* result is optional: the result is computed and discarded. */
    assert_int_equal(modal_fn_local(&null_square, one_arg(), NULL, &err), MODAL_OK);
    assert_int_equal(modal_fn_local(&null_square, one_arg(), &out, NULL), MODAL_OK);
    int64_t v = 0;
    assert_int_equal(modal_get_int(out, &v, NULL), MODAL_OK);
    assert_int_equal(v, 9);
    modal_value_free(out);
}

static void test_fn_map_nulls(void **state)
{
    (void)state;
    modal_error err;
    modal_value *out = (modal_value *)&err;
    assert_null_refused(modal_fn_map(NULL, modal_args(modal_int(1)), NULL, &out, &err),
                        MODAL_EINVAL, err, "modal_fn_map: fn is NULL");
    assert_null(out);
    assert_null_refused(modal_fn_starmap(NULL, modal_args(one_arg()), NULL, &out, &err),
                        MODAL_EINVAL, err, "modal_fn_starmap: fn is NULL");
    assert_null_refused(modal_fn_map(&null_square, NULL, NULL, &out, &err), MODAL_ENOMEM, err,
                        "the map input list is NULL");
}

static void test_call_handles(void **state)
{
    (void)state;
    modal_error err;
    const char *id = "fc-0123456789abcdefghjkmnpqrs";
    assert_null_refused(modal_call_from_id(id, NULL, &err), MODAL_EINVAL, err,
                        "modal_call_from_id: call is NULL");
    assert_int_equal(modal_call_from_id(id, NULL, NULL), MODAL_EINVAL);
    modal_call *call = (modal_call *)&err;
    assert_null_refused(modal_call_from_id(NULL, &call, &err), MODAL_EINVAL, err,
                        "modal_call_from_id: id is NULL");
    assert_null(call);
    assert_null_refused(modal_call_get(NULL, 0, NULL, &err), MODAL_EINVAL, err,
                        "modal_call_get: call is NULL");
    modal_value *out = (modal_value *)&err;
    assert_null_refused(modal_call_get(NULL, 0, &out, &err), MODAL_EINVAL, err,
                        "modal_call_get: call is NULL");
    assert_null(out);
    assert_null_refused(modal_call_cancel(NULL, &err), MODAL_EINVAL, err,
                        "modal_call_cancel: call is NULL");
    assert_string_equal(modal_call_id(NULL), "");
    modal_call_free(NULL);
}

static void test_function_registry(void **state)
{
    (void)state;
    modal_error err;
    assert_null_refused(modal_function_check(NULL, &err), MODAL_EINVAL, err,
                        "modal_function_check: fn is NULL");
    assert_int_equal(modal_function_check(NULL, NULL), MODAL_EINVAL);
    assert_null(modal_function_find(NULL));
    assert_string_equal(modal_function_name(NULL), "(null)");
    modal__register(NULL);
    modal__set_app(NULL);
    assert_non_null(modal_app_name());
}

static void test_values(void **state)
{
    (void)state;
    modal_error err;
    assert_null(modal_string(NULL));
    assert_null(modal_string_n(NULL, 3));
    assert_null(modal_bytes(NULL, 3));
    assert_null(modal_array(MODAL_F32, NULL, 3));
    assert_null(modal_array_nd(MODAL_F32, NULL, 1, NULL));
    assert_null(modal_array_new(MODAL_F32, 1, NULL));
    assert_null(modal_list_of(NULL, 2));
    assert_null(modal_value_copy(NULL));
    assert_int_equal(modal_value_equal(NULL, NULL), 1);
    modal_value_free(NULL);
    assert_int_equal(modal_value_type(NULL), MODAL_TYPE_NULL);
    assert_null(modal_array_data_mut(NULL));
    assert_int_equal(modal_array_shape(NULL, NULL), 0);
    assert_int_equal(modal_value_len(NULL), 0);
    assert_null(modal_list_get(NULL, 0));
    assert_null(modal_map_get(NULL, NULL));

    /* Containers: documented codes for a NULL container or item. */
    assert_null_refused(modal_list_append(NULL, modal_int(1), &err), MODAL_ETYPE, err,
                        "modal_list_append");
    modal_value *list = modal_list();
    assert_null_refused(modal_list_append(list, NULL, &err), MODAL_EINVAL, err,
                        "modal_list_append: the item is NULL");
    modal_value_free(list);
    modal_value *map = modal_map();
    assert_null_refused(modal_map_set(map, NULL, modal_int(1), &err), MODAL_EINVAL, err,
                        "modal_map_set: the key is NULL");
    assert_null_refused(modal_map_set(map, "k", NULL, &err), MODAL_EINVAL, err,
                        "modal_map_set: the value");
    assert_null_refused(modal_map_set(NULL, "k", modal_int(1), &err), MODAL_ETYPE, err,
                        "modal_map_set");

    /* Accessors: a NULL value reads as null; out pointers are optional. */
    modal_value *i = modal_int(5), *s = modal_string("x"), *b = modal_bytes("ab", 2);
    modal_value *a = modal_array(MODAL_F32, (float[]){1}, 1);
    assert_null_refused(modal_get_int(NULL, NULL, &err), MODAL_ETYPE, err, "modal_get_int");
    assert_int_equal(modal_get_int(i, NULL, &err), MODAL_OK);
    assert_int_equal(modal_get_bool(NULL, NULL, NULL), MODAL_ETYPE);
    assert_int_equal(modal_get_float(i, NULL, NULL), MODAL_OK);
    assert_int_equal(modal_get_string(s, NULL, NULL, NULL), MODAL_OK);
    assert_int_equal(modal_get_bytes(b, NULL, NULL, NULL), MODAL_OK);
    assert_int_equal(modal_get_array(a, MODAL_F32, NULL, NULL, NULL), MODAL_OK);
    assert_int_equal(modal_array_dtype(a, NULL, NULL), MODAL_OK);
    assert_int_equal(modal_map_set(map, "k", modal_int(1), NULL), MODAL_OK);
    assert_int_equal(modal_map_entry(map, 0, NULL, NULL, NULL), MODAL_OK);
    assert_null_refused(modal_map_entry(NULL, 0, NULL, NULL, &err), MODAL_ETYPE, err,
                        "modal_map_entry");
    modal_value_free(i);
    modal_value_free(s);
    modal_value_free(b);
    modal_value_free(a);
    modal_value_free(map);
}

static void test_codec(void **state)
{
    (void)state;
    modal_error err;
    void *buf = NULL;
    size_t len = 0;
    modal_value *v = modal_int(1);
    assert_null_refused(modal_value_encode(v, NULL, &len, &err), MODAL_EINVAL, err,
                        "modal_value_encode: buf is NULL");
    assert_null_refused(modal_value_encode(v, &buf, NULL, &err), MODAL_EINVAL, err,
                        "modal_value_encode: len is NULL");
    assert_null_refused(modal_value_encode(NULL, &buf, &len, &err), MODAL_EINVAL, err,
                        "modal_value_encode: the value is NULL");
    assert_int_equal(modal_value_encode(v, &buf, &len, NULL), MODAL_OK);
    modal_value *out = NULL;
    assert_null_refused(modal_value_decode(buf, len, NULL, &err), MODAL_EINVAL, err,
                        "modal_value_decode: out is NULL");
    assert_null_refused(modal_value_decode(NULL, len, &out, &err), MODAL_EINVAL, err,
                        "modal_value_decode: buf is NULL");
    assert_null(out);
    free(buf);
    modal_value_free(v);
}

static void test_ctx_and_args(void **state)
{
    (void)state;
    /* Outside a body, and with a NULL context, nothing happens. */
    assert_null(modal_ctx_fail(NULL, "x"));
    assert_false(modal_ctx_failed(NULL));
    assert_string_equal(modal_ctx_call_id(NULL), "");
    assert_int_equal(modal_ctx_attempt(NULL), 0);
    assert_null(modal_ctx_function(NULL));
    assert_false(modal_ctx_is_remote(NULL));
    assert_int_equal(modal_arg_int(NULL, 0), 0);
    assert_true(modal_arg_float(NULL, 0) == 0.0);
    assert_false(modal_arg_bool(NULL, 0));
    assert_null(modal_arg_string(NULL, 0));
    assert_null(modal_arg_bytes(NULL, 0, NULL));
    assert_null(modal_arg_array(NULL, 0, MODAL_F32, NULL));
    assert_null(modal_arg(NULL, 0));

    /* A NULL format fails the call with a message rather than crashing. */
    modal_ctx ctx = {.fn = &null_square, .call_id = "t", .attempt = 1};
    const char *volatile nofmt = NULL;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-security"
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    assert_null(modal_ctx_fail(&ctx, nofmt));
#pragma GCC diagnostic pop
    assert_true(modal_ctx_failed(&ctx));
    assert_non_null(strstr(ctx.message, "modal_ctx_fail: fmt is NULL"));
}

static void test_misc(void **state)
{
    (void)state;
    modal_set_log_hook(NULL, NULL);
    assert_non_null(modal_version());
    assert_non_null(modal_runtime_url());
    /* Not a worker: returns at once whatever argv is. */
    modal_worker_serve_if_worker(0, NULL);
}

static void test_connection_nulls(void **state)
{
    (void)state;
    modal_error err;
    modal_call *call = (modal_call *)&err; /* must be set to NULL */
    assert_null_refused(modal_connection_open("unix:/nonexistent/x.sock", NULL, NULL, &err),
                        MODAL_EINVAL, err, "modal_connection_open: out is NULL");
    assert_null_refused(modal_fn_remote_on(NULL, NULL, one_arg(), NULL, &err), MODAL_EINVAL, err,
                        "modal_fn_remote_on: fn is NULL");
    assert_null_refused(modal_fn_spawn_on(NULL, &null_square, one_arg(), NULL, &err),
                        MODAL_EINVAL, err, "modal_fn_spawn_on: call is NULL");
    assert_null_refused(modal_fn_spawn_on(NULL, NULL, one_arg(), &call, &err), MODAL_EINVAL,
                        err, "modal_fn_spawn_on: fn is NULL");
    assert_null(call);
    assert_null_refused(modal_fn_map_on(NULL, NULL, modal_list(), NULL, NULL, &err),
                        MODAL_EINVAL, err, "modal_fn_map_on: fn is NULL");
    assert_null_refused(modal_fn_starmap_on(NULL, NULL, modal_list(), NULL, NULL, &err),
                        MODAL_EINVAL, err, "modal_fn_starmap_on: fn is NULL");
    assert_null_refused(modal_call_from_id_on(NULL, NULL, &call, &err), MODAL_EINVAL, err,
                        "modal_call_from_id_on: id is NULL");
    assert_null_refused(modal_call_from_id_on(NULL, "fc-x", NULL, &err), MODAL_EINVAL, err,
                        "modal_call_from_id_on: call is NULL");
    /* NULL is the default connection, or a no-op. */
    assert_string_equal(modal_connection_url(NULL), modal_runtime_url());
    modal_connection_close(NULL);
}

int main(void)
{
    /* Nothing here may reach a runtime; a missed check fails fast. */
    setenv("MODAL_RUNTIME_URL", "unix:/nonexistent/modal-test-null.sock", 1);
    setenv("MODAL_TOKEN", "0123456789abcdef0123456789abcdef", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fn_spawn_null_call),
        cmocka_unit_test(test_fn_remote_null_fn),
        cmocka_unit_test(test_fn_local_nulls),
        cmocka_unit_test(test_fn_map_nulls),
        cmocka_unit_test(test_call_handles),
        cmocka_unit_test(test_function_registry),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_codec),
        cmocka_unit_test(test_ctx_and_args),
        cmocka_unit_test(test_misc),
        cmocka_unit_test(test_connection_nulls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
