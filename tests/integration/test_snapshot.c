/*
 * test_snapshot.c: memory snapshots against a real runtime. A function
 * with .memory_snapshot runs its snapshot_enter hook once, in a template,
 * and its workers are forks of that template: they see what the hook
 * built, run their own enter hook, and behave as exec'd workers do on
 * timeouts, crashes and output. A template that dies is replaced without
 * losing calls, and a failing snapshot_enter fails the call with its
 * message.
 *
 * This binary is also the worker (and the template) the runtime starts.
 */
#include "harness.h"

MODAL_APP("itest-snapshot");

/* ---- functions ---------------------------------------------------- */

static pid_t exec_pid;       /* set at program start: the process that was exec'd */
static pid_t snapshot_pid;   /* set by snapshot_enter */
static int snapshot_runs;    /* snapshot_enter runs in this process's memory */
static char model[64];       /* "built" by snapshot_enter */
static int enters;           /* enter hook runs in this process */
static FILE *data_file;      /* opened by snapshot_enter, read by calls */

__attribute__((constructor)) static void note_exec(void)
{
    exec_pid = getpid();
}

static int build_model(modal_ctx *ctx)
{
    snapshot_pid = getpid();
    snapshot_runs++;
    snprintf(model, sizeof model, "weights-%d", (int)getpid());
    data_file = fopen("/proc/self/cmdline", "r");
    printf("snapshot_enter ran in %d\n", (int)getpid());
    return 0;
}

static int count_enter(modal_ctx *ctx)
{
    enters++;
    return 0;
}

static modal_value *report(void)
{
    /* A file snapshot_enter opened is still open, and readable (with
     * pread: every worker shares its offset). */
    char head[8] = "";
    if (data_file != NULL && pread(fileno(data_file), head, 1, 0) != 1)
        head[0] = '\0';
    modal_value *m = modal_map();
    if (modal_map_set(m, "file_ok", modal_int(head[0] == '/'), NULL) != MODAL_OK) {
        modal_value_free(m);
        return NULL;
    }
    if (modal_map_set(m, "pid", modal_int(getpid()), NULL) != MODAL_OK ||
        modal_map_set(m, "ppid", modal_int(getppid()), NULL) != MODAL_OK ||
        modal_map_set(m, "pgid", modal_int(getpgid(0)), NULL) != MODAL_OK ||
        modal_map_set(m, "exec_pid", modal_int(exec_pid), NULL) != MODAL_OK ||
        modal_map_set(m, "snapshot_pid", modal_int(snapshot_pid), NULL) != MODAL_OK ||
        modal_map_set(m, "snapshot_runs", modal_int(snapshot_runs), NULL) != MODAL_OK ||
        modal_map_set(m, "enters", modal_int(enters), NULL) != MODAL_OK ||
        modal_map_set(m, "model", modal_string(model), NULL) != MODAL_OK) {
        modal_value_free(m);
        return NULL;
    }
    return m;
}

/* Sleeps argument 0 seconds, prints a line, reports where it ran. */
MODAL_FUNCTION(snap, .memory_snapshot = true, .snapshot_enter = build_model,
               .enter = count_enter, .max_containers = 3, .scaledown_window = 2)
{
    harness_sleep(modal_arg_float(args, 0));
    printf("call %s in %d\n", ctx->call_id, (int)getpid());
    return report();
}

/* The same, in a pool of its own. */
MODAL_FUNCTION(snap_fresh, .memory_snapshot = true, .snapshot_enter = build_model,
               .enter = count_enter, .max_containers = 3, .scaledown_window = 5)
{
    harness_sleep(modal_arg_float(args, 0));
    return report();
}

/* Starts a child in its own process group's stead (same group), reports
 * both pids, then sleeps past its 1 s timeout. */
