/*
 * gpu_saxpy.c: a GPU function whose kernel is inside this program, the C
 * twin of Modal's `@app.function(gpu="H100")`.
 *
 * examples/kernels/saxpy.cu is compiled by nvcc into a fatbin (SASS for
 * sm_80 and sm_90, PTX for compute_90) and linked into this executable
 * (mk/gpu.mk); MODAL_GPU_IMAGE(saxpy) names it. The worker that runs the
 * function holds an H100, keeps its CUDA context and the loaded module
 * across calls, and modal_gpu_run copies the arrays in, launches and
 * copies the result out. The caller checks it against a CPU reference on
 * random inputs.
 *
 *     build/examples/gpu_saxpy            # on the runtime's H100
 *     build/examples/gpu_saxpy --local    # on this machine's GPU 0
 */
#include <modal.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

MODAL_APP("gpu-saxpy");

/* The fatbin built from examples/kernels/saxpy.cu. */
MODAL_GPU_IMAGE(saxpy);

/* saxpy(a, x, y) = a * x + y, computed on the function's GPU. */
MODAL_FUNCTION(saxpy_gpu, .gpu = "H100", .timeout = 60)
{
    float a = (float)modal_arg_float(args, 0);
    size_t n = 0, ny = 0;
    const float *x = modal_arg_f32(args, 1, &n);
    const float *y = modal_arg_f32(args, 2, &ny);
    if (modal_ctx_failed(ctx))
        return NULL;
    if (ny != n || n > 1u << 30)
        return modal_ctx_fail(ctx, "x has %zu elements and y %zu; give two of the same length", n, ny);
    modal_value *out = modal_array_new(MODAL_F32, 1, &n);
    float *r = modal_array_data_mut(out);
    if (out == NULL || r == NULL) {
        modal_value_free(out);
        return modal_ctx_fail(ctx, "out of memory for %zu results", n);
    }
    memcpy(r, y, n * sizeof *r);
    int count = (int)n;
    modal_gpu_arg kargs[] = {MODAL_GPU_SCALAR(count), MODAL_GPU_SCALAR(a), MODAL_GPU_IN(x, n),
                             MODAL_GPU_INOUT(r, n)};
    modal_gpu_launch launch = {
        .image = &saxpy_gpu_image, .kernel = "saxpy",
        .grid = MODAL_DIM3((unsigned)((n + 255) / 256)), .block = MODAL_DIM3(256),
        .args = kargs, .nargs = 4, .device = 0,
    };
    modal_error err;
    if (modal_gpu_run(&launch, NULL, &err) != MODAL_OK) {
        modal_value_free(out);
        return modal_ctx_fail(ctx, "%s", err.message);
    }
    return out;
}

MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    bool local = argc > 1 && strcmp(argv[1], "--local") == 0;
    size_t n = 1 << 20;
    float a = 2.5f;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    if (x == NULL || y == NULL)
        return 1;
    srand(12345);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)rand() / RAND_MAX - 0.5f;
        y[i] = (float)rand() / RAND_MAX - 0.5f;
    }
    modal_value *args = modal_args(modal_float(a), modal_array(MODAL_F32, x, n),
                                   modal_array(MODAL_F32, y, n));
    modal_value *out = NULL;
    modal_error err;
    modal_status st = local ? modal_fn_local(&saxpy_gpu, args, &out, &err)
                            : modal_fn_remote(&saxpy_gpu, args, &out, &err);
    if (st != MODAL_OK) {
        fprintf(stderr, "gpu_saxpy: %s\n", err.message);
        return 1;
    }
    const float *r = NULL;
    size_t nr = 0;
    if (modal_get_array(out, MODAL_F32, (const void **)&r, &nr, &err) != MODAL_OK || nr != n) {
        fprintf(stderr, "gpu_saxpy: the result is not %zu floats\n", n);
        return 1;
    }
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (fabsf(r[i] - (a * x[i] + y[i])) > 1e-5f * (1.0f + fabsf(a * x[i] + y[i])))
            bad++;
    printf("saxpy over %zu floats (%s): %s\n", n, local ? "ran locally" : "ran remotely",
           bad == 0 ? "matches the CPU" : "MISMATCH");
    if (bad != 0)
        fprintf(stderr, "gpu_saxpy: %zu of %zu results differ from the CPU's\n", bad, n);
    modal_value_free(out);
    free(x);
    free(y);
    return bad == 0 ? 0 : 1;
}
