/*
 * test_ipc.c: lib/ipc.c: worker messages over a SOCK_SEQPACKET socketpair
 * (inline payloads, payloads moved through a memfd, explicit fds, the
 * metadata JSON), hand-made malformed messages, bundles of frames, and the
 * reference counting of buffer views.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct pair {
    int a, b;
} pair;

static int setup_pair(void **state)
{
    pair *p = malloc(sizeof *p);
    int sv[2];
    if (p == NULL || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        free(p);
        return -1;
    }
    /* Room for the largest inline message in both directions. */
    int sz = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    p->a = sv[0];
    p->b = sv[1];
    *state = p;
    return 0;
}

static int teardown_pair(void **state)
{
    pair *p = *state;
    if (p->a >= 0)
        close(p->a);
    if (p->b >= 0)
        close(p->b);
    free(p);
    return 0;
}

static void le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* A message header as modal__ipc_send lays it out. */
static void head(uint8_t *h, uint32_t type, uint32_t flags, uint32_t mlen,
                 uint64_t plen)
{
    le32(h, type);
    le32(h + 4, flags);
    le32(h + 8, mlen);
    le32(h + 12, 0);
    le64(h + 16, plen);
}

/* Send raw bytes as one packet, with fd attached when fd >= 0. */
static void send_raw(int sock, const void *p, size_t len, int fd)
{
    struct iovec iov = {(void *)p, len};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&ctl, 0, sizeof ctl);
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof ctl.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    assert_int_equal(sendmsg(sock, &mh, 0), (ssize_t)len);
}

/* Receive expecting failure want with needle in the message. */
static void recv_bad(int sock, modal_status want, const char *needle)
{
    uint32_t type = 0;
    cJSON *meta = (cJSON *)&type;
    modal__buf *payload = (modal__buf *)&type;
    int fd = 12345;
    modal_error err;
    memset(&err, 0, sizeof err);
    modal_status st = modal__ipc_recv(sock, &type, &meta, &payload, &fd, &err);
    if (st != want)
        print_error("got %s (%s), want %s\n", modal_status_name(st), err.message,
                    modal_status_name(want));
    assert_int_equal(st, want);
    assert_int_equal(err.code, want);
    assert_null(meta);
    assert_null(payload);
    assert_int_equal(fd, -1);
    assert_message_contains(err, needle);
}

/* A memfd holding len bytes of pattern. */
static int memfd_unsealed(size_t len, uint8_t seed)
{
    int fd = modal__memfd_new("test-ipc", 0);
    assert_true(fd >= 0);
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(seed + i * 7);
    assert_int_equal(write(fd, p, len), (ssize_t)len);
    free(p);
    return fd;
}

/* A sealed memfd holding len bytes of pattern, as senders make them. */
static int memfd_with(size_t len, uint8_t seed)
{
    int fd = memfd_unsealed(len, seed);
    assert_int_equal(modal__memfd_seal(fd), 0);
    return fd;
}

static void check_pattern(const uint8_t *p, size_t len, uint8_t seed)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != (uint8_t)(seed + i * 7)) {
            print_error("byte %zu is %u, want %u\n", i, p[i],
                        (uint8_t)(seed + i * 7));
            fail();
        }
}

/* ---- messages --------------------------------------------------------- */

static void test_inline_payload(void **state)
{
    pair *p = *state;
    modal_error err;
    assert_int_equal(modal__ipc_send(p->a, MODAL__MSG_CALL,
                                     "{\"call_id\":\"fc-1\",\"attempt\":2}",
                                     "hello", 5, -1, &err),
                     MODAL_OK);
    uint32_t type = 0;
    cJSON *meta = NULL;
    modal__buf *payload = NULL;
    int fd = 99;
    assert_int_equal(modal__ipc_recv(p->b, &type, &meta, &payload, &fd, &err), MODAL_OK);
    assert_int_equal(type, MODAL__MSG_CALL);
    assert_int_equal(fd, -1);
    assert_non_null(meta);
    assert_string_equal(cJSON_GetObjectItem(meta, "call_id")->valuestring, "fc-1");
    assert_int_equal(cJSON_GetObjectItem(meta, "attempt")->valueint, 2);
    assert_non_null(payload);
    assert_int_equal(payload->len, 5);
    assert_int_equal(payload->kind, MODAL__BUF_HEAP);
    assert_memory_equal(payload->base, "hello", 5);
    cJSON_Delete(meta);
    modal__buf_unref(payload);
}

