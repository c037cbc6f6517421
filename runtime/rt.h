/*
 * rt.h: the runtime's shared types. One mutex (rt.mu) guards every call,
 * map, pool and worker; the HTTP event threads and the worker event loop
 * take it briefly, for memory work only. A request waiting on a call or
 * map is suspended, not blocked, and rt_http_call_changed resumes it.
 *
 * The files depend on each other one way, top to bottom:
 *
 *   http.c, main.c        requests, flags, lifetime
 *   sched.c               calls, maps, pools: what runs where and when;
 *                         settles every attempt; implements the worker
 *                         events below
 *   worker.c              worker processes: start, send, stop; reports
 *                         what happens through rt_worker_events only
 *   queue.c, resources.c  waiting calls; capacity and reservations
 *   state.c, artifacts.c  logging, files, the artifact store
 *
 * A lower file never calls a function of a higher one except through a
 * callback it was given: worker.c reports through rt_worker_events (its
 * event loop runs the scheduler's tick through them too), and sched.c
 * tells the HTTP layer of changed calls through rt_sched_listener.
 * tests/layering.sh checks this on the object files.
 */
#ifndef RT_H
#define RT_H

#include "internal.h"
#include "queue.h"
#include "resources.h"

#include <pthread.h>
#include <stdio.h>
#include <sys/types.h>

enum rt_call_state { RT_QUEUED, RT_DELAYED, RT_SENT, RT_DONE };

typedef struct rt_pool rt_pool;
typedef struct rt_worker rt_worker;
typedef struct rt_map rt_map;

typedef struct rt_call {
    char id[48];
    rt_pool *pool;
    rt_map *map;             /* set for map inputs */
    long long index;         /* input index in its map, -1 otherwise */
    enum rt_call_state state;
    int attempt;             /* attempts started so far */
    bool cancelled;
    bool orphan;             /* its map is gone: free when the worker returns it */
    int waiters;             /* HTTP handlers waiting on it: not freed meanwhile */
    struct rt_http_wait *http_waits; /* suspended requests to resume when it changes */
    modal__buf *args;        /* the call frame, forwarded to the worker as is */
    int args_fd;             /* or a memfd holding it (large bodies), -1 */
    size_t args_len;
    modal__buf *result;      /* result frame once done */
    int result_fd;           /* the memfd holding it when large, else -1 */
    modal_status status;
    char *logs;              /* captured output of every attempt: whole lines, each
                              * tagged "1 " (stdout), "2 " (stderr) or "! " (notice) */
    size_t logs_len, logs_cap;
    long long logs_dropped;  /* lines over the per-call limit, left to the app log */
    double ready_at;         /* RT_DELAYED: when to queue again */
    double started_at;       /* when the current attempt started */
    double done_at;
    double fetched_at;       /* first time the result was fetched, 0 before */
    long long seq;           /* completion order within its map */
    struct rt_call *qnext;   /* pool queue, delayed list, or worker inflight list */
    struct rt_call *hnext;   /* hash chain */
    struct rt_call *dnext;   /* map done list */
    double queued_at;        /* when it last joined its pool's queue (new or retried) */
    double gpu_seconds;      /* its ended attempts' run time x the GPUs their worker held */
    int batch_size;          /* calls in the batch its attempt runs in (1: alone) */
} rt_call;

struct rt_pool {
    char key[65];            /* its identity: the id (hash) of its spec */
    const modal__spec *spec; /* registered (specs.c); lives as long as the runtime */
    size_t refs;             /* calls and maps that point at it */
    rt_call *qhead, *qtail;  /* queued calls (queue.c only) */
    size_t queued;
    int nworkers, nstarting;
    bool broken;             /* the executable cannot be a worker */
    struct rt_pool *next;
    size_t taken;            /* queue.c: calls taken and not yet acknowledged */
    const char *waits_for;   /* "cpu", "memory", "devices", "gpu": what keeps a worker
                              * from starting, NULL when nothing does */
    double waiting_since;    /* since when it waits for that */
    double warm_after;       /* min_containers starts no worker before this */
    double warm_pause;       /* the pause after the last failed start, 0 after a good one */
    double call_s;           /* recent mean run time of its calls, from the results
                              * (worker.c); 0 before the first */
    double gpu_seconds;      /* summed over its calls' attempts (sched.c), in memory */
};

enum rt_worker_state { RT_W_STARTING, RT_W_READY, RT_W_EXITING, RT_W_DEAD };

