/*
 * modal.h: serverless GPU functions for C.
 *
 * Declare functions with the resources they need, then call them in-process
 * (modal_fn_local), in a warm worker of a runtime (modal_fn_remote,
 * modal_fn_spawn), or over many inputs (modal_fn_map, modal_fn_starmap).
 *
 * This is the only header a program needs. It includes no header of
 * libcurl, cJSON, OpenSSL or CUDA.
 *
 * Conventions used by every declaration below:
 *   - Fallible calls return a modal_status (MODAL_OK is 0) and, when the
 *     caller passes a non-NULL modal_error, fill it with the code and a
 *     message naming what failed, the value that caused it and what to do.
 *   - A NULL pointer that a call cannot accept gives MODAL_EINVAL and a
 *     message naming the call and the parameter ("modal_fn_spawn: call is
 *     NULL; ..."). Arguments the call takes ownership of are freed on that
 *     path too. Pointers documented as optional may be NULL.
 *   - Handles are opaque. Every _free function accepts NULL and does nothing.
 *   - Input strings and buffers are copied unless a declaration says
 *     otherwise; a returned `const` pointer is borrowed and its lifetime is
 *     stated.
 *   - The library never aborts, exits or prints by itself.
 *
 * Copyright (c) the libmodal authors. MIT licence, see LICENSE.
 */
#ifndef MODAL_H
#define MODAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MODAL_BUILDING_LIBRARY)
#define MODAL_API __attribute__((visibility("default")))
#else
#define MODAL_API
#endif

/* ------------------------------------------------------------------ */
/* Version                                                             */
/* ------------------------------------------------------------------ */

/** Compile-time major version. The shared library's soname carries it. */
#define MODAL_VERSION_MAJOR 0
/** Compile-time minor version: grows when features are added. */
#define MODAL_VERSION_MINOR 1
/** Compile-time patch version: grows for fixes only. */
#define MODAL_VERSION_PATCH 0
/** The compile-time version as a string, "MAJOR.MINOR.PATCH". */
#define MODAL_VERSION_STRING "0.1.0"
/** The compile-time version as one comparable number (0x00MMmmpp). */
#define MODAL_VERSION_NUMBER                                                   \
    ((MODAL_VERSION_MAJOR << 16) | (MODAL_VERSION_MINOR << 8) |                \
     MODAL_VERSION_PATCH)

/**
 * The version of the library linked at run time, "MAJOR.MINOR.PATCH".
 * Compare with MODAL_VERSION_STRING to detect a header/library mismatch.
 * Returns a static string; never NULL. Thread-safe.
 */
MODAL_API const char *modal_version(void);

/* ------------------------------------------------------------------ */
/* Status codes and errors                                             */
/* ------------------------------------------------------------------ */

/*
 * Every status code, its name and its one-line meaning. Codes are only
 * ever appended, so their numbers are stable across versions.
 */
#define MODAL_STATUS_MAP(X)                                                    \
    X(OK, "success")                                                           \
    X(EINVAL, "invalid argument")                                              \
    X(ENOMEM, "out of memory")                                                 \
    X(ETYPE, "value has another type than the one asked for")                  \
    X(ERANGE, "index or key not present")                                      \
    X(ECODEC, "malformed wire data")                                           \
    X(ELIMIT, "a stated size, count or depth limit was exceeded")              \
    X(EOPTION, "invalid function option")                                      \
    X(ENOTFOUND, "no such function, call, app or artifact")                    \
    X(EFUNC, "the function reported a failure")                                \
    X(ETIMEOUT, "the function ran past its timeout")                           \
    X(ECRASH, "the worker running the function crashed")                       \
    X(ECANCELLED, "the call was cancelled")                                    \
    X(EPENDING, "the call has not finished yet")                               \
    X(ETRANSPORT, "the runtime could not be reached")                          \
    X(EAUTH, "the runtime refused the token")                                  \
    X(ERUNTIME, "the runtime refused or failed the request")                   \
    X(EWORKER, "the executable cannot serve as a worker")                      \
    X(EGPU, "the requested GPUs are not available")                            \
    X(EIO, "a file or socket operation failed")                                \
    X(ERESOURCE, "the function asks for more CPU, memory or devices than the runtime has")

/** Status of every fallible call. MODAL_OK is 0; all errors are positive. */
typedef enum modal_status {
#define MODAL__STATUS_ENUM(name, msg) MODAL_##name,
    MODAL_STATUS_MAP(MODAL__STATUS_ENUM)
#undef MODAL__STATUS_ENUM
        MODAL__STATUS_COUNT
} modal_status;

/**
 * One line describing a status code in general ("out of memory").
 * For what went wrong in a particular call, read modal_error.message.
 * Returns a static string; an unknown code gives "unknown status".
 */
MODAL_API const char *modal_strerror(modal_status code);

/**
 * The status code's name without prefix ("ENOMEM"), for logs and tests.
 * Returns a static string; an unknown code gives "EUNKNOWN".
 */
MODAL_API const char *modal_status_name(modal_status code);

/** Size of modal_error.message, terminating NUL included. */
#define MODAL_ERROR_MESSAGE_SIZE 512

/**
 * What a failed call tells its caller: the code, and a message that names
 * what failed, the value that caused it and what to do. The message is
 * always NUL-terminated and truncated to fit. Lives on the caller's stack;
 * nothing to free. A NULL modal_error pointer is accepted everywhere and
 * means "I only want the code".
 */
typedef struct modal_error {
    modal_status code;                       /**< same value as returned */
    char message[MODAL_ERROR_MESSAGE_SIZE];  /**< human-readable detail */
} modal_error;

/* ------------------------------------------------------------------ */
/* Values                                                              */
/* ------------------------------------------------------------------ */

/**
 * A value passed to or returned from a function: null, bool, 64-bit
 * integer, double, UTF-8 string, bytes, typed numeric array with a shape,
 * list or map with string keys. Values are trees; each node has exactly one
 * owner. Free the root with modal_value_free(), which frees its children.
 */
typedef struct modal_value modal_value;

/** The kind of a modal_value. */
typedef enum modal_type {
    MODAL_TYPE_NULL = 0,
    MODAL_TYPE_BOOL,
    MODAL_TYPE_INT,
    MODAL_TYPE_FLOAT,
    MODAL_TYPE_STRING,
    MODAL_TYPE_BYTES,
    MODAL_TYPE_ARRAY,
    MODAL_TYPE_LIST,
    MODAL_TYPE_MAP
} modal_type;

/** Element type of a numeric array. */
typedef enum modal_dtype {
    MODAL_U8 = 0,
    MODAL_I8,
    MODAL_I32,
    MODAL_U32,
    MODAL_I64,
    MODAL_U64,
    MODAL_F32,
    MODAL_F64
} modal_dtype;

/** Most dimensions an array may have. */
#define MODAL_MAX_NDIM 8

/**
 * Most nesting levels a value may have (a scalar is depth 1; a list of
 * scalars is depth 2). Deeper values are refused by the encoder and the
 * decoder with MODAL_ELIMIT.
 */
#define MODAL_MAX_DEPTH 64

