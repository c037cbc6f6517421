/*
 * test_resources.c: the runtime's resource accounting (runtime/resources.c)
 * through its interface: what fits now, what can never fit and how that is
 * worded, releases, fractions of a core, device slots, the status object.
 * Enforcement with cgroups is covered by test_capacity where the host
 * allows it; here the allocator accounts only (it must not move the test
 * into a cgroup).
 */
#include "testutil.h"

#include "../../runtime/resources.c"

rt_runtime rt;

/* The runtime's log: the allocator logs its capacity at init. */
void rt_log(int level, const char *fmt, ...)
{
}

static void test_reserve_until_full(void **state)
{
    rt_res_init(2, 1000, false);
    rt_res_req one = {.cpu = 1, .memory = 300};
    rt_res_grant a, b, c;
    assert_null(rt_res_reserve(&one, &a));
    assert_null(rt_res_reserve(&one, &b));
    assert_true(a.held && b.held);
    assert_string_equal(rt_res_reserve(&one, &c), "cpu");
    assert_false(c.held);
    rt_res_release(&a);
    assert_false(a.held);
    assert_null(rt_res_reserve(&one, &a));
    rt_res_release(&a);
    rt_res_release(&b);
    rt_res_release(&b); /* a grant not held: no-op */
    rt_res_req big = {.cpu = 0, .memory = 600};
    assert_null(rt_res_reserve(&big, &a));
    assert_string_equal(rt_res_reserve(&big, &b), "memory");
    rt_res_release(&a);
    /* A request for nothing always fits. */
    rt_res_req none = {0};
    for (int i = 0; i < 100; i++)
        assert_null(rt_res_reserve(&none, &a));
}

/* Sixteen eighths of a core fill two cores exactly, not fifteen. */
static void test_fractions_add_up(void **state)
{
    rt_res_init(2, 1000, false);
    rt_res_req eighth = {.cpu = 0.125};
    rt_res_grant g[17];
    for (int i = 0; i < 16; i++)
        assert_null(rt_res_reserve(&eighth, &g[i]));
    assert_string_equal(rt_res_reserve(&eighth, &g[16]), "cpu");
    for (int i = 0; i < 16; i++)
        rt_res_release(&g[i]);
    rt_res_req two = {.cpu = 2};
    assert_null(rt_res_reserve(&two, &g[0]));
    rt_res_release(&g[0]);
}

static void test_never_fits_message(void **state)
{
    rt_res_init(2, 1000, false);
    modal_error err;
    rt_res_req cpu = {.cpu = 64}, mem = {.memory = 4096}, dev = {.devices = 1}, ok = {2, 1000, 0};
    assert_int_equal(rt_res_check(&cpu, "fn", &err), MODAL_ERESOURCE);
    assert_string_equal(err.message, "fn: asks for 64 CPUs but this runtime has 2 (--cpus); "
                                     "lower .cpu or start the runtime with more --cpus");
    assert_int_equal(rt_res_check(&mem, "fn", &err), MODAL_ERESOURCE);
    assert_non_null(strstr(err.message, "fn: asks for 4096 MiB of memory but this runtime has "
                                        "1000 MiB (--memory)"));
    assert_int_equal(rt_res_check(&dev, "fn", &err), MODAL_ERESOURCE);
    assert_non_null(strstr(err.message, "fn: asks for 1 device but this runtime has 0"));
    assert_int_equal(rt_res_check(&ok, "fn", &err), MODAL_OK);
}

static void test_device_slots(void **state)
{
    rt_res_init(2, 1000, false);
    assert_int_equal(rt_res_add_device("gpu0"), 0);
    assert_int_equal(rt_res_add_device("gpu1"), 1);
    rt_res_req one = {.devices = 1};
    rt_res_grant a, b, c;
    assert_null(rt_res_reserve(&one, &a));
    assert_null(rt_res_reserve(&one, &b));
    assert_true(a.devices != b.devices && (a.devices | b.devices) == 3);
    assert_string_equal(rt_res_reserve(&one, &c), "devices");
    cJSON *j = rt_resources_status();
    const cJSON *used = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(j, "reserved"), "devices");
    assert_int_equal(cJSON_GetArraySize(used), 2);
    cJSON_Delete(j);
    rt_res_release(&a);
    assert_null(rt_res_reserve(&one, &c));
    assert_int_equal(c.devices, 1); /* the slot a gave back */
}

static void test_status_object(void **state)
{
    rt_res_init(3, 2048, false);
    rt_res_req req = {.cpu = 1.5, .memory = 512};
    rt_res_grant g;
    assert_null(rt_res_reserve(&req, &g));
    cJSON *j = rt_resources_status();
    const cJSON *cap = cJSON_GetObjectItemCaseSensitive(j, "capacity");
    const cJSON *used = cJSON_GetObjectItemCaseSensitive(j, "reserved");
    assert_true(cJSON_GetObjectItemCaseSensitive(cap, "cpu")->valuedouble == 3);
    assert_true(cJSON_GetObjectItemCaseSensitive(cap, "memory_mib")->valuedouble == 2048);
    assert_true(cJSON_GetObjectItemCaseSensitive(used, "cpu")->valuedouble == 1.5);
    assert_true(cJSON_GetObjectItemCaseSensitive(used, "memory_mib")->valuedouble == 512);
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(j, "enforcement");
    assert_string_equal(mode->valuestring, rt_res_enforced() ? "cgroup" : "accounting");
    assert_true(cJSON_GetObjectItemCaseSensitive(j, "why")->valuestring[0] != '\0');
    cJSON_Delete(j);
    rt_res_release(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserve_until_full),
        cmocka_unit_test(test_fractions_add_up),
        cmocka_unit_test(test_never_fits_message),
        cmocka_unit_test(test_device_slots),
        cmocka_unit_test(test_status_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
