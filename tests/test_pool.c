/*
 * test_pool.c - the pool state machine through the public API: allocation,
 * staging, registration (ALLOW/REJECT), prefix and scattered match, weak
 * handles, reset-on-release, eviction order, callbacks, misuse, rollback.
 * Every test ends with kvb_pool_check() clean and kvb_pool_destroy() == 0.
 */
#include "testutil.h"
#include "testing.h"

/* ---- helpers -------------------------------------------------------------- */

/* Allocate, stage and register n blocks with hashes h[0..n); out gets the refs. */
static void put(kvb_pool *p, const kvb_hash *h, uint32_t n, kvb_block *out)
{
    kvb_mutable m[64];
    kvb_complete c[64];
    cr_assert(n <= 64);
    cr_assert_eq(kvb_pool_allocate(p, n, m, NULL, NULL), 0);
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(kvb_mutable_stage(&m[i], h[i], &c[i]), 0);
    cr_assert_eq(kvb_pool_register(p, c, n, out), 0);
}

/* Put n blocks and release them all into the cache (in order 0..n-1). */
static void cache(kvb_pool *p, const kvb_hash *h, uint32_t n, uint32_t *ids)
{
    kvb_block b[64];
    put(p, h, n, b);
    for (uint32_t i = 0; i < n; i++) {
        if (ids)
            ids[i] = b[i].id;
        cr_assert_eq(kvb_block_release(&b[i]), 0);
    }
}

static kvb_stats stats(kvb_pool *p)
{
    kvb_stats s;
    cr_assert_eq(kvb_pool_stats(p, &s), 0);
    return s;
}

/* ---- configuration -------------------------------------------------------- */

Test(config, defaults_and_validation)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cr_expect_eq(cfg.block_size, 16);
    cr_expect_eq(cfg.dup_policy, KVB_DUP_ALLOW);
    cr_expect_eq(cfg.evict, KVB_EVICT_LRU);
    cr_expect_eq(cfg.multi_lru_thresholds[0], 3);
    cr_expect_eq(cfg.multi_lru_thresholds[2], 15);
    kvb_pool *p = NULL;
    cr_expect_eq(kvb_pool_create(&cfg, &p), -EINVAL, "block_count 0");
    cr_expect_null(p);
    cfg.block_count = 8;
    cfg.block_size = 12;
    cr_expect_eq(kvb_pool_create(&cfg, &p), -EINVAL, "block size not a power of two");
    cfg.block_size = 2048;
    cr_expect_eq(kvb_pool_create(&cfg, &p), -EINVAL, "block size too large");
    cfg.block_size = 16;
    cfg.multi_lru_thresholds[1] = 2;
    cr_expect_eq(kvb_pool_create(&cfg, &p), -EINVAL, "thresholds not ascending");
    cfg.multi_lru_thresholds[1] = 8;
    cfg.multi_lru_thresholds[2] = 16;
    cr_expect_eq(kvb_pool_create(&cfg, &p), -EINVAL, "threshold above 15");
    cfg.multi_lru_thresholds[2] = 15;
    cfg.evict = (kvb_evict_policy)99;
    cr_expect_eq(kvb_pool_create(&cfg, &p), -EINVAL, "bad policy");
    cfg.evict = KVB_EVICT_LRU;
    cfg.block_count = KVB_MAX_BLOCKS + 1;
    cr_expect_eq(kvb_pool_create(&cfg, &p), -EINVAL, "too many blocks");
    cr_expect_eq(kvb_pool_create(NULL, &p), -EINVAL);
    cfg.block_count = 8;
    cr_expect_eq(kvb_pool_create(&cfg, NULL), -EINVAL);
    cr_expect_null(p);
    cfg.name = "gpu";
    p = tu_pool_cfg(&cfg);
    cr_expect_str_eq(kvb_pool_name(p), "gpu");
    cr_expect_str_eq(kvb_pool_policy_name(p), "lru");
    cr_expect_eq(kvb_pool_block_count(p), 8);
    cr_expect_eq(kvb_pool_block_size(p), 16);
    cr_expect_eq(kvb_pool_available(p), 8);
    tu_finish(p);
}

Test(config, pool_ids_unique_nonzero)
{
    kvb_pool *a = tu_pool(4, KVB_EVICT_LRU), *b = tu_pool(4, KVB_EVICT_FIFO);
    cr_expect_neq(kvb_pool_id(a), 0);
    cr_expect_neq(kvb_pool_id(b), 0);
    cr_expect_neq(kvb_pool_id(a), kvb_pool_id(b));
    tu_finish(a);
    tu_finish(b);
}

Test(config, unbuilt_policies_enotsup_or_work)
{
    /* Policies whose backend is not built in must say -ENOTSUP, never crash. */
    kvb_evict_policy pol[] = {KVB_EVICT_MULTI_LRU, KVB_EVICT_TINYLFU, KVB_EVICT_LINEAGE};
    for (int i = 0; i < 3; i++) {
        kvb_pool_config cfg;
        kvb_pool_config_init(&cfg);
        cfg.block_count = 4;
        cfg.evict = pol[i];
        kvb_pool *p = NULL;
        int rc = kvb_pool_create(&cfg, &p);
        if (kvb_inactive_builtin(pol[i]) == NULL) {
            cr_expect_eq(rc, -ENOTSUP);
        } else {
            cr_expect_eq(rc, 0);
            tu_finish(p);
        }
    }
}

/* ---- allocation ----------------------------------------------------------- */

Test(allocate, all_or_nothing)
{
    kvb_pool *p = tu_pool(8, KVB_EVICT_LRU);
    kvb_mutable m[9];
    kvb_stats before = stats(p);
    cr_expect_eq(kvb_pool_allocate(p, 9, m, NULL, NULL), -ENOSPC);
    kvb_stats after = stats(p);
    cr_expect_eq(memcmp(&before.reset, &after.reset, sizeof(uint32_t) * 6), 0);
    cr_expect_eq(after.allocations, 0);
    cr_expect_eq(kvb_pool_available(p), 8);
    /* n = 0 is a no-op */
    cr_expect_eq(kvb_pool_allocate(p, 0, NULL, NULL, NULL), 0);
    cr_expect_eq(kvb_pool_allocate(p, 8, m, NULL, NULL), 0);
    for (uint32_t i = 0; i < 8; i++)
        cr_expect_eq(m[i].id, i, "the free list is FIFO in id order at start");
    cr_expect_eq(kvb_pool_available(p), 0);
    kvb_mutable x;
    cr_expect_eq(kvb_pool_allocate(p, 1, &x, NULL, NULL), -ENOSPC);
    for (uint32_t i = 0; i < 8; i++)
        cr_expect_eq(kvb_mutable_release(&m[i]), 0);
    tu_finish(p);
}

