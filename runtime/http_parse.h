/*
 * http_parse.h: the HTTP/1.1 request parser of the runtime's server, kept
 * free of I/O and state beyond its arguments so it can be fuzzed
 * (tests/fuzz/fuzz_http.c). Strict on purpose: whatever could be read two
 * ways (two different Content-Lengths, Content-Length with chunked, folded
 * headers) is refused rather than guessed at.
 */
#ifndef RT_HTTP_PARSE_H
#define RT_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#define RT_HTTP_MAX_HEADERS 64

typedef struct rt_http_header {
    const char *name, *value; /* point into the parsed buffer; not NUL-terminated */
    size_t nlen, vlen;
} rt_http_header;

typedef struct rt_http_head {
    const char *method, *target; /* point into the parsed buffer */
    size_t mlen, tlen;
    int minor;                   /* HTTP/1.minor: 0 or 1 */
    rt_http_header h[RT_HTTP_MAX_HEADERS];
    int nh;
    long long content_length;    /* -1: no Content-Length */
    bool chunked;                /* Transfer-Encoding: chunked */
    bool keep_alive;             /* the connection may serve another request */
    bool expect_continue;        /* Expect: 100-continue */
    size_t head_len;             /* bytes of the head, blank line included */
} rt_http_head;

/*
 * Parse the request head at the start of buf[0, len). Returns 1 when a
 * whole head is there (*head filled, head->head_len says where the body
 * starts), 0 when more bytes are needed, or -1 for a request that must be
 * refused: *status is the HTTP status to answer (400, 417, 431, 501 or
 * 505) and msg says what was wrong, naming the bad value. A head longer
 * than max_head bytes is refused with 431.
 */
int rt_http_parse_head(const char *buf, size_t len, size_t max_head, rt_http_head *head,
                       int *status, char *msg, size_t msgsz);

/* The value of header name (case-insensitive), or NULL; *vlen its length. */
const char *rt_http_find_header(const rt_http_head *head, const char *name, size_t *vlen);

/* A chunked body decoder; zero it to start. */
typedef struct rt_chunked {
    int state;
    unsigned long long left;  /* bytes left in the current chunk */
    unsigned digits;          /* hex digits of the size line */
    size_t trailer;           /* bytes of trailer read */
    bool done;                /* the last chunk and trailer have been read */
} rt_chunked;

/*
 * Decode chunked bytes from in[0, n). Returns how many bytes were used
 * (>= 0) and, when some of them are body data, points *data at them with
 * *dlen their length (the data always ends the used bytes, so call again
 * with the rest); or -1 for malformed chunking, with msg saying why. Once
 * d->done, the bytes after the returned count belong to the next request.
 */
long rt_chunked_decode(rt_chunked *d, const char *in, size_t n, const char **data, size_t *dlen,
                       char *msg, size_t msgsz);

#endif
