/*
 * conn.c: connections to runtimes. A connection holds where a runtime is
 * and how to reach it (URL, token, TLS pin or CA, retry policy), its idle
 * libcurl handles, and the state this process built up there (executable
 * uploaded, function specs registered). The default connection is built
 * from the environment and follows it; others are opened by the program
 * with modal_connection_open. lib/client.c makes the requests.
 */
#include "conn.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const modal__conn_names env_names = {
    "MODAL_RUNTIME_URL", "MODAL_TOKEN", "MODAL_TOKEN_FILE", "MODAL_TLS_FINGERPRINT",
    "MODAL_TLS_CA",
};
static const modal__conn_names opt_names = {
    "url", "opts->token", "opts->token_file", "opts->tls_fingerprint", "opts->tls_ca",
};

/*
 * The default connection. It is a static object rather than an allocation
 * so that building it cannot fail; its settings are filled, under its
 * lock, on first use and whenever the environment names another runtime.
 */
static modal_connection default_conn = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .art_lock = PTHREAD_MUTEX_INITIALIZER,
    .refs = 1,
    .is_default = true,
};

static const char *env_or_empty(const char *name)
{
    const char *v = getenv(name);
    return v != NULL ? v : "";
}

/* Copy v into a field of size sz, or fail naming it (and showing its
 * start, unless it is a secret). */
static modal_status copy_setting(char *dst, size_t sz, const char *name, const char *v,
                                 bool secret, modal_error *err)
{
    size_t n = strlen(v);
    if (n >= sz && secret)
        return modal__fail(err, MODAL_EINVAL, "%s is %zu bytes long; at most %zu are accepted",
                           name, n, sz - 1);
    if (n >= sz)
        return modal__fail(err, MODAL_EINVAL, "%s=\"%.200s...\" is %zu bytes long; at most %zu "
                           "are accepted", name, v, n, sz - 1);
    memcpy(dst, v, n + 1);
    return MODAL_OK;
}

/*
 * Check and fill settings from their sources: the environment (default
 * connection) or modal_connection_open's arguments; nm names them in
 * errors. Reads nothing from the runtime.
 */
static modal_status settings_parse(modal__conn_settings *c, const char *url, const char *tok,
                                   const char *tokf, const char *pin, const char *ca,
                                   const modal__conn_names *nm, modal_error *err)
{
    memset(c, 0, sizeof *c);
    c->names = nm;
    c->retries = MODAL__CONN_RETRIES;
    c->retry_delay = MODAL__CONN_RETRY_DELAY;
    modal_status st;
    if ((st = copy_setting(c->url, sizeof c->url, nm->url, url, false, err)) != MODAL_OK ||
        (st = copy_setting(c->token_env, sizeof c->token_env, nm->token, tok, true, err)) !=
            MODAL_OK ||
        (st = copy_setting(c->token_file, sizeof c->token_file, nm->token_file, tokf, false,
                           err)) != MODAL_OK ||
        (st = copy_setting(c->tls_pin, sizeof c->tls_pin, nm->pin, pin, false, err)) !=
            MODAL_OK ||
        (st = copy_setting(c->tls_ca, sizeof c->tls_ca, nm->ca, ca, false, err)) != MODAL_OK)
        return st;
    if (pin[0] != '\0' && (st = modal__pin_check_named(nm->pin, pin, err)) != MODAL_OK)
        return st;
    if (ca[0] != '\0' && access(ca, R_OK) != 0)
        return modal__fail(err, MODAL_EINVAL, "%s=\"%s\": cannot read it: %s; give a "
                           "PEM file of the CA that signed the runtime's certificate", nm->ca, ca,
                           strerror(errno));
    if ((pin[0] != '\0' || ca[0] != '\0') && strncmp(url, "http://", 7) == 0)
        return modal__fail(err, MODAL_EINVAL,
                           "%s is set but %s=\"%s\" is plain HTTP, where it "
                           "would protect nothing; use https://HOST:PORT",
                           pin[0] != '\0' ? nm->pin : nm->ca, nm->url, url);
    if (url[0] == '\0') {
        if ((st = modal__embedded_dir(c->embedded_dir, sizeof c->embedded_dir, err)) != MODAL_OK)
            return st;
        if ((size_t)snprintf(c->unix_path, sizeof c->unix_path, "%s/runtime.sock",
                             c->embedded_dir) >= 108)
            return modal__fail(err, MODAL_EINVAL,
                               "the runtime socket path %s/runtime.sock is longer than a Unix "
                               "socket allows (107 bytes); set MODAL_HOME to a shorter directory",
                               c->embedded_dir);
        strcpy(c->base, "http://localhost");
    } else if (strncmp(url, "unix:", 5) == 0) {
        if (url[5] != '/' || strlen(url + 5) >= 108)
            return modal__fail(err, MODAL_EINVAL,
                               "%s=\"%s\": after \"unix:\" give an absolute socket "
                               "path of at most 107 bytes", nm->url, url);
        snprintf(c->unix_path, sizeof c->unix_path, "%s", url + 5);
        strcpy(c->base, "http://localhost");
    } else if ((strncmp(url, "http://", 7) == 0 && url[7] != '\0' && url[7] != '/') ||
               (strncmp(url, "https://", 8) == 0 && url[8] != '\0' && url[8] != '/')) {
        snprintf(c->base, sizeof c->base, "%s", url);
        size_t n = strlen(c->base);
        while (n > 0 && c->base[n - 1] == '/')
            c->base[--n] = '\0';
    } else {
        return modal__fail(err, MODAL_EINVAL,
                           "%s=\"%s\" is not understood; use unix:/path/to.sock, "
                           "https://host:port or http://host:port", nm->url, url);
    }
    if (c->unix_path[0] != '\0')
        snprintf(c->shown, sizeof c->shown, "unix:%s", c->unix_path);
    else
        snprintf(c->shown, sizeof c->shown, "%s", c->base);
    return MODAL_OK;
}

