/*
 * launch.c: launch specs and the spawner (see launch.h).
 *
 * The child runs only async-signal-safe calls. Without namespaces it is a
 * clone(CLONE_VM | CLONE_VFORK) child, as posix_spawn makes one: no page
 * tables are copied, however large the runtime, and the parent waits only
 * until the exec. Entering a user namespace needs a process that shares its
 * memory with no other, so then the child is a fork().
 *
 * Errors: the child writes {step, index, errno} to a close-on-exec pipe and
 * exits 127. The parent reads the pipe until it closes (at the exec), so a
 * successful start reads nothing, and a failed one is described exactly.
 */
#include "launch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* ---- the spec ------------------------------------------------------- */

void rt_launch_init(rt_launch_spec *s)
{
    memset(s, 0, sizeof *s);
}

static void free_list(char **v)
{
    for (size_t i = 0; v != NULL && v[i] != NULL; i++)
        free(v[i]);
    free(v);
}

void rt_launch_free(rt_launch_spec *s)
{
    free(s->path);
    free_list(s->argv);
    free_list(s->env);
    free(s->devices);
    for (size_t i = 0; i < s->nmounts; i++) {
        free(s->mounts[i].source);
        free(s->mounts[i].target);
    }
    free(s->mounts);
    free(s->cgroup);
    rt_launch_init(s);
}

/* Append a copy of str to the NULL-terminated list *v of *n entries. */
static void list_add(rt_launch_spec *s, char ***v, size_t *n, const char *str)
{
    char *copy = strdup(str);
    char **nv = copy != NULL ? realloc(*v, (*n + 2) * sizeof **v) : NULL;
    if (nv == NULL) {
        free(copy);
        s->alloc_failed = true;
        return;
    }
    nv[(*n)++] = copy;
    nv[*n] = NULL;
    *v = nv;
}

void rt_launch_set_path(rt_launch_spec *s, const char *path)
{
    free(s->path);
    s->path = strdup(path);
    if (s->path == NULL)
        s->alloc_failed = true;
    if (s->argc == 0)
        list_add(s, &s->argv, &s->argc, path);
}

void rt_launch_add_arg(rt_launch_spec *s, const char *arg)
{
    list_add(s, &s->argv, &s->argc, arg);
}

void rt_launch_add_env(rt_launch_spec *s, const char *entry)
{
    list_add(s, &s->env, &s->nenv, entry);
}

void rt_launch_add_fd(rt_launch_spec *s, int target, int source)
{
    for (size_t i = 0; i < s->nfds; i++)
        if (s->fds[i].target == target) {
            s->fds[i].source = source; /* the last one given wins */
            return;
        }
    if (s->nfds == RT_LAUNCH_MAX_FDS) {
        s->alloc_failed = true;
        return;
    }
    s->fds[s->nfds++] = (rt_launch_fd){target, source};
}

void rt_launch_add_device(rt_launch_spec *s, int id)
{
    int *nd = realloc(s->devices, (s->ndevices + 1) * sizeof *nd);
    if (nd == NULL) {
        s->alloc_failed = true;
        return;
    }
    nd[s->ndevices++] = id;
    s->devices = nd;
}

void rt_launch_add_mount(rt_launch_spec *s, const char *source, const char *target,
                         unsigned long flags)
{
    rt_launch_mount *nm = realloc(s->mounts, (s->nmounts + 1) * sizeof *nm);
    if (nm == NULL) {
        s->alloc_failed = true;
        return;
    }
    s->mounts = nm;
    rt_launch_mount *m = &nm[s->nmounts];
    m->source = strdup(source);
    m->target = strdup(target);
    m->flags = flags;
    if (m->source == NULL || m->target == NULL) {
        free(m->source);
        free(m->target);
        s->alloc_failed = true;
        return;
    }
    s->nmounts++;
    s->new_namespaces = true;
}

void rt_launch_add_rlimit(rt_launch_spec *s, int resource, rlim_t soft, rlim_t hard)
{
    if (s->nrlimits == RT_LAUNCH_MAX_RLIMITS) {
        s->alloc_failed = true;
        return;
    }
    s->rlimits[s->nrlimits++] = (rt_launch_rlimit){resource, {soft, hard}};
}

