/*
 * test_policy_list.c - the enumeration of the built-in eviction backends
 * (kvblock/inactive.h): kvb_inactive_policy(i) lists them in kvb_evict_policy
 * order until NULL, kvb_inactive_find(name) finds one by name, and each listed
 * table makes a working pool, the same one whether it is passed as
 * kvb_pool_config.evict_ops or through its index as kvb_pool_config.evict.
 *
 * The tools (kvb-replay --policy all, kvb-bench) run exactly this list, so a
 * backend missing from it would silently drop out of every comparison.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kvblock.h"
#include "testutil.h"

/* The backends the public header declares, by policy value: the list must hold
 * each of them, at its value, and nothing else. */
static const struct {
    kvb_evict_policy policy;
    const kvb_inactive_ops *ops;
    const char *name;
} declared[] = {
    {KVB_EVICT_LRU, &kvb_inactive_lru, "lru"},
    {KVB_EVICT_FIFO, &kvb_inactive_fifo, "fifo"},
    {KVB_EVICT_MULTI_LRU, &kvb_inactive_multi_lru, "multi_lru"},
    {KVB_EVICT_TINYLFU, &kvb_inactive_tinylfu, "tinylfu"},
    {KVB_EVICT_LINEAGE, &kvb_inactive_lineage, "lineage"},
    {KVB_EVICT_LINEAGE_ARC, &kvb_inactive_lineage_arc, "lineage_arc"},
    {KVB_EVICT_ADAPTIVE, &kvb_inactive_adaptive, "adaptive"},
};
#define N_DECLARED (sizeof declared / sizeof declared[0])

/* Number of entries before the first NULL (bounded, so that a list that never
 * ends fails instead of hanging). */
static size_t list_len(void)
{
    size_t n = 0;
    while (n < 1024 && kvb_inactive_policy(n))
        n++;
    return n;
}

Test(policy_list, lists_every_declared_backend_in_policy_order)
{
    cr_assert_eq(list_len(), N_DECLARED,
                 "kvb_inactive_policy lists %zu backends, the header "
                 "declares %zu",
                 list_len(), N_DECLARED);
    for (size_t i = 0; i < N_DECLARED; i++) {
        const kvb_inactive_ops *ops = kvb_inactive_policy((size_t)declared[i].policy);
        cr_assert_eq(ops, declared[i].ops, "entry %d is not kvb_inactive_%s",
                     (int)declared[i].policy, declared[i].name);
        cr_assert_str_eq(ops->name, declared[i].name);
    }
}

Test(policy_list, index_is_the_policy_value)
{
    size_t n = list_len();
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(kvb_inactive_policy(i), kvb_inactive_builtin((kvb_evict_policy)i),
                     "kvb_inactive_policy(%zu) differs from kvb_inactive_builtin(%zu)", i, i);
    /* the first index past the end is past the enum too */
    cr_assert_null(kvb_inactive_builtin((kvb_evict_policy)n));
}

Test(policy_list, null_past_the_end)
{
    size_t n = list_len();
    cr_assert_null(kvb_inactive_policy(n));
    cr_assert_null(kvb_inactive_policy(n + 1));
    cr_assert_null(kvb_inactive_policy(SIZE_MAX));
    cr_assert_null(kvb_inactive_policy((size_t)UINT32_MAX + 1)); /* not truncated to 0 */
}

Test(policy_list, names_are_distinct_and_complete_tables)
{
    size_t n = list_len();
    for (size_t i = 0; i < n; i++) {
        const kvb_inactive_ops *a = kvb_inactive_policy(i);
        cr_assert_geq(a->version, 1u);
        cr_assert_not_null(a->name);
        cr_assert_gt(strlen(a->name), 0);
        cr_assert(a->create && a->destroy && a->insert && a->remove && a->contains && a->evict &&
                      a->len && a->drain,
                  "%s lacks a version-1 method", a->name);
        for (size_t j = 0; j < i; j++) {
            cr_assert_neq(kvb_inactive_policy(j), a, "table listed twice (%s)", a->name);
            cr_assert_str_neq(kvb_inactive_policy(j)->name, a->name, "name %s listed twice",
                              a->name);
        }
    }
}

