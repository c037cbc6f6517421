/*
 * http_calls.c: the calls resource. POST /v1/calls starts a call from a
 * call frame; GET /v1/calls/<id> long-polls for its result or new output;
 * DELETE /v1/calls/<id> cancels it; GET /v1/calls/<id>/logs reads its
 * output. A long poll does not hold a thread: it waits on the call's list
 * and is resumed when the call changes (rt_http_call_changed).
 */
#include "http_routes.h"

#include <string.h>
#include <unistd.h>

#define MAX_QUEUED 2000000 /* beyond this, 503 */

static const char *state_name(const rt_call *c)
{
    switch (c->state) {
    case RT_QUEUED: return "queued";
    case RT_DELAYED: return "retrying";
    case RT_SENT: return "running";
    case RT_DONE: return "done";
    }
    return "?";
}

static void call_poll(rt_hctx *h);

/* Answer with the call's result, or 202 and new output once the wait runs
 * out or output beyond log_offset appears; until then the request waits
 * on c. Called with rt.mu held; the caller suspends when this returns 1. */
static int answer_call(rt_hctx *h, rt_call *c)
{
    rt_hreq *r = h->r;
    if (c->state != RT_DONE && (long long)c->logs_len <= h->log_offset && !rt.stopping &&
        rt_now() < h->deadline) {
        snprintf(h->id, sizeof h->id, "%s", c->id);
        rt_http_wait_on(h, c, &c->http_waits, call_poll);
        return 1;
    }
    rt_http_wait_end(h);
    if (c->state == RT_DONE && c->result == NULL) {
        rt_hreq_error(r, 503, MODAL_ENOMEM,
                      "call %s finished (%s) but the runtime ran out of memory storing its "
                      "result", c->id, modal_status_name(c->status));
        return 0;
    }
    if (c->state == RT_DONE && c->result != NULL) {
        if (c->fetched_at == 0)
            c->fetched_at = rt_now();
        if (c->result_fd >= 0) {
            /* A large result goes out with sendfile from its memfd. */
            int fd = dup(c->result_fd);
            if (fd >= 0) {
                char extra[64];
                snprintf(extra, sizeof extra, MODAL__H_LOG_SIZE ": %zu\r\n", c->logs_len);
                rt_hreq_send_fd(r, 200, MODAL__CT_FRAME, extra, fd, c->result->len);
                return 0;
            }
        }
        rt_http_send_buf(r, 200, c->result, MODAL__CT_FRAME, MODAL__H_LOG_SIZE,
                         (long long)c->logs_len);
        return 0;
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "call_id", c->id);
    cJSON_AddStringToObject(j, "state", state_name(c));
    cJSON_AddNumberToObject(j, "attempt", c->attempt);
    cJSON_AddNumberToObject(j, "log_size", (double)c->logs_len);
    cJSON_AddNumberToObject(j, "gpu_seconds", c->gpu_seconds);
    if ((long long)c->logs_len > h->log_offset && h->log_offset >= 0)
        cJSON_AddStringToObject(j, "logs", c->logs + h->log_offset);
    rt_http_send_json(r, 202, j);
    return 0;
}

/* With rt.mu held: the call named h->id, or NULL with the 404 sent. */
static rt_call *find_call(rt_hctx *h)
{
    rt_call *c = rt_call_find(h->id);
    if (c == NULL)
        rt_http_unknown_id(h, "call", modal__call_id_problem(h->id),
                           " (unknown, or its result expired)");
    return c;
}

/* GET /v1/calls/<id>?wait=...: (re)evaluated on each resume. */
static void call_poll(rt_hctx *h)
{
    pthread_mutex_lock(&rt.mu);
    rt_call *c = find_call(h);
    int wait = c != NULL ? answer_call(h, c) : 0;
    pthread_mutex_unlock(&rt.mu);
    if (wait)
        rt_hreq_suspend(h->r, h->deadline);
}

void rt_http_call_start(rt_hctx *h)
{
    rt_hreq *r = h->r;
    modal_error err;
    rt_call *c;
    pthread_mutex_lock(&rt.mu);
    if (rt.stopping || rt.ncalls > MAX_QUEUED) {
        pthread_mutex_unlock(&rt.mu);
        rt_hreq_error(r, 503, MODAL_ERUNTIME, "the runtime is %s; try again",
                      rt.stopping ? "shutting down" : "overloaded");
        return;
    }
    modal_status st = rt_call_submit(h->body, h->body_fd, h->body->len, &c, &err);
    if (st != MODAL_OK) {
        pthread_mutex_unlock(&rt.mu);
        rt_hreq_error(r, rt_http_status_for(st), st, "%s", err.message);
        return;
    }
    h->log_offset = 0;
    int w = answer_call(h, c);
    pthread_mutex_unlock(&rt.mu);
    if (w)
        rt_hreq_suspend(r, h->deadline);
}

void rt_http_call_get(rt_hctx *h)
{
    double off;
    if (rt_http_num_arg(h->r, "log_offset", 0, 1e15, 0, "a byte offset", &off) != 0)
        return;
    h->log_offset = (long long)off;
    call_poll(h);
}

void rt_http_call_cancel(rt_hctx *h)
{
    pthread_mutex_lock(&rt.mu);
    rt_call *c = find_call(h);
    if (c != NULL) {
        rt_call_cancel(c);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "call_id", c->id);
        cJSON_AddStringToObject(j, "state", c->status == MODAL_ECANCELLED ? "cancelled" : "done");
        rt_http_send_json(h->r, 200, j);
    }
    pthread_mutex_unlock(&rt.mu);
}

void rt_http_call_logs(rt_hctx *h)
{
    rt_hreq *r = h->r;
    double off;
    if (rt_http_num_arg(r, "offset", 0, 1e15, 0, "a byte offset", &off) != 0)
        return;
    pthread_mutex_lock(&rt.mu);
    rt_call *c = find_call(h);
    if (c != NULL) {
        size_t o = (size_t)off < c->logs_len ? (size_t)off : c->logs_len;
        rt_hreq_send(r, 200, MODAL__CT_TEXT, NULL, c->logs ? c->logs + o : "", c->logs_len - o);
    }
    pthread_mutex_unlock(&rt.mu);
}
