/*
 * kernels.c: CPU stand-ins for the kernels of the .cu files in examples/kernels, which
 * the CUDA test double (fake_cuda.c) runs in place of a launch when
 * MODAL_FAKE_CUDA_KERNELS names this library. Each runs its kernel's body
 * once per thread of the launch shape, in order, so a launch whose grid
 * is too small leaves results unwritten exactly as a GPU would. Device
 * pointers are host pointers in the fake.
 */
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))

/* Parameter i as a scalar of type T, or as a device pointer. */
#define SCALAR(T, i) (*(const T *)params[i])
#define DEVPTR(T, i) ((T *)(uintptr_t)*(const unsigned long long *)params[i])

typedef void kernel_body(void **params, const unsigned blk[3], const unsigned thr[3],
                         const unsigned block[3]);

/* Run body for every thread of grid x block. */
static void each_thread(kernel_body *body, void **params, const unsigned grid[3],
                        const unsigned block[3])
{
    unsigned b[3], t[3];
    for (b[2] = 0; b[2] < grid[2]; b[2]++)
        for (b[1] = 0; b[1] < grid[1]; b[1]++)
            for (b[0] = 0; b[0] < grid[0]; b[0]++)
                for (t[2] = 0; t[2] < block[2]; t[2]++)
                    for (t[1] = 0; t[1] < block[1]; t[1]++)
                        for (t[0] = 0; t[0] < block[0]; t[0]++)
                            body(params, b, t, block);
}

/* saxpy(int n, float a, const float *x, float *y) */
static void saxpy_body(void **params, const unsigned blk[3], const unsigned thr[3],
                       const unsigned block[3])
{
    int n = SCALAR(int, 0);
    float a = SCALAR(float, 1);
    const float *x = DEVPTR(const float, 2);
    float *y = DEVPTR(float, 3);
    long i = (long)blk[0] * block[0] + thr[0];
    if (i < n)
        y[i] = a * x[i] + y[i];
}

EXPORT void fake_kernel_saxpy(void **params, unsigned grid[3], unsigned block[3])
{
    each_thread(saxpy_body, params, grid, block);
}

/* matmul(int n, const float *a, const float *b, float *c), 16 x 16 tiles:
 * each thread sums its row of a times its column of b in the same order
 * as the kernel's tiles do. */
static void matmul_body(void **params, const unsigned blk[3], const unsigned thr[3],
                        const unsigned block[3])
{
    int n = SCALAR(int, 0);
    const float *a = DEVPTR(const float, 1), *b = DEVPTR(const float, 2);
    float *c = DEVPTR(float, 3);
    long row = (long)blk[1] * 16 + thr[1], col = (long)blk[0] * 16 + thr[0];
    if (row >= n || col >= n)
        return;
    float sum = 0.0f;
    for (long k = 0; k < n; k++)
        sum += a[row * n + k] * b[k * n + col];
    c[row * n + col] = sum;
}

EXPORT void fake_kernel_matmul(void **params, unsigned grid[3], unsigned block[3])
{
    each_thread(matmul_body, params, grid, block);
}
