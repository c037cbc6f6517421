/*
 * worker.c: worker mode. A runtime starts the program's own executable with
 * MODAL_WORKER_FD set; modal_worker_serve_if_worker() then serves calls to
 * one registered function over that socket and exits, so the program's
 * main body never runs inside a worker.
 *
 * Output capture: stdout and stderr are pipes whose read ends the runtime
 * hands over as well. A small thread reads them and sends what it reads as
 * LOG messages tagged with the call running now, over the same socket as
 * the results, so every byte reaches the runtime before the RESULT of the
 * call that wrote it. When a call ends, the main thread flushes stdio and
 * drains what is still in the pipes itself, under the capture lock, before
 * it answers; a call that wrote nothing pays one poll for that (which also
 * says whether a message from the runtime is waiting).
 */
#include "internal.h"
#include "gpu.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct {
    pthread_mutex_t mu;  /* held while reading the pipes and sending LOG */
    bool on;
    int sock;
    int fds[2];          /* read ends of the stdout and stderr pipes */
    int scratch[2];      /* a pipe that output is copied through */
    bool plain_read;     /* tee() failed: output is read directly */
    char call[64];       /* the call running now; "" outside calls */
    uint64_t *taken;     /* shared with the runtime: bytes taken from each pipe */
    char buf[MODAL__IPC_INLINE_MAX];
} cap = {.mu = PTHREAD_MUTEX_INITIALIZER, .fds = {-1, -1}};

/* Read all n bytes from fd (a pipe that holds them). */
static void read_all(int fd, char *buf, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, buf, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
        buf += r;
        n -= (size_t)r;
    }
}

/* Send n bytes of cap.buf from stream s as a LOG message. Output that
 * cannot be sent is lost; the call itself goes on. */
static void send_chunk(int s, size_t n)
{
    char meta[128];
    snprintf(meta, sizeof meta, "{\"call_id\":\"%s\",\"stream\":%d}", cap.call, s + 1);
    modal__ipc_send(cap.sock, MODAL__MSG_LOG, meta, cap.buf, n, -1, NULL);
}

/*
 * Send up to limit bytes of stream s; cap.mu held. Returns 0 at end of
 * file, else 1. The bytes are copied out (tee) and sent before they are
 * taken from the pipe, and the shared counter of bytes taken moves after
 * that: if the function kills the process meanwhile, the runtime finds
 * them still there, and the counter tells it how many it has already.
 */
static int cap_read_send(int s, size_t limit)
{
    while (limit > 0) {
        size_t want = limit < sizeof cap.buf ? limit : sizeof cap.buf;
        ssize_t n = cap.plain_read ? read(cap.fds[s], cap.buf, want)
                                   : tee(cap.fds[s], cap.scratch[1], want, SPLICE_F_NONBLOCK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && !cap.plain_read) {
            cap.plain_read = true; /* no tee here: read, and lose a chunk to a crash */
            continue;
        }
        if (n == 0)
            return 0;
        if (n < 0)
            return 1; /* EAGAIN: nothing (more) to read */
        if (!cap.plain_read)
            read_all(cap.scratch[0], cap.buf, (size_t)n);
        send_chunk(s, (size_t)n);
        if (!cap.plain_read)
            read_all(cap.fds[s], cap.buf, (size_t)n); /* now take them */
        if (cap.taken != NULL)
            __atomic_add_fetch(&cap.taken[s], (uint64_t)n, __ATOMIC_RELEASE);
        limit -= (size_t)n;
    }
    return 1;
}

static void *cap_main(void *arg)
{
    struct pollfd pf[2] = {{.fd = cap.fds[0], .events = POLLIN},
                           {.fd = cap.fds[1], .events = POLLIN}};
    while (pf[0].fd >= 0 || pf[1].fd >= 0) {
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        pthread_mutex_lock(&cap.mu);
        for (int s = 0; s < 2; s++)
            if ((pf[s].revents & POLLNVAL) ||
                (pf[s].revents && cap_read_send(s, sizeof cap.buf) == 0))
                pf[s].fd = -1; /* every writer closed it, or the function closed ours */
        pthread_mutex_unlock(&cap.mu);
    }
    return arg;
}

