/*
 * protocol.c: the checks of ids and names that cross the wire, shared by
 * the library and the runtime (see protocol.h), so that what a client
 * refuses and what the runtime refuses cannot differ.
 */
#include "internal.h"
#include "protocol.h"

#include <string.h>

/* prefix, then exactly MODAL__ID_RANDOM_LEN characters of the alphabet. */
static bool random_id_ok(const char *id, const char *prefix)
{
    size_t pl = strlen(prefix);
    if (id == NULL || strncmp(id, prefix, pl) != 0 || strlen(id) != pl + MODAL__ID_RANDOM_LEN)
        return false;
    for (const char *p = id + pl; *p != '\0'; p++)
        if (strchr(MODAL__ID_ALPHABET, *p) == NULL)
            return false;
    return true;
}

const char *modal__call_id_problem(const char *id)
{
    return random_id_ok(id, MODAL__CALL_ID_PREFIX)
               ? NULL
               : "is not a call id: call ids are " MODAL__CALL_ID_PREFIX " " MODAL__ID_RULE;
}

const char *modal__map_id_problem(const char *id)
{
    return random_id_ok(id, MODAL__MAP_ID_PREFIX)
               ? NULL
               : "is not a map id: map ids are " MODAL__MAP_ID_PREFIX " " MODAL__ID_RULE;
}

const char *modal__artifact_problem(const char *sha)
{
    size_t n = 0;
    for (; sha != NULL && sha[n] != '\0'; n++)
        if (!((sha[n] >= '0' && sha[n] <= '9') || (sha[n] >= 'a' && sha[n] <= 'f')))
            return "is not a SHA-256 (64 lowercase hex digits)";
    return n == 64 ? NULL : "is not a SHA-256 (64 lowercase hex digits)";
}

bool modal__app_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.';
}

const char *modal__app_name_problem(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return "is empty; an app name is 1 to 127 of A-Z a-z 0-9 _ . -";
    size_t n = 0;
    for (; name[n] != '\0'; n++)
        if (!modal__app_name_char((unsigned char)name[n]))
            return "holds a character outside A-Z a-z 0-9 _ . -";
    if (n > MODAL__NAME_MAX)
        return "is longer than 127 characters";
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return "is \".\" or \"..\", which cannot name an app (its log is a file named after it)";
    return NULL;
}

const char *modal__fn_name_problem(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return "is empty; a function name is a C identifier of 1 to 127 characters";
    size_t n = 0;
    for (; name[n] != '\0'; n++) {
        unsigned char c = (unsigned char)name[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (n > 0 && c >= '0' && c <= '9')))
            return "is not a C identifier (A-Z a-z 0-9 _, not starting with a digit), "
                   "as MODAL_FUNCTION names are";
    }
    if (n > MODAL__NAME_MAX)
        return "is longer than 127 characters";
    return NULL;
}
