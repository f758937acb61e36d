/*
 * kvblock.h - the public interface of kvblock, a C11 library that manages the
 * logical side of a paged KV cache: which physical block holds which content,
 * who uses it, what a new request can reuse from a cached prefix, and what to
 * evict.
 *
 * Conventions (every function below follows them):
 *  - A fallible function returns int: 0, a non-negative count where stated, or
 *    a negative errno. kvb_strerror() names the error.
 *  - A failed call changes nothing and fires no callback.
 *  - Objects come back through out-parameters, which come last.
 *  - Handles (kvb_mutable, kvb_complete, kvb_block, kvb_weak) are small value
 *    structs owned by the caller. A function documented as *consuming* a
 *    handle clears it (zero fill) on success. Releasing a cleared or stale
 *    handle returns -ESTALE and changes nothing. A handle's generation names
 *    one life of its slot, and each pool starts its slots at generations of
 *    its own, so a handle presented to another pool (its pool pointer
 *    relabelled) is stale there too, except by a 1 in 2^32 coincidence.
 *  - A batch call with n = 0 is valid, does nothing, fires no callback and
 *    returns 0.
 *  - Callbacks configured on a pool never run with the pool mutex held: they
 *    are collected under the lock and invoked, in order, by the calling
 *    thread after the lock is dropped. A callback may call back into the pool.
 *
 * Every function documents three more things: Thread safety, Ownership (which
 * handles it consumes or produces) and Callbacks (which ones it may fire).
 */
#ifndef KVBLOCK_H
#define KVBLOCK_H

#include <errno.h> /* the negative errno values kvblock returns */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define KVB_API
#elif defined(__GNUC__)
#define KVB_API __attribute__((visibility("default")))
#else
#define KVB_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define KVB_VERSION_MAJOR 1
#define KVB_VERSION_MINOR 0
#define KVB_VERSION_PATCH 0

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/**
 * @brief Describe an error code ("ENOSPC: not enough free or evictable blocks").
 * @param err a negative (or positive) errno value as returned by kvblock.
 * @return a static string; never NULL ("unknown error" for codes kvblock does not use).
 * Thread safety: safe from any thread.
 * Ownership: none; the string is static.
 * Callbacks: none.
 */
KVB_API const char *kvb_strerror(int err);

/**
 * @brief The symbolic name of an error code ("ENOSPC").
 * @param err a negative (or positive) errno value.
 * @return a static string; "EUNKNOWN" for codes kvblock does not use.
 * Thread safety: safe from any thread.
 * Ownership: none; the string is static.
 * Callbacks: none.
 */
KVB_API const char *kvb_err_name(int err);

/* ------------------------------------------------------------------------ */
/* Content hashes (DESIGN.md section 4)                                     */
/* ------------------------------------------------------------------------ */

/**
 * A 128-bit positional lineage hash. Bit layout, most significant first:
 * [mode:2][position:P][current sequence hash:64][parent fragment:R] with
 * (mode, P, R) = (0, 8, 54) for position < 256, (1, 16, 46) below 65536 and
 * (2, 24, 38) below 2^24. The parent fragment is the low R bits of the parent's
 * 64-bit sequence hash (0 for the first block). Mode 3 is invalid.
 * Compare with kvb_hash_equal(); the struct has no padding.
 */
typedef struct kvb_hash {
    uint64_t hi, lo;
} kvb_hash;

#define KVB_HASH_MAX_POSITION ((1u << 24) - 1)

/**
 * @brief Pack a positional lineage hash.
 * @param current the block's 64-bit sequence hash.
 * @param parent the parent block's sequence hash (ignored when !has_parent).
 * @param has_parent false for the first block of a sequence.
 * @param position the block index in its sequence, 0..KVB_HASH_MAX_POSITION.
 * @param out receives the hash.
 * @return 0; -EOVERFLOW when position > KVB_HASH_MAX_POSITION; -EINVAL when out is NULL.
 * Thread safety: pure function, safe from any thread.
 * Ownership: none.
 * Callbacks: none.
 */
KVB_API int kvb_hash_make(uint64_t current, uint64_t parent, bool has_parent, uint32_t position,
                          kvb_hash *out);

/**
 * @brief Position (block index) packed in h.
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API uint32_t kvb_hash_position(kvb_hash h);

/**
 * @brief The 64-bit sequence hash packed in h: the router projection used by
 * KV-aware routers (Dynamo, vLLM events).
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API uint64_t kvb_hash_current(kvb_hash h);

/**
 * @brief The parent fragment packed in h (R low bits of the result, see kvb_hash).
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API uint64_t kvb_hash_parent_fragment(kvb_hash h);

/**
 * @brief The parent fragment a child at child_position keeps of its parent's sequence
 * hash: its low 54, 46 or 38 bits (by the child's position); 0 past the maximum position.
 * kvb_hash_is_parent(p, c) is kvb_hash_parent_fragment(c) ==
 * kvb_hash_child_fragment(kvb_hash_current(p), kvb_hash_position(c)) plus the positions.
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API uint64_t kvb_hash_child_fragment(uint64_t parent_seq, uint32_t child_position);

/**
 * @brief Number of parent-fragment bits (54, 46 or 38) for a hash's position.
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API uint32_t kvb_hash_fragment_bits(kvb_hash h);

/**
 * @brief Whether two hashes are identical.
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API bool kvb_hash_equal(kvb_hash a, kvb_hash b);

/**
 * @brief Whether @p parent is a possible parent of @p child: position one less
 * and parent fragment equal to the low bits of parent's sequence hash.
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API bool kvb_hash_is_parent(kvb_hash parent, kvb_hash child);

/**
 * @brief Child hash of @p parent at the next position with sequence hash @p current.
 * @return 0; -EOVERFLOW past KVB_HASH_MAX_POSITION; -EINVAL when out is NULL.
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_hash_extend(kvb_hash parent, uint64_t current, kvb_hash *out);

/**
 * @brief Format h as text: "pos:current:fragment" in hex, e.g. "3:9f2c...:1a2b...".
 * @return the number of characters the full text needs (excluding NUL), like snprintf.
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_hash_format(kvb_hash h, char *buf, size_t cap);

/** The seed NVIDIA Dynamo's KV router uses for block hashes of requests without salt
 * or LoRA: pass it as salt_hash to kvb_hash_block / kvb_hash_tokens for block and
 * sequence hashes byte-identical with the router's. (DESIGN.md's default, salt hash
 * 0 for "no salt", is kept for kvb_hash_salt.) */
