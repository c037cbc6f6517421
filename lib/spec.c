/*
 * spec.c: function specs. MODAL__OPTION_MAP (modal.h) lists every option
 * once; this file turns it into the library's checks of MODAL_FUNCTION
 * options, the runtime's parsing of a spec sent over the wire (the same
 * checks, the same messages), the canonical JSON of a spec and its hash,
 * the spec's identity. It also registers a function's spec with the
 * runtime, once, so calls carry only the spec id.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD(...) modal__fail(err, MODAL_EOPTION, __VA_ARGS__)

/* ---- defaults ----------------------------------------------------------- */

#define INIT_INT(n, d) s->n = (int)(d);
#define INIT_RETRIES(n, d)
#define INIT_REAL(n, d) s->n = (d);
#define INIT_BOOL(n, d) s->n = false;
#define INIT_HOOK(n, d) s->n = false;
#define INIT_GPU(n, d) s->n[0] = '\0';
#define INIT_IMAGE(n, d) s->n = NULL;
#define INIT_MOUNTS(n, d) s->n = NULL;
#define INIT_SECRETS(n, d) s->n = NULL;
#define INIT_RROW(n, kind, d, ...) INIT_##kind(retry_policy.n, d)
#define INIT_POLICY(n, d) MODAL__RETRY_MAP(INIT_RROW)
#define INIT_ROW(n, kind, d, ...) INIT_##kind(n, d)

void modal__spec_init(modal__spec *s)
{
    memset(s, 0, sizeof *s);
    MODAL__OPTION_MAP(INIT_ROW)
}

void modal__spec_clear(modal__spec *s)
{
    free(s->image);
    cJSON_Delete(s->volumes);
    cJSON_Delete(s->secrets);
    modal__spec_init(s);
}

/* ---- the checks shared by both sides ------------------------------------------ */

/*
 * One message per kind of bad value, whichever side found it: path is the
 * option as a program writes it ("timeout", "retry_policy.max_delay").
 */
static modal_status bad_int(modal_error *err, const char *fn, const char *path, long long v,
                            double lo, double hi, const char *unit)
{
    return BAD("function %s: option .%s = %lld is out of range; use %.0f to %.0f%s%s", fn, path,
               v, lo, hi, unit[0] ? " " : "", unit);
}

static modal_status bad_real(modal_error *err, const char *fn, const char *path, double v,
                             double lo, double hi, const char *unit)
{
    return BAD("function %s: option .%s = %g is out of range; use %g to %g%s%s", fn, path, v, lo,
               hi, unit[0] ? " " : "", unit);
}

/* Names of volumes, secrets and images share one conservative alphabet. */
static int valid_name(const char *s, size_t max, const char *extra)
{
    size_t n = 0;
    if (s == NULL || *s == '\0')
        return 0;
    for (; s[n] != '\0'; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || (extra != NULL && strchr(extra, c) != NULL)))
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

/* A GPU request in its canonical spelling: the known name's own case,
 * ":N" only above 1, "!" last, ", " between choices. Two spellings of one
 * request ("h100,a100-80gb" and "H100, A100-80GB") are one spec. */
static modal_status take_gpu(const char *fn, const char *v, char out[MODAL__GPU_SPEC_MAX],
                             modal_error *err)
{
    modal__gpu_choice ch[MODAL__GPU_MAX_CHOICES];
    size_t n = 0;
    modal_error gerr;
    if (modal__gpu_spec_parse(v, ch, &n, &gerr) != MODAL_OK)
        return BAD("function %s: option .%s", fn, gerr.message);
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char count[16] = "";
        if (ch[i].count > 1)
            snprintf(count, sizeof count, ":%d", ch[i].count);
        len += (size_t)snprintf(out + len, MODAL__GPU_SPEC_MAX - len, "%s%s%s%s",
                                i ? ", " : "", ch[i].name, count, ch[i].exact ? "!" : "");
    }
    return MODAL_OK;
}

static modal_status take_image(const char *fn, const char *v, char **out, modal_error *err)
{
    if (!valid_name(v, 128, ":/@+"))
        return BAD("function %s: option .image = \"%.64s\" is not a valid image name "
                   "(letters, digits and -_.:/@+, at most 128)", fn, v);
    if ((*out = modal__strdup(v)) == NULL)
        return modal__fail(err, MODAL_ENOMEM, "out of memory reading the options of %s", fn);
    return MODAL_OK;
}

