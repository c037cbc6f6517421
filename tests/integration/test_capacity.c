/*
 * test_capacity.c: the resource allocator against a real runtime started
 * with --cpus 1 --memory 4096 --max-queued 2. A function asking for one CPU runs its calls
 * one worker at a time, the waiting call shows in GET /v1/health and runs
 * when the CPU is free; an idle worker of another function gives its CPU
 * up to a waiting call; a function asking for more than the runtime has
 * fails at once with MODAL_ERESOURCE; the health output says whether
 * cgroup limits are enforced, and where they are, a worker's cgroup holds
 * its limits.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

MODAL_APP("itest-resources");

/* ---- functions ---------------------------------------------------- */

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleeps argument 0 seconds; reports its pid and when it ran. */
MODAL_FUNCTION(one_cpu, .cpu = 1, .scaledown_window = 3)
{
    modal_value *m = modal_map();
    double start = wall_now();
    harness_sleep(modal_arg_float(args, 0));
    if (modal_map_set(m, "pid", modal_int(getpid()), NULL) != MODAL_OK ||
        modal_map_set(m, "start", modal_float(start), NULL) != MODAL_OK ||
        modal_map_set(m, "end", modal_float(wall_now()), NULL) != MODAL_OK) {
        modal_value_free(m);
        return NULL;
    }
    return m;
}

/* Holds a CPU and would stay warm for a minute after each call. */
MODAL_FUNCTION(hold_cpu, .cpu = 1, .scaledown_window = 60)
{
    return modal_int(getpid());
}

MODAL_FUNCTION(too_many_cpus, .cpu = 64)
{
    return modal_int(0);
}

MODAL_FUNCTION(too_much_memory, .memory = 8192)
{
    return modal_int(0);
}

/* The worker's own cgroup files: cpu.max and memory.max, "" if none. */
static void read_own(const char *file, char *out, size_t outsz)
{
    char line[600], path[800];
    out[0] = '\0';
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f == NULL)
        return;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "0::", 3) == 0) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(path, sizeof path, "/sys/fs/cgroup%s/%s", line + 3, file);
        }
    fclose(f);
    char *s = harness_read_file(path, NULL);
    if (s != NULL) {
        snprintf(out, outsz, "%s", s);
        out[strcspn(out, "\n")] = '\0';
        free(s);
    }
}

MODAL_FUNCTION(limited, .cpu = 0.5, .memory = 256, .scaledown_window = 1)
{
    char cpu[64], mem[64];
    read_own("cpu.max", cpu, sizeof cpu);
    read_own("memory.max", mem, sizeof mem);
    modal_value *m = modal_map();
    if (modal_map_set(m, "cpu.max", modal_string(cpu), NULL) != MODAL_OK ||
        modal_map_set(m, "memory.max", modal_string(mem), NULL) != MODAL_OK) {
        modal_value_free(m);
        return NULL;
    }
    return m;
}

/* ---- helpers ------------------------------------------------------ */

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static double field(const modal_value *m, const char *key)
{
    double d = 0;
    modal_error err;
    const modal_value *v = modal_map_get(m, key);
    int64_t i;
    if (modal_get_float(v, &d, NULL) != MODAL_OK) {
        assert_ok(modal_get_int(v, &i, &err), err);
        d = (double)i;
    }
    return d;
}

/* ---- tests -------------------------------------------------------- */

static void test_health_reports_capacity(void **state)
{
    cJSON *h = harness_health(&rt);
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(h, "resources");
    const cJSON *cap = cJSON_GetObjectItemCaseSensitive(res, "capacity");
    assert_true(num(cap, "cpu") == 1);
    assert_true(num(cap, "memory_mib") == 4096);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(cap, "devices")), 0);
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(res, "enforcement");
    assert_true(cJSON_IsString(mode));
    assert_true(strcmp(mode->valuestring, "cgroup") == 0 ||
                strcmp(mode->valuestring, "accounting") == 0);
    const cJSON *why = cJSON_GetObjectItemCaseSensitive(res, "why");
    assert_true(cJSON_IsString(why) && why->valuestring[0] != '\0');
    cJSON_Delete(h);
}

/* Two calls of a one-CPU function on a one-CPU runtime: one worker, one
 * call at a time; the second is seen waiting for the CPU, then runs. */