/* Take over the output pipes named by MODAL_WORKER_OUTPUT_FDS ("4,5,6":
 * the read ends of stdout and stderr, then the counters of bytes taken). */
static void cap_start(int sock)
{
    const char *v = getenv(MODAL__WORKER_OUTPUT_ENV);
    int out = -1, err = -1, taken = -1;
    if (v == NULL || sscanf(v, "%d,%d,%d", &out, &err, &taken) != 3 || out < 3 || err < 3 ||
        taken < 3 || fcntl(out, F_GETFD) < 0 || fcntl(err, F_GETFD) < 0) {
        unsetenv(MODAL__WORKER_OUTPUT_ENV);
        return; /* output goes wherever fds 1 and 2 lead */
    }
    unsetenv(MODAL__WORKER_OUTPUT_ENV);
    /* The counters are a mapping; the descriptor is not needed after it. */
    void *counters = mmap(NULL, MODAL__OUTPUT_TAKEN_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                          taken, 0);
    close(taken);
    cap.taken = counters != MAP_FAILED ? counters : NULL;
    /* Programs the function starts inherit neither. */
    fcntl(out, F_SETFD, FD_CLOEXEC);
    fcntl(err, F_SETFD, FD_CLOEXEC);
    fcntl(out, F_SETFL, O_NONBLOCK);
    fcntl(err, F_SETFL, O_NONBLOCK);
    if (pipe2(cap.scratch, O_CLOEXEC | O_NONBLOCK) != 0)
        return; /* output goes to the runtime's copy of the pipes */
    cap.sock = sock;
    cap.fds[0] = out;
    cap.fds[1] = err;
}

/* Start reading the pipes, once the runtime has read what they held
 * before HELLO (it sent a message since): two readers of one pipe would
 * duplicate and lose output. */
static void cap_run(void)
{
    static bool started;
    if (started || cap.fds[0] < 0)
        return;
    started = true;
    /* The thread takes no signals: they belong to the function's code. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    cap.on = pthread_create(&t, NULL, cap_main, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (cap.on)
        pthread_detach(t);
}

/* Output from now on belongs to call_id. */
static void cap_begin(const char *call_id)
{
    if (!cap.on)
        return;
    size_t n = strlen(call_id);
    if (n >= sizeof cap.call)
        n = sizeof cap.call - 1;
    pthread_mutex_lock(&cap.mu);
    memcpy(cap.call, call_id, n);
    cap.call[n] = '\0';
    pthread_mutex_unlock(&cap.mu);
}

/* No message was waiting on the runtime socket at the last poll (cap_end)
 * and none has been read since; cleared by every read. */
static bool sock_quiet;

/* Send what is written so far, tagged with the current call, and leave
 * the output of what follows to no call. */
static void cap_end(void)
{
    fflush(stdout);
    fflush(stderr);
    if (!cap.on)
        return;
    pthread_mutex_lock(&cap.mu);
    /* One poll answers for both pipes and for the runtime socket: a call
     * that wrote nothing pays one system call here, and the next call of
     * the same batch need not look for a CANCEL that was not there. */
    struct pollfd pf[3] = {{.fd = cap.fds[0], .events = POLLIN},
                           {.fd = cap.fds[1], .events = POLLIN},
                           {.fd = cap.sock, .events = POLLIN}};
    int ready = poll(pf, 3, 0);
    for (int s = 0; s < 2; s++) {
        int avail = 0;
        if ((ready < 0 || (pf[s].revents & POLLIN)) &&
            ioctl(cap.fds[s], FIONREAD, &avail) == 0 && avail > 0)
            cap_read_send(s, (size_t)avail);
    }
    sock_quiet = ready >= 0 && pf[2].revents == 0;
    cap.call[0] = '\0';
    pthread_mutex_unlock(&cap.mu);
}

/*
 * The socket failed. If fd 3 is no longer the runtime socket, the
 * function's code closed or replaced it: say so and wait for the runtime,
 * which sees the socket close while the worker lives and reports the
 * broken protocol. Otherwise the runtime went away: exit.
 */
static void socket_failed(int sock, modal_function *fn, const char *what);

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
    modal__json_num(env, "v", MODAL__FRAME_VERSION);
    cJSON_AddStringToObject(env, "call_id", call_id);
    if (cJSON_IsNumber(index)) /* as raw text: cJSON prints a number slowly */
        modal__json_num(env, "index", index->valuedouble);
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
    /* {"call_id":"…","status":"…"}, without printf (once per call). */
    char meta[160];
    size_t ml = 0;
    const char *piece[5] = {"{\"call_id\":\"", call_id, "\",\"status\":\"",
                            st == MODAL_OK ? "OK" : modal_status_name(st), "\"}"};
    for (int i = 0; i < 5; i++) {
        size_t pl = strlen(piece[i]);
        if (pl > sizeof meta - 1 - ml)
            pl = sizeof meta - 1 - ml;
        memcpy(meta + ml, piece[i], pl);
        ml += pl;
    }
    meta[ml] = '\0';
    cap_end(); /* the call's output goes before its result */
    est = modal__ipc_send_enc(sock, MODAL__MSG_RESULT, meta, &enc, &err);
    modal__enc_free(&enc);
    return est;
}

