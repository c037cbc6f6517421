/*
 * tls.c: which listeners speak TLS, and the server context they use. The
 * HTTP server does the TLS I/O; this file decides the policy, loads or
 * creates the certificate, and computes the fingerprint clients pin
 * (lib/tls_pin.c computes it the same way on the client side).
 */
#include "tls.h"

#include "rt.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

/* Forward-secret AEAD suites for TLS 1.2; TLS 1.3's defaults are all AEAD. */
#define RT_TLS12_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!SHA1"
#define RT_TLS_DAYS 3650

_Static_assert(RT_TLS_PIN_SIZE == MODAL__PIN_SIZE, "one pin size for runtime and client");

int rt_tls_listen_mode(const char *spec, bool insecure_plain, char *http_spec, size_t specsz,
                       bool *tls, bool *plain_exposed, char *err, size_t errsz)
{
    *tls = *plain_exposed = false;
    bool forced = strncmp(spec, "tls:", 4) == 0;
    if (!forced && strncmp(spec, "tcp:", 4) != 0) {
        /* unix: and anything else: the HTTP server checks it. */
        snprintf(http_spec, specsz, "%s", spec);
        return 0;
    }
    const char *hp = spec + 4, *colon = strrchr(hp, ':');
    char host[64];
    size_t hl = colon != NULL ? (size_t)(colon - hp) : 0;
    struct in_addr a;
    if (colon == NULL || hl == 0 || hl >= sizeof host) {
        snprintf(err, errsz, "--listen %s: use %s:HOST:PORT, e.g. %s:127.0.0.1:7070", spec,
                 forced ? "tls" : "tcp", forced ? "tls" : "tcp");
        return -1;
    }
    memcpy(host, hp, hl);
    host[hl] = '\0';
    if (inet_pton(AF_INET, host, &a) != 1) {
        snprintf(err, errsz, "--listen %s: \"%s\" is not an IPv4 address", spec, host);
        return -1;
    }
    if ((size_t)snprintf(http_spec, specsz, "tcp:%s", hp) >= specsz) {
        snprintf(err, errsz, "--listen %s: too long", spec);
        return -1;
    }
    bool loopback = (ntohl(a.s_addr) >> 24) == 127;
    *tls = forced || (!loopback && !insecure_plain);
    *plain_exposed = !*tls && !loopback;
    return 0;
}

/* OpenSSL's most recent reason, and the queue emptied. */
static const char *ossl_reason(void)
{
    static __thread char buf[256];
    unsigned long e = ERR_peek_last_error();
    if (e == 0)
        snprintf(buf, sizeof buf, "no reason given by OpenSSL");
    else
        ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return buf;
}

/* Write path whole or not at all (rt_write_atomic); err says why not. */
static int write_file_atomic(const char *path, const void *p, size_t len, mode_t mode, char *err,
                             size_t errsz)
{
    if (rt_write_atomic(path, p, len, mode) == 0)
        return 0;
    snprintf(err, errsz, "cannot write %s: %s", path, strerror(errno));
    return -1;
}

/* A BIO's contents written to path. */
static int write_bio(const char *path, BIO *b, mode_t mode, char *err, size_t errsz)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    return write_file_atomic(path, data, n > 0 ? (size_t)n : 0, mode, err, errsz);
}

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    int ok = ex != NULL && X509_add_ext(x, ex, -1) == 1;
    X509_EXTENSION_free(ex);
    return ok ? 0 : -1;
}

/* Create an EC P-256 key and a self-signed certificate in dir. */
static int create_self_signed(const char *dir, const char *key_path, const char *cert_path,
                              const char *const *san_hosts, char *err, size_t errsz)
{
    char san[1024] = "DNS:localhost,IP:127.0.0.1";
    char hostname[256];
    if (gethostname(hostname, sizeof hostname) == 0 && hostname[0] != '\0' &&
        strspn(hostname, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") ==
            strlen(hostname) &&
        strcmp(hostname, "localhost") != 0)
        snprintf(san + strlen(san), sizeof san - strlen(san), ",DNS:%s", hostname);
    for (size_t i = 0; san_hosts != NULL && san_hosts[i] != NULL; i++) {
        struct in_addr a;
        if (inet_pton(AF_INET, san_hosts[i], &a) != 1 || a.s_addr == htonl(INADDR_ANY) ||
            a.s_addr == htonl(INADDR_LOOPBACK))
            continue;
        snprintf(san + strlen(san), sizeof san - strlen(san), ",IP:%s", san_hosts[i]);
    }
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    BIGNUM *bn = BN_new();
    BIO *kb = BIO_new(BIO_s_mem()), *cb = BIO_new(BIO_s_mem());
    X509_NAME *name = x != NULL ? X509_get_subject_name(x) : NULL;
    int ok = pkey != NULL && x != NULL && bn != NULL && kb != NULL && cb != NULL &&
             name != NULL && X509_set_version(x, 2) == 1 &&
             BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
             BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL &&
             X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
             X509_gmtime_adj(X509_getm_notAfter(x), (long)RT_TLS_DAYS * 86400) != NULL &&
             X509_set_pubkey(x, pkey) == 1 &&
             X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                        (const unsigned char *)"modal-runtime", -1, -1, 0) == 1 &&
             X509_set_issuer_name(x, name) == 1 &&
             add_ext(x, NID_subject_alt_name, san) == 0 &&
             add_ext(x, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
             add_ext(x, NID_key_usage, "critical,digitalSignature") == 0 &&
             add_ext(x, NID_ext_key_usage, "serverAuth") == 0 &&
             add_ext(x, NID_subject_key_identifier, "hash") == 0 &&
             X509_sign(x, pkey, EVP_sha256()) > 0 &&
             PEM_write_bio_PrivateKey(kb, pkey, NULL, NULL, 0, NULL, NULL) == 1 &&
             PEM_write_bio_X509(cb, x) == 1;
    int rc = -1;
    if (!ok)
        snprintf(err, errsz, "cannot create a self-signed certificate in %s: %s", dir,
                 ossl_reason());
    else if (write_bio(key_path, kb, 0600, err, errsz) == 0 &&
             write_bio(cert_path, cb, 0600, err, errsz) == 0)
        rc = 0;
    BIO_free(kb);
    BIO_free(cb);
    BN_free(bn);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}

/* Whether path is a regular file (0), absent (1), or something else (-1). */
static int regular_file(const char *path, char *err, size_t errsz)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return 1;
        snprintf(err, errsz, "cannot inspect %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errsz, "%s is not a regular file; remove it to have a new certificate made",
                 path);
        return -1;
    }
    if ((st.st_mode & 077) != 0 && chmod(path, 0600) == 0)
        rt_log(2, "%s was readable by others (mode %03o); made it 0600", path,
               (unsigned)(st.st_mode & 0777));
    return 0;
}