static void test_empty_payload_no_meta(void **state)
{
    pair *p = *state;
    modal_error err;
    assert_int_equal(modal__ipc_send(p->a, MODAL__MSG_EXIT, NULL, NULL, 0, -1, &err),
                     MODAL_OK);
    uint32_t type = 0;
    cJSON *meta = (cJSON *)&type;
    modal__buf *payload = (modal__buf *)&type;
    assert_int_equal(modal__ipc_recv(p->b, &type, &meta, &payload, NULL, &err), MODAL_OK);
    assert_int_equal(type, MODAL__MSG_EXIT);
    assert_null(meta);
    assert_null(payload);

    /* Empty metadata string and an empty payload pointer. */
    assert_int_equal(modal__ipc_send(p->a, MODAL__MSG_HELLO, "", "x", 0, -1, &err),
                     MODAL_OK);
    assert_int_equal(modal__ipc_recv(p->b, &type, &meta, &payload, NULL, &err), MODAL_OK);
    assert_int_equal(type, MODAL__MSG_HELLO);
    assert_null(meta);
    assert_null(payload);
}

static void test_largest_inline_payload(void **state)
{
    pair *p = *state;
    size_t len = MODAL__IPC_INLINE_MAX;
    uint8_t *data = malloc(len);
    assert_non_null(data);
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)(3 + i * 7);
    char meta_text[MODAL__IPC_META_MAX + 1];
    /* The largest metadata: a JSON string filling the limit. */
    memset(meta_text, 'm', MODAL__IPC_META_MAX);
    meta_text[0] = '"';
    meta_text[MODAL__IPC_META_MAX - 1] = '"';
    meta_text[MODAL__IPC_META_MAX] = '\0';
    modal_error err;
    assert_int_equal(modal__ipc_send(p->a, MODAL__MSG_RESULT, meta_text, data, len, -1, &err),
                     MODAL_OK);
    uint32_t type;
    cJSON *meta = NULL;
    modal__buf *payload = NULL;
    modal_status st = modal__ipc_recv(p->b, &type, &meta, &payload, NULL, &err);
    if (st != MODAL_OK)
        print_error("%s\n", err.message);
    assert_int_equal(st, MODAL_OK);
    assert_true(cJSON_IsString(meta));
    assert_int_equal(strlen(meta->valuestring), MODAL__IPC_META_MAX - 2);
    assert_int_equal(payload->kind, MODAL__BUF_HEAP);
    assert_int_equal(payload->len, len);
    check_pattern(payload->base, len, 3);
    cJSON_Delete(meta);
    modal__buf_unref(payload);
    free(data);

    /* Metadata over the limit is refused before sending. */
    char *big = malloc(MODAL__IPC_META_MAX + 2);
    assert_non_null(big);
    memset(big, ' ', MODAL__IPC_META_MAX + 1);
    big[MODAL__IPC_META_MAX + 1] = '\0';
    assert_int_equal(modal__ipc_send(p->a, 1, big, NULL, 0, -1, &err), MODAL_ELIMIT);
    assert_message_contains(err, "metadata");
    free(big);
}

