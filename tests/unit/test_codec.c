/*
 * test_codec.c: the wire codec. Round trips of every type and edge value,
 * the frame layout (64-byte alignment, reads over arbitrary ranges, fd
 * writes), borrowed decoding, and one test per kind of malformed input,
 * each checking the status code and what the message says.
 */
#include "testutil.h"

#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------- */

/* Encode v, decode it both ways (copying and borrowing), compare. */
static void roundtrip(modal_value *v)
{
    assert_non_null(v);
    modal_error err;
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(modal_value_encode(v, &buf, &len, &err), MODAL_OK);
    assert_int_equal(err.code, MODAL_OK);

    modal_value *back = NULL;
    modal_status st = modal_value_decode(buf, len, &back, &err);
    if (st != MODAL_OK)
        print_error("decode: %s\n", err.message);
    assert_int_equal(st, MODAL_OK);
    assert_true(modal_value_equal(v, back));
    modal_value_free(back);

    modal__buf *b = modal__buf_new(len);
    assert_non_null(b);
    memcpy(b->base, buf, len);
    modal__dec dec;
    assert_int_equal(modal__dec_open(b, 1, &dec, &err), MODAL_OK);
    const cJSON *vj = cJSON_GetObjectItemCaseSensitive(dec.env, "value");
    assert_int_equal(modal__value_from_json(&dec, vj, "$.value", &back, &err),
                     MODAL_OK);
    modal__dec_close(&dec);
    modal__buf_unref(b); /* back keeps it alive if it borrowed */
    assert_true(modal_value_equal(v, back));
    modal_value_free(back);

    free(buf);
    modal_value_free(v);
}

/* The envelope text of an encoded value, NUL-terminated (caller frees). */
static char *envelope_of(const modal_value *v)
{
    void *buf;
    size_t len;
    assert_int_equal(modal_value_encode(v, &buf, &len, NULL), MODAL_OK);
    const uint8_t *b = buf;
    uint32_t elen = (uint32_t)b[8] | (uint32_t)b[9] << 8 |
                    (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24;
    uint32_t natt = (uint32_t)b[12] | (uint32_t)b[13] << 8 |
                    (uint32_t)b[14] << 16 | (uint32_t)b[15] << 24;
    char *s = malloc(elen + 1);
    assert_non_null(s);
    memcpy(s, b + 16 + 8 * (size_t)natt, elen);
    s[elen] = '\0';
    free(buf);
    return s;
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

static size_t up64(size_t n)
{
    return (n + 63) / 64 * 64;
}

/*
 * Build a frame by hand, independently of the encoder: JSON envelope and
 * natt attachments laid out per the documented format. Caller frees.
 */
static uint8_t *frame(const char *json, size_t natt,
                      const void *const *att, const size_t *att_len,
                      size_t *out_len)
{
    size_t elen = strlen(json);
    size_t off = 16 + 8 * natt + elen;
    size_t offs[16];
    assert_true(natt <= 16);
    for (size_t i = 0; i < natt; i++) {
        off = up64(off);
        offs[i] = off;
        off += att_len[i];
    }
    uint8_t *b = calloc(1, off ? off : 1);
    assert_non_null(b);
    memcpy(b, "MODL", 4);
    b[4] = 1;
    le32(b + 8, (uint32_t)elen);
    le32(b + 12, (uint32_t)natt);
    for (size_t i = 0; i < natt; i++)
        le64(b + 16 + 8 * i, att_len[i]);
    memcpy(b + 16 + 8 * natt, json, elen);
    for (size_t i = 0; i < natt; i++)
        if (att_len[i] > 0)
            memcpy(b + offs[i], att[i], att_len[i]);
    *out_len = off;
    return b;
}

/* Decode buf and expect code with fragment in the message. */
static void expect_fail(const void *buf, size_t len, modal_status code,
                        const char *fragment)
{
    modal_error err;
    modal_value *v = (modal_value *)0x1;
    modal_status st = modal_value_decode(buf, len, &v, &err);
    if (st != code)
        print_error("expected %s, got %s: %s\n", modal_status_name(code),
                    modal_status_name(st), err.message);
    assert_int_equal(st, code);
    assert_int_equal(err.code, code);
    assert_null(v);
    assert_message_contains(err, fragment);
}

/* Decode buf and expect success. */
static void expect_ok(const void *buf, size_t len)
{
    modal_error err;
    modal_value *v = NULL;
    modal_status st = modal_value_decode(buf, len, &v, &err);
    if (st != MODAL_OK)
        print_error("decode: %s\n", err.message);
    assert_int_equal(st, MODAL_OK);
    assert_non_null(v);
    modal_value_free(v);
}

/* A frame of json with no attachments must fail with code and fragment. */
static void expect_json_fail(const char *json, modal_status code,
                             const char *fragment)
{
    size_t len;
    uint8_t *b = frame(json, 0, NULL, NULL, &len);
    expect_fail(b, len, code, fragment);
    free(b);
}

/* ---- round trips --------------------------------------------------- */

static void test_scalars(void **state)
{
    (void)state;
    roundtrip(modal_null());
    roundtrip(modal_bool(true));
    roundtrip(modal_bool(false));
    const int64_t ints[] = {0,
                            1,
                            -1,
                            42,
                            (int64_t)1 << 53,
                            -((int64_t)1 << 53),
                            ((int64_t)1 << 53) - 1,
                            ((int64_t)1 << 53) + 1,
                            -((int64_t)1 << 53) - 1,
                            -((int64_t)1 << 53) + 1,
                            INT64_MAX,
                            INT64_MIN,
                            INT64_MAX - 1,
                            INT64_MIN + 1};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        roundtrip(modal_int(ints[i]));
    const double floats[] = {0.0,     -0.0,     1.5,     -2.25,   0.1,
                             1e308,   -1e-308,  DBL_MAX, DBL_MIN, 5e-324,
                             -5e-324, INFINITY, -INFINITY, NAN, M_PI};
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++)
        roundtrip(modal_float(floats[i]));
}

static void test_float_bits(void **state)
{
    (void)state;
    /* -0.0 keeps its sign bit; 0.0 and -0.0 are different values. */
    void *buf;
    size_t len;
    modal_value *v = modal_float(-0.0), *back;
    assert_int_equal(modal_value_encode(v, &buf, &len, NULL), MODAL_OK);
    assert_int_equal(modal_value_decode(buf, len, &back, NULL), MODAL_OK);
    double f;
    assert_int_equal(modal_get_float(back, &f, NULL), MODAL_OK);
    assert_true(f == 0.0 && signbit(f));
    modal_value_free(back);
    free(buf);
    modal_value_free(v);

    /* Any NaN decodes as the canonical quiet NaN (documented). */
    v = modal_float(-NAN);
    assert_int_equal(modal_value_encode(v, &buf, &len, NULL), MODAL_OK);
    assert_int_equal(modal_value_decode(buf, len, &back, NULL), MODAL_OK);
    assert_int_equal(modal_get_float(back, &f, NULL), MODAL_OK);
    assert_true(isnan(f));
    modal_value_free(back);
    free(buf);
    modal_value_free(v);
}

static void test_int_wire_form(void **state)
{
    (void)state;
    /* Exact decimal text up to 2^53 (cJSON's own printer would round). */
    modal_value *v = modal_int(((int64_t)1 << 53) - 1);
    char *s = envelope_of(v);
    assert_string_equal(s, "{\"v\":1,\"value\":9007199254740991}");
    free(s);
    modal_value_free(v);
    v = modal_int((int64_t)1 << 53);
    s = envelope_of(v);
    assert_string_equal(s, "{\"v\":1,\"value\":9007199254740992}");
    free(s);
    modal_value_free(v);
    v = modal_int(((int64_t)1 << 53) + 1);
    s = envelope_of(v);
    assert_string_equal(s, "{\"v\":1,\"value\":{\"i\":\"9007199254740993\"}}");
    free(s);
    modal_value_free(v);
    v = modal_int(INT64_MIN);
    s = envelope_of(v);
    assert_string_equal(s,
                        "{\"v\":1,\"value\":{\"i\":\"-9223372036854775808\"}}");
    free(s);
    modal_value_free(v);
    v = modal_float(1.5);
    s = envelope_of(v);
    assert_string_equal(s, "{\"v\":1,\"value\":{\"f\":\"0x1.8p+0\"}}");
    free(s);
    modal_value_free(v);
}

static void test_strings_bytes(void **state)
{
    (void)state;
    roundtrip(modal_string(""));
    roundtrip(modal_string("hello"));
    roundtrip(modal_string("h\xc3\xa9llo \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac"));
    roundtrip(modal_string("quote\" back\\slash\nnew\ttab\x01\x1f\x7f"));
    roundtrip(modal_bytes(NULL, 0));
    roundtrip(modal_bytes("a\0b\0\0c", 6));
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    roundtrip(modal_bytes(all, sizeof all));
}

static void fill(void *p, size_t n, unsigned seed)
{
    uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        b[i] = (uint8_t)(seed >> 16);
    }
}

