/*
 * lock.c - the slow half of lock.h: the contended acquisition with its wait
 * accounting, and the lock-order witness of debug builds (lock.h has the rules).
 */
#include "lock.h"
#include <time.h>

static uint64_t kvb_lock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int kvb__lock_init(struct kvb_lock *l, enum kvb_lock_rank rank)
{
    if (pthread_mutex_init(&l->mu, NULL) != 0)
        return -ENOMEM;
    l->rank = rank;
    l->acquisitions = l->contended = l->wait_ns = 0;
    return 0;
}

void kvb__lock_fini(struct kvb_lock *l)
{
    pthread_mutex_destroy(&l->mu);
}

/* The trylock of kvb__lock failed: wait, and account for the wait (mu held from
 * here on, so the counters are ours). */
void kvb__lock_wait(struct kvb_lock *l)
{
    uint64_t t0 = kvb_lock_now_ns();
    pthread_mutex_lock(&l->mu);
    l->contended++;
    l->wait_ns += kvb_lock_now_ns() - t0;
}

/* Locks this thread holds, per rank (debug builds only touch it). */
static _Thread_local uint32_t kvb_witness[KVB_LOCK_RANKS];

void kvb__witness_acquire(const struct kvb_lock *l)
{
    kvb_assert(l->rank > 0 && l->rank < KVB_LOCK_RANKS);
    /* lock order: only locks of a lower rank may be held (registry -> pool, one
     * pool at a time). Checked before blocking, so a violation is reported here
     * instead of deadlocking against a thread that took the locks in order. */
    for (uint32_t r = l->rank; r < KVB_LOCK_RANKS; r++)
        kvb_assert(kvb_witness[r] == 0 && "lock order: a lock of this rank or above is held");
    kvb_witness[l->rank]++;
}

void kvb__witness_release(const struct kvb_lock *l)
{
    kvb_assert(kvb_witness[l->rank] > 0);
    kvb_witness[l->rank]--;
}
