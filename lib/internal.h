/*
 * internal.h: declarations shared by the library's source files, its unit
 * tests and the runtime. Nothing here is part of the public API; symbols
 * named modal__* are hidden from the shared library by the version script.
 */
#ifndef MODAL_INTERNAL_H
#define MODAL_INTERNAL_H

#include "modal.h"
#include "protocol.h" /* the wire's paths, headers, ids and name checks */

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/uio.h>

#include <cjson/cJSON.h>

/* ---- little-endian packing ---------------------------------------- */

/*
 * Frames, bundles and worker messages are packed byte by byte rather than
 * through struct casts, so they are the same on every host and no
 * unaligned access is ever made.
 */
static inline void modal__put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void modal__put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void modal__put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t modal__get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t modal__get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t modal__get64(const uint8_t *p)
{
    return (uint64_t)modal__get32(p) | (uint64_t)modal__get32(p + 4) << 32;
}

/* ---- errors (lib/error.c) ---------------------------------------- */

/*
 * Fill err (when non-NULL) with code and a formatted message, and return
 * code, so error paths read `return modal__fail(err, MODAL_EINVAL, ...)`.
 */
modal_status modal__fail(modal_error *err, modal_status code, const char *fmt,
                         ...) __attribute__((format(printf, 3, 4)));
modal_status modal__vfail(modal_error *err, modal_status code,
                          const char *fmt, va_list ap);
/*
 * The MODAL_EINVAL a public function gives for a NULL pointer it cannot
 * accept: "api: param is NULL; hint".
 */
modal_status modal__null_arg(modal_error *err, const char *api, const char *param,
                             const char *hint);
