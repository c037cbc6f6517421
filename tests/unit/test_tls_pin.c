/*
 * test_tls_pin.c: public-key pins as libcurl and the openssl CLI compute
 * them. The two certificates below were made once with `openssl req -x509`
 * and their pins with
 *   openssl x509 -pubkey -noout | openssl pkey -pubin -outform der |
 *   openssl dgst -sha256 -binary | openssl enc -base64
 * so the expected values come from OpenSSL, not from this code.
 */
#include "testutil.h"

static const char ec_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBgjCCASegAwIBAgIUIMcYeOXDhhcwLPLhNIC+BBzuBG4wCgYIKoZIzj0EAwIw\n"
    "FjEUMBIGA1UEAwwLcGluLXRlc3QtZWMwHhcNMjYxMTMwMTUwMDUzWhcNMzYxMTI3\n"
    "MTUwMDUzWjAWMRQwEgYDVQQDDAtwaW4tdGVzdC1lYzBZMBMGByqGSM49AgEGCCqG\n"
    "SM49AwEHA0IABGBUBowWRVIky6QtRb0N2Rc6TwBAcjk0UNJu6hG0qO5nniQKj11g\n"
    "OuVpzwRGWoBsusdX1WCyZOyJowzk1Uo8DpejUzBRMB0GA1UdDgQWBBTs9PC7xPUB\n"
    "HVFBs4wGEIPb8Hl4+TAfBgNVHSMEGDAWgBTs9PC7xPUBHVFBs4wGEIPb8Hl4+TAP\n"
    "BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQDhcl05EALzGjIX0C1q\n"
    "0mNo28TOM0h8+RY4unq4ONFOagIhAPFvee1QNAjWSDCaDbq4u8J9hkVr5CffMC8l\n"
    "YgSptmCG\n"
    "-----END CERTIFICATE-----\n";
static const char ec_pin[] = "sha256//l90t7an5+yEB+CfU3nl1D1kObrWvV6+jBgdEjTF3gc0=";

static const char rsa_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIDDzCCAfegAwIBAgIUcEAiiGDSu1ZaPZLZp97gV1aJ8DIwDQYJKoZIhvcNAQEL\n"
    "BQAwFzEVMBMGA1UEAwwMcGluLXRlc3QtcnNhMB4XDTI2MTEzMDE1MDA1M1oXDTM2\n"
    "MTEyNzE1MDA1M1owFzEVMBMGA1UEAwwMcGluLXRlc3QtcnNhMIIBIjANBgkqhkiG\n"
    "9w0BAQEFAAOCAQ8AMIIBCgKCAQEAyUmMMWi00TKA58xC5gpCSXYE8rxa8p57m3mg\n"
    "4Qn7Ps1s5KdiZJ4nvbF/ykR4tTp+HSeCI7tdkf/KgLoFXp5eCKaNfFUyfcK5+csY\n"
    "R4WCokS94f2zqGCMmuz+6CyzP2Nt31FqNB67sPcOEqKfejxvsctBy23yQzJr9Bth\n"
    "5OkR5HKvPyuRHDkblQY2NMBoNhfDVgGViKAsSX5FXxYHtQzIJY5kqav3fm/H6F7i\n"
    "TUI1/GhCJgIlCA0om5Z8itsAA4VJbkBi7iMbRpxI3NQGqMbLejUz5zvw+rWU6a9X\n"
    "DKXjHtpVjUrIhen/9sqVV1+6ZGLlKvlHjR6Cn7e2mvDcjCxcxwIDAQABo1MwUTAd\n"
    "BgNVHQ4EFgQUPezfa9Hl1IwR+7g5nFyCjv9qX5MwHwYDVR0jBBgwFoAUPezfa9Hl\n"
    "1IwR+7g5nFyCjv9qX5MwDwYDVR0TAQH/BAUwAwEB/zANBgkqhkiG9w0BAQsFAAOC\n"
    "AQEABl5A+FtysxBAcKo3Yq9SJ6Ega0cUyV5RJ5o0NS+kPIEi9GTDntDjsyPEQPLF\n"
    "md7HG+tH45i5dXkx65Kg5HrOH/Yi+BKOSD5JbvsYI3gexsGxeesldW0NhuLo93Av\n"
    "eYaYseo904qrDKRPKlWe00XOXGZCQw3WMx8Qm2VYdF/SCBzKff3CMzOqazeupB7K\n"
    "lEF0pXM3IPBvXHDhkQGEcw2jKFmDvIVsvR7VGJaNxToC4yKxdh+PG7//qvVX5eUX\n"
    "pR9OKD3Cta6QXutIfKhn5vE5m81FnrocJ0Mp1gE70xyxhCnjwAs9A08OS61WHHjS\n"
    "p1lqkqazBL4s1XvMkU9aF6iTsw==\n"
    "-----END CERTIFICATE-----\n";