static void test_arrays(void **state)
{
    (void)state;
    for (int d = MODAL_U8; d <= MODAL_F64; d++) {
        size_t shape[3] = {2, 3, 4};
        modal_value *v = modal_array_new((modal_dtype)d, 3, shape);
        assert_non_null(v);
        fill(modal_array_data_mut(v), 24 * modal_dtype_size((modal_dtype)d),
             (unsigned)d);
        roundtrip(v);
        /* Empty arrays, including a zero extent among others. */
        size_t empty[3] = {3, 0, 2};
        roundtrip(modal_array_new((modal_dtype)d, 3, empty));
        roundtrip(modal_array((modal_dtype)d, NULL, 0));
        uint64_t one = 0x0102030405060708u;
        roundtrip(modal_array((modal_dtype)d, &one, 1));
    }
    size_t eight[8] = {1, 2, 1, 2, 1, 2, 1, 2};
    modal_value *v = modal_array_new(MODAL_I32, 8, eight);
    fill(modal_array_data_mut(v), 16 * 4, 7);
    roundtrip(v);
}

static void test_containers(void **state)
{
    (void)state;
    roundtrip(modal_list());
    roundtrip(modal_map());
    float f3[3] = {1.0f, -2.0f, 3.5f};
    roundtrip(modal_args(modal_int(1), modal_string("x"), modal_list(),
                         modal_map(), modal_array(MODAL_F32, f3, 3),
                         modal_bytes("xyz", 3), modal_null()));

    /* Keys keep insertion order, including keys needing JSON escapes. */
    modal_value *m = modal_map();
    const char *keys[] = {"z", "a", "m", "", "k\"ey\\", "\xe6\x97\xa5"};
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(modal_map_set(m, keys[i], modal_int((int64_t)i), NULL),
                         MODAL_OK);
    assert_int_equal(modal_map_set(m, "nested", modal_args(modal_int(1), modal_map()), NULL),
                     MODAL_OK);
    void *buf;
    size_t len;
    assert_int_equal(modal_value_encode(m, &buf, &len, NULL), MODAL_OK);
    modal_value *back;
    assert_int_equal(modal_value_decode(buf, len, &back, NULL), MODAL_OK);
    assert_true(modal_value_equal(m, back));
    for (size_t i = 0; i < 6; i++) {
        const char *k;
        assert_int_equal(modal_map_entry(back, i, &k, NULL, NULL), MODAL_OK);
        assert_string_equal(k, keys[i]);
    }
    modal_value_free(back);
    free(buf);
    roundtrip(m);
}

