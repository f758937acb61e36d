/*
 * kvblock/inactive.h - the eviction backend interface (the "inactive index").
 *
 * An inactive index orders the INACTIVE blocks of one pool: blocks nobody
 * references any more whose content stays cached until allocation needs the
 * slot. A backend is a versioned ops table (like SQLite's pcache_methods2):
 * `version` first, new methods only ever appended.
 *
 * Division of labour: the pool owns the hash index (hash -> block id for
 * PRIMARY and INACTIVE blocks), the slot states and reference counts. A backend
 * is a pure ordering structure keyed by block id: it is told which ids enter
 * and leave the cache, and answers "which ids go first". It never does
 * reference counting.
 *
 * Contract for every method:
 *  - called only with the pool mutex held, never concurrently for one instance;
 *  - never blocks, never calls back into the pool;
 *  - never allocates after create (per-block state lives in arrays sized to
 *    block_count and indexed by block id);
 *  - bad calls (an id out of range, a duplicate insert, removing an absent id)
 *    return an error or false; they never crash.
 *
 * What a failed allocation restores. kvb_pool_allocate checks free + cached
 * blocks against the request before it evicts anything, so with a backend that
 * keeps this contract a refused allocation (-ENOSPC) has called nothing but
 * len(). It takes blocks from a backend and then fails only when the backend
 * breaks the contract: evict returns fewer ids than min(n, len()), more than n,
 * or an id that is not one of its entries. The pool then gives everything back
 * and counts kvb_stats.allocate_rollbacks. Its own state is restored exactly
 * (slot states and generations, the free list and its order, the hash index,
 * the priority lists, gauges; no callback, no event), with one exception: a
 * candidate that lookahead hints or a retention priority set apart during the
 * call stays set apart (still cached, in the hint heap or its level's list
 * instead of the backend, where the next allocation would put it anyway). The backend's blocks go
 * back through unevict, exactly, when the backend has it. A backend without unevict gets them back
 * through insert(), in reverse eviction order: the same blocks are cached again, but where insert
 * puts them, not where they were (an LRU puts them at the most recently used end, so they are
 * evicted after the blocks that were behind them). The same re-insertion is used, unevict or not,
 * in a pool with retention priorities and when hints set one of the call's candidates apart (the
 * entries of that evict call are then not all given back, and unevict takes them back only as a
 * whole). A backend whose order matters after such a failure implements unevict.
 */
#ifndef KVBLOCK_INACTIVE_H
#define KVBLOCK_INACTIVE_H

/* the core types and KVB_API (kvblock.h includes this header at its end, so either
 * may be included first) */
#include "../kvblock.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVB_INACTIVE_OPS_VERSION 1

/** What a backend's create() receives. */
typedef struct kvb_inactive_params {
    uint32_t block_count;  /**< ids are in [0, block_count) */
    uint8_t thresholds[3]; /**< multi-level LRU frequency thresholds (validated) */
    /** Frequency estimate (0..15) of a hash from the pool's TinyLFU tracker; NULL when
     * the pool has none. Pure read: calling it does not count a touch. */
    uint32_t (*frequency)(void *ctx, kvb_hash hash);
    void *frequency_ctx;
    kvb_allocator allocator; /**< alloc/free are always set (defaults filled in) */
} kvb_inactive_params;

/**
 * Arrival numbers: the content's registration sequence number in its pool,
 * assigned when a hash first becomes PRIMARY and kept across INACTIVE ->
 * PRIMARY resurrections. They increase by one per new content and wrap at
 * 2^32: compare them with (int32_t)(a - b) < 0, which is exact while the live
 * arrivals span less than 2^31.
 */