MODAL_FUNCTION(snap_slow, .memory_snapshot = true, .snapshot_enter = build_model,
               .timeout = 1, .max_containers = 1, .scaledown_window = 2)
{
    const char *pidfile = modal_arg_string(args, 0);
    pid_t child = fork();
    if (child == 0) {
        harness_sleep(30);
        _exit(0);
    }
    FILE *f = fopen(pidfile, "w");
    if (f != NULL) {
        fprintf(f, "%d %d\n", (int)getpid(), (int)child);
        fclose(f);
    }
    harness_sleep(10);
    return report();
}

/* Writes the template's pid to the file named by argument 0. */
MODAL_FUNCTION(snap_note, .memory_snapshot = true, .snapshot_enter = build_model)
{
    FILE *f = fopen(modal_arg_string(args, 0), "w");
    if (f == NULL)
        return modal_ctx_fail(ctx, "cannot write %s", modal_arg_string(args, 0));
    fprintf(f, "%d\n", (int)snapshot_pid);
    fclose(f);
    return modal_null();
}

/* Attempt 1 dies of SIGKILL; attempt 2 answers. */
MODAL_FUNCTION(snap_crash, .memory_snapshot = true, .snapshot_enter = build_model,
               .retries = 1, .scaledown_window = 2)
{
    if (modal_ctx_attempt(ctx) == 1)
        raise(SIGKILL);
    return report();
}

static int refuse_snapshot(modal_ctx *ctx)
{
    modal_ctx_fail(ctx, "weights file /models/w.bin is missing");
    return 1;
}

MODAL_FUNCTION(snap_bad, .memory_snapshot = true, .snapshot_enter = refuse_snapshot,
               .scaledown_window = 1)
{
    return modal_null();
}

/* A template that dies inside snapshot_enter, before HELLO. */
static int die_in_snapshot(modal_ctx *ctx)
{
    fprintf(stderr, "giving up\n");
    _exit(5);
}

MODAL_FUNCTION(snap_dies, .memory_snapshot = true, .snapshot_enter = die_in_snapshot)
{
    return modal_null();
}

/* snapshot_enter without memory_snapshot: refused by the library. */
MODAL_FUNCTION(snap_misused, .snapshot_enter = build_model)
{
    return modal_null();
}

/* ---- helpers ------------------------------------------------------ */

static int64_t field(const modal_value *m, const char *key)
{
    int64_t v = -1;
    modal_get_int(modal_map_get(m, key), &v, NULL);
    return v;
}

/* Run n calls of snap at once, each sleeping `sleep` s; results in out. */
static void run_snaps_of(modal_function *fn, int n, double sleep, modal_value **out,
                         modal_call **calls)
{
    modal_error err;
    for (int i = 0; i < n; i++)
        assert_ok(modal_fn_spawn(fn, modal_args(modal_float(sleep)), &calls[i], &err), err);
    for (int i = 0; i < n; i++) {
        out[i] = NULL;
        assert_ok(modal_call_get(calls[i], 60, &out[i], &err), err);
    }
}

static void run_snaps(int n, double sleep, modal_value **out, modal_call **calls)
{
    run_snaps_of(&snap, n, sleep, out, calls);
}

/* Call fn of this executable on runtime h through the HTTP API, with
 * memory_snapshot and no retries; fills the result's code and message. */
static void raw_call(harness *h, const char *fn, modal_value *args, char *code, size_t codesz,
                     char *msg, size_t msgsz)
{
    char sha[65], id[40];
    modal_error err;
    assert_int_equal(harness_upload_self(h, sha), 0);
    modal__random_id("fc-", id, sizeof id);
    cJSON *env = cJSON_CreateObject();
    cJSON_AddNumberToObject(env, "v", 1);
    cJSON_AddStringToObject(env, "app", "itest-snapshot");
    cJSON_AddStringToObject(env, "fn", fn);
    cJSON_AddStringToObject(env, "artifact", sha);
    cJSON_AddStringToObject(env, "call_id", id);
    cJSON *opt = cJSON_AddObjectToObject(env, "options");
    cJSON_AddBoolToObject(opt, "memory_snapshot", true);
    void *frame = NULL;
    size_t flen = 0;
    assert_ok(harness_frame(env, "args", args, &frame, &flen, &err), err);
    modal_value_free(args);
    long status = 0;
    char *resp = NULL;
    size_t rlen = 0;
    harness_http(h, "POST", "/v1/calls?wait=30", h->token, frame, flen, &status, &resp, &rlen);
    free(frame);
    assert_int_equal(status, 200);
    assert_ok(harness_result_status(resp, rlen, code, codesz, msg, msgsz, &err), err);
    free(resp);
}

