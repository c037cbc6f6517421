/*
 * cuda.h: the CUDA driver, loaded at run time.
 *
 * libcuda.so.1 is opened once (dlopen, under pthread_once) on first use,
 * never at program start, so the library and the runtime build and run
 * where there is no driver. The table below holds the driver entry points
 * libmodal uses, resolved by their exported (versioned) names: the
 * required ones must all be present and the driver must be at least
 * MODAL__CUDA_MIN_DRIVER, else every use fails with one message saying
 * what is missing. Optional ones may be NULL.
 *
 * The types are the driver's ABI, declared here so nothing needs cuda.h
 * to build. MODAL_CUDA_LIBRARY (an environment variable) names another
 * file to open instead of libcuda.so.1: the test double under
 * tests/cuda_fake is loaded that way, and through LD_LIBRARY_PATH.
 */
#ifndef MODAL_CUDA_H
#define MODAL_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "modal.h"

typedef int CUresult;                 /* CUDA_SUCCESS is 0 */
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef unsigned long long CUdeviceptr;
typedef struct {
    unsigned char bytes[16];
} CUuuid;

/* The error codes libmodal tells apart (values of the driver's ABI). */
#define MODAL__CUDA_SUCCESS 0
#define MODAL__CUDA_ERROR_OUT_OF_MEMORY 2
#define MODAL__CUDA_ERROR_NOT_INITIALIZED 3
#define MODAL__CUDA_ERROR_NO_DEVICE 100
#define MODAL__CUDA_ERROR_INVALID_DEVICE 101
#define MODAL__CUDA_ERROR_INVALID_IMAGE 200
#define MODAL__CUDA_ERROR_NO_BINARY_FOR_GPU 209
#define MODAL__CUDA_ERROR_UNSUPPORTED_PTX_VERSION 222
#define MODAL__CUDA_ERROR_INVALID_PTX 218
#define MODAL__CUDA_ERROR_NOT_FOUND 500
#define MODAL__CUDA_ERROR_LAUNCH_FAILED 719
#define MODAL__CUDA_ERROR_ILLEGAL_ADDRESS 700
#define MODAL__CUDA_ERROR_DEVICE_UNAVAILABLE 46
#define MODAL__CUDA_ERROR_ECC_UNCORRECTABLE 214

/* cuDeviceGetAttribute attributes used. */
#define MODAL__CU_ATTR_COMPUTE_CAPABILITY_MAJOR 75
#define MODAL__CU_ATTR_COMPUTE_CAPABILITY_MINOR 76
#define MODAL__CU_ATTR_MULTIPROCESSOR_COUNT 16

/* The oldest driver API accepted: CUDA 12.0 (cuDeviceGetUuid_v2, sm_90). */
#define MODAL__CUDA_MIN_DRIVER 12000

/*
 * The table: X(required, return, name, exported symbol, parameters).
 * required is 1 or 0. One row per entry point; the loader and the test
 * double are both written from it.
 */