typedef struct kvb_inactive_ops {
    uint32_t version; /**< KVB_INACTIVE_OPS_VERSION */
    const char *name; /**< short policy name, e.g. "lru" */

    /* ---- methods valid for version 1 ---- */
    /** Create an empty index; 0, -EINVAL or -ENOMEM. */
    int (*create)(const kvb_inactive_params *params, void **out);
    void (*destroy)(void *self);
    /** Add an INACTIVE block. 0; -EEXIST when id is already present; -EINVAL out of range. */
    int (*insert)(void *self, kvb_hash hash, uint32_t id, uint32_t arrival);
    /** Take id out (a cache hit). true if it was present. */
    bool (*remove)(void *self, kvb_hash hash, uint32_t id);
    /** Whether id is present; no reordering. */
    bool (*contains)(const void *self, uint32_t id);
    /** Take up to n entries out in policy order (first = evicted first); writes their
     * ids to out and returns how many: min(n, len()) (fewer fails the allocation,
     * see "What a failed allocation restores" above). */
    uint32_t (*evict)(void *self, uint32_t n, uint32_t *out);
    /** Number of entries. */
    uint32_t (*len)(const void *self);
    /** Remove every entry (order irrelevant). */
    void (*drain)(void *self);
    /** Optional (may be NULL): put back the entries returned by the last evict call,
     * given in the order evict returned them, so that the next evict would return
     * them again in that order (exact rollback of a failed allocation). When NULL,
     * the pool re-inserts them with insert() in reverse order, which restores the
     * set of entries but not necessarily their order (see above). */
    void (*unevict)(void *self, const uint32_t *ids, const kvb_hash *hashes,
                    const uint32_t *arrivals, uint32_t n);
    /** Optional: bytes of bookkeeping this instance holds. */
    size_t (*memory)(const void *self);
    /** KVB_INACTIVE_F_* bits (0 when none). */
    uint32_t flags;
} kvb_inactive_ops;

/** The backend reads kvb_inactive_params.frequency: a pool without a registry keeps a
 * private TinyLFU sketch for it (and counts touches) only when this is set. */
#define KVB_INACTIVE_F_FREQUENCY 0x1u

/** Built-in backends (the pool picks one from kvb_pool_config.evict). */
KVB_API extern const kvb_inactive_ops kvb_inactive_lru;
KVB_API extern const kvb_inactive_ops kvb_inactive_fifo;
/** Four LRU levels by TinyLFU estimate (KVB_EVICT_MULTI_LRU). */
KVB_API extern const kvb_inactive_ops kvb_inactive_multi_lru;
/** W-TinyLFU with a hill-climbed window (KVB_EVICT_TINYLFU). */
KVB_API extern const kvb_inactive_ops kvb_inactive_tinylfu;
/** Leaf-first LRU over the prefix tree of cached blocks (KVB_EVICT_LINEAGE). */
KVB_API extern const kvb_inactive_ops kvb_inactive_lineage;
/** ARC over the leaves of the prefix tree, with a long ghost history: the best
 * hit ratios on prefix-sharing workloads (docs/eviction.md). KVB_EVICT_LINEAGE_ARC.
 * It needs no frequency sketch. */
KVB_API extern const kvb_inactive_ops kvb_inactive_lineage_arc;
/** The cache follows full-size simulations of lru and lineage_arc, whichever has
 * led on the workload recently (its victims are the blocks that simulation has
 * let go, then its next ones); a switch moves no block and loses no history.
 * Within 0.5 point of the better of the two on 73 of the 74 rows of the replay
 * lab (docs/eviction.md). KVB_EVICT_ADAPTIVE. */
KVB_API extern const kvb_inactive_ops kvb_inactive_adaptive;

/**
 * @brief The built-in ops table for a policy, or NULL when it is not built in.
 * Thread safety: pure. Ownership: static table. Callbacks: none.
 */
KVB_API const kvb_inactive_ops *kvb_inactive_builtin(kvb_evict_policy policy);

/**
 * @brief The i-th built-in eviction backend, for enumerating them (like
 * sqlite3_vfs_find's list): i = 0, 1, 2, ... until NULL.
 *
 * The order is kvb_evict_policy order and stays so: while it returns a table,
 * kvb_inactive_policy(i) == kvb_inactive_builtin((kvb_evict_policy)i), so the
 * index is also the policy value to put in kvb_pool_config.evict (passing the
 * table as kvb_pool_config.evict_ops gives the same pool). A backend added later
 * is appended; a program that loops until NULL picks it up without a change.
 *
 * @param i  index, from 0
 * @return the table, or NULL when i is past the last built-in backend
 *
 * Thread safety: pure; any thread, no lock.
 * Ownership: returns a static table, never to be freed or modified; it outlives
 * every pool.
 * Callbacks: none.
 */
KVB_API const kvb_inactive_ops *kvb_inactive_policy(size_t i);

/**
 * @brief The built-in eviction backend called @p name (its kvb_inactive_ops.name,
 * e.g. "lru", "lineage_arc"), like sqlite3_vfs_find.
 *
 * @param name  policy name, matched exactly (case-sensitive)
 * @return the table, or NULL when name is NULL or no built-in backend has it
 *
 * Thread safety: pure; any thread, no lock.
 * Ownership: returns a static table, never to be freed or modified; the name is
 * only read during the call.
 * Callbacks: none.
 */
KVB_API const kvb_inactive_ops *kvb_inactive_find(const char *name);

#ifdef __cplusplus
}
#endif

#endif /* KVBLOCK_INACTIVE_H */
