/*
 * kernel_worker.c: modal-kernel-worker, the program a runtime runs for
 * remote kernel launch (docs/gpu.md, "Remote kernel launch"). It is an
 * ordinary libmodal program with one function: the runtime stores it as
 * an artifact (runtime/kernel_offer.c) and clients register a spec for
 * that function with the GPUs they want, so it runs in a GPU worker like
 * any function, with that worker's warm context.
 *
 * Its arguments come from a client over the network, so everything is
 * checked before anything reaches the driver, with messages naming the
 * bad value. Each image is kept, by its SHA-256, for the worker's life:
 * modal_gpu_kernel keys its module cache by the image's bytes' address,
 * so the same fatbin sent again reuses the module loaded the first time.
 */
#include <modal.h>

#include "cuda.h"
#include "gpu_remote.h"
#include "internal.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

MODAL_APP(MODAL__KW_APP);

/* Fail the call with status code and a message (the client gets both);
 * NULL, for any pointer a reader returns. */
__attribute__((format(printf, 3, 4))) static void *fail(modal_ctx *ctx, modal_status code,
                                                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char msg[MODAL_ERROR_MESSAGE_SIZE];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    modal_ctx_fail(ctx, "%s", msg);
    ctx->code = code;
    return NULL;
}

/* ---- images kept for the worker's life ----------------------------------------- */

/* At most this many images, and this many bytes of them, per worker: each
 * holds a loaded module on the device, which is never unloaded. */
#define IMAGES_MAX 64
#define IMAGE_BYTES_MAX ((size_t)1 << 30)

typedef struct kept_image {
    char sha[65];
    unsigned char *bytes;
    modal_gpu_image image;
} kept_image;

static pthread_mutex_t images_mu = PTHREAD_MUTEX_INITIALIZER;
static kept_image images[IMAGES_MAX];
static size_t nimages, image_bytes;

/* The kept copy of p[0..n) (name for messages), or NULL with the call
 * failed. */
static const modal_gpu_image *keep_image(modal_ctx *ctx, const void *p, size_t n,
                                         const char *name)
{
    modal__sha256 h;
    modal__sha256_init(&h);
    modal__sha256_update(&h, p, n);
    char sha[65];
    modal__sha256_hex(&h, sha);
    const modal_gpu_image *found = NULL;
    pthread_mutex_lock(&images_mu);
    for (size_t i = 0; i < nimages && found == NULL; i++)
        if (strcmp(images[i].sha, sha) == 0)
            found = &images[i].image;
    if (found == NULL && (nimages == IMAGES_MAX || image_bytes + n > IMAGE_BYTES_MAX)) {
        pthread_mutex_unlock(&images_mu);
        return fail(ctx, MODAL_ELIMIT, "image %s: this kernel worker holds %zu images (%zu "
                    "bytes) already, its limit (%d images, %zu bytes); use fewer distinct "
                    "images, or another .gpu request for a fresh worker", name, nimages,
                    image_bytes, IMAGES_MAX, IMAGE_BYTES_MAX);
    }
    if (found == NULL) {
        kept_image *k = &images[nimages];
        k->bytes = malloc(n);
        if (k->bytes == NULL) {
            pthread_mutex_unlock(&images_mu);
            return fail(ctx, MODAL_ENOMEM, "image %s: out of memory keeping its %zu bytes",
                        name, n);
        }
        memcpy(k->bytes, p, n);
        memcpy(k->sha, sha, sizeof sha);
        /* The name of the first launch that sent it: it is the same bytes. */
        k->image.name = strdup(name);
        k->image.data = k->bytes;
        k->image.size = n;
        nimages++;
        image_bytes += n;
        found = &k->image;
    }
    pthread_mutex_unlock(&images_mu);
    return found;
}

/* ---- reading the launch ---------------------------------------------------------- */

static const char *const arg_names[MODAL__KW_NARGS] = {
    [MODAL__KW_IMAGE] = "image",   [MODAL__KW_IMAGE_NAME] = "image name",
    [MODAL__KW_KERNEL] = "kernel", [MODAL__KW_GRID] = "grid",
    [MODAL__KW_BLOCK] = "block",   [MODAL__KW_SHARED] = "shared bytes",
    [MODAL__KW_DEVICE] = "device", [MODAL__KW_ARGS] = "kernel arguments",
};

