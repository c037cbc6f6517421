/*
 * test_seams.c: the places where the core's parts meet, against real
 * runtimes. A memory-snapshot function that asks for a CPU on a one-CPU
 * runtime (its template holds no reservation; calls wait for the CPU and
 * health says so); the idle pool of a snapshot function freed with its
 * template, and made again, with no descriptor left behind; one function
 * called through two connections to two runtimes; a restarted runtime that
 * kept the spec but lost the executable; a large array result (the memfd
 * path) from a forked worker; a map with retries over a snapshot function
 * whose workers crash; a snapshot function that can never fit.
 *
 * This binary is also the worker (and the template) the runtimes start.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

MODAL_APP("itest-seams");

#define MIB ((size_t)1 << 20)

/* ---- functions ---------------------------------------------------- */

static pid_t snapshot_pid; /* set by snapshot_enter, in the template */

static int prepare(modal_ctx *ctx)
{
    snapshot_pid = getpid();
    return 0;
}

/* {x, pid, ppid, snapshot_pid, start, end} after sleeping s seconds. */
static modal_value *report(int64_t x, double s)
{
    double start = harness_now();
    harness_sleep(s);
    modal_value *m = modal_map();
    if (modal_map_set(m, "x", modal_int(x), NULL) != MODAL_OK ||
        modal_map_set(m, "pid", modal_int(getpid()), NULL) != MODAL_OK ||
        modal_map_set(m, "ppid", modal_int(getppid()), NULL) != MODAL_OK ||
        modal_map_set(m, "snapshot_pid", modal_int(snapshot_pid), NULL) != MODAL_OK ||
        modal_map_set(m, "start", modal_float(start), NULL) != MODAL_OK ||
        modal_map_set(m, "end", modal_float(harness_now()), NULL) != MODAL_OK) {
        modal_value_free(m);
        return NULL;
    }
    return m;
}

/* One CPU per worker: on a --cpus 1 runtime, one worker at a time. */
MODAL_FUNCTION(seam_cpu, .memory_snapshot = true, .snapshot_enter = prepare, .cpu = 1,
               .max_containers = 3, .scaledown_window = 2)
{
    return report(0, modal_arg_float(args, 0));
}

/* More CPUs than any test runtime has. */
MODAL_FUNCTION(seam_huge, .memory_snapshot = true, .snapshot_enter = prepare, .cpu = 64)
{
    return modal_null();
}

/* One CPU, kept warm for a long while. */
MODAL_FUNCTION(seam_warm, .cpu = 1, .scaledown_window = 60)
{
    return report(0, 0);
}

/* Can never fit, and asks for a warm worker. */
MODAL_FUNCTION(seam_never, .memory_snapshot = true, .snapshot_enter = prepare, .cpu = 64,
               .min_containers = 1)
{
    return modal_null();
}

/* Its pool goes one second after its last call. */
MODAL_FUNCTION(seam_idle, .memory_snapshot = true, .snapshot_enter = prepare,
               .scaledown_window = 1)
{
    return report(modal_arg_int(args, 0), 0);
}

MODAL_FUNCTION(seam_echo, .memory_snapshot = true, .snapshot_enter = prepare)
{
    return report(modal_arg_int(args, 0), 0);
}

static uint8_t pattern(size_t i)
{
    return (uint8_t)((i * 2654435761u >> 11) + 7);
}

/* A u8 array of argument-0 bytes, made as a worker makes it (a memfd from
 * 4 MiB up). */
MODAL_FUNCTION(seam_big, .memory_snapshot = true, .snapshot_enter = prepare, .timeout = 120)
{
    size_t shape[1] = {(size_t)modal_arg_int(args, 0)};
    modal_value *v = modal_array_new(MODAL_U8, 1, shape);
    uint8_t *p = modal_array_data_mut(v);
    for (size_t i = 0; p != NULL && i < shape[0]; i++)
        p[i] = pattern(i);
    return v;
}

/* Inputs divisible by 3 kill their worker on the first attempt. */
MODAL_FUNCTION(seam_flaky, .memory_snapshot = true, .snapshot_enter = prepare, .retries = 2,
               .max_containers = 2, .scaledown_window = 2)
{
    int64_t x = modal_arg_int(args, 0);
    if (x % 3 == 0 && modal_ctx_attempt(ctx) == 1)
        raise(SIGKILL);
    return report(x * 10, 0);
}

/* A 4 MiB table snapshot_enter builds, as a model's weights or a scratch
 * buffer would be (the size from which worker arrays live in memfds). */
static modal_value *table;

