/*
 * test_launch.c: the spawner (runtime/launch.c) on its own: a launch spec
 * starts exactly the executable, arguments, environment and descriptors it
 * names, in a process group of its own, with default signals and its
 * limits, and in a user and mount namespace with its mounts when it has
 * any; every failing step is reported with its argument and errno.
 */
#include "harness.h"
#include "launch.h"

#include <sys/mount.h>

/* ---- helpers ------------------------------------------------------ */

/* A spec running /bin/sh -c script, its stdout to the write end of out. */
static void sh_spec(rt_launch_spec *s, const char *script, int out_w)
{
    rt_launch_init(s);
    rt_launch_set_path(s, "/bin/sh");
    rt_launch_add_arg(s, "-c");
    rt_launch_add_arg(s, script);
    rt_launch_add_env(s, "PATH=/usr/bin:/bin");
    rt_launch_add_fd(s, 1, out_w);
    rt_launch_add_fd(s, 2, out_w);
}

/* Start s, wait for it; its output (from pipe p) in out, exit status back. */
static int run_spec(rt_launch_spec *s, int p[2], char *out, size_t outsz)
{
    rt_launch_error e;
    pid_t pid = rt_launch_spawn(s, &e);
    if (pid < 0) {
        print_error("spawn failed: %s: %s\n", e.step, strerror(e.err));
        fail();
    }
    close(p[1]);
    size_t len = 0;
    ssize_t n;
    while (len + 1 < outsz && (n = read(p[0], out + len, outsz - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(p[0]);
    int ws = harness_wait_pid(pid, 10);
    rt_launch_free(s);
    assert_true(WIFEXITED(ws));
    return WEXITSTATUS(ws);
}

/* Start a spec that must fail; returns the error. */
static rt_launch_error spawn_fails(rt_launch_spec *s)
{
    rt_launch_error e;
    memset(&e, 0, sizeof e);
    assert_int_equal(rt_launch_spawn(s, &e), -1);
    rt_launch_free(s);
    return e;
}

/* ---- tests -------------------------------------------------------- */

static void test_runs_spec(void **state)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    rt_launch_spec s;
    sh_spec(&s, "echo \"$1 $GREETING\"; cut -d' ' -f5 /proc/$$/stat; echo $$; exit 7", p[1]);
    rt_launch_add_arg(&s, "sh");
    rt_launch_add_arg(&s, "argument");
    rt_launch_add_env(&s, "GREETING=hello");
    s.new_pgrp = true;
    char out[256];
    assert_int_equal(run_spec(&s, p, out, sizeof out), 7);
    char word[32], line2[32], line3[32];
    assert_int_equal(sscanf(out, "argument %31s %31s %31s", word, line2, line3), 3);
    assert_string_equal(word, "hello");
    /* It leads its own process group. */
    assert_string_equal(line2, line3);
}

static void test_only_spec_env(void **state)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    setenv("LAUNCH_TEST_SECRET", "leak", 1);
    rt_launch_spec s;
    sh_spec(&s, "env | grep -v '^PWD=' | grep -v '^SHLVL=' | grep -v '^_=' | sort", p[1]);
    rt_launch_add_env(&s, "ONLY=this");
    char out[512];
    assert_int_equal(run_spec(&s, p, out, sizeof out), 0);
    assert_string_equal(out, "ONLY=this\nPATH=/usr/bin:/bin\n");
}

static void test_fds_swap_and_nothing_else_leaks(void **state)
{
    int a[2], b[2], p[2];
    assert_int_equal(pipe2(a, O_CLOEXEC), 0);
    assert_int_equal(pipe2(b, O_CLOEXEC), 0);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    /* Sources at 20 and 21, each the other's target. */
    assert_int_equal(dup3(a[1], 20, O_CLOEXEC), 20);
    assert_int_equal(dup3(b[1], 21, O_CLOEXEC), 21);
    close(a[1]);
    close(b[1]);
    /* A descriptor without close-on-exec that the spec does not name. */
    int stray = fcntl(p[0], F_DUPFD, 40);
    assert_true(stray >= 40);
    char script[256];
    snprintf(script, sizeof script, "echo one > /proc/self/fd/20; echo two > /proc/self/fd/21; "
             "if [ -e /proc/$$/fd/%d ]; then echo leaked; else echo closed; fi", stray);
    rt_launch_spec s;
    sh_spec(&s, script, p[1]);
    rt_launch_add_fd(&s, 20, 21);
    rt_launch_add_fd(&s, 21, 20);
    char out[256];
    assert_int_equal(run_spec(&s, p, out, sizeof out), 0);
    close(stray);
    assert_string_equal(out, "closed\n");
    close(20);
    close(21);
    char buf[16] = {0};
    assert_true(read(a[0], buf, sizeof buf - 1) > 0);
    assert_string_equal(buf, "two\n"); /* a's end became fd 21 */
    memset(buf, 0, sizeof buf);
    assert_true(read(b[0], buf, sizeof buf - 1) > 0);
    assert_string_equal(buf, "one\n");
    close(a[0]);
    close(b[0]);
}

static void test_signals_and_limits(void **state)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    /* The parent ignores SIGPIPE; the child must not inherit that. */
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    rt_launch_spec s;
    sh_spec(&s, "grep SigIgn /proc/self/status; ulimit -n", p[1]);
    rt_launch_add_rlimit(&s, RLIMIT_NOFILE, 64, 64);
    char out[256];
    assert_int_equal(run_spec(&s, p, out, sizeof out), 0);
    signal(SIGPIPE, old);
    assert_string_equal(out, "SigIgn:\t0000000000000000\n64\n");
}