struct rt_worker {
    rt_pool *pool;
    pid_t pid;               /* also its process group */
    int pidfd;               /* readable once the process has exited; -1 if unsupported */
    int sock, out_fd, err_fd; /* the pipes are read here only before HELLO and after death */
    enum rt_worker_state state;
    rt_call *inflight;       /* sent calls in order; the head is running */
    rt_call *inflight_tail;
    int ninflight;
    int served;
    double started_at, idle_since;
    bool sock_closed;        /* the socket hung up while the process lived */
    double sock_closed_at;
    double exiting_since;    /* RT_W_EXITING with no call left: since when, 0 before */
    char *line[2];           /* unfinished lines of stdout, stderr */
    size_t line_len[2], line_cap[2];
    char line_id[2][48];     /* the call each was written by, "" for none */
    uint64_t received[2];    /* output bytes received per stream in LOG messages */
    uint64_t *taken;         /* shared with the worker: bytes it took from each pipe */
    char tail[2048];         /* last output, for crash reports */
    size_t tail_len;
    struct rt_worker *next;
    rt_res_grant res;        /* what it holds (sched.c reserves and releases) */
    bool batch;              /* its in-flight calls are one batch, running together */
};

struct rt_map {
    char id[48];
    rt_pool *pool;
    rt_call **calls;         /* by input index */
    size_t ncalls, cap;
    rt_call *done_head, *done_tail; /* finished, in completion order */
    long long next_seq;
    double touched;
    struct rt_http_wait *http_waits; /* suspended requests for its results */
    struct rt_map *next;
};

typedef struct rt_runtime {
    pthread_mutex_t mu;
    char state_dir[512];
    char token[256];
    size_t max_body;
    int idle_exit;
    int log_level;
    FILE *log;
    rt_pool *pools;
    rt_worker *workers;
    rt_map *maps;
    rt_call **table;         /* hash of calls by id */
    size_t table_size, ncalls;
    rt_call *delayed;        /* calls waiting to retry */
    int wake_fd;             /* eventfd that wakes the event loop */
    volatile int stopping;
    double last_activity;
    int running_workers;
} rt_runtime;

extern rt_runtime rt;

/* main.c / state.c; log levels 0 debug, 1 info, 2 warn, 3 error */
void rt_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
double rt_now(void);
int rt_state_init(const char *dir, const char *token_file, char *err, size_t errsz);
int rt_write_atomic(const char *path, const void *p, size_t len, mode_t mode);
/* Queue one line of worker output for logs/<app>.log (rt.mu held); cut
 * marks a piece of a line too long to keep whole. */
void rt_app_log(const char *app, const char *call_id, const char *fn, int stream,
                const char *line, size_t len, bool cut);
/* The event loop moves queued lines out with rt.mu held, then writes them
 * after unlocking, so no file I/O happens under the lock. */
void rt_app_log_take(void);
void rt_app_log_write(void);
/* The token file the runtime reads (absolute path). */
const char *rt_token_path(void);
/* main.c: the address workers give nested calls, as a client URL
 * ("unix:/path" or "http://127.0.0.1:PORT"); the first one set is kept.
 * Takes a listen spec ("unix:/path", "tcp:HOST:PORT"). */
void rt_set_listen_url(const char *listen_spec);
const char *rt_listen_url(void);
/* The TLS pin workers need for rt_listen_url(), "" when it is not TLS. */
const char *rt_listen_pin(void);

/* artifacts.c */
int rt_artifact_path(const char *sha, char *out, size_t outsz);
bool rt_artifact_exists(const char *sha);
/* Checks the file can run here; fills why on failure. */
bool rt_artifact_runnable(const char *sha, char *why, size_t whysz);
/*
 * Check that sha's file still holds the bytes it is named for (size and
 * SHA-256; remembered while its stat is unchanged). Returns 0, or -1 with
 * why filled when it is missing, or damaged and now removed, so that the
 * client uploads it again. Reads the file: call it without rt.mu when the
 * file may be new.
 */
int rt_artifact_verify(const char *sha, char *why, size_t whysz);

/* An artifact upload: bytes go to a temporary file and are hashed on the
 * way; only a complete upload whose hash matches, written and flushed
 * without error, is renamed into place. Errors name the artifact, the
 * state directory and the errno text. */
typedef struct rt_upload rt_upload;
rt_upload *rt_upload_begin(const char *sha, char *err, size_t errsz);
/* -1 after a write error (the upload is then only good for abort/finish). */
int rt_upload_append(rt_upload *u, const void *p, size_t n, char *err, size_t errsz);
/* Store it (takes rt.mu to let broken pools of sha try again). Returns 0
 * (*created: it was not stored before), -1 when the bytes do not match the
 * name, -2 when storing failed. Frees u either way. */
int rt_upload_finish(rt_upload *u, bool *created, char *err, size_t errsz);
/* Discard an upload; NULL is a no-op. */
void rt_upload_abort(rt_upload *u);

/* sched.c (all with rt.mu held unless noted) */
/* What the scheduler tells the layer above when a call changes (output,
 * completion, going away) or a map has new results: the HTTP layer
 * resumes the requests waiting on them. With rt.mu held; no I/O. */
