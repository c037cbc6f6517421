/*
 * fuzz_fatbin.c: libFuzzer target for the fatbin parser
 * (modal__fatbin_parse), which the runtime runs on images clients send
 * (remote kernel launch). Any bytes either parse or fail with
 * MODAL_ECODEC and a message; an image that parses has a size within the
 * bytes given, at most max entries written, each with an existing
 * architecture, and parses the same again from exactly its own size.
 * modal__fatbin_describe of the result always ends within its buffer.
 *
 * Build: see the Makefile's fuzz target; run with tests/fuzz/run.sh.
 */
#include "cuda.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX 4

static void die(const char *what)
{
    fprintf(stderr, "fuzz_fatbin: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy, so reading one byte too far is caught by ASan. */
    uint8_t *img = malloc(size ? size : 1);
    if (img == NULL)
        return 0;
    memcpy(img, data, size);

    /* One slot more than allowed, to catch a write past max. */
    modal__fatbin_arch archs[MAX + 1];
    memset(archs, 0xa5, sizeof archs);
    size_t total = 12345, n = 12345;
    modal_error err;
    memset(&err, 0, sizeof err);
    modal_status st = modal__fatbin_parse(img, size, &total, archs, MAX, &n, &err);
    const unsigned char *guard = (const unsigned char *)&archs[MAX];
    for (size_t i = 0; i < sizeof archs[0]; i++)
        if (guard[i] != 0xa5)
            die("wrote past max");

    if (st != MODAL_OK) {
        if (st != MODAL_ECODEC || err.code != st || err.message[0] == '\0')
            die("failure without ECODEC and a message");
        if (memchr(err.message, '\0', sizeof err.message) == NULL)
            die("unterminated message");
        if (total != 0 || n != 0)
            die("outputs set on failure");
    } else {
        if (total < 16 || total > size)
            die("size outside the image");
        if (n > MAX)
            die("too many entries");
        for (size_t i = 0; i < n; i++)
            if (archs[i].sm <= 0 || archs[i].sm > 9999 || (archs[i].ptx != 0 && archs[i].ptx != 1))
                die("an entry out of range");
        /* Parsing is deterministic and needs only the image's own bytes. */
        modal__fatbin_arch again[MAX];
        size_t total2 = 0, n2 = 0;
        if (modal__fatbin_parse(img, total, &total2, again, MAX, &n2, NULL) != MODAL_OK ||
            total2 != total || n2 != n || memcmp(again, archs, n * sizeof *archs) != 0)
            die("second parse differs");
        char text[64];
        memset(text, 0x5a, sizeof text);
        modal__fatbin_describe(archs, n, text, 40);
        if (memchr(text, '\0', 40) == NULL || text[40] != 0x5a)
            die("describe overran its buffer");
    }
    free(img);
    return 0;
}