Test(allocate, free_list_first_then_eviction_reports_hashes)
{
    kvb_pool *p = tu_pool(8, KVB_EVICT_LRU);
    kvb_hash h[4];
    for (int i = 0; i < 4; i++)
        h[i] = tu_hash((uint64_t)i);
    uint32_t ids[4];
    cache(p, h, 4, ids); /* 4 cached, 4 free */
    kvb_mutable m[6];
    kvb_hash ev[6];
    uint32_t nev = 99;
    cr_assert_eq(kvb_pool_allocate(p, 6, m, ev, &nev), 0);
    cr_expect_eq(nev, 2);
    cr_expect(kvb_hash_equal(ev[0], h[0]), "LRU: first released is evicted first");
    cr_expect(kvb_hash_equal(ev[1], h[1]));
    cr_expect_eq(m[4].id, ids[0]);
    cr_expect_eq(m[5].id, ids[1]);
    kvb_stats s = stats(p);
    cr_expect_eq(s.allocations, 6 + 4);
    cr_expect_eq(s.allocations_from_reset, 4 + 4);
    cr_expect_eq(s.evictions, 2);
    cr_expect_eq(s.inactive, 2);
    kvb_block b[2];
    cr_expect_eq(kvb_pool_match(p, h, 4, b), 0, "evicted hashes are gone");
    cr_expect_eq(kvb_pool_match(p, h + 2, 2, b), 2, "the others are still cached");
    kvb_block_release_n(b, 2);
    for (int i = 0; i < 6; i++)
        kvb_mutable_release(&m[i]);
    tu_finish(p);
}

/* ---- release of unregistered blocks never caches ----------------------------- */

Test(lifecycle, mutable_and_complete_release_never_cache)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_mutable m[2];
    kvb_complete c;
    cr_assert_eq(kvb_pool_allocate(p, 2, m, NULL, NULL), 0);
    cr_assert_eq(kvb_mutable_stage(&m[0], tu_hash(1), &c), 0);
    cr_expect_null(m[0].pool, "stage consumes the mutable handle");
    cr_expect_eq(kvb_complete_release(&c), 0);
    cr_expect_null(c.pool);
    cr_expect_eq(kvb_mutable_release(&m[1]), 0);
    kvb_stats s = stats(p);
    cr_expect_eq(s.inactive, 0);
    cr_expect_eq(s.reset, 4);
    kvb_hash h = tu_hash(1);
    kvb_block b;
    cr_expect_eq(kvb_pool_match(p, &h, 1, &b), 0);
    tu_finish(p);
}

Test(lifecycle, complete_reset_back_to_mutable)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU);
    kvb_mutable m;
    kvb_complete c;
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    uint32_t id = m.id;
    cr_assert_eq(kvb_mutable_stage(&m, tu_hash(7), &c), 0);
    cr_assert_eq(kvb_complete_reset(&c, &m), 0);
    cr_expect_eq(m.id, id);
    cr_expect_null(c.pool);
    kvb_stats s = stats(p);
    cr_expect_eq(s.mutable_, 1);
    cr_expect_eq(s.staged, 0);
    cr_expect_eq(s.stagings, 1);
    cr_expect_eq(kvb_mutable_release(&m), 0);
    tu_finish(p);
}

Test(lifecycle, register_release_match_same_block)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(42);
    kvb_block b;
    put(p, &h, 1, &b);
    uint32_t id = b.id;
    cr_expect_eq(kvb_block_use_count(&b), 1);
    cr_expect_eq(kvb_block_release(&b), 0);
    cr_expect_eq(stats(p).inactive, 1);
    cr_expect_eq(kvb_pool_available(p), 4);
    kvb_block again;
    cr_expect_eq(kvb_pool_match(p, &h, 1, &again), 1);
    cr_expect_eq(again.id, id, "the cached block itself comes back");
    cr_expect(kvb_hash_equal(again.hash, h));
    cr_expect_eq(stats(p).resurrections, 1);
    cr_expect_eq(kvb_block_release(&again), 0);
    tu_finish(p);
}

Test(lifecycle, stage_rejects_invalid_hash_mode)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU);
    kvb_mutable m;
    kvb_complete c;
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    kvb_hash bad = {UINT64_MAX, 0};
    cr_expect_eq(kvb_mutable_stage(&m, bad, &c), -EINVAL);
    cr_expect_not_null(m.pool, "a failed call consumes nothing");
    cr_expect_eq(kvb_mutable_release(&m), 0);
    tu_finish(p);
}

/* ---- match ------------------------------------------------------------------ */

Test(match, prefix_mix_stops_at_first_miss_without_resurrecting_later)
{
    kvb_pool *p = tu_pool(16, KVB_EVICT_LRU);
    kvb_hash h[5];
    tu_chain(100, 5, h);
    kvb_block act0, act2;
    put(p, &h[0], 1, &act0);                   /* h0 active */
    cache(p, &h[1], 1, NULL);                  /* h1 cached */
    put(p, &h[2], 1, &act2);                   /* h2 active */
    /* h3 missing */ cache(p, &h[4], 1, NULL); /* h4 cached, after the gap */
    kvb_block out[5];
    int k = kvb_pool_match(p, h, 5, out);
    cr_expect_eq(k, 3);
    cr_expect_eq(out[0].id, act0.id);
    cr_expect_eq(out[2].id, act2.id);
    cr_expect_eq(kvb_block_use_count(&out[0]), 2);
    kvb_stats s = stats(p);
    cr_expect_eq(s.inactive, 1, "h4 stays cached: not resurrected past the miss");
    cr_expect_eq(s.resurrections, 1);
    cr_expect_eq(s.match_requested, 5);
    cr_expect_eq(s.match_returned, 3);
    cr_expect_eq(kvb_block_release_n(out, 3), 0);
    kvb_block_release(&act0);
    kvb_block_release(&act2);
    tu_finish(p);
}

