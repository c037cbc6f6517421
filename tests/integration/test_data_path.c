/*
 * test_data_path.c: large arrays through a real runtime, on each of the
 * ways a result can leave a worker (docs/architecture.md, "The bytes of a call"): one array
 * in its own memfd sent as it is (alone, nested in a list, 2-D), several
 * arrays copied into one payload memfd, a result map with more than one
 * attachment; and the client's receive straight into the result's memory
 * (every byte checked, the result writable). A worker that returns large
 * arrays call after call, or makes and drops scratch arrays, keeps no
 * descriptor open for them.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

#include <dirent.h>

MODAL_APP("itest-data-path");

#define MIB ((size_t)1 << 20)

static uint8_t pattern(size_t i, unsigned seed)
{
    return (uint8_t)((i * 2654435761u >> 11) + seed);
}

/* A u8 array of n bytes of pattern(i, seed), made as a worker makes it. */
static modal_value *filled(size_t n, unsigned seed)
{
    size_t shape[1] = {n};
    modal_value *v = modal_array_new(MODAL_U8, 1, shape);
    uint8_t *p = modal_array_data_mut(v);
    for (size_t i = 0; p != NULL && i < n; i++)
        p[i] = pattern(i, seed);
    return v;
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

/*
 * shape(mode, n): mode 0: a u8 array of n bytes; 1: [42, that array];
 * 2: [array, array'] (two attachments); 3: {"a": array, "b": array'};
 * 4: an n x 4 f32 array (2-D) of row + column / 8; 5: make and drop three
 * scratch arrays of n bytes, then answer the worker's open descriptors.
 */
MODAL_FUNCTION(shaped, .timeout = 120)
{
    int64_t mode = 0, n64 = 0;
    modal_error err;
    if (modal_get_int(modal_list_get(args, 0), &mode, &err) != MODAL_OK ||
        modal_get_int(modal_list_get(args, 1), &n64, &err) != MODAL_OK || n64 <= 0)
        return modal_ctx_fail(ctx, "shaped: expected (mode, n > 0)");
    size_t n = (size_t)n64;
    switch (mode) {
    case 0:
        return filled(n, 1);
    case 1:
        return modal_list_of((modal_value *[]){modal_int(42), filled(n, 2)}, 2);
    case 2:
        return modal_list_of((modal_value *[]){filled(n, 3), filled(n, 4)}, 2);
    case 3: {
        modal_value *m = modal_map();
        if (modal_map_set(m, "a", filled(n, 5), &err) != MODAL_OK ||
            modal_map_set(m, "b", filled(n, 6), &err) != MODAL_OK) {
            modal_value_free(m);
            return modal_ctx_fail(ctx, "shaped: %s", err.message);
        }
        return m;
    }
    case 4: {
        size_t shape[2] = {n, 4};
        modal_value *v = modal_array_new(MODAL_F32, 2, shape);
        float *f = modal_array_data_mut(v);
        for (size_t i = 0; f != NULL && i < n * 4; i++)
            f[i] = (float)(i / 4) + (float)(i % 4) / 8.0f;
        return v;
    }
    case 5:
        for (int k = 0; k < 3; k++)
            modal_value_free(filled(n, (unsigned)k));
        return modal_int(open_fds());
    default:
        return modal_ctx_fail(ctx, "shaped: unknown mode %lld", (long long)mode);
    }
}

/* Fails the test unless v is the u8 array pattern(i, seed) of n bytes. */
static void check_filled(const modal_value *v, size_t n, unsigned seed)
{
    const uint8_t *p = NULL;
    size_t count = 0;
    modal_error err;
    assert_ok(modal_get_array(v, MODAL_U8, (const void **)&p, &count, &err), err);
    assert_int_equal(count, n);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern(i, seed) && bad++ == 0)
            first = i;
    if (bad != 0)
        print_error("%zu of %zu bytes wrong, the first at %zu\n", bad, n, first);
    assert_int_equal(bad, 0);
}