static void test_bad_fd(void **state)
{
    rt_launch_spec s;
    sh_spec(&s, "true", 1);
    rt_launch_add_fd(&s, 3, 987);
    rt_launch_error e = spawn_fails(&s);
    assert_string_equal(e.step, "dup of fd 987 (to become fd 3)");
    assert_int_equal(e.err, EBADF);
}

static void test_bad_cgroup(void **state)
{
    rt_launch_spec s;
    sh_spec(&s, "true", 1);
    rt_launch_set_cgroup(&s, "/nonexistent/modal-cgroup");
    rt_launch_error e = spawn_fails(&s);
    assert_string_equal(e.step, "joining cgroup /nonexistent/modal-cgroup (opening its "
                                "cgroup.procs)");
    assert_int_equal(e.err, ENOENT);
}

static void test_bad_rlimit(void **state)
{
    rt_launch_spec s;
    sh_spec(&s, "true", 1);
    rt_launch_add_rlimit(&s, RLIMIT_NOFILE, 100, 10); /* soft above hard */
    rt_launch_error e = spawn_fails(&s);
    char want[64];
    snprintf(want, sizeof want, "setrlimit of resource %d to 100/10", RLIMIT_NOFILE);
    assert_string_equal(e.step, want);
    assert_int_equal(e.err, EINVAL);
}

static void test_bad_executable(void **state)
{
    rt_launch_spec s;
    rt_launch_init(&s);
    rt_launch_set_path(&s, "/nonexistent/worker");
    rt_launch_error e = spawn_fails(&s);
    assert_string_equal(e.step, "execve of /nonexistent/worker");
    assert_int_equal(e.err, ENOENT);

    /* A file that is not executable. */
    char dir[] = "/tmp/modal-launch-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/data", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("not a program\n", f);
    fclose(f);
    chmod(path, 0644);
    rt_launch_init(&s);
    rt_launch_set_path(&s, path);
    e = spawn_fails(&s);
    if (geteuid() != 0 || e.err == EACCES) {
        assert_int_equal(e.err, EACCES);
        assert_true(strncmp(e.step, "execve of ", 10) == 0);
    }
    unlink(path);
    rmdir(dir);
}

/* Whether this host lets an unprivileged process make a user and mount
 * namespace (distributions may forbid it). */
static bool userns_allowed(void)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0 ? 0 : 1);
    int ws = harness_wait_pid(pid, 10);
    return WIFEXITED(ws) && WEXITSTATUS(ws) == 0;
}

static void test_mounts_in_own_namespace(void **state)
{
    if (!userns_allowed()) {
        fprintf(stderr, "skipped: this host does not allow user namespaces "
                        "(unshare(CLONE_NEWUSER) fails), which mounts need\n");
        skip();
    }
    char src[] = "/tmp/modal-launch-src-XXXXXX", dst[] = "/tmp/modal-launch-dst-XXXXXX";
    assert_non_null(mkdtemp(src));
    assert_non_null(mkdtemp(dst));
    char marker[64];
    snprintf(marker, sizeof marker, "%s/marker", src);
    FILE *f = fopen(marker, "w");
    assert_non_null(f);
    fputs("from the volume\n", f);
    fclose(f);

    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    char script[256];
    snprintf(script, sizeof script, "cat %s/marker; id -u; touch %s/new 2>/dev/null && echo "
             "writable || echo read-only", dst, dst);
    rt_launch_spec s;
    sh_spec(&s, script, p[1]);
    rt_launch_add_mount(&s, src, dst, MS_RDONLY);
    char out[256];
    assert_int_equal(run_spec(&s, p, out, sizeof out), 0);
    char want[128];
    snprintf(want, sizeof want, "from the volume\n%u\nread-only\n", (unsigned)getuid());
    assert_string_equal(out, want);
    /* The mount was the child's alone. */
    char seen[64];
    snprintf(seen, sizeof seen, "%s/marker", dst);
    assert_int_not_equal(access(seen, F_OK), 0);

    /* A mount that cannot be made names both paths. */
    rt_launch_init(&s);
    rt_launch_set_path(&s, "/bin/true");
    rt_launch_add_mount(&s, "/nonexistent/volume", dst, 0);
    rt_launch_error e = spawn_fails(&s);
    snprintf(want, sizeof want, "bind mount of /nonexistent/volume on %s", dst);
    assert_string_equal(e.step, want);
    assert_int_equal(e.err, ENOENT);
    unlink(marker);
    rmdir(src);
    rmdir(dst);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_spec),
        cmocka_unit_test(test_only_spec_env),
        cmocka_unit_test(test_fds_swap_and_nothing_else_leaks),
        cmocka_unit_test(test_signals_and_limits),
        cmocka_unit_test(test_bad_fd),
        cmocka_unit_test(test_bad_cgroup),
        cmocka_unit_test(test_bad_rlimit),
        cmocka_unit_test(test_bad_executable),
        cmocka_unit_test(test_mounts_in_own_namespace),
    };
    return cmocka_run_group_tests_name("launch", tests, NULL, NULL) != 0;
}