/* Add one mount to the spec's table after checking it. */
static modal_status take_mount(const char *fn, const char *path, const char *vname,
                               bool create, cJSON **table, modal_error *err)
{
    const char *why = mount_path_problem(path);
    if (why != NULL)
        return BAD("function %s: volume mount path \"%.200s\" %s", fn, path, why);
    if (!valid_name(vname, 64, NULL))
        return BAD("function %s: the volume mounted at \"%s\" has an invalid name "
                   "\"%.64s\" (letters, digits and -_., at most 64)", fn, path,
                   vname ? vname : "(null)");
    if (*table == NULL && (*table = cJSON_CreateObject()) == NULL)
        return modal__fail(err, MODAL_ENOMEM, "out of memory reading the options of %s", fn);
    if (cJSON_GetObjectItemCaseSensitive(*table, path) != NULL)
        return BAD("function %s: two volumes are mounted at \"%s\"", fn, path);
    cJSON *v = cJSON_AddObjectToObject(*table, path);
    if (v == NULL || !cJSON_AddStringToObject(v, "name", vname) ||
        !cJSON_AddBoolToObject(v, "create_if_missing", create))
        return modal__fail(err, MODAL_ENOMEM, "out of memory reading the options of %s", fn);
    return MODAL_OK;
}

static modal_status take_secret(const char *fn, const char *name, cJSON **list, modal_error *err)
{
    if (!valid_name(name, 64, NULL))
        return BAD("function %s: secret name \"%.64s\" is invalid "
                   "(letters, digits and -_., at most 64)", fn, name ? name : "(null)");
    if (*list == NULL && (*list = cJSON_CreateArray()) == NULL)
        return modal__fail(err, MODAL_ENOMEM, "out of memory reading the options of %s", fn);
    cJSON *s = cJSON_CreateString(name);
    if (s == NULL || !cJSON_AddItemToArray(*list, s)) {
        cJSON_Delete(s);
        return modal__fail(err, MODAL_ENOMEM, "out of memory reading the options of %s", fn);
    }
    return MODAL_OK;
}

/* Rules between options, on resolved values. */
static modal_status check_together(const modal__spec *s, const char *fn, modal_error *err)
{
    if (s->min_containers > s->max_containers)
        return BAD("function %s: .min_containers = %d exceeds .max_containers = %d; raise "
                   ".max_containers (default 10) or lower .min_containers",
                   fn, s->min_containers, s->max_containers);
    if (s->snapshot_enter && !s->memory_snapshot)
        return BAD("function %s: .snapshot_enter is set but .memory_snapshot is not; set "
                   ".memory_snapshot = true, or make the hook .enter", fn);
    return MODAL_OK;
}

/* ---- the library: C options into a spec ------------------------------------------ */

/* An INT option, unset unless is_set. */
static modal_status lib_int(const char *fn, const char *path, int v, bool is_set, double lo,
                            double hi, const char *unit, int *dst, modal_error *err)
{
    if (!is_set)
        return MODAL_OK;
    if (v < lo || v > hi)
        return bad_int(err, fn, path, v, lo, hi, unit);
    *dst = v;
    return MODAL_OK;
}

/* A REAL option: 0 means the default. */
static modal_status lib_real(const char *fn, const char *path, double v, double lo, double hi,
                             const char *unit, double *dst, modal_error *err)
{
    if (v == 0)
        return MODAL_OK;
    if (!(v >= lo && v <= hi))
        return bad_real(err, fn, path, v, lo, hi, unit);
    *dst = v;
    return MODAL_OK;
}

#define LIB_INT(n, pth, lo, hi, unit)                                                       \
    st = lib_int(fn, pth, o->n, o->n != MODAL_OPTION_UNSET, lo, hi, unit, &s->n, err);
#define LIB_RETRIES(n, pth, lo, hi, unit)                                                   \
    st = lib_int(fn, pth, o->n, o->n != MODAL_OPTION_UNSET, lo, hi, unit,                   \
                 &s->retry_policy.max_retries, err);
