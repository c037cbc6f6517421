/*
 * fuzz_gpu_spec.c: libFuzzer target for the GPU request parser
 * (modal__gpu_spec_parse), which the runtime runs on untrusted requests.
 * Any string either parses or fails with MODAL_EOPTION and a message; a
 * spec that parses must give 0..MODAL__GPU_MAX_CHOICES choices, each with
 * a name from the known table, a count of 1..8, and no "any!".
 *
 * Build: see the Makefile's fuzz target; run with tests/fuzz/run.sh.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const known[] = {
    "T4",        "L4",        "A10G", "A10",  "L40S", "A100",
    "A100-40GB", "A100-80GB", "H100", "H200", "B200", "any",
};

static void die(const char *spec, const char *what)
{
    fprintf(stderr, "fuzz_gpu_spec: \"%s\": %s\n", spec, what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *spec = malloc(size + 1);
    if (spec == NULL)
        return 0;
    memcpy(spec, data, size);
    spec[size] = '\0'; /* an embedded NUL ends the string early: fine */

    /* One slot more than allowed, to catch a write past the limit. */
    modal__gpu_choice out[MODAL__GPU_MAX_CHOICES + 1];
    memset(out, 0xa5, sizeof out);
    size_t n = 12345;
    modal_error err;
    memset(&err, 0, sizeof err);
    modal_status st = modal__gpu_spec_parse(spec, out, &n, &err);
    const unsigned char *guard = (const unsigned char *)&out[MODAL__GPU_MAX_CHOICES];
    for (size_t i = 0; i < sizeof out[0]; i++)
        if (guard[i] != 0xa5)
            die(spec, "wrote past MODAL__GPU_MAX_CHOICES");

    if (st != MODAL_OK) {
        if (st != MODAL_EOPTION || err.code != st || err.message[0] == '\0')
            die(spec, "failure without EOPTION and a message");
        if (memchr(err.message, '\0', sizeof err.message) == NULL)
            die(spec, "unterminated message");
    } else {
        if (n > MODAL__GPU_MAX_CHOICES)
            die(spec, "too many choices");
        for (size_t i = 0; i < n; i++) {
            const modal__gpu_choice *c = &out[i];
            if (memchr(c->name, '\0', sizeof c->name) == NULL)
                die(spec, "unterminated name");
            size_t k = 0;
            while (k < sizeof known / sizeof *known && strcmp(known[k], c->name) != 0)
                k++;
            if (k == sizeof known / sizeof *known)
                die(spec, "name outside the known table");
            if (c->count < 1 || c->count > 8)
                die(spec, "count out of 1..8");
            if (c->exact && strcmp(c->name, "any") == 0)
                die(spec, "\"any!\" accepted");
        }
        /* Parsing is deterministic, and needs no error record. */
        modal__gpu_choice again[MODAL__GPU_MAX_CHOICES];
        size_t n2;
        if (modal__gpu_spec_parse(spec, again, &n2, NULL) != MODAL_OK || n2 != n)
            die(spec, "second parse differs");
        for (size_t i = 0; i < n; i++)
            if (strcmp(again[i].name, out[i].name) != 0 ||
                again[i].count != out[i].count || again[i].exact != out[i].exact)
                die(spec, "second parse differs");
    }
    free(spec);
    return 0;
}