Test(match, scattered_with_misses_and_repeats)
{
    kvb_pool *p = tu_pool(8, KVB_EVICT_LRU);
    kvb_hash h[3] = {tu_hash(1), tu_hash(2), tu_hash(3)};
    cache(p, h, 2, NULL); /* 1 and 2 cached, 3 never stored */
    kvb_hash q[5] = {h[2], h[0], h[0], h[1], h[2]};
    kvb_block out[5];
    bool hit[5];
    int k = kvb_pool_match_scattered(p, q, 5, out, hit);
    cr_expect_eq(k, 3);
    cr_expect(!hit[0] && hit[1] && hit[2] && hit[3] && !hit[4]);
    cr_expect_null(out[0].pool, "a miss is zero-filled");
    cr_expect_eq(out[1].id, out[2].id, "a repeated hash takes two references");
    cr_expect_eq(kvb_block_use_count(&out[1]), 2);
    cr_expect_eq(kvb_pool_match_scattered(p, q, 0, NULL, NULL), 0);
    for (int i = 0; i < 5; i++)
        if (hit[i])
            cr_expect_eq(kvb_block_release(&out[i]), 0);
    tu_finish(p);
}

Test(match, zero_batches_are_noops)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU);
    cr_expect_eq(kvb_pool_match(p, NULL, 0, NULL), 0);
    cr_expect_eq(kvb_pool_register(p, NULL, 0, NULL), 0);
    cr_expect_eq(kvb_block_release_n(NULL, 0), 0);
    kvb_stats s = stats(p);
    cr_expect_eq(s.match_requested, 0);
    cr_expect_eq(kvb_pool_match(p, NULL, 1, NULL), -EINVAL);
    tu_finish(p);
}

/* ---- duplication policies ---------------------------------------------------- */

Test(dup, allow_duplicate_keeps_primary_alive)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(9);
    kvb_block prim, dup;
    put(p, &h, 1, &prim);
    put(p, &h, 1, &dup);
    cr_expect_neq(dup.id, prim.id);
    kvb_stats s = stats(p);
    cr_expect_eq(s.primary, 1);
    cr_expect_eq(s.duplicate, 1);
    cr_expect_eq(s.duplicates, 1);
    cr_expect_eq(kvb_block_use_count(&prim), 2, "the duplicate holds one reference");
    uint32_t pid = prim.id;
    cr_expect_eq(kvb_block_release(&prim), 0);
    /* the primary is still PRIMARY (held by the duplicate): not evictable */
    cr_expect_eq(stats(p).inactive, 0);
    kvb_mutable m[3];
    cr_expect_eq(kvb_pool_allocate(p, 3, m, NULL, NULL), -ENOSPC);
    cr_expect_eq(kvb_pool_allocate(p, 2, m, NULL, NULL), 0);
    kvb_mutable_release(&m[0]);
    kvb_mutable_release(&m[1]);
    /* a match finds the primary, not the duplicate */
    kvb_block hit;
    cr_expect_eq(kvb_pool_match(p, &h, 1, &hit), 1);
    cr_expect_eq(hit.id, pid);
    kvb_block_release(&hit);
    /* dropping the duplicate: DUPLICATE -> RESET, then the primary is cached */
    cr_expect_eq(kvb_block_release(&dup), 0);
    s = stats(p);
    cr_expect_eq(s.duplicate, 0);
    cr_expect_eq(s.inactive, 1);
    cr_expect_eq(s.reset, 3);
    tu_finish(p);
}

Test(dup, reject_returns_existing_primary)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 4;
    cfg.dup_policy = KVB_DUP_REJECT;
    kvb_pool *p = tu_pool_cfg(&cfg);
    kvb_hash h = tu_hash(5);
    kvb_block a, b;
    put(p, &h, 1, &a);
    put(p, &h, 1, &b);
    cr_expect_eq(b.id, a.id, "REJECT hands back the primary");
    cr_expect_eq(kvb_block_use_count(&a), 2);
    kvb_stats s = stats(p);
    cr_expect_eq(s.dedups, 1);
    cr_expect_eq(s.duplicate, 0);
    cr_expect_eq(s.reset, 3, "the staged block went back to the free list");
    kvb_block_release(&a);
    kvb_block_release(&b);
    tu_finish(p);
}

Test(dup, register_of_cached_hash_resurrects_first)
{
    for (int pol = 0; pol < 2; pol++) {
        kvb_pool_config cfg;
        kvb_pool_config_init(&cfg);
        cfg.block_count = 4;
        cfg.dup_policy = pol ? KVB_DUP_REJECT : KVB_DUP_ALLOW;
        kvb_pool *p = tu_pool_cfg(&cfg);
        kvb_hash h = tu_hash(77);
        uint32_t cached_id;
        cache(p, &h, 1, &cached_id);
        kvb_block b;
        put(p, &h, 1, &b);
        kvb_stats s = stats(p);
        cr_expect_eq(s.inactive, 0, "the cached block was resurrected");
        cr_expect_eq(s.primary, 1);
        if (pol == 0) {
            cr_expect_eq(s.duplicate, 1);
            cr_expect_neq(b.id, cached_id);
        } else {
            cr_expect_eq(b.id, cached_id);
        }
        kvb_block_release(&b);
        s = stats(p);
        cr_expect_eq(s.inactive, 1, "after the last release the primary is cached again");
        tu_finish(p);
    }
}

Test(dup, same_hash_twice_in_one_batch)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_hash h[2] = {tu_hash(3), tu_hash(3)};
    kvb_block b[2];
    put(p, h, 2, b);
    kvb_stats s = stats(p);
    cr_expect_eq(s.primary, 1);
    cr_expect_eq(s.duplicate, 1);
    kvb_block_release_n(b, 2);
    tu_finish(p);
}

/* ---- rollback with a backend that under-delivers ------------------------------ */

static bool short_mode;
static int short_evict_calls, short_after; /* under-deliver from call number short_after on */
static uint32_t short_evict(void *self, uint32_t n, uint32_t *out)
{
    short_evict_calls++;
    uint32_t k = kvb_inactive_lru.evict(self, n, out);
    if (short_mode && k > 0 && short_evict_calls > short_after) {
        kvb_hash dummy = {0, 0};
        /* give the last one back and report one fewer */
        kvb_inactive_lru.unevict(self, &out[k - 1], &dummy, (uint32_t[]){0}, 1);
        return k - 1;
    }
    return k;
}