/* A file the operator named must be readable; say so in plain words. */
static int readable(const char *what, const char *path, char *err, size_t errsz)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        snprintf(err, errsz, "%s %s: %s", what, path, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

SSL_CTX *rt_tls_context(const char *cert_file, const char *key_file, const char *state_dir,
                        const char *const *san_hosts, char pin[RT_TLS_PIN_SIZE], char *err,
                        size_t errsz)
{
    char dir[600], kpath[700], cpath[700], fpath[700];
    bool own = false; /* the self-signed pair in dir */
    pin[0] = '\0';
    snprintf(dir, sizeof dir, "%s/tls", state_dir);
    snprintf(fpath, sizeof fpath, "%s/fingerprint", dir);
    if ((cert_file == NULL) != (key_file == NULL)) {
        snprintf(err, errsz, "give both --tls-cert and --tls-key, or neither for a self-signed "
                             "certificate");
        return NULL;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errsz, "cannot create %s: %s", dir, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errsz, "%s is not a directory", dir);
        return NULL;
    }
    if (cert_file == NULL) {
        snprintf(kpath, sizeof kpath, "%s/key.pem", dir);
        snprintf(cpath, sizeof cpath, "%s/cert.pem", dir);
        int k = regular_file(kpath, err, errsz), c = k < 0 ? -1 : regular_file(cpath, err, errsz);
        if (k < 0 || c < 0)
            return NULL;
        if (k == 1 || c == 1) {
            if (k != c)
                rt_log(2, "%s lacks %s; making a new key and certificate", dir,
                       k == 1 ? "key.pem" : "cert.pem");
            if (create_self_signed(dir, kpath, cpath, san_hosts, err, errsz) != 0)
                return NULL;
            rt_log(1, "created a self-signed certificate in %s", dir);
        }
        cert_file = cpath;
        key_file = kpath;
        own = true;
    } else if (readable("--tls-cert", cert_file, err, errsz) != 0 ||
               readable("--tls-key", key_file, err, errsz) != 0) {
        return NULL;
    }

    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errsz, "cannot create a TLS context: %s", ossl_reason());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    if (SSL_CTX_set_cipher_list(ctx, RT_TLS12_CIPHERS) != 1) {
        snprintf(err, errsz, "cannot set the TLS 1.2 ciphers %s: %s", RT_TLS12_CIPHERS,
                 ossl_reason());
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        snprintf(err, errsz, "cannot load the TLS certificate %s: %s", cert_file, ossl_reason());
        goto fail;
    }
    /* Loading a key already compares it with the certificate. */
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 &&
        ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH) {
        snprintf(err, errsz, "cannot load the TLS key %s: %s", key_file, ossl_reason());
        goto fail;
    }
    if (ERR_peek_last_error() != 0 || SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errsz, "the TLS key %s does not match the certificate %s: %s", key_file,
                 cert_file, ossl_reason());
        goto fail;
    }
    X509 *x = SSL_CTX_get0_certificate(ctx);
    unsigned char *der = NULL;
    int n = x != NULL ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der) : -1;
    if (n <= 0) {
        snprintf(err, errsz, "cannot read the public key of %s: %s", cert_file, ossl_reason());
        goto fail;
    }
    modal__spki_pin(der, (size_t)n, pin);
    OPENSSL_free(der);
    char line[RT_TLS_PIN_SIZE + 1];
    snprintf(line, sizeof line, "%s\n", pin);
    if (write_file_atomic(fpath, line, strlen(line), 0644, err, errsz) != 0)
        goto fail;
    return ctx;
fail:
    if (own)
        snprintf(err + strlen(err), errsz - strlen(err),
                 "; remove %s and %s to have a new certificate made (clients then need its new "
                 "fingerprint)", cpath, kpath);
    SSL_CTX_free(ctx);
    pin[0] = '\0';
    return NULL;
}
