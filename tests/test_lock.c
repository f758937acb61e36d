/*
 * test_lock.c - the library mutex (lib/lock.h): acquisitions are counted, and the
 * lock-order witness of debug builds (the test builds are debug builds) lets the
 * registry lock be taken before a pool lock but stops the process at a pool lock
 * taken under another pool lock, or the registry lock under a pool lock, before
 * either could deadlock. Through the public API: an eviction backend that calls
 * into another pool from under its own pool's lock is caught.
 */
#include "testutil.h"
#include "lock.h"
#include <signal.h>

Test(lock, counts_acquisitions)
{
    struct kvb_lock l;
    cr_assert_eq(kvb__lock_init(&l, KVB_LOCK_POOL), 0);
    for (int i = 0; i < 3; i++) {
        kvb__lock(&l);
        kvb__unlock(&l);
    }
    cr_expect_eq(l.acquisitions, 3);
    cr_expect_eq(l.contended, 0, "one thread never waits");
    cr_expect_eq(l.wait_ns, 0);
    kvb__lock_fini(&l);
}

Test(lock, registry_then_pool_is_in_order)
{
    struct kvb_lock reg, a, b;
    cr_assert_eq(kvb__lock_init(&reg, KVB_LOCK_REGISTRY), 0);
    cr_assert_eq(kvb__lock_init(&a, KVB_LOCK_POOL), 0);
    cr_assert_eq(kvb__lock_init(&b, KVB_LOCK_POOL), 0);
    kvb__lock(&reg);
    kvb__lock(&a); /* registry -> pool */
    kvb__unlock(&a);
    kvb__lock(&b); /* one pool after another, never both */
    kvb__unlock(&b);
    kvb__unlock(&reg);
    kvb__lock(&a);
    kvb__unlock(&a);
    kvb__lock(&reg); /* nothing held any more: any order */
    kvb__unlock(&reg);
    cr_expect_eq(a.acquisitions, 2);
    cr_expect_eq(reg.acquisitions, 2);
    kvb__lock_fini(&reg);
    kvb__lock_fini(&a);
    kvb__lock_fini(&b);
}

Test(lock, registry_under_pool_aborts, .signal = SIGABRT)
{
    struct kvb_lock reg, a;
    cr_assert_eq(kvb__lock_init(&reg, KVB_LOCK_REGISTRY), 0);
    cr_assert_eq(kvb__lock_init(&a, KVB_LOCK_POOL), 0);
    kvb__lock(&a);
    kvb__lock(&reg);
    cr_assert_fail("the witness let the registry lock be taken under a pool lock");
}

Test(lock, pool_under_pool_aborts, .signal = SIGABRT)
{
    struct kvb_lock a, b;
    cr_assert_eq(kvb__lock_init(&a, KVB_LOCK_POOL), 0);
    cr_assert_eq(kvb__lock_init(&b, KVB_LOCK_POOL), 0);
    kvb__lock(&a);
    kvb__lock(&b);
    cr_assert_fail("the witness let a second pool lock be taken");
}

/* A backend that breaks its contract: from insert (called under its pool's lock)
 * it asks another pool something. */
static kvb_pool *other_pool;
static bool call_other;

static int other_insert(void *self, kvb_hash hash, uint32_t id, uint32_t arrival)
{
    if (call_other)
        (void)kvb_pool_available(other_pool); /* takes the other pool's lock */
    return kvb_inactive_lru.insert(self, hash, id, arrival);
}

static kvb_inactive_ops other_ops;

static kvb_pool *pool_calling_other(kvb_block *b)
{
    other_ops = kvb_inactive_lru;
    other_ops.name = "lru-calls-another-pool";
    other_ops.insert = other_insert;
    other_pool = tu_pool(4, KVB_EVICT_LRU);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 4;
    cfg.evict_ops = &other_ops;
    kvb_pool *p = tu_pool_cfg(&cfg);
    kvb_mutable m;
    kvb_complete c;
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    cr_assert_eq(kvb_mutable_stage(&m, tu_hash(1), &c), 0);
    cr_assert_eq(kvb_pool_register(p, &c, 1, b), 0);
    return p;
}

Test(lock, backend_taking_another_pool_lock_aborts, .signal = SIGABRT)
{
    kvb_block b;
    pool_calling_other(&b);
    call_other = true;
    kvb_block_release(&b); /* PRIMARY -> INACTIVE calls insert under the pool lock */
    cr_assert_fail("the witness did not fire on a pool lock taken under another");
}

Test(lock, backend_quiet_without_the_nested_call)
{
    kvb_block b;
    kvb_pool *p = pool_calling_other(&b);
    call_other = false;
    cr_expect_eq(kvb_block_release(&b), 0);
    cr_expect_eq(kvb_pool_available(other_pool), 4, "from the test thread: no lock held");
    tu_finish(p);
    tu_finish(other_pool);
}