Test(allocate, rollback_restores_free_list_and_cache_exactly)
{
    kvb_inactive_ops ops = kvb_inactive_lru;
    ops.name = "short-lru";
    ops.evict = short_evict;
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 8;
    cfg.evict_ops = &ops;
    kvb_pool *p = tu_pool_cfg(&cfg);
    cr_expect_str_eq(kvb_pool_policy_name(p), "short-lru");
    /* shuffle the free list: allocate 8, release in a scrambled order */
    kvb_mutable m[8];
    cr_assert_eq(kvb_pool_allocate(p, 8, m, NULL, NULL), 0);
    const int order[8] = {5, 2, 7, 0, 3, 6, 1, 4};
    for (int i = 0; i < 8; i++)
        kvb_mutable_release(&m[order[i]]);
    /* cache 4 blocks (ids 5 2 7 0 from the free list), free list now 3 6 1 4 */
    kvb_hash h[4];
    for (int i = 0; i < 4; i++)
        h[i] = tu_hash((uint64_t)(50 + i));
    uint32_t ids[4];
    cache(p, h, 4, ids);
    short_mode = true;
    kvb_mutable big[6];
    kvb_stats before = stats(p);
    cr_expect_eq(kvb_pool_allocate(p, 6, big, NULL, NULL), -ENOSPC);
    kvb_stats after = stats(p);
    cr_expect_eq(after.allocate_rollbacks, 1);
    cr_expect_eq(after.inactive, before.inactive);
    cr_expect_eq(after.reset, before.reset);
    cr_expect_eq(after.evictions, before.evictions);
    cr_assert_eq(kvb_pool_check(p), 0);
    short_mode = false;
    /* exactly the same free-list order and eviction order as before */
    kvb_hash ev[6];
    uint32_t nev;
    cr_assert_eq(kvb_pool_allocate(p, 6, big, ev, &nev), 0);
    const uint32_t free_order[4] = {3, 6, 1, 4};
    for (int i = 0; i < 4; i++)
        cr_expect_eq(big[i].id, free_order[i], "free list position %d", i);
    cr_expect_eq(nev, 2);
    cr_expect_eq(big[4].id, ids[0]);
    cr_expect_eq(big[5].id, ids[1]);
    cr_expect(kvb_hash_equal(ev[0], h[0]));
    for (int i = 0; i < 6; i++)
        kvb_mutable_release(&big[i]);
    tu_finish(p);
}

/* A custom backend without unevict that under-delivers: what kvblock/inactive.h
 * promises ("What a failed allocation restores"): the pool's state exactly, the
 * same blocks cached, re-inserted in reverse eviction order (this LRU-based backend
 * puts them at its most recently used end, so they now leave last). */
static uint32_t short_evict_no_unevict(void *self, uint32_t n, uint32_t *out)
{
    uint32_t k = kvb_inactive_lru.evict(self, n, out);
    if (short_mode && k > 0) {
        kvb_hash dummy = {0, 0};
        /* its own business: give the last one back to its list, report one fewer */
        kvb_inactive_lru.unevict(self, &out[k - 1], &dummy, (uint32_t[]){0}, 1);
        return k - 1;
    }
    return k;
}

static void cb_count(void *u, uint32_t id)
{
    (void)id;
    ++*(int *)u;
}

Test(allocate, rollback_without_unevict_restores_the_pool_and_the_cached_set)
{
    static int resets;
    resets = 0;
    kvb_inactive_ops ops = kvb_inactive_lru;
    ops.name = "short-lru-no-unevict";
    ops.evict = short_evict_no_unevict;
    ops.unevict = NULL; /* optional: the pool must cope */
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 8;
    cfg.evict_ops = &ops;
    cfg.callbacks = (kvb_callbacks){.user = &resets, .on_reset = cb_count};
    kvb_pool *p = tu_pool_cfg(&cfg);
    /* 4 cached (LRU order h0 h1 h2 h3), free list 4 5 6 7 */
    kvb_hash h[4];
    for (int i = 0; i < 4; i++)
        h[i] = tu_hash((uint64_t)(70 + i));
    uint32_t ids[4];
    cache(p, h, 4, ids);
    short_mode = true;
    kvb_mutable big[7];
    kvb_stats before = stats(p);
    cr_expect_eq(kvb_pool_allocate(p, 7, big, NULL, NULL), -ENOSPC, "evict(3) gave 2");
    short_mode = false;
    kvb_stats after = stats(p);
    cr_expect_eq(after.allocate_rollbacks, before.allocate_rollbacks + 1);
    cr_expect_eq(after.reset, before.reset);
    cr_expect_eq(after.inactive, before.inactive);
    cr_expect_eq(after.mutable_, 0);
    cr_expect_eq(after.evictions, before.evictions);
    cr_expect_eq(after.allocations, before.allocations);
    cr_expect_eq(resets, 0, "a failed call fires no callback");
    cr_assert_eq(kvb_pool_check(p), 0);
    /* the same content is cached, under the same ids, reachable by hash */
    kvb_block b[4];
    bool hit[4];
    cr_expect_eq(kvb_pool_scan(p, h, 4, false, b, hit), 4);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(b[i].id, ids[i], "content %d in its block", i);
    kvb_block_release_n(b, 4); /* back in order h0 h1 h2 h3 */
    /* the free list order exactly; the backend's order is whatever insert made of it:
     * repeat the failure, then look at the order the blocks leave */
    short_mode = true;
    cr_expect_eq(kvb_pool_allocate(p, 7, big, NULL, NULL), -ENOSPC);
    short_mode = false;
    /* victims h0, h1 were re-inserted as h1 then h0: order now h2 h3 h1 h0 */
    kvb_hash ev[4];
    uint32_t nev;
    cr_assert_eq(kvb_pool_allocate(p, 7, big, ev, &nev), 0);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(big[i].id, (uint32_t)(4 + i), "free list position %d", i);
    cr_assert_eq(nev, 3);
    cr_expect(kvb_hash_equal(ev[0], h[2]), "untouched blocks leave first");
    cr_expect(kvb_hash_equal(ev[1], h[3]));
    cr_expect(kvb_hash_equal(ev[2], h[1]), "re-inserted in reverse eviction order");
    for (int i = 0; i < 7; i++)
        kvb_mutable_release(&big[i]);
    tu_finish(p);
}

/* ---- reset on release ---------------------------------------------------------- */

Test(reset_on_release, per_block_only_on_last_reference)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(1);
    kvb_block a, b;
    put(p, &h, 1, &a);
    cr_assert_eq(kvb_block_clone(&a, &b), 0);
    cr_expect_eq(kvb_block_set_reset_on_release(&a, true), 0);
    kvb_block_release(&a);
    cr_expect_eq(stats(p).primary, 1, "not on a non-last release");
    kvb_block_release(&b);
    kvb_stats s = stats(p);
    cr_expect_eq(s.inactive, 0);
    cr_expect_eq(s.reset, 4);
    kvb_block m;
    cr_expect_eq(kvb_pool_match(p, &h, 1, &m), 0, "reset content is not cached");
    tu_finish(p);
}