/* The hint for a NULL modal_function pointer. */
#define MODAL__FN_HINT "pass &name of a function defined with MODAL_FUNCTION"
/* Set err to MODAL_OK with an empty message. */
void modal__ok(modal_error *err);
/* Send a message to the user's log hook, if any. */
void modal__log(modal_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- allocation (lib/alloc.c) ------------------------------------ */

/*
 * Every allocation of the library goes through these, so tests can make
 * the n-th allocation fail and prove each constructor fails cleanly.
 */
void *modal__malloc(size_t n);
void *modal__calloc(size_t n, size_t size);
void *modal__realloc(void *p, size_t n);
char *modal__strndup(const char *s, size_t n);
char *modal__strdup(const char *s);
/*
 * Room for need (> 0) bytes in the growable buffer p of *cap bytes: p
 * itself when it is large enough, else p reallocated to the first power-
 * of-two multiple of first (or of *cap) that fits, with *cap updated.
 * NULL when out of memory: p and *cap are then unchanged.
 */
void *modal__reserve(void *p, size_t *cap, size_t need, size_t first);
/*
 * Test hook: after `n` more successful allocations, every allocation fails
 * (n < 0 turns injection off). Returns the number of allocations made since
 * the last call, so a test can count the allocations of an operation.
 */
long modal__alloc_fail_after(long n);

/* ---- shared buffers ---------------------------------------------- */

/*
 * A reference-counted block of bytes that decoded values may borrow from,
 * so a 1 GiB array received into a buffer (or mapped from a memfd) reaches
 * the function without another copy. The last reference releases it.
 */
typedef struct modal__buf {
    atomic_long refs;
    uint8_t *base;
    size_t len;
    int kind; /* MODAL__BUF_HEAP, _MMAP, _VIEW, _ANON, _MEMFD */
    struct modal__buf *parent; /* for a view: the buffer it lies in */
    size_t map_len;            /* for _ANON and _MEMFD: the mapping's real size */
    int fd;                    /* for _MEMFD: the memfd, owned */
} modal__buf;

enum { MODAL__BUF_HEAP = 0, MODAL__BUF_MMAP = 1, MODAL__BUF_VIEW = 2, MODAL__BUF_ANON = 3,
       MODAL__BUF_MEMFD = 4 };

/*
 * A buffer of len bytes (contents uninitialised), refs = 1. From
 * MODAL__BIG_ALLOC up it is an anonymous mapping populated in one go
 * (MAP_POPULATE), or a spare one reused, since faulting in fresh pages one
 * by one dominates the cost of building and receiving large arrays; below
 * that, heap memory whose base may be realloc'd by its owner.
 */
#define MODAL__BIG_ALLOC (4u << 20)
modal__buf *modal__buf_new(size_t len);
/* Wrap memory from mmap(len); munmap'd on release. refs = 1. */
modal__buf *modal__buf_wrap_mmap(void *base, size_t len);
/* A view of len bytes at off inside parent (which it keeps alive). */
modal__buf *modal__buf_view(modal__buf *parent, size_t off, size_t len);
modal__buf *modal__buf_ref(modal__buf *b);
void modal__buf_unref(modal__buf *b);
/*
 * A buffer of len bytes that lives in a memfd, so that it can be handed to
 * another process as it is (lib/memfd_array.c, docs/architecture.md, "The bytes of a call").
 * The memfd holds MODAL__MEMFD_HEAD bytes of room for a frame head, then
 * the len bytes at base (page-aligned); the mapping is shared, writable and
 * populated. NULL when the memfd cannot be made (the caller falls back to
 * modal__buf_new).
 */
#define MODAL__MEMFD_HEAD 4096u
modal__buf *modal__buf_new_memfd(size_t len);
/*
 * Turn the memfd buffer b into a sealed frame of MODAL__MEMFD_HEAD + b->len
 * bytes: head (exactly MODAL__MEMFD_HEAD bytes) is written in front of the
 * data, b's mapping becomes read-only, and the memfd is sealed against
 * every change. Returns the memfd (still owned by b), or -1 with errno set
 * when b is not an unsealed memfd buffer or a step fails; b stays readable
 * either way.
 */
int modal__buf_memfd_seal_frame(modal__buf *b, const uint8_t *head);
/*
 * Set in worker mode: large arrays a worker makes (modal_array_new) live
 * in memfds, so its result travels to the runtime without a copy.
 */
extern bool modal__arrays_in_memfd;

/* ---- values (lib/value.c) ---------------------------------------- */

struct modal_value {
    modal_type type;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            char *p; /* owned, NUL-terminated */
            size_t len;
        } str;
        struct {
            uint8_t *p;          /* owned unless backing != NULL */
            size_t len;
            modal__buf *backing; /* holds p's memory when borrowed */
        } bytes;
        struct {
            void *data;          /* owned unless backing != NULL */
            size_t count;        /* product of shape */
            modal_dtype dtype;
            size_t ndim;
            size_t shape[MODAL_MAX_NDIM];
            modal__buf *backing;
        } arr;
        struct {
            modal_value **items;
            size_t len, cap;
        } list;
        struct {
            char **keys;
            modal_value **vals;
            size_t len, cap;
        } map;
    } u;
};

/*
 * A value whose bytes or array data point into backing (a reference is
 * taken). Used by the decoder so large payloads are not copied.
 */
modal_value *modal__bytes_borrow(modal__buf *backing, const void *p,
                                 size_t len);
modal_value *modal__array_borrow(modal__buf *backing, modal_dtype dtype,
                                 const void *data, size_t ndim,
                                 const size_t *shape);
/* Element count of shape, or SIZE_MAX when the product or bytes overflow. */
size_t modal__shape_count(modal_dtype dtype, size_t ndim, const size_t *shape);
/* Parse "f32" etc.; returns -1 when unknown. */
int modal__dtype_parse(const char *name);

/* ---- codec (lib/codec.c) ----------------------------------------- */

/*
 * Wire frame, all integers little-endian:
 *   0   "MODL"             magic
 *   4   u16 version = 1
 *   6   u16 flags   = 0
 *   8   u32 E              envelope (JSON) length
 *   12  u32 A              attachment count
 *   16  u64 len[A]         attachment lengths
 *   ..  E bytes of JSON
 *   ..  attachments, each starting at a multiple of 64 from the frame start
 * Values inside the envelope: null, true/false, a JSON number for an int
 * within +-2^53, {"i":"<decimal>"} for other ints, {"f":"<hex float>"},
 * a JSON string, {"b":<attachment>}, {"a":<attachment>,"t":"f32","s":[..]},
 * a JSON array for a list, {"m":{..}} for a map.
 */
