/*
 * fuzz_cert.c: libFuzzer target for the DER walk that finds a server
 * certificate's SubjectPublicKeyInfo (modal__cert_spki) and the pin built
 * from it, which the client runs on whatever a server presents. Any input
 * either fails with a reason, or yields a SEQUENCE lying wholly inside
 * the input and a well-formed pin; the PEM path must agree with the DER
 * path on the same bytes.
 *
 * Build: see the Makefile's fuzz target; run with tests/fuzz/run.sh.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what)
{
    fprintf(stderr, "fuzz_cert: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *spki = NULL;
    size_t slen = 0;
    const char *bad = modal__cert_spki(data, size, &spki, &slen);
    char pin[MODAL__PIN_SIZE];
    modal_error err;
    memset(&err, 0, sizeof err);
    modal_status st = modal__cert_pin(data, size, pin, &err);
    if (bad != NULL) {
        if (bad[0] == '\0' || st != MODAL_ETRANSPORT || err.message[0] == '\0' || pin[0] != '\0')
            die("failure without ETRANSPORT, a reason and an empty pin");
        return 0;
    }
    if (spki < data || slen < 2 || spki + slen > data + size || spki[0] != 0x30)
        die("SubjectPublicKeyInfo outside the input or not a SEQUENCE");
    if (st != MODAL_OK || strlen(pin) != MODAL__PIN_SIZE - 1 || strncmp(pin, "sha256//", 8) != 0 ||
        modal__pin_check(pin, NULL) != MODAL_OK)
        die("a found key without a well-formed pin");
    /* The same bytes as PEM give the same pin. */
    size_t cap = (size + 2) / 3 * 4 + 64;
    char *pem = malloc(cap);
    if (pem == NULL)
        return 0;
    size_t n = (size_t)sprintf(pem, "-----BEGIN CERTIFICATE-----\n");
    n += modal__base64_encode(data, size, pem + n, cap - n);
    strcpy(pem + n, "\n-----END CERTIFICATE-----\n");
    char pin2[MODAL__PIN_SIZE];
    if (modal__pem_cert_pin(pem, pin2, NULL) != MODAL_OK || strcmp(pin, pin2) != 0)
        die("PEM and DER disagree");
    free(pem);
    return 0;
}