static int build_table(modal_ctx *ctx)
{
    snapshot_pid = getpid();
    size_t shape[1] = {4 * MIB};
    table = modal_array_new(MODAL_U8, 1, shape);
    uint8_t *p = modal_array_data_mut(table);
    if (p == NULL)
        return 1;
    memset(p, 1, shape[0]);
    return 0;
}

/* Reads the table's first byte and bumps it; attempt 1 then dies, so that
 * attempt 2 runs in another fork, which must see the template's table. */
MODAL_FUNCTION(seam_scratch, .memory_snapshot = true, .snapshot_enter = build_table,
               .retries = 1, .scaledown_window = 2)
{
    uint8_t *p = modal_array_data_mut(table);
    int v = p[0];
    p[0]++;
    if (modal_ctx_attempt(ctx) == 1)
        raise(SIGKILL);
    return modal_int(v);
}

/* A snapshot_enter that always fails, on a function kept warm. */
static int refuse(modal_ctx *ctx)
{
    printf("snapshot_enter of seam_warm_bad refuses\n");
    modal_ctx_fail(ctx, "the model file is missing");
    return 1;
}

MODAL_FUNCTION(seam_warm_bad, .memory_snapshot = true, .snapshot_enter = refuse,
               .min_containers = 1)
{
    return modal_null();
}

/* ---- helpers ------------------------------------------------------ */

static double field(const modal_value *m, const char *key)
{
    const modal_value *v = modal_map_get(m, key);
    double d = 0;
    int64_t i = 0;
    modal_error err;
    if (modal_get_float(v, &d, NULL) == MODAL_OK)
        return d;
    if (v == NULL)
        print_error("no field %s in a value of type %d (%zu entries)\n", key,
                    (int)modal_value_type(m), modal_value_len(m));
    assert_ok(modal_get_int(v, &i, &err), err);
    return (double)i;
}

/* The spec id of fn's pool on h, or "" when it has none. */
static void pool_of(const harness *h, const char *fn, char id[65])
{
    cJSON *j = harness_health(h);
    id[0] = '\0';
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(j, "pools"))
    {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(p, "fn");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "spec");
        if (cJSON_IsString(f) && strcmp(f->valuestring, fn) == 0 && cJSON_IsString(s))
            snprintf(id, 65, "%s", s->valuestring);
    }
    cJSON_Delete(j);
}

/* What fn's pool on h waits for ("" when it is not listed as waiting). */
static void waits_for(const harness *h, const char *fn, char *out, size_t outsz)
{
    cJSON *j = harness_health(h);
    out[0] = '\0';
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(
                              cJSON_GetObjectItemCaseSensitive(j, "queue"), "waiting"))
    {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "fn");
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(e, "waits_for");
        if (cJSON_IsString(f) && strcmp(f->valuestring, fn) == 0)
            snprintf(out, outsz, "%s", cJSON_IsString(w) ? w->valuestring : "null");
    }
    cJSON_Delete(j);
}

static double reserved_cpu(const harness *h)
{
    cJSON *j = harness_health(h);
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(j, "resources"), "reserved");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(r, "cpu");
    assert_true(cJSON_IsNumber(c));
    double v = c->valuedouble;
    cJSON_Delete(j);
    return v;
}

static modal_connection *connect_to(const char *url, const char *token)
{
    modal_connection_options o = MODAL_CONNECTION_OPTIONS_INIT;
    o.token = token;
    modal_connection *c = NULL;
    modal_error err;
    assert_ok(modal_connection_open(url, &o, &c, &err), err);
    return c;
}

/* Open descriptors of process pid. */
static int fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static bool file_exists(const char *dir, const char *sub, const char *name, const char *ext)
{
    char path[PATH_MAX + 200];
    snprintf(path, sizeof path, "%s/%s/%s%s", dir, sub, name, ext);
    return access(path, F_OK) == 0;
}

/* ---- tests -------------------------------------------------------- */

/*
 * On a one-CPU runtime, a snapshot function asking for one CPU: the
 * template reserves nothing (else no worker could ever start), the calls
 * run one at a time, the waiting ones show as waiting for "cpu", and all
 * complete. A function that can never fit fails at once, before any
 * template is started.
 */
