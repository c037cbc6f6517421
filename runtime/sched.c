/*
 * sched.c: calls, maps and pools. A call is queued on the pool of its
 * (artifact, function, options), sent to a warm worker, retried by its
 * policy when an attempt fails, and kept until its result is fetched.
 * Every function here runs with rt.mu held (frame_pool releases it while
 * it checks a new pool's executable).
 *
 * The scheduler sits above the workers, the queue and the allocator: it
 * calls them, and the workers answer through the events it registers
 * (rt_sched_init). Every end of a running attempt, whatever ended it,
 * comes through one function, settle_running.
 */
#include "rt.h"
#include "gpus.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RESULT_TTL 600.0       /* unfetched results are kept this long */
#define FETCHED_TTL 30.0       /* fetched ones, for a retried fetch */
#define FETCHED_BIG_TTL 5.0    /* fetched ones held in a memfd (large) */
#define MAP_TTL 600.0          /* maps nobody asked about */
#define PIPELINE 16            /* most calls a worker holds, running or sent ahead */
#define PIPELINE_MAX 64        /* ... when its calls are short (at most rt_worker_send's 64) */
#define PIPELINE_BEHIND 0.002  /* seconds of calls that may wait behind a running one */

/* Who is told when a call or a map changes (set once, rt_sched_init). */
static rt_sched_listener listener;

static size_t hash_id(const char *s)
{
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

rt_call *rt_call_find(const char *id)
{
    if (rt.table_size == 0)
        return NULL;
    for (rt_call *c = rt.table[hash_id(id) % rt.table_size]; c != NULL; c = c->hnext)
        if (strcmp(c->id, id) == 0)
            return c;
    return NULL;
}

static int table_insert(rt_call *c)
{
    if (rt.ncalls + 1 > rt.table_size) {
        size_t nsize = rt.table_size ? rt.table_size * 2 : 1024;
        rt_call **nt = calloc(nsize, sizeof *nt);
        if (nt == NULL)
            return -1;
        for (size_t i = 0; i < rt.table_size; i++)
            for (rt_call *x = rt.table[i], *nx; x != NULL; x = nx) {
                nx = x->hnext;
                size_t b = hash_id(x->id) % nsize;
                x->hnext = nt[b];
                nt[b] = x;
            }
        free(rt.table);
        rt.table = nt;
        rt.table_size = nsize;
    }
    size_t b = hash_id(c->id) % rt.table_size;
    c->hnext = rt.table[b];
    rt.table[b] = c;
    rt.ncalls++;
    return 0;
}

static void call_free(rt_call *c)
{
    listener.call_changed(c);
    c->pool->refs--;
    modal__buf_unref(c->args);
    modal__buf_unref(c->result);
    if (c->result_fd >= 0)
        close(c->result_fd);
    if (c->args_fd >= 0)
        close(c->args_fd);
    free(c->logs);
    free(c);
}

/* Add text to the call's output, growing it; returns false when out of
 * memory. */
static bool logs_add(rt_call *c, const char *p, size_t len)
{
    char *nl = modal__reserve(c->logs, &c->logs_cap, c->logs_len + len + 1, 1024);
    if (nl == NULL)
        return false;
    c->logs = nl;
    memcpy(c->logs + c->logs_len, p, len);
    c->logs_len += len;
    c->logs[c->logs_len] = '\0';
    return true;
}

void rt_call_append_log(rt_call *c, const char *p, size_t len)
{
    /* Output is capped per call so a chatty function cannot exhaust the
     * runtime; the app log file keeps everything. p holds whole lines:
     * those that fit are kept, and from the first that does not, every
     * line is counted instead, for the notice at the end. */
    const size_t cap = 4u << 20;
    size_t keep = 0;
    if (c->logs_dropped == 0) {
        while (keep < len) {
            const char *nl = memchr(p + keep, '\n', len - keep);
            size_t end = nl != NULL ? (size_t)(nl - p) + 1 : len;
            if (c->logs_len + end > cap)
                break;
            keep = end;
        }
    }
    for (const char *q = p + keep, *e = p + len; (q = memchr(q, '\n', (size_t)(e - q))) != NULL; q++)
        c->logs_dropped++;
    if (keep == 0 || !logs_add(c, p, keep))
        return;
    listener.call_changed(c);
}

/* When output was left out, the call's output ends by saying how much. */
static void log_notice(rt_call *c)
{
    if (c->logs_dropped == 0)
        return;
    char num[32], grouped[48];
    int n = snprintf(num, sizeof num, "%lld", c->logs_dropped), k = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            grouped[k++] = ',';
        grouped[k++] = num[i];
    }
    grouped[k] = '\0';
    char line[300];
    int len = snprintf(line, sizeof line, "! \u2026 %s line%s not shown; see logs/%s.log\n", grouped,
                       c->logs_dropped == 1 ? "" : "s", c->pool->spec->app);
    logs_add(c, line, (size_t)len);
    c->logs_dropped = 0;
}

modal__buf *rt_error_frame(const rt_call *c, modal_status st, const char *msg)
{
    cJSON *env = cJSON_CreateObject();
    modal__json_num(env, "v", MODAL__FRAME_VERSION);
    cJSON_AddStringToObject(env, "call_id", c->id);
    if (c->index >= 0)
        modal__json_num(env, "index", (double)c->index);
    cJSON_AddStringToObject(env, "status", modal_status_name(st));
    cJSON_AddStringToObject(env, "message", msg);
    modal__enc enc;
    modal__buf *b = NULL;
    if (modal__msg_build(env, "result", NULL, &enc, NULL) == MODAL_OK) {
        modal__enc_flatten(&enc, &b, NULL);
        modal__enc_free(&enc);
    }
    return b;
}

