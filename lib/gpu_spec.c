/*
 * gpu_spec.c: the GPU request grammar of MODAL_FUNCTION's .gpu option.
 *
 *   spec   := choice ("," choice)*          tried in order
 *   choice := name ["!"] [":" count]        or name ":" count "!"
 *   name   := a known type, any case        count := 1..8
 *
 * Parsing never allocates, so the runtime can run it on untrusted input.
 */
#include "internal.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const known_gpus[] = {
    "T4",   "L4",        "A10G",      "A10",  "L40S", "A100",
    "A100-40GB", "A100-80GB", "H100", "H200", "B200", "any",
};
#define KNOWN_LIST "T4, L4, A10G, A10, L40S, A100, A100-40GB, A100-80GB, H100, H200, B200, any"

static const char *canonical_name(const char *p, size_t len)
{
    for (size_t i = 0; i < sizeof known_gpus / sizeof *known_gpus; i++)
        if (strlen(known_gpus[i]) == len && strncasecmp(known_gpus[i], p, len) == 0)
            return known_gpus[i];
    return NULL;
}

static modal_status parse_choice(const char *spec, const char *p, size_t len,
                                 modal__gpu_choice *c, modal_error *err)
{
    while (len > 0 && isspace((unsigned char)*p))
        p++, len--;
    while (len > 0 && isspace((unsigned char)p[len - 1]))
        len--;
    if (len == 0)
        return modal__fail(err, MODAL_EOPTION,
                           "gpu \"%.64s\": empty entry in the list; write e.g. \"H100, A100-80GB\"",
                           spec);
    /* The name runs up to '!' or ':'. */
    size_t nlen = 0;
    while (nlen < len && p[nlen] != '!' && p[nlen] != ':')
        nlen++;
    const char *name = canonical_name(p, nlen);
    if (name == NULL)
        return modal__fail(err, MODAL_EOPTION,
                           "gpu \"%.64s\": unknown GPU type \"%.*s\"; known types: " KNOWN_LIST,
                           spec, (int)(nlen > 32 ? 32 : nlen), p);
    c->count = 1;
    c->exact = false;
    snprintf(c->name, sizeof c->name, "%s", name);
    const char *q = p + nlen, *end = p + len;
    bool seen_count = false;
    while (q < end) {
        if (*q == '!' && !c->exact) {
            c->exact = true;
            q++;
        } else if (*q == ':' && !seen_count) {
            q++;
            int v = 0, digits = 0;
            while (q < end && isdigit((unsigned char)*q) && digits < 3)
                v = v * 10 + (*q++ - '0'), digits++;
            if (digits == 0 || (q < end && isdigit((unsigned char)*q)) || v < 1 || v > 8)
                return modal__fail(err, MODAL_EOPTION,
                                   "gpu \"%.64s\": GPU count after \"%s:\" must be 1 to 8",
                                   spec, name);
            c->count = v;
            seen_count = true;
        } else {
            return modal__fail(err, MODAL_EOPTION,
                               "gpu \"%.64s\": unexpected \"%.*s\" after \"%s\"; write NAME, NAME:COUNT or NAME!",
                               spec, (int)(end - q > 16 ? 16 : end - q), q, name);
        }
    }
    if (c->exact && strcmp(name, "any") == 0)
        return modal__fail(err, MODAL_EOPTION,
                           "gpu \"%.64s\": \"any!\" makes no sense: \"!\" forbids upgrading a named type",
                           spec);
    return MODAL_OK;
}

modal_status modal__gpu_spec_parse(const char *spec, modal__gpu_choice *out,
                                   size_t *n, modal_error *err)
{
    *n = 0;
    if (spec == NULL)
        return MODAL_OK;
    const char *p = spec;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0')
        return MODAL_OK;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (*n == MODAL__GPU_MAX_CHOICES)
            return modal__fail(err, MODAL_EOPTION,
                               "gpu \"%.200s\": more than %d alternatives in the fallback list",
                               spec, MODAL__GPU_MAX_CHOICES);
        modal_status st = parse_choice(spec, p, len, &out[*n], err);
        if (st != MODAL_OK)
            return st;
        (*n)++;
        if (comma == NULL)
            return MODAL_OK;
        p = comma + 1;
    }
}

/*
 * Modal's placement rule, written once: the device type that a request
 * name runs on exactly, and the one it may be upgraded to without "!".
 * A type no row names is taken only by "any".
 */
static const struct {
    const char *request, *exact, *upgrade;
} gpu_rules[] = {
    {"T4", "T4", NULL},
    {"L4", "L4", NULL},
    {"A10G", "A10G", NULL},
    {"A10", "A10G", NULL},
    {"L40S", "L40S", NULL},
    {"A100", "A100-40GB", "A100-80GB"},
    {"A100-40GB", "A100-40GB", "A100-80GB"},
    {"A100-80GB", "A100-80GB", NULL},
    {"H100", "H100", "H200"},
    {"H200", "H200", NULL},
    {"B200", "B200", NULL},
};

int modal__gpu_accepts(const modal__gpu_choice *c, const char *type)
{
    if (strcmp(c->name, "any") == 0)
        return 1;
    for (size_t i = 0; i < sizeof gpu_rules / sizeof *gpu_rules; i++) {
        if (strcmp(gpu_rules[i].request, c->name) != 0)
            continue;
        if (strcmp(gpu_rules[i].exact, type) == 0)
            return 1;
        if (!c->exact && gpu_rules[i].upgrade != NULL &&
            strcmp(gpu_rules[i].upgrade, type) == 0)
            return 2;
        return 0;
    }
    return 0;
}