static void test_memfd_payload(void **state)
{
    pair *p = *state;
    size_t len = MODAL__IPC_INLINE_MAX + 1;
    uint8_t *data = malloc(len);
    assert_non_null(data);
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)(9 + i * 7);
    int fds_before = open_fds();
    modal_error err;

    /* Received without fd_out: a prefaulted read-only mapping. */
    assert_int_equal(modal__ipc_send(p->a, MODAL__MSG_RESULT, "{}", data, len, -1, &err),
                     MODAL_OK);
    uint32_t type;
    cJSON *meta = NULL;
    modal__buf *payload = NULL;
    assert_int_equal(modal__ipc_recv(p->b, &type, &meta, &payload, NULL, &err), MODAL_OK);
    assert_true(cJSON_IsObject(meta));
    assert_non_null(payload);
    assert_int_equal(payload->kind, MODAL__BUF_MMAP);
    assert_int_equal(payload->len, len);
    check_pattern(payload->base, len, 9);
    cJSON_Delete(meta);
    modal__buf_unref(payload);
    assert_int_equal(open_fds(), fds_before);

    /* With fd_out: the memfd is handed over as well. */
    assert_int_equal(modal__ipc_send(p->a, MODAL__MSG_RESULT, NULL, data, len, -1, &err),
                     MODAL_OK);
    int fd = -1;
    assert_int_equal(modal__ipc_recv(p->b, &type, &meta, &payload, &fd, &err), MODAL_OK);
    assert_null(meta);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    assert_true((size_t)sb.st_size >= len);
    check_pattern(payload->base, len, 9);
    modal__buf_unref(payload);
    close(fd);
    assert_int_equal(open_fds(), fds_before);
    free(data);
}

static void test_explicit_fd_payload(void **state)
{
    pair *p = *state;
    int fds_before = open_fds();
    modal_error err;
    /* A file longer than the payload: only the first len bytes count. */
    int mfd = memfd_with(1000, 5);
    assert_int_equal(modal__ipc_send(p->a, MODAL__MSG_CALL, "{\"index\":3}", NULL, 700, mfd, &err),
                     MODAL_OK);
    close(mfd);
    uint32_t type;
    cJSON *meta = NULL;
    modal__buf *payload = NULL;
    assert_int_equal(modal__ipc_recv(p->b, &type, &meta, &payload, NULL, &err), MODAL_OK);
    assert_int_equal(type, MODAL__MSG_CALL);
    assert_int_equal(cJSON_GetObjectItem(meta, "index")->valueint, 3);
    assert_int_equal(payload->len, 700);
    check_pattern(payload->base, 700, 5);
    cJSON_Delete(meta);
    modal__buf_unref(payload);

    /* An fd with an empty payload: no buffer, and the fd is closed. */
    mfd = memfd_with(10, 1);
    assert_int_equal(modal__ipc_send(p->a, MODAL__MSG_CALL, NULL, NULL, 0, mfd, &err), MODAL_OK);
    close(mfd);
    int fd = 77;
    assert_int_equal(modal__ipc_recv(p->b, &type, &meta, &payload, &fd, &err), MODAL_OK);
    assert_null(payload);
    assert_int_equal(fd, -1);
    assert_int_equal(open_fds(), fds_before);

    /* A stray fd on an inline message is closed, not leaked. */
    uint8_t msg[MODAL__IPC_HEADER + 3];
    head(msg, MODAL__MSG_RESULT, 0, 0, 3);
    memcpy(msg + MODAL__IPC_HEADER, "abc", 3);
    mfd = memfd_with(10, 1);
    send_raw(p->a, msg, sizeof msg, mfd);
    close(mfd);
    assert_int_equal(modal__ipc_recv(p->b, &type, &meta, &payload, &fd, &err), MODAL_OK);
    assert_int_equal(fd, -1);
    assert_int_equal(payload->len, 3);
    modal__buf_unref(payload);
    assert_int_equal(open_fds(), fds_before);
}

static void test_meta_round_trip(void **state)
{
    pair *p = *state;
    cJSON *m = cJSON_CreateObject();
    cJSON_AddNumberToObject(m, "pid", 4242);
    cJSON_AddStringToObject(m, "version", modal_version());
    cJSON *fns = cJSON_AddArrayToObject(m, "functions");
    cJSON_AddItemToArray(fns, cJSON_CreateString("square"));
    cJSON_AddItemToArray(fns, cJSON_CreateString("h\xc3\xa9 \"q\""));
    cJSON_AddNullToObject(m, "error");
    char *text = cJSON_PrintUnformatted(m);
    assert_non_null(text);
    modal_error err;
    assert_int_equal(modal__ipc_send(p->a, MODAL__MSG_HELLO, text, NULL, 0, -1, &err), MODAL_OK);
    uint32_t type;
    cJSON *meta = NULL;
    modal__buf *payload = NULL;
    assert_int_equal(modal__ipc_recv(p->b, &type, &meta, &payload, NULL, &err), MODAL_OK);
    assert_int_equal(type, MODAL__MSG_HELLO);
    assert_true(cJSON_Compare(m, meta, 1));
    cJSON_Delete(meta);
    cJSON_Delete(m);
    cJSON_free(text);
}

