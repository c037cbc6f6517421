/*
 * resources.c: the capacity of this runtime and the reservations of its
 * workers (see resources.h), with cgroup v2 enforcement where the host
 * delegates a subtree to the runtime.
 */
#include "rt.h"
#include "resources.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CPU_PERIOD_US 100000
#define MAX_STALE 64
#define CG_PATH 1024

static struct {
    double cpus;                     /* capacity */
    long long memory;                /* MiB */
    bool cpus_flag, memory_flag;     /* set by --cpus / --memory */
    char devices[RT_RES_MAX_DEVICES][64];
    char types[RT_RES_MAX_DEVICES][24]; /* a GPU's Modal type, "" for an untyped slot */
    long long device_mib[RT_RES_MAX_DEVICES];
    int ndevices;
    char no_gpu_why[400];            /* why there is no GPU, "" when not known */
    double cpu_used;                 /* reserved */
    long long memory_used;
    uint64_t devices_used;
    bool cgroup;                     /* limits enforced */
    char base[CG_PATH];               /* the cgroup directory workers go under */
    char why[2048];                  /* how enforcement was decided */
    pid_t stale[MAX_STALE];          /* worker cgroups to remove later */
    int nstale;
} res;

/* ---- cgroup v2 -------------------------------------------------------- */

/* Write text to dir/file; returns 0 or an errno. */
static int cg_write(const char *dir, const char *file, const char *text)
{
    char path[CG_PATH + 64];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int e = 0;
    if (write(fd, text, strlen(text)) < 0)
        e = errno;
    close(fd);
    return e;
}

/* Read dir/file's first line into out; returns 0 or an errno. */
static int cg_read(const char *dir, const char *file, char *out, size_t outsz)
{
    char path[CG_PATH + 64];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return errno;
    if (fgets(out, (int)outsz, f) == NULL)
        out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
    return 0;
}

/* Whether the space-separated list has word. */
static bool has_word(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
            return true;
    return false;
}

/* The cgroup v2 directory this process is in, or -1 with why filled. */
static int cg_own_dir(char *out, size_t outsz, char *why, size_t whysz)
{
    char line[600], rel[600] = "", mnt[256] = "";
    bool found = false;
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f == NULL) {
        snprintf(why, whysz, "cannot read /proc/self/cgroup: %s", strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "0::", 3) == 0) {
            snprintf(rel, sizeof rel, "%s", line + 3);
            rel[strcspn(rel, "\n")] = '\0';
            found = true;
        }
    fclose(f);
    if (!found) {
        snprintf(why, whysz, "this process is in no cgroup v2 hierarchy (/proc/self/cgroup "
                 "lists cgroup v1 controllers only)");
        return -1;
    }
    /* mountinfo: id parent major:minor root mountpoint options... - fstype */
    f = fopen("/proc/self/mountinfo", "re");
    if (f == NULL) {
        snprintf(why, whysz, "cannot read /proc/self/mountinfo: %s", strerror(errno));
        return -1;
    }
    char buf[2048];
    while (fgets(buf, sizeof buf, f) != NULL) {
        char root[256], point[256];
        const char *dash = strstr(buf, " - cgroup2 ");
        if (dash != NULL && sscanf(buf, "%*s %*s %*s %255s %255s", root, point) == 2 &&
            strcmp(root, "/") == 0) {
            snprintf(mnt, sizeof mnt, "%s", point);
            break;
        }
    }
    fclose(f);
    if (mnt[0] == '\0') {
        snprintf(why, whysz, "no cgroup2 file system is mounted (see /proc/self/mountinfo)");
        return -1;
    }
    snprintf(out, outsz, "%s%s", mnt, strcmp(rel, "/") == 0 ? "" : rel);
    return 0;
}

/* Enable cpu and memory for the children of dir; returns 0 or an errno. */
static int cg_enable(const char *dir)
{
    char have[256];
    if (cg_read(dir, "cgroup.subtree_control", have, sizeof have) == 0 &&
        has_word(have, "cpu") && has_word(have, "memory"))
        return 0;
    return cg_write(dir, "cgroup.subtree_control", "+cpu +memory");
}