void rt_call_complete(rt_call *c, modal_status st, modal__buf *result)
{
    log_notice(c);
    /* No attempt will need the arguments again; a large payload should
     * not outlive its call. A call still in a worker's list (cancelled
     * while sent ahead) keeps them until the worker has read them. */
    if (!c->cancelled) {
        modal__buf_unref(c->args);
        c->args = NULL;
        if (c->args_fd >= 0)
            close(c->args_fd);
        c->args_fd = -1;
    }
    c->state = RT_DONE;
    c->status = st;
    c->result = result;
    c->done_at = rt_now();
    if (c->map != NULL) {
        c->seq = ++c->map->next_seq;
        c->dnext = NULL;
        if (c->map->done_tail)
            c->map->done_tail->dnext = c;
        else
            c->map->done_head = c;
        c->map->done_tail = c;
    }
    if (c->pool->spec->gpu[0] != '\0')
        rt_log(st == MODAL_OK ? 0 : 2, "call %s (%s) finished: %s after %d attempt%s, "
               "gpu_seconds %.6f", c->id, c->pool->spec->fn, modal_status_name(st), c->attempt,
               c->attempt == 1 ? "" : "s", c->gpu_seconds);
    else
        rt_log(st == MODAL_OK ? 0 : 2, "call %s (%s) finished: %s after %d attempt%s", c->id,
               c->pool->spec->fn, modal_status_name(st), c->attempt, c->attempt == 1 ? "" : "s");
    listener.call_changed(c);
}

/* A worker gave back c after it was settled (cancelled) or orphaned. A
 * call that finished is removed from the hash table by tick; a cancelled
 * one still in a worker's list is dropped here when it returns. */
static void release(rt_call *c)
{
    if (c->orphan) {
        call_free(c);
    } else if (c->cancelled) {
        c->cancelled = false; /* done already; now only the table holds it */
        /* Its arguments were kept while a worker might read them. */
        modal__buf_unref(c->args);
        c->args = NULL;
        if (c->args_fd >= 0)
            close(c->args_fd);
        c->args_fd = -1;
    }
}

static int retryable(modal_status st)
{
    return st == MODAL_EFUNC || st == MODAL_ECRASH || st == MODAL_ETIMEOUT;
}

/*
 * An attempt of a call that is not settled yet ended with st: retry it or
 * finish it. result is the worker's result frame when it sent one, held
 * in the memfd result_fd when large (ownership of both passes here); else
 * an error frame is made from msg.
 */
static void attempt_ended(rt_call *c, modal_status st, const char *msg, modal__buf *result,
                          int result_fd)
{
    const __typeof__(c->pool->spec->retry_policy) *pol = &c->pool->spec->retry_policy;
    if (retryable(st) && c->attempt <= pol->max_retries) {
        if (result_fd >= 0)
            close(result_fd);
        double delay = pol->initial_delay * pow(pol->backoff_coefficient, c->attempt - 1);
        if (delay > pol->max_delay)
            delay = pol->max_delay;
        rt_log(2, "call %s (%s) attempt %d failed (%s); retrying in %.3f s", c->id,
               c->pool->spec->fn, c->attempt, modal_status_name(st), delay);
        modal__buf_unref(result);
        rt_queue_delay(c, rt_now() + delay);
        rt_wake();
        return;
    }
    if (st == MODAL_EFUNC && pol->max_retries > 0) {
        /* The function's own message, from its result frame or the enter
         * hook, does not say which attempt failed; crash and timeout
         * messages do. Append it, keeping the end in the client's 511
         * bytes whatever the function wrote. */
        char own[MODAL_ERROR_MESSAGE_SIZE] = "";
        if (result != NULL) {
            modal__dec dec;
            if (modal__dec_open(result, 0, &dec, NULL) == MODAL_OK) {
                const cJSON *m = cJSON_GetObjectItemCaseSensitive(dec.env, "message");
                if (cJSON_IsString(m))
                    snprintf(own, sizeof own, "%s", m->valuestring);
                modal__dec_close(&dec);
            }
        } else if (msg != NULL) {
            snprintf(own, sizeof own, "%s", msg);
        }
        char suffix[64], full[MODAL_ERROR_MESSAGE_SIZE];
        int sl = snprintf(suffix, sizeof suffix, " (attempt %d of %d)", c->attempt,
                          pol->max_retries + 1);
        snprintf(full, sizeof full, "%.*s%s", (int)(sizeof full - 1 - (size_t)sl), own, suffix);
        modal__buf *frame = rt_error_frame(c, st, full);
        if (frame != NULL) {
            modal__buf_unref(result);
            if (result_fd >= 0)
                close(result_fd);
            result = frame;
            result_fd = -1;
        }
    }
    if (result == NULL)
        result = rt_error_frame(c, st, msg);
    c->result_fd = result_fd;
    rt_call_complete(c, st, result);
}

/*
 * The running attempt of c ended (worker event call_ended): with a result
 * frame, or without one (crash, timeout, stop: msg says why). This is the
 * one place a running call is settled: a call settled already (cancelled)
 * or whose map is gone is only released; any other goes through its
 * retry policy.
 */
static void settle_running(rt_call *c, modal_status st, const char *msg, modal__buf *frame,
                           int fd)
{
    rt_queue_ack(c);
    if (frame == NULL && fd >= 0) {
        close(fd);
        fd = -1;
    }
    if (c->orphan || c->cancelled) {
        modal__buf_unref(frame);
        if (fd >= 0)
            close(fd);
        release(c);
        return;
    }
    attempt_ended(c, st, msg, frame, fd);
}

/* Whether a call a worker gave back unstarted goes back to the queue. */
static bool requeue_keep(rt_call *c)
{
    return !c->orphan && !c->cancelled;
}

/* p waits for kind (a resource, or "max_containers") from now on. */
static void set_waits(rt_pool *p, const char *kind)
{
    if (p->waits_for == kind)
        return;
    p->waits_for = kind;
    p->waiting_since = rt_now();
}

/* What a worker of p asks for; its GPU choices go into gpu (the spec's
 * .gpu was checked when it was registered). */
static rt_res_req pool_req(const rt_pool *p, modal__gpu_choice *gpu)
{
    rt_res_req req = {.cpu = p->spec->cpu, .memory = p->spec->memory, .gpu = gpu,
                      .gpu_spec = p->spec->gpu};
    if (modal__gpu_spec_parse(p->spec->gpu, gpu, &req.ngpu, NULL) != MODAL_OK)
        req.ngpu = 0;
    return req;
}

/* Whether w holds some of the kind of resource named (see rt_res_reserve)
 * that req could use: for GPUs, devices one of its choices takes. */
static bool holds(const rt_worker *w, const char *kind, const rt_res_req *req)
{
    return strcmp(kind, "cpu") == 0      ? w->res.cpu > 0
           : strcmp(kind, "memory") == 0 ? w->res.memory > 0
           : strcmp(kind, "gpu") == 0    ? rt_res_grant_serves(&w->res, req)
                                         : w->res.devices != 0;
}

