/*
 * fuzz_http.c: libFuzzer target for the runtime's HTTP request parser
 * (runtime/http_parse.c). Any input must parse, ask for more bytes, or be
 * refused with a 4xx/5xx status and a message; what parses must be
 * consistent (the head inside the input, Content-Length and chunked not
 * both). The bytes after a parsed head are fed to the chunked decoder
 * whole and then one byte at a time: both ways must decode the same body.
 *
 * Build: make fuzz (clang); run: make fuzz FUZZ_SECONDS=60.
 */
#include "http_parse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_http: %s\n", what);
        abort();
    }
}

/* Decode in[0, n) in pieces of at most step bytes; the body goes to out.
 * Returns the body length, or -1 for malformed chunking. */
static long decode_all(const char *in, size_t n, size_t step, char *out, int *done)
{
    rt_chunked d;
    memset(&d, 0, sizeof d);
    size_t pos = 0, olen = 0;
    char msg[256];
    while (pos < n && !d.done) {
        size_t avail = n - pos < step ? n - pos : step;
        const char *data;
        size_t dlen;
        long used = rt_chunked_decode(&d, in + pos, avail, &data, &dlen, msg, sizeof msg);
        if (used < 0) {
            check(msg[0] != '\0', "chunked error without a message");
            return -1;
        }
        check((size_t)used <= avail, "decoder used more than it was given");
        if (dlen > 0) {
            check(data >= in + pos && data + dlen == in + pos + used, "data outside the input");
            memcpy(out + olen, data, dlen);
            olen += dlen;
        }
        pos += (size_t)used;
        if (used == 0 && avail > 0 && !d.done)
            check(0, "decoder made no progress");
    }
    *done = d.done;
    return (long)olen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    rt_http_head h;
    int status = 0;
    char msg[512];
    int rc = rt_http_parse_head(buf, size, 16384, &h, &status, msg, sizeof msg);
    if (rc < 0) {
        check(status >= 400 && status < 600, "refused without an error status");
        check(msg[0] != '\0', "refused without a message");
        return 0;
    }
    if (rc == 0) {
        check(size < 16384, "asked for more beyond the head limit");
        return 0;
    }
    check(h.head_len <= size, "head longer than the input");
    check(h.mlen > 0 && h.tlen > 0 && h.target[0] == '/', "bad method or target");
    check(!(h.chunked && h.content_length >= 0), "both chunked and Content-Length");
    check(h.minor == 0 || h.minor == 1, "bad version");
    for (int i = 0; i < h.nh; i++)
        check(h.h[i].name >= buf && h.h[i].value + h.h[i].vlen <= buf + h.head_len,
              "header outside the head");
    size_t rest = size - h.head_len;
    char *a = malloc(rest + 1), *b = malloc(rest + 1);
    int da = 0, db = 0;
    long la = decode_all(buf + h.head_len, rest, rest ? rest : 1, a, &da);
    long lb = decode_all(buf + h.head_len, rest, 1, b, &db);
    check(la == lb, "whole and byte-wise decoding disagree on the length");
    check(da == db, "whole and byte-wise decoding disagree on the end");
    if (la > 0)
        check(memcmp(a, b, (size_t)la) == 0, "whole and byte-wise decoding disagree on the body");
    free(a);
    free(b);
    return 0;
}
