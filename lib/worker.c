/*
 * worker.c: worker mode. A runtime starts the program's own executable with
 * MODAL_WORKER_FD set; modal_worker_serve_if_worker() then serves calls to
 * one registered function over that socket and exits, so the program's
 * main body never runs inside a worker.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *hello_meta(const char *error, modal_status code)
{
    cJSON *m = cJSON_CreateObject();
    cJSON *fns = cJSON_AddArrayToObject(m, "functions");
    modal__json_num(m, "pid", (double)getpid());
    cJSON_AddStringToObject(m, "version", MODAL_VERSION_STRING);
    for (size_t i = 0; i < modal_function_count() && fns != NULL; i++)
        cJSON_AddItemToArray(fns, cJSON_CreateString(modal_function_at(i)->name));
    if (error != NULL) {
        cJSON_AddStringToObject(m, "error", error);
        cJSON_AddStringToObject(m, "code", modal_status_name(code));
    }
    char *s = cJSON_PrintUnformatted(m);
    cJSON_Delete(m);
    return s;
}

/* Result frame: {"v":1,"call_id","index"?,"status","message"?,"result"?}. */
static modal_status send_result(int sock, const char *call_id, const cJSON *index,
                                modal_status st, const char *message,
                                const modal_value *result)
{
    modal_error err;
    modal__enc enc;
    cJSON *env = cJSON_CreateObject();
    modal__json_num(env, "v", 1);
    cJSON_AddStringToObject(env, "call_id", call_id);
    if (index != NULL)
        cJSON_AddItemToObject(env, "index", cJSON_Duplicate(index, 0));
    cJSON_AddStringToObject(env, "status", st == MODAL_OK ? "OK" : modal_status_name(st));
    if (st != MODAL_OK)
        cJSON_AddStringToObject(env, "message", message);
    modal_status est = modal__msg_build(env, "result", st == MODAL_OK ? result : NULL, &enc, &err);
    if (est != MODAL_OK && st == MODAL_OK) {
        /* The result itself cannot be encoded (too deep, out of memory):
         * report that instead of the value. */
        char msg[MODAL_ERROR_MESSAGE_SIZE + 64];
        snprintf(msg, sizeof msg, "the result could not be encoded: %s", err.message);
        return send_result(sock, call_id, index, est, msg, NULL);
    }
    if (est != MODAL_OK)
        return est;
    char meta[160];
    snprintf(meta, sizeof meta, "{\"call_id\":\"%s\",\"status\":\"%s\"}", call_id,
             st == MODAL_OK ? "OK" : modal_status_name(st));
    fflush(stdout);
    fflush(stderr);
    est = modal__ipc_send_enc(sock, MODAL__MSG_RESULT, meta, &enc, &err);
    modal__enc_free(&enc);
    return est;
}

static void serve_call(int sock, modal_function *fn, const cJSON *meta, modal__buf *payload)
{
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(meta, "call_id");
    const cJSON *jatt = cJSON_GetObjectItemCaseSensitive(meta, "attempt");
    const cJSON *jidx = cJSON_GetObjectItemCaseSensitive(meta, "index");
    const char *call_id = cJSON_IsString(jid) ? jid->valuestring : "?";
    modal_error err;
    modal__dec dec;
    modal_value *args = NULL, *result = NULL;
    modal_status st = payload != NULL ? modal__dec_open(payload, 1, &dec, &err)
                                      : modal__fail(&err, MODAL_ECODEC, "the call carries no arguments");
    if (st == MODAL_OK) {
        st = modal__msg_value(&dec, "args", &args, &err);
        modal__dec_close(&dec);
    }
    if (st == MODAL_OK && modal_value_type(args) != MODAL_TYPE_LIST)
        st = modal__fail(&err, MODAL_ECODEC, "%s: arguments are a %s, not a list", fn->name,
                         modal_type_name(modal_value_type(args)));
    if (st == MODAL_OK) {
        modal_ctx ctx = {.fn = fn, .call_id = call_id,
                         .attempt = cJSON_IsNumber(jatt) ? jatt->valueint : 1,
                         .remote = true};
        st = modal__invoke(fn, &ctx, args, &result, &err);
    }
    modal_value_free(args);
    send_result(sock, call_id, jidx, st, err.message, result);
    modal_value_free(result);
}

