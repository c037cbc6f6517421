/*
 * gpu_remote.c: remote kernel launch (modal_gpu_run_remote). The launch
 * becomes a call of the runtime's kernel worker (runtime/kernel_worker.c),
 * whose artifact hash the runtime names in GET /v1/health: this program
 * registers a spec for that function with the GPU request it was given and
 * calls it like any function (lib/remote.c), so a lost spec or artifact is
 * provided again as for every call. The argument layout is
 * lib/gpu_remote.h's. Nothing here needs CUDA: the fatbin's header is read
 * only to find its length.
 */
#include "conn.h"
#include "cuda.h"
#include "gpu_remote.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the kernel worker's artifact, learned once per connection ---------- */

static bool hex64(const char *s)
{
    size_t i = 0;
    for (; s[i] != '\0' && i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return i == 64 && s[i] == '\0';
}

/* The kernel worker's hash on conn's runtime into sha: remembered for the
 * runtime the connection points at (its generation), else asked for. */
static modal_status kernel_worker_of(modal_connection *conn, char sha[65], modal_error *err)
{
    modal_connection *c = modal__conn_acquire(conn);
    unsigned long gen = modal__conn_generation(c);
    pthread_mutex_lock(&c->lock);
    bool known = c->kernel_worker[0] != '\0' && c->kernel_worker_gen == gen;
    if (known)
        memcpy(sha, c->kernel_worker, 65);
    pthread_mutex_unlock(&c->lock);
    if (known) {
        modal__conn_release(c);
        return MODAL_OK;
    }
    modal__http_req req = {.method = "GET", .path = MODAL__PATH_HEALTH, .timeout = 30};
    modal__http_resp resp;
    modal_status st = modal__http(c, &req, &resp, err);
    if (st != MODAL_OK) {
        modal__conn_release(c);
        return st;
    }
    cJSON *j = resp.body != NULL
                   ? cJSON_ParseWithLength((const char *)resp.body->base, resp.body->len)
                   : NULL;
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(j, "kernel_worker");
    const cJSON *why = cJSON_GetObjectItemCaseSensitive(j, "kernel_worker_missing");
    if (cJSON_IsString(kw) && hex64(kw->valuestring)) {
        memcpy(sha, kw->valuestring, 65);
        pthread_mutex_lock(&c->lock);
        if (c->generation == gen) {
            memcpy(c->kernel_worker, sha, 65);
            c->kernel_worker_gen = gen;
        }
        pthread_mutex_unlock(&c->lock);
    } else if (cJSON_IsString(why)) {
        st = modal__fail(err, MODAL_ENOTFOUND, "the runtime at %s offers no remote kernel "
                         "launch: %s", modal__conn_url(c), why->valuestring);
    } else {
        st = modal__fail(err, MODAL_ENOTFOUND, "the runtime at %s offers no remote kernel "
                         "launch (its health answer names no kernel worker; it is older than "
                         "this library, version %s)", modal__conn_url(c), MODAL_VERSION_STRING);
    }
    cJSON_Delete(j);
    modal__http_resp_free(&resp);
    modal__conn_release(c);
    return st;
}

static void kernel_worker_forget(modal_connection *conn, const char *sha)
{
    modal_connection *c = modal__conn_acquire(conn);
    pthread_mutex_lock(&c->lock);
    if (strcmp(c->kernel_worker, sha) == 0)
        c->kernel_worker[0] = '\0';
    pthread_mutex_unlock(&c->lock);
    modal__conn_release(c);
}

/* ---- the call target ------------------------------------------------------ */

typedef struct kw_target {
    const char *gpu;   /* the request, checked */
    char sha[65];      /* the kernel worker's artifact, once learned */
} kw_target;

static modal_status kw_prepare(modal_connection *conn, void *ctx, const char **artifact,
                               char spec_id[65], modal_error *err)
{
    kw_target *t = ctx;
    modal_status st = kernel_worker_of(conn, t->sha, err);
    if (st != MODAL_OK)
        return st;
    *artifact = t->sha;
    /* The kernel worker's own options, but for the GPU asked for here. */
    modal_function_options o = {MODAL__OPTION_DEFAULTS};
    o.gpu = t->gpu;
    modal__spec s;
    modal__spec_init(&s);
    st = modal__spec_resolve(MODAL__KW_FUNCTION, &o, &s, err);
    snprintf(s.artifact, sizeof s.artifact, "%s", t->sha);
    snprintf(s.app, sizeof s.app, "%s", MODAL__KW_APP);
    snprintf(s.fn, sizeof s.fn, "%s", MODAL__KW_FUNCTION);
    if (st == MODAL_OK)
        st = modal__spec_register(conn, &s, spec_id, err);
    modal__spec_clear(&s);
    return st;
}

/* The runtime lost the kernel worker's file (removed as damaged, or a new
 * state directory): its health answer stores it again, so ask again. */
static bool kw_lost(modal_connection *conn, void *ctx, modal_status st, const modal_error *err,
                    const char *artifact)
{
    if ((st != MODAL_ENOTFOUND && st != MODAL_EIO) || err == NULL || artifact == NULL ||
        artifact[0] == '\0' || strstr(err->message, artifact) == NULL)
        return false;
    kernel_worker_forget(conn, artifact);
    return true;
}

/* ---- checking the launch ---------------------------------------------------- */

static const char *kind_name(modal_gpu_arg_kind k)
{
    switch (k) {
    case MODAL_GPU_ARG_SCALAR: return "scalar";
    case MODAL_GPU_ARG_IN: return "IN array";
    case MODAL_GPU_ARG_OUT: return "OUT array";
    case MODAL_GPU_ARG_INOUT: return "INOUT array";
    }
    return "?";
}

#define BAD(...) modal__fail(err, MODAL_EINVAL, __VA_ARGS__)

static modal_status check_dim(const char *api, const char *what, modal_dim3 d, modal_error *err)
{
    if (d.x == 0 || d.y == 0 || d.z == 0)
        return BAD("%s: launch->%s is {%u, %u, %u}; every size must be at least 1 "
                   "(MODAL_DIM3(n) fills the others with 1)", api, what, d.x, d.y, d.z);
    return MODAL_OK;
}

/* The image's length: a fatbin's own header gives it, and only fatbins
 * travel (the worker loads what the fatbin holds for its device). */
static modal_status image_size(const char *api, const modal_gpu_image *im, size_t *size,
                               modal_error *err)
{
    const char *name = im->name != NULL ? im->name : "the image";
    uint32_t magic = 0;
    if (im->size != 0 && im->size < sizeof magic)
        return BAD("%s: %s is %zu bytes, too short for a fatbin", api, name, im->size);
    memcpy(&magic, im->data, sizeof magic);
    if (magic != MODAL__FATBIN_MAGIC)
        return BAD("%s: %s does not start with the fatbin magic 0x%08X (it starts 0x%08X); "
                   "remote kernel launch sends fatbins only: build one with nvcc -fatbin "
                   "(docs/gpu.md)", api, name, MODAL__FATBIN_MAGIC, magic);
    modal__fatbin_arch archs[16];
    size_t n = 0;
    modal_error ferr;
    /* A size of 0 means the header is to be trusted for the length, as
     * modal_gpu_run does for images linked into the program. */
    size_t len = im->size != 0 ? im->size : (size_t)1 << 40;
    if (modal__fatbin_parse(im->data, len, size, archs, 16, &n, &ferr) != MODAL_OK)
        return BAD("%s: %s: %s", api, name, ferr.message);
    return MODAL_OK;
}

static modal_status check_launch(const char *api, const char *gpu, const modal_gpu_launch *l,
                                 size_t *image_len, modal_error *err)
{
    if (gpu == NULL || gpu[0] == '\0')
        return BAD("%s: gpu is %s; name the GPU to run on, e.g. \"any\" or \"H100\"", api,
                   gpu == NULL ? "NULL" : "empty");
    modal__gpu_choice ch[MODAL__GPU_MAX_CHOICES];
    size_t nch = 0;
    modal_error gerr;
    if (modal__gpu_spec_parse(gpu, ch, &nch, &gerr) != MODAL_OK)
        return modal__fail(err, gerr.code, "%s: %s", api, gerr.message);
    if (l == NULL)
        return modal__null_arg(err, api, "launch", "pass the address of a modal_gpu_launch");
    if (l->image == NULL || l->image->data == NULL)
        return BAD("%s: launch->image%s is NULL; pass &NAME_gpu_image of MODAL_GPU_IMAGE(NAME) "
                   "or an image of your own bytes", api, l->image == NULL ? "" : "->data");
    modal_status st = image_size(api, l->image, image_len, err);
    if (st != MODAL_OK)
        return st;
    if (l->kernel == NULL || l->kernel[0] == '\0')
        return BAD("%s: launch->kernel is %s; name the kernel's entry (extern \"C\" in the .cu)",
                   api, l->kernel == NULL ? "NULL" : "empty");
    if (strlen(l->kernel) > MODAL__KW_NAME_MAX)
        return BAD("%s: launch->kernel \"%.32s...\" is %zu bytes long; kernel names are at most "
                   "%d", api, l->kernel, strlen(l->kernel), MODAL__KW_NAME_MAX);
    if ((st = check_dim(api, "grid", l->grid, err)) != MODAL_OK ||
        (st = check_dim(api, "block", l->block, err)) != MODAL_OK)
        return st;
    if (l->device < 0)
        return BAD("%s: launch->device is %d; devices are numbered from 0", api, l->device);
    if (l->nargs > MODAL_GPU_MAX_ARGS)
        return modal__fail(err, MODAL_ELIMIT, "%s: launch->nargs is %zu; a launch has at most "
                           "%d arguments", api, l->nargs, MODAL_GPU_MAX_ARGS);
    if (l->nargs > 0 && l->args == NULL)
        return BAD("%s: launch->args is NULL with nargs %zu", api, l->nargs);
    for (size_t i = 0; i < l->nargs; i++) {
        const modal_gpu_arg *a = &l->args[i];
        if (a->kind != MODAL_GPU_ARG_SCALAR && a->kind != MODAL_GPU_ARG_IN &&
            a->kind != MODAL_GPU_ARG_OUT && a->kind != MODAL_GPU_ARG_INOUT)
            return BAD("%s: argument %zu has kind %d; use MODAL_GPU_SCALAR, MODAL_GPU_IN, "
                       "MODAL_GPU_OUT or MODAL_GPU_INOUT", api, i, (int)a->kind);
        if (a->kind == MODAL_GPU_ARG_SCALAR && (a->size < 1 || a->size > MODAL__KW_SCALAR_MAX))
            return BAD("%s: argument %zu is a scalar of %zu bytes; scalars are 1 to %d bytes",
                       api, i, a->size, MODAL__KW_SCALAR_MAX);
        if (a->data == NULL && a->size > 0)
            return BAD("%s: argument %zu (%s of %zu bytes) points at NULL", api, i,
                       kind_name(a->kind), a->size);
    }
    return MODAL_OK;
}

/* ---- the call ------------------------------------------------------------------ */

static modal_value *arg_value(const modal_gpu_arg *a)
{
    modal_value *payload = a->kind == MODAL_GPU_ARG_OUT
                               ? modal_int((int64_t)a->size)
                               : modal_bytes(a->data, a->size);
    modal_value *pair[2] = {modal_int(a->kind), payload};
    if (pair[0] == NULL || pair[1] == NULL) {
        modal_value_free(pair[0]);
        modal_value_free(pair[1]);
        return NULL;
    }
    return modal_list_of(pair, 2);
}

/* The image's name as the worker takes names: at most MODAL__KW_NAME_MAX
 * bytes, no control characters. It only labels messages. */
static void image_label(const modal_gpu_image *im, char out[MODAL__KW_NAME_MAX + 1])
{
    const char *n = im->name != NULL && im->name[0] != '\0' ? im->name : "image";
    size_t i = 0;
    for (; n[i] != '\0' && i < MODAL__KW_NAME_MAX; i++)
        out[i] = (unsigned char)n[i] < 0x20 || n[i] == 0x7f ? '?' : n[i];
    out[i] = '\0';
}

/* The call's argument list (lib/gpu_remote.h), or NULL out of memory. */
static modal_value *launch_args(const modal_gpu_launch *l, size_t image_len)
{
    char label[MODAL__KW_NAME_MAX + 1];
    image_label(l->image, label);
    const unsigned grid[3] = {l->grid.x, l->grid.y, l->grid.z};
    const unsigned block[3] = {l->block.x, l->block.y, l->block.z};
    modal_value *v[MODAL__KW_NARGS] = {
        [MODAL__KW_IMAGE] = modal_bytes(l->image->data, image_len),
        [MODAL__KW_IMAGE_NAME] = modal_string(label),
        [MODAL__KW_KERNEL] = modal_string(l->kernel),
        [MODAL__KW_GRID] = modal_array(MODAL_U32, grid, 3),
        [MODAL__KW_BLOCK] = modal_array(MODAL_U32, block, 3),
        [MODAL__KW_SHARED] = modal_int(l->shared_bytes),
        [MODAL__KW_DEVICE] = modal_int(l->device),
        [MODAL__KW_ARGS] = modal_list(),
    };
    bool ok = true;
    for (size_t i = 0; i < MODAL__KW_NARGS; i++)
        ok = ok && v[i] != NULL;
    for (size_t i = 0; ok && i < l->nargs; i++) {
        modal_value *a = arg_value(&l->args[i]);
        ok = a != NULL && modal_list_append(v[MODAL__KW_ARGS], a, NULL) == MODAL_OK;
    }
    if (!ok) {
        for (size_t i = 0; i < MODAL__KW_NARGS; i++)
            modal_value_free(v[i]);
        return NULL;
    }
    return modal_list_of(v, MODAL__KW_NARGS);
}

/* Write the worker's OUT and INOUT arrays back, checking each size. */
static modal_status take_result(const char *api, const modal_gpu_launch *l,
                                const modal_value *r, modal_gpu_stats *stats, modal_error *err)
{
    const modal_value *out = modal_map_get(r, "out");
    const modal_value *times = modal_map_get(r, "stats");
    size_t want = 0;
    for (size_t i = 0; i < l->nargs; i++)
        want += l->args[i].kind == MODAL_GPU_ARG_OUT || l->args[i].kind == MODAL_GPU_ARG_INOUT;
    size_t nt = 0;
    const double *t = NULL;
    if (times != NULL)
        modal_get_array(times, MODAL_F64, (const void **)&t, &nt, NULL);
    if (out == NULL || modal_value_type(out) != MODAL_TYPE_LIST || modal_value_len(out) != want ||
        t == NULL || nt != 3)
        return modal__fail(err, MODAL_ECODEC, "%s: the kernel worker answered %s: expected "
                           "{\"out\": %zu arrays, \"stats\": 3 times}; the runtime's "
                           "modal-kernel-worker and this library (%s) may differ in version",
                           api, out == NULL ? "without \"out\"" : "another shape", want,
                           MODAL_VERSION_STRING);
    /* Every size is checked before anything is written: a bad answer
     * leaves the caller's memory as it was. */
    for (int write = 0; write < 2; write++)
        for (size_t i = 0, k = 0; i < l->nargs; i++) {
            const modal_gpu_arg *a = &l->args[i];
            if (a->kind != MODAL_GPU_ARG_OUT && a->kind != MODAL_GPU_ARG_INOUT)
                continue;
            const void *p = NULL;
            size_t n = 0;
            if (modal_get_bytes(modal_list_get(out, k++), &p, &n, NULL) != MODAL_OK ||
                n != a->size)
                return modal__fail(err, MODAL_ECODEC, "%s: the kernel worker sent %zu bytes "
                                   "for argument %zu (%s of %zu bytes); nothing was written "
                                   "back", api, n, i, kind_name(a->kind), a->size);
            if (write && n > 0)
                memcpy(a->data, p, n);
        }
    if (stats != NULL) {
        stats->copy_in_s = t[0];
        stats->kernel_s = t[1];
        stats->copy_out_s = t[2];
    }
    return MODAL_OK;
}

static modal_status run_remote(const char *api, modal_connection *conn, const char *gpu,
                               const modal_gpu_launch *launch, modal_gpu_stats *stats,
                               modal_error *err)
{
    size_t image_len = 0;
    modal_status st = check_launch(api, gpu, launch, &image_len, err);
    if (st != MODAL_OK)
        return st;
    modal_value *args = launch_args(launch, image_len);
    if (args == NULL)
        return modal__fail(err, MODAL_ENOMEM, "%s: out of memory building the call for kernel "
                           "%s", api, launch->kernel);
    kw_target kt = {gpu, ""};
    modal__call_target t = {MODAL__KW_FUNCTION, kw_prepare, kw_lost, &kt};
    modal_value *r = NULL;
    st = modal__remote_call(conn, &t, args, &r, err);
    if (st == MODAL_OK && (st = take_result(api, launch, r, stats, err)) == MODAL_OK)
        modal__ok(err);
    modal_value_free(r);
    return st;
}

modal_status modal_gpu_run_remote(const char *gpu, const modal_gpu_launch *launch,
                                  modal_gpu_stats *stats, modal_error *err)
{
    return run_remote("modal_gpu_run_remote", NULL, gpu, launch, stats, err);
}

modal_status modal_gpu_run_remote_on(modal_connection *conn, const char *gpu,
                                     const modal_gpu_launch *launch, modal_gpu_stats *stats,
                                     modal_error *err)
{
    return run_remote("modal_gpu_run_remote_on", conn, gpu, launch, stats, err);
}
