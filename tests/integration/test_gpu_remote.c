/*
 * test_gpu_remote.c: remote kernel launch (modal_gpu_run_remote) against
 * the real runtime, its kernel worker (build/modal-kernel-worker) and the
 * CUDA test double with CPU stand-ins for the kernels
 * (tests/cuda_fake/remote_kernels.c, kernels.c). The images are fatbins
 * made here, so no nvcc is needed: the test double finds a kernel by its
 * name inside the image and runs its stand-in.
 *
 * Cases: saxpy round trip; OUT arrays start zeroed and INOUT arrays come
 * back; three launches of one image load one module (the test double's
 * call log); four threads launching at once on a fresh connection; a
 * kernel worker file the runtime lost, and a runtime
 * restarted without its specs and artifacts; every refusal of the client
 * (against a runtime address where nothing listens, so nothing was sent);
 * every refusal of the kernel worker (hand-made calls); a runtime without
 * a GPU (MODAL_EGPU) and one without a kernel worker (MODAL_ENOTFOUND);
 * a kernel worker answering arrays of the wrong size (this binary, as
 * --kernel-worker) changes none of the caller's memory.
 */
#include "harness.h"
#include "cuda.h"
#include "gpu_remote.h"

MODAL_APP("test-gpu-remote");

#define DEVICE "NVIDIA H100 80GB HBM3|81559|9.0|GPU-11111111-2222-3333-4444-000000000001"

static char fake_log[PATH_MAX];

/* ---- images --------------------------------------------------------------------- */

static void put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static void put32(unsigned char *p, uint32_t v)
{
    put16(p, v & 0xffff);
    put16(p + 2, v >> 16);
}
static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

/*
 * A fatbin with one SASS entry for sm_90 whose payload names the kernels
 * (and tag, which makes images of otherwise equal content differ).
 * Returns its length; buf has room for 512 bytes.
 */
static size_t make_fatbin(unsigned char *buf, const char *tag)
{
    char names[256];
    int plen = snprintf(names, sizeof names, "_ saxpy evens add empty %s _", tag);
    size_t payload = ((size_t)plen + 1 + 7) & ~(size_t)7;
    memset(buf, 0, 512);
    put32(buf, MODAL__FATBIN_MAGIC);
    put16(buf + 4, 1);                 /* version */
    put16(buf + 6, 16);                /* header size */
    put64(buf + 8, 64 + payload);      /* what follows the header */
    unsigned char *e = buf + 16;
    put16(e, 2);                       /* kind: ELF (SASS) */
    put16(e + 2, 0x0101);
    put32(e + 4, 64);                  /* entry header size */
    put64(e + 8, payload);
    put32(e + 28, 90);                 /* sm_90 */
    memcpy(e + 64, names, (size_t)plen);
    return 16 + 64 + payload;
}

static unsigned char image_bytes[512];
static modal_gpu_image image;

/* ---- the runtime ------------------------------------------------------------------ */

static int setup(void **state)
{
    snprintf(fake_log, sizeof fake_log, "/tmp/modal-gpu-remote-%d.log", (int)getpid());
    setenv("MODAL_CUDA_LIBRARY", harness_cuda_fake("libcuda.so.1"), 1);
    setenv("MODAL_FAKE_CUDA_KERNELS", harness_cuda_fake("libfake_remote_kernels.so"), 1);
    setenv("MODAL_FAKE_CUDA_DEVICES", DEVICE, 1);
    setenv("MODAL_FAKE_CUDA_LOG", fake_log, 1);
    image = (modal_gpu_image){"made.fatbin", image_bytes, make_fatbin(image_bytes, "first")};
    if (harness_group_setup(state) != 0)
        return -1;
    /* The launches need the test double's GPU in the runtime's inventory. */
    cJSON *h = harness_health(&rt);
    const cJSON *gpus = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(h, "gpus"), "devices");
    int n = cJSON_GetArraySize(gpus);
    cJSON_Delete(h);
    if (n != 1) {
        fprintf(stderr, "test_gpu_remote: the runtime lists %d GPUs, not the test double's "
                        "one (is %s built?)\n", n, harness_cuda_fake("libcuda.so.1"));
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    harness_group_teardown(state);
    unlink(fake_log);
    return 0;
}

