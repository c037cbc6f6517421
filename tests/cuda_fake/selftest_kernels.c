/*
 * selftest_kernels.c: the CPU stand-in the fake driver's own test
 * (tests/unit/test_cuda.c) launches through MODAL_FAKE_CUDA_KERNELS,
 * built as build/tests/cuda_fake/libfake_selftest.so. It computes what
 * the CUDA kernel saxpy(n, a, x, y): y[i] = a * x[i] + y[i] would, for
 * every thread of the grid, so a test can check a launch end to end.
 */
#include <stddef.h>

void fake_kernel_saxpy(void **params, unsigned grid[3], unsigned block[3]);

void fake_kernel_saxpy(void **params, unsigned grid[3], unsigned block[3])
{
    int n = *(int *)params[0];
    float a = *(float *)params[1];
    const float *x = *(float *const *)params[2];
    float *y = *(float **)params[3];
    size_t threads = (size_t)grid[0] * block[0];
    for (size_t i = 0; i < threads && i < (size_t)n; i++)
        y[i] = a * x[i] + y[i];
}
