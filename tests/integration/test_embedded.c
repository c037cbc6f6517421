/*
 * test_embedded.c: the embedded default. With MODAL_RUNTIME_URL unset and
 * MODAL_HOME pointing at a fresh directory, the first remote call starts a
 * local runtime on MODAL_HOME/runtime.sock; later calls, and other
 * processes, reuse it; a stopped or killed runtime is replaced by the next
 * call. The runtime, and its workers, get neither the starting client's
 * other environment variables nor its open descriptors.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

MODAL_APP("itest-embedded");

MODAL_FUNCTION(mark, .timeout = 60)
{
    printf("embedded-marker %s\n", modal_arg_string(args, 0));
    fflush(stdout);
    return modal_int((int64_t)getpid());
}

static char home[PATH_MAX];
static char sock_path[PATH_MAX + 32];
static char token_path[PATH_MAX + 32];
static char sock_url[PATH_MAX + 40];
static long first_pid = -1;

/* What the client holds when it starts the runtime, which must not leak. */
#define SECRET_VAR "MODAL_TEST_CLIENT_SECRET"
#define SECRET_VAR2 "CLIENT_API_KEY"
static char secret_path[PATH_MAX + 32];
static int secret_fd = -1;

/* The token the runtime wrote, or "" if none. */
static const char *home_token(void)
{
    static char tok[256];
    char *t = harness_read_file(token_path, NULL);
    tok[0] = '\0';
    if (t != NULL) {
        t[strcspn(t, "\r\n \t")] = '\0';
        snprintf(tok, sizeof tok, "%s", t);
        free(t);
    }
    return tok;
}

static long runtime_pid(void)
{
    return harness_health_pid(sock_url, home_token());
}

/* SIGTERM (or sig) the runtime and wait until it is gone. */
static bool stop_runtime(long pid, int sig)
{
    if (pid <= 0)
        return false;
    kill((pid_t)pid, sig);
    double t0 = harness_now();
    while (harness_pid_alive((pid_t)pid)) {
        if (harness_now() - t0 > 15) {
            print_error("runtime %ld still alive 15 s after signal %d\n", pid, sig);
            return false;
        }
        harness_sleep(0.02);
    }
    return true;
}

static modal_status call_mark(const char *tag, modal_error *err)
{
    modal_value *out = NULL;
    modal_status st = modal_fn_remote(&mark, modal_args(modal_string(tag)), &out, err);
    modal_value_free(out);
    return st;
}

/* Child mode: one remote call; exits with its status. */
static int child_call(const char *tag)
{
    modal_error err;
    modal_status st = call_mark(tag, &err);
    printf("child: url %s: %s %s\n", modal_runtime_url(), modal_status_name(st),
           st ? err.message : "");
    return (int)st;
}

/* Child mode: the first call of a program that closed its standard
 * descriptors (as a daemon may), with MODAL_HOME=dir; exits with its status. */
static int child_closed_stdio(const char *dir)
{
    setenv("MODAL_HOME", dir, 1);
    close(0);
    close(1);
    close(2);
    modal_error err;
    return (int)call_mark("closed-stdio", &err);
}

/* Child mode: the first call of a program that blocks SIGTERM (to take it
 * with sigwait or a signalfd) and ignores SIGCHLD, with MODAL_HOME=dir. */
static int child_signals(const char *dir)
{
    setenv("MODAL_HOME", dir, 1);
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, NULL);
    signal(SIGCHLD, SIG_IGN);
    modal_error err;
    modal_status st = call_mark("signals", &err);
    if (st != MODAL_OK)
        printf("child: %s\n", err.message);
    return (int)st;
}

static int setup(void **state)
{
    snprintf(home, sizeof home, "/tmp/modal-emb-XXXXXX");
    if (mkdtemp(home) == NULL)
        return -1;
    snprintf(sock_path, sizeof sock_path, "%s/runtime.sock", home);
    snprintf(token_path, sizeof token_path, "%s/token", home);
    snprintf(sock_url, sizeof sock_url, "unix:%s", sock_path);
    unsetenv("MODAL_RUNTIME_URL");
    unsetenv("MODAL_TOKEN");
    unsetenv("MODAL_TOKEN_FILE");
    setenv("MODAL_HOME", home, 1);
    /* Run directly (not from make), use the runtime built beside us. */
    setenv("MODAL_RUNTIME_BIN", harness_runtime_bin(), 0);
    /* A secret in the environment and a descriptor left open across exec,
     * as a client program may well have when it makes its first call. */
    setenv(SECRET_VAR, "s3cret-value", 1);
    setenv(SECRET_VAR2, "s3cret-value-2", 1);
    snprintf(secret_path, sizeof secret_path, "%s/client-private-file", home);
    secret_fd = open(secret_path, O_RDWR | O_CREAT, 0600); /* no O_CLOEXEC */
    return secret_fd >= 0 ? 0 : -1;
}

/* Fail if process pid holds var in its environment, or secret_path open;
 * check, as a control, that its environment was read and has PATH. */