/* How many lines of the fake's log name entry point `entry`. */
static int log_count(const char *entry)
{
    char *log = harness_read_file(fake_log, NULL);
    int n = 0;
    char pat[64];
    snprintf(pat, sizeof pat, " %s ", entry);
    for (const char *p = log; p != NULL && (p = strstr(p, pat)) != NULL; p++)
        n++;
    free(log);
    return n;
}

/* ---- launches ----------------------------------------------------------------------- */

static void test_saxpy_round_trip(void **state)
{
    enum { N = 1000 };
    float x[N], y[N], want[N], a = 2.5f;
    int n = N;
    srand48(getpid());
    for (int i = 0; i < N; i++) {
        x[i] = (float)drand48();
        y[i] = (float)drand48();
        want[i] = a * x[i] + y[i];
    }
    modal_gpu_arg args[] = {MODAL_GPU_SCALAR(n), MODAL_GPU_SCALAR(a), MODAL_GPU_IN(x, N),
                            MODAL_GPU_INOUT(y, N)};
    modal_gpu_launch l = {.image = &image, .kernel = "saxpy", .grid = MODAL_DIM3(4),
                          .block = MODAL_DIM3(256), .args = args, .nargs = 4};
    modal_gpu_stats st = {-1, -1, -1};
    modal_error err;
    assert_ok(modal_gpu_run_remote("any", &l, &st, &err), err);
    for (int i = 0; i < N; i++)
        assert_float_equal(y[i], want[i], 1e-6);
    assert_true(st.kernel_s >= 0 && st.copy_in_s >= 0 && st.copy_out_s >= 0);
}

static void test_out_and_inout(void **state)
{
    enum { N = 9 };
    int out[N], a[N], n = N, k = 5;
    memset(out, 0xff, sizeof out); /* never sent: device memory starts zeroed */
    for (int i = 0; i < N; i++)
        a[i] = i * i;
    modal_gpu_arg args[] = {MODAL_GPU_SCALAR(n), MODAL_GPU_OUT(out, N)};
    modal_gpu_launch l = {.image = &image, .kernel = "evens", .grid = MODAL_DIM3(1),
                          .block = MODAL_DIM3(1), .args = args, .nargs = 2};
    modal_error err;
    assert_ok(modal_gpu_run_remote("H100", &l, NULL, &err), err);
    for (int i = 0; i < N; i++)
        assert_int_equal(out[i], i % 2 == 0 ? 3 * i + 1 : 0);

    modal_gpu_arg args2[] = {MODAL_GPU_SCALAR(n), MODAL_GPU_SCALAR(k), MODAL_GPU_INOUT(a, N)};
    l = (modal_gpu_launch){.image = &image, .kernel = "add", .grid = MODAL_DIM3(1),
                           .block = MODAL_DIM3(1), .args = args2, .nargs = 3};
    assert_ok(modal_gpu_run_remote("any", &l, NULL, &err), err);
    for (int i = 0; i < N; i++)
        assert_int_equal(a[i], i * i + 5);
}

/* Threads of one program launch remotely at once, on a fresh connection
 * (its first launches race to learn the kernel worker and register its
 * spec): each gets its own results. */
#define RT_THREADS 4
#define RT_LAUNCHES 5
static modal_connection *shared_conn;

static void *remote_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int k = 0; k < RT_LAUNCHES; k++) {
        int n = 16, add = 100 * t + k, v[16];
        for (int i = 0; i < n; i++)
            v[i] = i;
        modal_gpu_arg args[] = {MODAL_GPU_SCALAR(n), MODAL_GPU_SCALAR(add), MODAL_GPU_INOUT(v, 16)};
        modal_gpu_launch l = {.image = &image, .kernel = "add", .grid = MODAL_DIM3(1),
                              .block = MODAL_DIM3(1), .args = args, .nargs = 3};
        modal_error err;
        if (modal_gpu_run_remote_on(shared_conn, "H100", &l, NULL, &err) != MODAL_OK) {
            fprintf(stderr, "thread %d launch %d: %s\n", t, k, err.message);
            return (void *)1;
        }
        for (int i = 0; i < n; i++)
            if (v[i] != i + add) {
                fprintf(stderr, "thread %d launch %d: v[%d] is %d\n", t, k, i, v[i]);
                return (void *)1;
            }
    }
    return NULL;
}

