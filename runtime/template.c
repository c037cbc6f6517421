/*
 * template.c: the memory-snapshot launcher. A pool whose function sets
 * .memory_snapshot has one template: its executable, exec'd once with
 * MODAL_WORKER_TEMPLATE=1, runs the function's snapshot_enter hook, says
 * HELLO and waits. Each new worker of the pool is a fork of it: the runtime
 * sends the template a fork request carrying the new worker's socket, pipes
 * and counters (SCM_RIGHTS); the template clones a child that takes them
 * as fds 1-6, becomes the runtime's child (CLONE_PARENT), leads its own
 * process group, runs the per-worker enter hook, says HELLO and serves
 * calls like an exec'd worker. The template itself never serves calls.
 *
 * While a template starts (snapshot_enter may take long), the event loop
 * polls its socket for HELLO and the pool's calls wait in its queue; once
 * it is ready the pool is dispatched. A fork request is answered at once
 * (a fork, no set-up), so it is made synchronously, with a short timeout.
 * A template that dies is replaced at the next spawn; its workers live on.
 * Templates stop when their pool is freed (rt_template_stop) or the
 * runtime shuts down.
 *
 * All with rt.mu held.
 */
#include "rt.h"
#include "launch.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* How long a ready template may take to answer a fork request. */
#define FORK_REPLY_TIMEOUT_MS 5000
/* The variable naming a process's GPUs, as an environment entry's start. */
#define CUDA_VISIBLE "CUDA_VISIBLE_DEVICES="
/* snapshot_enter runs under the function's timeout plus this. */
#define TEMPLATE_START_GRACE 10.0

enum tstate { T_STARTING, T_READY };

typedef struct rt_template {
    rt_pool *pool;
    pid_t pid;               /* also its process group */
    int pidfd;               /* -1 where pidfd_open is refused */
    int sock;                /* HELLO, then fork requests and replies */
    int out_fd;              /* read end of its stdout and stderr */
    enum tstate state;
    bool retired;            /* no longer its pool's template: stopped, or stopping */
    bool counted;            /* counted in its pool's nstarting (until HELLO) */
    double started_at;
    char line[1024];         /* an unfinished line of its output */
    size_t line_len;
    struct rt_template *next;
} rt_template;

static rt_template *templates;

static rt_template *current(const rt_pool *p)
{
    for (rt_template *t = templates; t; t = t->next)
        if (t->pool == p && !t->retired)
            return t;
    return NULL;
}

/* While it starts, the template counts as a starting worker of its pool:
 * the pool's calls wait for the workers it will fork, as they wait for
 * exec'd workers that start, instead of piling onto busy ones. */
static void uncount(rt_template *t)
{
    if (t->counted)
        t->pool->nstarting--;
    t->counted = false;
}

/* Its output goes to the app's log (and the runtime's), under no call. */
static void take_output(rt_template *t, bool all)
{
    for (;;) {
        ssize_t n = read(t->out_fd, t->line + t->line_len, sizeof t->line - t->line_len);
        if (n <= 0 && t->line_len == 0)
            return;
        if (n > 0)
            t->line_len += (size_t)n;
        size_t start = 0;
        for (size_t i = 0; i < t->line_len; i++)
            if (t->line[i] == '\n') {
                rt_app_log(t->pool->spec->app, "-", t->pool->spec->fn, 0, t->line + start, i - start, false);
                start = i + 1;
            }
        bool full = start == 0 && t->line_len == sizeof t->line;
        if (full || (n <= 0 && all && start < t->line_len)) {
            rt_app_log(t->pool->spec->app, "-", t->pool->spec->fn, 0, t->line + start, t->line_len - start,
                       full);
            start = t->line_len;
        }
        memmove(t->line, t->line + start, t->line_len - start);
        t->line_len -= start;
        if (n <= 0)
            return;
    }
}

/* Stop t (its process group); it is freed once reaped. */
static void retire(rt_template *t, const char *why)
{
    uncount(t);
    if (!t->retired)
        rt_log(2, "stopping the memory-snapshot template %d of %s: %s", (int)t->pid,
               t->pool->spec->fn, why);
    t->retired = true;
    if (kill(-t->pid, SIGKILL) != 0)
        kill(t->pid, SIGKILL);
}

