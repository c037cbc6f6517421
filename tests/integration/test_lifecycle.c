/*
 * test_lifecycle.c: a worker's life against a real runtime. Nested calls
 * reach the runtime running the worker; workers see only the allowed
 * environment; a call cancelled after it was sent ahead never runs, and
 * cancelling a running call does not fail the one sent ahead behind it;
 * a worker stuck in its exit hook is stopped and frees its pool's slot;
 * children a worker forked die with it on a timeout, and one that left its
 * process group cannot hold the pool; a function that breaks the runtime
 * protocol is reported as such, not as a kill; and what a worker wrote
 * before it crashed is kept whole. All of it holds also where the runtime
 * cannot have pidfds.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

MODAL_APP("itest-lifecycle");

/* ---- functions ---------------------------------------------------- */

MODAL_FUNCTION(inner, .scaledown_window = 5)
{
    return modal_int(getppid());
}

/* Calls inner remotely from inside its worker. */
MODAL_FUNCTION(outer, .scaledown_window = 5)
{
    modal_value *out = NULL;
    modal_error err;
    if (modal_fn_remote(&inner, modal_list(), &out, &err) != MODAL_OK)
        return modal_ctx_fail(ctx, "nested call: %s", err.message);
    return out;
}

/* Which of argument 0's variables the worker has: "name=1" or "name=0". */
MODAL_FUNCTION(env_seen, .scaledown_window = 5)
{
    const char *name = modal_arg_string(args, 0);
    return modal_int(name != NULL && getenv(name) != NULL);
}

/* Sleeps argument 0 seconds, then creates the file argument 1 (if any).
 * One container: a second call is sent ahead behind the first. */
MODAL_FUNCTION(slow_marker, .max_containers = 1, .scaledown_window = 5)
{
    harness_sleep(modal_arg_float(args, 0));
    const char *path = modal_arg_string(args, 1);
    if (path != NULL && path[0] != '\0') {
        FILE *f = fopen(path, "w");
        if (f != NULL)
            fclose(f);
    }
    return modal_int(getpid());
}

/* slow_marker with a slow retry: a call charged a failed attempt waits
 * 30 s for the next. */
MODAL_FUNCTION(slow_retry, .max_containers = 1, .scaledown_window = 5,
               .retry_policy = MODAL_RETRIES(.max_retries = 1, .initial_delay = 30,
                                             .backoff_coefficient = 1))
{
    harness_sleep(modal_arg_float(args, 0));
    return modal_int(getpid());
}

static int hang_on_exit(modal_ctx *ctx)
{
    harness_sleep(1000);
    return 0;
}

/* Retired after each call; its exit hook never returns. */
MODAL_FUNCTION(stuck_exit, .max_containers = 1, .max_inputs = 1, .exit = hang_on_exit)
{
    return modal_int(getpid());
}

/* With a path: forks a child that sleeps 1000 s (after setsid() when
 * argument 1 is true), writes its pid there, and sleeps past the timeout.
 * Without one, answers at once. */
MODAL_FUNCTION(forker, .max_containers = 1, .timeout = 1, .scaledown_window = 5)
{
    const char *path = modal_arg_string(args, 0);
    if (path == NULL || path[0] == '\0')
        return modal_int(getpid());
    bool leave = modal_arg_bool(args, 1);
    pid_t child = fork();
    if (child == 0) {
        if (leave)
            setsid();
        harness_sleep(1000);
        _exit(0);
    }
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fprintf(f, "%d\n", (int)child);
        fclose(f);
    }
    harness_sleep(10);
    return modal_int(getpid());
}

MODAL_FUNCTION(closes_socket, .scaledown_window = 5)
{
    close(3);
    return modal_int(1);
}

/* Closes the worker's ends of its output pipes (fds 4 and 5). */
MODAL_FUNCTION(closes_output_pipes, .scaledown_window = 30)
{
    close(4);
    close(5);
    return modal_int(getpid());
}

MODAL_FUNCTION(garbles_socket, .scaledown_window = 5)
{
    if (write(3, "garbage", 7) != 7)
        return modal_ctx_fail(ctx, "could not write to fd 3");
    harness_sleep(2);
    return modal_int(1);
}

#define LAST_WORDS 1000

/* Writes its pid to argument 0, then LAST_WORDS numbered lines, one
 * write each, and aborts. */