/* ---- messages waiting to be served ---------------------------------- */

/* Calls arrive ahead of time; the runtime may cancel one before it starts.
 * Before each call the worker reads whatever else is queued on the socket
 * without waiting, so a CANCEL sent after a call is seen before that call
 * starts. */
typedef struct job {
    uint32_t type;
    cJSON *meta;
    modal__buf *payload;
    struct job *next;
} job;

static job *jq_head, *jq_tail;
static char (*cancels)[64];  /* ids of calls cancelled before they started */
static size_t ncancels, cancels_cap;
static bool sock_gone;       /* the runtime closed its end */

static void cancel_add(const cJSON *meta)
{
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(meta, "call_id");
    if (!cJSON_IsString(jid))
        return;
    if (ncancels == cancels_cap) {
        size_t ncap = cancels_cap ? cancels_cap * 2 : 16;
        void *n = realloc(cancels, ncap * sizeof *cancels);
        if (n == NULL)
            return; /* the call then runs, as if the cancel came late */
        cancels = n;
        cancels_cap = ncap;
    }
    snprintf(cancels[ncancels++], sizeof cancels[0], "%s", jid->valuestring);
}

/* Whether call_id was cancelled; forgets it. */
static bool cancel_take(const char *call_id)
{
    for (size_t i = 0; i < ncancels; i++)
        if (strcmp(cancels[i], call_id) == 0) {
            cancels[i][0] = '\0';
            memcpy(cancels[i], cancels[--ncancels], sizeof cancels[0]);
            return true;
        }
    return false;
}

/* Read one message into the queue (or the cancel set). Returns 1 when
 * none was waiting (dontwait), -1 when the socket failed. */
static int take_message(int sock, modal_function *fn, bool dontwait)
{
    uint32_t type;
    cJSON *m;
    modal__buf *payload;
    modal_error err;
    sock_quiet = false;
    modal_status st = modal__ipc_recv_flags(sock, dontwait ? MSG_DONTWAIT : 0, &type, &m,
                                            &payload, NULL, &err);
    if (st == MODAL_EPENDING)
        return 1;
    if (st != MODAL_OK) {
        socket_failed(sock, fn, err.message);
        sock_gone = true;
        return -1;
    }
    if (type == MODAL__MSG_CANCEL) {
        cancel_add(m);
        cJSON_Delete(m);
        modal__buf_unref(payload);
        return 0;
    }
    job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        fprintf(stderr, "modal worker: out of memory queueing a message from the runtime\n");
        exit(4); /* the runtime reports the worker's death */
    }
    *j = (job){type, m, payload, NULL};
    if (jq_tail)
        jq_tail->next = j;
    else
        jq_head = j;
    jq_tail = j;
    return 0;
}

/* Read every message already waiting, without blocking. */
static void take_waiting(int sock, modal_function *fn)
{
    if (sock_quiet) {
        sock_quiet = false; /* the poll that said so was just now, in cap_end */
        return;
    }
    while (!sock_gone && take_message(sock, fn, true) == 0)
        ;
}

