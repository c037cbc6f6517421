/*
 * gpus.h: the GPUs of this runtime. At start, the CUDA driver's inventory
 * (lib/cuda.h, loaded at run time: a runtime without CUDA has no GPU and
 * says why) becomes one typed device slot of the allocator per device
 * (resources.h), so GPU requests are reserved like CPU and memory.
 * Layer 0: depends on nothing of the runtime but resources.c and state.c.
 */
#ifndef RT_GPUS_H
#define RT_GPUS_H

#include <stdio.h>

typedef struct cJSON cJSON;

/* Take the inventory and add each device to the allocator (after
 * rt_res_init); logs what was found, or why nothing was. */
void rt_gpus_init(void);

/* modal-runtime --gpus: print the inventory to `to` (index, Modal type,
 * driver name, memory, compute capability, UUID), or "no GPUs: <why>". */
void rt_gpus_print(FILE *to);

/*
 * For GET /v1/health: {"devices": [{"index","type","name","uuid",
 * "memory_mib","cc","held_by"}...], "why": null or why there is none}.
 * held_by(slot, arg) gives the holder of the allocator's slot (a new
 * object) or NULL when it is free. With rt.mu held.
 */
cJSON *rt_gpus_status(cJSON *(*held_by)(int slot, void *arg), void *arg);

#endif
