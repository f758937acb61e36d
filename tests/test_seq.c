/*
 * test_seq.c - sequences (include/kvblock/seq.h).
 *
 * Every test ends with kvb_pool_check() clean and kvb_pool_destroy() == 0
 * (tu_finish), so a handle leaked on any path, failures included, fails it.
 */
#include "testutil.h"
#include "kvblock/seq.h"
#include "support/rng.h"

#include <stdlib.h>

static void tokens_fill(uint32_t *t, uint32_t n, uint32_t seed)
{
    for (uint32_t i = 0; i < n; i++)
        t[i] = seed * 100003u + i * 7u + 1;
}

static kvb_pool *pool_n(uint32_t n, kvb_dup_policy dup)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = n;
    cfg.block_size = 16;
    cfg.dup_policy = dup;
    return tu_pool_cfg(&cfg);
}

static uint32_t avail(kvb_pool *p)
{
    return kvb_pool_available(p);
}

Test(seq, init_bad_args)
{
    kvb_pool *p = pool_n(8, KVB_DUP_ALLOW);
    kvb_seq s;
    cr_assert_eq(kvb_seq_init(NULL, p, 4), -EINVAL);
    cr_assert_eq(kvb_seq_init(&s, NULL, 4), -EINVAL);
    cr_assert_eq(kvb_seq_init(&s, p, 0), -EINVAL);
    cr_assert_eq(kvb_seq_init(&s, p, KVB_HASH_MAX_POSITION + 2), -EINVAL);
    cr_assert_eq(kvb_seq_init(&s, p, 4), 0);
    cr_assert_eq(kvb_seq_len(&s), 0);
    cr_assert_eq(kvb_seq_num_blocks(&s), 0);
    cr_assert_eq(kvb_seq_capacity(&s), 0);
    cr_assert_not_null(kvb_seq_block_ids(&s));
    kvb_seq_fini(&s);
    kvb_seq_fini(&s); /* finalised twice: no-op */
    kvb_seq z = {0};
    kvb_seq_fini(&z);
    cr_assert_eq(kvb_seq_release(&z), -EINVAL);
    cr_assert_eq(kvb_seq_ensure_capacity(&z, 1), -EINVAL);
    tu_finish(p);
}

Test(seq, ensure_capacity_exact)
{
    kvb_pool *p = pool_n(16, KVB_DUP_ALLOW);
    kvb_seq s;
    cr_assert_eq(kvb_seq_init(&s, p, 4), 0);
    cr_assert_eq(kvb_seq_ensure_capacity(&s, 0), 0);
    cr_assert_eq(kvb_seq_num_blocks(&s), 0);
    cr_assert_eq(kvb_seq_ensure_capacity(&s, 1), 1);
    cr_assert_eq(kvb_seq_ensure_capacity(&s, 16), 0);
    cr_assert_eq(kvb_seq_ensure_capacity(&s, 17), 1);
    cr_assert_eq(kvb_seq_num_blocks(&s), 2);
    cr_assert_eq(kvb_seq_capacity(&s), 32);
    cr_assert_eq(kvb_seq_ensure_capacity(&s, 10), 0, "never shrinks");
    cr_assert_eq(avail(p), 14);
    /* beyond max_blocks: -E2BIG, nothing allocated */
    cr_assert_eq(kvb_seq_ensure_capacity(&s, 65), -E2BIG);
    cr_assert_eq(kvb_seq_num_blocks(&s), 2);
    cr_assert_eq(avail(p), 14);
    cr_assert_eq(kvb_seq_ensure_capacity(&s, 64), 2);
    const uint32_t *ids = kvb_seq_block_ids(&s);
    for (uint32_t i = 0; i < 4; i++)
        for (uint32_t j = i + 1; j < 4; j++)
            cr_assert_neq(ids[i], ids[j]);
    cr_assert_eq(kvb_seq_len(&s), 0);
    kvb_seq_fini(&s);
    cr_assert_eq(avail(p), 16);
    tu_finish(p);
}

