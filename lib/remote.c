/*
 * remote.c: modal_fn_remote, modal_fn_spawn and call handles. A call is a
 * call frame POSTed to the runtime; its result is a result frame fetched by
 * long polls, during which the worker's output is streamed: lines the
 * function wrote to stdout go to the caller's stdout, its stderr lines and
 * the runtime's notices to the caller's stderr, each as "[fn] line".
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct modal_call {
    char id[48];
    char fn[128];
    long long log_offset; /* bytes of output already shown */
    char *partial;        /* an unfinished output line */
    size_t partial_len, partial_cap;
};

/* Longest single long poll; the runtime answers sooner when done. */
#define POLL_SECONDS 25

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

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
    snprintf(path, sizeof path, "/v1/calls/%s/logs?offset=%lld", c->id, c->log_offset);
    modal__http_req req = {.method = "GET", .path = path, .timeout = 30};
    modal__http_resp resp;
    if (modal__http(&req, &resp, NULL) == MODAL_OK && resp.body != NULL)
        show_output(c, (const char *)resp.body->base, resp.body->len);
    modal__http_resp_free(&resp);
}

/* Decode a result frame into *result or the error it carries. */
static modal_status take_result(modal__buf *body, modal_value **result, modal_error *err)
{
    modal__dec dec;
    modal_status st = modal__dec_open(body, 1, &dec, err);
    if (st != MODAL_OK)
        return st;
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(dec.env, "status");
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(dec.env, "message");
    modal_status code = cJSON_IsString(js) ? modal__status_from_name(js->valuestring)
                                           : MODAL_ECODEC;
    if (code != MODAL_OK) {
        st = modal__fail(err, code, "%s",
                         cJSON_IsString(jm) ? jm->valuestring : "the runtime sent a malformed result");
    } else {
        modal_value *v = NULL;
        st = modal__msg_value(&dec, "result", &v, err);
        if (st == MODAL_OK && result != NULL)
            *result = v;
        else
            modal_value_free(v);
        if (st == MODAL_OK)
            modal__ok(err);
    }
    modal__dec_close(&dec);
    return st;
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
    double deadline = timeout < 0 ? -1 : now_s() + timeout;
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
        double left = deadline < 0 ? POLL_SECONDS : deadline - now_s();
        if (deadline >= 0 && left <= 0)
            return modal__fail(err, MODAL_EPENDING, "call %s (%s) has not finished yet",
                               c->id, c->fn);
        double wait = left < POLL_SECONDS ? left : POLL_SECONDS;
        char path[160];
        snprintf(path, sizeof path, "/v1/calls/%s?wait=%.3f&log_offset=%lld", c->id, wait,
                 c->log_offset);
        modal__http_req req = {.method = "GET", .path = path, .timeout = (long)wait + 30};
        modal_status st = modal__http(&req, &resp, err);
        if (st == MODAL_ENOTFOUND)
            return modal__fail(err, MODAL_ENOTFOUND,
                               "no call %s on the runtime at %s (its result may have expired)",
                               c->id, modal_runtime_url());
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
    modal__json_num(env, "v", 1);
    cJSON_AddStringToObject(env, "spec", spec_id);
    if (call_id != NULL)
        cJSON_AddStringToObject(env, "call_id", call_id);
    return env;
}

/* Check fn and args, upload the executable, register the function's
 * spec: what every remote use needs. */
modal_status modal__remote_prepare(modal_function *fn, const modal_value *list,
                                   const char *what, const char **artifact, char spec_id[65],
                                   modal_error *err)
{
    modal_status st = modal__check_call(fn, list, what, err);
    if (st == MODAL_OK)
        st = modal__artifact_ensure(artifact, err);
    return st != MODAL_OK ? st : modal__spec_ensure(fn, *artifact, spec_id, err);
}

/* POST the call; wait up to `wait` seconds for it inside the request. */
static modal_status submit_once(modal_function *fn, modal_value *args, double wait,
                                modal_call *c, modal__http_resp *resp, const char **artifact,
                                char spec_id[65], modal_error *err)
{
    modal_status st = modal__remote_prepare(fn, args, "argument", artifact, spec_id, err);
    if (st != MODAL_OK)
        return st;
    modal__random_id("fc-", c->id, sizeof c->id);
    snprintf(c->fn, sizeof c->fn, "%s", fn->name);
    modal__enc enc;
    st = modal__msg_build(modal__call_envelope(spec_id, c->id), "args", args, &enc, err);
    if (st != MODAL_OK)
        return st;
    char path[64];
    snprintf(path, sizeof path, "/v1/calls?wait=%.3f", wait);
    modal__http_req req = {.method = "POST", .path = path, .enc = &enc,
                           .content_type = "application/x-modal-frame",
                           .timeout = (long)wait + 600};
    st = modal__http(&req, resp, err);
    modal__enc_free(&enc);
    return st;
}

static modal_status submit(modal_function *fn, modal_value *args, double wait, modal_call *c,
                           modal__http_resp *resp, modal_error *err)
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
        modal_status st = submit_once(fn, args, wait, c, resp, &artifact, spec_id, err);
        if (st != MODAL_OK && !spec_again && modal__spec_refused(st, err, spec_id))
            spec_again = true;
        else if (st != MODAL_OK && !artifact_again && modal__artifact_refused(st, err, artifact))
            artifact_again = true;
        else
            return st;
    }
}

