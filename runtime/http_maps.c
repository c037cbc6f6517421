/*
 * http_maps.c: the maps resource. POST /v1/maps creates a map from a map
 * frame; POST /v1/maps/<id>/inputs adds a bundle of input frames;
 * GET /v1/maps/<id>/results long-polls for a bundle of results after a
 * sequence number (acknowledging those up to it); DELETE /v1/maps/<id>
 * ends the map.
 */
#include "http_routes.h"

#include <stdlib.h>

/* Most results, and bytes of results, one answer carries. */
#define RESULTS_MAX 10000
#define RESULTS_BYTES_MAX (64u << 20)

/* With rt.mu held: the map named h->id, or NULL with the 404 sent. */
static rt_map *find_map(rt_hctx *h)
{
    rt_map *m = rt_map_find(h->id);
    if (m == NULL)
        rt_http_unknown_id(h, "map", modal__map_id_problem(h->id), "");
    return m;
}

/* GET /v1/maps/<id>/results: (re)evaluated on each resume. */
static void map_poll(rt_hctx *h)
{
    rt_hreq *r = h->r;
    pthread_mutex_lock(&rt.mu);
    rt_map *m = find_map(h);
    if (m == NULL) {
        rt_http_wait_end(h);
        pthread_mutex_unlock(&rt.mu);
        return;
    }
    if (m->done_head == NULL && !rt.stopping && rt_now() < h->deadline) {
        rt_http_wait_on(h, m, &m->http_waits, map_poll);
        pthread_mutex_unlock(&rt.mu);
        rt_hreq_suspend(r, h->deadline);
        return;
    }
    rt_http_wait_end(h);
    m->touched = rt_now();
    size_t n = 0, bytes = 0;
    long long last = (long long)h->after;
    for (rt_call *c = m->done_head; c && n < RESULTS_MAX && bytes < RESULTS_BYTES_MAX;
         c = c->dnext)
        n++, bytes += c->result ? c->result->len : 0;
    modal__bundle_part *parts = calloc(n ? n : 1, sizeof *parts);
    size_t k = 0;
    for (rt_call *c = m->done_head; parts && c && k < n; c = c->dnext, k++) {
        parts[k].p = c->result ? c->result->base : NULL;
        parts[k].len = c->result ? c->result->len : 0;
        last = c->seq;
    }
    modal__buf *b = NULL;
    modal_error err;
    modal_status st = parts ? modal__bundle_build(parts, n, &b, &err) : MODAL_ENOMEM;
    pthread_mutex_unlock(&rt.mu);
    free(parts);
    if (st != MODAL_OK) {
        rt_hreq_error(r, 503, MODAL_ENOMEM, "runtime out of memory");
        return;
    }
    rt_http_send_buf(r, 200, b, MODAL__CT_BUNDLE, MODAL__H_SEQ, last);
    modal__buf_unref(b);
}

void rt_http_map_results(rt_hctx *h)
{
    rt_hreq *r = h->r;
    double after;
    if (rt_http_num_arg(r, "after", 0, 1e15, 0, "a sequence number", &after) != 0)
        return;
    h->after = after;
    pthread_mutex_lock(&rt.mu);
    rt_map *m = rt_map_find(h->id);
    if (m != NULL)
        rt_map_ack(m, (long long)after);
    pthread_mutex_unlock(&rt.mu);
    map_poll(h);
}

void rt_http_map_start(rt_hctx *h)
{
    rt_hreq *r = h->r;
    modal_error err;
    rt_map *m;
    pthread_mutex_lock(&rt.mu);
    if (rt.stopping) {
        pthread_mutex_unlock(&rt.mu);
        rt_hreq_error(r, 503, MODAL_ERUNTIME, "the runtime is shutting down; try again");
        return;
    }
    modal_status st = rt_map_create(h->body, &m, &err);
    cJSON *j = NULL;
    if (st == MODAL_OK) {
        j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "map_id", m->id);
    }
    pthread_mutex_unlock(&rt.mu);
    if (st != MODAL_OK)
        rt_hreq_error(r, rt_http_status_for(st), st, "%s", err.message);
    else
        rt_http_send_json(r, 201, j);
}

void rt_http_map_inputs(rt_hctx *h)
{
    modal_error err;
    rt_map_inputs in; /* the frames are parsed before the lock is taken */
    rt_map_inputs_read(h->body, &in);
    pthread_mutex_lock(&rt.mu);
    rt_map *m = find_map(h);
    if (m != NULL) {
        size_t accepted = 0;
        modal_status st = rt_map_add_inputs(m, &in, &accepted, &err);
        if (st != MODAL_OK) {
            rt_hreq_error(h->r, rt_http_status_for(st), st, "%s", err.message);
        } else {
            cJSON *j = cJSON_CreateObject();
            cJSON_AddNumberToObject(j, "accepted", (double)accepted);
            rt_http_send_json(h->r, 202, j);
        }
    }
    pthread_mutex_unlock(&rt.mu);
    rt_map_inputs_free(&in);
}

void rt_http_map_delete(rt_hctx *h)
{
    pthread_mutex_lock(&rt.mu);
    rt_map *m = find_map(h);
    if (m != NULL) {
        rt_map_free(m);
        rt_http_send_json(h->r, 200, cJSON_CreateObject());
    }
    pthread_mutex_unlock(&rt.mu);
}
