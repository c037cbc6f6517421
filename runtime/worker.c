/*
 * worker.c: worker processes. A worker is the uploaded executable in
 * worker mode, started from a launch spec by a launcher (runtime/launch.h:
 * an exec, or a fork of a memory-snapshot template), in a process group of
 * its own, with a SOCK_SEQPACKET socket on fd 3 and its stdout and stderr
 * piped. The worker reads those pipes itself (fds 4 and 5) and sends
 * what they carry as LOG messages tagged with the call that wrote it, in
 * order with its RESULTs. The
 * runtime keeps the read ends too: it reads them before the worker says
 * HELLO and after it died, for what the worker could not send.
 *
 * One event-loop thread polls every worker: it reads HELLO, LOG and RESULT
 * messages, enforces timeouts, and learns of a worker's death from its
 * pidfd (where pidfd_open() is refused, from waitid() each turn), so a
 * child holding the socket cannot keep a dead worker's slot.
 *
 * This file calls no scheduler function: what happens to a worker and
 * its calls is reported through the rt_worker_events the scheduler
 * registered, after the worker's own state is up to date.
 */
#include "rt.h"
#include "launch.h"
#include "gpu.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define HELLO_TIMEOUT 10.0
/* A socket that hangs up while its process lives this long was closed by
 * the function's code; the process is then stopped. */
#define SOCK_CLOSE_GRACE 1.0
/* A worker asked to exit (its exit hook runs) is stopped after this long,
 * as at shutdown, so a hook that hangs cannot keep its pool's slot. */
#define EXIT_GRACE 5.0
/* Output lines are kept whole up to this size; longer ones are cut into
 * pieces of this size, each but the last marked. */
#define LINE_MAX_BYTES (64 * 1024)
#define CUT_MARK " [line continues]"

static const rt_worker_events *ev;

static const rt_loop_hooks *loop_hooks;

void rt_loop_hooks_set(const rt_loop_hooks *hooks)
{
    loop_hooks = hooks;
}

static void loop_locked(void)
{
    if (loop_hooks != NULL && loop_hooks->locked != NULL)
        loop_hooks->locked();
}

static void loop_unlocked(void)
{
    if (loop_hooks != NULL && loop_hooks->unlocked != NULL)
        loop_hooks->unlocked();
}

void rt_worker_events_set(const rt_worker_events *events)
{
    ev = events;
}

void rt_wake(void)
{
    uint64_t one = 1;
    if (write(rt.wake_fd, &one, sizeof one) < 0) {
        /* The counter is saturated only if the loop is far behind; it
         * wakes anyway. */
    }
}

/* A worker could not be started (what failed, with errno e). Calls that
 * wait for one would wait forever when the pool has no other: they fail.
 * An executable the kernel refuses stays refused, so the pool is marked
 * broken; a lack of memory, processes or descriptors may pass, so then
 * the next call tries again. Returns -1. */
static int spawn_failed(rt_pool *p, const char *path, const char *what, int e)
{
    char msg[900];
    snprintf(msg, sizeof msg, "cannot start a worker for %s from %s: %s failed: %s", p->spec->fn, path,
             what, strerror(e));
    rt_log(3, "%s", msg);
    if (p->nworkers == 0 && p->nstarting == 0) {
        bool permanent = e == EACCES || e == ENOEXEC || e == ENOENT || e == EPERM ||
                         e == ELIBBAD;
        ev->start_failed(p, permanent ? MODAL_EWORKER : MODAL_ERUNTIME, msg, permanent);
    }
    return -1;
}

/* /dev/null, opened once, for the workers' stdin. */
static int devnull_fd(void)
{
    static int fd = -1;
    if (fd < 0)
        fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return fd;
}

/*
 * CUDA_VISIBLE_DEVICES=<uuid>[,<uuid>...] for a worker holding g, in slot
 * order (the order the grant was made in), and its slots into the launch
 * spec's devices. A worker without GPUs gets it empty on a runtime with
 * GPUs, so it never touches another worker's devices. Returns out.
 */
static const char *visible_devices(const rt_res_grant *g, rt_launch_spec *spec, char *out,
                                   size_t outsz)
{
    size_t len = (size_t)snprintf(out, outsz, "CUDA_VISIBLE_DEVICES=");
    bool first = true;
    for (int i = 0; i < RT_RES_MAX_DEVICES; i++)
        if (g != NULL && (g->devices & (1ull << i)) && rt_res_device_name(i) != NULL) {
            rt_launch_add_device(spec, i);
            if (len < outsz)
                len += (size_t)snprintf(out + len, outsz - len, "%s%s", first ? "" : ",",
                                        rt_res_device_name(i));
            first = false;
        }
    return out;
}

