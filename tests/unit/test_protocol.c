/*
 * test_protocol.c: the checks of ids that cross the wire (lib/protocol.c),
 * which the library and the runtime share: call and map ids, artifact
 * hashes. Each accepts exactly its form and refuses the rest with a phrase
 * naming the rule. (App and function names: test_function.c.)
 */
#include "testutil.h"

/* A valid random part: MODAL__ID_RANDOM_LEN characters of the alphabet. */
#define RANDOM26 "0123456789abcdefghjkmnpqrs"

static void test_call_ids(void **state)
{
    char id[64];
    assert_null(modal__call_id_problem("fc-" RANDOM26));
    assert_null(modal__call_id_problem("fc-tvwxyz00000000000000000000"));
    /* One the library makes itself is valid. */
    modal__random_id(MODAL__CALL_ID_PREFIX, id, sizeof id);
    assert_null(modal__call_id_problem(id));
    assert_non_null(modal__call_id_problem(NULL));
    assert_non_null(modal__call_id_problem(""));
    assert_non_null(modal__call_id_problem("fc-"));
    assert_non_null(modal__call_id_problem("fc-" RANDOM26 "0"));         /* too long */
    assert_non_null(modal__call_id_problem("fc-0123456789abcdefghjkmnpqr")); /* short */
    assert_non_null(modal__call_id_problem("fm-" RANDOM26));             /* a map's */
    assert_non_null(modal__call_id_problem("fc-0123456789abcdefghjkmnpqri")); /* i */
    assert_non_null(modal__call_id_problem("fc-0123456789ABCDEFGHJKMNPQRS"));
    assert_non_null(strstr(modal__call_id_problem("x"), "is not a call id"));
    assert_non_null(strstr(modal__call_id_problem("x"), MODAL__ID_RULE));
}

static void test_map_ids(void **state)
{
    char id[64];
    assert_null(modal__map_id_problem("fm-" RANDOM26));
    modal__random_id(MODAL__MAP_ID_PREFIX, id, sizeof id);
    assert_null(modal__map_id_problem(id));
    assert_non_null(modal__map_id_problem(NULL));
    assert_non_null(modal__map_id_problem("fc-" RANDOM26));
    assert_non_null(modal__map_id_problem("fm-0123456789abcdefghjkmnpqru")); /* u */
    assert_non_null(strstr(modal__map_id_problem("x"), "is not a map id"));
}

static void test_artifact_ids(void **state)
{
    char sha[65];
    memset(sha, 'a', 64);
    sha[64] = '\0';
    assert_null(modal__artifact_problem(sha));
    memcpy(sha, "0123456789abcdef", 16);
    assert_null(modal__artifact_problem(sha));
    sha[0] = 'A'; /* uppercase is not the form */
    assert_non_null(modal__artifact_problem(sha));
    sha[0] = 'g';
    assert_non_null(modal__artifact_problem(sha));
    sha[0] = '0';
    sha[63] = '\0';
    assert_non_null(modal__artifact_problem(sha)); /* 63 digits */
    assert_non_null(modal__artifact_problem(NULL));
    assert_non_null(modal__artifact_problem(""));
    assert_non_null(strstr(modal__artifact_problem("x"), "SHA-256"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_ids),
        cmocka_unit_test(test_map_ids),
        cmocka_unit_test(test_artifact_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