void rt_launch_set_cgroup(rt_launch_spec *s, const char *dir)
{
    free(s->cgroup);
    s->cgroup = dir != NULL ? strdup(dir) : NULL;
    if (dir != NULL && s->cgroup == NULL)
        s->alloc_failed = true;
}

/* ---- the child ---------------------------------------------------------- */

enum step {
    STEP_SETPGID = 1,
    STEP_CGROUP_OPEN,
    STEP_CGROUP_WRITE,
    STEP_RLIMIT,
    STEP_UNSHARE,
    STEP_SETGROUPS,
    STEP_UIDMAP,
    STEP_GIDMAP,
    STEP_MOUNT_PRIVATE,
    STEP_MOUNT,
    STEP_REMOUNT,
    STEP_DUP,
    STEP_DUP2,
    STEP_EXEC,
};

typedef struct report {
    int32_t step, index, err;
} report;

/* What the child needs, all prepared before the clone: it may not allocate. */
typedef struct child_args {
    const rt_launch_spec *s;
    int errfd;               /* write end of the error pipe, above every target */
    int high;                /* sources are moved to here and above first */
    int maxtarget;
    char procs[PATH_MAX + 32]; /* <cgroup>/cgroup.procs */
    char uidmap[64], gidmap[64];
    pid_t parent;            /* the runtime */
} child_args;

/* The child runs on a stack of its own, sharing the parent's memory:
 * AddressSanitizer's bookkeeping of stacks (on a noreturn call) cannot
 * follow it, so the child's code is left uninstrumented, as the libc's own
 * posix_spawn child is. */
#define CHILD_CODE __attribute__((no_sanitize_address))

static CHILD_CODE __attribute__((noreturn)) void child_fail(const child_args *a, int step, int index)
{
    report r = {step, index, errno};
    if (write(a->errfd, &r, sizeof r) < 0) {
        /* the parent then reports an exit before exec */
    }
    _exit(127);
}

/* Write a short string to a file, as the namespace setup needs. */
static CHILD_CODE int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    int e = errno;
    close(fd);
    errno = e;
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

