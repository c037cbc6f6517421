/*
 * fmt.c: decimal text of an integer without printf. A no-op map input
 * pays several of these (frame envelopes, worker messages), and printf's
 * machinery cost more than the rest of their encoding.
 */
#include "internal.h"

size_t modal__fmt_int(char *out, long long v)
{
    char tmp[24];
    size_t n = 0;
    /* Negated as unsigned, so LLONG_MIN is printed too. */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    size_t len = 0;
    if (v < 0)
        out[len++] = '-';
    while (n > 0)
        out[len++] = tmp[--n];
    out[len] = '\0';
    return len;
}
