/*
 * gpu.h: what the rest of libmodal uses of the GPU helpers (lib/gpu.c).
 */
#ifndef MODAL_GPU_H
#define MODAL_GPU_H

#include <stdbool.h>
#include <stddef.h>

#include "modal.h"

/*
 * The exit status of a worker that stopped because its GPU cannot be used
 * any more (a sticky driver error): it answered the call that hit it and
 * started none of the calls sent to it after that, so the runtime gives
 * those back to the queue instead of charging them with a crash.
 */
#define MODAL__WORKER_EXIT_GPU_LOST 75

/*
 * Create the context of every device this process holds, for a worker of
 * a function with .gpu, before its enter hook. MODAL_OK, or MODAL_EGPU with
 * msg saying why (no device, the driver's error).
 */
modal_status modal__gpu_warm(char *msg, size_t msgsz);

/* Whether a device hit an error after which this process cannot use it. */
bool modal__gpu_lost(void);

/*
 * Every check of a launch that needs no driver (image, kernel name, shape,
 * arguments): the image's length into *image_bytes, the bytes of all its
 * arrays (each aligned) into *total. Errors name the kernel and the bad
 * value.
 */
modal_status modal__gpu_launch_check(const modal_gpu_launch *l, size_t *image_bytes,
                                     size_t *total, modal_error *err);

#endif
