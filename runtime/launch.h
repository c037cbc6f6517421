/*
 * launch.h: how a worker process is started. A launch spec owns everything
 * a worker is started with: its executable and argv, its environment, the
 * descriptors it inherits (target fd <- source fd), its device set, its
 * mounts, its limits (rlimits, a cgroup to join) and whether it leads a
 * process group of its own. One spawner starts a spec (clone + exec, so the
 * child can enter namespaces and mount before exec, which posix_spawn
 * cannot); launchers decide how a pool's workers come to be: by exec of the
 * uploaded executable, or by a fork of a memory-snapshot template
 * (runtime/template.c).
 *
 * This module depends on nothing else of the runtime, so it can be tested
 * on its own (tests/integration/test_launch.c).
 */
#ifndef RT_LAUNCH_H
#define RT_LAUNCH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/types.h>

#define RT_LAUNCH_MAX_FDS 16
#define RT_LAUNCH_MAX_RLIMITS 8

/* One inherited descriptor: the child's fd `target` is the parent's
 * `source` (which stays open in the parent; the caller closes it). */
typedef struct rt_launch_fd {
    int target, source;
} rt_launch_fd;

/* One mount made in the child before exec, in a mount namespace of its
 * own: mount(source, target, NULL, flags | MS_BIND, NULL). */
typedef struct rt_launch_mount {
    char *source, *target;
    unsigned long flags;      /* e.g. MS_RDONLY (then remounted read-only) */
} rt_launch_mount;

typedef struct rt_launch_rlimit {
    int resource;             /* RLIMIT_* */
    struct rlimit limit;
} rt_launch_rlimit;

typedef struct rt_launch_spec {
    char *path;               /* the executable */
    char **argv;              /* NULL-terminated, owned */
    size_t argc;
    char **env;               /* NULL-terminated, owned ("NAME=value") */
    size_t nenv;
    rt_launch_fd fds[RT_LAUNCH_MAX_FDS];
    size_t nfds;
    int *devices;             /* the allocator's slots of the GPUs the worker holds
                               * (CUDA_VISIBLE_DEVICES names the same ones by UUID).
                               * Once workers are sandboxed, the child binds only
                               * /dev/nvidia<minor> of these devices (the minor from
                               * the driver's PCI bus id) plus /dev/nvidiactl,
                               * /dev/nvidia-uvm and /dev/nvidia-uvm-tools; today
                               * nothing is bound and this list is informational */
    size_t ndevices;
    rt_launch_mount *mounts;  /* empty today: the volumes work fills it */
    size_t nmounts;
    rt_launch_rlimit rlimits[RT_LAUNCH_MAX_RLIMITS];
    size_t nrlimits;
    char *cgroup;             /* a cgroup v2 directory to join, or NULL */
    bool new_pgrp;            /* lead a process group of its own */
    bool new_namespaces;      /* enter a user and mount namespace (implied by mounts) */
    bool alloc_failed;        /* an add below ran out of memory or room: spawning fails */
} rt_launch_spec;

/* Where starting a spec failed: the step (naming its argument: "dup2 of
 * fd 9 onto fd 3", "join cgroup /sys/fs/cgroup/x") and the errno. */
typedef struct rt_launch_error {
    char step[600];
    int err;
} rt_launch_error;

/* An empty spec. */
void rt_launch_init(rt_launch_spec *s);
/* Free what the spec owns (not the source fds). */
void rt_launch_free(rt_launch_spec *s);
/* Set the executable; argv[0] becomes path too when argv is empty. */
void rt_launch_set_path(rt_launch_spec *s, const char *path);
void rt_launch_add_arg(rt_launch_spec *s, const char *arg);
/* Add "NAME=value" (copied). */
void rt_launch_add_env(rt_launch_spec *s, const char *entry);
/* The child's fd target will be source. At most RT_LAUNCH_MAX_FDS. */
void rt_launch_add_fd(rt_launch_spec *s, int target, int source);
void rt_launch_add_device(rt_launch_spec *s, int id);
void rt_launch_add_mount(rt_launch_spec *s, const char *source, const char *target,
                         unsigned long flags);
void rt_launch_add_rlimit(rt_launch_spec *s, int resource, rlim_t soft, rlim_t hard);
void rt_launch_set_cgroup(rt_launch_spec *s, const char *dir);

/*
 * Start s: clone, then in the child, only async-signal-safe steps in this
 * order: signals to their defaults, setpgid (new_pgrp), join the cgroup,
 * setrlimit, unshare a user and mount namespace and make the mounts (when
 * asked), dup2 the fds onto their targets, mark every other fd
 * close-on-exec, execve. A failing step sends its number, argument and
 * errno to the parent through a close-on-exec pipe, and the child exits
 * 127; the parent then reaps it. Returns the child's pid (its process
 * group when new_pgrp), or -1 with *e filled.
 */
pid_t rt_launch_spawn(const rt_launch_spec *s, rt_launch_error *e);

/*
 * A launcher: how a pool's workers are started from a spec. start returns
 * 0 with *pid set (a child of the runtime, reaped as any worker), 1 when
 * the worker cannot start yet but will (a template is starting; the pool
 * is dispatched again when it is ready), or -1 with *e filled.
 */
typedef struct rt_launcher {
    const char *name;
    int (*start)(void *pool, const rt_launch_spec *s, pid_t *pid, rt_launch_error *e);
} rt_launcher;

/* exec of the spec's executable: rt_launch_spawn. */
extern const rt_launcher rt_launcher_exec;
/* A fork of the pool's memory-snapshot template (runtime/template.c). */
extern const rt_launcher rt_launcher_snapshot;

#endif
