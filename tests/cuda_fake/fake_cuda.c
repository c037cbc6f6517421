/*
 * fake_cuda.c: a test double of the CUDA driver (libcuda.so.1).
 *
 * It exports every entry point of MODAL__CUDA_MAP (lib/cuda.h) under the
 * driver's versioned names and behaves like the driver against an
 * inventory configured by the environment, so every GPU path of libmodal
 * runs in CI without a GPU. Device memory is host memory: a CUdeviceptr is
 * a plain pointer. It never stands in for a GPU in any number reported.
 *
 * Built by the Makefile as build/tests/cuda_fake/libcuda.so.1 (SONAME
 * libcuda.so.1); the library opens it when MODAL_CUDA_LIBRARY names it, or
 * through LD_LIBRARY_PATH. Variants: -DFAKE_OMIT_LAUNCH (no cuLaunchKernel:
 * libcuda_partial.so.1) and -DFAKE_OMIT_ERROR_NAMES (no cuGetErrorName and
 * cuGetErrorString: libcuda_nonames.so.1).
 *
 * The environment, read once on the first call in a process:
 *
 *   MODAL_FAKE_CUDA_DEVICES  ';'-separated devices, each
 *                            NAME|MEMORY_MIB|CC|UUID, e.g.
 *                            "NVIDIA H100 80GB HBM3|81559|9.0|GPU-11111111-2222-3333-4444-000000000001".
 *                            Unset or empty: no device (cuInit then fails
 *                            with CUDA_ERROR_NO_DEVICE, as the driver does).
 *                            Device i has PCI bus id 0000:<0x18+i>:00.0.
 *   CUDA_VISIBLE_DEVICES     as the driver: ','-separated indices into the
 *                            list above or UUIDs (a unique prefix such as
 *                            "GPU-1111" is enough); the first unknown or
 *                            repeated item ends the list.
 *   MODAL_FAKE_CUDA_LOG      a file each call appends one line to, in one
 *                            write: "<pid> <exported symbol> <details>",
 *                            e.g. "1234 cuLaunchKernel saxpy grid=4,1,1 block=256,1,1".
 *   MODAL_FAKE_CUDA_FAIL     ','-separated rules ENTRY[@N]=ERROR: the Nth
 *                            call (from 1, counted per process) of ENTRY,
 *                            or every call without @N, returns ERROR
 *                            instead of running. ENTRY is the exported
 *                            symbol (cuMemAlloc_v2) or the table's name
 *                            (cuMemAlloc); ERROR is a name such as
 *                            CUDA_ERROR_OUT_OF_MEMORY or a number.
 *   MODAL_FAKE_CUDA_VERSION  what cuDriverGetVersion reports (default 12080).
 *   MODAL_FAKE_CUDA_KERNELS  a shared object of CPU stand-ins: cuLaunchKernel
 *                            of entry E calls
 *                            void fake_kernel_E(void **params, unsigned grid[3], unsigned block[3])
 *                            from it; if it lacks fake_kernel_E the launch
 *                            fails with CUDA_ERROR_LAUNCH_FAILED. Unset: a
 *                            launch runs nothing (and is logged).
 *
 * A malformed variable makes every call fail with CUDA_ERROR_UNKNOWN and
 * writes one line saying why to stderr and to the log.
 *
 * What it checks, as the driver does: calls before cuInit fail with
 * CUDA_ERROR_NOT_INITIALIZED; calls needing a context without a current
 * one fail with CUDA_ERROR_INVALID_CONTEXT; allocations beyond a device's
 * memory fail with CUDA_ERROR_OUT_OF_MEMORY (accounted per device); copies
 * and memsets outside a live allocation fail with CUDA_ERROR_INVALID_VALUE;
 * after CUDA_ERROR_ILLEGAL_ADDRESS, CUDA_ERROR_LAUNCH_FAILED,
 * CUDA_ERROR_ECC_UNCORRECTABLE or another error that breaks a context
 * (injected, or a launch without a stand-in) every later call needing a
 * context returns that error, as the driver's contexts stay broken;
 * cuModuleLoadData wants a fatbin (magic
 * 0xBA55ED50) with an entry the device can run (SASS of the same major
 * architecture and at most its compute capability, or PTX of at most its
 * compute capability), else CUDA_ERROR_INVALID_IMAGE or
 * CUDA_ERROR_NO_BINARY_FOR_GPU; cuModuleGetFunction finds an entry whose
 * name occurs as a whole word in the image (uncompressed entries only:
 * build test images with nvcc --no-compress), else CUDA_ERROR_NOT_FOUND;
 * events record CLOCK_MONOTONIC.
 */
#include "cuda.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Every entry point, declared from the table under its exported name. */
#define FAKE_DECL(req, ret, name, sym, params) \
    __attribute__((visibility("default"))) ret name params __asm__(sym);
MODAL__CUDA_MAP(FAKE_DECL)
#undef FAKE_DECL

