/*
 * gpu_inventory.c: the devices this process sees, as the driver reports
 * them, and Modal's name for each (see cuda.h).
 */
#include "cuda.h"
#include "internal.h"

#include <stdio.h>
#include <string.h>

/*
 * Driver names → Modal's names. A row matches a name that starts with
 * prefix followed by the end, a space or a '-', so "NVIDIA H100 PCIe"
 * is an H100 while "NVIDIA H20" and "NVIDIA A10G" match no longer row
 * than their own. The A100 comes in two memory sizes under one family of
 * names ("NVIDIA A100-SXM4-40GB", "NVIDIA A100 80GB PCIe"): memory tells
 * them apart.
 */
static const struct {
    const char *prefix;
    const char *type;
} gpu_types[] = {
    {"Tesla T4", "T4"},
    {"NVIDIA T4", "T4"},
    {"NVIDIA L4", "L4"},
    {"NVIDIA A10G", "A10G"},
    {"NVIDIA A10", "A10"},
    {"NVIDIA L40S", "L40S"},
    {"NVIDIA A100", NULL}, /* A100-40GB or A100-80GB, by memory */
    {"NVIDIA H100", "H100"},
    {"NVIDIA H200", "H200"},
    {"NVIDIA B200", "B200"},
};

/* Above this an A100 is the 80 GB model (the 40 GB one reports ~40 GiB). */
#define A100_80GB_ABOVE (60ull << 30)

void modal__gpu_type_of(const char *driver_name, unsigned long long memory, char *out,
                        size_t outsz)
{
    if (out == NULL || outsz == 0)
        return;
    if (driver_name == NULL)
        driver_name = "";
    for (size_t i = 0; i < sizeof gpu_types / sizeof *gpu_types; i++) {
        size_t k = strlen(gpu_types[i].prefix);
        if (strncmp(driver_name, gpu_types[i].prefix, k) != 0)
            continue;
        char next = driver_name[k];
        if (next != '\0' && next != ' ' && next != '-')
            continue;
        const char *type = gpu_types[i].type;
        if (type == NULL)
            type = memory > A100_80GB_ABOVE ? "A100-80GB" : "A100-40GB";
        snprintf(out, outsz, "%s", type);
        return;
    }
    static const char vendor[] = "NVIDIA ";
    if (strncmp(driver_name, vendor, sizeof vendor - 1) == 0)
        driver_name += sizeof vendor - 1;
    snprintf(out, outsz, "%s", driver_name);
}

static void uuid_text(const CUuuid *u, char *out, size_t outsz)
{
    const unsigned char *b = u->bytes;
    snprintf(out, outsz,
             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* One device's facts into d; MODAL_OK or the failing call's error. */
static modal_status describe(const modal__cuda *cu, int ordinal, modal__gpu_device *d,
                             modal_error *err)
{
    char what[96];
    CUdevice dev;
    CUresult r;
    memset(d, 0, sizeof *d);
    d->ordinal = ordinal;
#define TRY(call, fmt)                                                     \
    if ((r = (call)) != MODAL__CUDA_SUCCESS) {                             \
        snprintf(what, sizeof what, fmt " of CUDA device %d", ordinal);    \
        return modal__cuda_fail(err, r, what);                             \
    }
    TRY(cu->cuDeviceGet(&dev, ordinal), "cuDeviceGet");
    TRY(cu->cuDeviceGetName(d->name, (int)sizeof d->name, dev), "cuDeviceGetName");
    d->name[sizeof d->name - 1] = '\0';
    size_t bytes = 0;
    TRY(cu->cuDeviceTotalMem(&bytes, dev), "cuDeviceTotalMem");
    d->memory = bytes;
    TRY(cu->cuDeviceGetAttribute(&d->cc_major, MODAL__CU_ATTR_COMPUTE_CAPABILITY_MAJOR, dev),
        "cuDeviceGetAttribute(compute capability major)");
    TRY(cu->cuDeviceGetAttribute(&d->cc_minor, MODAL__CU_ATTR_COMPUTE_CAPABILITY_MINOR, dev),
        "cuDeviceGetAttribute(compute capability minor)");
    CUuuid u;
    TRY(cu->cuDeviceGetUuid(&u, dev), "cuDeviceGetUuid");
#undef TRY
    uuid_text(&u, d->uuid, sizeof d->uuid);
    /* The bus id is optional: a driver without it, or failing it, leaves "". */
    if (cu->cuDeviceGetPCIBusId == NULL ||
        cu->cuDeviceGetPCIBusId(d->pci, (int)sizeof d->pci, dev) != MODAL__CUDA_SUCCESS)
        d->pci[0] = '\0';
    d->pci[sizeof d->pci - 1] = '\0';
    modal__gpu_type_of(d->name, d->memory, d->type, sizeof d->type);
    return MODAL_OK;
}

modal_status modal__gpu_inventory(modal__gpu_device *out, size_t max, size_t *n, char *why,
                                  size_t whysz, modal_error *err)
{
    if (why != NULL && whysz > 0)
        why[0] = '\0';
    if (n == NULL || (out == NULL && max > 0))
        return modal__fail(err, MODAL_EINVAL,
                           "modal__gpu_inventory: %s is NULL; pass where to write the devices",
                           n == NULL ? "n" : "out");
    *n = 0;
    modal_error load;
    memset(&load, 0, sizeof load);
    const modal__cuda *cu = modal__cuda_get(&load);
    if (cu == NULL) {
        if (why != NULL && whysz > 0)
            snprintf(why, whysz, "%s", load.message);
        modal__ok(err);
        return MODAL_OK;
    }
    int count = 0;
    CUresult r = cu->cuDeviceGetCount(&count);
    if (r != MODAL__CUDA_SUCCESS)
        return modal__cuda_fail(err, r, "cuDeviceGetCount");
    if (count <= 0) {
        if (why != NULL && whysz > 0)
            snprintf(why, whysz, "the CUDA driver at %s reports no device", cu->path);
        modal__ok(err);
        return MODAL_OK;
    }
    for (int i = 0; i < count && (size_t)i < max; i++) {
        modal_status st = describe(cu, i, &out[i], err);
        if (st != MODAL_OK) {
            *n = 0;
            return st;
        }
        *n = (size_t)i + 1;
    }
    modal__ok(err);
    return MODAL_OK;
}