#define LIB_REAL(n, pth, lo, hi, unit) st = lib_real(fn, pth, o->n, lo, hi, unit, &s->n, err);
#define LIB_BOOL(n, pth, lo, hi, unit) s->n = o->n;
#define LIB_HOOK(n, pth, lo, hi, unit) s->n = o->n != NULL;
#define LIB_GPU(n, pth, lo, hi, unit) st = take_gpu(fn, o->n, s->n, err);
#define LIB_IMAGE(n, pth, lo, hi, unit)                                                     \
    if (o->n != NULL)                                                                        \
        st = take_image(fn, o->n, &s->n, err);
#define LIB_MOUNTS(n, pth, lo, hi, unit)                                                    \
    for (size_t i = 0; st == MODAL_OK && o->n != NULL && o->n[i].path != NULL; i++)          \
        st = take_mount(fn, o->n[i].path, o->n[i].volume ? o->n[i].volume->name : NULL,      \
                        o->n[i].volume ? o->n[i].volume->create_if_missing : false, &s->n,   \
                        err);
#define LIB_SECRETS(n, pth, lo, hi, unit)                                                   \
    for (size_t i = 0; st == MODAL_OK && o->n != NULL && o->n[i] != NULL; i++)               \
        st = take_secret(fn, o->n[i], &s->n, err);
/* A retry_policy field: the policy struct has no unset marker, 0 is 0 for
 * max_retries and the default for the REAL fields. */
#define LIBP_INT(n, pth, lo, hi, unit)                                                      \
    st = lib_int(fn, pth, o->retry_policy->n, true, lo, hi, unit, &s->retry_policy.n, err);
#define LIBP_REAL(n, pth, lo, hi, unit)                                                     \
    st = lib_real(fn, pth, o->retry_policy->n, lo, hi, unit, &s->retry_policy.n, err);
#define LIBP_ROW(n, kind, d, lo, hi, unit, doc)                                              \
    if (st == MODAL_OK) {                                                                    \
        LIBP_##kind(n, "retry_policy." #n, lo, hi, unit)                                     \
    }
#define LIB_POLICY(n, pth, lo, hi, unit)                                                    \
    if (o->n != NULL) {                                                                      \
        if (o->retries != MODAL_OPTION_UNSET)                                                \
            return BAD("function %s: set either .retries or .retry_policy, not both", fn);   \
        MODAL__RETRY_MAP(LIBP_ROW)                                                           \
    }
#define LIB_ROW(n, kind, d, lo, hi, unit, doc)                                               \
    if (st == MODAL_OK) {                                                                    \
        LIB_##kind(n, #n, lo, hi, unit)                                                      \
    }

modal_status modal__spec_resolve(const char *fn, const modal_function_options *o,
                                 modal__spec *s, modal_error *err)
{
    modal_status st = MODAL_OK;
    MODAL__OPTION_MAP(LIB_ROW)
    if (st != MODAL_OK)
        return st;
    return check_together(s, fn, err);
}

/* ---- the runtime: a spec from JSON ------------------------------------------------ */

/* A JSON number for an INT option: integral, the default or in range. */
static modal_status json_int(const char *fn, const char *path, const cJSON *j, double d,
                             double lo, double hi, const char *unit, int *dst, modal_error *err)
{
    if (j == NULL)
        return MODAL_OK;
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble) ||
        fabs(j->valuedouble) > 1e15)
        return modal__fail(err, MODAL_ECODEC, "function %s: option .%s must be an integer",
                           fn, path);
    double v = j->valuedouble;
    if (v != d && (v < lo || v > hi))
        return bad_int(err, fn, path, (long long)v, lo, hi, unit);
    *dst = (int)v;
    return MODAL_OK;
}

static modal_status json_real(const char *fn, const char *path, const cJSON *j, double d,
                              double lo, double hi, const char *unit, double *dst,
                              modal_error *err)
{
    if (j == NULL)
        return MODAL_OK;
    if (!cJSON_IsNumber(j))
        return modal__fail(err, MODAL_ECODEC, "function %s: option .%s must be a number", fn,
                           path);
    double v = j->valuedouble;
    if (v != d && !(v >= lo && v <= hi))
        return bad_real(err, fn, path, v, lo, hi, unit);
    *dst = v;
    return MODAL_OK;
}

