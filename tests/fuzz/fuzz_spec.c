/*
 * fuzz_spec.c: libFuzzer target for the function spec parser
 * (modal__spec_parse), which the runtime runs on every POST /v1/functions
 * body and on frames that carry a spec. Any JSON either parses or fails
 * with MODAL_ECODEC or MODAL_EOPTION (MODAL_ENOMEM aside) and a message. A
 * spec that parses must print to a canonical form that parses again to
 * the same spec: the same canonical text, so the same id.
 *
 * Build: see the Makefile's fuzz target; run with tests/fuzz/run.sh.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what)
{
    fprintf(stderr, "fuzz_spec: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *j = cJSON_ParseWithLength((const char *)data, size);
    if (j == NULL)
        return 0;
    modal__spec s;
    modal_error err;
    memset(&err, 0, sizeof err);
    modal_status st = modal__spec_parse(j, "function spec", &s, &err);
    cJSON_Delete(j);
    if (st != MODAL_OK) {
        if ((st != MODAL_ECODEC && st != MODAL_EOPTION && st != MODAL_ENOMEM) ||
            err.code != st || err.message[0] == '\0')
            die("failure without ECODEC/EOPTION and a message");
        if (memchr(err.message, '\0', sizeof err.message) == NULL)
            die("unterminated message");
        return 0;
    }
    cJSON *canon = modal__spec_json(&s);
    char *text = canon != NULL ? cJSON_PrintUnformatted(canon) : NULL;
    cJSON_Delete(canon);
    if (text == NULL) {
        modal__spec_clear(&s);
        return 0; /* out of memory */
    }
    cJSON *again = cJSON_Parse(text);
    modal__spec s2;
    if (again == NULL || modal__spec_parse(again, "function spec", &s2, &err) != MODAL_OK) {
        fprintf(stderr, "canonical form: %s\nerror: %s\n", text, err.message);
        die("the canonical form of a valid spec does not parse");
    }
    cJSON_Delete(again);
    char h1[65], h2[65];
    if (modal__spec_hash(&s, h1) != 0 || modal__spec_hash(&s2, h2) != 0 || strcmp(h1, h2) != 0)
        die("the canonical form parses to another spec");
    free(text);
    modal__spec_clear(&s);
    modal__spec_clear(&s2);
    return 0;
}