/* Decide whether worker cgroups can be made; fills res.base or res.why. */
static void cg_detect(void)
{
    char dir[CG_PATH], ctl[256], why[400];
    if (cg_own_dir(dir, sizeof dir, why, sizeof why) != 0) {
        snprintf(res.why, sizeof res.why, "%.400s", why);
        return;
    }
    int e = cg_read(dir, "cgroup.controllers", ctl, sizeof ctl);
    if (e != 0) {
        snprintf(res.why, sizeof res.why, "cannot read %.900s/cgroup.controllers: %s", dir,
                 strerror(e));
        return;
    }
    if (!has_word(ctl, "cpu") || !has_word(ctl, "memory")) {
        snprintf(res.why, sizeof res.why, "the cpu and memory controllers are not available "
                 "in %.900s (cgroup.controllers: \"%.200s\"); delegate them to the runtime, e.g. with "
                 "systemd's Delegate=yes", dir, ctl);
        return;
    }
    if (access(dir, W_OK) != 0) {
        snprintf(res.why, sizeof res.why, "the runtime cannot write to its cgroup %.900s: %s; "
                 "delegate it to the runtime's user", dir, strerror(errno));
        return;
    }
    /* cgroup v2 allows controllers only for the children of a cgroup that
     * holds no process itself: when this one holds the runtime, the
     * runtime moves into a leaf of its own first. */
    e = cg_enable(dir);
    if (e == EBUSY) {
        char leaf[CG_PATH + 16], pid[32];
        snprintf(leaf, sizeof leaf, "%s/modal-runtime", dir);
        snprintf(pid, sizeof pid, "%d", (int)getpid());
        if (mkdir(leaf, 0755) != 0 && errno != EEXIST)
            e = errno;
        else if ((e = cg_write(leaf, "cgroup.procs", pid)) == 0 && (e = cg_enable(dir)) != 0)
            cg_write(dir, "cgroup.procs", pid); /* other processes share it: move back */
        if (e != 0)
            rmdir(leaf);
    }
    if (e != 0) {
        snprintf(res.why, sizeof res.why, "cannot enable the cpu and memory controllers for "
                 "the children of %.900s: %s (other processes share this cgroup?)", dir,
                 strerror(e));
        return;
    }
    snprintf(res.base, sizeof res.base, "%s", dir);
    snprintf(res.why, sizeof res.why, "each worker gets a cgroup under %.900s with cpu.max and "
             "memory.max", dir);
    res.cgroup = true;
}

void rt_res_init(double cpus, long long memory_mib, bool use_cgroups)
{
    memset(&res, 0, sizeof res);
    res.cpus_flag = cpus > 0;
    res.memory_flag = memory_mib > 0;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    res.cpus = cpus > 0 ? cpus : online > 0 ? (double)online : 1;
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    res.memory = memory_mib > 0 ? memory_mib
                 : pages > 0 && psz > 0 ? (long long)pages * psz / (1024 * 1024) : 1024;
    if (use_cgroups)
        cg_detect();
    else
        snprintf(res.why, sizeof res.why, "cgroups were not asked for");
    rt_log(1, "resources: %g CPUs (%s), %lld MiB of memory (%s), %d devices; %s: %s", res.cpus,
           res.cpus_flag ? "--cpus" : "online CPUs", res.memory,
           res.memory_flag ? "--memory" : "physical memory", res.ndevices,
           res.cgroup ? "limits enforced with cgroup v2" : "limits accounted only",
           res.why);
}

int rt_res_add_device(const char *name)
{
    if (res.ndevices == RT_RES_MAX_DEVICES)
        return -1;
    snprintf(res.devices[res.ndevices], sizeof res.devices[0], "%s", name);
    return res.ndevices++;
}

int rt_res_add_gpu(const char *uuid, const char *type, long long memory_mib)
{
    int i = rt_res_add_device(uuid);
    if (i >= 0) {
        snprintf(res.types[i], sizeof res.types[i], "%s", type);
        res.device_mib[i] = memory_mib;
    }
    return i;
}

void rt_res_set_no_gpu_why(const char *why)
{
    snprintf(res.no_gpu_why, sizeof res.no_gpu_why, "%s", why);
}

const char *rt_res_device_name(int i)
{
    return i >= 0 && i < res.ndevices ? res.devices[i] : NULL;
}

int rt_res_grant_count(const rt_res_grant *g)
{
    return __builtin_popcountll(g->devices);
}

/* Slots of type type, the free ones only when free_only, lowest first,
 * up to max into pick (a bit set). Returns how many. */
static int slots_of(const char *type, bool free_only, int max, uint64_t *pick)
{
    int got = 0;
    *pick = 0;
    for (int i = 0; i < res.ndevices && got < max; i++)
        if (strcmp(res.types[i], type) == 0 &&
            !(free_only && (res.devices_used & (1ull << i)))) {
            *pick |= 1ull << i;
            got++;
        }
    return got;
}

/*
 * Devices for choice c: of its own type first, then of an upgrade; all of
 * one type; among types alike, the one with the lowest index first. With
 * free_only, those free now; else whether it can ever fit. Returns the
 * slots (a bit set), 0 when it does not fit.
 */
