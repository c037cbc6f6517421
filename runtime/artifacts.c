/*
 * artifacts.c: the executable store. Files are named by their SHA-256 and
 * written atomically by an upload (rt_upload_*), so a name always means
 * those exact bytes; a file that stops matching its name (a disk fault,
 * someone's edit) is found when a pool would first start from it, and is
 * removed so that the client uploads it again.
 */
#include "rt.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

int rt_artifact_path(const char *sha, char *out, size_t outsz)
{
    return snprintf(out, outsz, "%s/artifacts/%s", rt.state_dir, sha) < (int)outsz ? 0 : -1;
}

bool rt_artifact_exists(const char *sha)
{
    char path[600];
    struct stat sb;
    return modal__artifact_problem(sha) == NULL && rt_artifact_path(sha, path, sizeof path) == 0 &&
           stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static const char *machine_name(unsigned m)
{
    switch (m) {
    case EM_X86_64: return "x86-64";
    case EM_AARCH64: return "aarch64";
    case EM_386: return "i386";
    case EM_ARM: return "arm";
    case EM_RISCV: return "riscv";
    case EM_PPC64: return "ppc64";
    default: return "an unknown machine";
    }
}

bool rt_artifact_runnable(const char *sha, char *why, size_t whysz)
{
    char path[600];
    rt_artifact_path(sha, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, whysz, "it cannot be opened on the runtime");
        return false;
    }
    Elf64_Ehdr eh;
    ssize_t n = read(fd, &eh, sizeof eh);
    close(fd);
    if (n < (ssize_t)EI_NIDENT || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
        snprintf(why, whysz, "it is not an ELF executable");
        return false;
    }
#if defined(__x86_64__)
    const unsigned host = EM_X86_64;
#elif defined(__aarch64__)
    const unsigned host = EM_AARCH64;
#else
    const unsigned host = 0;
#endif
    if (n < (ssize_t)sizeof eh || eh.e_ident[EI_CLASS] != ELFCLASS64) {
        snprintf(why, whysz, "it is a 32-bit ELF file; this runtime runs 64-bit executables");
        return false;
    }
    if (host != 0 && eh.e_machine != host) {
        snprintf(why, whysz, "it is built for %s, but this runtime runs on %s",
                 machine_name(eh.e_machine), machine_name(host));
        return false;
    }
    if (eh.e_type != ET_EXEC && eh.e_type != ET_DYN) {
        snprintf(why, whysz, "it is an ELF object or core file, not an executable");
        return false;
    }
    return true;
}

/* ---- uploads ------------------------------------------------------------ */

struct rt_upload {
    char sha[65];
    char tmp[700];
    int fd;
    EVP_MD_CTX *md;
    size_t len;
    int err;          /* the first write error (errno), 0 while none */
};