/*
 * p, with no worker of its own, waits for kind: an idle worker of another
 * pool that holds some (beyond its pool's min_containers) is asked to
 * exit, so that waiting calls start when it is gone rather than after its
 * scale-down window. One at a time: its exit may free enough.
 */
static void reclaim_for(rt_pool *p, const char *kind)
{
    if (p->nworkers > 0)
        return; /* its own workers take its calls */
    modal__gpu_choice gpu[MODAL__GPU_MAX_CHOICES];
    rt_res_req req = pool_req(p, gpu);
    rt_worker *idle = NULL;
    for (rt_worker *w = rt.workers; w; w = w->next) {
        if (w->pool == p || !holds(w, kind, &req))
            continue;
        if (w->state == RT_W_EXITING || w->state == RT_W_DEAD)
            return; /* one is leaving already */
        /* One whose pool has queued calls waits for its batch to fill:
         * those calls came first. */
        if (w->state == RT_W_READY && w->inflight == NULL && idle == NULL &&
            w->pool->nworkers > w->pool->spec->min_containers && rt_queue_length(w->pool) == 0)
            idle = w;
    }
    if (idle != NULL) {
        rt_log(1, "stopping idle worker %d of %s: calls of %s wait for its %s", (int)idle->pid,
               idle->pool->spec->fn, p->spec->fn, kind);
        rt_worker_retire(idle);
    }
}

/*
 * Start a worker for p if what its function asks for can be reserved now;
 * else note what p waits for. Returns 0 when a worker started.
 */
static int pool_spawn(rt_pool *p)
{
    modal__gpu_choice gpu[MODAL__GPU_MAX_CHOICES];
    rt_res_req req = pool_req(p, gpu);
    rt_res_grant g;
    /* A function that can never fit has its calls refused (pool_admits);
     * its pool, made before that refusal, waits for nothing and takes
     * nothing from others, even to keep min_containers warm. */
    if (rt_res_check(&req, p->spec->fn, NULL) != MODAL_OK)
        return -1;
    const char *short_of = rt_res_reserve(&req, &g);
    if (short_of != NULL) {
        if (p->waits_for != short_of) {
            set_waits(p, short_of);
            rt_log(1, "%s: calls wait for %s (each worker asks for %g CPU, %d MiB%s%s%s)",
                   p->spec->fn, short_of, p->spec->cpu, p->spec->memory,
                   req.ngpu ? " and gpu \"" : "", req.ngpu ? p->spec->gpu : "",
                   req.ngpu ? "\"" : "");
        }
        reclaim_for(p, short_of);
        return -1;
    }
    p->waits_for = NULL;
    if (rt_worker_spawn(p, &g) != 0) {
        rt_res_release(&g);
        return -1;
    }
    rt_worker *w = rt.workers; /* the new one (see rt_worker_spawn) */
    w->res = g;
    rt_res_enforce(&w->res, w->pid);
    return 0;
}

/* Whether p waits for resources (not for a worker of its own). */
static bool waits_for_resources(const rt_pool *p)
{
    return p->waits_for != NULL && strcmp(p->waits_for, "max_containers") != 0;
}

/*
 * How many calls a worker of p may hold, running or sent ahead. PIPELINE,
 * or more when p's calls are so short that PIPELINE_BEHIND seconds of them
 * would wait behind a running one: a busy worker then gets more calls per
 * message (and per wake-up), and a call sent ahead still waits no longer
 * than that for a worker that a slow call of the same pool holds.
 */
static size_t pipeline_depth(const rt_pool *p)
{
    if (p->call_s <= 0 || p->call_s * PIPELINE >= PIPELINE_BEHIND)
        return PIPELINE;
    double n = PIPELINE_BEHIND / p->call_s;
    return n >= PIPELINE_MAX ? PIPELINE_MAX : (size_t)n;
}

/* Queue c (new, or a retry that is due), noting when: a batch is due
 * once its oldest call has waited batch_wait_ms. A call given back
 * (rt_queue_requeue) keeps its place and its time. */
static int enqueue(rt_pool *p, rt_call *c, enum rt_queue_end end)
{
    c->queued_at = rt_now();
    return rt_queue_put(p, c, end);
}

/* An idle ready worker of p, or NULL; *all counts p's workers. */
static rt_worker *idle_worker(const rt_pool *p, int *all)
{
    rt_worker *idle = NULL;
    *all = 0;
    for (rt_worker *w = rt.workers; w; w = w->next)
        if (w->pool == p) {
            (*all)++;
            if (idle == NULL && w->state == RT_W_READY && w->ninflight == 0)
                idle = w;
        }
    return idle;
}

/* When p's next batch is due: once its queue holds batch_max_size calls
 * (now), or its oldest call has waited batch_wait_ms. */
static double batch_due(const rt_pool *p)
{
    const rt_call *oldest = rt_queue_peek(p);
    if (oldest == NULL)
        return INFINITY;
    if (rt_queue_length(p) >= (size_t)p->spec->batch_max_size)
        return 0;
    return oldest->queued_at + p->spec->batch_wait_ms / 1000.0;
}

/*
 * Dispatch for a batched function (batch_max_size > 0): an idle worker
 * takes up to batch_max_size queued calls as one batch once a batch is
 * due (batch_due); next_timer wakes the loop for the wait. A worker runs
 * one batch at a time, so nothing is sent ahead; workers start while
 * the first calls wait, one per batch_max_size queued calls.
 */
static void dispatch_batches(rt_pool *p)
{
    size_t most = (size_t)p->spec->batch_max_size;
    while (rt_queue_peek(p) != NULL && !p->broken) {
        int all;
        rt_worker *idle = idle_worker(p, &all);
        if (idle == NULL) {
            if (all >= p->spec->max_containers)
                set_waits(p, "max_containers");
            else if ((size_t)p->nstarting * most < rt_queue_length(p) && pool_spawn(p) == 0)
                continue;
            return; /* a worker that starts or comes back dispatches again */
        }
        if (batch_due(p) > rt_now())
            return;
        size_t n = most;
        if (p->spec->max_inputs > 0) {
            long left = (long)p->spec->max_inputs - idle->served;
            if (left <= 0) {
                rt_worker_retire(idle);
                continue;
            }
            if ((size_t)left < n)
                n = (size_t)left;
        }
        rt_call **batch = malloc(n * sizeof *batch);
        if (batch == NULL)
            abort(); /* the daemon may abort on out-of-memory */
        size_t k = rt_queue_take(p, batch, n);
        rt_worker_send_batch(idle, batch, k);
        free(batch);
    }
}

