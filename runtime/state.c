/*
 * state.c: the state directory: its lock, the token, atomic writes, the
 * runtime's own log and the per-app logs of worker output.
 */
#include "rt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

double rt_now(void)
{
    return modal__now();
}

/* The current time as RFC 3339 UTC ("2026-01-02T03:04:05Z"). */
static void utc_stamp(char out[32])
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void rt_log(int level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < rt.log_level || rt.log == NULL)
        return;
    char stamp[32];
    utc_stamp(stamp);
    va_list ap;
    va_start(ap, fmt);
    flockfile(rt.log);
    fprintf(rt.log, "%s %s ", stamp, names[level < 0 ? 0 : level > 3 ? 3 : level]);
    vfprintf(rt.log, fmt, ap);
    fputc('\n', rt.log);
    fflush(rt.log);
    funlockfile(rt.log);
    va_end(ap);
}

int rt_write_atomic(const char *path, const void *p, size_t len, mode_t mode)
{
    /* A fresh, unpredictable name created exclusively: nothing planted
     * beforehand (a symbolic link, a file another user can read) can
     * receive the bytes. The name keeps ".tmp-" so startup removes
     * leftovers of a crash. */
    char tmp[700], rnd[40];
    int fd = -1;
    for (int i = 0; i < 8 && fd < 0; i++) {
        modal__random_id(".tmp-", rnd, sizeof rnd);
        snprintf(tmp, sizeof tmp, "%s%s", path, rnd);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd < 0 && errno != EEXIST)
            return -1;
    }
    if (fd < 0)
        return -1;
    /* Any failure removes the temporary file and keeps its errno. */
    int e = 0;
    if (modal__write_all(fd, p, len) != len || fsync(fd) != 0)
        e = errno;
    if (close(fd) != 0 && e == 0)
        e = errno;
    if (e == 0 && rename(tmp, path) != 0)
        e = errno;
    if (e != 0) {
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

static char token_path[PATH_MAX];

/* Kept absolute: workers read it from another working directory. */
static void record_token_path(const char *p)
{
    char cwd[PATH_MAX];
    if (p[0] == '/' || getcwd(cwd, sizeof cwd) == NULL)
        snprintf(token_path, sizeof token_path, "%s", p);
    else
        snprintf(token_path, sizeof token_path, "%.2048s/%.1024s", cwd, p);
}

const char *rt_token_path(void)
{
    return token_path;
}

static int mkdir_in(const char *sub, mode_t mode)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", rt.state_dir, sub);
    return mkdir(path, mode) == 0 || errno == EEXIST ? 0 : -1;
}

int rt_state_init(const char *dir, const char *token_file, char *err, size_t errsz)
{
    if (dir == NULL || dir[0] == '\0' || strlen(dir) > 400) {
        snprintf(err, errsz, "--state-dir is required and must be at most 400 bytes");
        return -1;
    }
    snprintf(rt.state_dir, sizeof rt.state_dir, "%s", dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errsz, "cannot create state directory %s: %s", dir, strerror(errno));
        return -1;
    }
    if (mkdir_in("artifacts", 0700) || mkdir_in("logs", 0700)) {
        snprintf(err, errsz, "cannot create directories under %s: %s", dir, strerror(errno));
        return -1;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/runtime.lock", dir);
    int lfd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    /* A runtime that is shutting down still holds the lock for a few
     * seconds; wait for it rather than leave its successor's clients with
     * no runtime at all. A runtime that stays serving keeps it. */
    int locked = lfd >= 0 && flock(lfd, LOCK_EX | LOCK_NB) == 0;
    for (int i = 0; lfd >= 0 && !locked && i < 150; i++) {
        usleep(100 * 1000);
        locked = flock(lfd, LOCK_EX | LOCK_NB) == 0;
    }
    if (!locked) {
        snprintf(err, errsz, "another modal-runtime already uses %s (%s is locked)", dir, path);
        if (lfd >= 0)
            close(lfd);
        return -2;
    }
    /* The lock fd stays open for the life of the process. */

    /* Leftovers of uploads interrupted by a crash are never valid. */
    char adir[600];
    snprintf(adir, sizeof adir, "%s/artifacts", dir);
    DIR *d = opendir(adir);
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;)
        if (strstr(e->d_name, ".tmp-") != NULL || strncmp(e->d_name, ".up-", 4) == 0) {
            char victim[900];
            snprintf(victim, sizeof victim, "%s/%s", adir, e->d_name);
            unlink(victim);
        }
    if (d != NULL)
        closedir(d);

    char tpath[600];
    if (token_file != NULL)
        snprintf(tpath, sizeof tpath, "%s", token_file);
    else
        snprintf(tpath, sizeof tpath, "%s/token", dir);
    record_token_path(tpath);
    /* An existing token file is refused, not repaired, when others could
     * read or swap it: its token may already be known, and chmod would
     * keep that token valid. The message says what to run. */
    int missing = 0;
    modal_error terr;
    if (modal__token_file_read(tpath, rt.token, sizeof rt.token, &missing, &terr) == MODAL_OK) {
        if (strlen(rt.token) < 16) {
            snprintf(err, errsz, "token file %s holds fewer than 16 characters", tpath);
            return -1;
        }
        return 0;
    }
    if (!missing) {
        snprintf(err, errsz, "%s", terr.message);
        return -1;
    }
    unsigned char rnd[24];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        snprintf(err, errsz, "cannot get random bytes for a token: %s", strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < sizeof rnd; i++)
        sprintf(rt.token + 2 * i, "%02x", rnd[i]);
    char line[80];
    int len = snprintf(line, sizeof line, "%s\n", rt.token);
    if (rt_write_atomic(tpath, line, (size_t)len, 0600) != 0) {
        snprintf(err, errsz, "cannot write token file %s: %s", tpath, strerror(errno));
        return -1;
    }
    return 0;
}

