/*
 * test_misuse.c - every handle type against every misuse: double release,
 * release after slot reuse (stale generation), foreign pool, zeroed handle,
 * use after a refused destroy. Each answers -ESTALE, bumps `misuse` when the
 * handle names a pool, changes nothing, and the pool stays consistent.
 */
#include "testutil.h"
#include "testing.h"
#include <signal.h>

static uint64_t misuse(kvb_pool *p)
{
    kvb_stats s;
    kvb_pool_stats(p, &s);
    return s.misuse;
}

static void assert_intact(kvb_pool *p, uint32_t reset, uint32_t inactive)
{
    kvb_stats s;
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.reset, reset);
    cr_expect_eq(s.inactive, inactive);
    cr_expect_eq(kvb_pool_check(p), 0);
}

Test(misuse, mutable_double_release_stale_foreign_zero)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU), *q = tu_pool(2, KVB_EVICT_LRU);
    kvb_mutable m, copy;
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    copy = m;
    cr_expect_eq(kvb_mutable_release(&m), 0);
    cr_expect_eq(kvb_mutable_release(&m), -ESTALE, "cleared handle");
    cr_expect_eq(misuse(p), 0, "a zeroed handle names no pool");
    cr_expect_eq(kvb_mutable_release(&copy), -ESTALE, "double release through a copy");
    cr_expect_eq(misuse(p), 1);
    /* stale after reuse: the slot is MUTABLE again, under a new generation */
    kvb_mutable again;
    cr_assert_eq(kvb_pool_allocate(p, 2, (kvb_mutable[2]){0}, NULL, NULL), 0);
    (void)again;
    cr_expect_eq(kvb_mutable_release(&copy), -ESTALE, "stale after reuse");
    cr_expect_eq(misuse(p), 2);
    kvb_complete c;
    cr_expect_eq(kvb_mutable_stage(&copy, tu_hash(1), &c), -ESTALE);
    /* foreign: a handle of q passed where p's id would be valid */
    kvb_mutable fm;
    cr_assert_eq(kvb_pool_allocate(q, 1, &fm, NULL, NULL), 0);
    kvb_mutable forged = fm;
    forged.pool = p; /* names p, but p's slot has another generation/state */
    cr_expect_eq(kvb_mutable_release(&forged), -ESTALE);
    cr_expect_eq(kvb_mutable_release(&fm), 0);
    cr_expect_eq(kvb_mutable_release(NULL), -EINVAL);
    tu_finish(q);
    /* p has 2 mutable blocks we lost track of through the compound literal: find them */
    kvb_stats s;
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.mutable_, 2);
    for (uint32_t id = 0; id < 2; id++) {
        kvb_mutable h = {.pool = p, .id = id, .gen = kvb__test_slot_gen(p, id)};
        cr_expect_eq(kvb_mutable_release(&h), 0);
    }
    tu_finish(p);
}

Test(misuse, complete_double_release_stale_and_wrong_kind)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU);
    kvb_mutable m;
    kvb_complete c, copy;
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    cr_assert_eq(kvb_mutable_stage(&m, tu_hash(1), &c), 0);
    copy = c;
    cr_expect_eq(kvb_complete_release(&c), 0);
    cr_expect_eq(kvb_complete_release(&copy), -ESTALE);
    kvb_block out;
    cr_expect_eq(kvb_pool_register(p, &copy, 1, &out), -ESTALE);
    cr_expect_not_null(copy.pool, "a failed register consumes nothing");
    kvb_mutable back;
    cr_expect_eq(kvb_complete_reset(&copy, &back), -ESTALE);
    cr_expect_eq(misuse(p), 3);
    assert_intact(p, 2, 0);
    tu_finish(p);
}