/* Nested lists: depth levels in all, an int at the bottom. */
static modal_value *nested(size_t depth, int use_maps)
{
    modal_value *v = modal_int(7);
    for (size_t d = 1; d < depth; d++) {
        modal_value *c = use_maps ? modal_map() : modal_list();
        if (use_maps)
            assert_int_equal(modal_map_set(c, "k", v, NULL), MODAL_OK);
        else
            assert_int_equal(modal_list_append(c, v, NULL), MODAL_OK);
        v = c;
    }
    return v;
}

static void test_depth(void **state)
{
    (void)state;
    roundtrip(nested(MODAL_MAX_DEPTH, 0));
    roundtrip(nested(MODAL_MAX_DEPTH, 1));

    for (int maps = 0; maps < 2; maps++) {
        modal_value *v = nested(MODAL_MAX_DEPTH + 1, maps);
        void *buf = (void *)0x1;
        size_t len = 1;
        modal_error err;
        assert_int_equal(modal_value_encode(v, &buf, &len, &err),
                         MODAL_ELIMIT);
        assert_null(buf);
        assert_int_equal(len, 0);
        assert_message_contains(err, "MODAL_MAX_DEPTH");
        assert_message_contains(err, maps ? "$.m.k" : "$[0][0]");
        /* Without an error record the code is still the right one. */
        assert_int_equal(modal_value_encode(v, &buf, &len, NULL),
                         MODAL_ELIMIT);
        modal_value_free(v);
    }
}

static void test_big_array(void **state)
{
    (void)state;
    size_t n = 4u << 20; /* 16 MiB of f32 */
    modal_value *v = modal_array_new(MODAL_F32, 1, &n);
    assert_non_null(v);
    float *p = modal_array_data_mut(v);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)i * 0.5f - 3.0f;
    void *buf;
    size_t len;
    assert_int_equal(modal_value_encode(v, &buf, &len, NULL), MODAL_OK);
    assert_true(len >= n * 4 && len < n * 4 + 256);
    modal_value *back;
    assert_int_equal(modal_value_decode(buf, len, &back, NULL), MODAL_OK);
    assert_true(modal_value_equal(v, back));
    const void *data;
    size_t count;
    assert_int_equal(modal_get_array(back, MODAL_F32, &data, &count, NULL),
                     MODAL_OK);
    assert_int_equal(count, n);
    assert_memory_equal(data, p, n * 4);
    /* The decoded value owns its data: wiping the input changes nothing. */
    memset(buf, 0xAA, len);
    assert_true(modal_value_equal(v, back));
    modal_value_free(back);
    free(buf);
    modal_value_free(v);
}

/* ---- frame layout -------------------------------------------------- */

/* A list of payloads whose sizes straddle the 64-byte alignment. */
static modal_value *odd_payloads(void)
{
    static const size_t sizes[] = {1, 63, 64, 65, 0, 100, 3, 0, 128, 7};
    modal_value *list = modal_list();
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint8_t tmp[128];
        fill(tmp, sizes[i], (unsigned)i);
        modal_value *item = i % 2 == 0 ? modal_bytes(tmp, sizes[i])
                                       : modal_array(MODAL_U8, tmp, sizes[i]);
        assert_int_equal(modal_list_append(list, item, NULL), MODAL_OK);
    }
    uint64_t big[5] = {1, 2, 3, 4, 5};
    assert_int_equal(
        modal_list_append(list, modal_array(MODAL_U64, big, 5), NULL),
        MODAL_OK);
    return list;
}

