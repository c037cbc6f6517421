/*
 * tls.h: the runtime's TLS server context and its certificate: the
 * operator's (--tls-cert, --tls-key) or a self-signed one kept in
 * <state>/tls/, and the public-key fingerprint clients pin.
 */
#ifndef RT_TLS_H
#define RT_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

/* "sha256//" + 44 base64 characters + NUL (libcurl's pinned-key form). */
#define RT_TLS_PIN_SIZE 53

/*
 * How one --listen address is served. spec is "unix:PATH", "tcp:HOST:PORT"
 * or "tls:HOST:PORT". Fills http_spec with the address to hand to the HTTP
 * server ("tls:" becomes "tcp:") and *tls with whether it must speak TLS:
 * always for "tls:", for "tcp:" on a non-loopback address unless
 * insecure_plain, never for "unix:" or loopback "tcp:". *plain_exposed is
 * set for a non-loopback address served without TLS (the caller warns).
 * Returns 0, or -1 with err naming the address.
 */
int rt_tls_listen_mode(const char *spec, bool insecure_plain, char *http_spec, size_t specsz,
                       bool *tls, bool *plain_exposed, char *err, size_t errsz);

/*
 * The server context: TLS 1.2 and later, forward-secret AEAD ciphers only.
 * With cert_file and key_file (both or neither) it serves those; without,
 * it loads <state_dir>/tls/{cert,key}.pem, creating them first (an EC P-256
 * key and a 10-year self-signed certificate for localhost, 127.0.0.1 and
 * the hosts in san_hosts, NULL-terminated) when absent. Fills pin with the
 * certificate's public-key fingerprint and writes it to
 * <state_dir>/tls/fingerprint. Returns NULL with err naming the file and
 * OpenSSL's reason on failure.
 */
SSL_CTX *rt_tls_context(const char *cert_file, const char *key_file, const char *state_dir,
                        const char *const *san_hosts, char pin[RT_TLS_PIN_SIZE], char *err,
                        size_t errsz);

#endif