Test(reset_on_release, store_default_and_per_block_override_survive_cache_round_trip)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 4;
    cfg.reset_on_release = true;
    kvb_pool *p = tu_pool_cfg(&cfg);
    kvb_hash h1 = tu_hash(1), h2 = tu_hash(2);
    kvb_block a, b;
    put(p, &h1, 1, &a);
    kvb_block_release(&a);
    cr_expect_eq(stats(p).inactive, 0, "store-wide default resets");
    put(p, &h2, 1, &b);
    cr_expect_eq(kvb_block_set_reset_on_release(&b, false), 0);
    kvb_block_release(&b);
    cr_expect_eq(stats(p).inactive, 1, "per-block override caches");
    /* round trip: the override survives INACTIVE -> PRIMARY */
    cr_expect_eq(kvb_pool_match(p, &h2, 1, &b), 1);
    kvb_block_release(&b);
    cr_expect_eq(stats(p).inactive, 1, "still cached after the round trip");
    tu_finish(p);
}

Test(reset_on_release, flag_survives_round_trip_and_is_cleared_on_reuse)
{
    kvb_pool *p = tu_pool(1, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(1), g = tu_hash(2);
    kvb_block a, c;
    put(p, &h, 1, &a);
    cr_assert_eq(kvb_block_clone(&a, &c), 0);
    /* set while referenced, then drop the flag holder's interest through the cache:
     * the per-block flag stays with the content */
    cr_expect_eq(kvb_block_set_reset_on_release(&a, true), 0);
    cr_expect_eq(kvb_block_set_reset_on_release(&a, false), 0);
    kvb_block_release(&a);
    kvb_block_release(&c);
    cr_expect_eq(stats(p).inactive, 1);
    cr_expect_eq(kvb_pool_match(p, &h, 1, &a), 1);
    cr_expect_eq(kvb_block_set_reset_on_release(&a, true), 0);
    kvb_block_release(&a);
    cr_expect_eq(stats(p).inactive, 0, "flag set after a round trip is honoured");
    /* reuse of the slot for new content starts from the store default (false) */
    put(p, &g, 1, &a);
    kvb_block_release(&a);
    cr_expect_eq(stats(p).inactive, 1, "flag cleared on reuse");
    tu_finish(p);
}

/* ---- eviction order through the pool ------------------------------------------ */

Test(order, lru_evicts_least_recently_released)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_hash h[4];
    for (int i = 0; i < 4; i++)
        h[i] = tu_hash((uint64_t)i);
    kvb_block b[4];
    put(p, h, 4, b);
    const int rel[4] = {2, 0, 3, 1};
    for (int i = 0; i < 4; i++)
        kvb_block_release(&b[rel[i]]);
    /* a hit takes 0 out and its release puts it at the recent end */
    kvb_block x;
    cr_assert_eq(kvb_pool_match(p, &h[0], 1, &x), 1);
    kvb_block_release(&x);
    kvb_mutable m[4];
    kvb_hash ev[4];
    uint32_t nev;
    cr_assert_eq(kvb_pool_allocate(p, 4, m, ev, &nev), 0);
    const int want[4] = {2, 3, 1, 0};
    for (int i = 0; i < 4; i++)
        cr_expect(kvb_hash_equal(ev[i], h[want[i]]), "eviction %d", i);
    for (int i = 0; i < 4; i++)
        kvb_mutable_release(&m[i]);
    tu_finish(p);
}

Test(order, fifo_evicts_by_first_registration)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_FIFO);
    kvb_hash h[4];
    for (int i = 0; i < 4; i++)
        h[i] = tu_hash((uint64_t)i);
    kvb_block b[4];
    put(p, h, 4, b); /* arrival order 0 1 2 3 */
    const int rel[4] = {2, 0, 3, 1};
    for (int i = 0; i < 4; i++)
        kvb_block_release(&b[rel[i]]);
    kvb_block x;
    cr_assert_eq(kvb_pool_match(p, &h[0], 1, &x), 1);
    kvb_block_release(&x); /* a resurrection does not refresh its place */
    kvb_mutable m[4];
    kvb_hash ev[4];
    uint32_t nev;
    cr_assert_eq(kvb_pool_allocate(p, 4, m, ev, &nev), 0);
    for (int i = 0; i < 4; i++)
        cr_expect(kvb_hash_equal(ev[i], h[i]), "eviction %d in arrival order", i);
    for (int i = 0; i < 4; i++)
        kvb_mutable_release(&m[i]);
    tu_finish(p);
}

/* ---- weak handles -------------------------------------------------------------- */

Test(weak, upgrade_live_cached_and_gone)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(11);
    kvb_block b, u;
    put(p, &h, 1, &b);
    kvb_weak w;
    kvb_block_downgrade(&b, &w);
    cr_expect_eq(kvb_weak_upgrade(&w, &u), 0);
    cr_expect_eq(u.id, b.id);
    cr_expect_eq(kvb_block_use_count(&b), 2);
    kvb_block_release(&u);
    kvb_block_release(&b);
    /* cached: upgrade resurrects */
    cr_expect_eq(kvb_weak_upgrade(&w, &u), 0);
    cr_expect_eq(stats(p).resurrections, 1);
    kvb_block_release(&u);
    /* gone: evicted by allocation */
    kvb_mutable m[2];
    cr_assert_eq(kvb_pool_allocate(p, 2, m, NULL, NULL), 0);
    cr_expect_eq(kvb_weak_upgrade(&w, &u), -ENOENT);
    kvb_mutable_release(&m[0]);
    kvb_mutable_release(&m[1]);
    kvb_weak z;
    memset(&z, 0, sizeof z);
    cr_expect_eq(kvb_weak_upgrade(&z, &u), -EINVAL);
    tu_finish(p);
}

/* ---- clone, use count, address ------------------------------------------------ */

Test(refs, clone_use_count_address)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(3);
    kvb_block a, b;
    put(p, &h, 1, &a);
    cr_expect_eq(kvb_block_clone(&a, &b), 0);
    cr_expect_eq(kvb_block_use_count(&a), 2);
    kvb_block_addr ad;
    cr_expect_eq(kvb_block_address(&b, &ad), 0);
    cr_expect_eq(ad.pool_id, kvb_pool_id(p));
    cr_expect_eq(ad.block_id, a.id);
    cr_expect(kvb_hash_equal(ad.hash, h));
    kvb_block_release(&a);
    cr_expect_eq(kvb_block_use_count(&b), 1);
    cr_expect_eq(kvb_block_use_count(&a), 0, "a released handle counts nothing");
    kvb_block_release(&b);
    tu_finish(p);
}

