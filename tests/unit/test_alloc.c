/*
 * test_alloc.c: allocation-failure injection. Each operation is run with
 * its 1st, 2nd, 3rd... allocation failing until it succeeds; every failed
 * run must report failure (NULL or MODAL_ENOMEM) and leave nothing behind,
 * which valgrind and LeakSanitizer check (make check). The first run that
 * succeeds must build the same value as a run without injection.
 */
#include "testutil.h"

#include <math.h>

/* More allocations than any operation here makes; a loop past it is a bug. */
#define MAX_ATTEMPTS 10000

/* Turns injection off even when an assertion fails mid-test. */
static int teardown_injection(void **state)
{
    modal__alloc_fail_after(-1);
    return 0;
}

/*
 * Run build with injection set to fail after n allocations, for n = 0, 1,
 * 2... until it returns a value; then check that value equals one built
 * without injection and that the successful run made exactly n
 * allocations, so every allocation it makes was failed once.
 */
static void check_build(modal_value *(*build)(void), const char *name)
{
    modal__alloc_fail_after(-1);
    modal_value *want = build();
    assert_non_null(want);
    for (long n = 0; n < MAX_ATTEMPTS; n++) {
        modal__alloc_fail_after(n);
        modal_value *got = build();
        long made = modal__alloc_fail_after(-1);
        if (got == NULL) {
            /* A failed run must have tried the allocation that failed. */
            assert_true(made > n);
            continue;
        }
        if (!modal_value_equal(got, want)) {
            print_error("%s: the run with %ld allocations built another "
                        "value\n",
                        name, n);
            fail();
        }
        assert_int_equal(made, n);
        modal_value_free(got);
        modal_value_free(want);
        return;
    }
    print_error("%s: still failing after %d allocations\n", name,
                MAX_ATTEMPTS);
    fail();
}

/* ---- constructors ------------------------------------------------ */

static modal_value *build_null(void)
{
    return modal_null();
}

static modal_value *build_bool(void)
{
    return modal_bool(true);
}

static modal_value *build_int(void)
{
    return modal_int(INT64_MIN);
}

static modal_value *build_float(void)
{
    return modal_float(NAN);
}

static modal_value *build_string(void)
{
    return modal_string("a string");
}

static modal_value *build_string_n(void)
{
    return modal_string_n("abcdef", 4);
}

static modal_value *build_bytes(void)
{
    return modal_bytes("\0\1\2\3", 4);
}

static modal_value *build_bytes_empty(void)
{
    return modal_bytes(NULL, 0);
}

static modal_value *build_array(void)
{
    const double d[3] = {1, 2, 3};
    return modal_array(MODAL_F64, d, 3);
}

static modal_value *build_array_empty(void)
{
    return modal_array(MODAL_F32, NULL, 0);
}

static modal_value *build_array_nd(void)
{
    const int32_t d[2][3] = {{1, 2, 3}, {4, 5, 6}};
    const size_t shape[2] = {2, 3};
    return modal_array_nd(MODAL_I32, d, 2, shape);
}

static modal_value *build_array_new(void)
{
    const size_t shape[3] = {2, 2, 2};
    modal_value *v = modal_array_new(MODAL_U8, 3, shape);
    /* Fill it so the comparison with the reference is defined. */
    if (v != NULL)
        memset(modal_array_data_mut(v), 0x5a, 8);
    return v;
}

static modal_value *build_list(void)
{
    return modal_list();
}

static modal_value *build_map(void)
{
    return modal_map();
}

static void test_scalar_constructors(void **state)
{
    check_build(build_null, "modal_null");
    check_build(build_bool, "modal_bool");
    check_build(build_int, "modal_int");
    check_build(build_float, "modal_float");
    check_build(build_string, "modal_string");
    check_build(build_string_n, "modal_string_n");
    check_build(build_bytes, "modal_bytes");
    check_build(build_bytes_empty, "modal_bytes (empty)");
}

static void test_array_constructors(void **state)
{
    check_build(build_array, "modal_array");
    check_build(build_array_empty, "modal_array (empty)");
    check_build(build_array_nd, "modal_array_nd");
    check_build(build_array_new, "modal_array_new");
}

static void test_container_constructors(void **state)
{
    check_build(build_list, "modal_list");
    check_build(build_map, "modal_map");
}

/* ---- containers -------------------------------------------------- */