static void test_snapshot_waits_for_cpu(void **state)
{
    harness h;
    const char *const args[] = {"--cpus", "1", NULL};
    assert_int_equal(harness_start_with(&h, args, false), 0);
    modal_connection *c = connect_to(h.url, h.token);
    modal_error err;
    enum { N = 3 };
    modal_call *calls[N];
    for (int i = 0; i < N; i++)
        assert_ok(modal_fn_spawn_on(c, &seam_cpu, modal_args(modal_float(0.8)), &calls[i],
                                    &err), err);
    char why[64] = "";
    for (double t0 = harness_now(); harness_now() - t0 < 10 && strcmp(why, "cpu") != 0;
         harness_sleep(0.05))
        waits_for(&h, "seam_cpu", why, sizeof why);
    assert_string_equal(why, "cpu");
    assert_true(reserved_cpu(&h) <= 1.0);
    modal_value *out[N];
    for (int i = 0; i < N; i++) {
        out[i] = NULL;
        assert_ok(modal_call_get(calls[i], 60, &out[i], &err), err);
        modal_call_free(calls[i]);
    }
    for (int i = 0; i < N; i++) {
        /* A fork of the template, the runtime's child. */
        assert_true(field(out[i], "snapshot_pid") > 0);
        assert_true(field(out[i], "pid") != field(out[i], "snapshot_pid"));
        assert_int_equal((pid_t)field(out[i], "ppid"), h.pid);
        /* Never two at once. */
        for (int j = 0; j < i; j++)
            assert_true(field(out[i], "start") >= field(out[j], "end") ||
                        field(out[j], "start") >= field(out[i], "end"));
    }
    for (int i = 0; i < N; i++)
        modal_value_free(out[i]);

    double t0 = harness_now();
    modal_value *r = NULL;
    assert_status(modal_fn_remote_on(c, &seam_huge, modal_args(), &r, &err), MODAL_ERESOURCE,
                  err);
    assert_message_contains(err, "seam_huge: asks for 64 CPUs but this runtime has 1");
    assert_true(harness_now() - t0 < 5);
    assert_null(r);
    char id[65];
    pool_of(&h, "seam_huge", id);
    /* Its pool (if any) started nothing: the only processes of this
     * runtime are seam_cpu's template and worker. */
    assert_true(harness_count_workers(h.dir, "") <= 2);
    modal_connection_close(c);
    harness_stop(&h);
}

/*
 * A function that can never fit is refused, and that is all: though it asks
 * for a warm worker (min_containers), it does not wait for a CPU, and the
 * idle worker of another function, which holds the runtime's one CPU, is
 * not stopped to make room for it.
 */
static void test_never_fits_takes_nothing(void **state)
{
    harness h;
    const char *const args[] = {"--cpus", "1", NULL};
    assert_int_equal(harness_start_with(&h, args, false), 0);
    modal_connection *c = connect_to(h.url, h.token);
    modal_error err;
    modal_value *out = NULL;
    assert_ok(modal_fn_remote_on(c, &seam_warm, modal_args(), &out, &err), err);
    pid_t warm = (pid_t)field(out, "pid");
    modal_value_free(out);
    for (int i = 0; i < 3; i++) {
        assert_status(modal_fn_remote_on(c, &seam_never, modal_args(), &out, &err),
                      MODAL_ERESOURCE, err);
        assert_message_contains(err, "seam_never: asks for 64 CPUs but this runtime has 1");
        char why[64];
        waits_for(&h, "seam_never", why, sizeof why);
        assert_string_equal(why, "");
        harness_sleep(0.5);
    }
    assert_true(harness_pid_alive(warm));
    assert_ok(modal_fn_remote_on(c, &seam_warm, modal_args(), &out, &err), err);
    assert_int_equal((pid_t)field(out, "pid"), warm);
    modal_value_free(out);
    modal_connection_close(c);
    harness_stop(&h);
}

/*
 * The idle pool of a snapshot function is freed with its template (the
 * process is gone), and the next map makes a new pool and a new template.
 * Round after round, the runtime holds no more descriptors than before.
 */
static void test_idle_snapshot_pool_freed_with_template(void **state)
{
    modal_error err;
    pid_t last = 0;
    int fds[3] = {0, 0, 0};
    for (int round = 0; round < 3; round++) {
        modal_value *out = NULL;
        assert_ok(modal_fn_map(&seam_idle, modal_args(modal_int(1), modal_int(2)), NULL, &out,
                               &err), err);
        assert_int_equal(modal_value_len(out), 2);
        pid_t tmpl = (pid_t)field(modal_list_get(out, 0), "snapshot_pid");
        assert_true(tmpl > 0);
        assert_int_equal((pid_t)field(modal_list_get(out, 1), "snapshot_pid"), tmpl);
        assert_true(tmpl != last);
        assert_true(harness_pid_alive(tmpl));
        modal_value_free(out);
        char id[65] = "x";
        pool_of(&rt, "seam_idle", id);
        assert_int_equal(strlen(id), 64);
        for (double t0 = harness_now(); harness_now() - t0 < 20 && id[0] != '\0';
             harness_sleep(0.1))
            pool_of(&rt, "seam_idle", id);
        assert_string_equal(id, "");
        /* The template went with its pool, reaped: no zombie is left. */
        for (double t0 = harness_now(); harness_now() - t0 < 5 && harness_pid_alive(tmpl);)
            harness_sleep(0.02);
        assert_false(harness_pid_alive(tmpl));
        last = tmpl;
        fds[round] = fd_count(rt.pid);
    }
    /* Round 0 opened what stays open (the log, client connections). */
    assert_true(fds[2] <= fds[1]);
}