Test(refs, refcount_overflow_is_eoverflow)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(3);
    kvb_block a, b;
    put(p, &h, 1, &a);
    kvb__test_set_refcount(p, a.id, UINT32_MAX - 1);
    cr_expect_eq(kvb_block_clone(&a, &b), -EOVERFLOW);
    kvb__test_set_refcount(p, a.id, 1);
    kvb_block_release(&a);
    tu_finish(p);
}

/* ---- callbacks ------------------------------------------------------------------ */

struct cb_log {
    kvb_pool *pool;
    char ev[64];
    uint32_t id[64];
    int n;
    int reentrant_available;
};

static void cb_reset(void *u, uint32_t id)
{
    struct cb_log *l = u;
    /* a callback may call back into the pool: this would deadlock if it ran
     * under the pool mutex */
    l->reentrant_available = (int)kvb_pool_available(l->pool);
    l->ev[l->n] = 'R';
    l->id[l->n++] = id;
}

static void cb_evict(void *u, kvb_hash h, uint32_t id)
{
    struct cb_log *l = u;
    (void)h;
    kvb_stats s;
    kvb_pool_stats(l->pool, &s);
    l->ev[l->n] = 'E';
    l->id[l->n++] = id;
}

Test(callbacks, counted_ordered_and_reentrant)
{
    static struct cb_log log;
    memset(&log, 0, sizeof log);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 3;
    cfg.callbacks = (kvb_callbacks){.user = &log, .on_reset = cb_reset, .on_evict = cb_evict};
    kvb_pool *p = tu_pool_cfg(&cfg);
    log.pool = p;
    kvb_hash h[3] = {tu_hash(1), tu_hash(2), tu_hash(3)};
    uint32_t ids[3];
    cache(p, h, 3, ids);
    cr_expect_eq(log.n, 0, "caching fires nothing");
    /* allocation evicting two: on_evict only, in eviction order */
    kvb_mutable m[2];
    cr_assert_eq(kvb_pool_allocate(p, 2, m, NULL, NULL), 0);
    cr_expect_eq(log.n, 2);
    cr_expect_eq(log.ev[0], 'E');
    cr_expect_eq(log.id[0], ids[0]);
    cr_expect_eq(log.id[1], ids[1]);
    /* mutable release: on_reset */
    kvb_mutable_release(&m[0]);
    cr_expect_eq(log.n, 3);
    cr_expect_eq(log.ev[2], 'R');
    cr_expect_eq(log.reentrant_available, 2, "free + inactive seen from the callback");
    kvb_mutable_release(&m[1]);
    /* reset_inactive: on_evict then on_reset per block */
    int before = log.n;
    cr_expect_eq(kvb_pool_reset_inactive(p), 1);
    cr_expect_eq(log.n, before + 2);
    cr_expect_eq(log.ev[before], 'E');
    cr_expect_eq(log.ev[before + 1], 'R');
    cr_expect_eq(log.id[before], ids[2]);
    cr_expect_eq(log.id[before + 1], ids[2]);
    cr_expect_eq(stats(p).evictions, 3);
    /* a failed call fires nothing */
    before = log.n;
    kvb_mutable big[4];
    cr_expect_eq(kvb_pool_allocate(p, 4, big, NULL, NULL), -ENOSPC);
    cr_expect_eq(log.n, before);
    tu_finish(p);
}

/* ---- reset_inactive while blocks are in use ------------------------------------- */

/* Events of a drain: type, and the hashes of REMOVED events, in delivery order. */
struct drain_log {
    struct cb_log cb;
    int types[16];
    uint32_t nev;
    kvb_hash removed[16];
    uint32_t nremoved;
};

static void drain_sink(void *user, const kvb_pool *pool, const kvb_event *ev, uint32_t n)
{
    struct drain_log *l = user;
    for (uint32_t i = 0; i < n; i++) {
        cr_assert_lt(l->nev, 16);
        l->types[l->nev++] = ev[i].type;
        for (uint32_t j = 0; ev[i].type == KVB_EVENT_REMOVED && j < ev[i].n; j++) {
            cr_assert_lt(l->nremoved, 16);
            l->removed[l->nremoved++] = ev[i].hashes[j];
        }
    }
}

Test(callbacks, reset_inactive_drains_cached_leaves_held_alone)
{
    static struct drain_log log;
    memset(&log, 0, sizeof log);
    kvb_event_config ec;
    kvb_event_config_init(&ec);
    ec.user = &log;
    ec.sink = drain_sink;
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 8;
    cfg.callbacks = (kvb_callbacks){.user = &log.cb, .on_reset = cb_reset, .on_evict = cb_evict};
    cfg.events = &ec;
    kvb_pool *p = tu_pool_cfg(&cfg);
    log.cb.pool = p;
    /* 3 cached, 2 primaries (one with a duplicate), 1 staged, 1 mutable: all 8 blocks */
    kvb_hash h[6] = {tu_hash(1), tu_hash(2), tu_hash(3), tu_hash(4), tu_hash(5), tu_hash(4)};
    kvb_block b[6];
    put(p, h, 6, b);
    uint32_t ids[3];
    for (int i = 0; i < 3; i++) {
        ids[i] = b[i].id;
        cr_assert_eq(kvb_block_release(&b[i]), 0); /* LRU order: h0, h1, h2 */
    }
    kvb_mutable m[2];
    kvb_complete c;
    cr_assert_eq(kvb_pool_allocate(p, 2, m, NULL, NULL), 0);
    cr_assert_eq(kvb_mutable_stage(&m[0], tu_hash(9), &c), 0);
    kvb_stats s0 = stats(p);
    cr_assert_eq(s0.inactive, 3);
    cr_assert_eq(s0.duplicate, 1);
    uint32_t nev0 = log.nev, ncb0 = (uint32_t)log.cb.n;

    cr_expect_eq(kvb_pool_reset_inactive(p), 3, "the cached blocks, not -EBUSY");
    kvb_stats s1 = stats(p);
    cr_expect_eq(s1.inactive, 0);
    cr_expect_eq(s1.reset, 3);
    cr_expect_eq(s1.primary, 2);
    cr_expect_eq(s1.duplicate, 1);
    cr_expect_eq(s1.staged, 1);
    cr_expect_eq(s1.mutable_, 1);
    cr_expect_eq(s1.evictions, s0.evictions + 3);
    /* on_evict then on_reset per drained block, in eviction order */
    cr_assert_eq((uint32_t)log.cb.n, ncb0 + 6);
    for (uint32_t k = 0; k < 3; k++) {
        cr_expect_eq(log.cb.ev[ncb0 + 2 * k], 'E');
        cr_expect_eq(log.cb.ev[ncb0 + 2 * k + 1], 'R');
        cr_expect_eq(log.cb.id[ncb0 + 2 * k], ids[k]);
        cr_expect_eq(log.cb.id[ncb0 + 2 * k + 1], ids[k]);
    }
    /* primaries stay: no CLEARED (consumers would forget them), a REMOVED per block */
    cr_assert_eq(log.nev, nev0 + 1);
    cr_expect_eq(log.types[nev0], KVB_EVENT_REMOVED);
    cr_assert_eq(log.nremoved, 3);
    for (uint32_t k = 0; k < 3; k++)
        cr_expect(kvb_hash_equal(log.removed[k], h[k]), "REMOVED %u in eviction order", k);
    /* the held blocks still work, the drained content is gone */
    kvb_block got[2];
    cr_expect_eq(kvb_pool_match(p, &h[3], 1, got), 1, "a primary stays findable");
    cr_expect_eq(kvb_block_release(&got[0]), 0);
    cr_expect_eq(kvb_pool_match(p, &h[0], 1, got), 0, "drained content is gone");
    cr_assert_eq(kvb_pool_check(p), 0);
    cr_expect_eq(kvb_mutable_release(&m[1]), 0);
    cr_expect_eq(kvb_complete_release(&c), 0);
    cr_expect_eq(kvb_block_release_n(b + 3, 3), 0);
    cr_expect_eq(stats(p).inactive, 2, "released primaries are cached again");
    /* nothing held now: the drain empties the cached-or-active set, one CLEARED */
    uint32_t nev1 = log.nev;
    cr_expect_eq(kvb_pool_reset_inactive(p), 2);
    cr_assert_eq(log.nev, nev1 + 1);
    cr_expect_eq(log.types[nev1], KVB_EVENT_CLEARED);
    cr_expect_eq(kvb_pool_reset_inactive(p), 0, "an empty cache drains nothing");
    cr_expect_eq(log.nev, nev1 + 1, "and emits nothing");
    tu_finish(p);
}