/** Name of a type ("array"); static string, never NULL. */
MODAL_API const char *modal_type_name(modal_type type);
/** Name of a dtype ("f32"); static string; "invalid" when out of range. */
MODAL_API const char *modal_dtype_name(modal_dtype dtype);
/** Size in bytes of one element of dtype, or 0 when out of range. */
MODAL_API size_t modal_dtype_size(modal_dtype dtype);

/*
 * Constructors. Each returns a new value owned by the caller, or NULL when
 * memory runs out or an argument is invalid (then nothing is leaked).
 * Passing a NULL child to a container constructor makes the container
 * constructor fail too, so chained construction needs one NULL check.
 */

/** A null value. */
MODAL_API modal_value *modal_null(void);
/** A boolean value (any non-zero b is true). */
MODAL_API modal_value *modal_bool(bool b);
/** A signed 64-bit integer value. */
MODAL_API modal_value *modal_int(int64_t i);
/**
 * A double value. Infinities and -0.0 cross the wire exactly; every NaN
 * arrives as the canonical quiet NaN (sign and payload are not kept).
 */
MODAL_API modal_value *modal_float(double f);
/**
 * A string value copied from the NUL-terminated s (NULL gives NULL).
 * Strings are UTF-8 by convention; bytes are not checked.
 */
MODAL_API modal_value *modal_string(const char *s);
/**
 * A string value copied from the len bytes at s. Returns NULL if the bytes
 * contain a NUL: use modal_bytes() for binary data.
 */
MODAL_API modal_value *modal_string_n(const char *s, size_t len);
/** A bytes value copied from the len bytes at p (p may be NULL if len 0). */
MODAL_API modal_value *modal_bytes(const void *p, size_t len);
/**
 * A one-dimensional array of count elements of dtype, copied from data
 * (data may be NULL when count is 0). Travels as raw bytes, never base64.
 */
MODAL_API modal_value *modal_array(modal_dtype dtype, const void *data,
                                   size_t count);
/**
 * An array of ndim dimensions (1..MODAL_MAX_NDIM) with the given shape,
 * row-major, copied from data. The element count is the product of shape.
 */
MODAL_API modal_value *modal_array_nd(modal_dtype dtype, const void *data,
                                      size_t ndim, const size_t *shape);
/**
 * An array with uninitialised contents, for filling in place without a
 * copy (write through modal_array_data_mut()). Large arrays should be built
 * this way.
 */
MODAL_API modal_value *modal_array_new(modal_dtype dtype, size_t ndim,
                                       const size_t *shape);
/** An empty list. Add items with modal_list_append(). */
MODAL_API modal_value *modal_list(void);
/**
 * A list of the n values in items, taking ownership of each. If any item
 * is NULL or memory runs out, every item is freed and NULL is returned.
 */
MODAL_API modal_value *modal_list_of(modal_value *const *items, size_t n);
/** An empty map with string keys, kept in insertion order. */
MODAL_API modal_value *modal_map(void);

/**
 * Build an argument list from one or more values, taking ownership:
 * `modal_args(modal_int(1), modal_string("x"))`. For no arguments, use
 * modal_list(). A NULL among them makes the result NULL (all freed).
 */
#define modal_args(...)                                                        \
    modal_list_of((modal_value *const[]){__VA_ARGS__},                         \
                  sizeof((modal_value *const[]){__VA_ARGS__}) /                \
                      sizeof(modal_value *))

/**
 * Append item to list, taking ownership of item (it is freed on failure),
 * except when item is list itself: that is refused with MODAL_EINVAL and
 * nothing is freed. Fails with MODAL_ETYPE if list is not a list (or NULL),
 * MODAL_EINVAL if item is NULL, MODAL_ENOMEM when memory runs out.
 * Appending an ancestor of list, or one item twice, is not detected and
 * makes the tree invalid.
 */
MODAL_API modal_status modal_list_append(modal_value *list, modal_value *item,
                                         modal_error *err);
/**
 * Set key to value in map, taking ownership of value (freed on failure),
 * except when value is map itself (MODAL_EINVAL, nothing freed). An
 * existing key keeps its position and its old value is freed. The key is
 * copied. Fails with MODAL_ETYPE if map is not a map (or NULL),
 * MODAL_EINVAL for a NULL key or value, MODAL_ENOMEM when memory runs out.
 */
MODAL_API modal_status modal_map_set(modal_value *map, const char *key,
                                     modal_value *value, modal_error *err);

/** Deep copy of v, or NULL when memory runs out or v is NULL. */
MODAL_API modal_value *modal_value_copy(const modal_value *v);
/**
 * 1 if a and b hold the same tree: same types, same dtypes and shapes,
 * same bytes (floats compared by bit pattern, so NaN equals the same NaN),
 * same map keys in the same order. 0 otherwise.
 */
MODAL_API int modal_value_equal(const modal_value *a, const modal_value *b);
/** Free v and everything it owns. NULL is a no-op. */
MODAL_API void modal_value_free(modal_value *v);

/** The type of v (MODAL_TYPE_NULL for a NULL pointer). */
MODAL_API modal_type modal_value_type(const modal_value *v);

/*
 * Type-checked accessors. On a type mismatch they return MODAL_ETYPE and
 * say which type was found, and leave *out untouched; they never crash on
 * a wrong type or a NULL v (a NULL v is reported as null, MODAL_ETYPE).
 * Every output pointer of an accessor is optional: with NULL outputs an
 * accessor only checks the type.
 */

/** Read a bool. */
MODAL_API modal_status modal_get_bool(const modal_value *v, bool *out,
                                      modal_error *err);
/** Read an integer. */
MODAL_API modal_status modal_get_int(const modal_value *v, int64_t *out,
                                     modal_error *err);
/** Read a float. An integer value is also accepted and converted. */
MODAL_API modal_status modal_get_float(const modal_value *v, double *out,
                                       modal_error *err);
/**
 * Borrow a string: *out points into v (NUL-terminated) and lives until v is
 * freed; *len (if non-NULL) receives its length.
 */
MODAL_API modal_status modal_get_string(const modal_value *v, const char **out,
                                        size_t *len, modal_error *err);
/** Borrow bytes: *out lives until v is freed; *len receives the length. */
MODAL_API modal_status modal_get_bytes(const modal_value *v, const void **out,
                                       size_t *len, modal_error *err);
/**
 * Borrow an array's elements, requiring element type dtype. *out lives
 * until v is freed; *count receives the total element count.
 */
MODAL_API modal_status modal_get_array(const modal_value *v, modal_dtype dtype,
                                       const void **out, size_t *count,
                                       modal_error *err);
/**
 * Writable pointer to an array's elements (for arrays from
 * modal_array_new()), or NULL if v is not an array.
 */
MODAL_API void *modal_array_data_mut(modal_value *v);
/** Element type of an array; MODAL_ETYPE if v is not an array. */
MODAL_API modal_status modal_array_dtype(const modal_value *v,
                                         modal_dtype *out, modal_error *err);
/**
 * Shape of an array: returns the dimension count (0 if v is not an array)
 * and, when shape is non-NULL, copies min(ndim, MODAL_MAX_NDIM) extents.
 */
MODAL_API size_t modal_array_shape(const modal_value *v,
                                   size_t shape[MODAL_MAX_NDIM]);
