/*
 * tools/common/util.h - small helpers shared by the kvblock tools: fatal
 * errors, checked allocation, strict number parsing, a monotonic clock.
 *
 * Everything here is static inline so that a tool which does not use a helper
 * pays nothing for it and no global symbol can collide between tools/common
 * files. Not part of the library: tools may exit() on error, the library never
 * does.
 */
#ifndef KVBT_UTIL_H
#define KVBT_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__GNUC__) || defined(__clang__)
#define KVBT_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define KVBT_NORETURN     __attribute__((noreturn))
#else
#define KVBT_PRINTF(f, a)
#define KVBT_NORETURN
#endif

/* Print "<prog>: <message>\n" on stderr and exit with status 1. */
static inline KVBT_NORETURN KVBT_PRINTF(2, 3) void kvbt_die(const char *prog, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* malloc/realloc that never return NULL (a tool cannot go on without memory). */
static inline void *kvbt_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static inline void *kvbt_xrealloc(void *old, size_t n)
{
    void *p = realloc(old, n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* n elements of size sz, with an overflow check. */
static inline void *kvbt_xmalloc_array(size_t n, size_t sz)
{
    if (sz && n > SIZE_MAX / sz) {
        fprintf(stderr, "allocation too large (%zu x %zu)\n", n, sz);
        exit(1);
    }
    return kvbt_xmalloc(n * sz);
}

/* Strict unsigned decimal: the whole string, no sign, no blanks, no overflow,
 * value in [min, max]. Returns true and stores *out on success. */
static inline bool kvbt_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t kvbt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The last path component of p (p itself when it has no '/'). */
static inline const char *kvbt_basename(const char *p)
{
    const char *s = strrchr(p, '/');
    return s && s[1] ? s + 1 : p;
}

#endif /* KVBT_UTIL_H */