/* One index per entry point, for call counters and failure rules. */
enum {
#define FAKE_ID(req, ret, name, sym, params) ID_##name,
    MODAL__CUDA_MAP(FAKE_ID)
#undef FAKE_ID
    ID_COUNT
};
static const char *const entry_sym[ID_COUNT] = {
#define FAKE_SYM(req, ret, name, sym, params) sym,
    MODAL__CUDA_MAP(FAKE_SYM)
#undef FAKE_SYM
};
static const char *const entry_name[ID_COUNT] = {
#define FAKE_NAME(req, ret, name, sym, params) #name,
    MODAL__CUDA_MAP(FAKE_NAME)
#undef FAKE_NAME
};

/* The driver's error codes the fake knows by name. */
#define FAKE_ERRORS(X)                                                         \
    X(0, CUDA_SUCCESS, "no error")                                             \
    X(1, CUDA_ERROR_INVALID_VALUE, "invalid argument")                         \
    X(2, CUDA_ERROR_OUT_OF_MEMORY, "out of memory")                            \
    X(3, CUDA_ERROR_NOT_INITIALIZED, "initialization error")                   \
    X(4, CUDA_ERROR_DEINITIALIZED, "driver shutting down")                     \
    X(46, CUDA_ERROR_DEVICE_UNAVAILABLE, "CUDA-capable device(s) is/are busy or unavailable") \
    X(100, CUDA_ERROR_NO_DEVICE, "no CUDA-capable device is detected")         \
    X(101, CUDA_ERROR_INVALID_DEVICE, "invalid device ordinal")                \
    X(200, CUDA_ERROR_INVALID_IMAGE, "device kernel image is invalid")         \
    X(201, CUDA_ERROR_INVALID_CONTEXT, "invalid device context")               \
    X(209, CUDA_ERROR_NO_BINARY_FOR_GPU, "no kernel image is available for execution on the device") \
    X(214, CUDA_ERROR_ECC_UNCORRECTABLE, "uncorrectable ECC error encountered") \
    X(217, CUDA_ERROR_PEER_ACCESS_UNSUPPORTED, "peer access is not supported across the given devices") \
    X(218, CUDA_ERROR_INVALID_PTX, "a PTX JIT compilation failed")             \
    X(222, CUDA_ERROR_UNSUPPORTED_PTX_VERSION, "the provided PTX was compiled with an unsupported toolchain.") \
    X(400, CUDA_ERROR_INVALID_HANDLE, "invalid resource handle")               \
    X(500, CUDA_ERROR_NOT_FOUND, "named symbol not found")                     \
    X(600, CUDA_ERROR_NOT_READY, "device not ready")                           \
    X(700, CUDA_ERROR_ILLEGAL_ADDRESS, "an illegal memory access was encountered") \
    X(701, CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "too many resources requested for launch") \
    X(702, CUDA_ERROR_LAUNCH_TIMEOUT, "the launch timed out and was terminated") \
    X(719, CUDA_ERROR_LAUNCH_FAILED, "unspecified launch failure")             \
    X(999, CUDA_ERROR_UNKNOWN, "unknown error")

static const struct {
    int code;
    const char *name, *text;
} errors[] = {
#define FAKE_ERR(code, name, text) {code, #name, text},
    FAKE_ERRORS(FAKE_ERR)
#undef FAKE_ERR
};
#define E_INVALID_VALUE 1
#define E_INVALID_CONTEXT 201
#define E_INVALID_HANDLE 400
#define E_UNKNOWN 999

/* ---- state ------------------------------------------------------------ */

#define MAX_DEVICES 16
#define MAX_RULES 32

struct CUctx_st {
    int device;
    int retained;
};

typedef struct {
    char name[96];
    unsigned long long memory, used;
    int major, minor;
    CUuuid uuid;
    char uuid_text[48];
    struct CUctx_st ctx;
} fake_device;

typedef struct allocation {
    struct allocation *next;
    int device;
    size_t size;
    unsigned char *bytes;
} allocation;

/* Modules, their functions and streams live until unloaded (streams for
 * the process: the table has no cuStreamDestroy), linked from st. */
struct CUfunc_st {
    struct CUfunc_st *next;
    struct CUmod_st *mod;
    char name[256];
};
struct CUmod_st {
    struct CUmod_st *next;
    int device;
    size_t size;
    unsigned char *image; /* a copy, as the driver keeps one */
    struct CUfunc_st *functions;
};
struct CUstream_st {
    struct CUstream_st *next;
    unsigned flags;
};
struct CUevent_st {
    int recorded;
    struct timespec at;
};

static struct {
    pthread_once_t once;
    pthread_mutex_t lock; /* allocations, device accounting, counters */
    char broken[300];     /* why the configuration is malformed, else "" */
    fake_device dev[MAX_DEVICES];
    int ndev;
    int version;
    int initialized;
    int sticky;           /* the error that broke the process's contexts, else 0 */
    int log_fd;
    struct {
        int id, nth, code;
    } rules[MAX_RULES];
    int nrules;
    unsigned long calls[ID_COUNT];
    allocation *allocs;
    struct CUmod_st *modules;
    struct CUstream_st *streams;
    void *kernels;
} st = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER, .log_fd = -1};

static __thread struct CUctx_st *current;

/* ---- logging and configuration ---------------------------------------- */

