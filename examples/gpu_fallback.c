/*
 * gpu_fallback.c: an ordered list of GPU types, the C twin of Modal's
 * `gpu=["H100", "A100-80GB", "any"]`: the runtime tries an H100 first,
 * then an A100 80GB, then any GPU it has. The function says which one it
 * got, and runs saxpy on it to show that it works.
 *
 *     build/examples/gpu_fallback
 */
#include <modal.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

MODAL_APP("gpu-fallback");

MODAL_GPU_IMAGE(saxpy);

/* Returns [type, driver name, y] with y = 2 * x + y computed on the GPU. */
MODAL_FUNCTION(which_gpu, .gpu = "H100, A100-80GB, any", .timeout = 60)
{
    size_t n = 0, ny = 0;
    const float *x = modal_arg_f32(args, 0, &n);
    const float *y = modal_arg_f32(args, 1, &ny);
    if (modal_ctx_failed(ctx))
        return NULL;
    if (ny != n)
        return modal_ctx_fail(ctx, "x has %zu elements and y %zu; give two of the same length", n, ny);
    modal_gpu_info info;
    modal_error err;
    if (modal_gpu_info_get(0, &info, &err) != MODAL_OK)
        return modal_ctx_fail(ctx, "%s", err.message);
    modal_value *out = modal_array_new(MODAL_F32, 1, &n);
    float *r = modal_array_data_mut(out);
    if (r == NULL) {
        modal_value_free(out);
        return modal_ctx_fail(ctx, "out of memory for %zu results", n);
    }
    memcpy(r, y, n * sizeof *r);
    int count = (int)n;
    float a = 2.0f;
    modal_gpu_arg kargs[] = {MODAL_GPU_SCALAR(count), MODAL_GPU_SCALAR(a), MODAL_GPU_IN(x, n),
                             MODAL_GPU_INOUT(r, n)};
    modal_gpu_launch launch = {.image = &saxpy_gpu_image, .kernel = "saxpy",
                               .grid = MODAL_DIM3((unsigned)((n + 255) / 256)),
                               .block = MODAL_DIM3(256), .args = kargs, .nargs = 4};
    if (modal_gpu_run(&launch, NULL, &err) != MODAL_OK) {
        modal_value_free(out);
        return modal_ctx_fail(ctx, "%s", err.message);
    }
    return modal_args(modal_string(info.type), modal_string(info.name), out);
}

MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    size_t n = 100000;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    if (x == NULL || y == NULL)
        return 1;
    srand(7);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)rand() / RAND_MAX;
        y[i] = (float)rand() / RAND_MAX;
    }
    modal_value *out = NULL;
    modal_error err;
    if (modal_fn_remote(&which_gpu, modal_args(modal_array(MODAL_F32, x, n),
                                               modal_array(MODAL_F32, y, n)),
                        &out, &err) != MODAL_OK) {
        fprintf(stderr, "gpu_fallback: %s\n", err.message);
        return 1;
    }
    const char *type = NULL, *name = NULL;
    const float *r = NULL;
    size_t nr = 0;
    if (modal_get_string(modal_list_get(out, 0), &type, NULL, &err) != MODAL_OK ||
        modal_get_string(modal_list_get(out, 1), &name, NULL, &err) != MODAL_OK ||
        modal_get_array(modal_list_get(out, 2), MODAL_F32, (const void **)&r, &nr, &err) !=
            MODAL_OK || nr != n) {
        fprintf(stderr, "gpu_fallback: unexpected result\n");
        return 1;
    }
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (fabsf(r[i] - (2.0f * x[i] + y[i])) > 1e-5f * (1.0f + fabsf(2.0f * x[i] + y[i])))
            bad++;
    printf("gpu \"H100, A100-80GB, any\" ran on: %s (%s); saxpy %s\n", type, name,
           bad == 0 ? "matches the CPU" : "MISMATCH");
    modal_value_free(out);
    free(x);
    free(y);
    return bad == 0 ? 0 : 1;
}