Test(seq, ensure_capacity_enospc_is_all_or_nothing)
{
    kvb_pool *p = pool_n(5, KVB_DUP_ALLOW);
    kvb_seq a, b;
    cr_assert_eq(kvb_seq_init(&a, p, 8), 0);
    cr_assert_eq(kvb_seq_init(&b, p, 8), 0);
    cr_assert_eq(kvb_seq_ensure_capacity(&a, 48), 3);
    cr_assert_eq(kvb_seq_ensure_capacity(&b, 16), 1);
    uint32_t before = kvb_seq_block_ids(&b)[0];
    cr_assert_eq(kvb_seq_ensure_capacity(&b, 48), -ENOSPC); /* needs 2, 1 left */
    cr_assert_eq(kvb_seq_num_blocks(&b), 1);
    cr_assert_eq(kvb_seq_block_ids(&b)[0], before);
    cr_assert_eq(avail(p), 1);
    cr_assert_eq(kvb_pool_check(p), 0);
    cr_assert_eq(kvb_seq_ensure_capacity(&b, 32), 1);
    cr_assert_eq(avail(p), 0);
    kvb_seq_fini(&a);
    kvb_seq_fini(&b);
    tu_finish(p);
}

Test(seq, append_registers_full_blocks_with_lineage_hashes)
{
    kvb_pool *p = pool_n(32, KVB_DUP_ALLOW);
    kvb_seq s;
    cr_assert_eq(kvb_seq_init(&s, p, 8), 0);
    uint64_t salt = kvb_hash_salt("tenant-a", 8);
    cr_assert_eq(kvb_seq_set_salt(&s, salt), 0);
    uint32_t tok[100];
    tokens_fill(tok, 100, 1);
    /* 5 + 20 + 1 + 74 tokens: partial tails across calls */
    cr_assert_eq(kvb_seq_append_tokens(&s, tok, 5), 0);
    cr_assert_eq(kvb_seq_num_registered(&s), 0);
    cr_assert_eq(kvb_seq_num_blocks(&s), 1);
    cr_assert_eq(kvb_seq_append_tokens(&s, tok + 5, 20), 1);
    cr_assert_eq(kvb_seq_append_tokens(&s, tok + 25, 1), 0);
    cr_assert_eq(kvb_seq_append_tokens(&s, tok + 26, 74), 5);
    cr_assert_eq(kvb_seq_len(&s), 100);
    cr_assert_eq(kvb_seq_num_registered(&s), 6);
    cr_assert_eq(kvb_seq_num_blocks(&s), 7);
    cr_assert_eq(kvb_seq_set_salt(&s, 1), -EBUSY);
    kvb_hash want[6];
    cr_assert_eq(kvb_hash_tokens(tok, 100, 16, salt, want, 6), 6);
    for (uint32_t i = 0; i < 6; i++) {
        kvb_hash h;
        cr_assert_eq(kvb_seq_block_hash(&s, i, &h), 0);
        cr_assert(kvb_hash_equal(h, want[i]), "block %u hash differs from kvb_hash_tokens", i);
        cr_assert_eq(kvb_seq_blocks(&s)[i].id, kvb_seq_block_ids(&s)[i]);
    }
    kvb_hash h;
    cr_assert_eq(kvb_seq_block_hash(&s, 6, &h), -ERANGE);
    kvb_stats st;
    cr_assert_eq(kvb_pool_stats(p, &st), 0);
    cr_assert_eq(st.primary, 6);
    cr_assert_eq(st.mutable_, 1);
    cr_assert_eq(kvb_seq_release(&s), 0);
    cr_assert_eq(kvb_seq_len(&s), 0);
    cr_assert_eq(kvb_seq_num_blocks(&s), 0);
    cr_assert_eq(kvb_pool_stats(p, &st), 0);
    cr_assert_eq(st.inactive, 6, "full blocks stay cached");
    kvb_seq_fini(&s);
    tu_finish(p);
}