static void fake_log(int id, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fake_log(int id, const char *fmt, ...)
{
    if (st.log_fd < 0)
        return;
    char line[1024];
    int n = snprintf(line, sizeof line, "%ld %s ", (long)getpid(),
                     id >= 0 ? entry_sym[id] : "fake");
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    /* One write on an O_APPEND descriptor keeps lines of processes whole. */
    ssize_t w = write(st.log_fd, line, (size_t)n);
    (void)w;
}

static void broken(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void broken(const char *fmt, ...)
{
    if (st.broken[0] != '\0')
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st.broken, sizeof st.broken, fmt, ap);
    va_end(ap);
    fprintf(stderr, "fake libcuda: %s\n", st.broken);
    fake_log(-1, "%s", st.broken);
}

static int error_code(const char *s)
{
    for (size_t i = 0; i < sizeof errors / sizeof *errors; i++)
        if (strcmp(errors[i].name, s) == 0)
            return errors[i].code;
    char *end;
    long v = strtol(s, &end, 10);
    if (*s != '\0' && *end == '\0' && v > 0 && v < 100000)
        return (int)v;
    return -1;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" into 16 bytes. */
static int parse_uuid(const char *s, CUuuid *u)
{
    if (strncmp(s, "GPU-", 4) != 0)
        return -1;
    s += 4;
    static const int dash_after[] = {4, 6, 8, 10};
    size_t k = 0;
    for (int i = 0; i < 16; i++) {
        for (size_t d = 0; d < 4; d++)
            if (dash_after[d] == i && k < 4) {
                if (*s != '-')
                    return -1;
                s++;
                k++;
            }
        int hi = hexval(s[0]), lo = hi < 0 ? -1 : hexval(s[1]);
        if (hi < 0 || lo < 0)
            return -1;
        u->bytes[i] = (unsigned char)(hi << 4 | lo);
        s += 2;
    }
    return *s == '\0' ? 0 : -1;
}

static void parse_devices(const char *spec, fake_device *all, int *nall)
{
    char buf[4096];
    if (strlen(spec) >= sizeof buf) {
        broken("MODAL_FAKE_CUDA_DEVICES is longer than %zu bytes", sizeof buf - 1);
        return;
    }
    strcpy(buf, spec);
    char *save = NULL;
    for (char *item = strtok_r(buf, ";", &save); item != NULL; item = strtok_r(NULL, ";", &save)) {
        if (*nall == MAX_DEVICES) {
            broken("MODAL_FAKE_CUDA_DEVICES names more than %d devices", MAX_DEVICES);
            return;
        }
        fake_device *d = &all[*nall];
        memset(d, 0, sizeof *d);
        char *f[4];
        int nf = 0;
        char *p = item;
        while (nf < 4) {
            f[nf++] = p;
            p = strchr(p, '|');
            if (p == NULL)
                break;
            *p++ = '\0';
        }
        char *end;
        unsigned long long mib = nf == 4 ? strtoull(f[1], &end, 10) : 0;
        if (nf != 4 || p != NULL || f[0][0] == '\0' || strlen(f[0]) >= sizeof d->name ||
            mib == 0 || *end != '\0' ||
            sscanf(f[2], "%d.%d", &d->major, &d->minor) != 2 || d->major < 1 ||
            parse_uuid(f[3], &d->uuid) != 0) {
            broken("MODAL_FAKE_CUDA_DEVICES: device %d is not NAME|MEMORY_MIB|CC|UUID "
                   "(e.g. NVIDIA H100 80GB HBM3|81559|9.0|GPU-11111111-2222-3333-4444-000000000001)",
                   *nall);
            return;
        }
        strcpy(d->name, f[0]);
        /* Written as the driver's tools write it (lower case), whatever the spelling. */
        const unsigned char *b = d->uuid.bytes;
        snprintf(d->uuid_text, sizeof d->uuid_text,
                 "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
                 b[12], b[13], b[14], b[15]);
        d->memory = mib << 20;
        (*nall)++;
    }
}

/* CUDA_VISIBLE_DEVICES as the driver reads it: the first bad item ends the list. */
static void apply_visible(const char *vis, const fake_device *all, int nall)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", vis);
    int taken[MAX_DEVICES] = {0};
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ')
            item++;
        int pick = -1;
        if (strncmp(item, "GPU-", 4) == 0) {
            for (int i = 0; i < nall; i++)
                if (strncasecmp(all[i].uuid_text, item, strlen(item)) == 0) {
                    if (pick >= 0)
                        return; /* an ambiguous prefix */
                    pick = i;
                }
        } else {
            char *end;
            long v = strtol(item, &end, 10);
            if (*item != '\0' && *end == '\0' && v >= 0 && v < nall)
                pick = (int)v;
        }
        if (pick < 0 || taken[pick])
            return;
        taken[pick] = 1;
        st.dev[st.ndev++] = all[pick];
    }
}

