/*
 * test_routes.c: the runtime's route table (RT_ROUTES in
 * runtime/http_routes.h), walked against a real runtime. Every route
 * answers its own method (never 404 "no route" nor 405); every other
 * method on a routed path gets 405 with an Allow header and a message
 * naming exactly the methods the table lists for it; a path outside the
 * table gets 404 naming it.
 *
 * A route that needs a body and gets none is refused with 400 naming the
 * body's content type.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"
#include "protocol.h"
#include "http_table.h"

MODAL_APP("itest-routes");

MODAL_FUNCTION(noop, .timeout = 30)
{
    return modal_int(1);
}

typedef struct route_row {
    const char *method;
    const char *pattern;
    const char *body;
} route_row;

/* The runtime's table, without its handlers (this program does not link
 * them): the same lines, so a new route is walked as soon as it exists. */
static const route_row table[] = {
#define ROW(method, pattern, fn, body, flags) {method, pattern, body},
    RT_ROUTES(ROW)
#undef ROW
};
#define NROUTES (sizeof table / sizeof table[0])

static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"};

/* One raw answer, split. */
typedef struct answer {
    int status;
    char allow[128];   /* the Allow header's value, "" when absent */
    char code[64];     /* the JSON error's code and message, "" when absent */
    char message[600];
} answer;

static void exchange(const char *method, const char *path, answer *a)
{
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: x\r\n" MODAL__H_AUTH ": " MODAL__AUTH_BEARER
                     "%s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                     method, path, rt.token);
    assert_true(n > 0 && (size_t)n < sizeof req);
    int fd = harness_tcp_connect(rt.port);
    assert_true(fd >= 0);
    char *out = NULL;
    long got = harness_raw_exchange(fd, req, (size_t)n, 10.0, &out);
    close(fd);
    assert_true(got > 0);
    memset(a, 0, sizeof *a);
    assert_int_equal(sscanf(out, "HTTP/1.1 %d", &a->status), 1);
    const char *allow = strcasestr(out, "\r\nAllow: ");
    if (allow != NULL)
        sscanf(allow + 9, "%127[^\r]", a->allow);
    const char *body = strstr(out, "\r\n\r\n");
    if (body != NULL)
        harness_json_error(body + 4, a->code, sizeof a->code, a->message, sizeof a->message);
    free(out);
}

/* pattern with its "<name>" segment replaced by a sample id of its kind. */
static void fill_path(const char *pattern, const char *method, char *out, size_t outsz)
{
    static char self_sha[65];
    const char *open = strchr(pattern, '<');
    if (open == NULL) {
        snprintf(out, outsz, "%s", pattern);
        return;
    }
    const char *close = strchr(open, '>');
    assert_non_null(close);
    const char *id;
    if (strncmp(open, "<sha256>", 8) == 0) {
        /* This executable, stored: HEAD and GET find it. A PUT names
         * another, so the stored one is never touched. */
        if (self_sha[0] == '\0')
            assert_int_equal(harness_upload_self(&rt, self_sha), 0);
        id = strcmp(method, "PUT") == 0
                 ? "0000000000000000000000000000000000000000000000000000000000000000"
                 : self_sha;
    } else if (strncmp(pattern, MODAL__PATH_CALLS "/", strlen(MODAL__PATH_CALLS) + 1) == 0) {
        id = MODAL__CALL_ID_PREFIX "00000000000000000000000000";
    } else if (strncmp(pattern, MODAL__PATH_MAPS "/", strlen(MODAL__PATH_MAPS) + 1) == 0) {
        id = MODAL__MAP_ID_PREFIX "00000000000000000000000000";
    } else {
        id = "itest-routes";
    }
    snprintf(out, outsz, "%.*s%s%s", (int)(open - pattern), pattern, id, close + 1);
}

/* The methods the table lists for pattern, in its order, ", "-joined. */
static void allowed(const char *pattern, char *out, size_t outsz)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < NROUTES; i++)
        if (strcmp(table[i].pattern, pattern) == 0)
            used += (size_t)snprintf(out + used, outsz - used, "%s%s", used ? ", " : "",
                                     table[i].method);
}

static bool lists(const char *pattern, const char *method)
{
    for (size_t i = 0; i < NROUTES; i++)
        if (strcmp(table[i].pattern, pattern) == 0 && strcmp(table[i].method, method) == 0)
            return true;
    return false;
}

