/*
 * test_gpu.c: the launch checks of lib/gpu.c, which need no driver: with
 * MODAL_CUDA_LIBRARY naming a file that does not exist, every bad launch
 * is still refused for what is wrong with it (not for the missing
 * driver), its message naming the kernel and the bad value; the bytes of
 * the arrays are summed with their alignment; a fatbin's length comes
 * from its header.
 */
#include "testutil.h"

#include "gpu.h"

/* A fatbin in nvcc's layout: a 16-byte header saying 72 bytes follow it,
 * then one entry of SASS for sm_90 (a 64-byte header, 8 bytes of code). */
static const unsigned char tiny_fatbin[88] = {
    0x50, 0xed, 0x55, 0xba, 1, 0, 16, 0, 72, 0, 0, 0, 0, 0, 0, 0,
    2, 0, 1, 1, 64, 0, 0, 0, 8, [40] = 8, 0, 1, 0, 90, [56] = 0x11,
};

static const modal_gpu_image image = {"k.cu", tiny_fatbin, 0};
static int n = 10;
static float x[10], y[10];

static modal_gpu_launch good(modal_gpu_arg *a)
{
    a[0] = MODAL_GPU_SCALAR(n);
    a[1] = MODAL_GPU_IN(x, 10);
    a[2] = MODAL_GPU_OUT(y, 3);
    return (modal_gpu_launch){.image = &image, .kernel = "k", .grid = MODAL_DIM3(2),
                              .block = MODAL_DIM3(32, 2), .args = a, .nargs = 3};
}

/* l must be refused with want, naming needle, by the check and by
 * modal_gpu_run alike. */
static void refused(const modal_gpu_launch *l, modal_status want, const char *needle)
{
    size_t bytes, total;
    modal_error err;
    memset(&err, 0, sizeof err);
    assert_int_equal(modal__gpu_launch_check(l, &bytes, &total, &err), want);
    assert_message_contains(err, needle);
    memset(&err, 0, sizeof err);
    assert_int_equal(modal_gpu_run(l, NULL, &err), want);
    assert_int_equal(err.code, want);
    assert_message_contains(err, needle);
}

static void test_good_launch_sizes(void **state)
{
    modal_gpu_arg a[3];
    modal_gpu_launch l = good(a);
    size_t bytes = 0, total = 0;
    modal_error err;
    assert_int_equal(modal__gpu_launch_check(&l, &bytes, &total, &err), MODAL_OK);
    assert_int_equal(bytes, 88);      /* the header's 16 and the 72 it announces */
    assert_int_equal(total, 256 * 2); /* 40 and 12 bytes, each at a 256-byte boundary */
    modal_gpu_image sized = {"k.cubin", tiny_fatbin, 40};
    l.image = &sized;
    assert_int_equal(modal__gpu_launch_check(&l, &bytes, &total, &err), MODAL_OK);
    assert_int_equal(bytes, 40);
}

static void test_checks_come_before_the_driver(void **state)
{
    modal_gpu_arg a[3], bad[3], many[MODAL_GPU_MAX_ARGS + 1];
    modal_gpu_launch l, g = good(a);
    unsigned char not_fatbin[8] = "cubin!!";
    modal_gpu_image plain = {"p.cubin", not_fatbin, 0}, nodata = {"n.cu", NULL, 0};
    refused(NULL, MODAL_EINVAL, "modal_gpu_run: launch is NULL");
    l = g, l.kernel = NULL;
    refused(&l, MODAL_EINVAL, "the kernel name is NULL");
    l = g, l.kernel = "";
    refused(&l, MODAL_EINVAL, "the kernel name is empty");
    char longname[300];
    memset(longname, 'k', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    l = g, l.kernel = longname;
    refused(&l, MODAL_EINVAL, "is 299 bytes long; at most 255");
    l = g, l.image = NULL;
    refused(&l, MODAL_EINVAL, "k: image is NULL");
    l = g, l.image = &nodata;
    refused(&l, MODAL_EINVAL, "k: n.cu: data is NULL");
    l = g, l.image = &plain;
    refused(&l, MODAL_EINVAL, "k: p.cubin: size is 0 but the data is not a fatbin");
    l = g, l.grid.x = 0;
    refused(&l, MODAL_EINVAL, "k: the grid is 0 x 1 x 1; every size must be at least 1");
    l = g, l.block.y = 0;
    refused(&l, MODAL_EINVAL, "k: the block is 32 x 0 x 1");
    for (int i = 0; i <= MODAL_GPU_MAX_ARGS; i++)
        many[i] = MODAL_GPU_SCALAR(n);
    l = g, l.args = many, l.nargs = MODAL_GPU_MAX_ARGS + 1;
    refused(&l, MODAL_ELIMIT, "k: 33 arguments; a launch takes at most 32");
    l = g, l.args = NULL;
    refused(&l, MODAL_EINVAL, "k: nargs is 3 but args is NULL");
    l = g, l.args = bad;
    memcpy(bad, a, sizeof bad);
    bad[0].size = 0;
    refused(&l, MODAL_EINVAL, "k: argument 0 is a scalar of 0 bytes; a scalar has 1 to 256");
    bad[0].size = 257;
    refused(&l, MODAL_EINVAL, "argument 0 is a scalar of 257 bytes");
    bad[0] = (modal_gpu_arg){MODAL_GPU_ARG_SCALAR, NULL, 4};
    refused(&l, MODAL_EINVAL, "k: argument 0 is a scalar whose data is NULL");
    memcpy(bad, a, sizeof bad);
    bad[2].data = NULL;
    refused(&l, MODAL_EINVAL, "k: argument 2 is an array of 12 bytes whose data is NULL");
    memcpy(bad, a, sizeof bad);
    bad[1].kind = (modal_gpu_arg_kind)0;
    refused(&l, MODAL_EINVAL, "k: argument 1 has kind 0");
    memcpy(bad, a, sizeof bad);
    bad[1].size = SIZE_MAX - 8;
    refused(&l, MODAL_ELIMIT, "k: argument 1: the arrays add up");
}

static void test_no_driver(void **state)
{
    modal_gpu_arg a[3];
    modal_gpu_launch l = good(a);
    modal_error err;
    assert_int_equal(modal_gpu_count(), 0);
    assert_int_equal(modal_gpu_run(&l, NULL, &err), MODAL_EGPU);
    assert_message_contains(err, "k: no GPU in this process: ");
    assert_message_contains(err, "/nonexistent/libcuda.so.1");
    modal_gpu_info info;
    assert_int_equal(modal_gpu_info_get(0, &info, &err), MODAL_EGPU);
    assert_int_equal(modal_gpu_info_get(0, NULL, &err), MODAL_EINVAL);
    void *p;
    assert_int_equal(modal_gpu_kernel(0, &image, "k", NULL, &err), MODAL_EINVAL);
    assert_int_equal(modal_gpu_kernel(0, &image, "k", &p, &err), MODAL_EGPU);
    assert_int_equal(modal_gpu_context(0, &p, &err), MODAL_EGPU);
    char msg[256];
    assert_int_equal(modal__gpu_warm(msg, sizeof msg), MODAL_EGPU);
    assert_non_null(strstr(msg, "this worker sees no GPU: "));
    assert_false(modal__gpu_lost());
}

int main(void)
{
    setenv("MODAL_CUDA_LIBRARY", "/nonexistent/libcuda.so.1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_launch_sizes),
        cmocka_unit_test(test_checks_come_before_the_driver),
        cmocka_unit_test(test_no_driver),
    };
    return cmocka_run_group_tests_name("gpu", tests, NULL, NULL) != 0;
}