static void parse_rules(const char *spec)
{
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *r = strtok_r(buf, ",", &save); r != NULL; r = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(r, '=');
        if (eq == NULL || st.nrules == MAX_RULES) {
            broken("MODAL_FAKE_CUDA_FAIL: \"%s\" is not ENTRY[@N]=ERROR", r);
            return;
        }
        *eq = '\0';
        int nth = 0;
        char *at = strchr(r, '@');
        if (at != NULL) {
            *at = '\0';
            char *end;
            long v = strtol(at + 1, &end, 10);
            if (at[1] == '\0' || *end != '\0' || v < 1 || v > 1000000000) {
                broken("MODAL_FAKE_CUDA_FAIL: call number \"%s\" of %s is not 1 or more", at + 1, r);
                return;
            }
            nth = (int)v;
        }
        int id = -1;
        for (int i = 0; i < ID_COUNT; i++)
            if (strcmp(entry_sym[i], r) == 0 || strcmp(entry_name[i], r) == 0)
                id = i;
        int code = error_code(eq + 1);
        if (id < 0 || code < 0) {
            broken("MODAL_FAKE_CUDA_FAIL: %s \"%s\" is unknown", id < 0 ? "entry point" : "error",
                   id < 0 ? r : eq + 1);
            return;
        }
        st.rules[st.nrules].id = id;
        st.rules[st.nrules].nth = nth;
        st.rules[st.nrules].code = code;
        st.nrules++;
    }
}

static void configure(void)
{
    const char *log = getenv("MODAL_FAKE_CUDA_LOG");
    if (log != NULL && *log != '\0')
        st.log_fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    const char *v = getenv("MODAL_FAKE_CUDA_VERSION");
    st.version = 12080;
    if (v != NULL && *v != '\0') {
        char *end;
        long n = strtol(v, &end, 10);
        if (*end != '\0' || n < 1000 || n > 99999)
            broken("MODAL_FAKE_CUDA_VERSION \"%s\" is not a version such as 12080", v);
        else
            st.version = (int)n;
    }
    static fake_device all[MAX_DEVICES];
    int nall = 0;
    const char *devs = getenv("MODAL_FAKE_CUDA_DEVICES");
    if (devs != NULL)
        parse_devices(devs, all, &nall);
    const char *vis = getenv("CUDA_VISIBLE_DEVICES");
    if (vis != NULL) {
        apply_visible(vis, all, nall);
    } else {
        for (int i = 0; i < nall; i++)
            st.dev[i] = all[i];
        st.ndev = nall;
    }
    for (int i = 0; i < st.ndev; i++)
        st.dev[i].ctx.device = i;
    const char *fail = getenv("MODAL_FAKE_CUDA_FAIL");
    if (fail != NULL && *fail != '\0')
        parse_rules(fail);
    const char *k = getenv("MODAL_FAKE_CUDA_KERNELS");
    if (k != NULL && *k != '\0') {
        st.kernels = dlopen(k, RTLD_NOW | RTLD_LOCAL);
        if (st.kernels == NULL)
            broken("MODAL_FAKE_CUDA_KERNELS: %s", dlerror());
    }
}

/*
 * Errors after which the driver's context is unusable: every later call
 * that needs a context returns the same error, until the process ends.
 */
static int sticky_error(int code)
{
    return code == 214 || code == 700 || code == 702 || (code >= 714 && code <= 719);
}

static void break_contexts(int id, int code)
{
    if (!sticky_error(code) || __atomic_load_n(&st.sticky, __ATOMIC_ACQUIRE) != 0)
        return;
    __atomic_store_n(&st.sticky, code, __ATOMIC_RELEASE);
    fake_log(id, "sticky=%d: every later call needing a context fails so", code);
}

/*
 * Every entry point starts here: configuration, call counting, injected
 * failures. Returns 0 to go on, else the error to return.
 */
static int enter(int id)
{
    pthread_once(&st.once, configure);
    if (st.broken[0] != '\0')
        return E_UNKNOWN;
    pthread_mutex_lock(&st.lock);
    unsigned long n = ++st.calls[id];
    pthread_mutex_unlock(&st.lock);
    for (int i = 0; i < st.nrules; i++)
        if (st.rules[i].id == id && (st.rules[i].nth == 0 || (unsigned long)st.rules[i].nth == n)) {
            fake_log(id, "call=%lu injected=%d", n, st.rules[i].code);
            break_contexts(id, st.rules[i].code);
            return st.rules[i].code;
        }
    return 0;
}