#define MODAL__FRAME_MAGIC "MODL"
#define MODAL__FRAME_VERSION 1
#define MODAL__FRAME_ALIGN 64
#define MODAL__FRAME_FIXED 16

/* An encoded message as a scatter list: head (header+JSON+pad) then the
 * attachments, borrowed from the values encoded (keep them alive). */
typedef struct modal__enc {
    uint8_t *head;
    size_t head_len;
    struct iovec *att;  /* att[i] borrowed from the encoded values */
    size_t natt, cap;
    size_t total;       /* bytes of the whole frame once finished */
    modal__buf *att0_memfd; /* attachment 0 is all of this memfd buffer */
} modal__enc;

/* Encode v as JSON, registering its binary parts as attachments of enc. */
cJSON *modal__value_to_json(const modal_value *v, modal__enc *enc,
                            modal_error *err);
/* Lay out the frame around envelope; after this, total is known. */
modal_status modal__enc_finish(modal__enc *enc, const cJSON *envelope,
                               modal_error *err);
/* Copy frame bytes [off, off+n) to dst; returns bytes copied. */
size_t modal__enc_read(const modal__enc *enc, size_t off, void *dst, size_t n);
/* Write the whole frame to fd (handles short writes). */
modal_status modal__enc_write_fd(const modal__enc *enc, int fd,
                                 modal_error *err);
/* The whole frame in one new heap buffer. */
modal_status modal__enc_flatten(const modal__enc *enc, modal__buf **out,
                                modal_error *err);
/*
 * The finished frame's head laid out again to exactly head_len bytes (a
 * multiple of 64), so that the first attachment starts at head_len: the
 * envelope is preceded by spaces. Returns 0, or -1 when the frame has no
 * attachment or its head does not fit in head_len.
 */
int modal__enc_head_padded(const modal__enc *enc, uint8_t *out, size_t head_len);
void modal__enc_free(modal__enc *enc);

/* A parsed frame: the envelope and where each attachment lies. */
typedef struct modal__dec {
    cJSON *env;
    modal__buf *buf;     /* referenced while the decoder is open */
    size_t natt;
    size_t *att_off;     /* offsets into buf->base */
    size_t *att_len;
    uint8_t *att_used;   /* each attachment may back one value only */
    size_t items;        /* values decoded so far (MODAL_CODEC_MAX_ITEMS) */
    int borrow;          /* values borrow from buf instead of copying */
} modal__dec;

/* Parse the frame in buf (a reference is taken). */
modal_status modal__dec_open(modal__buf *buf, int borrow, modal__dec *dec,
                             modal_error *err);
/* Decode the value at j; path names it in errors ("$.args"). */
modal_status modal__value_from_json(modal__dec *dec, const cJSON *j,
                                    const char *path, modal_value **out,
                                    modal_error *err);
void modal__dec_close(modal__dec *dec);

/*
 * Messages (lib/call.c): an envelope object with one value under key.
 * modal__msg_build consumes env (also on failure); the frame borrows v's
 * binary parts, so keep v alive while enc is used.
 */
modal_status modal__msg_build(cJSON *env, const char *key,
                              const modal_value *v, modal__enc *enc,
                              modal_error *err);
/* Decode the value under key of an open decoder (missing key: ECODEC). */
modal_status modal__msg_value(modal__dec *dec, const char *key,
                              modal_value **out, modal_error *err);

/* ---- functions, calls (lib/function.c, lib/call.c) --------------- */

struct modal_ctx {
    modal_function *fn;
    const char *call_id;
    int attempt;
    bool remote;
    bool failed;
    modal_status code;
    char message[MODAL_ERROR_MESSAGE_SIZE];
};

/*
 * Run fn's body on args with ctx set as the thread's current call, and turn
 * its outcome into a status: MODAL_OK with *result, or the failure (ctx
 * failed, bad argument, NULL result) with err filled.
 */
modal_status modal__invoke(modal_function *fn, modal_ctx *ctx,
                           const modal_value *args, modal_value **result,
                           modal_error *err);

