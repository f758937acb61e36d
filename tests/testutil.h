/*
 * testutil.h - shared helpers for the Criterion suites.
 * Every test ends with kvb_pool_check() clean and kvb_pool_destroy() == 0, so
 * a leaked handle fails the test.
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