/** Number of items of a list or entries of a map; 0 for anything else. */
MODAL_API size_t modal_value_len(const modal_value *v);
/** Borrow item i of a list, or NULL if v is no list or i is out of range. */
MODAL_API const modal_value *modal_list_get(const modal_value *v, size_t i);
/** Borrow the value under key in a map, or NULL if absent or not a map. */
MODAL_API const modal_value *modal_map_get(const modal_value *v,
                                           const char *key);
/**
 * Borrow entry i of a map (insertion order): its key (NUL-terminated,
 * lives as long as the map) and value. MODAL_ERANGE past the end.
 */
MODAL_API modal_status modal_map_entry(const modal_value *v, size_t i,
                                       const char **key,
                                       const modal_value **value,
                                       modal_error *err);

/* ------------------------------------------------------------------ */
/* Wire codec                                                          */
/* ------------------------------------------------------------------ */

/**
 * Limits the decoder enforces on any input, before allocating: nesting
 * depth MODAL_MAX_DEPTH, MODAL_CODEC_MAX_ITEMS values in one message,
 * MODAL_CODEC_MAX_ENVELOPE bytes of JSON envelope, MODAL_CODEC_MAX_ATTACH
 * attachments, and each attachment no larger than the input itself.
 */
#define MODAL_CODEC_MAX_ITEMS (16u * 1024u * 1024u)
/** Largest JSON envelope the decoder accepts, in bytes (256 MiB). */
#define MODAL_CODEC_MAX_ENVELOPE (256u * 1024u * 1024u)
/** Most binary attachments in one message. */
#define MODAL_CODEC_MAX_ATTACH (4u * 1024u * 1024u)

/**
 * Encode v into a self-contained wire message: a versioned JSON envelope
 * followed by raw binary attachments for arrays and bytes (never base64).
 * On success *buf is a malloc'd buffer the caller frees with free() and
 * *len its size.
 */
MODAL_API modal_status modal_value_encode(const modal_value *v, void **buf,
                                          size_t *len, modal_error *err);
/**
 * Decode a message made by modal_value_encode(). Any byte string either
 * decodes or fails with MODAL_ECODEC / MODAL_ELIMIT and a message naming
 * the offset or field at fault; never crashes, leaks or allocates beyond
 * a small multiple of len. *out is a new value owned by the caller.
 */
MODAL_API modal_status modal_value_decode(const void *buf, size_t len,
                                          modal_value **out, modal_error *err);

/* ------------------------------------------------------------------ */
/* Apps, volumes, functions                                            */
/* ------------------------------------------------------------------ */

/**
 * A persistent volume, declared with MODAL_VOLUME(). Fields are read by the
 * library; treat them as read-only.
 */
typedef struct modal_volume {
    int modal_reserved_;     /**< keeps designated initialisers valid */
    const char *name;        /**< volume name, [A-Za-z0-9._-]{1,64} */
    bool create_if_missing;  /**< create on first use instead of failing */
} modal_volume;

/**
 * Declare a volume variable `var` bound to the named volume:
 * `MODAL_VOLUME(ckpt, "checkpoints", .create_if_missing = true);`
 */
#define MODAL_VOLUME(var, volname, ...)                                        \
    modal_volume var = {0, .name = (volname), __VA_ARGS__}

/** One volume mount: where the volume appears inside the worker. */
typedef struct modal_mount {
    const char *path;            /**< absolute path, no "..", e.g. "/data" */
    const modal_volume *volume;  /**< the volume mounted there */
} modal_mount;

/**
 * A mount table for the .volumes option:
 * `.volumes = MODAL_MOUNTS({"/checkpoints", &ckpt}, {"/data", &data})`.
 */
#define MODAL_MOUNTS(...)                                                      \
    ((const modal_mount[]){__VA_ARGS__, {NULL, NULL}})

/**
 * A secret list for the .secrets option: `.secrets = MODAL_SECRETS("hf")`.
 * Each named secret's keys reach the worker as environment variables.
 */
#define MODAL_SECRETS(...) ((const char *const[]){__VA_ARGS__, NULL})

/*
 * Every function option, written once. Each row is
 *
 *     X(name, kind, default, low, high, unit, doc)
 *
 * and this table alone drives the library's checks of MODAL_FUNCTION
 * options, the spec the library sends to the runtime, the runtime's
 * parsing of that spec (same checks, same messages) and the spec's
 * canonical hash. docs/architecture.md ("Function specs") says how to add a row.
 *
 * Kinds: INT (an int; MODAL_OPTION_UNSET, the value MODAL_FUNCTION starts
 * it with, means the default), REAL (a double; 0 means the default), BOOL,
 * HOOK (a modal_hook; NULL for none), GPU (a GPU request string, see
 * .gpu), IMAGE, MOUNTS, SECRETS (names checked by their own rules),
 * RETRIES (an INT whose value becomes retry_policy.max_retries) and POLICY
 * (a pointer to a modal_retries, whose fields are MODAL__RETRY_MAP).
 * A numeric option set explicitly must lie within [low, high]; the
 * default is always valid, also where it lies outside (0 = none or no
 * limit).
 */
#define MODAL__OPTION_MAP(X)                                                   \
    X(gpu, GPU, 0, 0, 0, "",                                                   \
      "GPU request: \"H100\", \"h100:4\", \"H100!\", \"any\" or an ordered "      \
      "fallback list \"H100, A100-80GB\"; NULL or \"\" for none")              \
    X(cpu, REAL, 0, 0.125, 256, "cores",                                       \
      "CPU cores reserved for each worker; 0 reserves none")                  \
    X(memory, INT, 0, 0, 4194304, "MiB",                                      \
      "memory reserved for each worker; 0 reserves none")                     \
    X(image, IMAGE, 0, 0, 0, "", "image name; NULL runs on the host's system") \
    X(volumes, MOUNTS, 0, 0, 0, "", "volume mounts, MODAL_MOUNTS(...)")        \
    X(secrets, SECRETS, 0, 0, 0, "", "secret names, MODAL_SECRETS(...)")       \
    X(retries, RETRIES, 0, 0, 10, "",                                          \
      "retries with the default policy; excludes .retry_policy")              \
    X(retry_policy, POLICY, 0, 0, 0, "", "retry policy, MODAL_RETRIES(...)")   \
    X(timeout, INT, 300, 1, 86400, "seconds", "time one attempt may run")     \
    X(min_containers, INT, 0, 0, 100, "", "warm workers kept while idle")     \
    X(max_containers, INT, 10, 1, 1000, "", "most workers at once")           \
    X(scaledown_window, INT, 60, 1, 86400, "seconds",                         \
      "idle time after which a worker above min_containers exits")           \
    X(max_inputs, INT, 0, 1, 2147483647, "",                                  \
      "calls a worker serves, then exits; 0 (the default) for no limit")      \
    X(enter, HOOK, 0, 0, 0, "", "runs once per worker before its first call") \
    X(exit, HOOK, 0, 0, 0, "", "runs once per worker as it shuts down")       \
    X(memory_snapshot, BOOL, 0, 0, 0, "",                                      \
      "start workers by forking a template worker that already ran the "      \
      "snapshot-safe enter hook")                                             \
    X(snapshot_enter, HOOK, 0, 0, 0, "",                                       \
      "enter hook run once in the template, before workers are forked from "  \
      "it; must not create a GPU context or threads")                         \
    X(batch_max_size, INT, 0, 1, 1000, "calls",                               \
      "dynamic batching: gather up to this many concurrent calls into one "   \
      "invocation whose arguments are lists; 0 (the default) for none")      \
    X(batch_wait_ms, INT, 10, 0, 60000, "ms",                                 \
      "dynamic batching: how long the first call of a batch waits for more")

