/*
 * tls_pin.c: public-key pins in libcurl's form, "sha256//" followed by the
 * base64 of the SHA-256 of a certificate's DER SubjectPublicKeyInfo. The
 * client checks a pin given in MODAL_TLS_FINGERPRINT, and, when a server
 * presents another key, computes the server's own pin so the error can
 * show both. libmodal does not link OpenSSL (a worker's cold start stays
 * short), so the few steps needed are here: base64 both ways, a bounded
 * DER walk to the SubjectPublicKeyInfo, and lib/sha256.c.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t modal__base64_encode(const uint8_t *p, size_t n, char *out, size_t outsz)
{
    size_t need = (n + 2) / 3 * 4;
    if (outsz <= need) {
        if (outsz > 0)
            out[0] = '\0';
        return 0;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

static int b64_value(char c)
{
    const char *q = c != '\0' ? strchr(b64, c) : NULL;
    return q != NULL ? (int)(q - b64) : -1;
}

long modal__base64_decode(const char *s, size_t n, uint8_t *out, size_t outsz)
{
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue; /* PEM wraps its lines */
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_value(c);
        if (v < 0 || pad > 0)
            return -1; /* not base64, or data after the padding */
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == outsz)
                return -1;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* 2 or 4 leftover bits are the padding of a short last group. */
    if (pad > 2 || bits >= 6 || (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (long)o;
}

/*
 * One DER element at p (at most end): its tag, and its contents as
 * [*body, *body + *len). Only definite lengths of up to 4 bytes and
 * single-byte tags occur in a certificate; anything else is refused.
 */
static int der_next(const uint8_t *p, const uint8_t *end, uint8_t *tag, const uint8_t **body,
                    size_t *len)
{
    if (end - p < 2)
        return -1;
    *tag = p[0];
    if ((*tag & 0x1f) == 0x1f)
        return -1;
    size_t l = p[1];
    p += 2;
    if (l & 0x80) {
        size_t nb = l & 0x7f;
        if (nb == 0 || nb > 4 || (size_t)(end - p) < nb)
            return -1;
        l = 0;
        for (size_t i = 0; i < nb; i++)
            l = (l << 8) | *p++;
    }
    if (l > (size_t)(end - p))
        return -1;
    *body = p;
    *len = l;
    return 0;
}

const char *modal__cert_spki(const uint8_t *der, size_t len, const uint8_t **spki,
                             size_t *spki_len)
{
    const uint8_t *end = der + len, *body, *tbs;
    size_t blen, tlen;
    uint8_t tag;
    if (der == NULL || der_next(der, end, &tag, &body, &blen) != 0 || tag != 0x30)
        return "the certificate is not a DER SEQUENCE";
    if (der_next(body, body + blen, &tag, &tbs, &tlen) != 0 || tag != 0x30)
        return "the certificate has no tbsCertificate SEQUENCE";
    const uint8_t *p = tbs, *tend = tbs + tlen;
    /* version [0] (optional), serial, signature, issuer, validity, subject */
    static const uint8_t want[] = {0x02, 0x30, 0x30, 0x30, 0x30};
    static const char *const names[] = {"serialNumber", "signature", "issuer", "validity",
                                        "subject"};
    if (der_next(p, tend, &tag, &body, &blen) != 0)
        return "the tbsCertificate is cut short";
    if (tag == 0xa0)
        p = body + blen;
    for (size_t i = 0; i < sizeof want; i++) {
        if (der_next(p, tend, &tag, &body, &blen) != 0 || tag != want[i])
            return names[i];
        p = body + blen;
    }
    const uint8_t *start = p;
    if (der_next(p, tend, &tag, &body, &blen) != 0 || tag != 0x30)
        return "subjectPublicKeyInfo";
    /* SubjectPublicKeyInfo ::= SEQUENCE { AlgorithmIdentifier, BIT STRING } */
    const uint8_t *q = body, *qend = body + blen, *b2;
    size_t l2;
    if (der_next(q, qend, &tag, &b2, &l2) != 0 || tag != 0x30)
        return "subjectPublicKeyInfo algorithm";
    q = b2 + l2;
    if (der_next(q, qend, &tag, &b2, &l2) != 0 || tag != 0x03 || l2 < 1 || b2 + l2 != qend)
        return "subjectPublicKey";
    *spki = start;
    *spki_len = (size_t)(body + blen - start);
    return NULL;
}

void modal__spki_pin(const uint8_t *spki, size_t len, char out[MODAL__PIN_SIZE])
{
    modal__sha256 s;
    uint8_t md[32];
    modal__sha256_init(&s);
    modal__sha256_update(&s, spki, len);
    modal__sha256_final(&s, md);
    memcpy(out, "sha256//", 8);
    modal__base64_encode(md, sizeof md, out + 8, MODAL__PIN_SIZE - 8);
}

modal_status modal__cert_pin(const uint8_t *der, size_t len, char out[MODAL__PIN_SIZE],
                             modal_error *err)
{
    const uint8_t *spki;
    size_t slen;
    const char *bad = modal__cert_spki(der, len, &spki, &slen);
    out[0] = '\0';
    if (bad != NULL)
        return modal__fail(err, MODAL_ETRANSPORT,
                           "cannot read the public key from a %zu-byte certificate: %s%s", len,
                           bad, strchr(bad, ' ') != NULL ? "" : " is missing or malformed");
    modal__spki_pin(spki, slen, out);
    return MODAL_OK;
}

modal_status modal__pem_cert_pin(const char *pem, char out[MODAL__PIN_SIZE], modal_error *err)
{
    static const char begin[] = "-----BEGIN CERTIFICATE-----", end[] = "-----END CERTIFICATE-----";
    const char *b = pem != NULL ? strstr(pem, begin) : NULL;
    const char *e = b != NULL ? strstr(b, end) : NULL;
    out[0] = '\0';
    if (e == NULL)
        return modal__fail(err, MODAL_ETRANSPORT, "the server's certificate is not in PEM form");
    b += sizeof begin - 1;
    size_t n = (size_t)(e - b);
    uint8_t *der = modal__malloc(n);
    if (der == NULL)
        return modal__fail(err, MODAL_ENOMEM, "out of memory decoding a certificate");
    long dl = modal__base64_decode(b, n, der, n);
    modal_status st = dl < 0 ? modal__fail(err, MODAL_ETRANSPORT,
                                           "the server's PEM certificate is not valid base64")
                             : modal__cert_pin(der, (size_t)dl, out, err);
    free(der);
    return st;
}

modal_status modal__pin_check(const char *pins, modal_error *err)
{
    return modal__pin_check_named("MODAL_TLS_FINGERPRINT", pins, err);
}

modal_status modal__pin_check_named(const char *what, const char *pins, modal_error *err)
{
    /* libcurl takes several pins separated by ';' (a key being rotated). */
    const char *p = pins != NULL ? pins : "";
    do {
        size_t n = strcspn(p, ";");
        uint8_t md[33];
        bool ok = n == MODAL__PIN_SIZE - 1 && strncmp(p, "sha256//", 8) == 0 &&
                  modal__base64_decode(p + 8, n - 8, md, sizeof md) == 32 &&
                  memchr(p + 8, ' ', n - 8) == NULL && memchr(p + 8, '\n', n - 8) == NULL;
        if (!ok)
            return modal__fail(err, MODAL_EINVAL,
                               "%s=\"%s\" is not a public-key fingerprint; "
                               "give the runtime's \"sha256//\" followed by 44 base64 characters, "
                               "as modal-runtime prints it on its \"tls fingerprint\" line",
                               what, pins != NULL ? pins : "");
        p += n;
    } while (*p++ == ';');
    return MODAL_OK;
}