/* One alternative of a GPU request: "H100:2!" is {"H100", 2, exact}. */
typedef struct modal__gpu_choice {
    char name[16];  /* canonical spelling from the known table, or "any" */
    int count;      /* 1..8 */
    bool exact;     /* "!": no upgrade (H100 -> H200) */
} modal__gpu_choice;

#define MODAL__GPU_MAX_CHOICES 8

/*
 * Parse a GPU request ("H100", "h100:4", "H100!", "any", or a comma list of
 * those tried in order) into out[0..*n). An empty or NULL spec gives *n = 0.
 * Errors name the bad part and list the known names.
 */
modal_status modal__gpu_spec_parse(const char *spec, modal__gpu_choice *out,
                                   size_t *n, modal_error *err);

/*
 * Whether a device of Modal type `type` ("H200", see modal__gpu_type_of)
 * may serve choice c: 0 no, 1 exactly (its own type; every type for
 * "any"), 2 as an upgrade (H100 -> H200, A100 and A100-40GB -> A100-80GB),
 * never for a choice with "!". Placement prefers exact devices.
 */
int modal__gpu_accepts(const modal__gpu_choice *c, const char *type);

/* ---- worker IPC (lib/ipc.c) ------------------------------------- */

/*
 * Runtime <-> worker messages over a SOCK_SEQPACKET socket. Each message:
 *   u32 type | u32 flags | u32 meta_len | u32 0 | u64 payload_len
 *   meta (small JSON) | payload (a frame) inline, or in a memfd passed with
 *   the message when it is over MODAL__IPC_INLINE_MAX (flag FD), so large
 *   arrays reach the other side without a copy through the socket.
 */
enum {
    MODAL__MSG_HELLO = 1,  /* worker -> runtime: {"pid","version","functions","error"?} */
    MODAL__MSG_CALL = 2,   /* runtime -> worker: {"call_id","attempt","index"}, call frame */
    MODAL__MSG_RESULT = 3, /* worker -> runtime: {"call_id","status"}, result frame */
    MODAL__MSG_EXIT = 4,   /* runtime -> worker: run the exit hook and exit */
    MODAL__MSG_CALLS = 5,  /* runtime -> worker: [{call meta}...], bundle of call frames */
    MODAL__MSG_LOG = 6,    /* worker -> runtime: {"call_id","stream"}, output bytes; call_id
                            * "" for output outside calls, stream 1 stdout or 2 stderr */
    MODAL__MSG_CANCEL = 7, /* runtime -> worker: {"call_id"}: skip that call if not started */
    MODAL__MSG_FORK = 8,   /* runtime -> template: a modal__fork_req with its fds */
    MODAL__MSG_FORKED = 9, /* template -> runtime: {"pid"} of the new worker, or
                            * {"error","errno"} */
    MODAL__MSG_BATCH = 10  /* runtime -> worker: {"n"}, a bundle of n + 1 parts: the call
                            * metas as a JSON list, then the n call frames, which run
                            * together as one invocation of a batched function */
};
#define MODAL__IPC_HEADER 24
#define MODAL__IPC_INLINE_MAX (64 * 1024)
#define MODAL__IPC_META_MAX (16 * 1024)
#define MODAL__IPC_FLAG_FD 1u
/* Worker environment: the runtime socket, and the read ends of the pipes
 * behind the worker's stdout and stderr ("4,5"), which worker mode reads
 * itself so that output travels as LOG messages tagged with its call. */
#define MODAL__WORKER_FD_ENV "MODAL_WORKER_FD"
#define MODAL__WORKER_OUTPUT_ENV "MODAL_WORKER_OUTPUT_FDS"
/* The third descriptor MODAL__WORKER_OUTPUT_ENV names is a memfd of this
 * size: two uint64_t counters, the bytes the worker has taken from its
 * stdout and stderr pipes so far. A worker sends output before it takes
 * it from the pipe, so after a crash the runtime knows exactly how much of
 * what is left there it has already received. */
#define MODAL__OUTPUT_TAKEN_SIZE 16
/* Set to "1" for a memory-snapshot template: the process runs the
 * function's snapshot_enter hook, says HELLO, then forks a worker for each
 * MODAL__MSG_FORK it receives, and never serves calls itself. */