static void test_closed_peer(void **state)
{
    pair *p = *state;
    close(p->a);
    p->a = -1;
    recv_bad(p->b, MODAL_EIO, "closed");
    /* Sending to a closed peer fails too (and raises no SIGPIPE). */
    modal_error err;
    assert_int_equal(modal__ipc_send(p->b, 1, NULL, "x", 1, -1, &err), MODAL_EIO);
    assert_message_contains(err, "sending");
}

static void test_malformed_messages(void **state)
{
    pair *p = *state;
    uint8_t msg[256];
    int fds_before = open_fds();

    /* Shorter than the header. */
    memset(msg, 0, sizeof msg);
    send_raw(p->a, msg, 10, -1);
    recv_bad(p->b, MODAL_ECODEC, "truncated or malformed");

    /* Metadata length past the end of the message. */
    head(msg, MODAL__MSG_CALL, 0, 100, 0);
    memcpy(msg + MODAL__IPC_HEADER, "{}", 2);
    send_raw(p->a, msg, MODAL__IPC_HEADER + 2, -1);
    recv_bad(p->b, MODAL_ECODEC, "metadata length 100");

    /* Metadata length over the limit. */
    head(msg, MODAL__MSG_CALL, 0, MODAL__IPC_META_MAX + 1, 0);
    send_raw(p->a, msg, MODAL__IPC_HEADER, -1);
    recv_bad(p->b, MODAL_ECODEC, "metadata length");
    head(msg, MODAL__MSG_CALL, 0, UINT32_MAX, 0);
    send_raw(p->a, msg, MODAL__IPC_HEADER, -1);
    recv_bad(p->b, MODAL_ECODEC, "metadata length");

    /* Metadata that is not JSON. */
    head(msg, MODAL__MSG_CALL, 0, 3, 0);
    memcpy(msg + MODAL__IPC_HEADER, "{x}", 3);
    send_raw(p->a, msg, MODAL__IPC_HEADER + 3, -1);
    recv_bad(p->b, MODAL_ECODEC, "not valid JSON");

    /* Payload length that disagrees with the bytes sent (both ways). */
    head(msg, MODAL__MSG_CALL, 0, 2, 10);
    memcpy(msg + MODAL__IPC_HEADER, "{}abcde", 7);
    send_raw(p->a, msg, MODAL__IPC_HEADER + 7, -1);
    recv_bad(p->b, MODAL_ECODEC, "payload is 5 bytes, header says 10");
    head(msg, MODAL__MSG_CALL, 0, 0, 1);
    send_raw(p->a, msg, MODAL__IPC_HEADER + 7, -1);
    recv_bad(p->b, MODAL_ECODEC, "header says 1");
    head(msg, MODAL__MSG_CALL, 0, 0, UINT64_MAX);
    send_raw(p->a, msg, MODAL__IPC_HEADER, -1);
    recv_bad(p->b, MODAL_ECODEC, "header says");

    /* FD flag without an fd. */
    head(msg, MODAL__MSG_CALL, MODAL__IPC_FLAG_FD, 0, 100);
    send_raw(p->a, msg, MODAL__IPC_HEADER, -1);
    recv_bad(p->b, MODAL_ECODEC, "memfd but carries none");

    /* FD flag with an fd, but inline bytes as well: the fd is closed. */
    int mfd = memfd_with(100, 0);
    head(msg, MODAL__MSG_CALL, MODAL__IPC_FLAG_FD, 0, 100);
    send_raw(p->a, msg, MODAL__IPC_HEADER + 4, mfd);
    recv_bad(p->b, MODAL_ECODEC, "memfd but carries none");

    /* An unsealed memfd could be shrunk under the receiver's mapping. */
    int open_mfd = memfd_unsealed(100, 0);
    head(msg, MODAL__MSG_CALL, MODAL__IPC_FLAG_FD, 0, 100);
    send_raw(p->a, msg, MODAL__IPC_HEADER, open_mfd);
    close(open_mfd);
    recv_bad(p->b, MODAL_ECODEC, "not sealed");

    /* FD flag with a memfd smaller than announced. */
    head(msg, MODAL__MSG_CALL, MODAL__IPC_FLAG_FD, 0, 101);
    send_raw(p->a, msg, MODAL__IPC_HEADER, mfd);
    recv_bad(p->b, MODAL_ECODEC, "fewer than the 101 bytes");
    head(msg, MODAL__MSG_CALL, MODAL__IPC_FLAG_FD, 0, UINT64_MAX);
    send_raw(p->a, msg, MODAL__IPC_HEADER, mfd);
    recv_bad(p->b, MODAL_ECODEC, "fewer than");
    close(mfd);

    /* A message bigger than the receive buffer is truncated. */
    size_t big = MODAL__IPC_HEADER + MODAL__IPC_META_MAX + MODAL__IPC_INLINE_MAX + 1;
    uint8_t *b = calloc(1, big);
    assert_non_null(b);
    head(b, MODAL__MSG_CALL, 0, 0, big - MODAL__IPC_HEADER);
    send_raw(p->a, b, big, -1);
    free(b);
    recv_bad(p->b, MODAL_ECODEC, "truncated");

    /* Every received fd was closed. */
    assert_int_equal(open_fds(), fds_before);

    /* The socket still works after all that. */
    modal_error err;
    assert_int_equal(modal__ipc_send(p->a, 7, "[1]", "ok", 2, -1, &err), MODAL_OK);
    uint32_t type;
    cJSON *meta;
    modal__buf *payload;
    assert_int_equal(modal__ipc_recv(p->b, &type, &meta, &payload, NULL, &err), MODAL_OK);
    assert_int_equal(type, 7);
    cJSON_Delete(meta);
    modal__buf_unref(payload);
}

