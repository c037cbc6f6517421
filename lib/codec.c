/*
 * codec.c: the wire codec. A value travels as one frame: a fixed header,
 * a JSON envelope describing the tree, and raw binary attachments for
 * bytes and arrays, each aligned to 64 bytes so a receiver can use array
 * data in place (see the frame layout in internal.h).
 *
 * The encoder never copies payloads: attachments are borrowed from the
 * values and gathered only when the frame is read, written or flattened.
 * The decoder treats every input as hostile: each length is checked
 * against the buffer before anything is allocated for it, all arithmetic
 * is overflow-checked, and every malformed field fails with MODAL_ECODEC
 * (or MODAL_ELIMIT for a limit) and a message naming the JSON path or frame
 * offset at fault.
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Integers up to this magnitude are exact in a double, hence in JSON. */
#define EXACT_INT_MAX ((int64_t)1 << 53)
#define EXACT_INT_MAX_D 9007199254740992.0

/* Round n up to the attachment alignment; 0 when that would overflow. */
static int align_up(size_t n, size_t *out)
{
    if (n > SIZE_MAX - (MODAL__FRAME_ALIGN - 1))
        return -1;
    *out = (n + (MODAL__FRAME_ALIGN - 1)) & ~(size_t)(MODAL__FRAME_ALIGN - 1);
    return 0;
}

/* ---- JSON paths for messages --------------------------------------- */

/*
 * Where a value sits in the tree, as a chain of segments on the stack of
 * the recursion. The path is only rendered when something fails, so the
 * happy path pays nothing for it.
 */
enum { SEG_ROOT, SEG_INDEX, SEG_KEY };

typedef struct path_seg {
    const struct path_seg *up;
    int kind;
    const char *text; /* root text or map key */
    size_t index;     /* list index */
} path_seg;

typedef struct strbuf {
    char *p;
    size_t len, cap; /* cap counts the terminating NUL */
} strbuf;

static void sb_vprintf(strbuf *sb, const char *fmt, va_list ap)
{
    if (sb->len + 1 >= sb->cap)
        return;
    int n = vsnprintf(sb->p + sb->len, sb->cap - sb->len, fmt, ap);
    if (n < 0)
        return;
    sb->len += (size_t)n < sb->cap - sb->len ? (size_t)n
                                              : sb->cap - sb->len - 1;
}

static void sb_printf(strbuf *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(sb, fmt, ap);
    va_end(ap);
}

/*
 * Copy untrusted text (a map key, a tag) for a message: control characters
 * become '?' so a hostile key cannot forge log lines, and long text is cut
 * with "...".
 */
