/*
 * kernel_offer.c: the kernel worker, found and stored as an artifact
 * (kernel_offer.h). It goes through the same upload path as a client's
 * executable, so the pool that runs it is started, verified and kept like
 * any other; the runtime only saves the client the upload.
 */
#include "rt.h"
#include "kernel_offer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_mutex_t offer_mu = PTHREAD_MUTEX_INITIALIZER;
static char offer_path[PATH_MAX];   /* the program's file, "" when none was found */
static char offer_sha[65];          /* its SHA-256 as stored, "" when not stored */
static char offer_why[600];         /* why there is none, when there is none */
static double offer_failed_at;      /* when storing it last failed (rt_now), 0 never */
static bool offer_ready;            /* the first attempt is done */
static pthread_cond_t offer_cond = PTHREAD_COND_INITIALIZER;

/* A store that failed (a full disk, a file-size limit) is tried again by
 * a health request at most this often, since each try reads the file. */
#define RETRY_SECONDS 10.0

/* Copy the file at path into the artifact store as sha. 0, or -1 with why. */
static int store(const char *path, const char *sha, char *why, size_t whysz)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, whysz, "cannot open the kernel worker %.400s: %s", path, strerror(errno));
        return -1;
    }
    char err[700];
    rt_upload *u = rt_upload_begin(sha, err, sizeof err);
    if (u == NULL) {
        close(fd);
        snprintf(why, whysz, "%.590s", err);
        return -1;
    }
    static char buf[1 << 16];
    ssize_t n;
    int rc = 0;
    while (rc == 0 && ((n = read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)))
        if (n > 0 && rt_upload_append(u, buf, (size_t)n, err, sizeof err) != 0)
            rc = -1;
    if (rc == 0 && n < 0) {
        snprintf(err, sizeof err, "cannot read the kernel worker %.400s: %s", path, strerror(errno));
        rc = -1;
    }
    close(fd);
    bool created = false;
    if (rc != 0)
        rt_upload_abort(u);
    else if (rt_upload_finish(u, &created, err, sizeof err) != 0)
        rc = -1; /* the file changed while it was read, or the store failed */
    if (rc != 0)
        snprintf(why, whysz, "%.590s", err);
    return rc;
}

/* Hash and store offer_path (offer_mu held: the file I/O here is the
 * module's own, never under rt.mu). */
static void offer_locked(void)
{
    offer_sha[0] = '\0';
    char sha[65], why[sizeof offer_why];
    modal_error e;
    if (modal__sha256_file(offer_path, sha, &e) != MODAL_OK) {
        snprintf(offer_why, sizeof offer_why, "cannot read the kernel worker: %.500s",
                 e.message);
        offer_failed_at = rt_now();
        return;
    }
    if (!rt_artifact_exists(sha) && store(offer_path, sha, why, sizeof why) != 0) {
        snprintf(offer_why, sizeof offer_why, "%.590s", why);
        offer_failed_at = rt_now();
        return;
    }
    memcpy(offer_sha, sha, sizeof sha);
    offer_why[0] = '\0';
}

static void *offer_main(void *arg)
{
    pthread_mutex_lock(&offer_mu);
    if (offer_path[0] != '\0')
        offer_locked();
    if (offer_sha[0] != '\0')
        rt_log(1, "remote kernel launch: kernel worker %s is artifact %.12s", offer_path,
               offer_sha);
    else
        rt_log(2, "remote kernel launch is not offered: %s", offer_why);
    offer_ready = true;
    pthread_cond_broadcast(&offer_cond);
    pthread_mutex_unlock(&offer_mu);
    return arg;
}

void rt_kernel_offer_init(const char *path)
{
    pthread_mutex_lock(&offer_mu);
    offer_path[0] = offer_sha[0] = '\0';
    if (path != NULL) {
        if (realpath(path, offer_path) == NULL) {
            snprintf(offer_why, sizeof offer_why, "--kernel-worker %.400s: %s", path,
                     strerror(errno));
            offer_path[0] = '\0';
        }
    } else {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        char *slash = n > 0 ? (self[n] = '\0', strrchr(self, '/')) : NULL;
        if (slash == NULL)
            snprintf(offer_why, sizeof offer_why, "cannot read /proc/self/exe to find "
                     RT_KERNEL_WORKER_NAME " next to the runtime: %s", strerror(errno));
        else if ((size_t)snprintf(offer_path, sizeof offer_path, "%.*s/" RT_KERNEL_WORKER_NAME,
                                  (int)(slash - self), self) >= sizeof offer_path)
            offer_path[0] = '\0';
        if (slash != NULL && access(offer_path, R_OK) != 0) {
            snprintf(offer_why, sizeof offer_why, "no " RT_KERNEL_WORKER_NAME " next to the "
                     "runtime (%.400s: %s); install it there or start the runtime with "
                     "--kernel-worker PATH", offer_path, strerror(errno));
            offer_path[0] = '\0';
        }
    }
    pthread_mutex_unlock(&offer_mu);
    /* Hashing and storing it (an fsync) would delay the runtime's start by
     * tens of milliseconds: a thread does it, and a health request that
     * comes first waits for it (offer_ready). */
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, offer_main, NULL) != 0)
        offer_main(NULL);
    pthread_attr_destroy(&attr);
}

void rt_kernel_offer_wait(void)
{
    pthread_mutex_lock(&offer_mu);
    while (!offer_ready)
        pthread_cond_wait(&offer_cond, &offer_mu);
    pthread_mutex_unlock(&offer_mu);
}

void rt_kernel_offer_status(cJSON *health)
{
    pthread_mutex_lock(&offer_mu);
    while (!offer_ready)
        pthread_cond_wait(&offer_cond, &offer_mu);
    /* Stored once, the file may have been removed as damaged since: the
     * client that was told so asks here, and finds it stored again. A
     * store that failed is tried again now and then. */
    if (offer_path[0] != '\0' &&
        (offer_sha[0] != '\0' ? !rt_artifact_exists(offer_sha)
                              : rt_now() - offer_failed_at >= RETRY_SECONDS))
        offer_locked();
    if (offer_sha[0] != '\0') {
        cJSON_AddStringToObject(health, "kernel_worker", offer_sha);
    } else {
        cJSON_AddNullToObject(health, "kernel_worker");
        cJSON_AddStringToObject(health, "kernel_worker_missing", offer_why);
    }
    pthread_mutex_unlock(&offer_mu);
}
