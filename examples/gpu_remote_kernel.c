/*
 * gpu_remote_kernel.c: remote kernel launch. This program never touches
 * CUDA and needs no GPU: it sends a fatbin (the saxpy kernel of
 * examples/kernels/saxpy.cu, linked in, or one read from a file), the
 * kernel's name, the launch shape and the arguments to the runtime, whose
 * kernel worker runs it on a GPU and sends y back. It checks y against the
 * CPU on random inputs.
 *
 *     build/examples/gpu_remote_kernel                 # the linked-in saxpy
 *     build/examples/gpu_remote_kernel saxpy.fatbin    # a fatbin from a file
 *
 * The C twin of what remote-CUDA systems do, through the same runtime as
 * every function (docs/gpu.md, "Remote kernel launch").
 */
#include <modal.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

MODAL_APP("gpu-remote-kernel");

/* saxpy.cu's fatbin, placed in this program by the make rule. */
MODAL_GPU_IMAGE(saxpy);

/* The whole of a file, or NULL. */
static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *p = NULL;
    long n = -1;
    if (f != NULL && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (p = malloc((size_t)n)) != NULL && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    if (f != NULL)
        fclose(f);
    *len = n > 0 ? (size_t)n : 0;
    return p;
}

MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    modal_gpu_image image = saxpy_gpu_image;
    unsigned char *bytes = NULL;
    if (argc > 1) {
        bytes = read_all(argv[1], &image.size);
        if (bytes == NULL) {
            fprintf(stderr, "gpu_remote_kernel: cannot read the fatbin %s\n", argv[1]);
            return 1;
        }
        image = (modal_gpu_image){argv[1], bytes, image.size};
    }

    int n = 1 << 20;
    float a = 0;
    float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    float *want = malloc((size_t)n * sizeof *want);
    if (x == NULL || y == NULL || want == NULL) {
        fprintf(stderr, "gpu_remote_kernel: out of memory\n");
        return 1;
    }
    srand48((long)time(NULL));
    a = (float)(drand48() * 4 - 2);
    for (int i = 0; i < n; i++) {
        x[i] = (float)(drand48() * 2 - 1);
        y[i] = (float)(drand48() * 2 - 1);
        want[i] = a * x[i] + y[i];
    }

    /* y = a * x + y on a GPU of the runtime: x goes in, y in and out. */
    modal_gpu_arg args[] = {MODAL_GPU_SCALAR(n), MODAL_GPU_SCALAR(a), MODAL_GPU_IN(x, n),
                            MODAL_GPU_INOUT(y, n)};
    modal_gpu_launch launch = {.image = &image, .kernel = "saxpy",
                               .grid = MODAL_DIM3(((unsigned)n + 255) / 256),
                               .block = MODAL_DIM3(256), .args = args, .nargs = 4};
    modal_gpu_stats stats;
    modal_error err;
    if (modal_gpu_run_remote("any", &launch, &stats, &err) != MODAL_OK) {
        fprintf(stderr, "gpu_remote_kernel: %s\n", err.message);
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(y[i] - want[i]) > 1e-5f * (1 + fabsf(want[i])) && bad++ < 5)
            fprintf(stderr, "gpu_remote_kernel: y[%d] = %g, the CPU says %g\n", i, y[i], want[i]);
    printf("saxpy of %d floats on a remote GPU: %s (copy in %.3f ms, kernel %.3f ms, "
           "copy out %.3f ms)\n", n, bad ? "WRONG" : "matches the CPU", stats.copy_in_s * 1e3,
           stats.kernel_s * 1e3, stats.copy_out_s * 1e3);
    free(x);
    free(y);
    free(want);
    free(bytes);
    return bad != 0;
}
