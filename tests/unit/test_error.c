/*
 * test_error.c: lib/error.c: a distinct name and message for every status
 * code, the fallbacks for unknown codes, the run-time version, filling
 * modal_error, and the log hook.
 */
#include "testutil.h"

static void test_every_code_named(void **state)
{
    for (int i = 0; i < MODAL__STATUS_COUNT; i++) {
        const char *msg = modal_strerror((modal_status)i);
        const char *name = modal_status_name((modal_status)i);
        assert_non_null(msg);
        assert_non_null(name);
        assert_true(msg[0] != '\0');
        assert_true(name[0] != '\0');
        assert_string_not_equal(msg, "unknown status");
        assert_string_not_equal(name, "EUNKNOWN");
        for (int j = 0; j < i; j++) {
            assert_string_not_equal(msg, modal_strerror((modal_status)j));
            assert_string_not_equal(name, modal_status_name((modal_status)j));
        }
    }
}

static void test_names_match_enum(void **state)
{
    assert_int_equal(MODAL_OK, 0);
    assert_string_equal(modal_status_name(MODAL_OK), "OK");
    assert_string_equal(modal_strerror(MODAL_OK), "success");
    assert_string_equal(modal_status_name(MODAL_ENOMEM), "ENOMEM");
    assert_string_equal(modal_strerror(MODAL_ENOMEM), "out of memory");
    assert_string_equal(modal_status_name(MODAL_EOPTION), "EOPTION");
    assert_string_equal(modal_status_name(MODAL_EIO), "EIO");
    /* Codes are only appended: EIO keeps its number, ERESOURCE came after
     * it and is the last one today. */
    assert_int_equal(MODAL_EIO, 19);
    assert_int_equal(MODAL_ERESOURCE, 20);
    assert_int_equal(MODAL_ERESOURCE, MODAL__STATUS_COUNT - 1);
    assert_string_equal(modal_status_name(MODAL_ERESOURCE), "ERESOURCE");
    /* Names round-trip through the transport's parser. */
    for (int i = 1; i < MODAL__STATUS_COUNT; i++)
        assert_int_equal(modal__status_from_name(modal_status_name((modal_status)i)), i);
}

static void test_unknown_code(void **state)
{
    const modal_status unknown[] = {MODAL__STATUS_COUNT,
                                    (modal_status)(MODAL__STATUS_COUNT + 1),
                                    (modal_status)1000, (modal_status)-1};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        assert_string_equal(modal_strerror(unknown[i]), "unknown status");
        assert_string_equal(modal_status_name(unknown[i]), "EUNKNOWN");
    }
}

static void test_version(void **state)
{
    assert_string_equal(modal_version(), MODAL_VERSION_STRING);
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", MODAL_VERSION_MAJOR,
             MODAL_VERSION_MINOR, MODAL_VERSION_PATCH);
    assert_string_equal(modal_version(), want);
    assert_int_equal(MODAL_VERSION_NUMBER,
                     (MODAL_VERSION_MAJOR << 16) | (MODAL_VERSION_MINOR << 8) |
                         MODAL_VERSION_PATCH);
}

static void test_fail_fills_error(void **state)
{
    modal_error err;
    memset(&err, 0x5a, sizeof err);
    assert_int_equal(modal__fail(&err, MODAL_ERANGE, "index %d of %s", 7, "x"),
                     MODAL_ERANGE);
    assert_int_equal(err.code, MODAL_ERANGE);
    assert_string_equal(err.message, "index 7 of x");
    /* NULL err: the code only. */
    assert_int_equal(modal__fail(NULL, MODAL_EIO, "%s", "ignored"), MODAL_EIO);

    /* A message longer than the buffer is truncated and terminated. */
    char big[2 * MODAL_ERROR_MESSAGE_SIZE];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    modal__fail(&err, MODAL_EINVAL, "%s", big);
    assert_int_equal(strlen(err.message), MODAL_ERROR_MESSAGE_SIZE - 1);

    modal__ok(&err);
    assert_int_equal(err.code, MODAL_OK);
    assert_string_equal(err.message, "");
    modal__ok(NULL);
}

/* ---- log hook ------------------------------------------------------ */

typedef struct log_record {
    int calls;
    modal_log_level level;
    char msg[2048];
    void *user;
} log_record;

static void record_hook(modal_log_level level, const char *msg, void *user)
{
    log_record *r = user;
    r->calls++;
    r->level = level;
    r->user = user;
    snprintf(r->msg, sizeof r->msg, "%s", msg);
}

static int teardown_hook(void **state)
{
    modal_set_log_hook(NULL, NULL);
    return 0;
}

static void test_log_hook(void **state)
{
    log_record rec;
    memset(&rec, 0, sizeof rec);

    /* No hook: messages are discarded (and nothing crashes). */
    modal__log(MODAL_LOG_ERROR, "nobody hears %d", 1);

    modal_set_log_hook(record_hook, &rec);
    modal__log(MODAL_LOG_WARN, "call %s retried (attempt %d)", "fc-x", 2);
    assert_int_equal(rec.calls, 1);
    assert_int_equal(rec.level, MODAL_LOG_WARN);
    assert_string_equal(rec.msg, "call fc-x retried (attempt 2)");
    assert_ptr_equal(rec.user, &rec);

    modal__log(MODAL_LOG_DEBUG, "plain");
    assert_int_equal(rec.calls, 2);
    assert_int_equal(rec.level, MODAL_LOG_DEBUG);
    assert_string_equal(rec.msg, "plain");

    /* Long messages are truncated, never overrun. */
    char big[3000];
    memset(big, 'L', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    modal__log(MODAL_LOG_INFO, "%s", big);
    assert_int_equal(rec.calls, 3);
    assert_true(strlen(rec.msg) > 0 && strlen(rec.msg) < sizeof big - 1);

    /* Setting NULL discards again. */
    modal_set_log_hook(NULL, &rec);
    modal__log(MODAL_LOG_ERROR, "dropped");
    assert_int_equal(rec.calls, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_named),
        cmocka_unit_test(test_names_match_enum),
        cmocka_unit_test(test_unknown_code),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_fail_fills_error),
        cmocka_unit_test_teardown(test_log_hook, teardown_hook),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
