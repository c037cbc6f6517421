/*
 * register.c: a function's spec registered with the runtime, once, so
 * that calls and maps name the function by the spec's id alone
 * (POST /v1/functions; docs/wire.md). A runtime that restarted forgets its
 * specs and says so; the caller then registers again.
 */
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * What this process registered: per function, the spec id and the runtime
 * it was registered with. A runtime that forgets (restarted, or another
 * one behind the same URL) answers a call with MODAL__SPEC_UNKNOWN, and
 * the caller registers again.
 */
typedef struct reg_entry {
    const modal_function *fn;
    char id[65];
    char artifact[65];
    char url[600];
    struct reg_entry *next;
} reg_entry;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static reg_entry *registered;

static reg_entry *reg_find(const modal_function *fn)
{
    for (reg_entry *e = registered; e != NULL; e = e->next)
        if (e->fn == fn)
            return e;
    return NULL;
}

/* POST the spec; the runtime answers its id. */
static modal_status post_spec(const modal__spec *s, char id[65], modal_error *err)
{
    cJSON *j = modal__spec_json(s);
    char *text = j != NULL ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (text == NULL)
        return modal__fail(err, MODAL_ENOMEM, "out of memory registering %s", s->fn);
    modal__http_req req = {.method = "POST", .path = "/v1/functions", .body = text,
                           .body_len = strlen(text), .content_type = "application/json",
                           .timeout = 60};
    modal__http_resp resp;
    modal_status st = modal__http(&req, &resp, err);
    free(text);
    if (st != MODAL_OK)
        return st;
    cJSON *a = resp.body ? cJSON_ParseWithLength((const char *)resp.body->base, resp.body->len)
                         : NULL;
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(a, "spec");
    if (cJSON_IsString(jid) && strlen(jid->valuestring) == 64)
        memcpy(id, jid->valuestring, 65);
    else
        st = modal__fail(err, MODAL_ERUNTIME, "the runtime registered %s but sent no spec id",
                         s->fn);
    cJSON_Delete(a);
    modal__http_resp_free(&resp);
    return st;
}

modal_status modal__spec_ensure(modal_function *fn, const char *artifact, char id[65],
                                modal_error *err)
{
    const char *url = modal_runtime_url();
    pthread_mutex_lock(&reg_lock);
    reg_entry *e = reg_find(fn);
    if (e != NULL && e->id[0] != '\0' && strcmp(e->artifact, artifact) == 0 &&
        strcmp(e->url, url) == 0) {
        memcpy(id, e->id, 65);
        pthread_mutex_unlock(&reg_lock);
        return MODAL_OK;
    }
    pthread_mutex_unlock(&reg_lock);

    const modal_function_options *o = modal__fn_options(fn);
    if (o == NULL)
        return modal__fail(err, MODAL_ENOMEM, "out of memory reading the options of %s",
                           fn->name);
    modal__spec s;
    modal__spec_init(&s);
    modal_status st = modal__spec_resolve(fn->name, o, &s, err);
    snprintf(s.artifact, sizeof s.artifact, "%s", artifact);
    snprintf(s.app, sizeof s.app, "%s", modal_app_name());
    snprintf(s.fn, sizeof s.fn, "%s", fn->name);
    if (st == MODAL_OK)
        st = post_spec(&s, id, err);
    modal__spec_clear(&s);
    if (st != MODAL_OK)
        return st;

    pthread_mutex_lock(&reg_lock);
    if ((e = reg_find(fn)) == NULL && (e = modal__calloc(1, sizeof *e)) != NULL) {
        e->fn = fn;
        e->next = registered;
        registered = e;
    }
    if (e != NULL) { /* without memory to remember it, it is registered again next time */
        memcpy(e->id, id, 65);
        snprintf(e->artifact, sizeof e->artifact, "%s", artifact);
        snprintf(e->url, sizeof e->url, "%s", url);
    }
    pthread_mutex_unlock(&reg_lock);
    return MODAL_OK;
}

bool modal__spec_refused(modal_status st, const modal_error *err, const char *id)
{
    if (st != MODAL_ENOTFOUND || err == NULL || id == NULL || id[0] == '\0' ||
        strstr(err->message, MODAL__SPEC_UNKNOWN) == NULL || strstr(err->message, id) == NULL)
        return false;
    pthread_mutex_lock(&reg_lock);
    for (reg_entry *e = registered; e != NULL; e = e->next)
        if (strcmp(e->id, id) == 0)
            e->id[0] = '\0';
    pthread_mutex_unlock(&reg_lock);
    return true;
}
