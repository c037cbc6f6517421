/*
 * resources.h: what this runtime may hand to workers, and what it has
 * handed out. Before a worker starts, the scheduler reserves what its
 * function asks for (CPU cores, MiB of memory, devices); the reservation
 * is released when the worker is gone. Where the host lets the runtime
 * manage its own cgroup v2 subtree, each worker also gets a cgroup of its
 * own whose cpu.max and memory.max enforce the reservation; elsewhere the
 * reservation is accounted only (health and the log say which, and why).
 *
 * Devices are slots with names. GPUs (runtime/gpus.c adds one typed slot
 * per device it finds, with rt_res_add_gpu) are asked for by Modal's rules:
 * a request carries the parsed choices of the function's .gpu option, and
 * a grant says which slots it got (to fill CUDA_VISIBLE_DEVICES and the
 * worker's device nodes). Untyped slots (rt_res_add_device) are asked for
 * by count. A new kind of resource is one more field
 * in rt_res_req and rt_res_grant, one more line in the fit check, and its
 * enforcement in rt_res_enforce.
 *
 * Functions other than rt_res_init run with rt.mu held; the cgroup ones
 * write only to cgroupfs (kernel memory, no disk).
 */
#ifndef RT_RESOURCES_H
#define RT_RESOURCES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "internal.h"

typedef struct cJSON cJSON;

#define RT_RES_MAX_DEVICES 64

/* What a function asks for per worker (0: nothing of that kind). */
typedef struct rt_res_req {
    double cpu;              /* cores, 0.125..256 */
    long long memory;        /* MiB */
    int devices;             /* device slots */
    const modal__gpu_choice *gpu; /* GPU choices, tried in order; ngpu 0: none */
    size_t ngpu;
    const char *gpu_spec;    /* the .gpu option as registered, for messages */
} rt_res_req;

/* What one worker holds. */
typedef struct rt_res_grant {
    bool held;
    double cpu;
    long long memory;
    uint64_t devices;        /* bit i: slot i */
    pid_t cgroup_pid;        /* >0: it has the cgroup w-<pid> */
} rt_res_grant;

/*
 * Set the capacity: cpus cores (0: the machine's online CPUs) and
 * memory_mib MiB (0: its physical memory). With use_cgroups, find out
 * whether cgroup v2 limits can be enforced here (this may move the runtime
 * into a leaf cgroup of its own, as cgroup v2 allows controllers only on
 * cgroups without processes); without, account only. Logs the outcome.
 * Call once, before threads start.
 */
void rt_res_init(double cpus, long long memory_mib, bool use_cgroups);

/* Add a device slot named name (e.g. "GPU-<uuid>"); returns its index,
 * or -1 when RT_RES_MAX_DEVICES are known already. */
int rt_res_add_device(const char *name);

/*
 * Add a GPU slot: name its UUID (what CUDA_VISIBLE_DEVICES takes), type
 * Modal's name for it ("H100"), memory_mib its memory. Returns its index,
 * or -1 when RT_RES_MAX_DEVICES are known already.
 */
int rt_res_add_gpu(const char *uuid, const char *type, long long memory_mib);

/* Why this runtime has no GPU ("no CUDA driver: ..."), for the refusal of
 * GPU requests; copied. */
void rt_res_set_no_gpu_why(const char *why);

/* The name of slot i (a GPU's UUID), or NULL. */
const char *rt_res_device_name(int i);

/* How many slots g holds. */
int rt_res_grant_count(const rt_res_grant *g);

/* Whether g holds a GPU that some choice of req would take (of a type
 * with devices enough for the choice's count): a worker holding it is
 * worth stopping for req. */
bool rt_res_grant_serves(const rt_res_grant *g, const rt_res_req *req);

/*
 * Whether req can ever fit on this runtime. Returns MODAL_OK, or
 * MODAL_ERESOURCE with err naming fn, what it asks for and what this
 * runtime has ("fn: asks for 64 CPUs but this runtime has 2 (--cpus)");
 * MODAL_EGPU when no GPU choice can ever be met ("fn: asks for gpu
 * \"H100:4\" but this runtime has 1 H200 (141 GiB) ...").
 */
modal_status rt_res_check(const rt_res_req *req, const char *fn, modal_error *err);

/*
 * Reserve req into g. Returns NULL, or when it does not fit now, the name
 * of the first kind that is short ("cpu", "memory", "devices", "gpu"), a
 * static string; nothing is reserved then. GPUs: the first choice that
 * fits now wins; within it, devices of its own type before upgrades, all
 * of one type, lowest indexes first; all or nothing.
 */
const char *rt_res_reserve(const rt_res_req *req, rt_res_grant *g);

/* Put g into effect for the worker process pid: with cgroups, a cgroup
 * w-<pid> with cpu.max and memory.max, and pid moved into it. A failure
 * is logged; the worker then runs with its reservation accounted only. */
void rt_res_enforce(rt_res_grant *g, pid_t pid);

/* Give back what g holds (and its cgroup); a grant not held is a no-op. */
void rt_res_release(rt_res_grant *g);

/* Remove worker cgroups that were still busy when released. */
void rt_res_sweep(void);

/* Whether cgroup limits are enforced. */
bool rt_res_enforced(void);

/* Capacity, reserved amounts and the enforcement mode, for GET /v1/health:
 * {"enforcement": "cgroup"|"accounting", "why": ..., "capacity": {...},
 *  "reserved": {...}} */
cJSON *rt_resources_status(void);

#endif