typedef struct rt_sched_listener {
    void (*call_changed)(rt_call *c);
    void (*map_changed)(rt_map *m);
} rt_sched_listener;
/* Register the scheduler's handlers of worker events, and l; once, at
 * start, before any thread. */
void rt_sched_init(const rt_sched_listener *l);
rt_call *rt_call_find(const char *id);
/* These two release rt.mu for a moment when a request names a pool that
 * does not exist yet (or is broken): its executable is checked, which may
 * hash the whole file, without the lock. */
modal_status rt_call_submit(modal__buf *frame, int frame_fd, size_t frame_len,
                            rt_call **out, modal_error *err);
rt_map *rt_map_find(const char *id);
modal_status rt_map_create(modal__buf *frame, rt_map **out, modal_error *err);
/* A bundle of map input frames, checked by rt_map_inputs_read without
 * rt.mu (the frames' JSON is parsed there), then added under it. */
typedef struct rt_map_inputs {
    bool parsed;             /* the bundle itself was well formed */
    size_t n;                /* frames that passed, in order, up to the first bad one */
    size_t *index;           /* their input indexes */
    modal__buf **frame;      /* their frames (views into the bundle) */
    modal_status st;         /* the first bad frame's error, MODAL_OK when none */
    modal_error err;
} rt_map_inputs;
modal_status rt_map_inputs_read(modal__buf *bundle, rt_map_inputs *in);
/* The frames of in become calls of m (in order, up to the first bad one,
 * whose error is then returned); the ones taken leave in. */
modal_status rt_map_add_inputs(rt_map *m, rt_map_inputs *in, size_t *accepted,
                               modal_error *err);
void rt_map_inputs_free(rt_map_inputs *in);
void rt_map_free(rt_map *m);
void rt_call_cancel(rt_call *c);
/* Drop a map's finished calls up to seq (the client has them). */
void rt_map_ack(rt_map *m, long long seq);
void rt_call_complete(rt_call *c, modal_status st, modal__buf *result);
void rt_dispatch(rt_pool *p);
modal__buf *rt_error_frame(const rt_call *c, modal_status st, const char *msg);
void rt_call_append_log(rt_call *c, const char *p, size_t len);
/* The resources and the waiting calls, for GET /v1/health: adds
 * "resources" and "queue" to j. */
void rt_sched_status(cJSON *j);

/* specs.c: registered function specs (rt.mu held). */
/* Parse and check the spec object obj (what names it in errors: "function
 * spec", "call frame"), register it unless it is already, and give the
 * registered spec and its id (the hash of its canonical form). */
modal_status rt_spec_register(const cJSON *obj, const char *what, const modal__spec **out,
                              char id[65], modal_error *err);
/* The spec registered under id, or NULL. */
const modal__spec *rt_spec_find(const char *id);
/* MODAL_OK when this runtime can serve s; otherwise the refusal of the
 * first option it cannot serve yet (gpu, volumes, secrets, image). */
modal_status rt_spec_servable(const modal__spec *s, modal_error *err);
/* The pools, as a JSON list for the status endpoint. */
cJSON *rt_pools_status(void);
/* Keep a registered spec in <state>/specs/<id>.json unless it is there
 * already. Without rt.mu: it writes a file. */
void rt_spec_store(const char *id, const modal__spec *spec);
/* At startup: register the specs kept there (takes rt.mu). */
void rt_specs_load(void);

/* worker.c: worker processes. The scheduler drives them with these
 * functions; they report back only through rt_worker_events. */

/* What a worker reports. Every handler runs with rt.mu held on the event
 * loop's thread (or in the caller of a worker function), after the worker
 * has updated its own state, so it may call the worker functions. */
