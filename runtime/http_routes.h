/*
 * http_routes.h: what the HTTP API's handlers share (private to the
 * runtime's http*.c files). runtime/http.c owns the request context, the
 * token check, body accumulation, the send helpers, long-poll suspension
 * and the route table with its dispatch; each resource's handlers live in
 * a file of their own (http_calls.c, http_maps.c, http_artifacts.c,
 * http_apps.c, http_status.c). A new route is one line in RT_ROUTES
 * (http_table.h) and a handler declared here.
 */
#ifndef RT_HTTP_ROUTES_H
#define RT_HTTP_ROUTES_H

#include "rt.h"
#include "httpd.h"
#include "http_table.h"

/*
 * A request's state in the handlers; also what a call's or map's list of
 * waiting requests holds (struct rt_http_wait in rt.h).
 */
typedef struct rt_http_wait {
    rt_hreq *r;
    const struct rt_route *route; /* NULL: no route answers this method and path */
    char id[RT_ROUTE_ID_MAX];     /* the route's id segment, "" when it has none */
    modal__buf *body;       /* the body of a route that takes one, else NULL */
    size_t cap;
    int body_fd;            /* large bodies: a memfd of body_len bytes */
    size_t body_len;
    size_t expect;          /* Content-Length, 0 if absent */
    rt_upload *up;          /* RT_ROUTE_UPLOAD: artifact upload in progress */
    /* A long poll: until when, and what it has seen. */
    double deadline;        /* RT_ROUTE_WAITS: now + ?wait= */
    long long log_offset;
    double after;
    /* Set once the request has waited on a call or map (rt_http_wait_on):
     * what runs again on resume. */
    void (*poll)(struct rt_http_wait *h);
    void *on;               /* the rt_call or rt_map whose list holds it (rt.mu) */
    struct rt_http_wait *wnext, **wprev;
} rt_hctx;

/* ---- the route table (http.c) ---------------------------------------- */

/* A handler: answers h->r, or suspends it (RT_ROUTE_WAITS routes). */
typedef void rt_route_fn(rt_hctx *h);

typedef struct rt_route {
    const char *method;  /* "GET", "HEAD", "POST", "PUT", "DELETE" */
    /* The path; at most one segment may be "<name>", which matches one
     * non-empty segment of up to RT_ROUTE_ID_MAX - 1 bytes, copied to
     * h->id. The name is shown in 405 answers only. */
    const char *pattern;
    rt_route_fn *fn;
    const char *body;    /* the content type of the body it needs, or NULL */
    unsigned flags;      /* RT_ROUTE_* */
} rt_route;

extern const rt_route rt_routes[];
extern const size_t rt_nroutes;

/*
 * Find the route for method and path: returns it, with its id segment in
 * id; or NULL, with allow filled with the methods the path takes
 * ("GET, DELETE"; "" when no route has the path). A HEAD matches only a
 * route that lists HEAD.
 */
const rt_route *rt_route_find(const char *method, const char *path, char id[RT_ROUTE_ID_MAX],
                              char *allow, size_t allowsz);

/* ---- helpers for handlers (http.c) ------------------------------------ */

/* Answer j (consumed) as JSON. */
void rt_http_send_json(rt_hreq *r, int status, cJSON *j);
/* Answer b with one numeric header (hname NULL: none). */
void rt_http_send_buf(rt_hreq *r, int status, modal__buf *b, const char *ctype,
                      const char *hname, long long hval);
/* Answer 404: h->id names no call, map, ... (what) here. problem is the
 * protocol's verdict on the id's form (NULL: well formed), why ("" or
 * " (...)") what else may explain it. */
void rt_http_unknown_id(rt_hctx *h, const char *what, const char *problem, const char *why);
/* The HTTP status of an error a request caused. */
int rt_http_status_for(modal_status st);
/* Parse a number query argument within [lo, hi]; dflt when absent.
 * Returns 0, or -1 with 400 answered when present and not such a number
 * ("name=\"v\": must be <what>"). */
int rt_http_num_arg(rt_hreq *r, const char *name, double lo, double hi, double dflt,
                    const char *what, double *out);
/*
 * With rt.mu held: make h wait on a call's or map's list (head, within
 * on), so that rt_http_call_changed / rt_http_map_changed resumes it and
 * poll runs again. The caller suspends h->r (rt_hreq_suspend) once it has
 * released rt.mu.
 */
void rt_http_wait_on(rt_hctx *h, void *on, struct rt_http_wait **head,
                     void (*poll)(rt_hctx *h));
/* With rt.mu held: h waits no more. */
void rt_http_wait_end(rt_hctx *h);

/* ---- handlers, one file per resource ---------------------------------- */

/* http_status.c */
void rt_http_health(rt_hctx *h);
/* http_artifacts.c */
void rt_http_artifact_check(rt_hctx *h);
void rt_http_artifact_put(rt_hctx *h);
/* http_calls.c */
void rt_http_call_start(rt_hctx *h);
void rt_http_call_get(rt_hctx *h);
void rt_http_call_cancel(rt_hctx *h);
void rt_http_call_logs(rt_hctx *h);
/* http_maps.c */
void rt_http_map_start(rt_hctx *h);
void rt_http_map_delete(rt_hctx *h);
void rt_http_map_inputs(rt_hctx *h);
void rt_http_map_results(rt_hctx *h);
/* http_apps.c */
void rt_http_app_logs(rt_hctx *h);
/* http_functions.c */
void rt_http_function_register(rt_hctx *h);

#endif /* RT_HTTP_ROUTES_H */