/*
 * modal_list_of with items made in the same expression: an item that
 * failed is NULL, and modal_list_of must free the others.
 */
static modal_value *build_list_of(void)
{
    modal_value *items[4] = {modal_int(1), modal_string("two"),
                             modal_bytes("3", 1), modal_list()};
    return modal_list_of(items, 4);
}

static modal_value *build_args(void)
{
    return modal_args(modal_int(1), modal_args(modal_string("nested")),
                      modal_null());
}

/*
 * Appends enough items to grow the list several times. A failed append
 * must say MODAL_ENOMEM, free the item and leave the list as it was.
 */
static modal_value *build_list_append(void)
{
    modal_value *l = modal_list();
    if (l == NULL)
        return NULL;
    for (int64_t i = 0; i < 20; i++) {
        modal_value *item = modal_int(i);
        if (item == NULL) {
            modal_value_free(l);
            return NULL;
        }
        modal_error err;
        modal_status st = modal_list_append(l, item, &err);
        if (st != MODAL_OK) {
            assert_int_equal(st, MODAL_ENOMEM);
            assert_int_equal(err.code, MODAL_ENOMEM);
            assert_int_equal(modal_value_len(l), (size_t)i);
            modal_value_free(l);
            return NULL;
        }
    }
    return l;
}

/*
 * Sets enough keys to grow the map several times, then replaces one (which
 * allocates nothing but the new value). A failed set must say
 * MODAL_ENOMEM, free the value and leave the map as it was.
 */
static modal_value *build_map_set(void)
{
    modal_value *m = modal_map();
    if (m == NULL)
        return NULL;
    char key[16];
    for (int i = 0; i <= 20; i++) {
        /* The last round replaces key0. */
        snprintf(key, sizeof key, "key%d", i < 20 ? i : 0);
        modal_value *v = modal_string(key);
        if (v == NULL) {
            modal_value_free(m);
            return NULL;
        }
        size_t before = modal_value_len(m);
        modal_error err;
        modal_status st = modal_map_set(m, key, v, &err);
        if (st != MODAL_OK) {
            assert_int_equal(st, MODAL_ENOMEM);
            assert_int_equal(err.code, MODAL_ENOMEM);
            assert_int_equal(modal_value_len(m), before);
            assert_null(modal_map_get(m, key));
            modal_value_free(m);
            return NULL;
        }
    }
    assert_int_equal(modal_value_len(m), 20);
    return m;
}

static void test_container_operations(void **state)
{
    check_build(build_list_of, "modal_list_of");
    check_build(build_args, "modal_args");
    check_build(build_list_append, "modal_list_append");
    check_build(build_map_set, "modal_map_set");
}

/*
 * A map whose vals array cannot grow after its keys array did must still
 * accept the key on the next try: the two arrays grow separately.
 */
static void test_map_set_after_partial_growth(void **state)
{
    modal_value *m = modal_map();
    assert_non_null(m);
    char key[16];
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(modal_map_set(m, key, modal_int(i), NULL), MODAL_OK);
    }
    /* The fifth key grows keys, then vals: fail the second of those. */
    modal_value *v = modal_int(4);
    assert_non_null(v);
    modal__alloc_fail_after(1);
    assert_int_equal(modal_map_set(m, "k4", v, NULL), MODAL_ENOMEM);
    modal__alloc_fail_after(-1);
    assert_int_equal(modal_value_len(m), 4);
    for (int i = 4; i < 40; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(modal_map_set(m, key, modal_int(i), NULL), MODAL_OK);
    }
    int64_t got = 0;
    assert_int_equal(modal_get_int(modal_map_get(m, "k39"), &got, NULL),
                     MODAL_OK);
    assert_int_equal(got, 39);
    modal_value_free(m);
}

/* ---- deep copy --------------------------------------------------- */