/* ---- bundles ------------------------------------------------------------ */

static void check_bundle(const modal__bundle_part *in, size_t n)
{
    modal__buf *b = NULL;
    modal_error err;
    assert_int_equal(modal__bundle_build(in, n, &b, &err), MODAL_OK);
    assert_non_null(b);
    assert_memory_equal(b->base, "MODB", 4);
    modal__bundle_part *out = NULL;
    size_t got = 99;
    assert_int_equal(modal__bundle_parse(b, &out, &got, &err), MODAL_OK);
    assert_int_equal(got, n);
    assert_non_null(out);
    const uint8_t *prev_end = b->base + ((8 + 8 * n + 63) / 64) * 64;
    for (size_t i = 0; i < n; i++) {
        size_t off = (size_t)((const uint8_t *)out[i].p - b->base);
        assert_int_equal(off % 64, 0);
        assert_true((const uint8_t *)out[i].p >= prev_end);
        assert_true((const uint8_t *)out[i].p - prev_end < 64);
        assert_int_equal(out[i].len, in[i].len);
        if (in[i].len > 0)
            assert_memory_equal(out[i].p, in[i].p, in[i].len);
        prev_end = (const uint8_t *)out[i].p + out[i].len;
    }
    assert_int_equal((size_t)(prev_end - b->base), b->len);
    free(out);
    modal__buf_unref(b);
}

