/*
 * test_limits.c - the edges of every documented limit:
 *  - reference-count saturation (KVB_TESTING hook kvb__test_set_refcount):
 *    clone is -EOVERFLOW, lookups treat the block as a miss, a registration
 *    batch that would overflow the primary is refused whole;
 *  - hash positions at and past 2^24 - 1 (-EOVERFLOW, nothing written);
 *  - block_count at KVB_MAX_BLOCKS (validation accepts it; the allocation
 *    sizes are computed without overflow), KVB_MAX_BLOCKS + 1 (-EINVAL, no
 *    allocation at all) and a large pool that is actually built and filled;
 *  - KVB_REGISTRY_MAX_POOLS pools on one registry;
 *  - NULL pointers (out-parameters, objects) on every public function: the
 *    documented error, no crash, no side effect;
 *  - n = 0 on every batch call: returns 0, fires no callback, takes no lock,
 *    changes no counter (API.md).
 */
#include "testutil.h"
#include "testing.h"
#include "kvblock/device.h"
#include "kvblock/seq.h"
#include <stdlib.h>
#include <sys/mman.h>

#define RC_MAX (UINT32_MAX - 1) /* most references one block may hold (kvb_block_clone) */

/* ---- reference counts ------------------------------------------------------ */

Test(limits, refcount_saturation_clone_lookup_upgrade)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(1);
    kvb_block b = tu_put1(p, h);
    kvb_weak w;
    kvb_block_downgrade(&b, &w);

    kvb__test_set_refcount(p, b.id, RC_MAX);
    cr_expect_eq(kvb_block_use_count(&b), RC_MAX);
    kvb_block x;
    memset(&x, 0xab, sizeof x);
    cr_expect_eq(kvb_block_clone(&b, &x), -EOVERFLOW);
    cr_expect_eq(x.id, 0xabababab, "a failed clone writes nothing");
    cr_expect_eq(tu_stats(p).misuse, 0, "overflow is not misuse");

    /* lookups cannot take another reference: a miss, counted as requested */
    kvb_block out[2];
    bool hit[2];
    kvb_stats s0 = tu_stats(p);
    cr_expect_eq(kvb_pool_match(p, &h, 1, out), 0);
    cr_expect_eq(kvb_pool_match_scattered(p, &h, 1, out, hit), 0);
    cr_expect_not(hit[0]);
    cr_expect_eq(kvb_pool_scan(p, &h, 1, true, out, hit), 0);
    cr_expect_not(hit[0]);
    kvb_stats s1 = tu_stats(p);
    cr_expect_eq(s1.match_requested, s0.match_requested + 2);
    cr_expect_eq(s1.match_returned, s0.match_returned);
    cr_expect_eq(s1.scan_requested, s0.scan_requested + 1);
    cr_expect_eq(s1.primary, 1, "the saturated block is untouched");
    cr_expect_eq(kvb_weak_upgrade(&w, &x), -ENOENT, "saturated: the upgrade cannot succeed");
    cr_expect_eq(kvb_block_use_count(&b), RC_MAX);

    /* one below the limit: exactly one more clone */
    kvb__test_set_refcount(p, b.id, RC_MAX - 1);
    cr_expect_eq(kvb_block_clone(&b, &x), 0);
    cr_expect_eq(kvb_block_use_count(&b), RC_MAX);
    kvb_block y;
    cr_expect_eq(kvb_block_clone(&b, &y), -EOVERFLOW);
    cr_expect_eq(kvb_pool_check(p), 0);

    /* back to the two real references, release them */
    kvb__test_set_refcount(p, b.id, 2);
    cr_expect_eq(kvb_block_release(&x), 0);
    cr_expect_eq(kvb_block_release(&b), 0);
    cr_expect_eq(tu_stats(p).inactive, 1);
    tu_finish(p);
}

