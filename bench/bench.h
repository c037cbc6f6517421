/*
 * bench.h: what the benchmark programs share, written once: the time base
 * (the library's monotonic clock, modal__now), nearest-rank quantiles and
 * the choice of parts to run from the command line.
 * Each program is built from one .c file linked with libmodal.a.
 */
#ifndef MODAL_BENCH_H
#define MODAL_BENCH_H

#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Seconds on the monotonic clock the library and the runtime use. */
static inline double now(void)
{
    return modal__now();
}

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v; the q-quantile (nearest rank). */
static inline double quantile(double *v, size_t n, double q)
{
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* Whether the command line asks for the part called name: no arguments,
 * "all", or its name among them. */
static inline int wanted(int argc, char **argv, const char *name)
{
    if (argc < 2)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "all") == 0 || strcmp(argv[i], name) == 0)
            return 1;
    return 0;
}

#endif /* MODAL_BENCH_H */