static uint64_t gpu_fit(const modal__gpu_choice *c, bool free_only)
{
    for (int rank = 1; rank <= 2; rank++)
        for (int i = 0; i < res.ndevices; i++) {
            const char *t = res.types[i];
            if (t[0] == '\0' || modal__gpu_accepts(c, t) != rank)
                continue;
            bool seen = false; /* each type once, at its lowest index */
            for (int k = 0; k < i && !seen; k++)
                seen = strcmp(res.types[k], t) == 0;
            uint64_t pick;
            if (!seen && slots_of(t, free_only, c->count, &pick) == c->count)
                return pick;
        }
    return 0;
}

/* "1 H200 (141 GiB) and 2 A100-80GB (80 GiB)": the GPUs, by type and
 * size, in the order of their first index; or "no GPU (why)". Returns
 * whether there is a GPU. */
static bool gpus_describe(char *out, size_t outsz)
{
    int first[RT_RES_MAX_DEVICES], count[RT_RES_MAX_DEVICES], ngroups = 0;
    for (int i = 0; i < res.ndevices; i++) {
        if (res.types[i][0] == '\0')
            continue;
        int g = 0;
        while (g < ngroups && (strcmp(res.types[first[g]], res.types[i]) != 0 ||
                               res.device_mib[first[g]] != res.device_mib[i]))
            g++;
        if (g == ngroups)
            first[ngroups] = i, count[ngroups++] = 0;
        count[g]++;
    }
    if (ngroups == 0) {
        snprintf(out, outsz, "no GPU (%s)", res.no_gpu_why[0] ? res.no_gpu_why
                                                           : "none was found");
        return false;
    }
    size_t len = 0;
    out[0] = '\0';
    for (int g = 0; g < ngroups && len < outsz; g++)
        len += (size_t)snprintf(out + len, outsz - len, "%s%d %s (%lld GiB)",
                                g == 0 ? "" : g == ngroups - 1 ? " and " : ", ", count[g],
                                res.types[first[g]], (res.device_mib[first[g]] + 512) / 1024);
    return true;
}

static modal_status gpu_check(const rt_res_req *req, const char *fn, modal_error *err)
{
    for (size_t i = 0; i < req->ngpu; i++)
        if (gpu_fit(&req->gpu[i], false) != 0)
            return MODAL_OK;
    char have[1200];
    bool some = gpus_describe(have, sizeof have);
    return modal__fail(err, MODAL_EGPU, "%s: asks for gpu \"%s\" but this runtime has %s; %s",
                       fn, req->gpu_spec ? req->gpu_spec : "", have,
                       some ? "ask for a GPU it has (a fallback list, \"any\", or no \"!\") "
                              "or run it on a runtime with such GPUs"
                            : "run it on a runtime with GPUs, or drop .gpu to run on the CPU");
}

bool rt_res_grant_serves(const rt_res_grant *g, const rt_res_req *req)
{
    for (int i = 0; i < res.ndevices; i++)
        if ((g->devices & (1ull << i)) && res.types[i][0] != '\0')
            for (size_t k = 0; k < req->ngpu; k++) {
                /* A choice's devices are all of one type: a type with
                 * fewer devices than it counts can never serve it. */
                uint64_t all;
                if (modal__gpu_accepts(&req->gpu[k], res.types[i]) != 0 &&
                    slots_of(res.types[i], false, req->gpu[k].count, &all) ==
                        req->gpu[k].count)
                    return true;
            }
    return false;
}

modal_status rt_res_check(const rt_res_req *req, const char *fn, modal_error *err)
{
    if (req->cpu > res.cpus)
        return modal__fail(err, MODAL_ERESOURCE, "%s: asks for %g CPU%s but this runtime has "
                           "%g (%s); lower .cpu or start the runtime with more --cpus", fn,
                           req->cpu, req->cpu == 1 ? "" : "s", res.cpus,
                           res.cpus_flag ? "--cpus" : "its online CPUs");
    if (req->memory > res.memory)
        return modal__fail(err, MODAL_ERESOURCE, "%s: asks for %lld MiB of memory but this "
                           "runtime has %lld MiB (%s); lower .memory or start the runtime with "
                           "more --memory", fn, req->memory, res.memory,
                           res.memory_flag ? "--memory" : "its physical memory");
    if (req->devices > res.ndevices)
        return modal__fail(err, MODAL_ERESOURCE, "%s: asks for %d device%s but this runtime "
                           "has %d", fn, req->devices, req->devices == 1 ? "" : "s",
                           res.ndevices);
    if (req->ngpu > 0)
        return gpu_check(req, fn, err);
    return MODAL_OK;
}