/* ---- tests -------------------------------------------------------- */

static void test_workers_are_forks_of_one_template(void **state)
{
    modal_value *out[3];
    modal_call *calls[3];
    run_snaps(3, 0.5, out, calls);
    int64_t tmpl = field(out[0], "snapshot_pid");
    int64_t pids[3];
    for (int i = 0; i < 3; i++)
        pids[i] = field(out[i], "pid");
    size_t distinct = 0;
    for (int i = 0; i < 3; i++) {
        int64_t pid = pids[i];
        /* snapshot_enter ran once, in the template, not in the worker. */
        assert_int_equal(field(out[i], "snapshot_pid"), tmpl);
        assert_int_not_equal(pid, tmpl);
        assert_int_equal(field(out[i], "snapshot_runs"), 1);
        /* No exec: the memory was the template's, constructors included. */
        assert_int_equal(field(out[i], "exec_pid"), tmpl);
        /* What snapshot_enter built is there. */
        char want[64];
        snprintf(want, sizeof want, "weights-%lld", (long long)tmpl);
        const char *model_ = NULL;
        modal_error err;
        assert_ok(modal_get_string(modal_map_get(out[i], "model"), &model_, NULL, &err), err);
        assert_string_equal(model_, want);
        assert_int_equal(field(out[i], "file_ok"), 1);
        /* enter ran once in each worker. */
        assert_int_equal(field(out[i], "enters"), 1);
        /* The runtime is its parent (it reaps it), and it leads its own
         * process group. */
        assert_int_equal(field(out[i], "ppid"), rt.pid);
        assert_int_equal(field(out[i], "pgid"), pid);
        bool seen = false;
        for (int j = 0; j < i; j++)
            seen = seen || pids[j] == pid;
        distinct += !seen;
        /* Its output is captured per call, as an exec'd worker's. */
        char *logs = harness_call_logs(&rt, modal_call_id(calls[i]));
        char line[128];
        snprintf(line, sizeof line, "1 call %s in %lld\n", modal_call_id(calls[i]),
                 (long long)pid);
        assert_contains(logs, line);
        assert_true(strstr(logs, "snapshot_enter ran") == NULL);
        free(logs);
        modal_value_free(out[i]);
        modal_call_free(calls[i]);
    }
    assert_true(distinct >= 2);
    /* The template is alive, a child of the runtime, and serves no call. */
    assert_true(harness_pid_alive((pid_t)tmpl));
    /* Its own output (snapshot_enter's) went to the app log. */
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/logs/itest-snapshot.log", rt.dir);
    char *text = NULL;
    for (double t0 = harness_now(); harness_now() - t0 < 5; harness_sleep(0.05)) {
        free(text);
        text = harness_read_file(path, NULL);
        if (text != NULL && strstr(text, "snapshot_enter ran in") != NULL)
            break;
    }
    assert_non_null(text);
    char want[64];
    snprintf(want, sizeof want, "snapshot_enter ran in %lld", (long long)tmpl);
    assert_contains(text, want);
    free(text);
}

