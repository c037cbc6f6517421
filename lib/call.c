/*
 * call.c: running a function body: the call context, argument accessors,
 * turning a body's outcome into a status, and modal_fn_local, which runs
 * the body in-process through the same wire path a remote call takes.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* The call running on this thread, so argument accessors can fail it. */
static _Thread_local modal_ctx *current_ctx;

modal_value *modal_ctx_fail(modal_ctx *ctx, const char *fmt, ...)
{
    if (ctx == NULL || ctx->failed)
        return NULL;
    if (fmt == NULL) {
        /* Still a failure: the body meant to fail, and says so. */
        snprintf(ctx->message, sizeof ctx->message,
                 "modal_ctx_fail: fmt is NULL; pass a message saying why the call failed");
        ctx->failed = true;
        ctx->code = MODAL_EFUNC;
        return NULL;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->message, sizeof ctx->message, fmt, ap);
    va_end(ap);
    ctx->failed = true;
    ctx->code = MODAL_EFUNC;
    return NULL;
}

bool modal_ctx_failed(const modal_ctx *ctx)
{
    return ctx != NULL && ctx->failed;
}

const char *modal_ctx_call_id(const modal_ctx *ctx)
{
    return ctx != NULL && ctx->call_id != NULL ? ctx->call_id : "";
}

int modal_ctx_attempt(const modal_ctx *ctx)
{
    return ctx != NULL ? ctx->attempt : 0;
}

const modal_function *modal_ctx_function(const modal_ctx *ctx)
{
    return ctx != NULL ? ctx->fn : NULL;
}

bool modal_ctx_is_remote(const modal_ctx *ctx)
{
    return ctx != NULL && ctx->remote;
}

/* An accessor's message without its "modal_get_int: " prefix. */
static const char *accessor_detail(const char *msg)
{
    const char *colon = strstr(msg, ": ");
    return strncmp(msg, "modal_get_", 10) == 0 && colon != NULL ? colon + 2 : msg;
}