static void test_threads(void **state)
{
    modal_error err;
    modal_connection_options o = MODAL_CONNECTION_OPTIONS_INIT;
    o.token = rt.token;
    assert_ok(modal_connection_open(rt.url, &o, &shared_conn, &err), err);
    pthread_t th[RT_THREADS];
    for (int t = 0; t < RT_THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, remote_thread, (void *)(intptr_t)t), 0);
    int bad = 0;
    for (int t = 0; t < RT_THREADS; t++) {
        void *r = NULL;
        pthread_join(th[t], &r);
        bad += r != NULL;
    }
    modal_connection_close(shared_conn);
    assert_int_equal(bad, 0);
}

/* A worker keeps the image, so its module is loaded once for many launches. */
static void test_module_loaded_once(void **state)
{
    unsigned char bytes[512];
    modal_gpu_image own = {"own.fatbin", bytes, make_fatbin(bytes, "once")};
    int before = log_count("cuModuleLoadData"), launches = log_count("cuLaunchKernel");
    for (int i = 0; i < 3; i++) {
        modal_gpu_launch l = {.image = &own, .kernel = "empty", .grid = MODAL_DIM3(1),
                              .block = MODAL_DIM3(1)};
        modal_error err;
        assert_ok(modal_gpu_run_remote("any", &l, NULL, &err), err);
    }
    assert_int_equal(log_count("cuModuleLoadData") - before, 1);
    assert_int_equal(log_count("cuLaunchKernel") - launches, 3);
}

/* The runtime lost the kernel worker's file: the next launch finds it stored again. */
static void test_lost_artifact(void **state)
{
    cJSON *h = harness_health(&rt);
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(h, "kernel_worker");
    assert_true(cJSON_IsString(kw));
    char path[PATH_MAX + 100];
    snprintf(path, sizeof path, "%s/artifacts/%s", rt.dir, kw->valuestring);
    cJSON_Delete(h);
    assert_int_equal(unlink(path), 0);
    int n = 4, k = 1, a[4] = {1, 2, 3, 4};
    modal_gpu_arg args[] = {MODAL_GPU_SCALAR(n), MODAL_GPU_SCALAR(k), MODAL_GPU_INOUT(a, 4)};
    modal_gpu_launch l = {.image = &image, .kernel = "add", .grid = MODAL_DIM3(1),
                          .block = MODAL_DIM3(1), .args = args, .nargs = 3};
    modal_error err;
    /* A new GPU request is a new spec, so a new pool that starts from the file. */
    assert_ok(modal_gpu_run_remote("H100!", &l, NULL, &err), err);
    assert_int_equal(a[3], 5);
    assert_int_equal(access(path, F_OK), 0);
}

/* A runtime restarted without its specs and its artifacts: the client
 * registers the kernel worker's spec again, from the file the new runtime
 * stored at start, and the launch goes through. */