Test(seq, token_at_a_time_equals_bulk)
{
    kvb_pool *p = pool_n(32, KVB_DUP_ALLOW);
    kvb_seq a, b;
    cr_assert_eq(kvb_seq_init(&a, p, 8), 0);
    cr_assert_eq(kvb_seq_init(&b, p, 8), 0);
    uint32_t tok[70];
    tokens_fill(tok, 70, 9);
    cr_assert_eq(kvb_seq_append_tokens(&a, tok, 70), 4);
    int reg = 0;
    for (uint32_t i = 0; i < 70; i++) {
        int r = kvb_seq_append_tokens(&b, tok + i, 1);
        cr_assert_geq(r, 0);
        reg += r;
    }
    cr_assert_eq(reg, 4);
    for (uint32_t i = 0; i < 4; i++) {
        kvb_hash ha, hb;
        cr_assert_eq(kvb_seq_block_hash(&a, i, &ha), 0);
        cr_assert_eq(kvb_seq_block_hash(&b, i, &hb), 0);
        cr_assert(kvb_hash_equal(ha, hb));
    }
    kvb_seq_fini(&a);
    kvb_seq_fini(&b);
    tu_finish(p);
}

Test(seq, match_prefix_adopts_cached_blocks)
{
    kvb_pool *p = pool_n(32, KVB_DUP_ALLOW);
    kvb_seq a, b;
    cr_assert_eq(kvb_seq_init(&a, p, 8), 0);
    cr_assert_eq(kvb_seq_init(&b, p, 8), 0);
    uint32_t tok[80];
    tokens_fill(tok, 80, 3);
    cr_assert_eq(kvb_seq_append_tokens(&a, tok, 50), 3);
    uint32_t ids[3];
    memcpy(ids, kvb_seq_block_ids(&a), sizeof ids);

    /* while a is alive: shared active blocks */
    cr_assert_eq(kvb_seq_match_prefix(&b, tok, 80), 48);
    cr_assert_eq(kvb_seq_len(&b), 48);
    cr_assert_eq(kvb_seq_num_registered(&b), 3);
    cr_assert_eq(memcmp(kvb_seq_block_ids(&b), ids, sizeof ids), 0);
    cr_assert_eq(kvb_block_use_count(&kvb_seq_blocks(&b)[0]), 2);
    cr_assert_eq(kvb_seq_match_prefix(&b, tok, 80), -EBUSY);
    /* b continues on its own: block 3 is its own */
    cr_assert_eq(kvb_seq_append_tokens(&b, tok + 48, 32), 2);
    cr_assert_eq(kvb_seq_num_registered(&b), 5);
    cr_assert_eq(kvb_seq_release(&b), 0);

    /* after a is released too: matched from the inactive cache (resurrected) */
    cr_assert_eq(kvb_seq_release(&a), 0);
    cr_assert_eq(kvb_seq_match_prefix(&a, tok, 47), 32, "only full blocks of the given tokens");
    cr_assert_eq(kvb_seq_release(&a), 0);
    cr_assert_eq(kvb_seq_match_prefix(&a, tok, 80), 80);
    cr_assert_eq(memcmp(kvb_seq_block_ids(&a), ids, sizeof ids), 0);
    cr_assert_eq(kvb_seq_release(&a), 0);

    /* another salt: nothing matches */
    cr_assert_eq(kvb_seq_set_salt(&a, kvb_hash_salt("other", 5)), 0);
    cr_assert_eq(kvb_seq_match_prefix(&a, tok, 80), 0);
    cr_assert_eq(kvb_seq_match_prefix(&a, NULL, 0), 0);
    cr_assert_eq(kvb_seq_match_prefix(&a, NULL, 5), -EINVAL);
    kvb_seq_fini(&a);
    kvb_seq_fini(&b);
    tu_finish(p);
}