#define ENTER(name)                  \
    do {                             \
        int e_ = enter(ID_##name);   \
        if (e_ != 0)                 \
            return e_;               \
    } while (0)
#define NEED_INIT()                  \
    do {                             \
        if (!st.initialized)         \
            return MODAL__CUDA_ERROR_NOT_INITIALIZED; \
    } while (0)
#define NEED_CTX()                   \
    do {                             \
        NEED_INIT();                 \
        if (current == NULL)         \
            return E_INVALID_CONTEXT; \
        int s_ = __atomic_load_n(&st.sticky, __ATOMIC_ACQUIRE); \
        if (s_ != 0)                 \
            return s_;               \
    } while (0)

/* ---- initialisation and devices ------------------------------------- */

CUresult cuInit(unsigned flags)
{
    ENTER(cuInit);
    if (flags != 0)
        return E_INVALID_VALUE;
    fake_log(ID_cuInit, "devices=%d", st.ndev);
    if (st.ndev == 0)
        return MODAL__CUDA_ERROR_NO_DEVICE;
    st.initialized = 1;
    return 0;
}

CUresult cuDriverGetVersion(int *version)
{
    ENTER(cuDriverGetVersion);
    if (version == NULL)
        return E_INVALID_VALUE;
    *version = st.version;
    return 0;
}

CUresult cuDeviceGetCount(int *count)
{
    ENTER(cuDeviceGetCount);
    NEED_INIT();
    if (count == NULL)
        return E_INVALID_VALUE;
    *count = st.ndev;
    return 0;
}

CUresult cuDeviceGet(CUdevice *dev, int ordinal)
{
    ENTER(cuDeviceGet);
    NEED_INIT();
    if (dev == NULL)
        return E_INVALID_VALUE;
    if (ordinal < 0 || ordinal >= st.ndev)
        return MODAL__CUDA_ERROR_INVALID_DEVICE;
    *dev = ordinal;
    return 0;
}

#define NEED_DEV(dev)                                   \
    do {                                                \
        NEED_INIT();                                    \
        if ((dev) < 0 || (dev) >= st.ndev)              \
            return MODAL__CUDA_ERROR_INVALID_DEVICE;    \
    } while (0)

CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
{
    ENTER(cuDeviceGetName);
    NEED_DEV(dev);
    if (name == NULL || len <= 0)
        return E_INVALID_VALUE;
    snprintf(name, (size_t)len, "%s", st.dev[dev].name);
    return 0;
}

CUresult cuDeviceTotalMem(size_t *bytes, CUdevice dev)
{
    ENTER(cuDeviceTotalMem);
    NEED_DEV(dev);
    if (bytes == NULL)
        return E_INVALID_VALUE;
    *bytes = (size_t)st.dev[dev].memory;
    return 0;
}

CUresult cuDeviceGetAttribute(int *value, int attrib, CUdevice dev)
{
    ENTER(cuDeviceGetAttribute);
    NEED_DEV(dev);
    if (value == NULL)
        return E_INVALID_VALUE;
    switch (attrib) {
    case MODAL__CU_ATTR_COMPUTE_CAPABILITY_MAJOR:
        *value = st.dev[dev].major;
        return 0;
    case MODAL__CU_ATTR_COMPUTE_CAPABILITY_MINOR:
        *value = st.dev[dev].minor;
        return 0;
    case MODAL__CU_ATTR_MULTIPROCESSOR_COUNT:
        *value = 100 + dev; /* any plausible number; nothing measures it */
        return 0;
    default:
        return E_INVALID_VALUE;
    }
}

CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev)
{
    ENTER(cuDeviceGetUuid);
    NEED_DEV(dev);
    if (uuid == NULL)
        return E_INVALID_VALUE;
    *uuid = st.dev[dev].uuid;
    return 0;
}

CUresult cuDeviceGetPCIBusId(char *id, int len, CUdevice dev)
{
    ENTER(cuDeviceGetPCIBusId);
    NEED_DEV(dev);
    if (id == NULL || len <= 0)
        return E_INVALID_VALUE;
    /* Numbered by the device's place in MODAL_FAKE_CUDA_DEVICES' visible list. */
    snprintf(id, (size_t)len, "0000:%02x:00.0", 0x18 + dev);
    return 0;
}

/* ---- contexts ---------------------------------------------------------- */

CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev)
{
    ENTER(cuDevicePrimaryCtxRetain);
    NEED_DEV(dev);
    if (ctx == NULL)
        return E_INVALID_VALUE;
    pthread_mutex_lock(&st.lock);
    int n = ++st.dev[dev].ctx.retained;
    pthread_mutex_unlock(&st.lock);
    fake_log(ID_cuDevicePrimaryCtxRetain, "device=%d retained=%d", dev, n);
    *ctx = &st.dev[dev].ctx;
    return 0;
}

CUresult cuCtxSetCurrent(CUcontext ctx)
{
    ENTER(cuCtxSetCurrent);
    NEED_INIT();
    if (ctx != NULL && (ctx < &st.dev[0].ctx || ctx > &st.dev[st.ndev - 1].ctx))
        return E_INVALID_CONTEXT;
    current = ctx;
    return 0;
}

CUresult cuCtxSynchronize(void)
{
    ENTER(cuCtxSynchronize);
    NEED_CTX();
    return 0;
}

/* ---- memory ------------------------------------------------------------ */

/* The live allocation holding [p, p + n), under st.lock; NULL if none. */
static allocation *find_alloc(CUdeviceptr p, size_t n)
{
    for (allocation *a = st.allocs; a != NULL; a = a->next) {
        uintptr_t lo = (uintptr_t)a->bytes;
        if (p >= lo && p - lo <= a->size && n <= a->size - (p - lo))
            return a;
    }
    return NULL;
}

