/*
 * gpus.c: the GPUs of this runtime (see gpus.h). The inventory is taken
 * once, at start; a device that appears later needs a restart.
 */
#include "rt.h"
#include "gpus.h"
#include "cuda.h"

#include <string.h>

static struct {
    modal__gpu_device dev[MODAL__GPU_MAX_DEVICES];
    int slot[MODAL__GPU_MAX_DEVICES]; /* the allocator's slot, -1 when it had no room */
    size_t n;
    char why[512];                    /* why there is none, "" when there are some */
} gpus;

/* Take the inventory into gpus (once per process). */
static void inventory(void)
{
    static bool taken;
    if (taken)
        return;
    taken = true;
    modal_error err;
    size_t n = 0;
    gpus.why[0] = '\0';
    if (modal__gpu_inventory(gpus.dev, MODAL__GPU_MAX_DEVICES, &n, gpus.why, sizeof gpus.why,
                             &err) != MODAL_OK) {
        snprintf(gpus.why, sizeof gpus.why, "%s", err.message);
        n = 0;
    } else if (n == 0 && gpus.why[0] == '\0') {
        snprintf(gpus.why, sizeof gpus.why, "the CUDA driver reports no device");
    }
    gpus.n = n;
}

static double gib(unsigned long long bytes)
{
    return (double)bytes / (1024.0 * 1024 * 1024);
}

void rt_gpus_init(void)
{
    inventory();
    if (gpus.n == 0) {
        rt_res_set_no_gpu_why(gpus.why);
        rt_log(1, "gpus: none: %s", gpus.why);
        return;
    }
    for (size_t i = 0; i < gpus.n; i++) {
        const modal__gpu_device *d = &gpus.dev[i];
        gpus.slot[i] = rt_res_add_gpu(d->uuid, d->type, (long long)(d->memory >> 20));
        if (gpus.slot[i] < 0)
            rt_log(2, "gpus: device %zu (%s, %s) is not used: the runtime takes at most %d "
                   "devices", i, d->type, d->uuid, RT_RES_MAX_DEVICES);
        else
            rt_log(1, "gpus: %zu: %s (%s, %.0f GiB, compute capability %d.%d) %s", i, d->type,
                   d->name, gib(d->memory), d->cc_major, d->cc_minor, d->uuid);
    }
}

void rt_gpus_print(FILE *to)
{
    inventory();
    if (gpus.n == 0) {
        fprintf(to, "no GPUs: %s\n", gpus.why);
        return;
    }
    fprintf(to, "%-5s %-10s %-28s %8s %4s  %s\n", "index", "type", "name", "memory", "cc",
            "uuid");
    for (size_t i = 0; i < gpus.n; i++) {
        const modal__gpu_device *d = &gpus.dev[i];
        char mem[32], cc[16];
        snprintf(mem, sizeof mem, "%.0f GiB", gib(d->memory));
        snprintf(cc, sizeof cc, "%d.%d", d->cc_major, d->cc_minor);
        fprintf(to, "%-5zu %-10s %-28s %8s %4s  %s\n", i, d->type, d->name, mem, cc, d->uuid);
    }
}

cJSON *rt_gpus_status(cJSON *(*held_by)(int slot, void *arg), void *arg)
{
    cJSON *j = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(j, "devices");
    for (size_t i = 0; i < gpus.n; i++) {
        const modal__gpu_device *d = &gpus.dev[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddItemToArray(list, e);
        cJSON_AddNumberToObject(e, "index", (double)i);
        cJSON_AddStringToObject(e, "type", d->type);
        cJSON_AddStringToObject(e, "name", d->name);
        cJSON_AddStringToObject(e, "uuid", d->uuid);
        cJSON_AddNumberToObject(e, "memory_mib", (double)(d->memory >> 20));
        char cc[16];
        snprintf(cc, sizeof cc, "%d.%d", d->cc_major, d->cc_minor);
        cJSON_AddStringToObject(e, "cc", cc);
        cJSON *h = gpus.slot[i] >= 0 && held_by != NULL ? held_by(gpus.slot[i], arg) : NULL;
        cJSON_AddItemToObject(e, "held_by", h != NULL ? h : cJSON_CreateNull());
    }
    if (gpus.n == 0)
        cJSON_AddStringToObject(j, "why", gpus.why);
    else
        cJSON_AddNullToObject(j, "why");
    return j;
}