static void test_alignment_and_read(void **state)
{
    (void)state;
    modal_value *v = odd_payloads();
    modal__enc enc = {0};
    modal_error err;
    cJSON *env = cJSON_CreateObject();
    cJSON_AddNumberToObject(env, "v", 1);
    cJSON *j = modal__value_to_json(v, &enc, &err);
    assert_non_null(j);
    cJSON_AddItemToObject(env, "value", j);
    assert_int_equal(modal__enc_finish(&enc, env, &err), MODAL_OK);
    cJSON_Delete(env);
    assert_int_equal(enc.natt, 11);
    assert_int_equal(enc.head_len % 64, 0);

    modal__buf *flat;
    assert_int_equal(modal__enc_flatten(&enc, &flat, &err), MODAL_OK);
    assert_int_equal(flat->len, enc.total);

    /* Offsets recomputed from the header: each at a multiple of 64. */
    const uint8_t *b = flat->base;
    uint32_t elen = (uint32_t)b[8] | (uint32_t)b[9] << 8 |
                    (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24;
    size_t off = 16 + 8 * enc.natt + elen;
    for (size_t i = 0; i < enc.natt; i++) {
        off = up64(off);
        assert_int_equal(off % 64, 0);
        assert_true(enc.att[i].iov_len == 0 ||
                    memcmp(b + off, enc.att[i].iov_base,
                           enc.att[i].iov_len) == 0);
        off += enc.att[i].iov_len;
    }
    assert_int_equal(off, enc.total);

    /* Borrowed decode: every payload inside the buffer, 64-aligned. */
    modal__dec dec;
    assert_int_equal(modal__dec_open(flat, 1, &dec, &err), MODAL_OK);
    modal_value *back;
    assert_int_equal(
        modal__value_from_json(&dec, cJSON_GetObjectItem(dec.env, "value"),
                               "$.value", &back, &err),
        MODAL_OK);
    for (size_t i = 0; i < modal_value_len(back); i++) {
        const modal_value *item = modal_list_get(back, i);
        const uint8_t *p;
        size_t n;
        if (modal_value_type(item) == MODAL_TYPE_BYTES) {
            assert_int_equal(modal_get_bytes(item, (const void **)&p, &n, NULL),
                             MODAL_OK);
        } else {
            modal_dtype dt;
            assert_int_equal(modal_array_dtype(item, &dt, NULL), MODAL_OK);
            assert_int_equal(modal_get_array(item, dt, (const void **)&p, &n,
                                             NULL),
                             MODAL_OK);
            n *= modal_dtype_size(dt);
        }
        if (n > 0) {
            assert_true(p >= flat->base && p + n <= flat->base + flat->len);
            assert_int_equal((size_t)(p - flat->base) % 64, 0);
        }
    }
    assert_true(modal_value_equal(v, back));
    modal__dec_close(&dec);
    modal_value_free(back);

    /* Every range read equals the same bytes of the flat frame. */
    size_t total = enc.total;
    uint8_t *tmp = malloc(total + 16);
    for (size_t o = 0; o <= total; o += 7) {
        for (size_t n = 0; n <= total - o + 10; n += 13) {
            memset(tmp, 0x5A, total + 16);
            size_t got = modal__enc_read(&enc, o, tmp, n);
            size_t want = n < total - o ? n : total - o;
            assert_int_equal(got, want);
            assert_memory_equal(tmp, flat->base + o, got);
            assert_int_equal(tmp[got], 0x5A);
        }
    }
    assert_int_equal(modal__enc_read(&enc, total, tmp, 10), 0);
    assert_int_equal(modal__enc_read(&enc, total + 100, tmp, 10), 0);
    /* Byte at a time across the whole frame. */
    for (size_t o = 0; o < total; o++) {
        assert_int_equal(modal__enc_read(&enc, o, tmp, 1), 1);
        assert_int_equal(tmp[0], flat->base[o]);
    }
    free(tmp);

    /* write_fd produces the same bytes. */
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(modal__enc_write_fd(&enc, fileno(f), &err), MODAL_OK);
    assert_int_equal(lseek(fileno(f), 0, SEEK_END), (off_t)total);
    uint8_t *back_bytes = malloc(total);
    assert_int_equal(pread(fileno(f), back_bytes, total, 0), (ssize_t)total);
    assert_memory_equal(back_bytes, flat->base, total);
    free(back_bytes);
    fclose(f);

    /* A bad descriptor fails with EIO rather than crashing. */
    assert_int_equal(modal__enc_write_fd(&enc, -1, &err), MODAL_EIO);
    assert_message_contains(err, "fd -1");

    /* The same frame as modal_value_encode gives. */
    void *buf;
    size_t len;
    assert_int_equal(modal_value_encode(v, &buf, &len, NULL), MODAL_OK);
    assert_int_equal(len, total);
    assert_memory_equal(buf, flat->base, total);
    free(buf);

    modal__buf_unref(flat);
    modal__enc_free(&enc);
    modal__enc_free(&enc); /* freeing twice is harmless */
    modal_value_free(v);
}

typedef struct reader {
    int fd;
    uint8_t *buf;
    size_t len, cap;
} reader;

/* Read fd to EOF in small pieces, so the writer sees short writes. */
static void *read_all(void *arg)
{
    reader *r = arg;
    for (;;) {
        if (r->len == r->cap) {
            r->cap = r->cap ? 2 * r->cap : 4096;
            r->buf = realloc(r->buf, r->cap);
        }
        size_t want = r->cap - r->len < 1000 ? r->cap - r->len : 1000;
        ssize_t n = read(r->fd, r->buf + r->len, want);
        if (n <= 0)
            break;
        r->len += (size_t)n;
    }
    return NULL;
}

static void test_write_socket(void **state)
{
    (void)state;
    /* Larger than a socket buffer: a non-blocking writer must wait. */
    modal_value *v = odd_payloads();
    size_t n = 1u << 20;
    modal_value *big = modal_array_new(MODAL_U32, 1, &n);
    fill(modal_array_data_mut(big), n * 4, 99);
    assert_int_equal(modal_list_append(v, big, NULL), MODAL_OK);
    modal__enc enc = {0};
    cJSON *env = cJSON_CreateObject();
    cJSON_AddItemToObject(env, "value", modal__value_to_json(v, &enc, NULL));
    assert_int_equal(modal__enc_finish(&enc, env, NULL), MODAL_OK);
    cJSON_Delete(env);
    modal__buf *flat;
    assert_int_equal(modal__enc_flatten(&enc, &flat, NULL), MODAL_OK);

    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    reader r = {sv[1], NULL, 0, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_all, &r), 0);
    modal_error err;
    assert_int_equal(modal__enc_write_fd(&enc, sv[0], &err), MODAL_OK);
    close(sv[0]);
    pthread_join(t, NULL);
    close(sv[1]);
    assert_int_equal(r.len, enc.total);
    assert_memory_equal(r.buf, flat->base, enc.total);
    free(r.buf);

    /* A peer that hung up: EIO with the reason, and no SIGPIPE. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    close(sv[1]);
    assert_int_equal(modal__enc_write_fd(&enc, sv[0], &err), MODAL_EIO);
    assert_message_contains(err, "Broken pipe");
    close(sv[0]);

    modal__buf_unref(flat);
    modal__enc_free(&enc);
    modal_value_free(v);
}

static void test_borrow(void **state)
{
    (void)state;
    double d[6] = {1, 2, 3, 4, 5, 6};
    size_t shape[2] = {2, 3};
    modal_value *v = modal_args(modal_array_nd(MODAL_F64, d, 2, shape),
                                modal_bytes("abc", 3));
    void *buf;
    size_t len;
    assert_int_equal(modal_value_encode(v, &buf, &len, NULL), MODAL_OK);

    /* An aligned heap buffer: both payloads point into it. */
    modal__buf *b = modal__buf_new(len);
    memcpy(b->base, buf, len);
    modal__dec dec;
    modal_error err;
    modal_value *back;
    assert_int_equal(modal__dec_open(b, 1, &dec, &err), MODAL_OK);
    assert_int_equal(
        modal__value_from_json(&dec, cJSON_GetObjectItem(dec.env, "value"),
                               "$.value", &back, &err),
        MODAL_OK);
    modal__dec_close(&dec);
    const void *p;
    size_t n;
    assert_int_equal(modal_get_array(modal_list_get(back, 0), MODAL_F64, &p,
                                     &n, NULL),
                     MODAL_OK);
    assert_true((const uint8_t *)p >= b->base &&
                (const uint8_t *)p + 48 <= b->base + len);
    assert_int_equal(atomic_load(&b->refs), 3); /* ours + two values */
    modal__buf_unref(b);
    assert_true(modal_value_equal(v, back));
    modal_value_free(back);

    /*
     * A buffer one byte off alignment: the f64 array is copied, the bytes
     * (which need no alignment) are still borrowed. The view is ours, so
     * its reference count must come back to 1.
     */
    uint8_t *raw = malloc(len + 1);
    memcpy(raw + 1, buf, len);
    modal__buf view;
    atomic_init(&view.refs, 1);
    view.base = raw + 1;
    view.len = len;
    view.kind = MODAL__BUF_HEAP;
    assert_int_equal(modal__dec_open(&view, 1, &dec, &err), MODAL_OK);
    assert_int_equal(
        modal__value_from_json(&dec, cJSON_GetObjectItem(dec.env, "value"),
                               "$.value", &back, &err),
        MODAL_OK);
    modal__dec_close(&dec);
    assert_int_equal(modal_get_array(modal_list_get(back, 0), MODAL_F64, &p,
                                     &n, NULL),
                     MODAL_OK);
    assert_true((const uint8_t *)p < view.base ||
                (const uint8_t *)p >= view.base + len);
    assert_int_equal((uintptr_t)p % 8, 0);
    assert_int_equal(modal_get_bytes(modal_list_get(back, 1), &p, &n, NULL),
                     MODAL_OK);
    assert_true((const uint8_t *)p >= view.base &&
                (const uint8_t *)p < view.base + len);
    assert_true(modal_value_equal(v, back));
    modal_value_free(back);
    assert_int_equal(atomic_load(&view.refs), 1);
    free(raw);

    free(buf);
    modal_value_free(v);
}