static void sanitize(char *dst, size_t cap, const char *s)
{
    size_t i = 0;
    if (s == NULL)
        s = "";
    for (; s[i] != '\0' && i + 4 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (s[i] != '\0' && cap >= 4) {
        memcpy(dst + i, "...", 3);
        i += 3;
    }
    dst[i] = '\0';
}

static void path_render(const path_seg *s, strbuf *sb)
{
    if (s == NULL)
        return;
    path_render(s->up, sb);
    char key[64];
    switch (s->kind) {
    case SEG_ROOT:
        sb_printf(sb, "%s", s->text);
        break;
    case SEG_INDEX:
        sb_printf(sb, "[%zu]", s->index);
        break;
    case SEG_KEY:
        sanitize(key, sizeof key, s->text);
        sb_printf(sb, ".m.%s", key);
        break;
    }
}

/* Fail with the path of `at` in front of the formatted message. */
static modal_status path_fail(modal_error *err, modal_status code,
                              const path_seg *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static modal_status path_fail(modal_error *err, modal_status code,
                              const path_seg *at, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    char msg[MODAL_ERROR_MESSAGE_SIZE];
    strbuf sb = {msg, 0, sizeof msg};
    msg[0] = '\0';
    path_render(at, &sb);
    sb_printf(&sb, ": ");
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(&sb, fmt, ap);
    va_end(ap);
    return modal__fail(err, code, "%s", msg);
}

/* "[2,3]" for messages. */
static void shape_render(char *dst, size_t cap, size_t ndim,
                         const size_t *shape)
{
    strbuf sb = {dst, 0, cap};
    dst[0] = '\0';
    sb_printf(&sb, "[");
    for (size_t d = 0; d < ndim; d++)
        sb_printf(&sb, "%s%zu", d > 0 ? "," : "", shape[d]);
    sb_printf(&sb, "]");
}

/* ---- encoder ------------------------------------------------------- */

typedef struct enc_ctx {
    modal__enc *enc;
    size_t items;
    modal_error *err;
} enc_ctx;

static modal_status enc_oom(enc_ctx *c, const path_seg *at)
{
    return path_fail(c->err, MODAL_ENOMEM, at,
                     "out of memory encoding this value");
}

/* Register [p, p+len) as the next attachment; *index receives its number. */
static modal_status enc_attach(enc_ctx *c, const path_seg *at, const void *p,
                               size_t len, size_t *index)
{
    modal__enc *enc = c->enc;
    if (enc->natt >= MODAL_CODEC_MAX_ATTACH)
        return path_fail(c->err, MODAL_ELIMIT, at,
                         "the message would hold more than %u bytes and "
                         "array values (MODAL_CODEC_MAX_ATTACH); pack them "
                         "into fewer, larger arrays",
                         MODAL_CODEC_MAX_ATTACH);
    if (enc->natt == enc->cap) {
        size_t cap = enc->cap == 0 ? 8 : enc->cap * 2;
        struct iovec *att = modal__realloc(enc->att, cap * sizeof *att);
        if (att == NULL)
            return enc_oom(c, at);
        enc->att = att;
        enc->cap = cap;
    }
    /* The cast drops const only because struct iovec has no const form. */
    enc->att[enc->natt].iov_base = (void *)p;
    enc->att[enc->natt].iov_len = len;
    *index = enc->natt++;
    return MODAL_OK;
}

/* {"<tag>": val}; consumes val. NULL when memory runs out. */
static cJSON *tagged(const char *tag, cJSON *val)
{
    cJSON *obj = val != NULL ? cJSON_CreateObject() : NULL;
    if (obj == NULL) {
        cJSON_Delete(val);
        return NULL;
    }
    /* Tags are literals, so the key needs no copy (and cannot fail). */
    cJSON_AddItemToObjectCS(obj, tag, val);
    return obj;
}

static modal_status enc_value(enc_ctx *c, const modal_value *v, size_t depth,
                              const path_seg *at, cJSON **out);

static modal_status enc_int(enc_ctx *c, int64_t i, const path_seg *at,
                            cJSON **out)
{
    char text[32];
    modal__fmt_int(text, (long long)i);
    /*
     * The decimal text goes in raw: cJSON prints numbers with 15
     * significant digits whenever that reads back "close enough", which
     * would corrupt integers near 2^53.
     */
    if (i >= -EXACT_INT_MAX && i <= EXACT_INT_MAX)
        *out = cJSON_CreateRaw(text);
    else
        *out = tagged("i", cJSON_CreateString(text));
    return *out != NULL ? MODAL_OK : enc_oom(c, at);
}

static modal_status enc_float(enc_ctx *c, double f, const path_seg *at,
                              cJSON **out)
{
    char text[40];
    /*
     * Hex floats round-trip bit-exactly, -0.0 included. Every NaN travels
     * as "nan" and decodes as the canonical quiet NaN: its sign and
     * payload are not kept.
     */
    if (isnan(f))
        snprintf(text, sizeof text, "nan");
    else if (isinf(f))
        snprintf(text, sizeof text, "%s", f > 0 ? "inf" : "-inf");
    else
        snprintf(text, sizeof text, "%a", f);
    *out = tagged("f", cJSON_CreateString(text));
    return *out != NULL ? MODAL_OK : enc_oom(c, at);
}

static modal_status enc_bytes(enc_ctx *c, const modal_value *v,
                              const path_seg *at, cJSON **out)
{
    size_t k;
    modal_status st = enc_attach(c, at, v->u.bytes.p, v->u.bytes.len, &k);
    if (st != MODAL_OK)
        return st;
    *out = tagged("b", cJSON_CreateNumber((double)k));
    return *out != NULL ? MODAL_OK : enc_oom(c, at);
}

static modal_status enc_array(enc_ctx *c, const modal_value *v,
                              const path_seg *at, cJSON **out)
{
    modal_dtype dt = v->u.arr.dtype;
    size_t ndim = v->u.arr.ndim;
    size_t count = modal__shape_count(dt, ndim, v->u.arr.shape);
    if (count == SIZE_MAX || count != v->u.arr.count)
        return path_fail(c->err, MODAL_EINVAL, at,
                         "corrupt array (dtype %d, %zu dimensions, %zu "
                         "elements); build arrays with modal_array_nd",
                         (int)dt, ndim, v->u.arr.count);
    /* The decoder reads extents as JSON numbers, exact only to 2^53. */
    for (size_t d = 0; d < ndim; d++) {
        if (v->u.arr.shape[d] > (size_t)EXACT_INT_MAX)
            return path_fail(c->err, MODAL_ELIMIT, at,
                             "array extent %zu of dimension %zu exceeds "
                             "2^53, the largest the wire format carries",
                             v->u.arr.shape[d], d);
    }
    size_t k;
    size_t nbytes = count * modal_dtype_size(dt);
    modal_status st = enc_attach(c, at, v->u.arr.data, nbytes, &k);
    if (st != MODAL_OK)
        return st;
    const modal__buf *bk = v->u.arr.backing;
    if (k == 0 && bk != NULL && bk->kind == MODAL__BUF_MEMFD && bk->base == v->u.arr.data &&
        bk->len == nbytes)
        c->enc->att0_memfd = v->u.arr.backing; /* may leave as it is */
    cJSON *obj = cJSON_CreateObject();
    cJSON *idx = cJSON_CreateNumber((double)k);
    cJSON *name = cJSON_CreateString(modal_dtype_name(dt));
    cJSON *shape = cJSON_CreateArray();
    int ok = obj != NULL && idx != NULL && name != NULL && shape != NULL;
    for (size_t d = 0; ok && d < ndim; d++) {
        char text[32];
        snprintf(text, sizeof text, "%zu", v->u.arr.shape[d]);
        cJSON *n = cJSON_CreateRaw(text);
        ok = n != NULL && cJSON_AddItemToArray(shape, n);
    }
    if (!ok) {
        cJSON_Delete(obj);
        cJSON_Delete(idx);
        cJSON_Delete(name);
        cJSON_Delete(shape);
        return enc_oom(c, at);
    }
    cJSON_AddItemToObjectCS(obj, "a", idx);
    cJSON_AddItemToObjectCS(obj, "t", name);
    cJSON_AddItemToObjectCS(obj, "s", shape);
    *out = obj;
    return MODAL_OK;
}

static modal_status enc_list(enc_ctx *c, const modal_value *v, size_t depth,
                             const path_seg *at, cJSON **out)
{
    cJSON *arr = cJSON_CreateArray();
    if (arr == NULL)
        return enc_oom(c, at);
    for (size_t i = 0; i < v->u.list.len; i++) {
        path_seg seg = {at, SEG_INDEX, NULL, i};
        cJSON *item;
        modal_status st =
            enc_value(c, v->u.list.items[i], depth + 1, &seg, &item);
        if (st != MODAL_OK) {
            cJSON_Delete(arr);
            return st;
        }
        cJSON_AddItemToArray(arr, item);
    }
    *out = arr;
    return MODAL_OK;
}

static modal_status enc_map(enc_ctx *c, const modal_value *v, size_t depth,
                            const path_seg *at, cJSON **out)
{
    cJSON *obj = cJSON_CreateObject();
    if (obj == NULL)
        return enc_oom(c, at);
    for (size_t i = 0; i < v->u.map.len; i++) {
        path_seg seg = {at, SEG_KEY, v->u.map.keys[i], 0};
        cJSON *item;
        modal_status st =
            enc_value(c, v->u.map.vals[i], depth + 1, &seg, &item);
        if (st != MODAL_OK) {
            cJSON_Delete(obj);
            return st;
        }
        /* The key is copied; that copy is what can fail here. */
        if (!cJSON_AddItemToObject(obj, v->u.map.keys[i], item)) {
            cJSON_Delete(item);
            cJSON_Delete(obj);
            return enc_oom(c, &seg);
        }
    }
    *out = tagged("m", obj);
    return *out != NULL ? MODAL_OK : enc_oom(c, at);
}

static modal_status enc_value(enc_ctx *c, const modal_value *v, size_t depth,
                              const path_seg *at, cJSON **out)
{
    *out = NULL;
    if (v == NULL)
        return path_fail(c->err, MODAL_EINVAL, at,
                         "NULL value pointer; a constructor probably failed");
    if (depth > MODAL_MAX_DEPTH)
        return path_fail(c->err, MODAL_ELIMIT, at,
                         "value nests deeper than %d levels "
                         "(MODAL_MAX_DEPTH); flatten it",
                         MODAL_MAX_DEPTH);
    if (++c->items > MODAL_CODEC_MAX_ITEMS)
        return path_fail(c->err, MODAL_ELIMIT, at,
                         "the message would hold more than %u values "
                         "(MODAL_CODEC_MAX_ITEMS); send numbers as arrays "
                         "or split the message",
                         MODAL_CODEC_MAX_ITEMS);
    switch (v->type) {
    case MODAL_TYPE_NULL:
        *out = cJSON_CreateNull();
        break;
    case MODAL_TYPE_BOOL:
        *out = cJSON_CreateBool(v->u.b);
        break;
    case MODAL_TYPE_INT:
        return enc_int(c, v->u.i, at, out);
    case MODAL_TYPE_FLOAT:
        return enc_float(c, v->u.f, at, out);
    case MODAL_TYPE_STRING:
        /* Strings hold no NUL (modal_string_n refuses one). */
        *out = cJSON_CreateString(v->u.str.p);
        break;
    case MODAL_TYPE_BYTES:
        return enc_bytes(c, v, at, out);
    case MODAL_TYPE_ARRAY:
        return enc_array(c, v, at, out);
    case MODAL_TYPE_LIST:
        return enc_list(c, v, depth, at, out);
    case MODAL_TYPE_MAP:
        return enc_map(c, v, depth, at, out);
    default:
        return path_fail(c->err, MODAL_EINVAL, at,
                         "value of unknown type %d; build values with the "
                         "modal_* constructors",
                         (int)v->type);
    }
    return *out != NULL ? MODAL_OK : enc_oom(c, at);
}

cJSON *modal__value_to_json(const modal_value *v, modal__enc *enc,
                            modal_error *err)
{
    if (enc == NULL) {
        modal__fail(err, MODAL_EINVAL, "modal__value_to_json: enc is NULL");
        return NULL;
    }
    enc_ctx c = {enc, 0, err};
    path_seg root = {NULL, SEG_ROOT, "$", 0};
    size_t natt = enc->natt;
    cJSON *j;
    if (enc_value(&c, v, 1, &root, &j) != MODAL_OK) {
        /* Forget the attachments of the part that was not encoded. */
        enc->natt = natt;
        return NULL;
    }
    modal__ok(err);
    return j;
}

/*
 * The start offset of each attachment is kept after the head bytes, in the
 * same allocation (modal__enc has no field for it), so a read at any
 * offset finds its attachment by binary search rather than a scan.
 */
static size_t offsets_at(size_t head_len)
{
    return (head_len + sizeof(size_t) - 1) & ~(sizeof(size_t) - 1);
}

static const size_t *enc_offsets(const modal__enc *enc)
{
    return (const size_t *)(const void *)(enc->head +
                                          offsets_at(enc->head_len));
}

modal_status modal__enc_finish(modal__enc *enc, const cJSON *envelope,
                               modal_error *err)
{
    if (enc == NULL || envelope == NULL)
        return modal__fail(err, MODAL_EINVAL,
                           "modal__enc_finish: enc or envelope is NULL");
    if (enc->natt > MODAL_CODEC_MAX_ATTACH)
        return modal__fail(err, MODAL_ELIMIT,
                           "message has %zu attachments, more than "
                           "MODAL_CODEC_MAX_ATTACH (%u)",
                           enc->natt, MODAL_CODEC_MAX_ATTACH);
    char *json = cJSON_PrintUnformatted(envelope);
    if (json == NULL)
        return modal__fail(err, MODAL_ENOMEM,
                           "out of memory rendering the JSON envelope");
    size_t elen = strlen(json);
    if (elen > MODAL_CODEC_MAX_ENVELOPE) {
        cJSON_free(json);
        return modal__fail(err, MODAL_ELIMIT,
                           "JSON envelope of %zu bytes exceeds "
                           "MODAL_CODEC_MAX_ENVELOPE (%u); send large data "
                           "as bytes or arrays, which travel outside it",
                           elen, MODAL_CODEC_MAX_ENVELOPE);
    }
    /* Both bounds above keep these sums far from overflow. */
    size_t natt = enc->natt;
    size_t head_len = MODAL__FRAME_FIXED + 8 * natt + elen;
    size_t unpadded = head_len;
    if (natt > 0 && align_up(head_len, &head_len) != 0)
        goto too_big;
    size_t tab = offsets_at(head_len);
    if (natt > (SIZE_MAX - tab) / sizeof(size_t))
        goto too_big;
    uint8_t *head = modal__malloc(tab + natt * sizeof(size_t));
    if (head == NULL) {
        cJSON_free(json);
        return modal__fail(err, MODAL_ENOMEM,
                           "out of memory laying out a frame of %zu "
                           "attachments",
                           natt);
    }
    size_t *offs = (size_t *)(void *)(head + tab);
    size_t off = head_len;
    for (size_t i = 0; i < natt; i++) {
        if (i > 0 && align_up(off, &off) != 0) {
            free(head);
            goto too_big;
        }
        offs[i] = off;
        if (enc->att[i].iov_len > SIZE_MAX - off) {
            free(head);
            goto too_big;
        }
        off += enc->att[i].iov_len;
    }

    memcpy(head, MODAL__FRAME_MAGIC, 4);
    modal__put16(head + 4, MODAL__FRAME_VERSION);
    modal__put16(head + 6, 0);
    modal__put32(head + 8, (uint32_t)elen);
    modal__put32(head + 12, (uint32_t)natt);
    for (size_t i = 0; i < natt; i++)
        modal__put64(head + MODAL__FRAME_FIXED + 8 * i, (uint64_t)enc->att[i].iov_len);
    memcpy(head + MODAL__FRAME_FIXED + 8 * natt, json, elen);
    memset(head + unpadded, 0, head_len - unpadded);
    cJSON_free(json);

    free(enc->head);
    enc->head = head;
    enc->head_len = head_len;
    enc->total = off;
    modal__ok(err);
    return MODAL_OK;

too_big:
    cJSON_free(json);
    return modal__fail(err, MODAL_ELIMIT,
                       "frame of %zu attachments would exceed the address "
                       "space; split the message",
                       natt);
}

/* Zeros for the padding between attachments (always under 64 bytes). */
static const uint8_t zeros[MODAL__FRAME_ALIGN];

/*
 * The longest contiguous run of frame bytes starting at off: *p receives
 * where they are (head, zero padding or an attachment) and the return
 * value their count, 0 at or past the end of the frame.
 */
static size_t seg_at(const modal__enc *enc, size_t off, const uint8_t **p)
{
    if (enc->head == NULL || off >= enc->total)
        return 0;
    if (off < enc->head_len) {
        *p = enc->head + off;
        return enc->head_len - off;
    }
    const size_t *offs = enc_offsets(enc);
    /* The first attachment ending after off; ends never decrease. */
    size_t lo = 0, hi = enc->natt;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (offs[mid] + enc->att[mid].iov_len > off)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (lo == enc->natt)
        return 0; /* unreachable: off < total, the end of the last one */
    if (off < offs[lo]) {
        *p = zeros;
        return offs[lo] - off;
    }
    *p = (const uint8_t *)enc->att[lo].iov_base + (off - offs[lo]);
    return offs[lo] + enc->att[lo].iov_len - off;
}

size_t modal__enc_read(const modal__enc *enc, size_t off, void *dst, size_t n)
{
    if (enc == NULL || dst == NULL)
        return 0;
    uint8_t *d = dst;
    size_t done = 0;
    while (done < n) {
        const uint8_t *p;
        size_t run = seg_at(enc, off + done, &p);
        if (run == 0)
            break;
        if (run > n - done)
            run = n - done;
        memcpy(d + done, p, run);
        done += run;
    }
    return done;
}

/*
 * One gathered write. Sockets go through sendmsg with MSG_NOSIGNAL so a
 * peer that hung up gives EPIPE instead of killing the process with
 * SIGPIPE; other descriptors (pipes, files) use writev.
 */
static ssize_t gather_write(int fd, struct iovec *iov, int n, int *is_sock)
{
    if (*is_sock) {
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)n;
        ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (w >= 0 || errno != ENOTSOCK)
            return w;
        *is_sock = 0;
    }
    return writev(fd, iov, n);
}

modal_status modal__enc_write_fd(const modal__enc *enc, int fd,
                                 modal_error *err)
{
    if (enc == NULL || enc->head == NULL)
        return modal__fail(err, MODAL_EINVAL,
                           "modal__enc_write_fd: the frame is not finished "
                           "(call modal__enc_finish first)");
    enum { BATCH = 64 };
    size_t off = 0;
    int is_sock = 1;
    while (off < enc->total) {
        struct iovec iov[BATCH];
        int n = 0;
        for (size_t o = off; n < BATCH && o < enc->total; n++) {
            const uint8_t *p;
            size_t run = seg_at(enc, o, &p);
            iov[n].iov_base = (void *)p;
            iov[n].iov_len = run;
            o += run;
        }
        ssize_t w = gather_write(fd, iov, n, &is_sock);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* A non-blocking descriptor: wait until it takes more. */
            struct pollfd pfd = {fd, POLLOUT, 0};
            if (poll(&pfd, 1, -1) >= 0 || errno == EINTR)
                continue;
        }
        if (w <= 0)
            return modal__fail(err, MODAL_EIO,
                               "writing a %zu-byte frame to fd %d failed "
                               "after %zu bytes: %s",
                               enc->total, fd, off,
                               w < 0 ? strerror(errno) : "wrote nothing");
        off += (size_t)w;
    }
    modal__ok(err);
    return MODAL_OK;
}

