/*
 * main.c: modal-runtime's command line, signals and lifetime. Signal
 * handlers only set a flag; the main thread notices and shuts down.
 */
#include "rt.h"
#include "gpus.h"
#include "httpd.h"
#include "kernel_offer.h"
#include "tls.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

rt_runtime rt = {.mu = PTHREAD_MUTEX_INITIALIZER};

static volatile sig_atomic_t got_signal;

static char listen_url[600], tls_pin[RT_TLS_PIN_SIZE];
static int listen_rank = 99;

/* Workers' nested calls come back through the cheapest listener: a Unix
 * socket, else plain loopback TCP, else TLS (with the pin, since the
 * certificate may be self-signed). An address of "any" means this
 * machine's own, reached at 127.0.0.1. Called once per bound listener. */
void rt_set_listen_url(const char *spec)
{
    const char *hostport = NULL, *scheme = NULL;
    int rank;
    if (spec == NULL)
        return;
    if (strncmp(spec, "unix:", 5) == 0)
        rank = 0;
    else if (strncmp(spec, "tcp:", 4) == 0)
        rank = 1, hostport = spec + 4, scheme = "http";
    else if (strncmp(spec, "tls:", 4) == 0)
        rank = 2, hostport = spec + 4, scheme = "https";
    else
        return;
    if (rank >= listen_rank)
        return;
    listen_rank = rank;
    if (hostport == NULL)
        snprintf(listen_url, sizeof listen_url, "%s", spec);
    else if (strncmp(hostport, "0.0.0.0:", 8) == 0)
        snprintf(listen_url, sizeof listen_url, "%s://127.0.0.1:%s", scheme, hostport + 8);
    else
        snprintf(listen_url, sizeof listen_url, "%s://%s", scheme, hostport);
}

const char *rt_listen_url(void)
{
    return listen_url;
}

const char *rt_listen_pin(void)
{
    return listen_rank == 2 ? tls_pin : "";
}

static void on_signal(int sig)
{
    got_signal = sig;
}

static void usage(FILE *to)
{
    fprintf(to,
            "usage: modal-runtime --state-dir DIR [--listen unix:PATH|tcp:HOST:PORT|tls:HOST:PORT]...\n"
            "                     [--tls-cert FILE --tls-key FILE] [--insecure-plain-http]\n"
            "                     [--token-file FILE] [--idle-exit SECONDS]\n"
            "                     [--max-body BYTES] [--log-level debug|info|warn|error]\n"
            "                     [--max-connections N] [--header-timeout SECONDS]\n"
            "                     [--idle-timeout SECONDS] [--cpus N] [--memory MiB]\n"
            "                     [--max-queued N] [--kernel-worker PATH]\n"
            "       modal-runtime --gpus\n"
            "Runs libmodal functions in warm worker processes. See docs/runtime.md.\n"
            "  --max-body BYTES          largest request body, any encoding (default 8 GiB)\n"
            "  --max-connections N       open HTTP connections; more are answered 503 and\n"
            "                            closed at once (default %d)\n"
            "  --header-timeout SECONDS  time from a request's first byte to the end of its\n"
            "                            headers (default %d)\n"
            "  --idle-timeout SECONDS    how long a keep-alive connection may wait for its\n"
            "                            next request, or a body or answer stall (default %d)\n"
            "  --cpus N                  CPU cores workers may reserve with .cpu (default:\n"
            "                            the online CPUs)\n"
            "  --memory MiB              memory workers may reserve with .memory (default:\n"
            "                            the physical memory)\n"
            "  --max-queued N            calls one function may have waiting for a worker\n"
            "                            (default %d)\n"
            "  --kernel-worker PATH      the program that runs remote kernel launches\n"
            "                            (default: " RT_KERNEL_WORKER_NAME " next to this one)\n"
            "  --gpus                    print the GPUs this runtime would use and exit\n",
            RT_HTTP_MAX_CONNECTIONS, RT_HTTP_HEADER_TIMEOUT, RT_HTTP_IDLE_TIMEOUT,
            RT_QUEUE_MAX_DEFAULT);
}

