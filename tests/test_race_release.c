/*
 * test_race_release.c - the last-release window, made deterministic.
 *
 * A last release drops the count to zero, then takes the pool lock to move the
 * block. support/park.h parks a releaser between the two (the KVB_TESTING
 * last-release hook); the test then runs what races the release in that window
 * and lets it finish. No sleeps: semaphores order the threads.
 *
 *  - a lookup, a weak upgrade or a registration of the same hash in the window
 *    performs the move eagerly (and resurrects), the late release is a no-op;
 *  - the reset-on-release flag is honoured through the eager window;
 *  - duplicate drop vs primary: the duplicate's last release (which drops its
 *    reference on the primary) parked while the primary's other references come
 *    and go, with and without reset-on-release, and a second duplicate
 *    registered while the first is parked.
 */
#include "testutil.h"
#include "testing.h"
#include "support/park.h"

Test(race_release, lookup_in_last_release_window_is_eager_and_release_is_noop)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(1);
    kvb_block b = tu_put1(p, h);
    uint32_t id = b.id;
    tu_park pk;
    cr_assert_eq(tu_park_last_release(&pk, b), 0);
    /* the count is 0, the block is still PRIMARY: the lookup must finish the move */
    kvb_stats s = tu_stats(p);
    cr_expect_eq(s.primary, 1);
    cr_expect_eq(kvb_pool_destroy(p), -EBUSY, "a release in flight keeps the pool busy");
    kvb_block got;
    cr_expect_eq(kvb_pool_match(p, &h, 1, &got), 1);
    cr_expect_eq(got.id, id);
    s = tu_stats(p);
    cr_expect_eq(s.eager_transitions, 1);
    cr_expect_eq(s.resurrections, 1);
    cr_expect_eq(s.release_noops, 0);
    cr_expect_eq(tu_unpark(&pk), 0);
    s = tu_stats(p);
    cr_expect_eq(s.release_noops, 1, "the late release found its work done");
    cr_expect_eq(s.primary, 1, "the matched reference is intact");
    cr_expect_eq(kvb_block_use_count(&got), 1);
    cr_expect_eq(kvb_block_release(&got), 0);
    cr_expect_eq(tu_stats(p).inactive, 1);
    tu_finish(p);
}

Test(race_release, reset_flag_through_the_eager_window)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(2);
    kvb_block b = tu_put1(p, h);
    cr_assert_eq(kvb_block_set_reset_on_release(&b, true), 0);
    tu_park pk;
    cr_assert_eq(tu_park_last_release(&pk, b), 0);
    kvb_block got;
    cr_expect_eq(kvb_pool_match(p, &h, 1, &got), 0, "a block released for reset is a miss");
    kvb_stats s = tu_stats(p);
    cr_expect_eq(s.eager_transitions, 1);
    cr_expect_eq(s.reset, 4, "the lookup performed PRIMARY -> RESET");
    cr_expect_eq(tu_unpark(&pk), 0);
    s = tu_stats(p);
    cr_expect_eq(s.release_noops, 1);
    cr_expect_eq(s.inactive, 0);
    tu_finish(p);
}

Test(race_release, weak_upgrade_in_the_window_resurrects)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(3);
    kvb_block b = tu_put1(p, h);
    kvb_weak w;
    kvb_block_downgrade(&b, &w);
    tu_park pk;
    cr_assert_eq(tu_park_last_release(&pk, b), 0);
    kvb_block got;
    cr_expect_eq(kvb_weak_upgrade(&w, &got), 0);
    cr_expect_eq(tu_unpark(&pk), 0);
    kvb_stats s = tu_stats(p);
    cr_expect_eq(s.eager_transitions, 1);
    cr_expect_eq(s.release_noops, 1);
    cr_expect_eq(kvb_block_release(&got), 0);
    tu_finish(p);
}

Test(race_release, register_same_hash_in_the_window)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(4);
    kvb_block b = tu_put1(p, h);
    uint32_t id = b.id;
    tu_park pk;
    cr_assert_eq(tu_park_last_release(&pk, b), 0);
    kvb_block d = tu_put1(p, h); /* ALLOW: resurrects the primary, then duplicates it */
    kvb_stats s = tu_stats(p);
    cr_expect_eq(s.eager_transitions, 1);
    cr_expect_eq(s.duplicate, 1);
    cr_expect_neq(d.id, id);
    cr_expect_eq(tu_unpark(&pk), 0);
    cr_expect_eq(tu_stats(p).release_noops, 1);
    cr_expect_eq(kvb_block_release(&d), 0);
    s = tu_stats(p);
    cr_expect_eq(s.duplicate, 0);
    cr_expect_eq(s.inactive, 1, "the primary is cached once the duplicate is gone");
    tu_finish(p);
}

/* ---- duplicate drop vs primary ------------------------------------------------------- */

