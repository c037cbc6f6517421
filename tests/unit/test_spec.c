/*
 * test_spec.c: the option table of modal.h and what lib/spec.c builds from
 * it. Every numeric row (options and retry_policy fields alike) is walked
 * from the table itself, so a new row is covered without a new test: each
 * is tried at its default, at both bounds and just beyond both, through
 * the library's check of C options and through the runtime's parser of a
 * JSON spec; both must accept the same values (the JSON side also takes
 * the default written out) and refuse the others with the same message.
 * Then: the canonical form and hash (defaults applied, GPU lists spelt
 * two ways), the two snapshot options, unknown keys, and reading options
 * from a program built with a smaller modal_function_options.
 */
#include "testutil.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>

/* Options are written as MODAL_FUNCTION writes them: unset markers first,
 * then the values given, which override some of them. */
#pragma GCC diagnostic ignored "-Woverride-init"

/* ---- the table, as data ---------------------------------------------------- */

typedef struct row {
    const char *name;
    const char *kind;
    double dflt, lo, hi;
    bool policy; /* a field of retry_policy */
} row;

#define ROW(n, kind, d, lo, hi, unit, doc) {#n, #kind, d, lo, hi, false},
#define PROW(n, kind, d, lo, hi, unit, doc) {#n, #kind, d, lo, hi, true},
static const row rows[] = {MODAL__OPTION_MAP(ROW) MODAL__RETRY_MAP(PROW)};
#define NROWS (sizeof rows / sizeof *rows)

static bool numeric(const row *r)
{
    return strcmp(r->kind, "INT") == 0 || strcmp(r->kind, "REAL") == 0 ||
           strcmp(r->kind, "RETRIES") == 0;
}

static bool is_real(const row *r)
{
    return strcmp(r->kind, "REAL") == 0;
}

/* Set the C option of row r to v (policy rows go into *pol). */
static void set_option(modal_function_options *o, modal_retries *pol, const row *r, double v)
{
#define SET_INT(n) if (!r->policy && strcmp(r->name, #n) == 0) o->n = (int)v;
#define SET_RETRIES(n) SET_INT(n)
#define SET_REAL(n) if (!r->policy && strcmp(r->name, #n) == 0) o->n = v;
#define SET_NONE(n)
#define SET_BOOL(n) SET_NONE(n)
#define SET_HOOK(n) SET_NONE(n)
#define SET_GPU(n) SET_NONE(n)
#define SET_IMAGE(n) SET_NONE(n)
#define SET_MOUNTS(n) SET_NONE(n)
#define SET_SECRETS(n) SET_NONE(n)
#define SET_POLICY(n) SET_NONE(n)
#define SET_ROW(n, kind, ...) SET_##kind(n)
    MODAL__OPTION_MAP(SET_ROW)
#define PSET_INT(n) if (r->policy && strcmp(r->name, #n) == 0) pol->n = (int)v;
#define PSET_REAL(n) if (r->policy && strcmp(r->name, #n) == 0) pol->n = v;
#define PSET_ROW(n, kind, ...) PSET_##kind(n)
    MODAL__RETRY_MAP(PSET_ROW)
    if (r->policy)
        o->retry_policy = pol;
}

/* The resolved value of row r in a spec. */
static double get_value(const modal__spec *s, const row *r)
{
#define GET_INT(n) if (!r->policy && strcmp(r->name, #n) == 0) return s->n;
#define GET_RETRIES(n) if (!r->policy && strcmp(r->name, #n) == 0) return s->retry_policy.max_retries;
#define GET_REAL(n) GET_INT(n)
#define GET_BOOL(n)
#define GET_HOOK(n)
#define GET_GPU(n)
#define GET_IMAGE(n)
#define GET_MOUNTS(n)
#define GET_SECRETS(n)
#define GET_POLICY(n)
#define GET_ROW(n, kind, ...) GET_##kind(n)
    MODAL__OPTION_MAP(GET_ROW)
#define PGET_ROW(n, kind, ...) if (r->policy && strcmp(r->name, #n) == 0) return s->retry_policy.n;
    MODAL__RETRY_MAP(PGET_ROW)
    fail_msg("row %s has no field in modal__spec", r->name);
    return NAN;
}