static void test_timeout_kills_forked_group(void **state)
{
    char pidfile[PATH_MAX + 32];
    snprintf(pidfile, sizeof pidfile, "%s/slow.pids", rt.dir);
    modal_value *out = NULL;
    modal_error err;
    modal_status st = modal_fn_remote(&snap_slow, modal_args(modal_string(pidfile)), &out, &err);
    assert_status(st, MODAL_ETIMEOUT, err);
    assert_message_contains(err, "timed out after 1 s");
    char *text = harness_read_file(pidfile, NULL);
    assert_non_null(text);
    int worker = 0, child = 0;
    assert_int_equal(sscanf(text, "%d %d", &worker, &child), 2);
    free(text);
    /* The worker and what it started are gone. */
    for (double t0 = harness_now(); harness_now() - t0 < 5; harness_sleep(0.05))
        if (!harness_pid_alive(worker) && !harness_pid_alive(child))
            break;
    assert_false(harness_pid_alive(worker));
    assert_false(harness_pid_alive(child));
}

static void test_crash_is_retried(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_remote(&snap_crash, modal_list(), &out, &err), err);
    /* The retry ran in another fork of the same template. */
    assert_int_not_equal(field(out, "pid"), field(out, "snapshot_pid"));
    modal_value_free(out);
}

static void test_crash_is_reported(void **state)
{
    /* Without a retry left, the crash reaches the caller with the signal,
     * read from the exit status by the runtime, the worker's parent. */
    char code[64], msg[2048];
    raw_call(&rt, "snap_crash", modal_list(), code, sizeof code, msg, sizeof msg);
    assert_string_equal(code, "ECRASH");
    assert_contains(msg, "was killed by signal 9");
}

static void test_template_stops_with_runtime(void **state)
{
    /* Stopped with the runtime, and gone when the runtime is killed
     * outright (its socket closes). */
    for (int killed = 0; killed < 2; killed++) {
        harness h;
        assert_int_equal(harness_start_with(&h, NULL, false), 0);
        char path[PATH_MAX + 32], code[64], msg[2048];
        snprintf(path, sizeof path, "%s/template.pid", h.dir);
        raw_call(&h, "snap_note", modal_args(modal_string(path)), code, sizeof code, msg,
                 sizeof msg);
        assert_string_equal(code, "OK");
        char *text = harness_read_file(path, NULL);
        assert_non_null(text);
        pid_t tmpl = (pid_t)atoi(text);
        free(text);
        assert_true(tmpl > 0 && harness_pid_alive(tmpl));
        if (killed) {
            harness_kill(&h);
            harness_rmtree(h.dir);
        } else {
            harness_stop(&h);
        }
        for (double t0 = harness_now(); harness_now() - t0 < 5 && harness_pid_alive(tmpl);)
            harness_sleep(0.02);
        assert_false(harness_pid_alive(tmpl));
    }
}

static void test_template_death_loses_no_call(void **state)
{
    modal_value *out[3];
    modal_call *calls[3];
    run_snaps_of(&snap_fresh, 1, 0, out, calls);
    pid_t tmpl = (pid_t)field(out[0], "snapshot_pid");
    pid_t warm = (pid_t)field(out[0], "pid");
    modal_value_free(out[0]);
    modal_call_free(calls[0]);
    assert_int_equal(kill(tmpl, SIGKILL), 0);
    for (double t0 = harness_now(); harness_now() - t0 < 5 && harness_pid_alive(tmpl);)
        harness_sleep(0.02);
    assert_false(harness_pid_alive(tmpl));
    /* Its worker lives on; three calls at once need new workers, which
     * come from a new template. */
    assert_true(harness_pid_alive(warm));
    run_snaps_of(&snap_fresh, 3, 0.5, out, calls);
    bool new_template = false;
    for (int i = 0; i < 3; i++) {
        int64_t pid = field(out[i], "pid");
        int64_t t = field(out[i], "snapshot_pid");
        assert_true(pid == warm || t != tmpl);
        new_template = new_template || t != tmpl;
        modal_value_free(out[i]);
        modal_call_free(calls[i]);
    }
    assert_true(new_template);
}

static void test_snapshot_enter_failure(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    modal_status st = modal_fn_remote(&snap_bad, modal_list(), &out, &err);
    assert_status(st, MODAL_EFUNC, err);
    assert_message_contains(err, "snap_bad: snapshot_enter hook failed");
    assert_message_contains(err, "weights file /models/w.bin is missing");
    assert_null(out);
    /* The next call tries again (and fails the same way). */
    st = modal_fn_remote(&snap_bad, modal_list(), &out, &err);
    assert_status(st, MODAL_EFUNC, err);
    assert_message_contains(err, "weights file /models/w.bin is missing");
}