/* ---- malformed input ----------------------------------------------- */

static void test_bad_header(void **state)
{
    (void)state;
    expect_fail(NULL, 0, MODAL_ECODEC, "0 bytes, shorter than its 16-byte");
    expect_fail("", 0, MODAL_ECODEC, "shorter than");
    expect_fail("MODL\1\0\0\0\0\0", 10, MODAL_ECODEC, "10 bytes, shorter");

    size_t len;
    uint8_t *b = frame("{\"v\":1,\"value\":null}", 0, NULL, NULL, &len);
    b[3] = 'X';
    expect_fail(b, len, MODAL_ECODEC, "bad magic");
    b[3] = 'L';
    b[4] = 7;
    expect_fail(b, len, MODAL_ECODEC, "unsupported wire version 7");
    b[4] = 0;
    b[5] = 1;
    expect_fail(b, len, MODAL_ECODEC, "unsupported wire version 256");
    b[4] = 1;
    b[5] = 0;
    b[6] = 2;
    expect_fail(b, len, MODAL_ECODEC, "unknown flags 0x0002");
    b[6] = 0;
    /* Trailing bytes after a complete frame. */
    uint8_t *longer = calloc(1, len + 3);
    memcpy(longer, b, len);
    expect_fail(longer, len + 3, MODAL_ECODEC, "3 trailing bytes");
    free(longer);
    /* Truncated envelope. */
    expect_fail(b, len - 1, MODAL_ECODEC, "runs past the end");
    /* Envelope length and attachment count beyond the limits. */
    le32(b + 8, MODAL_CODEC_MAX_ENVELOPE + 1u);
    expect_fail(b, len, MODAL_ELIMIT, "MODAL_CODEC_MAX_ENVELOPE");
    le32(b + 8, 0xFFFFFFFFu);
    expect_fail(b, len, MODAL_ELIMIT, "MODAL_CODEC_MAX_ENVELOPE");
    le32(b + 8, 20);
    le32(b + 12, 0xFFFFFFFFu);
    expect_fail(b, len, MODAL_ELIMIT, "MODAL_CODEC_MAX_ATTACH");
    le32(b + 12, 1000);
    expect_fail(b, len, MODAL_ECODEC, "too short for the 1000 attachment");
    free(b);
    /* An empty envelope. */
    b = frame("", 0, NULL, NULL, &len);
    expect_fail(b, len, MODAL_ECODEC, "not valid JSON");
    free(b);
}