/* The runtime may have changed: forget what was done there (lock held). */
static void forget_runtime(modal_connection *c)
{
    c->generation++;
    c->token[0] = '\0';
    c->embedded_seen = false;
    c->art_uploaded = false;
    c->nspecs = 0;
}

/*
 * The default connection follows the environment, so a program may point
 * at another runtime between calls. The new settings are parsed outside
 * the lock (parsing checks files), then installed.
 */
static modal_status default_refresh(modal_connection *c, modal_error *err)
{
    const char *url = env_or_empty("MODAL_RUNTIME_URL");
    const char *tok = env_or_empty("MODAL_TOKEN");
    const char *tokf = env_or_empty("MODAL_TOKEN_FILE");
    const char *pin = env_or_empty("MODAL_TLS_FINGERPRINT");
    const char *ca = env_or_empty("MODAL_TLS_CA");
    pthread_mutex_lock(&c->lock);
    bool same = c->configured && strcmp(url, c->set.url) == 0 &&
                strcmp(tok, c->set.token_env) == 0 && strcmp(tokf, c->set.token_file) == 0 &&
                strcmp(pin, c->set.tls_pin) == 0 && strcmp(ca, c->set.tls_ca) == 0;
    pthread_mutex_unlock(&c->lock);
    if (same)
        return MODAL_OK;
    modal__conn_settings ns;
    modal_status st = settings_parse(&ns, url, tok, tokf, pin, ca, &env_names, err);
    if (st != MODAL_OK)
        return st;
    pthread_mutex_lock(&c->lock);
    if (!c->configured || strcmp(ns.url, c->set.url) != 0 ||
        strcmp(ns.token_env, c->set.token_env) != 0 ||
        strcmp(ns.token_file, c->set.token_file) != 0 ||
        strcmp(ns.tls_pin, c->set.tls_pin) != 0 || strcmp(ns.tls_ca, c->set.tls_ca) != 0) {
        c->set = ns;
        c->configured = true;
        forget_runtime(c);
    }
    pthread_mutex_unlock(&c->lock);
    return MODAL_OK;
}

modal_status modal__conn_refresh(modal_connection *c, modal_error *err)
{
    return c->is_default ? default_refresh(c, err) : MODAL_OK;
}

modal_connection *modal__conn_acquire(modal_connection *conn)
{
    if (conn == NULL)
        return &default_conn;
    if (!conn->is_default)
        atomic_fetch_add(&conn->refs, 1);
    return conn;
}

void modal__conn_release(modal_connection *conn)
{
    if (conn == NULL || conn->is_default || atomic_fetch_sub(&conn->refs, 1) != 1)
        return;
    modal__conn_handles_free(conn);
    pthread_mutex_destroy(&conn->lock);
    pthread_mutex_destroy(&conn->art_lock);
    free(conn->specs);
    free(conn);
}