/* Once a call is answered: a device whose context broke for good cannot
 * serve another, so this worker ends here, and a fresh one takes the
 * calls sent after it (the exit status tells the runtime none started). */
static void exit_if_gpu_lost(void)
{
    if (!modal__gpu_lost())
        return;
    cap_end();
    exit(MODAL__WORKER_EXIT_GPU_LOST);
}

static void serve_call(int sock, modal_function *fn, const cJSON *meta, modal__buf *payload)
{
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(meta, "call_id");
    const cJSON *jatt = cJSON_GetObjectItemCaseSensitive(meta, "attempt");
    const cJSON *jidx = cJSON_GetObjectItemCaseSensitive(meta, "index");
    const char *call_id = cJSON_IsString(jid) ? jid->valuestring : "?";
    take_waiting(sock, fn);
    if (cancel_take(call_id)) {
        /* Answered so the runtime frees it; the caller was told already. */
        send_result(sock, call_id, jidx, MODAL_ECANCELLED,
                    "the call was cancelled before it started", NULL);
        return;
    }
    cap_begin(call_id);
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
    if (send_result(sock, call_id, jidx, st, err.message, result) != MODAL_OK)
        socket_failed(sock, fn, "sending a result failed");
    modal_value_free(result);
    exit_if_gpu_lost();
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

/*
 * Calls of a batched function, run together: the body is invoked once
 * with, for each position, the list of that argument across the calls
 * that can run (not cancelled, arguments that decode, as many as most
 * calls have), and item i of its result answers the i-th of them. A call
 * that cannot run fails alone; a failure of the body, or a result that
 * is not a list of one item per call, fails every call that ran. The
 * answers go back in the order of the calls, as the runtime expects.
 * Output written meanwhile is tagged with the first call that runs; the
 * runtime gives it to every call of the batch.
 */
static void serve_batch(int sock, modal_function *fn, const cJSON *const *metas,
                        modal__buf *const *frames, size_t n)
{
    const char **ids = calloc(n, sizeof *ids);
    modal_value **args = calloc(n, sizeof *args);
    modal_value **run = calloc(n, sizeof *run);
    modal_error *errs = calloc(n, sizeof *errs); /* code MODAL_OK: the call runs */
    if (ids == NULL || args == NULL || run == NULL || errs == NULL) {
        fprintf(stderr, "modal worker: out of memory taking a batch of %zu calls\n", n);
        exit(4); /* the runtime reports the worker's death */
    }
    take_waiting(sock, fn);
    size_t nrun = 0, first = n, want = 0;
    for (size_t i = 0; i < n; i++) {
        const cJSON *jid = cJSON_GetObjectItemCaseSensitive(metas[i], "call_id");
        ids[i] = cJSON_IsString(jid) ? jid->valuestring : "?";
        modal_error *e = &errs[i];
        modal__dec dec;
        modal_status st = MODAL_OK;
        e->code = MODAL_OK;
        if (cancel_take(ids[i])) {
            modal__fail(e, MODAL_ECANCELLED, "the call was cancelled before it started");
            continue;
        }
        st = frames[i] != NULL ? modal__dec_open(frames[i], 1, &dec, e)
                               : modal__fail(e, MODAL_ECODEC, "the call carries no arguments");
        if (st == MODAL_OK) {
            st = modal__msg_value(&dec, "args", &args[i], e);
            modal__dec_close(&dec);
        }
        if (st == MODAL_OK && modal_value_type(args[i]) != MODAL_TYPE_LIST)
            st = modal__fail(e, MODAL_ECODEC, "%s: arguments are a %s, not a list", fn->name,
                             modal_type_name(modal_value_type(args[i])));
    }
    /* The batch takes the number of arguments most of its calls have (the
     * earliest's on a tie): one odd call fails alone wherever it sits. */
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        if (errs[i].code != MODAL_OK)
            continue;
        size_t same = 0;
        for (size_t k = 0; k < n; k++)
            same += errs[k].code == MODAL_OK &&
                    modal_value_len(args[k]) == modal_value_len(args[i]);
        if (same > best) {
            best = same;
            first = i;
            want = modal_value_len(args[i]);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (errs[i].code != MODAL_OK)
            continue;
        size_t got = modal_value_len(args[i]);
        if (got != want)
            modal__fail(&errs[i], MODAL_EINVAL, "%s: call %zu of a batch of %zu has %zu "
                        "argument%s, call %zu has %zu; every call of a batched function "
                        "takes the same number of arguments", fn->name, i, n, got,
                        got == 1 ? "" : "s", first, want);
        else
            run[nrun++] = args[i];
    }
    for (first = 0; first < n && errs[first].code != MODAL_OK; first++)
        ; /* the first call that runs: the body's ctx is its */
    modal_value *cols = NULL, *result = NULL;
    modal_error berr = {MODAL_OK, ""};
    modal_status bst = MODAL_OK;
    if (nrun > 0) {
        const cJSON *jatt = cJSON_GetObjectItemCaseSensitive(metas[first], "attempt");
        cap_begin(ids[first]);
        bst = modal__batch_columns(run, nrun, &cols, &berr);
        if (bst == MODAL_OK) {
            modal_ctx ctx = {.fn = fn, .call_id = ids[first],
                             .attempt = cJSON_IsNumber(jatt) ? jatt->valueint : 1,
                             .remote = true};
            bst = modal__invoke(fn, &ctx, cols, &result, &berr);
        }
        if (bst == MODAL_OK)
            bst = modal__batch_result_check(fn, result, nrun, &berr);
    }
    for (size_t i = 0, j = 0; i < n; i++) {
        const cJSON *jidx = cJSON_GetObjectItemCaseSensitive(metas[i], "index");
        modal_status st;
        if (errs[i].code != MODAL_OK)
            st = send_result(sock, ids[i], jidx, errs[i].code, errs[i].message, NULL);
        else if (bst != MODAL_OK)
            st = send_result(sock, ids[i], jidx, bst, berr.message, NULL);
        else
            st = send_result(sock, ids[i], jidx, MODAL_OK, NULL, modal_list_get(result, j++));
        if (st != MODAL_OK)
            socket_failed(sock, fn, "sending a result failed");
    }
    modal_value_free(result);
    modal_value_free(cols);
    for (size_t i = 0; i < n; i++)
        modal_value_free(args[i]);
    free(errs);
    free(run);
    free(args);
    free(ids);
    exit_if_gpu_lost();
}

/* A BATCH message: {"n"} and a bundle of the call metas (a JSON list)
 * then the n call frames. */
static void serve_batch_msg(int sock, modal_function *fn, const cJSON *meta, modal__buf *payload)
{
    modal__bundle_part *parts = NULL;
    size_t np = 0;
    modal_error err;
    const cJSON *jn = cJSON_GetObjectItemCaseSensitive(meta, "n");
    cJSON *list = NULL;
    if (payload == NULL || !cJSON_IsNumber(jn) || jn->valuedouble < 1 ||
        modal__bundle_parse(payload, &parts, &np, &err) != MODAL_OK ||
        np != (size_t)jn->valuedouble + 1 ||
        (list = cJSON_ParseWithLength(parts[0].p, parts[0].len)) == NULL ||
        (size_t)cJSON_GetArraySize(list) != np - 1) {
        fprintf(stderr, "modal worker: malformed batch of calls from the runtime\n");
        exit(4); /* the runtime reports the worker's death */
    }
    size_t n = np - 1;
    const cJSON **metas = calloc(n, sizeof *metas);
    modal__buf **frames = calloc(n, sizeof *frames);
    if (metas == NULL || frames == NULL) {
        fprintf(stderr, "modal worker: out of memory taking a batch of %zu calls\n", n);
        exit(4);
    }
    size_t i = 0;
    for (const cJSON *m = list->child; m != NULL; m = m->next, i++) {
        metas[i] = m;
        frames[i] = modal__buf_view(payload, (size_t)((const uint8_t *)parts[i + 1].p -
                                                      payload->base), parts[i + 1].len);
    }
    serve_batch(sock, fn, metas, frames, n);
    for (i = 0; i < n; i++)
        modal__buf_unref(frames[i]);
    free(frames);
    free(metas);
    cJSON_Delete(list);
    free(parts);
}

static void run_exit_hook(modal_function *fn)
{
    const modal_function_options *o = modal__fn_options(fn);
    if (o != NULL && o->exit != NULL) {
        modal_ctx ctx = {.fn = fn, .call_id = "exit", .attempt = 1, .remote = true};
        o->exit(&ctx);
    }
    cap_end();
}

static void socket_failed(int sock, modal_function *fn, const char *what)
{
    int type = 0;
    socklen_t tl = sizeof type;
    if (getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_SEQPACKET) {
        fprintf(stderr, "modal worker: %s: the runtime socket (fd %d) was closed or replaced "
                "inside the worker; waiting to be stopped\n", what, sock);
        cap_end();
        for (;;)
            pause();
    }
    if (sock_gone)
        return;
    /* The runtime went away: nothing is left to serve. */
    run_exit_hook(fn);
    exit(0);
}

/* ---- memory-snapshot templates --------------------------------------- */

/* Receive one fork request: its descriptors into fds, their targets into
 * targets, the worker's CUDA_VISIBLE_DEVICES into cvd (NULL when it is
 * not to be set). Returns the number of descriptors, 0 when the runtime
 * closed the socket, -1 on a malformed request (its descriptors closed). */
static int fork_req_recv(int sock, int *fds, int *targets, char *cvd, const char **cvdp)
{
    modal__fork_req req;
    union {
        char buf[CMSG_SPACE(sizeof(int) * MODAL__FORK_MAX_FDS)];
        struct cmsghdr align;
    } cbuf;
    struct iovec iov = {&req, sizeof req};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
                        .msg_controllen = sizeof cbuf.buf};
    ssize_t r;
    do
        r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    if (r <= 0)
        return 0;
    int n = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof fd, sizeof fd);
                if (n < MODAL__FORK_MAX_FDS)
                    fds[n++] = fd;
                else
                    close(fd);
            }
        }
    if (r != (ssize_t)sizeof req || req.type != MODAL__MSG_FORK || req.n != (uint32_t)n ||
        (mh.msg_flags & MSG_CTRUNC)) {
        for (int i = 0; i < n; i++)
            close(fds[i]);
        return -1;
    }
    for (int i = 0; i < n; i++)
        targets[i] = req.targets[i];
    memcpy(cvd, req.cuda_visible, sizeof req.cuda_visible);
    cvd[sizeof req.cuda_visible - 1] = '\0';
    *cvdp = req.has_cuda_visible ? cvd : NULL;
    return n;
}

