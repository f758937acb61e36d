/*
 * internal.h - what several library modules share: assertions, allocation
 * through the pool's allocator hook, branch hints, the map fold of kvb_hash.
 * Private: never installed, never included by tests except through the
 * KVB_TESTING hooks declared in lib/testing.h.
 */
#ifndef KVB_INTERNAL_H
#define KVB_INTERNAL_H

#include "kvblock.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define kvb_likely(x)   __builtin_expect(!!(x), 1)
#define kvb_unlikely(x) __builtin_expect(!!(x), 0)

/* Debug checks are always compiled (so they never rot) and enabled by
 * -DKVB_DEBUG (the test builds define it through KVB_TESTING). */
#if defined(KVB_DEBUG) || defined(KVB_TESTING)
static const int kvb__config_debug = 1;
#else
static const int kvb__config_debug = 0;
#endif

void kvb__assert_fail(const char *expr, const char *file, int line);
/* Internal invariant (a library bug, never caller input). */
#define kvb_assert(e)                                                                              \
    do {                                                                                           \
        if (kvb__config_debug && !(e))                                                             \
            kvb__assert_fail(#e, __FILE__, __LINE__);                                              \
    } while (0)

/* Allocator hook: fills NULL members of *a with malloc/free wrappers. */
void kvb__allocator_fill(kvb_allocator *a);
static inline void *kvb__alloc(const kvb_allocator *a, size_t size)
{
    return a->alloc(a->ctx, size);
}
static inline void *kvb__calloc(const kvb_allocator *a, size_t n, size_t size)
{
    if (size && n > (size_t)-1 / size)
        return NULL;
    void *p = a->alloc(a->ctx, n * size);
    if (p)
        __builtin_memset(p, 0, n * size);
    return p;
}
static inline void kvb__free(const kvb_allocator *a, void *p, size_t size)
{
    if (p)
        a->free(a->ctx, p, size);
}

/* Text written snprintf-style (the metrics texts): kvb__out_printf appends what fits
 * in buf[0..cap) and counts the full length in len, so the caller returns len as the
 * size the whole text needs. */
struct kvb__out {
    char *buf;
    size_t cap, len;
};
void kvb__out_printf(struct kvb__out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A Prometheus label value escaped (backslash, double quote, newline) into
 * out[0..cap), NUL-terminated; cap >= 2 * strlen(in) + 1 keeps all of it. */
void kvb__prom_escape(const char *in, char *out, size_t cap);

/* Fold a 128-bit hash to 64 bits and mix it (DESIGN.md section 4): real content
 * hashes are uniform already, but hashes built from small integers (trace ids,
 * positions) would cluster in an open-addressing table without the multiply. */
static inline uint64_t kvb__hash_mix(kvb_hash h)
{
    uint64_t x = h.hi ^ ((h.lo << 32) | (h.lo >> 32)) ^ (h.lo * 0xff51afd7ed558ccdull);
    return x * 0x9E3779B97F4A7C15ull;
}

/* Open-addressing tables of any size n (not only powers of two), shared by the
 * pool's hash index and the lineage backends' tables: */
/* a uniform 32-bit value scaled to a cell in [0, n) (Lemire's multiply-shift) */
static inline uint32_t kvb__cell_of(uint32_t x, uint32_t n)
{
    return (uint32_t)(((uint64_t)x * n) >> 32);
}

/* the cell after i, wrapping */
static inline uint32_t kvb__cell_next(uint32_t i, uint32_t n)
{
    return i + 1 == n ? 0 : i + 1;
}

/* cells from a forward to b, wrapping */
static inline uint32_t kvb__cell_dist(uint32_t a, uint32_t b, uint32_t n)
{
    return b >= a ? b - a : b + n - a;
}

static inline uint32_t kvb__next_pow2(uint32_t x)
{
    if (x <= 1)
        return 1;
    return 1u << (32 - __builtin_clz(x - 1));
}

#endif /* KVB_INTERNAL_H */