static const char rsa_pin[] = "sha256//JhXv3fKGKppLmWTHa04+BLCvrp1ypXfHl9HoFT4NaKI=";

/* The DER inside a PEM certificate, malloc'd. */
static uint8_t *der_of(const char *pem, size_t *len)
{
    const char *b = strstr(pem, "-----\n") + 6, *e = strstr(b, "-----END");
    uint8_t *der = malloc((size_t)(e - b));
    assert_non_null(der);
    long n = modal__base64_decode(b, (size_t)(e - b), der, (size_t)(e - b));
    assert_true(n > 0);
    *len = (size_t)n;
    return der;
}

static void test_base64_rfc4648_vectors(void **state)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
                                        "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char out[16];
        uint8_t back[16];
        assert_int_equal(modal__base64_encode((const uint8_t *)plain[i], strlen(plain[i]), out,
                                              sizeof out),
                         strlen(coded[i]));
        assert_string_equal(out, coded[i]);
        long n = modal__base64_decode(coded[i], strlen(coded[i]), back, sizeof back);
        assert_int_equal(n, (long)strlen(plain[i]));
        assert_memory_equal(back, plain[i], (size_t)n);
    }
    /* Too small an output buffer gives "" rather than a cut string. */
    char small[8] = "x";
    assert_int_equal(modal__base64_encode((const uint8_t *)"foobar", 6, small, 8), 0);
    assert_string_equal(small, "");
}

static void test_base64_decode_refuses_bad_input(void **state)
{
    uint8_t out[16];
    assert_int_equal(modal__base64_decode("Zm9v!", 5, out, sizeof out), -1);   /* alphabet */
    assert_int_equal(modal__base64_decode("Zg==Zg", 6, out, sizeof out), -1);  /* after pad */
    assert_int_equal(modal__base64_decode("Zg===", 5, out, sizeof out), -1);   /* 3 pads */
    assert_int_equal(modal__base64_decode("Zh==", 4, out, sizeof out), -1);    /* stray bits */
    assert_int_equal(modal__base64_decode("Z", 1, out, sizeof out), -1);       /* 6 bits */
    assert_int_equal(modal__base64_decode("Zm9vYmFy", 8, out, 5), -1);         /* too long */
    assert_int_equal(modal__base64_decode("Zm9v\nYmFy\r\n", 11, out, sizeof out), 6);
}

static void test_pins_match_openssl(void **state)
{
    const char *pems[] = {ec_pem, rsa_pem}, *pins[] = {ec_pin, rsa_pin};
    /* SubjectPublicKeyInfo sizes: P-256 and RSA-2048 keys. */
    const size_t spki_sizes[] = {91, 294};
    for (int i = 0; i < 2; i++) {
        char pin[MODAL__PIN_SIZE];
        modal_error err;
        assert_int_equal(modal__pem_cert_pin(pems[i], pin, &err), MODAL_OK);
        assert_string_equal(pin, pins[i]);

        size_t len;
        uint8_t *der = der_of(pems[i], &len);
        const uint8_t *spki;
        size_t slen;
        assert_null(modal__cert_spki(der, len, &spki, &slen));
        assert_int_equal(slen, spki_sizes[i]);
        assert_int_equal(spki[0], 0x30);
        memset(pin, 0, sizeof pin);
        assert_int_equal(modal__cert_pin(der, len, pin, &err), MODAL_OK);
        assert_string_equal(pin, pins[i]);
        assert_int_equal(modal__pin_check(pin, &err), MODAL_OK);
        free(der);
    }
}

static void test_truncated_certificates_fail(void **state)
{
    size_t len;
    uint8_t *der = der_of(rsa_pem, &len);
    for (size_t n = 0; n < len; n++) {
        /* An exact-size copy, so ASan sees any read past the end. */
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, der, n);
        char pin[MODAL__PIN_SIZE] = "unchanged";
        modal_error err;
        assert_int_equal(modal__cert_pin(cut, n, pin, &err), MODAL_ETRANSPORT);
        assert_string_equal(pin, "");
        assert_message_contains(err, "certificate");
        free(cut);
    }
    free(der);
}