/*
 * Find the function a worker (or template) serves, check its options and
 * run its enter hook: snapshot_enter in a template, enter in a worker.
 * Returns MODAL_OK, or the code of the first failure with msg saying it.
 */
static modal_status start_function(const char *name, bool template, modal_function **out,
                                   char *msg, size_t msgsz)
{
    modal_function *fn = modal_function_find(name);
    modal_error err;
    modal_status code;
    *out = fn;
    if (fn == NULL) {
        snprintf(msg, msgsz, "function \"%s\" is not registered in this executable", name);
        return MODAL_ENOTFOUND;
    }
    if ((code = modal_function_check(fn, &err)) != MODAL_OK) {
        snprintf(msg, msgsz, "%s", err.message);
        return code;
    }
    const modal_function_options *o = modal__fn_options(fn);
    /* A GPU worker's contexts are made before its enter hook (which may
     * use them) and before HELLO, so the first call finds them warm and a
     * device that cannot be used fails the start, saying why. Never in a
     * template: a forked child cannot use its parent's CUDA state. */
    if (!template && o->gpu != NULL && o->gpu[0] != '\0' &&
        (code = modal__gpu_warm(msg, msgsz)) != MODAL_OK)
        return code;
    modal_hook hook = template ? o->snapshot_enter : o->enter;
    const char *what = template ? "snapshot_enter" : "enter";
    if (hook == NULL)
        return MODAL_OK;
    modal_ctx ctx = {.fn = fn, .call_id = what, .attempt = 1, .remote = true};
    if (hook(&ctx) != 0) {
        snprintf(msg, msgsz, "%s: %s hook failed: %s", fn->name, what,
                 ctx.failed ? ctx.message : "it returned non-zero");
        return MODAL_EFUNC;
    }
    return MODAL_OK;
}