/* Item i of args with type t, or NULL with the call failed. */
static const modal_value *item(modal_ctx *ctx, const modal_value *args, size_t i, modal_type t)
{
    const modal_value *v = modal_list_get(args, i);
    if (v == NULL || modal_value_type(v) != t)
        return fail(ctx, MODAL_EINVAL, "argument %zu (%s): expected %s, got %s", i,
                    arg_names[i], modal_type_name(t),
                    v == NULL ? "nothing" : modal_type_name(modal_value_type(v)));
    return v;
}

/* A name: 1..MODAL__KW_NAME_MAX bytes, printable, no NUL inside. */
static const char *name_arg(modal_ctx *ctx, const modal_value *args, size_t i)
{
    const modal_value *v = item(ctx, args, i, MODAL_TYPE_STRING);
    const char *s = NULL;
    size_t n = 0;
    if (v == NULL || modal_get_string(v, &s, &n, NULL) != MODAL_OK)
        return NULL;
    if (n == 0 || n > MODAL__KW_NAME_MAX || strlen(s) != n)
        return fail(ctx, MODAL_EINVAL, "argument %zu (%s): %zu bytes%s; names are 1 to %d "
                    "bytes without NUL", i, arg_names[i], n,
                    strlen(s) != n ? " with a NUL inside" : "", MODAL__KW_NAME_MAX);
    for (size_t k = 0; k < n; k++)
        if ((unsigned char)s[k] < 0x20 || s[k] == 0x7f)
            return fail(ctx, MODAL_EINVAL, "argument %zu (%s): byte %zu is a control character "
                        "(0x%02x)", i, arg_names[i], k, (unsigned char)s[k]);
    return s;
}

static bool dim_arg(modal_ctx *ctx, const modal_value *args, size_t i, modal_dim3 *d)
{
    const modal_value *v = modal_list_get(args, i);
    const void *p = NULL;
    size_t n = 0;
    if (v == NULL || modal_get_array(v, MODAL_U32, &p, &n, NULL) != MODAL_OK || n != 3) {
        fail(ctx, MODAL_EINVAL, "argument %zu (%s): expected a u32 array of 3 sizes, got %s", i,
             arg_names[i], v == NULL ? "nothing" : modal_type_name(modal_value_type(v)));
        return false;
    }
    const uint32_t *u = p;
    if (u[0] == 0 || u[1] == 0 || u[2] == 0) {
        fail(ctx, MODAL_EINVAL, "argument %zu (%s): {%u, %u, %u}; every size must be at least 1",
             i, arg_names[i], u[0], u[1], u[2]);
        return false;
    }
    *d = (modal_dim3){u[0], u[1], u[2]};
    return true;
}

static bool int_arg(modal_ctx *ctx, const modal_value *args, size_t i, int64_t lo, int64_t hi,
                    int64_t *out)
{
    const modal_value *v = item(ctx, args, i, MODAL_TYPE_INT);
    if (v == NULL || modal_get_int(v, out, NULL) != MODAL_OK)
        return false;
    if (*out < lo || *out > hi) {
        fail(ctx, MODAL_EINVAL, "argument %zu (%s): %lld is out of range; use %lld to %lld", i,
             arg_names[i], (long long)*out, (long long)lo, (long long)hi);
        return false;
    }
    return true;
}

/*
 * The kernel's arguments into a[] (*n of them): each a list [kind,
 * payload]. Arrays of OUT get zeroed memory of their size (freed by the
 * caller through owned[]); the others point into the call's arguments.
 */