Test(seq, match_prefix_limited_by_max_blocks)
{
    kvb_pool *p = pool_n(32, KVB_DUP_ALLOW);
    kvb_seq a, b;
    cr_assert_eq(kvb_seq_init(&a, p, 8), 0);
    cr_assert_eq(kvb_seq_init(&b, p, 2), 0);
    uint32_t tok[64];
    tokens_fill(tok, 64, 4);
    cr_assert_eq(kvb_seq_append_tokens(&a, tok, 64), 4);
    cr_assert_eq(kvb_seq_match_prefix(&b, tok, 64), 32);
    cr_assert_eq(kvb_seq_append_tokens(&b, tok + 32, 1), -E2BIG);
    cr_assert_eq(kvb_seq_len(&b), 32);
    kvb_seq_fini(&a);
    kvb_seq_fini(&b);
    tu_finish(p);
}

Test(seq, append_failures_change_nothing)
{
    kvb_pool *p = pool_n(4, KVB_DUP_ALLOW);
    kvb_seq s, hog;
    cr_assert_eq(kvb_seq_init(&s, p, 3), 0);
    cr_assert_eq(kvb_seq_init(&hog, p, 4), 0);
    uint32_t tok[64];
    tokens_fill(tok, 64, 5);
    cr_assert_eq(kvb_seq_append_tokens(&s, tok, 20), 1);
    uint32_t ids[2];
    memcpy(ids, kvb_seq_block_ids(&s), sizeof ids);
    /* -E2BIG: 49 tokens need 4 blocks > max 3 */
    cr_assert_eq(kvb_seq_append_tokens(&s, tok + 20, 29), -E2BIG);
    /* -ENOSPC: the hog takes the other two blocks, then s needs one more */
    cr_assert_eq(kvb_seq_ensure_capacity(&hog, 32), 2);
    cr_assert_eq(kvb_seq_append_tokens(&s, tok + 20, 20), -ENOSPC);
    cr_assert_eq(kvb_seq_len(&s), 20);
    cr_assert_eq(kvb_seq_num_blocks(&s), 2);
    cr_assert_eq(kvb_seq_num_registered(&s), 1);
    cr_assert_eq(memcmp(kvb_seq_block_ids(&s), ids, sizeof ids), 0);
    cr_assert_eq(kvb_pool_check(p), 0);
    cr_assert_eq(kvb_seq_append_tokens(&s, NULL, 3), -EINVAL);
    cr_assert_eq(kvb_seq_append_tokens(&s, NULL, 0), 0);
    /* the tail survived the failures: completing the block gives the bulk hash */
    cr_assert_eq(kvb_seq_append_tokens(&s, tok + 20, 12), 1);
    kvb_hash want[2], h;
    cr_assert_eq(kvb_hash_tokens(tok, 32, 16, 0, want, 2), 2);
    cr_assert_eq(kvb_seq_block_hash(&s, 1, &h), 0);
    cr_assert(kvb_hash_equal(h, want[1]));
    kvb_seq_fini(&hog);
    cr_assert_eq(kvb_seq_append_tokens(&s, tok + 32, 16), 1);
    kvb_seq_fini(&s);
    tu_finish(p);
}

Test(seq, append_enospc_after_partial_tail)
{
    /* an append that needs two more blocks when only one is free */
    kvb_pool *p = pool_n(4, KVB_DUP_ALLOW);
    kvb_seq s, hog;
    cr_assert_eq(kvb_seq_init(&s, p, 8), 0);
    cr_assert_eq(kvb_seq_init(&hog, p, 8), 0);
    cr_assert_eq(kvb_seq_ensure_capacity(&hog, 1), 1);
    uint32_t tok[64];
    tokens_fill(tok, 64, 6);
    cr_assert_eq(kvb_seq_append_tokens(&s, tok, 17), 1); /* 2 blocks held */
    cr_assert_eq(kvb_seq_append_tokens(&s, tok + 17, 40), -ENOSPC);
    cr_assert_eq(kvb_seq_len(&s), 17);
    cr_assert_eq(kvb_seq_num_blocks(&s), 2);
    cr_assert_eq(kvb_seq_num_registered(&s), 1);
    cr_assert_eq(avail(p), 1);
    cr_assert_eq(kvb_seq_append_tokens(&s, tok + 17, 31), 2); /* 48 tokens: fits */
    kvb_seq_fini(&s);
    kvb_seq_fini(&hog);
    tu_finish(p);
}