static void test_bad_attachments(void **state)
{
    (void)state;
    const void *att[2] = {"0123456789abcdefghij", "xy"};
    size_t alen[2] = {20, 2};
    size_t len;

    /* Truncated attachment. */
    uint8_t *b = frame("{\"v\":1,\"value\":{\"b\":0}}", 1, att, alen, &len);
    expect_ok(b, len); /* sanity: the frame itself is fine */
    free(b);
    b = frame("{\"v\":1,\"value\":[{\"b\":0},{\"b\":1}]}", 2, att, alen, &len);
    expect_fail(b, len - 1, MODAL_ECODEC, "attachment 1 (length 2");
    expect_fail(b, len - 10, MODAL_ECODEC, "runs past the end");
    /* Huge lengths, which would overflow any sum. */
    le64(b + 16, UINT64_MAX);
    expect_fail(b, len, MODAL_ECODEC, "attachment 0 (length 18446744073709551615");
    le64(b + 16, UINT64_MAX - 63);
    expect_fail(b, len, MODAL_ECODEC, "attachment 0");
    le64(b + 16, SIZE_MAX - 200);
    expect_fail(b, len, MODAL_ECODEC, "attachment 0");
    le64(b + 16, 20);
    /* Non-zero padding between attachments. */
    size_t pad_at = len - alen[1] - 1; /* last byte before attachment 1 */
    b[pad_at] = 1;
    expect_fail(b, len, MODAL_ECODEC, "non-zero padding byte 0x01");
    b[pad_at] = 0;
    expect_ok(b, len);
    free(b);

    b = frame("{\"v\":1,\"value\":{\"b\":2}}", 2, att, alen, &len);
    expect_fail(b, len, MODAL_ECODEC,
                "$.value: attachment 2 is out of range: the frame has 2");
    free(b);
    b = frame("{\"v\":1,\"value\":{\"b\":-1}}", 2, att, alen, &len);
    expect_fail(b, len, MODAL_ECODEC, "must be an attachment number");
    free(b);
    b = frame("{\"v\":1,\"value\":{\"b\":0.5}}", 2, att, alen, &len);
    expect_fail(b, len, MODAL_ECODEC, "must be an attachment number");
    free(b);
    b = frame("{\"v\":1,\"value\":{\"b\":\"0\"}}", 2, att, alen, &len);
    expect_fail(b, len, MODAL_ECODEC, "got a string");
    free(b);
    b = frame("{\"v\":1,\"value\":[{\"b\":0},{\"b\":0}]}", 2, att, alen, &len);
    expect_fail(b, len, MODAL_ECODEC,
                "$.value[1]: attachment 0 is already used");
    free(b);
    b = frame("{\"v\":1,\"value\":{\"b\":0}}", 2, att, alen, &len);
    expect_fail(b, len, MODAL_ECODEC, "attachment 1 (2 bytes");
    free(b);
}

