/*
 * map.c: modal_fn_map and modal_fn_starmap. Inputs go to the runtime in
 * batches (bundles of input frames) with a bounded number in flight;
 * results come back as they finish, acknowledged by a sequence cursor so a
 * retried request never loses or repeats one.
 */
#include "conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct map_run {
    modal_connection *conn; /* held for the map's duration */
    modal_function *fn;
    const modal_map_options *o;
    char id[48];
    size_t n;             /* inputs */
    modal_value **res;    /* result (or error map) per input, ordered mode */
    modal_status *st;     /* status per input */
    uint8_t *done;
    size_t ndone;
    size_t next_deliver;  /* ordered mode: next index to deliver */
    modal_value *out;     /* the list returned to the caller */
    long long seq;        /* results acknowledged so far */
    modal_status fail;    /* first failure when not return_errors */
    modal_error fail_err;
    int stopped;          /* on_result asked to stop */
} map_run;

static modal_value *error_entry(modal_status st, const char *msg)
{
    modal_value *m = modal_map();
    if (m == NULL)
        return NULL;
    if (modal_map_set(m, "error", modal_string(msg), NULL) != MODAL_OK ||
        modal_map_set(m, "status", modal_string(modal_status_name(st)), NULL) != MODAL_OK) {
        modal_value_free(m);
        return NULL;
    }
    return m;
}

/* Hand one finished input to the callback and the output list. */
static modal_status deliver(map_run *r, size_t i, modal_value *v, modal_status st,
                            const char *msg, modal_error *err)
{
    if (r->o->on_result != NULL && !r->stopped) {
        modal_map_item item = {i, st, st == MODAL_OK ? v : NULL, st == MODAL_OK ? NULL : msg};
        if (r->o->on_result(&item, r->o->user) != 0)
            r->stopped = 1;
    }
    if (st != MODAL_OK) {
        modal_value_free(v);
        v = error_entry(st, msg);
        if (v == NULL)
            return modal__fail(err, MODAL_ENOMEM, "out of memory recording a map error");
    }
    if (r->out != NULL)
        return modal_list_append(r->out, v, err);
    modal_value_free(v);
    return MODAL_OK;
}

/* Record a result; deliver what can be delivered in the chosen order. */
static modal_status record(map_run *r, size_t i, modal_value *v, modal_status st,
                           const char *msg, modal_error *err)
{
    if (i >= r->n || r->done[i]) {
        modal_value_free(v);
        return MODAL_OK; /* a duplicate after a retried request */
    }
    r->done[i] = 1;
    r->ndone++;
    if (st != MODAL_OK && !r->o->return_errors && r->fail == MODAL_OK) {
        r->fail = st;
        /* As docs/errors.md shows: "<fn>: input <i>: <message>", where the
         * message itself starts with the function's name. */
        modal__fail(&r->fail_err, st, "%s: input %zu: %s", r->fn->name, i, msg);
    }
    if (r->o->unordered)
        return deliver(r, i, v, st, msg, err);
    r->st[i] = st;
    if (st != MODAL_OK) {
        /* Keep the message for ordered delivery. */
        modal_value_free(v);
        v = modal_string(msg);
    }
    r->res[i] = v;
    modal_status rst = MODAL_OK;
    while (rst == MODAL_OK && r->next_deliver < r->n && r->done[r->next_deliver]) {
        size_t k = r->next_deliver++;
        modal_value *rv = r->res[k];
        r->res[k] = NULL;
        if (r->st[k] != MODAL_OK) {
            const char *m = "";
            modal_get_string(rv, &m, NULL, NULL);
            char copy[MODAL_ERROR_MESSAGE_SIZE];
            snprintf(copy, sizeof copy, "%s", m);
            modal_value_free(rv);
            rst = deliver(r, k, NULL, r->st[k], copy, err);
        } else {
            rst = deliver(r, k, rv, MODAL_OK, NULL, err);
        }
    }
    return rst;
}