/* One of every type, nested, built without injection. */
static modal_value *deep_tree(void)
{
    const float f32[6] = {1, 2, 3, 4, 5, 6};
    const size_t shape[2] = {3, 2};
    modal_value *inner = modal_map();
    modal_value *root = modal_map();
    assert_non_null(inner);
    assert_non_null(root);
    assert_int_equal(modal_map_set(inner, "bytes", modal_bytes("\0\1", 2),
                                   NULL),
                     MODAL_OK);
    assert_int_equal(modal_map_set(inner, "arr",
                                   modal_array_nd(MODAL_F32, f32, 2, shape),
                                   NULL),
                     MODAL_OK);
    assert_int_equal(modal_map_set(inner, "empty",
                                   modal_array(MODAL_U8, NULL, 0), NULL),
                     MODAL_OK);
    assert_int_equal(modal_map_set(inner, "scalars",
                                   modal_args(modal_null(), modal_bool(true),
                                              modal_int(-1), modal_float(0.5),
                                              modal_list(), modal_map()),
                                   NULL),
                     MODAL_OK);
    assert_int_equal(modal_map_set(root, "inner", inner, NULL), MODAL_OK);
    assert_int_equal(modal_map_set(root, "name", modal_string("tree"), NULL),
                     MODAL_OK);
    modal_value *chain = modal_string("bottom");
    for (int d = 0; d < 10; d++)
        chain = modal_args(chain, modal_int(d));
    assert_non_null(chain);
    assert_int_equal(modal_map_set(root, "chain", chain, NULL), MODAL_OK);
    return root;
}

static const modal_value *copy_source;

static modal_value *build_copy(void)
{
    return modal_value_copy(copy_source);
}

static void test_copy_deep_tree(void **state)
{
    modal_value *tree = deep_tree();
    copy_source = tree;
    check_build(build_copy, "modal_value_copy");
    modal_value_free(tree);
}

/* A copy of borrowed values allocates its own payloads. */
static void test_copy_borrowed(void **state)
{
    modal__buf *buf = modal__buf_new(64);
    assert_non_null(buf);
    memset(buf->base, 7, 64);
    const size_t shape[1] = {8};
    modal_value *arr = modal__array_borrow(buf, MODAL_F64, buf->base, 1,
                                           shape);
    modal_value *bytes = modal__bytes_borrow(buf, buf->base + 8, 16);
    modal__buf_unref(buf);
    modal_value *tree = modal_args(arr, bytes);
    assert_non_null(tree);
    copy_source = tree;
    check_build(build_copy, "modal_value_copy (borrowed)");
    modal_value_free(tree);
}

/* The borrowing constructors: a failure must not keep a reference. */
static modal__buf *borrow_buf;

static modal_value *build_array_borrow(void)
{
    const size_t shape[2] = {2, 4};
    return modal__array_borrow(borrow_buf, MODAL_U32, borrow_buf->base, 2,
                               shape);
}

static modal_value *build_bytes_borrow(void)
{
    return modal__bytes_borrow(borrow_buf, borrow_buf->base, 32);
}

static void test_borrow_constructors(void **state)
{
    borrow_buf = modal__buf_new(32);
    assert_non_null(borrow_buf);
    memset(borrow_buf->base, 1, 32);
    check_build(build_array_borrow, "modal__array_borrow");
    check_build(build_bytes_borrow, "modal__bytes_borrow");
    assert_int_equal(borrow_buf->refs, 1);
    modal__buf_unref(borrow_buf);
    borrow_buf = NULL;
}

/* ==== codec ======================================================== */
/*
 * RESERVED for the codec's failure-injection tests, to be added by the
 * codec's author once lib/codec.c exists: encode and decode of the deep
 * tree above (deep_tree(), check_build()) with each allocation failing,
 * each failure reporting MODAL_ENOMEM and leaking nothing. Add the test
 * functions here and their names to CODEC_ALLOC_TESTS below; nothing in
 * this file refers to the codec until then, so it builds without it.
 */
#define CODEC_ALLOC_TESTS /* cmocka_unit_test_teardown(test_..., ...), */
/* ==== end codec ==================================================== */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_scalar_constructors,
                                  teardown_injection),
        cmocka_unit_test_teardown(test_array_constructors,
                                  teardown_injection),
        cmocka_unit_test_teardown(test_container_constructors,
                                  teardown_injection),
        cmocka_unit_test_teardown(test_container_operations,
                                  teardown_injection),
        cmocka_unit_test_teardown(test_map_set_after_partial_growth,
                                  teardown_injection),
        cmocka_unit_test_teardown(test_copy_deep_tree, teardown_injection),
        cmocka_unit_test_teardown(test_copy_borrowed, teardown_injection),
        cmocka_unit_test_teardown(test_borrow_constructors,
                                  teardown_injection),
        CODEC_ALLOC_TESTS
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    modal__alloc_fail_after(-1);
    return failed;
}