/* A spec object for the runtime's parser with row r at v. */
static cJSON *json_spec(const row *r, const double *v)
{
    cJSON *env = cJSON_CreateObject();
    cJSON_AddNumberToObject(env, "v", 1);
    cJSON_AddStringToObject(env, "artifact",
                            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    cJSON_AddStringToObject(env, "app", "test-spec");
    cJSON_AddStringToObject(env, "fn", "t");
    cJSON *o = cJSON_AddObjectToObject(env, "options");
    if (strcmp(r->name, "max_containers") != 0 || r->policy)
        cJSON_AddNumberToObject(o, "max_containers", 1000);
    if (v != NULL) {
        cJSON *at = r->policy ? cJSON_AddObjectToObject(o, "retry_policy") : o;
        cJSON_AddNumberToObject(at, r->name, *v);
    }
    return env;
}

/* The library's verdict on row r at v (NULL v: left unset). */
static modal_status lib_check(const row *r, const double *v, modal__spec *s, modal_error *err)
{
    modal_function_options o = {MODAL__OPTION_DEFAULTS};
    modal_retries pol = {0};
    /* Rules between options stay out of the way: min_containers up to its
     * bound needs max_containers above the default 10. */
    if (strcmp(r->name, "max_containers") != 0 || r->policy)
        o.max_containers = 1000;
    if (v != NULL)
        set_option(&o, &pol, r, *v);
    modal__spec_init(s);
    return modal__spec_resolve("t", &o, s, err);
}

static modal_status rt_check(const row *r, const double *v, modal__spec *s, modal_error *err)
{
    cJSON *j = json_spec(r, v);
    modal_status st = modal__spec_parse(j, "function spec", s, err);
    cJSON_Delete(j);
    return st;
}

/* ---- the walk ----------------------------------------------------------------- */

static void test_every_numeric_option_at_its_bounds(void **state)
{
    size_t walked = 0;
    for (size_t i = 0; i < NROWS; i++) {
        const row *r = &rows[i];
        if (!numeric(r))
            continue;
        walked++;
        double below = is_real(r) ? nextafter(r->lo, -INFINITY) : r->lo - 1;
        double above = is_real(r) ? nextafter(r->hi, INFINITY) : r->hi + 1;
        const double values[] = {r->dflt, r->lo, r->hi, below, above};
        modal__spec ls, rs;
        modal_error lerr, rerr;

        /* Left out, both sides give the default. */
        assert_int_equal(lib_check(r, NULL, &ls, &lerr), MODAL_OK);
        assert_int_equal(rt_check(r, NULL, &rs, &rerr), MODAL_OK);
        assert_true(get_value(&ls, r) == r->dflt);
        assert_true(get_value(&rs, r) == r->dflt);
        modal__spec_clear(&ls);
        modal__spec_clear(&rs);

        for (size_t k = 0; k < sizeof values / sizeof *values; k++) {
            double v = values[k];
            bool in = v >= r->lo && v <= r->hi;
            /* A REAL 0 in C means "the default"; the JSON spec carries
             * resolved values, where the default is always valid. */
            bool lib_ok = in || (is_real(r) && v == 0);
            bool rt_ok = in || v == r->dflt;
            /* An int field cannot hold a value beyond INT_MAX: only the
             * runtime can be sent one. */
            bool lib_can = is_real(r) || (v >= INT_MIN && v <= INT_MAX);
            modal_status rst = rt_check(r, &v, &rs, &rerr);
            if ((rst == MODAL_OK) != rt_ok)
                fail_msg("runtime: %s%s = %.17g: got %s (%s)", r->policy ? "retry_policy." : "",
                         r->name, v, modal_status_name(rst), rerr.message);
            if (rst == MODAL_OK)
                assert_true(get_value(&rs, r) == v);
            else
                assert_int_equal(rst, MODAL_EOPTION);
            if (lib_can) {
                modal_status lst = lib_check(r, &v, &ls, &lerr);
                if ((lst == MODAL_OK) != lib_ok)
                    fail_msg("library: %s%s = %.17g: got %s (%s)",
                             r->policy ? "retry_policy." : "", r->name, v,
                             modal_status_name(lst), lerr.message);
                if (lst == MODAL_OK) {
                    assert_true(get_value(&ls, r) == (v == 0 && is_real(r) ? r->dflt : v));
                } else {
                    assert_int_equal(lst, MODAL_EOPTION);
                    /* One message for one mistake, whichever side saw it.
                     * Only a default outside the bounds (0: no limit) is
                     * refused in C, where leaving it out says it, yet
                     * valid in a resolved spec. */
                    if (rst == MODAL_OK)
                        assert_true(v == r->dflt);
                    else
                        assert_string_equal(lerr.message, rerr.message);
                    assert_non_null(strstr(lerr.message, "function t: option ."));
                    assert_non_null(strstr(lerr.message, r->name));
                    assert_non_null(strstr(lerr.message, "out of range"));
                }
                modal__spec_clear(&ls);
            }
            modal__spec_clear(&rs);
        }
    }
    /* The table has numeric rows, and the walk saw each of them. */
    assert_true(walked >= 11);
}

/* The range docs/api.md states for initial_delay is the one both sides use. */
static void test_initial_delay_range_is_one(void **state)
{
    const row *r = NULL;
    for (size_t i = 0; i < NROWS; i++)
        if (rows[i].policy && strcmp(rows[i].name, "initial_delay") == 0)
            r = &rows[i];
    assert_non_null(r);
    double zero = 0;
    modal__spec s;
    modal_error err;
    /* 0 is no delay the runtime accepts: in C it means the default. */
    assert_int_equal(rt_check(r, &zero, &s, &err), MODAL_EOPTION);
    assert_non_null(strstr(err.message, "use 0.001 to 60 seconds"));
    modal__spec_clear(&s);
}

/* ---- canonical form and identity --------------------------------------------------- */

static void resolve_hash(const modal_function_options *o, char id[65])
{
    modal__spec s;
    modal_error err;
    modal__spec_init(&s);
    modal_status st = modal__spec_resolve("f", o, &s, &err);
    if (st != MODAL_OK)
        fail_msg("%s", err.message);
    snprintf(s.artifact, sizeof s.artifact, "%064d", 0);
    snprintf(s.app, sizeof s.app, "app");
    snprintf(s.fn, sizeof s.fn, "f");
    assert_int_equal(modal__spec_hash(&s, id), 0);
    modal__spec_clear(&s);
}

static void test_hash_identity(void **state)
{
    char a[65], b[65], c[65];
    modal_function_options unset = {MODAL__OPTION_DEFAULTS};
    modal_function_options explicit_defaults = {MODAL__OPTION_DEFAULTS .timeout = 300,
                                                .max_containers = 10, .retries = 0};
    resolve_hash(&unset, a);
    resolve_hash(&explicit_defaults, b);
    assert_string_equal(a, b); /* defaults applied before hashing */

    modal_function_options t = {MODAL__OPTION_DEFAULTS .timeout = 301};
    resolve_hash(&t, c);
    assert_string_not_equal(a, c);

    /* .retries = 2 is retry_policy.max_retries = 2. */
    modal_function_options r1 = {MODAL__OPTION_DEFAULTS .retries = 2};
    modal_function_options r2 = {MODAL__OPTION_DEFAULTS
                                 .retry_policy = MODAL_RETRIES(.max_retries = 2)};
    resolve_hash(&r1, a);
    resolve_hash(&r2, b);
    assert_string_equal(a, b);

    /* A GPU fallback list is one spec however it is spelt. */
    modal_function_options g1 = {MODAL__OPTION_DEFAULTS .gpu = "H100, A100-80GB"};
    modal_function_options g2 = {MODAL__OPTION_DEFAULTS .gpu = "h100,a100-80gb"};
    modal_function_options g3 = {MODAL__OPTION_DEFAULTS .gpu = "A100-80GB, H100"};
    modal_function_options g4 = {MODAL__OPTION_DEFAULTS .gpu = "h100:1"};
    modal_function_options g5 = {MODAL__OPTION_DEFAULTS .gpu = "H100"};
    resolve_hash(&g1, a);
    resolve_hash(&g2, b);
    resolve_hash(&g3, c);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c); /* the order is part of the request */
    resolve_hash(&g4, a);
    resolve_hash(&g5, b);
    assert_string_equal(a, b);
}