/* Record the first argument problem of the running call. */
static void arg_fail(modal_status code, size_t i, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void arg_fail(modal_status code, size_t i, const char *fmt, ...)
{
    modal_ctx *ctx = current_ctx;
    if (ctx == NULL || ctx->failed)
        return;
    /* Worded like any error, then placed after the argument's number. */
    modal_error what;
    va_list ap;
    va_start(ap, fmt);
    ctx->code = modal__vfail(&what, code, fmt, ap);
    va_end(ap);
    snprintf(ctx->message, sizeof ctx->message, "argument %zu: %.384s", i, what.message);
    ctx->failed = true;
}

const modal_value *modal_arg(const modal_value *args, size_t i)
{
    const modal_value *v = modal_list_get(args, i);
    if (v == NULL) {
        size_t n = modal_value_len(args);
        arg_fail(MODAL_ERANGE, i, "missing (the call passed %zu argument%s)", n,
                 n == 1 ? "" : "s");
    }
    return v;
}

/* Fetch argument i and check it with getter; shared by the scalar forms. */
#define ARG_SCALAR(ctype, getter, zero)                                        \
    const modal_value *v = modal_arg(args, i);                                 \
    ctype out = zero;                                                          \
    modal_error e;                                                             \
    if (v != NULL && getter(v, &out, &e) != MODAL_OK)                          \
        arg_fail(e.code, i, "%s", accessor_detail(e.message));                 \
    return out

int64_t modal_arg_int(const modal_value *args, size_t i)
{
    ARG_SCALAR(int64_t, modal_get_int, 0);
}

double modal_arg_float(const modal_value *args, size_t i)
{
    ARG_SCALAR(double, modal_get_float, 0.0);
}

bool modal_arg_bool(const modal_value *args, size_t i)
{
    ARG_SCALAR(bool, modal_get_bool, false);
}

const char *modal_arg_string(const modal_value *args, size_t i)
{
    const modal_value *v = modal_arg(args, i);
    const char *s = NULL;
    modal_error e;
    if (v != NULL && modal_get_string(v, &s, NULL, &e) != MODAL_OK)
        arg_fail(e.code, i, "%s", accessor_detail(e.message));
    return s;
}

const void *modal_arg_bytes(const modal_value *args, size_t i, size_t *len)
{
    const modal_value *v = modal_arg(args, i);
    const void *p = NULL;
    size_t n = 0;
    modal_error e;
    if (v != NULL && modal_get_bytes(v, &p, &n, &e) != MODAL_OK)
        arg_fail(e.code, i, "%s", accessor_detail(e.message));
    if (len != NULL)
        *len = n;
    return p;
}

const void *modal_arg_array(const modal_value *args, size_t i,
                            modal_dtype dtype, size_t *count)
{
    const modal_value *v = modal_arg(args, i);
    const void *p = NULL;
    size_t n = 0;
    modal_error e;
    if (v != NULL && modal_get_array(v, dtype, &p, &n, &e) != MODAL_OK) {
        arg_fail(e.code, i, "%s", accessor_detail(e.message));
        p = NULL;
        n = 0;
    }
    if (count != NULL)
        *count = n;
    return p;
}

modal_status modal__invoke(modal_function *fn, modal_ctx *ctx,
                           const modal_value *args, modal_value **result,
                           modal_error *err)
{
    modal_ctx *saved = current_ctx;
    current_ctx = ctx;
    modal_value *r = fn->body(ctx, args);
    current_ctx = saved;
    if (ctx->failed) {
        modal_value_free(r);
        return modal__fail(err, ctx->code, "%s: %s", fn->name, ctx->message);
    }
    if (r == NULL)
        return modal__fail(err, MODAL_EFUNC,
                           "%s: returned NULL without calling modal_ctx_fail(); "
                           "a result constructor probably ran out of memory, or "
                           "return modal_null() for no result",
                           fn->name);
    *result = r;
    return MODAL_OK;
}

int modal__json_num(cJSON *obj, const char *key, double v)
{
    char text[32];
    if (v == (double)(long long)v && v > -9.0e15 && v < 9.0e15)
        modal__fmt_int(text, (long long)v);
    else if (isfinite(v))
        snprintf(text, sizeof text, "%.17g", v);
    else
        return -1; /* JSON has no NaN or infinity */
    cJSON *n = cJSON_CreateRaw(text);
    if (n == NULL || !cJSON_AddItemToObject(obj, key, n)) {
        cJSON_Delete(n);
        return -1;
    }
    return 0;
}

void modal__random_id(const char *prefix, char *out, size_t outsz)
{
    static const char alphabet[] = MODAL__ID_ALPHABET;
    unsigned char rnd[MODAL__ID_RANDOM_LEN];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        /* getrandom only fails before the pool is seeded; ids then fall
         * back to time and address entropy, which is unique enough. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        unsigned long long x = (unsigned long long)ts.tv_nsec ^
                               ((unsigned long long)ts.tv_sec << 30) ^
                               (unsigned long long)(uintptr_t)out;
        for (size_t i = 0; i < sizeof rnd; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            rnd[i] = (unsigned char)(x >> 56);
        }
    }
    char body[27];
    for (size_t i = 0; i < 26; i++)
        body[i] = alphabet[rnd[i] & 31];
    body[26] = '\0';
    snprintf(out, outsz, "%s%s", prefix, body);
}

modal_status modal__msg_build(cJSON *env, const char *key,
                              const modal_value *v, modal__enc *enc,
                              modal_error *err)
{
    memset(enc, 0, sizeof *enc);
    if (env == NULL)
        return modal__fail(err, MODAL_ENOMEM, "out of memory building a message");
    if (v != NULL) {
        modal_error local = {MODAL_ENOMEM, "out of memory encoding a value"};
        cJSON *j = modal__value_to_json(v, enc, &local);
        if (j == NULL) {
            cJSON_Delete(env);
            modal__enc_free(enc);
            if (err != NULL)
                *err = local;
            return local.code;
        }
        if (!cJSON_AddItemToObject(env, key, j)) {
            cJSON_Delete(j);
            cJSON_Delete(env);
            modal__enc_free(enc);
            return modal__fail(err, MODAL_ENOMEM, "out of memory building a message");
        }
    }
    modal_status st = modal__enc_finish(enc, env, err);
    cJSON_Delete(env);
    if (st != MODAL_OK)
        modal__enc_free(enc);
    return st;
}

modal_status modal__msg_value(modal__dec *dec, const char *key,
                              modal_value **out, modal_error *err)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(dec->env, key);
    char path[64];
    snprintf(path, sizeof path, "$.%s", key);
    if (j == NULL)
        return modal__fail(err, MODAL_ECODEC, "message has no \"%s\" field", key);
    return modal__value_from_json(dec, j, path, out, err);
}

/* Encode v under key, then decode it back from the flattened frame, the
 * way it would cross the wire. Consumes nothing. */
static modal_status wire_round_trip(const char *key, const modal_value *v,
                                    modal_value **out, modal_error *err)
{
    modal__enc enc;
    cJSON *env = cJSON_CreateObject();
    if (env != NULL && modal__json_num(env, "v", MODAL__FRAME_VERSION) != 0) {
        cJSON_Delete(env);
        env = NULL;
    }
    modal_status st = modal__msg_build(env, key, v, &enc, err);
    if (st != MODAL_OK)
        return st;
    modal__buf *buf = NULL;
    st = modal__enc_flatten(&enc, &buf, err);
    modal__enc_free(&enc);
    if (st != MODAL_OK)
        return st;
    modal__dec dec;
    st = modal__dec_open(buf, 1, &dec, err);
    modal__buf_unref(buf); /* the decoder and borrowing values hold it */
    if (st != MODAL_OK)
        return st;
    st = modal__msg_value(&dec, key, out, err);
    modal__dec_close(&dec);
    return st;
}

modal_status modal__check_call(modal_function *fn, const modal_value *list,
                               const char *what, modal_error *err)
{
    modal_status st = modal_function_check(fn, err);
    if (st != MODAL_OK)
        return st;
    if (list == NULL)
        return modal__fail(err, MODAL_ENOMEM,
                           "%s: the %s list is NULL: a value constructor failed (out of "
                           "memory or an invalid input such as a string with a NUL)",
                           fn->name, what);
    if (modal_value_type(list) != MODAL_TYPE_LIST)
        return modal__fail(err, MODAL_EINVAL, "%s: %ss must be a list (use modal_args(...) or "
                           "modal_list()), got %s", fn->name, what,
                           modal_type_name(modal_value_type(list)));
    return MODAL_OK;
}

modal_status modal_fn_local(modal_function *fn, modal_value *args,
                            modal_value **result, modal_error *err)
{
    modal_status st;
    modal_value *wire_args = NULL, *ret = NULL;
    if (result != NULL)
        *result = NULL;
    if (fn == NULL) {
        st = modal__null_arg(err, "modal_fn_local", "fn", MODAL__FN_HINT);
        goto out;
    }
    if ((st = modal__check_call(fn, args, "argument", err)) != MODAL_OK)
        goto out;
    if ((st = wire_round_trip("args", args, &wire_args, err)) != MODAL_OK)
        goto out;
    modal_value_free(args);
    args = NULL;

    char id[40];
    modal__random_id("local-", id, sizeof id);
    modal_ctx ctx = {.fn = fn, .call_id = id, .attempt = 1, .remote = false};
    modal_value *raw = NULL;
    bool batched = modal__batched(fn);
    if (batched) {
        /* A batched body takes lists: this call is a batch of one. */
        modal_value *cols = NULL;
        st = modal__batch_columns(&wire_args, 1, &cols, err);
        modal_value_free(wire_args);
        wire_args = cols;
        if (st != MODAL_OK)
            goto out;
    }
    st = modal__invoke(fn, &ctx, wire_args, &raw, err);
    modal_value_free(wire_args);
    if (st == MODAL_OK && batched && (st = modal__batch_result_check(fn, raw, 1, err)) != MODAL_OK)
        modal_value_free(raw);
    if (st != MODAL_OK)
        goto out;
    st = wire_round_trip("result", batched ? modal_list_get(raw, 0) : raw, &ret, err);
    modal_value_free(raw);
    if (st == MODAL_OK) {
        if (result != NULL)
            *result = ret;
        else
            modal_value_free(ret);
        modal__ok(err);
    }
out:
    modal_value_free(args);
    return st;
}