static void test_garbage_and_odd_der_fail(void **state)
{
    const uint8_t *spki;
    size_t slen;
    static const uint8_t indefinite[] = {0x30, 0x80, 0x30, 0x80, 0, 0, 0, 0};
    static const uint8_t five_byte_len[] = {0x30, 0x85, 0, 0, 0, 0, 1, 0};
    static const uint8_t high_tag[] = {0x3f, 0x01, 0x00};
    static const uint8_t empty_seq[] = {0x30, 0x00};
    static const uint8_t len_past_end[] = {0x30, 0x84, 0xff, 0xff, 0xff, 0xf0, 0x30};
    assert_non_null(modal__cert_spki(NULL, 0, &spki, &slen));
    assert_non_null(modal__cert_spki(indefinite, sizeof indefinite, &spki, &slen));
    assert_non_null(modal__cert_spki(five_byte_len, sizeof five_byte_len, &spki, &slen));
    assert_non_null(modal__cert_spki(high_tag, sizeof high_tag, &spki, &slen));
    assert_non_null(modal__cert_spki(empty_seq, sizeof empty_seq, &spki, &slen));
    assert_non_null(modal__cert_spki(len_past_end, sizeof len_past_end, &spki, &slen));
    /* Pseudo-random bytes, and the certificate with each byte flipped:
     * either a clean failure or a key found inside the input. */
    uint32_t x = 12345;
    uint8_t junk[512];
    for (int round = 0; round < 2000; round++) {
        for (size_t i = 0; i < sizeof junk; i++)
            junk[i] = (uint8_t)((x = x * 1103515245u + 12345u) >> 16);
        junk[0] = 0x30;
        size_t n = x % sizeof junk;
        if (modal__cert_spki(junk, n, &spki, &slen) == NULL)
            assert_true(spki >= junk && spki + slen <= junk + n);
    }
    size_t len;
    uint8_t *der = der_of(ec_pem, &len);
    for (size_t i = 0; i < len; i++) {
        der[i] ^= 0xff;
        if (modal__cert_spki(der, len, &spki, &slen) == NULL)
            assert_true(spki >= der && spki + slen <= der + len);
        der[i] ^= 0xff;
    }
    free(der);
    char pin[MODAL__PIN_SIZE];
    modal_error err;
    assert_int_equal(modal__pem_cert_pin("no certificate here", pin, &err), MODAL_ETRANSPORT);
    assert_int_equal(modal__pem_cert_pin("-----BEGIN CERTIFICATE-----\n$$$\n"
                                         "-----END CERTIFICATE-----\n", pin, &err),
                     MODAL_ETRANSPORT);
    assert_message_contains(err, "base64");
}

static void test_pin_check(void **state)
{
    modal_error err;
    char two[2 * MODAL__PIN_SIZE + 2];
    snprintf(two, sizeof two, "%s;%s", ec_pin, rsa_pin);
    assert_int_equal(modal__pin_check(two, &err), MODAL_OK);
    const char *bad[] = {
        "",
        "l90t7an5+yEB+CfU3nl1D1kObrWvV6+jBgdEjTF3gc0=",          /* no sha256// */
        "sha1//l90t7an5+yEB+CfU3nl1D1kObrWvV6+jBgdEjTF3gc0=",    /* other hash */
        "sha256//l90t7an5+yEB+CfU3nl1D1kObrWvV6+jBgdEjTF3gc0",   /* cut */
        "sha256//l90t7an5+yEB+CfU3nl1D1kObrWvV6+jBgdEjTF3g!0=",  /* alphabet */
        "sha256//l90t7an5+yEB+CfU3nl1D1kObrWvV6+jBgdEjTF3gc0=;", /* empty second */
        "l90t7an5+yEB+CfU3nl1D1kObrWvV6+jBgdEjTF3gc0=l90t7an5",  /* hex-ish junk */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(modal__pin_check(bad[i], &err), MODAL_EINVAL);
        char quoted[200];
        snprintf(quoted, sizeof quoted, "MODAL_TLS_FINGERPRINT=\"%s\"", bad[i]);
        assert_message_contains(err, quoted);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64_rfc4648_vectors),
        cmocka_unit_test(test_base64_decode_refuses_bad_input),
        cmocka_unit_test(test_pins_match_openssl),
        cmocka_unit_test(test_truncated_certificates_fail),
        cmocka_unit_test(test_garbage_and_odd_der_fail),
        cmocka_unit_test(test_pin_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