Test(seq, reject_policy_rewrites_ids)
{
    kvb_pool *p = pool_n(16, KVB_DUP_REJECT);
    kvb_seq a, b;
    cr_assert_eq(kvb_seq_init(&a, p, 4), 0);
    cr_assert_eq(kvb_seq_init(&b, p, 4), 0);
    uint32_t tok[32];
    tokens_fill(tok, 32, 8);
    cr_assert_eq(kvb_seq_append_tokens(&a, tok, 32), 2);
    /* b computes the same content independently (no match) */
    cr_assert_eq(kvb_seq_ensure_capacity(&b, 32), 2);
    uint32_t own = kvb_seq_block_ids(&b)[0];
    cr_assert_neq(own, kvb_seq_block_ids(&a)[0]);
    cr_assert_eq(kvb_seq_append_tokens(&b, tok, 32), 2);
    cr_assert_eq(kvb_seq_block_ids(&b)[0], kvb_seq_block_ids(&a)[0], "deduplicated");
    cr_assert_eq(kvb_seq_block_ids(&b)[1], kvb_seq_block_ids(&a)[1]);
    cr_assert_eq(kvb_block_use_count(&kvb_seq_blocks(&a)[1]), 2);
    kvb_seq_fini(&a);
    kvb_seq_fini(&b);
    tu_finish(p);
}

Test(seq, allow_policy_keeps_ids)
{
    kvb_pool *p = pool_n(16, KVB_DUP_ALLOW);
    kvb_seq a, b;
    cr_assert_eq(kvb_seq_init(&a, p, 4), 0);
    cr_assert_eq(kvb_seq_init(&b, p, 4), 0);
    uint32_t tok[32];
    tokens_fill(tok, 32, 8);
    cr_assert_eq(kvb_seq_append_tokens(&a, tok, 32), 2);
    cr_assert_eq(kvb_seq_ensure_capacity(&b, 32), 2);
    uint32_t own[2];
    memcpy(own, kvb_seq_block_ids(&b), sizeof own);
    cr_assert_eq(kvb_seq_append_tokens(&b, tok, 32), 2);
    cr_assert_eq(memcmp(kvb_seq_block_ids(&b), own, sizeof own), 0);
    kvb_stats st;
    cr_assert_eq(kvb_pool_stats(p, &st), 0);
    cr_assert_eq(st.duplicate, 2);
    kvb_seq_fini(&b);
    kvb_seq_fini(&a);
    tu_finish(p);
}

