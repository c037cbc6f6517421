/*
 * kernel_offer.h: the kernel worker this runtime offers for remote kernel
 * launch (runtime/kernel_offer.c; docs/gpu.md, "Remote kernel launch").
 *
 * modal-kernel-worker is a libmodal program whose one function runs a
 * kernel launch sent by a client. The runtime finds it at start (next to
 * its own executable, or where --kernel-worker says), stores it in the
 * artifact store like an uploaded executable, and names its SHA-256 in
 * GET /v1/health. A client registers a spec for it and calls it like any
 * other function, so nothing of the caller runs on the GPU machine.
 */
#ifndef RT_KERNEL_OFFER_H
#define RT_KERNEL_OFFER_H

#include "internal.h"

/* The program's file name, looked for next to modal-runtime. */
#define RT_KERNEL_WORKER_NAME "modal-kernel-worker"

/*
 * Find the kernel worker (path: the --kernel-worker flag, or NULL for the
 * file next to /proc/self/exe) and store it as an artifact, in a thread
 * of its own so the runtime's start does not wait for the hash and the
 * fsync. Never fails the start: when it is missing or cannot be stored,
 * the reason is logged and kept for the health answer. Call after
 * rt_state_init, once.
 */
void rt_kernel_offer_init(const char *path);

/* Wait until rt_kernel_offer_init's thread is done, so the process can
 * exit without it still writing to the store or hashing (OpenSSL's exit
 * handlers would pull its state from under it). */
void rt_kernel_offer_wait(void);

/*
 * Add "kernel_worker" to a health answer: its SHA-256, or null with
 * "kernel_worker_missing" saying why there is none. When the stored file
 * went missing (removed as damaged), it is stored again first, so a client
 * that was told the artifact is gone finds it here again. Waits for the
 * first attempt of rt_kernel_offer_init. Does file I/O: call it without
 * rt.mu.
 */
void rt_kernel_offer_status(cJSON *health);

#endif
