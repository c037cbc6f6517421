/*
 * ipc.c: messages between the runtime and its workers, and bundles of
 * frames. Both sides of the worker socket use these functions, so the
 * format lives in one place.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int modal__memfd_new(const char *name, size_t len)
{
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -1;
    if (len > 0 && ftruncate(fd, (off_t)len) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

size_t modal__write_all(int fd, const void *p, size_t n)
{
    const char *q = p;
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, q + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = ENOSPC;
            break;
        }
        done += (size_t)w;
    }
    return done;
}

int modal__memfd_seal(int fd)
{
    return fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
}

static modal_status send_msg(int sock, const uint8_t *head, size_t head_len,
                             const void *p, size_t len, int fd,
                             modal_error *err)
{
    struct iovec iov[2] = {{(void *)head, head_len}, {(void *)p, len}};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (p != NULL && len > 0) ? 2 : 1};
    if (fd >= 0) {
        memset(&ctl, 0, sizeof ctl);
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof ctl.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    ssize_t n;
    do
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return modal__fail(err, MODAL_EIO, "sending to the worker socket failed: %s",
                           strerror(errno));
    return MODAL_OK;
}

static size_t make_head(uint8_t *head, uint32_t type, uint32_t flags,
                        const char *meta, size_t payload_len)
{
    size_t mlen = meta != NULL ? strlen(meta) : 0;
    modal__put32(head, type);
    modal__put32(head + 4, flags);
    modal__put32(head + 8, (uint32_t)mlen);
    modal__put32(head + 12, 0);
    modal__put64(head + 16, payload_len);
    if (mlen > 0)
        memcpy(head + MODAL__IPC_HEADER, meta, mlen);
    return MODAL__IPC_HEADER + mlen;
}

modal_status modal__ipc_send(int sock, uint32_t type, const char *meta,
                             const void *p, size_t len, int fd,
                             modal_error *err)
{
    size_t mlen = meta != NULL ? strlen(meta) : 0;
    if (mlen > MODAL__IPC_META_MAX)
        return modal__fail(err, MODAL_ELIMIT, "worker message metadata of %zu bytes is over %d",
                           mlen, MODAL__IPC_META_MAX);
    uint8_t head[MODAL__IPC_HEADER + MODAL__IPC_META_MAX];
    if (fd >= 0) {
        size_t hl = make_head(head, type, MODAL__IPC_FLAG_FD, meta, len);
        return send_msg(sock, head, hl, NULL, 0, fd, err);
    }
    if (len <= MODAL__IPC_INLINE_MAX) {
        size_t hl = make_head(head, type, 0, meta, len);
        return send_msg(sock, head, hl, p, len, -1, err);
    }
    int mfd = modal__memfd_new("modal-payload", 0);
    if (mfd < 0)
        return modal__fail(err, MODAL_EIO, "memfd_create failed: %s", strerror(errno));
    if (modal__write_all(mfd, p, len) != len) {
        int e = errno;
        close(mfd);
        return modal__fail(err, MODAL_EIO, "writing a %zu-byte payload to a memfd failed: %s",
                           len, strerror(e));
    }
    if (modal__memfd_seal(mfd) != 0) {
        int e = errno;
        close(mfd);
        return modal__fail(err, MODAL_EIO, "sealing a payload memfd failed: %s", strerror(e));
    }
    size_t hl = make_head(head, type, MODAL__IPC_FLAG_FD, meta, len);
    modal_status st = send_msg(sock, head, hl, NULL, 0, mfd, err);
    close(mfd);
    return st;
}

modal_status modal__ipc_send_enc(int sock, uint32_t type, const char *meta,
                                 const modal__enc *enc, modal_error *err)
{
    if (enc->total <= MODAL__IPC_INLINE_MAX) {
        uint8_t small[MODAL__IPC_INLINE_MAX];
        size_t n = modal__enc_read(enc, 0, small, enc->total);
        return modal__ipc_send(sock, type, meta, small, n, -1, err);
    }
    if (enc->natt == 1 && enc->att0_memfd != NULL) {
        /* The frame's one attachment already lies in a memfd with room for
         * the head in front: write the head there, seal, pass it as is. */
        uint8_t head[MODAL__MEMFD_HEAD];
        int fd = modal__enc_head_padded(enc, head, sizeof head) == 0
                     ? modal__buf_memfd_seal_frame(enc->att0_memfd, head)
                     : -1;
        if (fd >= 0)
            return modal__ipc_send(sock, type, meta, NULL,
                                   MODAL__MEMFD_HEAD + enc->att0_memfd->len, fd, err);
        /* Otherwise (a head too long, a memfd sent once already) the frame
         * is copied into a new memfd below. */
    }
    int mfd = modal__memfd_new("modal-payload", 0);
    if (mfd < 0)
        return modal__fail(err, MODAL_EIO, "memfd_create failed: %s", strerror(errno));
    modal_status st = modal__enc_write_fd(enc, mfd, err);
    if (st == MODAL_OK && modal__memfd_seal(mfd) != 0)
        st = modal__fail(err, MODAL_EIO, "sealing a payload memfd failed: %s", strerror(errno));
    if (st == MODAL_OK)
        st = modal__ipc_send(sock, type, meta, NULL, enc->total, mfd, err);
    close(mfd);
    return st;
}

