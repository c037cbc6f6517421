/*
 * clock.c: the one monotonic clock of the library, the runtime and the
 * benchmarks, so that deadlines computed on one side and compared on the
 * other use the same time base.
 */
#include "internal.h"

#include <time.h>

double modal__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