static void test_bundle_round_trip(void **state)
{
    check_bundle(NULL, 0);

    const modal__bundle_part one = {"frame", 5};
    check_bundle(&one, 1);

    static uint8_t data[300];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)i;
    const modal__bundle_part many[] = {
        {data, 1},  {data, 0},   {NULL, 0},     {data + 1, 63}, {data, 64},
        {data, 65}, {data, 300}, {data + 7, 2}, {data, 128},
    };
    check_bundle(many, sizeof many / sizeof *many);

    /* Real frames survive: encode, bundle, split, decode. */
    void *f1, *f2;
    size_t l1, l2;
    modal_value *v1 = modal_args(modal_int(1), modal_string("two"));
    const double d[4] = {1, 2, 3, 4};
    modal_value *v2 = modal_array(MODAL_F64, d, 4);
    assert_int_equal(modal_value_encode(v1, &f1, &l1, NULL), MODAL_OK);
    assert_int_equal(modal_value_encode(v2, &f2, &l2, NULL), MODAL_OK);
    const modal__bundle_part frames[] = {{f1, l1}, {f2, l2}};
    modal__buf *b;
    assert_int_equal(modal__bundle_build(frames, 2, &b, NULL), MODAL_OK);
    modal__bundle_part *parts;
    size_t n;
    assert_int_equal(modal__bundle_parse(b, &parts, &n, NULL), MODAL_OK);
    assert_int_equal(n, 2);
    modal_value *w1, *w2;
    assert_int_equal(modal_value_decode(parts[0].p, parts[0].len, &w1, NULL), MODAL_OK);
    assert_int_equal(modal_value_decode(parts[1].p, parts[1].len, &w2, NULL), MODAL_OK);
    assert_true(modal_value_equal(v1, w1));
    assert_true(modal_value_equal(v2, w2));
    modal_value_free(v1);
    modal_value_free(v2);
    modal_value_free(w1);
    modal_value_free(w2);
    free(f1);
    free(f2);
    free(parts);
    modal__buf_unref(b);
}

/* Parse the len bytes at p as a bundle, expecting ECODEC with needle. */
static void bundle_bad(const void *p, size_t len, const char *needle)
{
    modal__buf *b = modal__buf_new(len);
    assert_non_null(b);
    if (len > 0)
        memcpy(b->base, p, len);
    modal__bundle_part *parts = (modal__bundle_part *)&b;
    size_t n = 99;
    modal_error err;
    memset(&err, 0, sizeof err);
    modal_status st = modal__bundle_parse(b, &parts, &n, &err);
    if (st != MODAL_ECODEC)
        print_error("got %s (%s)\n", modal_status_name(st), err.message);
    assert_int_equal(st, MODAL_ECODEC);
    assert_null(parts);
    assert_int_equal(n, 0);
    assert_message_contains(err, needle);
    modal__buf_unref(b);
}

static void test_bundle_malformed(void **state)
{
    uint8_t m[256];
    memset(m, 0, sizeof m);

    bundle_bad("", 0, "MODB");
    bundle_bad("MODB", 4, "MODB");
    bundle_bad("MODB\0\0\0", 7, "MODB");
    memcpy(m, "MODL", 4);
    bundle_bad(m, 64, "MODB");

    /* Count larger than the lengths that fit. */
    memcpy(m, "MODB", 4);
    le32(m + 4, 1);
    bundle_bad(m, 8, "announces 1 frames");
    le32(m + 4, UINT32_MAX);
    bundle_bad(m, sizeof m, "announces 4294967295 frames");
    le32(m + 4, 32);
    bundle_bad(m, sizeof m, "announces 32 frames");

    /* The table fits but the first frame's start does not. */
    le32(m + 4, 1);
    le64(m + 8, 0);
    bundle_bad(m, 16, "frame 0");

    /* A frame running past the end, and one with a huge length. */
    le32(m + 4, 2);
    le64(m + 8, 10);
    le64(m + 16, 200);
    bundle_bad(m, 200, "frame 1");
    le64(m + 8, UINT64_MAX);
    bundle_bad(m, sizeof m, "frame 0");
    le64(m + 8, UINT64_MAX - 63);
    bundle_bad(m, sizeof m, "frame 0");

    /* NULL buffer. */
    modal__bundle_part *parts;
    size_t n;
    assert_int_equal(modal__bundle_parse(NULL, &parts, &n, NULL), MODAL_ECODEC);

    /* Exactly enough bytes parses. */
    le32(m + 4, 2);
    le64(m + 8, 10);
    le64(m + 16, 20);
    modal__buf *b = modal__buf_new(64 + 64 + 20);
    memcpy(b->base, m, 24);
    assert_int_equal(modal__bundle_parse(b, &parts, &n, NULL), MODAL_OK);
    assert_int_equal(n, 2);
    assert_ptr_equal(parts[1].p, b->base + 128);
    free(parts);
    b->len--;
    assert_int_equal(modal__bundle_parse(b, &parts, &n, NULL), MODAL_ECODEC);
    b->len++;
    modal__buf_unref(b);
}

