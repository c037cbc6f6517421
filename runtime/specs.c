/*
 * specs.c: the function specs registered with this runtime. A client
 * registers a function's spec (artifact, app, name, options) once, with
 * POST /v1/functions; calls and maps then name it by its id, the SHA-256 of
 * its canonical form (lib/spec.c), which is also the identity of the pool
 * of workers that serves it. Specs stay registered for the runtime's
 * lifetime, and those registered with POST /v1/functions are kept in the
 * state directory across restarts; a pool comes and goes with its work.
 * Everything here runs with rt.mu held, and is memory work only, except
 * rt_spec_store and rt_specs_load, which do the file I/O.
 */
#include "rt.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUCKETS 4096
#define MAX_SPECS 65536 /* about 40 MiB of specs at most */

typedef struct spec_entry {
    char id[65];
    modal__spec spec;
    struct spec_entry *next;
} spec_entry;

static spec_entry *table[BUCKETS];
static size_t nspecs;

static size_t bucket(const char *id)
{
    /* The id is a hash already: its first hex digits spread evenly. */
    return (size_t)strtoul((char[]){id[0], id[1], id[2], '\0'}, NULL, 16) % BUCKETS;
}

const modal__spec *rt_spec_find(const char *id)
{
    if (modal__artifact_problem(id) != NULL)
        return NULL;
    for (spec_entry *e = table[bucket(id)]; e != NULL; e = e->next)
        if (strcmp(e->id, id) == 0)
            return &e->spec;
    return NULL;
}

/* Keep s (parsed, hashed to id) unless a spec with that id is kept
 * already; either way *out is the kept one. Takes what s owns. */
static modal_status insert(modal__spec *s, const char *id, const modal__spec **out,
                           modal_error *err)
{
    if ((*out = rt_spec_find(id)) != NULL) {
        modal__spec_clear(s);
        return MODAL_OK;
    }
    if (nspecs >= MAX_SPECS) {
        modal__spec_clear(s);
        return modal__fail(err, MODAL_ELIMIT, "this runtime holds %d function specs already, "
                           "its limit; remove %s/specs and restart it to forget them",
                           MAX_SPECS, rt.state_dir);
    }
    spec_entry *e = calloc(1, sizeof *e);
    if (e == NULL)
        abort(); /* the daemon may abort on out-of-memory */
    memcpy(e->id, id, 65);
    e->spec = *s; /* the entry owns what s held */
    size_t b = bucket(id);
    e->next = table[b];
    table[b] = e;
    nspecs++;
    rt_log(0, "registered spec %.12s: %s of app %s from %.12s", id, s->fn, s->app, s->artifact);
    *out = &e->spec;
    return MODAL_OK;
}

modal_status rt_spec_register(const cJSON *obj, const char *what, const modal__spec **out,
                              char id[65], modal_error *err)
{
    modal__spec s;
    modal_status st = modal__spec_parse(obj, what, &s, err);
    if (st != MODAL_OK)
        return st;
    if (modal__spec_hash(&s, id) != 0) {
        modal__spec_clear(&s);
        return modal__fail(err, MODAL_ENOMEM, "runtime out of memory");
    }
    return insert(&s, id, out, err);
}

/* ---- kept across restarts ----------------------------------------------------- */

/*
 * A spec registered with POST /v1/functions is also written to
 * <state>/specs/<id>.json, its canonical text, so that a restarted runtime
 * still knows it and calls by id go on working without a new registration.
 * Registered specs never change, so the file is written without rt.mu.
 */
void rt_spec_store(const char *id, const modal__spec *spec)
{
    char path[700];
    snprintf(path, sizeof path, "%s/specs/%s.json", rt.state_dir, id);
    if (access(path, F_OK) == 0)
        return;
    cJSON *j = modal__spec_json(spec);
    char *text = j != NULL ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/specs", rt.state_dir);
    if (text == NULL || (mkdir(dir, 0700) != 0 && errno != EEXIST) ||
        rt_write_atomic(path, text, strlen(text), 0600) != 0)
        /* The spec stays registered until the runtime stops; after a
         * restart, the client registers it again. */
        rt_log(2, "cannot keep spec %.12s in %s: %s", id, dir,
               text == NULL ? "out of memory" : strerror(errno));
    free(text);
}

