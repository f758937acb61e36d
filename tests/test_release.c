/*
 * test_release.c - kvb_block_release_n's batch contract: within a chunk of 256
 * handles every decrement comes before any last-release transition, in handle
 * order. Observable only through a duplicate released in the same batch as the
 * handles of its primary: when those handles come after the duplicate, the
 * primary is cached at the duplicate's turn (and the release of its last handle is
 * a counted no-op); when they come before, at the duplicate's turn too, with no
 * no-op. The cache order (which block an allocation evicts first) and
 * release_noops show it. The library implements the contract in one pass; these
 * cases pin it down.
 */
#include "testutil.h"

/* A pool of 3 blocks, ALLOW: content x held twice (primary + duplicate), y once. */
static kvb_pool *setup(kvb_block *p1, kvb_block *d1, kvb_block *y1, kvb_hash *x, kvb_hash *y)
{
    kvb_pool *p = tu_pool(3, KVB_EVICT_LRU);
    *x = tu_hash(1);
    *y = tu_hash(2);
    kvb_mutable m[3];
    kvb_complete c[3];
    kvb_block out[3];
    kvb_hash hs[3] = {*x, *x, *y};
    cr_assert_eq(kvb_pool_allocate(p, 3, m, NULL, NULL), 0);
    cr_assert_eq(kvb_pool_stage(p, m, hs, 3, c), 0);
    cr_assert_eq(kvb_pool_register(p, c, 3, out), 0);
    *p1 = out[0];
    *d1 = out[1];
    *y1 = out[2];
    cr_assert_neq(p1->id, d1->id, "the second copy is a duplicate");
    return p;
}

/* Allocate 2 (one free slot, then one eviction): the hash evicted first. */
static kvb_hash first_victim(kvb_pool *p)
{
    kvb_mutable m[2];
    kvb_hash ev[2];
    uint32_t nev = 0;
    cr_assert_eq(kvb_pool_allocate(p, 2, m, ev, &nev), 0);
    cr_assert_eq(nev, 1);
    cr_assert_eq(kvb_mutable_release(&m[0]), 0);
    cr_assert_eq(kvb_mutable_release(&m[1]), 0);
    return ev[0];
}

Test(release_n, duplicate_before_its_primary_caches_the_primary_at_its_turn)
{
    kvb_block p1, d1, y1;
    kvb_hash x, y;
    kvb_pool *p = setup(&p1, &d1, &y1, &x, &y);
    kvb_block batch[3] = {d1, y1, p1};
    cr_assert_eq(kvb_block_release_n(batch, 3), 0);
    kvb_stats s;
    cr_assert_eq(kvb_pool_stats(p, &s), 0);
    cr_expect_eq(s.release_noops, 1, "the primary's last handle found its work done");
    cr_expect(kvb_hash_equal(first_victim(p), x), "x was cached before y");
    tu_finish(p);
}

Test(release_n, duplicate_after_its_primary_caches_the_primary_at_its_turn)
{
    kvb_block p1, d1, y1;
    kvb_hash x, y;
    kvb_pool *p = setup(&p1, &d1, &y1, &x, &y);
    kvb_block batch[3] = {p1, y1, d1};
    cr_assert_eq(kvb_block_release_n(batch, 3), 0);
    kvb_stats s;
    cr_assert_eq(kvb_pool_stats(p, &s), 0);
    cr_expect_eq(s.release_noops, 0);
    cr_expect(kvb_hash_equal(first_victim(p), y), "y was cached before x");
    tu_finish(p);
}

/* The primary's handles in the next chunk: its count does not reach 0 within the
 * duplicate's chunk, so it is cached when its own last handle comes. */
Test(release_n, primary_handles_in_the_next_chunk)
{
    kvb_block p1, d1, y1;
    kvb_hash x, y;
    kvb_pool *p = setup(&p1, &d1, &y1, &x, &y);
    kvb_block batch[300];
    memset(batch, 0, sizeof batch); /* NULL pools: -ESTALE, skipped */
    batch[0] = d1;
    batch[1] = y1;
    batch[299] = p1;
    cr_assert_eq(kvb_block_release_n(batch, 300), -ESTALE);
    kvb_stats s;
    cr_assert_eq(kvb_pool_stats(p, &s), 0);
    cr_expect_eq(s.release_noops, 0);
    cr_expect_eq(s.misuse, 0, "an empty handle is not a misuse");
    cr_expect(kvb_hash_equal(first_victim(p), y), "y was cached before x");
    tu_finish(p);
}

/* A copy of the primary's handle after it (a double release): the copy is a misuse,
 * counted, and changes nothing. */
Test(release_n, copy_of_the_primary_handle_is_a_misuse)
{
    kvb_block p1, d1, y1;
    kvb_hash x, y;
    kvb_pool *p = setup(&p1, &d1, &y1, &x, &y);
    kvb_block batch[4] = {d1, y1, p1, p1};
    cr_assert_eq(kvb_block_release_n(batch, 4), -ESTALE);
    kvb_stats s;
    cr_assert_eq(kvb_pool_stats(p, &s), 0);
    cr_expect_eq(s.misuse, 1);
    cr_expect_eq(s.release_noops, 1);
    cr_expect(batch[3].pool == p, "a misused handle is not cleared");
    cr_expect(kvb_hash_equal(first_victim(p), x), "x was cached before y");
    tu_finish(p);
}
