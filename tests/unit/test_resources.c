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
    rt_res_req cpu = {.cpu = 64}, mem = {.memory = 4096}, dev = {.devices = 1}, ok = {.cpu = 2, .memory = 1000};
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

/* A request for spec (the .gpu grammar), its choices in c. */
static rt_res_req gpu_req(const char *spec, modal__gpu_choice *c)
{
    size_t n;
    assert_int_equal(modal__gpu_spec_parse(spec, c, &n, NULL), MODAL_OK);
    return (rt_res_req){.gpu = c, .ngpu = n, .gpu_spec = spec};
}

/* Slots 0,1: H100; 2: H200; 3,4: A100-80GB; 5: an untyped slot. */
static void gpu_machine(void)
{
    rt_res_init(64, 100000, false);
    assert_int_equal(rt_res_add_gpu("GPU-a", "H100", 81559), 0);
    assert_int_equal(rt_res_add_gpu("GPU-b", "H100", 81559), 1);
    assert_int_equal(rt_res_add_gpu("GPU-c", "H200", 144384), 2);
    assert_int_equal(rt_res_add_gpu("GPU-d", "A100-80GB", 81920), 3);
    assert_int_equal(rt_res_add_gpu("GPU-e", "A100-80GB", 81920), 4);
    assert_int_equal(rt_res_add_device("other"), 5);
}

/* Exact types first, lowest index first, then upgrades; "!" never upgrades;
 * all or nothing; one type per grant. */
static void test_gpu_placement(void **state)
{
    gpu_machine();
    modal__gpu_choice c[MODAL__GPU_MAX_CHOICES];
    rt_res_req h100 = gpu_req("H100", c);
    rt_res_grant a, b, d, e;
    assert_null(rt_res_reserve(&h100, &a));
    assert_int_equal(a.devices, 1u << 0);
    assert_null(rt_res_reserve(&h100, &b));
    assert_int_equal(b.devices, 1u << 1);
    assert_null(rt_res_reserve(&h100, &d)); /* the H100s are busy: the H200 */
    assert_int_equal(d.devices, 1u << 2);
    assert_int_equal(rt_res_grant_count(&d), 1);
    assert_string_equal(rt_res_device_name(2), "GPU-c");
    assert_string_equal(rt_res_reserve(&h100, &e), "gpu");
    assert_false(e.held);
    rt_res_release(&d);
    modal__gpu_choice c2[MODAL__GPU_MAX_CHOICES];
    rt_res_req strict = gpu_req("H100!", c2);
    assert_string_equal(rt_res_reserve(&strict, &e), "gpu"); /* the H200 is free */
    assert_true(rt_res_grant_serves(&a, &strict));
    rt_res_release(&a);
    assert_null(rt_res_reserve(&strict, &e));
    assert_int_equal(e.devices, 1u << 0);
    rt_res_release(&b);
    rt_res_release(&e);
    /* Two H100 and one H200: "h100:3" never mixes them. */
    modal__gpu_choice c3[MODAL__GPU_MAX_CHOICES];
    rt_res_req three = gpu_req("h100:3", c3);
    assert_string_equal(rt_res_reserve(&three, &a), "gpu");
    modal__gpu_choice c4[MODAL__GPU_MAX_CHOICES];
    rt_res_req a100 = gpu_req("A100:2", c4);
    assert_null(rt_res_reserve(&a100, &a));
    assert_int_equal(a.devices, (1u << 3) | (1u << 4));
    assert_false(rt_res_grant_serves(&a, &h100));
    /* A fallback list: the first choice that fits now wins. */
    modal__gpu_choice c5[MODAL__GPU_MAX_CHOICES];
    rt_res_req list = gpu_req("A100, H200, H100", c5);
    assert_null(rt_res_reserve(&list, &b));
    assert_int_equal(b.devices, 1u << 2);
    modal__gpu_choice c6[MODAL__GPU_MAX_CHOICES];
    rt_res_req any = gpu_req("any:2", c6);
    assert_null(rt_res_reserve(&any, &d));
    assert_int_equal(d.devices, 3u);
    assert_string_equal(rt_res_reserve(&any, &e), "gpu");
    /* Untyped slots go to counted requests, GPUs never do. */
    rt_res_req one = {.devices = 1};
    assert_null(rt_res_reserve(&one, &e));
    assert_int_equal(e.devices, 1u << 5);
    rt_res_release(&a);
    rt_res_release(&b);
    rt_res_release(&d);
    rt_res_release(&e);
}

/* What can never fit fails with MODAL_EGPU naming what the runtime has. */
static void test_gpu_never_fits(void **state)
{
    gpu_machine();
    modal_error err;
    modal__gpu_choice c[MODAL__GPU_MAX_CHOICES];
    rt_res_req r = gpu_req("H100:4", c);
    assert_int_equal(rt_res_check(&r, "train", &err), MODAL_EGPU);
    assert_non_null(strstr(err.message, "train: asks for gpu \"H100:4\" but this runtime has "
                                        "2 H100 (80 GiB), 1 H200 (141 GiB) and 2 A100-80GB "
                                        "(80 GiB); ask for a GPU it has"));
    r = gpu_req("H200!:2", c);
    assert_int_equal(rt_res_check(&r, "train", &err), MODAL_EGPU);
    r = gpu_req("B200, H100:3", c);
    assert_int_equal(rt_res_check(&r, "train", &err), MODAL_EGPU);
    r = gpu_req("B200, H100:2", c); /* a choice that can never fit is skipped */
    assert_int_equal(rt_res_check(&r, "train", &err), MODAL_OK);
    r = gpu_req("any:5", c);
    assert_int_equal(rt_res_check(&r, "train", &err), MODAL_EGPU);
    rt_res_init(2, 1000, false);
    rt_res_set_no_gpu_why("no CUDA driver: libcuda.so.1: cannot open shared object file");
    r = gpu_req("any", c);
    assert_int_equal(rt_res_check(&r, "f", &err), MODAL_EGPU);
    assert_non_null(strstr(err.message, "f: asks for gpu \"any\" but this runtime has no GPU "
                                        "(no CUDA driver: libcuda.so.1: cannot open"));
    assert_non_null(strstr(err.message, "); run it on a runtime with GPUs, or drop .gpu"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserve_until_full),
        cmocka_unit_test(test_fractions_add_up),
        cmocka_unit_test(test_never_fits_message),
        cmocka_unit_test(test_device_slots),
        cmocka_unit_test(test_gpu_placement),
        cmocka_unit_test(test_gpu_never_fits),
        cmocka_unit_test(test_status_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
