/*
 * fuzz_bundle.c: libFuzzer target for bundles of frames (the bodies of map
 * inputs and results, lib/ipc.c) and the frames inside them. The input is
 * parsed as a bundle; a bundle that parses must describe frames that lie
 * inside it, in order, each starting at a multiple of 64. Each frame is
 * then opened as a message and its "args" and "result" values decoded,
 * alternately copying and borrowing; a value that decodes must survive a
 * round trip through modal_value_encode/modal_value_decode.
 *
 * Each frame is copied into a buffer of its exact size first, so that a
 * read past a frame's end is caught by AddressSanitizer even where the
 * bundle has bytes after it.
 *
 * Build: see the Makefile's fuzz target; run with tests/fuzz/run.sh.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, const modal_error *err)
{
    fprintf(stderr, "fuzz_bundle: %s: %s\n", what, err != NULL ? err->message : "");
    abort();
}

static void check_failure(const char *what, modal_status st, const modal_error *err)
{
    if (err->code != st || err->message[0] == '\0')
        die(what, err);
    if (st != MODAL_ECODEC && st != MODAL_ELIMIT && st != MODAL_ENOMEM)
        die(what, err);
}

static void round_trip(const modal_value *v)
{
    void *buf = NULL;
    size_t len = 0;
    modal_error err;
    if (modal_value_encode(v, &buf, &len, &err) != MODAL_OK)
        die("a decoded value does not encode", &err);
    modal_value *w = NULL;
    if (modal_value_decode(buf, len, &w, &err) != MODAL_OK)
        die("a re-encoded value does not decode", &err);
    if (!modal_value_equal(v, w))
        die("round trip changed the value", NULL);
    modal_value_free(w);
    free(buf);
}

static void check_frame(const void *p, size_t len, int borrow)
{
    modal__buf *fb = modal__buf_new(len);
    if (fb == NULL)
        return;
    if (len > 0)
        memcpy(fb->base, p, len);
    modal__dec dec;
    modal_error err;
    modal_status st = modal__dec_open(fb, borrow, &dec, &err);
    modal__buf_unref(fb); /* the decoder and borrowing values hold it */
    if (st != MODAL_OK) {
        check_failure("dec_open", st, &err);
        return;
    }
    static const char *const keys[] = {"args", "result"};
    modal_value *vals[2] = {NULL, NULL};
    for (size_t k = 0; k < 2; k++) {
        st = modal__msg_value(&dec, keys[k], &vals[k], &err);
        if (st != MODAL_OK) {
            check_failure("msg_value", st, &err);
            if (vals[k] != NULL)
                die("failed decode left a value", &err);
        }
    }
    modal__dec_close(&dec);
    /* Borrowed values outlive the decoder: use them only now. */
    for (size_t k = 0; k < 2; k++) {
        if (vals[k] != NULL) {
            round_trip(vals[k]);
            modal_value_free(vals[k]);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    modal__buf *b = modal__buf_new(size);
    if (b == NULL)
        return 0;
    if (size > 0)
        memcpy(b->base, data, size);
    modal__bundle_part *parts = NULL;
    size_t n = 0;
    modal_error err;
    modal_status st = modal__bundle_parse(b, &parts, &n, &err);
    if (st != MODAL_OK) {
        if (parts != NULL || n != 0)
            die("failed parse left parts", &err);
        check_failure("bundle_parse", st, &err);
        modal__buf_unref(b);
        return 0;
    }
    const uint8_t *prev_end = b->base;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = parts[i].p;
        size_t off = (size_t)(p - b->base);
        if (p < prev_end || off > b->len || parts[i].len > b->len - off)
            die("a frame lies outside the bundle or out of order", NULL);
        if (off % MODAL__FRAME_ALIGN != 0)
            die("a frame is not 64-aligned", NULL);
        prev_end = p + parts[i].len;
    }
    /* Decoding is costly; a bundle of many frames gets its first few. */
    for (size_t i = 0; i < n && i < 8; i++)
        check_frame(parts[i].p, parts[i].len, (int)(i & 1));
    free(parts);
    modal__buf_unref(b);
    return 0;
}
