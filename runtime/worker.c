/*
 * worker.c: worker processes. A worker is the uploaded executable started
 * in worker mode with a SOCK_SEQPACKET socket on fd 3 and its stdout and
 * stderr piped here. One event-loop thread polls every worker: it reads
 * HELLO and RESULT messages, captures output per call, enforces timeouts
 * and reaps workers that exit or crash.
 */
#include "rt.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define HELLO_TIMEOUT 10.0

void rt_wake(void)
{
    uint64_t one = 1;
    if (write(rt.wake_fd, &one, sizeof one) < 0) {
        /* The counter is saturated only if the loop is far behind; it
         * wakes anyway. */
    }
}

/* The worker's environment: the runtime's, minus client settings, plus
 * the worker variables; fnvar is "MODAL_WORKER_FUNCTION=<fn>". Free the
 * array only: its strings are borrowed. */
static char **worker_env(char *fnvar)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 3, sizeof *env);
    if (env == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "MODAL_", 6) != 0)
            env[k++] = environ[i];
    env[k++] = "MODAL_WORKER_FD=3";
    env[k++] = fnvar;
    return env;
}

static void pool_break(rt_pool *p, modal_status st, const char *msg);

int rt_worker_spawn(rt_pool *p)
{
    if (rt.stopping)
        return -1; /* no new workers while shutting down */
    char path[600];
    rt_artifact_path(p->artifact, path, sizeof path);
    int sv[2], outp[2], errp[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return -1;
    if (pipe2(outp, O_CLOEXEC) != 0) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (pipe2(errp, O_CLOEXEC) != 0) {
        close(sv[0]);
        close(sv[1]);
        close(outp[0]);
        close(outp[1]);
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
    posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&at, 0);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    char fnvar[160];
    snprintf(fnvar, sizeof fnvar, "MODAL_WORKER_FUNCTION=%s", p->fn);
    char **env = worker_env(fnvar);
    char *argv[] = {path, NULL};
    pid_t pid = -1;
    int rc = env != NULL ? posix_spawn(&pid, path, &fa, &at, argv, env) : ENOMEM;
    free(env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(sv[1]);
    close(outp[1]);
    close(errp[1]);
    if (rc != 0) {
        close(sv[0]);
        close(outp[0]);
        close(errp[0]);
        char msg[900];
        snprintf(msg, sizeof msg, "cannot start a worker for %s from %s: %s", p->fn, path,
                 strerror(rc));
        rt_log(3, "%s", msg);
        /* Calls waiting for this worker would wait forever: fail them, as
         * for a worker that dies before it answers. */
        if (p->nworkers == 0 && p->nstarting == 0)
            pool_break(p, MODAL_EWORKER, msg);
        return -1;
    }
    rt_worker *w = calloc(1, sizeof *w);
    if (w == NULL) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(sv[0]);
        close(outp[0]);
        close(errp[0]);
        return -1;
    }
    fcntl(outp[0], F_SETFL, O_NONBLOCK);
    fcntl(errp[0], F_SETFL, O_NONBLOCK);
    w->pool = p;
    w->pid = pid;
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
    rt_log(1, "started worker %d for %s (%.12s)", (int)pid, p->fn, p->artifact);
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

void rt_worker_send(rt_worker *w, rt_call **calls, size_t n)
{
    char metas[MODAL__IPC_META_MAX];
    size_t used = 0;
    modal__bundle_part parts[64];
    for (size_t i = 0; i < n; i++) {
        rt_call *c = calls[i];
        bool head = w->inflight == NULL;
        c->qnext = NULL;
        if (w->inflight_tail)
            w->inflight_tail->qnext = c;
        else
            w->inflight = c;
        w->inflight_tail = c;
        w->ninflight++;
        c->state = RT_SENT;
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

/* Pop the head of w's in-flight list; the next call, if any, starts. */
static rt_call *pop_head(rt_worker *w)
{
    rt_call *c = w->inflight;
    if (c == NULL)
        return NULL;
    w->inflight = c->qnext;
    if (w->inflight == NULL)
        w->inflight_tail = NULL;
    w->ninflight--;
    c->qnext = NULL;
    if (w->inflight != NULL) {
        w->inflight->attempt++;
        w->inflight->started_at = rt_now();
    } else {
        w->idle_since = rt_now();
    }
    return c;
}

void rt_worker_drop_head(rt_worker *w)
{
    rt_call *c = w->inflight;
    if (c == NULL)
        return;
    w->inflight = c->qnext;
    if (w->inflight == NULL)
        w->inflight_tail = NULL;
    w->ninflight--;
    c->qnext = NULL;
}

void rt_worker_kill(rt_worker *w, const char *why)
{
    if (w->state == RT_W_DEAD)
        return;
    rt_log(2, "stopping worker %d (%s): %s", (int)w->pid, w->pool->fn, why);
    /* A call still at the head was running: that attempt fails (a caller
     * that settled it differently took it off first with
     * rt_worker_drop_head). The calls behind it never started. */
    rt_call *head = w->inflight;
    if (head != NULL) {
        rt_call *rest = head->qnext;
        head->qnext = NULL;
        w->inflight = w->inflight_tail = NULL;
        w->ninflight = 0;
        if (head->orphan || head->cancelled) {
            rt_call_release(head);
        } else {
            char msg[400];
            snprintf(msg, sizeof msg, "%s: the worker (pid %d) was stopped while running the "
                     "call: %s", w->pool->fn, (int)w->pid, why);
            rt_call_attempt_failed(head, MODAL_ECRASH, msg);
        }
        rt_requeue_unstarted(w->pool, rest);
    }
    if (w->state == RT_W_STARTING)
        w->pool->nstarting--;
    w->state = RT_W_DEAD;
    kill(w->pid, SIGKILL);
    rt_dispatch(w->pool);
}

/* Split output into lines for the app log and the crash-report tail. */
static void take_output(rt_worker *w, int stream, const char *p, size_t n)
{
    rt_call *c = w->inflight;
    if (c != NULL && !c->cancelled)
        rt_call_append_log(c, p, n);
    for (size_t i = 0; i < n; i++) {
        size_t *len = &w->outlen[stream];
        char *buf = w->outbuf[stream];
        if (p[i] != '\n' && *len < sizeof w->outbuf[0] - 1) {
            buf[(*len)++] = p[i];
            continue;
        }
        if (p[i] != '\n')
            continue;
        rt_app_log(w->pool->app, c ? c->id : "-", w->pool->fn, stream, buf, *len);
        /* Keep the last lines for crash reports. */
        size_t add = *len + 1;
        if (add > sizeof w->tail - 1)
            add = sizeof w->tail - 1;
        if (w->tail_len + add > sizeof w->tail - 1) {
            size_t drop = w->tail_len + add - (sizeof w->tail - 1);
            memmove(w->tail, w->tail + drop, w->tail_len - drop);
            w->tail_len -= drop;
        }
        memcpy(w->tail + w->tail_len, buf + (*len + 1 - add), add - 1);
        w->tail[w->tail_len + add - 1] = '\n';
        w->tail_len += add;
        w->tail[w->tail_len] = '\0';
        *len = 0;
    }
}

static void drain(rt_worker *w)
{
    char buf[65536];
    int fds[2] = {w->out_fd, w->err_fd};
    for (int s = 0; s < 2; s++) {
        if (fds[s] < 0)
            continue;
        ssize_t n;
        while ((n = read(fds[s], buf, sizeof buf)) > 0)
            take_output(w, s, buf, (size_t)n);
    }
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
    if (w->out_fd >= 0)
        close(w->out_fd);
    if (w->err_fd >= 0)
        close(w->err_fd);
    w->pool->nworkers--;
    rt.running_workers--;
    free(w);
}

/* Fail every queued call of a pool whose executable cannot be a worker. */
static void pool_break(rt_pool *p, modal_status st, const char *msg)
{
    p->broken = true;
    while (p->qhead) {
        rt_call *c = p->qhead;
        p->qhead = c->qnext;
        p->queued--;
        c->qnext = NULL;
        rt_call_complete(c, st, rt_error_frame(c, st, msg));
    }
    p->qtail = NULL;
}

/* The worker's socket closed: reap it and settle what it was doing. */
static void worker_died(rt_worker *w)
{
    drain(w);
    int status = 0;
    pid_t r;
    /* The socket closes as the process exits; give it a moment to finish
     * so the real exit status is reported, then make sure it is gone. */
    for (int i = 0; i < 100 && (r = waitpid(w->pid, &status, WNOHANG)) == 0; i++)
        usleep(2000);
    if (r == 0) {
        kill(w->pid, SIGKILL);
        waitpid(w->pid, &status, 0);
    }
    char how[128], tail[1024];
    describe_exit(status, how, sizeof how);
    last_lines(w, tail, sizeof tail, 6);
    rt_pool *p = w->pool;
    if (w->state == RT_W_STARTING) {
        p->nstarting--;
        char msg[2048];
        snprintf(msg, sizeof msg,
                 "executable %.12s cannot serve as a worker for %s: it %s before answering "
                 "as a libmodal worker%s%s", p->artifact, p->fn, how,
                 tail[0] ? ". Its last output:\n" : " (is it linked with libmodal, and does its "
                 "main() use MODAL_LOCAL_ENTRYPOINT or call modal_worker_serve_if_worker()?)",
                 tail);
        rt_log(3, "%s", msg);
        pool_break(p, MODAL_EWORKER, msg);
    } else if ((w->state == RT_W_READY || w->state == RT_W_EXITING) && w->inflight != NULL) {
        /* A retiring worker may still hold calls; they are settled too. */
        rt_call *c = w->inflight;
        rt_call *rest = c->qnext;
        c->qnext = NULL;
        w->inflight = w->inflight_tail = NULL;
        w->ninflight = 0;
        char msg[2048];
        snprintf(msg, sizeof msg, "%s: the worker (pid %d) crashed: it %s during attempt %d of "
                 "%d%s%s", p->fn, (int)w->pid, how, c->attempt, 1 + p->pol.max_retries,
                 tail[0] ? ". Its last output:\n" : "", tail);
        rt_log(3, "%s", msg);
        if (c->orphan)
            rt_call_release(c);
        else if (c->cancelled)
            rt_call_release(c);
        else
            rt_call_attempt_failed(c, MODAL_ECRASH, msg);
        rt_requeue_unstarted(p, rest);
    }
    worker_remove(w);
    rt_dispatch(p);
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
            /* Unknown function, invalid options: every start would fail. */
            char msg[900];
            snprintf(msg, sizeof msg, "executable %.12s: %s", p->artifact, e->valuestring);
            pool_break(p, code, msg);
        } else if (p->qhead != NULL) {
            /* A failed enter hook fails the attempt it was started for. */
            rt_call *c = p->qhead;
            p->qhead = c->qnext;
            if (p->qhead == NULL)
                p->qtail = NULL;
            p->queued--;
            c->attempt++;
            rt_call_attempt_failed(c, MODAL_EFUNC, e->valuestring);
        }
        return;
    }
    w->state = RT_W_READY;
    w->idle_since = rt_now();
    rt_log(1, "worker %d for %s is ready after %.1f ms", (int)w->pid, p->fn,
           (rt_now() - w->started_at) * 1e3);
    rt_dispatch(p);
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
        rt_worker_kill(w, "it answered a call it was not running");
        return;
    }
    pop_head(w);
    w->served++;
    if (c->orphan || c->cancelled) {
        modal__buf_unref(payload);
        if (fd >= 0)
            close(fd);
        rt_call_release(c);
    } else {
        modal_status st = cJSON_IsString(js) ? modal__status_from_name(js->valuestring)
                                             : MODAL_ERUNTIME;
        if (payload == NULL)
            rt_call_attempt_failed(c, MODAL_ERUNTIME, "the worker sent an empty result");
        else
            rt_call_result(c, st, payload, fd);
    }
    rt_pool *p = w->pool;
    if (p->pol.max_inputs > 0 && w->served >= p->pol.max_inputs && w->state == RT_W_READY) {
        w->state = RT_W_EXITING; /* retire it once its sent calls are back */
    }
    if (w->state == RT_W_EXITING && w->inflight == NULL)
        modal__ipc_send(w->sock, MODAL__MSG_EXIT, NULL, NULL, 0, -1, NULL);
    rt_dispatch(p);
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
    if (rs != MODAL_OK) {
        worker_died(w);
        return 1;
    }
    /* Output written before the message belongs to its call. The poll set
     * lists a worker's socket before its pipes, so output written before
     * the first message was seen in the same poll and read already, unless
     * it filled the read buffer; later messages of this round need a look. */
    if (dontwait || w->more_output)
        drain(w);
    w->more_output = false;
    if (type == MODAL__MSG_RESULT && w->state != RT_W_STARTING) {
        handle_result(w, meta, payload, fd);
        fd = -1;
    } else if (type == MODAL__MSG_HELLO && w->state == RT_W_STARTING) {
        handle_hello(w, meta);
        modal__buf_unref(payload);
    } else {
        modal__buf_unref(payload);
        rt_worker_kill(w, "it sent an unexpected message");
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
        if (w->state == RT_W_STARTING && now - w->started_at > HELLO_TIMEOUT) {
            char msg[600];
            snprintf(msg, sizeof msg,
                     "executable %.12s cannot serve as a worker for %s: it did not answer as a "
                     "libmodal worker within %.0f s (is it linked with libmodal, and does its "
                     "main() use MODAL_LOCAL_ENTRYPOINT or call modal_worker_serve_if_worker()?)",
                     p->artifact, p->fn, HELLO_TIMEOUT);
            rt_worker_kill(w, "no HELLO");
            pool_break(p, MODAL_EWORKER, msg);
        } else if ((w->state == RT_W_READY || w->state == RT_W_EXITING) && w->inflight != NULL &&
                   now - w->inflight->started_at >= p->pol.timeout) {
            rt_call *c = w->inflight;
            char msg[300];
            snprintf(msg, sizeof msg, "%s: timed out after %d s (attempt %d of %d); the worker "
                     "was stopped", p->fn, p->pol.timeout, c->attempt, 1 + p->pol.max_retries);
            rt_worker_drop_head(w);
            if (c->orphan || c->cancelled)
                rt_call_release(c);
            else
                rt_call_attempt_failed(c, MODAL_ETIMEOUT, msg);
            rt_worker_kill(w, "timeout");
        } else if (w->state == RT_W_READY && w->inflight == NULL &&
                   now - w->idle_since > p->pol.scaledown_window &&
                   p->nworkers > p->pol.min_containers) {
            w->state = RT_W_EXITING;
            modal__ipc_send(w->sock, MODAL__MSG_EXIT, NULL, NULL, 0, -1, NULL);
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
}

void *rt_loop(void *arg)
{
    struct pollfd *fds = NULL;
    rt_worker **owner = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&rt.mu);
    for (;;) {
        if (rt.stopping && rt.workers == NULL)
            break;
        size_t need = 1 + 3 * (size_t)rt.running_workers + 3;
        if (need > cap) {
            cap = need * 2;
            fds = realloc(fds, cap * sizeof *fds);
            owner = realloc(owner, cap * sizeof *owner);
            if (fds == NULL || owner == NULL)
                abort(); /* the daemon may abort on out-of-memory */
        }
        size_t n = 0;
        fds[n] = (struct pollfd){.fd = rt.wake_fd, .events = POLLIN};
        owner[n++] = NULL;
        for (rt_worker *w = rt.workers; w; w = w->next) {
            fds[n] = (struct pollfd){.fd = w->sock, .events = POLLIN};
            owner[n++] = w;
            if (w->out_fd >= 0) {
                fds[n] = (struct pollfd){.fd = w->out_fd, .events = POLLIN};
                owner[n++] = w;
            }
            if (w->err_fd >= 0) {
                fds[n] = (struct pollfd){.fd = w->err_fd, .events = POLLIN};
                owner[n++] = w;
            }
        }
        double now = rt_now();
        double next = rt_next_timer(now);
        int ms = next <= now ? 0 : (int)((next - now) * 1000) + 1;
        pthread_mutex_unlock(&rt.mu);
        poll(fds, n, ms);
        pthread_mutex_lock(&rt.mu);
        if (fds[0].revents & POLLIN) {
            uint64_t v;
            if (read(rt.wake_fd, &v, sizeof v) < 0) {
                /* EAGAIN: another wake-up already drained it. */
            }
        }
        /* Output first, so a RESULT finds its call's output captured. */
        for (size_t i = 1; i < n; i++) {
            rt_worker *w = owner[i];
            if (!fds[i].revents || fds[i].fd == w->sock)
                continue;
            char buf[65536];
            ssize_t r = read(fds[i].fd, buf, sizeof buf);
            int stream = fds[i].fd == w->out_fd ? 0 : 1;
            if (r > 0) {
                take_output(w, stream, buf, (size_t)r);
                if ((size_t)r == sizeof buf)
                    w->more_output = true;
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                close(fds[i].fd);
                if (stream == 0)
                    w->out_fd = -1;
                else
                    w->err_fd = -1;
            }
        }
        /* Then messages and deaths; a worker may be freed here, so each
         * is looked up again. */
        for (size_t i = 1; i < n; i++) {
            if (!fds[i].revents)
                continue;
            rt_worker *w = NULL;
            for (rt_worker *x = rt.workers; x; x = x->next)
                if (x == owner[i] && x->sock == fds[i].fd)
                    w = x;
            if (w == NULL)
                continue;
            if (fds[i].revents & POLLIN) {
                /* Results of calls sent ahead queue up: take them all now
                 * rather than one per poll. The worker may be freed by a
                 * death, so it is looked up again before each read. */
                int k = 0;
                while (handle_message(w, k > 0) == 0 && ++k < 64) {
                    rt_worker *x = rt.workers;
                    while (x != NULL && x != w)
                        x = x->next;
                    if (x == NULL)
                        break;
                }
            } else if (fds[i].revents & (POLLHUP | POLLERR))
                worker_died(w);
        }
        now = rt_now();
        check_timers(now);
        rt_tick(now);
    }
    pthread_mutex_unlock(&rt.mu);
    free(fds);
    free(owner);
    return arg;
}