Test(limits, refcount_saturation_refuses_whole_registration_batch)
{
    kvb_pool *p = tu_pool(8, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(2);
    kvb_block b = tu_put1(p, h);
    kvb_complete c[2] = {tu_stage1(p, h), tu_stage1(p, tu_hash(3))};
    kvb_complete keep[2] = {c[0], c[1]};
    kvb_block out[2];

    /* a batch of 2 needs room for 2 more references on the primary of h (one) */
    kvb__test_set_refcount(p, b.id, RC_MAX);
    kvb_stats s0 = tu_stats(p);
    cr_expect_eq(kvb_pool_register(p, c, 2, out), -EOVERFLOW);
    cr_expect_eq(memcmp(c, keep, sizeof c), 0, "a refused batch consumes nothing");
    kvb_stats s1 = tu_stats(p);
    cr_expect_eq(s1.staged, 2);
    cr_expect_eq(s1.registrations, s0.registrations);
    cr_expect_eq(s1.misuse, s0.misuse);
    cr_expect_eq(kvb_pool_check(p), 0);

    /* exact boundary: two blocks of h need two more references on its primary */
    kvb_complete two[2] = {c[0], tu_stage1(p, h)};
    kvb__test_set_refcount(p, b.id, RC_MAX - 1);
    cr_expect_eq(kvb_pool_register(p, two, 2, out), -EOVERFLOW, "RC_MAX - 1 + 2 > RC_MAX");
    kvb__test_set_refcount(p, b.id, RC_MAX - 2);
    cr_expect_eq(kvb_pool_register(p, two, 2, out), 0, "RC_MAX - 2 + 2 == RC_MAX fits");
    cr_expect_eq(kvb_block_use_count(&b), RC_MAX, "each duplicate holds one reference");
    cr_expect_eq(tu_stats(p).duplicate, 2);
    cr_expect_eq(kvb_pool_check(p), 0);
    cr_expect_eq(kvb_block_release_n(out, 2), 0);
    kvb__test_set_refcount(p, b.id, 1);
    cr_expect_eq(kvb_block_release(&b), 0);
    cr_expect_eq(kvb_complete_release(&c[1]), 0);
    tu_finish(p);
}

/* ---- hash positions ---------------------------------------------------------- */

Test(limits, hash_position_boundaries)
{
    static const uint32_t ok[] = {0, 255, 256, 65535, 65536, KVB_HASH_MAX_POSITION};
    kvb_hash h, keep;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        cr_expect_eq(kvb_hash_make(0x1234, 0x99, true, ok[i], &h), 0);
        cr_expect_eq(kvb_hash_position(h), ok[i]);
        cr_expect_eq(kvb_hash_current(h), 0x1234u);
    }
    static const uint32_t bad[] = {KVB_HASH_MAX_POSITION + 1, 1u << 25, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&h, 0x5a, sizeof h);
        keep = h;
        cr_expect_eq(kvb_hash_make(1, 0, false, bad[i], &h), -EOVERFLOW, "position %u", bad[i]);
        cr_expect_eq(memcmp(&h, &keep, sizeof h), 0, "nothing written");
    }
    kvb_hash last, child;
    cr_assert_eq(kvb_hash_make(7, 6, true, KVB_HASH_MAX_POSITION, &last), 0);
    cr_expect_eq(kvb_hash_extend(last, 8, &child), -EOVERFLOW);
    kvb_hash before;
    cr_assert_eq(kvb_hash_make(7, 6, true, KVB_HASH_MAX_POSITION - 1, &before), 0);
    cr_expect_eq(kvb_hash_extend(before, 8, &child), 0);
    cr_expect_eq(kvb_hash_position(child), KVB_HASH_MAX_POSITION);
    cr_expect(kvb_hash_is_parent(before, child));
}

