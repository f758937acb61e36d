/*
 * lock.h - the library's mutex: a pthread mutex with contention accounting and,
 * in debug builds, a lock-order check (a "witness", after jemalloc's witness.h
 * and FreeBSD's WITNESS). Private: never installed.
 *
 * Contention accounting. kvb__lock() tries the mutex first; only when that fails
 * does it read the clock, wait, and count the wait (contended, wait_ns). Every
 * acquisition counts in `acquisitions`. The counters are written with the mutex
 * held and read by the owner with it held (kvb_pool_stats), so they need no
 * atomics. The uncontended path is inline: a trylock and an increment.
 *
 * Lock order. Every lock has a rank (enum kvb_lock_rank). A thread may take a
 * lock only while every lock it already holds has a lower rank: the registry
 * before a pool, never a pool then the registry, never two pools, never two
 * registries. Debug builds (kvb__config_debug: -DKVB_DEBUG or the KVB_TESTING
 * test builds) count the locks each thread holds per rank and stop with an
 * assertion at the first acquisition out of order, before blocking on it, so a
 * lock-order bug is reported where it happens instead of deadlocking later.
 * Release builds compile the check away.
 */
#ifndef KVB_LOCK_H
#define KVB_LOCK_H

#include "internal.h"
#include <pthread.h>

/* Lower ranks are taken first. */
enum kvb_lock_rank {
    KVB_LOCK_REGISTRY = 1, /* kvb_registry.mu */
    KVB_LOCK_POOL,         /* kvb_pool.lock: one pool at a time */
    KVB_LOCK_RANKS
};

struct kvb_lock {
    pthread_mutex_t mu;
    uint32_t rank; /* (const) enum kvb_lock_rank */
    /* (mu) contention accounting, see above */
    uint64_t acquisitions, contended, wait_ns;
};

/* 0, or -ENOMEM when the mutex cannot be initialised. */
int kvb__lock_init(struct kvb_lock *l, enum kvb_lock_rank rank);
void kvb__lock_fini(struct kvb_lock *l);

/* Out of line: the contended path (clock, wait, accounting), and the witness. */
void kvb__lock_wait(struct kvb_lock *l);
void kvb__witness_acquire(const struct kvb_lock *l);
void kvb__witness_release(const struct kvb_lock *l);

static inline void kvb__lock(struct kvb_lock *l)
{
    if (kvb__config_debug)
        kvb__witness_acquire(l);
    if (kvb_unlikely(pthread_mutex_trylock(&l->mu) != 0))
        kvb__lock_wait(l);
    l->acquisitions++;
}

static inline void kvb__unlock(struct kvb_lock *l)
{
    if (kvb__config_debug)
        kvb__witness_release(l);
    pthread_mutex_unlock(&l->mu);
}

#endif /* KVB_LOCK_H */