#define KVB_HASH_DYNAMO_SEED 1337u

/**
 * @brief Salt hash: XXH3-64 of the salt bytes with seed 0; len 0 gives 0.
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API uint64_t kvb_hash_salt(const void *salt, size_t len);

/**
 * @brief Block hash: XXH3-64 of the tokens as little-endian u32, seeded with salt_hash.
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API uint64_t kvb_hash_block(const uint32_t *tokens, size_t n, uint64_t salt_hash);

/**
 * @brief Sequence-hash chain step: XXH3-64 (seed 1337) of the 16 bytes
 * (parent_seq, block_hash) as little-endian u64. Dynamo's KV router computes the same.
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API uint64_t kvb_hash_chain(uint64_t parent_seq, uint64_t block_hash);

/**
 * @brief Lineage hashes of the full blocks of a token sequence.
 * @param tokens the token ids (may be NULL only when n_tokens is 0).
 * @param n_tokens number of tokens; a trailing partial block gets no hash.
 * @param block_size tokens per block, power of two in 1..1024.
 * @param salt_hash kvb_hash_salt() of the request's salt, or 0.
 * @param out receives min(n_tokens / block_size, out_cap) hashes.
 * @return the number written; -EINVAL on a bad block size or NULL pointers;
 *         -EOVERFLOW when a block would sit past KVB_HASH_MAX_POSITION.
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_hash_tokens(const uint32_t *tokens, size_t n_tokens, uint32_t block_size,
                            uint64_t salt_hash, kvb_hash *out, size_t out_cap);

/* ------------------------------------------------------------------------ */
/* Pools                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct kvb_pool kvb_pool;
typedef struct kvb_registry kvb_registry;

typedef enum { KVB_DUP_ALLOW = 0, KVB_DUP_REJECT } kvb_dup_policy;

/** Built-in inactive-index (eviction) policies. LRU: least recently released
 * first. FIFO: ordered by when the content was first registered in this pool;
 * a resurrection does not refresh its place. MULTI_LRU: four LRU levels by TinyLFU
 * frequency. TINYLFU: W-TinyLFU. LINEAGE: leaves of the cached prefix tree only,
 * least recently released first. LINEAGE_ARC: ARC over the leaves of the prefix
 * tree with a long ghost history: the best prefix hit ratio measured on the
 * Mooncake traces (README, docs/eviction.md). */
typedef enum {
    KVB_EVICT_LRU = 0,
    KVB_EVICT_FIFO,
    KVB_EVICT_MULTI_LRU,
    KVB_EVICT_TINYLFU,
    KVB_EVICT_LINEAGE,
    KVB_EVICT_LINEAGE_ARC, /* addition beyond API.md v1 */
    KVB_EVICT_ADAPTIVE     /* follows simulations of lru and lineage_arc, whichever leads */
} kvb_evict_policy;

/** Release callbacks; all optional; never called under the pool lock. */
typedef struct kvb_callbacks {
    void *user;
    /** Slot back in the free list (from any state). */
    void (*on_reset)(void *user, uint32_t block_id);
    /** Cached content dropped. An eviction by allocate fires on_evict only (the
     * slot goes INACTIVE -> MUTABLE without passing through the free list);
     * reset_inactive fires on_evict then on_reset per block. */
    void (*on_evict)(void *user, kvb_hash hash, uint32_t block_id);
} kvb_callbacks;

/** Memory allocator used for every allocation a pool makes: its tables at create
 * time, and afterwards only transient buffers (callback queues of very large
 * batches, kvb_pool_check's scratch) and the event module's buffers. Leave alloc and
 * free NULL for the C library's malloc/free (jemalloc's when the host process links
 * it). */
typedef struct kvb_allocator {
    void *ctx;
    void *(*alloc)(void *ctx, size_t size);
    void (*free)(void *ctx, void *ptr, size_t size);
} kvb_allocator;

/** A monotonic clock in milliseconds, for retention durations. Leave now_ms NULL for
 * CLOCK_MONOTONIC; tests and trace replays inject their own time. The pool reads it
 * before taking its lock, and only when durations are pending (or being set). */
typedef struct kvb_clock {
    void *ctx;
    uint64_t (*now_ms)(void *ctx);
} kvb_clock;

struct kvb_inactive_ops; /* kvblock/inactive.h: custom eviction backends */
struct kvb_event_config; /* kvblock/events.h: KV cache events */

