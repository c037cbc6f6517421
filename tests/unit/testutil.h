/*
 * testutil.h: what every unit test includes: cmocka and the library's
 * public and internal headers, plus small helpers.
 */
#ifndef MODAL_TESTUTIL_H
#define MODAL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"
#include "modal.h"

#include <fcntl.h>

/* Number of open file descriptors below 1024, to catch fd leaks. */
static __attribute__((unused)) int open_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            n++;
    return n;
}

/* Assert that err's message contains needle, printing both on failure. */
#define assert_message_contains(err, needle)                                   \
    do {                                                                       \
        if (strstr((err).message, (needle)) == NULL) {                         \
            print_error("message \"%s\" lacks \"%s\"\n", (err).message,        \
                        (needle));                                             \
            fail();                                                            \
        }                                                                      \
    } while (0)

#endif
