/*
 * floors.c: what the machine itself can do, measured in the same run as the
 * libmodal workloads so each workload can be set beside its floor.
 *
 *   tcp_rtt / unix_rtt   1-byte ping-pong between two processes over
 *                        127.0.0.1 (TCP_NODELAY both ends) / a Unix socket
 *   tcp_bw / unix_bw     1 GiB streamed from one process to another over
 *                        the same kinds of socket (warm buffers both ends)
 *   memcpy_warm          memcpy between two pre-faulted buffers
 *   memcpy_cold          memcpy into freshly mapped memory (4 KiB page
 *                        faults included, 64 MiB), the same for 1 GiB with
 *                        huge pages (MADV_HUGEPAGE, as libmodal maps large
 *                        arrays), and into a MAP_POPULATE mapping
 *   spawn_true           posix_spawn of /bin/true + waitpid
 *
 * Output: one line per number, "metric<TAB>value<TAB>unit", on stdout.
 * Nothing here asserts on time; it only reports.
 *
 * Usage: floors [all|rtt|bw|memcpy|spawn]...
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

extern char **environ;

#define MIB (1024.0 * 1024.0)
#define GIB (1024.0 * MIB)

static void die(const char *what)
{
    fprintf(stderr, "floors: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void emit(const char *metric, double value, const char *unit)
{
    printf("%s\t%.6g\t%s\n", metric, value, unit);
    fflush(stdout);
}

static void write_all(int fd, const void *p, size_t n)
{
    if (modal__write_all(fd, p, n) != n)
        die("write");
}

static void read_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            die("read");
        c += r;
        n -= (size_t)r;
    }
}

/* ---- socket pairs between two processes --------------------------- */

/*
 * A connected pair of stream sockets of the given family (AF_INET on
 * 127.0.0.1, or AF_UNIX under a temporary path), made through a real
 * listener and connect() so the path is the one a client takes.
 */
static void socket_pair(int family, int fds[2])
{
    int ls = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (ls < 0)
        die("socket");
    struct sockaddr_storage ss;
    socklen_t sl;
    char path[108] = "";
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sin->sin_port = 0;
        sl = sizeof *sin;
    } else {
        struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
        snprintf(path, sizeof path, "/tmp/modal-floors-%d.sock", (int)getpid());
        unlink(path);
        sun->sun_family = AF_UNIX;
        snprintf(sun->sun_path, sizeof sun->sun_path, "%s", path);
        sl = sizeof *sun;
    }
    if (bind(ls, (struct sockaddr *)&ss, sl) != 0 || listen(ls, 1) != 0)
        die("bind/listen");
    sl = sizeof ss;
    if (getsockname(ls, (struct sockaddr *)&ss, &sl) != 0)
        die("getsockname");
    int c = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&ss, sl) != 0)
        die("connect");
    int a = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    if (a < 0)
        die("accept");
    close(ls);
    if (path[0] != '\0')
        unlink(path);
    if (family == AF_INET) {
        int one = 1;
        setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    fds[0] = c;
    fds[1] = a;
}

/* ---- round trip ---------------------------------------------------- */

static void rtt(int family, const char *name, size_t iters)
{
    int fds[2];
    socket_pair(family, fds);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) { /* echo server */
        close(fds[0]);
        char b;
        for (;;) {
            ssize_t r = read(fds[1], &b, 1);
            if (r <= 0)
                _exit(0);
            write_all(fds[1], &b, 1);
        }
    }
    close(fds[1]);
    size_t warm = iters / 10;
    double *t = malloc(iters * sizeof *t);
    if (t == NULL)
        die("malloc");
    char b = 'x';
    for (size_t i = 0; i < warm + iters; i++) {
        double t0 = now();
        write_all(fds[0], &b, 1);
        read_all(fds[0], &b, 1);
        if (i >= warm)
            t[i - warm] = now() - t0;
    }
    close(fds[0]);
    waitpid(pid, NULL, 0);
    char m[64];
    snprintf(m, sizeof m, "floor.%s_rtt.median", name);
    emit(m, quantile(t, iters, 0.5) * 1e6, "us");
    snprintf(m, sizeof m, "floor.%s_rtt.p99", name);
    emit(m, quantile(t, iters, 0.99) * 1e6, "us");
    free(t);
}

/* ---- bandwidth ----------------------------------------------------- */

#define CHUNK (1u << 20)

/* Seconds to stream `total` bytes to a reader process and get its ack. */
static double stream_once(int family, size_t total)
{
    int fds[2];
    socket_pair(family, fds);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) { /* reader: a warm buffer, reused */
        close(fds[0]);
        char *buf = malloc(CHUNK);
        if (buf == NULL)
            _exit(1);
        memset(buf, 0, CHUNK);
        size_t got = 0;
        while (got < total) {
            ssize_t r = read(fds[1], buf, CHUNK);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                _exit(1);
            got += (size_t)r;
        }
        write_all(fds[1], "k", 1);
        _exit(0);
    }
    close(fds[1]);
    char *buf = malloc(CHUNK);
    if (buf == NULL)
        die("malloc");
    memset(buf, 0x5a, CHUNK);
    char ack;
    double t0 = now();
    for (size_t sent = 0; sent < total; sent += CHUNK)
        write_all(fds[0], buf, total - sent < CHUNK ? total - sent : CHUNK);
    read_all(fds[0], &ack, 1);
    double dt = now() - t0;
    close(fds[0]);
    waitpid(pid, NULL, 0);
    free(buf);
    return dt;
}