static modal_status take_results(map_run *r, modal__buf *body, modal_error *err)
{
    modal__bundle_part *parts;
    size_t n;
    modal_status st = modal__bundle_parse(body, &parts, &n, err);
    if (st != MODAL_OK)
        return st;
    for (size_t k = 0; k < n && st == MODAL_OK; k++) {
        modal__buf *view = modal__buf_view(body, (size_t)((const uint8_t *)parts[k].p - body->base),
                                           parts[k].len);
        modal__dec dec;
        if (view == NULL) {
            st = modal__fail(err, MODAL_ENOMEM, "out of memory reading map results");
            break;
        }
        st = modal__dec_open(view, 1, &dec, err);
        modal__buf_unref(view);
        if (st != MODAL_OK)
            break;
        const cJSON *ji = cJSON_GetObjectItemCaseSensitive(dec.env, "index");
        if (!cJSON_IsNumber(ji) || ji->valuedouble < 0 ||
            !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(dec.env, "status"))) {
            modal__dec_close(&dec);
            st = modal__fail(err, MODAL_ECODEC, "the runtime sent a map result without index or status");
            break;
        }
        size_t idx = (size_t)ji->valuedouble;
        modal_value *v;
        char msg[MODAL_ERROR_MESSAGE_SIZE];
        modal_status rs = modal__result_read(&dec, &v, msg, sizeof msg);
        modal__dec_close(&dec);
        st = record(r, idx, v, rs, msg, err);
    }
    free(parts);
    return st;
}

/* Send inputs [from, to) as one bundle of input frames. */
static modal_status send_batch(map_run *r, const modal_value *inputs, int star, size_t from,
                               size_t to, modal_error *err)
{
    size_t n = to - from;
    modal__buf **frames = modal__calloc(n, sizeof *frames);
    modal__bundle_part *parts = modal__calloc(n, sizeof *parts);
    modal_status st = frames && parts ? MODAL_OK
                                      : modal__fail(err, MODAL_ENOMEM, "out of memory batching inputs");
    for (size_t k = 0; k < n && st == MODAL_OK; k++) {
        const modal_value *in = modal_list_get(inputs, from + k);
        if (star && modal_value_type(in) != MODAL_TYPE_LIST) {
            st = modal__fail(err, MODAL_EINVAL,
                             "%s: starmap input %zu is of type %s; each input must be an argument list",
                             r->fn->name, from + k, modal_type_name(modal_value_type(in)));
            break;
        }
        cJSON *env = cJSON_CreateObject();
        modal__enc enc;
        if (star) {
            if (env != NULL && (modal__json_num(env, "v", MODAL__FRAME_VERSION) != 0 ||
                                modal__json_num(env, "index", (double)(from + k)) != 0)) {
                cJSON_Delete(env);
                env = NULL;
            }
            st = modal__msg_build(env, "args", in, &enc, err);
        } else {
            /* map: the input is the single argument. Its JSON goes into a
             * one-element list directly, without copying the value. */
            memset(&enc, 0, sizeof enc);
            modal_error local = {MODAL_ENOMEM, "out of memory batching inputs"};
            cJSON *one = cJSON_AddArrayToObject(env, "args");
            cJSON *j = one != NULL ? modal__value_to_json(in, &enc, &local) : NULL;
            if (j != NULL && !cJSON_AddItemToArray(one, j)) {
                cJSON_Delete(j);
                j = NULL;
            }
            if (j != NULL && modal__json_num(env, "v", MODAL__FRAME_VERSION) == 0 &&
                modal__json_num(env, "index", (double)(from + k)) == 0)
                st = modal__enc_finish(&enc, env, err);
            else if (local.code != MODAL_OK) /* the value itself (too deep, ...) */
                st = modal__fail(err, local.code, "%s", local.message);
            else
                st = modal__fail(err, MODAL_ENOMEM, "out of memory batching inputs");
            cJSON_Delete(env);
            if (st != MODAL_OK)
                modal__enc_free(&enc);
        }
        if (st == MODAL_OK) {
            st = modal__enc_flatten(&enc, &frames[k], err);
            modal__enc_free(&enc);
        }
        if (st == MODAL_OK) {
            parts[k].p = frames[k]->base;
            parts[k].len = frames[k]->len;
        }
    }
    modal__buf *bundle = NULL;
    if (st == MODAL_OK)
        st = modal__bundle_build(parts, n, &bundle, err);
    for (size_t k = 0; frames != NULL && k < n; k++)
        modal__buf_unref(frames[k]);
    free(frames);
    free(parts);
    if (st != MODAL_OK)
        return st;
    char path[96];
    snprintf(path, sizeof path, MODAL__PATH_MAPS "/%s" MODAL__PATH_INPUTS, r->id);
    modal__http_req req = {.method = "POST", .path = path, .body = bundle->base,
                           .body_len = bundle->len, .content_type = MODAL__CT_BUNDLE,
                           .timeout = 600};
    modal__http_resp resp;
    st = modal__http(r->conn, &req, &resp, err);
    modal__http_resp_free(&resp);
    modal__buf_unref(bundle);
    return st;
}

