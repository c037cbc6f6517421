/*
 * test_token_file.c: the runtime refuses a token file that others could
 * read or swap (group/other permissions, a symbolic link, another owner),
 * exiting with status 1 and a message naming the file, its mode and the
 * fix; a symbolic link planted at the predictable name the token used to
 * be written through is not followed; and the client applies the same
 * checks to MODAL_TOKEN_FILE.
 *
 * This binary is also the worker the runtime starts.
 */
#include "harness.h"

MODAL_APP("itest-token");

MODAL_FUNCTION(tok_one, .timeout = 30)
{
    return modal_int(1);
}

/* A fresh temporary directory (0700) in dir (PATH_MAX bytes). */
static void temp_dir(char *dir)
{
    snprintf(dir, PATH_MAX, "/tmp/modal-tok-XXXXXX");
    assert_non_null(mkdtemp(dir));
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* Run the runtime on a fresh state dir with --token-file tfile; expect it
 * to exit with status 1 and print needle. */
static void expect_runtime_refuses(const char *tfile, const char *needle)
{
    char state[PATH_MAX];
    temp_dir(state);
    char *argv[] = {(char *)harness_runtime_bin(), "--state-dir", state, "--listen",
                    "tcp:127.0.0.1:0", "--token-file", (char *)tfile, NULL};
    char *out = NULL;
    int ws = harness_run(argv, 30, &out);
    if (!(WIFEXITED(ws) && WEXITSTATUS(ws) == 1))
        print_error("wait status 0x%x, output: %s\n", ws, out ? out : "");
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 1);
    assert_contains(out, needle);
    assert_null(strstr(out, "listening"));
    free(out);
    harness_rmtree(state);
}

static void test_group_or_other_readable_refused(void **state)
{
    char dir[PATH_MAX], tfile[PATH_MAX + 16], want[2 * PATH_MAX];
    temp_dir(dir);
    snprintf(tfile, sizeof tfile, "%s/token", dir);
    write_file(tfile, "0123456789abcdef0123456789abcdef\n", 0644);
    snprintf(want, sizeof want, "the token file %s has mode 0644", tfile);
    expect_runtime_refuses(tfile, want);
    snprintf(want, sizeof want, "chmod 600 %s", tfile);
    expect_runtime_refuses(tfile, want);
    assert_int_equal(chmod(tfile, 0640), 0);
    expect_runtime_refuses(tfile, "has mode 0640");
    /* The file is left as it was: refused, not repaired. */
    struct stat st;
    assert_int_equal(stat(tfile, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    harness_rmtree(dir);
}

static void test_symlink_refused(void **state)
{
    char dir[PATH_MAX], real[PATH_MAX + 16], link[PATH_MAX + 16];
    temp_dir(dir);
    snprintf(real, sizeof real, "%s/real", dir);
    snprintf(link, sizeof link, "%s/token", dir);
    write_file(real, "0123456789abcdef0123456789abcdef\n", 0600);
    assert_int_equal(symlink(real, link), 0);
    expect_runtime_refuses(link, "is a symbolic link; refusing to follow it");
    harness_rmtree(dir);
}

static void test_other_owner_refused(void **state)
{
    char dir[PATH_MAX], tfile[PATH_MAX + 16];
    temp_dir(dir);
    snprintf(tfile, sizeof tfile, "%s/token", dir);
    if (geteuid() == 0) {
        /* As root: a private file that belongs to someone else. */
        write_file(tfile, "0123456789abcdef0123456789abcdef\n", 0600);
        assert_int_equal(chown(tfile, 65534, 65534), 0);
        expect_runtime_refuses(tfile, "belongs to uid 65534, not to uid 0");
    } else {
        /* As a user: root's /etc/passwd is readable but not ours. */
        char want[64];
        snprintf(want, sizeof want, "belongs to uid 0, not to uid %u", (unsigned)geteuid());
        expect_runtime_refuses("/etc/passwd", want);
    }
    harness_rmtree(dir);
}

/*
 * The token used to be written through "<file>.tmp-<pid>", opened without
 * O_EXCL or O_NOFOLLOW: a symbolic link planted there received the token
 * and then became the token file. The pid is known exactly by planting
 * the link in the child that then becomes the runtime (exec keeps it).
 */
static void test_planted_temp_link_not_followed(void **state)
{
    char dir[PATH_MAX], target[PATH_MAX + 16], tfile[PATH_MAX + 16];
    temp_dir(dir);
    snprintf(target, sizeof target, "%s/stolen", dir);
    snprintf(tfile, sizeof tfile, "%s/state/token", dir);
    write_file(target, "", 0644);
    char sdir[PATH_MAX + 16];
    snprintf(sdir, sizeof sdir, "%s/state", dir);
    assert_int_equal(mkdir(sdir, 0700), 0);
    int pfd[2];
    assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char lname[PATH_MAX + 64];
        snprintf(lname, sizeof lname, "%s.tmp-%d", tfile, (int)getpid());
        if (symlink(target, lname) != 0)
            _exit(126);
        dup2(pfd[1], 1);
        char *argv[] = {(char *)harness_runtime_bin(), "--state-dir", sdir, "--listen",
                        "tcp:127.0.0.1:0", NULL};
        execv(argv[0], argv);
        _exit(127);
    }
    close(pfd[1]);
    /* Wait for the listening line: the token is written before it. */
    char buf[4096];
    size_t len = 0;
    for (double end = harness_now() + 10; len < sizeof buf - 1 && harness_now() < end;) {
        struct pollfd p = {pfd[0], POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t n = read(pfd[0], buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "listening") != NULL)
            break;
    }
    buf[len] = '\0';
    kill(pid, SIGTERM);
    harness_wait_pid(pid, 10);
    close(pfd[0]);
    assert_contains(buf, "listening");

    struct stat st;
    assert_int_equal(lstat(tfile, &st), 0);
    assert_true(S_ISREG(st.st_mode)); /* not the planted link */
    assert_int_equal(st.st_mode & 07777, 0600);
    size_t tlen = 0;
    char *stolen = harness_read_file(target, &tlen);
    assert_non_null(stolen);
    assert_int_equal(tlen, 0); /* the token never went through the link */
    free(stolen);
    harness_rmtree(dir);
}

static void test_client_checks_token_file(void **state)
{
    harness h;
    assert_int_equal(harness_start(&h), 0);
    char copy[PATH_MAX + 16], want[PATH_MAX + 64], line[300];
    snprintf(copy, sizeof copy, "%s/client-token", h.dir);
    snprintf(line, sizeof line, "%s\n", h.token);
    write_file(copy, line, 0644);
    unsetenv("MODAL_TOKEN");
    setenv("MODAL_TOKEN_FILE", copy, 1);
    modal_error err;
    assert_status(modal_fn_remote(&tok_one, modal_list(), NULL, &err), MODAL_EAUTH, err);
    snprintf(want, sizeof want, "the token file %s has mode 0644", copy);
    assert_message_contains(err, want);
    /* Made private, the same file works. */
    assert_int_equal(chmod(copy, 0600), 0);
    assert_ok(modal_fn_remote(&tok_one, modal_list(), NULL, &err), err);
    harness_stop(&h);
}

int main(int argc, char **argv)
{
    modal_worker_serve_if_worker(argc, argv);
    setenv("MODAL_QUIET_LOGS", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_or_other_readable_refused),
        cmocka_unit_test(test_symlink_refused),
        cmocka_unit_test(test_other_owner_refused),
        cmocka_unit_test(test_planted_temp_link_not_followed),
        cmocka_unit_test(test_client_checks_token_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