MODAL_FUNCTION(last_words, .scaledown_window = 5)
{
    FILE *f = fopen(modal_arg_string(args, 0), "w");
    if (f != NULL) {
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
    harness_sleep(0.3);
    for (int i = 0; i < LAST_WORDS; i++) {
        printf("last-word %d\n", i);
        usleep(50);
    }
    abort();
}

/* Writes the same line twice, the second time just before it aborts:
 * the first is sent and taken from the pipe, the second is left there. */
MODAL_FUNCTION(says_it_twice, .scaledown_window = 5)
{
    static const char line[] = "say it again\n";
    if (write(1, line, sizeof line - 1) < 0)
        return NULL;
    harness_sleep(0.2);
    if (write(1, line, sizeof line - 1) < 0)
        return NULL;
    abort();
}

/* ---- helpers -------------------------------------------------------- */

static char empty_home[PATH_MAX];

/* The runtime runs with HOME and MODAL_HOME in an empty directory and no
 * modal-runtime on PATH, so a nested call can only reach it through what
 * the worker is given; a variable the worker must not see is set too. */
static int setup(void **state)
{
    snprintf(empty_home, sizeof empty_home, "/tmp/modal-lc-XXXXXX");
    if (mkdtemp(empty_home) == NULL)
        return -1;
    setenv("HOME", empty_home, 1);
    setenv("MODAL_HOME", empty_home, 1);
    setenv("PATH", "/usr/bin:/bin", 1);
    setenv("ITEST_PRIVATE", "not for workers", 1);
    setenv("LC_ITEST", "allowed", 1);
    return harness_group_setup(state);
}

static int teardown(void **state)
{
    harness_group_teardown(state);
    harness_rmtree(empty_home);
    return 0;
}

/* Whether pid is gone: no process, or a zombie nobody reaped yet. */
static bool pid_gone(pid_t pid)
{
    if (kill(pid, 0) != 0)
        return true;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return true;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren != NULL && paren[1] == ' ' && paren[2] == 'Z';
}

static pid_t read_pid(const char *path)
{
    for (int i = 0; i < 200; i++) {
        char *s = harness_read_file(path, NULL);
        if (s != NULL) {
            int pid = atoi(s);
            free(s);
            if (pid > 0)
                return pid;
        }
        harness_sleep(0.01);
    }
    return -1;
}

/* ---- tests ---------------------------------------------------------- */

static void test_nested_call_reaches_same_runtime(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    int64_t ppid = 0;
    assert_ok(modal_fn_remote(&outer, modal_list(), &out, &err), err);
    assert_ok(modal_get_int(out, &ppid, &err), err);
    modal_value_free(out);
    /* inner's worker is a child of the runtime the test started. */
    assert_int_equal(ppid, rt.pid);
}

static void test_worker_environment_is_allow_listed(void **state)
{
    struct {
        const char *name;
        int64_t want;
    } cases[] = {{"ITEST_PRIVATE", 0}, {"MODAL_TOKEN", 0}, {"MODAL_HOME", 0},
                 {"LC_ITEST", 1}, {"PATH", 1}, {"HOME", 1},
                 {"MODAL_RUNTIME_URL", 1}, {"MODAL_TOKEN_FILE", 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        modal_value *out = NULL;
        modal_error err;
        int64_t v = -1;
        assert_ok(modal_fn_remote(&env_seen, modal_args(modal_string(cases[i].name)), &out, &err),
                  err);
        assert_ok(modal_get_int(out, &v, &err), err);
        modal_value_free(out);
        if (v != cases[i].want)
            print_error("%s: seen %lld, expected %lld\n", cases[i].name, (long long)v,
                        (long long)cases[i].want);
        assert_int_equal(v, cases[i].want);
    }
}

static void test_cancelled_call_sent_ahead_never_runs(void **state)
{
    char marker[PATH_MAX + 32];
    snprintf(marker, sizeof marker, "%s/cancelled-ran", rt.dir);
    modal_call *busy = NULL, *victim = NULL;
    modal_value *out = NULL;
    modal_error err;
    /* Warm the pool so the next call starts at once. */
    assert_ok(modal_fn_remote(&slow_marker, modal_args(modal_float(0), modal_string("")), &out,
                              &err), err);
    int64_t pid1 = 0, pid2 = 0;
    assert_ok(modal_get_int(out, &pid1, &err), err);
    modal_value_free(out);
    assert_ok(modal_fn_spawn(&slow_marker, modal_args(modal_float(1.5), modal_string("")), &busy,
                             &err), err);
    harness_sleep(0.3); /* busy is running; the next is sent ahead to it */
    assert_ok(modal_fn_spawn(&slow_marker, modal_args(modal_float(0), modal_string(marker)),
                             &victim, &err), err);
    harness_sleep(0.2);
    assert_ok(modal_call_cancel(victim, &err), err);
    assert_status(modal_call_get(victim, 10, &out, &err), MODAL_ECANCELLED, err);
    assert_ok(modal_call_get(busy, 30, &out, &err), err);
    modal_value_free(out);
    /* The worker goes on serving, and the cancelled call never ran. */
    assert_ok(modal_fn_remote(&slow_marker, modal_args(modal_float(0), modal_string("")), &out,
                              &err), err);
    assert_ok(modal_get_int(out, &pid2, &err), err);
    modal_value_free(out);
    assert_int_equal(pid1, pid2);
    harness_sleep(0.5);
    assert_int_equal(access(marker, F_OK), -1);
    modal_call_free(busy);
    modal_call_free(victim);
}

static void test_cancel_spares_the_call_sent_behind(void **state)
{
    modal_call *running = NULL, *behind = NULL;
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_remote(&slow_retry, modal_args(modal_float(0)), &out, &err), err);
    modal_value_free(out);
    assert_ok(modal_fn_spawn(&slow_retry, modal_args(modal_float(5)), &running, &err), err);
    harness_sleep(0.3);
    assert_ok(modal_fn_spawn(&slow_retry, modal_args(modal_float(0)), &behind, &err), err);
    harness_sleep(0.2); /* sent ahead to the busy worker */
    assert_ok(modal_call_cancel(running, &err), err);
    /* The call behind never ran: it goes to a new worker at once, with no
     * failed attempt (and its retry delay) charged to it. */
    assert_ok(modal_call_get(behind, 10, &out, &err), err);
    modal_value_free(out);
    modal_call_free(running);
    modal_call_free(behind);
}

static void test_exit_hook_cannot_hold_the_pool(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    int64_t pid1 = 0, pid2 = 0;
    assert_ok(modal_fn_remote(&stuck_exit, modal_list(), &out, &err), err);
    assert_ok(modal_get_int(out, &pid1, &err), err);
    modal_value_free(out);
    /* The first worker retires and hangs in its exit hook: it is stopped
     * after a grace period and frees the pool's only slot. */
    modal_call *c = NULL;
    assert_ok(modal_fn_spawn(&stuck_exit, modal_list(), &c, &err), err);
    assert_ok(modal_call_get(c, 15, &out, &err), err);
    assert_ok(modal_get_int(out, &pid2, &err), err);
    modal_value_free(out);
    modal_call_free(c);
    assert_true(pid2 != pid1);
    assert_true(pid_gone((pid_t)pid1));
}

/* forker in a worker with a child; after the timeout the next call must be
 * served at once. Returns the child's pid. */
static pid_t time_out_with_child(bool leave)
{
    char pidfile[PATH_MAX + 32];
    snprintf(pidfile, sizeof pidfile, "%s/child-%d.pid", rt.dir, (int)leave);
    modal_value *out = NULL;
    modal_error err;
    assert_status(modal_fn_remote(&forker, modal_args(modal_string(pidfile), modal_bool(leave)),
                                  &out, &err), MODAL_ETIMEOUT, err);
    assert_message_contains(err, "attempt 1 of 1");
    pid_t child = read_pid(pidfile);
    assert_true(child > 0);
    /* The pool has one slot: the next call needs the dead worker's. */
    modal_call *c = NULL;
    double t0 = harness_now();
    assert_ok(modal_fn_spawn(&forker, modal_args(modal_string(""), modal_bool(false)), &c, &err),
              err);
    assert_ok(modal_call_get(c, 5, &out, &err), err);
    modal_value_free(out);
    modal_call_free(c);
    assert_true(harness_now() - t0 < 2.0);
    return child;
}

static void test_timeout_kills_forked_children(void **state)
{
    pid_t child = time_out_with_child(false);
    double deadline = harness_now() + 2;
    while (!pid_gone(child) && harness_now() < deadline)
        harness_sleep(0.02);
    assert_true(pid_gone(child));
}

static void test_child_leaving_group_does_not_hold_pool(void **state)
{
    pid_t child = time_out_with_child(true);
    /* It left the group, so it lives on; it must not matter. */
    if (!pid_gone(child))
        kill(child, SIGKILL);
}

static void test_closed_socket_is_a_protocol_error(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    assert_status(modal_fn_remote(&closes_socket, modal_list(), &out, &err), MODAL_ECRASH, err);
    assert_message_contains(err, "broke the runtime protocol");
    assert_message_contains(err, "closed its runtime socket");
    assert_null(strstr(err.message, "SIGKILL"));
}

/* CPU seconds a process has used, from /proc/<pid>/stat; -1 if gone. */
static double cpu_seconds(long pid)
{
    char path[64], *stat;
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    stat = harness_read_file(path, NULL);
    if (stat == NULL)
        return -1;
    unsigned long ut = 0, st = 0;
    const char *p = strrchr(stat, ')');
    int ok = p != NULL && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                                 &ut, &st) == 2;
    free(stat);
    return ok ? (double)(ut + st) / (double)sysconf(_SC_CLK_TCK) : -1;
}