#define MODAL__CUDA_MAP(X)                                                            \
    X(1, CUresult, cuInit, "cuInit", (unsigned flags))                                 \
    X(1, CUresult, cuDriverGetVersion, "cuDriverGetVersion", (int *version))           \
    X(1, CUresult, cuDeviceGetCount, "cuDeviceGetCount", (int *count))                 \
    X(1, CUresult, cuDeviceGet, "cuDeviceGet", (CUdevice * dev, int ordinal))          \
    X(1, CUresult, cuDeviceGetName, "cuDeviceGetName", (char *name, int len, CUdevice dev)) \
    X(1, CUresult, cuDeviceTotalMem, "cuDeviceTotalMem_v2", (size_t * bytes, CUdevice dev)) \
    X(1, CUresult, cuDeviceGetAttribute, "cuDeviceGetAttribute",                       \
      (int *value, int attrib, CUdevice dev))                                          \
    X(1, CUresult, cuDeviceGetUuid, "cuDeviceGetUuid_v2", (CUuuid * uuid, CUdevice dev)) \
    X(0, CUresult, cuDeviceGetPCIBusId, "cuDeviceGetPCIBusId",                         \
      (char *id, int len, CUdevice dev))                                               \
    X(1, CUresult, cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain",               \
      (CUcontext * ctx, CUdevice dev))                                                 \
    X(1, CUresult, cuCtxSetCurrent, "cuCtxSetCurrent", (CUcontext ctx))                \
    X(1, CUresult, cuCtxSynchronize, "cuCtxSynchronize", (void))                       \
    X(1, CUresult, cuModuleLoadData, "cuModuleLoadData", (CUmodule * mod, const void *image)) \
    X(1, CUresult, cuModuleUnload, "cuModuleUnload", (CUmodule mod))                   \
    X(1, CUresult, cuModuleGetFunction, "cuModuleGetFunction",                         \
      (CUfunction * fn, CUmodule mod, const char *name))                               \
    X(1, CUresult, cuLaunchKernel, "cuLaunchKernel",                                   \
      (CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,  \
       unsigned bz, unsigned shared, CUstream stream, void **params, void **extra))    \
    X(1, CUresult, cuMemAlloc, "cuMemAlloc_v2", (CUdeviceptr * p, size_t bytes))       \
    X(1, CUresult, cuMemFree, "cuMemFree_v2", (CUdeviceptr p))                         \
    X(1, CUresult, cuMemsetD8, "cuMemsetD8_v2", (CUdeviceptr p, unsigned char v, size_t n)) \
    X(1, CUresult, cuMemAllocHost, "cuMemAllocHost_v2", (void **p, size_t bytes))      \
    X(1, CUresult, cuMemFreeHost, "cuMemFreeHost", (void *p))                          \
    X(1, CUresult, cuMemcpyHtoD, "cuMemcpyHtoD_v2",                                    \
      (CUdeviceptr dst, const void *src, size_t bytes))                                \
    X(1, CUresult, cuMemcpyDtoH, "cuMemcpyDtoH_v2",                                    \
      (void *dst, CUdeviceptr src, size_t bytes))                                      \
    X(1, CUresult, cuStreamCreate, "cuStreamCreate", (CUstream * s, unsigned flags))   \
    X(1, CUresult, cuStreamSynchronize, "cuStreamSynchronize", (CUstream s))           \
    X(1, CUresult, cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2",                          \
      (CUdeviceptr dst, const void *src, size_t bytes, CUstream s))                    \
    X(1, CUresult, cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2",                          \
      (void *dst, CUdeviceptr src, size_t bytes, CUstream s))                          \
    X(1, CUresult, cuEventCreate, "cuEventCreate", (CUevent * e, unsigned flags))      \
    X(1, CUresult, cuEventRecord, "cuEventRecord", (CUevent e, CUstream s))            \
    X(1, CUresult, cuEventSynchronize, "cuEventSynchronize", (CUevent e))              \
    X(1, CUresult, cuEventElapsedTime, "cuEventElapsedTime",                           \
      (float *ms, CUevent start, CUevent end))                                         \
    X(1, CUresult, cuEventDestroy, "cuEventDestroy_v2", (CUevent e))                   \
    X(0, CUresult, cuGetErrorName, "cuGetErrorName", (CUresult r, const char **s))     \
    X(0, CUresult, cuGetErrorString, "cuGetErrorString", (CUresult r, const char **s))

/* The loaded driver: one pointer per row, NULL for a missing optional one. */
typedef struct modal__cuda {
#define MODAL__CUDA_FIELD(req, ret, name, sym, params) ret(*name) params;
    MODAL__CUDA_MAP(MODAL__CUDA_FIELD)
#undef MODAL__CUDA_FIELD
    int driver_version;      /* e.g. 12040 for 12.4 */
    char path[256];          /* the file opened */
} modal__cuda;

/*
 * The driver, loaded and cuInit(0)'d once per process. Thread-safe.
 * Returns NULL with err set (MODAL_EGPU) when it cannot be used, naming
 * why: "no CUDA driver: libcuda.so.1: cannot open shared object file",
 * "the CUDA driver at PATH lacks cuLaunchKernel", "the CUDA driver is 11.4;
 * libmodal needs 12.0 or newer", "cuInit failed: CUDA_ERROR_NO_DEVICE
 * (no CUDA-capable device is detected)". The same answer every time.
 */
const modal__cuda *modal__cuda_get(modal_error *err);

/*
 * Write "NAME (description)" of r into out, from the driver's own names
 * when it has them, else from a table of the common ones.
 */
void modal__cuda_error_text(CUresult r, char *out, size_t outsz);

/*
 * Fail with err for a driver call that returned r: status MODAL_ENOMEM for
 * CUDA_ERROR_OUT_OF_MEMORY, MODAL_EGPU otherwise; the message is
 * "<what>: <NAME> (<description>)". Returns the status.
 */
modal_status modal__cuda_fail(modal_error *err, CUresult r, const char *what);

/* ---- inventory ---------------------------------------------------- */

#define MODAL__GPU_MAX_DEVICES 64

/* One device as the driver reports it. */
typedef struct modal__gpu_device {
    int ordinal;                 /* the driver's ordinal in this process */
    char name[96];               /* "NVIDIA H100 80GB HBM3" */
    char type[24];               /* Modal's name: "H100" (or the driver's name) */
    char uuid[48];               /* "GPU-8c1f...": what CUDA_VISIBLE_DEVICES takes */
    unsigned long long memory;   /* bytes */
    int cc_major, cc_minor;
    char pci[32];                /* "0000:3b:00.0", "" when unknown */
} modal__gpu_device;

/*
 * The devices this process sees (after CUDA_VISIBLE_DEVICES), at most max.
 * MODAL_OK with *n = 0 when there is no driver or no device: why is then
 * in why (e.g. "no CUDA driver: ..."), which may be NULL.
 */
modal_status modal__gpu_inventory(modal__gpu_device *out, size_t max, size_t *n,
                                  char *why, size_t whysz, modal_error *err);

/*
 * Modal's name for a device of the driver's name and memory: T4, L4, A10G,
 * L40S, A100-40GB, A100-80GB, H100, H200, B200; else the driver's name
 * without its "NVIDIA " prefix. Writes into out.
 */
void modal__gpu_type_of(const char *driver_name, unsigned long long memory, char *out,
                        size_t outsz);

/*
 * Fatbin images: the architectures inside one, for the message that says
 * why a device cannot run it. A fatbin starts with magic 0xBA55ED50; each
 * entry is SASS for one sm_XY or PTX for one compute_XY.
 */
#define MODAL__FATBIN_MAGIC 0xBA55ED50u
typedef struct modal__fatbin_arch {
    int sm;                      /* 80 for sm_80 */
    int ptx;                     /* 1: PTX for compute_<sm>; 0: SASS */
} modal__fatbin_arch;

/*
 * Parse the fatbin at p (at most len bytes; len may be larger than the
 * image): its total size into *size and up to max entries into archs
 * (*n of them). Never reads beyond len. Returns MODAL_OK, or MODAL_ECODEC
 * naming what is wrong ("fatbin entry 2 runs past the image's end").
 */
modal_status modal__fatbin_parse(const void *p, size_t len, size_t *size,
                                 modal__fatbin_arch *archs, size_t max, size_t *n,
                                 modal_error *err);

/* "sm_80, sm_90 and PTX for compute_90" into out. */
void modal__fatbin_describe(const modal__fatbin_arch *archs, size_t n, char *out,
                            size_t outsz);

#endif