typedef struct rt_worker_events {
    /* w said HELLO and takes calls. */
    void (*ready)(rt_worker *w);
    /* A worker (or template) of p could not start serving: its enter hook
     * failed (MODAL_EFUNC, msg its message) or ran too long
     * (MODAL_ETIMEOUT), which fails the attempt of the call it was started
     * for; or its executable cannot serve p at all (another code), which
     * breaks p. */
    void (*start_refused)(rt_pool *p, modal_status code, const char *msg);
    /* p can start workers now (its template became ready). */
    void (*can_start)(rt_pool *p);
    /* No worker could be started for p; permanent when the executable is
     * the cause (the pool is then broken). */
    void (*start_failed)(rt_pool *p, modal_status st, const char *msg, bool permanent);
    /* The running call c of w ended: with a RESULT (frame, and fd the
     * memfd holding a large one or -1; ownership passes), or without one
     * (frame NULL: crash, timeout, stop, protocol error; msg says so). */
    void (*call_ended)(rt_worker *w, rt_call *c, modal_status st, const char *msg,
                       modal__buf *frame, int fd);
    /* Calls w was sent but never started (linked by qnext), in order. */
    void (*unstarted)(rt_worker *w, rt_call *list);
    /* Whole lines of output of c ("1 " / "2 " tagged), once per message. */
    void (*output)(rt_call *c, const char *lines, size_t len);
    /* w finished a call and may take more. */
    void (*idle)(rt_worker *w);
    /* w is gone (its process reaped); it is freed when this returns. */
    void (*gone)(rt_worker *w);
    /* Each turn of the event loop, and when its next timer is due. */
    void (*tick)(double now);
    double (*next_timer)(double now);
} rt_worker_events;
void rt_worker_events_set(const rt_worker_events *ev);
/* What the event loop does around rt.mu, set once at start (main.c):
 * locked runs right after the loop takes rt.mu, unlocked right after it
 * drops it. The HTTP server defers the wake-ups it is asked for in
 * between, so the requests they resume find rt.mu free. */
typedef struct rt_loop_hooks {
    void (*locked)(void);
    void (*unlocked)(void);
} rt_loop_hooks;
void rt_loop_hooks_set(const rt_loop_hooks *hooks);

/* Start a worker for p holding g (its GPUs go into CUDA_VISIBLE_DEVICES
 * and the launch spec's devices). On success it is the first of
 * rt.workers. */
int rt_worker_spawn(rt_pool *p, const rt_res_grant *g);
/* Send n calls to w in one message (n >= 1). */
void rt_worker_send(rt_worker *w, rt_call **calls, size_t n);
/* Send n calls (n >= 1) to idle worker w as one batch: each starts an
 * attempt now, and all run together in one invocation of the function.
 * w takes no other call until every call of the batch is back. */
void rt_worker_send_batch(rt_worker *w, rt_call **calls, size_t n);
void *rt_loop(void *arg);       /* the event loop thread; takes rt.mu itself */
void rt_wake(void);
/* Stop w: its running call ends (call_ended, MODAL_ECRASH with why), the
 * calls behind it come back (unstarted). */
void rt_worker_kill(rt_worker *w, const char *why);
/* w takes no new call and exits once its sent calls are done. */
void rt_worker_retire(rt_worker *w);
/* c, cancelled, was sent ahead to a worker: tell it not to start c. */
void rt_worker_cancel_sent(rt_call *c);
/* The worker running c (the head of its list), or NULL. */
rt_worker *rt_worker_running(const rt_call *c);
void rt_workers_shutdown(void);

/* http.c */
/* The HTTP server's limits; main.c sets them from its flags before the
 * first rt_http_start. */
#define RT_HTTP_MAX_CONNECTIONS 16384 /* defaults of the flags below */
#define RT_HTTP_HEADER_TIMEOUT 10
#define RT_HTTP_IDLE_TIMEOUT 60
typedef struct rt_http_opts {
    double header_timeout;   /* --header-timeout */
    double idle_timeout;     /* --idle-timeout */
    int max_connections;     /* --max-connections */
} rt_http_opts;
extern rt_http_opts rt_http;
#define RT_HTTP_MAX_HEAD (16u << 10) /* request line and headers */
typedef struct ssl_ctx_st SSL_CTX;
/* Listen on "unix:/path" or "tcp:HOST:PORT", with TLS when tls is not NULL
 * (runtime/tls.c builds it); prints and logs "listening tcp:HOST:PORT", or
 * "listening tls:HOST:PORT" for TLS. */
int rt_http_start(const char *listen, SSL_CTX *tls, char *err, size_t errsz);
void rt_http_stop(void);
/* c changed (output, completion) or is going away: resume the requests
 * waiting on it, and on its map. With rt.mu held; no I/O. */
void rt_http_call_changed(rt_call *c);
/* m has new results or is going away: resume the requests waiting on it. */
void rt_http_map_changed(rt_map *m);

/* template.c: memory-snapshot templates (see launch.h for the launcher).
 * All with rt.mu held. */
struct pollfd;
/* The event loop polls these: up to room slots, three per template. */
size_t rt_template_slots(struct pollfd *fds, size_t room);
size_t rt_template_count(void);
/* Handle what poll found in the slots rt_template_slots filled (HELLO,
 * output, death) and the start timeouts. */
void rt_template_events(const struct pollfd *fds, size_t n, double now);
/* Stop p's template (p is going away). */
void rt_template_stop(rt_pool *p);
void rt_templates_shutdown(void);
/* worker.c: report, for the workers and templates of p, through
 * rt_worker_events' start_refused and can_start. */
void rt_pool_start_failed(rt_pool *p, modal_status code, const char *msg);
void rt_pool_can_start(rt_pool *p);

#endif