typedef struct kvb_pool_config {
    uint32_t block_count;            /**< required, > 0, <= KVB_MAX_BLOCKS */
    uint32_t block_size;             /**< tokens per block, power of two 1..1024; default 16 */
    kvb_dup_policy dup_policy;       /**< default ALLOW */
    kvb_evict_policy evict;          /**< default LRU */
    uint8_t multi_lru_thresholds[3]; /**< default {3, 8, 15}; ascending, 1..15 */
    bool reset_on_release;           /**< store-wide default, default false */
    kvb_registry *registry;          /**< optional, may be shared by several pools */
    const char *name;                /**< label in metrics; default "pool"; copied */
    kvb_callbacks callbacks;
    /* ---- additions beyond API.md v1 ---- */
    /** Custom eviction backend; overrides `evict` when non-NULL. Must outlive the pool. */
    const struct kvb_inactive_ops *evict_ops;
    /** Debugging aid: abort() on handle misuse instead of returning -ESTALE. Also
     * enabled by the environment variable KVBLOCK_ABORT_ON_MISUSE=1. Off by default. */
    bool abort_on_misuse;
    kvb_allocator allocator;
    /** KV events (kvblock/events.h); NULL for none. Copied at create. */
    const struct kvb_event_config *events;
    /** Lookahead hints (kvb_pool_hint): how many (hash, hinting call) pairs may be
     * outstanding at once, e.g. the blocks of every request the scheduler may queue.
     * 0 (the default): no hints, and no memory or time spent on them. At create the
     * pool reserves about 80 bytes per unit plus 4 bytes per block (never more
     * afterwards). At most 2^30. */
    uint32_t hint_capacity;
    /** Retention priorities and durations (kvb_pool_register_retained,
     * kvb_block_set_priority, kvb_pool_set_priority): off by default; on, the pool
     * reserves 29 bytes per block at create. */
    bool priorities;
    /** Clock for retention durations (default: CLOCK_MONOTONIC). */
    kvb_clock clock;
} kvb_pool_config;

/** Largest supported block_count (block ids are uint32_t; one value is reserved). */
#define KVB_MAX_BLOCKS (1u << 30)

/**
 * @brief Fill every field of cfg with its default (block_count 0 must still be set).
 * Thread safety: touches only cfg.
 * Ownership: none.
 * Callbacks: none.
 */
KVB_API void kvb_pool_config_init(kvb_pool_config *cfg);

/**
 * @brief Create a pool of cfg->block_count blocks, all RESET, free list in id order.
 * @return 0; -EINVAL on a bad configuration (zero or too many blocks, block size
 *         not a power of two in 1..1024, thresholds not ascending in 1..15, bad
 *         ops table); -ENOTSUP for a policy not built in; -ENOSPC when the registry
 *         already serves KVB_REGISTRY_MAX_POOLS pools; -ENOMEM.
 * Thread safety: safe from any thread; the registry, if any, is locked briefly.
 * Ownership: *out is owned by the caller until kvb_pool_destroy succeeds.
 * Callbacks: none.
 */
KVB_API int kvb_pool_create(const kvb_pool_config *cfg, kvb_pool **out);

/**
 * @brief Destroy a pool. Refuses while any handle (mutable, complete or block) is
 * outstanding, including a last release still in flight.
 * @return 0; -EBUSY (pool unchanged and still usable); -EINVAL for NULL.
 * Thread safety: no other thread may use the pool during or after a successful call.
 * Ownership: weak handles of the pool become dangling: never use them afterwards.
 * Callbacks: with an event sink, a CLEARED event when the cache was not empty (and any
 *            batched events are flushed); no on_reset/on_evict for the cached blocks.
 */
KVB_API int kvb_pool_destroy(kvb_pool *pool);

/**
 * @brief Process-unique pool id (from a process-wide counter), never 0.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API uint64_t kvb_pool_id(const kvb_pool *pool);

/**
 * @brief Number of blocks the pool manages.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API uint32_t kvb_pool_block_count(const kvb_pool *pool);

/**
 * @brief Tokens per block.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API uint32_t kvb_pool_block_size(const kvb_pool *pool);

/**
 * @brief The pool's name (metrics label).
 * Thread safety: safe from any thread. Ownership: the string belongs to the pool. Callbacks: none.
 */
KVB_API const char *kvb_pool_name(const kvb_pool *pool);

/**
 * @brief Name of the eviction backend in use ("lru", "fifo", ...).
 * Thread safety: safe from any thread. Ownership: static string. Callbacks: none.
 */
KVB_API const char *kvb_pool_policy_name(const kvb_pool *pool);

/**
 * @brief Blocks an allocation could take now: free + inactive, one coherent snapshot.
 * Thread safety: takes the pool lock. Ownership: none. Callbacks: none.
 */
KVB_API uint32_t kvb_pool_available(kvb_pool *pool);

/**
 * @brief Drain the inactive cache: every INACTIVE block goes to RESET (each counts
 * as an eviction), in eviction order. Blocks in use (mutable, staged, primary,
 * duplicate) are left alone and keep working: a runtime can flush its prefix cache
 * while requests run; the primaries it holds stay findable and are cached again
 * when released.
 * @return the number of blocks drained (>= 0; 0 when nothing is cached); -ENOMEM
 *         (nothing drained).
 * Thread safety: safe from any thread while other threads use the pool; drains in
 *                one critical section (the pool lock is taken once for the drain).
 * Ownership: none; every handle stays valid.
 * Callbacks: on_evict then on_reset for each drained block, after the lock is dropped;
 *            registry presence updates; events: one CLEARED when no primary stays in
 *            the pool, else one REMOVED record per drained block (a CLEARED would
 *            make consumers forget the primaries that stay).
 */
