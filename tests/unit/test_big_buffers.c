/*
 * test_big_buffers.c: the library's large buffers.
 *
 * lib/memfd_array.c: large arrays a worker makes live in a memfd and leave
 * as their result frame without a copy: the receiver gets the very same
 * memfd (same inode), sealed, and decodes an equal value; the sender's
 * array stays readable. Sending it twice, or with an envelope too long for
 * the room in front of the data, falls back to a copy that decodes the
 * same. No descriptor is left open.
 *
 * lib/alloc.c: large anonymous mappings are kept when freed and handed out
 * again, the largest ones first.
 */
#include "testutil.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define BIG ((size_t)8 << 20) /* over MODAL__BIG_ALLOC */

/* An array of n u8 made while arrays go to memfds as in a worker, filled
 * with a pattern that depends on seed. */
static modal_value *worker_array(size_t n, unsigned seed)
{
    modal__arrays_in_memfd = true;
    size_t shape[1] = {n};
    modal_value *v = modal_array_new(MODAL_U8, 1, shape);
    modal__arrays_in_memfd = false;
    assert_non_null(v);
    uint8_t *p = modal_array_data_mut(v);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 131u + seed);
    return v;
}

/* Send v as a RESULT-like message under "result" with envelope field
 * "note" = note (NULL: none); receive it on the other end; check the
 * decoded value equals v. Returns the received memfd's inode. */
static ino_t send_and_check(const modal_value *v, const char *note)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    modal_error err;
    modal__enc enc;
    cJSON *env = cJSON_CreateObject();
    modal__json_num(env, "v", 1);
    if (note != NULL)
        cJSON_AddStringToObject(env, "note", note);
    assert_int_equal(modal__msg_build(env, "result", v, &enc, &err), MODAL_OK);
    assert_int_equal(modal__ipc_send_enc(sv[0], MODAL__MSG_RESULT, "{}", &enc, &err), MODAL_OK);
    modal__enc_free(&enc);

    uint32_t type = 0;
    cJSON *meta = NULL;
    modal__buf *payload = NULL;
    int fd = -1;
    assert_int_equal(modal__ipc_recv(sv[1], &type, &meta, &payload, &fd, &err), MODAL_OK);
    assert_int_equal(type, MODAL__MSG_RESULT);
    assert_true(fd >= 0);
    int seals = fcntl(fd, F_GET_SEALS);
    int all = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL;
    assert_int_equal(seals & all, all);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);

    modal__dec dec;
    assert_int_equal(modal__dec_open(payload, 1, &dec, &err), MODAL_OK);
    modal_value *got = NULL;
    assert_int_equal(modal__msg_value(&dec, "result", &got, &err), MODAL_OK);
    const cJSON *jn = cJSON_GetObjectItemCaseSensitive(dec.env, "note");
    if (note != NULL)
        assert_string_equal(cJSON_GetStringValue(jn), note);
    modal__dec_close(&dec);
    assert_true(modal_value_equal(got, v));
    modal_value_free(got);
    modal__buf_unref(payload);
    cJSON_Delete(meta);
    close(fd);
    close(sv[0]);
    close(sv[1]);
    return sb.st_ino;
}

static ino_t memfd_inode(const modal_value *v)
{
    struct stat sb;
    assert_int_equal(fstat(v->u.arr.backing->fd, &sb), 0);
    return sb.st_ino;
}

static void test_worker_array_lives_in_memfd(void **state)
{
    (void)state;
    modal_value *v = worker_array(BIG, 1);
    const modal__buf *b = v->u.arr.backing;
    assert_non_null(b);
    assert_int_equal(b->kind, MODAL__BUF_MEMFD);
    assert_ptr_equal(b->base, v->u.arr.data);
    assert_int_equal((uintptr_t)v->u.arr.data % 4096, 0);
    struct stat sb;
    assert_int_equal(fstat(b->fd, &sb), 0);
    assert_int_equal((size_t)sb.st_size, MODAL__MEMFD_HEAD + BIG);
    modal_value_free(v);
}

static void test_result_leaves_as_is(void **state)
{
    (void)state;
    int before = open_fds();
    modal_value *v = worker_array(BIG, 7);
    ino_t own = memfd_inode(v);
    /* The receiver holds the array's own memfd: nothing was copied. */
    assert_true(send_and_check(v, NULL) == own);
    /* The sender's array is still there, unchanged, now read-only. */
    const uint8_t *p = v->u.arr.data;
    assert_int_equal(p[0], 7);
    assert_int_equal(p[BIG - 1], (uint8_t)((BIG - 1) * 131u + 7));
    /* A second send cannot rewrite the sealed head: it goes as a copy. */
    assert_true(send_and_check(v, NULL) != own);
    modal_value_free(v);
    assert_int_equal(open_fds(), before);
}

