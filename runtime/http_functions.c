/*
 * http_functions.c: POST /v1/functions, where a client registers a
 * function's spec once. The body is the spec as JSON ({"v": 1, "artifact",
 * "app", "fn", "options"}); the answer is its id, {"spec": "<64 hex>"},
 * which calls and maps then carry instead of the spec. Registering the same
 * spec again answers the same id. The spec is kept in the state directory,
 * so a restarted runtime still knows it.
 */
#include "rt.h"
#include "httpd.h"

#include <stdlib.h>
#include <string.h>

/* The HTTP status of each refusal this route can give. */
static int status_for(modal_status st)
{
    switch (st) {
    case MODAL_EOPTION: return 422;
    case MODAL_ELIMIT: return 413;
    case MODAL_ENOMEM: return 503;
    default: return 400;
    }
}

void rt_http_functions(rt_hreq *r, const modal__buf *body)
{
    if (strcmp(rt_hreq_method(r), "POST") != 0) {
        rt_hreq_error(r, 405, MODAL_EINVAL, "use POST /v1/functions to register a function "
                      "spec, not %s", rt_hreq_method(r));
        return;
    }
    cJSON *j = body != NULL ? cJSON_ParseWithLength((const char *)body->base, body->len) : NULL;
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        rt_hreq_error(r, 400, MODAL_ECODEC, "POST /v1/functions needs a function spec as a JSON "
                      "object: {\"v\": 1, \"artifact\", \"app\", \"fn\", \"options\"} "
                      "(docs/wire.md)");
        return;
    }
    modal_error err;
    const modal__spec *spec;
    char id[65];
    pthread_mutex_lock(&rt.mu);
    modal_status st = rt_spec_register(j, "function spec", &spec, id, &err);
    pthread_mutex_unlock(&rt.mu);
    cJSON_Delete(j);
    if (st != MODAL_OK) {
        rt_hreq_error(r, status_for(st), st, "%s", err.message);
        return;
    }
    rt_spec_store(id, spec);
    char answer[96];
    int n = snprintf(answer, sizeof answer, "{\"spec\":\"%s\"}", id);
    rt_hreq_send(r, 200, "application/json", NULL, answer, (size_t)n);
}