KVB_API int kvb_pool_reset_inactive(kvb_pool *pool);

/**
 * @brief Lookahead hints: tell the pool which content queued requests will ask for.
 *
 * delta > 0 adds delta expected uses of each hashes[i] (a request entering the queue
 * hints its prefix hashes); delta < 0 withdraws -delta uses of each (the request was
 * scheduled or cancelled). A cached block whose hash has outstanding uses is evicted
 * only when no other cached block is left, and among such blocks the one needed
 * furthest ahead goes first: the uses of one call are needed after those of every
 * earlier call (a queue), so a hash's next need is its oldest outstanding hinting
 * call; ties (the blocks of one request) go deepest position first. Withdrawing takes
 * a hash's oldest uses back first. Hints never keep a block from being allocated when
 * nothing else is left, never change what is matched, and work under every eviction
 * policy, custom backends included: the pool filters victims (a hinted block the
 * backend proposes is set apart instead of evicted, and comes back into the backend's
 * order when its hints are withdrawn); no backend needs to know.
 *
 * Withdraw after the scheduled request has matched its prefix (kvb_pool_match): its
 * hinted blocks are then taken from the protected set directly. A hash may be hinted
 * before it is cached: the block is protected when it is released into the cache.
 * Withdrawing uses that are not outstanding is not an error: they are ignored and
 * counted in kvb_stats.hint_unmatched.
 * @param delta non-zero.
 * @return 0; -ENOSPC (delta > 0 and the hint capacity cannot take n more hashes:
 *         nothing changed, counted in hint_rejected); -ENOTSUP (the pool was created
 *         with hint_capacity 0); -EINVAL (NULL pool, NULL hashes with n > 0, delta 0,
 *         or a hash with the invalid mode 3).
 * Thread safety: takes the pool lock once; O(n) expected, O(log n) per hinted
 * block that moves.
 * Ownership: none (no handle is taken or released).
 * Callbacks: none (hints never evict).
 */
KVB_API int kvb_pool_hint(kvb_pool *pool, const kvb_hash *hashes, uint32_t n, int32_t delta);

/**
 * @brief Full invariant check (state counts, free list, inactive index, hash index,
 * reference counts, gauges).
 * @return 0 or -EFAULT (a library bug: please report it).
 * Thread safety: takes the pool lock; O(block_count).
 * Ownership: none. Callbacks: none.
 */
KVB_API int kvb_pool_check(kvb_pool *pool);

/* ------------------------------------------------------------------------ */
/* Handles                                                                  */
/* ------------------------------------------------------------------------ */

/** A MUTABLE block: being filled by its one owner. Release or stage it. */
typedef struct kvb_mutable {
    kvb_pool *pool;
    uint32_t id;
    uint32_t gen;
} kvb_mutable;
/** A STAGED block: full, hash assigned, not yet registered. Register, reset or release it. */
typedef struct kvb_complete {
    kvb_pool *pool;
    uint32_t id;
    uint32_t gen;
    kvb_hash hash;
} kvb_complete;
/** One counted reference to a PRIMARY or DUPLICATE block. Release it exactly once. */
typedef struct kvb_block {
    kvb_pool *pool;
    uint32_t id;
    uint32_t gen;
    kvb_hash hash;
} kvb_block;
/** A weak reference: keeps nothing alive, needs no release. */
typedef struct kvb_weak {
    kvb_pool *pool;
    uint32_t id;
    uint32_t gen;
    kvb_hash hash;
} kvb_weak;

/** Where a block lives: unique across all pools of the process (a "pin" key). */
typedef struct kvb_block_addr {
    uint64_t pool_id;
    uint32_t block_id;
    kvb_hash hash;
} kvb_block_addr;

/**
 * @brief Allocate n mutable blocks, all or nothing: free list first (FIFO), then
 * eviction from the inactive cache in policy order.
 * @param out room for n handles.
 * @param evicted nullable; room for n; receives the hashes evicted to satisfy the call.
 * @param n_evicted nullable; receives how many were evicted.
 * @return 0; -ENOSPC (nothing taken); -EINVAL (NULL pool or out with n > 0); -ENOMEM.
 *         A failure changes nothing, with one exception: when a custom eviction
 *         backend without `unevict` breaks its contract during the call (hands out
 *         fewer blocks than it holds), its blocks are given back by re-insertion, so
 *         its eviction order may change (kvblock/inactive.h, "What a failed
 *         allocation restores"); kvb_stats.allocate_rollbacks counts such failures.
 * Thread safety: takes the pool lock once.
 * Ownership: produces n kvb_mutable handles; each must be staged or released.
 * Callbacks: on_evict for each evicted block, after the lock is dropped; a REMOVED event
 *            per evicted block; registry presence updates. None when it fails.
 */
KVB_API int kvb_pool_allocate(kvb_pool *pool, uint32_t n, kvb_mutable *out, kvb_hash *evicted,
                              uint32_t *n_evicted);

/**
 * @brief Give a mutable block its content hash: MUTABLE -> STAGED.
 * @return 0; -ESTALE for a released, stale or foreign handle; -EINVAL for NULL or a
 *         hash with the invalid mode 3.
 * Thread safety: takes the pool lock.
 * Ownership: consumes *m (cleared), produces *out.
 * Callbacks: none.
 */
