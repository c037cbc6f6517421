/*
 * test_value.c: modal_value constructors, accessors, containers, copy,
 * equality and the borrowed variants. Ownership on failure is proved by
 * running this file under valgrind (make check): a leak fails the run.
 */
#include "testutil.h"

#include <float.h>
#include <math.h>

/* A modal_error whose message is not empty, so tests see it overwritten. */
static modal_error fresh_error(void)
{
    modal_error err;
    memset(&err, 0, sizeof err);
    err.code = MODAL_EIO;
    strcpy(err.message, "untouched");
    return err;
}

/* ---- names ------------------------------------------------------- */

static void test_type_names(void **state)
{
    assert_string_equal(modal_type_name(MODAL_TYPE_NULL), "null");
    assert_string_equal(modal_type_name(MODAL_TYPE_BOOL), "bool");
    assert_string_equal(modal_type_name(MODAL_TYPE_INT), "int");
    assert_string_equal(modal_type_name(MODAL_TYPE_FLOAT), "float");
    assert_string_equal(modal_type_name(MODAL_TYPE_STRING), "string");
    assert_string_equal(modal_type_name(MODAL_TYPE_BYTES), "bytes");
    assert_string_equal(modal_type_name(MODAL_TYPE_ARRAY), "array");
    assert_string_equal(modal_type_name(MODAL_TYPE_LIST), "list");
    assert_string_equal(modal_type_name(MODAL_TYPE_MAP), "map");
    assert_non_null(modal_type_name((modal_type)99));
    assert_non_null(modal_type_name((modal_type)-1));
}

static void test_dtype_names_sizes_parse(void **state)
{
    static const struct {
        modal_dtype dtype;
        const char *name;
        size_t size;
    } cases[] = {
        {MODAL_U8, "u8", 1},   {MODAL_I8, "i8", 1},   {MODAL_I32, "i32", 4},
        {MODAL_U32, "u32", 4}, {MODAL_I64, "i64", 8}, {MODAL_U64, "u64", 8},
        {MODAL_F32, "f32", 4}, {MODAL_F64, "f64", 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_string_equal(modal_dtype_name(cases[i].dtype), cases[i].name);
        assert_int_equal(modal_dtype_size(cases[i].dtype), cases[i].size);
        assert_int_equal(modal__dtype_parse(cases[i].name),
                         (int)cases[i].dtype);
    }
    assert_string_equal(modal_dtype_name((modal_dtype)8), "invalid");
    assert_string_equal(modal_dtype_name((modal_dtype)-1), "invalid");
    assert_int_equal(modal_dtype_size((modal_dtype)8), 0);
    assert_int_equal(modal_dtype_size((modal_dtype)-1), 0);
    assert_int_equal(modal__dtype_parse("f16"), -1);
    assert_int_equal(modal__dtype_parse("F32"), -1);
    assert_int_equal(modal__dtype_parse(""), -1);
    assert_int_equal(modal__dtype_parse("f32 "), -1);
    assert_int_equal(modal__dtype_parse("invalid"), -1);
    assert_int_equal(modal__dtype_parse(NULL), -1);
}

/* ---- scalars ----------------------------------------------------- */

static void test_null_and_bool(void **state)
{
    modal_error err = fresh_error();
    modal_value *n = modal_null();
    assert_non_null(n);
    assert_int_equal(modal_value_type(n), MODAL_TYPE_NULL);
    modal_value_free(n);

    bool b = false;
    modal_value *t = modal_bool(true);
    assert_int_equal(modal_value_type(t), MODAL_TYPE_BOOL);
    assert_int_equal(modal_get_bool(t, &b, &err), MODAL_OK);
    assert_true(b);
    assert_int_equal(err.code, MODAL_OK);
    assert_string_equal(err.message, "");
    modal_value_free(t);

    modal_value *f = modal_bool(false);
    assert_int_equal(modal_get_bool(f, &b, NULL), MODAL_OK);
    assert_false(b);
    modal_value_free(f);

    /* Any non-zero b is true, and two trues are equal values. */
    modal_value *a = modal_bool(5);
    modal_value *c = modal_bool(1);
    assert_int_equal(modal_get_bool(a, &b, NULL), MODAL_OK);
    assert_true(b);
    assert_true(modal_value_equal(a, c));
    modal_value_free(a);
    modal_value_free(c);
}

static void test_int(void **state)
{
    const int64_t cases[] = {0, 1, -1, INT64_MIN, INT64_MAX,
                             (int64_t)1 << 53, ((int64_t)1 << 53) + 1};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t out = 7;
        modal_value *v = modal_int(cases[i]);
        assert_non_null(v);
        assert_int_equal(modal_value_type(v), MODAL_TYPE_INT);
        assert_int_equal(modal_get_int(v, &out, NULL), MODAL_OK);
        assert_true(out == cases[i]);
        modal_value_free(v);
    }
}

static void test_float(void **state)
{
    const double cases[] = {0.0, -0.0, 1.5, -1e308, DBL_MIN, DBL_MAX,
                            INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double out = 7;
        modal_value *v = modal_float(cases[i]);
        assert_non_null(v);
        assert_int_equal(modal_value_type(v), MODAL_TYPE_FLOAT);
        assert_int_equal(modal_get_float(v, &out, NULL), MODAL_OK);
        assert_memory_equal(&out, &cases[i], sizeof out);
        modal_value_free(v);
    }
    double out = 0;
    modal_value *nan = modal_float(NAN);
    assert_int_equal(modal_get_float(nan, &out, NULL), MODAL_OK);
    assert_true(isnan(out));
    modal_value_free(nan);
}

