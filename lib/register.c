/*
 * register.c: a function's spec registered with the runtime, once, so
 * that calls and maps name the function by the spec's id alone
 * (POST /v1/functions; docs/wire.md). A runtime that restarted forgets its
 * specs and says so; the caller then registers again.
 */
#include "internal.h"
#include "conn.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * A function's spec id depends only on the function and the executable, so
 * it is worked out once per function and kept here; whether a runtime has
 * it registered is the connection's to know (modal__conn_spec_*), so one
 * program can use several runtimes.
 */
typedef struct reg_entry {
    const modal_function *fn;
    char id[65];
    char artifact[65];
    struct reg_entry *next;
} reg_entry;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static reg_entry *resolved;

/* fn's spec running from artifact, resolved (s cleared by the caller). */
static modal_status spec_of(modal_function *fn, const char *artifact, modal__spec *s,
                            modal_error *err)
{
    const modal_function_options *o = modal__fn_options(fn);
    if (o == NULL)
        return modal__fail(err, MODAL_ENOMEM, "out of memory reading the options of %s",
                           fn->name);
    modal_status st = modal__spec_resolve(fn->name, o, s, err);
    snprintf(s->artifact, sizeof s->artifact, "%s", artifact);
    snprintf(s->app, sizeof s->app, "%s", modal_app_name());
    snprintf(s->fn, sizeof s->fn, "%s", fn->name);
    return st;
}

/* POST the spec; the runtime answers its id, which must be ours. */
static modal_status post_spec(modal_connection *conn, const modal__spec *s, const char *id,
                              modal_error *err)
{
    cJSON *j = modal__spec_json(s);
    char *text = j != NULL ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (text == NULL)
        return modal__fail(err, MODAL_ENOMEM, "out of memory registering %s", s->fn);
    modal__http_req req = {.method = "POST", .path = MODAL__PATH_FUNCTIONS, .body = text,
                           .body_len = strlen(text), .content_type = MODAL__CT_JSON,
                           .timeout = 60};
    modal__http_resp resp;
    modal_status st = modal__http(conn, &req, &resp, err);
    free(text);
    if (st != MODAL_OK)
        return st;
    cJSON *a = resp.body ? cJSON_ParseWithLength((const char *)resp.body->base, resp.body->len)
                         : NULL;
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(a, "spec");
    if (!cJSON_IsString(jid))
        st = modal__fail(err, MODAL_ERUNTIME, "the runtime registered %s but sent no spec id",
                         s->fn);
    else if (strcmp(jid->valuestring, id) != 0)
        st = modal__fail(err, MODAL_ERUNTIME, "the runtime registered %s as spec %.64s, but "
                         "its spec is %s here: the runtime and this program disagree on the "
                         "spec format (versions %s here)", s->fn, jid->valuestring, id,
                         MODAL_VERSION_STRING);
    cJSON_Delete(a);
    modal__http_resp_free(&resp);
    return st;
}

modal_status modal__spec_ensure(modal_connection *conn, modal_function *fn,
                                const char *artifact, char id[65], modal_error *err)
{
    bool known = false;
    pthread_mutex_lock(&reg_lock);
    for (reg_entry *e = resolved; e != NULL && !known; e = e->next)
        if (e->fn == fn && strcmp(e->artifact, artifact) == 0) {
            memcpy(id, e->id, 65);
            known = true;
        }
    pthread_mutex_unlock(&reg_lock);
    if (known && modal__conn_spec_known(conn, id))
        return MODAL_OK;

    modal__spec s;
    modal__spec_init(&s);
    modal_status st = spec_of(fn, artifact, &s, err);
    if (st == MODAL_OK)
        st = modal__spec_register(conn, &s, id, err);
    modal__spec_clear(&s);
    if (st != MODAL_OK)
        return st;
    /* Without memory to remember it, it is resolved again next time. */
    pthread_mutex_lock(&reg_lock);
    reg_entry *e = NULL;
    for (e = resolved; e != NULL && e->fn != fn; e = e->next)
        ;
    if (e == NULL && (e = modal__calloc(1, sizeof *e)) != NULL) {
        e->fn = fn;
        e->next = resolved;
        resolved = e;
    }
    if (e != NULL) {
        memcpy(e->id, id, 65);
        snprintf(e->artifact, sizeof e->artifact, "%s", artifact);
    }
    pthread_mutex_unlock(&reg_lock);
    return MODAL_OK;
}

modal_status modal__spec_register(modal_connection *conn, const modal__spec *s, char id[65],
                                  modal_error *err)
{
    unsigned long gen = modal__conn_generation(conn);
    if (modal__spec_hash(s, id) != 0)
        return modal__fail(err, MODAL_ENOMEM, "out of memory hashing the spec of %s", s->fn);
    if (modal__conn_spec_known(conn, id))
        return MODAL_OK;
    modal_status st = post_spec(conn, s, id, err);
    if (st != MODAL_OK)
        return st;
    /* Without memory to remember it, it is registered again next time. */
    modal__conn_spec_add(conn, id, gen, NULL);
    return MODAL_OK;
}

bool modal__spec_refused(modal_connection *conn, modal_status st, const modal_error *err,
                         const char *id)
{
    if (st != MODAL_ENOTFOUND || err == NULL || id == NULL || id[0] == '\0' ||
        strstr(err->message, MODAL__SPEC_UNKNOWN) == NULL || strstr(err->message, id) == NULL)
        return false;
    modal__conn_spec_forget(conn, id);
    return true;
}