Test(callbacks, reset_inactive_with_nothing_cached_drains_nothing)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU);
    kvb_mutable m;
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    cr_expect_eq(kvb_pool_reset_inactive(p), 0);
    cr_expect_eq(stats(p).mutable_, 1, "the held block is left alone");
    kvb_mutable_release(&m);
    cr_expect_eq(kvb_pool_reset_inactive(p), 0);
    tu_finish(p);
}

static struct cb_log big_log;
static void big_reset(void *u, uint32_t id)
{
    (void)u;
    big_log.n++;
    (void)id;
}

Test(callbacks, large_batches_fire_every_callback)
{
    memset(&big_log, 0, sizeof big_log);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 1000;
    cfg.callbacks.on_reset = big_reset;
    kvb_pool *p = tu_pool_cfg(&cfg);
    static kvb_mutable m[1000];
    cr_assert_eq(kvb_pool_allocate(p, 1000, m, NULL, NULL), 0);
    static kvb_complete c[1000];
    static kvb_block b[1000];
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(kvb_mutable_stage(&m[i], tu_hash((uint64_t)i), &c[i]), 0);
    }
    cr_assert_eq(kvb_pool_register(p, c, 1000, b), 0);
    for (int i = 0; i < 1000; i++)
        kvb_block_set_reset_on_release(&b[i], true);
    cr_expect_eq(kvb_block_release_n(b, 1000), 0);
    cr_expect_eq(big_log.n, 1000);
    tu_finish(p);
}

/* ---- destroy ------------------------------------------------------------------ */

Test(destroy, busy_while_any_handle_outstanding)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_mutable m;
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    cr_expect_eq(kvb_pool_destroy(p), -EBUSY);
    kvb_complete c;
    cr_assert_eq(kvb_mutable_stage(&m, tu_hash(1), &c), 0);
    cr_expect_eq(kvb_pool_destroy(p), -EBUSY);
    kvb_block b;
    cr_assert_eq(kvb_pool_register(p, &c, 1, &b), 0);
    cr_expect_eq(kvb_pool_destroy(p), -EBUSY);
    kvb_block_release(&b);
    cr_expect_eq(kvb_pool_destroy(NULL), -EINVAL);
    tu_finish(p); /* cached blocks do not keep the pool alive */
}

/* ---- scope-bound release ------------------------------------------------------- */

Test(scoped, cleanup_attribute_releases)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(1);
    {
        KVB_SCOPED(kvb_block) b = {0};
        put(p, &h, 1, &b);
        KVB_SCOPED(kvb_mutable) m = {0};
        cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
        KVB_SCOPED(kvb_mutable) consumed = {0};
        KVB_SCOPED(kvb_complete) c = {0};
        cr_assert_eq(kvb_pool_allocate(p, 0, &consumed, NULL, NULL), 0);
        (void)c;
    }
    kvb_stats s = stats(p);
    cr_expect_eq(s.primary + s.mutable_, 0, "everything released at scope exit");
    cr_expect_eq(s.misuse, 0, "cleared handles are skipped, not misuse");
    kvb_block b2;
    cr_assert_eq(kvb_pool_match(p, &h, 1, &b2), 1);
    cr_expect_eq(kvb_release(&b2), 0);
    tu_finish(p);
}

/* ---- scan ------------------------------------------------------------------------ */

Test(scan, independent_lookups_counted_separately_touch_optional)
{
    kvb_registry *reg;
    cr_assert_eq(kvb_registry_create(NULL, &reg), 0);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 8;
    cfg.registry = reg;
    kvb_pool *p = tu_pool_cfg(&cfg);
    kvb_hash h[3] = {tu_hash(1), tu_hash(2), tu_hash(3)};
    cache(p, h, 2, NULL);
    uint32_t f0 = kvb_registry_frequency(reg, h[0]);
    kvb_block out[3];
    bool hit[3];
    cr_expect_eq(kvb_pool_scan(p, h, 3, false, out, hit), 2);
    cr_expect(hit[0] && hit[1] && !hit[2]);
    cr_expect_eq(kvb_registry_frequency(reg, h[0]), f0, "touch=false leaves frequency alone");
    kvb_stats s = stats(p);
    cr_expect_eq(s.scan_requested, 3);
    cr_expect_eq(s.scan_returned, 2);
    cr_expect_eq(s.match_requested, 0);
    kvb_block_release(&out[0]);
    kvb_block_release(&out[1]);
    for (int i = 0; i < 3; i++)
        kvb_pool_scan(p, h, 1, true, out, hit), kvb_block_release(&out[0]);
    cr_expect_gt(kvb_registry_frequency(reg, h[0]), f0, "touch=true counts accesses");
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(reg), 0);
}

