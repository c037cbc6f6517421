/*
 * function.c: the registry MODAL_FUNCTION fills at program start, the app
 * name, and the first check of each function (its name, and its options
 * through the option table, lib/spec.c), remembered.
 */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/*
 * What the library knows about each function lives here, never in the
 * user's modal_function: its place in the registry, the result of its
 * first check, and a full-size copy of its options. Registration runs from
 * constructors before main, on one thread; the lock still guards every
 * access, since a program may register or check functions from threads
 * later.
 */
typedef struct fn_node {
    modal_function *fn;
    bool registered;                 /* listed by modal_function_at/find */
    bool checked;
    modal_error check_error;         /* the first check's result */
    modal_function_options options;  /* as this library's modal.h lays them out */
    struct fn_node *next;
} fn_node;

static fn_node *nodes_head, *nodes_tail;
static size_t reg_count;
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static char app_name[128];
static bool app_explicit;

/*
 * The node of fn, made when missing (NULL when out of memory). The copy of
 * the options takes as many bytes as the program's modal.h had: options
 * appended since then keep the defaults MODAL__OPTION_DEFAULTS gives. With
 * reg_lock held.
 */
static fn_node *node_of(modal_function *fn)
{
    for (fn_node *n = nodes_head; n != NULL; n = n->next)
        if (n->fn == fn)
            return n;
    fn_node *n = modal__calloc(1, sizeof *n);
    if (n == NULL)
        return NULL;
    n->fn = fn;
    static const modal_function_options defaults = {MODAL__OPTION_DEFAULTS};
    n->options = defaults;
    size_t size = fn->options_size < sizeof n->options ? fn->options_size : sizeof n->options;
    if (fn->options != NULL)
        memcpy(&n->options, fn->options, size);
    if (nodes_tail != NULL)
        nodes_tail->next = n;
    else
        nodes_head = n;
    nodes_tail = n;
    return n;
}

void modal__register(modal_function *fn)
{
    if (fn == NULL || fn->magic != MODAL__FUNCTION_MAGIC)
        return;
    pthread_mutex_lock(&reg_lock);
    fn_node *n = node_of(fn);
    /* Without memory the function stays unlisted; using it still works,
     * as its node is made again on first use. */
    if (n != NULL && !n->registered) {
        /* A node made earlier (the function was used before it was
         * registered) moves to the end, so the registry keeps the order of
         * registration. */
        if (n != nodes_tail) {
            fn_node **pp = &nodes_head;
            while (*pp != n)
                pp = &(*pp)->next;
            *pp = n->next;
            n->next = NULL;
            nodes_tail->next = n;
            nodes_tail = n;
        }
        n->registered = true;
        reg_count++;
    }
    pthread_mutex_unlock(&reg_lock);
}

size_t modal_function_count(void)
{
    pthread_mutex_lock(&reg_lock);
    size_t n = reg_count;
    pthread_mutex_unlock(&reg_lock);
    return n;
}

/* The registered nodes, in list order, are the registry in registration
 * order (modal__register moves a node to the end as it lists it). */
modal_function *modal_function_at(size_t i)
{
    modal_function *f = NULL;
    pthread_mutex_lock(&reg_lock);
    for (fn_node *n = nodes_head; n != NULL && f == NULL; n = n->next)
        if (n->registered && i-- == 0)
            f = n->fn;
    pthread_mutex_unlock(&reg_lock);
    return f;
}

modal_function *modal_function_find(const char *name)
{
    if (name == NULL)
        return NULL;
    modal_function *f = NULL;
    pthread_mutex_lock(&reg_lock);
    for (fn_node *n = nodes_head; n != NULL && f == NULL; n = n->next)
        if (n->registered && strcmp(n->fn->name, name) == 0)
            f = n->fn;
    pthread_mutex_unlock(&reg_lock);
    return f;
}

const modal_function_options *modal__fn_options(const modal_function *fn)
{
    if (fn == NULL || fn->magic != MODAL__FUNCTION_MAGIC)
        return NULL;
    pthread_mutex_lock(&reg_lock);
    fn_node *n = node_of((modal_function *)fn);
    pthread_mutex_unlock(&reg_lock);
    return n != NULL ? &n->options : NULL;
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

#define BAD(...) modal__fail(err, MODAL_EOPTION, __VA_ARGS__)

/* Checked with reg_lock held (the registry is read for duplicates). */
static modal_status check_options(fn_node *node, modal_error *err)
{
    modal_function *fn = node->fn;
    const char *name = fn->name;
    for (fn_node *n = nodes_head; n != NULL; n = n->next)
        if (n->registered && n->fn != fn && strcmp(n->fn->name, name) == 0)
            return BAD("function name \"%s\" is defined twice (%s:%d and %s:%d); rename one",
                       name, n->fn->file, n->fn->line, fn->file, fn->line);

    const char *bad_name;
    if ((bad_name = modal__fn_name_problem(name)) != NULL)
        return BAD("function name \"%.64s\" %s", name, bad_name);
    if (app_explicit && (bad_name = modal__app_name_problem(app_given)) != NULL)
        return BAD("MODAL_APP(\"%.64s\"): the app name %s", app_given, bad_name);

    /* Every option's check is the table's (lib/spec.c). */
    modal__spec spec;
    modal__spec_init(&spec);
    modal_status st = modal__spec_resolve(name, &node->options, &spec, err);
    modal__spec_clear(&spec);
    return st;
}

modal_status modal_function_check(modal_function *fn, modal_error *err)
{
    if (fn == NULL)
        return modal__null_arg(err, "modal_function_check", "fn", MODAL__FN_HINT);
    if (fn->magic != MODAL__FUNCTION_MAGIC)
        return modal__fail(err, MODAL_EINVAL,
                           "the function pointer does not point at a MODAL_FUNCTION definition");
    pthread_mutex_lock(&reg_lock);
    fn_node *node = node_of(fn);
    if (node == NULL) {
        pthread_mutex_unlock(&reg_lock);
        return modal__fail(err, MODAL_ENOMEM, "out of memory checking function %s", fn->name);
    }
    if (!node->checked) {
        modal__ok(&node->check_error);
        check_options(node, &node->check_error);
        /* A check that ran out of memory is not the function's fault:
         * the next use checks again. */
        node->checked = node->check_error.code != MODAL_ENOMEM;
    }
    modal_error copy = node->check_error;
    pthread_mutex_unlock(&reg_lock);
    if (copy.code != MODAL_OK) {
        if (err != NULL)
            *err = copy;
        return copy.code;
    }
    modal__ok(err);
    return MODAL_OK;
}
