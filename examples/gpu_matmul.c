/*
 * gpu_matmul.c: a tiled matrix multiply on an A100 80GB, or an H100 where
 * there is none, checked against a CPU reference: the C twin of Modal's
 * `gpu=["A100-80GB", "H100"]`.
 *
 * The kernel (examples/kernels/matmul.cu) stages 16 x 16 tiles of both
 * matrices through shared memory; the launch has one 16 x 16 block per
 * tile of the result.
 *
 *     build/examples/gpu_matmul [N]       # N x N matrices, default 256
 *     build/examples/gpu_matmul --local
 */
#include <modal.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

MODAL_APP("gpu-matmul");

MODAL_GPU_IMAGE(matmul);

/* matmul(n, a, b) = a * b for n x n row-major f32 matrices. */
MODAL_FUNCTION(matmul_gpu, .gpu = "A100-80GB, H100", .timeout = 120)
{
    int64_t n = modal_arg_int(args, 0);
    size_t na = 0, nb = 0;
    const float *a = modal_arg_f32(args, 1, &na);
    const float *b = modal_arg_f32(args, 2, &nb);
    if (modal_ctx_failed(ctx))
        return NULL;
    if (n < 1 || n > 16384 || na != (size_t)(n * n) || nb != na)
        return modal_ctx_fail(ctx, "n is %lld and the matrices have %zu and %zu elements; "
                              "give n in 1..16384 and two n x n matrices", (long long)n, na, nb);
    size_t shape[2] = {(size_t)n, (size_t)n};
    modal_value *out = modal_array_new(MODAL_F32, 2, shape);
    float *c = modal_array_data_mut(out);
    if (c == NULL) {
        modal_value_free(out);
        return modal_ctx_fail(ctx, "out of memory for a %lld x %lld result", (long long)n,
                              (long long)n);
    }
    int dim = (int)n;
    unsigned tiles = (unsigned)((n + 15) / 16);
    modal_gpu_arg kargs[] = {MODAL_GPU_SCALAR(dim), MODAL_GPU_IN(a, na), MODAL_GPU_IN(b, nb),
                             MODAL_GPU_OUT(c, na)};
    modal_gpu_launch launch = {
        .image = &matmul_gpu_image, .kernel = "matmul",
        .grid = MODAL_DIM3(tiles, tiles), .block = MODAL_DIM3(16, 16),
        .args = kargs, .nargs = 4,
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
    int n = argc > 1 && !local ? atoi(argv[1]) : 256;
    if (n < 1 || n > 4096) {
        fprintf(stderr, "gpu_matmul: N must be 1..4096, got \"%s\"\n", argv[1]);
        return 2;
    }
    size_t nn = (size_t)n * n;
    float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b);
    double *ref = calloc(nn, sizeof *ref);
    if (a == NULL || b == NULL || ref == NULL)
        return 1;
    srand(4242);
    for (size_t i = 0; i < nn; i++) {
        a[i] = (float)rand() / RAND_MAX * 2 - 1;
        b[i] = (float)rand() / RAND_MAX * 2 - 1;
    }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < n; k++)
            for (int j = 0; j < n; j++)
                ref[(size_t)i * n + j] += (double)a[(size_t)i * n + k] * b[(size_t)k * n + j];

    modal_value *args = modal_args(modal_int(n), modal_array(MODAL_F32, a, nn),
                                   modal_array(MODAL_F32, b, nn));
    modal_value *out = NULL;
    modal_error err;
    modal_status st = local ? modal_fn_local(&matmul_gpu, args, &out, &err)
                            : modal_fn_remote(&matmul_gpu, args, &out, &err);
    if (st != MODAL_OK) {
        fprintf(stderr, "gpu_matmul: %s\n", err.message);
        return 1;
    }
    const float *c = NULL;
    size_t nc = 0;
    if (modal_get_array(out, MODAL_F32, (const void **)&c, &nc, &err) != MODAL_OK || nc != nn) {
        fprintf(stderr, "gpu_matmul: the result is not %zu floats\n", nn);
        return 1;
    }
    /* f32 sums of n products: allow the rounding of n terms. */
    double worst = 0;
    size_t bad = 0;
    for (size_t i = 0; i < nn; i++) {
        double d = fabs(c[i] - ref[i]);
        if (d > worst)
            worst = d;
        if (d > 1e-5 * n + 1e-4 * fabs(ref[i]))
            bad++;
    }
    printf("matmul %d x %d (%s): %s (largest difference %.2g)\n", n, n,
           local ? "ran locally" : "ran remotely", bad == 0 ? "matches the CPU" : "MISMATCH",
           worst);
    if (bad != 0)
        fprintf(stderr, "gpu_matmul: %zu of %zu elements differ from the CPU's\n", bad, nn);
    modal_value_free(out);
    free(a);
    free(b);
    free(ref);
    return bad == 0 ? 0 : 1;
}