rt_upload *rt_upload_begin(const char *sha, char *err, size_t errsz)
{
    rt_upload *u = calloc(1, sizeof *u);
    if (u == NULL) {
        snprintf(err, errsz, "runtime out of memory starting the upload of artifact %s", sha);
        return NULL;
    }
    snprintf(u->sha, sizeof u->sha, "%s", sha);
    char rnd[40];
    modal__random_id(".up-", rnd, sizeof rnd);
    snprintf(u->tmp, sizeof u->tmp, "%s/artifacts/%s", rt.state_dir, rnd);
    u->fd = open(u->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    u->md = EVP_MD_CTX_new();
    if (u->fd < 0 || u->md == NULL || EVP_DigestInit_ex(u->md, EVP_sha256(), NULL) != 1) {
        snprintf(err, errsz, "cannot store artifact %s: creating a file under %s/artifacts "
                 "failed: %s", sha, rt.state_dir, strerror(u->fd < 0 ? errno : ENOMEM));
        rt_upload_abort(u);
        return NULL;
    }
    return u;
}

int rt_upload_append(rt_upload *u, const void *p, size_t n, char *err, size_t errsz)
{
    size_t done = u->err == 0 ? modal__write_all(u->fd, p, n) : 0;
    if (u->err == 0 && done != n)
        u->err = errno;
    if (u->err != 0) {
        snprintf(err, errsz, "cannot store artifact %s: writing byte %zu under %s failed: %s; "
                 "the upload was discarded", u->sha, u->len + done, rt.state_dir,
                 strerror(u->err));
        return -1;
    }
    EVP_DigestUpdate(u->md, p, n);
    u->len += n;
    return 0;
}

/* Forget, or remember, that sha's file was checked (see rt_artifact_verify). */
static void verified_forget(const char *sha);
static void verified_add(const char *sha, const struct stat *sb);

/* The SHA-256 md has computed, as 64 lowercase hex digits. */
static void digest_hex(EVP_MD_CTX *md, char hex[65])
{
    unsigned char digest[32];
    unsigned dlen = 0;
    EVP_DigestFinal_ex(md, digest, &dlen);
    for (int i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02x", digest[i]);
}

int rt_upload_finish(rt_upload *u, bool *created, char *err, size_t errsz)
{
    char hex[65];
    digest_hex(u->md, hex);
    int rc = 0;
    if (u->err != 0) {
        snprintf(err, errsz, "cannot store artifact %s: writing under %s failed: %s; the upload "
                 "was discarded", u->sha, rt.state_dir, strerror(u->err));
        rc = -2;
    } else if (strcmp(hex, u->sha) != 0) {
        snprintf(err, errsz, "the uploaded bytes hash to %s, not %s; the upload was discarded",
                 hex, u->sha);
        rc = -1;
    }
    char path[600];
    rt_artifact_path(u->sha, path, sizeof path);
    if (rc == 0) {
        *created = !rt_artifact_exists(u->sha);
        if (fchmod(u->fd, 0755) != 0 || fsync(u->fd) != 0) {
            snprintf(err, errsz, "cannot store artifact %s: flushing it to %s failed: %s; the "
                     "upload was discarded", u->sha, rt.state_dir, strerror(errno));
            rc = -2;
        } else if (close(u->fd) != 0 || (u->fd = -1, rename(u->tmp, path) != 0)) {
            u->fd = -1;
            snprintf(err, errsz, "cannot store artifact %s: moving it into %s/artifacts failed: "
                     "%s; the upload was discarded", u->sha, rt.state_dir, strerror(errno));
            rc = -2;
        }
    }
    if (rc != 0) {
        rt_upload_abort(u);
        return rc;
    }
    u->tmp[0] = '\0'; /* renamed: nothing to remove */
    /* The bytes were hashed on their way in: remember the file as checked,
     * so a pool starting from it costs a stat, not a hash under rt.mu. */
    verified_forget(u->sha);
    struct stat sb;
    if (stat(path, &sb) == 0)
        verified_add(u->sha, &sb);
    /* Pools that failed on an earlier copy of this executable may try again. */
    pthread_mutex_lock(&rt.mu);
    for (rt_pool *p = rt.pools; p; p = p->next)
        if (strcmp(p->spec->artifact, u->sha) == 0)
            p->broken = false;
    pthread_mutex_unlock(&rt.mu);
    rt_upload_abort(u);
    return 0;
}

void rt_upload_abort(rt_upload *u)
{
    if (u == NULL)
        return;
    if (u->fd >= 0)
        close(u->fd);
    if (u->tmp[0] != '\0')
        unlink(u->tmp);
    EVP_MD_CTX_free(u->md);
    free(u);
}

/* ---- verifying stored files ----------------------------------------------- */

/* Files hashed since they last changed, so a pool start costs a stat. */
#define VERIFIED_MAX 64
static struct {
    char sha[65];
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
} verified[VERIFIED_MAX];
static unsigned verified_next;
static pthread_mutex_t verified_mu = PTHREAD_MUTEX_INITIALIZER;

static bool same_stat(int i, const struct stat *sb)
{
    return verified[i].dev == sb->st_dev && verified[i].ino == sb->st_ino &&
           verified[i].size == sb->st_size && verified[i].mtime.tv_sec == sb->st_mtim.tv_sec &&
           verified[i].mtime.tv_nsec == sb->st_mtim.tv_nsec &&
           verified[i].ctime.tv_sec == sb->st_ctim.tv_sec &&
           verified[i].ctime.tv_nsec == sb->st_ctim.tv_nsec;
}

static void verified_forget(const char *sha)
{
    pthread_mutex_lock(&verified_mu);
    for (int i = 0; i < VERIFIED_MAX; i++)
        if (strcmp(verified[i].sha, sha) == 0)
            verified[i].sha[0] = '\0';
    pthread_mutex_unlock(&verified_mu);
}

static void verified_add(const char *sha, const struct stat *sb)
{
    pthread_mutex_lock(&verified_mu);
    unsigned i = verified_next++ % VERIFIED_MAX;
    snprintf(verified[i].sha, sizeof verified[i].sha, "%s", sha);
    verified[i].dev = sb->st_dev;
    verified[i].ino = sb->st_ino;
    verified[i].size = sb->st_size;
    verified[i].mtime = sb->st_mtim;
    verified[i].ctime = sb->st_ctim;
    pthread_mutex_unlock(&verified_mu);
}

int rt_artifact_verify(const char *sha, char *why, size_t whysz)
{
    char path[600];
    rt_artifact_path(sha, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        if (fd >= 0)
            close(fd);
        snprintf(why, whysz, "artifact %s is not on this runtime; upload it first with PUT "
                 MODAL__PATH_ARTIFACTS "/%s", sha, sha);
        return -1;
    }
    pthread_mutex_lock(&verified_mu);
    for (int i = 0; i < VERIFIED_MAX; i++)
        if (strcmp(verified[i].sha, sha) == 0 && same_stat(i, &sb)) {
            pthread_mutex_unlock(&verified_mu);
            close(fd);
            return 0;
        }
    pthread_mutex_unlock(&verified_mu);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    char *buf = malloc(1 << 16);
    ssize_t n = -1;
    off_t total = 0;
    while (buf != NULL && ((n = read(fd, buf, 1 << 16)) > 0 || (n < 0 && errno == EINTR)))
        if (n > 0) {
            EVP_DigestUpdate(md, buf, (size_t)n);
            total += n;
        }
    free(buf);
    close(fd);
    char hex[65];
    digest_hex(md, hex);
    EVP_MD_CTX_free(md);
    if (n == 0 && strcmp(hex, sha) == 0) {
        verified_add(sha, &sb);
        return 0;
    }
    verified_forget(sha);
    unlink(path);
    if (n != 0)
        snprintf(why, whysz, "artifact %s could not be read on the runtime (%s) and was removed "
                 "from %s/artifacts; call again to upload it again", sha, strerror(errno),
                 rt.state_dir);
    else
        snprintf(why, whysz, "artifact %s was damaged on the runtime (%lld bytes hashing to "
                 "%.16s...) and was removed from %s/artifacts; call again to upload it again",
                 sha, (long long)total, hex, rt.state_dir);
    return -1;
}
