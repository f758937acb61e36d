/*
 * test_hint.c - lookahead hints (kvb_pool_hint, lib/hint.c): argument checking,
 * capacity, statistics, memory, metrics, and the heap and table under churn.
 * The eviction order under hints is checked for every backend by the
 * conformance suite (tests/test_inactive.c, conformance::hints_*).
 */
#include "testutil.h"
#include "support/rng.h"

#include <stdio.h>
#include <stdlib.h>

static kvb_pool *hint_pool(uint32_t blocks, uint32_t cap, kvb_evict_policy policy)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = blocks;
    cfg.evict = policy;
    cfg.hint_capacity = cap;
    return tu_pool_cfg(&cfg);
}

/* Register h[0..n) as one request and release it (last block first). */
static void put(kvb_pool *p, const kvb_hash *h, uint32_t n)
{
    kvb_block b[16];
    kvb_mutable m[16];
    kvb_complete c[16];
    int k = kvb_pool_match(p, h, n, b);
    cr_assert_geq(k, 0);
    uint32_t miss = n - (uint32_t)k;
    if (miss) {
        cr_assert_eq(kvb_pool_allocate(p, miss, m, NULL, NULL), 0);
        cr_assert_eq(kvb_pool_stage(p, m, h + k, miss, c), 0);
        cr_assert_eq(kvb_pool_register(p, c, miss, b + k), 0);
    }
    for (uint32_t i = n; i-- > 0;)
        cr_assert_eq(kvb_block_release(&b[i]), 0);
}

Test(hint, arguments)
{
    kvb_pool *p = hint_pool(16, 8, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(1), bad = {.hi = 3ull << 62, .lo = 0};
    cr_assert_eq(kvb_pool_hint(NULL, &h, 1, 1), -EINVAL);
    cr_assert_eq(kvb_pool_hint(p, NULL, 1, 1), -EINVAL);
    cr_assert_eq(kvb_pool_hint(p, &h, 1, 0), -EINVAL);
    cr_assert_eq(kvb_pool_hint(p, &bad, 1, 1), -EINVAL);
    cr_assert_eq(kvb_pool_hint(p, NULL, 0, 1), 0);
    cr_assert_eq(kvb_pool_hint(p, &h, 0, -1), 0);
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.hint_uses, 0);
    cr_assert_eq(st.hint_added + st.hint_withdrawn + st.hint_unmatched + st.hint_rejected, 0);
    tu_finish(p);

    kvb_pool *q = tu_pool(16, KVB_EVICT_LRU); /* no hint capacity */
    cr_assert_eq(kvb_pool_hint(q, &h, 1, 1), -ENOTSUP);
    cr_assert_eq(kvb_pool_hint(q, &h, 1, -1), -ENOTSUP);
    tu_finish(q);

    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 16;
    cfg.hint_capacity = (1u << 30) + 1;
    kvb_pool *r = NULL;
    cr_assert_eq(kvb_pool_create(&cfg, &r), -EINVAL);
}

Test(hint, capacity_all_or_nothing)
{
    kvb_pool *p = hint_pool(16, 4, KVB_EVICT_LRU);
    kvb_hash h[8];
    for (uint32_t i = 0; i < 8; i++)
        h[i] = tu_hash(10 + i);
    cr_assert_eq(kvb_pool_hint(p, h, 3, 1), 0);
    cr_assert_eq(kvb_pool_hint(p, h + 3, 2, 1), -ENOSPC); /* 5 > 4 */
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.hint_hashes, 3);
    cr_assert_eq(st.hint_uses, 3);
    cr_assert_eq(st.hint_rejected, 1);
    /* the bound is conservative: n free entries and n free records */
    cr_assert_eq(kvb_pool_hint(p, h, 1, 1), 0);
    cr_assert_eq(kvb_pool_hint(p, h, 1, 1), 0);
    cr_assert_eq(kvb_pool_hint(p, h, 2, 1), -ENOSPC);
    cr_assert_eq(kvb_pool_check(p), 0);
    cr_assert_eq(kvb_pool_hint(p, h, 3, -3), 0);
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.hint_hashes, 0);
    cr_assert_eq(st.hint_uses, 0);
    cr_assert_eq(st.hint_added, 5);
    cr_assert_eq(st.hint_withdrawn, 5);
    cr_assert_eq(st.hint_unmatched, 4); /* h[1], h[2] had 1 use each, 3 were withdrawn */
    cr_assert_eq(st.hint_rejected, 2);
    tu_finish(p);
}