/*
 * The fields of a retry policy, in the same form. A zero REAL field takes
 * its default, so no delay of 0 can be asked for in C: the library and
 * the runtime both hold initial_delay and max_delay to 0.001..60 seconds.
 */
#define MODAL__RETRY_MAP(X)                                                    \
    X(max_retries, INT, 0, 0, 10, "", "retries after the first attempt")      \
    X(backoff_coefficient, REAL, 2.0, 1, 10, "",                               \
      "factor by which each delay grows")                                     \
    X(initial_delay, REAL, 1.0, 0.001, 60, "seconds",                         \
      "delay before the first retry")                                         \
    X(max_delay, REAL, 60.0, 0.001, 60, "seconds", "longest delay")

/**
 * Retry policy, Modal's semantics: after a failed attempt (error, crash or
 * timeout) wait initial_delay * backoff_coefficient^(n-1) seconds, at most
 * max_delay, then try again, up to max_retries times. Zero fields take the
 * defaults; defaults and bounds are the rows of MODAL__RETRY_MAP.
 */
typedef struct modal_retries {
    int max_retries;
    double backoff_coefficient;
    double initial_delay;
    double max_delay;
} modal_retries;

/** A retry policy for the .retry_policy option. */
#define MODAL_RETRIES(...) (&(const modal_retries){__VA_ARGS__})

/** Context of one running call, given to every function body. */
typedef struct modal_ctx modal_ctx;

/**
 * An enter or exit hook: runs once per worker, before its first call or as
 * it shuts down. Return 0 on success; to fail, call modal_ctx_fail() and
 * return non-zero. A failing enter hook stops that worker before it takes
 * any call, and fails one attempt of the call waiting for it with
 * MODAL_EFUNC and the hook's message (retries apply).
 */
typedef int (*modal_hook)(modal_ctx *ctx);

/**
 * Marks an integer option the program did not set, so that an explicit
 * `.timeout = 0` is told apart from "no timeout given" and rejected.
 */
#define MODAL_OPTION_UNSET (-2147483647 - 1)

/**
 * Options of MODAL_FUNCTION, set by designated initialisers. Each field is
 * a row of MODAL__OPTION_MAP, which gives its default, bounds and unit.
 * Options left out take their defaults. They are checked the first time
 * the function is used; an invalid one fails that use with MODAL_EOPTION
 * naming the option and the value.
 *
 * Fields are only ever appended: the library reads as many bytes of this
 * struct as the program was compiled with (modal_function.options_size)
 * and gives every later field its default.
 */
typedef struct modal_function_options {
    /**
     * GPU request: "" or NULL for none; "H100", "h100:4" (count 1..8),
     * "H100!" (no upgrade to H200), "any", or an ordered fallback list
     * separated by commas: "H100, A100-80GB, A100-40GB". Known names: T4, L4,
     * A10G, A10, L40S, A100, A100-40GB, A100-80GB, H100, H200, B200, any.
     */
    const char *gpu;
    double cpu;             /**< CPU cores reserved (0: none) */
    int memory;             /**< MiB reserved (0: none) */
    const char *image;      /**< image name (NULL: the host's own system) */
    const modal_mount *volumes; /**< MODAL_MOUNTS(...) or NULL */
    const char *const *secrets; /**< MODAL_SECRETS(...) or NULL */
    int retries;            /**< retries with the default policy */
    const modal_retries *retry_policy; /**< MODAL_RETRIES(...); excludes retries */
    int timeout;            /**< seconds per attempt */
    int min_containers;     /**< warm workers kept while idle */
    int max_containers;     /**< most workers at once */
    int scaledown_window;   /**< idle seconds before a worker exits */
    int max_inputs;         /**< calls a worker serves, then exits */
    modal_hook enter;       /**< runs once per worker before the first call */
    modal_hook exit;        /**< runs once per worker as it shuts down */
    /**
     * Start workers from a memory snapshot: the runtime starts one template
     * process per pool, runs snapshot_enter there once, and forks each new
     * worker from it (no exec, no dynamic linking, no repeated set-up);
     * enter then runs in each worker. Default false.
     */
    bool memory_snapshot;
    /**
     * Runs once in the template, before workers are forked from it (needs
     * memory_snapshot). What it builds (globals, loaded files) every worker
     * inherits. It must not start threads, open GPU contexts, keep sockets
     * to other processes or seed per-worker randomness: a fork copies none
     * of those correctly. Put those in enter.
     */
    modal_hook snapshot_enter;
    /**
     * Dynamic batching, Modal's `@modal.batched`: the runtime gathers up to
     * batch_max_size concurrent calls of the function into one invocation.
     * The body then gets, for each positional argument, a list with that
     * argument of every call in the batch (in the same order), and must
     * return a list with one result per call, which the runtime hands back
     * to each caller. Callers pass single inputs as for any function. A
     * call waits at most batch_wait_ms for others to join its batch (longer
     * only while every worker the function may have is busy). 0 (the
     * default): no batching.
     */
    int batch_max_size;
    /** Milliseconds the first call of a batch waits for more (default 10). */
    int batch_wait_ms;
} modal_function_options;

/** Signature of a function body (what MODAL_FUNCTION defines). */
typedef modal_value *(*modal_body)(modal_ctx *ctx, const modal_value *args);

/**
 * A registered function. Defined by MODAL_FUNCTION; pass its address to
 * the modal_fn_* calls. Fields are private to the library, which never
 * writes to this struct: what it learns about a function (the result of
 * checking it, its registration) lives in memory of its own. Fields are
 * only ever appended, and the options are read through options_size, so a
 * program built against an older modal.h keeps working with a newer
 * libmodal.so.0 (docs/api.md, "ABI").
 */
typedef struct modal_function {
    unsigned magic;                        /**< private */
    unsigned options_size;                 /**< private: sizeof *options */
    const char *name;                      /**< private: the C identifier */
    modal_body body;                       /**< private */
    const modal_function_options *options; /**< private */
    const char *file;                      /**< private: where it is defined */
    int line;                              /**< private */
} modal_function;

/**
 * Private: marks a modal_function as initialised by MODAL_FUNCTION, with
 * the layout above ("MODF"; the layout before options moved behind a
 * pointer had another magic, and is refused).
 */
#define MODAL__FUNCTION_MAGIC 0x4d4f4446u

/* Private: the unset marker MODAL_FUNCTION places in each INT option. */
#define MODAL__UNSET_INT(name) .name = MODAL_OPTION_UNSET,
#define MODAL__UNSET_RETRIES(name) .name = MODAL_OPTION_UNSET,
#define MODAL__UNSET_REAL(name)
#define MODAL__UNSET_BOOL(name)
#define MODAL__UNSET_HOOK(name)
#define MODAL__UNSET_GPU(name)
#define MODAL__UNSET_IMAGE(name)
#define MODAL__UNSET_MOUNTS(name)
#define MODAL__UNSET_SECRETS(name)
#define MODAL__UNSET_POLICY(name)
#define MODAL__UNSET_ROW(name, kind, ...) MODAL__UNSET_##kind(name)
/** Private: the unset markers MODAL_FUNCTION places before user options. */
#define MODAL__OPTION_DEFAULTS MODAL__OPTION_MAP(MODAL__UNSET_ROW)