static void test_one_cpu_runs_one_at_a_time(void **state)
{
    modal_error err;
    modal_call *a = NULL, *b = NULL;
    assert_ok(modal_fn_spawn(&one_cpu, modal_args(modal_float(1.5)), &a, &err), err);
    assert_ok(modal_fn_spawn(&one_cpu, modal_args(modal_float(0.1)), &b, &err), err);
    bool seen = false;
    for (double end = harness_now() + 10; !seen && harness_now() < end; harness_sleep(0.05)) {
        cJSON *h = harness_health(&rt);
        const cJSON *e = harness_waiting_entry(h, "one_cpu");
        const cJSON *wf = e != NULL ? cJSON_GetObjectItemCaseSensitive(e, "waits_for") : NULL;
        if (cJSON_IsString(wf) && strcmp(wf->valuestring, "cpu") == 0 &&
            num(e, "queued") + num(e, "sent_ahead") == 1 && num(e, "running") == 1) {
            seen = true;
            assert_true(num(e, "workers") == 1);
            const cJSON *asks = cJSON_GetObjectItemCaseSensitive(e, "asks");
            assert_true(num(asks, "cpu") == 1);
            const cJSON *reserved = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(h, "resources"), "reserved");
            assert_true(num(reserved, "cpu") == 1);
        }
        cJSON_Delete(h);
    }
    assert_true(seen);
    modal_value *ra = NULL, *rb = NULL;
    assert_ok(modal_call_get(a, 30, &ra, &err), err);
    assert_ok(modal_call_get(b, 30, &rb, &err), err);
    /* One worker ran both, the second after the first. */
    assert_true(field(ra, "pid") == field(rb, "pid"));
    assert_true(field(rb, "start") >= field(ra, "end"));
    modal_value_free(ra);
    modal_value_free(rb);
    modal_call_free(a);
    modal_call_free(b);
    /* Nothing waits any more. */
    cJSON *h = harness_health(&rt);
    assert_null(harness_waiting_entry(h, "one_cpu"));
    cJSON_Delete(h);
}

/* An idle worker of another function holding the CPU is stopped for a
 * waiting call, which then runs long before that worker's scale-down
 * window (60 s) would have freed it. */
static void test_idle_worker_gives_way(void **state)
{
    modal_error err;
    modal_value *r = NULL;
    assert_ok(modal_fn_remote(&hold_cpu, modal_args(), &r, &err), err);
    int64_t holder = 0;
    assert_ok(modal_get_int(r, &holder, &err), err);
    modal_value_free(r);
    /* one_cpu's worker from the test before may still be idle: either
     * way the CPU is held by an idle worker now. */
    double t0 = harness_now();
    assert_ok(modal_fn_remote(&one_cpu, modal_args(modal_float(0)), &r, &err), err);
    modal_value_free(r);
    assert_true(harness_now() - t0 < 20);
    /* The holder was stopped for it. */
    for (double end = harness_now() + 10; harness_pid_alive((pid_t)holder) &&
                                          harness_now() < end;)
        harness_sleep(0.05);
    assert_false(harness_pid_alive((pid_t)holder));
}

/* A function whose worker cannot start while another holds the CPU keeps
 * its calls in the queue, visibly, up to --max-queued (2 here); they start
 * as soon as the CPU is free. */
static void test_queue_waits_for_cpu_and_is_bounded(void **state)
{
    modal_error err;
    modal_call *busy = NULL, *q[2] = {NULL, NULL}, *extra = NULL;
    assert_ok(modal_fn_spawn(&one_cpu, modal_args(modal_float(2.0)), &busy, &err), err);
    /* Its worker holds the only CPU, starting or running the call. */
    harness_sleep(0.2);
    cJSON *h0 = harness_health(&rt);
    const cJSON *reserved = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(h0, "resources"), "reserved");
    assert_true(num(reserved, "cpu") == 1);
    cJSON_Delete(h0);
    assert_status(modal_call_get(busy, 0, NULL, &err), MODAL_EPENDING, err);
    double t0 = harness_now();
    for (int i = 0; i < 2; i++)
        assert_ok(modal_fn_spawn(&hold_cpu, modal_args(), &q[i], &err), err);
    assert_status(modal_fn_spawn(&hold_cpu, modal_args(), &extra, &err), MODAL_ELIMIT, err);
    assert_message_contains(err, "hold_cpu: 2 calls wait for a worker already");
    assert_message_contains(err, "(--max-queued 2)");
    cJSON *h = harness_health(&rt);
    const cJSON *e = harness_waiting_entry(h, "hold_cpu");
    assert_non_null(e);
    assert_true(num(e, "queued") == 2);
    assert_true(num(e, "workers") == 0);
    const cJSON *wf = cJSON_GetObjectItemCaseSensitive(e, "waits_for");
    assert_true(cJSON_IsString(wf) && strcmp(wf->valuestring, "cpu") == 0);
    cJSON_Delete(h);
    /* one_cpu's worker, idle once its call ends, gives the CPU way at once
     * (its scale-down window is 3 s: the calls must not wait for that). */
    assert_ok(modal_call_get(busy, 30, NULL, &err), err);
    double t_busy = harness_now();
    for (int i = 0; i < 2; i++) {
        assert_ok(modal_call_get(q[i], 30, NULL, &err), err);
        modal_call_free(q[i]);
    }
    assert_true(harness_now() - t_busy < 2.5);
    assert_true(harness_now() - t0 >= 1.0); /* they did wait for one_cpu's call */
    modal_call_free(busy);
}

