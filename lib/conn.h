/*
 * conn.h: the connection to a runtime, inside the library (lib/conn.c,
 * lib/client.c). A connection owns everything that depends on which
 * runtime is talked to: its URL, token, TLS pin or CA, a small pool of
 * libcurl handles, the retry policy for transport errors, and what this
 * process has already done on that runtime (uploaded its executable,
 * registered function specs). The public handle (modal_connection) is this
 * struct; docs/architecture.md ("The connection object") describes the design.
 */
#ifndef MODAL_CONN_H
#define MODAL_CONN_H

#include "internal.h"

#include <pthread.h>

/* How a connection's settings are named in its errors: the environment
 * variables for the default connection, the fields of
 * modal_connection_options for one opened with modal_connection_open. */
typedef struct modal__conn_names {
    const char *url, *token, *token_file, *pin, *ca;
} modal__conn_names;

/* Idle libcurl handles kept per connection: each keeps its TCP (or Unix
 * socket) connection to the runtime open for the next request. */
#define MODAL__CONN_POOL_MAX 16
/* Default retry policy for transport errors: 6 retries, the first after
 * 50 ms, each delay doubling up to 16 times the first (about 2.4 s in all). */
#define MODAL__CONN_RETRIES 6
#define MODAL__CONN_RETRY_DELAY 0.05

/*
 * Where and how to reach one runtime. A copy (a snapshot) is taken for
 * each request, so a request never holds the connection's lock while it
 * talks to the runtime.
 */
typedef struct modal__conn_settings {
    char url[512];          /* as given ("" for the embedded runtime) */
    char token_env[256];    /* a token given directly ("" when none) */
    char token_file[512];   /* a token file given ("" when none) */
    char tls_pin[512];      /* "sha256//..." pins, ';'-separated */
    char tls_ca[512];       /* a CA bundle file */
    char base[512];         /* "http://host:port" or "http://localhost" */
    char unix_path[512];    /* socket path, "" for TCP */
    char embedded_dir[512]; /* non-empty for the embedded runtime */
    char shown[600];        /* the URL as modal_connection_url shows it */
    const modal__conn_names *names;
    int retries;            /* transport retries, >= 0 */
    double retry_delay;     /* seconds before the first retry */
} modal__conn_settings;

/* A request's view of its connection: the settings and the token. */
typedef struct modal__conn_snap {
    modal__conn_settings s;
    char token[256];
    unsigned long generation;
} modal__conn_snap;

/* An interned string: the default connection's URLs as shown, kept for
 * the program's life so modal_runtime_url's result never changes under a
 * reader. */
typedef struct modal__shown {
    struct modal__shown *next;
    char text[];
} modal__shown;

struct modal_connection {
    pthread_mutex_t lock;     /* guards every field below but refs */
    atomic_long refs;         /* the opener's, each request's and call's */
    bool is_default;          /* built from the environment, follows it */
    bool configured;          /* settings hold a valid configuration */
    modal__conn_settings set;
    char token[256];          /* "" until read */
    /* Bumped whenever the runtime this connection points at may have
     * changed (the environment named another, or the embedded runtime was
     * started again): per-runtime state below is then forgotten. */
    unsigned long generation;
    bool embedded_seen;       /* the embedded runtime answered once */
    void *handles[MODAL__CONN_POOL_MAX]; /* idle CURL handles */
    int nhandles;
    /* Per-runtime state. */
    pthread_mutex_t art_lock; /* one upload of the executable at a time */
    bool art_uploaded;        /* this process's executable is there */
    char (*specs)[65];        /* spec hashes registered there */
    size_t nspecs, spec_cap;
    modal__shown *shown;      /* default connection only */
    /* The runtime's kernel worker artifact (lib/gpu_remote.c), "" until
     * asked; valid in generation kernel_worker_gen only. */
    char kernel_worker[65];
    unsigned long kernel_worker_gen;
};

/*
 * The connection a request uses: conn itself with a reference taken, or,
 * for NULL, the default connection (built once, thread-safely, from the
 * environment). Never fails; release it with modal__conn_release.
 */
modal_connection *modal__conn_acquire(modal_connection *conn);
/* Drop a reference taken by modal__conn_acquire (NULL: no-op). The last
 * reference to a closed connection frees it. */
void modal__conn_release(modal_connection *conn);

/* For the default connection, re-read the environment and, when it names
 * another runtime, point at it (forgetting per-runtime state); for others
 * nothing. MODAL_EINVAL naming a bad variable. */
modal_status modal__conn_refresh(modal_connection *conn, modal_error *err);
/*
 * Snapshot what a request needs, starting the embedded runtime when the
 * connection names it and it was not seen yet, and reading the token.
 * The default connection first re-reads the environment and, when it
 * changed, points at the new runtime (forgetting per-runtime state).
 */
modal_status modal__conn_snapshot(modal_connection *conn, modal__conn_snap *snap,
                                  modal_error *err);
/*
 * A request could not connect to the embedded runtime of snap: start it
 * again, forget the token (a new runtime may have made a new one) and what
 * was registered there, and refresh snap.
 */
modal_status modal__conn_embedded_restart(modal_connection *conn, modal__conn_snap *snap,
                                          modal_error *err);
/* The URL the connection points at, as shown in errors ("unix:/...",
 * "https://host:port"); for the default connection it re-reads the
 * environment. The string lives as long as the connection (the program,
 * for the default one). */
const char *modal__conn_url(modal_connection *conn);

/* Idle curl handles of conn (NULL when none is idle), and giving one back
 * (false when the pool is full: the caller frees it). */
void *modal__conn_handle_take(modal_connection *conn);
bool modal__conn_handle_give(modal_connection *conn, void *handle);

/* The generation of conn's per-runtime state now: read it before a
 * request whose success a _mark or _add below records. */
unsigned long modal__conn_generation(modal_connection *conn);

/*
 * Per-runtime state, forgotten when the connection's runtime changes.
 *
 * The executable: whether it is on conn's runtime. _mark records an upload
 * (or a HEAD that found it) made in generation gen; a mark for an older
 * generation is dropped. _forget: the runtime said it lost it.
 */
bool modal__conn_artifact_known(modal_connection *conn);
void modal__conn_artifact_mark(modal_connection *conn, unsigned long gen);
void modal__conn_artifact_forget(modal_connection *conn);

/*
 * Function specs registered on conn's runtime, keyed by spec hash (64
 * lowercase hex digits). A registrar asks _known before registering; after
 * the runtime accepted a spec it calls _add with the generation of the
 * snapshot the request used (a mark for an older generation is dropped);
 * when the runtime answers that it does not know a spec (it restarted), it
 * calls _forget and registers again. Thread-safe; MODAL_ENOMEM when the set
 * cannot grow (the spec is then simply registered again next time).
 */
bool modal__conn_spec_known(modal_connection *conn, const char *spec_hash);
modal_status modal__conn_spec_add(modal_connection *conn, const char *spec_hash,
                                  unsigned long gen, modal_error *err);
void modal__conn_spec_forget(modal_connection *conn, const char *spec_hash);

/* Free conn's idle curl handles (lib/client.c, which loaded libcurl). */
void modal__conn_handles_free(modal_connection *conn);

#endif /* MODAL_CONN_H */