/* Make sure snap has a token: the connection's, else read and keep it. */
static modal_status load_token(modal_connection *c, modal__conn_snap *snap, modal_error *err)
{
    pthread_mutex_lock(&c->lock);
    snprintf(snap->token, sizeof snap->token, "%s", c->token);
    pthread_mutex_unlock(&c->lock);
    if (snap->token[0] != '\0')
        return MODAL_OK;
    const modal__conn_settings *s = &snap->s;
    modal_status st = MODAL_OK;
    if (s->token_env[0] != '\0') {
        snprintf(snap->token, sizeof snap->token, "%s", s->token_env);
    } else {
        /* The embedded runtime creates its token when it starts, so it is
         * read only once the runtime answered. */
        char path[600];
        if (s->token_file[0] != '\0')
            snprintf(path, sizeof path, "%s", s->token_file);
        else if (s->embedded_dir[0] != '\0')
            snprintf(path, sizeof path, "%s/token", s->embedded_dir);
        else
            return modal__fail(err, MODAL_EAUTH, "no token for the runtime at %s: set %s or %s",
                               s->url, s->names->token, s->names->token_file);
        /* The same checks as the runtime's: a token others can read is no
         * secret. */
        st = modal__token_file_read(path, snap->token, sizeof snap->token, NULL, err);
    }
    if (st == MODAL_OK) {
        pthread_mutex_lock(&c->lock);
        if (c->generation == snap->generation)
            snprintf(c->token, sizeof c->token, "%s", snap->token);
        pthread_mutex_unlock(&c->lock);
    }
    return st;
}

modal_status modal__conn_snapshot(modal_connection *c, modal__conn_snap *snap, modal_error *err)
{
    modal_status st;
    if ((st = modal__conn_refresh(c, err)) != MODAL_OK)
        return st;
    pthread_mutex_lock(&c->lock);
    snap->s = c->set;
    snap->generation = c->generation;
    bool seen = c->embedded_seen;
    pthread_mutex_unlock(&c->lock);
    /* The embedded runtime is looked for (and started) on first use, and
     * again only after a request could not connect. */
    if (snap->s.embedded_dir[0] != '\0' && !seen) {
        if ((st = modal__embedded_ensure(snap->s.embedded_dir, snap->s.unix_path, err)) !=
            MODAL_OK)
            return st;
        pthread_mutex_lock(&c->lock);
        if (c->generation == snap->generation)
            c->embedded_seen = true;
        pthread_mutex_unlock(&c->lock);
    }
    return load_token(c, snap, err);
}

modal_status modal__conn_embedded_restart(modal_connection *c, modal__conn_snap *snap,
                                          modal_error *err)
{
    modal_status st = modal__embedded_ensure(snap->s.embedded_dir, snap->s.unix_path, err);
    if (st != MODAL_OK)
        return st;
    /* Threads that failed to connect at the same time restart it once:
     * only the first to get here forgets the old runtime's state. */
    pthread_mutex_lock(&c->lock);
    if (c->generation == snap->generation) {
        forget_runtime(c);
        c->embedded_seen = true;
    }
    snap->generation = c->generation;
    pthread_mutex_unlock(&c->lock);
    snap->token[0] = '\0';
    return load_token(c, snap, err);
}

const char *modal__conn_url(modal_connection *c)
{
    if (!c->is_default)
        return c->set.shown;
    modal_error err;
    char text[sizeof err.message + sizeof c->set.shown];
    modal_status st = default_refresh(c, &err);
    pthread_mutex_lock(&c->lock);
    if (st != MODAL_OK)
        snprintf(text, sizeof text, "(invalid: %s)", err.message);
    else
        snprintf(text, sizeof text, "%s", c->set.shown);
    /* Each text shown is kept for the program's life, so a pointer handed
     * out is never overwritten while another thread reads it. There are as
     * many as the distinct runtimes the environment named. */
    const char *out = "(out of memory)";
    modal__shown *s = c->shown;
    while (s != NULL && strcmp(s->text, text) != 0)
        s = s->next;
    if (s == NULL) {
        size_t n = strlen(text) + 1;
        if ((s = modal__malloc(sizeof *s + n)) != NULL) {
            memcpy(s->text, text, n);
            s->next = c->shown;
            c->shown = s;
        }
    }
    if (s != NULL)
        out = s->text;
    pthread_mutex_unlock(&c->lock);
    return out;
}