/** Private: called by the MODAL_FUNCTION expansion at program start. */
MODAL_API void modal__register(modal_function *fn);
/** Private: called by the MODAL_APP expansion at program start. */
MODAL_API void modal__set_app(const char *name);

/**
 * Name this program's app (used to group logs and deployments). Optional;
 * without it the app is named after the executable. Use once, at file scope.
 */
#define MODAL_APP(appname)                                                     \
    __attribute__((constructor)) static void modal__app_ctor(void)            \
    {                                                                          \
        modal__set_app(appname);                                               \
    }                                                                          \
    struct modal__app_semicolon

/**
 * Define a function `fname` that can run locally or remotely, with options
 * given as designated initialisers of modal_function_options, followed by
 * its body. In the body, `ctx` (modal_ctx *) and `args` (const modal_value
 * *, a list) are in scope; return a new value (ownership passes to the
 * library) or the result of modal_ctx_fail():
 *
 *     MODAL_FUNCTION(square, .timeout = 60, .retries = 2)
 *     {
 *         int64_t x = modal_arg_int(args, 0);
 *         return modal_int(x * x);
 *     }
 *
 * The expansion registers the function at program start; nothing else
 * needs to list it. Names must be unique within a program. To use it from
 * another file, declare it there with MODAL_FUNCTION_DECLARE(fname).
 */
#define MODAL_FUNCTION(fname, ...)                                             \
    static modal_value *modal__body_##fname(modal_ctx *ctx,                    \
                                            const modal_value *args);          \
    _Pragma("GCC diagnostic push")                                             \
    _Pragma("GCC diagnostic ignored \"-Woverride-init\"")                      \
    static const modal_function_options modal__options_##fname = {             \
        MODAL__OPTION_DEFAULTS __VA_ARGS__};                                   \
    _Pragma("GCC diagnostic pop")                                              \
    modal_function fname = {MODAL__FUNCTION_MAGIC,                             \
                            (unsigned)sizeof(modal_function_options), #fname,  \
                            modal__body_##fname, &modal__options_##fname,      \
                            __FILE__, __LINE__};                               \
    __attribute__((constructor)) static void modal__reg_##fname(void)         \
    {                                                                          \
        modal__register(&fname);                                               \
    }                                                                          \
    static modal_value *modal__body_##fname(                                   \
        modal_ctx *ctx __attribute__((unused)),                                \
        const modal_value *args __attribute__((unused)))

/** Declare a function defined with MODAL_FUNCTION in another file. */
#define MODAL_FUNCTION_DECLARE(fname) extern modal_function fname

/** Number of functions registered in this program. Thread-safe after main. */
MODAL_API size_t modal_function_count(void);
/**
 * Registered function number i (0 <= i < count, in registration order), or
 * NULL past the end. The pointer lives as long as the program.
 */
MODAL_API modal_function *modal_function_at(size_t i);
/** The registered function called name, or NULL if there is none. */
MODAL_API modal_function *modal_function_find(const char *name);
/** The name of fn ("square"); lives as long as the program. */
MODAL_API const char *modal_function_name(const modal_function *fn);
/**
 * Check fn's options now (the modal_fn_* calls do it on first use):
 * MODAL_EOPTION with a message naming the function, the option and the
 * bad value. The result is remembered; later calls return it again.
 */
MODAL_API modal_status modal_function_check(modal_function *fn,
                                            modal_error *err);
/**
 * The app name set by MODAL_APP, or the executable's name. Static: lives
 * as long as the program. Thread-safe.
 */
MODAL_API const char *modal_app_name(void);

/* ------------------------------------------------------------------ */
/* Inside a function body                                              */
/* ------------------------------------------------------------------ */

/**
 * Fail the running call with a printf-style message and return NULL, so a
 * body can `return modal_ctx_fail(ctx, "n must be positive, got %d", n);`.
 * The caller receives MODAL_EFUNC and the message. Retries apply.
 */