void rt_dispatch(rt_pool *p)
{
    if (p->spec->batch_max_size > 0) {
        dispatch_batches(p);
        return;
    }
    size_t depth = pipeline_depth(p);
    while (rt_queue_peek(p) != NULL) {
        if (p->broken)
            return;
        rt_worker *idle = NULL, *least = NULL;
        int all = 0;
        for (rt_worker *w = rt.workers; w; w = w->next) {
            if (w->pool != p)
                continue;
            all++;
            if (w->state != RT_W_READY)
                continue;
            if (w->ninflight == 0) {
                idle = w;
                break;
            }
            /* A busy worker is refilled once half its pipeline drained, so
             * each message carries several calls. */
            if ((size_t)w->ninflight <= depth / 2 &&
                (least == NULL || w->ninflight < least->ninflight))
                least = w;
        }
        rt_worker *target = idle;
        if (target == NULL) {
            if (all >= p->spec->max_containers)
                set_waits(p, "max_containers");
            else if ((size_t)p->nstarting < rt_queue_length(p) && pool_spawn(p) == 0)
                continue;
            if (p->nstarting > 0)
                return; /* starting workers will take the queue */
            /* Every worker is busy and no more may start (the pool is at
             * max_containers, or what a new worker would reserve is not
             * free): send ahead to the least loaded one, so it never waits
             * for a round trip. */
            target = least;
        }
        if (target == NULL)
            return;
        /* An idle worker takes its share of the queue; a busy one is filled
         * up. Calls whose arguments travel in a memfd go one at a time. */
        size_t n = depth > (size_t)target->ninflight ? depth - (size_t)target->ninflight : 1;
        if (p->spec->max_inputs > 0) {
            /* Never send a worker more calls than it may still serve. */
            long left = (long)p->spec->max_inputs - target->served - target->ninflight;
            if (left <= 0) {
                rt_worker_retire(target); /* others take the queue */
                continue;
            }
            if ((size_t)left < n)
                n = (size_t)left;
        }
        if (target == idle) {
            /* Shared among the workers the pool may have; when resources
             * keep it from growing, among those it has. */
            int most = waits_for_resources(p) || all > p->spec->max_containers
                           ? all : p->spec->max_containers;
            size_t share = rt_queue_length(p) / (size_t)most;
            n = share < 1 ? 1 : share < n ? share : n;
        }
        rt_call *batch[PIPELINE_MAX];
        size_t k = rt_queue_take(p, batch, n);
        rt_worker_send(target, batch, k);
    }
}

/* The GPU-seconds of functions whose idle pool was freed, by spec id:
 * the pool made again for the function starts from them, so its sum
 * counts from the runtime's start (in memory only). */
typedef struct kept_gpu_seconds {
    char key[65];
    double gpu_seconds;
    struct kept_gpu_seconds *next;
} kept_gpu_seconds;
static kept_gpu_seconds *kept_gpu;

/* Keep what p used, as p is freed. */
static void gpu_seconds_keep(const rt_pool *p)
{
    kept_gpu_seconds *k = p->gpu_seconds > 0 ? calloc(1, sizeof *k) : NULL;
    if (k == NULL)
        return;
    snprintf(k->key, sizeof k->key, "%s", p->key);
    k->gpu_seconds = p->gpu_seconds;
    k->next = kept_gpu;
    kept_gpu = k;
}

/* What the freed pools of spec key used, taken back (0 if none). */
static double gpu_seconds_take(const char *key)
{
    for (kept_gpu_seconds **kp = &kept_gpu; *kp; kp = &(*kp)->next)
        if (strcmp((*kp)->key, key) == 0) {
            kept_gpu_seconds *k = *kp;
            double s = k->gpu_seconds;
            *kp = k->next;
            free(k);
            return s;
        }
    return 0;
}

/*
 * Find the pool of a call or map frame. The frame names a registered spec
 * ({"spec": id}); a frame that carries the spec itself (artifact, app, fn,
 * options) registers it on the way. A pool is the spec's: its identity is
 * the spec's id, and the app is part of the spec, so apps never share
 * workers and each app's output lands in its own log. May release rt.mu
 * while it checks a new pool's executable.
 */
static modal_status frame_pool(const cJSON *env, rt_pool **out, modal_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(env, "v");
    const cJSON *sid = cJSON_GetObjectItemCaseSensitive(env, "spec");
    if (!cJSON_IsNumber(v) || v->valuedouble != MODAL__FRAME_VERSION)
        return modal__fail(err, MODAL_ECODEC, "call frame: \"v\" must be 1");
    const modal__spec *spec;
    char key[65];
    if (sid != NULL) {
        if (!cJSON_IsString(sid) || modal__artifact_problem(sid->valuestring) != NULL)
            return modal__fail(err, MODAL_ECODEC, "call frame: \"spec\" must be a function "
                               "spec id (64 hex digits) from POST " MODAL__PATH_FUNCTIONS);
        if ((spec = rt_spec_find(sid->valuestring)) == NULL)
            return modal__fail(err, MODAL_ENOTFOUND, MODAL__SPEC_UNKNOWN " %s on this runtime: "
                               "register it with POST " MODAL__PATH_FUNCTIONS " first", sid->valuestring);
        snprintf(key, sizeof key, "%s", sid->valuestring);
    } else {
        modal_status st = rt_spec_register(env, "call frame", &spec, key, err);
        if (st != MODAL_OK)
            return st;
    }
    modal_status st = rt_spec_servable(spec, err);
    if (st != MODAL_OK)
        return st;
    const char *artifact = spec->artifact;
    /* A new pool checks its executable first, and a broken one checks it
     * again (a damaged file may be why it broke: then the file goes, and
     * the client uploads it again, which lets the pool try again). The
     * check may hash the whole file, so it runs without rt.mu; the pools
     * are looked up again after it, as another request may have made this
     * one meanwhile. */
    for (bool checked = false;; checked = true) {
        rt_pool *found = NULL;
        for (rt_pool *p = rt.pools; p && found == NULL; p = p->next)
            if (strcmp(p->key, key) == 0)
                found = p;
        if (found != NULL && !found->broken) {
            *out = found;
            return MODAL_OK;
        }
        if (checked) {
            if (found == NULL)
                break;
            return modal__fail(err, MODAL_EWORKER, "%s", "artifact cannot serve as a worker: "
                               "see the first call's error (upload a fixed executable)");
        }
        char why[700];
        modal_status cst = MODAL_OK;
        pthread_mutex_unlock(&rt.mu);
        if (!rt_artifact_exists(artifact))
            cst = modal__fail(err, MODAL_ENOTFOUND, "artifact %s is not on this runtime; upload "
                              "it first with PUT /v1/artifacts/%s", artifact, artifact);
        else if (rt_artifact_verify(artifact, why, sizeof why) != 0)
            cst = modal__fail(err, MODAL_EIO, "%s", why);
        else if (found == NULL && !rt_artifact_runnable(artifact, why, sizeof why))
            cst = modal__fail(err, MODAL_EWORKER, "executable %.12s cannot serve as a worker: "
                              "%s", artifact, why);
        pthread_mutex_lock(&rt.mu);
        if (cst != MODAL_OK)
            return cst;
    }
    rt_pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return modal__fail(err, MODAL_ENOMEM, "runtime out of memory");
    snprintf(p->key, sizeof p->key, "%s", key);
    p->spec = spec;
    p->gpu_seconds = gpu_seconds_take(p->key);
    p->next = rt.pools;
    rt.pools = p;
    *out = p;
    return MODAL_OK;
}