const char *modal_runtime_url(void)
{
    return modal__conn_url(&default_conn);
}

const char *modal_connection_url(const modal_connection *conn)
{
    return conn != NULL ? conn->set.shown : modal_runtime_url();
}

void *modal__conn_handle_take(modal_connection *c)
{
    void *h = NULL;
    pthread_mutex_lock(&c->lock);
    if (c->nhandles > 0)
        h = c->handles[--c->nhandles];
    pthread_mutex_unlock(&c->lock);
    return h;
}

bool modal__conn_handle_give(modal_connection *c, void *h)
{
    bool kept = false;
    pthread_mutex_lock(&c->lock);
    if (c->nhandles < MODAL__CONN_POOL_MAX) {
        c->handles[c->nhandles++] = h;
        kept = true;
    }
    pthread_mutex_unlock(&c->lock);
    return kept;
}

unsigned long modal__conn_generation(modal_connection *c)
{
    pthread_mutex_lock(&c->lock);
    unsigned long g = c->generation;
    pthread_mutex_unlock(&c->lock);
    return g;
}

bool modal__conn_artifact_known(modal_connection *c)
{
    pthread_mutex_lock(&c->lock);
    bool known = c->art_uploaded;
    pthread_mutex_unlock(&c->lock);
    return known;
}

void modal__conn_artifact_mark(modal_connection *c, unsigned long gen)
{
    pthread_mutex_lock(&c->lock);
    if (c->generation == gen)
        c->art_uploaded = true;
    pthread_mutex_unlock(&c->lock);
}

void modal__conn_artifact_forget(modal_connection *c)
{
    pthread_mutex_lock(&c->lock);
    c->art_uploaded = false;
    pthread_mutex_unlock(&c->lock);
}

/* Index of hash in the spec set, or -1 (lock held). */
static long spec_find(const modal_connection *c, const char *hash)
{
    for (size_t i = 0; i < c->nspecs; i++)
        if (strcmp(c->specs[i], hash) == 0)
            return (long)i;
    return -1;
}

bool modal__conn_spec_known(modal_connection *c, const char *hash)
{
    if (hash == NULL)
        return false;
    pthread_mutex_lock(&c->lock);
    bool known = spec_find(c, hash) >= 0;
    pthread_mutex_unlock(&c->lock);
    return known;
}