static CHILD_CODE int child_main(void *arg)
{
    const child_args *a = arg;
    const rt_launch_spec *s = a->s;
    /* Signals: defaults, nothing blocked (the parent blocked all around the
     * clone so that no handler of its runs here). */
    /* The system call itself, as the libc refuses its own signals (32,
     * 33); an all-zero kernel sigaction is SIG_DFL on every ABI. */
    static const uint64_t dfl[8];
    for (int sig = 1; sig < _NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, dfl, NULL, (size_t)(_NSIG / 8));
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (s->new_pgrp && setpgid(0, 0) != 0)
        child_fail(a, STEP_SETPGID, 0);
    if (s->cgroup != NULL) {
        int fd = open(a->procs, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            child_fail(a, STEP_CGROUP_OPEN, 0);
        if (write(fd, "0", 1) != 1)
            child_fail(a, STEP_CGROUP_WRITE, 0);
        close(fd);
    }
    for (size_t i = 0; i < s->nrlimits; i++)
        if (setrlimit(s->rlimits[i].resource, &s->rlimits[i].limit) != 0)
            child_fail(a, STEP_RLIMIT, (int)i);
    if (s->new_namespaces) {
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
            child_fail(a, STEP_UNSHARE, 0);
        /* Keep our own ids inside, so files keep their owners. */
        if (write_file("/proc/self/setgroups", "deny") != 0)
            child_fail(a, STEP_SETGROUPS, 0);
        if (write_file("/proc/self/uid_map", a->uidmap) != 0)
            child_fail(a, STEP_UIDMAP, 0);
        if (write_file("/proc/self/gid_map", a->gidmap) != 0)
            child_fail(a, STEP_GIDMAP, 0);
        /* Our mounts must not propagate back to the host. */
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
            child_fail(a, STEP_MOUNT_PRIVATE, 0);
        for (size_t i = 0; i < s->nmounts; i++) {
            const rt_launch_mount *m = &s->mounts[i];
            if (mount(m->source, m->target, NULL, MS_BIND | MS_REC, NULL) != 0)
                child_fail(a, STEP_MOUNT, (int)i);
            if ((m->flags & MS_RDONLY) &&
                mount(NULL, m->target, NULL, MS_BIND | MS_REMOUNT | m->flags, NULL) != 0)
                child_fail(a, STEP_REMOUNT, (int)i);
        }
    }
    /* Move every source out of the way first, so that a source whose
     * number is another's target is not overwritten, and so that dup2
     * always makes a new descriptor (without close-on-exec). */
    int moved[RT_LAUNCH_MAX_FDS];
    for (size_t i = 0; i < s->nfds; i++)
        if ((moved[i] = fcntl(s->fds[i].source, F_DUPFD_CLOEXEC, a->high)) < 0)
            child_fail(a, STEP_DUP, (int)i);
    for (size_t i = 0; i < s->nfds; i++)
        if (dup2(moved[i], s->fds[i].target) < 0)
            child_fail(a, STEP_DUP2, (int)i);
    /* Nothing else is inherited. */
    for (int fd = 0; fd <= a->maxtarget; fd++) {
        bool keep = false;
        for (size_t i = 0; i < s->nfds && !keep; i++)
            keep = s->fds[i].target == fd;
        if (!keep)
            close(fd);
    }
    if (syscall(SYS_close_range, (unsigned)a->maxtarget + 1, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
        /* An older kernel: mark them one by one, up to the limit. */
        struct rlimit rl;
        long max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                       ? (long)rl.rlim_cur : 65536;
        for (long fd = a->maxtarget + 1; fd < max; fd++)
            if (fd != a->errfd)
                fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    }
    /* The child dies with the runtime: an orphaned worker would go on
     * running (no timeout enforced any more) on devices a restarted
     * runtime gives to another. Set last, as a change of credentials (the
     * user namespace) clears it; a runtime gone already is caught by the
     * parent's pid (0 in a PID namespace of the child's own). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != a->parent && getppid() != 0)
        _exit(127);
    execve(s->path, s->argv, s->env);
    child_fail(a, STEP_EXEC, 0);
}

/* ---- the parent ------------------------------------------------------ */

static void describe(const rt_launch_spec *s, const report *r, rt_launch_error *e)
{
    e->err = r->err;
    int i = r->index;
    switch (r->step) {
    case STEP_SETPGID:
        snprintf(e->step, sizeof e->step, "setpgid (a process group of its own)");
        break;
    case STEP_CGROUP_OPEN:
        snprintf(e->step, sizeof e->step, "joining cgroup %s (opening its cgroup.procs)",
                 s->cgroup);
        break;
    case STEP_CGROUP_WRITE:
        snprintf(e->step, sizeof e->step, "joining cgroup %s (writing its cgroup.procs)",
                 s->cgroup);
        break;
    case STEP_RLIMIT:
        snprintf(e->step, sizeof e->step, "setrlimit of resource %d to %llu/%llu",
                 s->rlimits[i].resource, (unsigned long long)s->rlimits[i].limit.rlim_cur,
                 (unsigned long long)s->rlimits[i].limit.rlim_max);
        break;
    case STEP_UNSHARE:
        snprintf(e->step, sizeof e->step, "unshare of a user and mount namespace");
        break;
    case STEP_SETGROUPS:
        snprintf(e->step, sizeof e->step, "writing /proc/self/setgroups in the new user "
                 "namespace");
        break;
    case STEP_UIDMAP:
        snprintf(e->step, sizeof e->step, "writing /proc/self/uid_map in the new user namespace");
        break;
    case STEP_GIDMAP:
        snprintf(e->step, sizeof e->step, "writing /proc/self/gid_map in the new user namespace");
        break;
    case STEP_MOUNT_PRIVATE:
        snprintf(e->step, sizeof e->step, "making / private in the new mount namespace");
        break;
    case STEP_MOUNT:
        snprintf(e->step, sizeof e->step, "bind mount of %s on %s", s->mounts[i].source,
                 s->mounts[i].target);
        break;
    case STEP_REMOUNT:
        snprintf(e->step, sizeof e->step, "read-only remount of %s", s->mounts[i].target);
        break;
    case STEP_DUP:
        snprintf(e->step, sizeof e->step, "dup of fd %d (to become fd %d)", s->fds[i].source,
                 s->fds[i].target);
        break;
    case STEP_DUP2:
        snprintf(e->step, sizeof e->step, "dup2 of fd %d onto fd %d", s->fds[i].source,
                 s->fds[i].target);
        break;
    case STEP_EXEC:
        snprintf(e->step, sizeof e->step, "execve of %s", s->path);
        break;
    default:
        snprintf(e->step, sizeof e->step, "step %d of starting %s", r->step, s->path);
    }
}

static pid_t fail(rt_launch_error *e, const char *step, int err)
{
    snprintf(e->step, sizeof e->step, "%s", step);
    e->err = err;
    return -1;
}

#define CHILD_STACK (64 * 1024)

pid_t rt_launch_spawn(const rt_launch_spec *s, rt_launch_error *e)
{
    if (s->alloc_failed || s->path == NULL || s->argv == NULL)
        return fail(e, "preparing the launch spec (out of memory, or over its limits of "
                       "16 descriptors and 8 rlimits)", s->alloc_failed ? ENOMEM : EINVAL);
    static char *const empty_env[] = {NULL};
    rt_launch_spec copy;
    if (s->env == NULL) {
        copy = *s;
        copy.env = (char **)empty_env;
        s = &copy;
    }
    child_args a = {.s = s, .maxtarget = 2, .parent = getpid()};
    for (size_t i = 0; i < s->nfds; i++) {
        if (s->fds[i].target > a.maxtarget)
            a.maxtarget = s->fds[i].target;
    }
    a.high = a.maxtarget + 1;
    if (s->cgroup != NULL)
        snprintf(a.procs, sizeof a.procs, "%s/cgroup.procs", s->cgroup);
    snprintf(a.uidmap, sizeof a.uidmap, "%u %u 1\n", (unsigned)getuid(), (unsigned)getuid());
    snprintf(a.gidmap, sizeof a.gidmap, "%u %u 1\n", (unsigned)getgid(), (unsigned)getgid());
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return fail(e, "pipe2 (for the child's errors)", errno);
    /* The write end must survive the dup2s onto the targets. */
    a.errfd = fcntl(p[1], F_DUPFD_CLOEXEC, a.high);
    int dup_errno = errno;
    close(p[1]);
    if (a.errfd < 0) {
        close(p[0]);
        return fail(e, "dup of the error pipe", dup_errno);
    }
    void *stack = NULL;
    if (!s->new_namespaces) {
        stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED) {
            int err = errno;
            close(p[0]);
            close(a.errfd);
            return fail(e, "mmap of the child's stack", err);
        }
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid;
    if (stack != NULL) {
        pid = clone(child_main, (char *)stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
    } else {
        pid = fork();
        if (pid == 0)
            _exit(child_main(&a));
    }
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (stack != NULL)
        munmap(stack, CHILD_STACK);
    close(a.errfd);
    if (pid < 0) {
        close(p[0]);
        return fail(e, stack != NULL ? "clone" : "fork", clone_errno);
    }
    report r;
    ssize_t n;
    do
        n = read(p[0], &r, sizeof r);
    while (n < 0 && errno == EINTR);
    close(p[0]);
    if (n == 0)
        return pid; /* the pipe closed at the exec */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    if (n != (ssize_t)sizeof r)
        return fail(e, "reading the child's report", n < 0 ? errno : EPROTO);
    describe(s, &r, e);
    return -1;
}

/* ---- the exec launcher ---------------------------------------------- */

static int exec_start(void *pool, const rt_launch_spec *s, pid_t *pid, rt_launch_error *e)
{
    *pid = rt_launch_spawn(s, e);
    return *pid < 0 ? -1 : 0;
}

const rt_launcher rt_launcher_exec = {"exec", exec_start};
