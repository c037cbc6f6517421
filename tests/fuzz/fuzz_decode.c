/*
 * fuzz_decode.c: libFuzzer target for the wire decoder. Any input must
 * either decode or fail cleanly (the sanitizers catch crashes, leaks and
 * undefined behaviour). A value that decodes must survive a round trip:
 * re-encoding it and decoding again gives an equal value, and encoding
 * that gives the very same bytes (the encoding is canonical).
 *
 * Each input is decoded as given. An input that does not start with 'M'
 * is also read as "JSON envelope, NUL, attachments separated by 0xFF" and
 * wrapped into a well-formed frame here, because a mutation of the JSON
 * in a real frame almost always breaks its length fields first, and the
 * fuzzer would otherwise rarely get past the header checks.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined ... (see the Makefile's
 * fuzz target); run with tests/fuzz/run.sh.
 */
#include "modal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ATT 16

static void die(const char *what, const modal_error *err)
{
    fprintf(stderr, "fuzz_decode: %s: %s\n", what, err ? err->message : "");
    abort();
}

static void check(const uint8_t *data, size_t size)
{
    modal_error err;
    modal_value *v = NULL;
    modal_status st = modal_value_decode(data, size, &v, &err);
    if (st != MODAL_OK) {
        if (v != NULL || err.code != st || err.message[0] == '\0')
            die("failed decode left a value or no message", &err);
        if (st != MODAL_ECODEC && st != MODAL_ELIMIT && st != MODAL_ENOMEM)
            die("unexpected status", &err);
        return;
    }
    void *buf = NULL, *buf2 = NULL;
    size_t len = 0, len2 = 0;
    if (modal_value_encode(v, &buf, &len, &err) != MODAL_OK)
        die("a decoded value does not encode", &err);
    modal_value *w = NULL;
    if (modal_value_decode(buf, len, &w, &err) != MODAL_OK)
        die("a re-encoded value does not decode", &err);
    if (!modal_value_equal(v, w))
        die("round trip changed the value", NULL);
    if (modal_value_encode(w, &buf2, &len2, &err) != MODAL_OK)
        die("second encode failed", &err);
    if (len != len2 || memcmp(buf, buf2, len) != 0)
        die("encoding is not stable", NULL);
    free(buf);
    free(buf2);
    modal_value_free(v);
    modal_value_free(w);
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Wrap "JSON \0 att \xff att ..." into a frame laid out per internal.h. */
static void check_wrapped(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t elen = nul != NULL ? (size_t)(nul - data) : size;
    const uint8_t *att[MAX_ATT];
    size_t alen[MAX_ATT], natt = 0;
    if (nul != NULL) {
        const uint8_t *p = nul + 1, *end = data + size;
        while (natt < MAX_ATT) {
            const uint8_t *sep = memchr(p, 0xff, (size_t)(end - p));
            att[natt] = p;
            alen[natt++] = (size_t)((sep != NULL ? sep : end) - p);
            if (sep == NULL)
                break;
            p = sep + 1;
        }
    }
    size_t off = 16 + 8 * natt + elen, offs[MAX_ATT];
    for (size_t i = 0; i < natt; i++) {
        off = (off + 63) / 64 * 64;
        offs[i] = off;
        off += alen[i];
    }
    uint8_t *f = calloc(1, off);
    if (f == NULL)
        return;
    memcpy(f, "MODL", 4);
    put_le(f + 4, 1, 2);
    put_le(f + 8, elen, 4);
    put_le(f + 12, natt, 4);
    for (size_t i = 0; i < natt; i++)
        put_le(f + 16 + 8 * i, alen[i], 8);
    memcpy(f + 16 + 8 * natt, data, elen);
    for (size_t i = 0; i < natt; i++)
        memcpy(f + offs[i], att[i], alen[i]);
    check(f, off);
    free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(data, size);
    if (size > 0 && data[0] != 'M')
        check_wrapped(data, size);
    return 0;
}