modal_status modal__enc_flatten(const modal__enc *enc, modal__buf **out,
                                modal_error *err)
{
    if (out == NULL)
        return modal__fail(err, MODAL_EINVAL,
                           "modal__enc_flatten: out is NULL");
    *out = NULL;
    if (enc == NULL || enc->head == NULL)
        return modal__fail(err, MODAL_EINVAL,
                           "modal__enc_flatten: the frame is not finished "
                           "(call modal__enc_finish first)");
    modal__buf *b = modal__buf_new(enc->total);
    if (b == NULL)
        return modal__fail(err, MODAL_ENOMEM,
                           "out of memory flattening a %zu-byte frame",
                           enc->total);
    modal__enc_read(enc, 0, b->base, enc->total);
    *out = b;
    modal__ok(err);
    return MODAL_OK;
}

int modal__enc_head_padded(const modal__enc *enc, uint8_t *out, size_t head_len)
{
    if (enc == NULL || enc->head == NULL || enc->natt == 0 || head_len % MODAL__FRAME_ALIGN != 0)
        return -1;
    size_t tab = MODAL__FRAME_FIXED + 8 * enc->natt;
    size_t elen = modal__get32(enc->head + 8);
    if (tab > head_len || elen > head_len - tab || head_len - tab > MODAL_CODEC_MAX_ENVELOPE)
        return -1;
    /* JSON text may begin with white space; the decoder skips it and the
     * padding after the envelope stays empty. */
    size_t pad = head_len - tab - elen;
    memcpy(out, enc->head, tab);
    modal__put32(out + 8, (uint32_t)(head_len - tab));
    memset(out + tab, ' ', pad);
    memcpy(out + tab + pad, enc->head + tab, elen);
    return 0;
}

