/*
 * remote.c: modal_fn_remote, modal_fn_spawn and call handles. A call is a
 * call frame POSTed to the runtime; its result is a result frame fetched by
 * long polls, during which the worker's output is streamed: lines the
 * function wrote to stdout go to the caller's stdout, its stderr lines and
 * the runtime's notices to the caller's stderr, each as "[fn] line".
 */
#include "conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct modal_call {
    modal_connection *conn; /* held (a reference) while the handle lives */
    char id[48];
    char fn[128];
    long long log_offset; /* bytes of output already shown */
    char *partial;        /* an unfinished output line */
    size_t partial_len, partial_cap;
};

/* Longest single long poll; the runtime answers sooner when done. */
#define POLL_SECONDS 25

static int quiet_logs(void)
{
    const char *q = getenv("MODAL_QUIET_LOGS");
    return q != NULL && q[0] != '\0' && strcmp(q, "0") != 0;
}

/* Print one line of the call's output. The runtime tags each: "1 " for
 * the function's stdout, "2 " for its stderr, "! " for its own notices. */
static void show_line(const modal_call *c, const char *line, size_t len)
{
    FILE *to = stderr;
    if (len >= 2 && line[1] == ' ' && (line[0] == '1' || line[0] == '2' || line[0] == '!')) {
        to = line[0] == '1' ? stdout : stderr;
        line += 2;
        len -= 2;
    }
    fprintf(to, "[%s] %.*s\n", c->fn, (int)len, line);
    if (to == stdout)
        fflush(stdout); /* keeps its place among the stderr lines */
}

/* Print output bytes line by line, each prefixed with the function name. */
static void show_output(modal_call *c, const char *text, size_t len)
{
    c->log_offset += (long long)len;
    if (quiet_logs())
        return;
    while (len > 0) {
        const char *nl = memchr(text, '\n', len);
        size_t seg = nl != NULL ? (size_t)(nl - text) : len;
        if (nl != NULL && c->partial_len == 0) {
            show_line(c, text, seg);
        } else {
            char *np = modal__reserve(c->partial, &c->partial_cap, c->partial_len + seg + 1, 256);
            if (np == NULL)
                return; /* output is best effort; the call goes on */
            c->partial = np;
            memcpy(c->partial + c->partial_len, text, seg);
            c->partial_len += seg;
            if (nl != NULL) {
                show_line(c, c->partial, c->partial_len);
                c->partial_len = 0;
            }
        }
        if (nl == NULL)
            break;
        text += seg + 1;
        len -= seg + 1;
    }
}

static void flush_output(modal_call *c)
{
    if (c->partial_len > 0 && !quiet_logs())
        show_line(c, c->partial, c->partial_len);
    c->partial_len = 0;
}

static void fetch_logs(modal_call *c, long long total)
{
    if (total <= c->log_offset)
        return;
    char path[160];
    snprintf(path, sizeof path, MODAL__PATH_CALLS "/%s" MODAL__PATH_LOGS "?offset=%lld", c->id, c->log_offset);
    modal__http_req req = {.method = "GET", .path = path, .timeout = 30};
    modal__http_resp resp;
    if (modal__http(c->conn, &req, &resp, NULL) == MODAL_OK && resp.body != NULL)
        show_output(c, (const char *)resp.body->base, resp.body->len);
    modal__http_resp_free(&resp);
}

modal_status modal__result_read(modal__dec *dec, modal_value **v, char *msg, size_t msgsz)
{
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(dec->env, "status");
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(dec->env, "message");
    modal_status code = cJSON_IsString(js) ? modal__status_from_name(js->valuestring)
                                           : MODAL_ECODEC;
    *v = NULL;
    snprintf(msg, msgsz, "%s", cJSON_IsString(jm) ? jm->valuestring
                               : code == MODAL_ECODEC ? "the runtime sent a malformed result"
                               : "");
    if (code != MODAL_OK)
        return code;
    modal_error verr;
    if (modal__msg_value(dec, "result", v, &verr) != MODAL_OK) {
        snprintf(msg, msgsz, "%s", verr.message);
        return verr.code;
    }
    return MODAL_OK;
}

/* Decode a result frame into *result or the error it carries. */
static modal_status take_result(modal__buf *body, modal_value **result, modal_error *err)
{
    modal__dec dec;
    modal_status st = modal__dec_open(body, 1, &dec, err);
    if (st != MODAL_OK)
        return st;
    modal_value *v;
    char msg[MODAL_ERROR_MESSAGE_SIZE];
    st = modal__result_read(&dec, &v, msg, sizeof msg);
    modal__dec_close(&dec);
    if (st != MODAL_OK)
        return modal__fail(err, st, "%s", msg);
    if (result != NULL)
        *result = v;
    else
        modal_value_free(v);
    modal__ok(err);
    return MODAL_OK;
}

