/*
 * gpu.c: the GPU helpers of function bodies: devices, contexts, modules
 * loaded from images embedded in the program, and launches.
 *
 * Everything here is kept for the life of the process, because a worker
 * serves many calls and the point is that only the first pays: the primary
 * context of each device is retained once (never released), a module is
 * loaded once per device and image, a kernel looked up once per module, and
 * each device keeps one stream, four events, a pinned staging buffer and a
 * device buffer, each grown when a launch needs more. The device buffer is
 * kept up to MODAL__GPU_KEEP_BYTES; a launch that needed more frees it
 * again, so one large launch does not hold device memory that the
 * function's own code may want.
 *
 * A device's mutex serializes what touches its state: launches on one
 * device run one at a time, launches on different devices in parallel.
 *
 * Some driver errors leave the context unusable for the rest of the
 * process (an illegal address, a failed launch, an uncorrectable ECC error,
 * a device that fell off the bus). After one, every use of the device
 * fails at once, and modal__gpu_lost() tells the worker loop to exit after
 * answering the call, so that the runtime starts a fresh worker.
 */
#include "internal.h"
#include "cuda.h"
#include "gpu.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The device buffer kept between launches at most (larger ones are freed). */
#define MODAL__GPU_KEEP_BYTES ((size_t)256 << 20)
/* Arrays are placed at this alignment inside the staging and device buffers. */
#define MODAL__GPU_ALIGN 256
/* Longest kernel name accepted (the driver has no limit; this bounds copies). */
#define MODAL__GPU_NAME_MAX 255

typedef struct gpu_kernel {
    struct gpu_kernel *next;
    CUfunction fn;
    char name[];
} gpu_kernel;

typedef struct gpu_module {
    struct gpu_module *next;
    const void *data;            /* the image's key: its address and size */
    size_t size;
    CUmodule mod;
    gpu_kernel *kernels;
} gpu_module;

typedef struct gpu_dev {
    pthread_mutex_t mu;
    CUdevice cu;
    CUcontext ctx;               /* NULL until retained */
    CUstream stream;             /* NULL until the first launch */
    CUevent ev[4];               /* copy in, kernel, copy out: start and ends */
    void *stage;                 /* pinned host memory */
    size_t stage_size;
    CUdeviceptr dbuf;            /* device memory for arrays */
    size_t dbuf_size;
    gpu_module *modules;
    CUresult lost;               /* the sticky error, 0 while usable */
} gpu_dev;

static struct {
    pthread_once_t once;
    modal__gpu_device info[MODAL__GPU_MAX_DEVICES];
    gpu_dev dev[MODAL__GPU_MAX_DEVICES];
    size_t n;
    char why[256];               /* why there are none, when n is 0 */
    int lost;                    /* a device hit a sticky error */
} g = {.once = PTHREAD_ONCE_INIT};

static void gpu_init(void)
{
    modal_error err;
    size_t n = 0;
    g.why[0] = '\0';
    if (modal__gpu_inventory(g.info, MODAL__GPU_MAX_DEVICES, &n, g.why, sizeof g.why, &err) !=
        MODAL_OK) {
        snprintf(g.why, sizeof g.why, "%.255s", err.message);
        n = 0;
    }
    if (n == 0 && g.why[0] == '\0')
        snprintf(g.why, sizeof g.why, "the CUDA driver reports no device");
    for (size_t i = 0; i < n; i++)
        pthread_mutex_init(&g.dev[i].mu, NULL);
    g.n = n;
}

static size_t gpu_n(void)
{
    pthread_once(&g.once, gpu_init);
    return g.n;
}

int modal_gpu_count(void)
{
    return (int)gpu_n();
}