static modal_status json_bool(const char *fn, const char *path, const cJSON *j, bool *dst,
                              modal_error *err)
{
    if (j == NULL)
        return MODAL_OK;
    if (!cJSON_IsBool(j))
        return modal__fail(err, MODAL_ECODEC, "function %s: option .%s must be true or false",
                           fn, path);
    *dst = cJSON_IsTrue(j);
    return MODAL_OK;
}

static modal_status json_string(const char *fn, const char *path, const cJSON *j,
                                modal_error *err)
{
    if (!cJSON_IsString(j))
        return modal__fail(err, MODAL_ECODEC, "function %s: option .%s must be a string", fn,
                           path);
    return MODAL_OK;
}

static modal_status json_mounts(const char *fn, const cJSON *j, cJSON **dst, modal_error *err)
{
    if (j == NULL)
        return MODAL_OK;
    if (!cJSON_IsObject(j))
        return modal__fail(err, MODAL_ECODEC, "function %s: option .volumes must be an object "
                           "of mount path to {\"name\", \"create_if_missing\"}", fn);
    for (const cJSON *m = j->child; m != NULL; m = m->next) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
        const cJSON *create = cJSON_GetObjectItemCaseSensitive(m, "create_if_missing");
        modal_status st = take_mount(fn, m->string, cJSON_IsString(name) ? name->valuestring
                                                                         : NULL,
                                     cJSON_IsTrue(create), dst, err);
        if (st != MODAL_OK)
            return st;
    }
    return MODAL_OK;
}

static modal_status json_secrets(const char *fn, const cJSON *j, cJSON **dst, modal_error *err)
{
    if (j == NULL)
        return MODAL_OK;
    if (!cJSON_IsArray(j))
        return modal__fail(err, MODAL_ECODEC, "function %s: option .secrets must be a list of "
                           "names", fn);
    for (const cJSON *x = j->child; x != NULL; x = x->next) {
        modal_status st = take_secret(fn, cJSON_IsString(x) ? x->valuestring : NULL, dst, err);
        if (st != MODAL_OK)
            return st;
    }
    return MODAL_OK;
}