/* Handle a 202 "still running" answer: show its output. */
static void take_progress(modal_call *c, const modal__buf *body)
{
    cJSON *j = body != NULL ? cJSON_ParseWithLength((const char *)body->base, body->len) : NULL;
    const cJSON *logs = cJSON_GetObjectItemCaseSensitive(j, "logs");
    if (cJSON_IsString(logs))
        show_output(c, logs->valuestring, strlen(logs->valuestring));
    cJSON_Delete(j);
}

/*
 * Wait for the call's result for up to timeout seconds (negative: no
 * limit). A 200 answer is the final result, 202 means still running.
 */
static modal_status wait_result(modal_call *c, modal__http_resp *first, double timeout,
                                modal_value **result, modal_error *err)
{
    double deadline = timeout < 0 ? -1 : modal__now() + timeout;
    modal__http_resp resp = *first;
    for (;;) {
        if (resp.status == 200) {
            fetch_logs(c, resp.log_size);
            flush_output(c);
            modal_status st = take_result(resp.body, result, err);
            modal__http_resp_free(&resp);
            return st;
        }
        take_progress(c, resp.body);
        modal__http_resp_free(&resp);
        double left = deadline < 0 ? POLL_SECONDS : deadline - modal__now();
        if (deadline >= 0 && left <= 0)
            return modal__fail(err, MODAL_EPENDING, "call %s (%s) has not finished yet",
                               c->id, c->fn);
        double wait = left < POLL_SECONDS ? left : POLL_SECONDS;
        char path[160];
        snprintf(path, sizeof path, MODAL__PATH_CALLS "/%s?wait=%.3f&log_offset=%lld", c->id, wait,
                 c->log_offset);
        modal__http_req req = {.method = "GET", .path = path, .timeout = (long)wait + 30};
        modal_status st = modal__http(c->conn, &req, &resp, err);
        if (st == MODAL_ENOTFOUND)
            return modal__fail(err, MODAL_ENOTFOUND,
                               "no call %s on the runtime at %s (its result may have expired)",
                               c->id, modal__conn_url(c->conn));
        if (st == MODAL_ETRANSPORT && err != NULL) {
            char why[MODAL_ERROR_MESSAGE_SIZE];
            snprintf(why, sizeof why, "%s", err->message);
            return modal__fail(err, MODAL_ETRANSPORT,
                               "lost the runtime while waiting for call %s (%s): %s",
                               c->id, c->fn, why);
        }
        if (st != MODAL_OK)
            return st;
    }
}

cJSON *modal__call_envelope(const char *spec_id, const char *call_id)
{
    cJSON *env = cJSON_CreateObject();
    modal__json_num(env, "v", MODAL__FRAME_VERSION);
    cJSON_AddStringToObject(env, "spec", spec_id);
    if (call_id != NULL)
        cJSON_AddStringToObject(env, "call_id", call_id);
    return env;
}

/* Check fn and args, upload the executable to conn's runtime, register
 * the function's spec there: what every remote use needs. */
modal_status modal__remote_prepare(modal_connection *conn, modal_function *fn,
                                   const modal_value *list, const char *what,
                                   const char **artifact, char spec_id[65], modal_error *err)
{
    modal_status st = modal__check_call(fn, list, what, err);
    if (st == MODAL_OK)
        st = modal__artifact_ensure(conn, artifact, err);
    return st != MODAL_OK ? st : modal__spec_ensure(conn, fn, *artifact, spec_id, err);
}

/* POST the call; wait up to `wait` seconds for it inside the request. */
static modal_status submit_once(const modal__call_target *t, modal_value *args, double wait,
                                modal_call *c, modal__http_resp *resp, const char **artifact,
                                char spec_id[65], modal_error *err)
{
    modal_status st = t->prepare(c->conn, t->ctx, artifact, spec_id, err);
    if (st != MODAL_OK)
        return st;
    modal__random_id(MODAL__CALL_ID_PREFIX, c->id, sizeof c->id);
    snprintf(c->fn, sizeof c->fn, "%s", t->name);
    modal__enc enc;
    st = modal__msg_build(modal__call_envelope(spec_id, c->id), "args", args, &enc, err);
    if (st != MODAL_OK)
        return st;
    char path[64];
    snprintf(path, sizeof path, MODAL__PATH_CALLS "?wait=%.3f", wait);
    modal__http_req req = {.method = "POST", .path = path, .enc = &enc,
                           .content_type = MODAL__CT_FRAME,
                           .timeout = (long)wait + 600};
    st = modal__http(c->conn, &req, resp, err);
    modal__enc_free(&enc);
    return st;
}