/* A function that closes the worker's copies of its output pipes leaves
 * the worker idle, not spinning on the closed descriptors. */
static void test_closed_output_pipes_do_not_spin(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_remote(&closes_output_pipes, modal_list(), &out, &err), err);
    int64_t pid = 0;
    assert_ok(modal_get_int(out, &pid, &err), err);
    modal_value_free(out);
    double before = cpu_seconds((long)pid);
    harness_sleep(1.0);
    double after = cpu_seconds((long)pid);
    print_message("worker %lld used %.2f s of CPU in 1 s idle\n", (long long)pid, after - before);
    assert_true(before >= 0 && after >= 0);
    assert_true(after - before < 0.3);
}

static void test_garbage_on_socket_is_a_protocol_error(void **state)
{
    modal_value *out = NULL;
    modal_error err;
    assert_status(modal_fn_remote(&garbles_socket, modal_list(), &out, &err), MODAL_ECRASH, err);
    assert_message_contains(err, "broke the runtime protocol");
    assert_message_contains(err, "7 bytes is truncated or malformed");
    assert_message_contains(err, "attempt 1 of 1");
    assert_null(strstr(err.message, "SIGKILL"));
}

static void test_output_before_a_crash_is_kept(void **state)
{
    char pidfile[PATH_MAX + 32];
    snprintf(pidfile, sizeof pidfile, "%s/last-words.pid", rt.dir);
    modal_call *c = NULL;
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_spawn(&last_words, modal_args(modal_string(pidfile)), &c, &err), err);
    pid_t worker = read_pid(pidfile);
    assert_true(worker > 0);
    /* The runtime is held while the worker writes and dies, so its output
     * is still queued (sent, and in the pipe) when it learns of the death. */
    assert_int_equal(kill(rt.pid, SIGSTOP), 0);
    double deadline = harness_now() + 20;
    while (!pid_gone(worker) && harness_now() < deadline)
        harness_sleep(0.01);
    kill(rt.pid, SIGCONT);
    assert_true(pid_gone(worker));
    assert_status(modal_call_get(c, 30, &out, &err), MODAL_ECRASH, err);
    assert_message_contains(err, "SIGABRT");
    char *logs = harness_call_logs(&rt, modal_call_id(c));
    /* Every line, once, in order. */
    int next = 0;
    for (char *line = strtok(logs, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        int k = -1;
        if (sscanf(line, "1 last-word %d", &k) == 1 && k == next)
            next++;
        else
            print_error("after line %d: %s\n", next - 1, line);
    }
    free(logs);
    assert_int_equal(next, LAST_WORDS);
    modal_call_free(c);
}