/*
 * Whether p takes n more calls: its function must fit on this runtime at
 * all (else it fails at once, rather than waiting for resources that
 * will never be free), and its queue must have room.
 */
static modal_status pool_admits(rt_pool *p, size_t n, modal_error *err)
{
    modal__gpu_choice gpu[MODAL__GPU_MAX_CHOICES];
    rt_res_req req = pool_req(p, gpu);
    modal_status st = rt_res_check(&req, p->spec->fn, err);
    if (st != MODAL_OK)
        return st;
    if (rt_queue_length(p) + n > rt_queue_max)
        return modal__fail(err, MODAL_ELIMIT, "%s: %zu calls wait for a worker already, the "
                           "most one function may have waiting (--max-queued %zu); wait for "
                           "some to finish and submit again", p->spec->fn, rt_queue_length(p),
                           rt_queue_max);
    return MODAL_OK;
}

static rt_call *call_new(rt_pool *p, const char *id, long long index)
{
    rt_call *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    snprintf(c->id, sizeof c->id, "%.47s", id);
    c->pool = p;
    p->refs++;
    c->index = index;
    c->args_fd = c->result_fd = -1;
    return c;
}

modal_status rt_call_submit(modal__buf *frame, int frame_fd, size_t frame_len, rt_call **out,
                            modal_error *err)
{
    modal__dec dec;
    modal_status st = modal__dec_open(frame, 1, &dec, err);
    if (st != MODAL_OK)
        return st;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(dec.env, "call_id");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(dec.env, "args");
    rt_pool *p = NULL;
    if (!cJSON_IsString(id) || modal__call_id_problem(id->valuestring) != NULL)
        st = modal__fail(err, MODAL_ECODEC, "call frame: \"call_id\" must be "
                         MODAL__CALL_ID_PREFIX " " MODAL__ID_RULE);
    else if (!cJSON_IsArray(args))
        st = modal__fail(err, MODAL_ECODEC, "call frame: \"args\" must be a list");
    else if ((*out = rt_call_find(id->valuestring)) != NULL) {
        /* A retried submission: the call exists, it is not run again. */
        modal__dec_close(&dec);
        return MODAL_OK;
    } else if ((st = frame_pool(dec.env, &p, err)) == MODAL_OK &&
               (*out = rt_call_find(id->valuestring)) != NULL) {
        /* Submitted again while frame_pool had released rt.mu. */
        modal__dec_close(&dec);
        return MODAL_OK;
    }
    if (st == MODAL_OK)
        st = pool_admits(p, 1, err);
    if (st != MODAL_OK) {
        modal__dec_close(&dec);
        return st;
    }
    rt_call *c = call_new(p, id->valuestring, -1);
    modal__dec_close(&dec);
    if (c == NULL || table_insert(c) != 0) {
        if (c != NULL)
            p->refs--;
        free(c);
        return modal__fail(err, MODAL_ENOMEM, "runtime out of memory");
    }
    c->args = modal__buf_ref(frame);
    c->args_fd = frame_fd >= 0 ? dup(frame_fd) : -1;
    c->args_len = frame_len;
    enqueue(p, c, RT_QUEUE_NEW); /* pool_admits made room */
    rt.last_activity = rt_now();
    rt_dispatch(p);
    *out = c;
    return MODAL_OK;
}

static bool batch_orphaned(const rt_worker *w);

/* The worker whose running batch holds c, or NULL. */
static rt_worker *batch_holding(const rt_call *c)
{
    if (c->state != RT_SENT)
        return NULL;
    for (rt_worker *w = rt.workers; w; w = w->next)
        if (w->batch && w->state != RT_W_DEAD)
            for (const rt_call *x = w->inflight; x != NULL; x = x->qnext)
                if (x == c)
                    return w;
    return NULL;
}

void rt_call_cancel(rt_call *c)
{
    if (c->state == RT_DONE)
        return;
    rt_queue_cancel(c); /* when it waits in the queue or to retry */
    /* A call a worker holds is settled now and dropped when the worker
     * gives it back: one sent ahead is never started, and the worker
     * running one is stopped (its call_ended then only releases it). */
    rt_worker *owner = rt_worker_running(c), *batch = batch_holding(c);
    if (owner != NULL && owner->batch)
        owner = NULL; /* the others of its batch run on: only its result is dropped */
    c->cancelled = c->state == RT_SENT;
    if (c->cancelled && owner == NULL)
        rt_worker_cancel_sent(c); /* so it never starts */
    rt_call_complete(c, MODAL_ECANCELLED,
                     rt_error_frame(c, MODAL_ECANCELLED, "the call was cancelled"));
    if (owner != NULL)
        rt_worker_kill(owner, "its call was cancelled");
    else if (batch != NULL && batch_orphaned(batch))
        rt_worker_kill(batch, "every call of its batch was cancelled");
}

rt_map *rt_map_find(const char *id)
{
    for (rt_map *m = rt.maps; m; m = m->next)
        if (strcmp(m->id, id) == 0)
            return m;
    return NULL;
}

