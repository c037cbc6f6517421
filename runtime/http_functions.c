/*
 * http_functions.c: POST /v1/functions, where a client registers a
 * function's spec once. The body is the spec as JSON ({"v": 1, "artifact",
 * "app", "fn", "options"}); the answer is its id, {"spec": "<64 hex>"},
 * which calls and maps then carry instead of the spec. Registering the same
 * spec again answers the same id. The spec is kept in the state directory,
 * so a restarted runtime still knows it.
 */
#include "http_routes.h"

#include <stdio.h>
#include <string.h>

void rt_http_function_register(rt_hctx *h)
{
    rt_hreq *r = h->r;
    const modal__buf *body = h->body;
    cJSON *j = cJSON_ParseWithLength((const char *)body->base, body->len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        rt_hreq_error(r, 400, MODAL_ECODEC, "POST " MODAL__PATH_FUNCTIONS " needs a function "
                      "spec as a JSON object: {\"v\": 1, \"artifact\", \"app\", \"fn\", "
                      "\"options\"} (docs/wire.md)");
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
        rt_hreq_error(r, rt_http_status_for(st), st, "%s", err.message);
        return;
    }
    rt_spec_store(id, spec);
    char answer[96];
    int n = snprintf(answer, sizeof answer, "{\"spec\":\"%s\"}", id);
    rt_hreq_send(r, 200, MODAL__CT_JSON, NULL, answer, (size_t)n);
}