#define MODAL__WORKER_TEMPLATE_ENV "MODAL_WORKER_TEMPLATE"
/* A fork request is this struct, sent alone (not in the framing above)
 * with n descriptors as SCM_RIGHTS: the new worker makes the i-th its fd
 * targets[i] (its socket, output pipes and counters, as an exec'd worker
 * has them), sets CUDA_VISIBLE_DEVICES to cuda_visible (the GPUs it holds;
 * the template itself sees none) when has_cuda_visible, then serves as a
 * worker. */
#define MODAL__FORK_MAX_FDS 16
#define MODAL__FORK_CUDA_VISIBLE_MAX 512
typedef struct modal__fork_req {
    uint32_t type; /* MODAL__MSG_FORK */
    uint32_t n;
    int32_t targets[MODAL__FORK_MAX_FDS];
    uint32_t has_cuda_visible;
    char cuda_visible[MODAL__FORK_CUDA_VISIBLE_MAX]; /* NUL-terminated */
} modal__fork_req;

/*
 * Send a message. The payload is either p/len in memory, or, when fd >= 0,
 * the first len bytes of that file (passed, not copied). A payload over
 * the inline limit given in memory is written to a new memfd first.
 */
modal_status modal__ipc_send(int sock, uint32_t type, const char *meta,
                             const void *p, size_t len, int fd,
                             modal_error *err);
/* Send a message whose payload is an encoded frame. */
modal_status modal__ipc_send_enc(int sock, uint32_t type, const char *meta,
                                 const modal__enc *enc, modal_error *err);
/*
 * Receive one message. *meta is parsed JSON (caller deletes), *payload a
 * buffer (NULL when empty): heap for inline payloads, else a read-only
 * mapping of the memfd (prefaulted in one go: page faults are the dominant
 * cost of moving large arrays). When fd_out is non-NULL and the payload
 * came in a memfd, the fd is handed over there as well (caller closes).
 * MODAL_EIO with "closed" on end of file.
 */
modal_status modal__ipc_recv(int sock, uint32_t *type, cJSON **meta,
                             modal__buf **payload, int *fd_out,
                             modal_error *err);
/* The same with recvmsg flags: with MSG_DONTWAIT, MODAL_EPENDING (err
 * untouched) when no message is queued. */
modal_status modal__ipc_recv_flags(int sock, int flags, uint32_t *type, cJSON **meta,
                                   modal__buf **payload, int *fd_out,
                                   modal_error *err);
/* Map len bytes of fd read-only and shared, as a buffer. */
modal__buf *modal__buf_map_fd(int fd, size_t len, int populate);
/* A new memfd of len bytes that can be sealed. */
int modal__memfd_new(const char *name, size_t len);
/* Write all n bytes of p to fd, through short writes and EINTR. Returns
 * the bytes written: n, or fewer with errno set (ENOSPC when write()
 * wrote nothing). */
size_t modal__write_all(int fd, const void *p, size_t n);
/*
 * Seal a filled memfd against any change of size or content, so a
 * receiver that maps it can never be made to fault (SIGBUS) by the sender
 * shrinking it. Receivers refuse unsealed memfds.
 */
int modal__memfd_seal(int fd);

/* ---- bundles (lib/ipc.c) ------------------------------------------ */

/*
 * A sequence of frames: "MODB" u32 count, u64 len[count], zero padding to
 * 64, then each frame at a multiple of 64. Bundles carry map inputs and
 * results so the runtime forwards frames without re-encoding them.
 */
typedef struct modal__bundle_part {
    const void *p;
    size_t len;
} modal__bundle_part;

/* Build a bundle of n frames into one heap buffer. */
modal_status modal__bundle_build(const modal__bundle_part *parts, size_t n,
                                 modal__buf **out, modal_error *err);
/* Split a bundle: *parts (heap array, caller frees) point into buf. */
modal_status modal__bundle_parse(const modal__buf *buf,
                                 modal__bundle_part **parts, size_t *n,
                                 modal_error *err);

/* ---- client transport (lib/client.c, lib/embedded.c) ------------- */