static void bandwidth(int family, const char *name)
{
    const size_t total = (size_t)1 << 30;
    double t[3];
    stream_once(family, (size_t)64 << 20); /* warm-up */
    for (int i = 0; i < 3; i++)
        t[i] = stream_once(family, total);
    char m[64];
    snprintf(m, sizeof m, "floor.%s_bw", name);
    emit(m, (double)total / quantile(t, 3, 0.5) / 1e9, "GB/s");
}

/* ---- memcpy -------------------------------------------------------- */

static void *map_fresh(size_t len, int flags)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
    if (p == MAP_FAILED)
        die("mmap");
    return p;
}

/* A fresh mapping aligned to 2 MiB, so huge pages can back all of it. */
static void *map_fresh_huge(size_t len, void **raw, size_t *rawlen)
{
    size_t align = (size_t)2 << 20;
    *rawlen = len + align;
    *raw = map_fresh(*rawlen, 0);
    uintptr_t p = ((uintptr_t)*raw + align - 1) & ~(uintptr_t)(align - 1);
    madvise((void *)p, len, MADV_HUGEPAGE);
    return (void *)p;
}

static void memcpy_floors(void)
{
    const size_t warm_len = (size_t)256 << 20, cold_len = (size_t)64 << 20;
    char *src = map_fresh(warm_len, MAP_POPULATE);
    char *dst = map_fresh(warm_len, MAP_POPULATE);
    memset(src, 0x5a, warm_len);
    memset(dst, 0, warm_len);
    double t[5];
    for (int i = 0; i < 5; i++) {
        double t0 = now();
        memcpy(dst, src, warm_len);
        t[i] = now() - t0;
        __asm__ volatile("" ::"r"(dst) : "memory");
    }
    emit("floor.memcpy_warm", (double)warm_len / quantile(t, 5, 0.5) / 1e9, "GB/s");

    /* Fresh 4 KiB pages: each first touch is a page fault. */
    for (int i = 0; i < 3; i++) {
        double t0 = now();
        char *d = map_fresh(cold_len, 0);
        madvise(d, cold_len, MADV_NOHUGEPAGE);
        memcpy(d, src, cold_len);
        t[i] = now() - t0;
        munmap(d, cold_len);
    }
    double cold = quantile(t, 3, 0.5);
    emit("floor.memcpy_cold", (double)cold_len / cold / 1e9, "GB/s");
    emit("floor.page_fault", cold / (double)(cold_len / 4096) * 1e6, "us");

    /* 1 GiB of fresh memory advised to use huge pages, as libmodal maps a
     * large array, filled from the warm source four times over. */
    const size_t big_len = (size_t)1 << 30;
    for (int i = 0; i < 3; i++) {
        void *raw;
        size_t rawlen;
        double t0 = now();
        char *d = map_fresh_huge(big_len, &raw, &rawlen);
        for (size_t off = 0; off < big_len; off += warm_len)
            memcpy(d + off, src, warm_len);
        t[i] = now() - t0;
        munmap(raw, rawlen);
    }
    emit("floor.memcpy_cold_thp", (double)big_len / quantile(t, 3, 0.5) / 1e9, "GB/s");

    /* Fresh memory populated in one go (MAP_POPULATE), then copied into. */
    for (int i = 0; i < 3; i++) {
        double t0 = now();
        char *d = map_fresh(cold_len, MAP_POPULATE);
        memcpy(d, src, cold_len);
        t[i] = now() - t0;
        munmap(d, cold_len);
    }
    emit("floor.memcpy_cold_populate", (double)cold_len / quantile(t, 3, 0.5) / 1e9, "GB/s");
    munmap(src, warm_len);
    munmap(dst, warm_len);
}

/* ---- process start ------------------------------------------------- */

static void spawn_floor(void)
{
    const size_t n = 200, warm = 20;
    double *t = malloc(n * sizeof *t);
    if (t == NULL)
        die("malloc");
    char *argv[] = {"/bin/true", NULL};
    for (size_t i = 0; i < warm + n; i++) {
        pid_t pid;
        int ws;
        double t0 = now();
        int rc = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
        if (rc != 0) {
            errno = rc;
            die("posix_spawn /bin/true");
        }
        waitpid(pid, &ws, 0);
        if (i >= warm)
            t[i - warm] = now() - t0;
    }
    emit("floor.spawn_true.median", quantile(t, n, 0.5) * 1e3, "ms");
    emit("floor.spawn_true.p99", quantile(t, n, 0.99) * 1e3, "ms");
    free(t);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (wanted(argc, argv, "rtt")) {
        rtt(AF_INET, "tcp", 20000);
        rtt(AF_UNIX, "unix", 20000);
    }
    if (wanted(argc, argv, "bw")) {
        bandwidth(AF_INET, "tcp");
        bandwidth(AF_UNIX, "unix");
    }
    if (wanted(argc, argv, "memcpy"))
        memcpy_floors();
    if (wanted(argc, argv, "spawn"))
        spawn_floor();
    return 0;
}