void modal__enc_free(modal__enc *enc)
{
    if (enc == NULL)
        return;
    free(enc->head);
    free(enc->att);
    memset(enc, 0, sizeof *enc);
}

/* ---- decoder: the frame -------------------------------------------- */

/*
 * cJSON turns "\u0000" into a NUL inside the string it returns, keeps a raw
 * NUL byte inside a string as it is, and gives no length, so "a\u0000b"
 * would read as "a" everywhere after parsing: a name cut short and
 * accepted. No value this library encodes holds a NUL (modal_string_n
 * refuses one) and JSON text holds no raw NUL byte, so both are refused.
 * Runs on JSON cJSON accepted. Returns SIZE_MAX when there is no NUL; else
 * the offset of the string holding one (its opening quote) with *key the
 * last object key before it (the field at fault; NULL when the string is
 * itself a key or no key precedes it), or, for a raw NUL outside any
 * string, its own offset with *stray set.
 */
static size_t json_nul_string(const char *json, size_t len, const char **key, size_t *keylen,
                              int *stray)
{
    *key = NULL;
    *keylen = 0;
    *stray = 0;
    /* The common case costs a memmem and a memchr: no NUL of either kind. */
    if (memmem(json, len, "\\u0000", 6) == NULL && memchr(json, '\0', len) == NULL)
        return SIZE_MAX;
    const char *last_key = NULL;
    size_t last_key_len = 0;
    for (size_t i = 0; i < len; i++) {
        if (json[i] == '\0') {
            *stray = 1;
            return i;
        }
        if (json[i] != '"')
            continue;
        size_t start = i++, nul = 0;
        for (; i < len && json[i] != '"'; i++) {
            if (json[i] == '\0')
                nul = 1;
            if (json[i] == '\\' && i + 1 < len) {
                if (json[i + 1] == 'u' && i + 6 <= len &&
                    memcmp(json + i + 2, "0000", 4) == 0)
                    nul = 1;
                i++; /* the escaped character; \uXXXX digits are plain */
            }
        }
        size_t after = i + 1;
        while (after < len && (json[after] == ' ' || json[after] == '\t' ||
                               json[after] == '\n' || json[after] == '\r'))
            after++;
        int is_key = after < len && json[after] == ':';
        if (nul) {
            *key = is_key ? NULL : last_key;
            *keylen = is_key ? 0 : last_key_len;
            return start;
        }
        if (is_key) {
            last_key = json + start + 1;
            last_key_len = i - start - 1;
        }
    }
    return SIZE_MAX;
}

/* The JSON string starting at its opening quote json[at], as written, for
 * a message: at most 64 bytes, a raw NUL shown as \0. */
static void shown_string(const char *json, size_t len, size_t at, char out[160])
{
    size_t o = 0;
    for (size_t i = at + 1, n = 0; i < len && json[i] != '"' && n < 64; i++, n++) {
        if (json[i] == '\\' && i + 1 < len) {
            out[o++] = json[i++];
            n++;
        }
        if (json[i] == '\0') {
            out[o++] = '\\';
            out[o++] = '0';
        } else {
            out[o++] = json[i];
        }
    }
    out[o] = '\0';
}