CUresult cuMemAlloc(CUdeviceptr *p, size_t bytes)
{
    ENTER(cuMemAlloc);
    NEED_CTX();
    if (p == NULL || bytes == 0)
        return E_INVALID_VALUE;
    fake_device *d = &st.dev[current->device];
    pthread_mutex_lock(&st.lock);
    if (bytes > d->memory - d->used) {
        pthread_mutex_unlock(&st.lock);
        fake_log(ID_cuMemAlloc, "size=%zu out of memory (used=%llu of %llu)", bytes, d->used,
                 d->memory);
        return MODAL__CUDA_ERROR_OUT_OF_MEMORY;
    }
    allocation *a = calloc(1, sizeof *a);
    unsigned char *b = a == NULL ? NULL : calloc(1, bytes);
    if (b == NULL) {
        pthread_mutex_unlock(&st.lock);
        free(a);
        return MODAL__CUDA_ERROR_OUT_OF_MEMORY;
    }
    a->bytes = b;
    a->size = bytes;
    a->device = current->device;
    a->next = st.allocs;
    st.allocs = a;
    d->used += bytes;
    pthread_mutex_unlock(&st.lock);
    *p = (CUdeviceptr)(uintptr_t)b;
    fake_log(ID_cuMemAlloc, "size=%zu ptr=%p device=%d", bytes, (void *)b, a->device);
    return 0;
}

CUresult cuMemFree(CUdeviceptr p)
{
    ENTER(cuMemFree);
    NEED_INIT();
    pthread_mutex_lock(&st.lock);
    allocation **pp = &st.allocs;
    while (*pp != NULL && (uintptr_t)(*pp)->bytes != p)
        pp = &(*pp)->next;
    allocation *a = *pp;
    if (a == NULL) {
        pthread_mutex_unlock(&st.lock);
        return E_INVALID_VALUE;
    }
    *pp = a->next;
    st.dev[a->device].used -= a->size;
    pthread_mutex_unlock(&st.lock);
    fake_log(ID_cuMemFree, "ptr=%p size=%zu", (void *)a->bytes, a->size);
    free(a->bytes);
    free(a);
    return 0;
}

CUresult cuMemsetD8(CUdeviceptr p, unsigned char v, size_t n)
{
    ENTER(cuMemsetD8);
    NEED_CTX();
    pthread_mutex_lock(&st.lock);
    allocation *a = find_alloc(p, n);
    pthread_mutex_unlock(&st.lock);
    if (a == NULL)
        return E_INVALID_VALUE;
    memset((void *)(uintptr_t)p, v, n);
    return 0;
}

CUresult cuMemAllocHost(void **p, size_t bytes)
{
    ENTER(cuMemAllocHost);
    NEED_CTX();
    if (p == NULL || bytes == 0)
        return E_INVALID_VALUE;
    *p = malloc(bytes);
    if (*p == NULL)
        return MODAL__CUDA_ERROR_OUT_OF_MEMORY;
    fake_log(ID_cuMemAllocHost, "size=%zu ptr=%p", bytes, *p);
    return 0;
}

CUresult cuMemFreeHost(void *p)
{
    ENTER(cuMemFreeHost);
    NEED_INIT();
    fake_log(ID_cuMemFreeHost, "ptr=%p", p);
    free(p);
    return 0;
}

static CUresult copy(int id, void *dst, const void *src, size_t bytes, CUdeviceptr dev)
{
    NEED_CTX();
    if (bytes == 0)
        return 0;
    if (dst == NULL || src == NULL)
        return E_INVALID_VALUE;
    pthread_mutex_lock(&st.lock);
    allocation *a = find_alloc(dev, bytes);
    pthread_mutex_unlock(&st.lock);
    if (a == NULL) {
        fake_log(id, "bytes=%zu outside any allocation", bytes);
        return E_INVALID_VALUE;
    }
    memcpy(dst, src, bytes);
    fake_log(id, "bytes=%zu", bytes);
    return 0;
}

CUresult cuMemcpyHtoD(CUdeviceptr dst, const void *src, size_t bytes)
{
    ENTER(cuMemcpyHtoD);
    return copy(ID_cuMemcpyHtoD, (void *)(uintptr_t)dst, src, bytes, dst);
}

CUresult cuMemcpyDtoH(void *dst, CUdeviceptr src, size_t bytes)
{
    ENTER(cuMemcpyDtoH);
    return copy(ID_cuMemcpyDtoH, dst, (const void *)(uintptr_t)src, bytes, src);
}

CUresult cuMemcpyHtoDAsync(CUdeviceptr dst, const void *src, size_t bytes, CUstream s)
{
    ENTER(cuMemcpyHtoDAsync);
    return copy(ID_cuMemcpyHtoDAsync, (void *)(uintptr_t)dst, src, bytes, dst);
}

CUresult cuMemcpyDtoHAsync(void *dst, CUdeviceptr src, size_t bytes, CUstream s)
{
    ENTER(cuMemcpyDtoHAsync);
    return copy(ID_cuMemcpyDtoHAsync, dst, (const void *)(uintptr_t)src, bytes, src);
}

/* ---- streams and events ------------------------------------------------ */

CUresult cuStreamCreate(CUstream *s, unsigned flags)
{
    ENTER(cuStreamCreate);
    NEED_CTX();
    if (s == NULL || flags > 1)
        return E_INVALID_VALUE;
    *s = calloc(1, sizeof **s);
    if (*s == NULL)
        return MODAL__CUDA_ERROR_OUT_OF_MEMORY;
    (*s)->flags = flags;
    pthread_mutex_lock(&st.lock);
    (*s)->next = st.streams;
    st.streams = *s;
    pthread_mutex_unlock(&st.lock);
    return 0;
}