static uint32_t resets[16];
static unsigned nresets;
static void rec_reset(void *u, uint32_t id)
{
    (void)u;
    if (nresets < 16)
        resets[nresets] = id;
    nresets++;
}

static kvb_pool *dup_pool(kvb_registry *r)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 4;
    cfg.registry = r;
    cfg.callbacks = (kvb_callbacks){.on_reset = rec_reset};
    nresets = 0;
    return tu_pool_cfg(&cfg);
}

/* The duplicate's last release parks; meanwhile the primary's own references go,
 * come back and go (never to zero: the duplicate still holds one). Then the
 * duplicate's release drops the primary's last reference and performs its move. */
static void dup_drop_vs_primary(bool reset_flag)
{
    kvb_registry *r;
    cr_assert_eq(kvb_registry_create(NULL, &r), 0);
    kvb_pool *p = dup_pool(r);
    kvb_hash h = tu_hash(11);
    kvb_block u = tu_put1(p, h);
    kvb_block d = tu_put1(p, h); /* ALLOW: a duplicate */
    uint32_t pid = u.id, did = d.id;
    cr_assert_neq(pid, did);
    cr_assert_eq(kvb_block_use_count(&u), 2);

    tu_park pk;
    cr_assert_eq(tu_park_last_release(&pk, d), 0);
    kvb_stats s = tu_stats(p);
    cr_expect_eq(s.duplicate, 1, "the parked duplicate is still a duplicate");
    cr_expect_eq(kvb_block_use_count(&u), 2, "and still holds its reference on the primary");

    cr_expect_eq(kvb_block_release(&u), 0); /* not last: the duplicate holds one */
    s = tu_stats(p);
    cr_expect_eq(s.primary, 1);
    cr_expect_eq(s.inactive, 0);
    kvb_block g;
    cr_expect_eq(kvb_pool_match(p, &h, 1, &g), 1, "the primary is still live");
    cr_expect_eq(g.id, pid);
    if (reset_flag)
        cr_expect_eq(kvb_block_set_reset_on_release(&g, true), 0);
    cr_expect_eq(kvb_block_release(&g), 0);
    cr_expect_eq(kvb_pool_destroy(p), -EBUSY);
    cr_expect_eq(nresets, 0);

    cr_expect_eq(tu_unpark(&pk), 0);
    s = tu_stats(p);
    cr_expect_eq(s.primary + s.duplicate, 0);
    cr_expect_eq(s.eager_transitions, 0);
    cr_expect_eq(s.release_noops, 0);
    if (reset_flag) {
        cr_expect_eq(s.reset, 4, "the primary honoured its reset flag");
        cr_expect_eq(nresets, 2);
        cr_expect_eq(resets[0], did, "duplicate first");
        cr_expect_eq(resets[1], pid, "then the primary it kept alive");
        cr_expect_not(tu_present(r, p, h));
    } else {
        cr_expect_eq(s.inactive, 1, "the primary is cached");
        cr_expect_eq(nresets, 1);
        cr_expect_eq(resets[0], did);
        cr_expect(tu_present(r, p, h), "cached content is present (one, not two)");
        cr_expect_eq(kvb_pool_reset_inactive(p), 1);
        cr_expect_not(tu_present(r, p, h));
    }
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(r), 0);
}

Test(race_release, duplicate_drop_vs_primary_release)
{
    dup_drop_vs_primary(false);
}

Test(race_release, duplicate_drop_vs_primary_release_with_reset_flag)
{
    dup_drop_vs_primary(true);
}

/* The other order: the primary's last own reference goes while the duplicate is
 * alive; a lookup in the duplicate's parked window still finds the primary. */
Test(race_release, duplicate_parked_lookup_and_second_duplicate)
{
    kvb_pool *p = dup_pool(NULL);
    kvb_hash h = tu_hash(12);
    kvb_block u = tu_put1(p, h);
    kvb_block d = tu_put1(p, h);
    cr_expect_eq(kvb_block_release(&u), 0);
    tu_park pk;
    cr_assert_eq(tu_park_last_release(&pk, d), 0);
    kvb_block d2 = tu_put1(p, h); /* a second duplicate while the first is parked */
    kvb_stats s = tu_stats(p);
    cr_expect_eq(s.duplicate, 2);
    cr_expect_eq(s.eager_transitions, 0, "the primary never reached zero");
    cr_expect_eq(tu_unpark(&pk), 0);
    s = tu_stats(p);
    cr_expect_eq(s.duplicate, 1);
    cr_expect_eq(s.primary, 1, "kept alive by the second duplicate");
    cr_expect_eq(kvb_block_release(&d2), 0);
    s = tu_stats(p);
    cr_expect_eq(s.inactive, 1);
    cr_expect_eq(nresets, 2);
    tu_finish(p);
}