static int hook(modal_ctx *ctx)
{
    return 0;
}

/* The snapshot options are part of the spec and of its hash. */
static void test_snapshot_options_in_spec(void **state)
{
    char a[65], b[65], c[65];
    modal_function_options plain = {MODAL__OPTION_DEFAULTS};
    modal_function_options snap = {MODAL__OPTION_DEFAULTS .memory_snapshot = true};
    modal_function_options snap_enter = {MODAL__OPTION_DEFAULTS .memory_snapshot = true,
                                         .snapshot_enter = hook};
    resolve_hash(&plain, a);
    resolve_hash(&snap, b);
    resolve_hash(&snap_enter, c);
    assert_string_not_equal(a, b);
    assert_string_not_equal(b, c);

    modal__spec s;
    modal_error err;
    modal__spec_init(&s);
    assert_false(s.memory_snapshot);
    assert_false(s.snapshot_enter);
    assert_int_equal(modal__spec_resolve("f", &snap_enter, &s, &err), MODAL_OK);
    assert_true(s.memory_snapshot);
    assert_true(s.snapshot_enter);
    cJSON *j = modal__spec_json(&s);
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "options");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "memory_snapshot")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "snapshot_enter")));
    cJSON_Delete(j);
    modal__spec_clear(&s);
}

