/*
 * test_fmt.c: modal__fmt_int (lib/fmt.c) writes what printf's %lld writes,
 * for the edges of long long and for numbers of every length; and
 * modal__json_num, which uses it, gives JSON that reads back the same.
 */
#include "testutil.h"

#include <limits.h>
#include <stdio.h>

static void check(long long v)
{
    char want[32], got[MODAL__FMT_INT_SIZE];
    int wl = snprintf(want, sizeof want, "%lld", v);
    size_t gl = modal__fmt_int(got, v);
    assert_int_equal(gl, (size_t)wl);
    assert_string_equal(got, want);
}

static void test_fmt_int_matches_printf(void **state)
{
    check(0);
    check(1);
    check(-1);
    check(9);
    check(10);
    check(-10);
    check(LLONG_MAX);
    check(LLONG_MIN);
    check(LLONG_MIN + 1);
    /* Every length, both signs, around each power of ten. */
    for (long long p = 1; p <= LLONG_MAX / 10; p *= 10) {
        check(p - 1);
        check(p);
        check(p + 1);
        check(-p);
        check(-(p - 1));
    }
}

static void test_json_num_reads_back(void **state)
{
    const double vs[] = {0, 1, -1, 42, 123456789, -987654321, 8.9e15, -8.9e15, 0.5, 1e300};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        cJSON *o = cJSON_CreateObject();
        assert_int_equal(modal__json_num(o, "n", vs[i]), 0);
        char *text = cJSON_PrintUnformatted(o);
        cJSON *back = cJSON_Parse(text);
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(back, "n");
        assert_true(cJSON_IsNumber(n));
        assert_true(n->valuedouble == vs[i]);
        cJSON_Delete(back);
        cJSON_free(text);
        cJSON_Delete(o);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fmt_int_matches_printf),
        cmocka_unit_test(test_json_num_reads_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