static void test_get_float_accepts_int(void **state)
{
    double out = 0;
    modal_value *v = modal_int(-42);
    assert_int_equal(modal_get_float(v, &out, NULL), MODAL_OK);
    assert_true(out == -42.0);
    modal_value_free(v);

    /* The opposite is not true: a float is no int. */
    int64_t i = 3;
    modal_error err = fresh_error();
    v = modal_float(2.0);
    assert_int_equal(modal_get_int(v, &i, &err), MODAL_ETYPE);
    assert_int_equal(i, 3);
    modal_value_free(v);
}

/* ---- strings and bytes ------------------------------------------- */

static void test_string(void **state)
{
    const char *s = NULL;
    size_t len = 99;
    char src[] = "héllo";
    modal_value *v = modal_string(src);
    assert_non_null(v);
    src[0] = 'X'; /* the value holds a copy */
    assert_int_equal(modal_value_type(v), MODAL_TYPE_STRING);
    assert_int_equal(modal_get_string(v, &s, &len, NULL), MODAL_OK);
    assert_string_equal(s, "héllo");
    assert_int_equal(len, strlen("héllo"));
    /* len is optional. */
    assert_int_equal(modal_get_string(v, &s, NULL, NULL), MODAL_OK);
    modal_value_free(v);

    assert_null(modal_string(NULL));

    v = modal_string("");
    assert_int_equal(modal_get_string(v, &s, &len, NULL), MODAL_OK);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    modal_value_free(v);
}

static void test_string_n(void **state)
{
    const char *s = NULL;
    size_t len = 99;
    modal_value *v = modal_string_n("abcdef", 3);
    assert_non_null(v);
    assert_int_equal(modal_get_string(v, &s, &len, NULL), MODAL_OK);
    assert_string_equal(s, "abc");
    assert_int_equal(len, 3);
    modal_value_free(v);

    /* Embedded NUL is refused: bytes are for binary data. */
    assert_null(modal_string_n("ab\0cd", 5));
    assert_null(modal_string_n("\0", 1));
    assert_null(modal_string_n(NULL, 3));

    v = modal_string_n(NULL, 0);
    assert_non_null(v);
    assert_int_equal(modal_get_string(v, &s, &len, NULL), MODAL_OK);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    modal_value_free(v);
}

static void test_bytes(void **state)
{
    const unsigned char src[] = {0, 1, 2, 0, 255};
    const void *p = NULL;
    size_t len = 99;
    modal_value *v = modal_bytes(src, sizeof src);
    assert_non_null(v);
    assert_int_equal(modal_value_type(v), MODAL_TYPE_BYTES);
    assert_int_equal(modal_get_bytes(v, &p, &len, NULL), MODAL_OK);
    assert_int_equal(len, sizeof src);
    assert_ptr_not_equal(p, src);
    assert_memory_equal(p, src, sizeof src);
    modal_value_free(v);

    /* Zero length, with or without a pointer, still hands out a pointer. */
    v = modal_bytes(NULL, 0);
    assert_non_null(v);
    p = NULL;
    assert_int_equal(modal_get_bytes(v, &p, &len, NULL), MODAL_OK);
    assert_int_equal(len, 0);
    assert_non_null(p);
    modal_value *w = modal_bytes(src, 0);
    assert_true(modal_value_equal(v, w));
    modal_value_free(v);
    modal_value_free(w);

    assert_null(modal_bytes(NULL, 1));
}

/* ---- arrays ------------------------------------------------------ */

static void test_array_1d(void **state)
{
    const float src[] = {1.0f, -2.5f, 3.25f};
    const void *p = NULL;
    size_t count = 0;
    size_t shape[MODAL_MAX_NDIM] = {0};
    modal_dtype dt = MODAL_U8;
    modal_value *v = modal_array(MODAL_F32, src, 3);
    assert_non_null(v);
    assert_int_equal(modal_value_type(v), MODAL_TYPE_ARRAY);
    assert_int_equal(modal_get_array(v, MODAL_F32, &p, &count, NULL),
                     MODAL_OK);
    assert_int_equal(count, 3);
    assert_ptr_not_equal(p, src);
    assert_memory_equal(p, src, sizeof src);
    assert_int_equal(modal_array_dtype(v, &dt, NULL), MODAL_OK);
    assert_int_equal(dt, MODAL_F32);
    assert_int_equal(modal_array_shape(v, shape), 1);
    assert_int_equal(shape[0], 3);
    assert_int_equal(modal_array_shape(v, NULL), 1);
    /* An array is neither a list nor a map. */
    assert_int_equal(modal_value_len(v), 0);
    modal_value_free(v);

    /* Every dtype round-trips. */
    const uint64_t raw[2] = {0x0102030405060708u, 0xfffefdfcfbfaf9f8u};
    for (int d = MODAL_U8; d <= MODAL_F64; d++) {
        size_t n = sizeof raw / modal_dtype_size((modal_dtype)d);
        v = modal_array((modal_dtype)d, raw, n);
        assert_non_null(v);
        assert_int_equal(modal_get_array(v, (modal_dtype)d, &p, &count, NULL),
                         MODAL_OK);
        assert_int_equal(count, n);
        assert_memory_equal(p, raw, sizeof raw);
        modal_value_free(v);
    }

    assert_null(modal_array(MODAL_F32, NULL, 1));
    assert_null(modal_array((modal_dtype)8, src, 1));
    assert_null(modal_array((modal_dtype)-1, src, 1));
}