Test(hint, large_deltas)
{
    kvb_pool *p = hint_pool(16, 8, KVB_EVICT_LRU);
    kvb_hash h[2] = {tu_hash(1), tu_hash(1)}; /* the same hash twice in one call */
    cr_assert_eq(kvb_pool_hint(p, h, 2, INT32_MAX), 0);
    cr_assert_eq(kvb_pool_hint(p, h, 2, INT32_MAX), 0);
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.hint_hashes, 1);
    cr_assert_eq(st.hint_uses, 4ull * INT32_MAX);
    cr_assert_eq(kvb_pool_check(p), 0);
    cr_assert_eq(kvb_pool_hint(p, h, 2, INT32_MIN), 0);
    cr_assert_eq(kvb_pool_hint(p, h, 2, INT32_MIN), 0);
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.hint_uses, 0);
    cr_assert_eq(st.hint_unmatched, 4);
    tu_finish(p);
}

Test(hint, stats_memory_and_metrics)
{
    kvb_pool *p = hint_pool(8, 16, KVB_EVICT_LRU);
    kvb_memory_stats m;
    cr_assert_eq(kvb_pool_memory(p, &m), 0);
    cr_assert_gt(m.hints, 16 * 64);
    cr_assert_eq(m.total, m.slots + m.hash_index + m.backend + m.sketch + m.pool + m.hints);
    kvb_hash h[8];
    for (uint32_t i = 0; i < 8; i++) {
        h[i] = tu_hash(20 + i);
        put(p, &h[i], 1);
    }
    cr_assert_eq(kvb_pool_hint(p, h, 4, 1), 0);
    kvb_mutable mu[6];
    cr_assert_eq(kvb_pool_allocate(p, 6, mu, NULL, NULL), 0);
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.hint_protected, 2);
    cr_assert_eq(st.hint_evictions, 2);
    char buf[16384];
    int n = kvb_pool_metrics_text(p, buf, sizeof buf);
    cr_assert_gt(n, 0);
    cr_assert_lt(n, (int)sizeof buf);
    cr_assert_not_null(strstr(buf, "kvblock_hint_protected{pool=\"pool\"} 2\n"));
    cr_assert_not_null(strstr(buf, "kvblock_hint_uses{pool=\"pool\"} 4\n"));
    cr_assert_not_null(strstr(buf, "kvblock_hint_evictions_total{pool=\"pool\"} 2\n"));
    cr_assert_not_null(strstr(buf, "component=\"hints\"}"));
    for (uint32_t i = 0; i < 6; i++)
        cr_assert_eq(kvb_mutable_release(&mu[i]), 0);
    cr_assert_eq(kvb_pool_hint(p, h, 4, -1), 0);
    tu_finish(p);

    kvb_pool *q = tu_pool(8, KVB_EVICT_LRU);
    cr_assert_eq(kvb_pool_memory(q, &m), 0);
    cr_assert_eq(m.hints, 0);
    tu_finish(q);
}

/* Rollback of a failed allocation puts the blocks taken from the hint heap back. */
static uint32_t short_evict(void *self, uint32_t n, uint32_t *out)
{
    /* under-delivers (one less than asked although len() says more): a broken backend */
    return kvb_inactive_lru.evict(self, n > 1 ? n - 1 : n, out);
}

