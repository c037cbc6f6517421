/*
 * token_file.c: reading a token file, for the client (MODAL_TOKEN_FILE, the
 * embedded runtime's <state>/token) and the runtime (--token-file). The
 * token lets its holder run code as the runtime's user, so a file that
 * someone else could read, or swap for another, is refused rather than
 * used.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

modal_status modal__token_file_read(const char *path, char *out, size_t outsz, int *missing,
                                    modal_error *err)
{
    if (missing != NULL)
        *missing = 0;
    out[0] = '\0';
    /* O_NOFOLLOW: a symbolic link would let whoever can change it choose
     * the token; O_NONBLOCK: a FIFO planted there must not hang us. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT && missing != NULL)
            *missing = 1;
        if (e == ELOOP)
            return modal__fail(err, MODAL_EAUTH,
                               "the token file %s is a symbolic link; refusing to follow it, "
                               "since whoever can change the link chooses the token: replace "
                               "it with the file itself", path);
        return modal__fail(err, MODAL_EAUTH, "cannot read the token file %s: %s", path,
                           strerror(e));
    }
    struct stat st;
    modal_status rc = MODAL_OK;
    if (fstat(fd, &st) != 0)
        rc = modal__fail(err, MODAL_EAUTH, "cannot stat the token file %s: %s", path,
                         strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = modal__fail(err, MODAL_EAUTH, "the token file %s is not a regular file", path);
    else if (st.st_uid != geteuid())
        rc = modal__fail(err, MODAL_EAUTH,
                         "the token file %s belongs to uid %u, not to uid %u that reads it; "
                         "use a token file of this user's own (or set MODAL_TOKEN)", path,
                         (unsigned)st.st_uid, (unsigned)geteuid());
    else if ((st.st_mode & 077) != 0)
        rc = modal__fail(err, MODAL_EAUTH,
                         "the token file %s has mode %04o, so other users can read it (or "
                         "replace it); run `chmod 600 %s`, and delete it instead if others "
                         "may have read it (the runtime then makes a new token)", path,
                         (unsigned)(st.st_mode & 07777), path);
    if (rc != MODAL_OK) {
        close(fd);
        return rc;
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, out + n, outsz - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            out[0] = '\0';
            return modal__fail(err, MODAL_EAUTH, "cannot read the token file %s: %s", path,
                               strerror(e));
        }
        if (r == 0 || (n += (size_t)r) == outsz - 1)
            break;
    }
    close(fd);
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' ' ||
                     out[n - 1] == '\t'))
        out[--n] = '\0';
    if (n == 0)
        return modal__fail(err, MODAL_EAUTH, "the token file %s is empty", path);
    modal__ok(err);
    return MODAL_OK;
}
