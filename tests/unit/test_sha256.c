/*
 * test_sha256.c: the SHA-256 that names executables, against the FIPS
 * 180-4 test vectors, fed whole and in awkward pieces, and over a file.
 */
#include "testutil.h"

#include <unistd.h>

static void hex_of(const void *p, size_t n, size_t piece, char out[65])
{
    modal__sha256 s;
    modal__sha256_init(&s);
    const uint8_t *q = p;
    for (size_t off = 0; off < n; off += piece)
        modal__sha256_update(&s, q + off, n - off < piece ? n - off : piece);
    modal__sha256_hex(&s, out);
}

static void test_vectors(void **state)
{
    char h[65];
    hex_of("", 0, 1, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hex_of("abc", 3, 3, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(two, strlen(two), 7, h);
    assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_million_a_in_pieces(void **state)
{
    size_t n = 1000000;
    char *a = malloc(n);
    assert_non_null(a);
    memset(a, 'a', n);
    const size_t pieces[] = {1, 55, 56, 63, 64, 65, 4096, 1000000};
    for (size_t i = 0; i < sizeof pieces / sizeof *pieces; i++) {
        char h[65];
        hex_of(a, n, pieces[i], h);
        assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    }
    free(a);
}

static void test_file(void **state)
{
    char path[] = "/tmp/modal-sha-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "abc", 3), 3);
    close(fd);
    char h[65];
    modal_error err;
    assert_int_equal(modal__sha256_file(path, h, &err), MODAL_OK);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    unlink(path);
    assert_int_equal(modal__sha256_file(path, h, &err), MODAL_EIO);
    assert_message_contains(err, path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_million_a_in_pieces),
        cmocka_unit_test(test_file),
    };
    return cmocka_run_group_tests_name("sha256", tests, NULL, NULL);
}