static modal_value *call(int mode, size_t n)
{
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_remote(&shaped, modal_args(modal_int(mode), modal_int((int64_t)n)), &out,
                              &err),
              err);
    return out;
}

static void test_one_array_each_byte(void **state)
{
    /* Under, at and over the size from which arrays live in memfds. */
    size_t sizes[] = {MIB, 4 * MIB, 9 * MIB + 123};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        modal_value *out = call(0, sizes[k]);
        check_filled(out, sizes[k], 1);
        modal_value_free(out);
    }
}

static void test_result_is_writable(void **state)
{
    modal_value *out = call(0, 8 * MIB);
    uint8_t *p = modal_array_data_mut(out);
    assert_non_null(p);
    p[0] ^= 0xff;
    p[8 * MIB - 1] ^= 0xff;
    assert_int_equal(p[0], (uint8_t)(pattern(0, 1) ^ 0xff));
    modal_value_free(out);
}

static void test_nested_and_several(void **state)
{
    size_t n = 6 * MIB;
    modal_value *out = call(1, n);
    assert_int_equal(modal_value_len(out), 2);
    int64_t i = 0;
    modal_error err;
    assert_ok(modal_get_int(modal_list_get(out, 0), &i, &err), err);
    assert_int_equal(i, 42);
    check_filled(modal_list_get(out, 1), n, 2);
    modal_value_free(out);

    out = call(2, n);
    assert_int_equal(modal_value_len(out), 2);
    check_filled(modal_list_get(out, 0), n, 3);
    check_filled(modal_list_get(out, 1), n, 4);
    modal_value_free(out);

    out = call(3, n);
    check_filled(modal_map_get(out, "a"), n, 5);
    check_filled(modal_map_get(out, "b"), n, 6);
    modal_value_free(out);
}

static void test_two_dimensional(void **state)
{
    size_t rows = MIB; /* 16 MiB of f32 */
    modal_value *out = call(4, rows);
    const float *f = NULL;
    size_t count = 0;
    modal_error err;
    assert_ok(modal_get_array(out, MODAL_F32, (const void **)&f, &count, &err), err);
    assert_int_equal(count, rows * 4);
    size_t shape[MODAL_MAX_NDIM];
    assert_int_equal(modal_array_shape(out, shape), 2);
    assert_int_equal(shape[0], rows);
    assert_int_equal(shape[1], 4);
    for (size_t i = 0; i < rows * 4; i += 4099)
        assert_true(f[i] == (float)(i / 4) + (float)(i % 4) / 8.0f);
    assert_true(f[rows * 4 - 1] == (float)(rows - 1) + 3.0f / 8.0f);
    modal_value_free(out);
}

static void test_worker_keeps_no_descriptors(void **state)
{
    size_t n = 8 * MIB;
    modal_value *out = call(5, n);
    int64_t first = 0, later = 0;
    modal_error err;
    assert_ok(modal_get_int(out, &first, &err), err);
    modal_value_free(out);
    for (int k = 0; k < 6; k++) {
        out = call(k % 2 == 0 ? 0 : 2, n);
        modal_value_free(out);
    }
    out = call(5, n);
    assert_ok(modal_get_int(out, &later, &err), err);
    modal_value_free(out);
    if (later != first)
        print_error("the worker had %lld descriptors open, then %lld\n", (long long)first,
                    (long long)later);
    assert_int_equal(later, first);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    setenv("MODAL_QUIET_LOGS", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_array_each_byte),
        cmocka_unit_test(test_result_is_writable),
        cmocka_unit_test(test_nested_and_several),
        cmocka_unit_test(test_two_dimensional),
        cmocka_unit_test(test_worker_keeps_no_descriptors),
    };
    return cmocka_run_group_tests_name("data path", tests, harness_group_setup,
                                       harness_group_teardown) != 0;
}