typedef struct modal__http_req {
    const char *method;        /* "GET", "POST", ... */
    const char *path;          /* "/v1/calls?wait=30" */
    const modal__enc *enc;     /* frame body, or */
    const void *body;          /* raw body of body_len bytes, or */
    size_t body_len;
    const char *file;          /* a file to upload */
    const char *content_type;  /* of the body */
    long timeout;              /* seconds for the whole exchange */
} modal__http_req;

typedef struct modal__http_resp {
    long status;               /* HTTP status */
    modal__buf *body;          /* may be NULL when empty */
    long long log_size;        /* X-Modal-Log-Size, -1 if absent */
    long long seq;             /* X-Modal-Seq, -1 if absent */
} modal__http_resp;

/*
 * One request to conn's runtime (NULL: the default connection; starting
 * the embedded runtime when needed), retrying transient transport failures
 * as conn's retry policy says. A response with status >= 400 becomes an
 * error from its JSON body. conn is lib/conn.h's connection.
 */
modal_status modal__http(modal_connection *conn, const modal__http_req *req,
                         modal__http_resp *resp, modal_error *err);
void modal__http_resp_free(modal__http_resp *resp);
/* The uploaded-executable id of this process (sha256 hex), uploading it
 * to conn's runtime first if it is not there yet. */
modal_status modal__artifact_ensure(modal_connection *conn, const char **sha,
                                    modal_error *err);
/*
 * Read the token in the file at path into out (trailing whitespace cut),
 * for the client and the runtime alike. Refuses with MODAL_EAUTH a file
 * that others could read or swap: a symbolic link, not a regular file, not
 * owned by this user, or with any permission for group or others (the
 * message names the file, its mode and the chmod to run). *missing (if
 * non-NULL) is set when the file does not exist.
 */
modal_status modal__token_file_read(const char *path, char *out, size_t outsz, int *missing,
                                    modal_error *err);
/* A request naming artifact sha failed with st/err. When the runtime says
 * the artifact is missing (ENOTFOUND) or was damaged and removed (EIO),
 * forget that it was uploaded, so the next modal__artifact_ensure uploads
 * it again; returns true when it was missing, that is, when the request
 * is worth one retry after that upload. */
bool modal__artifact_refused(modal_connection *conn, modal_status st, const modal_error *err,
                             const char *sha);
/* Status from its name ("ETIMEOUT"); MODAL_ERUNTIME when unknown. */
modal_status modal__status_from_name(const char *name);
/* The environment a process started on a client's or a runtime's behalf
 * gets: the entries of environ that pass the allow-list (listed in
 * docs/runtime.md; the embedded runtime and workers share it), then extra
 * (NULL-terminated, may be NULL). NULL-terminated; free the array only, its
 * strings are borrowed. NULL when out of memory. */
char **modal__env_inherited_list(char *const *extra);
/* Start the embedded runtime for state_dir unless it answers already. */
modal_status modal__embedded_ensure(const char *state_dir, const char *sock,
                                    modal_error *err);
/* The embedded runtime's state directory (static storage). */
modal_status modal__embedded_dir(char *out, size_t outsz, modal_error *err);

/* ---- remote calls (lib/remote.c) ---------------------------------- */

/* A call or map frame's envelope without args: {"v", "spec", "call_id"?}:
 * the function is named by the id of its registered spec. */
cJSON *modal__call_envelope(const char *spec_id, const char *call_id);
/* Check fn's options and that list (what: "argument", "map input") is a
 * list, with errors naming what a NULL or non-list most likely means. */
modal_status modal__check_call(modal_function *fn, const modal_value *list,
                               const char *what, modal_error *err);
/* The same, then upload the executable to conn's runtime and register
 * fn's spec there (its id into spec_id). */
modal_status modal__remote_prepare(modal_connection *conn, modal_function *fn,
                                   const modal_value *list, const char *what,
                                   const char **artifact, char spec_id[65], modal_error *err);
/* A result frame's outcome (docs/wire.md): returns its status; MODAL_OK
 * with *v its value (owned by the caller), else *v NULL and msg filled
 * with its message (or why its value cannot be read). A frame without a
 * status is MODAL_ECODEC. */
modal_status modal__result_read(modal__dec *dec, modal_value **v, char *msg, size_t msgsz);

/* ---- SHA-256 (lib/sha256.c) --------------------------------------- */