static modal_status submit(const modal__call_target *t, modal_value *args, double wait,
                           modal_call *c, modal__http_resp *resp, modal_error *err)
{
    const char *artifact = NULL;
    char spec_id[65] = "";
    modal_error local; /* the refusal is recognised by its message */
    if (err == NULL)
        err = &local;
    /* The runtime lost the function's spec (it restarted) or the
     * executable (removed, found damaged, or a restart with a new state
     * directory): register or upload it again, each once. A restarted
     * runtime can have lost both, and says so one at a time. */
    bool spec_again = false, artifact_again = false;
    for (;;) {
        modal_status st = submit_once(t, args, wait, c, resp, &artifact, spec_id, err);
        if (st != MODAL_OK && !spec_again && modal__spec_refused(c->conn, st, err, spec_id))
            spec_again = true;
        else if (st != MODAL_OK && !artifact_again &&
                 t->lost(c->conn, t->ctx, st, err, artifact))
            artifact_again = true;
        else
            return st;
    }
}

/* A function of this program as a call target: its executable is
 * uploaded, its spec registered, from its own options. */
typedef struct fn_target {
    modal_function *fn;
    const modal_value *args;
} fn_target;

static modal_status fn_prepare(modal_connection *conn, void *ctx, const char **artifact,
                               char spec_id[65], modal_error *err)
{
    const fn_target *f = ctx;
    return modal__remote_prepare(conn, f->fn, f->args, "argument", artifact, spec_id, err);
}

static bool fn_lost(modal_connection *conn, void *ctx, modal_status st,
                    const modal_error *err, const char *artifact)
{
    return modal__artifact_refused(conn, st, err, artifact);
}

static modal_status submit_fn(modal_function *fn, modal_value *args, double wait,
                              modal_call *c, modal__http_resp *resp, modal_error *err)
{
    fn_target f = {fn, args};
    modal__call_target t = {fn->name, fn_prepare, fn_lost, &f};
    return submit(&t, args, wait, c, resp, err);
}

modal_status modal__remote_call(modal_connection *conn, const modal__call_target *t,
                                modal_value *args, modal_value **result, modal_error *err)
{
    if (result != NULL)
        *result = NULL;
    modal_call c;
    memset(&c, 0, sizeof c);
    c.conn = modal__conn_acquire(conn);
    modal__http_resp resp;
    modal_status st = submit(t, args, POLL_SECONDS, &c, &resp, err);
    modal_value_free(args);
    if (st == MODAL_OK)
        st = wait_result(&c, &resp, -1, result, err);
    free(c.partial);
    modal__conn_release(c.conn);
    return st;
}

static modal_status remote_on(const char *api, modal_connection *conn, modal_function *fn,
                              modal_value *args, modal_value **result, modal_error *err)
{
    if (result != NULL)
        *result = NULL;
    if (fn == NULL) {
        modal_value_free(args);
        return modal__null_arg(err, api, "fn", MODAL__FN_HINT);
    }
    fn_target f = {fn, args};
    modal__call_target t = {fn->name, fn_prepare, fn_lost, &f};
    return modal__remote_call(conn, &t, args, result, err);
}

modal_status modal_fn_remote(modal_function *fn, modal_value *args, modal_value **result,
                             modal_error *err)
{
    return remote_on("modal_fn_remote", NULL, fn, args, result, err);
}

modal_status modal_fn_remote_on(modal_connection *conn, modal_function *fn, modal_value *args,
                                modal_value **result, modal_error *err)
{
    return remote_on("modal_fn_remote_on", conn, fn, args, result, err);
}

static modal_status spawn_on(const char *api, modal_connection *conn, modal_function *fn,
                             modal_value *args, modal_call **call, modal_error *err)
{
    /* args are taken on every path, refusals included. */
    if (call == NULL) {
        modal_value_free(args);
        return modal__null_arg(err, api, "call",
                               "pass the address of a modal_call * to receive the handle");
    }
    *call = NULL;
    if (fn == NULL) {
        modal_value_free(args);
        return modal__null_arg(err, api, "fn", MODAL__FN_HINT);
    }
    modal_call *c = modal__calloc(1, sizeof *c);
    if (c == NULL) {
        modal_value_free(args);
        return modal__fail(err, MODAL_ENOMEM, "out of memory creating a call handle");
    }
    c->conn = modal__conn_acquire(conn);
    modal__http_resp resp;
    modal_status st = submit_fn(fn, args, 0, c, &resp, err);
    modal_value_free(args);
    if (st != MODAL_OK) {
        modal_call_free(c);
        return st;
    }
    modal__http_resp_free(&resp);
    *call = c;
    modal__ok(err);
    return MODAL_OK;
}