static void test_array_nd_shapes(void **state)
{
    const int32_t src[2][3][4] = {{{0}}};
    const size_t shape_in[3] = {2, 3, 4};
    size_t shape[MODAL_MAX_NDIM] = {0};
    const void *p = NULL;
    size_t count = 0;
    modal_value *v = modal_array_nd(MODAL_I32, src, 3, shape_in);
    assert_non_null(v);
    assert_int_equal(modal_array_shape(v, shape), 3);
    assert_int_equal(shape[0], 2);
    assert_int_equal(shape[1], 3);
    assert_int_equal(shape[2], 4);
    assert_int_equal(modal_get_array(v, MODAL_I32, &p, &count, NULL),
                     MODAL_OK);
    assert_int_equal(count, 24);
    modal_value_free(v);

    /* The full MODAL_MAX_NDIM dimensions are allowed, one more is not. */
    size_t eight[MODAL_MAX_NDIM + 1] = {1, 2, 1, 2, 1, 2, 1, 2, 1};
    uint8_t bytes[16] = {0};
    v = modal_array_nd(MODAL_U8, bytes, MODAL_MAX_NDIM, eight);
    assert_non_null(v);
    assert_int_equal(modal_array_shape(v, shape), MODAL_MAX_NDIM);
    assert_memory_equal(shape, eight, MODAL_MAX_NDIM * sizeof(size_t));
    modal_value_free(v);
    assert_null(modal_array_nd(MODAL_U8, bytes, MODAL_MAX_NDIM + 1, eight));
    assert_null(modal_array_nd(MODAL_U8, bytes, 0, eight));
    assert_null(modal_array_nd(MODAL_U8, bytes, 1, NULL));
    assert_null(modal_array_new(MODAL_U8, 0, eight));
    assert_null(modal_array_new(MODAL_U8, MODAL_MAX_NDIM + 1, eight));

    /* The same bytes in another shape are another value. */
    const size_t s23[2] = {2, 3}, s32[2] = {3, 2};
    const double d6[6] = {1, 2, 3, 4, 5, 6};
    modal_value *a = modal_array_nd(MODAL_F64, d6, 2, s23);
    modal_value *b = modal_array_nd(MODAL_F64, d6, 2, s32);
    modal_value *c = modal_array(MODAL_F64, d6, 6);
    modal_value *a2 = modal_array_nd(MODAL_F64, d6, 2, s23);
    modal_value *i64 = modal_array_nd(MODAL_I64, d6, 2, s23);
    assert_false(modal_value_equal(a, b));
    assert_false(modal_value_equal(a, c));
    assert_false(modal_value_equal(a, i64));
    assert_true(modal_value_equal(a, a2));
    double *w = modal_array_data_mut(a2);
    w[5] = 7;
    assert_false(modal_value_equal(a, a2));
    modal_value_free(a);
    modal_value_free(b);
    modal_value_free(c);
    modal_value_free(a2);
    modal_value_free(i64);
}

static void test_array_new_and_data_mut(void **state)
{
    const size_t shape[2] = {100, 10};
    modal_value *v = modal_array_new(MODAL_U64, 2, shape);
    assert_non_null(v);
    uint64_t *w = modal_array_data_mut(v);
    assert_non_null(w);
    for (size_t i = 0; i < 1000; i++)
        w[i] = i * i;
    const void *p = NULL;
    size_t count = 0;
    assert_int_equal(modal_get_array(v, MODAL_U64, &p, &count, NULL),
                     MODAL_OK);
    assert_ptr_equal(p, w);
    assert_int_equal(count, 1000);
    assert_int_equal(((const uint64_t *)p)[999], 999u * 999u);
    modal_value_free(v);

    modal_value *s = modal_string("x");
    assert_null(modal_array_data_mut(s));
    assert_null(modal_array_data_mut(NULL));
    modal_value_free(s);
}

static void test_empty_arrays(void **state)
{
    const void *p = NULL;
    size_t count = 99;
    modal_value *v = modal_array(MODAL_F32, NULL, 0);
    assert_non_null(v);
    assert_int_equal(modal_get_array(v, MODAL_F32, &p, &count, NULL),
                     MODAL_OK);
    assert_int_equal(count, 0);
    assert_non_null(p);

    /* A zero extent empties the array whatever the other extents are. */
    const size_t shape[3] = {4, 0, 5};
    size_t got[MODAL_MAX_NDIM];
    modal_value *w = modal_array_nd(MODAL_F32, NULL, 3, shape);
    assert_non_null(w);
    assert_int_equal(modal_array_shape(w, got), 3);
    assert_int_equal(got[1], 0);
    count = 99;
    assert_int_equal(modal_get_array(w, MODAL_F32, &p, &count, NULL),
                     MODAL_OK);
    assert_int_equal(count, 0);
    assert_false(modal_value_equal(v, w));
    modal_value *v2 = modal_array(MODAL_F32, (const float[]){1}, 0);
    assert_true(modal_value_equal(v, v2));

    const size_t huge_zero[2] = {SIZE_MAX, 0};
    assert_int_equal(modal__shape_count(MODAL_F64, 2, huge_zero), 0);
    modal_value *e = modal_array_new(MODAL_U8, 1, (const size_t[]){0});
    assert_non_null(e);
    assert_int_equal(modal_value_type(e), MODAL_TYPE_ARRAY);

    modal_value_free(v);
    modal_value_free(v2);
    modal_value_free(w);
    modal_value_free(e);
}

