/*
 * test_race_register.c - two threads register a staged block of the same hash
 * at the same time, many rounds: ALLOW gives one primary and one duplicate
 * holding a reference on it, REJECT one block both threads reference (the other
 * staged block goes back to the free list); then the same race while the
 * primary's last release is parked in its window (support/park.h), where the
 * first registration to get the lock performs the eager move and resurrects it.
 * No sleeps: a barrier starts both registrations together.
 */
#include "testutil.h"
#include "testing.h"
#include "support/park.h"
#include <pthread.h>

/* slot states as kvb__test_slot_state reports them (enum kvb_state, lib/pool.h) */
#define ST_PRIMARY   3
#define ST_DUPLICATE 4

struct regger {
    kvb_pool *p;
    kvb_complete c;
    kvb_block out;
    int rc;
    pthread_barrier_t *bar;
};

static void *register_one(void *arg)
{
    struct regger *g = arg;
    pthread_barrier_wait(g->bar);
    g->rc = kvb_pool_register(g->p, &g->c, 1, &g->out);
    return NULL;
}

/* Two threads register a staged block of the same hash at the same time. */
static void register_race(kvb_pool *p, kvb_hash h, struct regger g[2])
{
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        g[i] = (struct regger){.p = p, .c = tu_stage1(p, h), .bar = &bar};
        cr_assert_eq(pthread_create(&t[i], NULL, register_one, &g[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&bar);
    cr_assert_eq(g[0].rc, 0);
    cr_assert_eq(g[1].rc, 0);
    cr_expect_null(g[0].c.pool, "consumed");
    cr_expect_null(g[1].c.pool, "consumed");
}

Test(race_register, register_vs_register_one_hash_allow)
{
    kvb_pool *p = tu_pool(8, KVB_EVICT_LRU);
    unsigned first[2] = {0, 0};
    for (int round = 0; round < 200; round++) {
        kvb_hash h = tu_hash((uint64_t)round);
        struct regger g[2];
        register_race(p, h, g);
        /* exactly one primary; the other is its duplicate, holding one reference on it */
        kvb_stats s = tu_stats(p);
        cr_assert_eq(s.primary, 1, "round %d", round);
        cr_assert_eq(s.duplicate, 1, "round %d", round);
        int prim = kvb__test_slot_state(p, g[0].out.id) == ST_PRIMARY ? 0 : 1;
        first[prim]++;
        cr_assert_eq(kvb__test_slot_state(p, g[1 - prim].out.id), ST_DUPLICATE);
        cr_assert_eq(kvb_block_use_count(&g[prim].out), 2, "own + the duplicate's");
        cr_assert_eq(kvb_block_use_count(&g[1 - prim].out), 1);
        cr_assert(kvb_hash_equal(g[0].out.hash, h) && kvb_hash_equal(g[1].out.hash, h));
        cr_assert_eq(kvb_pool_check(p), 0);
        /* release in either order: the primary ends cached, the duplicate reset */
        kvb_block_release(&g[round & 1].out);
        kvb_block_release(&g[1 - (round & 1)].out);
        s = tu_stats(p);
        cr_assert_eq(s.primary + s.duplicate, 0);
        cr_assert_eq(kvb_pool_reset_inactive(p), 1, "one cached copy of h");
    }
    cr_log_info("primary was thread 0 in %u rounds, thread 1 in %u", first[0], first[1]);
    tu_finish(p);
}

Test(race_register, register_vs_register_one_hash_reject)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 8;
    cfg.dup_policy = KVB_DUP_REJECT;
    kvb_pool *p = tu_pool_cfg(&cfg);
    for (int round = 0; round < 200; round++) {
        kvb_hash h = tu_hash((uint64_t)round);
        struct regger g[2];
        register_race(p, h, g);
        /* one block holds h; both threads got a reference to it; the other staged
         * block went back to the free list */
        cr_assert_eq(g[0].out.id, g[1].out.id, "round %d", round);
        cr_assert_eq(g[0].out.gen, g[1].out.gen);
        cr_assert_eq(kvb_block_use_count(&g[0].out), 2);
        kvb_stats s = tu_stats(p);
        cr_assert_eq(s.primary, 1);
        cr_assert_eq(s.duplicate, 0);
        cr_assert_eq(s.reset, 7);
        cr_assert_eq(s.dedups, (uint64_t)round + 1);
        kvb_block_release(&g[0].out);
        kvb_block_release(&g[1].out);
        cr_assert_eq(kvb_pool_reset_inactive(p), 1);
    }
    tu_finish(p);
}

/* Both registrations happen while the primary's last release is parked: the first
 * to get the lock performs the eager transition and resurrects it. */
static void register_race_in_window(kvb_dup_policy pol)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 8;
    cfg.dup_policy = pol;
    kvb_pool *p = tu_pool_cfg(&cfg);
    kvb_hash h = tu_hash(77);
    kvb_block b = tu_put1(p, h);
    uint32_t pid = b.id;
    tu_park pk;
    cr_assert_eq(tu_park_last_release(&pk, b), 0);
    struct regger g[2];
    register_race(p, h, g);
    kvb_stats s = tu_stats(p);
    cr_expect_eq(s.eager_transitions, 1, "exactly one registration did the eager move");
    cr_expect_eq(s.resurrections, 1);
    cr_expect_eq(s.primary, 1);
    if (pol == KVB_DUP_ALLOW) {
        cr_expect_eq(s.duplicate, 2);
        cr_expect_neq(g[0].out.id, pid);
        cr_expect_neq(g[1].out.id, pid);
        kvb_block ref = {.pool = p, .id = pid, .gen = kvb__test_slot_gen(p, pid), .hash = h};
        cr_expect_eq(kvb_block_use_count(&ref), 2, "one reference per duplicate");
    } else {
        cr_expect_eq(s.duplicate, 0);
        cr_expect_eq(g[0].out.id, pid);
        cr_expect_eq(g[1].out.id, pid);
        cr_expect_eq(kvb_block_use_count(&g[0].out), 2);
        cr_expect_eq(s.dedups, 2);
    }
    cr_expect_eq(tu_unpark(&pk), 0);
    s = tu_stats(p);
    cr_expect_eq(s.release_noops, 1, "the parked release found its work done");
    cr_expect_eq(kvb_pool_check(p), 0);
    kvb_block_release(&g[0].out);
    kvb_block_release(&g[1].out);
    s = tu_stats(p);
    cr_expect_eq(s.inactive, 1);
    cr_expect_eq(s.reset, 7);
    tu_finish(p);
}

Test(race_register, register_vs_register_in_the_last_release_window_allow)
{
    register_race_in_window(KVB_DUP_ALLOW);
}

Test(race_register, register_vs_register_in_the_last_release_window_reject)
{
    register_race_in_window(KVB_DUP_REJECT);
}