static void template_free(rt_template *t)
{
    for (rt_template **pp = &templates; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    close(t->sock);
    close(t->out_fd);
    if (t->pidfd >= 0)
        close(t->pidfd);
    free(t);
}

/* Start p's template from the spec of one of its workers: the same
 * executable, environment and limits; fd 3 its socket; fds 1 and 2 a pipe
 * the runtime reads. Returns 0 or -1 with *e filled. */
static int template_start(rt_pool *p, const rt_launch_spec *w, rt_launch_error *e)
{
    int sv[2], out[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        e->err = errno;
        snprintf(e->step, sizeof e->step, "socketpair (for the memory-snapshot template)");
        return -1;
    }
    if (pipe2(out, O_CLOEXEC) != 0) {
        e->err = errno;
        snprintf(e->step, sizeof e->step, "pipe2 (for the memory-snapshot template)");
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    rt_launch_spec s;
    rt_launch_init(&s);
    rt_launch_set_path(&s, w->path);
    /* The template must not touch GPUs: it sees none. Each worker forked
     * from it is told its own in the fork request, and no device nodes
     * are the template's. */
    for (size_t i = 0; i < w->nenv; i++)
        if (strncmp(w->env[i], CUDA_VISIBLE, sizeof CUDA_VISIBLE - 1) != 0)
            rt_launch_add_env(&s, w->env[i]);
    rt_launch_add_env(&s, CUDA_VISIBLE);
    rt_launch_add_env(&s, MODAL__WORKER_TEMPLATE_ENV "=1");
    for (size_t i = 0; i < w->nfds; i++)
        if (w->fds[i].target == 0)
            rt_launch_add_fd(&s, 0, w->fds[i].source);
    rt_launch_add_fd(&s, 1, out[1]);
    rt_launch_add_fd(&s, 2, out[1]);
    rt_launch_add_fd(&s, 3, sv[1]);
    for (size_t i = 0; i < w->nrlimits; i++)
        rt_launch_add_rlimit(&s, w->rlimits[i].resource, w->rlimits[i].limit.rlim_cur,
                             w->rlimits[i].limit.rlim_max);
    for (size_t i = 0; i < w->nmounts; i++)
        rt_launch_add_mount(&s, w->mounts[i].source, w->mounts[i].target, w->mounts[i].flags);
    rt_launch_set_cgroup(&s, w->cgroup);
    s.new_namespaces = w->new_namespaces;
    s.new_pgrp = true;
    pid_t pid = rt_launch_spawn(&s, e);
    rt_launch_free(&s);
    close(sv[1]);
    close(out[1]);
    rt_template *t = pid > 0 ? calloc(1, sizeof *t) : NULL;
    if (t == NULL) {
        if (pid > 0) {
            kill(-pid, SIGKILL);
            waitpid(pid, NULL, 0);
            e->err = ENOMEM;
            snprintf(e->step, sizeof e->step, "calloc (for the memory-snapshot template)");
        }
        close(sv[0]);
        close(out[0]);
        return -1;
    }
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    t->pool = p;
    t->pid = pid;
    t->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    t->sock = sv[0];
    t->out_fd = out[0];
    t->state = T_STARTING;
    t->counted = true;
    p->nstarting++;
    t->started_at = rt_now();
    t->next = templates;
    templates = t;
    rt_log(1, "started the memory-snapshot template %d for %s (%.12s)", (int)pid, p->spec->fn,
           p->spec->artifact);
    rt_wake();
    return 0;
}

/* The next message of t's socket, without waiting; a template's messages
 * carry no payload, so any is dropped. */
static modal_status recv_meta(rt_template *t, uint32_t *type, cJSON **meta, modal_error *err)
{
    modal__buf *payload = NULL;
    modal_status st = modal__ipc_recv_flags(t->sock, MSG_DONTWAIT, type, meta, &payload, NULL,
                                            err);
    modal__buf_unref(payload);
    return st;
}

/* Ask a ready template for a worker with the spec's descriptors. Returns
 * its pid, 0 when the template is gone (retired here), or -1 with *e
 * filled when it answered with an error. */
static pid_t fork_from(rt_template *t, const rt_launch_spec *s, rt_launch_error *e)
{
    modal__fork_req req = {.type = MODAL__MSG_FORK};
    union {
        char buf[CMSG_SPACE(sizeof(int) * MODAL__FORK_MAX_FDS)];
        struct cmsghdr align;
    } cbuf;
    memset(&cbuf, 0, sizeof cbuf);
    int fds[MODAL__FORK_MAX_FDS];
    for (size_t i = 0; i < s->nfds && req.n < MODAL__FORK_MAX_FDS; i++) {
        if (s->fds[i].target == 0)
            continue; /* the template's own stdin is /dev/null already */
        req.targets[req.n] = s->fds[i].target;
        fds[req.n++] = s->fds[i].source;
    }
    for (size_t i = 0; i < s->nenv; i++)
        if (strncmp(s->env[i], CUDA_VISIBLE, sizeof CUDA_VISIBLE - 1) == 0) {
            req.has_cuda_visible = 1;
            snprintf(req.cuda_visible, sizeof req.cuda_visible, "%s",
                     s->env[i] + sizeof CUDA_VISIBLE - 1);
        }
    struct iovec iov = {&req, sizeof req};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
                        .msg_controllen = CMSG_SPACE(sizeof(int) * req.n)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * req.n);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * req.n);
    char why[600];
    if (sendmsg(t->sock, &mh, MSG_NOSIGNAL) != (ssize_t)sizeof req) {
        snprintf(why, sizeof why, "sending it a fork request failed: %s", strerror(errno));
        retire(t, why);
        return 0;
    }
    struct pollfd pf = {.fd = t->sock, .events = POLLIN};
    int pr;
    do
        pr = poll(&pf, 1, FORK_REPLY_TIMEOUT_MS);
    while (pr < 0 && errno == EINTR);
    if (pr <= 0) {
        snprintf(why, sizeof why, "it did not answer a fork request within %d ms",
                 FORK_REPLY_TIMEOUT_MS);
        retire(t, why);
        return 0;
    }
    uint32_t type;
    cJSON *meta = NULL;
    modal_error err;
    modal_status st = recv_meta(t, &type, &meta, &err);
    const cJSON *jp = cJSON_GetObjectItemCaseSensitive(meta, "pid");
    const cJSON *je = cJSON_GetObjectItemCaseSensitive(meta, "error");
    const cJSON *jn = cJSON_GetObjectItemCaseSensitive(meta, "errno");
    pid_t pid = 0;
    if (st != MODAL_OK || type != MODAL__MSG_FORKED) {
        snprintf(why, sizeof why, "its answer to a fork request was %s",
                 st != MODAL_OK ? err.message : "not a FORKED message");
        retire(t, why);
    } else if (cJSON_IsNumber(jp) && jp->valuedouble > 1 && jp->valuedouble < 4194305) {
        pid = (pid_t)jp->valuedouble;
    } else {
        e->err = cJSON_IsNumber(jn) ? jn->valueint : EPROTO;
        snprintf(e->step, sizeof e->step, "fork of the memory-snapshot template (pid %d: %.200s)",
                 (int)t->pid, cJSON_IsString(je) ? je->valuestring : "no pid in its answer");
        pid = -1;
    }
    cJSON_Delete(meta);
    return pid;
}