static void test_shape_overflow(void **state)
{
    const size_t ok[2] = {3, 5};
    assert_int_equal(modal__shape_count(MODAL_F32, 2, ok), 15);
    assert_int_equal(modal__shape_count(MODAL_F32, 1, ok), 3);

    /* The element count overflows. */
    const size_t big[2] = {SIZE_MAX / 2 + 1, 2};
    assert_int_equal(modal__shape_count(MODAL_U8, 2, big), SIZE_MAX);
    assert_null(modal_array_nd(MODAL_U8, "x", 2, big));
    assert_null(modal_array_new(MODAL_U8, 2, big));

    /* The count fits but count * element size does not. */
    const size_t bytes[1] = {SIZE_MAX / 4};
    assert_int_equal(modal__shape_count(MODAL_U8, 1, bytes), SIZE_MAX / 4);
    assert_int_equal(modal__shape_count(MODAL_F64, 1, bytes), SIZE_MAX);
    assert_null(modal_array_new(MODAL_F64, 1, bytes));
    assert_null(modal_array(MODAL_F64, "12345678", SIZE_MAX / 4));

    /* Many dimensions whose product overflows only at the end. */
    const size_t many[MODAL_MAX_NDIM] = {1u << 8, 1u << 8, 1u << 8, 1u << 8,
                                         1u << 8, 1u << 8, 1u << 8, 1u << 8};
    assert_int_equal(modal__shape_count(MODAL_U8, MODAL_MAX_NDIM, many),
                     SIZE_MAX);
    assert_int_equal(modal__shape_count(MODAL_U8, 7, many),
                     (size_t)1 << 56);

    /* Invalid ndim and dtype. */
    assert_int_equal(modal__shape_count(MODAL_U8, 0, ok), SIZE_MAX);
    assert_int_equal(modal__shape_count(MODAL_U8, MODAL_MAX_NDIM + 1, many),
                     SIZE_MAX);
    assert_int_equal(modal__shape_count((modal_dtype)8, 1, ok), SIZE_MAX);
    assert_int_equal(modal__shape_count((modal_dtype)-1, 1, ok), SIZE_MAX);
    assert_int_equal(modal__shape_count(MODAL_U8, 1, NULL), SIZE_MAX);
}

/* ---- type mismatches --------------------------------------------- */

static void test_type_mismatch_messages(void **state)
{
    modal_error err = fresh_error();
    modal_value *s = modal_string("text");
    modal_value *i = modal_int(1);
    modal_value *l = modal_list();

    bool b = true;
    assert_int_equal(modal_get_bool(s, &b, &err), MODAL_ETYPE);
    assert_int_equal(err.code, MODAL_ETYPE);
    assert_message_contains(err, "bool");
    assert_message_contains(err, "string");
    assert_true(b);

    int64_t n = 5;
    err = fresh_error();
    assert_int_equal(modal_get_int(s, &n, &err), MODAL_ETYPE);
    assert_message_contains(err, "expected an int, got a string");
    assert_int_equal(n, 5);

    double f = 2.5;
    err = fresh_error();
    assert_int_equal(modal_get_float(l, &f, &err), MODAL_ETYPE);
    assert_message_contains(err, "float");
    assert_message_contains(err, "list");
    assert_true(f == 2.5);

    const char *str = "keep";
    size_t len = 77;
    err = fresh_error();
    assert_int_equal(modal_get_string(i, &str, &len, &err), MODAL_ETYPE);
    assert_message_contains(err, "string");
    assert_message_contains(err, "int");
    assert_string_equal(str, "keep");
    assert_int_equal(len, 77);

    const void *p = &len;
    err = fresh_error();
    assert_int_equal(modal_get_bytes(s, &p, &len, &err), MODAL_ETYPE);
    assert_message_contains(err, "bytes");
    assert_message_contains(err, "string");
    assert_ptr_equal(p, &len);
    assert_int_equal(len, 77);

    err = fresh_error();
    assert_int_equal(modal_get_array(l, MODAL_F32, &p, &len, &err),
                     MODAL_ETYPE);
    assert_message_contains(err, "expected an f32 array, got a list");
    assert_ptr_equal(p, &len);

    modal_dtype dt = MODAL_F64;
    err = fresh_error();
    assert_int_equal(modal_array_dtype(i, &dt, &err), MODAL_ETYPE);
    assert_message_contains(err, "array");
    assert_message_contains(err, "int");
    assert_int_equal(dt, MODAL_F64);

    const char *key = "keep";
    const modal_value *val = i;
    err = fresh_error();
    assert_int_equal(modal_map_entry(l, 0, &key, &val, &err), MODAL_ETYPE);
    assert_message_contains(err, "map");
    assert_message_contains(err, "list");
    assert_string_equal(key, "keep");
    assert_ptr_equal(val, i);

    /* A NULL err is accepted everywhere. */
    assert_int_equal(modal_get_int(s, &n, NULL), MODAL_ETYPE);

    modal_value_free(s);
    modal_value_free(i);
    modal_value_free(l);
}

static void test_array_dtype_mismatch(void **state)
{
    modal_error err = fresh_error();
    const int32_t src[2] = {1, 2};
    const void *p = NULL;
    size_t count = 5;
    modal_value *v = modal_array(MODAL_I32, src, 2);
    assert_int_equal(modal_get_array(v, MODAL_F32, &p, &count, &err),
                     MODAL_ETYPE);
    assert_int_equal(err.code, MODAL_ETYPE);
    assert_message_contains(err, "expected an f32 array, got an i32 array");
    assert_null(p);
    assert_int_equal(count, 5);

    err = fresh_error();
    assert_int_equal(modal_get_array(v, MODAL_U8, &p, &count, &err),
                     MODAL_ETYPE);
    assert_message_contains(err, "expected a u8 array, got an i32 array");

    err = fresh_error();
    assert_int_equal(modal_get_array(v, (modal_dtype)42, &p, &count, &err),
                     MODAL_EINVAL);
    assert_message_contains(err, "42");
    modal_value_free(v);
}

/* ---- NULL handling ----------------------------------------------- */

