/*
 * http_status.c: the runtime's own status. GET (or HEAD) /v1/health
 * answers whether it runs, its version, pid, state directory and what it
 * is doing; clients use it to find out that a runtime is up.
 */
#include "http_routes.h"

#include <unistd.h>

void rt_http_health(rt_hctx *h)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "ok", 1);
    cJSON_AddStringToObject(j, "version", MODAL_VERSION_STRING);
    cJSON_AddNumberToObject(j, "pid", getpid());
    cJSON_AddStringToObject(j, "state_dir", rt.state_dir);
    pthread_mutex_lock(&rt.mu);
    cJSON_AddNumberToObject(j, "workers", rt.running_workers);
    cJSON_AddNumberToObject(j, "calls", (double)rt.ncalls);
    rt_sched_status(j);
    cJSON_AddItemToObject(j, "pools", rt_pools_status());
    pthread_mutex_unlock(&rt.mu);
    rt_http_send_json(h->r, 200, j);
}