modal_status modal_fn_spawn(modal_function *fn, modal_value *args, modal_call **call,
                            modal_error *err)
{
    return spawn_on("modal_fn_spawn", NULL, fn, args, call, err);
}

modal_status modal_fn_spawn_on(modal_connection *conn, modal_function *fn, modal_value *args,
                               modal_call **call, modal_error *err)
{
    return spawn_on("modal_fn_spawn_on", conn, fn, args, call, err);
}

const char *modal_call_id(const modal_call *call)
{
    return call != NULL ? call->id : "";
}

#define CALL_HINT "pass a handle from modal_fn_spawn() or modal_call_from_id()"

static modal_status call_from_id_on(const char *api, modal_connection *conn, const char *id,
                                    modal_call **call, modal_error *err)
{
    if (call == NULL)
        return modal__null_arg(err, api, "call",
                               "pass the address of a modal_call * to receive the handle");
    *call = NULL;
    if (id == NULL)
        return modal__null_arg(err, api, "id", "pass a call id from modal_call_id()");
    const char *bad_id = modal__call_id_problem(id);
    if (bad_id != NULL)
        return modal__fail(err, MODAL_EINVAL, "\"%.64s\" %s", id, bad_id);
    modal_call *c = modal__calloc(1, sizeof *c);
    if (c == NULL)
        return modal__fail(err, MODAL_ENOMEM, "out of memory creating a call handle");
    c->conn = modal__conn_acquire(conn);
    snprintf(c->id, sizeof c->id, "%s", id);
    snprintf(c->fn, sizeof c->fn, "%s", id);
    *call = c;
    modal__ok(err);
    return MODAL_OK;
}

modal_status modal_call_from_id(const char *id, modal_call **call, modal_error *err)
{
    return call_from_id_on("modal_call_from_id", NULL, id, call, err);
}

modal_status modal_call_from_id_on(modal_connection *conn, const char *id, modal_call **call,
                                   modal_error *err)
{
    return call_from_id_on("modal_call_from_id_on", conn, id, call, err);
}

modal_status modal_call_get(modal_call *call, double timeout, modal_value **result,
                            modal_error *err)
{
    if (result != NULL)
        *result = NULL;
    if (call == NULL)
        return modal__null_arg(err, "modal_call_get", "call", CALL_HINT);
    double wait = timeout < 0 ? POLL_SECONDS : (timeout < POLL_SECONDS ? timeout : POLL_SECONDS);
    char path[160];
    snprintf(path, sizeof path, MODAL__PATH_CALLS "/%s?wait=%.3f&log_offset=%lld", call->id, wait,
             call->log_offset);
    modal__http_req req = {.method = "GET", .path = path, .timeout = (long)wait + 30};
    modal__http_resp resp;
    double start = modal__now();
    modal_status st = modal__http(call->conn, &req, &resp, err);
    /* Several runtimes may be in use: say which one does not know it. */
    if (st == MODAL_ENOTFOUND)
        return modal__fail(err, MODAL_ENOTFOUND,
                           "no call %s on the runtime at %s (unknown there, or its result "
                           "expired)", call->id, modal__conn_url(call->conn));
    if (st == MODAL_ETRANSPORT && err != NULL) {
        char why[MODAL_ERROR_MESSAGE_SIZE];
        snprintf(why, sizeof why, "%s", err->message);
        return modal__fail(err, MODAL_ETRANSPORT, "cannot fetch call %s: %s", call->id, why);
    }
    if (st != MODAL_OK)
        return st;
    double left = timeout < 0 ? -1 : timeout - (modal__now() - start);
    if (timeout >= 0 && left < 0)
        left = 0;
    return wait_result(call, &resp, left, result, err);
}

modal_status modal_call_cancel(modal_call *call, modal_error *err)
{
    if (call == NULL)
        return modal__null_arg(err, "modal_call_cancel", "call", CALL_HINT);
    char path[96];
    snprintf(path, sizeof path, MODAL__PATH_CALLS "/%s", call->id);
    modal__http_req req = {.method = "DELETE", .path = path, .timeout = 30};
    modal__http_resp resp;
    modal_status st = modal__http(call->conn, &req, &resp, err);
    modal__http_resp_free(&resp);
    if (st == MODAL_OK)
        modal__ok(err);
    return st;
}

void modal_call_free(modal_call *call)
{
    if (call != NULL) {
        free(call->partial);
        modal__conn_release(call->conn);
    }
    free(call);
}