modal_status rt_map_create(modal__buf *frame, rt_map **out, modal_error *err)
{
    modal__dec dec;
    modal_status st = modal__dec_open(frame, 1, &dec, err);
    if (st != MODAL_OK)
        return st;
    rt_pool *p;
    st = frame_pool(dec.env, &p, err);
    modal__dec_close(&dec);
    if (st == MODAL_OK)
        st = pool_admits(p, 0, err);
    if (st != MODAL_OK)
        return st;
    rt_map *m = calloc(1, sizeof *m);
    if (m == NULL)
        return modal__fail(err, MODAL_ENOMEM, "runtime out of memory");
    modal__random_id(MODAL__MAP_ID_PREFIX, m->id, sizeof m->id);
    m->pool = p;
    p->refs++;
    m->touched = rt_now();
    m->next = rt.maps;
    rt.maps = m;
    *out = m;
    return MODAL_OK;
}

modal_status rt_map_inputs_read(modal__buf *bundle, rt_map_inputs *in)
{
    memset(in, 0, sizeof *in);
    modal__bundle_part *parts;
    size_t n;
    modal_status st = modal__bundle_parse(bundle, &parts, &n, &in->err);
    if (st != MODAL_OK)
        return in->st = st;
    in->parsed = true;
    in->index = calloc(n ? n : 1, sizeof *in->index);
    in->frame = calloc(n ? n : 1, sizeof *in->frame);
    if (in->index == NULL || in->frame == NULL) {
        free(parts);
        return in->st = modal__fail(&in->err, MODAL_ENOMEM, "runtime out of memory");
    }
    for (size_t k = 0; k < n; k++) {
        modal__buf *view = modal__buf_view(bundle, (size_t)((const uint8_t *)parts[k].p - bundle->base),
                                           parts[k].len);
        modal__dec dec;
        if (view == NULL || (st = modal__dec_open(view, 1, &dec, &in->err)) != MODAL_OK) {
            if (view == NULL)
                st = modal__fail(&in->err, MODAL_ENOMEM, "runtime out of memory");
            modal__buf_unref(view);
            break;
        }
        const cJSON *ji = cJSON_GetObjectItemCaseSensitive(dec.env, "index");
        const cJSON *ja = cJSON_GetObjectItemCaseSensitive(dec.env, "args");
        double di = cJSON_IsNumber(ji) ? ji->valuedouble : -1;
        bool args_ok = cJSON_IsArray(ja);
        modal__dec_close(&dec);
        if (di < 0 || di > 1e8 || di != floor(di) || !args_ok) {
            modal__buf_unref(view);
            st = modal__fail(&in->err, MODAL_ECODEC,
                             "map input frame %zu: needs an integer \"index\" (0..1e8) and an "
                             "\"args\" list", k);
            break;
        }
        in->index[in->n] = (size_t)di;
        in->frame[in->n++] = view;
    }
    free(parts);
    return in->st = st;
}

void rt_map_inputs_free(rt_map_inputs *in)
{
    for (size_t k = 0; in->frame != NULL && k < in->n; k++)
        modal__buf_unref(in->frame[k]);
    free(in->frame);
    free(in->index);
    memset(in, 0, sizeof *in);
}

modal_status rt_map_add_inputs(rt_map *m, rt_map_inputs *in, size_t *accepted,
                               modal_error *err)
{
    *accepted = 0;
    if (!in->parsed) {
        *err = in->err;
        return in->st;
    }
    modal_status st = MODAL_OK;
    m->touched = rt.last_activity = rt_now();
    for (size_t k = 0; k < in->n; k++) {
        size_t idx = in->index[k];
        if (idx >= m->cap) {
            size_t ncap = m->cap ? m->cap : 1024;
            while (ncap <= idx)
                ncap *= 2;
            rt_call **nc = realloc(m->calls, ncap * sizeof *nc);
            if (nc == NULL) {
                st = modal__fail(err, MODAL_ENOMEM, "runtime out of memory");
                break;
            }
            memset(nc + m->cap, 0, (ncap - m->cap) * sizeof *nc);
            m->calls = nc;
            m->cap = ncap;
        }
        if (m->calls[idx] != NULL) /* resent after a transport retry */
            continue;
        if ((st = pool_admits(m->pool, 1, err)) != MODAL_OK)
            break;
        char id[64];
        snprintf(id, sizeof id, "%s-%zu", m->id, idx);
        rt_call *c = call_new(m->pool, id, (long long)idx);
        if (c == NULL) {
            st = modal__fail(err, MODAL_ENOMEM, "runtime out of memory");
            break;
        }
        c->map = m;
        c->args = in->frame[k];
        in->frame[k] = NULL; /* the call's now */
        c->args_len = c->args->len;
        m->calls[idx] = c;
        if (idx + 1 > m->ncalls)
            m->ncalls = idx + 1;
        enqueue(m->pool, c, RT_QUEUE_NEW); /* pool_admits made room */
        (*accepted)++;
    }
    if (st == MODAL_OK && in->st != MODAL_OK) {
        *err = in->err; /* the first bad frame; those before it are taken */
        st = in->st;
    }
    rt_dispatch(m->pool);
    return st;
}

/* Drop a map's finished calls up to seq (the client has them). */
void rt_map_ack(rt_map *m, long long seq)
{
    while (m->done_head && m->done_head->seq <= seq) {
        rt_call *c = m->done_head;
        m->done_head = c->dnext;
        if (m->done_head == NULL)
            m->done_tail = NULL;
        m->calls[c->index] = NULL;
        if (c->waiters == 0)
            call_free(c);
        else
            c->orphan = true;
    }
}

/* Whether every call of w's batch was cancelled or belongs to a map that
 * is gone: only then is the batch stopped, as no call of it needs its
 * result. */
static bool batch_orphaned(const rt_worker *w)
{
    for (const rt_call *c = w->inflight; c != NULL; c = c->qnext)
        if (!c->orphan && !c->cancelled)
            return false;
    return true;
}

static bool of_map(const rt_call *c, const void *m)
{
    return c->map == m;
}

