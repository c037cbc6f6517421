/*
 * resources.h: what this runtime may hand to workers, and what it has
 * handed out. Before a worker starts, the scheduler reserves what its
 * function asks for (CPU cores, MiB of memory, devices); the reservation
 * is released when the worker is gone. Where the host lets the runtime
 * manage its own cgroup v2 subtree, each worker also gets a cgroup of its
 * own whose cpu.max and memory.max enforce the reservation; elsewhere the
 * reservation is accounted only (health and the log say which, and why).
 *
 * Devices are abstract slots with names (none today): the GPU module adds
 * one per device it finds with rt_res_add_device, a request asks for a
 * count, and a grant says which slots it got (to fill CUDA_VISIBLE_DEVICES
 * and the worker's device nodes). A new kind of resource is one more field
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

#include "modal.h"

typedef struct cJSON cJSON;

#define RT_RES_MAX_DEVICES 64

/* What a function asks for per worker (0: nothing of that kind). */
typedef struct rt_res_req {
    double cpu;              /* cores, 0.125..256 */
    long long memory;        /* MiB */
    int devices;             /* device slots */
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
 * Whether req can ever fit on this runtime. Returns MODAL_OK, or
 * MODAL_ERESOURCE with err naming fn, what it asks for and what this
 * runtime has ("fn: asks for 64 CPUs but this runtime has 2 (--cpus)").
 */
modal_status rt_res_check(const rt_res_req *req, const char *fn, modal_error *err);

/*
 * Reserve req into g. Returns NULL, or when it does not fit now, the name
 * of the first kind that is short ("cpu", "memory", "devices"), a static
 * string; nothing is reserved then.
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
