/*
 * http_table.h: the runtime's HTTP routes, one line each, and their flags.
 * Kept apart from http_routes.h so that a test can walk the same lines
 * without the runtime's other headers. A new route is one line here and
 * a handler declared in http_routes.h.
 */
#ifndef RT_HTTP_TABLE_H
#define RT_HTTP_TABLE_H

#include "protocol.h"

/* Longest id segment a route takes ("/v1/calls/<id>"); a longer one is no
 * route (404). */
#define RT_ROUTE_ID_MAX 256

enum {
    /* The body streams into the artifact store (h->up), named by the id,
     * instead of into h->body. */
    RT_ROUTE_UPLOAD = 1u << 0,
    /* A long poll: takes ?wait=0..60 seconds (h->deadline), and its
     * handler may suspend the request with rt_http_wait_on. */
    RT_ROUTE_WAITS = 1u << 1,
};

/*
 * Every route the runtime answers, one line each:
 * X(method, pattern, handler, body, RT_ROUTE_* flags). body is the content
 * type of the body the route needs (read into h->body, a sealed memfd
 * when large; a request without one gets 400), or NULL for a route that
 * takes none (a body sent anyway is read and dropped). A method a path
 * does not list gets 405 naming (and an Allow header listing) those it
 * does, in this order; a path no line has gets 404. rt_routes[] (http.c)
 * is built from it, and tests/integration/test_routes.c walks it.
 */
#define RT_ROUTES(X)                                                                                                     \
    X("GET",    MODAL__PATH_HEALTH,                           rt_http_health,         NULL,             0)               \
    X("HEAD",   MODAL__PATH_HEALTH,                           rt_http_health,         NULL,             0)               \
    X("HEAD",   MODAL__PATH_ARTIFACTS "/<sha256>",            rt_http_artifact_check, NULL,             0)               \
    X("GET",    MODAL__PATH_ARTIFACTS "/<sha256>",            rt_http_artifact_check, NULL,             0)               \
    X("PUT",    MODAL__PATH_ARTIFACTS "/<sha256>",            rt_http_artifact_put,   MODAL__CT_BINARY, RT_ROUTE_UPLOAD) \
    X("POST",   MODAL__PATH_CALLS,                            rt_http_call_start,     MODAL__CT_FRAME,  RT_ROUTE_WAITS)  \
    X("GET",    MODAL__PATH_CALLS "/<id>",                    rt_http_call_get,       NULL,             RT_ROUTE_WAITS)  \
    X("DELETE", MODAL__PATH_CALLS "/<id>",                    rt_http_call_cancel,    NULL,             0)               \
    X("GET",    MODAL__PATH_CALLS "/<id>" MODAL__PATH_LOGS,   rt_http_call_logs,      NULL,             0)               \
    X("POST",   MODAL__PATH_MAPS,                             rt_http_map_start,      MODAL__CT_FRAME,  0)               \
    X("DELETE", MODAL__PATH_MAPS "/<id>",                     rt_http_map_delete,     NULL,             0)               \
    X("POST",   MODAL__PATH_MAPS "/<id>" MODAL__PATH_INPUTS,  rt_http_map_inputs,     MODAL__CT_BUNDLE, 0)               \
    X("GET",    MODAL__PATH_MAPS "/<id>" MODAL__PATH_RESULTS, rt_http_map_results,    NULL,             RT_ROUTE_WAITS)  \
    X("GET",    MODAL__PATH_APPS "/<app>" MODAL__PATH_LOGS,   rt_http_app_logs,       NULL,             0)               \
    X("POST",   MODAL__PATH_FUNCTIONS,                        rt_http_function_register, MODAL__CT_JSON, 0)

#endif /* RT_HTTP_TABLE_H */