/* ---- buffers ----------------------------------------------------------- */

static void test_buf_view_keeps_parent(void **state)
{
    modal__buf *parent = modal__buf_new(100);
    assert_non_null(parent);
    for (size_t i = 0; i < 100; i++)
        parent->base[i] = (uint8_t)i;
    modal__buf *view = modal__buf_view(parent, 10, 20);
    assert_non_null(view);
    assert_int_equal(view->kind, MODAL__BUF_VIEW);
    assert_ptr_equal(view->parent, parent);
    assert_int_equal(view->len, 20);
    assert_int_equal(atomic_load(&parent->refs), 2);

    /* A view of the view keeps the chain alive. */
    modal__buf *inner = modal__buf_view(view, 5, 15);
    assert_non_null(inner);
    assert_int_equal(inner->base[0], 15);

    /* Dropping the parent's own reference must not free its bytes:
     * valgrind and ASan check these reads. */
    modal__buf_unref(parent);
    modal__buf_unref(view);
    for (size_t i = 0; i < 15; i++)
        assert_int_equal(inner->base[i], 15 + i);
    modal__buf_unref(inner); /* frees inner, view, then parent */

    /* Out-of-range views are refused. */
    parent = modal__buf_new(10);
    assert_null(modal__buf_view(parent, 11, 0));
    assert_null(modal__buf_view(parent, 5, 6));
    assert_null(modal__buf_view(parent, 1, SIZE_MAX));
    assert_null(modal__buf_view(NULL, 0, 0));
    view = modal__buf_view(parent, 10, 0);
    assert_non_null(view);
    assert_int_equal(view->len, 0);
    modal__buf_unref(view);
    assert_int_equal(atomic_load(&parent->refs), 1);
    modal__buf_unref(parent);
    modal__buf_unref(NULL);
    assert_null(modal__buf_ref(NULL));
}

/* A mapped buffer (memfd) viewed and released in any order. */
static void test_buf_map_fd(void **state)
{
    int fd = memfd_with(5000, 2);
    modal__buf *m = modal__buf_map_fd(fd, 5000, 1);
    close(fd);
    assert_non_null(m);
    assert_int_equal(m->kind, MODAL__BUF_MMAP);
    modal__buf *v = modal__buf_view(m, 4096, 904);
    modal__buf_unref(m);
    check_pattern(v->base - 4096, 5000, 2);
    modal__buf_unref(v);

    /* Length 0 gives an empty heap buffer. */
    modal__buf *e = modal__buf_map_fd(-1, 0, 0);
    assert_non_null(e);
    assert_int_equal(e->len, 0);
    modal__buf_unref(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_inline_payload, setup_pair, teardown_pair),
        cmocka_unit_test_setup_teardown(test_empty_payload_no_meta, setup_pair, teardown_pair),
        cmocka_unit_test_setup_teardown(test_largest_inline_payload, setup_pair, teardown_pair),
        cmocka_unit_test_setup_teardown(test_memfd_payload, setup_pair, teardown_pair),
        cmocka_unit_test_setup_teardown(test_explicit_fd_payload, setup_pair, teardown_pair),
        cmocka_unit_test_setup_teardown(test_meta_round_trip, setup_pair, teardown_pair),
        cmocka_unit_test_setup_teardown(test_closed_peer, setup_pair, teardown_pair),
        cmocka_unit_test_setup_teardown(test_malformed_messages, setup_pair, teardown_pair),
        cmocka_unit_test(test_bundle_round_trip),
        cmocka_unit_test(test_bundle_malformed),
        cmocka_unit_test(test_buf_view_keeps_parent),
        cmocka_unit_test(test_buf_map_fd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