static void test_bad_arrays(void **state)
{
    (void)state;
    float data[5] = {0};
    const void *att[1] = {data};
    size_t alen[1] = {20};
    size_t len;
    uint8_t *b = frame(
        "{\"v\":1,\"value\":{\"a\":0,\"t\":\"f32\",\"s\":[2,3]}}", 1, att,
        alen, &len);
    expect_fail(b, len, MODAL_ECODEC,
                "$.value: array shape [2,3] needs 24 bytes of f32 but "
                "attachment 0 has 20");
    free(b);
    b = frame("{\"v\":1,\"value\":[0,0,0,{\"m\":{\"key\":{\"a\":0,\"t\":"
              "\"f32\",\"s\":[2,3]}}}]}",
              1, att, alen, &len);
    expect_fail(b, len, MODAL_ECODEC,
                "$.value[3].m.key: array shape [2,3] needs 24 bytes of f32 "
                "but attachment 0 has 20");
    free(b);

    static const struct {
        const char *json;
        const char *fragment;
    } cases[] = {
        {"{\"a\":0,\"t\":\"f16\",\"s\":[5]}", "unknown dtype \"f16\""},
        {"{\"a\":0,\"t\":3,\"s\":[5]}", "must be a dtype name"},
        {"{\"a\":0,\"t\":\"f32\",\"s\":[]}", "shape is empty"},
        {"{\"a\":0,\"t\":\"f32\",\"s\":5}", "must be a list of extents"},
        {"{\"a\":0,\"t\":\"f32\",\"s\":[-5]}", "extent 0 must be a whole"},
        {"{\"a\":0,\"t\":\"f32\",\"s\":[1,2.5]}", "extent 1 must be a whole"},
        {"{\"a\":0,\"t\":\"f32\",\"s\":[1,\"2\"]}", "got a string"},
        {"{\"a\":0,\"t\":\"u8\",\"s\":[1,1,1,1,1,1,1,1,20]}",
         "more than 8 dimensions"},
        {"{\"a\":0,\"t\":\"f32\",\"s\":[1e300]}", "extent 0 must be a whole"},
        {"{\"a\":0,\"t\":\"u8\",\"s\":[4294967296,4294967296,4294967296]}",
         "overflows"},
        {"{\"a\":0,\"t\":\"f32\"}", "no \"s\""},
        {"{\"a\":0,\"s\":[5]}", "no \"t\""},
        {"{\"a\":0,\"t\":\"f32\",\"s\":[5],\"x\":1}", "has 4 keys"},
        {"{\"a\":0,\"a\":0,\"t\":\"f32\"}", "no \"s\""},
        {"{\"a\":1,\"t\":\"f32\",\"s\":[5]}", "attachment 1 is out of range"},
        {"{\"a\":0,\"t\":\"f32\",\"s\":[0]}", "needs 0 bytes of f32"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[256];
        snprintf(json, sizeof json, "{\"v\":1,\"value\":%s}", cases[i].json);
        b = frame(json, 1, att, alen, &len);
        expect_fail(b, len, MODAL_ECODEC, cases[i].fragment);
        free(b);
    }
}

static void test_bad_json(void **state)
{
    (void)state;
    expect_json_fail("{\"v\":1,\"value\":", MODAL_ECODEC, "not valid JSON");
    expect_json_fail("not json", MODAL_ECODEC, "error at envelope byte 0");
    expect_json_fail("{\"v\":1,\"value\":1}xx", MODAL_ECODEC,
                     "trailing bytes after the JSON envelope at envelope "
                     "byte 17");
    expect_json_fail("{\"v\":1,\"value\":1} ", MODAL_ECODEC, "trailing");
    /* Envelope shape. */
    expect_json_fail("[1]", MODAL_ECODEC, "envelope must be an object");
    expect_json_fail("{\"value\":1}", MODAL_ECODEC, "lacks \"v\"");
    expect_json_fail("{\"v\":1}", MODAL_ECODEC, "lacks \"value\"");
    expect_json_fail("{\"v\":1,\"value\":1,\"w\":2}", MODAL_ECODEC,
                     "unexpected envelope key \"w\"");
    expect_json_fail("{\"v\":1,\"v\":1,\"value\":1}", MODAL_ECODEC,
                     "unexpected envelope key \"v\"");
    expect_json_fail("{\"v\":2,\"value\":1}", MODAL_ECODEC,
                     "envelope version 2");
    expect_json_fail("{\"v\":\"1\",\"value\":1}", MODAL_ECODEC,
                     "not a number");
    /* Values. */
    expect_json_fail("{\"v\":1,\"value\":{\"q\":1}}", MODAL_ECODEC,
                     "unknown tag \"q\"");
    expect_json_fail("{\"v\":1,\"value\":{}}", MODAL_ECODEC, "object with 0 keys");
    expect_json_fail("{\"v\":1,\"value\":{\"b\":0,\"x\":1}}", MODAL_ECODEC,
                     "object with 2 keys (first \"b\")");
    expect_json_fail("{\"v\":1,\"value\":1.5}", MODAL_ECODEC,
                     "number 1.5 is not an integer");
    expect_json_fail("{\"v\":1,\"value\":9007199254740994}", MODAL_ECODEC,
                     "not an integer within +-2^53");
    expect_json_fail("{\"v\":1,\"value\":1e400}", MODAL_ECODEC,
                     "not an integer");
    expect_json_fail("{\"v\":1,\"value\":{\"i\":\"12x\"}}", MODAL_ECODEC,
                     "\"i\" is \"12x\", not a decimal integer");
    expect_json_fail("{\"v\":1,\"value\":{\"i\":\" 12\"}}", MODAL_ECODEC,
                     "not a decimal integer");
    expect_json_fail("{\"v\":1,\"value\":{\"i\":\"+12\"}}", MODAL_ECODEC,
                     "not a decimal integer");
    expect_json_fail("{\"v\":1,\"value\":{\"i\":\"\"}}", MODAL_ECODEC,
                     "not a decimal integer");
    expect_json_fail("{\"v\":1,\"value\":{\"i\":\"-\"}}", MODAL_ECODEC,
                     "not a decimal integer");
    expect_json_fail("{\"v\":1,\"value\":{\"i\":\"9223372036854775808\"}}",
                     MODAL_ECODEC, "outside the 64-bit integer range");
    expect_json_fail("{\"v\":1,\"value\":{\"i\":12}}", MODAL_ECODEC,
                     "must be a decimal string");
    expect_json_fail("{\"v\":1,\"value\":{\"f\":\"1.5\"}}", MODAL_ECODEC,
                     "\"f\" is \"1.5\", not a finite hex float");
    expect_json_fail("{\"v\":1,\"value\":{\"f\":\"0x1p+99999\"}}",
                     MODAL_ECODEC, "not a finite hex float");
    expect_json_fail("{\"v\":1,\"value\":{\"f\":\"0x1p+0 \"}}", MODAL_ECODEC,
                     "not a finite hex float");
    expect_json_fail("{\"v\":1,\"value\":{\"f\":\"infinity\"}}", MODAL_ECODEC,
                     "not a finite hex float");
    expect_json_fail("{\"v\":1,\"value\":{\"f\":\"-nan\"}}", MODAL_ECODEC,
                     "not a finite hex float");
    expect_json_fail("{\"v\":1,\"value\":{\"f\":1.5}}", MODAL_ECODEC,
                     "must be a hex float string");
    expect_json_fail("{\"v\":1,\"value\":{\"m\":[]}}", MODAL_ECODEC,
                     "\"m\" must be an object");
    expect_json_fail("{\"v\":1,\"value\":{\"m\":{\"a\":1,\"b\":2,\"a\":3}}}",
                     MODAL_ECODEC, "$.value: map has the key \"a\" more than "
                                   "once");
    /* cJSON would cut these at the NUL ("a" twice, or "a"): refused. */
    expect_json_fail("{\"v\":1,\"value\":{\"m\":{\"a\\u0000x\":1,"
                     "\"a\\u0000y\":2}}}",
                     MODAL_ECODEC, "the string \"a\\u0000x\" holds a NUL");
    expect_json_fail("{\"v\":1,\"value\":\"a\\u0000b\"}", MODAL_ECODEC,
                     "envelope: \"value\" = \"a\\u0000b\" holds a NUL");
    expect_json_fail("{\"v\":1,\"value\":[\"ok\",\"\\u0000\"]}", MODAL_ECODEC,
                     "\"value\" = \"\\u0000\"");
    /* A raw NUL byte, which cJSON keeps inside a string: refused too. */
    {
        size_t len;
        uint8_t *b = frame("{\"v\":1,\"value\":\"aZb\"}", 0, NULL, NULL, &len);
        uint8_t *z = memchr(b, 'Z', len);
        assert_non_null(z);
        *z = '\0';
        expect_fail(b, len, MODAL_ECODEC, "envelope: \"value\" = \"a\\0b\" holds a NUL");
        free(b);
        b = frame("{\"v\":1,Z\"value\":1}", 0, NULL, NULL, &len);
        z = memchr(b, 'Z', len);
        *z = '\0';
        expect_fail(b, len, MODAL_ECODEC, "envelope byte 7 (frame offset 23) is a NUL byte");
        free(b);
    }
    /* An escaped backslash followed by "u0000" is six plain characters. */
    {
        size_t len;
        uint8_t *b = frame("{\"v\":1,\"value\":\"a\\\\u0000b\"}", 0, NULL, NULL, &len);
        modal_value *v = NULL;
        modal_error err;
        assert_int_equal(modal_value_decode(b, len, &v, &err), MODAL_OK);
        const char *str = NULL;
        size_t sl = 0;
        assert_int_equal(modal_get_string(v, &str, &sl, NULL), MODAL_OK);
        assert_int_equal(sl, 8);
        assert_string_equal(str, "a\\u0000b");
        modal_value_free(v);
        free(b);
    }
    expect_json_fail("{\"v\":1,\"value\":[1,[2,{\"m\":{\"k\\n\":{\"q\":0}}}]]}",
                     MODAL_ECODEC, "$.value[1][1].m.k?: unknown tag");
    /* A long key is cut short in the path. */
    char json[256];
    snprintf(json, sizeof json, "{\"v\":1,\"value\":{\"m\":{\"%0100d\":1.5}}}",
             0);
    expect_json_fail(json, MODAL_ECODEC, "0000...: number 1.5");
}

/* A frame whose value is depth levels of JSON arrays around a 0. */
static void deep_json(size_t depth, modal_status code, const char *fragment)
{
    size_t n = 2 * depth + 64;
    char *json = malloc(n);
    size_t at = (size_t)sprintf(json, "{\"v\":1,\"value\":");
    for (size_t i = 1; i < depth; i++)
        json[at++] = '[';
    json[at++] = '0';
    for (size_t i = 1; i < depth; i++)
        json[at++] = ']';
    json[at++] = '}';
    json[at] = '\0';
    if (code == MODAL_OK) {
        size_t len;
        uint8_t *b = frame(json, 0, NULL, NULL, &len);
        modal_value *v;
        assert_int_equal(modal_value_decode(b, len, &v, NULL), MODAL_OK);
        modal_value_free(v);
        free(b);
    } else {
        expect_json_fail(json, code, fragment);
    }
    free(json);
}

static void test_deep_json(void **state)
{
    (void)state;
    deep_json(MODAL_MAX_DEPTH, MODAL_OK, "");
    deep_json(MODAL_MAX_DEPTH + 1, MODAL_ELIMIT,
              "value nests deeper than 64 levels (MODAL_MAX_DEPTH)");
    deep_json(900, MODAL_ELIMIT, "MODAL_MAX_DEPTH");
    /* Beyond cJSON's own nesting limit the JSON itself is refused. */
    deep_json(5000, MODAL_ECODEC, "nests deeper than 1000");
}

/* ---- misc ----------------------------------------------------------- */

static void test_bad_args(void **state)
{
    (void)state;
    modal_error err;
    void *buf;
    size_t len;
    assert_int_equal(modal_value_encode(NULL, &buf, &len, &err), MODAL_EINVAL);
    modal_value *v = modal_null();
    assert_int_equal(modal_value_encode(v, NULL, &len, &err), MODAL_EINVAL);
    assert_int_equal(modal_value_decode("x", 1, NULL, &err), MODAL_EINVAL);
    modal_value *out;
    assert_int_equal(modal_value_decode(NULL, 5, &out, &err), MODAL_EINVAL);
    modal_value_free(v);

    /* Extents beyond 2^53 cannot travel even in an empty array. */
    size_t shape[2] = {0, (size_t)1 << 60};
    v = modal_array_new(MODAL_U8, 2, shape);
    assert_non_null(v);
    assert_int_equal(modal_value_encode(v, &buf, &len, &err), MODAL_ELIMIT);
    assert_message_contains(err, "exceeds 2^53");
    modal_value_free(v);

    /* Finishing twice keeps one head; reading an unfinished enc gives 0. */
    modal__enc enc = {0};
    uint8_t tmp[4];
    assert_int_equal(modal__enc_read(&enc, 0, tmp, 4), 0);
    modal__buf *flat;
    assert_int_equal(modal__enc_flatten(&enc, &flat, &err), MODAL_EINVAL);
    cJSON *env = cJSON_CreateObject();
    assert_int_equal(modal__enc_finish(&enc, env, &err), MODAL_OK);
    assert_int_equal(modal__enc_finish(&enc, env, &err), MODAL_OK);
    assert_int_equal(enc.total, 18); /* 16 + "{}" */
    cJSON_Delete(env);
    modal__enc_free(&enc);
}

/* Every allocation failing in turn: a clean ENOMEM and no leak. */
static void test_out_of_memory(void **state)
{
    (void)state;
    modal_value *v = odd_payloads();
    assert_int_equal(modal_list_append(v, nested(5, 1), NULL), MODAL_OK);
    assert_int_equal(modal_list_append(v, modal_string("s"), NULL), MODAL_OK);
    void *good;
    size_t good_len;
    assert_int_equal(modal_value_encode(v, &good, &good_len, NULL), MODAL_OK);

    int done = 0;
    for (long n = 0; !done; n++) {
        void *buf = NULL;
        size_t len;
        modal_error err;
        modal__alloc_fail_after(n);
        modal_status st = modal_value_encode(v, &buf, &len, &err);
        modal__alloc_fail_after(-1);
        if (st == MODAL_OK) {
            assert_int_equal(len, good_len);
            assert_memory_equal(buf, good, len);
            free(buf);
            done = 1;
        } else {
            assert_int_equal(st, MODAL_ENOMEM);
            assert_null(buf);
        }
    }
    done = 0;
    for (long n = 0; !done; n++) {
        modal_value *out = NULL;
        modal_error err;
        modal__alloc_fail_after(n);
        modal_status st = modal_value_decode(good, good_len, &out, &err);
        modal__alloc_fail_after(-1);
        if (st == MODAL_OK) {
            assert_true(modal_value_equal(v, out));
            modal_value_free(out);
            done = 1;
        } else {
            assert_int_equal(st, MODAL_ENOMEM);
            assert_message_contains(err, "out of memory");
            assert_null(out);
        }
    }
    free(good);
    modal_value_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_float_bits),
        cmocka_unit_test(test_int_wire_form),
        cmocka_unit_test(test_strings_bytes),
        cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_containers),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_big_array),
        cmocka_unit_test(test_alignment_and_read),
        cmocka_unit_test(test_write_socket),
        cmocka_unit_test(test_borrow),
        cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_bad_attachments),
        cmocka_unit_test(test_bad_arrays),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_deep_json),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