/* Several calls in one message: run them in order, answering each as it
 * finishes, so a crash is charged to the call that was running. */
static void serve_calls(int sock, modal_function *fn, const cJSON *metas, modal__buf *payload)
{
    modal__bundle_part *parts = NULL;
    size_t n = 0;
    modal_error err;
    if (payload == NULL || !cJSON_IsArray(metas) ||
        modal__bundle_parse(payload, &parts, &n, &err) != MODAL_OK ||
        (size_t)cJSON_GetArraySize(metas) != n) {
        free(parts);
        fprintf(stderr, "modal worker: malformed batch of calls from the runtime\n");
        exit(4); /* the runtime reports the worker's death */
    }
    size_t i = 0;
    for (const cJSON *m = metas->child; m != NULL; m = m->next, i++) {
        modal__buf *view = modal__buf_view(payload, (size_t)((const uint8_t *)parts[i].p -
                                                             payload->base), parts[i].len);
        serve_call(sock, fn, m, view);
        modal__buf_unref(view);
    }
    free(parts);
}

static void run_exit_hook(modal_function *fn)
{
    if (fn->options.exit != NULL) {
        modal_ctx ctx = {.fn = fn, .call_id = "exit", .attempt = 1, .remote = true};
        fn->options.exit(&ctx);
    }
    fflush(stdout);
    fflush(stderr);
}

void modal_worker_serve_if_worker(int argc, char **argv)
{
    const char *fdstr = getenv("MODAL_WORKER_FD");
    if (fdstr == NULL)
        return;
    char *end;
    long sock = strtol(fdstr, &end, 10);
    const char *fname = getenv("MODAL_WORKER_FUNCTION");
    /* The user's code may start programs of its own; they are not workers. */
    char name[256];
    snprintf(name, sizeof name, "%s", fname != NULL ? fname : "");
    unsetenv("MODAL_WORKER_FD");
    unsetenv("MODAL_WORKER_FUNCTION");
    if (*end != '\0' || sock < 0 || sock > 65535) {
        fprintf(stderr, "modal worker: MODAL_WORKER_FD=\"%s\" is not a file descriptor\n", fdstr);
        exit(2);
    }
    /* Output reaches the runtime through pipes; line buffering keeps it
     * flowing while a call runs instead of arriving at exit. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    modal_function *fn = modal_function_find(name);
    modal_error err;
    char msg[MODAL_ERROR_MESSAGE_SIZE + 128];
    const char *error = NULL;
    modal_status code = MODAL_OK;
    if (fn == NULL) {
        snprintf(msg, sizeof msg, "function \"%s\" is not registered in this executable", name);
        error = msg;
        code = MODAL_ENOTFOUND;
    } else if ((code = modal_function_check(fn, &err)) != MODAL_OK) {
        snprintf(msg, sizeof msg, "%s", err.message);
        error = msg;
    } else if (fn->options.enter != NULL) {
        modal_ctx ctx = {.fn = fn, .call_id = "enter", .attempt = 1, .remote = true};
        if (fn->options.enter(&ctx) != 0) {
            snprintf(msg, sizeof msg, "%s: enter hook failed: %s", fn->name,
                     ctx.failed ? ctx.message : "it returned non-zero");
            error = msg;
            code = MODAL_EFUNC;
        }
    }
    char *meta = hello_meta(error, code);
    fflush(stdout);
    fflush(stderr);
    modal_status st = modal__ipc_send((int)sock, MODAL__MSG_HELLO, meta, NULL, 0, -1, &err);
    free(meta);
    if (st != MODAL_OK || error != NULL)
        exit(3);

    for (;;) {
        uint32_t type;
        cJSON *m;
        modal__buf *payload;
        if (modal__ipc_recv((int)sock, &type, &m, &payload, NULL, &err) != MODAL_OK) {
            /* The runtime went away: nothing is left to serve. */
            run_exit_hook(fn);
            exit(0);
        }
        if (type == MODAL__MSG_CALL)
            serve_call((int)sock, fn, m, payload);
        else if (type == MODAL__MSG_CALLS)
            serve_calls((int)sock, fn, m, payload);
        cJSON_Delete(m);
        modal__buf_unref(payload);
        if (type == MODAL__MSG_EXIT) {
            run_exit_hook(fn);
            exit(0);
        }
    }
}