Test(hint, broken_backend_rollback_keeps_hints)
{
    static kvb_inactive_ops broken;
    broken = kvb_inactive_lru;
    broken.name = "broken";
    broken.evict = short_evict;
    broken.unevict = NULL;
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 8;
    cfg.evict_ops = &broken;
    cfg.hint_capacity = 8;
    kvb_pool *p = tu_pool_cfg(&cfg);
    kvb_hash h[8];
    for (uint32_t i = 0; i < 8; i++) {
        h[i] = tu_hash(40 + i);
        put(p, &h[i], 1);
    }
    cr_assert_eq(kvb_pool_hint(p, h, 8, 1), 0);
    kvb_mutable mu[8];
    cr_assert_eq(kvb_pool_allocate(p, 4, mu, NULL, NULL), -ENOSPC);
    cr_assert_eq(kvb_pool_check(p), 0);
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.inactive, 8);
    cr_assert_eq(st.reset, 0);
    cr_assert_eq(st.allocate_rollbacks, 1);
    cr_assert_eq(st.hint_evictions, 0);
    cr_assert_eq(st.hint_protected, 3); /* set apart while looking for victims: they stay */
    /* the heap's blocks go back too: a call that gets past the backend, then fails */
    cr_assert_eq(kvb_pool_hint(p, h + 3, 5, -1), 0);
    cr_assert_eq(kvb_pool_allocate(p, 8, mu, NULL, NULL), -ENOSPC);
    cr_assert_eq(kvb_pool_check(p), 0);
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.inactive, 8);
    cr_assert_eq(st.hint_evictions, 0);
    cr_assert_eq(kvb_pool_hint(p, h + 3, 5, 1), 0);
    cr_assert_eq(kvb_pool_hint(p, h, 8, -1), 0);
    cr_assert_eq(kvb_pool_check(p), 0);
    tu_finish(p);
}

/* Many hashes coming and going through a small table: probe runs, backward-shift
 * deletion, records, the heap, checked by kvb_pool_check as it goes. */
Test(hint, churn)
{
    const uint32_t blocks = 16, cap = 48;
    kvb_pool *p = hint_pool(blocks, cap, KVB_EVICT_LINEAGE_ARC);
    uint64_t seed = 7;
    uint32_t out[24], nout = 0; /* outstanding calls: first hash id, n, delta */
    struct {
        uint64_t first;
        uint32_t n;
        int32_t d;
    } q[24];
    for (int op = 0; op < 20000; op++) {
        uint32_t r = (uint32_t)(tu_lcg_next(&seed) >> 33);
        if (r % 3 == 0 && nout < 24) {
            uint64_t first = (r >> 4) % 20;
            uint32_t n = 1 + (r >> 12) % 4;
            int32_t d = 1 + (int32_t)((r >> 16) % 3);
            kvb_hash hs[4];
            tu_chain(first * 8, n, hs);
            int rc = kvb_pool_hint(p, hs, n, d);
            cr_assert(rc == 0 || rc == -ENOSPC);
            if (rc == 0) {
                q[nout].first = first;
                q[nout].n = n;
                q[nout].d = d;
                out[nout] = nout;
                nout++;
            }
        } else if (r % 3 == 1 && nout > 0) {
            uint32_t i = (r >> 4) % nout; /* out of order too */
            kvb_hash hs[4];
            tu_chain(q[i].first * 8, q[i].n, hs);
            cr_assert_eq(kvb_pool_hint(p, hs, q[i].n, -q[i].d), 0);
            q[i] = q[--nout];
        } else {
            kvb_hash hs[4];
            uint32_t n = 1 + (r >> 8) % 4;
            tu_chain(((r >> 12) % 20) * 8, n, hs);
            put(p, hs, n);
        }
        if (op % 256 == 0)
            cr_assert_eq(kvb_pool_check(p), 0, "op %d", op);
    }
    (void)out;
    while (nout) {
        kvb_hash hs[4];
        tu_chain(q[nout - 1].first * 8, q[nout - 1].n, hs);
        cr_assert_eq(kvb_pool_hint(p, hs, q[nout - 1].n, -q[nout - 1].d), 0);
        nout--;
    }
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.hint_uses, 0);
    cr_assert_eq(st.hint_hashes, 0);
    cr_assert_eq(st.hint_protected, 0);
    cr_assert_eq(st.hint_unmatched, 0);
    cr_assert_gt(st.hint_evictions, 0);
    tu_finish(p);
}
