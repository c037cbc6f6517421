/*
 * embedded.c: the embedded default. With no MODAL_RUNTIME_URL, the first
 * call starts a local modal-runtime on a Unix socket under the user's state
 * directory; later calls, and later programs, reuse it.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MODAL_BINDIR
#define MODAL_BINDIR "/usr/local/bin"
#endif

static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;

extern char **environ;

/*
 * The variables a process started on a client's or a runtime's behalf
 * keeps from its parent's environment (a trailing '*' matches a prefix):
 * the embedded runtime from the client that starts it, and every worker
 * from its runtime. The runtime outlives that client and passes its
 * environment on to every worker, so nothing else of the client's (its
 * secrets, its MODAL_* settings) may reach them. The runtime reads no
 * MODAL_* variable but MODAL_CUDA_LIBRARY (lib/cuda.c; tests point it at
 * the CUDA test double): its settings come from its command line.
 * docs/runtime.md lists the same names.
 */
static const char *const env_inherited[] = {
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_*", "TZ", "TMPDIR", "TERM",
    "LD_LIBRARY_PATH", "CUDA_*", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS",
    /* A worker loads the driver its runtime took its inventory from; the
     * test double's settings mean nothing to a real driver. */
    "MODAL_CUDA_LIBRARY", "MODAL_FAKE_CUDA_*", NULL,
};

static bool env_inherited_entry(const char *entry)
{
    const char *eq = strchr(entry, '=');
    if (eq == NULL)
        return false;
    size_t n = (size_t)(eq - entry);
    for (size_t i = 0; env_inherited[i] != NULL; i++) {
        const char *k = env_inherited[i];
        size_t kl = strlen(k);
        if (k[kl - 1] == '*' ? n >= kl - 1 && strncmp(entry, k, kl - 1) == 0
                             : n == kl && strncmp(entry, k, kl) == 0)
            return true;
    }
    return false;
}