static void test_every_route_answers_its_method(void **state)
{
    assert_true(NROUTES >= 14);
    for (size_t i = 0; i < NROUTES; i++) {
        char path[256];
        answer a;
        fill_path(table[i].pattern, table[i].method, path, sizeof path);
        exchange(table[i].method, path, &a);
        print_message("%-6s %-40s -> %d %s\n", table[i].method, path, a.status, a.message);
        assert_int_not_equal(a.status, 405);
        assert_string_equal(a.allow, "");
        if (strcmp(table[i].method, "HEAD") == 0)
            assert_int_equal(a.status, 200); /* no body to tell a 404's cause */
        else if (a.status == 404)
            assert_null(strstr(a.message, "no route"));
        if (table[i].body != NULL && strcmp(table[i].method, "PUT") != 0) {
            /* Sent without the body it needs: 400, naming its type. */
            assert_int_equal(a.status, 400);
            assert_string_equal(a.code, "ECODEC");
            assert_contains(a.message, "needs a body");
            assert_contains(a.message, table[i].body);
        }
        assert_true(a.status >= 200 && a.status < 500);
    }
}

static void test_wrong_method_gets_405_naming_the_allowed(void **state)
{
    int checked = 0;
    for (size_t i = 0; i < NROUTES; i++) {
        bool first = true;
        for (size_t k = 0; k < i; k++)
            first = first && strcmp(table[k].pattern, table[i].pattern) != 0;
        if (!first)
            continue;
        char want[128], path[256];
        allowed(table[i].pattern, want, sizeof want);
        for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
            if (lists(table[i].pattern, methods[m]))
                continue;
            answer a;
            fill_path(table[i].pattern, methods[m], path, sizeof path);
            exchange(methods[m], path, &a);
            assert_int_equal(a.status, 405);
            assert_string_equal(a.allow, want);
            if (strcmp(methods[m], "HEAD") != 0) {
                assert_string_equal(a.code, "EINVAL");
                assert_contains(a.message, want);
                assert_contains(a.message, table[i].pattern);
                assert_contains(a.message, methods[m]);
            }
            checked++;
        }
    }
    assert_true(checked >= 20);
}

static void test_path_outside_the_table_gets_404_naming_it(void **state)
{
    char long_id[400];
    memset(long_id, 'a', sizeof long_id);
    memcpy(long_id, MODAL__PATH_CALLS "/", strlen(MODAL__PATH_CALLS) + 1);
    long_id[RT_ROUTE_ID_MAX + strlen(MODAL__PATH_CALLS) + 1] = '\0';
    const char *paths[] = {
        "/", "/v1", "/v1/nope", "/v2/calls", MODAL__PATH_HEALTH "/x",
        MODAL__PATH_CALLS "/", MODAL__PATH_CALLS "/fc-x/nope", MODAL__PATH_MAPS "/fm-x/nope",
        MODAL__PATH_APPS "/a", MODAL__PATH_APPS "/a/logs/b", long_id,
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
            if (strcmp(methods[m], "HEAD") == 0)
                continue;
            answer a;
            exchange(methods[m], paths[i], &a);
            if (a.status != 404)
                print_error("%s %.60s: status %d, expected 404\n", methods[m], paths[i],
                            a.status);
            assert_int_equal(a.status, 404);
            assert_string_equal(a.code, "ENOTFOUND");
            assert_string_equal(a.allow, "");
            char want[600];
            snprintf(want, sizeof want, "no route %s %.200s", methods[m], paths[i]);
            assert_contains(a.message, want);
        }
    }
}

/* The id a route takes is checked by the protocol's rule for its kind,
 * and the answer names the rule. */
static void test_malformed_ids_are_named(void **state)
{
    answer a;
    exchange("GET", MODAL__PATH_CALLS "/fc-x", &a);
    assert_int_equal(a.status, 404);
    assert_contains(a.message, "is not a call id");
    exchange("DELETE", MODAL__PATH_MAPS "/nope", &a);
    assert_int_equal(a.status, 404);
    assert_contains(a.message, "is not a map id");
    exchange("GET", MODAL__PATH_ARTIFACTS "/abc", &a);
    assert_int_equal(a.status, 400);
    assert_contains(a.message, "is not a SHA-256");
    exchange("GET", MODAL__PATH_APPS "/.." MODAL__PATH_LOGS, &a);
    assert_int_equal(a.status, 400);
    assert_contains(a.message, "is not an app name");
    /* A real call is found by the same route. */
    modal_call *c = NULL;
    modal_error err;
    assert_ok(modal_fn_spawn(&noop, modal_list(), &c, &err), err);
    modal_value *v = NULL;
    assert_ok(modal_call_get(c, 30, &v, &err), err);
    char path[128];
    snprintf(path, sizeof path, MODAL__PATH_CALLS "/%s" MODAL__PATH_LOGS, modal_call_id(c));
    exchange("GET", path, &a);
    assert_int_equal(a.status, 200);
    modal_value_free(v);
    modal_call_free(c);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_route_answers_its_method),
        cmocka_unit_test(test_wrong_method_gets_405_naming_the_allowed),
        cmocka_unit_test(test_path_outside_the_table_gets_404_naming_it),
        cmocka_unit_test(test_malformed_ids_are_named),
    };
    return cmocka_run_group_tests(tests, harness_group_setup, harness_group_teardown);
}