/*
 * One function called through two connections to two runtimes: each
 * runtime gets the spec (the same id: the spec is the same), runs the call
 * in its own workers, and keeps it in its own specs/.
 */
static void test_two_connections_two_runtimes(void **state)
{
    harness h2;
    assert_int_equal(harness_start_with(&h2, NULL, false), 0);
    modal_connection *c1 = connect_to(rt.url, rt.token);
    modal_connection *c2 = connect_to(h2.url, h2.token);
    modal_error err;
    for (int i = 0; i < 4; i++) {
        modal_connection *c = i % 2 ? c2 : c1;
        harness *h = i % 2 ? &h2 : &rt;
        modal_value *out = NULL;
        assert_ok(modal_fn_remote_on(c, &seam_echo, modal_args(modal_int(i)), &out, &err), err);
        assert_int_equal((int)field(out, "x"), i);
        assert_int_equal((pid_t)field(out, "ppid"), h->pid);
        modal_value_free(out);
    }
    /* The default connection, pointed at rt, shares its workers. */
    modal_value *out = NULL;
    assert_ok(modal_fn_remote(&seam_echo, modal_args(modal_int(9)), &out, &err), err);
    assert_int_equal((pid_t)field(out, "ppid"), rt.pid);
    modal_value_free(out);
    char id1[65], id2[65];
    pool_of(&rt, "seam_echo", id1);
    pool_of(&h2, "seam_echo", id2);
    assert_int_equal(strlen(id1), 64);
    assert_string_equal(id1, id2);
    assert_true(file_exists(rt.dir, "specs", id1, ".json"));
    assert_true(file_exists(h2.dir, "specs", id2, ".json"));
    modal_connection_close(c1);
    modal_connection_close(c2);
    harness_stop(&h2);
}

/*
 * A runtime killed and started again on its state directory keeps the
 * spec, but its executable was removed meanwhile: the client, which
 * registered and uploaded both before, gets the call (or the map) refused
 * for the missing executable, uploads it again and succeeds.
 */
static void test_restart_keeps_spec_loses_artifact(void **state)
{
    char port_arg[64], url[64], sha[65], id[65], id_after[65];
    int port = harness_free_port();
    snprintf(port_arg, sizeof port_arg, "tcp:127.0.0.1:%d", port);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    const char *const args[] = {"--listen", port_arg, NULL};
    assert_int_equal(harness_self_sha256(sha), 0);
    harness a, b;
    assert_int_equal(harness_start_with(&a, args, false), 0);
    modal_connection *c = connect_to(url, a.token);
    modal_error err;
    modal_value *out = NULL;
    assert_ok(modal_fn_remote_on(c, &seam_echo, modal_args(modal_int(5)), &out, &err), err);
    assert_int_equal((int)field(out, "x"), 5);
    modal_value_free(out);
    pool_of(&a, "seam_echo", id);
    assert_true(file_exists(a.dir, "specs", id, ".json"));

    harness_kill(&a);
    harness_release(&a); /* its output drain, before a is reused */
    char path[PATH_MAX + 100];
    snprintf(path, sizeof path, "%s/artifacts/%s", a.dir, sha);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(harness_start_in(&b, a.dir, args, false), 0);
    assert_string_equal(b.token, a.token);
    assert_ok(modal_fn_remote_on(c, &seam_echo, modal_args(modal_int(6)), &out, &err), err);
    assert_int_equal((int)field(out, "x"), 6);
    assert_int_equal((pid_t)field(out, "ppid"), b.pid);
    modal_value_free(out);
    pool_of(&b, "seam_echo", id_after);
    assert_string_equal(id_after, id);
    assert_int_equal(access(path, X_OK), 0);

    /* A map finds its way the same way. */
    harness_kill(&b);
    harness_release(&b);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(harness_start_in(&a, b.dir, args, false), 0);
    assert_ok(modal_fn_map_on(c, &seam_echo, modal_args(modal_int(1), modal_int(2)), NULL, &out,
                              &err), err);
    assert_int_equal(modal_value_len(out), 2);
    assert_int_equal((int)field(modal_list_get(out, 1), "x"), 2);
    assert_int_equal((pid_t)field(modal_list_get(out, 1), "ppid"), a.pid);
    modal_value_free(out);
    modal_connection_close(c);
    harness_stop(&a);
}