KVB_API int kvb_mutable_stage(kvb_mutable *m, kvb_hash hash, kvb_complete *out);

/**
 * @brief Stage n mutable blocks under one lock: in[i] gets hashes[i] (MUTABLE -> STAGED).
 * All or nothing: if any in[i] is not a live mutable handle of this pool (or appears
 * twice), or any hash has the invalid mode 3, nothing changes.
 * @return 0; -ESTALE (misuse counted); -EINVAL for NULL arrays with n > 0 or a bad hash.
 * Thread safety: takes the pool lock once.
 * Ownership: consumes in[0..n) (cleared), produces out[0..n).
 * Callbacks: none.
 */
KVB_API int kvb_pool_stage(kvb_pool *pool, kvb_mutable *in, const kvb_hash *hashes, uint32_t n,
                           kvb_complete *out);

/**
 * @brief Return a mutable block to the free list: MUTABLE -> RESET.
 * @return 0; -ESTALE (misuse counted).
 * Thread safety: takes the pool lock.
 * Ownership: consumes *m.
 * Callbacks: on_reset.
 */
KVB_API int kvb_mutable_release(kvb_mutable *m);

/**
 * @brief Undo staging: STAGED -> MUTABLE (the hash is forgotten).
 * @return 0; -ESTALE; -EINVAL for NULL out.
 * Thread safety: takes the pool lock.
 * Ownership: consumes *c, produces *out.
 * Callbacks: none.
 */
KVB_API int kvb_complete_reset(kvb_complete *c, kvb_mutable *out);

/**
 * @brief Drop a staged block: STAGED -> RESET (never cached).
 * @return 0; -ESTALE.
 * Thread safety: takes the pool lock.
 * Ownership: consumes *c.
 * Callbacks: on_reset.
 */
KVB_API int kvb_complete_release(kvb_complete *c);

/**
 * @brief Register n staged blocks under one lock. For each in[i] with hash h:
 * no block holds h -> STAGED -> PRIMARY; h cached -> the cached block is resurrected
 * first; a primary exists -> under KVB_DUP_ALLOW the staged block becomes a DUPLICATE
 * (holding one reference on the primary), under KVB_DUP_REJECT it goes back to RESET and
 * out[i] is a new reference to the existing primary. A primary holds at most 65535
 * duplicates; past that, ALLOW answers as REJECT for that hash.
 * @return 0; -ESTALE if any in[i] is not a live staged handle of this pool (or appears
 *         twice): nothing is registered; -EINVAL for NULL arrays with n > 0; -ENOMEM.
 * Thread safety: takes the pool lock once.
 * Ownership: consumes in[0..n) (cleared), produces out[0..n) kvb_block references.
 * Callbacks: on_reset for blocks dropped under REJECT; a STORED event per new primary
 *            (duplicates never emit); registry presence updates.
 */
KVB_API int kvb_pool_register(kvb_pool *pool, kvb_complete *in, uint32_t n, kvb_block *out);

/**
 * @brief Prefix match: for i = 0.. take a reference to the block holding hashes[i]
 * (active, or cached: resurrected) and stop at the first miss.
 * @return k >= 0, the number of leading hashes found; out[0..k) filled; -EINVAL.
 * Thread safety: takes the pool lock once.
 * Ownership: produces k kvb_block references.
 * Callbacks: on_reset (and a REMOVED event) when a block released with reset-on-release
 *            is met in its last release window (it is reset, and counts as a miss).
 */
KVB_API int kvb_pool_match(kvb_pool *pool, const kvb_hash *hashes, uint32_t n, kvb_block *out);

/**
 * @brief Match every position independently. hit[i] says whether out[i] is valid
 * (out[i] is zero-filled on a miss). Repeated hashes take one reference each.
 * @return the hit count (>= 0); -EINVAL.
 * Thread safety: takes the pool lock once.
 * Ownership: produces one kvb_block reference per hit.
 * Callbacks: as kvb_pool_match.
 */
KVB_API int kvb_pool_match_scattered(kvb_pool *pool, const kvb_hash *hashes, uint32_t n,
                                     kvb_block *out, bool *hit);

/**
 * @brief Scan: look every hash up independently under one lock (Dynamo takes the lock
 * once per hash). Like kvb_pool_match_scattered, but counted in scan_requested /
 * scan_returned, and the hits count as accesses for frequency-aware eviction only when
 * touch is true (a tier-presence probe should not make content look popular).
 * @return the hit count (>= 0); -EINVAL.
 * Thread safety: takes the pool lock once.
 * Ownership: produces one kvb_block reference per hit (out[i] zero-filled on a miss).
 * Callbacks: as kvb_pool_match.
 */
KVB_API int kvb_pool_scan(kvb_pool *pool, const kvb_hash *hashes, uint32_t n, bool touch,
                          kvb_block *out, bool *hit);

/**
 * @brief Take one more reference to the block b refers to. Lock-free (one CAS).
 * @return 0; -ESTALE when b is not a live reference (misuse counted); -EOVERFLOW when
 *         the block already has 2^32-2 references; -EINVAL for NULL.
 * Thread safety: safe from any thread, concurrently with anything but a release of *b.
 * Ownership: produces *out (b is unchanged).
 * Callbacks: none.
 */
KVB_API int kvb_block_clone(const kvb_block *b, kvb_block *out);