typedef struct modal__sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t fill;
} modal__sha256;

void modal__sha256_init(modal__sha256 *s);
void modal__sha256_update(modal__sha256 *s, const void *data, size_t n);
/* Finish and write the 32-byte digest. */
void modal__sha256_final(modal__sha256 *s, uint8_t out[32]);
/* Finish and write 64 lowercase hex digits and a NUL. */
void modal__sha256_hex(modal__sha256 *s, char out[65]);
modal_status modal__sha256_file(const char *path, char out[65], modal_error *err);

/*
 * Add a number to a JSON object as raw text. cJSON prints numbers with
 * printf and checks them with sscanf, which dominated the cost of small
 * messages; integers and finite doubles need neither. Returns 0 or -1.
 */
int modal__json_num(cJSON *obj, const char *key, double v);
/* v in decimal into out (room for MODAL__FMT_INT_SIZE), NUL-terminated;
 * returns its length (lib/fmt.c). */
#define MODAL__FMT_INT_SIZE 21
size_t modal__fmt_int(char *out, long long v);

/* Random id with prefix ("fc-"), base32, 26 random characters. */
void modal__random_id(const char *prefix, char *out, size_t outsz);
/* Seconds on the monotonic clock (lib/clock.c), for deadlines and
 * durations; the runtime's rt_now() is this clock. */
double modal__now(void);

/* ---- TLS public-key pins (lib/tls_pin.c) --------------------------- */

/* "sha256//" + 44 base64 characters + NUL: libcurl's pinned-key form. */
#define MODAL__PIN_SIZE 53

/* Padded base64 of n bytes into out; returns its length, or 0 (out = "")
 * when outsz cannot hold it and a NUL. */
size_t modal__base64_encode(const uint8_t *p, size_t n, char *out, size_t outsz);
/* Decode base64, skipping whitespace (PEM lines); returns the number of
 * bytes written, or -1 for a character outside the alphabet, bad padding
 * or more than outsz bytes. */
long modal__base64_decode(const char *s, size_t n, uint8_t *out, size_t outsz);
/* Find the DER SubjectPublicKeyInfo (tag and length included) inside the
 * DER X.509 certificate der[0..len). Returns NULL, or what is malformed. */
const char *modal__cert_spki(const uint8_t *der, size_t len, const uint8_t **spki,
                             size_t *spki_len);
/* The pin of a DER SubjectPublicKeyInfo. */
void modal__spki_pin(const uint8_t *spki, size_t len, char out[MODAL__PIN_SIZE]);
/* The pin of a DER certificate (MODAL_ETRANSPORT when malformed). */
modal_status modal__cert_pin(const uint8_t *der, size_t len, char out[MODAL__PIN_SIZE],
                             modal_error *err);
/* The pin of the first certificate in PEM text. */
modal_status modal__pem_cert_pin(const char *pem, char out[MODAL__PIN_SIZE], modal_error *err);
/* Check MODAL_TLS_FINGERPRINT's value: one or more pins separated by ';'.
 * MODAL_EINVAL naming the value otherwise. */
modal_status modal__pin_check(const char *pins, modal_error *err);
/* The same for pins given under another name (what: "opts->tls_fingerprint"). */
modal_status modal__pin_check_named(const char *what, const char *pins, modal_error *err);

/* ---- function specs (lib/spec.c, lib/register.c) ------------------ */

/*
 * A function spec: what a pool of workers is for. The artifact, app and
 * function name, and every option of MODAL__OPTION_MAP resolved (defaults
 * applied, the .retries shorthand folded into retry_policy, the GPU
 * request in canonical spelling). Its fields are generated from the
 * table, so a new option is a new field here by itself; the runtime reads
 * them by name (spec->cpu, spec->memory, spec->retry_policy.max_delay).
 */