static bool kernel_args(modal_ctx *ctx, const modal_value *list, modal_gpu_arg *a, size_t *n,
                        void **owned)
{
    size_t count = modal_value_len(list);
    if (count > MODAL_GPU_MAX_ARGS) {
        fail(ctx, MODAL_ELIMIT, "argument %d (kernel arguments): %zu of them; a launch has at "
             "most %d", MODAL__KW_ARGS, count, MODAL_GPU_MAX_ARGS);
        return false;
    }
    for (size_t i = 0; i < count; i++) {
        const modal_value *e = modal_list_get(list, i);
        const modal_value *k = modal_list_get(e, 0), *p = modal_list_get(e, 1);
        int64_t kind = 0;
        if (e == NULL || modal_value_type(e) != MODAL_TYPE_LIST || modal_value_len(e) != 2 ||
            modal_get_int(k, &kind, NULL) != MODAL_OK) {
            fail(ctx, MODAL_EINVAL, "kernel argument %zu: expected a list [kind, payload]", i);
            return false;
        }
        a[i].kind = (modal_gpu_arg_kind)kind;
        if (kind == MODAL_GPU_ARG_OUT) {
            int64_t size = 0;
            if (modal_get_int(p, &size, NULL) != MODAL_OK || size < 0 ||
                (uint64_t)size > (uint64_t)SIZE_MAX / 2) {
                fail(ctx, MODAL_EINVAL, "kernel argument %zu (OUT array): expected its size in "
                     "bytes (an int of at least 0)", i);
                return false;
            }
            a[i].size = (size_t)size;
            a[i].data = owned[i] = calloc(1, size > 0 ? (size_t)size : 1);
            if (owned[i] == NULL) {
                fail(ctx, MODAL_ENOMEM, "kernel argument %zu (OUT array): out of memory for its "
                     "%lld bytes", i, (long long)size);
                return false;
            }
        } else if (kind == MODAL_GPU_ARG_SCALAR || kind == MODAL_GPU_ARG_IN ||
                   kind == MODAL_GPU_ARG_INOUT) {
            const void *bytes = NULL;
            size_t len = 0;
            if (modal_get_bytes(p, &bytes, &len, NULL) != MODAL_OK) {
                fail(ctx, MODAL_EINVAL, "kernel argument %zu: expected bytes, got %s", i,
                     p == NULL ? "nothing" : modal_type_name(modal_value_type(p)));
                return false;
            }
            if (kind == MODAL_GPU_ARG_SCALAR && (len < 1 || len > MODAL__KW_SCALAR_MAX)) {
                fail(ctx, MODAL_EINVAL, "kernel argument %zu is a scalar of %zu bytes; scalars "
                     "are 1 to %d bytes", i, len, MODAL__KW_SCALAR_MAX);
                return false;
            }
            /* The call's arguments may be mapped read-only: an INOUT array
             * is written back into a copy of its own. */
            a[i].size = len;
            a[i].data = (void *)bytes;
            if (kind == MODAL_GPU_ARG_INOUT) {
                a[i].data = owned[i] = malloc(len > 0 ? len : 1);
                if (owned[i] == NULL) {
                    fail(ctx, MODAL_ENOMEM, "kernel argument %zu (INOUT array): out of memory "
                         "for its %zu bytes", i, len);
                    return false;
                }
                memcpy(owned[i], bytes, len);
            }
        } else {
            fail(ctx, MODAL_EINVAL, "kernel argument %zu has kind %lld; kinds are %d (scalar), "
                 "%d (in), %d (out) and %d (inout)", i, (long long)kind, MODAL_GPU_ARG_SCALAR,
                 MODAL_GPU_ARG_IN, MODAL_GPU_ARG_OUT, MODAL_GPU_ARG_INOUT);
            return false;
        }
    }
    *n = count;
    return true;
}

/* ---- the function ---------------------------------------------------------------- */

static modal_value *reply(modal_ctx *ctx, const modal_gpu_arg *a, size_t n,
                          const modal_gpu_stats *st)
{
    const double t[3] = {st->copy_in_s, st->kernel_s, st->copy_out_s};
    modal_value *out = modal_list(), *r = modal_map();
    bool ok = out != NULL && r != NULL;
    for (size_t i = 0; ok && i < n; i++)
        if (a[i].kind == MODAL_GPU_ARG_OUT || a[i].kind == MODAL_GPU_ARG_INOUT)
            ok = modal_list_append(out, modal_bytes(a[i].data, a[i].size), NULL) == MODAL_OK;
    if (!ok) {
        modal_value_free(out);
        modal_value_free(r);
        return fail(ctx, MODAL_ENOMEM, "out of memory sending the results back");
    }
    /* modal_map_set takes the value even when it fails. */
    if (modal_map_set(r, "out", out, NULL) != MODAL_OK ||
        modal_map_set(r, "stats", modal_array(MODAL_F64, t, 3), NULL) != MODAL_OK) {
        modal_value_free(r);
        return fail(ctx, MODAL_ENOMEM, "out of memory sending the results back");
    }
    return r;
}