static void test_never_fits_fails_at_once(void **state)
{
    modal_error err;
    modal_value *r = NULL;
    double t0 = harness_now();
    assert_status(modal_fn_remote(&too_many_cpus, modal_args(), &r, &err), MODAL_ERESOURCE, err);
    assert_null(r);
    assert_message_contains(err, "too_many_cpus: asks for 64 CPUs but this runtime has 1 "
                                 "(--cpus)");
    assert_status(modal_fn_remote(&too_much_memory, modal_args(), &r, &err), MODAL_ERESOURCE,
                  err);
    assert_message_contains(err, "too_much_memory: asks for 8192 MiB of memory but this "
                                 "runtime has 4096 MiB (--memory)");
    /* A map of it fails as well, before any input is sent. */
    modal_value *out = NULL;
    modal_value *inputs = modal_list();
    assert_ok(modal_list_append(inputs, modal_int(1), &err), err);
    assert_status(modal_fn_map(&too_many_cpus, inputs, NULL, &out, &err), MODAL_ERESOURCE, err);
    assert_message_contains(err, "asks for 64 CPUs");
    assert_true(harness_now() - t0 < 5);
    assert_string_equal(modal_status_name(MODAL_ERESOURCE), "ERESOURCE");
}

/* Where cgroup v2 is delegated to the runtime, a worker runs in a cgroup
 * whose limits are its function's reservation. */
static void test_cgroup_limits(void **state)
{
    cJSON *h = harness_health(&rt);
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(h, "resources");
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(res, "enforcement");
    const cJSON *why = cJSON_GetObjectItemCaseSensitive(res, "why");
    bool on = cJSON_IsString(mode) && strcmp(mode->valuestring, "cgroup") == 0;
    if (!on) {
        fprintf(stderr, "SKIP test_cgroup_limits: the runtime accounts only: %s\n",
                cJSON_IsString(why) ? why->valuestring : "?");
        cJSON_Delete(h);
        skip();
    }
    cJSON_Delete(h);
    modal_error err;
    modal_value *r = NULL;
    assert_ok(modal_fn_remote(&limited, modal_args(), &r, &err), err);
    const char *cpu = NULL, *mem = NULL;
    assert_ok(modal_get_string(modal_map_get(r, "cpu.max"), &cpu, NULL, &err), err);
    assert_ok(modal_get_string(modal_map_get(r, "memory.max"), &mem, NULL, &err), err);
    assert_string_equal(cpu, "50000 100000");
    assert_string_equal(mem, "268435456");
    modal_value_free(r);
}

/* Bad capacity flags stop the runtime before it starts, naming the value. */
static void test_bad_flags_refused(void **state)
{
    const char *cases[][3] = {
        {"--cpus", "0.1", "--cpus \"0.1\": expected a number of CPU cores from 0.125 to 4096"},
        {"--cpus", "two", "--cpus \"two\": expected a number of CPU cores"},
        {"--memory", "0", "--memory \"0\": expected a number from 1 to"},
        {"--max-queued", "0", "--max-queued \"0\": expected a number from 1 to"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char dir[] = "/tmp/modal-it-flags-XXXXXX";
        assert_non_null(mkdtemp(dir));
        char *argv[] = {(char *)harness_runtime_bin(), "--state-dir", dir, "--listen",
                        "tcp:127.0.0.1:0", (char *)cases[i][0], (char *)cases[i][1], NULL};
        char *out = NULL;
        int ws = harness_run(argv, 30, &out);
        assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 2);
        assert_contains(out, cases[i][2]);
        assert_null(strstr(out, "listening"));
        free(out);
        harness_rmtree(dir);
    }
}

static int setup(void **state)
{
    setenv("MODAL_QUIET_LOGS", "1", 1);
    const char *args[] = {"--cpus", "1", "--memory", "4096", "--max-queued", "2", NULL};
    return harness_start_with(&rt, args, true);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_reports_capacity),
        cmocka_unit_test(test_one_cpu_runs_one_at_a_time),
        cmocka_unit_test(test_idle_worker_gives_way),
        cmocka_unit_test(test_queue_waits_for_cpu_and_is_bounded),
        cmocka_unit_test(test_never_fits_fails_at_once),
        cmocka_unit_test(test_cgroup_limits),
        cmocka_unit_test(test_bad_flags_refused),
    };
    return cmocka_run_group_tests_name("capacity", tests, setup, harness_group_teardown) != 0;
}