/*
 * Serve as a memory-snapshot template: run fn's snapshot_enter once, say
 * HELLO (with the error, and exit, when that failed), then fork a worker
 * for each request until the runtime closes the socket. Returns only in a
 * forked worker, whose descriptors are then in place, as in an exec'd one.
 *
 * The worker is cloned with CLONE_PARENT: it is the runtime's child, as an
 * exec'd worker is, so the runtime reaps it and reads its exit status
 * itself, and it outlives the template. The template must be a single
 * thread here: a fork copies only the thread that forks.
 */
static void template_serve(int sock, const char *name)
{
    /* Hold fds 4-6 (a worker's pipe ends and counters) so that files the
     * hook opens get other numbers: a forked worker's dup2 onto them
     * would close those files under it. */
    for (int fd = 4; fd <= 6; fd++)
        if (fcntl(fd, F_GETFD) < 0) {
            int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (nul >= 0 && nul != fd) {
                dup3(nul, fd, O_CLOEXEC);
                close(nul);
            }
        }
    modal_function *fn;
    modal_error err;
    char msg[MODAL_ERROR_MESSAGE_SIZE + 128];
    modal_status code = start_function(name, true, &fn, msg, sizeof msg);
    const char *error = code != MODAL_OK ? msg : NULL;
    char *meta = hello_meta(error, code);
    fflush(stdout);
    fflush(stderr);
    modal_status st = modal__ipc_send(sock, MODAL__MSG_HELLO, meta, NULL, 0, -1, &err);
    free(meta);
    if (st != MODAL_OK || error != NULL)
        exit(3);
    for (;;) {
        int fds[MODAL__FORK_MAX_FDS], targets[MODAL__FORK_MAX_FDS];
        char cvd[MODAL__FORK_CUDA_VISIBLE_MAX];
        const char *visible = NULL;
        int n = fork_req_recv(sock, fds, targets, cvd, &visible);
        if (n == 0)
            exit(0); /* the runtime stopped the pool, or went away */
        if (n < 0) {
            modal__ipc_send(sock, MODAL__MSG_FORKED,
                            "{\"error\":\"malformed fork request\",\"errno\":71}", NULL, 0,
                            -1, NULL);
            continue;
        }
        fflush(stdout);
        fflush(stderr);
        pid_t runtime = getppid();
        pid_t pid = (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, NULL, NULL, NULL, 0);
        if (pid == 0) {
            /* It dies with the runtime, as an exec'd worker does (a clone
             * does not inherit that): an orphan would go on running, on
             * GPUs a restarted runtime gives to another. */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != runtime)
                _exit(4);
            /* The new worker: its own process group, so a timeout stops
             * what it starts; then its descriptors, as exec gives them. */
            setpgid(0, 0);
            /* The GPUs it holds, before any of its code runs. */
            if (visible != NULL)
                setenv("CUDA_VISIBLE_DEVICES", visible, 1);
            int moved[MODAL__FORK_MAX_FDS];
            for (int i = 0; i < n; i++) {
                moved[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 64);
                close(fds[i]); /* its number may be another's target */
            }
            for (int i = 0; i < n; i++) {
                if (moved[i] < 0 || dup2(moved[i], targets[i]) < 0) {
                    fprintf(stderr, "modal worker: taking fd %d from the template failed: %s\n",
                            targets[i], strerror(errno));
                    _exit(4);
                }
                close(moved[i]);
            }
            return;
        }
        int e = errno;
        for (int i = 0; i < n; i++)
            close(fds[i]);
        char reply[256];
        if (pid < 0)
            snprintf(reply, sizeof reply, "{\"error\":\"clone failed: %s\",\"errno\":%d}",
                     strerror(e), e);
        else
            snprintf(reply, sizeof reply, "{\"pid\":%d}", (int)pid);
        if (modal__ipc_send(sock, MODAL__MSG_FORKED, reply, NULL, 0, -1, &err) != MODAL_OK)
            exit(0); /* the runtime went away; the worker sees its socket close */
    }
}