static void test_null_pointers(void **state)
{
    modal_error err = fresh_error();
    modal_value_free(NULL);
    assert_int_equal(modal_value_type(NULL), MODAL_TYPE_NULL);
    assert_int_equal(modal_value_len(NULL), 0);
    assert_null(modal_list_get(NULL, 0));
    assert_null(modal_map_get(NULL, "k"));
    assert_null(modal_value_copy(NULL));
    assert_true(modal_value_equal(NULL, NULL));
    assert_int_equal(modal_array_shape(NULL, NULL), 0);

    modal_value *n = modal_null();
    assert_false(modal_value_equal(NULL, n));
    assert_false(modal_value_equal(n, NULL));
    modal_value_free(n);

    bool b = true;
    assert_int_equal(modal_get_bool(NULL, &b, &err), MODAL_ETYPE);
    assert_message_contains(err, "bool");
    assert_message_contains(err, "null");
    assert_message_contains(err, "NULL pointer");
    assert_true(b);

    int64_t i = 1;
    double f = 1;
    const char *s = "keep";
    const void *p = s;
    size_t len = 3;
    modal_dtype dt = MODAL_I8;
    assert_int_equal(modal_get_int(NULL, &i, &err), MODAL_ETYPE);
    assert_int_equal(modal_get_float(NULL, &f, &err), MODAL_ETYPE);
    assert_int_equal(modal_get_string(NULL, &s, &len, &err), MODAL_ETYPE);
    assert_int_equal(modal_get_bytes(NULL, &p, &len, &err), MODAL_ETYPE);
    assert_int_equal(modal_get_array(NULL, MODAL_U8, &p, &len, &err),
                     MODAL_ETYPE);
    assert_message_contains(err, "null");
    assert_int_equal(modal_array_dtype(NULL, &dt, &err), MODAL_ETYPE);
    assert_int_equal(modal_map_entry(NULL, 0, &s, NULL, &err), MODAL_ETYPE);
    assert_int_equal(i, 1);
    assert_true(f == 1);
    assert_string_equal(s, "keep");
    assert_int_equal(len, 3);
    assert_int_equal(dt, MODAL_I8);

    /* Out pointers are optional: a call can only check the type. */
    modal_value *v = modal_int(3);
    assert_int_equal(modal_get_int(v, NULL, NULL), MODAL_OK);
    assert_int_equal(modal_get_float(v, NULL, NULL), MODAL_OK);
    modal_value_free(v);
}

/* ---- lists ------------------------------------------------------- */

static void test_list_append_get(void **state)
{
    modal_error err = fresh_error();
    modal_value *l = modal_list();
    assert_non_null(l);
    assert_int_equal(modal_value_type(l), MODAL_TYPE_LIST);
    assert_int_equal(modal_value_len(l), 0);
    assert_null(modal_list_get(l, 0));

    /* Enough items to grow the storage several times. */
    for (int64_t k = 0; k < 1000; k++)
        assert_int_equal(modal_list_append(l, modal_int(k), &err), MODAL_OK);
    assert_int_equal(err.code, MODAL_OK);
    assert_int_equal(modal_value_len(l), 1000);
    for (size_t k = 0; k < 1000; k++) {
        int64_t got = -1;
        assert_int_equal(modal_get_int(modal_list_get(l, k), &got, NULL),
                         MODAL_OK);
        assert_int_equal(got, (int64_t)k);
    }
    assert_null(modal_list_get(l, 1000));
    assert_null(modal_list_get(l, SIZE_MAX));
    modal_value_free(l);
}

static void test_list_append_errors(void **state)
{
    modal_error err = fresh_error();
    modal_value *l = modal_list();

    /* A NULL item: nothing to free, EINVAL. */
    assert_int_equal(modal_list_append(l, NULL, &err), MODAL_EINVAL);
    assert_int_equal(err.code, MODAL_EINVAL);
    assert_message_contains(err, "NULL");

    /* The list itself: refused, and the list stays usable. */
    err = fresh_error();
    assert_int_equal(modal_list_append(l, l, &err), MODAL_EINVAL);
    assert_message_contains(err, "itself");
    assert_int_equal(modal_value_len(l), 0);
    assert_int_equal(modal_list_append(l, modal_null(), NULL), MODAL_OK);

    /* Not a list: the item is freed (valgrind proves it). */
    modal_value *m = modal_map();
    err = fresh_error();
    assert_int_equal(modal_list_append(m, modal_string("leak?"), &err),
                     MODAL_ETYPE);
    assert_message_contains(err, "list");
    assert_message_contains(err, "map");
    assert_int_equal(modal_value_len(m), 0);
    err = fresh_error();
    assert_int_equal(modal_list_append(NULL, modal_string("leak?"), &err),
                     MODAL_ETYPE);
    assert_message_contains(err, "null");

    assert_int_equal(modal_value_len(l), 1);
    modal_value_free(l);
    modal_value_free(m);
}

static void test_list_of(void **state)
{
    modal_value *items[3] = {modal_int(1), modal_string("two"),
                             modal_float(3.0)};
    modal_value *l = modal_list_of(items, 3);
    assert_non_null(l);
    assert_int_equal(modal_value_len(l), 3);
    assert_ptr_equal(modal_list_get(l, 0), items[0]);
    assert_ptr_equal(modal_list_get(l, 2), items[2]);
    /* The list can grow after being made at its exact size. */
    assert_int_equal(modal_list_append(l, modal_null(), NULL), MODAL_OK);
    assert_int_equal(modal_value_len(l), 4);
    modal_value_free(l);

    modal_value *empty = modal_list_of(NULL, 0);
    assert_non_null(empty);
    assert_int_equal(modal_value_len(empty), 0);
    modal_value_free(empty);

    /* A NULL item frees every other item; valgrind proves no leak. */
    modal_value *with_null[4] = {modal_int(1), NULL, modal_string("x"),
                                 modal_list()};
    assert_null(modal_list_of(with_null, 4));
    assert_null(modal_args(modal_int(1), modal_string("a"), NULL));

    modal_value *args = modal_args(modal_int(1), modal_string("x"));
    assert_non_null(args);
    assert_int_equal(modal_value_len(args), 2);
    modal_value_free(args);
}