Test(policy_list, find_by_name)
{
    size_t n = list_len();
    for (size_t i = 0; i < n; i++) {
        const kvb_inactive_ops *ops = kvb_inactive_policy(i);
        cr_assert_eq(kvb_inactive_find(ops->name), ops, "find(\"%s\")", ops->name);
        /* the name is compared, not the pointer: a copy of it finds the table too */
        char copy[64];
        snprintf(copy, sizeof copy, "%s", ops->name);
        cr_assert_eq(kvb_inactive_find(copy), ops);
    }
    cr_assert_eq(kvb_inactive_find("lineage_arc"), &kvb_inactive_lineage_arc);
    cr_assert_eq(kvb_inactive_find("lineage"), &kvb_inactive_lineage); /* not a prefix match */
}

Test(policy_list, find_unknown_is_null)
{
    cr_assert_null(kvb_inactive_find(NULL));
    cr_assert_null(kvb_inactive_find(""));
    cr_assert_null(kvb_inactive_find("LRU"));  /* case-sensitive */
    cr_assert_null(kvb_inactive_find("lru ")); /* exact */
    cr_assert_null(kvb_inactive_find("lin"));  /* no prefix match */
    cr_assert_null(kvb_inactive_find("lineage_arcx"));
    cr_assert_null(kvb_inactive_find("optimal")); /* a tool's reference, not a backend */
}

/* The same calls on a pool: fill it, release everything to the cache, hit half of
 * it, then allocate fresh blocks so that the backend evicts 8 of the 16. Returns
 * the set of first-fill blocks still cached (bit i: h[i]), i.e. the backend's
 * eviction choice. */
static uint64_t exercise(kvb_pool *p)
{
    enum { B = 16, N = 8 };
    kvb_hash h[B];
    kvb_mutable m[B];
    kvb_complete c[B];
    kvb_block b[B];
    tu_chain(100, B, h);
    cr_assert_eq(kvb_pool_allocate(p, B, m, NULL, NULL), 0);
    cr_assert_eq(kvb_pool_stage(p, m, h, B, c), 0);
    cr_assert_eq(kvb_pool_register(p, c, B, b), 0);
    /* release in an order that distinguishes lru from fifo-like orders */
    for (int i = B - 1; i >= 0; i--)
        cr_assert_eq(kvb_block_release(&b[i]), 0);
    /* a hit on the first half refreshes it under recency policies */
    cr_assert_eq(kvb_pool_match(p, h, N, b), N);
    cr_assert_eq(kvb_block_release_n(b, N), 0);
    /* new content: N evictions */
    kvb_hash f[N];
    tu_chain(1000, N, f);
    cr_assert_eq(kvb_pool_allocate(p, N, m, NULL, NULL), 0);
    cr_assert_eq(kvb_pool_stage(p, m, f, N, c), 0);
    cr_assert_eq(kvb_pool_register(p, c, N, b), 0);
    cr_assert_eq(kvb_block_release_n(b, N), 0);
    kvb_stats st;
    cr_assert_eq(kvb_pool_stats(p, &st), 0);
    cr_assert_eq(st.evictions, (uint64_t)N);
    uint64_t survivors = 0;
    for (int i = 0; i < B; i++) {
        bool hit = false;
        kvb_block x;
        int rc = kvb_pool_match_scattered(p, &h[i], 1, &x, &hit);
        cr_assert_eq(rc, hit ? 1 : 0);
        if (hit) {
            survivors |= 1ull << i;
            cr_assert_eq(kvb_block_release(&x), 0);
        }
    }
    return survivors;
}

Test(policy_list, every_listed_table_makes_the_same_pool_as_its_policy_value)
{
    size_t n = list_len();
    for (size_t i = 0; i < n; i++) {
        const kvb_inactive_ops *ops = kvb_inactive_policy(i);
        kvb_pool_config cfg;
        kvb_pool_config_init(&cfg);
        cfg.block_count = 16;
        cfg.evict_ops = ops;
        kvb_pool *by_ops = tu_pool_cfg(&cfg);
        cr_assert_str_eq(kvb_pool_policy_name(by_ops), ops->name);
        kvb_pool *by_value = tu_pool(16, (kvb_evict_policy)i);
        cr_assert_str_eq(kvb_pool_policy_name(by_value), ops->name);
        uint64_t a = exercise(by_ops), b = exercise(by_value);
        cr_assert_eq(a, b, "%s: the pool made from the table kept %#llx, from the value %#llx",
                     ops->name, (unsigned long long)a, (unsigned long long)b);
        cr_assert_eq(__builtin_popcountll(a), 8, "%s: 8 of 16 cached blocks survive", ops->name);
        tu_finish(by_ops);
        tu_finish(by_value);
    }
}