/* A NULL fmt still fails the call, with a message saying fmt was NULL. */
MODAL_API modal_value *modal_ctx_fail(modal_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/** Whether the call has failed (modal_ctx_fail or a bad argument). */
MODAL_API bool modal_ctx_failed(const modal_ctx *ctx);
/**
 * The id of the running call: "fc-…" for remote calls, "fm-…-N" for input
 * N of a map, "local-…" for local calls, "enter"/"exit" inside hooks.
 */
MODAL_API const char *modal_ctx_call_id(const modal_ctx *ctx);
/** The attempt number of the running call, 1 for the first. */
MODAL_API int modal_ctx_attempt(const modal_ctx *ctx);
/** The function being run. */
MODAL_API const modal_function *modal_ctx_function(const modal_ctx *ctx);
/**
 * Whether the call runs in a runtime worker (true) or in-process through
 * modal_fn_local (false).
 */
MODAL_API bool modal_ctx_is_remote(const modal_ctx *ctx);

/*
 * Argument accessors for function bodies. `args` is the argument list the
 * body receives. On a type mismatch they return 0 / NULL and fail the
 * running call with MODAL_ETYPE and a message such as "square: argument 0:
 * expected int, got string" (MODAL_ERANGE for a missing argument), whatever
 * the body returns afterwards. Outside a function body they only return
 * 0 / NULL.
 */

/** Argument i as an integer. */
MODAL_API int64_t modal_arg_int(const modal_value *args, size_t i);
/** Argument i as a double (integers are converted). */
MODAL_API double modal_arg_float(const modal_value *args, size_t i);
/** Argument i as a bool. */
MODAL_API bool modal_arg_bool(const modal_value *args, size_t i);
/** Argument i as a borrowed string, valid during the call. */
MODAL_API const char *modal_arg_string(const modal_value *args, size_t i);
/** Argument i as borrowed bytes; *len receives the length. */
MODAL_API const void *modal_arg_bytes(const modal_value *args, size_t i,
                                      size_t *len);
/** Argument i as a borrowed array of dtype; *count receives the length. */
MODAL_API const void *modal_arg_array(const modal_value *args, size_t i,
                                      modal_dtype dtype, size_t *count);
/** Argument i, any type, borrowed; NULL (and a failed call) if missing. */
MODAL_API const modal_value *modal_arg(const modal_value *args, size_t i);

/** Argument i as a borrowed f32 array. */
#define modal_arg_f32(args, i, n)                                              \
    ((const float *)modal_arg_array((args), (i), MODAL_F32, (n)))
/** Argument i as a borrowed f64 array. */
#define modal_arg_f64(args, i, n)                                              \
    ((const double *)modal_arg_array((args), (i), MODAL_F64, (n)))
/** Argument i as a borrowed i32 array. */
#define modal_arg_i32(args, i, n)                                              \
    ((const int32_t *)modal_arg_array((args), (i), MODAL_I32, (n)))
/** Argument i as a borrowed i64 array. */
#define modal_arg_i64(args, i, n)                                              \
    ((const int64_t *)modal_arg_array((args), (i), MODAL_I64, (n)))
/** Argument i as a borrowed u8 array. */
#define modal_arg_u8(args, i, n)                                               \
    ((const uint8_t *)modal_arg_array((args), (i), MODAL_U8, (n)))

/* ------------------------------------------------------------------ */
/* Calling functions                                                   */
/* ------------------------------------------------------------------ */

/**
 * Run fn in this process through the whole wire path (encode arguments,
 * decode, run, encode result, decode), so whatever would fail remotely for
 * serialization fails here too. Takes ownership of args (a list, e.g. from
 * modal_args(); NULL fails with MODAL_ENOMEM). On MODAL_OK, *result is a new
 * value owned by the caller; result may be NULL to discard it. A function that fails through modal_ctx_fail
 * gives MODAL_EFUNC and its message. Options are checked but resources
 * (GPUs, volumes, retries, timeout) are not applied. Thread-safe.
 */
MODAL_API modal_status modal_fn_local(modal_function *fn, modal_value *args,
                                      modal_value **result, modal_error *err);

/**
 * Run fn in a worker of the runtime and wait for its result. Takes
 * ownership of args. On MODAL_OK, *result is a new value owned by the
 * caller; result may be NULL to discard it. With MODAL_RUNTIME_URL unset, the first call starts a
 * local runtime (see docs/runtime.md). The worker's output is streamed to
 * this process's stderr, each line prefixed with the function's name.
 * Retries and timeouts follow fn's options. Thread-safe.
 */
MODAL_API modal_status modal_fn_remote(modal_function *fn, modal_value *args,
                                       modal_value **result, modal_error *err);

/** A call started with modal_fn_spawn(). */
typedef struct modal_call modal_call;

/**
 * Start fn in the runtime without waiting. Takes ownership of args, also
 * when it fails. On MODAL_OK, *call is a handle to free with
 * modal_call_free() (freeing does not cancel the call); call must not be
 * NULL (MODAL_EINVAL).
 */
MODAL_API modal_status modal_fn_spawn(modal_function *fn, modal_value *args,
                                      modal_call **call, modal_error *err);
/**
 * The call's id ("fc-" and 26 characters), with which any process can
 * fetch the result through modal_call_from_id(). Lives as long as call.
 */
MODAL_API const char *modal_call_id(const modal_call *call);
/**
 * A handle to an existing call, by id, from this or another process. The
 * id is checked for form only; modal_call_get() reports an unknown id.
 * id and call must not be NULL (MODAL_EINVAL).
 */
MODAL_API modal_status modal_call_from_id(const char *id, modal_call **call,
                                          modal_error *err);
/**
 * Wait up to timeout seconds (negative: no limit; 0: just look) for the
 * call's result. MODAL_EPENDING when time runs out; otherwise the call's
 * own outcome. On MODAL_OK, *result is a new value owned by the caller;
 * result may be NULL to discard it. The result can be fetched again by this or another handle.
 */
MODAL_API modal_status modal_call_get(modal_call *call, double timeout,
                                      modal_value **result, modal_error *err);
/**
 * Cancel the call: a queued call never runs, a running one has its worker
 * stopped. Its result becomes MODAL_ECANCELLED. Cancelling a finished call
 * changes nothing and succeeds.
 */
MODAL_API modal_status modal_call_cancel(modal_call *call, modal_error *err);
/** Free the handle (not the call). NULL is a no-op. */
MODAL_API void modal_call_free(modal_call *call);

/** Result of one input of a map, passed to modal_map_options.on_result. */
typedef struct modal_map_item {
    size_t index;             /**< position of the input, from 0 */
    modal_status status;      /**< the input's outcome */
    const modal_value *value; /**< the result when status is MODAL_OK */
    const char *message;      /**< the error message otherwise */
} modal_map_item;

/** Options of modal_fn_map and modal_fn_starmap; zero means default. */
typedef struct modal_map_options {
    bool unordered;         /**< deliver results as they finish */
    bool return_errors;     /**< per-input errors instead of failing all */
    size_t max_in_flight;   /**< inputs submitted but unfinished (0: 10000) */
    size_t batch_size;      /**< inputs sent per request (0: 1000) */
    /**
     * Called in delivery order for every result; the value is borrowed for
     * the duration of the callback. Return non-zero to stop the map (it
     * then fails with MODAL_ECANCELLED and pending inputs are cancelled).
     */
    int (*on_result)(const modal_map_item *item, void *user);
    void *user;             /**< passed to on_result */
} modal_map_options;

/**
 * Run fn once per input, in parallel workers. inputs is a list; each item
 * is passed as the single argument of one call. Takes ownership of inputs.
 * On MODAL_OK, *results (if non-NULL) is a list with one entry per input:
 * the result, or, with return_errors, a map {"error": message, "status":
 * name} for a failed input. Without return_errors the first failure stops
 * the map and is returned. opts may be NULL.
 */
MODAL_API modal_status modal_fn_map(modal_function *fn, modal_value *inputs,
                                    const modal_map_options *opts,
                                    modal_value **results, modal_error *err);
/**
 * Like modal_fn_map, but each input is itself an argument list:
 * `[[lr, batch], [lr, batch], ...]`.
 */
MODAL_API modal_status modal_fn_starmap(modal_function *fn,
                                        modal_value *inputs,
                                        const modal_map_options *opts,
                                        modal_value **results,
                                        modal_error *err);

/* ------------------------------------------------------------------ */
/* Entry point and worker mode                                         */
/* ------------------------------------------------------------------ */

/**
 * If this process was started by a runtime as a worker, serve calls and
 * never return (the process exits when the runtime says so). Otherwise
 * return at once. MODAL_LOCAL_ENTRYPOINT calls it; a program with its own
 * main() must call it first thing.
 */
MODAL_API void modal_worker_serve_if_worker(int argc, char **argv);

/**
 * Define the program's main() as the local entry point. Inside a runtime
 * worker the body never runs; the worker serves the registered functions.
 *
 *     MODAL_LOCAL_ENTRYPOINT(argc, argv) { ... return 0; }
 */
#define MODAL_LOCAL_ENTRYPOINT(argc_, argv_)                                   \
    static int modal__local_main(int argc_, char **argv_);                     \
    int main(int argc, char **argv)                                            \
    {                                                                          \
        modal_worker_serve_if_worker(argc, argv);                              \
        return modal__local_main(argc, argv);                                  \
    }                                                                          \
    static int modal__local_main(int argc_ __attribute__((unused)),            \
                                 char **argv_ __attribute__((unused)))

/* ------------------------------------------------------------------ */
/* Runtime connection and logging                                      */
/* ------------------------------------------------------------------ */

/**
 * Where calls through the default connection go, as a URL:
 * "unix:/path/to/runtime.sock" or "http://host:port". Read from
 * MODAL_RUNTIME_URL; when unset, the embedded local runtime's socket. The
 * string lives as long as the program (a later call may return another
 * one when the environment changed). Thread-safe.
 */
MODAL_API const char *modal_runtime_url(void);

/** Severity of a library log message. */
typedef enum modal_log_level {
    MODAL_LOG_DEBUG = 0,
    MODAL_LOG_INFO,
    MODAL_LOG_WARN,
    MODAL_LOG_ERROR
} modal_log_level;

/**
 * Route the library's own diagnostics (the local runtime was started, the
 * executable was uploaded) to fn; NULL (the default) discards them. Worker
 * output streamed during
 * modal_fn_remote goes to stderr unless MODAL_QUIET_LOGS is set, and is
 * not affected. Not thread-safe: set it before making calls.
 */
MODAL_API void modal_set_log_hook(void (*fn)(modal_log_level level,
                                             const char *msg, void *user),
                                  void *user);

/* ------------------------------------------------------------------ */
/* Connections to runtimes                                             */
/* ------------------------------------------------------------------ */

/**
 * A connection to one runtime: its URL, token, TLS settings, a small pool
 * of open HTTP connections and a retry policy, and what this process did
 * there already (uploaded its executable). The calls without "_on" use the
 * default connection, built from the environment (MODAL_RUNTIME_URL, ...)
 * or the embedded runtime; a program that talks to several runtimes opens
 * one connection per runtime and passes it to the "_on" calls. Thread-safe:
 * one connection may serve many threads at once.
 */
typedef struct modal_connection modal_connection;

/** modal_connection_options.transport_retries: do not retry. */
#define MODAL_CONNECTION_NO_RETRY (-1)

/**
 * Settings of modal_connection_open. Start from
 * MODAL_CONNECTION_OPTIONS_INIT, which sets size, so fields added later
 * take their defaults in programs built before them. Strings are copied.
 * Zero and NULL mean the default.
 */
typedef struct modal_connection_options {
    size_t size;                /**< sizeof(modal_connection_options) */
    const char *token;          /**< the runtime's token itself, or */
    const char *token_file;     /**< a file holding it (mode 0600, this user's) */
    /** The runtime's public-key pin, "sha256//" and 44 base64 characters
     * (several separated by ';'); https only. Replaces CA checks. */
    const char *tls_fingerprint;
    const char *tls_ca;         /**< a PEM CA bundle for https (default: the system's) */
    /** Retries of a request after a transport error (connection refused or
     * reset, HTTP 503): 0 for the default (6), MODAL_CONNECTION_NO_RETRY
     * for none, at most 100. */
    int transport_retries;
    /** Seconds before the first retry; each next delay doubles, up to 16
     * times this. 0 for the default (0.05); at most 60. */
    double retry_delay;
} modal_connection_options;

/** Options with every field at its default. */
#define MODAL_CONNECTION_OPTIONS_INIT {.size = sizeof(modal_connection_options)}

/**
 * Open a connection to the runtime at url: "unix:/abs/path.sock",
 * "https://host:port" or "http://host:port"; NULL or "" names the
 * embedded local runtime (started on first use, as for the default
 * connection). opts may be NULL (all defaults). The environment
 * (MODAL_TOKEN, MODAL_TLS_*) is not read: a runtime named by url needs
 * opts->token or opts->token_file. Everything is checked now, and a bad
 * URL or option is MODAL_EINVAL (an unusable token file MODAL_EAUTH)
 * naming it; nothing is sent until the first call. On MODAL_OK, *out is a
 * connection to close with modal_connection_close(). Thread-safe.
 */
MODAL_API modal_status modal_connection_open(const char *url,
                                             const modal_connection_options *opts,
                                             modal_connection **out,
                                             modal_error *err);
/**
 * Close conn; NULL is a no-op. Calls running on conn in other threads, and
 * modal_call handles made through it, keep working: each holds the
 * connection until it finishes or is freed, and the connection's resources
 * are released when the last of them is done. After this, conn itself must
 * not be passed to any function. The default connection is never closed.
 */
MODAL_API void modal_connection_close(modal_connection *conn);
/**
 * The URL conn points at: "unix:/path/to/runtime.sock" or
 * "https://host:port" (a trailing '/' removed). Lives until conn is
 * closed. NULL gives modal_runtime_url(). Thread-safe.
 */
MODAL_API const char *modal_connection_url(const modal_connection *conn);

/** modal_fn_remote through conn (NULL: the default connection). */
MODAL_API modal_status modal_fn_remote_on(modal_connection *conn, modal_function *fn,
                                          modal_value *args, modal_value **result,
                                          modal_error *err);
/**
 * modal_fn_spawn through conn (NULL: the default connection). The handle
 * remembers conn: modal_call_get and modal_call_cancel go to the same
 * runtime, also after conn is closed.
 */
MODAL_API modal_status modal_fn_spawn_on(modal_connection *conn, modal_function *fn,
                                         modal_value *args, modal_call **call,
                                         modal_error *err);
/** modal_fn_map through conn (NULL: the default connection). */
MODAL_API modal_status modal_fn_map_on(modal_connection *conn, modal_function *fn,
                                       modal_value *inputs, const modal_map_options *opts,
                                       modal_value **results, modal_error *err);
/** modal_fn_starmap through conn (NULL: the default connection). */
MODAL_API modal_status modal_fn_starmap_on(modal_connection *conn, modal_function *fn,
                                           modal_value *inputs,
                                           const modal_map_options *opts,
                                           modal_value **results, modal_error *err);
/**
 * modal_call_from_id for a call on conn's runtime (NULL: the default
 * connection). The handle remembers conn, as modal_fn_spawn_on's does.
 */
MODAL_API modal_status modal_call_from_id_on(modal_connection *conn, const char *id,
                                             modal_call **call, modal_error *err);


/* ------------------------------------------------------------------ */
/* GPUs: contexts, embedded kernels, launches, remote kernel launch     */
/* ------------------------------------------------------------------ */

/*
 * A function declared with .gpu runs in a worker that holds its devices
 * alone (CUDA_VISIBLE_DEVICES names them by UUID). The worker creates one
 * CUDA context per device when it starts and keeps it, and every module it
 * loads, for all its calls: the helpers below never create a context per
 * call. They load libcuda.so.1 at run time, so a program using them builds
 * and runs where there is no CUDA (they then fail with MODAL_EGPU saying
 * so). Outside a worker (modal_fn_local, tests) they use the calling
 * process's visible devices in the same way. docs/gpu.md has the recipe
 * that compiles a .cu file and links its kernels into the program.
 */

/** A grid or block size: x * y * z threads or blocks (each at least 1). */
typedef struct modal_dim3 {
    unsigned x, y, z;
} modal_dim3;

/** A modal_dim3 of x, y, z; omitted sizes are 1: MODAL_DIM3(256). */
#define MODAL_DIM3(...) (modal__dim3_of((unsigned[3]){__VA_ARGS__}, \
                         sizeof((unsigned[]){__VA_ARGS__}) / sizeof(unsigned)))
