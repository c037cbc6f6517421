/*
 * remote_kernels.c: CPU stand-ins for the kernels that remote kernel
 * launch's tests and bench/gpu_bench.c send (bench/kernels/empty.cu and the
 * images tests/integration/test_gpu_remote.c makes), linked with the
 * examples' stand-ins (kernels.c) into libfake_remote_kernels.so, which the
 * CUDA test double loads through MODAL_FAKE_CUDA_KERNELS.
 */
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))
#define SCALAR(T, i) (*(const T *)params[i])
#define DEVPTR(T, i) ((T *)(uintptr_t)*(const unsigned long long *)params[i])

/* empty(): nothing. */
EXPORT void fake_kernel_empty(void **params, unsigned grid[3], unsigned block[3])
{
}

/* evens(int n, int *out): out[i] = 3 * i + 1 for even i < n; odd elements
 * are not written, so they show what device memory started as. */
EXPORT void fake_kernel_evens(void **params, unsigned grid[3], unsigned block[3])
{
    int n = SCALAR(int, 0);
    int *out = DEVPTR(int, 1);
    for (int i = 0; i < n; i += 2)
        out[i] = 3 * i + 1;
}

/* add(int n, int k, int *a): a[i] += k, in place. */
EXPORT void fake_kernel_add(void **params, unsigned grid[3], unsigned block[3])
{
    int n = SCALAR(int, 0), k = SCALAR(int, 1);
    int *a = DEVPTR(int, 2);
    for (int i = 0; i < n; i++)
        a[i] += k;
}