#define KEY(obj, n) cJSON_GetObjectItemCaseSensitive(obj, n)
#define JS_INT(n, d, lo, hi, unit) st = json_int(fn, #n, KEY(opt, #n), d, lo, hi, unit, &s->n, err);
#define JS_RETRIES(n, d, lo, hi, unit)                                                       \
    st = json_int(fn, #n, KEY(opt, #n), d, lo, hi, unit, &s->retry_policy.max_retries, err);
#define JS_REAL(n, d, lo, hi, unit)                                                          \
    st = json_real(fn, #n, KEY(opt, #n), d, lo, hi, unit, &s->n, err);
#define JS_BOOL(n, d, lo, hi, unit) st = json_bool(fn, #n, KEY(opt, #n), &s->n, err);
#define JS_HOOK(n, d, lo, hi, unit) st = json_bool(fn, #n, KEY(opt, #n), &s->n, err);
#define JS_GPU(n, d, lo, hi, unit)                                                           \
    if (KEY(opt, #n) != NULL && (st = json_string(fn, #n, KEY(opt, #n), err)) == MODAL_OK)   \
        st = take_gpu(fn, KEY(opt, #n)->valuestring, s->n, err);
#define JS_IMAGE(n, d, lo, hi, unit)                                                         \
    if (KEY(opt, #n) != NULL && !cJSON_IsNull(KEY(opt, #n)) &&                               \
        (st = json_string(fn, #n, KEY(opt, #n), err)) == MODAL_OK)                           \
        st = take_image(fn, KEY(opt, #n)->valuestring, &s->n, err);
#define JS_MOUNTS(n, d, lo, hi, unit) st = json_mounts(fn, KEY(opt, #n), &s->n, err);
#define JS_SECRETS(n, d, lo, hi, unit) st = json_secrets(fn, KEY(opt, #n), &s->n, err);
#define JSP_INT(n, d, lo, hi, unit)                                                          \
    st = json_int(fn, "retry_policy." #n, KEY(pol, #n), d, lo, hi, unit, &s->retry_policy.n, \
                  err);
#define JSP_REAL(n, d, lo, hi, unit)                                                         \
    st = json_real(fn, "retry_policy." #n, KEY(pol, #n), d, lo, hi, unit,                    \
                   &s->retry_policy.n, err);
#define JSP_ROW(n, kind, d, lo, hi, unit, doc)                                               \
    if (st == MODAL_OK) {                                                                    \
        JSP_##kind(n, d, lo, hi, unit)                                                       \
    }
#define JS_POLICY(n, d, lo, hi, unit)                                                        \
    {                                                                                        \
        const cJSON *pol = KEY(opt, #n);                                                     \
        if (pol != NULL && !cJSON_IsObject(pol))                                             \
            return modal__fail(err, MODAL_ECODEC,                                            \
                               "function %s: option .retry_policy must be an object", fn);   \
        if (pol != NULL && KEY(opt, "retries") != NULL)                                      \
            return BAD("function %s: set either .retries or .retry_policy, not both", fn);   \
        MODAL__RETRY_MAP(JSP_ROW)                                                            \
    }
#define JS_ROW(n, kind, d, lo, hi, unit, doc)                                                \
    if (st == MODAL_OK) {                                                                    \
        JS_##kind(n, d, lo, hi, unit)                                                        \
    }
#define JS_NAME(n, kind, ...) #n,
#define JSP_NAME(n, kind, ...) #n,

static const char *const option_names[] = {MODAL__OPTION_MAP(JS_NAME) NULL};
static const char *const policy_names[] = {MODAL__RETRY_MAP(JSP_NAME) NULL};

/* A key the table does not list is refused, so that a spec written for a
 * newer runtime, or misspelt by hand, is not half understood. */
static const char *unknown_key(const cJSON *obj, const char *const *names)
{
    for (const cJSON *j = obj != NULL ? obj->child : NULL; j != NULL; j = j->next) {
        size_t i = 0;
        while (names[i] != NULL && strcmp(names[i], j->string) != 0)
            i++;
        if (names[i] == NULL)
            return j->string;
    }
    return NULL;
}

static modal_status parse_options(const cJSON *opt, const char *fn, modal__spec *s,
                                  modal_error *err)
{
    modal_status st = MODAL_OK;
    const char *bad;
    if ((bad = unknown_key(opt, option_names)) != NULL)
        return BAD("function %s: unknown option .%.64s; this runtime knows the options of "
                   "MODAL__OPTION_MAP (docs/api.md)", fn, bad);
    const cJSON *p = KEY(opt, "retry_policy");
    if (cJSON_IsObject(p) && (bad = unknown_key(p, policy_names)) != NULL)
        return BAD("function %s: unknown option .retry_policy.%.64s", fn, bad);
    MODAL__OPTION_MAP(JS_ROW)
    if (st != MODAL_OK)
        return st;
    return check_together(s, fn, err);
}

modal_status modal__spec_parse(const cJSON *env, const char *what, modal__spec *s,
                               modal_error *err)
{
    modal__spec_init(s);
    const cJSON *v = KEY(env, "v");
    const cJSON *fn = KEY(env, "fn");
    const cJSON *app = KEY(env, "app");
    const cJSON *art = KEY(env, "artifact");
    const cJSON *opt = KEY(env, "options");
    if (!cJSON_IsNumber(v) || v->valuedouble != 1)
        return modal__fail(err, MODAL_ECODEC, "%s: \"v\" must be 1", what);
    /* The rules are the library's (lib/function.c); a NUL escaped inside
     * a name never reaches here: the decoder refuses it in any string. */
    const char *bad_name;
    if (!cJSON_IsString(fn))
        return modal__fail(err, MODAL_ECODEC, "%s: \"fn\" must be a string naming the "
                           "function", what);
    if ((bad_name = modal__fn_name_problem(fn->valuestring)) != NULL)
        return modal__fail(err, MODAL_ECODEC, "%s: \"fn\" = \"%.64s\" %s", what,
                           fn->valuestring, bad_name);
    if (!cJSON_IsString(app))
        return modal__fail(err, MODAL_ECODEC, "%s: \"app\" must be a string naming the app",
                           what);
    if ((bad_name = modal__app_name_problem(app->valuestring)) != NULL)
        return modal__fail(err, MODAL_ECODEC, "%s: \"app\" = \"%.64s\" %s", what,
                           app->valuestring, bad_name);
    size_t n = 0;
    if (cJSON_IsString(art))
        while (n < 65 && ((art->valuestring[n] >= '0' && art->valuestring[n] <= '9') ||
                          (art->valuestring[n] >= 'a' && art->valuestring[n] <= 'f')))
            n++;
    if (!cJSON_IsString(art) || n != 64 || art->valuestring[64] != '\0')
        return modal__fail(err, MODAL_ECODEC, "%s: \"artifact\" must be 64 hex digits", what);
    if (opt != NULL && !cJSON_IsObject(opt))
        return modal__fail(err, MODAL_ECODEC, "%s: \"options\" must be an object", what);
    snprintf(s->artifact, sizeof s->artifact, "%s", art->valuestring);
    snprintf(s->app, sizeof s->app, "%s", app->valuestring);
    snprintf(s->fn, sizeof s->fn, "%s", fn->valuestring);
    modal_status st = parse_options(opt, s->fn, s, err);
    if (st != MODAL_OK)
        modal__spec_clear(s);
    return st;
}

/* ---- canonical form and identity ------------------------------------------------- */

/* Numbers go through cJSON's own printing (not modal__json_num's raw
 * text), so the object can be read back as it is and its text, whoever
 * prints it, is the same for the same spec. */

#define OUT_INT(n) ok = ok && cJSON_AddNumberToObject(o, #n, s->n) != NULL;
#define OUT_RETRIES(n)
#define OUT_REAL(n) ok = ok && cJSON_AddNumberToObject(o, #n, s->n) != NULL;
#define OUT_BOOL(n) ok = ok && cJSON_AddBoolToObject(o, #n, s->n) != NULL;
#define OUT_HOOK(n) OUT_BOOL(n)
#define OUT_GPU(n) ok = ok && cJSON_AddStringToObject(o, #n, s->n) != NULL;
#define OUT_IMAGE(n)                                                                         \
    ok = ok && (s->n != NULL ? cJSON_AddStringToObject(o, #n, s->n)                          \
                             : cJSON_AddNullToObject(o, #n)) != NULL;
#define OUT_LIST(n, make)                                                                    \
    {                                                                                        \
        cJSON *x_ = s->n != NULL ? cJSON_Duplicate(s->n, 1) : make();                        \
        ok = ok && x_ != NULL && cJSON_AddItemToObject(o, #n, x_);                           \
    }
#define OUT_MOUNTS(n) OUT_LIST(n, cJSON_CreateObject)
#define OUT_SECRETS(n) OUT_LIST(n, cJSON_CreateArray)
#define OUTP_INT(n) ok = ok && cJSON_AddNumberToObject(p, #n, s->retry_policy.n) != NULL;
#define OUTP_REAL(n) ok = ok && cJSON_AddNumberToObject(p, #n, s->retry_policy.n) != NULL;
#define OUTP_ROW(n, kind, ...) OUTP_##kind(n)
#define OUT_POLICY(n)                                                                        \
    {                                                                                        \
        cJSON *p = cJSON_AddObjectToObject(o, #n);                                           \
        ok = ok && p != NULL;                                                                \
        if (ok) {                                                                            \
            MODAL__RETRY_MAP(OUTP_ROW)                                                       \
        }                                                                                    \
    }
#define OUT_ROW(n, kind, ...) OUT_##kind(n)

cJSON *modal__spec_json(const modal__spec *s)
{
    cJSON *j = cJSON_CreateObject();
    bool ok = j != NULL && cJSON_AddNumberToObject(j, "v", 1) &&
              cJSON_AddStringToObject(j, "artifact", s->artifact) &&
              cJSON_AddStringToObject(j, "app", s->app) && cJSON_AddStringToObject(j, "fn", s->fn);
    cJSON *o = ok ? cJSON_AddObjectToObject(j, "options") : NULL;
    ok = ok && o != NULL;
    if (ok) {
        MODAL__OPTION_MAP(OUT_ROW)
    }
    if (!ok) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

int modal__spec_hash(const modal__spec *s, char out[65])
{
    cJSON *j = modal__spec_json(s);
    char *text = j != NULL ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (text == NULL)
        return -1;
    modal__sha256 h;
    modal__sha256_init(&h);
    modal__sha256_update(&h, text, strlen(text));
    modal__sha256_hex(&h, out);
    free(text);
    return 0;
}