int rt_worker_spawn(rt_pool *p, const rt_res_grant *g)
{
    if (rt.stopping)
        return -1; /* no new workers while shutting down */
    char path[600];
    rt_artifact_path(p->spec->artifact, path, sizeof path);
    /* The counters of output the worker took from its pipes (see drain). */
    int takenfd = modal__memfd_new("modal-output-taken", MODAL__OUTPUT_TAKEN_SIZE);
    if (takenfd < 0)
        return spawn_failed(p, path, "memfd_create", errno);
    uint64_t *taken = mmap(NULL, MODAL__OUTPUT_TAKEN_SIZE, PROT_READ, MAP_SHARED, takenfd, 0);
    if (taken == MAP_FAILED) {
        int e = errno;
        close(takenfd);
        return spawn_failed(p, path, "mmap", e);
    }
    int sv[2], outp[2], errp[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        int e = errno;
        close(takenfd);
        munmap(taken, MODAL__OUTPUT_TAKEN_SIZE);
        return spawn_failed(p, path, "socketpair", e);
    }
    if (pipe2(outp, O_CLOEXEC) != 0) {
        int e = errno;
        close(takenfd);
        munmap(taken, MODAL__OUTPUT_TAKEN_SIZE);
        close(sv[0]);
        close(sv[1]);
        return spawn_failed(p, path, "pipe2", e);
    }
    if (pipe2(errp, O_CLOEXEC) != 0) {
        int e = errno;
        close(takenfd);
        munmap(taken, MODAL__OUTPUT_TAKEN_SIZE);
        close(sv[0]);
        close(sv[1]);
        close(outp[0]);
        close(outp[1]);
        return spawn_failed(p, path, "pipe2", e);
    }
    rt_launch_spec spec;
    rt_launch_init(&spec);
    rt_launch_set_path(&spec, path);
    rt_launch_add_fd(&spec, 0, devnull_fd());
    rt_launch_add_fd(&spec, 1, outp[1]);
    rt_launch_add_fd(&spec, 2, errp[1]);
    rt_launch_add_fd(&spec, 3, sv[1]);
    /* The read ends, for the worker to capture its own output. */
    rt_launch_add_fd(&spec, 4, outp[0]);
    rt_launch_add_fd(&spec, 5, errp[0]);
    rt_launch_add_fd(&spec, 6, takenfd);
    spec.new_pgrp = true;
    char fnvar[160], urlvar[640], tokvar[PATH_MAX + 32];
    snprintf(fnvar, sizeof fnvar, "MODAL_WORKER_FUNCTION=%s", p->spec->fn);
    /* Nested calls from the function reach this runtime. */
    snprintf(urlvar, sizeof urlvar, "MODAL_RUNTIME_URL=%s", rt_listen_url());
    snprintf(tokvar, sizeof tokvar, "MODAL_TOKEN_FILE=%s", rt_token_path());
    char pinvar[128];
    snprintf(pinvar, sizeof pinvar, "MODAL_TLS_FINGERPRINT=%s", rt_listen_pin());
    char *extra[] = {MODAL__WORKER_FD_ENV "=3", MODAL__WORKER_OUTPUT_ENV "=4,5,6", fnvar,
                     NULL, NULL, NULL, NULL};
    if (rt_listen_url()[0]) {
        extra[3] = urlvar;
        extra[4] = tokvar;
        if (rt_listen_pin()[0])
            extra[5] = pinvar;
    }
    char **env = modal__env_inherited_list(extra);
    /* The runtime's own CUDA_VISIBLE_DEVICES chose what it sees; each
     * worker sees what it holds. */
    for (size_t i = 0; env != NULL && env[i] != NULL; i++)
        if (strncmp(env[i], "CUDA_VISIBLE_DEVICES=", 21) != 0)
            rt_launch_add_env(&spec, env[i]);
    char cvd[RT_RES_MAX_DEVICES * 48 + 32];
    if (visible_devices(g, &spec, cvd, sizeof cvd) != NULL &&
        (spec.ndevices > 0 || rt_res_device_name(0) != NULL))
        rt_launch_add_env(&spec, cvd);
    if (env == NULL)
        spec.alloc_failed = true;
    free(env);
    const rt_launcher *launcher = p->spec->memory_snapshot ? &rt_launcher_snapshot
                                                         : &rt_launcher_exec;
    pid_t pid = -1;
    rt_launch_error lerr;
    int rc = launcher->start(p, &spec, &pid, &lerr);
    rt_launch_free(&spec);
    close(sv[1]);
    close(outp[1]);
    close(errp[1]);
    close(takenfd);
    if (rc != 0) {
        munmap(taken, MODAL__OUTPUT_TAKEN_SIZE);
        close(sv[0]);
        close(outp[0]);
        close(errp[0]);
        /* 1: its template is starting; the pool is dispatched when it is ready. */
        return rc > 0 ? -1 : spawn_failed(p, path, lerr.step, lerr.err);
    }
    rt_worker *w = calloc(1, sizeof *w);
    if (w == NULL) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        munmap(taken, MODAL__OUTPUT_TAKEN_SIZE);
        close(sv[0]);
        close(outp[0]);
        close(errp[0]);
        return -1;
    }
    w->taken = taken;
    fcntl(outp[0], F_SETFL, O_NONBLOCK);
    fcntl(errp[0], F_SETFL, O_NONBLOCK);
    w->pool = p;
    w->pid = pid;
    w->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    w->sock = sv[0];
    w->out_fd = outp[0];
    w->err_fd = errp[0];
    w->state = RT_W_STARTING;
    w->started_at = rt_now();
    w->next = rt.workers;
    rt.workers = w;
    p->nworkers++;
    p->nstarting++;
    rt.running_workers++;
    rt_log(1, "started worker %d for %s (%.12s, by %s)", (int)pid, p->spec->fn, p->spec->artifact,
           launcher->name);
    rt_wake();
    return 0;
}

/* A call's CALL metadata; attempt is the number it will run as. */
static int call_meta(const rt_call *c, int attempt, char *out, size_t outsz)
{
    if (c->index >= 0)
        return snprintf(out, outsz, "{\"call_id\":\"%s\",\"attempt\":%d,\"index\":%lld}",
                        c->id, attempt, c->index);
    return snprintf(out, outsz, "{\"call_id\":\"%s\",\"attempt\":%d}", c->id, attempt);
}

/* c joins the end of w's in-flight list, as sent. */
static void inflight_append(rt_worker *w, rt_call *c)
{
    c->qnext = NULL;
    if (w->inflight_tail)
        w->inflight_tail->qnext = c;
    else
        w->inflight = c;
    w->inflight_tail = c;
    w->ninflight++;
    c->state = RT_SENT;
}

