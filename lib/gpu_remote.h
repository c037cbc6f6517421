/*
 * gpu_remote.h: how a remote kernel launch travels, written once for the
 * client (lib/gpu_remote.c) and the kernel worker that runs it
 * (runtime/kernel_worker.c). docs/gpu.md ("Remote kernel launch")
 * describes it for people.
 *
 * The call is an ordinary call of the kernel worker's one function, with
 * these arguments, in this order:
 *
 *   IMAGE       bytes   the fatbin (its own header gives its length)
 *   IMAGE_NAME  string  the image's name for messages ("saxpy.cu")
 *   KERNEL      string  the entry name
 *   GRID, BLOCK u32[3]  the launch shape, every size at least 1
 *   SHARED      int     dynamic shared memory per block, bytes
 *   DEVICE      int     which of the worker's devices
 *   ARGS        list    one entry per kernel parameter, in order, each a
 *                       list [kind, payload]: kind a modal_gpu_arg_kind;
 *                       payload the scalar's or IN/INOUT array's bytes, or
 *                       for OUT the array's size in bytes (an int)
 *
 * The result is a map: "out" a list of bytes, the OUT and INOUT arrays in
 * parameter order; "stats" f64[3], copy_in_s, kernel_s, copy_out_s.
 */
#ifndef MODAL_GPU_REMOTE_H
#define MODAL_GPU_REMOTE_H

enum {
    MODAL__KW_IMAGE,
    MODAL__KW_IMAGE_NAME,
    MODAL__KW_KERNEL,
    MODAL__KW_GRID,
    MODAL__KW_BLOCK,
    MODAL__KW_SHARED,
    MODAL__KW_DEVICE,
    MODAL__KW_ARGS,
    MODAL__KW_NARGS /* how many */
};

/* The kernel worker's function and app, as its spec names them. */
#define MODAL__KW_FUNCTION "modal_kernel"
#define MODAL__KW_APP "modal-kernels"
/* Longest kernel or image name sent. */
#define MODAL__KW_NAME_MAX 255
/* Largest scalar argument, bytes (modal_gpu_arg_kind's doc). */
#define MODAL__KW_SCALAR_MAX 256

#endif