/** Private: MODAL_DIM3's helper (missing sizes are 1). */
static inline modal_dim3 modal__dim3_of(const unsigned *v, size_t n)
{
    modal_dim3 d = {v[0], n > 1 ? v[1] : 1, n > 2 ? v[2] : 1};
    return d;
}

/**
 * GPU code embedded in the program: a fatbin (SASS for some architectures,
 * PTX for others to compile at load time) linked in by the make rule of
 * docs/gpu.md from NAME.cu. Declare it with MODAL_GPU_IMAGE(NAME) and pass
 * &NAME_gpu_image; or fill one from bytes of your own.
 */
typedef struct modal_gpu_image {
    const char *name;              /**< for messages, e.g. "saxpy.cu" */
    const unsigned char *data;     /**< the fatbin, cubin or PTX text */
    size_t size;                   /**< its length in bytes; 0 for a fatbin,
                                    *   whose header gives it */
} modal_gpu_image;

/**
 * Declare at file scope the image the make rule built from stem.cu:
 * `MODAL_GPU_IMAGE(saxpy);` defines `static const modal_gpu_image
 * saxpy_gpu_image` over the symbol modal_gpu_image_<stem> that the rule
 * places at the fatbin's first byte. Its size is 0, which tells the
 * library to take the length from the fatbin's own header.
 */