void rt_worker_send(rt_worker *w, rt_call **calls, size_t n)
{
    char metas[MODAL__IPC_META_MAX];
    size_t used = 0;
    modal__bundle_part parts[64];
    for (size_t i = 0; i < n; i++) {
        rt_call *c = calls[i];
        bool head = w->inflight == NULL;
        inflight_append(w, c);
        c->batch_size = 1;
        if (head) {
            c->attempt++;
            c->started_at = rt_now();
        }
        /* Calls sent ahead run as the attempt after those already made. */
        int attempt = head ? c->attempt : c->attempt + 1;
        if (n > 1) {
            metas[used++] = i == 0 ? '[' : ',';
            used += (size_t)call_meta(c, attempt, metas + used, sizeof metas - used - 2);
            parts[i].p = c->args->base;
            parts[i].len = c->args->len;
        } else {
            call_meta(c, attempt, metas, sizeof metas);
        }
    }
    modal_error err;
    modal_status st;
    rt_call *c = calls[0];
    if (n > 1) {
        /* Several calls in one message: metadata as a JSON list, frames as
         * a bundle, so a busy worker reads many calls per system call. */
        metas[used++] = ']';
        metas[used] = '\0';
        modal__buf *bundle = NULL;
        st = modal__bundle_build(parts, n, &bundle, &err);
        if (st == MODAL_OK)
            st = modal__ipc_send(w->sock, MODAL__MSG_CALLS, metas, bundle->base, bundle->len, -1,
                                 &err);
        modal__buf_unref(bundle);
    } else if (c->args_fd >= 0) {
        st = modal__ipc_send(w->sock, MODAL__MSG_CALL, metas, NULL, c->args_len, c->args_fd, &err);
    } else {
        st = modal__ipc_send(w->sock, MODAL__MSG_CALL, metas, c->args->base, c->args->len, -1, &err);
    }
    if (st != MODAL_OK)
        rt_log(3, "worker %d: %s", (int)w->pid, err.message); /* its death follows */
}

void rt_worker_send_batch(rt_worker *w, rt_call **calls, size_t n)
{
    /* The metas travel as the bundle's first part, not as the message's
     * metadata: a batch of up to 1000 calls would not fit there. */
    size_t cap = 2 + n * 160;
    char *metas = malloc(cap);
    modal__bundle_part *parts = malloc((n + 1) * sizeof *parts);
    if (metas == NULL || parts == NULL)
        abort(); /* the daemon may abort on out-of-memory */
    size_t used = 0;
    double now = rt_now();
    for (size_t i = 0; i < n; i++) {
        rt_call *c = calls[i];
        inflight_append(w, c);
        c->attempt++; /* every call of the batch runs now */
        c->batch_size = (int)n;
        c->started_at = now;
        metas[used++] = i == 0 ? '[' : ',';
        used += (size_t)call_meta(c, c->attempt, metas + used, cap - used - 2);
        parts[i + 1].p = c->args->base;
        parts[i + 1].len = c->args->len;
    }
    metas[used++] = ']';
    metas[used] = '\0';
    parts[0].p = metas;
    parts[0].len = used;
    w->batch = true;
    modal_error err;
    modal_status st;
    rt_call *c = calls[0];
    if (n == 1 && c->args_fd >= 0) {
        /* A call whose arguments lie in a memfd goes alone (rt_queue_take),
         * as a plain CALL with its memfd: a worker of a batched function
         * runs any CALL as a batch of one. */
        call_meta(c, c->attempt, metas, cap);
        st = modal__ipc_send(w->sock, MODAL__MSG_CALL, metas, NULL, c->args_len, c->args_fd,
                             &err);
    } else {
        modal__buf *bundle = NULL;
        char meta[32];
        snprintf(meta, sizeof meta, "{\"n\":%zu}", n);
        st = modal__bundle_build(parts, n + 1, &bundle, &err);
        if (st == MODAL_OK)
            st = modal__ipc_send(w->sock, MODAL__MSG_BATCH, meta, bundle->base, bundle->len, -1,
                                 &err);
        modal__buf_unref(bundle);
    }
    free(parts);
    free(metas);
    if (st != MODAL_OK)
        rt_log(3, "worker %d: %s", (int)w->pid, err.message); /* its death follows */
}

/* ---- output -------------------------------------------------------- */

/* Keep the last output for crash reports. */
static void keep_tail(rt_worker *w, const char *line, size_t len)
{
    size_t add = len + 1;
    if (add > sizeof w->tail - 1)
        add = sizeof w->tail - 1;
    if (w->tail_len + add > sizeof w->tail - 1) {
        size_t drop = w->tail_len + add - (sizeof w->tail - 1);
        memmove(w->tail, w->tail + drop, w->tail_len - drop);
        w->tail_len -= drop;
    }
    memcpy(w->tail + w->tail_len, line + (len + 1 - add), add - 1);
    w->tail[w->tail_len + add - 1] = '\n';
    w->tail_len += add;
    w->tail[w->tail_len] = '\0';
}

/* Lines for one call's output, gathered so the call is appended to (and
 * its waiters woken) once per message rather than once per line. */
typedef struct staging {
    rt_worker *worker; /* whose call it is */
    rt_call *call;
    char *buf;
    size_t len, cap;
} staging;

static void stage_commit(staging *st)
{
    if (st->call != NULL && st->len > 0) {
        ev->output(st->call, st->buf, st->len);
        /* A batch runs as one invocation: what it writes belongs to every
         * call of it (the worker tags it with the first). */
        if (st->worker != NULL && st->worker->batch)
            for (rt_call *x = st->worker->inflight; x != NULL; x = x->qnext)
                if (x != st->call)
                    ev->output(x, st->buf, st->len);
    }
    st->len = 0;
    st->call = NULL;
    st->worker = NULL;
}

/* The call of w that an id names, or NULL. */
static rt_call *inflight_call(rt_worker *w, const char *id)
{
    if (id[0] == '\0')
        return NULL;
    for (rt_call *c = w->inflight; c != NULL; c = c->qnext)
        if (strcmp(c->id, id) == 0)
            return c;
    return NULL;
}

