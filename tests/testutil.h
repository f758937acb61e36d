/*
 * testutil.h - shared helpers for the Criterion suites: pools, content, the
 * handle life cycle in one call, and the end of every scenario. Every test ends
 * with kvb_pool_check() clean and kvb_pool_destroy() == 0, so a leaked handle
 * fails the test. The helpers the torture programs and fuzz targets share
 * with the suites (generators, the fail-at-k allocator, the park harness) are
 * in tests/support/, included as "support/NAME.h".
 */
#ifndef KVB_TESTUTIL_H
#define KVB_TESTUTIL_H

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include "kvblock.h"

/* A pool with n blocks and the given policy; other fields default. */
static inline kvb_pool *tu_pool(uint32_t n, kvb_evict_policy policy)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = n;
    cfg.evict = policy;
    kvb_pool *p = NULL;
    cr_assert_eq(kvb_pool_create(&cfg, &p), 0);
    return p;
}

static inline kvb_pool *tu_pool_cfg(const kvb_pool_config *cfg)
{
    kvb_pool *p = NULL;
    int rc = kvb_pool_create(cfg, &p);
    cr_assert_eq(rc, 0, "kvb_pool_create: %s", kvb_strerror(rc));
    return p;
}

static inline kvb_stats tu_stats(kvb_pool *p)
{
    kvb_stats s;
    cr_assert_eq(kvb_pool_stats(p, &s), 0);
    return s;
}

/* Allocate, stage and register n blocks (n <= 64) with hashes h[0..n) in one
 * batch; out gets the references. */
static inline void tu_put(kvb_pool *p, const kvb_hash *h, uint32_t n, kvb_block *out)
{
    kvb_mutable m[64];
    kvb_complete c[64];
    cr_assert(n <= 64);
    cr_assert_eq(kvb_pool_allocate(p, n, m, NULL, NULL), 0);
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(kvb_mutable_stage(&m[i], h[i], &c[i]), 0);
    cr_assert_eq(kvb_pool_register(p, c, n, out), 0);
}

/* One block allocated and staged with hash h (not registered). */
static inline kvb_complete tu_stage1(kvb_pool *p, kvb_hash h)
{
    kvb_mutable m;
    kvb_complete c;
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    cr_assert_eq(kvb_mutable_stage(&m, h, &c), 0);
    return c;
}

/* One block of hash h allocated, staged and registered: its reference. */
static inline kvb_block tu_put1(kvb_pool *p, kvb_hash h)
{
    kvb_complete c = tu_stage1(p, h);
    kvb_block b;
    cr_assert_eq(kvb_pool_register(p, &c, 1, &b), 0);
    return b;
}

/* Does the registry r report hash h present in pool p? */
static inline bool tu_present(kvb_registry *r, kvb_pool *p, kvb_hash h)
{
    bool out = false;
    int n = kvb_registry_present(r, &h, 1, p, &out);
    cr_assert(n == 0 || n == 1, "kvb_registry_present = %d", n);
    cr_assert_eq(n == 1, out);
    return out;
}

/* End of every scenario: invariants hold and nothing is outstanding. */
static inline void tu_finish(kvb_pool *p)
{
    cr_assert_eq(kvb_pool_check(p), 0, "kvb_pool_check failed");
    cr_assert_eq(kvb_pool_destroy(p), 0, "pool still has outstanding handles");
}

/* A simple distinct hash for small integers (position = i % 256). */
static inline kvb_hash tu_hash(uint64_t i)
{
    kvb_hash h;
    kvb_hash_make(0x1000 + i, 0, false, 0, &h);
    return h;
}

/* A chain of n hashes starting from id base: h[j] = (base + j, parent base + j - 1, j). */
static inline void tu_chain(uint64_t base, uint32_t n, kvb_hash *out)
{
    for (uint32_t j = 0; j < n; j++)
        kvb_hash_make(base + j, base + j - 1, j > 0, j, &out[j]);
}

#endif