modal_status modal__conn_spec_add(modal_connection *c, const char *hash, unsigned long gen,
                                  modal_error *err)
{
    if (hash == NULL || strlen(hash) != 64)
        return modal__fail(err, MODAL_EINVAL, "a spec hash is 64 hex digits, not \"%.80s\"",
                           hash != NULL ? hash : "(null)");
    modal_status st = MODAL_OK;
    pthread_mutex_lock(&c->lock);
    if (c->generation == gen && spec_find(c, hash) < 0) {
        size_t cap = c->spec_cap * sizeof *c->specs;
        void *p = modal__reserve(c->specs, &cap, (c->nspecs + 1) * sizeof *c->specs,
                                 8 * sizeof *c->specs);
        if (p == NULL) {
            st = modal__fail(err, MODAL_ENOMEM, "out of memory remembering spec %s", hash);
        } else {
            c->specs = p;
            c->spec_cap = cap / sizeof *c->specs;
            memcpy(c->specs[c->nspecs++], hash, 65);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return st;
}

void modal__conn_spec_forget(modal_connection *c, const char *hash)
{
    if (hash == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    long i = spec_find(c, hash);
    if (i >= 0)
        memcpy(c->specs[i], c->specs[--c->nspecs], 65);
    pthread_mutex_unlock(&c->lock);
}

/* ---- modal_connection_open ------------------------------------------ */

/* A token goes into an HTTP header: refuse what would break it. */
static const char *token_problem(const char *tok)
{
    for (const unsigned char *p = (const unsigned char *)tok; *p; p++)
        if (*p <= ' ' || *p >= 127)
            return "holds a space, control or non-ASCII character; a token is printable ASCII";
    return NULL;
}

static modal_status open_checked(const char *url, const modal_connection_options *o,
                                 modal_connection **out, modal_error *err)
{
    const char *tok = o->token != NULL ? o->token : "";
    const char *tokf = o->token_file != NULL ? o->token_file : "";
    if (o->token != NULL && o->token_file != NULL)
        return modal__fail(err, MODAL_EINVAL, "both opts->token and opts->token_file are set; "
                           "give one of them");
    if (o->token != NULL && (tok[0] == '\0' || token_problem(tok) != NULL))
        return modal__fail(err, MODAL_EINVAL, "opts->token %s",
                           tok[0] == '\0' ? "is empty; give the runtime's token or leave it NULL"
                                          : token_problem(tok));
    if (o->token_file != NULL && tokf[0] == '\0')
        return modal__fail(err, MODAL_EINVAL,
                           "opts->token_file is empty; give a file path or leave it NULL");
    if (o->transport_retries < MODAL_CONNECTION_NO_RETRY || o->transport_retries > 100)
        return modal__fail(err, MODAL_EINVAL, "opts->transport_retries is %d; give 0 (the "
                           "default, %d), MODAL_CONNECTION_NO_RETRY (-1) or 1 to 100",
                           o->transport_retries, MODAL__CONN_RETRIES);
    if (!(o->retry_delay >= 0 && o->retry_delay <= 60)) /* NaN fails too */
        return modal__fail(err, MODAL_EINVAL, "opts->retry_delay is %g; give seconds from 0 "
                           "(the default, %g) to 60", o->retry_delay, MODAL__CONN_RETRY_DELAY);
    modal_connection *c = modal__calloc(1, sizeof *c);
    if (c == NULL)
        return modal__fail(err, MODAL_ENOMEM, "out of memory opening a connection");
    modal_status st = settings_parse(&c->set, url, tok, tokf,
                                     o->tls_fingerprint != NULL ? o->tls_fingerprint : "",
                                     o->tls_ca != NULL ? o->tls_ca : "", &opt_names, err);
    if (st == MODAL_OK && c->set.embedded_dir[0] == '\0' && tok[0] == '\0' && tokf[0] == '\0')
        st = modal__fail(err, MODAL_EINVAL, "no token for the runtime at %s: set opts->token or "
                         "opts->token_file", url);
    /* A token file is read now, so a missing or unsafe one is reported by
     * the open rather than by the first call. */
    if (st == MODAL_OK && tokf[0] != '\0')
        st = modal__token_file_read(tokf, c->token, sizeof c->token, NULL, err);
    if (st != MODAL_OK) {
        free(c);
        return st;
    }
    if (tok[0] != '\0')
        snprintf(c->token, sizeof c->token, "%s", tok);
    c->set.retries = o->transport_retries == 0 ? MODAL__CONN_RETRIES
                   : o->transport_retries < 0  ? 0
                                               : o->transport_retries;
    c->set.retry_delay = o->retry_delay > 0 ? o->retry_delay : MODAL__CONN_RETRY_DELAY;
    c->configured = true;
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->art_lock, NULL);
    *out = c;
    return MODAL_OK;
}

modal_status modal_connection_open(const char *url, const modal_connection_options *opts,
                                   modal_connection **out, modal_error *err)
{
    static const modal_connection_options defaults = MODAL_CONNECTION_OPTIONS_INIT;
    if (out == NULL)
        return modal__null_arg(err, "modal_connection_open", "out",
                               "pass the address of a modal_connection * to receive it");
    *out = NULL;
    modal_connection_options o = defaults;
    if (opts != NULL) {
        /* A program built against an older modal.h passes a shorter
         * struct: the fields it does not know keep their defaults. */
        size_t min = offsetof(modal_connection_options, retry_delay) + sizeof(double);
        if (opts->size < min || opts->size > sizeof o)
            return modal__fail(err, MODAL_EINVAL, "modal_connection_open: opts->size is %zu, "
                               "not the size of a modal_connection_options (%zu in this "
                               "libmodal); start from MODAL_CONNECTION_OPTIONS_INIT",
                               opts->size, sizeof o);
        memcpy(&o, opts, opts->size);
    }
    modal_error local;
    modal_status st = open_checked(url != NULL ? url : "", &o, out, &local);
    if (st != MODAL_OK)
        return modal__fail(err, st, "modal_connection_open: %s", local.message);
    modal__ok(err);
    return MODAL_OK;
}

void modal_connection_close(modal_connection *conn)
{
    modal__conn_release(conn);
}