static void test_long_envelope_is_copied(void **state)
{
    (void)state;
    int before = open_fds();
    modal_value *v = worker_array(BIG, 3);
    ino_t own = memfd_inode(v);
    char *note = malloc(MODAL__MEMFD_HEAD);
    assert_non_null(note);
    memset(note, 'n', MODAL__MEMFD_HEAD - 1);
    note[MODAL__MEMFD_HEAD - 1] = '\0';
    assert_true(send_and_check(v, note) != own);
    free(note);
    /* Still unsealed: the next send goes as it is. */
    assert_true(send_and_check(v, "short") == own);
    modal_value_free(v);
    assert_int_equal(open_fds(), before);
}

static void test_nested_array_is_copied(void **state)
{
    (void)state;
    int before = open_fds();
    modal_value *v = worker_array(BIG, 5);
    ino_t own = memfd_inode(v);
    modal_value *list = modal_list();
    modal_error err;
    assert_int_equal(modal_list_append(list, modal_int(42), &err), MODAL_OK);
    assert_int_equal(modal_list_append(list, v, &err), MODAL_OK);
    /* The frame's one attachment is still all of the memfd, and the frame
     * is laid out around it. */
    assert_true(send_and_check(list, NULL) == own);
    modal_value_free(list);
    assert_int_equal(open_fds(), before);
}

static void test_other_arrays_stay_in_memory(void **state)
{
    (void)state;
    size_t shape[1] = {BIG};
    modal_value *v = modal_array_new(MODAL_U8, 1, shape); /* not in a worker */
    assert_non_null(v);
    assert_int_not_equal(v->u.arr.backing->kind, MODAL__BUF_MEMFD);
    modal_value_free(v);
    modal__arrays_in_memfd = true;
    shape[0] = 4096; /* small: the heap */
    v = modal_array_new(MODAL_U8, 1, shape);
    modal__arrays_in_memfd = false;
    assert_non_null(v);
    assert_null(v->u.arr.backing);
    modal_value_free(v);
}

static void test_head_padded_bounds(void **state)
{
    (void)state;
    uint8_t head[MODAL__MEMFD_HEAD];
    modal_error err;
    modal__enc enc;
    /* No attachment: there is nothing to place. */
    cJSON *env = cJSON_CreateObject();
    assert_int_equal(modal__msg_build(env, "result", NULL, &enc, &err), MODAL_OK);
    assert_int_equal(modal__enc_head_padded(&enc, head, sizeof head), -1);
    modal__enc_free(&enc);
    /* An attachment, but a room too small or not a multiple of 64. */
    uint8_t bytes[100] = {0};
    modal_value *b = modal_bytes(bytes, sizeof bytes);
    env = cJSON_CreateObject();
    cJSON_AddStringToObject(env, "note", "an envelope longer than 64 bytes, so that a room of "
                                         "64 cannot hold the head");
    assert_int_equal(modal__msg_build(env, "result", b, &enc, &err), MODAL_OK);
    assert_int_equal(modal__enc_head_padded(&enc, head, 64), -1);
    assert_int_equal(modal__enc_head_padded(&enc, head, 4000), -1);
    /* Laid out to the room: the envelope reads the same after spaces. */
    assert_int_equal(modal__enc_head_padded(&enc, head, sizeof head), 0);
    assert_int_equal(modal__get32(head + 8), MODAL__MEMFD_HEAD - 24);
    assert_int_equal(head[24], ' ');
    assert_int_equal(head[MODAL__MEMFD_HEAD - 1], '}');
    modal__enc_free(&enc);
    modal_value_free(b);
}

/* Freed large mappings come back for the next buffer that fits, and a
 * large one displaces the smallest kept one. */
static void test_spare_mappings(void **state)
{
    (void)state;
    const size_t small = 5 << 20, large = 24 << 20;
    modal__buf *a = modal__buf_new(small), *b = modal__buf_new(small);
    assert_non_null(a);
    assert_non_null(b);
    modal__buf_unref(a);
    modal__buf_unref(b); /* both kept: 5 MiB, 5 MiB */
    modal__buf *c = modal__buf_new(large);
    assert_non_null(c);
    uint8_t *large_base = c->base;
    memset(large_base, 0x5a, large);
    modal__buf_unref(c); /* displaces a 5 MiB one */
    /* Had it been unmapped, this would most likely land in its place. */
    void *other = mmap(NULL, large, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(other != MAP_FAILED);
    modal__buf *d = modal__buf_new(large - 4096);
    assert_non_null(d);
    assert_ptr_equal(d->base, large_base);
    d->base[0] = 1; /* writable, whatever MADV_FREE left there */
    modal__buf *e = modal__buf_new(small);
    assert_non_null(e); /* the other 5 MiB one, or a new mapping */
    modal__buf_unref(d);
    modal__buf_unref(e);
    munmap(other, large);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worker_array_lives_in_memfd),
        cmocka_unit_test(test_result_leaves_as_is),
        cmocka_unit_test(test_long_envelope_is_copied),
        cmocka_unit_test(test_nested_array_is_copied),
        cmocka_unit_test(test_other_arrays_stay_in_memory),
        cmocka_unit_test(test_head_padded_bounds),
        cmocka_unit_test(test_spare_mappings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