/* One line (or a cut piece of one) from stream s of call id. */
static void emit_line(rt_worker *w, staging *st, const char *id, int s, const char *p,
                      size_t len, bool cut)
{
    rt_app_log(w->pool->spec->app, id[0] ? id : "-", w->pool->spec->fn, s, p, len, cut);
    keep_tail(w, p, len);
    rt_call *c = inflight_call(w, id);
    if (c == NULL)
        return;
    if (st->call != c)
        stage_commit(st);
    st->call = c;
    st->worker = w;
    size_t mark = cut ? sizeof CUT_MARK - 1 : 0;
    size_t need = st->len + 2 + len + mark + 1;
    char *nb = modal__reserve(st->buf, &st->cap, need, 4096);
    if (nb == NULL)
        return;
    st->buf = nb;
    char *o = st->buf + st->len;
    o[0] = s == 0 ? '1' : '2';
    o[1] = ' ';
    memcpy(o + 2, p, len);
    /* The call's output is served as text: a NUL would end it early. */
    for (char *z = memchr(o + 2, '\0', len); z != NULL; z = memchr(z, '\0', (size_t)(o + 2 + len - z)))
        *z = '?';
    memcpy(o + 2 + len, CUT_MARK, mark);
    o[2 + len + mark] = '\n';
    st->len = need;
}

static staging stage_buf; /* rt.mu guards it, like the calls */

/* The unfinished line of stream s ends here (its writer is done). */
static void end_line(rt_worker *w, int s)
{
    if (w->line_len[s] == 0)
        return;
    emit_line(w, &stage_buf, w->line_id[s], s, w->line[s], w->line_len[s], false);
    w->line_len[s] = 0;
}

/* Every unfinished line of w ends: its call is leaving w's list. */
static void end_lines(rt_worker *w)
{
    end_line(w, 0);
    end_line(w, 1);
    stage_commit(&stage_buf);
}

/* Where to cut len bytes of a long line so that no UTF-8 character is
 * split: before the last one when it does not end within them. */
static size_t utf8_cut(const char *p, size_t len)
{
    for (size_t back = 1; back <= 4 && back < len; back++) {
        unsigned char b = (unsigned char)p[len - back];
        if ((b & 0xC0) == 0x80)
            continue; /* inside a character: look for its first byte */
        size_t need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
        return need > back ? len - back : len;
    }
    return len;
}

/* Output bytes of stream s written by call id ("" for none). */
static void take_output(rt_worker *w, const char *id, int s, const char *p, size_t n)
{
    if (w->line_len[s] > 0 && strcmp(w->line_id[s], id) != 0)
        end_line(w, s); /* another writer: stdout and stderr lines never merge */
    snprintf(w->line_id[s], sizeof w->line_id[s], "%s", id);
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t seg = nl != NULL ? (size_t)(nl - p) : n;
        if (w->line_len[s] == 0 && nl != NULL && seg <= LINE_MAX_BYTES) {
            emit_line(w, &stage_buf, id, s, p, seg, false); /* a whole line: no copy */
        } else {
            size_t room = LINE_MAX_BYTES - w->line_len[s];
            size_t take = seg < room ? seg : room;
            char *nb = modal__reserve(w->line[s], &w->line_cap[s], w->line_len[s] + take + 1,
                                      1024);
            if (nb == NULL)
                return;
            w->line[s] = nb;
            memcpy(w->line[s] + w->line_len[s], p, take);
            w->line_len[s] += take;
            if (take < seg) { /* too long: this piece goes out marked */
                size_t cut = utf8_cut(w->line[s], w->line_len[s]);
                emit_line(w, &stage_buf, id, s, w->line[s], cut, true);
                memmove(w->line[s], w->line[s] + cut, w->line_len[s] - cut);
                w->line_len[s] -= cut;
                p += take;
                n -= take;
                continue;
            }
            if (nl != NULL) {
                emit_line(w, &stage_buf, id, s, w->line[s], w->line_len[s], false);
                w->line_len[s] = 0;
            }
        }
        if (nl == NULL)
            break;
        p += seg + 1;
        n -= seg + 1;
    }
    stage_commit(&stage_buf);
}

/* Read what the pipes hold: before HELLO (no call), or after the worker
 * died (the call it was running). A worker sends a chunk before it takes
 * it from the pipe; one that died in between left it there: the bytes it
 * sent beyond those it took are skipped here, as they arrived already. */
static void drain(rt_worker *w, const char *id, bool after_death)
{
    static char buf[MODAL__IPC_INLINE_MAX];
    int fds[2] = {w->out_fd, w->err_fd};
    for (int s = 0; s < 2; s++) {
        if (fds[s] < 0)
            continue;
        uint64_t taken = __atomic_load_n(&w->taken[s], __ATOMIC_ACQUIRE);
        uint64_t skip = after_death && w->received[s] > taken ? w->received[s] - taken : 0;
        ssize_t n;
        while ((n = read(fds[s], buf, sizeof buf)) > 0) {
            size_t k = skip < (uint64_t)n ? (size_t)skip : (size_t)n;
            skip -= k;
            take_output(w, id, s, buf + k, (size_t)n - k);
        }
    }
}

/* ---- the in-flight list ---------------------------------------------- */

/* Pop the head of w's in-flight list; the next call, if any, starts. */
static rt_call *pop_head(rt_worker *w)
{
    rt_call *c = w->inflight;
    if (c == NULL)
        return NULL;
    end_lines(w);
    w->inflight = c->qnext;
    if (w->inflight == NULL)
        w->inflight_tail = NULL;
    w->ninflight--;
    c->qnext = NULL;
    if (w->inflight != NULL) {
        if (!w->batch) { /* the calls of a batch started together */
            w->inflight->attempt++;
            w->inflight->started_at = rt_now();
        }
    } else {
        w->idle_since = rt_now();
        w->batch = false;
    }
    return c;
}

void rt_worker_cancel_sent(rt_call *c)
{
    for (rt_worker *w = rt.workers; w; w = w->next) {
        if (w->state == RT_W_DEAD || w->inflight == NULL || w->inflight == c)
            continue;
        for (rt_call *x = w->inflight->qnext; x != NULL; x = x->qnext)
            if (x == c) {
                char meta[96];
                snprintf(meta, sizeof meta, "{\"call_id\":\"%s\"}", c->id);
                /* A worker that cannot be told runs it; its result is
                 * dropped when it comes back (see its call_ended event). */
                modal__ipc_send(w->sock, MODAL__MSG_CANCEL, meta, NULL, 0, -1, NULL);
                return;
            }
    }
}