#define MODAL_GPU_IMAGE(stem)                                                  \
    extern const unsigned char modal_gpu_image_##stem[];                       \
    static const modal_gpu_image stem##_gpu_image = {                          \
        #stem ".cu", modal_gpu_image_##stem, 0}

/** How a kernel argument travels. */
typedef enum modal_gpu_arg_kind {
    MODAL_GPU_ARG_SCALAR = 1,  /**< passed by value: its bytes (1..256) */
    MODAL_GPU_ARG_IN = 2,      /**< array copied to the device before the launch */
    MODAL_GPU_ARG_OUT = 3,     /**< array copied back after it (device memory starts zeroed) */
    MODAL_GPU_ARG_INOUT = 4    /**< both */
} modal_gpu_arg_kind;

/**
 * One kernel argument, in the kernel's parameter order. A scalar points at
 * its value; an array points at host memory of size bytes, and the kernel
 * gets a device pointer to a copy of it (staged through pinned memory).
 * Build them with the macros below.
 */
typedef struct modal_gpu_arg {
    modal_gpu_arg_kind kind;
    void *data;                 /**< the scalar's bytes, or the host array */
    size_t size;                /**< bytes */
} modal_gpu_arg;

/** A scalar kernel argument taken from the lvalue v: MODAL_GPU_SCALAR(a). */
#define MODAL_GPU_SCALAR(v) ((modal_gpu_arg){MODAL_GPU_ARG_SCALAR, (void *)&(v), sizeof(v)})
/** n elements at p, copied to the device. */
#define MODAL_GPU_IN(p, n) ((modal_gpu_arg){MODAL_GPU_ARG_IN, (void *)(p), (size_t)(n) * sizeof *(p)})
/** n elements at p, written back from the device. */
#define MODAL_GPU_OUT(p, n) ((modal_gpu_arg){MODAL_GPU_ARG_OUT, (void *)(p), (size_t)(n) * sizeof *(p)})
/** n elements at p, copied to the device and back. */
#define MODAL_GPU_INOUT(p, n) ((modal_gpu_arg){MODAL_GPU_ARG_INOUT, (void *)(p), (size_t)(n) * sizeof *(p)})

/** Most arguments one launch may have. */
#define MODAL_GPU_MAX_ARGS 32

/** One kernel launch. */
typedef struct modal_gpu_launch {
    const modal_gpu_image *image;  /**< the code holding the kernel */
    const char *kernel;            /**< its entry name (extern "C" in the .cu) */
    modal_dim3 grid, block;        /**< launch shape */
    unsigned shared_bytes;         /**< dynamic shared memory per block */
    const modal_gpu_arg *args;     /**< nargs arguments, in parameter order */
    size_t nargs;
    int device;                    /**< which of the worker's devices: 0..count-1 */
} modal_gpu_launch;

/** Times of one launch, in seconds (measured with CUDA events). */
typedef struct modal_gpu_stats {
    double copy_in_s;              /**< host to device, arrays IN and INOUT */
    double kernel_s;               /**< the kernel itself, on the device */
    double copy_out_s;             /**< device to host, arrays OUT and INOUT */
} modal_gpu_stats;

/** What a device is. */
typedef struct modal_gpu_info {
    char name[96];                 /**< the driver's name, "NVIDIA H100 80GB HBM3" */
    char type[24];                 /**< Modal's name, "H100" (or the driver's name) */
    char uuid[48];                 /**< "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */
    unsigned long long memory;     /**< bytes */
    int cc_major, cc_minor;        /**< compute capability, 9.0 for sm_90 */
} modal_gpu_info;

/**
 * How many GPUs the current worker (or, outside one, this process) holds;
 * 0 where there are none or no driver. Thread-safe.
 */
MODAL_API int modal_gpu_count(void);

/** Describe device i (0..modal_gpu_count()-1). */
MODAL_API modal_status modal_gpu_info_get(int device, modal_gpu_info *info,
                                          modal_error *err);

/**
 * The CUDA context (a CUcontext) of device i, made current on the calling
 * thread, for code that calls the driver API or CUDA libraries itself. It
 * is created once per process and kept: never destroy it.
 */
MODAL_API modal_status modal_gpu_context(int device, void **cu_context,
                                         modal_error *err);

/**
 * The kernel `name` of image on device i (a CUfunction). The image's module
 * is loaded once per device and kept; kernels are looked up once. When the
 * driver cannot run the image, the error names the architectures the image
 * has and the one the device needs ("saxpy.cu has sm_80, sm_90 and PTX
 * for compute_90; device 0 (NVIDIA T4) needs sm_75").
 */
MODAL_API modal_status modal_gpu_kernel(int device, const modal_gpu_image *image,
                                        const char *name, void **cu_function,
                                        modal_error *err);

/**
 * Run one launch and wait for it: arrays IN and INOUT are copied to the
 * device (through pinned staging memory kept by the worker), the kernel
 * runs, arrays OUT and INOUT are copied back into their host memory.
 * stats may be NULL. Every argument is checked before the driver is used
 * (MODAL_EINVAL naming it; MODAL_ELIMIT past MODAL_GPU_MAX_ARGS). Driver
 * errors name the kernel, the step and the driver's error ("saxpy:
 * cuLaunchKernel (grid 4x1x1, block 256x1x1, 0 bytes shared):
 * CUDA_ERROR_LAUNCH_FAILED (unspecified launch failure)"); MODAL_ENOMEM
 * when device memory runs out, MODAL_EGPU otherwise. After an error that
 * breaks the CUDA context (a failed launch, an illegal address, a lost
 * device) every later use of the device fails, and a worker exits after
 * answering the call so that a fresh one serves the next. Thread-safe
 * (launches on one device run one at a time).
 */
MODAL_API modal_status modal_gpu_run(const modal_gpu_launch *launch,
                                     modal_gpu_stats *stats, modal_error *err);

/**
 * Remote kernel launch: send the launch (its image's bytes, the kernel's
 * name, the shape and the arguments) to a GPU worker of the runtime, which
 * runs it with modal_gpu_run on a device matching gpu (a .gpu request,
 * "H100" or "any"), and write OUT and INOUT arrays back into their host
 * memory. No program of the caller runs on the GPU machine, so this works
 * from a client without CUDA. stats, when not NULL, gets the worker's
 * times. launch->device picks among the worker's devices (gpu "H100:2"
 * has 0 and 1).
 */
MODAL_API modal_status modal_gpu_run_remote(const char *gpu,
                                            const modal_gpu_launch *launch,
                                            modal_gpu_stats *stats,
                                            modal_error *err);

/** modal_gpu_run_remote on conn. */
MODAL_API modal_status modal_gpu_run_remote_on(modal_connection *conn,
                                               const char *gpu,
                                               const modal_gpu_launch *launch,
                                               modal_gpu_stats *stats,
                                               modal_error *err);

#ifdef __cplusplus
}
#endif
#endif /* MODAL_H */