static int snapshot_start(void *pool, const rt_launch_spec *s, pid_t *pid, rt_launch_error *e)
{
    rt_pool *p = pool;
    rt_template *t = current(p);
    if (t != NULL && t->state == T_READY) {
        pid_t child = fork_from(t, s, e);
        if (child < 0)
            return -1;
        if (child > 0) {
            *pid = child;
            return 0;
        }
        t = NULL; /* it is gone: start another */
    }
    if (t == NULL && template_start(p, s, e) != 0)
        return -1;
    return 1; /* the pool is dispatched again once the template is ready */
}

const rt_launcher rt_launcher_snapshot = {"memory snapshot", snapshot_start};

/* ---- events ---------------------------------------------------------- */

/* t said HELLO (or broke the protocol). */
static void template_hello(rt_template *t)
{
    rt_pool *p = t->pool;
    uint32_t type;
    cJSON *meta = NULL;
    modal_error err;
    modal_status st = recv_meta(t, &type, &meta, &err);
    if (st == MODAL_EPENDING || (st == MODAL_EIO && strstr(err.message, "closed") != NULL)) {
        cJSON_Delete(meta);
        return; /* its death, seen through its pidfd, says more */
    }
    take_output(t, true);
    uncount(t);
    char msg[1200];
    const cJSON *je = cJSON_GetObjectItemCaseSensitive(meta, "error");
    if (st != MODAL_OK || type != MODAL__MSG_HELLO) {
        snprintf(msg, sizeof msg, "executable %.12s cannot serve as a memory-snapshot template "
                 "for %s: it broke the runtime protocol: %s", p->spec->artifact, p->spec->fn,
                 st != MODAL_OK ? err.message : "its first message was not HELLO");
        retire(t, "it broke the runtime protocol");
        rt_pool_start_failed(p, MODAL_EWORKER, msg);
    } else if (cJSON_IsString(je)) {
        const cJSON *jc = cJSON_GetObjectItemCaseSensitive(meta, "code");
        modal_status code = cJSON_IsString(jc) ? modal__status_from_name(jc->valuestring)
                                               : MODAL_EFUNC;
        if (code == MODAL_EFUNC)
            snprintf(msg, sizeof msg, "%s", je->valuestring);
        else
            snprintf(msg, sizeof msg, "executable %.12s: %s", p->spec->artifact, je->valuestring);
        t->retired = true; /* it exits after saying why */
        rt_pool_start_failed(p, code, msg);
    } else {
        t->state = T_READY;
        rt_log(1, "memory-snapshot template %d for %s is ready after %.1f ms", (int)t->pid,
               p->spec->fn, (rt_now() - t->started_at) * 1e3);
        rt_pool_can_start(p);
    }
    cJSON_Delete(meta);
}

