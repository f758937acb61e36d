/*
 * test_race_threads.c - the pool under free-running threads, checked by what no
 * interleaving may produce:
 *  - eight threads allocate the whole pool at once: at most one wins, 50 rounds;
 *  - four threads match, clone and release one block 20,000 times each: every
 *    match hits, nothing is misused, the block ends cached;
 *  - kvb_pool_available and the stats gauges are never torn: a reader only ever
 *    sees the values of coherent states while another thread moves 8 blocks per
 *    locked call (in lockstep for the first cycles, then free running).
 */
#include "testutil.h"
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>

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

Test(race_threads, eight_threads_allocate_the_whole_pool_at_most_one_wins)
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

Test(race_threads, concurrent_match_clone_release_one_block)
{
    kvb_pool *p = tu_pool(2, KVB_EVICT_LRU);
    kvb_hash h = tu_hash(9);
    kvb_block b = tu_put1(p, h);
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

/* ---- available is never torn ----------------------------------------------------------- */

#define AV_N      64
#define AV_K      8
#define AV_CYCLES 3000

struct churn {
    kvb_pool *p;
    atomic_int done;
    int failed_line;               /* no Criterion assertion off the test's own thread */
    sem_t sample_req, sample_done; /* lockstep phase for the first cycles */
    int lockstep;
};

static void lockstep(struct churn *c)
{
    if (c->lockstep > 0) {
        sem_post(&c->sample_req);
        sem_wait(&c->sample_done);
    }
}

#define CHURN_CHECK(e)                                                                             \
    do {                                                                                           \
        if (!(e)) {                                                                                \
            c->failed_line = __LINE__;                                                             \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

static void *churner(void *arg)
{
    struct churn *c = arg;
    for (int cycle = 0; cycle < AV_CYCLES; cycle++) {
        kvb_mutable m[AV_K];
        kvb_complete cp[AV_K];
        kvb_block b[AV_K];
        CHURN_CHECK(kvb_pool_allocate(c->p, AV_K, m, NULL, NULL) == 0); /* N -> N-K */
        lockstep(c);
        for (int i = 0; i < AV_K; i++)
            CHURN_CHECK(kvb_mutable_stage(&m[i], tu_hash((uint64_t)(cycle * AV_K + i)), &cp[i]) ==
                        0);
        lockstep(c);
        CHURN_CHECK(kvb_pool_register(c->p, cp, AV_K, b) == 0); /* still N-K */
        lockstep(c);
        CHURN_CHECK(kvb_block_release_n(b, AV_K) == 0); /* one lock: N-K -> N */
        lockstep(c);
        CHURN_CHECK(kvb_pool_reset_inactive(c->p) == AV_K); /* N -> N, K moved at once */
        lockstep(c);
        if (c->lockstep > 0)
            c->lockstep--;
    }
out:
    atomic_store(&c->done, 1);
    sem_post(&c->sample_req);
    return NULL;
}

static void check_sample(kvb_pool *p, unsigned *seen)
{
    uint32_t a = kvb_pool_available(p);
    cr_assert(a == AV_N || a == AV_N - AV_K, "torn available: %u", a);
    seen[a == AV_N]++;
    kvb_stats s = tu_stats(p);
    uint32_t held = s.mutable_ + s.staged + s.primary + s.duplicate;
    cr_assert_eq(s.reset + s.inactive + held, AV_N, "torn stats");
    cr_assert(held == 0 || held == AV_K, "held %u", held);
    cr_assert(s.inactive == 0 || s.inactive == AV_K, "inactive %u", s.inactive);
    cr_assert(s.primary == 0 || s.primary == AV_K, "primary %u", s.primary);
}

Test(race_threads, available_never_torn)
{
    kvb_pool *p = tu_pool(AV_N, KVB_EVICT_LRU);
    struct churn c = {.p = p, .lockstep = 4};
    sem_init(&c.sample_req, 0, 0);
    sem_init(&c.sample_done, 0, 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, churner, &c), 0);
    unsigned seen[2] = {0, 0}, samples = 0;
    /* lockstep: one sample after every phase of the first cycles */
    for (int i = 0; i < 4 * 5; i++) {
        sem_wait(&c.sample_req);
        if (atomic_load(&c.done)) {
            sem_post(&c.sample_req); /* the final post, consumed below */
            break;
        }
        check_sample(p, seen);
        sem_post(&c.sample_done);
    }
    cr_expect_gt(seen[0], 0);
    cr_expect_gt(seen[1], 0);
    /* free running: sample as fast as possible while the churner runs */
    while (!atomic_load(&c.done)) {
        check_sample(p, seen);
        samples++;
    }
    sem_wait(&c.sample_req);
    pthread_join(t, NULL);
    cr_assert_eq(c.failed_line, 0, "the churner failed at line %d", c.failed_line);
    cr_log_info("available: %u samples, %u at N, %u at N-K", samples, seen[1], seen[0]);
    sem_destroy(&c.sample_req);
    sem_destroy(&c.sample_done);
    tu_finish(p);
}
