/*
 * memfd_array.c: large arrays that live in a memfd from the moment they
 * are made, so that a worker's result reaches the runtime as it is: the
 * frame head is written into room kept in front of the data, the memfd is
 * sealed and its descriptor passed, and no byte of the array is copied.
 *
 * Layout of such a memfd (docs/architecture.md, "The bytes of a call"):
 *   [0, MODAL__MEMFD_HEAD)              room for the frame head
 *   [MODAL__MEMFD_HEAD, + len)          the array's bytes (buf->base)
 * The frame head fills the room exactly: the JSON envelope is preceded by
 * spaces (modal__enc_head_padded), so the frame's one attachment starts at
 * MODAL__MEMFD_HEAD, where the data already is.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

bool modal__arrays_in_memfd;

modal__buf *modal__buf_new_memfd(size_t len)
{
    if (len > SIZE_MAX - MODAL__MEMFD_HEAD)
        return NULL;
    size_t map_len = MODAL__MEMFD_HEAD + len;
    int fd = modal__memfd_new("modal-array", map_len);
    if (fd < 0)
        return NULL;
    uint8_t *m = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        close(fd);
        return NULL;
    }
    /* Every page is about to be written: the kernel allocates them all at
     * once, far cheaper than one write fault per page. Advice only; an
     * older kernel (before 5.14) refuses it and the pages fault in. */
#ifdef MADV_POPULATE_WRITE
    madvise(m, map_len, MADV_POPULATE_WRITE);
#endif
    modal__buf *b = modal__malloc(sizeof *b);
    if (b == NULL) {
        munmap(m, map_len);
        close(fd);
        return NULL;
    }
    atomic_init(&b->refs, 1);
    b->base = m + MODAL__MEMFD_HEAD;
    b->len = len;
    b->kind = MODAL__BUF_MEMFD;
    b->parent = NULL;
    b->map_len = map_len;
    b->fd = fd;
    return b;
}

int modal__buf_memfd_seal_frame(modal__buf *b, const uint8_t *head)
{
    if (b == NULL || b->kind != MODAL__BUF_MEMFD) {
        errno = EINVAL;
        return -1;
    }
    int seals = fcntl(b->fd, F_GET_SEALS);
    if (seals < 0)
        return -1;
    if (seals & F_SEAL_WRITE) {
        errno = EPERM; /* sent once already: its head cannot change */
        return -1;
    }
    size_t done = 0;
    while (done < MODAL__MEMFD_HEAD) {
        ssize_t w = pwrite(b->fd, head + done, MODAL__MEMFD_HEAD - done, (off_t)done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        done += (size_t)w;
    }
    /*
     * F_SEAL_WRITE is refused while a shared writable mapping exists, so
     * the mapping is replaced, in place, by a private read-only one: the
     * array keeps its address and contents and can no longer change.
     */
    uint8_t *m = b->base - MODAL__MEMFD_HEAD;
    if (mmap(m, b->map_len, PROT_READ, MAP_PRIVATE | MAP_FIXED, b->fd, 0) == MAP_FAILED)
        return -1;
    if (modal__memfd_seal(b->fd) != 0)
        return -1;
    return b->fd;
}