Test(refs, register_refuses_batch_when_primary_saturated)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(3);
    kvb_block a, b[2];
    put(p, &h, 1, &a);
    kvb__test_set_refcount(p, a.id, UINT32_MAX - 2);
    kvb_mutable m[2];
    kvb_complete c[2];
    cr_assert_eq(kvb_pool_allocate(p, 2, m, NULL, NULL), 0);
    cr_assert_eq(kvb_mutable_stage(&m[0], tu_hash(4), &c[0]), 0);
    cr_assert_eq(kvb_mutable_stage(&m[1], h, &c[1]), 0);
    cr_expect_eq(kvb_pool_register(p, c, 2, b), -EOVERFLOW, "would need 2 more references");
    kvb_stats s = stats(p);
    cr_expect_eq(s.staged, 2, "nothing registered");
    cr_expect_not_null(c[0].pool);
    kvb__test_set_refcount(p, a.id, 1);
    cr_expect_eq(kvb_pool_register(p, c, 2, b), 0);
    kvb_block_release_n(b, 2);
    kvb_block_release(&a);
    tu_finish(p);
}

Test(lifecycle, batch_stage_all_or_nothing)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_mutable m[3];
    kvb_complete c[3];
    kvb_hash h[3] = {tu_hash(1), tu_hash(2), tu_hash(3)};
    cr_assert_eq(kvb_pool_allocate(p, 3, m, NULL, NULL), 0);
    kvb_mutable dup[2] = {m[0], m[0]};
    cr_expect_eq(kvb_pool_stage(p, dup, h, 2, c), -ESTALE, "same handle twice");
    kvb_hash bad[3] = {h[0], {UINT64_MAX, 0}, h[2]};
    cr_expect_eq(kvb_pool_stage(p, m, bad, 3, c), -EINVAL);
    cr_expect_not_null(m[1].pool, "nothing consumed");
    cr_expect_eq(stats(p).staged, 0);
    cr_assert_eq(kvb_pool_check(p), 0);
    cr_expect_eq(kvb_pool_stage(p, m, h, 0, c), 0);
    cr_assert_eq(kvb_pool_stage(p, m, h, 3, c), 0);
    cr_expect_null(m[2].pool);
    cr_expect(kvb_hash_equal(c[1].hash, h[1]));
    kvb_stats s = stats(p);
    cr_expect_eq(s.staged, 3);
    cr_expect_eq(s.stagings, 3);
    kvb_block b[3];
    cr_assert_eq(kvb_pool_register(p, c, 3, b), 0);
    kvb_block_release_n(b, 3);
    tu_finish(p);
}

/* ---- hash index ------------------------------------------------------------------ */

/* Random register/release/match/evict churn on a pool whose hash index is crowded
 * (hashes chosen among few values so homes collide), with the displacement field
 * capped at 1 and 3 and uncapped; kvb_pool_check (which verifies every cell's
 * displacement and that every PRIMARY/INACTIVE hash is reachable) after each step. */
Test(hash_index, robin_hood_churn_with_saturated_displacements)
{
    const uint32_t caps[3] = {1, 3, 0};
    for (int c = 0; c < 3; c++) {
        kvb__test_set_map_disp_max(caps[c]);
        kvb_pool *p = tu_pool(61, KVB_EVICT_LRU);
        kvb__test_set_map_disp_max(0);
        uint64_t x = 12345;
        kvb_block held[16];
        int nh = 0;
        for (int step = 0; step < 3000; step++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t r = (uint32_t)(x >> 33);
            kvb_hash h = tu_hash(r % 97);
            if (r % 3 == 0 && nh < 16) {
                kvb_block b;
                if (kvb_pool_match(p, &h, 1, &b) == 1) {
                    held[nh++] = b;
                } else {
                    kvb_mutable m;
                    kvb_complete cc;
                    if (kvb_pool_allocate(p, 1, &m, NULL, NULL) == 0) {
                        cr_assert_eq(kvb_mutable_stage(&m, h, &cc), 0);
                        cr_assert_eq(kvb_pool_register(p, &cc, 1, &held[nh++]), 0);
                    }
                }
            } else if (nh) {
                int i = (int)(r % (uint32_t)nh);
                cr_assert_eq(kvb_block_release(&held[i]), 0);
                held[i] = held[--nh];
            }
            cr_assert_eq(kvb_pool_check(p), 0, "cap %u step %d", caps[c], step);
        }
        kvb_block_release_n(held, (uint32_t)nh);
        kvb_stats s = stats(p);
        cr_expect_gt(s.evictions, 100, "the churn evicted");
        cr_expect_gt(s.resurrections, 100, "the churn hit the cache");
        tu_finish(p);
    }
}

Test(allocate, rollback_of_more_than_one_chunk_is_exact)
{
    kvb_inactive_ops ops = kvb_inactive_lru;
    ops.name = "short-lru";
    ops.evict = short_evict;
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 300;
    cfg.evict_ops = &ops;
    kvb_pool *p = tu_pool_cfg(&cfg);
    /* cache 300 blocks, released in id order */
    static kvb_mutable m[300];
    static kvb_complete c[300];
    static kvb_block b[300];
    static kvb_hash h[300];
    for (int i = 0; i < 300; i++)
        h[i] = tu_hash((uint64_t)(1000 + i));
    cr_assert_eq(kvb_pool_allocate(p, 300, m, NULL, NULL), 0);
    cr_assert_eq(kvb_pool_stage(p, m, h, 300, c), 0);
    cr_assert_eq(kvb_pool_register(p, c, 300, b), 0);
    cr_assert_eq(kvb_block_release_n(b, 300), 0);
    /* the 4th evict call (chunks of 64) comes back one short: 255 evicted, rolled back */
    short_mode = true;
    short_evict_calls = 0;
    short_after = 3;
    cr_expect_eq(kvb_pool_allocate(p, 300, m, NULL, NULL), -ENOSPC);
    cr_expect_eq(short_evict_calls, 4);
    short_mode = false;
    kvb_stats s = stats(p);
    cr_expect_eq(s.allocate_rollbacks, 1);
    cr_expect_eq(s.inactive, 300);
    static kvb_hash ev[300];
    uint32_t nev;
    cr_assert_eq(kvb_pool_allocate(p, 300, m, ev, &nev), 0);
    cr_assert_eq(nev, 300);
    for (int i = 0; i < 300; i++)
        cr_expect(kvb_hash_equal(ev[i], h[i]), "eviction order position %d", i);
    for (int i = 0; i < 300; i++)
        kvb_mutable_release(&m[i]);
    tu_finish(p);
}
