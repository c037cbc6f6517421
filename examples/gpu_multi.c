/*
 * gpu_multi.c: one function holding four GPUs, the C twin of Modal's
 * `gpu="H100:4"`. The worker gets four H100s of its own (devices 0..3 in
 * it); the function splits saxpy over all of them, one thread per device,
 * so the four launches run at the same time. The caller checks the whole
 * result against the CPU.
 *
 *     build/examples/gpu_multi
 */
#include <modal.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

MODAL_APP("gpu-multi");

MODAL_GPU_IMAGE(saxpy);

#define DEVICES 4

typedef struct part {
    int device, n;
    float a;
    const float *x;
    float *y;
    modal_status st;
    modal_error err;
} part;

/* Run saxpy on one device's share of the elements. */
static void *run_part(void *arg)
{
    part *p = arg;
    modal_gpu_arg kargs[] = {MODAL_GPU_SCALAR(p->n), MODAL_GPU_SCALAR(p->a),
                             MODAL_GPU_IN(p->x, p->n), MODAL_GPU_INOUT(p->y, p->n)};
    modal_gpu_launch launch = {.image = &saxpy_gpu_image, .kernel = "saxpy",
                               .grid = MODAL_DIM3((unsigned)((p->n + 255) / 256)),
                               .block = MODAL_DIM3(256), .args = kargs, .nargs = 4,
                               .device = p->device};
    p->st = modal_gpu_run(&launch, NULL, &p->err);
    return NULL;
}

/* saxpy(a, x, y) with the elements split evenly over the four GPUs. */
MODAL_FUNCTION(saxpy_4gpu, .gpu = "H100:4", .timeout = 60)
{
    float a = (float)modal_arg_float(args, 0);
    size_t n = 0, ny = 0;
    const float *x = modal_arg_f32(args, 1, &n);
    const float *y = modal_arg_f32(args, 2, &ny);
    if (modal_ctx_failed(ctx))
        return NULL;
    if (ny != n || n > 1u << 30)
        return modal_ctx_fail(ctx, "x has %zu elements and y %zu; give two of the same length", n, ny);
    if (modal_gpu_count() != DEVICES)
        return modal_ctx_fail(ctx, "this worker holds %d GPUs, not %d", modal_gpu_count(), DEVICES);
    modal_value *out = modal_array_new(MODAL_F32, 1, &n);
    float *r = modal_array_data_mut(out);
    if (r == NULL) {
        modal_value_free(out);
        return modal_ctx_fail(ctx, "out of memory for %zu results", n);
    }
    memcpy(r, y, n * sizeof *r);
    part parts[DEVICES];
    pthread_t threads[DEVICES];
    size_t per = (n + DEVICES - 1) / DEVICES;
    for (int d = 0; d < DEVICES; d++) {
        size_t lo = d * per < n ? d * per : n, hi = lo + per < n ? lo + per : n;
        parts[d] = (part){.device = d, .n = (int)(hi - lo), .a = a, .x = x + lo, .y = r + lo};
        if (pthread_create(&threads[d], NULL, run_part, &parts[d]) != 0)
            run_part(&parts[d]), threads[d] = 0;
    }
    for (int d = 0; d < DEVICES; d++)
        if (threads[d] != 0)
            pthread_join(threads[d], NULL);
    for (int d = 0; d < DEVICES; d++)
        if (parts[d].st != MODAL_OK) {
            modal_value_free(out);
            return modal_ctx_fail(ctx, "device %d: %s", d, parts[d].err.message);
        }
    return out;
}

MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    size_t n = 1000003; /* not a multiple of 4: the last share is shorter */
    float a = 0.75f;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    if (x == NULL || y == NULL)
        return 1;
    srand(2024);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)rand() / RAND_MAX - 0.5f;
        y[i] = (float)rand() / RAND_MAX - 0.5f;
    }
    modal_value *out = NULL;
    modal_error err;
    if (modal_fn_remote(&saxpy_4gpu, modal_args(modal_float(a), modal_array(MODAL_F32, x, n),
                                                modal_array(MODAL_F32, y, n)),
                        &out, &err) != MODAL_OK) {
        fprintf(stderr, "gpu_multi: %s\n", err.message);
        return 1;
    }
    const float *r = NULL;
    size_t nr = 0;
    if (modal_get_array(out, MODAL_F32, (const void **)&r, &nr, &err) != MODAL_OK || nr != n) {
        fprintf(stderr, "gpu_multi: the result is not %zu floats\n", n);
        return 1;
    }
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (fabsf(r[i] - (a * x[i] + y[i])) > 1e-5f * (1.0f + fabsf(a * x[i] + y[i])))
            bad++;
    printf("saxpy over %zu floats split over %d GPUs: %s\n", n, DEVICES,
           bad == 0 ? "matches the CPU" : "MISMATCH");
    modal_value_free(out);
    free(x);
    free(y);
    return bad == 0 ? 0 : 1;
}
