/*
 * error.c: status names and messages, filling modal_error, the log hook,
 * and the run-time version.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

const char *modal_version(void)
{
    return MODAL_VERSION_STRING;
}

const char *modal_strerror(modal_status code)
{
    /* A switch without default: -Wswitch flags a code with no message. */
    switch (code) {
#define MODAL__STATUS_MSG(name, msg)                                           \
    case MODAL_##name:                                                         \
        return msg;
        MODAL_STATUS_MAP(MODAL__STATUS_MSG)
#undef MODAL__STATUS_MSG
    case MODAL__STATUS_COUNT:
        break;
    }
    return "unknown status";
}

const char *modal_status_name(modal_status code)
{
    switch (code) {
#define MODAL__STATUS_NAME(name, msg)                                          \
    case MODAL_##name:                                                         \
        return #name;
        MODAL_STATUS_MAP(MODAL__STATUS_NAME)
#undef MODAL__STATUS_NAME
    case MODAL__STATUS_COUNT:
        break;
    }
    return "EUNKNOWN";
}

modal_status modal__vfail(modal_error *err, modal_status code,
                          const char *fmt, va_list ap)
{
    if (err != NULL) {
        err->code = code;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
    }
    return code;
}

modal_status modal__fail(modal_error *err, modal_status code, const char *fmt,
                         ...)
{
    va_list ap;
    va_start(ap, fmt);
    modal__vfail(err, code, fmt, ap);
    va_end(ap);
    return code;
}

modal_status modal__null_arg(modal_error *err, const char *api, const char *param,
                             const char *hint)
{
    return modal__fail(err, MODAL_EINVAL, "%s: %s is NULL; %s", api, param, hint);
}

void modal__ok(modal_error *err)
{
    if (err != NULL) {
        err->code = MODAL_OK;
        err->message[0] = '\0';
    }
}

static void (*log_hook)(modal_log_level, const char *, void *);
static void *log_user;

void modal_set_log_hook(void (*fn)(modal_log_level level, const char *msg,
                                   void *user),
                        void *user)
{
    log_hook = fn;
    log_user = user;
}

void modal__log(modal_log_level level, const char *fmt, ...)
{
    if (log_hook == NULL)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_hook(level, buf, log_user);
}