/* ---- maps -------------------------------------------------------- */

static void test_map_set_get_entry(void **state)
{
    modal_error err = fresh_error();
    modal_value *m = modal_map();
    assert_non_null(m);
    assert_int_equal(modal_value_type(m), MODAL_TYPE_MAP);
    assert_null(modal_map_get(m, "a"));

    char key[16] = "b";
    assert_int_equal(modal_map_set(m, key, modal_int(1), &err), MODAL_OK);
    key[0] = 'z'; /* the key was copied */
    assert_int_equal(modal_map_set(m, "a", modal_int(2), &err), MODAL_OK);
    assert_int_equal(modal_map_set(m, "c", modal_int(3), &err), MODAL_OK);
    assert_int_equal(err.code, MODAL_OK);
    assert_int_equal(modal_value_len(m), 3);

    int64_t got = 0;
    assert_int_equal(modal_get_int(modal_map_get(m, "a"), &got, NULL),
                     MODAL_OK);
    assert_int_equal(got, 2);
    assert_null(modal_map_get(m, "z"));
    assert_null(modal_map_get(m, NULL));
    assert_null(modal_map_get(m, ""));

    /* Entries come in insertion order. */
    const char *names[3] = {"b", "a", "c"};
    for (size_t i = 0; i < 3; i++) {
        const char *k = NULL;
        const modal_value *v = NULL;
        assert_int_equal(modal_map_entry(m, i, &k, &v, &err), MODAL_OK);
        assert_string_equal(k, names[i]);
        assert_int_equal(modal_get_int(v, &got, NULL), MODAL_OK);
        assert_int_equal(got, (int64_t)i + 1);
    }
    const char *k = "keep";
    err = fresh_error();
    assert_int_equal(modal_map_entry(m, 3, &k, NULL, &err), MODAL_ERANGE);
    assert_int_equal(err.code, MODAL_ERANGE);
    assert_message_contains(err, "3");
    assert_string_equal(k, "keep");

    /* The empty string is a key like any other. */
    assert_int_equal(modal_map_set(m, "", modal_null(), NULL), MODAL_OK);
    assert_non_null(modal_map_get(m, ""));
    modal_value_free(m);
}

static void test_map_set_replaces_in_place(void **state)
{
    modal_value *m = modal_map();
    assert_int_equal(modal_map_set(m, "x", modal_int(1), NULL), MODAL_OK);
    assert_int_equal(modal_map_set(m, "y", modal_string("old"), NULL),
                     MODAL_OK);
    assert_int_equal(modal_map_set(m, "z", modal_int(3), NULL), MODAL_OK);
    /* The old string is freed; valgrind proves it. */
    assert_int_equal(modal_map_set(m, "y", modal_string("new"), NULL),
                     MODAL_OK);
    assert_int_equal(modal_value_len(m), 3);

    const char *k = NULL;
    const modal_value *v = NULL;
    const char *s = NULL;
    assert_int_equal(modal_map_entry(m, 1, &k, &v, NULL), MODAL_OK);
    assert_string_equal(k, "y");
    assert_int_equal(modal_get_string(v, &s, NULL, NULL), MODAL_OK);
    assert_string_equal(s, "new");
    assert_ptr_equal(modal_map_get(m, "y"), v);
    modal_value_free(m);
}

static void test_map_set_errors(void **state)
{
    modal_error err = fresh_error();
    modal_value *m = modal_map();

    assert_int_equal(modal_map_set(m, NULL, modal_string("freed"), &err),
                     MODAL_EINVAL);
    assert_int_equal(err.code, MODAL_EINVAL);
    assert_message_contains(err, "key");

    err = fresh_error();
    assert_int_equal(modal_map_set(m, "k", NULL, &err), MODAL_EINVAL);
    assert_message_contains(err, "\"k\"");

    err = fresh_error();
    assert_int_equal(modal_map_set(m, "self", m, &err), MODAL_EINVAL);
    assert_message_contains(err, "itself");

    modal_value *l = modal_list();
    err = fresh_error();
    assert_int_equal(modal_map_set(l, "k", modal_string("freed"), &err),
                     MODAL_ETYPE);
    assert_message_contains(err, "map");
    assert_message_contains(err, "list");
    err = fresh_error();
    assert_int_equal(modal_map_set(NULL, "k", modal_string("freed"), &err),
                     MODAL_ETYPE);
    assert_message_contains(err, "null");

    assert_int_equal(modal_value_len(m), 0);
    modal_value_free(m);
    modal_value_free(l);
}

static void test_map_many_keys(void **state)
{
    modal_value *m = modal_map();
    char key[32];
    for (int i = 0; i < 500; i++) {
        snprintf(key, sizeof key, "key%d", i);
        assert_int_equal(modal_map_set(m, key, modal_int(i), NULL), MODAL_OK);
    }
    assert_int_equal(modal_value_len(m), 500);
    for (int i = 0; i < 500; i++) {
        int64_t got = -1;
        snprintf(key, sizeof key, "key%d", i);
        assert_int_equal(modal_get_int(modal_map_get(m, key), &got, NULL),
                         MODAL_OK);
        assert_int_equal(got, i);
    }
    modal_value_free(m);
}

/* ---- copy and equality ------------------------------------------- */