/* What the library sends, the runtime parses back to the same spec. */
static void test_json_round_trip(void **state)
{
    MODAL_VOLUME(vol, "ckpt", .create_if_missing = true);
    modal_function_options o = {MODAL__OPTION_DEFAULTS .gpu = "h100:2!, any", .cpu = 1.5,
                                .memory = 512, .image = "img:1",
                                .volumes = MODAL_MOUNTS({"/ckpt", &vol}),
                                .secrets = MODAL_SECRETS("hf"),
                                .retry_policy = MODAL_RETRIES(.max_retries = 3,
                                                              .initial_delay = 0.5),
                                .timeout = 60, .min_containers = 1, .max_inputs = 7,
                                .memory_snapshot = true, .snapshot_enter = hook};
    modal__spec s, back;
    modal_error err;
    modal__spec_init(&s);
    assert_int_equal(modal__spec_resolve("f", &o, &s, &err), MODAL_OK);
    assert_string_equal(s.gpu, "H100:2!, any");
    snprintf(s.artifact, sizeof s.artifact, "%064d", 7);
    snprintf(s.app, sizeof s.app, "app");
    snprintf(s.fn, sizeof s.fn, "f");
    cJSON *j = modal__spec_json(&s);
    assert_int_equal(modal__spec_parse(j, "function spec", &back, &err), MODAL_OK);
    cJSON_Delete(j);
    char h1[65], h2[65];
    assert_int_equal(modal__spec_hash(&s, h1), 0);
    assert_int_equal(modal__spec_hash(&back, h2), 0);
    assert_string_equal(h1, h2);
    assert_true(back.cpu == 1.5);
    assert_int_equal(back.memory, 512);
    assert_true(back.retry_policy.initial_delay == 0.5);
    assert_true(back.retry_policy.max_delay == 60);
    modal__spec_clear(&s);
    modal__spec_clear(&back);
}

static void expect_parse_error(const char *json, modal_status want, const char *needle)
{
    cJSON *j = cJSON_Parse(json);
    assert_non_null(j);
    modal__spec s;
    modal_error err;
    modal_status st = modal__spec_parse(j, "function spec", &s, &err);
    cJSON_Delete(j);
    if (st != want || strstr(err.message, needle) == NULL)
        fail_msg("%s: got %s (%s), want %s with \"%s\"", json, modal_status_name(st),
                 err.message, modal_status_name(want), needle);
}