modal_status modal_fn_remote(modal_function *fn, modal_value *args, modal_value **result,
                             modal_error *err)
{
    if (result != NULL)
        *result = NULL;
    if (fn == NULL) {
        modal_value_free(args);
        return modal__null_arg(err, "modal_fn_remote", "fn", MODAL__FN_HINT);
    }
    modal_call c;
    memset(&c, 0, sizeof c);
    modal__http_resp resp;
    modal_status st = submit(fn, args, POLL_SECONDS, &c, &resp, err);
    modal_value_free(args);
    if (st != MODAL_OK)
        return st;
    st = wait_result(&c, &resp, -1, result, err);
    free(c.partial);
    return st;
}

modal_status modal_fn_spawn(modal_function *fn, modal_value *args, modal_call **call,
                            modal_error *err)
{
    /* args are taken on every path, refusals included. */
    if (call == NULL) {
        modal_value_free(args);
        return modal__null_arg(err, "modal_fn_spawn", "call",
                               "pass the address of a modal_call * to receive the handle");
    }
    *call = NULL;
    if (fn == NULL) {
        modal_value_free(args);
        return modal__null_arg(err, "modal_fn_spawn", "fn", MODAL__FN_HINT);
    }
    modal_call *c = modal__calloc(1, sizeof *c);
    if (c == NULL) {
        modal_value_free(args);
        return modal__fail(err, MODAL_ENOMEM, "out of memory creating a call handle");
    }
    modal__http_resp resp;
    modal_status st = submit(fn, args, 0, c, &resp, err);
    modal_value_free(args);
    if (st != MODAL_OK) {
        free(c);
        return st;
    }
    modal__http_resp_free(&resp);
    *call = c;
    modal__ok(err);
    return MODAL_OK;
}

const char *modal_call_id(const modal_call *call)
{
    return call != NULL ? call->id : "";
}

#define CALL_HINT "pass a handle from modal_fn_spawn() or modal_call_from_id()"

static int valid_call_id(const char *id)
{
    if (id == NULL || strncmp(id, "fc-", 3) != 0 || strlen(id) != 29)
        return 0;
    for (const char *p = id + 3; *p; p++)
        if (strchr("0123456789abcdefghjkmnpqrstvwxyz", *p) == NULL)
            return 0;
    return 1;
}

modal_status modal_call_from_id(const char *id, modal_call **call, modal_error *err)
{
    if (call == NULL)
        return modal__null_arg(err, "modal_call_from_id", "call",
                               "pass the address of a modal_call * to receive the handle");
    *call = NULL;
    if (id == NULL)
        return modal__null_arg(err, "modal_call_from_id", "id",
                               "pass a call id from modal_call_id()");
    if (!valid_call_id(id))
        return modal__fail(err, MODAL_EINVAL,
                           "\"%.64s\" is not a call id: ids look like fc- followed by 26 "
                           "characters of 0-9 and a-z without i, l, o and u",
                           id != NULL ? id : "(null)");
    modal_call *c = modal__calloc(1, sizeof *c);
    if (c == NULL)
        return modal__fail(err, MODAL_ENOMEM, "out of memory creating a call handle");
    snprintf(c->id, sizeof c->id, "%s", id);
    snprintf(c->fn, sizeof c->fn, "%s", id);
    *call = c;
    modal__ok(err);
    return MODAL_OK;
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
    snprintf(path, sizeof path, "/v1/calls/%s?wait=%.3f&log_offset=%lld", call->id, wait,
             call->log_offset);
    modal__http_req req = {.method = "GET", .path = path, .timeout = (long)wait + 30};
    modal__http_resp resp;
    double start = now_s();
    modal_status st = modal__http(&req, &resp, err);
    if (st == MODAL_ETRANSPORT && err != NULL) {
        char why[MODAL_ERROR_MESSAGE_SIZE];
        snprintf(why, sizeof why, "%s", err->message);
        return modal__fail(err, MODAL_ETRANSPORT, "cannot fetch call %s: %s", call->id, why);
    }
    if (st != MODAL_OK)
        return st;
    double left = timeout < 0 ? -1 : timeout - (now_s() - start);
    if (timeout >= 0 && left < 0)
        left = 0;
    return wait_result(call, &resp, left, result, err);
}

modal_status modal_call_cancel(modal_call *call, modal_error *err)
{
    if (call == NULL)
        return modal__null_arg(err, "modal_call_cancel", "call", CALL_HINT);
    char path[96];
    snprintf(path, sizeof path, "/v1/calls/%s", call->id);
    modal__http_req req = {.method = "DELETE", .path = path, .timeout = 30};
    modal__http_resp resp;
    modal_status st = modal__http(&req, &resp, err);
    modal__http_resp_free(&resp);
    if (st == MODAL_OK)
        modal__ok(err);
    return st;
}

void modal_call_free(modal_call *call)
{
    if (call != NULL)
        free(call->partial);
    free(call);
}