static int parse_count(const char *opt, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = v ? strtod(v, &end) : 0;
    if (v == NULL || end == v || *end != '\0' || errno || !(d >= lo && d <= hi)) {
        fprintf(stderr, "modal-runtime: %s \"%s\": expected a number from %.0f to %.0f\n", opt,
                v ? v : "", lo, hi);
        return -1;
    }
    *out = d;
    return 0;
}

int main(int argc, char **argv)
{
    const char *state = NULL, *token_file = NULL, *listens[8];
    const char *tls_cert = NULL, *tls_key = NULL;
    const char *kernel_worker = NULL;
    bool insecure_plain = false;
    int nlisten = 0;
    double idle = 0, max_body = 8.0 * 1024 * 1024 * 1024, cpus = 0, memory = 0;
    rt.log_level = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("modal-runtime %s\n", MODAL_VERSION_STRING);
            return 0;
        } else if (strcmp(a, "--gpus") == 0) {
            rt_gpus_print(stdout);
            return 0;
        } else if (strcmp(a, "--insecure-plain-http") == 0) {
            insecure_plain = true;
            continue; /* takes no value */
        } else if (v == NULL) {
            fprintf(stderr, "modal-runtime: %s needs a value\n", a);
            usage(stderr);
            return 2;
        } else if (strcmp(a, "--state-dir") == 0) {
            state = v;
        } else if (strcmp(a, "--listen") == 0) {
            if (nlisten == 8) {
                fprintf(stderr, "modal-runtime: at most 8 --listen addresses\n");
                return 2;
            }
            listens[nlisten++] = v;
        } else if (strcmp(a, "--tls-cert") == 0) {
            tls_cert = v;
        } else if (strcmp(a, "--tls-key") == 0) {
            tls_key = v;
        } else if (strcmp(a, "--token-file") == 0) {
            token_file = v;
        } else if (strcmp(a, "--idle-exit") == 0) {
            if (parse_count(a, v, 0, 86400 * 365, &idle))
                return 2;
        } else if (strcmp(a, "--max-body") == 0) {
            if (parse_count(a, v, 1024, 1e15, &max_body))
                return 2;
        } else if (strcmp(a, "--max-connections") == 0) {
            double n;
            if (parse_count(a, v, 1, 1000000, &n))
                return 2;
            rt_http.max_connections = (int)n;
        } else if (strcmp(a, "--header-timeout") == 0) {
            if (parse_count(a, v, 0.1, 3600, &rt_http.header_timeout))
                return 2;
        } else if (strcmp(a, "--idle-timeout") == 0) {
            if (parse_count(a, v, 0.1, 86400, &rt_http.idle_timeout))
                return 2;
        } else if (strcmp(a, "--cpus") == 0) {
            /* Fractions of a core are fine, down to the .cpu minimum. */
            char *end;
            errno = 0;
            cpus = strtod(v, &end);
            if (end == v || *end != '\0' || errno || !(cpus >= 0.125 && cpus <= 4096)) {
                fprintf(stderr, "modal-runtime: --cpus \"%s\": expected a number of CPU cores "
                                "from 0.125 to 4096\n", v);
                return 2;
            }
        } else if (strcmp(a, "--memory") == 0) {
            if (parse_count(a, v, 1, 1 << 30, &memory))
                return 2;
        } else if (strcmp(a, "--max-queued") == 0) {
            double n;
            if (parse_count(a, v, 1, 100000000, &n))
                return 2;
            rt_queue_max = (size_t)n;
        } else if (strcmp(a, "--kernel-worker") == 0) {
            kernel_worker = v;
        } else if (strcmp(a, "--log-level") == 0) {
            const char *lv[] = {"debug", "info", "warn", "error"};
            rt.log_level = -1;
            for (int k = 0; k < 4; k++)
                if (strcmp(v, lv[k]) == 0)
                    rt.log_level = k;
            if (rt.log_level < 0) {
                fprintf(stderr, "modal-runtime: --log-level \"%s\": use debug, info, warn or error\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "modal-runtime: unknown option \"%s\"\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (state == NULL) {
        fprintf(stderr, "modal-runtime: --state-dir is required\n");
        usage(stderr);
        return 2;
    }
    if ((tls_cert == NULL) != (tls_key == NULL)) {
        fprintf(stderr, "modal-runtime: give both --tls-cert and --tls-key, or neither for a "
                        "self-signed certificate\n");
        return 2;
    }
    /* Which listeners speak TLS is settled before anything starts. */
    char http_specs[8][600];
    const char *san_hosts[9];
    bool tls_on[8] = {false}, exposed[8] = {false}, any_tls = false;
    int nsan = 0;
    for (int i = 0; i < nlisten; i++) {
        char why[300];
        if (rt_tls_listen_mode(listens[i], insecure_plain, http_specs[i], sizeof http_specs[i],
                               &tls_on[i], &exposed[i], why, sizeof why) != 0) {
            fprintf(stderr, "modal-runtime: %s\n", why);
            return 2;
        }
        if (exposed[i])
            fprintf(stderr, "modal-runtime: WARNING: --insecure-plain-http: %s serves plain HTTP "
                            "on a non-loopback address; the token and every argument and result "
                            "cross the network in clear text\n", listens[i]);
        any_tls |= tls_on[i];
    }
    if (tls_cert != NULL && !any_tls) {
        fprintf(stderr, "modal-runtime: --tls-cert %s is given but no --listen address serves "
                        "TLS; listen on tls:HOST:PORT or on a non-loopback tcp:HOST:PORT\n",
                tls_cert);
        return 2;
    }
    rt.max_body = (size_t)max_body;
    rt.idle_exit = (int)idle;
    char err[700];
    int rc = rt_state_init(state, token_file, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "modal-runtime: %s\n", err);
        return rc == -2 ? 0 : 1; /* another runtime serves this directory */
    }
    char logpath[600];
    snprintf(logpath, sizeof logpath, "%s/runtime.log", rt.state_dir);
    rt.log = fopen(logpath, "ae");
    if (rt.log == NULL)
        rt.log = stderr;
    rt_specs_load();

    rt.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    rt_res_init(cpus, (long long)memory, true);
    rt_gpus_init();
    static const rt_sched_listener http_listener = {rt_http_call_changed, rt_http_map_changed};
    rt_sched_init(&http_listener);
    static const rt_loop_hooks loop_hooks = {rt_httpd_hold_wakes, rt_httpd_release_wakes};
    rt_loop_hooks_set(&loop_hooks);
    rt.last_activity = rt_now();

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* A file-size limit makes a write fail with EFBIG, which an upload
     * reports, instead of killing the runtime. */
    signal(SIGXFSZ, SIG_IGN);
    /* Every connection is a descriptor: use all the process may have. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY &&
        (rlim_t)rt_http.max_connections + 256 > nofile.rlim_cur)
        rt_log(2, "--max-connections %d is close to the descriptor limit %llu: connections "
               "beyond about %llu are refused", rt_http.max_connections,
               (unsigned long long)nofile.rlim_cur,
               (unsigned long long)(nofile.rlim_cur > 256 ? nofile.rlim_cur - 256 : 0));
    /* Workers are reaped by the event loop; leave SIGCHLD at default. */

    for (int i = 0; i < nlisten; i++)
        if (exposed[i])
            rt_log(2, "WARNING: --insecure-plain-http: %s serves plain HTTP on a non-loopback "
                      "address; the token and every argument and result cross the network in "
                      "clear text", listens[i]);
    SSL_CTX *tls = NULL;
    char pin[RT_TLS_PIN_SIZE] = "";
    if (any_tls) {
        for (int i = 0; i < nlisten; i++)
            if (tls_on[i]) {
                static char hosts[8][64];
                const char *hp = http_specs[i] + 4, *colon = strrchr(hp, ':');
                snprintf(hosts[nsan], sizeof hosts[nsan], "%.*s", (int)(colon - hp), hp);
                san_hosts[nsan] = hosts[nsan];
                nsan++;
            }
        san_hosts[nsan] = NULL;
        tls = rt_tls_context(tls_cert, tls_key, rt.state_dir, san_hosts, pin, err, sizeof err);
        if (tls == NULL) {
            fprintf(stderr, "modal-runtime: %s\n", err);
            rt_log(3, "%s", err);
            return 1;
        }
    }

    char defsock[600];
    if (nlisten == 0) {
        snprintf(defsock, sizeof defsock, "unix:%s/runtime.sock", rt.state_dir);
        listens[nlisten] = defsock;
        snprintf(http_specs[nlisten++], sizeof http_specs[0], "%s", defsock);
    }
    if (tls != NULL) {
        /* Clients pin this (MODAL_TLS_FINGERPRINT); printed before the
         * listening lines so whoever waits for those has it already. */
        printf("tls fingerprint %s\n", pin);
        fflush(stdout);
        rt_log(1, "tls fingerprint %s (also in %s/tls/fingerprint)", pin, rt.state_dir);
    }
    snprintf(tls_pin, sizeof tls_pin, "%s", pin);
    pthread_t loop;
    pthread_create(&loop, NULL, rt_loop, NULL);
    for (int i = 0; i < nlisten; i++)
        if (rt_http_start(http_specs[i], tls_on[i] ? tls : NULL, err, sizeof err) != 0) {
            fprintf(stderr, "modal-runtime: %s\n", err);
            rt_log(3, "%s", err);
            rt_http_stop();
            pthread_mutex_lock(&rt.mu);
            rt.stopping = 1;
            pthread_mutex_unlock(&rt.mu);
            rt_wake();
            pthread_join(loop, NULL);
            SSL_CTX_free(tls);
            return 1;
        }
    rt_log(1, "modal-runtime %s started (pid %d, state %s)", MODAL_VERSION_STRING, (int)getpid(),
           rt.state_dir);
    /* Once nothing can fail the start any more (its thread must be done
     * before the process exits), and after SIGXFSZ is ignored: storing it
     * may meet a file-size limit. */
    rt_kernel_offer_init(kernel_worker);

    while (!got_signal) {
        usleep(100 * 1000);
        if (rt.idle_exit > 0) {
            pthread_mutex_lock(&rt.mu);
            bool busy = false;
            for (rt_worker *w = rt.workers; w; w = w->next)
                if (w->inflight != NULL)
                    busy = true;
            bool idle_long = !busy && !rt_queue_any_delayed() &&
                             rt_now() - rt.last_activity > rt.idle_exit;
            pthread_mutex_unlock(&rt.mu);
            if (idle_long) {
                rt_log(1, "idle for %d s; exiting", rt.idle_exit);
                break;
            }
        }
    }
    rt_log(1, "shutting down%s", got_signal ? " on a signal" : "");
    pthread_mutex_lock(&rt.mu);
    rt.stopping = 1;
    rt_workers_shutdown();
    pthread_mutex_unlock(&rt.mu);
    rt_wake();
    /* Give idle workers a moment to run exit hooks, then stop the rest.
     * The HTTP threads (which refuse new calls now) end only after it: a
     * worker dies with the thread that started it (PR_SET_PDEATHSIG). */
    for (int i = 0; i < 50; i++) {
        pthread_mutex_lock(&rt.mu);
        bool none = rt.workers == NULL;
        pthread_mutex_unlock(&rt.mu);
        if (none)
            break;
        usleep(100 * 1000);
    }
    rt_http_stop();
    pthread_mutex_lock(&rt.mu);
    for (rt_worker *w = rt.workers; w; w = w->next)
        rt_worker_kill(w, "the runtime is shutting down");
    pthread_mutex_unlock(&rt.mu);
    rt_wake();
    pthread_join(loop, NULL);
    rt_kernel_offer_wait();
    SSL_CTX_free(tls);
    rt_log(1, "stopped");
    return 0;
}
