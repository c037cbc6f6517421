/*
 * http_artifacts.c: the artifacts resource, the executables that define
 * functions, named by their SHA-256. HEAD or GET /v1/artifacts/<sha256>
 * says whether it is stored intact; PUT stores it, its body streaming into
 * the store as it arrives (see on_head and on_body in http.c).
 */
#include "http_routes.h"

/* 400 when h->id is not a SHA-256; returns whether it is one. */
static bool sha_ok(rt_hctx *h)
{
    const char *bad = modal__artifact_problem(h->id);
    if (bad != NULL)
        rt_hreq_error(h->r, 400, MODAL_EINVAL, "\"%.80s\" %s", h->id, bad);
    return bad == NULL;
}

void rt_http_artifact_check(rt_hctx *h)
{
    rt_hreq *r = h->r;
    const char *sha = h->id;
    if (!sha_ok(h))
        return;
    /* A client asks before its first call: check the stored file here,
     * outside rt.mu, so that a damaged one is uploaded again at once and a
     * new pool finds it checked already. */
    char why[700];
    if (!rt_artifact_exists(sha))
        rt_hreq_error(r, 404, MODAL_ENOTFOUND, "artifact %s is not stored", sha);
    else if (rt_artifact_verify(sha, why, sizeof why) != 0)
        rt_hreq_error(r, 404, MODAL_ENOTFOUND, "%s", why);
    else
        rt_http_send_json(r, 200, cJSON_CreateObject());
}

void rt_http_artifact_put(rt_hctx *h)
{
    rt_hreq *r = h->r;
    const char *sha = h->id;
    if (!sha_ok(h))
        return;
    char err[1024];
    bool created = false;
    rt_upload *u = h->up;
    h->up = NULL;
    int rc = u ? rt_upload_finish(u, &created, err, sizeof err) : -2;
    if (u == NULL)
        snprintf(err, sizeof err, "cannot store artifact %s: the upload did not start", sha);
    if (rc == -1) {
        rt_hreq_error(r, 400, MODAL_EINVAL, "%s", err);
        return;
    }
    if (rc != 0) {
        rt_log(3, "%s", err);
        rt_hreq_error(r, 507, MODAL_EIO, "%s", err);
        return;
    }
    if (created)
        rt_log(1, "stored artifact %s", sha);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "artifact", sha);
    rt_http_send_json(r, created ? 201 : 200, j);
}