/* Whether r leaves the context unusable for the rest of the process. */
static bool sticky(CUresult r)
{
    switch (r) {
    case MODAL__CUDA_ERROR_ILLEGAL_ADDRESS:
    case 702: /* CUDA_ERROR_LAUNCH_TIMEOUT */
    case 710: /* CUDA_ERROR_ASSERT */
    case 714: /* CUDA_ERROR_HARDWARE_STACK_ERROR */
    case 715: /* CUDA_ERROR_ILLEGAL_INSTRUCTION */
    case 716: /* CUDA_ERROR_MISALIGNED_ADDRESS */
    case 717: /* CUDA_ERROR_INVALID_ADDRESS_SPACE */
    case 718: /* CUDA_ERROR_INVALID_PC */
    case MODAL__CUDA_ERROR_LAUNCH_FAILED:
    case MODAL__CUDA_ERROR_ECC_UNCORRECTABLE:
    case MODAL__CUDA_ERROR_DEVICE_UNAVAILABLE:
    case 999: /* CUDA_ERROR_UNKNOWN: what a device that fell off the bus gives */
        return true;
    default:
        return false;
    }
}

/* Fail for driver call r on device d (its mutex held); a sticky error
 * marks the device lost. */
static modal_status dev_fail(gpu_dev *d, modal_error *err, CUresult r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static modal_status dev_fail(gpu_dev *d, modal_error *err, CUresult r, const char *fmt, ...)
{
    char what[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (sticky(r) && d->lost == 0) {
        d->lost = r;
        __atomic_store_n(&g.lost, 1, __ATOMIC_RELEASE);
    }
    return modal__cuda_fail(err, r, what);
}

bool modal__gpu_lost(void)
{
    return __atomic_load_n(&g.lost, __ATOMIC_ACQUIRE) != 0;
}

/* Check device i of the process; who names the caller in messages. */
static modal_status dev_check(const char *who, int device, modal_error *err)
{
    size_t n = gpu_n();
    if (n == 0)
        return modal__fail(err, MODAL_EGPU, "%s: no GPU in this process: %s", who, g.why);
    if (device < 0 || (size_t)device >= n)
        return modal__fail(err, MODAL_EINVAL,
                           "%s: device %d is out of range: this process has %zu GPU%s "
                           "(0..%zu); pick one of those", who, device, n, n == 1 ? "" : "s",
                           n - 1);
    return MODAL_OK;
}

modal_status modal_gpu_info_get(int device, modal_gpu_info *info, modal_error *err)
{
    if (info == NULL)
        return modal__null_arg(err, "modal_gpu_info_get", "info", "pass a modal_gpu_info to fill");
    modal_status st = dev_check("modal_gpu_info_get", device, err);
    if (st != MODAL_OK)
        return st;
    const modal__gpu_device *d = &g.info[device];
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", d->name);
    snprintf(info->type, sizeof info->type, "%s", d->type);
    snprintf(info->uuid, sizeof info->uuid, "%s", d->uuid);
    info->memory = d->memory;
    info->cc_major = d->cc_major;
    info->cc_minor = d->cc_minor;
    return MODAL_OK;
}

/* Make device i's context current on this thread, retaining it the first
 * time; its mutex held. */
static modal_status dev_enter(const modal__cuda *cu, int i, const char *who, modal_error *err)
{
    gpu_dev *d = &g.dev[i];
    if (d->lost != 0) {
        char e[160];
        modal__cuda_error_text(d->lost, e, sizeof e);
        return modal__fail(err, MODAL_EGPU,
                           "%s: device %d (%s) cannot be used after %s; this process must "
                           "exit (a worker restarts by itself)", who, i, g.info[i].name, e);
    }
    CUresult r;
    if (d->ctx == NULL) {
        if ((r = cu->cuDeviceGet(&d->cu, g.info[i].ordinal)) != 0)
            return dev_fail(d, err, r, "%s: cuDeviceGet(%d)", who, g.info[i].ordinal);
        CUcontext c = NULL;
        if ((r = cu->cuDevicePrimaryCtxRetain(&c, d->cu)) != 0)
            return dev_fail(d, err, r, "%s: cuDevicePrimaryCtxRetain on device %d (%s)", who,
                            i, g.info[i].name);
        d->ctx = c;
    }
    if ((r = cu->cuCtxSetCurrent(d->ctx)) != 0)
        return dev_fail(d, err, r, "%s: cuCtxSetCurrent on device %d (%s)", who, i,
                        g.info[i].name);
    return MODAL_OK;
}

/* The driver and device i, checked; on MODAL_OK the device's mutex is
 * held and its context current. */
static modal_status dev_lock(const char *who, int device, const modal__cuda **cu,
                             modal_error *err)
{
    modal_status st = dev_check(who, device, err);
    if (st != MODAL_OK)
        return st;
    modal_error e;
    if ((*cu = modal__cuda_get(&e)) == NULL)
        return modal__fail(err, MODAL_EGPU, "%s: %s", who, e.message);
    pthread_mutex_lock(&g.dev[device].mu);
    if ((st = dev_enter(*cu, device, who, err)) != MODAL_OK)
        pthread_mutex_unlock(&g.dev[device].mu);
    return st;
}

/* Device i's context, current on this thread; who names the caller. */
static modal_status context_get(const char *who, int device, void **cu_context,
                                modal_error *err)
{
    const modal__cuda *cu;
    modal_status st = dev_lock(who, device, &cu, err);
    if (st != MODAL_OK)
        return st;
    *cu_context = g.dev[device].ctx;
    pthread_mutex_unlock(&g.dev[device].mu);
    return MODAL_OK;
}

modal_status modal_gpu_context(int device, void **cu_context, modal_error *err)
{
    if (cu_context == NULL)
        return modal__null_arg(err, "modal_gpu_context", "cu_context",
                               "pass the address of a void * to receive the CUcontext");
    return context_get("modal_gpu_context", device, cu_context, err);
}

modal_status modal__gpu_warm(char *msg, size_t msgsz)
{
    modal_error err;
    size_t n = gpu_n();
    if (n == 0) {
        snprintf(msg, msgsz, "this worker sees no GPU: %s", g.why);
        return MODAL_EGPU;
    }
    for (size_t i = 0; i < n; i++) {
        void *ctx;
        if (context_get("making the worker's CUDA contexts", (int)i, &ctx, &err) != MODAL_OK) {
            snprintf(msg, msgsz, "%s", err.message);
            return MODAL_EGPU;
        }
    }
    return MODAL_OK;
}

/* ---- images and kernels ----------------------------------------------- */

/* Check an image and find its size (from the fatbin header when 0). */
static modal_status image_size(const char *who, const modal_gpu_image *im, size_t *size,
                               modal_error *err)
{
    if (im == NULL)
        return modal__fail(err, MODAL_EINVAL, "%s: image is NULL; pass &NAME_gpu_image of "
                           "MODAL_GPU_IMAGE(NAME), or a modal_gpu_image of your own", who);
    const char *name = im->name != NULL ? im->name : "the image";
    if (im->data == NULL)
        return modal__fail(err, MODAL_EINVAL, "%s: %s: data is NULL; point it at the fatbin, "
                           "cubin or PTX text", who, name);
    if (im->size > 0) {
        *size = im->size;
        return MODAL_OK;
    }
    uint32_t magic;
    memcpy(&magic, im->data, sizeof magic);
    if (magic != MODAL__FATBIN_MAGIC)
        return modal__fail(err, MODAL_EINVAL,
                           "%s: %s: size is 0 but the data is not a fatbin (it starts with "
                           "0x%08x, not 0x%08x); give the size of a cubin or PTX image", who,
                           name, magic, MODAL__FATBIN_MAGIC);
    modal__fatbin_arch a[1];
    size_t na;
    modal_error e;
    if (modal__fatbin_parse(im->data, SIZE_MAX, size, a, 0, &na, &e) != MODAL_OK)
        return modal__fail(err, MODAL_EINVAL, "%s: %s: %s", who, name, e.message);
    return MODAL_OK;
}

/* "; saxpy.cu has sm_80, sm_90 and PTX for compute_90; device 0 (NVIDIA T4)
 * needs sm_75 ..." for a load the driver refused for want of code. */
static void arch_advice(const modal_gpu_image *im, size_t size, int i, char *out, size_t outsz)
{
    const modal__gpu_device *d = &g.info[i];
    int sm = d->cc_major * 10 + d->cc_minor;
    const char *name = im->name != NULL ? im->name : "the image";
    modal__fatbin_arch a[32];
    size_t na = 0, total;
    modal_error e;
    char has[256];
    if (modal__fatbin_parse(im->data, size, &total, a, sizeof a / sizeof *a, &na, &e) ==
        MODAL_OK)
        modal__fatbin_describe(a, na, has, sizeof has);
    else
        snprintf(has, sizeof has, "no architecture libmodal can read (%.200s)", e.message);
    snprintf(out, outsz,
             "; %s has %s; device %d (%s) needs sm_%d (or PTX for compute_%d or older): "
             "rebuild it with -gencode arch=compute_%d,code=sm_%d", name, has, i, d->name,
             sm, sm, sm, sm);
}

/* The kernel `name` of image on device i: its mutex held, context current. */
static modal_status kernel_get(const modal__cuda *cu, int i, const modal_gpu_image *im,
                               size_t size, const char *name, CUfunction *out,
                               modal_error *err)
{
    gpu_dev *d = &g.dev[i];
    const char *iname = im->name != NULL ? im->name : "image";
    gpu_module *m = d->modules;
    while (m != NULL && !(m->data == im->data && m->size == size))
        m = m->next;
    CUresult r;
    if (m == NULL) {
        CUmodule mod;
        if ((r = cu->cuModuleLoadData(&mod, im->data)) != 0) {
            char advice[512] = "";
            if (r == MODAL__CUDA_ERROR_NO_BINARY_FOR_GPU || r == MODAL__CUDA_ERROR_INVALID_IMAGE ||
                r == MODAL__CUDA_ERROR_UNSUPPORTED_PTX_VERSION ||
                r == MODAL__CUDA_ERROR_INVALID_PTX)
                arch_advice(im, size, i, advice, sizeof advice);
            modal_status st = dev_fail(d, err, r, "%s: loading %s on device %d: "
                                       "cuModuleLoadData", name, iname, i);
            size_t len = strlen(err != NULL ? err->message : "");
            if (err != NULL && advice[0])
                snprintf(err->message + len, sizeof err->message - len, "%s", advice);
            return st;
        }
        if ((m = calloc(1, sizeof *m)) == NULL) {
            cu->cuModuleUnload(mod);
            return modal__fail(err, MODAL_ENOMEM, "%s: out of memory keeping %s's module",
                               name, iname);
        }
        *m = (gpu_module){d->modules, im->data, size, mod, NULL};
        d->modules = m;
    }
    gpu_kernel *k = m->kernels;
    while (k != NULL && strcmp(k->name, name) != 0)
        k = k->next;
    if (k == NULL) {
        CUfunction f;
        if ((r = cu->cuModuleGetFunction(&f, m->mod, name)) != 0) {
            modal_status st = dev_fail(d, err, r, "%s: cuModuleGetFunction in %s", name, iname);
            if (r == MODAL__CUDA_ERROR_NOT_FOUND && err != NULL) {
                size_t len = strlen(err->message);
                snprintf(err->message + len, sizeof err->message - len,
                         "; %s has no kernel named \"%s\": is it declared extern \"C\" "
                         "__global__ in the .cu file?", iname, name);
            }
            return st;
        }
        size_t len = strlen(name);
        if ((k = malloc(sizeof *k + len + 1)) == NULL)
            return modal__fail(err, MODAL_ENOMEM, "%s: out of memory keeping the kernel", name);
        k->fn = f;
        memcpy(k->name, name, len + 1);
        k->next = m->kernels;
        m->kernels = k;
    }
    *out = k->fn;
    return MODAL_OK;
}

static modal_status name_check(const char *who, const char *name, modal_error *err)
{
    if (name == NULL || name[0] == '\0')
        return modal__fail(err, MODAL_EINVAL, "%s: the kernel name is %s; give the entry "
                           "name of an extern \"C\" __global__ function", who,
                           name == NULL ? "NULL" : "empty");
    if (strlen(name) > MODAL__GPU_NAME_MAX)
        return modal__fail(err, MODAL_EINVAL, "%s: the kernel name \"%.40s...\" is %zu bytes "
                           "long; at most %d are accepted", who, name, strlen(name),
                           MODAL__GPU_NAME_MAX);
    return MODAL_OK;
}

modal_status modal_gpu_kernel(int device, const modal_gpu_image *image, const char *name,
                              void **cu_function, modal_error *err)
{
    const char *who = "modal_gpu_kernel";
    if (cu_function == NULL)
        return modal__null_arg(err, who, "cu_function",
                               "pass the address of a void * to receive the CUfunction");
    size_t size;
    modal_status st;
    if ((st = name_check(who, name, err)) != MODAL_OK ||
        (st = image_size(name, image, &size, err)) != MODAL_OK)
        return st;
    const modal__cuda *cu;
    if ((st = dev_lock(name, device, &cu, err)) != MODAL_OK)
        return st;
    CUfunction f = NULL;
    st = kernel_get(cu, device, image, size, name, &f, err);
    pthread_mutex_unlock(&g.dev[device].mu);
    if (st == MODAL_OK)
        *cu_function = f;
    return st;
}

/* ---- launches ----------------------------------------------------------- */

static size_t align_up(size_t n)
{
    return (n + MODAL__GPU_ALIGN - 1) & ~(size_t)(MODAL__GPU_ALIGN - 1);
}

static bool is_array(modal_gpu_arg_kind k)
{
    return k == MODAL_GPU_ARG_IN || k == MODAL_GPU_ARG_OUT || k == MODAL_GPU_ARG_INOUT;
}

modal_status modal__gpu_launch_check(const modal_gpu_launch *l, size_t *image_bytes,
                                     size_t *total, modal_error *err)
{
    if (l == NULL)
        return modal__null_arg(err, "modal_gpu_run", "launch",
                               "pass a modal_gpu_launch naming the image, kernel and shape");
    modal_status st;
    if ((st = name_check("modal_gpu_run", l->kernel, err)) != MODAL_OK)
        return st;
    const char *k = l->kernel;
    size_t size;
    if ((st = image_size(k, l->image, &size, err)) != MODAL_OK)
        return st;
    const modal_dim3 *dims[2] = {&l->grid, &l->block};
    for (int i = 0; i < 2; i++)
        if (dims[i]->x == 0 || dims[i]->y == 0 || dims[i]->z == 0)
            return modal__fail(err, MODAL_EINVAL,
                               "%s: the %s is %u x %u x %u; every size must be at least 1 "
                               "(MODAL_DIM3(n) sets the others to 1)", k,
                               i == 0 ? "grid" : "block", dims[i]->x, dims[i]->y, dims[i]->z);
    if (l->nargs > MODAL_GPU_MAX_ARGS)
        return modal__fail(err, MODAL_ELIMIT, "%s: %zu arguments; a launch takes at most %d",
                           k, l->nargs, MODAL_GPU_MAX_ARGS);
    if (l->nargs > 0 && l->args == NULL)
        return modal__fail(err, MODAL_EINVAL, "%s: nargs is %zu but args is NULL", k,
                           l->nargs);
    size_t sum = 0;
    for (size_t i = 0; i < l->nargs; i++) {
        const modal_gpu_arg *a = &l->args[i];
        if (a->kind == MODAL_GPU_ARG_SCALAR) {
            if (a->size < 1 || a->size > 256)
                return modal__fail(err, MODAL_EINVAL, "%s: argument %zu is a scalar of %zu "
                                   "bytes; a scalar has 1 to 256", k, i, a->size);
            if (a->data == NULL)
                return modal__fail(err, MODAL_EINVAL, "%s: argument %zu is a scalar whose "
                                   "data is NULL; point it at the value (MODAL_GPU_SCALAR(v))",
                                   k, i);
        } else if (is_array(a->kind)) {
            if (a->data == NULL && a->size > 0)
                return modal__fail(err, MODAL_EINVAL, "%s: argument %zu is an array of %zu "
                                   "bytes whose data is NULL", k, i, a->size);
            if (a->size > SIZE_MAX / 2 - sum)
                return modal__fail(err, MODAL_ELIMIT, "%s: argument %zu: the arrays add up "
                                   "to more bytes than memory can hold", k, i);
            sum += align_up(a->size);
        } else {
            return modal__fail(err, MODAL_EINVAL, "%s: argument %zu has kind %d; use "
                               "MODAL_GPU_SCALAR, _IN, _OUT or _INOUT", k, i, (int)a->kind);
        }
    }
    *image_bytes = size;
    *total = sum;
    return MODAL_OK;
}

static double ms_between(const modal__cuda *cu, CUevent a, CUevent b)
{
    float ms = 0;
    if (cu->cuEventElapsedTime(&ms, a, b) != 0)
        return 0;
    return ms / 1e3;
}

/* Make room for total bytes of arrays: staging and device buffers. */
static modal_status buffers_grow(const modal__cuda *cu, gpu_dev *d, const char *k, size_t total,
                                 modal_error *err)
{
    CUresult r;
    if (d->stage_size < total) {
        size_t want = d->stage_size * 2 > total ? d->stage_size * 2 : total;
        if (d->stage != NULL)
            cu->cuMemFreeHost(d->stage);
        d->stage = NULL;
        d->stage_size = 0;
        void *p;
        if ((r = cu->cuMemAllocHost(&p, want)) != 0)
            return dev_fail(d, err, r, "%s: cuMemAllocHost of %zu bytes of pinned staging "
                            "memory", k, want);
        d->stage = p;
        d->stage_size = want;
    }
    if (d->dbuf_size < total) {
        if (d->dbuf != 0)
            cu->cuMemFree(d->dbuf);
        d->dbuf = 0;
        d->dbuf_size = 0;
        CUdeviceptr p;
        if ((r = cu->cuMemAlloc(&p, total)) != 0)
            return dev_fail(d, err, r, "%s: cuMemAlloc of %zu bytes of device memory for "
                            "the arrays", k, total);
        d->dbuf = p;
        d->dbuf_size = total;
    }
    return MODAL_OK;
}

/* The stream and events of device d, created on its first launch. */
static modal_status stream_get(const modal__cuda *cu, gpu_dev *d, const char *k,
                               modal_error *err)
{
    CUresult r;
    if (d->stream != NULL)
        return MODAL_OK;
    for (int i = 0; i < 4; i++)
        if (d->ev[i] == NULL && (r = cu->cuEventCreate(&d->ev[i], 0)) != 0)
            return dev_fail(d, err, r, "%s: cuEventCreate", k);
    CUstream s;
    if ((r = cu->cuStreamCreate(&s, 0)) != 0)
        return dev_fail(d, err, r, "%s: cuStreamCreate", k);
    d->stream = s;
    return MODAL_OK;
}

/* The launch itself: device i's mutex held, its context current. */
static modal_status run_locked(const modal__cuda *cu, const modal_gpu_launch *l, size_t size,
                               size_t total, modal_gpu_stats *stats, modal_error *err)
{
    int i = l->device;
    gpu_dev *d = &g.dev[i];
    const char *k = l->kernel;
    CUfunction f;
    modal_status st;
    if ((st = kernel_get(cu, i, l->image, size, k, &f, err)) != MODAL_OK ||
        (st = stream_get(cu, d, k, err)) != MODAL_OK ||
        (st = buffers_grow(cu, d, k, total, err)) != MODAL_OK)
        return st;
    CUdeviceptr dptr[MODAL_GPU_MAX_ARGS];
    void *params[MODAL_GPU_MAX_ARGS];
    size_t off[MODAL_GPU_MAX_ARGS];
    size_t at = 0;
    CUresult r;
    CUstream s = d->stream;
    unsigned char *stage = d->stage;
    /* Zero the OUT arrays and fill the staging buffer before anything is
     * queued, so that the events time only the copies. */
    for (size_t a = 0; a < l->nargs; a++) {
        const modal_gpu_arg *p = &l->args[a];
        if (p->kind == MODAL_GPU_ARG_SCALAR) {
            params[a] = p->data;
            continue;
        }
        off[a] = at;
        dptr[a] = p->size > 0 ? d->dbuf + at : 0;
        params[a] = &dptr[a];
        at += align_up(p->size);
        if (p->size == 0)
            continue;
        if (p->kind == MODAL_GPU_ARG_OUT) {
            if ((r = cu->cuMemsetD8(dptr[a], 0, p->size)) != 0)
                return dev_fail(d, err, r, "%s: cuMemsetD8 zeroing OUT argument %zu (%zu "
                                "bytes)", k, a, p->size);
        } else {
            memcpy(stage + off[a], p->data, p->size);
        }
    }
    if ((r = cu->cuEventRecord(d->ev[0], s)) != 0)
        return dev_fail(d, err, r, "%s: cuEventRecord", k);
    for (size_t a = 0; a < l->nargs; a++) {
        const modal_gpu_arg *p = &l->args[a];
        if ((p->kind == MODAL_GPU_ARG_IN || p->kind == MODAL_GPU_ARG_INOUT) && p->size > 0 &&
            (r = cu->cuMemcpyHtoDAsync(dptr[a], stage + off[a], p->size, s)) != 0) {
            st = dev_fail(d, err, r, "%s: cuMemcpyHtoDAsync of argument %zu (%zu bytes)", k,
                          a, p->size);
            goto drain;
        }
    }
    if ((r = cu->cuEventRecord(d->ev[1], s)) != 0) {
        st = dev_fail(d, err, r, "%s: cuEventRecord", k);
        goto drain;
    }
    if ((r = cu->cuLaunchKernel(f, l->grid.x, l->grid.y, l->grid.z, l->block.x, l->block.y,
                                l->block.z, l->shared_bytes, s, params, NULL)) != 0) {
        st = dev_fail(d, err, r, "%s: cuLaunchKernel (grid %ux%ux%u, block %ux%ux%u, %u "
                      "bytes shared)", k, l->grid.x, l->grid.y, l->grid.z, l->block.x,
                      l->block.y, l->block.z, l->shared_bytes);
        goto drain;
    }
    if ((r = cu->cuEventRecord(d->ev[2], s)) != 0) {
        st = dev_fail(d, err, r, "%s: cuEventRecord", k);
        goto drain;
    }
    for (size_t a = 0; a < l->nargs; a++) {
        const modal_gpu_arg *p = &l->args[a];
        if ((p->kind == MODAL_GPU_ARG_OUT || p->kind == MODAL_GPU_ARG_INOUT) && p->size > 0 &&
            (r = cu->cuMemcpyDtoHAsync(stage + off[a], dptr[a], p->size, s)) != 0) {
            st = dev_fail(d, err, r, "%s: cuMemcpyDtoHAsync of argument %zu (%zu bytes)", k,
                          a, p->size);
            goto drain;
        }
    }
    if ((r = cu->cuEventRecord(d->ev[3], s)) != 0) {
        st = dev_fail(d, err, r, "%s: cuEventRecord", k);
        goto drain;
    }
    /* A kernel's own failure shows here, the launch being asynchronous. */
    if ((r = cu->cuStreamSynchronize(s)) != 0)
        return dev_fail(d, err, r, "%s: running the kernel (cuStreamSynchronize)", k);
    for (size_t a = 0; a < l->nargs; a++) {
        const modal_gpu_arg *p = &l->args[a];
        if ((p->kind == MODAL_GPU_ARG_OUT || p->kind == MODAL_GPU_ARG_INOUT) && p->size > 0)
            memcpy(p->data, stage + off[a], p->size);
    }
    if (stats != NULL) {
        stats->copy_in_s = ms_between(cu, d->ev[0], d->ev[1]);
        stats->kernel_s = ms_between(cu, d->ev[1], d->ev[2]);
        stats->copy_out_s = ms_between(cu, d->ev[2], d->ev[3]);
    }
    return MODAL_OK;
drain:
    /* What was queued still reads the staging buffer: wait for it. */
    cu->cuStreamSynchronize(s);
    return st;
}

modal_status modal_gpu_run(const modal_gpu_launch *launch, modal_gpu_stats *stats,
                           modal_error *err)
{
    size_t total, size;
    modal_status st = modal__gpu_launch_check(launch, &size, &total, err);
    if (st != MODAL_OK)
        return st;
    const modal__cuda *cu;
    if ((st = dev_lock(launch->kernel, launch->device, &cu, err)) != MODAL_OK)
        return st;
    gpu_dev *d = &g.dev[launch->device];
    st = run_locked(cu, launch, size, total, stats, err);
    if (d->dbuf_size > MODAL__GPU_KEEP_BYTES && d->lost == 0) {
        cu->cuMemFree(d->dbuf);
        d->dbuf = 0;
        d->dbuf_size = 0;
    }
    pthread_mutex_unlock(&g.dev[launch->device].mu);
    if (st != MODAL_OK && stats != NULL)
        memset(stats, 0, sizeof *stats);
    return st;
}