static void expect_clean_process(long pid, const char *what)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/environ", pid);
    size_t len = 0;
    char *env = harness_read_file(path, &len);
    assert_non_null(env);
    bool has_path = false;
    for (size_t off = 0; off < len; off += strlen(env + off) + 1) {
        if (strncmp(env + off, "PATH=", 5) == 0)
            has_path = true;
        if (strncmp(env + off, SECRET_VAR "=", strlen(SECRET_VAR) + 1) == 0 ||
            strncmp(env + off, SECRET_VAR2 "=", strlen(SECRET_VAR2) + 1) == 0) {
            print_error("%s %ld has the client's %s\n", what, pid, env + off);
            fail();
        }
    }
    free(env);
    assert_true(has_path);

    snprintf(path, sizeof path, "/proc/%ld/fd", pid);
    DIR *d = opendir(path);
    assert_non_null(d);
    int nfds = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char link[PATH_MAX], target[PATH_MAX];
        snprintf(link, sizeof link, "%s/%s", path, e->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n < 0)
            continue;
        target[n] = '\0';
        nfds++;
        if (strcmp(target, secret_path) == 0) {
            print_error("%s %ld holds the client's descriptor as fd %s\n", what, pid,
                        e->d_name);
            fail();
        }
        /* 0-2 never reach the client's terminal or pipes either. */
        if (atoi(e->d_name) <= 2)
            assert_true(strcmp(target, "/dev/null") == 0 || strstr(target, home) != NULL ||
                        strncmp(target, "pipe:", 5) == 0);
    }
    closedir(d);
    assert_true(nfds >= 3);
}

static int teardown(void **state)
{
    long pid = runtime_pid();
    if (pid > 0)
        stop_runtime(pid, SIGTERM);
    if (getenv("MODAL_TEST_KEEP_STATE") == NULL)
        harness_rmtree(home);
    return 0;
}

static void test_url_names_the_socket(void **state)
{
    assert_string_equal(modal_runtime_url(), sock_url);
}