modal_status modal__dec_open(modal__buf *buf, int borrow, modal__dec *dec,
                             modal_error *err)
{
    if (dec == NULL)
        return modal__fail(err, MODAL_EINVAL, "modal__dec_open: dec is NULL");
    memset(dec, 0, sizeof *dec);
    if (buf == NULL || (buf->base == NULL && buf->len > 0))
        return modal__fail(err, MODAL_EINVAL, "modal__dec_open: no buffer");
    const uint8_t *b = buf->base;
    size_t len = buf->len;

    if (len < MODAL__FRAME_FIXED)
        return modal__fail(err, MODAL_ECODEC,
                           "frame is %zu bytes, shorter than its %d-byte "
                           "header; the message was truncated or is not a "
                           "libmodal frame",
                           len, MODAL__FRAME_FIXED);
    if (memcmp(b, MODAL__FRAME_MAGIC, 4) != 0)
        return modal__fail(err, MODAL_ECODEC,
                           "bad magic at offset 0: expected \"%s\", got "
                           "%02x %02x %02x %02x; this is not a libmodal frame",
                           MODAL__FRAME_MAGIC, b[0], b[1], b[2], b[3]);
    unsigned version = modal__get16(b + 4);
    if (version != MODAL__FRAME_VERSION)
        return modal__fail(err, MODAL_ECODEC,
                           "unsupported wire version %u at offset 4 (this "
                           "library reads version %d); use the same libmodal "
                           "version on both sides",
                           version, MODAL__FRAME_VERSION);
    unsigned flags = modal__get16(b + 6);
    if (flags != 0)
        return modal__fail(err, MODAL_ECODEC,
                           "unknown flags 0x%04x at offset 6 (version %d "
                           "defines none)",
                           flags, MODAL__FRAME_VERSION);
    uint32_t elen = modal__get32(b + 8);
    uint32_t natt = modal__get32(b + 12);
    if (elen > MODAL_CODEC_MAX_ENVELOPE)
        return modal__fail(err, MODAL_ELIMIT,
                           "envelope length %" PRIu32 " at offset 8 exceeds "
                           "MODAL_CODEC_MAX_ENVELOPE (%u)",
                           elen, MODAL_CODEC_MAX_ENVELOPE);
    if (natt > MODAL_CODEC_MAX_ATTACH)
        return modal__fail(err, MODAL_ELIMIT,
                           "attachment count %" PRIu32 " at offset 12 exceeds "
                           "MODAL_CODEC_MAX_ATTACH (%u)",
                           natt, MODAL_CODEC_MAX_ATTACH);
    /* Every length must be in the buffer before a table is allocated. */
    if ((len - MODAL__FRAME_FIXED) / 8 < natt)
        return modal__fail(err, MODAL_ECODEC,
                           "frame of %zu bytes is too short for the %" PRIu32
                           " attachment lengths its header announces",
                           len, natt);
    size_t json_off = MODAL__FRAME_FIXED + 8 * (size_t)natt;
    if (len - json_off < elen)
        return modal__fail(err, MODAL_ECODEC,
                           "envelope of %" PRIu32 " bytes at offset %zu runs "
                           "past the end of the %zu-byte frame",
                           elen, json_off, len);
    size_t json_end = json_off + elen;

    dec->att_off = modal__calloc(natt, sizeof *dec->att_off);
    dec->att_len = modal__calloc(natt, sizeof *dec->att_len);
    dec->att_used = modal__calloc(natt, 1);
    if (dec->att_off == NULL || dec->att_len == NULL || dec->att_used == NULL) {
        modal__dec_close(dec);
        return modal__fail(err, MODAL_ENOMEM,
                           "out of memory reading %" PRIu32 " attachments",
                           natt);
    }
    dec->natt = natt;

    /* Lay out the attachments exactly as the encoder does. */
    size_t off = json_end;
    for (size_t i = 0; i < natt; i++) {
        uint64_t alen = modal__get64(b + MODAL__FRAME_FIXED + 8 * i);
        if (align_up(off, &off) != 0 || off > len || alen > len - off) {
            modal__dec_close(dec);
            return modal__fail(err, MODAL_ECODEC,
                               "attachment %zu (length %" PRIu64 " at offset "
                               "%zu) runs past the end of the %zu-byte frame",
                               i, alen, MODAL__FRAME_FIXED + 8 * i, len);
        }
        dec->att_off[i] = off;
        dec->att_len[i] = (size_t)alen;
        off += (size_t)alen;
    }
    if (off != len) {
        modal__dec_close(dec);
        return modal__fail(err, MODAL_ECODEC,
                           "frame is %zu bytes but its header accounts for "
                           "%zu; %zu trailing bytes",
                           len, off, len - off);
    }
    /* Padding must be zeros, so that each message has one encoding. */
    size_t gap = json_end;
    for (size_t i = 0; i < natt; i++) {
        for (size_t o = gap; o < dec->att_off[i]; o++) {
            if (b[o] != 0) {
                modal__dec_close(dec);
                return modal__fail(err, MODAL_ECODEC,
                                   "non-zero padding byte 0x%02x at offset "
                                   "%zu before attachment %zu",
                                   b[o], o, i);
            }
        }
        gap = dec->att_off[i] + dec->att_len[i];
    }

    const char *json = (const char *)b + json_off;
    const char *end = NULL;
    dec->env = cJSON_ParseWithLengthOpts(json, elen, &end, 0);
    if (dec->env == NULL) {
        size_t at = end != NULL && end >= json ? (size_t)(end - json) : 0;
        modal__dec_close(dec);
        return modal__fail(err, MODAL_ECODEC,
                           "envelope is not valid JSON (or nests deeper than "
                           "%d levels): error at envelope byte %zu (frame "
                           "offset %zu)",
                           CJSON_NESTING_LIMIT, at, json_off + at);
    }
    if (end != json + elen) {
        size_t at = (size_t)(end - json);
        modal__dec_close(dec);
        return modal__fail(err, MODAL_ECODEC,
                           "trailing bytes after the JSON envelope at "
                           "envelope byte %zu (frame offset %zu)",
                           at, json_off + at);
    }
    const char *key;
    size_t keylen;
    int stray;
    size_t at = json_nul_string(json, elen, &key, &keylen, &stray);
    if (at != SIZE_MAX) {
        char shown[160];
        if (!stray)
            shown_string(json, elen, at, shown);
        modal__dec_close(dec);
        if (stray)
            return modal__fail(err, MODAL_ECODEC,
                               "envelope byte %zu (frame offset %zu) is a NUL byte, which JSON "
                               "text cannot hold", at, json_off + at);
        if (key == NULL)
            return modal__fail(err, MODAL_ECODEC,
                               "envelope: the string \"%s\" holds a NUL (\\u0000 or a NUL byte) "
                               "at envelope byte %zu; no name, key or string may contain a NUL",
                               shown, at);
        return modal__fail(err, MODAL_ECODEC,
                           "envelope: \"%.*s\" = \"%s\" holds a NUL (\\u0000 or a NUL byte) at "
                           "envelope byte %zu; no name or string may contain a NUL",
                           (int)(keylen > 64 ? 64 : keylen), key, shown, at);
    }
    dec->buf = modal__buf_ref(buf);
    dec->borrow = borrow;
    modal__ok(err);
    return MODAL_OK;
}

void modal__dec_close(modal__dec *dec)
{
    if (dec == NULL)
        return;
    cJSON_Delete(dec->env);
    free(dec->att_off);
    free(dec->att_len);
    free(dec->att_used);
    modal__buf_unref(dec->buf);
    memset(dec, 0, sizeof *dec);
}

/* ---- decoder: values ----------------------------------------------- */

static modal_status dec_value(modal__dec *dec, const cJSON *j, size_t depth,
                              const path_seg *at, modal_value **out,
                              modal_error *err);

static modal_status dec_oom(modal_error *err, const path_seg *at)
{
    return path_fail(err, MODAL_ENOMEM, at,
                     "out of memory decoding this value");
}

/* What a JSON element is, for "expected X, got Y" messages. */
static const char *json_kind(const cJSON *j)
{
    if (cJSON_IsNull(j))
        return "null";
    if (cJSON_IsBool(j))
        return "a bool";
    if (cJSON_IsNumber(j))
        return "a number";
    if (cJSON_IsString(j))
        return "a string";
    if (cJSON_IsArray(j))
        return "an array";
    if (cJSON_IsObject(j))
        return "an object";
    return "an invalid element";
}

/* True when d is a whole number in [lo, 2^53]. NaN fails every test. */
static int json_whole(double d, double lo)
{
    return d >= lo && d <= EXACT_INT_MAX_D && d == floor(d);
}