char **modal__env_inherited_list(char *const *extra)
{
    size_t n = 0, nx = 0;
    while (environ != NULL && environ[n] != NULL)
        n++;
    while (extra != NULL && extra[nx] != NULL)
        nx++;
    char **env = modal__calloc(n + nx + 1, sizeof *env);
    if (env == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (env_inherited_entry(environ[i]))
            env[k++] = environ[i];
    for (size_t i = 0; i < nx; i++)
        env[k++] = extra[i];
    return env;
}

/*
 * Close every descriptor from 3 up in the child before exec: the client's
 * own files and sockets that are not close-on-exec would otherwise stay
 * open in the runtime, and in every worker, for the runtime's whole life.
 * Only async-signal-safe calls.
 */
static void close_from_3(void)
{
    if (close_range(3, ~0U, 0) == 0)
        return;
    struct rlimit rl;
    long max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                   ? (long)rl.rlim_cur : 65536;
    for (long fd = 3; fd < max; fd++)
        close((int)fd);
}

/*
 * A descriptor the child will dup2 onto 0-2, moved above 2 when the client
 * had closed its own standard descriptors and open() handed back one of
 * them: dup2 onto the same number leaves close-on-exec set (the runtime
 * would start with it closed), and the first dup2 would overwrite the
 * other descriptor sitting at 0-2.
 */
static int above_stdio(int fd)
{
    if (fd < 0 || fd > 2)
        return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return moved;
}

/*
 * Default signal handling for the runtime: a blocked mask and ignored
 * signals survive exec, so a client that blocks SIGTERM (to take it with
 * sigwait or a signalfd) or ignores SIGCHLD would give it a runtime that
 * SIGTERM cannot stop, or that is not told when its workers exit. Only
 * async-signal-safe calls.
 */
static void default_signals(void)
{
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* SIGKILL, SIGSTOP and libc's own refuse: fine */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static modal_status mkdir_p(const char *dir, modal_error *err)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return modal__fail(err, MODAL_EIO, "cannot create directory %s: %s", tmp,
                               strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
        return modal__fail(err, MODAL_EIO, "cannot create directory %s: %s", tmp, strerror(errno));
    return MODAL_OK;
}

modal_status modal__embedded_dir(char *out, size_t outsz, modal_error *err)
{
    const char *home = getenv("MODAL_HOME"), *xdg = getenv("XDG_STATE_HOME"),
               *uhome = getenv("HOME");
    int n;
    if (home != NULL && home[0] != '\0')
        n = snprintf(out, outsz, "%s", home);
    else if (xdg != NULL && xdg[0] == '/')
        n = snprintf(out, outsz, "%s/modal", xdg);
    else if (uhome != NULL && uhome[0] == '/')
        n = snprintf(out, outsz, "%s/.local/state/modal", uhome);
    else
        return modal__fail(err, MODAL_EINVAL,
                           "no state directory for the local runtime: set MODAL_HOME (or HOME)");
    if (n < 0 || (size_t)n >= outsz)
        return modal__fail(err, MODAL_EINVAL, "the state directory path is too long");
    if (out[0] != '/')
        return modal__fail(err, MODAL_EINVAL, "MODAL_HOME=\"%s\" must be an absolute path", out);
    return MODAL_OK;
}

static int socket_answers(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static int executable(const char *p)
{
    return access(p, X_OK) == 0;
}

/* $MODAL_RUNTIME_BIN, then the installed bindir, then PATH. */
static modal_status find_runtime(char *out, size_t outsz, modal_error *err)
{
    const char *env = getenv("MODAL_RUNTIME_BIN");
    if (env != NULL && env[0] != '\0') {
        if (!executable(env))
            return modal__fail(err, MODAL_ETRANSPORT,
                               "MODAL_RUNTIME_BIN=\"%s\" is not an executable file", env);
        snprintf(out, outsz, "%s", env);
        return MODAL_OK;
    }
    snprintf(out, outsz, "%s/modal-runtime", MODAL_BINDIR);
    if (executable(out))
        return MODAL_OK;
    const char *path = getenv("PATH");
    while (path != NULL && *path != '\0') {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        snprintf(out, outsz, "%.*s/modal-runtime", (int)len, path);
        if (len > 0 && executable(out))
            return MODAL_OK;
        path = colon ? colon + 1 : NULL;
    }
    return modal__fail(err, MODAL_ETRANSPORT,
                       "cannot start the local runtime: modal-runtime is not in %s nor on PATH; "
                       "install libmodal or set MODAL_RUNTIME_BIN (or MODAL_RUNTIME_URL for a "
                       "runtime elsewhere)", MODAL_BINDIR);
}

static void last_log_line(const char *dir, char *out, size_t outsz)
{
    char path[600];
    snprintf(path, sizeof path, "%s/runtime.log", dir);
    out[0] = '\0';
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return;
    char line[512];
    while (fgets(line, sizeof line, f) != NULL)
        if (line[0] != '\n')
            snprintf(out, outsz, "%s", line);
    fclose(f);
    size_t n = strlen(out);
    if (n > 0 && out[n - 1] == '\n')
        out[n - 1] = '\0';
}

modal_status modal__embedded_ensure(const char *dir, const char *sock, modal_error *err)
{
    if (socket_answers(sock))
        return MODAL_OK;
    pthread_mutex_lock(&start_lock);
    modal_status st = MODAL_OK;
    char bin[600];
    if (socket_answers(sock))
        goto out;
    if ((st = mkdir_p(dir, err)) != MODAL_OK || (st = find_runtime(bin, sizeof bin, err)) != MODAL_OK)
        goto out;
    char logpath[600];
    snprintf(logpath, sizeof logpath, "%s/runtime.log", dir);
    char listen[600];
    snprintf(listen, sizeof listen, "unix:%s", sock);
    /* Double fork so the runtime is no child of this program: it outlives
     * it, and is never left a zombie. Only async-signal-safe calls run
     * between fork and exec. */
    /* Built before fork, since the child may not allocate. */
    char **envp = modal__env_inherited_list(NULL);
    if (envp == NULL) {
        st = modal__fail(err, MODAL_ENOMEM, "out of memory starting the local runtime");
        goto out;
    }
    int logfd = above_stdio(open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC,
                                 0600));
    int nullfd = above_stdio(open("/dev/null", O_RDWR | O_CLOEXEC));
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        if (fork() != 0)
            _exit(0);
        /* stdin from /dev/null; stdout and stderr to the runtime's log, so
         * an error before the runtime opens its log is kept there too. */
        if (nullfd >= 0)
            dup2(nullfd, 0);
        int outfd = logfd >= 0 ? logfd : nullfd;
        if (outfd >= 0) {
            dup2(outfd, 1);
            dup2(outfd, 2);
        }
        close_from_3();
        default_signals();
        char *argv[] = {"modal-runtime", "--state-dir", (char *)dir, "--listen", listen,
                        "--idle-exit", "900", NULL};
        execve(bin, argv, envp);
        _exit(127);
    }
    free(envp);
    if (logfd >= 0)
        close(logfd);
    if (nullfd >= 0)
        close(nullfd);
    if (pid < 0) {
        st = modal__fail(err, MODAL_ETRANSPORT, "cannot start the local runtime: fork: %s",
                         strerror(errno));
        goto out;
    }
    waitpid(pid, NULL, 0);
    for (int i = 0; i < 400; i++) { /* up to 20 s: a stopping runtime may hold the lock */
        if (socket_answers(sock)) {
            modal__log(MODAL_LOG_INFO, "started the local runtime (%s) at unix:%s", bin, sock);
            goto out;
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    char line[512];
    last_log_line(dir, line, sizeof line);
    st = modal__fail(err, MODAL_ETRANSPORT,
                     "started the local runtime %s but it did not answer on %s within 20 s%s%s "
                     "(see %s)", bin, sock, line[0] ? "; its log says: " : "", line, logpath);
out:
    pthread_mutex_unlock(&start_lock);
    return st;
}