static void test_restarted_runtime(void **state)
{
    char port_arg[64], url[64];
    int port = harness_free_port();
    snprintf(port_arg, sizeof port_arg, "tcp:127.0.0.1:%d", port);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    const char *const args[] = {"--listen", port_arg, NULL};
    harness a, b;
    assert_int_equal(harness_start_with(&a, args, false), 0);
    modal_connection *c;
    modal_error err;
    modal_connection_options o = MODAL_CONNECTION_OPTIONS_INIT;
    o.token = a.token;
    assert_ok(modal_connection_open(url, &o, &c, &err), err);
    int n = 2, k = 10, v[2] = {1, 2};
    modal_gpu_arg args2[] = {MODAL_GPU_SCALAR(n), MODAL_GPU_SCALAR(k), MODAL_GPU_INOUT(v, 2)};
    modal_gpu_launch l = {.image = &image, .kernel = "add", .grid = MODAL_DIM3(1),
                          .block = MODAL_DIM3(1), .args = args2, .nargs = 3};
    assert_ok(modal_gpu_run_remote_on(c, "any", &l, NULL, &err), err);
    assert_int_equal(v[1], 12);

    harness_kill(&a);
    harness_release(&a);
    char dir[PATH_MAX + 100];
    snprintf(dir, sizeof dir, "%s/specs", a.dir);
    harness_rmtree(dir);
    snprintf(dir, sizeof dir, "%s/artifacts", a.dir);
    harness_rmtree(dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(harness_start_in(&b, a.dir, args, false), 0);
    assert_ok(modal_gpu_run_remote_on(c, "any", &l, NULL, &err), err);
    assert_int_equal(v[1], 22);
    modal_connection_close(c);
    harness_stop(&b);
}

/* ---- refusals in the client: nothing is sent ------------------------------------------ */

static void refused(modal_connection *dead, const char *gpu, const modal_gpu_launch *l,
                    modal_status code, const char *needle)
{
    modal_error err;
    modal_status st = modal_gpu_run_remote_on(dead, gpu, l, NULL, &err);
    if (st != code)
        print_error("gpu %s: expected %s, got %s: %s\n", gpu ? gpu : "(null)",
                    modal_status_name(code), modal_status_name(st), err.message);
    assert_int_equal(st, code);
    assert_message_contains(err, needle);
}

static void test_client_refusals(void **state)
{
    /* Nothing listens there: a refusal that sent anything would say so. */
    modal_connection *dead;
    modal_error err;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", harness_free_port());
    modal_connection_options o = MODAL_CONNECTION_OPTIONS_INIT;
    o.token = "x";
    o.transport_retries = MODAL_CONNECTION_NO_RETRY;
    assert_ok(modal_connection_open(url, &o, &dead, &err), err);

    int n = 4;
    float x[4] = {0};
    unsigned char junk[64] = "not a fatbin at all";
    modal_gpu_image bad_image = {"junk.bin", junk, sizeof junk};
    modal_gpu_image null_data = {"null", NULL, 0};
    modal_gpu_arg ok_args[] = {MODAL_GPU_SCALAR(n), MODAL_GPU_IN(x, 4)};
    modal_gpu_launch good = {.image = &image, .kernel = "saxpy", .grid = MODAL_DIM3(1),
                             .block = MODAL_DIM3(1), .args = ok_args, .nargs = 2};
    modal_gpu_launch l;

    refused(dead, NULL, &good, MODAL_EINVAL, "gpu is NULL");
    refused(dead, "", &good, MODAL_EINVAL, "gpu is empty");
    refused(dead, "H101", &good, MODAL_EOPTION, "unknown GPU type \"H101\"");
    refused(dead, "any", NULL, MODAL_EINVAL, "launch");
    l = good, l.image = NULL;
    refused(dead, "any", &l, MODAL_EINVAL, "launch->image is NULL");
    l = good, l.image = &null_data;
    refused(dead, "any", &l, MODAL_EINVAL, "launch->image->data is NULL");
    l = good, l.image = &bad_image;
    refused(dead, "any", &l, MODAL_EINVAL, "junk.bin does not start with the fatbin magic");
    unsigned char cut[512];
    memcpy(cut, image_bytes, sizeof cut);
    modal_gpu_image short_image = {"short.fatbin", cut, image.size - 8};
    l = good, l.image = &short_image;
    refused(dead, "any", &l, MODAL_EINVAL, "short.fatbin");
    l = good, l.kernel = NULL;
    refused(dead, "any", &l, MODAL_EINVAL, "launch->kernel is NULL");
    l = good, l.kernel = "";
    refused(dead, "any", &l, MODAL_EINVAL, "launch->kernel is empty");
    char longname[300];
    memset(longname, 'k', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    l = good, l.kernel = longname;
    refused(dead, "any", &l, MODAL_EINVAL, "299 bytes long");
    l = good, l.grid = (modal_dim3){1, 0, 1};
    refused(dead, "any", &l, MODAL_EINVAL, "launch->grid is {1, 0, 1}");
    l = good, l.block = (modal_dim3){0, 1, 1};
    refused(dead, "any", &l, MODAL_EINVAL, "launch->block is {0, 1, 1}");
    l = good, l.device = -1;
    refused(dead, "any", &l, MODAL_EINVAL, "launch->device is -1");
    l = good, l.nargs = MODAL_GPU_MAX_ARGS + 1;
    refused(dead, "any", &l, MODAL_ELIMIT, "launch->nargs is 33");
    l = good, l.args = NULL;
    refused(dead, "any", &l, MODAL_EINVAL, "launch->args is NULL with nargs 2");
    modal_gpu_arg bad[2] = {MODAL_GPU_SCALAR(n), MODAL_GPU_IN(x, 4)};
    l = good, l.args = bad;
    bad[1].kind = (modal_gpu_arg_kind)7;
    refused(dead, "any", &l, MODAL_EINVAL, "argument 1 has kind 7");
    bad[1] = MODAL_GPU_IN(x, 4);
    bad[0].size = 0;
    refused(dead, "any", &l, MODAL_EINVAL, "argument 0 is a scalar of 0 bytes");
    bad[0].size = 257;
    refused(dead, "any", &l, MODAL_EINVAL, "argument 0 is a scalar of 257 bytes");
    bad[0] = MODAL_GPU_SCALAR(n);
    bad[1].data = NULL;
    refused(dead, "any", &l, MODAL_EINVAL, "argument 1 (IN array of 16 bytes) points at NULL");

    /* The check passes for the good launch, which then fails to connect. */
    modal_error e2;
    assert_int_equal(modal_gpu_run_remote_on(dead, "any", &good, NULL, &e2), MODAL_ETRANSPORT);
    modal_connection_close(dead);
}

/* ---- refusals in the kernel worker: hand-made calls ------------------------------------ */

typedef struct raw_target {
    char sha[65];
} raw_target;

/* The kernel worker's spec, registered by hand, as a client of another
 * version (or anyone with the token) could. */
static modal_status raw_prepare(modal_connection *conn, void *ctx, const char **artifact,
                                char spec_id[65], modal_error *err)
{
    raw_target *t = ctx;
    *artifact = t->sha;
    modal__spec s;
    modal__spec_init(&s);
    snprintf(s.artifact, sizeof s.artifact, "%s", t->sha);
    snprintf(s.app, sizeof s.app, MODAL__KW_APP);
    snprintf(s.fn, sizeof s.fn, MODAL__KW_FUNCTION);
    snprintf(s.gpu, sizeof s.gpu, "any");
    modal_status st = modal__spec_register(conn, &s, spec_id, err);
    modal__spec_clear(&s);
    return st;
}

static bool raw_lost(modal_connection *conn, void *ctx, modal_status st,
                     const modal_error *err, const char *artifact)
{
    return false;
}

/* The launch's arguments as the client sends them, to spoil one by one. */
static modal_value *good_call(void)
{
    const unsigned one[3] = {1, 1, 1};
    int n = 4;
    return modal_args(modal_bytes(image.data, image.size), modal_string("made.fatbin"),
                      modal_string("add"), modal_array(MODAL_U32, one, 3),
                      modal_array(MODAL_U32, one, 3), modal_int(0), modal_int(0),
                      modal_args(modal_args(modal_int(MODAL_GPU_ARG_SCALAR),
                                            modal_bytes(&n, sizeof n))));
}

/* Replace argument i of args with v. */
static modal_value *with(modal_value *args, size_t i, modal_value *v)
{
    modal_value *items[MODAL__KW_NARGS + 1];
    size_t n = modal_value_len(args);
    for (size_t k = 0; k < n; k++)
        items[k] = k == i ? v : modal_value_copy(modal_list_get(args, k));
    if (i >= n)
        items[n++] = v;
    modal_value_free(args);
    return modal_list_of(items, n);
}

static void worker_refuses_with(modal_value *args, modal_status code, const char *needle)
{
    cJSON *h = harness_health(&rt);
    raw_target t;
    snprintf(t.sha, sizeof t.sha, "%s",
             cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(h, "kernel_worker")));
    cJSON_Delete(h);
    modal__call_target target = {MODAL__KW_FUNCTION, raw_prepare, raw_lost, &t};
    modal_value *r = NULL;
    modal_error err;
    modal_status st = modal__remote_call(NULL, &target, args, &r, &err);
    modal_value_free(r);
    if (st != code)
        print_error("expected %s with \"%s\", got %s: %s\n", modal_status_name(code), needle,
                    modal_status_name(st), err.message);
    assert_int_equal(st, code);
    assert_message_contains(err, needle);
}

static void worker_refuses(modal_value *args, const char *needle)
{
    worker_refuses_with(args, MODAL_EINVAL, needle);
}

static void test_worker_refusals(void **state)
{
    const unsigned zero[3] = {1, 0, 1}, two[2] = {1, 1};
    unsigned char big[300] = {0};
    worker_refuses(modal_args(modal_int(1)), "1 arguments; a remote kernel launch has 8");
    worker_refuses(with(good_call(), MODAL__KW_IMAGE, modal_string("x")),
                   "argument 0 (image): expected bytes, got string");
    worker_refuses(with(good_call(), MODAL__KW_IMAGE, modal_bytes("abcdefgh", 8)),
                   "image made.fatbin (8 bytes) is not a fatbin");
    worker_refuses(with(good_call(), MODAL__KW_IMAGE, modal_bytes(image.data, image.size - 8)),
                   "made.fatbin");
    worker_refuses(with(good_call(), MODAL__KW_IMAGE_NAME, modal_string("")),
                   "argument 1 (image name): 0 bytes");
    worker_refuses(with(good_call(), MODAL__KW_KERNEL, modal_string("ad\x01")),
                   "argument 2 (kernel): byte 2 is a control character");
    worker_refuses(with(good_call(), MODAL__KW_GRID, modal_array(MODAL_U32, zero, 3)),
                   "argument 3 (grid): {1, 0, 1}");
    worker_refuses(with(good_call(), MODAL__KW_BLOCK, modal_array(MODAL_U32, two, 2)),
                   "argument 4 (block): expected a u32 array of 3 sizes");
    worker_refuses(with(good_call(), MODAL__KW_SHARED, modal_int(-1)),
                   "argument 5 (shared bytes): -1 is out of range");
    worker_refuses(with(good_call(), MODAL__KW_DEVICE, modal_int(99)),
                   "argument 6 (device): 99 is out of range");
    worker_refuses(with(good_call(), MODAL__KW_DEVICE, modal_int(1)),
                   "argument 6 (device): 1, but this worker holds 1 GPU (0..0)");
    modal_value *many = modal_list();
    for (int i = 0; i < MODAL_GPU_MAX_ARGS + 1; i++)
        modal_list_append(many, modal_args(modal_int(MODAL_GPU_ARG_SCALAR), modal_bytes("a", 1)),
                          NULL);
    worker_refuses_with(with(good_call(), MODAL__KW_ARGS, many), MODAL_ELIMIT,
                        "33 of them; a launch has at most 32");
    worker_refuses(with(good_call(), MODAL__KW_ARGS, modal_args(modal_int(1))),
                   "kernel argument 0: expected a list [kind, payload]");
    worker_refuses(with(good_call(), MODAL__KW_ARGS,
                        modal_args(modal_args(modal_int(9), modal_bytes("a", 1)))),
                   "kernel argument 0 has kind 9");
    worker_refuses(with(good_call(), MODAL__KW_ARGS,
                        modal_args(modal_args(modal_int(MODAL_GPU_ARG_SCALAR),
                                              modal_bytes(big, sizeof big)))),
                   "kernel argument 0 is a scalar of 300 bytes");
    worker_refuses(with(good_call(), MODAL__KW_ARGS,
                        modal_args(modal_args(modal_int(MODAL_GPU_ARG_OUT), modal_int(-1)))),
                   "kernel argument 0 (OUT array): expected its size in bytes");
    worker_refuses(with(good_call(), MODAL__KW_ARGS,
                        modal_args(modal_args(modal_int(MODAL_GPU_ARG_IN), modal_int(4)))),
                   "kernel argument 0: expected bytes, got int");
}

/* ---- runtimes that cannot launch ---------------------------------------------------------- */

static void test_runtime_without_gpu(void **state)
{
    /* A runtime whose driver cannot be loaded has no GPU. */
    setenv("MODAL_CUDA_LIBRARY", "/nonexistent/libcuda.so.1", 1);
    harness h;
    int rc = harness_start_with(&h, NULL, false);
    setenv("MODAL_CUDA_LIBRARY", harness_cuda_fake("libcuda.so.1"), 1);
    assert_int_equal(rc, 0);
    modal_connection *c;
    modal_error err;
    modal_connection_options o = MODAL_CONNECTION_OPTIONS_INIT;
    o.token = h.token;
    assert_ok(modal_connection_open(h.url, &o, &c, &err), err);
    modal_gpu_launch l = {.image = &image, .kernel = "empty", .grid = MODAL_DIM3(1),
                          .block = MODAL_DIM3(1)};
    assert_status(modal_gpu_run_remote_on(c, "any", &l, NULL, &err), MODAL_EGPU, err);
    assert_message_contains(err, "\"any\"");
    assert_message_contains(err, "GPU");
    modal_connection_close(c);
    harness_stop(&h);
}

static void test_runtime_without_kernel_worker(void **state)
{
    const char *args[] = {"--kernel-worker", "/nonexistent/modal-kernel-worker", NULL};
    harness h;
    assert_int_equal(harness_start_with(&h, args, false), 0);
    modal_connection *c;
    modal_error err;
    modal_connection_options o = MODAL_CONNECTION_OPTIONS_INIT;
    o.token = h.token;
    assert_ok(modal_connection_open(h.url, &o, &c, &err), err);
    modal_gpu_launch l = {.image = &image, .kernel = "empty", .grid = MODAL_DIM3(1),
                          .block = MODAL_DIM3(1)};
    assert_status(modal_gpu_run_remote_on(c, "any", &l, NULL, &err), MODAL_ENOTFOUND, err);
    assert_message_contains(err, "offers no remote kernel launch");
    assert_message_contains(err, "--kernel-worker /nonexistent/modal-kernel-worker");
    modal_connection_close(c);
    harness_stop(&h);
}

/* A kernel worker gone wrong, for the runtime started with this binary as
 * its --kernel-worker: the first array it answers has the right size, the
 * second not. */
MODAL_FUNCTION(modal_kernel, .gpu = "any")
{
    unsigned char right[8], wrong[3];
    memset(right, 0x11, sizeof right);
    memset(wrong, 0x22, sizeof wrong);
    const double t[3] = {0, 0, 0};
    modal_value *out = modal_args(modal_bytes(right, sizeof right),
                                  modal_bytes(wrong, sizeof wrong));
    modal_value *r = modal_map();
    modal_map_set(r, "out", out, NULL);
    modal_map_set(r, "stats", modal_array(MODAL_F64, t, 3), NULL);
    return r;
}

/* An answer whose sizes do not match the launch writes nothing into the
 * caller's memory, not even the arrays before the bad one. */
static void test_bad_answer_writes_nothing(void **state)
{
    const char *args[] = {"--kernel-worker", harness_self_exe(), NULL};
    harness h;
    assert_int_equal(harness_start_with(&h, args, false), 0);
    modal_connection *c;
    modal_error err;
    modal_connection_options o = MODAL_CONNECTION_OPTIONS_INIT;
    o.token = h.token;
    assert_ok(modal_connection_open(h.url, &o, &c, &err), err);
    int a[2] = {7, 7}, b[2] = {9, 9};
    modal_gpu_arg kargs[] = {MODAL_GPU_INOUT(a, 2), MODAL_GPU_OUT(b, 2)};
    modal_gpu_launch l = {.image = &image, .kernel = "empty", .grid = MODAL_DIM3(1),
                          .block = MODAL_DIM3(1), .args = kargs, .nargs = 2};
    assert_status(modal_gpu_run_remote_on(c, "any", &l, NULL, &err), MODAL_ECODEC, err);
    assert_message_contains(err, "sent 3 bytes for argument 1");
    assert_int_equal(a[0], 7);
    assert_int_equal(a[1], 7);
    assert_int_equal(b[0], 9);
    assert_int_equal(b[1], 9);
    modal_connection_close(c);
    harness_stop(&h);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_saxpy_round_trip),
        cmocka_unit_test(test_out_and_inout),
        cmocka_unit_test(test_module_loaded_once),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_lost_artifact),
        cmocka_unit_test(test_restarted_runtime),
        cmocka_unit_test(test_client_refusals),
        cmocka_unit_test(test_worker_refusals),
        cmocka_unit_test(test_runtime_without_gpu),
        cmocka_unit_test(test_runtime_without_kernel_worker),
        cmocka_unit_test(test_bad_answer_writes_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