/* Stop w and its process group. A call at the head of its list ends with
 * st and msg (or a message made from why when msg is NULL); the calls
 * behind it never started. */
static void stop_worker(rt_worker *w, const char *why, modal_status st, const char *msg)
{
    if (w->state == RT_W_DEAD)
        return;
    rt_log(2, "stopping worker %d (%s): %s", (int)w->pid, w->pool->spec->fn, why);
    end_lines(w);
    rt_call *head = w->inflight, *rest = NULL;
    if (head != NULL) {
        rest = head->qnext;
        head->qnext = NULL;
        w->inflight = w->inflight_tail = NULL;
        w->ninflight = 0;
    }
    if (w->state == RT_W_STARTING)
        w->pool->nstarting--;
    w->state = RT_W_DEAD;
    /* The whole group: children it forked must not outlive it. */
    if (kill(-w->pid, SIGKILL) != 0)
        kill(w->pid, SIGKILL);
    if (head != NULL && w->batch) {
        /* Every call of a batch was running: each ends, none is given back. */
        w->batch = false;
        head->qnext = rest;
        for (rt_call *c = head, *next; c != NULL; c = next) {
            next = c->qnext;
            c->qnext = NULL;
            char own[400];
            if (st == MODAL_ETIMEOUT)
                snprintf(own, sizeof own, "%s: timed out after %d s in a batch (attempt %d of "
                         "%d); the worker was stopped", w->pool->spec->fn, w->pool->spec->timeout,
                         c->attempt, 1 + w->pool->spec->retry_policy.max_retries);
            else
                snprintf(own, sizeof own, "%s: the worker (pid %d) was stopped while running "
                         "the call's batch: %s", w->pool->spec->fn, (int)w->pid, why);
            ev->call_ended(w, c, st, st == MODAL_ETIMEOUT || msg == NULL ? own : msg, NULL, -1);
        }
        return;
    }
    if (head != NULL) {
        char dflt[400];
        snprintf(dflt, sizeof dflt, "%s: the worker (pid %d) was stopped while running the "
                 "call: %s", w->pool->spec->fn, (int)w->pid, why);
        ev->call_ended(w, head, st, msg != NULL ? msg : dflt, NULL, -1);
    }
    if (rest != NULL)
        ev->unstarted(w, rest);
}

void rt_worker_kill(rt_worker *w, const char *why)
{
    stop_worker(w, why, MODAL_ECRASH, NULL);
}

void rt_worker_retire(rt_worker *w)
{
    if (w->state != RT_W_READY)
        return;
    w->state = RT_W_EXITING;
    if (w->inflight == NULL)
        modal__ipc_send(w->sock, MODAL__MSG_EXIT, NULL, NULL, 0, -1, NULL);
}

rt_worker *rt_worker_running(const rt_call *c)
{
    if (c->state != RT_SENT)
        return NULL;
    for (rt_worker *w = rt.workers; w; w = w->next)
        if (w->inflight == c)
            return w;
    return NULL;
}

/* The worker broke the runtime protocol: its running call fails saying
 * so, and the worker is stopped. */
static void protocol_error(rt_worker *w, const char *what)
{
    if (w->state == RT_W_DEAD)
        return;
    rt_pool *p = w->pool;
    char msg[1024];
    if (w->state == RT_W_STARTING) {
        snprintf(msg, sizeof msg, "executable %.12s cannot serve as a worker for %s: it broke "
                 "the runtime protocol: %s", p->spec->artifact, p->spec->fn, what);
        rt_log(3, "%s", msg);
        stop_worker(w, "it broke the runtime protocol", MODAL_ECRASH, NULL);
        ev->start_failed(p, MODAL_EWORKER, msg, true);
        return;
    }
    rt_call *c = w->inflight;
    char attempt[48] = "";
    if (c != NULL)
        snprintf(attempt, sizeof attempt, " (attempt %d of %d)", c->attempt,
                 1 + p->spec->retry_policy.max_retries);
    snprintf(msg, sizeof msg, "%s: the worker (pid %d) broke the runtime protocol: %s%s; the "
             "worker was stopped", p->spec->fn, (int)w->pid, what, attempt);
    rt_log(3, "%s", msg);
    stop_worker(w, "it broke the runtime protocol", MODAL_ECRASH, msg);
}

/* The last few lines of output, indented, for an error message. */
static void last_lines(const rt_worker *w, char *out, size_t outsz, int nlines)
{
    const char *end = w->tail + w->tail_len, *p = end;
    int seen = 0;
    while (p > w->tail && seen <= nlines) {
        p--;
        if (*p == '\n' && p != end - 1)
            seen++;
    }
    if (seen > nlines)
        p++;
    snprintf(out, outsz, "%s", p);
    size_t n = strlen(out);
    if (n > 0 && out[n - 1] == '\n')
        out[n - 1] = '\0';
}

static void describe_exit(int status, char *out, size_t outsz)
{
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char *abbrev = sigabbrev_np(sig);
        snprintf(out, outsz, "was killed by signal %d (SIG%s: %s)", sig,
                 abbrev ? abbrev : "?", strsignal(sig));
    } else if (WIFEXITED(status)) {
        snprintf(out, outsz, "exited with status %d", WEXITSTATUS(status));
    } else {
        snprintf(out, outsz, "stopped");
    }
}