/* t exited: reap it. Returns false when it cannot be reaped yet. */
static bool template_died(rt_template *t)
{
    siginfo_t si = {0};
    if (waitid(P_PID, (id_t)t->pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid != t->pid)
        return false;
    /* What it started goes with it: its group is killed while it is still
     * unreaped, so the id cannot have been reused. */
    kill(-t->pid, SIGKILL);
    int status = 0;
    pid_t r = t->pid;
    while (waitpid(r, &status, 0) < 0 && errno == EINTR)
        ;
    take_output(t, true);
    rt_pool *p = t->pool;
    char how[128];
    if (WIFSIGNALED(status))
        snprintf(how, sizeof how, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(status));
    uncount(t);
    bool was_current = !t->retired;
    enum tstate state = t->state;
    template_free(t);
    if (!was_current) {
        rt_log(1, "memory-snapshot template %d of %s %s", (int)r, p->spec->fn, how);
    } else if (state == T_STARTING) {
        char msg[1000];
        snprintf(msg, sizeof msg, "executable %.12s cannot serve as a memory-snapshot template "
                 "for %s: it %s before answering as a libmodal worker (did its snapshot_enter "
                 "hook exit or crash? its output is in logs/%s.log; or is it not linked with "
                 "libmodal, or does its main() neither use MODAL_LOCAL_ENTRYPOINT nor call "
                 "modal_worker_serve_if_worker()?)", p->spec->artifact, p->spec->fn, how, p->spec->app);
        rt_log(3, "%s", msg);
        rt_pool_start_failed(p, MODAL_EWORKER, msg);
    } else {
        rt_log(2, "memory-snapshot template %d of %s %s; its workers live on, and the next "
               "worker starts a new template", (int)r, p->spec->fn, how);
    }
    rt_pool_can_start(p); /* calls waiting for a worker start a new template */
    return true;
}

size_t rt_template_slots(struct pollfd *fds, size_t room)
{
    size_t n = 0;
    for (rt_template *t = templates; t != NULL; t = t->next) {
        if (n + 3 > room)
            break;
        fds[n++] = (struct pollfd){.fd = t->out_fd, .events = POLLIN};
        fds[n++] = (struct pollfd){.fd = t->state == T_STARTING && !t->retired ? t->sock : -1,
                                   .events = POLLIN};
        fds[n++] = (struct pollfd){.fd = t->pidfd, .events = POLLIN};
    }
    return n;
}

size_t rt_template_count(void)
{
    size_t n = 0;
    for (rt_template *t = templates; t != NULL; t = t->next)
        n++;
    return n;
}

void rt_template_events(const struct pollfd *fds, size_t n, double now)
{
    /* Slots come in threes, in list order; the list may change while they
     * are handled, so each template is looked up by its descriptors. */
    for (size_t i = 0; i + 3 <= n; i += 3) {
        rt_template *t = templates;
        while (t != NULL && t->out_fd != fds[i].fd)
            t = t->next;
        if (t == NULL)
            continue;
        if (fds[i].revents)
            take_output(t, false);
        if (fds[i + 1].revents && t->state == T_STARTING && !t->retired)
            template_hello(t);
        if (fds[i + 2].revents)
            template_died(t);
    }
    for (rt_template *t = templates, *next; t != NULL; t = next) {
        next = t->next;
        /* Without a pidfd, its death is learned by asking. */
        if (t->pidfd < 0 && template_died(t))
            continue;
        rt_pool *p = t->pool;
        double limit = p->spec->timeout + TEMPLATE_START_GRACE;
        if (t->state == T_STARTING && !t->retired && now - t->started_at > limit) {
            char msg[400];
            snprintf(msg, sizeof msg, "%s: the memory-snapshot template did not finish its "
                     "snapshot_enter hook within %.0f s (the function's timeout and %.0f s); "
                     "it was stopped", p->spec->fn, limit, TEMPLATE_START_GRACE);
            retire(t, "snapshot_enter ran too long");
            rt_pool_start_failed(p, MODAL_ETIMEOUT, msg);
        }
    }
}

void rt_template_stop(rt_pool *p)
{
    for (rt_template *t = templates; t != NULL; t = t->next)
        if (t->pool == p)
            retire(t, "its pool is going away");
    /* Reaped here, since the pool may be freed next. */
    for (rt_template *t = templates, *next; t != NULL; t = next) {
        next = t->next;
        if (t->pool == p) {
            while (waitpid(t->pid, NULL, 0) < 0 && errno == EINTR)
                ;
            template_free(t);
        }
    }
}

void rt_templates_shutdown(void)
{
    while (templates != NULL)
        rt_template_stop(templates->pool);
}