void rt_specs_load(void)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/specs", rt.state_dir);
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    size_t loaded = 0;
    pthread_mutex_lock(&rt.mu);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char path[900], id[65], name[65];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (strstr(e->d_name, ".tmp-") != NULL) { /* a write cut short by a crash */
            unlink(path);
            continue;
        }
        size_t n = strlen(e->d_name);
        if (n != 69 || strcmp(e->d_name + 64, ".json") != 0)
            continue;
        snprintf(name, sizeof name, "%.64s", e->d_name);
        char *text = NULL;
        FILE *f = fopen(path, "re");
        if (f != NULL) {
            text = calloc(1, 1u << 20);
            if (text == NULL)
                abort(); /* the daemon may abort on out-of-memory */
            if (fread(text, 1, (1u << 20) - 1, f) == 0) {
                free(text);
                text = NULL;
            }
            fclose(f);
        }
        cJSON *j = text != NULL ? cJSON_Parse(text) : NULL;
        free(text);
        modal__spec s;
        modal_error err;
        const modal__spec *kept;
        modal_status st = j != NULL ? modal__spec_parse(j, "stored spec", &s, &err)
                                    : modal__fail(&err, MODAL_ECODEC, "not JSON");
        cJSON_Delete(j);
        if (st == MODAL_OK && modal__spec_hash(&s, id) != 0)
            abort();
        if (st == MODAL_OK && strcmp(id, name) != 0) {
            /* Written by a version whose canonical form differs, or
             * damaged: the client registers it again if it needs it. */
            modal__spec_clear(&s);
            st = modal__fail(&err, MODAL_ECODEC, "its content hashes to %.12s", id);
        }
        if (st == MODAL_OK)
            st = insert(&s, id, &kept, &err);
        if (st == MODAL_OK) {
            loaded++;
        } else {
            rt_log(2, "removed stored spec %s: %s", path, err.message);
            unlink(path);
        }
    }
    pthread_mutex_unlock(&rt.mu);
    closedir(d);
    if (loaded > 0)
        rt_log(1, "read %zu function spec%s from %s", loaded, loaded == 1 ? "" : "s", dir);
}

/*
 * Options this runtime cannot serve yet are refused when a call needs a
 * pool, naming the feature and the value the function asked for, so the
 * user knows which option to drop. Registering such a spec succeeds: a
 * runtime that can serve it later will take the same spec.
 */
modal_status rt_spec_servable(const modal__spec *s, modal_error *err)
{
    if (s->volumes != NULL && s->volumes->child != NULL) {
        const cJSON *v = s->volumes->child;
        const cJSON *vname = cJSON_GetObjectItemCaseSensitive(v, "name");
        return modal__fail(err, MODAL_EOPTION,
                           "%s: volume \"%.64s\" at %.200s: this runtime does not provide "
                           "volumes yet; drop the .volumes option or use a runtime that "
                           "provides them", s->fn,
                           cJSON_IsString(vname) ? vname->valuestring : "(unnamed)", v->string);
    }
    if (s->secrets != NULL && s->secrets->child != NULL)
        return modal__fail(err, MODAL_EOPTION,
                           "%s: secret \"%.64s\": this runtime does not provide secrets yet; "
                           "drop the .secrets option or use a runtime that provides them",
                           s->fn, s->secrets->child->valuestring);
    if (s->image != NULL)
        return modal__fail(err, MODAL_EOPTION,
                           "%s: image \"%.128s\": this runtime does not provide images yet; "
                           "drop the .image option to run on the runtime host's own system",
                           s->fn, s->image);
    return MODAL_OK;
}

cJSON *rt_pools_status(void)
{
    cJSON *list = cJSON_CreateArray();
    for (rt_pool *p = rt.pools; list != NULL && p != NULL; p = p->next) {
        cJSON *j = cJSON_CreateObject();
        if (j == NULL || !cJSON_AddItemToArray(list, j))
            abort();
        cJSON_AddStringToObject(j, "spec", p->key);
        cJSON_AddStringToObject(j, "fn", p->spec->fn);
        cJSON_AddStringToObject(j, "app", p->spec->app);
        cJSON_AddNumberToObject(j, "workers", p->nworkers);
        cJSON_AddNumberToObject(j, "queued", (double)p->queued);
        cJSON_AddNumberToObject(j, "gpu_seconds", p->gpu_seconds);
    }
    return list;
}