static void map_delete(map_run *r)
{
    char path[96];
    snprintf(path, sizeof path, MODAL__PATH_MAPS "/%s", r->id);
    modal__http_req req = {.method = "DELETE", .path = path, .timeout = 30};
    modal__http_resp resp;
    modal__http(r->conn, &req, &resp, NULL);
    modal__http_resp_free(&resp);
}

static modal_status run_map(modal_connection *conn, const char *api, modal_function *fn,
                            modal_value *inputs, int star, const modal_map_options *opts,
                            modal_value **results, modal_error *err)
{
    static const modal_map_options defaults;
    modal_error local; /* a refused executable is recognised by its message */
    if (err == NULL)
        err = &local;
    if (results != NULL)
        *results = NULL;
    if (fn == NULL) {
        modal_value_free(inputs);
        return modal__null_arg(err, api, "fn", MODAL__FN_HINT);
    }
    map_run r;
    memset(&r, 0, sizeof r);
    r.conn = modal__conn_acquire(conn);
    const char *artifact;
    char spec_id[65] = "";
    modal_status st = modal__remote_prepare(r.conn, fn, inputs, "map input", &artifact, spec_id,
                                            err);
    if (st != MODAL_OK) {
        modal__conn_release(r.conn);
        modal_value_free(inputs);
        return st;
    }
    r.fn = fn;
    r.o = opts != NULL ? opts : &defaults;
    r.n = modal_value_len(inputs);
    size_t max_in_flight = r.o->max_in_flight ? r.o->max_in_flight : 10000;
    size_t batch = r.o->batch_size ? r.o->batch_size : 1000;
    r.res = modal__calloc(r.n + 1, sizeof *r.res);
    r.st = modal__calloc(r.n + 1, sizeof *r.st);
    r.done = modal__calloc(r.n + 1, 1);
    r.out = results != NULL ? modal_list() : NULL;
    if (r.res == NULL || r.st == NULL || r.done == NULL || (results != NULL && r.out == NULL)) {
        st = modal__fail(err, MODAL_ENOMEM, "out of memory starting a map of %zu inputs", r.n);
        goto out;
    }

    /* Create the map on the runtime; when it lost the function's spec or
     * the executable, register or upload it again, each once. */
    modal__enc enc;
    modal__http_resp resp;
    bool spec_again = false, artifact_again = false;
    for (;;) {
        st = modal__msg_build(modal__call_envelope(spec_id, NULL), "args", NULL, &enc, err);
        if (st != MODAL_OK)
            goto out;
        modal__http_req req = {.method = "POST", .path = MODAL__PATH_MAPS, .enc = &enc,
                               .content_type = MODAL__CT_FRAME, .timeout = 60};
        st = modal__http(r.conn, &req, &resp, err);
        modal__enc_free(&enc);
        if (st != MODAL_OK && !spec_again && modal__spec_refused(r.conn, st, err, spec_id))
            spec_again = true;
        else if (st != MODAL_OK && !artifact_again &&
                 modal__artifact_refused(r.conn, st, err, artifact))
            artifact_again = true;
        else
            break;
        if ((st = modal__remote_prepare(r.conn, fn, inputs, "map input", &artifact, spec_id,
                                        err)) !=
            MODAL_OK)
            goto out;
    }
    if (st == MODAL_OK) {
        cJSON *j = resp.body ? cJSON_ParseWithLength((const char *)resp.body->base, resp.body->len)
                             : NULL;
        const cJSON *jid = cJSON_GetObjectItemCaseSensitive(j, "map_id");
        /* The id goes into request paths: only the protocol's form. */
        if (cJSON_IsString(jid) && modal__map_id_problem(jid->valuestring) == NULL)
            snprintf(r.id, sizeof r.id, "%s", jid->valuestring);
        else
            st = modal__fail(err, MODAL_ERUNTIME, "the runtime did not return a map id (%s "
                             MODAL__ID_RULE ")", MODAL__MAP_ID_PREFIX);
        cJSON_Delete(j);
    }
    modal__http_resp_free(&resp);
    if (st != MODAL_OK)
        goto out;

    size_t sent = 0;
    while (r.ndone < r.n && r.fail == MODAL_OK && !r.stopped) {
        while (sent < r.n && sent - r.ndone < max_in_flight) {
            size_t room = max_in_flight - (sent - r.ndone);
            size_t k = r.n - sent < batch ? r.n - sent : batch;
            if (k > room)
                k = room;
            if ((st = send_batch(&r, inputs, star, sent, sent + k, err)) != MODAL_OK)
                goto out;
            sent += k;
            if (sent - r.ndone < max_in_flight && sent < r.n && r.ndone == 0)
                continue; /* fill the pipeline before the first wait */
            break;
        }
        char path[128];
        snprintf(path, sizeof path, MODAL__PATH_MAPS "/%s" MODAL__PATH_RESULTS "?after=%lld&wait=%d", r.id, r.seq,
                 sent < r.n ? 1 : 25);
        modal__http_req get = {.method = "GET", .path = path, .timeout = 60};
        if ((st = modal__http(r.conn, &get, &resp, err)) != MODAL_OK)
            goto out;
        if (resp.seq >= 0)
            r.seq = resp.seq;
        if (resp.body != NULL)
            st = take_results(&r, resp.body, err);
        modal__http_resp_free(&resp);
        if (st != MODAL_OK)
            goto out;
    }
    if (r.fail != MODAL_OK) {
        st = r.fail;
        if (err != NULL)
            *err = r.fail_err;
    } else if (r.stopped) {
        st = modal__fail(err, MODAL_ECANCELLED, "%s: the map was stopped by its on_result callback "
                         "after %zu of %zu inputs", fn->name, r.ndone, r.n);
    }
out:
    if (r.id[0] != '\0')
        map_delete(&r); /* cancels what is left and frees the runtime's bookkeeping */
    for (size_t i = 0; r.res != NULL && i < r.n; i++)
        modal_value_free(r.res[i]);
    free(r.res);
    free(r.st);
    free(r.done);
    if (st == MODAL_OK && results != NULL) {
        *results = r.out;
        modal__ok(err);
    } else {
        modal_value_free(r.out);
    }
    modal_value_free(inputs);
    modal__conn_release(r.conn);
    return st;
}

modal_status modal_fn_map(modal_function *fn, modal_value *inputs, const modal_map_options *opts,
                          modal_value **results, modal_error *err)
{
    return run_map(NULL, "modal_fn_map", fn, inputs, 0, opts, results, err);
}

modal_status modal_fn_starmap(modal_function *fn, modal_value *inputs,
                              const modal_map_options *opts, modal_value **results,
                              modal_error *err)
{
    return run_map(NULL, "modal_fn_starmap", fn, inputs, 1, opts, results, err);
}

modal_status modal_fn_map_on(modal_connection *conn, modal_function *fn, modal_value *inputs,
                             const modal_map_options *opts, modal_value **results,
                             modal_error *err)
{
    return run_map(conn, "modal_fn_map_on", fn, inputs, 0, opts, results, err);
}

modal_status modal_fn_starmap_on(modal_connection *conn, modal_function *fn,
                                 modal_value *inputs, const modal_map_options *opts,
                                 modal_value **results, modal_error *err)
{
    return run_map(conn, "modal_fn_starmap_on", fn, inputs, 1, opts, results, err);
}
