/*
 * alloc.c: the library's allocator wrappers (with failure injection for
 * tests) and reference-counted buffers that decoded values borrow from.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

/*
 * Failure injection: fail_after < 0 means off. The counters are atomics so
 * a multi-threaded test does not race, though injection is meant for
 * single-threaded tests.
 */
static atomic_long fail_after = -1;
static atomic_long alloc_count;

long modal__alloc_fail_after(long n)
{
    long made = atomic_exchange(&alloc_count, 0);
    atomic_store(&fail_after, n);
    return made;
}

static int should_fail(void)
{
    atomic_fetch_add(&alloc_count, 1);
    long left = atomic_load(&fail_after);
    if (left < 0)
        return 0;
    if (left == 0)
        return 1;
    atomic_fetch_sub(&fail_after, 1);
    return 0;
}

void *modal__malloc(size_t n)
{
    if (should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *modal__calloc(size_t n, size_t size)
{
    if (should_fail())
        return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

void *modal__realloc(void *p, size_t n)
{
    if (should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

void *modal__reserve(void *p, size_t *cap, size_t need, size_t first)
{
    if (need <= *cap)
        return p;
    size_t ncap = *cap ? *cap : first;
    while (ncap < need)
        ncap *= 2;
    void *np = modal__realloc(p, ncap);
    if (np != NULL)
        *cap = ncap;
    return np;
}

char *modal__strndup(const char *s, size_t n)
{
    char *d = modal__malloc(n + 1);
    if (d == NULL)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *modal__strdup(const char *s)
{
    return modal__strndup(s, strlen(s));
}

/* A buffer record for memory that already exists; refs = 1. */
static modal__buf *buf_record(uint8_t *base, size_t len, int kind, modal__buf *parent,
                              size_t map_len)
{
    modal__buf *b = modal__malloc(sizeof *b);
    if (b == NULL)
        return NULL;
    atomic_init(&b->refs, 1);
    b->base = base;
    b->len = len;
    b->kind = kind;
    b->parent = parent;
    b->map_len = map_len;
    b->fd = -1;
    return b;
}

/*
 * Large anonymous mappings are kept after use and handed out again: a warm
 * worker that returns arrays of the same size call after call then reuses
 * pages already faulted in, instead of paying for a fresh fault per page.
 * Kept mappings are marked MADV_FREE, so the kernel may still reclaim them
 * under memory pressure.
 */
#define SPARE_MAPS 2
static pthread_mutex_t spare_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    void *base;
    size_t len;
} spare[SPARE_MAPS];

static void *take_spare(size_t len, size_t *map_len)
{
    void *m = NULL;
    pthread_mutex_lock(&spare_lock);
    for (int i = 0; i < SPARE_MAPS && m == NULL; i++)
        if (spare[i].base != NULL && spare[i].len >= len && spare[i].len / 2 <= len) {
            m = spare[i].base;
            *map_len = spare[i].len;
            spare[i].base = NULL;
        }
    pthread_mutex_unlock(&spare_lock);
    return m;
}

static void give_back(void *base, size_t len)
{
    pthread_mutex_lock(&spare_lock);
    int slot = -1;
    for (int i = 0; i < SPARE_MAPS && slot < 0; i++)
        if (spare[i].base == NULL)
            slot = i;
    /* All kept: a larger mapping takes the place of the smallest, so that
     * the small buffers of a first call do not make every later large one
     * start from fresh memory. */
    void *evict = NULL;
    size_t evict_len = 0;
    for (int i = 0; i < SPARE_MAPS && slot < 0; i++)
        if (spare[i].len < len && (evict == NULL || spare[i].len < evict_len)) {
            evict = spare[i].base;
            evict_len = spare[i].len;
        }
    for (int i = 0; i < SPARE_MAPS && slot < 0 && evict != NULL; i++)
        if (spare[i].base == evict)
            slot = i;
    if (slot >= 0) {
        madvise(base, len, MADV_FREE);
        spare[slot].base = base;
        spare[slot].len = len;
        base = NULL;
    } else {
        evict = NULL;
    }
    pthread_mutex_unlock(&spare_lock);
    if (evict != NULL)
        munmap(evict, evict_len);
    if (base != NULL)
        munmap(base, len);
}

modal__buf *modal__buf_new(size_t len)
{
    if (len >= MODAL__BIG_ALLOC) {
        if (should_fail())
            return NULL;
        size_t map_len = len;
        void *m = take_spare(len, &map_len);
        if (m == NULL) {
            /* Populated in one go: one fault per page costs several times
             * more than the kernel filling the page table at once, and
             * huge pages proved slow and erratic to allocate (see
             * docs/performance.md). */
            m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
            if (m == MAP_FAILED)
                return NULL;
        }
        modal__buf *b = buf_record(m, len, MODAL__BUF_ANON, NULL, map_len);
        if (b == NULL)
            give_back(m, map_len);
        return b;
    }
    uint8_t *base = modal__malloc(len);
    modal__buf *b = base != NULL ? buf_record(base, len, MODAL__BUF_HEAP, NULL, 0) : NULL;
    if (b == NULL)
        free(base);
    return b;
}

modal__buf *modal__buf_wrap_mmap(void *base, size_t len)
{
    return buf_record(base, len, MODAL__BUF_MMAP, NULL, 0);
}

modal__buf *modal__buf_view(modal__buf *parent, size_t off, size_t len)
{
    if (parent == NULL || off > parent->len || len > parent->len - off)
        return NULL;
    modal__buf *b = buf_record(parent->base + off, len, MODAL__BUF_VIEW, parent, 0);
    if (b != NULL)
        modal__buf_ref(parent);
    return b;
}

modal__buf *modal__buf_ref(modal__buf *b)
{
    if (b != NULL)
        atomic_fetch_add(&b->refs, 1);
    return b;
}

void modal__buf_unref(modal__buf *b)
{
    if (b == NULL || atomic_fetch_sub(&b->refs, 1) != 1)
        return;
    if (b->kind == MODAL__BUF_VIEW) {
        modal__buf_unref(b->parent);
    } else if (b->kind == MODAL__BUF_MMAP) {
        if (b->len > 0)
            munmap(b->base, b->len);
    } else if (b->kind == MODAL__BUF_ANON) {
        give_back(b->base, b->map_len);
    } else if (b->kind == MODAL__BUF_MEMFD) {
        munmap(b->base - MODAL__MEMFD_HEAD, b->map_len);
        close(b->fd);
    } else {
        free(b->base);
    }
    free(b);
}