modal__buf *modal__buf_map_fd(int fd, size_t len, int populate)
{
    if (len == 0)
        return modal__buf_new(0);
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0);
    if (m == MAP_FAILED)
        return NULL;
    modal__buf *b = modal__buf_wrap_mmap(m, len);
    if (b == NULL)
        munmap(m, len);
    return b;
}

/* Each receiving thread keeps one buffer for whole messages: allocating
 * 80 KiB per message cost more than the message. It is freed when the
 * thread ends. */
static pthread_key_t recv_key;
static pthread_once_t recv_once = PTHREAD_ONCE_INIT;

static void recv_key_init(void)
{
    pthread_key_create(&recv_key, free);
}

modal_status modal__ipc_recv(int sock, uint32_t *type, cJSON **meta,
                             modal__buf **payload, int *fd_out, modal_error *err)
{
    return modal__ipc_recv_flags(sock, 0, type, meta, payload, fd_out, err);
}

modal_status modal__ipc_recv_flags(int sock, int rflags, uint32_t *type, cJSON **meta,
                                   modal__buf **payload, int *fd_out, modal_error *err)
{
    *meta = NULL;
    *payload = NULL;
    if (fd_out != NULL)
        *fd_out = -1;
    size_t cap = MODAL__IPC_HEADER + MODAL__IPC_META_MAX + MODAL__IPC_INLINE_MAX;
    pthread_once(&recv_once, recv_key_init);
    uint8_t *buf = pthread_getspecific(recv_key);
    if (buf == NULL) {
        if ((buf = modal__malloc(cap)) == NULL)
            return modal__fail(err, MODAL_ENOMEM, "out of memory receiving a worker message");
        pthread_setspecific(recv_key, buf);
    }
    union {
        char b[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {buf, cap};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                        .msg_controllen = sizeof ctl.b};
    ssize_t n;
    do
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | rflags);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return MODAL_EPENDING; /* only with MSG_DONTWAIT: nothing queued */
    int fd = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); n > 0 && c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < nfd; i++) {
                int f;
                memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
                if (fd < 0)
                    fd = f;
                else
                    close(f); /* only one fd is expected */
            }
        }
    }
    modal_status st = MODAL_OK;
    /* A peer that exits with messages it never read resets the socket:
     * that is a close too (a GPU worker that broke its context exits so). */
    if (n == 0 || (n < 0 && errno == ECONNRESET)) {
        st = modal__fail(err, MODAL_EIO, "worker socket closed");
        goto out;
    }
    if (n < 0) {
        st = modal__fail(err, MODAL_EIO, "reading the worker socket failed: %s", strerror(errno));
        goto out;
    }
    if ((size_t)n < MODAL__IPC_HEADER || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        st = modal__fail(err, MODAL_ECODEC, "worker message of %zd bytes is truncated or malformed", n);
        goto out;
    }
    *type = modal__get32(buf);
    uint32_t flags = modal__get32(buf + 4), mlen = modal__get32(buf + 8);
    uint64_t plen = modal__get64(buf + 16);
    if (mlen > MODAL__IPC_META_MAX || MODAL__IPC_HEADER + (size_t)mlen > (size_t)n) {
        st = modal__fail(err, MODAL_ECODEC, "worker message metadata length %u is invalid", mlen);
        goto out;
    }
    if (mlen > 0) {
        *meta = cJSON_ParseWithLength((const char *)buf + MODAL__IPC_HEADER, mlen);
        if (*meta == NULL) {
            st = modal__fail(err, MODAL_ECODEC, "worker message metadata is not valid JSON");
            goto out;
        }
    }
    size_t inline_len = (size_t)n - MODAL__IPC_HEADER - mlen;
    if (flags & MODAL__IPC_FLAG_FD) {
        if (fd < 0 || inline_len != 0) {
            st = modal__fail(err, MODAL_ECODEC, "worker message announces a memfd but carries none");
            goto out;
        }
        if (plen > 0) {
            struct stat sb;
            int seals = fcntl(fd, F_GET_SEALS);
            const int need = F_SEAL_SHRINK | F_SEAL_WRITE;
            if (seals < 0 || (seals & need) != need) {
                st = modal__fail(err, MODAL_ECODEC, "the payload memfd is not sealed against "
                                 "shrinking and writing; refusing to map it");
                goto out;
            }
            if (fstat(fd, &sb) != 0 || (uint64_t)sb.st_size < plen) {
                st = modal__fail(err, MODAL_ECODEC, "the memfd holds fewer than the %llu bytes "
                                 "announced", (unsigned long long)plen);
                goto out;
            }
            /* The receiver of a handed-over fd maps lazily; others want the
             * bytes now, so the mapping is prefaulted. */
            *payload = modal__buf_map_fd(fd, plen, fd_out == NULL);
            if (*payload == NULL) {
                st = modal__fail(err, MODAL_EIO, "mapping a %llu-byte payload failed: %s",
                                 (unsigned long long)plen, strerror(errno));
                goto out;
            }
            if (fd_out != NULL) {
                *fd_out = fd;
                fd = -1;
            }
        }
    } else if (plen != inline_len) {
        st = modal__fail(err, MODAL_ECODEC, "worker message payload is %zu bytes, header says %llu",
                         inline_len, (unsigned long long)plen);
        goto out;
    } else if (plen > 0) {
        *payload = modal__buf_new(plen);
        if (*payload == NULL) {
            st = modal__fail(err, MODAL_ENOMEM, "out of memory receiving a payload");
            goto out;
        }
        memcpy((*payload)->base, buf + MODAL__IPC_HEADER + mlen, plen);
    }
