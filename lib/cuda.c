/*
 * cuda.c: the CUDA driver, opened at run time (see cuda.h).
 *
 * libcuda.so.1 is opened on first use under pthread_once, never linked,
 * so libmodal builds and runs where there is no driver. The answer of the
 * one load (the table, or the message saying why there is none) is kept
 * for the life of the process: the handle is never closed, as a driver
 * cannot be unloaded safely once it has been initialised.
 */
#include "cuda.h"
#include "internal.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static modal__cuda driver;
static const modal__cuda *loaded;   /* &driver once usable, else NULL */
static int resolved;                /* every symbol found: error names usable */
static char load_error[640];
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

/* CUDA_ERROR_STUB_LIBRARY: the toolkit's link-time stub was found first. */
#define CUDA_ERROR_STUB_LIBRARY 34

/* The common codes, for drivers without cuGetErrorName. */
static const struct {
    CUresult code;
    const char *name, *text;
} known_errors[] = {
    {0, "CUDA_SUCCESS", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {4, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {CUDA_ERROR_STUB_LIBRARY, "CUDA_ERROR_STUB_LIBRARY", "CUDA driver is a stub library"},
    {35, "CUDA_ERROR_INSUFFICIENT_DRIVER",
     "CUDA driver version is insufficient for CUDA runtime version"},
    {46, "CUDA_ERROR_DEVICE_UNAVAILABLE", "CUDA-capable device(s) is/are busy or unavailable"},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {101, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {200, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {209, "CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for execution on the device"},
    {214, "CUDA_ERROR_ECC_UNCORRECTABLE", "uncorrectable ECC error encountered"},
    {218, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {222, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
     "the provided PTX was compiled with an unsupported toolchain"},
    {400, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {600, "CUDA_ERROR_NOT_READY", "device not ready"},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {702, "CUDA_ERROR_LAUNCH_TIMEOUT", "the launch timed out and was terminated"},
    {719, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {999, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

/* What to do when the driver's first calls fail with r. */
static const char *first_call_hint(CUresult r)
{
    if (r == CUDA_ERROR_STUB_LIBRARY)
        return "this is the CUDA toolkit's link-time stub, not a driver: take its directory "
               "(.../stubs) out of LD_LIBRARY_PATH and install the NVIDIA driver";
    return "check that nvidia-smi lists a GPU and that CUDA_VISIBLE_DEVICES, if set, names it";
}

static void load(void)
{
    const char *name = getenv("MODAL_CUDA_LIBRARY");
    if (name == NULL || name[0] == '\0')
        name = "libcuda.so.1";
    void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        const char *why = dlerror();
        snprintf(load_error, sizeof load_error,
                 "no CUDA driver: %s; install the NVIDIA driver (CUDA 12.0 or newer) or run "
                 "where there is one",
                 why != NULL ? why : name);
        return;
    }
    /* The file the loader found, for messages. */
    struct link_map *map = NULL;
    const char *path = name;
    if (dlinfo(lib, RTLD_DI_LINKMAP, &map) == 0 && map != NULL && map->l_name != NULL &&
        map->l_name[0] != '\0')
        path = map->l_name;
    snprintf(driver.path, sizeof driver.path, "%s", path);

#define MODAL__CUDA_RESOLVE(req, ret, name, sym, params)                              \
    *(void **)&driver.name = dlsym(lib, sym);                                         \
    if (req && driver.name == NULL) {                                                 \
        snprintf(load_error, sizeof load_error,                                       \
                 "the CUDA driver at %s lacks %s; install the NVIDIA driver (CUDA "   \
                 "12.0 or newer)", driver.path, sym);                                  \
        return;                                                                       \
    }
    MODAL__CUDA_MAP(MODAL__CUDA_RESOLVE)
#undef MODAL__CUDA_RESOLVE
    __atomic_store_n(&resolved, 1, __ATOMIC_RELEASE);

    int version = 0;
    CUresult r = driver.cuDriverGetVersion(&version);
    if (r != MODAL__CUDA_SUCCESS) {
        char text[160];
        modal__cuda_error_text(r, text, sizeof text);
        snprintf(load_error, sizeof load_error, "cuDriverGetVersion failed at %s: %s; %s",
                 driver.path, text, first_call_hint(r));
        return;
    }
    driver.driver_version = version;
    if (version < MODAL__CUDA_MIN_DRIVER) {
        snprintf(load_error, sizeof load_error,
                 "the CUDA driver is %d.%d; libmodal needs %d.%d or newer (driver at %s); "
                 "upgrade the NVIDIA driver",
                 version / 1000, version % 1000 / 10, MODAL__CUDA_MIN_DRIVER / 1000,
                 MODAL__CUDA_MIN_DRIVER % 1000 / 10, driver.path);
        return;
    }
    r = driver.cuInit(0);
    if (r != MODAL__CUDA_SUCCESS) {
        char text[160];
        modal__cuda_error_text(r, text, sizeof text);
        snprintf(load_error, sizeof load_error, "cuInit failed: %s (driver at %s); %s", text,
                 driver.path, first_call_hint(r));
        return;
    }
    loaded = &driver;
}

const modal__cuda *modal__cuda_get(modal_error *err)
{
    pthread_once(&load_once, load);
    if (loaded == NULL) {
        modal__fail(err, MODAL_EGPU, "%s", load_error);
        return NULL;
    }
    return loaded;
}

void modal__cuda_error_text(CUresult r, char *out, size_t outsz)
{
    if (out == NULL || outsz == 0)
        return;
    const char *name = NULL, *text = NULL;
    /*
     * The driver's own names when it has them. Not under load_once: the
     * loader itself calls this while loading, after resolving the table.
     */
    if (__atomic_load_n(&resolved, __ATOMIC_ACQUIRE)) {
        if (driver.cuGetErrorName != NULL && driver.cuGetErrorName(r, &name) != 0)
            name = NULL;
        if (driver.cuGetErrorString != NULL && driver.cuGetErrorString(r, &text) != 0)
            text = NULL;
    }
    for (size_t i = 0; i < sizeof known_errors / sizeof *known_errors; i++)
        if (known_errors[i].code == r) {
            if (name == NULL)
                name = known_errors[i].name;
            if (text == NULL)
                text = known_errors[i].text;
        }
    if (name != NULL)
        snprintf(out, outsz, "%s (%s)", name, text != NULL ? text : "no description");
    else
        snprintf(out, outsz, "CUDA error %d (%s)", (int)r,
                 text != NULL ? text : "not a code libmodal knows");
}

modal_status modal__cuda_fail(modal_error *err, CUresult r, const char *what)
{
    char text[200];
    modal__cuda_error_text(r, text, sizeof text);
    modal_status code = r == MODAL__CUDA_ERROR_OUT_OF_MEMORY ? MODAL_ENOMEM : MODAL_EGPU;
    return modal__fail(err, code, "%s: %s", what != NULL ? what : "CUDA", text);
}
