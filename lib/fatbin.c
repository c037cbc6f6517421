/*
 * fatbin.c: the architectures inside a fatbin image (see cuda.h).
 *
 * The layout, as nvcc 12 and 13 write it (little-endian):
 *
 *   header   u32 magic 0xBA55ED50, u16 version (1), u16 header size (16),
 *            u64 size of the entries that follow
 *   entry    u16 kind (1 PTX, 2 ELF/SASS), u16 version, u32 header size,
 *            u64 payload size (padded), ..., u32 architecture at offset 28
 *            (80 for sm_80 or compute_80), ...; the payload (possibly
 *            compressed) follows the entry's header
 *
 * Images arrive from clients (remote kernel launch), so every field is
 * checked against the bytes there are before it is used, and nothing is
 * allocated. Entries of other kinds are stepped over.
 */
#include "cuda.h"
#include "internal.h"

#include <stdio.h>
#include <string.h>

#define FATBIN_HEADER 16
#define ENTRY_MIN_HEADER 32 /* up to and including the architecture */
#define ENTRY_KIND_PTX 1
#define ENTRY_KIND_ELF 2
#define ARCH_MAX 9999       /* sm_9999: beyond any real architecture */

modal_status modal__fatbin_parse(const void *p, size_t len, size_t *size,
                                 modal__fatbin_arch *archs, size_t max, size_t *n,
                                 modal_error *err)
{
    if (size != NULL)
        *size = 0;
    if (n != NULL)
        *n = 0;
    if (p == NULL || len < FATBIN_HEADER)
        return modal__fail(err, MODAL_ECODEC,
                           "a fatbin starts with a %d-byte header; the image has %zu bytes",
                           FATBIN_HEADER, p == NULL ? (size_t)0 : len);
    const uint8_t *b = p;
    uint32_t magic = modal__get32(b);
    if (magic != MODAL__FATBIN_MAGIC)
        return modal__fail(err, MODAL_ECODEC,
                           "not a fatbin: the image starts with 0x%08x, not 0x%08x; build it "
                           "with nvcc -fatbin",
                           magic, MODAL__FATBIN_MAGIC);
    size_t hs = modal__get16(b + 6);
    uint64_t body = modal__get64(b + 8);
    if (hs < FATBIN_HEADER || hs > len)
        return modal__fail(err, MODAL_ECODEC,
                           "the fatbin's header size %zu is outside %d..%zu (the image's size)",
                           hs, FATBIN_HEADER, len);
    if (body > len - hs)
        return modal__fail(err, MODAL_ECODEC,
                           "the fatbin says it has %llu bytes of entries after its header, but "
                           "the image has %zu; it is truncated",
                           (unsigned long long)body, len - hs);
    size_t total = hs + (size_t)body, off = hs, count = 0;
    for (int entry = 1; off < total; entry++) {
        size_t left = total - off;
        const uint8_t *e = b + off;
        if (left < ENTRY_MIN_HEADER)
            return modal__fail(err, MODAL_ECODEC,
                               "fatbin entry %d's header runs past the image's end (%zu of "
                               "at least %d bytes)",
                               entry, left, ENTRY_MIN_HEADER);
        unsigned kind = modal__get16(e);
        uint32_t ehs = modal__get32(e + 4);
        uint64_t payload = modal__get64(e + 8);
        uint32_t arch = modal__get32(e + 28);
        if (ehs < ENTRY_MIN_HEADER || ehs > left)
            return modal__fail(err, MODAL_ECODEC,
                               "fatbin entry %d's header size %u is outside %d..%zu", entry,
                               (unsigned)ehs, ENTRY_MIN_HEADER, left);
        if (payload > left - ehs)
            return modal__fail(err, MODAL_ECODEC,
                               "fatbin entry %d runs past the image's end (%llu bytes of "
                               "code, %zu left)",
                               entry, (unsigned long long)payload, left - ehs);
        if (kind == ENTRY_KIND_PTX || kind == ENTRY_KIND_ELF) {
            if (arch == 0 || arch > ARCH_MAX)
                return modal__fail(err, MODAL_ECODEC,
                                   "fatbin entry %d names architecture %u, which does not exist",
                                   entry, (unsigned)arch);
            if (count < max && archs != NULL) {
                archs[count].sm = (int)arch;
                archs[count].ptx = kind == ENTRY_KIND_PTX;
            }
            count++;
        }
        off += ehs + (size_t)payload;
    }
    if (size != NULL)
        *size = total;
    if (n != NULL)
        *n = archs == NULL ? 0 : count < max ? count : max;
    modal__ok(err);
    return MODAL_OK;
}

void modal__fatbin_describe(const modal__fatbin_arch *archs, size_t n, char *out, size_t outsz)
{
    if (out == NULL || outsz == 0)
        return;
    out[0] = '\0';
    if (archs == NULL || n == 0) {
        snprintf(out, outsz, "no code");
        return;
    }
    size_t used = 0;
    for (size_t i = 0; i < n && used < outsz; i++) {
        const char *sep = i == 0 ? "" : i + 1 == n ? " and " : ", ";
        int w = snprintf(out + used, outsz - used, "%s%s_%d", sep,
                         archs[i].ptx ? "PTX for compute" : "sm", archs[i].sm);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}