static size_t json_count(const cJSON *j)
{
    size_t n = 0;
    for (const cJSON *c = j->child; c != NULL; c = c->next)
        n++;
    return n;
}

/* Claim attachment k (the JSON element `field` of the value at `at`). */
static modal_status dec_attach(modal__dec *dec, const cJSON *k,
                               const path_seg *at, const char *field,
                               size_t *index, modal_error *err)
{
    if (!cJSON_IsNumber(k) || !json_whole(k->valuedouble, 0))
        return path_fail(err, MODAL_ECODEC, at,
                         "\"%s\" must be an attachment number, got %s", field,
                         json_kind(k));
    if (k->valuedouble >= (double)dec->natt)
        return path_fail(err, MODAL_ECODEC, at,
                         "attachment %.0f is out of range: the frame has %zu "
                         "attachments",
                         k->valuedouble, dec->natt);
    size_t i = (size_t)k->valuedouble;
    if (dec->att_used[i])
        return path_fail(err, MODAL_ECODEC, at,
                         "attachment %zu is already used by another value; "
                         "each attachment backs one value",
                         i);
    dec->att_used[i] = 1;
    *index = i;
    return MODAL_OK;
}

/* {"i":"<decimal>"}: an integer beyond 2^53, parsed strictly. */
static modal_status dec_bigint(const cJSON *s, const path_seg *at,
                               modal_value **out, modal_error *err)
{
    if (!cJSON_IsString(s))
        return path_fail(err, MODAL_ECODEC, at,
                         "\"i\" must be a decimal string, got %s",
                         json_kind(s));
    const char *text = s->valuestring;
    char shown[48];
    sanitize(shown, sizeof shown, text);
    /* strtoll alone would skip spaces and take a '+'. */
    int digit = text[0] == '-' ? text[1] : text[0];
    char *end = (char *)(uintptr_t)text;
    errno = 0;
    long long i = digit >= '0' && digit <= '9' ? strtoll(text, &end, 10) : 0;
    if (digit < '0' || digit > '9' || *end != '\0')
        return path_fail(err, MODAL_ECODEC, at,
                         "\"i\" is \"%s\", not a decimal integer", shown);
    if (errno == ERANGE)
        return path_fail(err, MODAL_ECODEC, at,
                         "\"i\" is \"%s\", outside the 64-bit integer range",
                         shown);
    *out = modal_int((int64_t)i);
    return *out != NULL ? MODAL_OK : dec_oom(err, at);
}

/* {"f":"<hex float>"} or "nan", "inf", "-inf". */
static modal_status dec_float(const cJSON *s, const path_seg *at,
                              modal_value **out, modal_error *err)
{
    if (!cJSON_IsString(s))
        return path_fail(err, MODAL_ECODEC, at,
                         "\"f\" must be a hex float string, got %s",
                         json_kind(s));
    const char *text = s->valuestring;
    double f = 0;
    if (strcmp(text, "nan") == 0) {
        f = NAN;
    } else if (strcmp(text, "inf") == 0) {
        f = INFINITY;
    } else if (strcmp(text, "-inf") == 0) {
        f = -INFINITY;
    } else {
        /*
         * Only the encoder's own form: an optional '-', then "0x". strtod
         * would also take decimals, spaces, '+' and "infinity".
         */
        const char *p = text[0] == '-' ? text + 1 : text;
        char *end = NULL;
        int ok = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
        if (ok) {
            errno = 0;
            f = strtod(text, &end);
            ok = *end == '\0' && !(errno == ERANGE && isinf(f));
        }
        if (!ok) {
            char shown[48];
            sanitize(shown, sizeof shown, text);
            return path_fail(err, MODAL_ECODEC, at,
                             "\"f\" is \"%s\", not a finite hex float (like "
                             "\"0x1.8p+1\") or nan, inf, -inf",
                             shown);
        }
    }
    *out = modal_float(f);
    return *out != NULL ? MODAL_OK : dec_oom(err, at);
}

/* {"b":k}. */
static modal_status dec_bytes(modal__dec *dec, const cJSON *k,
                              const path_seg *at, modal_value **out,
                              modal_error *err)
{
    size_t i;
    modal_status st = dec_attach(dec, k, at, "b", &i, err);
    if (st != MODAL_OK)
        return st;
    const uint8_t *p = dec->buf->base + dec->att_off[i];
    *out = dec->borrow ? modal__bytes_borrow(dec->buf, p, dec->att_len[i])
                       : modal_bytes(p, dec->att_len[i]);
    return *out != NULL ? MODAL_OK : dec_oom(err, at);
}

/* {"a":k,"t":"f32","s":[d0,d1,..]}. */
static modal_status dec_array(modal__dec *dec, const cJSON *j, size_t nkeys,
                              const path_seg *at, modal_value **out,
                              modal_error *err)
{
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "a");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "t");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "s");
    /* Three keys, each of a, t and s present: exactly those, once each. */
    if (nkeys != 3 || t == NULL || s == NULL)
        return path_fail(err, MODAL_ECODEC, at,
                         "an array object has exactly the keys a, t and s; "
                         "this one has %zu keys%s%s",
                         nkeys, t == NULL ? ", no \"t\"" : "",
                         s == NULL ? ", no \"s\"" : "");
    if (!cJSON_IsString(t))
        return path_fail(err, MODAL_ECODEC, at,
                         "array \"t\" must be a dtype name, got %s",
                         json_kind(t));
    int dt = modal__dtype_parse(t->valuestring);
    if (dt < 0) {
        char shown[40];
        sanitize(shown, sizeof shown, t->valuestring);
        return path_fail(err, MODAL_ECODEC, at,
                         "unknown dtype \"%s\"; expected one of u8, i8, i32, "
                         "u32, i64, u64, f32, f64",
                         shown);
    }
    if (!cJSON_IsArray(s))
        return path_fail(err, MODAL_ECODEC, at,
                         "array \"s\" must be a list of extents, got %s",
                         json_kind(s));
    size_t shape[MODAL_MAX_NDIM];
    size_t ndim = 0;
    for (const cJSON *d = s->child; d != NULL; d = d->next) {
        if (ndim == MODAL_MAX_NDIM)
            return path_fail(err, MODAL_ECODEC, at,
                             "array shape has more than %d dimensions "
                             "(MODAL_MAX_NDIM)",
                             MODAL_MAX_NDIM);
        if (!cJSON_IsNumber(d) || !json_whole(d->valuedouble, 0))
            return path_fail(err, MODAL_ECODEC, at,
                             "array extent %zu must be a whole number in "
                             "0..2^53, got %s",
                             ndim,
                             cJSON_IsNumber(d) ? "another number"
                                               : json_kind(d));
        shape[ndim++] = (size_t)d->valuedouble;
    }
    if (ndim == 0)
        return path_fail(err, MODAL_ECODEC, at,
                         "array shape is empty; arrays have 1..%d dimensions",
                         MODAL_MAX_NDIM);
    size_t i;
    modal_status st = dec_attach(dec, k, at, "a", &i, err);
    if (st != MODAL_OK)
        return st;
    size_t esize = modal_dtype_size((modal_dtype)dt);
    size_t count = modal__shape_count((modal_dtype)dt, ndim, shape);
    char shown[8 * 24];
    if (count == SIZE_MAX || count * esize != dec->att_len[i]) {
        shape_render(shown, sizeof shown, ndim, shape);
        if (count == SIZE_MAX)
            return path_fail(err, MODAL_ECODEC, at,
                             "array shape %s of %s overflows the address "
                             "space",
                             shown, modal_dtype_name((modal_dtype)dt));
        return path_fail(err, MODAL_ECODEC, at,
                         "array shape %s needs %zu bytes of %s but "
                         "attachment %zu has %zu",
                         shown, count * esize,
                         modal_dtype_name((modal_dtype)dt), i,
                         dec->att_len[i]);
    }
    const uint8_t *p = dec->buf->base + dec->att_off[i];
    /*
     * Attachments sit at multiples of 64 from the frame start, so the data
     * is aligned whenever the buffer is; a buffer that is not gets a copy
     * rather than a misaligned array.
     */
    if (dec->borrow && (uintptr_t)p % esize == 0)
        *out = modal__array_borrow(dec->buf, (modal_dtype)dt, p, ndim, shape);
    else
        *out = modal_array_nd((modal_dtype)dt, p, ndim, shape);
    return *out != NULL ? MODAL_OK : dec_oom(err, at);
}