MODAL_FUNCTION(modal_kernel, .gpu = "any")
{
    if (modal_value_len(args) != MODAL__KW_NARGS)
        return fail(ctx, MODAL_EINVAL, "%zu arguments; a remote kernel launch has %d "
                    "(lib/gpu_remote.h): this client and the runtime's kernel worker (%s) may "
                    "differ in version", modal_value_len(args), MODAL__KW_NARGS,
                    MODAL_VERSION_STRING);
    const modal_value *img = item(ctx, args, MODAL__KW_IMAGE, MODAL_TYPE_BYTES);
    const char *image_name = img ? name_arg(ctx, args, MODAL__KW_IMAGE_NAME) : NULL;
    const char *kernel = image_name ? name_arg(ctx, args, MODAL__KW_KERNEL) : NULL;
    modal_gpu_launch l = {.kernel = kernel};
    int64_t shared = 0, device = 0;
    const modal_value *list = NULL;
    if (kernel == NULL || !dim_arg(ctx, args, MODAL__KW_GRID, &l.grid) ||
        !dim_arg(ctx, args, MODAL__KW_BLOCK, &l.block) ||
        !int_arg(ctx, args, MODAL__KW_SHARED, 0, UINT32_MAX, &shared) ||
        !int_arg(ctx, args, MODAL__KW_DEVICE, 0, MODAL__GPU_MAX_DEVICES - 1, &device) ||
        (list = item(ctx, args, MODAL__KW_ARGS, MODAL_TYPE_LIST)) == NULL)
        return NULL;
    l.shared_bytes = (unsigned)shared;
    l.device = (int)device;

    /* The image must be a whole fatbin, its header's length exactly. */
    const void *p = NULL;
    size_t len = 0, size = 0, narch = 0;
    modal_get_bytes(img, &p, &len, NULL);
    if (len > IMAGE_BYTES_MAX)
        return fail(ctx, MODAL_ELIMIT, "image %s is %zu bytes; a kernel worker takes images of "
                    "at most %zu", image_name, len, IMAGE_BYTES_MAX);
    modal__fatbin_arch archs[32];
    modal_error ferr;
    uint32_t magic = 0;
    if (len >= sizeof magic)
        memcpy(&magic, p, sizeof magic);
    if (magic != MODAL__FATBIN_MAGIC)
        return fail(ctx, MODAL_EINVAL, "image %s (%zu bytes) is not a fatbin: it starts with "
                    "0x%08X, not 0x%08X", image_name, len, magic, MODAL__FATBIN_MAGIC);
    if (modal__fatbin_parse(p, len, &size, archs, 32, &narch, &ferr) != MODAL_OK)
        return fail(ctx, MODAL_EINVAL, "image %s: %s", image_name, ferr.message);
    if (size != len)
        return fail(ctx, MODAL_EINVAL, "image %s: %zu bytes were sent, but its header says %zu",
                    image_name, len, size);
    /* Without devices at all, modal_gpu_run says why (no driver, ...). */
    if (modal_gpu_count() > 0 && device >= modal_gpu_count())
        return fail(ctx, MODAL_EINVAL, "argument %d (device): %lld, but this worker holds %d "
                    "GPU%s (0..%d); ask for more with the gpu request, e.g. \"H100:2\"",
                    MODAL__KW_DEVICE, (long long)device, modal_gpu_count(),
                    modal_gpu_count() == 1 ? "" : "s", modal_gpu_count() - 1);

    modal_gpu_arg a[MODAL_GPU_MAX_ARGS];
    void *owned[MODAL_GPU_MAX_ARGS] = {NULL};
    size_t n = 0;
    modal_value *r = NULL;
    if (kernel_args(ctx, list, a, &n, owned) &&
        (l.image = keep_image(ctx, p, len, image_name)) != NULL) {
        l.args = a;
        l.nargs = n;
        modal_gpu_stats st = {0};
        modal_error e;
        if (modal_gpu_run(&l, &st, &e) != MODAL_OK)
            fail(ctx, e.code, "%s", e.message);
        else
            r = reply(ctx, a, n, &st);
    }
    for (size_t i = 0; i < MODAL_GPU_MAX_ARGS; i++)
        free(owned[i]);
    return r;
}

MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    fprintf(stderr, "modal-kernel-worker: runs remote kernel launches inside a modal-runtime "
                    "worker; it is not run by hand (docs/gpu.md, \"Remote kernel launch\")\n");
    return 2;
}