Test(seq, fork_shares_full_blocks_and_copies_the_tail)
{
    kvb_pool *p = pool_n(16, KVB_DUP_ALLOW);
    kvb_seq a, b, c;
    cr_assert_eq(kvb_seq_init(&a, p, 4), 0);
    cr_assert_eq(kvb_seq_init(&b, p, 4), 0);
    cr_assert_eq(kvb_seq_init(&c, p, 1), 0);
    uint32_t tok[64], cs = 99, cd = 99;
    tokens_fill(tok, 64, 11);
    cr_assert_eq(kvb_seq_append_tokens(&a, tok, 40), 2);
    cr_assert_eq(kvb_seq_fork(&a, &c, &cs, &cd), -E2BIG);
    cr_assert_eq(kvb_seq_fork(&a, &a, &cs, &cd), -EINVAL);
    cr_assert_eq(kvb_seq_fork(&a, &b, &cs, &cd), 1);
    cr_assert_eq(kvb_seq_len(&b), 40);
    cr_assert_eq(kvb_seq_num_blocks(&b), 3);
    cr_assert_eq(kvb_seq_block_ids(&b)[0], kvb_seq_block_ids(&a)[0]);
    cr_assert_eq(kvb_seq_block_ids(&b)[1], kvb_seq_block_ids(&a)[1]);
    cr_assert_eq(cs, kvb_seq_block_ids(&a)[2]);
    cr_assert_eq(cd, kvb_seq_block_ids(&b)[2]);
    cr_assert_neq(cs, cd);
    cr_assert_eq(kvb_seq_fork(&a, &b, &cs, &cd), -EBUSY);
    /* the branches diverge; both complete block 2 with their own tokens */
    uint32_t other[24];
    tokens_fill(other, 24, 12);
    cr_assert_eq(kvb_seq_append_tokens(&a, tok + 40, 24), 2);
    cr_assert_eq(kvb_seq_append_tokens(&b, other, 24), 2);
    kvb_hash ha, hb, want[3];
    cr_assert_eq(kvb_seq_block_hash(&a, 2, &ha), 0);
    cr_assert_eq(kvb_seq_block_hash(&b, 2, &hb), 0);
    cr_assert(!kvb_hash_equal(ha, hb));
    uint32_t btok[64];
    memcpy(btok, tok, 40 * sizeof *tok);
    memcpy(btok + 40, other, 24 * sizeof *tok);
    cr_assert_eq(kvb_hash_tokens(btok, 64, 16, 0, want, 3), 3);
    cr_assert(kvb_hash_equal(hb, want[2]), "the fork's tail tokens were copied");
    /* a fork at a block boundary needs no copy */
    cr_assert_eq(kvb_seq_release(&b), 0);
    cr_assert_eq(kvb_seq_fork(&a, &b, &cs, &cd), 0);
    cr_assert_eq(kvb_seq_num_blocks(&b), 4);
    kvb_seq_fini(&a);
    kvb_seq_fini(&b);
    kvb_seq_fini(&c);
    tu_finish(p);
}

Test(seq, fork_enospc_changes_nothing)
{
    kvb_pool *p = pool_n(2, KVB_DUP_ALLOW);
    kvb_seq a, b;
    cr_assert_eq(kvb_seq_init(&a, p, 4), 0);
    cr_assert_eq(kvb_seq_init(&b, p, 4), 0);
    uint32_t tok[20], cs, cd;
    tokens_fill(tok, 20, 13);
    cr_assert_eq(kvb_seq_append_tokens(&a, tok, 20), 1); /* both blocks taken */
    cr_assert_eq(kvb_seq_fork(&a, &b, &cs, &cd), -ENOSPC);
    cr_assert_eq(kvb_seq_num_blocks(&b), 0);
    cr_assert_eq(kvb_block_use_count(&kvb_seq_blocks(&a)[0]), 1);
    kvb_seq_fini(&a);
    kvb_seq_fini(&b);
    tu_finish(p);
}

Test(seq, release_order_keeps_prefixes_cached_longest)
{
    /* LRU pool of 4 blocks: a released 3-block chain, then a 2-block allocation
     * evicts the two deepest blocks, and the first block still matches */
    kvb_pool *p = pool_n(4, KVB_DUP_ALLOW);
    kvb_seq s;
    cr_assert_eq(kvb_seq_init(&s, p, 4), 0);
    uint32_t tok[48];
    tokens_fill(tok, 48, 15);
    cr_assert_eq(kvb_seq_append_tokens(&s, tok, 48), 3);
    cr_assert_eq(kvb_seq_release(&s), 0);
    cr_assert_eq(kvb_seq_ensure_capacity(&s, 48), 3); /* 1 free + 2 evicted */
    kvb_seq other;
    cr_assert_eq(kvb_seq_init(&other, p, 4), 0);
    cr_assert_eq(kvb_seq_match_prefix(&other, tok, 48), 16);
    kvb_seq_fini(&other);
    kvb_seq_fini(&s);
    tu_finish(p);
}