#define SPEC_HEAD "{\"v\":1,\"artifact\":\"" \
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"," \
    "\"app\":\"a\",\"fn\":\"f\",\"options\":"

static void test_parser_refusals(void **state)
{
    expect_parse_error(SPEC_HEAD "{\"timout\":3}}", MODAL_EOPTION, "unknown option .timout");
    expect_parse_error(SPEC_HEAD "{\"retry_policy\":{\"delay\":3}}}", MODAL_EOPTION,
                       "unknown option .retry_policy.delay");
    expect_parse_error(SPEC_HEAD "{\"retries\":1,\"retry_policy\":{}}}", MODAL_EOPTION,
                       "set either .retries or .retry_policy, not both");
    expect_parse_error(SPEC_HEAD "{\"timeout\":1.5}}", MODAL_ECODEC, ".timeout must be an integer");
    expect_parse_error(SPEC_HEAD "{\"timeout\":\"5\"}}", MODAL_ECODEC, ".timeout must be an integer");
    expect_parse_error(SPEC_HEAD "{\"memory_snapshot\":1}}", MODAL_ECODEC, "true or false");
    expect_parse_error(SPEC_HEAD "{\"gpu\":\"X100\"}}", MODAL_EOPTION, "unknown GPU type");
    expect_parse_error(SPEC_HEAD "{\"min_containers\":20}}", MODAL_EOPTION,
                       ".min_containers = 20 exceeds .max_containers = 10");
    expect_parse_error(SPEC_HEAD "{\"volumes\":{\"/a/../b\":{\"name\":\"v\"}}}}", MODAL_EOPTION,
                       "\"..\"");
    expect_parse_error(SPEC_HEAD "{\"secrets\":[\"bad name\"]}}", MODAL_EOPTION, "bad name");
    expect_parse_error(SPEC_HEAD "[]}", MODAL_ECODEC, "\"options\" must be an object");
    expect_parse_error("{\"v\":2}", MODAL_ECODEC, "function spec: \"v\" must be 1");
    expect_parse_error("{\"v\":1,\"artifact\":\"00\",\"app\":\"a\",\"fn\":\"f\"}", MODAL_ECODEC,
                       "\"artifact\" must be 64 hex digits");
}

/* ---- ABI: options of a program built against an older modal.h ------------------------ */

static modal_value *body(modal_ctx *ctx, const modal_value *args)
{
    return modal_null();
}

static void test_older_options_struct(void **state)
{
    /* A program whose modal.h ended the options before memory_snapshot:
     * its options are that many bytes, and nothing after them may be
     * read (AddressSanitizer checks that in `make check`). */
    size_t old_size = offsetof(modal_function_options, memory_snapshot);
    modal_function_options full = {MODAL__OPTION_DEFAULTS .timeout = 42, .exit = hook};
    void *old = malloc(old_size);
    assert_non_null(old);
    memcpy(old, &full, old_size);
    /* Static: the library remembers functions by address. */
    static modal_function fn;
    fn = (modal_function){MODAL__FUNCTION_MAGIC, (unsigned)old_size, "older", body, old,
                          __FILE__, __LINE__};
    const modal_function_options *o = modal__fn_options(&fn);
    assert_non_null(o);
    assert_int_equal(o->timeout, 42);
    assert_ptr_equal(o->exit, hook);
    assert_false(o->memory_snapshot);
    assert_null(o->snapshot_enter);
    modal_error err;
    assert_int_equal(modal_function_check(&fn, &err), MODAL_OK);
    free(old);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_numeric_option_at_its_bounds),
        cmocka_unit_test(test_initial_delay_range_is_one),
        cmocka_unit_test(test_hash_identity),
        cmocka_unit_test(test_snapshot_options_in_spec),
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_parser_refusals),
        cmocka_unit_test(test_older_options_struct),
    };
    return cmocka_run_group_tests_name("spec", tests, NULL, NULL);
}