CUresult cuStreamSynchronize(CUstream s)
{
    ENTER(cuStreamSynchronize);
    NEED_CTX();
    return 0; /* every operation of the fake completes before it returns */
}

CUresult cuEventCreate(CUevent *e, unsigned flags)
{
    ENTER(cuEventCreate);
    NEED_CTX();
    if (e == NULL)
        return E_INVALID_VALUE;
    *e = calloc(1, sizeof **e);
    return *e == NULL ? MODAL__CUDA_ERROR_OUT_OF_MEMORY : 0;
}

CUresult cuEventRecord(CUevent e, CUstream s)
{
    ENTER(cuEventRecord);
    NEED_CTX();
    if (e == NULL)
        return E_INVALID_HANDLE;
    clock_gettime(CLOCK_MONOTONIC, &e->at);
    e->recorded = 1;
    return 0;
}

CUresult cuEventSynchronize(CUevent e)
{
    ENTER(cuEventSynchronize);
    NEED_CTX();
    return e == NULL ? E_INVALID_HANDLE : 0;
}

CUresult cuEventElapsedTime(float *ms, CUevent start, CUevent end)
{
    ENTER(cuEventElapsedTime);
    NEED_CTX();
    if (ms == NULL)
        return E_INVALID_VALUE;
    if (start == NULL || end == NULL || !start->recorded || !end->recorded)
        return E_INVALID_HANDLE;
    *ms = (float)((double)(end->at.tv_sec - start->at.tv_sec) * 1e3 +
                  (double)(end->at.tv_nsec - start->at.tv_nsec) / 1e6);
    return 0;
}

CUresult cuEventDestroy(CUevent e)
{
    ENTER(cuEventDestroy);
    NEED_INIT();
    if (e == NULL)
        return E_INVALID_HANDLE;
    free(e);
    return 0;
}

/* ---- modules and launches ---------------------------------------------- */

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/*
 * Whether the fatbin at img (size bytes in all) has an entry the device
 * runs: 0, else the error. Entries: kind u16 (1 PTX, 2 ELF), version u16,
 * header size u32, payload size u64, ..., sm u32 at offset 28.
 */
static int fatbin_check(const unsigned char *img, size_t size, const fake_device *d, char *archs,
                        size_t archsz)
{
    int cc = d->major * 10 + d->minor, ok = 0;
    size_t off = 16, used = 0;
    archs[0] = '\0';
    while (off + 32 <= size) {
        const unsigned char *e = img + off;
        unsigned kind = (unsigned)(e[0] | e[1] << 8);
        uint32_t hs = get32(e + 4);
        uint64_t ps = get64(e + 8);
        unsigned sm = get32(e + 28);
        if (hs < 32 || hs > size - off || ps > size - off - hs)
            return MODAL__CUDA_ERROR_INVALID_IMAGE;
        if (kind == 1 && sm <= (unsigned)cc)
            ok = 1;
        if (kind == 2 && sm / 10 == (unsigned)d->major && sm <= (unsigned)cc)
            ok = 1;
        if (used < archsz)
            used += (size_t)snprintf(archs + used, archsz - used, "%s%s_%u", used ? "," : "",
                                     kind == 1 ? "compute" : "sm", sm);
        off += hs + (size_t)ps;
    }
    return ok ? 0 : MODAL__CUDA_ERROR_NO_BINARY_FOR_GPU;
}

CUresult cuModuleLoadData(CUmodule *mod, const void *image)
{
    ENTER(cuModuleLoadData);
    NEED_CTX();
    if (mod == NULL || image == NULL)
        return E_INVALID_VALUE;
    const unsigned char *img = image;
    if (get32(img) != MODAL__FATBIN_MAGIC) {
        fake_log(ID_cuModuleLoadData, "image=%p not a fatbin", image);
        return MODAL__CUDA_ERROR_INVALID_IMAGE;
    }
    unsigned hs = (unsigned)(img[6] | img[7] << 8);
    uint64_t body = get64(img + 8);
    if (hs < 16 || body > (1ull << 31))
        return MODAL__CUDA_ERROR_INVALID_IMAGE;
    size_t size = hs + (size_t)body;
    char archs[200];
    const fake_device *d = &st.dev[current->device];
    int rc = fatbin_check(img, size, d, archs, sizeof archs);
    fake_log(ID_cuModuleLoadData, "image=%p size=%zu archs=%s device=%d cc=%d.%d%s", image,
             size, archs, current->device, d->major, d->minor,
             rc == 0 ? "" : rc == MODAL__CUDA_ERROR_NO_BINARY_FOR_GPU ? " no binary for gpu"
                                                                     : " invalid");
    if (rc != 0)
        return rc;
    struct CUmod_st *m = calloc(1, sizeof *m);
    if (m == NULL || (m->image = malloc(size)) == NULL) {
        free(m);
        return MODAL__CUDA_ERROR_OUT_OF_MEMORY;
    }
    memcpy(m->image, img, size);
    m->size = size;
    m->device = current->device;
    pthread_mutex_lock(&st.lock);
    m->next = st.modules;
    st.modules = m;
    pthread_mutex_unlock(&st.lock);
    *mod = m;
    return 0;
}

