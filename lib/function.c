/*
 * function.c: the registry MODAL_FUNCTION fills at program start, the app
 * name, and validation of function options.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/*
 * Registration runs from constructors before main, on one thread, so the
 * list needs no lock to grow; lookups after main only read it. The lock
 * guards the cached validation result, which may be computed by any thread.
 */
static modal_function *reg_head, *reg_tail;
static size_t reg_count;
static pthread_mutex_t check_lock = PTHREAD_MUTEX_INITIALIZER;
static char app_name[128];
static bool app_explicit;

void modal__register(modal_function *fn)
{
    if (fn == NULL || fn->magic != MODAL__FUNCTION_MAGIC)
        return;
    for (modal_function *f = reg_head; f != NULL; f = f->next)
        if (f == fn)
            return;
    fn->next = NULL;
    if (reg_tail != NULL)
        reg_tail->next = fn;
    else
        reg_head = fn;
    reg_tail = fn;
    reg_count++;
}

size_t modal_function_count(void)
{
    return reg_count;
}

modal_function *modal_function_at(size_t i)
{
    modal_function *f = reg_head;
    while (f != NULL && i-- > 0)
        f = f->next;
    return f;
}

modal_function *modal_function_find(const char *name)
{
    if (name == NULL)
        return NULL;
    for (modal_function *f = reg_head; f != NULL; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

const char *modal_function_name(const modal_function *fn)
{
    return fn != NULL ? fn->name : "(null)";
}

static char app_given[256]; /* as MODAL_APP wrote it, for error messages */
static int name_char(unsigned char c);

void modal__set_app(const char *name)
{
    if (name != NULL) {
        snprintf(app_given, sizeof app_given, "%s", name);
        snprintf(app_name, sizeof app_name, "%s", name);
        app_explicit = true;
    }
}

/*
 * The name taken from the executable, computed once: threads asking at the
 * same time must never see it half written. MODAL_APP's name is set before
 * main, on one thread, and needs no such care.
 */
static char app_derived[128];
static pthread_once_t app_derived_once = PTHREAD_ONCE_INIT;

static void app_derive(void)
{
    /* Named after the executable, with characters an app name cannot
     * hold replaced, so any program name works. */
    snprintf(app_derived, sizeof app_derived, "%s", program_invocation_short_name);
    for (char *p = app_derived; *p; p++)
        if (!name_char((unsigned char)*p))
            *p = '-';
    if (modal__app_name_problem(app_derived) != NULL) /* "", "." or ".." */
        snprintf(app_derived, sizeof app_derived, "app");
}

const char *modal_app_name(void)
{
    if (app_name[0] != '\0')
        return app_name;
    pthread_once(&app_derived_once, app_derive);
    return app_derived;
}

static int name_char(unsigned char c)
{
    return modal__app_name_char(c);
}

/* Names of volumes, secrets and images share one conservative alphabet. */
static int valid_name(const char *s, size_t max, const char *extra)
{
    size_t n = 0;
    if (s == NULL || *s == '\0')
        return 0;
    for (; s[n] != '\0'; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
              (extra != NULL && strchr(extra, c) != NULL)))
            return 0;
    }
    return n <= max;
}

/*
 * A mount path must be absolute and normalised: no "." or ".." component,
 * no empty component, not "/" itself, so it cannot escape or shadow the
 * worker's root.
 */
static const char *mount_path_problem(const char *path)
{
    if (path == NULL || path[0] != '/')
        return "must be an absolute path such as \"/data\"";
    if (path[1] == '\0')
        return "cannot be \"/\" itself";
    if (strlen(path) > 255)
        return "is longer than 255 characters";
    for (const char *p = path; *p != '\0';) {
        const char *comp = p + 1, *end = strchr(comp, '/');
        size_t len = end ? (size_t)(end - comp) : strlen(comp);
        if (len == 0)
            return "has an empty component (\"//\" or a trailing \"/\")";
        if ((len == 1 && comp[0] == '.') || (len == 2 && comp[0] == '.' && comp[1] == '.'))
            return "has a \".\" or \"..\" component";
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)comp[i] < 0x20 || comp[i] == 0x7f)
                return "contains a control character";
        p = comp + len;
    }
    return NULL;
}

#define BAD(...) modal__fail(err, MODAL_EOPTION, __VA_ARGS__)

static int is_set(int v)
{
    return v != MODAL_OPTION_UNSET;
}

static modal_status check_int(const char *fn, const char *opt, int v, int lo,
                              int hi, const char *unit, modal_error *err)
{
    if (is_set(v) && (v < lo || v > hi))
        return BAD("function %s: option .%s = %d is out of range; use %d to %d%s",
                   fn, opt, v, lo, hi, unit);
    return MODAL_OK;
}

static modal_status check_retry_policy(const char *fn, const modal_retries *r,
                                       modal_error *err)
{
    if (r->max_retries < 0 || r->max_retries > 10)
        return BAD("function %s: .retry_policy max_retries = %d is out of range; use 0 to 10",
                   fn, r->max_retries);
    if (r->backoff_coefficient != 0 &&
        !(r->backoff_coefficient >= 1.0 && r->backoff_coefficient <= 10.0))
        return BAD("function %s: .retry_policy backoff_coefficient = %g is out of range; use 1.0 to 10.0",
                   fn, r->backoff_coefficient);
    if (r->initial_delay != 0 && !(r->initial_delay >= 0.001 && r->initial_delay <= 60.0))
        return BAD("function %s: .retry_policy initial_delay = %g s is out of range; use 0.001 to 60",
                   fn, r->initial_delay);
    if (r->max_delay != 0 && !(r->max_delay >= 0.001 && r->max_delay <= 60.0))
        return BAD("function %s: .retry_policy max_delay = %g s is out of range; use 0.001 to 60",
                   fn, r->max_delay);
    return MODAL_OK;
}