/**
 * @brief Release one reference. Lock-free unless it is the last one; the last one
 * takes the lock and moves the block PRIMARY -> INACTIVE (cached), PRIMARY -> RESET
 * (reset-on-release) or DUPLICATE -> RESET (then drops the duplicate's reference on
 * its primary). A last release that lost the race to a lookup is a counted no-op.
 * @return 0; -ESTALE (misuse counted, nothing changed).
 * Thread safety: safe from any thread.
 * Ownership: consumes *b.
 * Callbacks: on_reset when the block (or a primary it kept alive) goes to RESET; a
 *            REMOVED event when a primary is reset (reset-on-release); presence updates.
 */
KVB_API int kvb_block_release(kvb_block *b);

/**
 * @brief Release n references; the lock is taken at most once for the batch.
 * @return 0; -ESTALE if any handle is invalid: then the valid ones are still released
 *         and cleared, the invalid ones are left as they were (misuse counted per
 *         handle); -EINVAL for NULL with n > 0.
 * Thread safety: safe from any thread.
 * Ownership: consumes every valid blocks[i].
 * Callbacks: as kvb_block_release, for each.
 */
KVB_API int kvb_block_release_n(kvb_block *blocks, uint32_t n);

/**
 * @brief Set whether the block goes to RESET instead of the cache on its last
 * release. Applies to the block (all its references), honoured only at the last
 * release; survives a cache round-trip; cleared when the slot gets new content.
 * Ignored for duplicates (never cached anyway).
 * @return 0; -ESTALE.
 * Thread safety: takes the pool lock.
 * Ownership: none (b unchanged).
 * Callbacks: none.
 */
KVB_API int kvb_block_set_reset_on_release(kvb_block *b, bool on);

/**
 * @brief Number of references held on the block, including one per live duplicate of
 * a primary; 0 when b names another life of the slot (released and reused).
 * Thread safety: safe from any thread; takes the pool lock briefly (duplicates' holds
 * are counted under it).
 * Ownership: none. Callbacks: none.
 */
KVB_API uint32_t kvb_block_use_count(const kvb_block *b);

/**
 * @brief Address of the block: (pool id, block id, hash), unique across pools.
 * @return 0; -ESTALE when b is not a live reference; -EINVAL for NULL.
 * Thread safety: lock-free. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_block_address(const kvb_block *b, kvb_block_addr *out);

/**
 * @brief Make a weak reference to b's block (keeps nothing alive). A cleared b gives a
 * cleared weak handle.
 * Thread safety: touches only b and out.
 * Ownership: produces *out, which needs no release; b is unchanged.
 * Callbacks: none.
 */
KVB_API void kvb_block_downgrade(const kvb_block *b, kvb_weak *out);

/**
 * @brief Get a live reference from a weak one: the same block while it is referenced
 * (lock-free), else the block holding the hash in the pool (active or cached:
 * resurrected), else -ENOENT.
 * @return 0; -ENOENT (also when the block's reference count is saturated); -EINVAL for
 *         NULL or a cleared weak handle.
 * Thread safety: safe from any thread; may take the pool lock.
 * Ownership: produces *out; w is unchanged.
 * Callbacks: on_reset as in kvb_pool_match.
 */
KVB_API int kvb_weak_upgrade(const kvb_weak *w, kvb_block *out);

/* ------------------------------------------------------------------------ */
/* Retention priorities (TensorRT-LLM's KvCacheRetentionConfig)              */
/* ------------------------------------------------------------------------ */

#define KVB_PRIORITY_MIN     0u
#define KVB_PRIORITY_MAX     100u
#define KVB_PRIORITY_DEFAULT 35u

/** Priority of the blocks whose first token lies in [token_start, token_end). */
typedef struct kvb_retention_range {
    uint32_t token_start;
    uint32_t token_end;   /**< one past the last token; 0: to the end of the sequence */
    uint32_t priority;    /**< KVB_PRIORITY_MIN..KVB_PRIORITY_MAX */
    uint32_t duration_ms; /**< 0: as long as the block lives; else back to the default after */
} kvb_retention_range;

/** Retention of one request's blocks, as TensorRT-LLM's KvCacheRetentionConfig: a
 * priority per token range, each with an optional duration, and a decode-phase
 * priority for the generated tokens. A block gets the priority of the range holding
 * its first token (position x block_size), the decode priority when that token is at
 * or past decode_start, else the default. Fill with kvb_retention_init. */
typedef struct kvb_retention {
    const kvb_retention_range *ranges; /**< sorted by token_start, not overlapping */
    uint32_t n_ranges;
    uint32_t decode_priority;    /**< default KVB_PRIORITY_DEFAULT */
    uint32_t decode_duration_ms; /**< default 0 */
    uint32_t decode_start;       /**< first generated token; default UINT32_MAX: none */
} kvb_retention;

/**
 * @brief Fill r with defaults: no range, no decode phase (every block default).
 * Thread safety: touches only r. Ownership: none. Callbacks: none.
 */
KVB_API void kvb_retention_init(kvb_retention *r);