Test(misuse, register_batch_with_one_bad_handle_changes_nothing)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_mutable m[3];
    kvb_complete c[3];
    cr_assert_eq(kvb_pool_allocate(p, 3, m, NULL, NULL), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(kvb_mutable_stage(&m[i], tu_hash((uint64_t)i), &c[i]), 0);
    kvb_complete batch[3] = {c[0], c[1], c[1]}; /* the same handle twice */
    kvb_block out[3];
    cr_expect_eq(kvb_pool_register(p, batch, 3, out), -ESTALE);
    kvb_stats s;
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.staged, 3);
    cr_expect_eq(s.primary, 0);
    cr_expect_eq(kvb_pool_check(p), 0, "validation marks are cleared");
    /* foreign-pool handle in the batch */
    kvb_pool *q = tu_pool(2, KVB_EVICT_LRU);
    kvb_complete fb[2] = {c[0], c[1]};
    cr_expect_eq(kvb_pool_register(q, fb, 2, out), -ESTALE);
    cr_expect_eq(misuse(q), 1);
    tu_finish(q);
    cr_expect_eq(kvb_pool_register(p, c, 3, out), 0);
    kvb_block_release_n(out, 3);
    tu_finish(p);
}

Test(misuse, block_double_release_stale_foreign_zero)
{
    kvb_pool *p = tu_pool(1, KVB_EVICT_LRU);
    kvb_mutable m;
    kvb_complete c;
    kvb_block b, copy, x;
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    cr_assert_eq(kvb_mutable_stage(&m, tu_hash(1), &c), 0);
    cr_assert_eq(kvb_pool_register(p, &c, 1, &b), 0);
    copy = b;
    cr_expect_eq(kvb_block_release(&b), 0);
    cr_expect_eq(kvb_block_release(&b), -ESTALE);
    cr_expect_eq(kvb_block_release(&copy), -ESTALE, "released through a copy");
    cr_expect_eq(kvb_block_clone(&copy, &x), -ESTALE);
    cr_expect_eq(kvb_block_set_reset_on_release(&copy, true), -ESTALE);
    cr_expect_eq(kvb_block_use_count(&copy), 0);
    cr_expect_eq(misuse(p), 3);
    assert_intact(p, 0, 1);
    /* stale after the slot is reused for other content */
    kvb_hash g = tu_hash(2);
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    cr_assert_eq(kvb_mutable_stage(&m, g, &c), 0);
    cr_assert_eq(kvb_pool_register(p, &c, 1, &b), 0);
    cr_expect_eq(b.id, copy.id);
    cr_expect_eq(kvb_block_release(&copy), -ESTALE);
    cr_expect_eq(kvb_block_use_count(&b), 1, "the new life is untouched");
    /* foreign: p's handle presented as q's */
    kvb_pool *q = tu_pool(1, KVB_EVICT_LRU);
    kvb_block forged = b;
    forged.pool = q;
    cr_expect_eq(kvb_block_release(&forged), -ESTALE);
    cr_expect_eq(misuse(q), 1);
    tu_finish(q);
    /* batch release with bad handles: valid ones are released, bad ones left as they were */
    kvb_block zero;
    memset(&zero, 0, sizeof zero);
    kvb_block batch[3] = {copy, b, zero};
    cr_expect_eq(kvb_block_release_n(batch, 3), -ESTALE);
    cr_expect_not_null(batch[0].pool, "an invalid handle is left as it was");
    cr_expect_null(batch[1].pool, "the valid one is consumed");
    assert_intact(p, 0, 1);
    tu_finish(p);
}

Test(misuse, use_after_refused_destroy)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU);
    kvb_mutable m;
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    kvb_mutable copy = m;
    cr_expect_eq(kvb_pool_destroy(p), -EBUSY);
    /* the pool is intact and usable: handles still work, misuse still detected */
    cr_expect_eq(kvb_mutable_release(&m), 0);
    cr_expect_eq(kvb_mutable_release(&copy), -ESTALE);
    cr_expect_eq(misuse(p), 1);
    tu_finish(p);
}

Test(misuse, out_of_range_ids)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU);
    kvb_mutable m = {.pool = p, .id = 1000, .gen = 1};
    kvb_block b = {.pool = p, .id = 1000, .gen = 1};
    kvb_block x;
    cr_expect_eq(kvb_mutable_release(&m), -ESTALE);
    cr_expect_eq(kvb_block_release(&b), -ESTALE);
    cr_expect_eq(kvb_block_clone(&b, &x), -ESTALE);
    cr_expect_eq(kvb_block_set_reset_on_release(&b, true), -ESTALE);
    cr_expect_eq(misuse(p), 4);
    kvb_weak w = {.pool = p, .id = 1000, .gen = 1, .hash = tu_hash(5)};
    cr_expect_eq(kvb_weak_upgrade(&w, &x), -ENOENT);
    tu_finish(p);
}