#define MODAL__GPU_SPEC_MAX 192
#define MODAL__SPEC_INT(n) int n;
#define MODAL__SPEC_RETRIES(n)
#define MODAL__SPEC_REAL(n) double n;
#define MODAL__SPEC_BOOL(n) bool n;
#define MODAL__SPEC_HOOK(n) bool n; /* whether the function has one */
#define MODAL__SPEC_GPU(n) char n[MODAL__GPU_SPEC_MAX]; /* canonical, "" none */
#define MODAL__SPEC_IMAGE(n) char *n; /* owned, NULL for none */
#define MODAL__SPEC_MOUNTS(n) cJSON *n; /* owned: {"/path": {"name", "create_if_missing"}} */
#define MODAL__SPEC_SECRETS(n) cJSON *n; /* owned: ["name", ...] */
#define MODAL__SPEC_RFIELD(n, kind, ...) MODAL__SPEC_##kind(n)
#define MODAL__SPEC_POLICY(n) struct { MODAL__RETRY_MAP(MODAL__SPEC_RFIELD) } n;
#define MODAL__SPEC_FIELD(n, kind, ...) MODAL__SPEC_##kind(n)
typedef struct modal__spec {
    char artifact[65];
    char app[MODAL__NAME_MAX + 1];
    char fn[MODAL__NAME_MAX + 1];
    MODAL__OPTION_MAP(MODAL__SPEC_FIELD)
} modal__spec;

/* Every option at its default; identity fields empty. */
void modal__spec_init(modal__spec *s);
/* Free what s owns (image, volumes, secrets) and set it to defaults. */
void modal__spec_clear(modal__spec *s);
/*
 * The library's check: resolve the options of function fn into s (which
 * the caller has modal__spec_init'ed and later clears), failing with
 * MODAL_EOPTION and "function F: option .timeout = 0 is out of range; use
 * 1 to 86400 seconds" for the first bad option.
 */
modal_status modal__spec_resolve(const char *fn, const modal_function_options *o,
                                 modal__spec *s, modal_error *err);
/*
 * The runtime's check: parse a spec object {"v":1, "artifact", "app",
 * "fn", "options"} into s (initialised by the call; clear it after). The
 * options run through the same checks as modal__spec_resolve, with the
 * same messages; a malformed field gives MODAL_ECODEC naming where ("call
 * frame: ..." or "function spec: ...", from what).
 */
modal_status modal__spec_parse(const cJSON *obj, const char *what, modal__spec *s,
                               modal_error *err);
/* The canonical JSON object of s: every field, in table order. */
cJSON *modal__spec_json(const modal__spec *s);
/* The spec's identity: SHA-256 (hex) of its canonical JSON text. -1 when
 * out of memory. */
int modal__spec_hash(const modal__spec *s, char out[65]);
/* Registration (lib/register.c): the spec id of fn, running
 * from artifact, registered with the runtime (POST /v1/functions) unless
 * it was already. */
modal_status modal__spec_ensure(modal_connection *conn, modal_function *fn,
                                const char *artifact, char id[65], modal_error *err);
/* A request naming spec id failed with st/err: when conn's runtime no
 * longer knows the spec, forget its registration there and return true
 * (worth one retry after modal__spec_ensure). */
bool modal__spec_refused(modal_connection *conn, modal_status st, const modal_error *err,
                         const char *id);
/* The library's full-size copy of fn's options (later fields at their
 * defaults when the program was built with an older modal.h), or NULL
 * when fn is not a MODAL_FUNCTION or memory runs out. Lives as long as
 * the program. */
const modal_function_options *modal__fn_options(const modal_function *fn);

/* ---- dynamic batching (batch.c) -------------------------------------- */

/* Whether fn is batched (.batch_max_size > 0). */
bool modal__batched(const modal_function *fn);
/*
 * The body's arguments for a batch of n calls: calls[i] is call i's
 * argument list, and every one must have as many as calls[0] (else
 * MODAL_EINVAL naming the call and both counts, nothing moved). *out is
 * a list with, for each position k, the list of argument k of every call
 * in order. The items move out of calls (their slots become NULL).
 */
modal_status modal__batch_columns(modal_value *const *calls, size_t n, modal_value **out,
                                  modal_error *err);
/* Whether result, what a batched body returned for n calls, is a list of
 * exactly n items; else MODAL_EFUNC: "fn: batched function returned a
 * list of 3 results for a batch of 4 calls". */
modal_status modal__batch_result_check(const modal_function *fn, const modal_value *result,
                                       size_t n, modal_error *err);

#endif /* MODAL_INTERNAL_H */