/* A large array a forked snapshot worker makes arrives intact. */
static void test_large_result_from_forked_worker(void **state)
{
    size_t sizes[] = {4 * MIB, 9 * MIB + 13};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        modal_value *out = NULL;
        modal_error err;
        assert_ok(modal_fn_remote(&seam_big, modal_args(modal_int((int64_t)sizes[k])), &out,
                                  &err), err);
        const void *data = NULL;
        size_t n = 0;
        assert_ok(modal_get_array(out, MODAL_U8, &data, &n, &err), err);
        assert_int_equal(n, sizes[k]);
        const uint8_t *p = data;
        size_t bad = 0;
        for (size_t i = 0; i < n; i++)
            bad += p[i] != pattern(i);
        assert_int_equal(bad, 0);
        modal_value_free(out);
    }
}

/* A map over a snapshot function with retries, where a third of the
 * inputs kill their worker on the first attempt: every result arrives, in
 * order, from forks of one template. */
static void test_map_with_crashing_forks(void **state)
{
    enum { N = 12 };
    modal_value *in = modal_list();
    modal_error err;
    for (int i = 1; i <= N; i++)
        assert_ok(modal_list_append(in, modal_int(i), &err), err);
    modal_value *out = NULL;
    assert_ok(modal_fn_map(&seam_flaky, in, NULL, &out, &err), err);
    assert_int_equal(modal_value_len(out), N);
    double tmpl = field(modal_list_get(out, 0), "snapshot_pid");
    for (int i = 0; i < N; i++) {
        const modal_value *r = modal_list_get(out, (size_t)i);
        assert_int_equal((int)field(r, "x"), (i + 1) * 10);
        assert_true(field(r, "pid") != field(r, "snapshot_pid"));
        assert_true(field(r, "snapshot_pid") == tmpl);
    }
    assert_true(harness_pid_alive((pid_t)tmpl));
    modal_value_free(out);
}

/*
 * What snapshot_enter built is each fork's own, as a fork gives it: a
 * large array made there is not shared memory between the template and its
 * workers, so what one worker writes into it no other worker sees.
 */
static void test_snapshot_memory_is_not_shared(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    int64_t v = 0;
    assert_ok(modal_fn_remote(&seam_scratch, modal_args(), &out, &err), err);
    assert_ok(modal_get_int(out, &v, &err), err);
    /* Attempt 1 wrote 2 in its own copy before it died. */
    assert_int_equal(v, 1);
    modal_value_free(out);
}

/* Lines of rt's app log that contain needle. */
static int log_count(const char *needle)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/logs/itest-seams.log", rt.dir);
    char *text = harness_read_file(path, NULL);
    int n = 0;
    for (const char *p = text; p != NULL && (p = strstr(p, needle)) != NULL; p++)
        n++;
    free(text);
    return n;
}

/*
 * A function kept warm whose template cannot start (snapshot_enter fails):
 * the call that asked fails with the hook's message, and the runtime does
 * not then start template after template to keep the pool warm; it tries
 * again, after a pause that grows.
 */
static void test_warm_pool_whose_start_fails(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    assert_status(modal_fn_remote(&seam_warm_bad, modal_args(), &out, &err), MODAL_EFUNC, err);
    assert_message_contains(err, "the model file is missing");
    harness_sleep(3);
    int n = log_count("snapshot_enter of seam_warm_bad refuses");
    assert_true(n >= 1);
    assert_true(n <= 4);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_waits_for_cpu),
        cmocka_unit_test(test_never_fits_takes_nothing),
        cmocka_unit_test(test_idle_snapshot_pool_freed_with_template),
        cmocka_unit_test(test_two_connections_two_runtimes),
        cmocka_unit_test(test_restart_keeps_spec_loses_artifact),
        cmocka_unit_test(test_large_result_from_forked_worker),
        cmocka_unit_test(test_map_with_crashing_forks),
        cmocka_unit_test(test_snapshot_memory_is_not_shared),
        cmocka_unit_test(test_warm_pool_whose_start_fails),
    };
    return cmocka_run_group_tests_name("seams", tests, harness_group_setup,
                                       harness_group_teardown) != 0;
}