static modal_status dec_list(modal__dec *dec, const cJSON *j, size_t depth,
                             const path_seg *at, modal_value **out,
                             modal_error *err)
{
    size_t n = json_count(j);
    modal_value *list = modal_list();
    if (list == NULL)
        return dec_oom(err, at);
    /* Exactly n slots: the JSON already holds n elements, so n is bounded. */
    if (n > 0) {
        list->u.list.items = n <= SIZE_MAX / sizeof(modal_value *)
                                 ? modal__malloc(n * sizeof(modal_value *))
                                 : NULL;
        if (list->u.list.items == NULL) {
            modal_value_free(list);
            return dec_oom(err, at);
        }
        list->u.list.cap = n;
    }
    size_t i = 0;
    for (const cJSON *c = j->child; c != NULL; c = c->next, i++) {
        path_seg seg = {at, SEG_INDEX, NULL, i};
        modal_value *item;
        modal_status st = dec_value(dec, c, depth + 1, &seg, &item, err);
        if (st != MODAL_OK) {
            modal_value_free(list);
            return st;
        }
        list->u.list.items[list->u.list.len++] = item;
    }
    *out = list;
    return MODAL_OK;
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * Find a duplicate key among the n members of j: *dup receives it, or NULL.
 * Sorting keeps this O(n log n), where modal_map_set's linear lookup would
 * make a hostile map of a million keys quadratic. -1 when out of memory.
 */
static int find_duplicate(const cJSON *j, size_t n, const char **dup)
{
    *dup = NULL;
    if (n < 2)
        return 0;
    const char **keys = modal__malloc(n * sizeof *keys);
    if (keys == NULL)
        return -1;
    size_t i = 0;
    for (const cJSON *c = j->child; c != NULL; c = c->next)
        keys[i++] = c->string != NULL ? c->string : "";
    qsort(keys, n, sizeof *keys, key_cmp);
    for (i = 1; i < n && *dup == NULL; i++) {
        if (strcmp(keys[i - 1], keys[i]) == 0)
            *dup = keys[i];
    }
    free(keys);
    return 0;
}

/* {"m":{key:value,..}}; the map is built directly, in member order. */
static modal_status dec_map(modal__dec *dec, const cJSON *j, size_t depth,
                            const path_seg *at, modal_value **out,
                            modal_error *err)
{
    if (!cJSON_IsObject(j))
        return path_fail(err, MODAL_ECODEC, at,
                         "\"m\" must be an object of entries, got %s",
                         json_kind(j));
    size_t n = json_count(j);
    if (n > SIZE_MAX / sizeof(char *))
        return dec_oom(err, at);
    const char *dup;
    if (find_duplicate(j, n, &dup) != 0)
        return dec_oom(err, at);
    if (dup != NULL) {
        char shown[64];
        sanitize(shown, sizeof shown, dup);
        return path_fail(err, MODAL_ECODEC, at,
                         "map has the key \"%s\" more than once", shown);
    }
    modal_value *map = modal_map();
    if (map == NULL)
        return dec_oom(err, at);
    if (n > 0) {
        map->u.map.keys = modal__malloc(n * sizeof(char *));
        map->u.map.vals = modal__malloc(n * sizeof(modal_value *));
        if (map->u.map.keys == NULL || map->u.map.vals == NULL) {
            modal_value_free(map);
            return dec_oom(err, at);
        }
        map->u.map.cap = n;
    }
    for (const cJSON *c = j->child; c != NULL; c = c->next) {
        const char *key = c->string != NULL ? c->string : "";
        path_seg seg = {at, SEG_KEY, key, 0};
        modal_value *val;
        modal_status st = dec_value(dec, c, depth + 1, &seg, &val, err);
        if (st != MODAL_OK) {
            modal_value_free(map);
            return st;
        }
        char *copy = modal__strdup(key);
        if (copy == NULL) {
            modal_value_free(val);
            modal_value_free(map);
            return dec_oom(err, &seg);
        }
        map->u.map.keys[map->u.map.len] = copy;
        map->u.map.vals[map->u.map.len] = val;
        map->u.map.len++;
    }
    *out = map;
    return MODAL_OK;
}

/* A tagged object: {"i":..}, {"f":..}, {"b":..}, {"m":..} or an array. */
static modal_status dec_object(modal__dec *dec, const cJSON *j, size_t depth,
                               const path_seg *at, modal_value **out,
                               modal_error *err)
{
    size_t n = json_count(j);
    if (cJSON_GetObjectItemCaseSensitive(j, "a") != NULL)
        return dec_array(dec, j, n, at, out, err);
    const char *tag = n > 0 && j->child->string != NULL ? j->child->string
                                                         : "";
    char shown[40];
    sanitize(shown, sizeof shown, tag);
    if (n != 1)
        return path_fail(err, MODAL_ECODEC, at,
                         "object with %zu keys%s%s%s is not a value; tagged "
                         "objects have one key (i, f, b or m) or the three "
                         "keys a, t and s",
                         n, n > 0 ? " (first \"" : "", n > 0 ? shown : "",
                         n > 0 ? "\")" : "");
    const cJSON *val = j->child;
    if (strcmp(tag, "i") == 0)
        return dec_bigint(val, at, out, err);
    if (strcmp(tag, "f") == 0)
        return dec_float(val, at, out, err);
    if (strcmp(tag, "b") == 0)
        return dec_bytes(dec, val, at, out, err);
    if (strcmp(tag, "m") == 0)
        return dec_map(dec, val, depth, at, out, err);
    return path_fail(err, MODAL_ECODEC, at,
                     "unknown tag \"%s\"; expected i, f, b, m, or a with t "
                     "and s",
                     shown);
}

static modal_status dec_value(modal__dec *dec, const cJSON *j, size_t depth,
                              const path_seg *at, modal_value **out,
                              modal_error *err)
{
    *out = NULL;
    if (depth > MODAL_MAX_DEPTH)
        return path_fail(err, MODAL_ELIMIT, at,
                         "value nests deeper than %d levels "
                         "(MODAL_MAX_DEPTH)",
                         MODAL_MAX_DEPTH);
    if (dec->items >= MODAL_CODEC_MAX_ITEMS)
        return path_fail(err, MODAL_ELIMIT, at,
                         "message holds more than %u values "
                         "(MODAL_CODEC_MAX_ITEMS)",
                         MODAL_CODEC_MAX_ITEMS);
    dec->items++;
    if (cJSON_IsNull(j)) {
        *out = modal_null();
    } else if (cJSON_IsBool(j)) {
        *out = modal_bool(cJSON_IsTrue(j));
    } else if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (!json_whole(d, -EXACT_INT_MAX_D))
            return path_fail(err, MODAL_ECODEC, at,
                             "number %.17g is not an integer within +-2^53; "
                             "other integers travel as {\"i\":\"<decimal>\"} "
                             "and floats as {\"f\":\"<hex float>\"}",
                             d);
        *out = modal_int((int64_t)d);
    } else if (cJSON_IsString(j)) {
        *out = modal_string(j->valuestring);
    } else if (cJSON_IsArray(j)) {
        return dec_list(dec, j, depth, at, out, err);
    } else if (cJSON_IsObject(j)) {
        return dec_object(dec, j, depth, at, out, err);
    } else {
        return path_fail(err, MODAL_ECODEC, at, "unexpected JSON element");
    }
    return *out != NULL ? MODAL_OK : dec_oom(err, at);
}