const char *rt_res_reserve(const rt_res_req *req, rt_res_grant *g)
{
    memset(g, 0, sizeof *g);
    /* Sums of fractions of a core are compared with a little slack, so
     * eight workers of 0.125 fill one core exactly. */
    if (res.cpu_used + req->cpu > res.cpus + 1e-9)
        return "cpu";
    if (res.memory_used + req->memory > res.memory)
        return "memory";
    uint64_t pick = 0;
    int got = 0;
    for (int i = 0; i < res.ndevices && got < req->devices; i++)
        if (!(res.devices_used & (1ull << i)) && res.types[i][0] == '\0') {
            pick |= 1ull << i;
            got++;
        }
    if (got < req->devices)
        return "devices";
    if (req->ngpu > 0) {
        uint64_t gpus = 0;
        for (size_t i = 0; i < req->ngpu && gpus == 0; i++)
            gpus = gpu_fit(&req->gpu[i], true);
        /* Untyped slots are never GPUs, so the two picks never overlap. */
        if (gpus == 0)
            return "gpu";
        pick |= gpus;
    }
    g->held = true;
    g->cpu = req->cpu;
    g->memory = req->memory;
    g->devices = pick;
    res.cpu_used += req->cpu;
    res.memory_used += req->memory;
    res.devices_used |= pick;
    return NULL;
}

void rt_res_enforce(rt_res_grant *g, pid_t pid)
{
    if (!res.cgroup || !g->held || (g->cpu == 0 && g->memory == 0))
        return;
    char dir[CG_PATH + 16], cpu[64], mem[64], spid[32];
    snprintf(dir, sizeof dir, "%s/w-%d", res.base, (int)pid);
    if (g->cpu > 0)
        snprintf(cpu, sizeof cpu, "%lld %d", (long long)(g->cpu * CPU_PERIOD_US + 0.5),
                 CPU_PERIOD_US);
    else
        snprintf(cpu, sizeof cpu, "max %d", CPU_PERIOD_US);
    if (g->memory > 0)
        snprintf(mem, sizeof mem, "%lld", g->memory * 1024 * 1024);
    else
        snprintf(mem, sizeof mem, "max");
    snprintf(spid, sizeof spid, "%d", (int)pid);
    int e = 0;
    const char *what = "mkdir";
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        e = errno;
    else if ((what = "cpu.max", e = cg_write(dir, "cpu.max", cpu)) == 0 &&
             (what = "memory.max", e = cg_write(dir, "memory.max", mem)) == 0 &&
             (what = "cgroup.procs", e = cg_write(dir, "cgroup.procs", spid)) == 0) {
        g->cgroup_pid = pid;
        return;
    }
    rt_log(2, "worker %d runs without its limits: %s of %s failed: %s", (int)pid, what, dir,
           strerror(e));
    rmdir(dir);
}

/* Remove the cgroup of worker pid; false when it still holds a process. */
static bool cg_remove(pid_t pid)
{
    char dir[CG_PATH + 16];
    snprintf(dir, sizeof dir, "%s/w-%d", res.base, (int)pid);
    return rmdir(dir) == 0 || errno == ENOENT;
}

void rt_res_release(rt_res_grant *g)
{
    if (!g->held)
        return;
    res.cpu_used -= g->cpu;
    if (res.cpu_used < 1e-9)
        res.cpu_used = 0;
    res.memory_used -= g->memory;
    res.devices_used &= ~g->devices;
    /* The worker's children were killed with it but may not be reaped
     * yet: a cgroup still busy is removed on a later sweep. */
    if (g->cgroup_pid > 0 && !cg_remove(g->cgroup_pid) && res.nstale < MAX_STALE)
        res.stale[res.nstale++] = g->cgroup_pid;
    memset(g, 0, sizeof *g);
}

void rt_res_sweep(void)
{
    for (int i = 0; i < res.nstale;)
        if (cg_remove(res.stale[i]))
            res.stale[i] = res.stale[--res.nstale];
        else
            i++;
}

bool rt_res_enforced(void)
{
    return res.cgroup;
}

cJSON *rt_resources_status(void)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "enforcement", res.cgroup ? "cgroup" : "accounting");
    cJSON_AddStringToObject(j, "why", res.why);
    cJSON *cap = cJSON_AddObjectToObject(j, "capacity");
    cJSON_AddNumberToObject(cap, "cpu", res.cpus);
    cJSON_AddNumberToObject(cap, "memory_mib", (double)res.memory);
    cJSON *devs = cJSON_AddArrayToObject(cap, "devices");
    for (int i = 0; i < res.ndevices; i++)
        cJSON_AddItemToArray(devs, cJSON_CreateString(res.devices[i]));
    cJSON *used = cJSON_AddObjectToObject(j, "reserved");
    cJSON_AddNumberToObject(used, "cpu", res.cpu_used);
    cJSON_AddNumberToObject(used, "memory_mib", (double)res.memory_used);
    cJSON *udevs = cJSON_AddArrayToObject(used, "devices");
    for (int i = 0; i < res.ndevices; i++)
        if (res.devices_used & (1ull << i))
            cJSON_AddItemToArray(udevs, cJSON_CreateString(res.devices[i]));
    return j;
}