/* A tree holding one of every type, nested a few levels. */
static modal_value *deep_tree(void)
{
    const float f32[6] = {1, 2, 3, 4, 5, 6};
    const size_t shape[2] = {2, 3};
    modal_value *inner = modal_map();
    modal_value *root = modal_map();
    if (inner == NULL || root == NULL) {
        modal_value_free(inner);
        modal_value_free(root);
        return NULL;
    }
    modal_map_set(inner, "bytes", modal_bytes("\0\1\2", 3), NULL);
    modal_map_set(inner, "arr", modal_array_nd(MODAL_F32, f32, 2, shape),
                  NULL);
    modal_map_set(inner, "empty", modal_array(MODAL_U8, NULL, 0), NULL);
    modal_map_set(inner, "list",
                  modal_args(modal_null(), modal_bool(true), modal_int(-7),
                             modal_float(NAN), modal_list(), modal_map()),
                  NULL);
    modal_map_set(root, "name", modal_string("tree"), NULL);
    modal_map_set(root, "inner", inner, NULL);
    modal_map_set(root, "nested",
                  modal_args(modal_args(modal_args(modal_string("deep")))),
                  NULL);
    return root;
}

static void test_copy_equal_deep(void **state)
{
    modal_value *a = deep_tree();
    assert_non_null(a);
    assert_int_equal(modal_value_len(a), 3);
    modal_value *b = modal_value_copy(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_true(modal_value_equal(a, b));
    assert_true(modal_value_equal(b, a));
    assert_true(modal_value_equal(a, a));

    /* The copy is deep: changing it leaves the original alone. */
    modal_value *inner = (modal_value *)modal_map_get(b, "inner");
    modal_value *arr = (modal_value *)modal_map_get(inner, "arr");
    float *w = modal_array_data_mut(arr);
    w[0] = 42;
    assert_false(modal_value_equal(a, b));
    w[0] = 1;
    assert_true(modal_value_equal(a, b));
    assert_int_equal(modal_map_set(inner, "bytes", modal_bytes("\0\1", 2),
                                   NULL),
                     MODAL_OK);
    assert_false(modal_value_equal(a, b));
    modal_value_free(b);

    /* A map with the same entries in another order is another value. */
    modal_value *m1 = modal_map(), *m2 = modal_map();
    modal_map_set(m1, "a", modal_int(1), NULL);
    modal_map_set(m1, "b", modal_int(2), NULL);
    modal_map_set(m2, "b", modal_int(2), NULL);
    modal_map_set(m2, "a", modal_int(1), NULL);
    assert_false(modal_value_equal(m1, m2));
    modal_value_free(m2);
    m2 = modal_map();
    modal_map_set(m2, "a", modal_int(1), NULL);
    modal_map_set(m2, "c", modal_int(2), NULL);
    assert_false(modal_value_equal(m1, m2));
    modal_value *m3 = modal_value_copy(m1);
    assert_true(modal_value_equal(m1, m3));
    modal_value_free(m1);
    modal_value_free(m2);
    modal_value_free(m3);

    /* Lists of other lengths, and values of other types, differ. */
    modal_value *l1 = modal_args(modal_int(1));
    modal_value *l2 = modal_args(modal_int(1), modal_int(2));
    modal_value *one = modal_int(1), *onef = modal_float(1.0);
    modal_value *s1 = modal_string("ab"), *s2 = modal_string("ac");
    modal_value *bt = modal_bool(true), *bf = modal_bool(false);
    assert_false(modal_value_equal(l1, l2));
    assert_false(modal_value_equal(one, onef));
    assert_false(modal_value_equal(s1, s2));
    assert_false(modal_value_equal(bt, bf));
    modal_value *bytes = modal_bytes("ab", 2);
    assert_false(modal_value_equal(s1, bytes));
    modal_value_free(l1);
    modal_value_free(l2);
    modal_value_free(one);
    modal_value_free(onef);
    modal_value_free(s1);
    modal_value_free(s2);
    modal_value_free(bt);
    modal_value_free(bf);
    modal_value_free(bytes);

    /* Copying the whole nesting depth the codec allows works too. */
    modal_value *chain = modal_int(0);
    for (int d = 1; d < MODAL_MAX_DEPTH; d++)
        chain = modal_args(chain);
    assert_non_null(chain);
    modal_value *chain2 = modal_value_copy(chain);
    assert_true(modal_value_equal(chain, chain2));
    modal_value_free(chain);
    modal_value_free(chain2);

    modal_value_free(a);
}

static void test_nan_equality(void **state)
{
    double nan1 = NAN, nan2;
    uint64_t bits;
    memcpy(&bits, &nan1, sizeof bits);
    bits ^= 1; /* another NaN payload */
    memcpy(&nan2, &bits, sizeof nan2);
    assert_true(isnan(nan2));

    modal_value *a = modal_float(nan1), *b = modal_float(nan1);
    modal_value *c = modal_float(nan2);
    modal_value *z = modal_float(0.0), *nz = modal_float(-0.0);
    assert_true(modal_value_equal(a, b));
    assert_false(modal_value_equal(a, c));
    assert_false(modal_value_equal(z, nz));
    modal_value *copy = modal_value_copy(c);
    assert_true(modal_value_equal(c, copy));
    double out = 0;
    assert_int_equal(modal_get_float(copy, &out, NULL), MODAL_OK);
    assert_memory_equal(&out, &nan2, sizeof out);
    modal_value_free(a);
    modal_value_free(b);
    modal_value_free(c);
    modal_value_free(z);
    modal_value_free(nz);
    modal_value_free(copy);
}

/* ---- borrowed values --------------------------------------------- */

static void test_borrowed_array_keeps_buffer(void **state)
{
    modal__buf *buf = modal__buf_new(64 + 4 * sizeof(float));
    assert_non_null(buf);
    float *src = (float *)(buf->base + 64);
    for (int i = 0; i < 4; i++)
        src[i] = (float)i + 0.5f;
    const size_t shape[2] = {2, 2};
    modal_value *v = modal__array_borrow(buf, MODAL_F32, src, 2, shape);
    assert_non_null(v);
    assert_int_equal(buf->refs, 2);

    /* Dropping the creator's reference leaves the data alive. */
    modal__buf_unref(buf);
    const void *p = NULL;
    size_t count = 0;
    assert_int_equal(modal_get_array(v, MODAL_F32, &p, &count, NULL),
                     MODAL_OK);
    assert_ptr_equal(p, src);
    assert_int_equal(count, 4);
    assert_true(((const float *)p)[3] == 3.5f);

    /* A copy owns its data and outlives the borrowed original. */
    modal_value *copy = modal_value_copy(v);
    assert_true(modal_value_equal(v, copy));
    modal_value_free(v); /* releases the buffer */
    assert_int_equal(modal_get_array(copy, MODAL_F32, &p, &count, NULL),
                     MODAL_OK);
    assert_true(((const float *)p)[3] == 3.5f);
    modal_value_free(copy);
}

static void test_borrowed_bytes_keeps_buffer(void **state)
{
    modal__buf *buf = modal__buf_new(16);
    assert_non_null(buf);
    memcpy(buf->base, "0123456789abcdef", 16);
    modal_value *v = modal__bytes_borrow(buf, buf->base + 10, 6);
    modal_value *e = modal__bytes_borrow(buf, NULL, 0);
    assert_non_null(v);
    assert_non_null(e);
    modal__buf_unref(buf);

    const void *p = NULL;
    size_t len = 0;
    assert_int_equal(modal_get_bytes(v, &p, &len, NULL), MODAL_OK);
    assert_int_equal(len, 6);
    assert_memory_equal(p, "abcdef", 6);
    modal_value *owned = modal_bytes("abcdef", 6);
    assert_true(modal_value_equal(v, owned));
    modal_value_free(owned);

    p = NULL;
    assert_int_equal(modal_get_bytes(e, &p, &len, NULL), MODAL_OK);
    assert_int_equal(len, 0);
    assert_non_null(p);
    modal_value_free(v);
    modal_value_free(e); /* the last reference */
}

static void test_borrow_rejects_bad_ranges(void **state)
{
    modal__buf *buf = modal__buf_new(32);
    assert_non_null(buf);
    const size_t too_big[1] = {5}; /* 5 * 8 > 32 */
    const size_t fits[1] = {4};
    const size_t none[1] = {0};
    assert_null(modal__bytes_borrow(NULL, "x", 1));
    assert_null(modal__bytes_borrow(buf, buf->base + 30, 3));
    char outside[4] = "abc";
    assert_null(modal__bytes_borrow(buf, outside, 1));
    assert_null(modal__bytes_borrow(buf, NULL, 1));
    assert_null(modal__array_borrow(NULL, MODAL_F64, "x", 1, fits));
    assert_null(modal__array_borrow(buf, MODAL_F64, buf->base, 1, too_big));
    assert_null(modal__array_borrow(buf, MODAL_F64, buf->base + 8, 1, fits));
    assert_null(modal__array_borrow(buf, MODAL_F64, NULL, 1, fits));
    assert_null(modal__array_borrow(buf, (modal_dtype)9, buf->base, 1, fits));
    assert_null(modal__array_borrow(buf, MODAL_F64, buf->base, 0, fits));
    /* Failures take no reference. */
    assert_int_equal(buf->refs, 1);

    /* The exact end of the buffer is fine, as is an empty array. */
    modal_value *whole = modal__array_borrow(buf, MODAL_F64, buf->base, 1,
                                             fits);
    modal_value *tail = modal__bytes_borrow(buf, buf->base + 32, 0);
    modal_value *empty = modal__array_borrow(buf, MODAL_F64, NULL, 1, none);
    assert_non_null(whole);
    assert_non_null(tail);
    assert_non_null(empty);
    const void *p = NULL;
    size_t count = 9;
    assert_int_equal(modal_get_array(empty, MODAL_F64, &p, &count, NULL),
                     MODAL_OK);
    assert_int_equal(count, 0);
    assert_non_null(p);
    assert_int_equal(buf->refs, 4);
    modal__buf_unref(buf);
    modal_value_free(whole);
    modal_value_free(tail);
    modal_value_free(empty);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_dtype_names_sizes_parse),
        cmocka_unit_test(test_null_and_bool),
        cmocka_unit_test(test_int),
        cmocka_unit_test(test_float),
        cmocka_unit_test(test_get_float_accepts_int),
        cmocka_unit_test(test_string),
        cmocka_unit_test(test_string_n),
        cmocka_unit_test(test_bytes),
        cmocka_unit_test(test_array_1d),
        cmocka_unit_test(test_array_nd_shapes),
        cmocka_unit_test(test_array_new_and_data_mut),
        cmocka_unit_test(test_empty_arrays),
        cmocka_unit_test(test_shape_overflow),
        cmocka_unit_test(test_type_mismatch_messages),
        cmocka_unit_test(test_array_dtype_mismatch),
        cmocka_unit_test(test_null_pointers),
        cmocka_unit_test(test_list_append_get),
        cmocka_unit_test(test_list_append_errors),
        cmocka_unit_test(test_list_of),
        cmocka_unit_test(test_map_set_get_entry),
        cmocka_unit_test(test_map_set_replaces_in_place),
        cmocka_unit_test(test_map_set_errors),
        cmocka_unit_test(test_map_many_keys),
        cmocka_unit_test(test_copy_equal_deep),
        cmocka_unit_test(test_nan_equality),
        cmocka_unit_test(test_borrowed_array_keeps_buffer),
        cmocka_unit_test(test_borrowed_bytes_keeps_buffer),
        cmocka_unit_test(test_borrow_rejects_bad_ranges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