static void worker_remove(rt_worker *w)
{
    for (rt_worker **pp = &rt.workers; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    close(w->sock);
    if (w->pidfd >= 0)
        close(w->pidfd);
    if (w->out_fd >= 0)
        close(w->out_fd);
    if (w->err_fd >= 0)
        close(w->err_fd);
    free(w->line[0]);
    free(w->line[1]);
    munmap(w->taken, MODAL__OUTPUT_TAKEN_SIZE);
    w->pool->nworkers--;
    rt.running_workers--;
    ev->gone(w);
    free(w);
}

static int handle_message(rt_worker *w, int dontwait);

/* The worker's process exited (its pidfd is readable; with no pidfd,
 * waitid() says so). Reap it and settle what it was doing. Returns false
 * when it cannot be reaped yet. */
static bool worker_died(rt_worker *w)
{
    /* Its children go with it: the group is killed while the leader is
     * still unreaped, so the id cannot have been reused. */
    kill(-w->pid, SIGKILL);
    int status = 0;
    pid_t r = waitpid(w->pid, &status, w->pidfd >= 0 ? WNOHANG : 0);
    if (r == 0)
        return false; /* the pidfd fires again */
    /* What it sent before it died comes first (output, a result): the
     * loop takes only so many messages per turn. It takes no new call. */
    if (w->state == RT_W_READY || w->state == RT_W_EXITING) {
        w->state = RT_W_EXITING;
        while (!w->sock_closed && handle_message(w, 1) == 0)
            ;
    }
    rt_call *c = w->inflight;
    if (w->state != RT_W_STARTING && WIFEXITED(status) &&
        WEXITSTATUS(status) == MODAL__WORKER_EXIT_GPU_LOST) {
        /* It answered the call that broke its GPU and started none since:
         * a fresh worker takes them. */
        rt_log(2, "worker %d (%s) exited: its GPU cannot be used after a sticky CUDA error",
               (int)w->pid, w->pool->spec->fn);
        w->inflight = w->inflight_tail = NULL;
        w->ninflight = 0;
        if (c != NULL)
            ev->unstarted(w, c);
        c = NULL;
    }
    /* What it wrote last and could not send belongs to its running call. */
    drain(w, c != NULL && w->state != RT_W_DEAD ? c->id : "", true);
    end_lines(w);
    char how[128], tail[1024];
    describe_exit(status, how, sizeof how);
    last_lines(w, tail, sizeof tail, 6);
    rt_pool *p = w->pool;
    if (w->state == RT_W_STARTING) {
        p->nstarting--;
        char msg[2048];
        snprintf(msg, sizeof msg,
                 "executable %.12s cannot serve as a worker for %s: it %s before answering "
                 "as a libmodal worker%s%s", p->spec->artifact, p->spec->fn, how,
                 tail[0] ? ". Its last output:\n" : " (is it linked with libmodal, and does its "
                 "main() use MODAL_LOCAL_ENTRYPOINT or call modal_worker_serve_if_worker()?)",
                 tail);
        rt_log(3, "%s", msg);
        ev->start_failed(p, MODAL_EWORKER, msg, true);
    } else if ((w->state == RT_W_READY || w->state == RT_W_EXITING) && c != NULL) {
        /* A retiring worker may still hold calls; they are settled too. */
        rt_call *rest = c->qnext;
        c->qnext = NULL;
        w->inflight = w->inflight_tail = NULL;
        w->ninflight = 0;
        if (w->batch) {
            /* Every call of a batch was running: each is charged the crash
             * (and retried by its own policy). */
            w->batch = false;
            c->qnext = rest;
            for (rt_call *x = c, *next; x != NULL; x = next) {
                next = x->qnext;
                x->qnext = NULL;
                char msg[2048];
                snprintf(msg, sizeof msg, "%s: the worker (pid %d) crashed: it %s during attempt "
                         "%d of %d, running a batch of calls%s%s", p->spec->fn, (int)w->pid, how,
                         x->attempt, 1 + p->spec->retry_policy.max_retries,
                         tail[0] ? ". Its last output:\n" : "", tail);
                if (x == c)
                    rt_log(3, "%s", msg);
                ev->call_ended(w, x, MODAL_ECRASH, msg, NULL, -1);
            }
            worker_remove(w);
            return true;
        }
        char msg[2048];
        snprintf(msg, sizeof msg, "%s: the worker (pid %d) crashed: it %s during attempt %d of "
                 "%d%s%s", p->spec->fn, (int)w->pid, how, c->attempt, 1 + p->spec->retry_policy.max_retries,
                 tail[0] ? ". Its last output:\n" : "", tail);
        rt_log(3, "%s", msg);
        ev->call_ended(w, c, MODAL_ECRASH, msg, NULL, -1);
        if (rest != NULL)
            ev->unstarted(w, rest);
    }
    worker_remove(w);
    return true;
}

void rt_pool_start_failed(rt_pool *p, modal_status code, const char *msg)
{
    ev->start_refused(p, code, msg);
}

void rt_pool_can_start(rt_pool *p)
{
    ev->can_start(p);
}

static void handle_hello(rt_worker *w, cJSON *meta)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(meta, "error");
    rt_pool *p = w->pool;
    p->nstarting--;
    if (cJSON_IsString(e)) {
        /* The worker exits after saying why; its death is then quiet. */
        w->state = RT_W_EXITING;
        const cJSON *jc = cJSON_GetObjectItemCaseSensitive(meta, "code");
        modal_status code = cJSON_IsString(jc) ? modal__status_from_name(jc->valuestring)
                                               : MODAL_EFUNC;
        if (code != MODAL_EFUNC) {
            char msg[900];
            snprintf(msg, sizeof msg, "executable %.12s: %s", p->spec->artifact, e->valuestring);
            rt_pool_start_failed(p, code, msg);
        } else {
            rt_pool_start_failed(p, code, e->valuestring);
        }
        return;
    }
    w->state = RT_W_READY;
    w->idle_since = rt_now();
    rt_log(1, "worker %d for %s is ready after %.1f ms", (int)w->pid, p->spec->fn,
           (rt_now() - w->started_at) * 1e3);
    ev->ready(w);
}