Test(seq, release_is_reusable_and_fini_releases)
{
    kvb_pool *p = pool_n(8, KVB_DUP_ALLOW);
    kvb_seq s;
    cr_assert_eq(kvb_seq_init(&s, p, 8), 0);
    uint32_t tok[100];
    tokens_fill(tok, 100, 14);
    for (int round = 0; round < 5; round++) {
        /* fresh content each round (re-registering cached content would resurrect the
         * cached block and add a duplicate: one more block in use) */
        tokens_fill(tok, 100, 14 + (uint32_t)round);
        cr_assert_geq(kvb_seq_append_tokens(&s, tok, 20 + round * 10), 1);
        int nb = (int)kvb_seq_num_blocks(&s);
        cr_assert_eq(kvb_seq_ensure_capacity(&s, 128), 8 - nb);
        cr_assert_eq(avail(p), 0);
        cr_assert_eq(kvb_seq_release(&s), 0);
        cr_assert_eq(kvb_seq_num_blocks(&s), 0);
        cr_assert_eq(kvb_seq_len(&s), 0);
        cr_assert_eq(avail(p), 8);
        cr_assert_eq(kvb_pool_check(p), 0);
    }
    /* fini with handles held releases them */
    cr_assert_eq(kvb_seq_append_tokens(&s, tok, 70), 4);
    kvb_seq_fini(&s);
    tu_finish(p);
}

/* Random operations on several sequences over a small pool: every call either
 * succeeds or leaves its sequence as it was; nothing leaks. */
Test(seq, random_ops_never_leak)
{
    kvb_pool *p = pool_n(24, KVB_DUP_ALLOW);
    enum { NS = 5 };
    kvb_seq s[NS];
    for (int i = 0; i < NS; i++)
        cr_assert_eq(kvb_seq_init(&s[i], p, 6), 0);
    uint32_t tok[4][96];
    for (int i = 0; i < 4; i++)
        tokens_fill(tok[i], 96, 20 + (uint32_t)i);
    uint32_t prompt[NS] = {0};
    uint64_t x = 12345;
    for (int step = 0; step < 5000; step++) {
        tu_xorshift64(&x);
        int i = (int)(x % NS);
        uint32_t op = (uint32_t)(x >> 8) % 10;
        kvb_seq *q = &s[i];
        uint32_t len = kvb_seq_len(q), nb = kvb_seq_num_blocks(q);
        int rc;
        if (op < 4) {
            uint32_t n = 1 + (uint32_t)(x >> 20) % 20;
            if (len + n > 96)
                n = 96 - len;
            rc = kvb_seq_append_tokens(q, tok[prompt[i]] + len, n);
            if (rc < 0) {
                cr_assert(rc == -ENOSPC || rc == -E2BIG, "append: %d", rc);
                cr_assert_eq(kvb_seq_len(q), len);
                cr_assert_eq(kvb_seq_num_blocks(q), nb);
            } else {
                cr_assert_eq(kvb_seq_len(q), len + n);
            }
        } else if (op < 6) {
            rc = kvb_seq_ensure_capacity(q, len + (uint32_t)(x >> 24) % 40);
            if (rc < 0) {
                cr_assert(rc == -ENOSPC || rc == -E2BIG, "ensure: %d", rc);
                cr_assert_eq(kvb_seq_num_blocks(q), nb);
            }
        } else if (op < 8) {
            cr_assert_eq(kvb_seq_release(q), 0);
            prompt[i] = (uint32_t)(x >> 30) % 4;
            rc = kvb_seq_match_prefix(q, tok[prompt[i]], (uint32_t)(x >> 34) % 97);
            cr_assert_geq(rc, 0);
            cr_assert_eq(kvb_seq_len(q), (uint32_t)rc);
        } else {
            cr_assert_eq(kvb_seq_release(q), 0);
        }
        cr_assert_eq(kvb_seq_num_registered(q), kvb_seq_len(q) / 16);
        cr_assert_geq(kvb_seq_capacity(q), kvb_seq_len(q));
        if (step % 50 == 0)
            cr_assert_eq(kvb_pool_check(p), 0, "step %d", step);
    }
    for (int i = 0; i < NS; i++)
        kvb_seq_fini(&s[i]);
    tu_finish(p);
}
