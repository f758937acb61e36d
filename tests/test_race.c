/*
 * test_race.c - the races the design names, made deterministic with the
 * KVB_TESTING hook that parks a last release between "count reached zero" and
 * "took the pool lock". No sleeps: semaphores order the two threads.
 */
#include "testutil.h"
#include "testing.h"
#include <pthread.h>
#include <semaphore.h>

struct park {
    sem_t reached; /* posted by the releaser when parked in the window */
    sem_t go;      /* posted by the test to let it continue */
    kvb_block b;
    int rc;
};

static void park_hook(void *arg, kvb_pool *pool, uint32_t id)
{
    struct park *pk = arg;
    (void)pool;
    (void)id;
    sem_post(&pk->reached);
    sem_wait(&pk->go);
}

static void *releaser(void *arg)
{
    struct park *pk = arg;
    pk->rc = kvb_block_release(&pk->b);
    return NULL;
}

static kvb_block put1(kvb_pool *p, kvb_hash h)
{
    kvb_mutable m;
    kvb_complete c;
    kvb_block b;
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    cr_assert_eq(kvb_mutable_stage(&m, h, &c), 0);
    cr_assert_eq(kvb_pool_register(p, &c, 1, &b), 0);
    return b;
}

/* Park the last release of b in its window; return with the thread parked. */
static void park_last_release(struct park *pk, pthread_t *t, kvb_block b)
{
    sem_init(&pk->reached, 0, 0);
    sem_init(&pk->go, 0, 0);
    pk->b = b;
    kvb__test_set_last_release_hook(park_hook, pk);
    cr_assert_eq(pthread_create(t, NULL, releaser, pk), 0);
    sem_wait(&pk->reached);
}

static void unpark(struct park *pk, pthread_t t)
{
    sem_post(&pk->go);
    pthread_join(t, NULL);
    kvb__test_set_last_release_hook(NULL, NULL);
    sem_destroy(&pk->reached);
    sem_destroy(&pk->go);
}

Test(race, lookup_in_last_release_window_is_eager_and_release_is_noop)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(1);
    kvb_block b = put1(p, h);
    uint32_t id = b.id;
    struct park pk;
    pthread_t t;
    park_last_release(&pk, &t, b);
    /* the count is 0, the block is still PRIMARY: the lookup must finish the move */
    kvb_stats s;
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.primary, 1);
    cr_expect_eq(kvb_pool_destroy(p), -EBUSY, "a release in flight keeps the pool busy");
    kvb_block got;
    cr_expect_eq(kvb_pool_match(p, &h, 1, &got), 1);
    cr_expect_eq(got.id, id);
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.eager_transitions, 1);
    cr_expect_eq(s.resurrections, 1);
    cr_expect_eq(s.release_noops, 0);
    unpark(&pk, t);
    cr_expect_eq(pk.rc, 0);
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.release_noops, 1, "the late release found its work done");
    cr_expect_eq(s.primary, 1, "the matched reference is intact");
    cr_expect_eq(kvb_block_use_count(&got), 1);
    cr_expect_eq(kvb_block_release(&got), 0);
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.inactive, 1);
    tu_finish(p);
}

Test(race, reset_flag_through_the_eager_window)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(2);
    kvb_block b = put1(p, h);
    cr_assert_eq(kvb_block_set_reset_on_release(&b, true), 0);
    struct park pk;
    pthread_t t;
    park_last_release(&pk, &t, b);
    kvb_block got;
    cr_expect_eq(kvb_pool_match(p, &h, 1, &got), 0, "a block released for reset is a miss");
    kvb_stats s;
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.eager_transitions, 1);
    cr_expect_eq(s.reset, 4, "the lookup performed PRIMARY -> RESET");
    unpark(&pk, t);
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.release_noops, 1);
    cr_expect_eq(s.inactive, 0);
    tu_finish(p);
}

Test(race, weak_upgrade_in_the_window_resurrects)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(3);
    kvb_block b = put1(p, h);
    kvb_weak w;
    kvb_block_downgrade(&b, &w);
    struct park pk;
    pthread_t t;
    park_last_release(&pk, &t, b);
    kvb_block got;
    cr_expect_eq(kvb_weak_upgrade(&w, &got), 0);
    unpark(&pk, t);
    kvb_stats s;
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.eager_transitions, 1);
    cr_expect_eq(s.release_noops, 1);
    cr_expect_eq(kvb_block_release(&got), 0);
    tu_finish(p);
}

Test(race, register_same_hash_in_the_window)
{
    kvb_pool *p = tu_pool(4, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(4);
    kvb_block b = put1(p, h);
    uint32_t id = b.id;
    struct park pk;
    pthread_t t;
    park_last_release(&pk, &t, b);
    kvb_block d = put1(p, h); /* ALLOW: resurrects the primary, then duplicates it */
    kvb_stats s;
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.eager_transitions, 1);
    cr_expect_eq(s.duplicate, 1);
    cr_expect_neq(d.id, id);
    unpark(&pk, t);
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.release_noops, 1);
    cr_expect_eq(kvb_block_release(&d), 0);
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.duplicate, 0);
    cr_expect_eq(s.inactive, 1, "the primary is cached once the duplicate is gone");
    tu_finish(p);
}

/* ---- real threads ------------------------------------------------------------- */

struct alloc_race {
    kvb_pool *p;
    pthread_barrier_t *bar;
    int won;
    kvb_mutable m[64];
};

static void *alloc_all(void *arg)
{
    struct alloc_race *a = arg;
    pthread_barrier_wait(a->bar);
    a->won = kvb_pool_allocate(a->p, 64, a->m, NULL, NULL) == 0;
    return NULL;
}

Test(race, eight_threads_allocate_the_whole_pool_at_most_one_wins)
{
    for (int round = 0; round < 50; round++) {
        kvb_pool *p = tu_pool(64, KVB_EVICT_LRU);
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, 8);
        struct alloc_race a[8];
        pthread_t t[8];
        for (int i = 0; i < 8; i++) {
            a[i].p = p;
            a[i].bar = &bar;
            pthread_create(&t[i], NULL, alloc_all, &a[i]);
        }
        int winners = 0;
        for (int i = 0; i < 8; i++) {
            pthread_join(t[i], NULL);
            winners += a[i].won;
        }
        cr_assert_eq(winners, 1, "round %d: %d winners", round, winners);
        for (int i = 0; i < 8; i++)
            if (a[i].won)
                for (int j = 0; j < 64; j++)
                    cr_assert_eq(kvb_mutable_release(&a[i].m[j]), 0);
        pthread_barrier_destroy(&bar);
        tu_finish(p);
    }
}

struct hammer {
    kvb_pool *p;
    kvb_hash h;
    int iters;
};

static void *clone_hammer(void *arg)
{
    struct hammer *hm = arg;
    for (int i = 0; i < hm->iters; i++) {
        kvb_block b;
        if (kvb_pool_match(hm->p, &hm->h, 1, &b) != 1)
            continue;
        kvb_block c[4];
        for (int j = 0; j < 4; j++)
            kvb_block_clone(&b, &c[j]);
        kvb_block_release_n(c, 4);
        kvb_block_release(&b);
    }
    return NULL;
}

Test(race, concurrent_match_clone_release_one_block)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(9);
    kvb_block b = put1(p, h);
    kvb_block_release(&b);
    struct hammer hm = {p, h, 20000};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, clone_hammer, &hm);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    kvb_stats s;
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.inactive, 1);
    cr_expect_eq(s.primary, 0);
    cr_expect_eq(s.misuse, 0);
    cr_expect_eq(s.match_returned, 4 * 20000u);
    tu_finish(p);
}