static void handle_result(rt_worker *w, cJSON *meta, modal__buf *payload, int fd)
{
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(meta, "status");
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(meta, "call_id");
    rt_call *c = w->inflight;
    if (c == NULL || !cJSON_IsString(jid) || strcmp(jid->valuestring, c->id) != 0) {
        modal__buf_unref(payload);
        if (fd >= 0)
            close(fd);
        char what[200];
        snprintf(what, sizeof what, "it answered call %.60s while running %s",
                 cJSON_IsString(jid) ? jid->valuestring : "(no call id)",
                 c != NULL ? c->id : "none");
        protocol_error(w, what);
        return;
    }
    pop_head(w);
    w->served++;
    /* The call ran from started_at until now; the scheduler sizes each
     * worker's pipeline by the pool's recent mean (rt_pipeline_depth). */
    double ran = rt_now() - c->started_at;
    rt_pool *cp = w->pool;
    cp->call_s = cp->call_s > 0 ? cp->call_s + (ran - cp->call_s) / 8 : ran;
    if (payload == NULL)
        ev->call_ended(w, c, MODAL_ERUNTIME, "the worker sent an empty result", NULL, fd);
    else
        ev->call_ended(w, c, cJSON_IsString(js) ? modal__status_from_name(js->valuestring)
                                                : MODAL_ERUNTIME, NULL, payload, fd);
    rt_pool *p = w->pool;
    if (p->spec->max_inputs > 0 && w->served >= p->spec->max_inputs && w->state == RT_W_READY) {
        w->state = RT_W_EXITING; /* retire it once its sent calls are back */
    }
    if (w->state == RT_W_EXITING && w->inflight == NULL)
        modal__ipc_send(w->sock, MODAL__MSG_EXIT, NULL, NULL, 0, -1, NULL);
    ev->idle(w);
}

static void handle_log(rt_worker *w, cJSON *meta, modal__buf *payload)
{
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(meta, "call_id");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(meta, "stream");
    if (!cJSON_IsString(jid) || strlen(jid->valuestring) >= sizeof w->line_id[0]) {
        protocol_error(w, "it sent output without a call id (a string of at most 47 bytes)");
        return;
    }
    if (!cJSON_IsNumber(js) || (js->valuedouble != 1 && js->valuedouble != 2)) {
        char *shown = js != NULL ? cJSON_PrintUnformatted(js) : NULL;
        char what[160];
        snprintf(what, sizeof what, "it sent output for stream %.40s, not 1 (stdout) or 2 (stderr)",
                 shown != NULL ? shown : "(none)");
        cJSON_free(shown);
        protocol_error(w, what);
        return;
    }
    if (payload == NULL)
        return;
    int s = js->valueint - 1;
    w->received[s] += payload->len;
    take_output(w, jid->valuestring, s, (const char *)payload->base, payload->len);
}

/* The socket closed while the process may live on. */
static void socket_closed(rt_worker *w)
{
    w->sock_closed = true;
    w->sock_closed_at = rt_now();
}

/* Handle one message; returns 0 when another may be read at once. With
 * dontwait, returns 1 when no message is queued. */
static int handle_message(rt_worker *w, int dontwait)
{
    uint32_t type;
    cJSON *meta;
    modal__buf *payload;
    modal_error err;
    int fd;
    modal_status rs = modal__ipc_recv_flags(w->sock, dontwait ? MSG_DONTWAIT : 0, &type, &meta,
                                            &payload, &fd, &err);
    if (rs == MODAL_EPENDING)
        return 1;
    if (rs == MODAL_EIO && strstr(err.message, "closed") != NULL) {
        socket_closed(w);
        return 1;
    }
    if (rs != MODAL_OK) {
        protocol_error(w, err.message);
        return 1;
    }
    if (type == MODAL__MSG_LOG) {
        handle_log(w, meta, payload);
        modal__buf_unref(payload);
    } else if (type == MODAL__MSG_RESULT && w->state != RT_W_STARTING) {
        handle_result(w, meta, payload, fd);
        fd = -1;
    } else if (type == MODAL__MSG_HELLO && w->state == RT_W_STARTING) {
        /* What it wrote before is read now, so it stays before the calls'. */
        drain(w, "", false);
        end_lines(w);
        handle_hello(w, meta);
        modal__buf_unref(payload);
    } else {
        modal__buf_unref(payload);
        char what[120];
        snprintf(what, sizeof what, "it sent an unexpected message (type %u)", type);
        protocol_error(w, what);
    }
    if (fd >= 0)
        close(fd);
    cJSON_Delete(meta);
    return w->state == RT_W_DEAD;
}

static void check_timers(double now)
{
    for (rt_worker *w = rt.workers; w; w = w->next) {
        rt_pool *p = w->pool;
        if (w->sock_closed && w->state != RT_W_DEAD && now - w->sock_closed_at > SOCK_CLOSE_GRACE) {
            protocol_error(w, "it closed its runtime socket (fd 3) and kept running");
        } else if (w->state == RT_W_STARTING && now - w->started_at > HELLO_TIMEOUT) {
            char msg[600];
            snprintf(msg, sizeof msg,
                     "executable %.12s cannot serve as a worker for %s: it did not answer as a "
                     "libmodal worker within %.0f s (is it linked with libmodal, and does its "
                     "main() use MODAL_LOCAL_ENTRYPOINT or call modal_worker_serve_if_worker()?)",
                     p->spec->artifact, p->spec->fn, HELLO_TIMEOUT);
            rt_worker_kill(w, "no HELLO");
            ev->start_failed(p, MODAL_EWORKER, msg, true);
        } else if ((w->state == RT_W_READY || w->state == RT_W_EXITING) && w->inflight != NULL &&
                   now - w->inflight->started_at >= p->spec->timeout) {
            rt_call *c = w->inflight;
            char msg[300];
            snprintf(msg, sizeof msg, "%s: timed out after %d s (attempt %d of %d); the worker "
                     "was stopped", p->spec->fn, p->spec->timeout, c->attempt, 1 + p->spec->retry_policy.max_retries);
            stop_worker(w, "timeout", MODAL_ETIMEOUT, msg);
        } else if (w->state == RT_W_READY && w->inflight == NULL &&
                   now - w->idle_since > p->spec->scaledown_window &&
                   p->nworkers > p->spec->min_containers && rt_queue_length(p) == 0) {
            /* Queued calls of its pool wait for their batch to fill. */
            rt_worker_retire(w);
        } else if (w->state == RT_W_EXITING && w->inflight == NULL) {
            if (w->exiting_since == 0)
                w->exiting_since = now;
            else if (now - w->exiting_since > EXIT_GRACE) {
                char why[120];
                snprintf(why, sizeof why, "it was asked to exit %.0f s ago and did not (does "
                         "its exit hook hang?)", EXIT_GRACE);
                rt_worker_kill(w, why);
            }
        }
    }
}