Test(misuse, abort_on_misuse_switch, .signal = SIGABRT)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 1;
    cfg.abort_on_misuse = true;
    kvb_pool *p = tu_pool_cfg(&cfg);
    kvb_mutable m;
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    kvb_mutable copy = m;
    kvb_mutable_release(&m);
    kvb_mutable_release(&copy); /* aborts */
}

/* Two pools with the same configuration and the same history: every slot of one
 * has a twin in the other (same block id, same state, same number of
 * transitions). A handle of one relabelled to the other (pool pointer swapped)
 * must still be refused: each pool starts its slots at its own generations. */
Test(misuse, handle_relabelled_to_a_twin_pool_is_stale)
{
    enum { N = 8 };
    kvb_pool *p = tu_pool(N, KVB_EVICT_LRU), *q = tu_pool(N, KVB_EVICT_LRU);
    for (uint32_t id = 0; id < N; id++)
        cr_expect_neq(kvb__test_slot_gen(p, id), kvb__test_slot_gen(q, id),
                      "slot %u starts at the same generation in both pools", id);
    kvb_pool *pools[2] = {p, q};
    kvb_mutable m[2][N];
    kvb_complete c[2][N];
    kvb_block b[2][N];
    for (int k = 0; k < 2; k++) { /* the same calls on both pools */
        cr_assert_eq(kvb_pool_allocate(pools[k], N, m[k], NULL, NULL), 0);
        for (uint32_t i = 0; i < N / 2; i++)
            cr_assert_eq(kvb_mutable_stage(&m[k][i], tu_hash(i), &c[k][i]), 0);
        cr_assert_eq(kvb_pool_register(pools[k], c[k], N / 4, b[k]), 0);
    }
    /* twins: same id in both pools, one PRIMARY (b), one STAGED (c), one MUTABLE (m) */
    uint32_t ib = N / 4 - 1, ic = N / 2 - 1, im = N - 1;
    cr_assert_eq(b[0][ib].id, b[1][ib].id);
    cr_assert_eq(c[0][ic].id, c[1][ic].id);
    cr_assert_eq(m[0][im].id, m[1][im].id);

    kvb_block fb = b[0][ib], x;
    fb.pool = q;
    kvb_complete fc = c[0][ic];
    fc.pool = q;
    kvb_mutable fm = m[0][im];
    fm.pool = q;
    kvb_block fbs[1] = {fb};
    kvb_block out;
    kvb_mutable back;
    kvb_complete staged;
    cr_expect_eq(kvb_block_release(&fb), -ESTALE);
    cr_expect_eq(kvb_block_clone(&fb, &x), -ESTALE);
    cr_expect_eq(kvb_block_set_reset_on_release(&fb, true), -ESTALE);
    cr_expect_eq(kvb_block_use_count(&fb), 0);
    kvb_block_addr addr;
    cr_expect_eq(kvb_block_address(&fb, &addr), -ESTALE);
    cr_expect_eq(kvb_block_release_n(fbs, 1), -ESTALE);
    cr_expect_eq(kvb_pool_register(q, &fc, 1, &out), -ESTALE);
    cr_expect_eq(kvb_complete_reset(&fc, &back), -ESTALE);
    cr_expect_eq(kvb_complete_release(&fc), -ESTALE);
    cr_expect_eq(kvb_mutable_stage(&fm, tu_hash(100), &staged), -ESTALE);
    cr_expect_eq(kvb_mutable_release(&fm), -ESTALE);
    cr_expect_eq(misuse(q), 10, "every relabelled handle counts on the pool it names");
    cr_expect_eq(misuse(p), 0);
    /* q's own blocks are untouched: its handles still work, once each */
    cr_expect_eq(kvb_block_use_count(&b[1][ib]), 1);
    for (int k = 0; k < 2; k++) {
        cr_expect_eq(kvb_block_release_n(b[k], N / 4), 0);
        for (uint32_t i = N / 4; i < N / 2; i++)
            cr_expect_eq(kvb_complete_release(&c[k][i]), 0);
        for (uint32_t i = N / 2; i < N; i++)
            cr_expect_eq(kvb_mutable_release(&m[k][i]), 0);
    }
    tu_finish(p);
    tu_finish(q);
}