/**
 * @brief The priority and duration r gives a block whose first token is first_token.
 * @return 0; -EINVAL for a NULL argument or an invalid r (ranges unsorted, overlapping,
 *         empty, an open range not last, a priority above KVB_PRIORITY_MAX).
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_retention_lookup(const kvb_retention *r, uint64_t first_token, uint32_t *priority,
                                 uint32_t *duration_ms);

/**
 * @brief kvb_pool_register, then each registered content (out[i]'s block, or the
 * primary a duplicate holds) takes the priority and duration `retention` gives its
 * position (kvb_retention_lookup of position x block_size). Lowest priority is
 * evicted first; within a priority, in the eviction policy's order (every cached
 * block is in the backend; the pool sets aside, per level, the ones the backend
 * proposes before the lowest level's: docs/eviction.md); when a duration runs out
 * the priority returns to KVB_PRIORITY_DEFAULT. A plain
 * kvb_pool_register leaves the priority of content already in the pool as it was.
 * @param retention NULL: as kvb_pool_register.
 * @return as kvb_pool_register; -EINVAL for an invalid retention (nothing registered);
 *         -ENOTSUP when the pool was created without `priorities` (and retention is
 *         not NULL).
 * Thread safety: takes the pool lock once (reads the clock before, for durations).
 * Ownership: as kvb_pool_register.
 * Callbacks: as kvb_pool_register.
 */
KVB_API int kvb_pool_register_retained(kvb_pool *pool, kvb_complete *in, uint32_t n,
                                       const kvb_retention *retention, kvb_block *out);

/**
 * @brief A request's blocks in one call under one lock: the prefix match, then the
 * rest allocated, staged and registered. Exactly what k = kvb_pool_match(pool, hashes,
 * n, out), kvb_pool_allocate(pool, n - k, mut, evicted, n_evicted), kvb_pool_stage(pool,
 * mut, hashes + k, n - k, cmp) and kvb_pool_register_retained(pool, cmp, n - k,
 * retention, out + k) do in sequence, one thread alone: the same hits, victims, states,
 * generations, counters (but one lock acquisition), event records, callbacks and
 * registry updates, in the same order; a later hash that is cached or active is
 * resurrected, deduplicated or duplicated as register does. Atomic where the sequence
 * is not: it fails before taking anything.
 * @param hashes n hashes (none with the invalid mode 3); n at most INT32_MAX.
 * @param retention NULL (kvb_pool_register), or the priorities of the registered
 *        blocks, as kvb_pool_register_retained (the hits keep theirs).
 * @param out room for n references: out[0..k) the hits, out[k..n) the new blocks (or
 *        the blocks they duplicate or deduplicate to).
 * @param evicted nullable; room for n; the hashes evicted to make room.
 * @param n_evicted nullable; how many were evicted.
 * @return k >= 0, the number of leading hashes found (every out[i] is a reference);
 *         -ENOSPC: the n - k blocks do not fit in the free list and the cache the
 *         prefix leaves (also when a custom backend breaks its contract); -EOVERFLOW:
 *         registering would overflow a block's reference count; -EINVAL (NULL pool, NULL
 *         arrays with n > 0, a bad hash, n > INT32_MAX, an invalid retention); -ENOTSUP
 *         (retention on a pool without priorities); -ENOMEM. On failure no reference is
 *         taken and nothing changed (only a broken backend's -ENOSPC gives the hits back
 *         through the release path, last first).
 * Thread safety: takes the pool lock once (reads the clock before when durations are
 *         pending or retention is given).
 * Ownership: produces n kvb_block references.
 * Callbacks: those of the four calls: on_evict per eviction, on_reset per block
 *            dropped under REJECT (or reset in its last release window), STORED and
 *            REMOVED events, registry presence updates; all after the lock is dropped.
 */
KVB_API int kvb_pool_acquire(kvb_pool *pool, const kvb_hash *hashes, uint32_t n,
                             const kvb_retention *retention, kvb_block *out, kvb_hash *evicted,
                             uint32_t *n_evicted);

/**
 * @brief Set the priority of the content a live reference names (the primary, for a
 * duplicate), from now on: for duration_ms milliseconds (0: for as long as it is in
 * the pool), then back to KVB_PRIORITY_DEFAULT. It goes with the content into the
 * cache when the block is released.
 * @return 0; -EINVAL (NULL, priority above KVB_PRIORITY_MAX); -ESTALE (misuse
 *         counted); -ENOTSUP (pool without `priorities`).
 * Thread safety: takes the pool lock.
 * Ownership: none (b unchanged).
 * Callbacks: none.
 */
KVB_API int kvb_block_set_priority(const kvb_block *b, uint32_t priority, uint32_t duration_ms);

/**
 * @brief The priority now in force for the content b names (durations applied).
 * @return 0..100; -ESTALE; -EINVAL for NULL. KVB_PRIORITY_DEFAULT on a pool
 *         without `priorities`.
 * Thread safety: takes the pool lock. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_block_priority(const kvb_block *b);

/**
 * @brief Set the priority of the content of each hashes[i] that is in the pool now,
 * held or cached (others are skipped). A TTL pin for a paused session is
 * kvb_pool_set_priority(pool, hashes, n, KVB_PRIORITY_MAX, ttl_ms): keep these
 * blocks for ttl_ms milliseconds over anything of lower priority.
 * @return the number of hashes found (>= 0); -EINVAL (NULL with n > 0, priority
 *         above KVB_PRIORITY_MAX); -ENOTSUP (pool without `priorities`).
 * Thread safety: takes the pool lock once. Ownership: none.
 * Callbacks: none (never evicts, never resurrects).
 */
KVB_API int kvb_pool_set_priority(kvb_pool *pool, const kvb_hash *hashes, uint32_t n,
                                  uint32_t priority, uint32_t duration_ms);

/* ---- scope-bound release (GCC/Clang cleanup attribute) ---- */