void rt_map_free(rt_map *m)
{
    listener.map_changed(m);
    for (rt_map **pp = &rt.maps; *pp; pp = &(*pp)->next)
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    /* Queued inputs leave the pool's queue in one pass: removing them one
     * by one would cost a scan of the queue each. */
    for (rt_call *c = rt_queue_remove_if(m->pool, of_map, m), *next; c != NULL; c = next) {
        next = c->qnext;
        m->calls[c->index] = NULL;
        call_free(c);
    }
    for (size_t i = 0; i < m->ncalls; i++) {
        rt_call *c = m->calls[i];
        if (c == NULL)
            continue;
        c->map = NULL;
        if (c->state == RT_DELAYED) {
            rt_queue_cancel(c);
            call_free(c);
        } else if (c->state == RT_SENT) {
            /* A worker holds it: it is freed when the worker returns it. */
            c->cancelled = true;
            c->orphan = true;
        } else {
            call_free(c);
        }
    }
    free(m->calls);
    m->pool->refs--;
    free(m);
    /* Stop the workers running one of them, only now: stopping a worker
     * puts the calls behind its running one back in the queue, and the
     * map's own must already be marked so they are dropped, not requeued. */
    for (rt_worker *w = rt.workers; w; w = w->next)
        if (w->inflight != NULL && w->inflight->orphan && w->state != RT_W_DEAD &&
            (!w->batch || batch_orphaned(w)))
            rt_worker_kill(w, "its map was cancelled");
}

static void tick(double now)
{
    /* Retries that are due go back to their queue. */
    for (rt_call *c = rt_queue_due(now), *next; c != NULL; c = next) {
        next = c->qnext;
        enqueue(c->pool, c, RT_QUEUE_RETRY);
        rt_dispatch(c->pool);
    }
    /* Batches whose wait is over go to their idle workers. */
    for (rt_pool *p = rt.pools; p; p = p->next)
        if (p->spec->batch_max_size > 0 && batch_due(p) <= now)
            rt_dispatch(p);
    /* Keep min_containers warm. */
    for (rt_pool *p = rt.pools; p; p = p->next)
        if (!p->broken && p->nworkers < p->spec->min_containers && now >= p->warm_after)
            pool_spawn(p);
    /* Results nobody will fetch any more: a full sweep, so at most once a
     * second rather than after every worker message. */
    static double last_sweep;
    if (now - last_sweep < 1.0)
        return;
    last_sweep = now;
    rt_res_sweep();
    for (size_t i = 0; i < rt.table_size; i++)
        for (rt_call **pp = &rt.table[i]; *pp;) {
            rt_call *c = *pp;
            if (c->state == RT_DONE && c->waiters == 0 && !c->cancelled &&
                ((c->fetched_at > 0 &&
                  now - c->fetched_at > (c->result_fd >= 0 ? FETCHED_BIG_TTL : FETCHED_TTL)) ||
                 now - c->done_at > RESULT_TTL)) {
                *pp = c->hnext;
                rt.ncalls--;
                call_free(c);
            } else {
                pp = &c->hnext;
            }
        }
    for (rt_map *m = rt.maps, *next; m; m = next) {
        next = m->next;
        if (now - m->touched > MAP_TTL)
            rt_map_free(m);
    }
    /* A pool nothing uses any more goes; its spec stays registered, and
     * the next call makes the pool again. */
    for (rt_pool **pp = &rt.pools; *pp;) {
        rt_pool *p = *pp;
        if (p->nworkers == 0 && p->nstarting == 0 && p->refs == 0 && rt_queue_length(p) == 0 &&
            rt_queue_taken(p) == 0 && rt_queue_delayed(p) == 0) {
            *pp = p->next;
            rt_log(0, "freed the idle pool of %s (%.12s)", p->spec->fn, p->key);
            rt_template_stop(p);
            gpu_seconds_keep(p);
            free(p);
        } else {
            pp = &p->next;
        }
    }
}

static double next_timer(double now)
{
    double t = rt_queue_next_due(now + 0.25);
    for (rt_worker *w = rt.workers; w; w = w->next)
        if (w->inflight && (w->state == RT_W_READY || w->state == RT_W_EXITING)) {
            double d = w->inflight->started_at + w->pool->spec->timeout;
            if (d < t)
                t = d;
        }
    /* A batch that waits for more calls while a worker idles for it. */
    for (rt_pool *p = rt.pools; p; p = p->next) {
        int all;
        if (p->spec->batch_max_size > 0 && rt_queue_peek(p) != NULL && !p->broken &&
            idle_worker(p, &all) != NULL) {
            double d = batch_due(p);
            if (d < t)
                t = d;
        }
    }
    return t;
}


/* ---- worker events ------------------------------------------------- */

/* Fail every queued call of p with st and msg. */
static void pool_fail_queue(rt_pool *p, modal_status st, const char *msg)
{
    rt_call *c;
    while (rt_queue_take(p, &c, 1) == 1) {
        rt_queue_ack(c);
        rt_call_complete(c, st, rt_error_frame(c, st, msg));
    }
}

/*
 * A start that failed pauses the keeping warm of min_containers, for a time
 * that doubles (1 s up to 60 s) while starts keep failing: else a hook that
 * always fails would have a worker (or a memory-snapshot template, which
 * runs snapshot_enter each time) started again on every turn of the loop.
 * Calls still start workers at once.
 */
static void pause_warm(rt_pool *p)
{
    p->warm_pause = p->warm_pause < 1 ? 1 : p->warm_pause * 2 > 60 ? 60 : p->warm_pause * 2;
    p->warm_after = rt_now() + p->warm_pause;
}

static void reclaim_for_waiting(void);

static void on_ready(rt_worker *w)
{
    w->pool->warm_pause = 0;
    rt_dispatch(w->pool);
    if (w->state == RT_W_READY && w->inflight == NULL)
        reclaim_for_waiting(); /* ready with nothing to do: others may wait for it */
}

static void on_start_refused(rt_pool *p, modal_status code, const char *msg)
{
    pause_warm(p);
    if (code != MODAL_EFUNC && code != MODAL_ETIMEOUT) {
        /* Unknown function, invalid options: every start would fail. */
        p->broken = true;
        pool_fail_queue(p, code, msg);
        return;
    }
    /* A failed enter hook fails the attempt it was started for. */
    rt_call *c;
    if (rt_queue_take(p, &c, 1) == 1) {
        c->attempt++;
        settle_running(c, code, msg, NULL, -1);
    }
}

static void on_can_start(rt_pool *p)
{
    rt_dispatch(p);
}

static void on_start_failed(rt_pool *p, modal_status st, const char *msg, bool permanent)
{
    pause_warm(p);
    if (permanent)
        p->broken = true;
    pool_fail_queue(p, st, msg);
}

/* GPU-seconds of each app (usage in health): kept in memory only. */
typedef struct app_usage {
    char app[MODAL__NAME_MAX + 1];
    double gpu_seconds;
    long long calls;         /* attempts run on GPUs */
    struct app_usage *next;
} app_usage;
static app_usage *usage;