out:
    if (fd >= 0)
        close(fd);
    if (st != MODAL_OK) {
        cJSON_Delete(*meta);
        *meta = NULL;
        modal__buf_unref(*payload);
        *payload = NULL;
    }
    return st;
}

static size_t align64(size_t x)
{
    return (x + 63) & ~(size_t)63;
}

modal_status modal__bundle_build(const modal__bundle_part *parts, size_t n,
                                 modal__buf **out, modal_error *err)
{
    size_t total = align64(8 + 8 * n);
    for (size_t i = 0; i < n; i++)
        total = align64(total) + parts[i].len;
    modal__buf *b = modal__buf_new(total);
    if (b == NULL)
        return modal__fail(err, MODAL_ENOMEM, "out of memory building a bundle of %zu frames", n);
    memset(b->base, 0, total);
    memcpy(b->base, MODAL__BUNDLE_MAGIC, 4);
    modal__put32(b->base + 4, (uint32_t)n);
    size_t off = align64(8 + 8 * n);
    for (size_t i = 0; i < n; i++) {
        modal__put64(b->base + 8 + 8 * i, parts[i].len);
        off = align64(off);
        if (parts[i].len > 0)
            memcpy(b->base + off, parts[i].p, parts[i].len);
        off += parts[i].len;
    }
    *out = b;
    return MODAL_OK;
}

modal_status modal__bundle_parse(const modal__buf *buf,
                                 modal__bundle_part **parts, size_t *n,
                                 modal_error *err)
{
    *parts = NULL;
    *n = 0;
    if (buf == NULL || buf->len < 8 || memcmp(buf->base, MODAL__BUNDLE_MAGIC, 4) != 0)
        return modal__fail(err, MODAL_ECODEC, "body is not a frame bundle (no \"" MODAL__BUNDLE_MAGIC "\" header)");
    uint32_t count = modal__get32(buf->base + 4);
    if (count > (buf->len - 8) / 8)
        return modal__fail(err, MODAL_ECODEC, "bundle announces %u frames but has %zu bytes",
                           count, buf->len);
    modal__bundle_part *ps = modal__calloc(count ? count : 1, sizeof *ps);
    if (ps == NULL)
        return modal__fail(err, MODAL_ENOMEM, "out of memory reading a bundle of %u frames", count);
    size_t off = align64(8 + 8 * (size_t)count);
    for (uint32_t i = 0; i < count; i++) {
        uint64_t len = modal__get64(buf->base + 8 + 8 * (size_t)i);
        off = align64(off);
        if (off > buf->len || len > buf->len - off) {
            free(ps);
            return modal__fail(err, MODAL_ECODEC,
                               "bundle frame %u (%llu bytes at offset %zu) runs past the end (%zu bytes)",
                               i, (unsigned long long)len, off, buf->len);
        }
        ps[i].p = buf->base + off;
        ps[i].len = (size_t)len;
        off += (size_t)len;
    }
    *parts = ps;
    *n = count;
    return MODAL_OK;
}