/* Output left in the pipe by a worker that died is kept even when it
 * repeats the last chunk the worker sent. */
static void test_repeated_output_before_a_crash_is_kept(void **state)
{
    for (int round = 0; round < 3; round++) {
        modal_call *c = NULL;
        modal_value *out = NULL;
        modal_error err;
        assert_ok(modal_fn_spawn(&says_it_twice, modal_list(), &c, &err), err);
        assert_status(modal_call_get(c, 30, &out, &err), MODAL_ECRASH, err);
        char *logs = harness_call_logs(&rt, modal_call_id(c));
        int seen = 0;
        for (const char *p = logs; (p = strstr(p, "1 say it again\n")) != NULL; p++)
            seen++;
        if (seen != 2)
            print_error("round %d: output was:\n%s\n", round, logs);
        free(logs);
        assert_int_equal(seen, 2);
        modal_call_free(c);
    }
}

/* From now on, system call nr fails with errno e in this process and in
 * every process it starts (a seccomp filter; it cannot be undone). */
static int refuse_syscall(long nr, int e)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)e),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        fprintf(stderr, "cannot install a seccomp filter: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

/*
 * A runtime that cannot make a worker's socket (socketpair fails with
 * EAGAIN, as when the system is out of memory or descriptors): this very
 * binary, started as MODAL_RUNTIME_BIN with ITEST_WRAP_RUNTIME set to the
 * real runtime, installs a seccomp filter that refuses socketpair and then
 * becomes that runtime. Only the runtime gets the filter.
 */
static void wrap_runtime_if_asked(char **argv)
{
    const char *real = getenv("ITEST_WRAP_RUNTIME");
    if (real == NULL)
        return;
    if (refuse_syscall(SYS_socketpair, EAGAIN) != 0)
        exit(1);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", real);
    unsetenv("ITEST_WRAP_RUNTIME");
    argv[0] = path;
    execv(path, argv);
    fprintf(stderr, "cannot run %s: %s\n", path, strerror(errno));
    exit(1);
}

/* A worker that cannot be started for a passing reason fails the calls
 * waiting for it with ERUNTIME, naming what failed; its pool is not
 * marked broken, as it would be for an executable the kernel refuses. */
static void test_transient_spawn_failure_does_not_break_pool(void **state)
{
    char real[PATH_MAX];
    snprintf(real, sizeof real, "%s", harness_runtime_bin());
    const char *old = getenv("MODAL_RUNTIME_BIN");
    char *saved = old ? strdup(old) : NULL;
    setenv("ITEST_WRAP_RUNTIME", real, 1);
    setenv("MODAL_RUNTIME_BIN", harness_self_exe(), 1);
    harness h;
    int rc = harness_start_with(&h, NULL, true);
    unsetenv("ITEST_WRAP_RUNTIME");
    if (saved != NULL)
        setenv("MODAL_RUNTIME_BIN", saved, 1);
    else
        unsetenv("MODAL_RUNTIME_BIN");
    free(saved);
    assert_int_equal(rc, 0);
    for (int i = 0; i < 2; i++) {
        modal_value *out = NULL;
        modal_error err;
        modal_status st = modal_fn_remote(&inner, modal_args(), &out, &err);
        modal_value_free(out);
        print_message("call %d: %s: %s\n", i + 1, modal_status_name(st), err.message);
        assert_status(st, MODAL_ERUNTIME, err);
        assert_contains(err.message, "socketpair failed");
        assert_contains(err.message, strerror(EAGAIN));
        /* Not "upload a fixed executable": the next call tried again. */
        assert_null(strstr(err.message, "fixed executable"));
    }
    harness_stop(&h);
    /* Later tests use the group's runtime again. */
    setenv("MODAL_RUNTIME_URL", rt.url, 1);
    setenv("MODAL_TOKEN", rt.token, 1);
}

/* The runtime started next, and its workers, find pidfd_open()
 * unavailable (ENOSYS), as on kernels before 5.3 or under container
 * profiles that refuse it: this process installs a seccomp filter that
 * they inherit. */
static int setup_without_pidfd(void **state)
{
    if (refuse_syscall(SYS_pidfd_open, ENOSYS) != 0)
        return -1;
    if (syscall(SYS_pidfd_open, getpid(), 0) >= 0 || errno != ENOSYS)
        return -1;
    return setup(state);
}

int main(int argc, char **argv)
{
    wrap_runtime_if_asked(argv);
    modal_worker_serve_if_worker(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nested_call_reaches_same_runtime),
        cmocka_unit_test(test_worker_environment_is_allow_listed),
        cmocka_unit_test(test_cancelled_call_sent_ahead_never_runs),
        cmocka_unit_test(test_cancel_spares_the_call_sent_behind),
        cmocka_unit_test(test_exit_hook_cannot_hold_the_pool),
        cmocka_unit_test(test_timeout_kills_forked_children),
        cmocka_unit_test(test_child_leaving_group_does_not_hold_pool),
        cmocka_unit_test(test_closed_socket_is_a_protocol_error),
        cmocka_unit_test(test_closed_output_pipes_do_not_spin),
        cmocka_unit_test(test_garbage_on_socket_is_a_protocol_error),
        cmocka_unit_test(test_output_before_a_crash_is_kept),
        cmocka_unit_test(test_repeated_output_before_a_crash_is_kept),
        cmocka_unit_test(test_transient_spawn_failure_does_not_break_pool),
    };
    int failed = cmocka_run_group_tests_name("lifecycle", tests, setup, teardown);
    /* The same without pidfd; last, as the filter stays for this process. */
    failed += cmocka_run_group_tests_name("lifecycle without pidfd", tests, setup_without_pidfd,
                                          teardown);
    return failed;
}