static modal_status check_options(modal_function *fn, modal_error *err)
{
    const modal_function_options *o = &fn->options;
    const char *name = fn->name;
    modal_status st;

    for (modal_function *f = reg_head; f != NULL; f = f->next)
        if (f != fn && strcmp(f->name, name) == 0)
            return BAD("function name \"%s\" is defined twice (%s:%d and %s:%d); rename one",
                       name, f->file, f->line, fn->file, fn->line);

    const char *bad_name;
    if ((bad_name = modal__fn_name_problem(name)) != NULL)
        return BAD("function name \"%.64s\" %s", name, bad_name);
    if (app_explicit && (bad_name = modal__app_name_problem(app_given)) != NULL)
        return BAD("MODAL_APP(\"%.64s\"): the app name %s", app_given, bad_name);

    modal__gpu_choice choices[MODAL__GPU_MAX_CHOICES];
    size_t nchoices;
    modal_error gerr;
    if (modal__gpu_spec_parse(o->gpu, choices, &nchoices, &gerr) != MODAL_OK)
        return BAD("function %s: option .%s", name, gerr.message);

    if ((st = check_int(name, "timeout", o->timeout, 1, 86400, " seconds", err)) ||
        (st = check_int(name, "retries", o->retries, 0, 10, "", err)) ||
        (st = check_int(name, "min_containers", o->min_containers, 0, 100, "", err)) ||
        (st = check_int(name, "max_containers", o->max_containers, 1, 1000, "", err)) ||
        (st = check_int(name, "scaledown_window", o->scaledown_window, 1, 86400, " seconds", err)) ||
        (st = check_int(name, "max_inputs", o->max_inputs, 1, 2147483647, "", err)) ||
        (st = check_int(name, "memory", o->memory, 0, 4194304, " MiB", err)))
        return st;
    int max_eff = is_set(o->max_containers) ? o->max_containers : 10;
    if (is_set(o->min_containers) && o->min_containers > max_eff)
        return BAD("function %s: .min_containers = %d exceeds .max_containers = %d%s",
                   name, o->min_containers, max_eff,
                   is_set(o->max_containers) ? "" : " (the default); raise .max_containers");
    if (o->cpu != 0 && !(o->cpu >= 0.125 && o->cpu <= 256))
        return BAD("function %s: option .cpu = %g is out of range; use 0.125 to 256 cores",
                   name, o->cpu);
    if (o->retry_policy != NULL) {
        if (is_set(o->retries))
            return BAD("function %s: set either .retries or .retry_policy, not both",
                       name);
        if ((st = check_retry_policy(name, o->retry_policy, err)))
            return st;
    }
    if (o->snapshot_enter != NULL && !o->memory_snapshot)
        return BAD("function %s: .snapshot_enter is set but .memory_snapshot is not; set "
                   ".memory_snapshot = true, or make the hook .enter", name);
    if (o->image != NULL && !valid_name(o->image, 128, ":/@+"))
        return BAD("function %s: option .image = \"%.64s\" is not a valid image name "
                   "(letters, digits and -_.:/@+, at most 128)", name, o->image);
    for (size_t i = 0; o->volumes != NULL && o->volumes[i].path != NULL; i++) {
        const modal_mount *m = &o->volumes[i];
        const char *why = mount_path_problem(m->path);
        if (why != NULL)
            return BAD("function %s: volume mount path \"%.200s\" %s", name, m->path, why);
        if (m->volume == NULL || !valid_name(m->volume->name, 64, NULL))
            return BAD("function %s: the volume mounted at \"%s\" has an invalid name "
                       "\"%.64s\" (letters, digits and -_., at most 64)",
                       name, m->path, m->volume && m->volume->name ? m->volume->name : "(null)");
        for (size_t j = 0; j < i; j++)
            if (strcmp(o->volumes[j].path, m->path) == 0)
                return BAD("function %s: two volumes are mounted at \"%s\"", name, m->path);
    }
    for (size_t i = 0; o->secrets != NULL && o->secrets[i] != NULL; i++)
        if (!valid_name(o->secrets[i], 64, NULL))
            return BAD("function %s: secret name \"%.64s\" is invalid "
                       "(letters, digits and -_., at most 64)", name, o->secrets[i]);
    return MODAL_OK;
}

modal_status modal_function_check(modal_function *fn, modal_error *err)
{
    if (fn == NULL)
        return modal__null_arg(err, "modal_function_check", "fn", MODAL__FN_HINT);
    if (fn->magic != MODAL__FUNCTION_MAGIC)
        return modal__fail(err, MODAL_EINVAL,
                           "the function pointer does not point at a MODAL_FUNCTION definition");
    pthread_mutex_lock(&check_lock);
    if (!fn->checked) {
        modal__ok(&fn->check_error);
        check_options(fn, &fn->check_error);
        fn->checked = 1;
    }
    modal_error copy = fn->check_error;
    pthread_mutex_unlock(&check_lock);
    if (copy.code != MODAL_OK) {
        if (err != NULL)
            *err = copy;
        return copy.code;
    }
    modal__ok(err);
    return MODAL_OK;
}