CUresult cuModuleUnload(CUmodule mod)
{
    ENTER(cuModuleUnload);
    NEED_INIT();
    if (mod == NULL)
        return E_INVALID_HANDLE;
    pthread_mutex_lock(&st.lock);
    struct CUmod_st **pp = &st.modules;
    while (*pp != NULL && *pp != mod)
        pp = &(*pp)->next;
    int found = *pp != NULL;
    if (found)
        *pp = mod->next;
    pthread_mutex_unlock(&st.lock);
    if (!found)
        return E_INVALID_HANDLE;
    fake_log(ID_cuModuleUnload, "module=%p", (void *)mod);
    while (mod->functions != NULL) {
        struct CUfunc_st *f = mod->functions;
        mod->functions = f->next;
        free(f);
    }
    free(mod->image);
    free(mod);
    return 0;
}

static int ident(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           c == '$';
}

CUresult cuModuleGetFunction(CUfunction *fn, CUmodule mod, const char *name)
{
    ENTER(cuModuleGetFunction);
    NEED_CTX();
    if (fn == NULL || name == NULL)
        return E_INVALID_VALUE;
    if (mod == NULL)
        return E_INVALID_HANDLE;
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof((struct CUfunc_st *)0)->name)
        return MODAL__CUDA_ERROR_NOT_FOUND;
    const unsigned char *p = mod->image, *end = mod->image + mod->size;
    const unsigned char *hit = NULL;
    while (p < end && (p = memmem(p, (size_t)(end - p), name, n)) != NULL) {
        if ((p == mod->image || !ident(p[-1])) && (p + n == end || !ident(p[n]))) {
            hit = p;
            break;
        }
        p++;
    }
    fake_log(ID_cuModuleGetFunction, "%s %s", name, hit ? "found" : "not found");
    if (hit == NULL)
        return MODAL__CUDA_ERROR_NOT_FOUND;
    /* One handle per name and module, as the driver gives. */
    pthread_mutex_lock(&st.lock);
    struct CUfunc_st *f = mod->functions;
    while (f != NULL && strcmp(f->name, name) != 0)
        f = f->next;
    if (f == NULL && (f = calloc(1, sizeof *f)) != NULL) {
        f->mod = mod;
        memcpy(f->name, name, n + 1);
        f->next = mod->functions;
        mod->functions = f;
    }
    pthread_mutex_unlock(&st.lock);
    if (f == NULL)
        return MODAL__CUDA_ERROR_OUT_OF_MEMORY;
    *fn = f;
    return 0;
}

#ifndef FAKE_OMIT_LAUNCH
CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned shared, CUstream stream, void **params,
                        void **extra)
{
    ENTER(cuLaunchKernel);
    NEED_CTX();
    if (f == NULL)
        return E_INVALID_HANDLE;
    fake_log(ID_cuLaunchKernel, "%s grid=%u,%u,%u block=%u,%u,%u shared=%u", f->name, gx, gy, gz,
             bx, by, bz, shared);
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0 ||
        (unsigned long long)bx * by * bz > 1024 || (params == NULL && extra == NULL))
        return E_INVALID_VALUE;
    if (f->mod->device != current->device)
        return E_INVALID_HANDLE;
    if (st.kernels == NULL)
        return 0;
    char sym[300];
    snprintf(sym, sizeof sym, "fake_kernel_%s", f->name);
    void (*k)(void **, unsigned[3], unsigned[3]);
    *(void **)&k = dlsym(st.kernels, sym);
    if (k == NULL) {
        fake_log(ID_cuLaunchKernel, "%s has no stand-in %s", f->name, sym);
        break_contexts(ID_cuLaunchKernel, MODAL__CUDA_ERROR_LAUNCH_FAILED);
        return MODAL__CUDA_ERROR_LAUNCH_FAILED;
    }
    unsigned grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
    k(params, grid, block);
    return 0;
}
#endif

/* ---- errors ------------------------------------------------------------ */

#ifndef FAKE_OMIT_ERROR_NAMES
CUresult cuGetErrorName(CUresult r, const char **s)
{
    ENTER(cuGetErrorName);
    if (s == NULL)
        return E_INVALID_VALUE;
    for (size_t i = 0; i < sizeof errors / sizeof *errors; i++)
        if (errors[i].code == r) {
            *s = errors[i].name;
            return 0;
        }
    *s = NULL;
    return E_INVALID_VALUE;
}

CUresult cuGetErrorString(CUresult r, const char **s)
{
    ENTER(cuGetErrorString);
    if (s == NULL)
        return E_INVALID_VALUE;
    for (size_t i = 0; i < sizeof errors / sizeof *errors; i++)
        if (errors[i].code == r) {
            *s = errors[i].text;
            return 0;
        }
    *s = NULL;
    return E_INVALID_VALUE;
}
#endif