void modal_worker_serve_if_worker(int argc, char **argv)
{
    const char *fdstr = getenv(MODAL__WORKER_FD_ENV);
    if (fdstr == NULL)
        return;
    char *end;
    long sock = strtol(fdstr, &end, 10);
    const char *fname = getenv("MODAL_WORKER_FUNCTION");
    /* The user's code may start programs of its own; they are not workers. */
    char name[256];
    snprintf(name, sizeof name, "%s", fname != NULL ? fname : "");
    if (*end != '\0' || sock < 0 || sock > 65535) {
        fprintf(stderr, "modal worker: MODAL_WORKER_FD=\"%s\" is not a file descriptor\n", fdstr);
        exit(2);
    }
    unsetenv(MODAL__WORKER_FD_ENV);
    unsetenv("MODAL_WORKER_FUNCTION");
    /* Programs the function starts must not hold the runtime socket: the
     * runtime would keep talking to them. */
    fcntl((int)sock, F_SETFD, FD_CLOEXEC);
    /* Output reaches the runtime through pipes; line buffering keeps it
     * flowing while a call runs instead of arriving at exit. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *tmpl = getenv(MODAL__WORKER_TEMPLATE_ENV);
    bool is_template = tmpl != NULL && strcmp(tmpl, "1") == 0;
    unsetenv(MODAL__WORKER_TEMPLATE_ENV);
    if (is_template) {
        template_serve((int)sock, name); /* returns in each forked worker */
        fcntl((int)sock, F_SETFD, FD_CLOEXEC);
    }
    /* From here on, in a worker only, large arrays live in memfds, so that
     * results leave without a copy. Not in a template: a memfd's pages are
     * shared, not copied, by a fork, so an array snapshot_enter made there
     * would be one memory for the template and all its workers, and what one
     * worker wrote into it every other would see. */
    modal__arrays_in_memfd = true;
    cap_start((int)sock);

    modal_function *fn;
    modal_error err;
    char msg[MODAL_ERROR_MESSAGE_SIZE + 128];
    modal_status code = start_function(name, false, &fn, msg, sizeof msg);
    const char *error = code != MODAL_OK ? msg : NULL;
    char *meta = hello_meta(error, code);
    cap_end();
    modal_status st = modal__ipc_send((int)sock, MODAL__MSG_HELLO, meta, NULL, 0, -1, &err);
    free(meta);
    if (st != MODAL_OK || error != NULL)
        exit(3);

    for (;;) {
        if (jq_head == NULL) {
            /* Nothing is pending: any cancel left was for a call that
             * already ran. */
            ncancels = 0;
            if (sock_gone || take_message((int)sock, fn, false) != 0) {
                run_exit_hook(fn);
                exit(0);
            }
            if (jq_head == NULL)
                continue; /* a CANCEL for a call that ran already (in a batch, or
                             * sent ahead and started before the cancel came) */
        }
        cap_run();
        job *j = jq_head;
        jq_head = j->next;
        if (jq_head == NULL)
            jq_tail = NULL;
        if (j->type == MODAL__MSG_BATCH)
            serve_batch_msg((int)sock, fn, j->meta, j->payload);
        else if (j->type == MODAL__MSG_CALL && modal__batched(fn))
            serve_batch((int)sock, fn, (const cJSON *const[]){j->meta}, &j->payload, 1);
        else if (j->type == MODAL__MSG_CALL)
            serve_call((int)sock, fn, j->meta, j->payload);
        else if (j->type == MODAL__MSG_CALLS)
            serve_calls((int)sock, fn, j->meta, j->payload);
        uint32_t type = j->type;
        cJSON_Delete(j->meta);
        modal__buf_unref(j->payload);
        free(j);
        if (type == MODAL__MSG_EXIT) {
            run_exit_hook(fn);
            exit(0);
        }
    }
}
