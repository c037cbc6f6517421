/*
 * test_cuda.c: the driver loader (lib/cuda.c), the inventory
 * (lib/gpu_inventory.c), the fatbin parser (lib/fatbin.c) and the test
 * double they run against (tests/cuda_fake, found beside this binary in
 * cuda_fake/).
 *
 * The loader runs once per process, so every case that loads a driver runs
 * in a forked child with its own environment; the child checks with
 * CHECK (which exits non-zero) and the parent asserts a clean exit.
 */
#include "testutil.h"

#include "cuda.h"

#include <limits.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

static char fake_dir[PATH_MAX];   /* .../tests/cuda_fake */
static char data_dir[PATH_MAX];   /* .../tests/data */
static char log_path[PATH_MAX];   /* the fake's call log of the current case */

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            _exit(1);                                                               \
        }                                                                           \
    } while (0)
#define CHECK_CONTAINS(hay, needle)                                                 \
    do {                                                                            \
        if (strstr((hay), (needle)) == NULL) {                                      \
            fprintf(stderr, "%s:%d: \"%s\" lacks \"%s\"\n", __FILE__, __LINE__,     \
                    (hay), (needle));                                               \
            _exit(1);                                                               \
        }                                                                           \
    } while (0)
#define CHECK_RC(call)                                                              \
    do {                                                                            \
        CUresult r_ = (call);                                                       \
        if (r_ != 0) {                                                              \
            fprintf(stderr, "%s:%d: %s returned %d\n", __FILE__, __LINE__, #call, r_); \
            _exit(1);                                                               \
        }                                                                           \
    } while (0)

/* The file variant (libcuda.so.1, libcuda_partial.so.1, ...) of the fake. */
static const char *fake(const char *variant)
{
    static char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", fake_dir, variant);
    return path;
}

/*
 * Run fn in a child whose environment is the fake's variables of env
 * ("NAME=VALUE", NULL-terminated) and nothing else of the fake's, with
 * MODAL_CUDA_LIBRARY set to the plain fake unless env sets it.
 */
static void in_child(void (*fn)(void), const char *const *env)
{
    char tmpl[] = "/tmp/test_cuda_log.XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    close(fd);
    snprintf(log_path, sizeof log_path, "%s", tmpl);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        static const char *const clear[] = {
            "MODAL_FAKE_CUDA_DEVICES", "MODAL_FAKE_CUDA_FAIL", "MODAL_FAKE_CUDA_VERSION",
            "MODAL_FAKE_CUDA_KERNELS", "CUDA_VISIBLE_DEVICES",
        };
        for (size_t i = 0; i < sizeof clear / sizeof *clear; i++)
            unsetenv(clear[i]);
        setenv("MODAL_CUDA_LIBRARY", fake("libcuda.so.1"), 1);
        setenv("MODAL_FAKE_CUDA_LOG", log_path, 1);
        for (size_t i = 0; env != NULL && env[i] != NULL; i++) {
            char name[64];
            const char *eq = strchr(env[i], '=');
            CHECK(eq != NULL && (size_t)(eq - env[i]) < sizeof name);
            snprintf(name, sizeof name, "%.*s", (int)(eq - env[i]), env[i]);
            setenv(name, eq + 1, 1);
        }
        fn();
        fflush(NULL);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    unlink(log_path);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        print_error("child failed (status %d)\n", status);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* The fake's call log so far (static buffer). */
static const char *read_log(void)
{
    static char buf[65536];
    FILE *f = fopen(log_path, "r");
    CHECK(f != NULL);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Load the driver, which must succeed. */
static const modal__cuda *load_ok(void)
{
    modal_error err;
    memset(&err, 0, sizeof err);
    const modal__cuda *cu = modal__cuda_get(&err);
    if (cu == NULL)
        fprintf(stderr, "load failed: %s\n", err.message);
    CHECK(cu != NULL);
    return cu;
}

/* Load the driver, which must fail with MODAL_EGPU the same way twice. */
static void load_fails(const char *needle1, const char *needle2)
{
    modal_error err, again;
    memset(&err, 0, sizeof err);
    memset(&again, 0, sizeof again);
    CHECK(modal__cuda_get(&err) == NULL);
    CHECK(err.code == MODAL_EGPU);
    CHECK_CONTAINS(err.message, needle1);
    if (needle2 != NULL)
        CHECK_CONTAINS(err.message, needle2);
    CHECK(modal__cuda_get(&again) == NULL);
    CHECK(strcmp(err.message, again.message) == 0);
    CHECK(modal__cuda_get(NULL) == NULL);
}

#define H100 "NVIDIA H100 80GB HBM3|81559|9.0|GPU-11111111-2222-3333-4444-000000000001"
#define A100 "NVIDIA A100-SXM4-40GB|40960|8.0|GPU-aaaaaaaa-2222-3333-4444-000000000002"
#define T4 "Tesla T4|15360|7.5|GPU-7e7e7e7e-2222-3333-4444-000000000003"
#define THREE "MODAL_FAKE_CUDA_DEVICES=" H100 ";" A100 ";" T4

/* ---- the loader ---------------------------------------------------------- */

static void child_no_library(void)
{
    load_fails("no CUDA driver: /nonexistent/libcuda.so.1", "cannot open shared object file");
}
static void test_no_library(void **state)
{
    const char *env[] = {"MODAL_CUDA_LIBRARY=/nonexistent/libcuda.so.1", NULL};
    in_child(child_no_library, env);
}

static void child_missing_symbol(void)
{
    load_fails("lacks cuLaunchKernel", "libcuda_partial.so.1");
}
static void test_missing_symbol(void **state)
{
    char lib[PATH_MAX + 100];
    snprintf(lib, sizeof lib, "MODAL_CUDA_LIBRARY=%s", fake("libcuda_partial.so.1"));
    const char *env[] = {lib, THREE, NULL};
    in_child(child_missing_symbol, env);
}

static void child_old_driver(void)
{
    load_fails("the CUDA driver is 11.4; libmodal needs 12.0 or newer", NULL);
    /* The version is checked before cuInit, which never ran. */
    CHECK(strstr(read_log(), "cuInit") == NULL);
}
static void test_old_driver(void **state)
{
    const char *env[] = {THREE, "MODAL_FAKE_CUDA_VERSION=11040", NULL};
    in_child(child_old_driver, env);
}

static void child_cuinit_fails(void)
{
    load_fails("cuInit failed: CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)",
               NULL);
}
static void test_cuinit_fails(void **state)
{
    const char *injected[] = {THREE, "MODAL_FAKE_CUDA_FAIL=cuInit=CUDA_ERROR_NO_DEVICE", NULL};
    in_child(child_cuinit_fails, injected);
    /* No device at all ends the same way, as with the real driver. */
    in_child(child_cuinit_fails, NULL);
    const char *hidden[] = {THREE, "CUDA_VISIBLE_DEVICES=", NULL};
    in_child(child_cuinit_fails, hidden);
}

static void child_stub(void)
{
    /* Every symbol resolved (the table's names are the driver's), then the first call fails. */
    load_fails("cuDriverGetVersion failed at ", "CUDA_ERROR_STUB_LIBRARY");
    modal_error err;
    modal__cuda_get(&err);
    CHECK_CONTAINS(err.message, "take its directory (.../stubs) out of LD_LIBRARY_PATH");
}
static void test_stub_library(void **state)
{
    /* The double answering as the toolkit's stub does. */
    const char *fake_stub[] = {THREE, "MODAL_FAKE_CUDA_FAIL=cuDriverGetVersion=34", NULL};
    in_child(child_stub, fake_stub);
    /* NVIDIA's own stub, where the toolkit is installed. */
    const char *stub = "/usr/local/cuda/lib64/stubs/libcuda.so";
    if (access(stub, R_OK) != 0) {
        fprintf(stderr, "SKIPPED: %s is missing (no CUDA toolkit here)\n", stub);
        skip();
    }
    const char *real_stub[] = {"MODAL_CUDA_LIBRARY=/usr/local/cuda/lib64/stubs/libcuda.so", NULL};
    in_child(child_stub, real_stub);
}

static void child_loads(void)
{
    const modal__cuda *cu = load_ok();
    CHECK(cu == load_ok());
    CHECK(cu->driver_version == 12040);
    CHECK_CONTAINS(cu->path, "libcuda.so.1");
    CHECK(cu->path[0] == '/');
#define MODAL__CUDA_PRESENT(req, ret, name, sym, params) CHECK(cu->name != NULL);
    MODAL__CUDA_MAP(MODAL__CUDA_PRESENT)
#undef MODAL__CUDA_PRESENT
    /* cuInit ran once, logged by the fake as "<pid> cuInit ...". */
    char line[64];
    snprintf(line, sizeof line, "%ld cuInit devices=3\n", (long)getpid());
    const char *log = read_log();
    CHECK_CONTAINS(log, line);
    CHECK(strstr(strstr(log, line) + strlen(line), "cuInit") == NULL);
}
static void test_loads(void **state)
{
    const char *env[] = {THREE, "MODAL_FAKE_CUDA_VERSION=12040", NULL};
    in_child(child_loads, env);
}

static void *get_in_thread(void *arg)
{
    return (void *)modal__cuda_get(NULL);
}
static void child_loads_once_across_threads(void)
{
    pthread_t t[8];
    void *got[8];
    for (int i = 0; i < 8; i++)
        CHECK(pthread_create(&t[i], NULL, get_in_thread, NULL) == 0);
    for (int i = 0; i < 8; i++)
        CHECK(pthread_join(t[i], &got[i]) == 0);
    for (int i = 0; i < 8; i++)
        CHECK(got[i] != NULL && got[i] == got[0]);
    const char *log = read_log(), *first = strstr(log, " cuInit ");
    CHECK(first != NULL && strstr(first + 1, " cuInit ") == NULL);
}
static void test_loads_once_across_threads(void **state)
{
    const char *env[] = {THREE, NULL};
    in_child(child_loads_once_across_threads, env);
}

/* ---- error texts ---------------------------------------------------------- */

static void child_error_names(void)
{
    load_ok();
    char text[200];
    modal__cuda_error_text(700, text, sizeof text);
    CHECK(strcmp(text, "CUDA_ERROR_ILLEGAL_ADDRESS (an illegal memory access was encountered)") == 0);
    /* 217 is known to the driver (the fake) but not to libmodal's table. */
    modal__cuda_error_text(217, text, sizeof text);
    CHECK(strcmp(text, "CUDA_ERROR_PEER_ACCESS_UNSUPPORTED (peer access is not supported "
                       "across the given devices)") == 0);
    modal__cuda_error_text(123456, text, sizeof text);
    CHECK(strcmp(text, "CUDA error 123456 (not a code libmodal knows)") == 0);
}
static void child_error_table(void)
{
    load_ok();
    char text[200];
    modal__cuda_error_text(209, text, sizeof text);
    CHECK(strcmp(text, "CUDA_ERROR_NO_BINARY_FOR_GPU (no kernel image is available for "
                       "execution on the device)") == 0);
    modal__cuda_error_text(217, text, sizeof text);
    CHECK(strcmp(text, "CUDA error 217 (not a code libmodal knows)") == 0);
    /* Truncation still terminates. */
    char small[8];
    modal__cuda_error_text(209, small, sizeof small);
    CHECK(strcmp(small, "CUDA_ER") == 0);
}
static void test_error_text(void **state)
{
    const char *env[] = {THREE, NULL};
    in_child(child_error_names, env);
    char lib[PATH_MAX + 100];
    snprintf(lib, sizeof lib, "MODAL_CUDA_LIBRARY=%s", fake("libcuda_nonames.so.1"));
    const char *nonames[] = {lib, THREE, NULL};
    in_child(child_error_table, nonames);
}

static void test_cuda_fail(void **state)
{
    modal_error err;
    memset(&err, 0, sizeof err);
    assert_int_equal(modal__cuda_fail(&err, MODAL__CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc of 4096 bytes"),
                     MODAL_ENOMEM);
    assert_int_equal(err.code, MODAL_ENOMEM);
    assert_string_equal(err.message,
                        "cuMemAlloc of 4096 bytes: CUDA_ERROR_OUT_OF_MEMORY (out of memory)");
    assert_int_equal(modal__cuda_fail(&err, MODAL__CUDA_ERROR_LAUNCH_FAILED, "cuLaunchKernel"),
                     MODAL_EGPU);
    assert_string_equal(err.message, "cuLaunchKernel: CUDA_ERROR_LAUNCH_FAILED (unspecified launch failure)");
    assert_int_equal(modal__cuda_fail(NULL, 700, "x"), MODAL_EGPU);
}

/* ---- the test double itself ------------------------------------------------ */

/* A synthetic fatbin of one entry (kind 1 PTX, 2 SASS) for sm, naming "saxpy". */
static size_t tiny_fatbin(unsigned char *out, unsigned kind, unsigned sm)
{
    static const char payload[16] = "\0saxpy\0\0\0\0\0\0\0\0\0";
    memset(out, 0, 16 + 64 + sizeof payload);
    modal__put32(out, MODAL__FATBIN_MAGIC);
    out[4] = 1;                            /* version */
    out[6] = 16;                           /* header size */
    modal__put64(out + 8, 64 + sizeof payload);
    unsigned char *e = out + 16;
    e[0] = (unsigned char)kind;
    e[2] = 1;
    modal__put32(e + 4, 64);
    modal__put64(e + 8, sizeof payload);
    modal__put32(e + 28, sm);
    memcpy(e + 64, payload, sizeof payload);
    return 16 + 64 + sizeof payload;
}

static void child_fake_memory_and_modules(void)
{
    const modal__cuda *cu = load_ok();
    CUcontext ctx;
    CUdevice dev;
    CHECK_RC(cu->cuDeviceGet(&dev, 1)); /* a small T4: 64 MiB, cc 7.5 */
    CHECK(cu->cuMemAlloc(&(CUdeviceptr){0}, 16) == 201); /* no context yet */
    CHECK_RC(cu->cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK_RC(cu->cuCtxSetCurrent(ctx));

    /* Memory is accounted per device: 60 MiB fit, then 8 MiB more do not. */
    CUdeviceptr big, small;
    CHECK_RC(cu->cuMemAlloc(&big, 60u << 20));
    CHECK(cu->cuMemAlloc(&small, 8u << 20) == MODAL__CUDA_ERROR_OUT_OF_MEMORY);
    CHECK_RC(cu->cuMemFree(big));
    CHECK_RC(cu->cuMemAlloc(&big, 64u << 20));
    CHECK_RC(cu->cuMemFree(big));
    CHECK_RC(cu->cuMemAlloc(&small, 64));
    float in[16], back[16];
    for (int i = 0; i < 16; i++)
        in[i] = (float)i * 1.5f;
    CHECK_RC(cu->cuMemcpyHtoD(small, in, sizeof in));
    CHECK_RC(cu->cuMemcpyDtoH(back, small, sizeof back));
    CHECK(memcmp(in, back, sizeof in) == 0);
    CHECK(cu->cuMemcpyDtoH(back, small + 8, 64) == 1); /* past the allocation's end */
    CHECK_RC(cu->cuMemsetD8(small, 0, 64));
    CHECK(cu->cuMemFree(small + 1) == 1);

    /* Modules: SASS of the same major arch up to the cc, PTX up to the cc. */
    unsigned char img[128];
    CUmodule mod;
    tiny_fatbin(img, 2, 75);
    CHECK_RC(cu->cuModuleLoadData(&mod, img));
    CUfunction fn;
    CHECK_RC(cu->cuModuleGetFunction(&fn, mod, "saxpy"));
    CUfunction again;
    CHECK_RC(cu->cuModuleGetFunction(&again, mod, "saxpy"));
    CHECK(again == fn);
    CHECK(cu->cuModuleGetFunction(&fn, mod, "sax") == MODAL__CUDA_ERROR_NOT_FOUND);
    CHECK(cu->cuModuleGetFunction(&fn, mod, "gemm") == MODAL__CUDA_ERROR_NOT_FOUND);
    CHECK_RC(cu->cuModuleUnload(mod));
    CHECK(cu->cuModuleUnload(mod) == 400);
    tiny_fatbin(img, 2, 80);
    CHECK(cu->cuModuleLoadData(&mod, img) == MODAL__CUDA_ERROR_NO_BINARY_FOR_GPU);
    tiny_fatbin(img, 2, 70);
    CHECK_RC(cu->cuModuleLoadData(&mod, img));
    tiny_fatbin(img, 1, 75);
    CHECK_RC(cu->cuModuleLoadData(&mod, img));
    tiny_fatbin(img, 1, 80);
    CHECK(cu->cuModuleLoadData(&mod, img) == MODAL__CUDA_ERROR_NO_BINARY_FOR_GPU);
    img[0] ^= 1;
    CHECK(cu->cuModuleLoadData(&mod, img) == MODAL__CUDA_ERROR_INVALID_IMAGE);

    /* Events measure monotonic time. */
    CUevent a, b;
    CHECK_RC(cu->cuEventCreate(&a, 0));
    CHECK_RC(cu->cuEventCreate(&b, 0));
    float ms = -1;
    CHECK(cu->cuEventElapsedTime(&ms, a, b) == 400);
    CHECK_RC(cu->cuEventRecord(a, NULL));
    usleep(20000);
    CHECK_RC(cu->cuEventRecord(b, NULL));
    CHECK_RC(cu->cuEventElapsedTime(&ms, a, b));
    CHECK(ms >= 19.0f && ms < 2000.0f);
    CHECK_RC(cu->cuEventDestroy(a));
    CHECK_RC(cu->cuEventDestroy(b));

    const char *log = read_log();
    CHECK_CONTAINS(log, "cuDevicePrimaryCtxRetain device=1 retained=1");
    CHECK_CONTAINS(log, "cuModuleGetFunction saxpy found");
    CHECK_CONTAINS(log, "cuModuleLoadData image=");
    CHECK_CONTAINS(log, "archs=compute_80 device=1 cc=7.5 no binary for gpu");
}
static void test_fake_memory_and_modules(void **state)
{
    const char *env[] = {"MODAL_FAKE_CUDA_DEVICES=" H100 ";Tesla T4|64|7.5|GPU-7e7e7e7e-2222-3333-4444-000000000003",
                         NULL};
    in_child(child_fake_memory_and_modules, env);
}

static void child_fake_injection(void)
{
    const modal__cuda *cu = load_ok();
    CUcontext ctx;
    CHECK_RC(cu->cuDevicePrimaryCtxRetain(&ctx, 0));
    CHECK_RC(cu->cuCtxSetCurrent(ctx));
    CUdeviceptr p;
    CHECK_RC(cu->cuMemAlloc(&p, 16));
    CHECK(cu->cuMemAlloc(&p, 16) == MODAL__CUDA_ERROR_OUT_OF_MEMORY); /* the 2nd call */
    CHECK_RC(cu->cuMemAlloc(&p, 16));
    /* The first launch fails, and so does every later use of the context. */
    unsigned char img[128];
    tiny_fatbin(img, 2, 90);
    CUmodule mod;
    CUfunction fn;
    CHECK_RC(cu->cuModuleLoadData(&mod, img));
    CHECK_RC(cu->cuModuleGetFunction(&fn, mod, "saxpy"));
    void *params[] = {&p};
    for (int i = 0; i < 2; i++)
        CHECK(cu->cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, NULL, params, NULL) ==
              MODAL__CUDA_ERROR_LAUNCH_FAILED);
    CHECK(cu->cuMemAlloc(&p, 16) == MODAL__CUDA_ERROR_LAUNCH_FAILED);
    CHECK(cu->cuCtxSynchronize() == MODAL__CUDA_ERROR_LAUNCH_FAILED);
    char name[96]; /* device queries need no context */
    CHECK_RC(cu->cuDeviceGetName(name, sizeof name, 0));
    char line[80];
    snprintf(line, sizeof line, "%ld cuMemAlloc_v2 call=2 injected=2\n", (long)getpid());
    const char *log = read_log();
    CHECK_CONTAINS(log, line);
    CHECK_CONTAINS(log, "cuLaunchKernel call=1 injected=719\n");
    CHECK(strstr(log, "cuLaunchKernel call=2") == NULL); /* not injected: broken */
    CHECK_CONTAINS(log, "cuLaunchKernel sticky=719");
}
static void test_fake_injection(void **state)
{
    const char *env[] = {
        THREE,
        "MODAL_FAKE_CUDA_FAIL=cuMemAlloc_v2@2=CUDA_ERROR_OUT_OF_MEMORY,cuLaunchKernel@1=719",
        NULL,
    };
    in_child(child_fake_injection, env);
}

static void child_fake_launch(void)
{
    const modal__cuda *cu = load_ok();
    CUcontext ctx;
    CHECK_RC(cu->cuDevicePrimaryCtxRetain(&ctx, 0));
    CHECK_RC(cu->cuCtxSetCurrent(ctx));
    unsigned char img[128];
    tiny_fatbin(img, 1, 90);
    CUmodule mod;
    CUfunction fn;
    CHECK_RC(cu->cuModuleLoadData(&mod, img));
    CHECK_RC(cu->cuModuleGetFunction(&fn, mod, "saxpy"));
    enum { N = 1000 };
    float x[N], y[N], want[N];
    for (int i = 0; i < N; i++) {
        x[i] = (float)i;
        y[i] = (float)(N - i);
        want[i] = 2.0f * x[i] + y[i];
    }
    CUdeviceptr dx, dy;
    CHECK_RC(cu->cuMemAlloc(&dx, sizeof x));
    CHECK_RC(cu->cuMemAlloc(&dy, sizeof y));
    CHECK_RC(cu->cuMemcpyHtoD(dx, x, sizeof x));
    CHECK_RC(cu->cuMemcpyHtoD(dy, y, sizeof y));
    int n = N;
    float a = 2.0f;
    void *params[] = {&n, &a, &dx, &dy};
    CHECK_RC(cu->cuLaunchKernel(fn, (N + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, params, NULL));
    CHECK_RC(cu->cuMemcpyDtoH(y, dy, sizeof y));
    CHECK(memcmp(y, want, sizeof y) == 0);
    CHECK(cu->cuLaunchKernel(fn, 1, 1, 1, 2048, 1, 1, 0, NULL, params, NULL) == 1);
    char line[80];
    snprintf(line, sizeof line, "%ld cuLaunchKernel saxpy grid=4,1,1 block=256,1,1", (long)getpid());
    CHECK_CONTAINS(read_log(), line);
}
static void test_fake_launch(void **state)
{
    char k[PATH_MAX + 100];
    snprintf(k, sizeof k, "MODAL_FAKE_CUDA_KERNELS=%s", fake("libfake_selftest.so"));
    const char *env[] = {THREE, k, NULL};
    in_child(child_fake_launch, env);
}

static void child_fake_broken(void)
{
    /* The first call (cuDriverGetVersion) fails. */
    load_fails("failed at ", "CUDA_ERROR_UNKNOWN (unknown error)");
    CHECK_CONTAINS(read_log(), "MODAL_FAKE_CUDA_FAIL: entry point \"cuNoSuchCall\" is unknown");
}
static void test_fake_broken_config(void **state)
{
    const char *env[] = {THREE, "MODAL_FAKE_CUDA_FAIL=cuNoSuchCall=CUDA_ERROR_UNKNOWN", NULL};
    in_child(child_fake_broken, env);
}

/* ---- inventory ------------------------------------------------------------ */

static void child_inventory(void)
{
    modal__gpu_device d[MODAL__GPU_MAX_DEVICES];
    size_t n = 99;
    char why[300] = "x";
    modal_error err;
    memset(&err, 0, sizeof err);
    CHECK(modal__gpu_inventory(d, MODAL__GPU_MAX_DEVICES, &n, why, sizeof why, &err) == MODAL_OK);
    CHECK(n == 3);
    CHECK(why[0] == '\0');
    CHECK(d[0].ordinal == 0 && d[1].ordinal == 1 && d[2].ordinal == 2);
    CHECK(strcmp(d[0].name, "NVIDIA H100 80GB HBM3") == 0);
    CHECK(strcmp(d[0].type, "H100") == 0);
    CHECK(strcmp(d[0].uuid, "GPU-11111111-2222-3333-4444-000000000001") == 0);
    CHECK(d[0].memory == 81559ull << 20);
    CHECK(d[0].cc_major == 9 && d[0].cc_minor == 0);
    CHECK(strcmp(d[0].pci, "0000:18:00.0") == 0);
    CHECK(strcmp(d[1].type, "A100-40GB") == 0);
    CHECK(strcmp(d[1].uuid, "GPU-aaaaaaaa-2222-3333-4444-000000000002") == 0);
    CHECK(d[1].memory == 40960ull << 20);
    CHECK(d[1].cc_major == 8 && d[1].cc_minor == 0);
    CHECK(strcmp(d[2].name, "Tesla T4") == 0);
    CHECK(strcmp(d[2].type, "T4") == 0);
    CHECK(d[2].cc_major == 7 && d[2].cc_minor == 5);
    CHECK(strcmp(d[2].pci, "0000:1a:00.0") == 0);
    /* At most max devices. */
    CHECK(modal__gpu_inventory(d, 2, &n, NULL, 0, NULL) == MODAL_OK && n == 2);
}
static void test_inventory(void **state)
{
    const char *env[] = {THREE, NULL};
    in_child(child_inventory, env);
}

static void child_inventory_visible(void)
{
    modal__gpu_device d[4];
    size_t n = 0;
    CHECK(modal__gpu_inventory(d, 4, &n, NULL, 0, NULL) == MODAL_OK);
    const char *want = getenv("WANT"); /* the UUIDs' last digits, in order */
    CHECK(n == strlen(want));
    for (size_t i = 0; i < n; i++) {
        CHECK(d[i].ordinal == (int)i);
        CHECK(d[i].uuid[strlen(d[i].uuid) - 1] == want[i]);
    }
}
static void test_inventory_visible(void **state)
{
    const char *by_uuid[] = {THREE, "CUDA_VISIBLE_DEVICES=GPU-7e7e7e7e-2222-3333-4444-000000000003,"
                                    "GPU-11111111-2222-3333-4444-000000000001", "WANT=31", NULL};
    in_child(child_inventory_visible, by_uuid);
    const char *by_index[] = {THREE, "CUDA_VISIBLE_DEVICES=2,1", "WANT=32", NULL};
    in_child(child_inventory_visible, by_index);
    const char *by_prefix[] = {THREE, "CUDA_VISIBLE_DEVICES=GPU-AAAA", "WANT=2", NULL};
    in_child(child_inventory_visible, by_prefix);
    /* An unknown entry ends the list, as with the real driver. */
    const char *unknown[] = {THREE, "CUDA_VISIBLE_DEVICES=1,GPU-deadbeef,0", "WANT=2", NULL};
    in_child(child_inventory_visible, unknown);
    const char *repeated[] = {THREE, "CUDA_VISIBLE_DEVICES=0,0,1", "WANT=1", NULL};
    in_child(child_inventory_visible, repeated);
}

static void child_inventory_none(void)
{
    modal__gpu_device d[4];
    size_t n = 7;
    char why[300];
    modal_error err;
    memset(&err, 0, sizeof err);
    CHECK(modal__gpu_inventory(d, 4, &n, why, sizeof why, &err) == MODAL_OK);
    CHECK(n == 0);
    CHECK(err.code == MODAL_OK);
    CHECK_CONTAINS(why, getenv("WANT"));
}
static void test_inventory_none(void **state)
{
    const char *no_driver[] = {"MODAL_CUDA_LIBRARY=/nonexistent/libcuda.so.1",
                               "WANT=no CUDA driver: /nonexistent/libcuda.so.1", NULL};
    in_child(child_inventory_none, no_driver);
    const char *no_device[] = {"WANT=cuInit failed: CUDA_ERROR_NO_DEVICE", NULL};
    in_child(child_inventory_none, no_device);
}

static void child_inventory_fails(void)
{
    modal__gpu_device d[4];
    size_t n = 7;
    modal_error err;
    memset(&err, 0, sizeof err);
    CHECK(modal__gpu_inventory(d, 4, &n, NULL, 0, &err) == MODAL_EGPU);
    CHECK(n == 0);
    CHECK_CONTAINS(err.message, "cuDeviceGetUuid of CUDA device 1: CUDA_ERROR_DEVICE_UNAVAILABLE");
}
static void test_inventory_fails(void **state)
{
    const char *env[] = {THREE, "MODAL_FAKE_CUDA_FAIL=cuDeviceGetUuid_v2@2=CUDA_ERROR_DEVICE_UNAVAILABLE",
                         NULL};
    in_child(child_inventory_fails, env);
}

static void test_type_of(void **state)
{
    static const struct {
        const char *name;
        unsigned long long mib;
        const char *type;
    } cases[] = {
        {"Tesla T4", 15360, "T4"},
        {"NVIDIA L4", 23034, "L4"},
        {"NVIDIA A10G", 23028, "A10G"},
        {"NVIDIA A10", 23028, "A10"},
        {"NVIDIA L40S", 46068, "L40S"},
        {"NVIDIA A100-SXM4-40GB", 40960, "A100-40GB"},
        {"NVIDIA A100-PCIE-40GB", 40536, "A100-40GB"},
        {"NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"},
        {"NVIDIA A100 80GB PCIe", 81920, "A100-80GB"},
        {"NVIDIA H100 80GB HBM3", 81559, "H100"},
        {"NVIDIA H100 PCIe", 81559, "H100"},
        {"NVIDIA H100 NVL", 95830, "H100"},
        {"NVIDIA H200", 143771, "H200"},
        {"NVIDIA H200 NVL", 143771, "H200"},
        {"NVIDIA B200", 183359, "B200"},
        /* Not Modal's: the driver's name without "NVIDIA ". */
        {"NVIDIA H20", 97871, "H20"},
        {"NVIDIA GH200 480GB", 97871, "GH200 480GB"},
        {"NVIDIA RTX A6000", 49140, "RTX A6000"},
        {"Quadro RTX 8000", 49152, "Quadro RTX 8000"},
        {"NVIDIA A1000", 8192, "A1000"},
        {"", 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char out[24] = "garbage";
        modal__gpu_type_of(cases[i].name, cases[i].mib << 20, out, sizeof out);
        if (strcmp(out, cases[i].type) != 0)
            print_error("\"%s\": got \"%s\", want \"%s\"\n", cases[i].name, out, cases[i].type);
        assert_string_equal(out, cases[i].type);
    }
    char small[4];
    modal__gpu_type_of("NVIDIA A100-SXM4-80GB", 81920ull << 20, small, sizeof small);
    assert_string_equal(small, "A10");
}

/* ---- fatbin parsing ---------------------------------------------------------- */

/* build/tests/data/arch.fatbin into buf (or skip, saying why). */
static size_t read_arch_fatbin(unsigned char *buf, size_t cap)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/arch.fatbin", data_dir);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "SKIPPED: %s is missing: it is built only where nvcc is (NVCC is empty)\n",
                path);
        skip();
    }
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    assert_true(n > 0 && n < cap);
    return n;
}

static void test_fatbin_real(void **state)
{
    static unsigned char buf[1 << 20];
    size_t len = read_arch_fatbin(buf, sizeof buf);
    modal__fatbin_arch a[8];
    size_t size = 0, n = 0;
    modal_error err;
    memset(&err, 0, sizeof err);
    /* Trailing bytes (a section's padding) are not the image's. */
    memset(buf + len, 0xee, 100);
    assert_int_equal(modal__fatbin_parse(buf, len + 100, &size, a, 8, &n, &err), MODAL_OK);
    assert_int_equal(size, len);
    assert_int_equal(n, 3);
    /* What the Makefile's -gencode list asks for, in nvcc's order. */
    assert_int_equal(a[0].sm, 80);
    assert_int_equal(a[0].ptx, 0);
    assert_int_equal(a[1].sm, 90);
    assert_int_equal(a[1].ptx, 0);
    assert_int_equal(a[2].sm, 90);
    assert_int_equal(a[2].ptx, 1);
    char text[100];
    modal__fatbin_describe(a, n, text, sizeof text);
    assert_string_equal(text, "sm_80, sm_90 and PTX for compute_90");
    /* Fewer slots than entries: the first ones, and the same size. */
    assert_int_equal(modal__fatbin_parse(buf, len, &size, a, 1, &n, NULL), MODAL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(size, len);
    /* Every truncation fails cleanly, naming what is cut. */
    for (size_t cut = 0; cut < len; cut++) {
        size = 1;
        n = 1;
        assert_int_equal(modal__fatbin_parse(buf, cut, &size, a, 8, &n, &err), MODAL_ECODEC);
        assert_int_equal(size, 0);
        assert_int_equal(n, 0);
        assert_true(err.message[0] != '\0');
    }
    assert_int_equal(modal__fatbin_parse(buf, len - 1, &size, a, 8, &n, &err), MODAL_ECODEC);
    assert_message_contains(err, "it is truncated");
}

/* One entry (kind, header size, payload, arch) after a 16-byte header. */
static size_t fatbin_of(unsigned char *b, unsigned kind, uint32_t ehs, uint64_t payload,
                        uint32_t arch, uint64_t body)
{
    memset(b, 0, 256);
    modal__put32(b, MODAL__FATBIN_MAGIC);
    modal__put16(b + 4, 1);
    modal__put16(b + 6, 16);
    modal__put64(b + 8, body);
    modal__put16(b + 16, (uint16_t)kind);
    modal__put32(b + 20, ehs);
    modal__put64(b + 24, payload);
    modal__put32(b + 16 + 28, arch);
    return 256;
}

static void test_fatbin_corrupt(void **state)
{
    unsigned char b[256];
    modal__fatbin_arch a[4];
    size_t size, n;
    modal_error err;
    static const struct {
        unsigned kind;
        uint32_t ehs;
        uint64_t payload;
        uint32_t arch;
        uint64_t body;
        const char *needle;
    } cases[] = {
        {2, 64, 16, 80, 80, NULL},                             /* well formed */
        {2, 64, 16, 80, 300, "bytes of entries after its header, but the image has 240"},
        {2, 64, 16, 80, UINT64_MAX, "it is truncated"},
        {2, 64, 200, 80, 80, "fatbin entry 1 runs past the image's end"},
        {2, 64, UINT64_MAX, 80, 80, "fatbin entry 1 runs past the image's end"},
        {2, 8, 16, 80, 80, "fatbin entry 1's header size 8 is outside 32..80"},
        {2, 0xffffffffu, 16, 80, 80, "header size 4294967295"},
        {2, 64, 16, 0, 80, "fatbin entry 1 names architecture 0"},
        {1, 64, 16, 123456, 80, "names architecture 123456"},
        {2, 64, 16, 80, 100, "fatbin entry 2's header runs past the image's end"},
        {7, 64, 16, 0, 80, NULL},                              /* another kind: stepped over */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fatbin_of(b, cases[i].kind, cases[i].ehs, cases[i].payload, cases[i].arch, cases[i].body);
        memset(&err, 0, sizeof err);
        modal_status st = modal__fatbin_parse(b, sizeof b, &size, a, 4, &n, &err);
        if (cases[i].needle == NULL) {
            assert_int_equal(st, MODAL_OK);
            assert_int_equal(size, 96);
            assert_int_equal(n, cases[i].kind == 2 ? 1 : 0);
        } else {
            if (st != MODAL_ECODEC)
                print_error("case %zu parsed\n", i);
            assert_int_equal(st, MODAL_ECODEC);
            assert_int_equal(err.code, MODAL_ECODEC);
            assert_message_contains(err, cases[i].needle);
        }
    }
    /* Not a fatbin at all; too short for a header; a bad header size. */
    memcpy(b, "\x7f" "ELF", 4);
    assert_int_equal(modal__fatbin_parse(b, sizeof b, &size, a, 4, &n, &err), MODAL_ECODEC);
    assert_message_contains(err, "not a fatbin: the image starts with 0x464c457f, not 0xba55ed50");
    assert_int_equal(modal__fatbin_parse(b, 15, &size, a, 4, &n, &err), MODAL_ECODEC);
    assert_message_contains(err, "the image has 15 bytes");
    assert_int_equal(modal__fatbin_parse(NULL, 100, &size, a, 4, &n, &err), MODAL_ECODEC);
    fatbin_of(b, 2, 64, 16, 80, 80);
    modal__put16(b + 6, 8);
    assert_int_equal(modal__fatbin_parse(b, sizeof b, &size, a, 4, &n, &err), MODAL_ECODEC);
    assert_message_contains(err, "header size 8 is outside 16..256");
    /* An empty body is a fatbin without code. */
    fatbin_of(b, 2, 64, 16, 80, 0);
    assert_int_equal(modal__fatbin_parse(b, sizeof b, &size, a, 4, &n, &err), MODAL_OK);
    assert_int_equal(size, 16);
    assert_int_equal(n, 0);
}

static void test_fatbin_describe(void **state)
{
    modal__fatbin_arch a[] = {{80, 0}, {90, 0}, {90, 1}, {100, 1}};
    char text[100];
    modal__fatbin_describe(a, 1, text, sizeof text);
    assert_string_equal(text, "sm_80");
    modal__fatbin_describe(a, 2, text, sizeof text);
    assert_string_equal(text, "sm_80 and sm_90");
    modal__fatbin_describe(a, 4, text, sizeof text);
    assert_string_equal(text, "sm_80, sm_90, PTX for compute_90 and PTX for compute_100");
    modal__fatbin_describe(a, 0, text, sizeof text);
    assert_string_equal(text, "no code");
    char small[10];
    modal__fatbin_describe(a, 4, small, sizeof small);
    assert_string_equal(small, "sm_80, sm");
}

int main(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return 1;
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    snprintf(fake_dir, sizeof fake_dir, "%.*s/cuda_fake", PATH_MAX - 16, self);
    snprintf(data_dir, sizeof data_dir, "%.*s/data", PATH_MAX - 16, self);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_library),
        cmocka_unit_test(test_missing_symbol),
        cmocka_unit_test(test_old_driver),
        cmocka_unit_test(test_cuinit_fails),
        cmocka_unit_test(test_stub_library),
        cmocka_unit_test(test_loads),
        cmocka_unit_test(test_loads_once_across_threads),
        cmocka_unit_test(test_error_text),
        cmocka_unit_test(test_cuda_fail),
        cmocka_unit_test(test_fake_memory_and_modules),
        cmocka_unit_test(test_fake_injection),
        cmocka_unit_test(test_fake_launch),
        cmocka_unit_test(test_fake_broken_config),
        cmocka_unit_test(test_inventory),
        cmocka_unit_test(test_inventory_visible),
        cmocka_unit_test(test_inventory_none),
        cmocka_unit_test(test_inventory_fails),
        cmocka_unit_test(test_type_of),
        cmocka_unit_test(test_fatbin_real),
        cmocka_unit_test(test_fatbin_corrupt),
        cmocka_unit_test(test_fatbin_describe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