Test(limits, hash_tokens_past_max_position_writes_nothing)
{
    /* 2^24 + 1 blocks of one token: the last block would sit at position 2^24. The
     * buffers are real (lazily backed mappings) but must not be touched. */
    size_t nblocks = (size_t)KVB_HASH_MAX_POSITION + 2;
    size_t tbytes = nblocks * sizeof(uint32_t), obytes = nblocks * sizeof(kvb_hash);
    uint32_t *tok = mmap(NULL, tbytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    kvb_hash *out = mmap(NULL, obytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    cr_assert_neq(tok, MAP_FAILED);
    cr_assert_neq(out, MAP_FAILED);
    out[0].hi = out[0].lo = 0x77;
    cr_expect_eq(kvb_hash_tokens(tok, nblocks, 1, 0, out, nblocks), -EOVERFLOW);
    cr_expect_eq(out[0].hi, 0x77u, "nothing written");
    /* out_cap bounds the work: the same tokens with room for 3 give 3 hashes */
    cr_expect_eq(kvb_hash_tokens(tok, nblocks, 1, 0, out, 3), 3);
    cr_expect_eq(kvb_hash_position(out[2]), 2u);
    munmap(tok, tbytes);
    munmap(out, obytes);
}

/* ---- block counts -------------------------------------------------------------- */

struct big_alloc {
    size_t largest, n_alloc, n_free, live;
    size_t fail_above; /* requests larger than this fail */
};

static void *big_alloc_fn(void *ctx, size_t size)
{
    struct big_alloc *a = ctx;
    if (size > a->largest)
        a->largest = size;
    if (size > a->fail_above)
        return NULL;
    void *p = malloc(size ? size : 1);
    if (p) {
        a->n_alloc++;
        a->live += size;
    }
    return p;
}

static void big_free_fn(void *ctx, void *ptr, size_t size)
{
    struct big_alloc *a = ctx;
    a->n_free++;
    a->live -= size;
    free(ptr);
}

Test(limits, block_count_validation_at_the_maximum)
{
    struct big_alloc a = {.fail_above = 1u << 20};
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.allocator = (kvb_allocator){.ctx = &a, .alloc = big_alloc_fn, .free = big_free_fn};
    kvb_pool *p = (kvb_pool *)0x1;

    static const uint32_t bad[] = {0, KVB_MAX_BLOCKS + 1, UINT32_MAX - 1, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfg.block_count = bad[i];
        cr_expect_eq(kvb_pool_create(&cfg, &p), -EINVAL, "block_count %u", bad[i]);
    }
    cr_expect_eq(a.largest, 0, "an invalid count is refused before any allocation");
    cr_expect_eq(p, (kvb_pool *)0x1, "out untouched");

    /* KVB_MAX_BLOCKS passes validation; the slot array (>= 16 bytes per block, it
     * holds the hash) cannot be had here: -ENOMEM, nothing leaked, sizes sane. */
    cfg.block_count = KVB_MAX_BLOCKS;
    cr_expect_eq(kvb_pool_create(&cfg, &p), -ENOMEM);
    cr_expect_geq(a.largest, (size_t)KVB_MAX_BLOCKS * sizeof(kvb_hash),
                  "largest request %zu: a size computation overflowed?", a.largest);
    cr_expect_lt(a.largest, (size_t)1 << 40, "largest request %zu", a.largest);
    cr_expect_eq(a.n_alloc, a.n_free);
    cr_expect_eq(a.live, 0);
    cr_expect_eq(p, (kvb_pool *)0x1);

    /* the same through every built-in policy (and values that are none) */
    for (int pol = 0; pol < 16; pol++) {
        cfg.evict = (kvb_evict_policy)pol;
        int rc = kvb_pool_create(&cfg, &p);
        if (kvb_inactive_builtin(cfg.evict))
            cr_expect_eq(rc, -ENOMEM, "policy %d", pol);
        else
            cr_expect(rc == -EINVAL || rc == -ENOTSUP, "policy %d: %d", pol, rc);
    }
    cr_expect_eq(a.live, 0);
}

Test(limits, large_pool_fill_and_drain, .timeout = 120)
{
    const uint32_t n = 1u << 20;
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = n;
    kvb_pool *p = tu_pool_cfg(&cfg);
    kvb_mutable *m = calloc(n, sizeof *m);
    cr_assert_not_null(m);
    cr_expect_eq(kvb_pool_allocate(p, n + 1, m, NULL, NULL), -ENOSPC);
    cr_expect_eq(kvb_pool_allocate(p, UINT32_MAX, m, NULL, NULL), -ENOSPC);
    cr_expect_eq(kvb_pool_allocate(p, n, m, NULL, NULL), 0, "the whole pool in one call");
    cr_expect_eq(m[0].id, 0);
    cr_expect_eq(m[n - 1].id, n - 1, "free list in id order");
    cr_expect_eq(kvb_pool_available(p), 0);
    kvb_mutable one;
    cr_expect_eq(kvb_pool_allocate(p, 1, &one, NULL, NULL), -ENOSPC);
    cr_expect_eq(kvb_pool_check(p), 0);
    /* register the last 1000 blocks, release everything, drain the cache */
    for (uint32_t i = n - 1000; i < n; i++) {
        kvb_complete c;
        kvb_block b;
        cr_assert_eq(kvb_mutable_stage(&m[i], tu_hash(i), &c), 0);
        cr_assert_eq(kvb_pool_register(p, &c, 1, &b), 0);
        cr_assert_eq(kvb_block_release(&b), 0);
    }
    for (uint32_t i = 0; i < n - 1000; i++)
        cr_assert_eq(kvb_mutable_release(&m[i]), 0);
    cr_expect_eq(kvb_pool_available(p), n);
    cr_expect_eq(tu_stats(p).inactive, 1000);
    cr_expect_eq(kvb_pool_reset_inactive(p), 1000);
    cr_expect_eq(tu_stats(p).peak_in_use, n);
    free(m);
    tu_finish(p);
}

Test(limits, registry_serves_at_most_max_pools)
{
    kvb_registry *r;
    cr_assert_eq(kvb_registry_create(NULL, &r), 0);
    kvb_pool *p[KVB_REGISTRY_MAX_POOLS + 1];
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 2;
    cfg.registry = r;
    for (int i = 0; i < KVB_REGISTRY_MAX_POOLS; i++)
        cr_assert_eq(kvb_pool_create(&cfg, &p[i]), 0);
    kvb_pool *extra = NULL;
    /* Observed -ENOSPC; the header lists -EINVAL, -ENOTSUP and -ENOMEM for
     * kvb_pool_create (reported: it should document this case). */
    cr_expect_eq(kvb_pool_create(&cfg, &extra), -ENOSPC);
    cr_expect_null(extra);
    cr_expect_eq(kvb_registry_destroy(r), -EBUSY);
    cr_expect_eq(kvb_pool_destroy(p[3]), 0);
    cr_expect_eq(kvb_pool_create(&cfg, &p[3]), 0, "a freed index is reused");
    for (int i = 0; i < KVB_REGISTRY_MAX_POOLS; i++)
        tu_finish(p[i]);
    cr_expect_eq(kvb_registry_destroy(r), 0);
}

/* ---- NULL on every public function --------------------------------------------- */

Test(limits, null_arguments_hashes_and_errors)
{
    kvb_hash h = tu_hash(1);
    cr_expect_not_null(kvb_strerror(-EINVAL));
    cr_expect_not_null(kvb_strerror(12345));
    cr_expect_str_eq(kvb_err_name(-ESTALE), "ESTALE");
    cr_expect_str_eq(kvb_err_name(99999), "EUNKNOWN");
    /* the fleet code's errors have names too (snapshots, subscriber, Redis) */
    static const int fleet_errs[] = {EBADMSG, ETIMEDOUT, EADDRINUSE, ECONNREFUSED, ECONNRESET,
                                     EACCES,  EALREADY,  EPROTO,     EPERM};
    for (size_t i = 0; i < sizeof fleet_errs / sizeof fleet_errs[0]; i++)
        cr_expect_str_neq(kvb_err_name(-fleet_errs[i]), "EUNKNOWN", "errno %d", fleet_errs[i]);
    cr_expect_str_eq(kvb_err_name(-EBADMSG), "EBADMSG");
    cr_expect_eq(kvb_hash_make(1, 0, false, 0, NULL), -EINVAL);
    cr_expect_eq(kvb_hash_extend(h, 2, NULL), -EINVAL);
    cr_expect_gt(kvb_hash_format(h, NULL, 0), 0, "sizing call");
    cr_expect_eq(kvb_hash_format(h, NULL, 8), -EINVAL);
    uint32_t tok[16] = {0};
    kvb_hash out[1];
    cr_expect_eq(kvb_hash_tokens(NULL, 0, 16, 0, NULL, 0), 0);
    cr_expect_eq(kvb_hash_tokens(NULL, 16, 16, 0, out, 1), -EINVAL);
    cr_expect_eq(kvb_hash_tokens(tok, 16, 16, 0, NULL, 1), -EINVAL);
    cr_expect_eq(kvb_hash_tokens(tok, 16, 0, 0, out, 1), -EINVAL);
    cr_expect_eq(kvb_hash_salt(NULL, 0), 0);
    cr_expect_null(kvb_inactive_builtin((kvb_evict_policy)99));
}

Test(limits, null_arguments_pool_and_handles)
{
    kvb_pool_config_init(NULL); /* no crash */
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 4;
    kvb_pool *p = NULL;
    cr_expect_eq(kvb_pool_create(NULL, &p), -EINVAL);
    cr_expect_eq(kvb_pool_create(&cfg, NULL), -EINVAL);
    cr_expect_eq(kvb_pool_destroy(NULL), -EINVAL);
    cr_expect_eq(kvb_pool_id(NULL), 0);
    cr_expect_eq(kvb_pool_block_count(NULL), 0);
    cr_expect_eq(kvb_pool_block_size(NULL), 0);
    cr_expect_str_eq(kvb_pool_name(NULL), "");
    cr_expect_str_eq(kvb_pool_policy_name(NULL), "");
    cr_expect_eq(kvb_pool_available(NULL), 0);
    cr_expect_eq(kvb_pool_reset_inactive(NULL), -EINVAL);
    cr_expect_eq(kvb_pool_check(NULL), -EINVAL);
    kvb_stats st;
    cr_expect_eq(kvb_pool_stats(NULL, &st), -EINVAL);
    char buf[8];
    cr_expect_eq(kvb_pool_metrics_text(NULL, buf, sizeof buf), -EINVAL);

    p = tu_pool_cfg(&cfg);
    kvb_hash h = tu_hash(1);
    cr_expect_eq(kvb_pool_stats(p, NULL), -EINVAL);
    cr_expect_eq(kvb_pool_metrics_text(p, NULL, 8), -EINVAL);
    int need = kvb_pool_metrics_text(p, NULL, 0);
    cr_expect_gt(need, 0);
    memset(buf, 'x', sizeof buf);
    cr_expect_eq(kvb_pool_metrics_text(p, buf, sizeof buf), need, "snprintf semantics");
    cr_expect_eq(buf[sizeof buf - 1], '\0', "truncated output is terminated");

    kvb_mutable m[2];
    uint32_t ne = 77;
    cr_expect_eq(kvb_pool_allocate(NULL, 1, m, NULL, &ne), -EINVAL);
    cr_expect_eq(ne, 0, "n_evicted is written even on failure");
    cr_expect_eq(kvb_pool_allocate(p, 1, NULL, NULL, NULL), -EINVAL);
    cr_expect_eq(kvb_pool_allocate(p, 2, m, NULL, NULL), 0, "evicted and n_evicted nullable");

    kvb_complete c;
    kvb_mutable keep = m[0];
    cr_expect_eq(kvb_mutable_stage(NULL, h, &c), -EINVAL);
    cr_expect_eq(kvb_mutable_stage(&m[0], h, NULL), -EINVAL);
    cr_expect_eq(memcmp(&m[0], &keep, sizeof keep), 0, "not consumed");
    cr_expect_eq(kvb_mutable_release(NULL), -EINVAL);
    cr_assert_eq(kvb_mutable_stage(&m[0], h, &c), 0);
    kvb_complete ckeep = c;
    kvb_mutable back;
    cr_expect_eq(kvb_complete_reset(NULL, &back), -EINVAL);
    cr_expect_eq(kvb_complete_reset(&c, NULL), -EINVAL);
    cr_expect_eq(memcmp(&c, &ckeep, sizeof c), 0);
    cr_expect_eq(kvb_complete_release(NULL), -EINVAL);

    kvb_block b, x;
    cr_expect_eq(kvb_pool_register(NULL, &c, 1, &b), -EINVAL);
    cr_expect_eq(kvb_pool_register(p, NULL, 1, &b), -EINVAL);
    cr_expect_eq(kvb_pool_register(p, &c, 1, NULL), -EINVAL);
    cr_expect_eq(memcmp(&c, &ckeep, sizeof c), 0);
    cr_assert_eq(kvb_pool_register(p, &c, 1, &b), 0);

    bool hit[1];
    cr_expect_eq(kvb_pool_match(NULL, &h, 1, &x), -EINVAL);
    cr_expect_eq(kvb_pool_match(p, NULL, 1, &x), -EINVAL);
    cr_expect_eq(kvb_pool_match(p, &h, 1, NULL), -EINVAL);
    cr_expect_eq(kvb_pool_match_scattered(NULL, &h, 1, &x, hit), -EINVAL);
    cr_expect_eq(kvb_pool_match_scattered(p, NULL, 1, &x, hit), -EINVAL);
    cr_expect_eq(kvb_pool_match_scattered(p, &h, 1, NULL, hit), -EINVAL);
    cr_expect_eq(kvb_pool_match_scattered(p, &h, 1, &x, NULL), -EINVAL);
    cr_expect_eq(kvb_pool_scan(NULL, &h, 1, true, &x, hit), -EINVAL);
    cr_expect_eq(kvb_pool_scan(p, NULL, 1, true, &x, hit), -EINVAL);
    cr_expect_eq(kvb_pool_scan(p, &h, 1, true, NULL, hit), -EINVAL);
    cr_expect_eq(kvb_pool_scan(p, &h, 1, true, &x, NULL), -EINVAL);

    cr_expect_eq(kvb_block_clone(NULL, &x), -EINVAL);
    cr_expect_eq(kvb_block_clone(&b, NULL), -EINVAL);
    cr_expect_eq(kvb_block_release(NULL), -EINVAL);
    cr_expect_eq(kvb_block_release_n(NULL, 1), -EINVAL);
    cr_expect_eq(kvb_block_set_reset_on_release(NULL, true), -EINVAL);
    cr_expect_eq(kvb_block_use_count(NULL), 0);
    kvb_block_addr addr;
    cr_expect_eq(kvb_block_address(NULL, &addr), -EINVAL);
    cr_expect_eq(kvb_block_address(&b, NULL), -EINVAL);
    kvb_weak w;
    kvb_block_downgrade(&b, NULL); /* no crash */
    memset(&w, 0x33, sizeof w);
    kvb_block_downgrade(NULL, &w);
    cr_expect_null(w.pool, "downgrade of NULL gives a cleared weak handle");
    kvb_block_downgrade(&b, &w);
    cr_expect_eq(kvb_weak_upgrade(NULL, &x), -EINVAL);
    cr_expect_eq(kvb_weak_upgrade(&w, NULL), -EINVAL);

    kvb_stats s = tu_stats(p);
    cr_expect_eq(s.misuse, 0, "NULL arguments are not handle misuse");
    cr_expect_eq(s.primary, 1);
    cr_expect_eq(s.mutable_, 1);
    cr_expect_eq(s.match_requested, 0, "failed calls count nothing");
    cr_expect_eq(kvb_block_use_count(&b), 1);
    cr_expect_eq(kvb_block_release(&b), 0);
    cr_expect_eq(kvb_mutable_release(&m[1]), 0);
    tu_finish(p);
}

Test(limits, null_arguments_registry)
{
    kvb_registry_config_init(NULL);
    kvb_registry *r;
    cr_expect_eq(kvb_registry_create(NULL, NULL), -EINVAL);
    cr_assert_eq(kvb_registry_create(NULL, &r), 0, "NULL config = defaults");
    cr_expect_eq(kvb_registry_destroy(NULL), -EINVAL);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 2;
    cfg.registry = r;
    kvb_pool *p = tu_pool_cfg(&cfg);
    kvb_hash h = tu_hash(1);
    bool out[1];
    cr_expect_eq(kvb_registry_present(NULL, &h, 1, p, out), -EINVAL);
    cr_expect_eq(kvb_registry_present(r, NULL, 1, p, out), -EINVAL);
    cr_expect_eq(kvb_registry_present(r, &h, 1, NULL, out), -EINVAL);
    cr_expect_eq(kvb_registry_present(r, &h, 1, p, NULL), 0, "out is nullable");
    kvb_pool *other = tu_pool(2, KVB_EVICT_LRU);
    cr_expect_eq(kvb_registry_present(r, &h, 1, other, out), -EINVAL, "pool not attached");
    cr_expect_eq(kvb_registry_frequency(NULL, h), 0);
    kvb_registry_touch(NULL, h); /* no crash */
    tu_finish(other);
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(r), 0);
}

Test(limits, null_arguments_seq)
{
    kvb_pool *p = tu_pool(8, KVB_EVICT_LRU);
    kvb_seq s, d;
    memset(&s, 0, sizeof s);
    memset(&d, 0, sizeof d);
    cr_expect_eq(kvb_seq_init(NULL, p, 4), -EINVAL);
    cr_expect_eq(kvb_seq_init(&s, NULL, 4), -EINVAL);
    cr_expect_eq(kvb_seq_init(&s, p, 0), -EINVAL);
    cr_expect_eq(kvb_seq_init(&s, p, KVB_HASH_MAX_POSITION + 2), -EINVAL);
    kvb_seq_fini(NULL);
    kvb_seq_fini(&s); /* zero-filled: no-op */
    cr_expect_eq(kvb_seq_set_salt(NULL, 1), -EINVAL);
    cr_expect_eq(kvb_seq_match_prefix(NULL, NULL, 0), -EINVAL);
    cr_expect_eq(kvb_seq_ensure_capacity(NULL, 1), -EINVAL);
    cr_expect_eq(kvb_seq_append_tokens(NULL, NULL, 0), -EINVAL);
    cr_expect_eq(kvb_seq_release(NULL), -EINVAL);
    cr_expect_eq(kvb_seq_len(NULL), 0);
    cr_expect_eq(kvb_seq_num_blocks(NULL), 0);
    cr_expect_eq(kvb_seq_num_registered(NULL), 0);
    cr_expect_eq(kvb_seq_capacity(NULL), 0);
    cr_expect_null(kvb_seq_block_ids(NULL));
    cr_expect_null(kvb_seq_blocks(NULL));
    kvb_hash h;
    cr_expect_eq(kvb_seq_block_hash(NULL, 0, &h), -EINVAL);

    cr_assert_eq(kvb_seq_init(&s, p, 4), 0);
    cr_assert_eq(kvb_seq_init(&d, p, 4), 0);
    cr_expect_eq(kvb_seq_match_prefix(&s, NULL, 5), -EINVAL);
    cr_expect_eq(kvb_seq_append_tokens(&s, NULL, 3), -EINVAL);
    cr_expect_eq(kvb_seq_block_hash(&s, 0, NULL), -EINVAL);
    uint32_t a, b;
    cr_expect_eq(kvb_seq_fork(NULL, &d, &a, &b), -EINVAL);
    cr_expect_eq(kvb_seq_fork(&s, NULL, &a, &b), -EINVAL);
    cr_expect_eq(kvb_seq_fork(&s, &d, NULL, &b), -EINVAL);
    cr_expect_eq(kvb_seq_fork(&s, &d, &a, NULL), -EINVAL);
    cr_expect_eq(kvb_seq_len(&s), 0);
    kvb_seq_fini(&s);
    kvb_seq_fini(&d);
    tu_finish(p);
}

Test(limits, null_arguments_device_cpu)
{
    kvb_device *dev;
    cr_expect_eq(kvb_device_open(KVB_DEVICE_CPU, NULL), -EINVAL);
    cr_assert_eq(kvb_device_open(KVB_DEVICE_CPU, &dev), 0);
    cr_expect_not_null(kvb_device_name(NULL));
    kvb_device_stats ds;
    cr_expect_eq(kvb_device_get_stats(NULL, &ds), -EINVAL);
    cr_expect_eq(kvb_device_get_stats(dev, NULL), -EINVAL);
    cr_expect_eq(kvb_device_wait_idle(NULL), -EINVAL);
    kvb_device_close(NULL);
    kvb_table *t;
    cr_expect_eq(kvb_table_create(NULL, 2, 2, 16, &t), -EINVAL);
    cr_expect_eq(kvb_table_create(dev, 2, 2, 16, NULL), -EINVAL);
    cr_assert_eq(kvb_table_create(dev, 2, 4, 16, &t), 0);
    uint32_t ids[1] = {1}, rows[1] = {0}, pos[1] = {0};
    int64_t slots[1];
    int32_t row[4];
    cr_expect_eq(kvb_table_set_row(NULL, 0, ids, 1), -EINVAL);
    cr_expect_eq(kvb_table_set_row(t, 0, NULL, 1), -EINVAL);
    cr_expect_eq(kvb_table_append(NULL, 0, ids, 1), -EINVAL);
    cr_expect_eq(kvb_table_append(t, 0, NULL, 1), -EINVAL);
    cr_expect_eq(kvb_table_clear_row(NULL, 0), -EINVAL);
    cr_expect_eq(kvb_table_move_row(NULL, 0, 1), -EINVAL);
    cr_expect_eq(kvb_table_swap_rows(NULL, 0, 1), -EINVAL);
    cr_expect_eq(kvb_table_set_context_len(NULL, 0, 1), -EINVAL);
    cr_expect_eq(kvb_table_row_len(NULL, 0), 0);
    cr_expect_eq(kvb_table_sync(NULL), -EINVAL);
    cr_expect_eq(kvb_table_slot_mapping(NULL, rows, pos, 1, 1, slots), -EINVAL);
    cr_expect_eq(kvb_table_slot_mapping(t, NULL, pos, 1, 1, slots), -EINVAL);
    cr_expect_eq(kvb_table_slot_mapping(t, rows, NULL, 1, 1, slots), -EINVAL);
    cr_expect_eq(kvb_table_slot_mapping(t, rows, pos, 1, 1, NULL), -EINVAL);
    cr_expect_eq(kvb_table_read_row(NULL, 0, row, 1), -EINVAL);
    cr_expect_eq(kvb_table_read_row(t, 0, NULL, 1), -EINVAL);
    cr_expect_eq(kvb_table_read_context_lens(NULL, 0, 1, row), -EINVAL);
    cr_expect_eq(kvb_table_read_context_lens(t, 0, 1, NULL), -EINVAL);
    kvb_table_destroy(NULL);
    kvb_kv_buffer *kb;
    cr_expect_eq(kvb_kv_buffer_create(NULL, 2, 64, &kb), -EINVAL);
    cr_expect_eq(kvb_kv_buffer_create(dev, 2, 64, NULL), -EINVAL);
    cr_assert_eq(kvb_kv_buffer_create(dev, 2, 64, &kb), 0);
    char bytes[64] = {0};
    cr_expect_eq(kvb_kv_buffer_write(NULL, 0, bytes), -EINVAL);
    cr_expect_eq(kvb_kv_buffer_write(kb, 0, NULL), -EINVAL);
    cr_expect_eq(kvb_kv_buffer_read(NULL, 0, bytes), -EINVAL);
    cr_expect_eq(kvb_kv_buffer_read(kb, 0, NULL), -EINVAL);
    cr_expect_eq(kvb_kv_buffer_copy_blocks(NULL, NULL, 0), -EINVAL);
    cr_expect_eq(kvb_kv_buffer_copy_blocks(kb, NULL, 1), -EINVAL);
    cr_expect_eq(kvb_kv_buffer_num_blocks(NULL), 0);
    cr_expect_eq(kvb_kv_buffer_block_bytes(NULL), 0);
    kvb_kv_buffer_destroy(NULL);
    kvb_kv_buffer_destroy(kb);
    kvb_table_destroy(t);
    kvb_device_close(dev);
}

/* ---- n = 0 on every batch call ------------------------------------------------- */

static unsigned cb_calls;
static void count_reset(void *u, uint32_t id)
{
    (void)u;
    (void)id;
    cb_calls++;
}
static void count_evict(void *u, kvb_hash h, uint32_t id)
{
    (void)u;
    (void)h;
    (void)id;
    cb_calls++;
}
static unsigned sink_calls;
static void count_sink(void *u, const kvb_pool *p, const kvb_event *e, uint32_t n)
{
    (void)u;
    (void)p;
    (void)e;
    (void)n;
    sink_calls++;
}

/* Everything in the stats but the lock counters, which kvb_pool_stats itself moves. */
static void expect_same_counters(const kvb_stats *a, const kvb_stats *b)
{
    kvb_stats x = *a, y = *b;
    cr_expect_eq(y.lock_acquisitions, x.lock_acquisitions + 1,
                 "a no-op batch call took the pool lock (%llu -> %llu)",
                 (unsigned long long)x.lock_acquisitions, (unsigned long long)y.lock_acquisitions);
    x.lock_acquisitions = y.lock_acquisitions = 0;
    x.lock_contended = y.lock_contended = 0;
    x.lock_wait_ns = y.lock_wait_ns = 0;
    cr_expect_eq(memcmp(&x, &y, sizeof x), 0, "a no-op batch call changed the stats");
}

Test(limits, zero_length_batches_are_silent_no_ops)
{
    kvb_registry *r;
    cr_assert_eq(kvb_registry_create(NULL, &r), 0);
    kvb_event_config ev = {.sink = count_sink};
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 4;
    cfg.registry = r;
    cfg.events = &ev;
    cfg.callbacks = (kvb_callbacks){.on_reset = count_reset, .on_evict = count_evict};
    kvb_pool *p = tu_pool_cfg(&cfg);
    /* some content in the cache, so a real call would have something to do */
    kvb_mutable m[4];
    cr_assert_eq(kvb_pool_allocate(p, 4, m, NULL, NULL), 0);
    for (int i = 0; i < 4; i++) {
        kvb_complete c;
        kvb_block b;
        cr_assert_eq(kvb_mutable_stage(&m[i], tu_hash((uint64_t)i), &c), 0);
        cr_assert_eq(kvb_pool_register(p, &c, 1, &b), 0);
        cr_assert_eq(kvb_block_release(&b), 0);
    }
    cb_calls = sink_calls = 0;

    kvb_stats a = tu_stats(p), b;
    uint32_t ne = 9;
    cr_expect_eq(kvb_pool_allocate(p, 0, NULL, NULL, &ne), 0);
    cr_expect_eq(ne, 0);
    b = tu_stats(p);
    expect_same_counters(&a, &b);
    a = b;
    cr_expect_eq(kvb_pool_register(p, NULL, 0, NULL), 0);
    b = tu_stats(p);
    expect_same_counters(&a, &b);
    a = b;
    cr_expect_eq(kvb_pool_match(p, NULL, 0, NULL), 0);
    b = tu_stats(p);
    expect_same_counters(&a, &b);
    a = b;
    cr_expect_eq(kvb_pool_match_scattered(p, NULL, 0, NULL, NULL), 0);
    b = tu_stats(p);
    expect_same_counters(&a, &b);
    a = b;
    cr_expect_eq(kvb_pool_scan(p, NULL, 0, true, NULL, NULL), 0);
    b = tu_stats(p);
    expect_same_counters(&a, &b);
    a = b;
    cr_expect_eq(kvb_block_release_n(NULL, 0), 0);
    b = tu_stats(p);
    expect_same_counters(&a, &b);
    cr_expect_eq(kvb_registry_present(r, NULL, 0, p, NULL), 0);
    cr_expect_eq(cb_calls, 0, "no callback");
    cr_expect_eq(sink_calls, 0, "no event");
    cr_expect_eq(b.inactive, 4);

    /* device batch calls (cpu backend): nothing submitted */
    kvb_device *dev;
    cr_assert_eq(kvb_device_open(KVB_DEVICE_CPU, &dev), 0);
    kvb_table *t;
    kvb_kv_buffer *kb;
    cr_assert_eq(kvb_table_create(dev, 2, 4, 16, &t), 0);
    cr_assert_eq(kvb_kv_buffer_create(dev, 4, 64, &kb), 0);
    kvb_device_stats d0, d1;
    cr_assert_eq(kvb_device_get_stats(dev, &d0), 0);
    cr_expect_eq(kvb_table_append(t, 0, NULL, 0), 0);
    cr_expect_eq(kvb_table_row_len(t, 0), 0);
    cr_expect_eq(kvb_table_slot_mapping(t, NULL, NULL, 0, 0, NULL), 0);
    cr_expect_eq(kvb_table_read_row(t, 0, NULL, 0), 0);
    cr_expect_eq(kvb_table_read_context_lens(t, 0, 0, NULL), 0);
    cr_expect_eq(kvb_kv_buffer_copy_blocks(kb, NULL, 0), 0);
    cr_assert_eq(kvb_device_get_stats(dev, &d1), 0);
    cr_expect_eq(d1.submissions, d0.submissions, "no submission");
    cr_expect_eq(d1.dispatches, d0.dispatches);
    cr_expect_eq(d1.blocks_copied, d0.blocks_copied);
    kvb_kv_buffer_destroy(kb);
    kvb_table_destroy(t);
    kvb_device_close(dev);

    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(r), 0);
}
