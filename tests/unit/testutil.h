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