static void test_first_call_starts_runtime(void **state)
{
    struct stat st;
    modal_error err;
    assert_int_equal(stat(sock_path, &st), -1);

    assert_ok(call_mark("first", &err), err);

    assert_int_equal(stat(sock_path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(token_path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_true(strlen(home_token()) >= 16);

    first_pid = runtime_pid();
    assert_true(first_pid > 0);
    assert_true(first_pid != (long)getpid());

    /* The runtime keeps its own log in the state directory. */
    char log_path[PATH_MAX + 32];
    snprintf(log_path, sizeof log_path, "%s/runtime.log", home);
    assert_int_equal(stat(log_path, &st), 0);
}

static void test_runtime_gets_clean_env_and_fds(void **state)
{
    assert_true(first_pid > 0);
    /* The client itself does hold both: the control. */
    assert_non_null(getenv(SECRET_VAR));
    assert_true(fcntl(secret_fd, F_GETFD) == 0); /* open, not close-on-exec */
    expect_clean_process(first_pid, "the runtime");
    /* Its workers inherit from it, so they are clean too. */
    modal_value *out = NULL;
    modal_error err;
    assert_ok(modal_fn_remote(&mark, modal_args(modal_string("env")), &out, &err), err);
    int64_t wpid = 0;
    assert_ok(modal_get_int(out, &wpid, &err), err);
    modal_value_free(out);
    expect_clean_process((long)wpid, "a worker");
}

static void test_second_call_reuses(void **state)
{
    modal_error err;
    assert_ok(call_mark("second", &err), err);
    assert_int_equal(runtime_pid(), first_pid);
}

static void test_second_process_reuses(void **state)
{
    static const char *const args[] = {"--child-call", "from-child", NULL};
    char *output = NULL;
    int ws = harness_run_self(args, 120, &output);
    if (!(WIFEXITED(ws) && WEXITSTATUS(ws) == 0))
        print_error("child wait status 0x%x, output:\n%s\n", ws, output);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    assert_contains(output, sock_url);
    free(output);

    /* Same runtime, which ran the child's call: it is in that runtime's
     * log of the app. */
    assert_int_equal(runtime_pid(), first_pid);
    long status = 0;
    char *body = NULL;
    harness_http_url(sock_url, "GET", "/v1/apps/itest-embedded/logs", home_token(), NULL, 0,
                     NULL, &status, &body, NULL);
    assert_int_equal(status, 200);
    assert_contains(body, "embedded-marker from-child");
    assert_contains(body, "embedded-marker first");
    free(body);
}

static void test_stop_then_restart(void **state)
{
    modal_error err;
    assert_true(first_pid > 0);
    assert_true(stop_runtime(first_pid, SIGTERM));
    /* A clean stop removes the socket. */
    struct stat st;
    assert_int_equal(stat(sock_path, &st), -1);

    /* The next call starts a new runtime. */
    assert_ok(call_mark("after-stop", &err), err);
    long pid = runtime_pid();
    assert_true(pid > 0);
    assert_true(pid != first_pid);
    first_pid = pid;
}

static void test_stale_socket_after_kill(void **state)
{
    modal_error err;
    struct stat st;
    assert_true(first_pid > 0);
    /* SIGKILL leaves the socket file behind, with nobody listening. */
    assert_true(stop_runtime(first_pid, SIGKILL));
    assert_int_equal(stat(sock_path, &st), 0);

    double t0 = harness_now();
    assert_ok(call_mark("after-kill", &err), err);
    print_message("call after a killed runtime took %.2f s\n", harness_now() - t0);
    long pid = runtime_pid();
    assert_true(pid > 0);
    assert_true(pid != first_pid);
    first_pid = pid;
}

/* A client with 0-2 closed opens the runtime's log and /dev/null at 0-2:
 * the runtime still gets /dev/null as stdin and its log as stdout and
 * stderr, not a closed descriptor or /dev/null in place of the log. */
static void test_client_without_stdio(void **state)
{
    char dir[PATH_MAX + 16], path[PATH_MAX + 48], url[PATH_MAX + 64], log[PATH_MAX + 48];
    snprintf(dir, sizeof dir, "%s/closed-stdio", home);
    const char *const args[] = {"--child-closed-stdio", dir, NULL};
    char *output = NULL;
    int ws = harness_run_self(args, 120, &output);
    free(output);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);

    snprintf(path, sizeof path, "%s/token", dir);
    char *tok = harness_read_file(path, NULL);
    assert_non_null(tok);
    tok[strcspn(tok, "\r\n")] = '\0';
    snprintf(url, sizeof url, "unix:%s/runtime.sock", dir);
    long pid = harness_health_pid(url, tok);
    free(tok);
    assert_true(pid > 0);
    char target[3][PATH_MAX];
    for (int fd = 0; fd < 3; fd++) {
        snprintf(path, sizeof path, "/proc/%ld/fd/%d", pid, fd);
        ssize_t n = readlink(path, target[fd], sizeof target[fd] - 1);
        target[fd][n > 0 ? n : 0] = '\0';
    }
    stop_runtime(pid, SIGTERM);
    snprintf(log, sizeof log, "%s/runtime.log", dir);
    assert_string_equal(target[0], "/dev/null");
    assert_string_equal(target[1], log);
    assert_string_equal(target[2], log);
}

/* The pid of the runtime in dir (started by a child), or -1. */
static long runtime_pid_in(const char *dir)
{
    char path[PATH_MAX + 48], url[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/token", dir);
    char *tok = harness_read_file(path, NULL);
    if (tok == NULL)
        return -1;
    tok[strcspn(tok, "\r\n")] = '\0';
    snprintf(url, sizeof url, "unix:%s/runtime.sock", dir);
    long pid = harness_health_pid(url, tok);
    free(tok);
    return pid;
}

/* The hexadecimal signal set on line "name:\t" of /proc/pid/status. */
static unsigned long long proc_sigset(long pid, const char *name)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    char *st = harness_read_file(path, NULL);
    assert_non_null(st);
    char key[32];
    snprintf(key, sizeof key, "\n%s:\t", name);
    const char *at = strstr(st, key);
    unsigned long long set = at != NULL ? strtoull(at + strlen(key), NULL, 16) : ~0ULL;
    free(st);
    return set;
}

/* A client's blocked and ignored signals are not the runtime's: it can be
 * stopped with SIGTERM, and SIGCHLD (how it learns of its workers) is not
 * ignored. */
static void test_client_signal_state_not_inherited(void **state)
{
    char dir[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/signals", home);
    const char *const args[] = {"--child-signals", dir, NULL};
    char *output = NULL;
    int ws = harness_run_self(args, 120, &output);
    if (!(WIFEXITED(ws) && WEXITSTATUS(ws) == 0))
        print_error("child wait status 0x%x, output:\n%s\n", ws, output);
    free(output);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    long pid = runtime_pid_in(dir);
    assert_true(pid > 0);
    unsigned long long blocked = proc_sigset(pid, "SigBlk"), ignored = proc_sigset(pid, "SigIgn");
    bool stopped = stop_runtime(pid, SIGTERM);
    if (!stopped)
        stop_runtime(pid, SIGKILL);
    assert_int_equal(blocked & (1ULL << (SIGTERM - 1)), 0);
    assert_int_equal(ignored & (1ULL << (SIGCHLD - 1)), 0);
    assert_true(stopped);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    if (argc > 2 && strcmp(argv[1], "--child-call") == 0)
        return child_call(argv[2]);
    if (argc > 2 && strcmp(argv[1], "--child-closed-stdio") == 0)
        return child_closed_stdio(argv[2]);
    if (argc > 2 && strcmp(argv[1], "--child-signals") == 0)
        return child_signals(argv[2]);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_names_the_socket),
        cmocka_unit_test(test_first_call_starts_runtime),
        cmocka_unit_test(test_runtime_gets_clean_env_and_fds),
        cmocka_unit_test(test_second_call_reuses),
        cmocka_unit_test(test_second_process_reuses),
        cmocka_unit_test(test_stop_then_restart),
        cmocka_unit_test(test_stale_socket_after_kill),
        cmocka_unit_test(test_client_without_stdio),
        cmocka_unit_test(test_client_signal_state_not_inherited),
    };
    return cmocka_run_group_tests_name("embedded", tests, setup, teardown) != 0;
}