static void test_template_dying_before_hello(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    modal_status st = modal_fn_remote(&snap_dies, modal_list(), &out, &err);
    assert_status(st, MODAL_EWORKER, err);
    assert_message_contains(err, "cannot serve as a memory-snapshot template for snap_dies");
    assert_message_contains(err, "exited with status 5 before answering");
}

static void test_launch_error_is_precise(void **state)
{
    /* A stored executable that cannot be executed: the error names the
     * executable, the step and the errno text. */
    char sha[65], path[PATH_MAX + 128], code[64], msg[2048];
    assert_int_equal(harness_upload_self(&rt, sha), 0);
    snprintf(path, sizeof path, "%s/artifacts/%s", rt.dir, sha);
    assert_int_equal(chmod(path, 0644), 0);
    raw_call(&rt, "snap_note", modal_args(modal_string("/dev/null")), code, sizeof code, msg,
             sizeof msg);
    assert_int_equal(chmod(path, 0755), 0);
    assert_string_equal(code, "EWORKER");
    char want[2 * PATH_MAX + 600];
    snprintf(want, sizeof want, "cannot start a worker for snap_note from %s: execve of %s "
             "failed: Permission denied", path, path);
    assert_contains(msg, want);
}

static void test_snapshot_enter_needs_memory_snapshot(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    modal_status st = modal_fn_remote(&snap_misused, modal_list(), &out, &err);
    assert_status(st, MODAL_EOPTION, err);
    assert_message_contains(err, ".snapshot_enter is set but .memory_snapshot is not");
}

static void test_bad_memory_snapshot_option(void **state)
{
    char sha[65], id[40];
    assert_int_equal(harness_upload_self(&rt, sha), 0);
    modal__random_id("fc-", id, sizeof id);
    cJSON *env = cJSON_CreateObject();
    cJSON_AddNumberToObject(env, "v", 1);
    cJSON_AddStringToObject(env, "app", "itest-snapshot");
    cJSON_AddStringToObject(env, "fn", "snap");
    cJSON_AddStringToObject(env, "artifact", sha);
    cJSON_AddStringToObject(env, "call_id", id);
    cJSON *opt = cJSON_AddObjectToObject(env, "options");
    cJSON_AddStringToObject(opt, "memory_snapshot", "yes");
    modal_value *args = modal_args(modal_float(0));
    void *frame = NULL;
    size_t flen = 0;
    modal_error err;
    assert_ok(harness_frame(env, "args", args, &frame, &flen, &err), err);
    modal_value_free(args);
    long status = 0;
    char *resp = NULL;
    size_t rlen = 0;
    harness_http(&rt, "POST", "/v1/calls?wait=30", rt.token, frame, flen, &status, &resp, &rlen);
    free(frame);
    assert_int_equal(status, 400);
    assert_contains(resp, "function snap: option .memory_snapshot must be true or false");
    free(resp);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workers_are_forks_of_one_template),
        cmocka_unit_test(test_timeout_kills_forked_group),
        cmocka_unit_test(test_crash_is_retried),
        cmocka_unit_test(test_crash_is_reported),
        cmocka_unit_test(test_template_death_loses_no_call),
        cmocka_unit_test(test_template_stops_with_runtime),
        cmocka_unit_test(test_launch_error_is_precise),
        cmocka_unit_test(test_snapshot_enter_failure),
        cmocka_unit_test(test_template_dying_before_hello),
        cmocka_unit_test(test_snapshot_enter_needs_memory_snapshot),
        cmocka_unit_test(test_bad_memory_snapshot_option),
    };
    return cmocka_run_group_tests_name("snapshot", tests, harness_group_setup,
                                       harness_group_teardown) != 0;
}