/* The attempt of c that w ran has ended: it used its run time times the
 * GPUs w holds, counted for the call, its pool and its app. The calls of
 * a batch ran in one invocation: each is charged its share. */
static void count_gpu_seconds(rt_worker *w, rt_call *c)
{
    int n = rt_res_grant_count(&w->res);
    if (n == 0 || c->started_at <= 0)
        return;
    double s = (rt_now() - c->started_at) * n / (c->batch_size > 1 ? c->batch_size : 1);
    c->gpu_seconds += s;
    w->pool->gpu_seconds += s;
    app_usage *u = usage;
    while (u != NULL && strcmp(u->app, w->pool->spec->app) != 0)
        u = u->next;
    if (u == NULL && (u = calloc(1, sizeof *u)) != NULL) {
        snprintf(u->app, sizeof u->app, "%s", w->pool->spec->app);
        u->next = usage;
        usage = u;
    }
    if (u != NULL) {
        u->gpu_seconds += s;
        u->calls++;
    }
}

static void on_call_ended(rt_worker *w, rt_call *c, modal_status st, const char *msg,
                          modal__buf *frame, int fd)
{
    count_gpu_seconds(w, c);
    settle_running(c, st, msg, frame, fd);
}

static void on_unstarted(rt_worker *w, rt_call *list)
{
    rt_queue_requeue(w->pool, list, requeue_keep, release);
    rt_dispatch(w->pool);
}

static void on_output(rt_call *c, const char *lines, size_t len)
{
    if (!c->cancelled && !c->orphan)
        rt_call_append_log(c, lines, len);
}

/* Pools that wait for resources: an idle worker may give way to them. */
static void reclaim_for_waiting(void)
{
    for (rt_pool *q = rt.pools; q; q = q->next)
        if (waits_for_resources(q) && rt_queue_length(q) > 0 && !q->broken)
            reclaim_for(q, q->waits_for);
}

static void on_idle(rt_worker *w)
{
    rt_pool *p = w->pool;
    if (rt_queue_length(p) == 0 && rt_queue_taken(p) == 0)
        p->waits_for = NULL; /* nothing of p waits any more */
    rt_dispatch(p);
    if (w->state == RT_W_READY && w->inflight == NULL)
        reclaim_for_waiting(); /* w may be what they wait for */
}

static void on_gone(rt_worker *w)
{
    bool freed = w->res.held;
    rt_res_release(&w->res);
    rt_dispatch(w->pool);
    if (!freed)
        return;
    /* What it held may let calls of other pools start. */
    for (rt_pool *p = rt.pools; p; p = p->next)
        if (p != w->pool && waits_for_resources(p) && rt_queue_length(p) > 0)
            rt_dispatch(p);
}

static const rt_worker_events sched_events = {
    .ready = on_ready,
    .start_refused = on_start_refused,
    .can_start = on_can_start,
    .start_failed = on_start_failed,
    .call_ended = on_call_ended,
    .unstarted = on_unstarted,
    .output = on_output,
    .idle = on_idle,
    .gone = on_gone,
    .tick = tick,
    .next_timer = next_timer,
};

void rt_sched_init(const rt_sched_listener *l)
{
    listener = *l;
    rt_worker_events_set(&sched_events);
}

/* ---- status ---------------------------------------------------------- */

/* The worker holding the allocator's slot, for health's gpus. */
static cJSON *gpu_holder(int slot, void *arg)
{
    for (rt_worker *w = rt.workers; w; w = w->next)
        if (w->res.devices & (1ull << slot)) {
            cJSON *h = cJSON_CreateObject();
            cJSON_AddNumberToObject(h, "pid", w->pid);
            cJSON_AddStringToObject(h, "fn", w->pool->spec->fn);
            cJSON_AddStringToObject(h, "app", w->pool->spec->app);
            return h;
        }
    return NULL;
}

void rt_sched_status(cJSON *j)
{
    cJSON_AddItemToObject(j, "gpus", rt_gpus_status(gpu_holder, NULL));
    cJSON *u = cJSON_AddObjectToObject(j, "usage");
    for (app_usage *a = usage; a; a = a->next) {
        cJSON *e = cJSON_AddObjectToObject(u, a->app);
        cJSON_AddNumberToObject(e, "gpu_seconds", a->gpu_seconds);
        modal__json_num(e, "calls", (double)a->calls);
    }
    cJSON_AddItemToObject(j, "resources", rt_resources_status());
    cJSON *q = cJSON_AddObjectToObject(j, "queue");
    modal__json_num(q, "max_queued", (double)rt_queue_max);
    cJSON *pools = cJSON_AddArrayToObject(q, "waiting");
    double now = rt_now();
    for (rt_pool *p = rt.pools; p; p = p->next) {
        size_t running = 0;
        int workers = 0;
        for (rt_worker *w = rt.workers; w; w = w->next)
            if (w->pool == p) {
                workers++;
                /* Every call of a batch runs; of a pipeline, the head. */
                running += w->batch ? (size_t)w->ninflight : w->inflight != NULL;
            }
        size_t queued = rt_queue_length(p), taken = rt_queue_taken(p);
        size_t ahead = taken > running ? taken - running : 0;
        size_t delayed = rt_queue_delayed(p);
        if (queued + ahead + delayed == 0)
            continue;
        /* Calls waiting for a worker: in the queue, or sent ahead to a busy
         * worker; and those waiting to retry. waits_for says what keeps
         * the pool from starting another worker. */
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "app", p->spec->app);
        cJSON_AddStringToObject(e, "fn", p->spec->fn);
        modal__json_num(e, "queued", (double)queued);
        modal__json_num(e, "sent_ahead", (double)ahead);
        modal__json_num(e, "delayed", (double)delayed);
        modal__json_num(e, "running", (double)running);
        modal__json_num(e, "workers", workers);
        if (p->waits_for != NULL) {
            cJSON_AddStringToObject(e, "waits_for", p->waits_for);
            cJSON_AddNumberToObject(e, "waiting_s", now - p->waiting_since);
        } else {
            cJSON_AddNullToObject(e, "waits_for");
        }
        cJSON *asks = cJSON_AddObjectToObject(e, "asks");
        cJSON_AddNumberToObject(asks, "cpu", p->spec->cpu);
        modal__json_num(asks, "memory_mib", p->spec->memory);
        cJSON_AddItemToArray(pools, e);
    }
}