/*
 * App logs. Lines are formatted into a queue per app under rt.mu; the
 * event loop takes the queues (still under the lock) and writes them after
 * unlocking, to files it opened once and keeps open. Only the event loop
 * touches the open files.
 */
typedef struct app_queue {
    char app[128];
    char *buf;
    size_t len, cap;
} app_queue;

static app_queue *queued, *taken;  /* queued: under rt.mu; taken: the loop's */
static size_t nqueued, ntaken;

typedef struct app_file {
    char app[128];
    int fd;
} app_file;

static app_file *files;            /* the event loop's */
static size_t nfiles;

/* One line is kept whole up to this size in the app log, like the call's. */
#define CUT_MARK " [line continues]"

void rt_app_log(const char *app, const char *call_id, const char *fn, int stream,
                const char *line, size_t len, bool cut)
{
    static time_t stamp_at = -1;
    static char stamp[32];
    time_t t = time(NULL);
    if (t != stamp_at) { /* formatting the time per line costs more than the line */
        utc_stamp(stamp);
        stamp_at = t;
    }
    app_queue *q = NULL;
    for (size_t i = 0; i < nqueued && q == NULL; i++)
        if (strcmp(queued[i].app, app) == 0)
            q = &queued[i];
    if (q == NULL) {
        app_queue *n = realloc(queued, (nqueued + 1) * sizeof *n);
        if (n == NULL)
            return; /* out of memory loses log lines, never calls */
        queued = n;
        q = &queued[nqueued++];
        memset(q, 0, sizeof *q);
        snprintf(q->app, sizeof q->app, "%s", app);
    }
    char head[256];
    int hl = snprintf(head, sizeof head, "%s %s %s %s ", stamp, call_id, fn,
                      stream == 0 ? "stdout" : "stderr");
    size_t mark = cut ? sizeof CUT_MARK - 1 : 0;
    size_t need = q->len + (size_t)hl + len + mark + 1;
    char *nb = modal__reserve(q->buf, &q->cap, need, 4096);
    if (nb == NULL)
        return;
    q->buf = nb;
    memcpy(q->buf + q->len, head, (size_t)hl);
    memcpy(q->buf + q->len + hl, line, len);
    memcpy(q->buf + q->len + hl + len, CUT_MARK, mark);
    q->buf[need - 1] = '\n';
    q->len = need;
}

void rt_app_log_take(void)
{
    if (ntaken > 0 || nqueued == 0)
        return; /* the last batch is not written yet */
    taken = queued;
    ntaken = nqueued;
    queued = NULL;
    nqueued = 0;
}

static int app_fd(const char *app)
{
    for (size_t i = 0; i < nfiles; i++)
        if (strcmp(files[i].app, app) == 0)
            return files[i].fd;
    char path[700];
    snprintf(path, sizeof path, "%s/logs/%s.log", rt.state_dir, app);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rt_log(2, "cannot open the app log %s: %s; its lines are lost", path, strerror(errno));
        return -1;
    }
    app_file *n = realloc(files, (nfiles + 1) * sizeof *n);
    if (n == NULL) {
        close(fd);
        return -1;
    }
    files = n;
    snprintf(files[nfiles].app, sizeof files[0].app, "%s", app);
    files[nfiles++].fd = fd;
    return fd;
}

void rt_app_log_write(void)
{
    for (size_t i = 0; i < ntaken; i++) {
        app_queue *q = &taken[i];
        int fd = app_fd(q->app);
        if (fd >= 0)
            modal__write_all(fd, q->buf, q->len); /* a full disk loses log lines, never calls */
        free(q->buf);
    }
    free(taken);
    taken = NULL;
    ntaken = 0;
}