/* Release helpers used by KVB_SCOPED: a cleared (consumed) handle is skipped silently. */
static inline void kvb_mutable_cleanup_(kvb_mutable *h)
{
    if (h->pool)
        (void)kvb_mutable_release(h);
}
static inline void kvb_complete_cleanup_(kvb_complete *h)
{
    if (h->pool)
        (void)kvb_complete_release(h);
}
static inline void kvb_block_cleanup_(kvb_block *h)
{
    if (h->pool)
        (void)kvb_block_release(h);
}
static inline void kvb_weak_cleanup_(kvb_weak *h)
{
    (void)h;
}

#if defined(__GNUC__) || defined(__clang__)
/** KVB_SCOPED(kvb_block) b = {0}; ... released at scope exit unless consumed. */
#define KVB_SCOPED(type) __attribute__((cleanup(type##_cleanup_))) type
#endif

#ifndef __cplusplus
/** kvb_release(&h): release any releasable handle type. */
#define kvb_release(h)                                                                             \
    _Generic((h), kvb_mutable *                                                                    \
             : kvb_mutable_release, kvb_complete *                                                 \
             : kvb_complete_release, kvb_block *                                                   \
             : kvb_block_release)(h)
#endif

/* ------------------------------------------------------------------------ */
/* Statistics                                                               */
/* ------------------------------------------------------------------------ */

typedef struct kvb_stats {
    uint32_t block_count, reset, mutable_, staged, primary, duplicate, inactive; /* gauges */
    uint32_t peak_in_use; /* high watermark of blocks held (not RESET, not INACTIVE) */
    uint64_t allocations, allocations_from_reset, evictions, registrations, duplicates, dedups,
        stagings, match_requested, match_returned, misuse, eager_transitions, allocate_rollbacks,
        release_noops; /* counters */
    /* ---- additions beyond API.md v1 ---- */
    uint64_t lock_acquisitions; /* pool mutex acquisitions */
    uint64_t lock_contended;    /* acquisitions that found the mutex held */
    uint64_t lock_wait_ns;      /* total time spent waiting in contended acquisitions */
    uint64_t resurrections;     /* INACTIVE -> PRIMARY */
    uint64_t scan_requested, scan_returned;
    /* lookahead hints (kvb_pool_hint); all 0 without hint capacity */
    uint64_t hint_uses;      /* gauge: expected uses outstanding */
    uint32_t hint_hashes;    /* gauge: hashes with outstanding uses */
    uint32_t hint_protected; /* gauge: cached blocks kept apart by hints */
    uint64_t hint_added;     /* uses added */
    uint64_t hint_withdrawn; /* uses withdrawn */
    uint64_t hint_unmatched; /* uses asked to be withdrawn that were not outstanding */
    uint64_t hint_rejected;  /* hinting calls refused for lack of capacity */
    uint64_t hint_evictions; /* evictions that had to take a protected (hinted) block */
    /* retention priorities; all 0 without `priorities` */
    uint32_t retained;           /* gauge: cached blocks at a priority other than the default */
    uint32_t retention_timers;   /* gauge: durations pending */
    uint64_t retention_expired;  /* durations that ran out */
    uint64_t retained_evictions; /* evictions of a block above the default priority */
} kvb_stats;

/**
 * @brief Coherent snapshot of gauges and counters (taken under one lock).
 * @return 0; -EINVAL for NULL.
 * Thread safety: takes the pool lock. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_pool_stats(kvb_pool *pool, kvb_stats *out);

/** Bookkeeping memory of a pool, by component (bytes). Fixed at create: a pool
 * never allocates afterwards except transient callback buffers of large batches. */
typedef struct kvb_memory_stats {
    size_t slots;      /* slot array: 32 bytes per block */
    size_t hash_index; /* hash -> block index: 7 bytes per block */
    size_t backend;    /* eviction backend (0 if its ops table has no memory method) */
    size_t sketch;     /* private frequency sketch (a registry's sketch is the registry's) */
    size_t pool;       /* the pool object itself */
    size_t total;      /* sum of every component, hints included */
    /* ---- additions ---- */
    size_t hints;      /* lookahead hint table and heap (0 without hint capacity) */
    size_t priorities; /* retention priorities and durations (0 without `priorities`) */
} kvb_memory_stats;

/**
 * @brief Bookkeeping memory of the pool by component.
 * @return 0; -EINVAL for NULL.
 * Thread safety: takes the pool lock (to read the backend's figure). Ownership: none.
 * Callbacks: none.
 */
KVB_API int kvb_pool_memory(kvb_pool *pool, kvb_memory_stats *out);

/**
 * @brief Prometheus text exposition of the stats, every series labelled
 * pool="<name>". Writes at most cap bytes including the NUL (buf may be NULL when cap
 * is 0, to size the buffer).
 * @return bytes needed (excluding NUL), like snprintf; -EINVAL.
 * Thread safety: takes the pool lock once. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_pool_metrics_text(kvb_pool *pool, char *buf, size_t cap);

#ifdef __cplusplus
} /* extern "C" */

/* C++ has no _Generic: overloads give the same kvb_release(&h). */
static inline int kvb_release(kvb_mutable *h)
{
    return kvb_mutable_release(h);
}
static inline int kvb_release(kvb_complete *h)
{
    return kvb_complete_release(h);
}
static inline int kvb_release(kvb_block *h)
{
    return kvb_block_release(h);
}
#endif

#include "kvblock/events.h"
#include "kvblock/inactive.h"
#include "kvblock/registry.h"

#endif /* KVBLOCK_H */