void rt_workers_shutdown(void)
{
    for (rt_worker *w = rt.workers; w; w = w->next) {
        if (w->state == RT_W_READY && w->inflight == NULL) {
            w->state = RT_W_EXITING;
            modal__ipc_send(w->sock, MODAL__MSG_EXIT, NULL, NULL, 0, -1, NULL);
        } else if (w->state != RT_W_DEAD && w->state != RT_W_EXITING) {
            rt_worker_kill(w, "the runtime is shutting down");
        }
    }
    rt_templates_shutdown();
}

/* What a poll slot watches. */
enum { SLOT_WAKE, SLOT_SOCK, SLOT_PIDFD, SLOT_PIPE };

void *rt_loop(void *arg)
{
    struct pollfd *fds = NULL;
    rt_worker **owner = NULL;
    int *kind = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&rt.mu);
    for (;;) {
        if (rt.stopping && rt.workers == NULL)
            break;
        size_t need = 1 + 4 * (size_t)rt.running_workers + 4 + 3 * rt_template_count();
        if (need > cap) {
            cap = need * 2;
            fds = realloc(fds, cap * sizeof *fds);
            owner = realloc(owner, cap * sizeof *owner);
            kind = realloc(kind, cap * sizeof *kind);
            if (fds == NULL || owner == NULL || kind == NULL)
                abort(); /* the daemon may abort on out-of-memory */
        }
        size_t n = 0;
#define SLOT(f, w_, k)                                                  \
    do {                                                                \
        fds[n] = (struct pollfd){.fd = (f), .events = POLLIN};         \
        owner[n] = (w_);                                                \
        kind[n++] = (k);                                                \
    } while (0)
        SLOT(rt.wake_fd, NULL, SLOT_WAKE);
        for (rt_worker *w = rt.workers; w; w = w->next) {
            if (w->state != RT_W_DEAD && !w->sock_closed)
                SLOT(w->sock, w, SLOT_SOCK);
            if (w->pidfd >= 0)
                SLOT(w->pidfd, w, SLOT_PIDFD);
            /* Until HELLO the worker's own capture may not run yet. */
            if (w->state == RT_W_STARTING) {
                if (w->out_fd >= 0)
                    SLOT(w->out_fd, w, SLOT_PIPE);
                if (w->err_fd >= 0)
                    SLOT(w->err_fd, w, SLOT_PIPE);
            }
        }
#undef SLOT
        size_t tslots = n;
        n += rt_template_slots(fds + n, cap - n);
        double now = rt_now();
        double next = ev->next_timer(now);
        for (rt_worker *w = rt.workers; w; w = w->next)
            if (w->sock_closed && w->state != RT_W_DEAD && w->sock_closed_at + SOCK_CLOSE_GRACE < next)
                next = w->sock_closed_at + SOCK_CLOSE_GRACE + 0.001;
        int ms = next <= now ? 0 : (int)((next - now) * 1000) + 1;
        /* Output lines go to the app logs outside the lock. */
        rt_app_log_take();
        pthread_mutex_unlock(&rt.mu);
        /* The requests resumed meanwhile find rt.mu free. They are woken
         * before the app log is written, as they were when woken under
         * the lock, so no answer waits for that file write. */
        loop_unlocked();
        rt_app_log_write();
        poll(fds, n, ms);
        pthread_mutex_lock(&rt.mu);
        loop_locked();
        if (fds[0].revents & POLLIN) {
            uint64_t v;
            if (read(rt.wake_fd, &v, sizeof v) < 0) {
                /* EAGAIN: another wake-up already drained it. */
            }
        }
        /* A worker may be freed while handling a slot, so each is looked
         * up again. */
        for (size_t i = 1; i < tslots; i++) {
            if (!fds[i].revents)
                continue;
            rt_worker *w = rt.workers;
            while (w != NULL && w != owner[i])
                w = w->next;
            if (w == NULL)
                continue;
            if (kind[i] == SLOT_PIPE) {
                if (w->state == RT_W_STARTING)
                    drain(w, "", false);
            } else if (kind[i] == SLOT_PIDFD) {
                worker_died(w);
            } else if (fds[i].revents & POLLIN) {
                /* Messages queue up (output, results of calls sent
                 * ahead): take them all now rather than one per poll. */
                int k = 0;
                while (handle_message(w, k > 0) == 0 && ++k < 64) {
                    rt_worker *x = rt.workers;
                    while (x != NULL && x != w)
                        x = x->next;
                    if (x == NULL || w->sock_closed)
                        break;
                }
            } else if (fds[i].revents & (POLLHUP | POLLERR)) {
                socket_closed(w);
            }
        }
        /* Without a pidfd, a worker's death is learned by asking: its
         * socket may be held open by a child it forked. */
        for (rt_worker *w = rt.workers, *wnext; w != NULL; w = wnext) {
            wnext = w->next;
            siginfo_t si = {0};
            if (w->pidfd < 0 &&
                waitid(P_PID, (id_t)w->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == w->pid)
                worker_died(w);
        }
        now = rt_now();
        rt_template_events(fds + tslots, n - tslots, now);
        check_timers(now);
        ev->tick(now);
    }
    rt_app_log_take();
    pthread_mutex_unlock(&rt.mu);
    loop_unlocked();
    rt_app_log_write();
    free(fds);
    free(owner);
    free(kind);
    return arg;
}