modal_status modal__value_from_json(modal__dec *dec, const cJSON *j,
                                    const char *path, modal_value **out,
                                    modal_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (dec == NULL || dec->buf == NULL || out == NULL)
        return modal__fail(err, MODAL_EINVAL,
                           "modal__value_from_json: decoder not open or out "
                           "is NULL");
    path_seg root = {NULL, SEG_ROOT, path != NULL ? path : "$", 0};
    if (j == NULL)
        return path_fail(err, MODAL_ECODEC, &root, "value is missing");
    modal_status st = dec_value(dec, j, 1, &root, out, err);
    if (st == MODAL_OK)
        modal__ok(err);
    return st;
}

/* ---- public API ------------------------------------------------------ */

modal_status modal_value_encode(const modal_value *v, void **buf, size_t *len,
                                modal_error *err)
{
    if (buf == NULL)
        return modal__null_arg(err, "modal_value_encode", "buf",
                               "pass the address of a void * to receive the frame");
    if (len == NULL)
        return modal__null_arg(err, "modal_value_encode", "len",
                               "pass the address of a size_t to receive its size");
    *buf = NULL;
    *len = 0;
    if (v == NULL)
        return modal__fail(err, MODAL_EINVAL,
                           "modal_value_encode: the value is NULL (a "
                           "constructor probably failed)");
    /* A local error record, so a failure's code is known without err. */
    modal_error local;
    if (err == NULL)
        err = &local;
    modal__enc enc = {0};
    cJSON *env = cJSON_CreateObject();
    cJSON *ver = cJSON_CreateNumber(1);
    if (env == NULL || ver == NULL) {
        cJSON_Delete(env);
        cJSON_Delete(ver);
        return modal__fail(err, MODAL_ENOMEM,
                           "out of memory encoding a value");
    }
    cJSON_AddItemToObjectCS(env, "v", ver);
    cJSON *j = modal__value_to_json(v, &enc, err);
    if (j == NULL) {
        cJSON_Delete(env);
        modal__enc_free(&enc);
        return err->code;
    }
    cJSON_AddItemToObjectCS(env, "value", j);
    modal_status st = modal__enc_finish(&enc, env, err);
    cJSON_Delete(env);
    if (st != MODAL_OK) {
        modal__enc_free(&enc);
        return st;
    }
    void *out = modal__malloc(enc.total);
    if (out == NULL) {
        size_t total = enc.total;
        modal__enc_free(&enc);
        return modal__fail(err, MODAL_ENOMEM,
                           "out of memory for a %zu-byte encoded value",
                           total);
    }
    modal__enc_read(&enc, 0, out, enc.total);
    *buf = out;
    *len = enc.total;
    modal__enc_free(&enc);
    modal__ok(err);
    return MODAL_OK;
}

/* The envelope must be exactly {"v":1,"value":...}. */
static modal_status check_envelope(const cJSON *env, const cJSON **value,
                                   modal_error *err)
{
    if (!cJSON_IsObject(env))
        return modal__fail(err, MODAL_ECODEC,
                           "$: envelope must be an object {\"v\":1,"
                           "\"value\":...}, got %s",
                           json_kind(env));
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(env, "v");
    *value = cJSON_GetObjectItemCaseSensitive(env, "value");
    if (v == NULL || *value == NULL)
        return modal__fail(err, MODAL_ECODEC,
                           "$: envelope lacks \"%s\"; expected {\"v\":1,"
                           "\"value\":...}",
                           v == NULL ? "v" : "value");
    for (const cJSON *c = env->child; c != NULL; c = c->next) {
        if (c != v && c != *value) {
            char shown[40];
            sanitize(shown, sizeof shown, c->string);
            return modal__fail(err, MODAL_ECODEC,
                               "$: unexpected envelope key \"%s\"; expected "
                               "only \"v\" and \"value\"",
                               shown);
        }
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != 1.0)
        return modal__fail(err, MODAL_ECODEC,
                           "$.v: unsupported envelope version%s%.17g (this "
                           "library reads 1)",
                           cJSON_IsNumber(v) ? " " : ": not a number, ",
                           cJSON_IsNumber(v) ? v->valuedouble : 0.0);
    return MODAL_OK;
}

modal_status modal_value_decode(const void *buf, size_t len,
                                modal_value **out, modal_error *err)
{
    if (out == NULL)
        return modal__null_arg(err, "modal_value_decode", "out",
                               "pass the address of a modal_value * to receive the value");
    *out = NULL;
    if (buf == NULL && len > 0)
        return modal__fail(err, MODAL_EINVAL,
                           "modal_value_decode: buf is NULL but len is %zu; pass the "
                           "frame's bytes, or len 0",
                           len);
    /*
     * A temporary, non-owning view of the caller's bytes. Decoding with
     * borrow off copies every payload, so no value refers to the caller's
     * buffer, and the view's own reference keeps it from ever being freed.
     */
    modal__buf view;
    atomic_init(&view.refs, 1);
    view.base = (uint8_t *)(uintptr_t)buf;
    view.len = len;
    view.kind = MODAL__BUF_HEAP;

    modal__dec dec;
    modal_status st = modal__dec_open(&view, 0, &dec, err);
    if (st != MODAL_OK)
        return st;
    const cJSON *value = NULL;
    modal_value *v = NULL;
    st = check_envelope(dec.env, &value, err);
    if (st == MODAL_OK)
        st = modal__value_from_json(&dec, value, "$.value", &v, err);
    for (size_t i = 0; st == MODAL_OK && i < dec.natt; i++) {
        if (!dec.att_used[i])
            st = modal__fail(err, MODAL_ECODEC,
                             "attachment %zu (%zu bytes at offset %zu) is "
                             "not referenced by any value",
                             i, dec.att_len[i], dec.att_off[i]);
    }
    modal__dec_close(&dec);
    if (st != MODAL_OK) {
        modal_value_free(v);
        return st;
    }
    *out = v;
    modal__ok(err);
    return MODAL_OK;
}
