/*
 * kvblock/seq.h - sequences: one request's logical -> physical block list
 * (DESIGN.md section 8), built on the pool API of kvblock.h.
 *
 * A kvb_seq holds, in logical order:
 *   - blocks [0, num_registered): full blocks, each a registered kvb_block
 *     reference (adopted from the cache by kvb_seq_match_prefix, or registered
 *     by kvb_seq_append_tokens when their last token arrived);
 *   - blocks [num_registered, num_blocks): kvb_mutable blocks allocated ahead by
 *     kvb_seq_ensure_capacity; the first of them holds the partial tail when
 *     len % block_size != 0.
 * Invariant after every call: num_registered == len / block_size and
 * num_blocks * block_size >= len.
 *
 * Hashes. Full blocks are registered under their positional lineage hash
 * (kvblock.h section "Content hashes"): block hash = kvb_hash_block(tokens,
 * block_size, salt), sequence hash = the block hash for block 0 and
 * kvb_hash_chain(parent, block hash) after, packed with kvb_hash_make. These
 * are the hashes kvb_hash_tokens computes, so a later request with the same
 * salt and prefix finds the blocks with kvb_seq_match_prefix.
 *
 * Memory. kvb_seq_init allocates every array the sequence needs for
 * max_blocks blocks (block handles, ids, hashes, a block_size token tail)
 * through the pool's allocator hook (kvb_pool_config.allocator; malloc by
 * default); kvb_seq_fini frees them the same way, so the pool must outlive its
 * sequences (kvb_seq_fini before kvb_pool_destroy). No other call allocates, so a sequence never
 * fails with -ENOMEM after init (the pool itself may still need memory for large callback batches).
 *
 * Handles. A sequence never leaks a handle: every call that fails changes
 * nothing (allocations made by the call are released again), and
 * kvb_seq_release / kvb_seq_fini release every handle it holds.
 *
 * Threads: a sequence is used by one thread at a time; the pool underneath is
 * thread-safe, so different sequences of one pool may be used concurrently.
 */
#ifndef KVBLOCK_SEQ_H
#define KVBLOCK_SEQ_H

#include "kvblock.h"

#ifdef __cplusplus
extern "C" {
#endif

/** One request's blocks. Caller-allocated (stack, request struct); the fields are
 * private: use the functions below. */
typedef struct kvb_seq {
    kvb_pool *pool;
    uint32_t max_blocks, block_size;
    uint32_t n_blocks;    /* blocks held */
    uint32_t n_full;      /* leading registered blocks (== len / block_size) */
    uint32_t len;         /* tokens */
    uint64_t salt_hash;   /* seed of the block hashes */
    uint64_t parent_seq;  /* 64-bit sequence hash of block n_full - 1 */
    kvb_block *blocks;    /* [max_blocks], valid below n_full */
    kvb_mutable *muts;    /* [max_blocks], valid in [n_full, n_blocks) */
    uint32_t *ids;        /* [max_blocks], block ids of all held blocks */
    kvb_hash *hashes;     /* [max_blocks], scratch */
    kvb_complete *staged; /* [max_blocks], scratch */
    uint32_t *tail;       /* [block_size], tokens of the partial block */
    uint32_t *scratch;    /* [block_size] */
    /* ---- additions ---- */
    const kvb_retention *retention; /* kvb_seq_set_retention; NULL: none */
} kvb_seq;

/**
 * @brief Initialise an empty sequence of at most max_blocks blocks on a pool.
 * @param seq caller-allocated storage.
 * @param pool the pool blocks come from; must outlive the sequence.
 * @param max_blocks capacity in blocks, 1..KVB_HASH_MAX_POSITION + 1.
 * @return 0; -EINVAL (NULL, max_blocks out of range); -ENOMEM.
 * Thread safety: touches only seq.
 * Ownership: seq must be finalised with kvb_seq_fini.
 * Callbacks: none.
 */
KVB_API int kvb_seq_init(kvb_seq *seq, kvb_pool *pool, uint32_t max_blocks);

/**
 * @brief Release every handle (as kvb_seq_release) and free the arrays. seq may be
 * initialised again afterwards. A zero-filled or already finalised seq is a no-op.
 * Thread safety: one thread at a time per sequence; takes the pool lock.
 * Ownership: consumes every handle the sequence holds.
 * Callbacks: the pool's on_reset for blocks that go back to the free list.
 */
KVB_API void kvb_seq_fini(kvb_seq *seq);

/**
 * @brief Set the salt hash (kvb_hash_salt of the request's salt) used for the block
 * hashes; only on an empty sequence.
 * @return 0; -EBUSY when the sequence holds blocks or tokens; -EINVAL for NULL.
 * Thread safety: one thread at a time per sequence. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_seq_set_salt(kvb_seq *seq, uint64_t salt_hash);

/**
 * @brief Retention priorities of the sequence's blocks by token range (TensorRT-LLM's
 * KvCacheRetentionConfig): blocks the sequence registers, and the cached prefix it
 * adopts, take the priority and duration r gives their first token
 * (kvb_pool_register_retained, kvb_block_set_priority). Set r->decode_start to the
 * prompt length for a decode-phase priority of the generated tokens. NULL: none.
 * @return 0; -EINVAL (NULL seq, invalid r).
 * Thread safety: one thread at a time per sequence.
 * Ownership: the sequence keeps the pointer: r (and its ranges) must stay valid while
 *            the sequence may register blocks, or until replaced. Appending tokens on
 *            a pool created without `priorities` then fails with -ENOTSUP.
 * Callbacks: none.
 */
KVB_API int kvb_seq_set_retention(kvb_seq *seq, const kvb_retention *r);

/**
 * @brief Adopt a cached prefix: hash the full blocks of tokens (at most max_blocks)
 * and take references to the longest run of leading blocks the pool holds (active,
 * or cached and resurrected) with kvb_pool_match. The sequence's length becomes the
 * matched token count. To recompute the last prompt token (so that the model has a
 * token to run), pass n_tokens - 1.
 * @return the number of tokens matched (a multiple of the block size, >= 0);
 *         -EBUSY when the sequence is not empty; -EINVAL (NULL with n_tokens > 0).
 * Thread safety: one thread at a time per sequence; takes the pool lock once.
 * Ownership: the sequence holds the references produced by the match.
 * Callbacks: as kvb_pool_match.
 */
KVB_API int kvb_seq_match_prefix(kvb_seq *seq, const uint32_t *tokens, uint32_t n_tokens);

/**
 * @brief Make room for target_len tokens: allocate exactly the blocks still needed
 * (ceil(target_len / block_size) - num_blocks), all or nothing.
 * @return the number of blocks allocated (0 when there is room already);
 *         -E2BIG when target_len needs more than max_blocks blocks; -ENOSPC when the
 *         pool cannot supply them (nothing allocated); -EINVAL; -ENOMEM.
 * Thread safety: one thread at a time per sequence; takes the pool lock once.
 * Ownership: the sequence holds the new kvb_mutable handles.
 * Callbacks: on_evict for blocks evicted to satisfy the allocation.
 */
KVB_API int kvb_seq_ensure_capacity(kvb_seq *seq, uint32_t target_len);

/**
 * @brief Append tokens whose KV has been written, registering every block they
 * complete (one kvb_pool_register call) under its lineage hash. Ensures capacity
 * first (as kvb_seq_ensure_capacity(len + n)). All or nothing.
 * With a pool under KVB_DUP_REJECT a completed block whose hash another block
 * already holds is replaced by a reference to that block: its id changes (re-read
 * kvb_seq_block_ids and update the block table). Under KVB_DUP_ALLOW ids never change.
 * @return the number of blocks registered by this call (>= 0); -E2BIG; -ENOSPC;
 *         -EOVERFLOW (a block position past KVB_HASH_MAX_POSITION, or a primary's
 *         reference count limit); -EINVAL (NULL tokens with n > 0); -ENOMEM.
 * Thread safety: one thread at a time per sequence; takes the pool lock a few times.
 * Ownership: completed blocks move from kvb_mutable to kvb_block handles held by
 *            the sequence.
 * Callbacks: on_evict (allocation); on_reset for blocks dropped under KVB_DUP_REJECT.
 */
KVB_API int kvb_seq_append_tokens(kvb_seq *seq, const uint32_t *tokens, uint32_t n);

/**
 * @brief Share a sequence: dst (empty, same pool) takes a clone of every registered
 * block of src and, when src has a partial tail, a new block holding a copy of the
 * tail tokens. The caller copies that block's KV on the device
 * (kvb_kv_buffer_copy_blocks with {copy_src, copy_dst}). The salt is copied.
 * @param copy_src, copy_dst receive the block pair to copy when the call returns 1.
 * @return 1 when a block copy is needed, 0 when not; -EBUSY (dst not empty);
 *         -EINVAL (NULL, different pools); -E2BIG (dst's max_blocks too small);
 *         -ENOSPC; -EOVERFLOW (reference count limit).
 * Thread safety: one thread at a time per sequence (src and dst).
 * Ownership: dst holds the clones and the new block; src is unchanged.
 * Callbacks: on_evict (allocation).
 */
KVB_API int kvb_seq_fork(const kvb_seq *src, kvb_seq *dst, uint32_t *copy_src, uint32_t *copy_dst);

/**
 * @brief Release every handle; the sequence is empty (length 0, salt 0) and reusable.
 * @return 0; -ESTALE when some handle was no longer valid (misuse counted by the
 *         pool; every valid handle is still released); -EINVAL for NULL.
 * Thread safety: one thread at a time per sequence; takes the pool lock.
 * Ownership: consumes every handle the sequence holds.
 * Callbacks: on_reset for blocks that go back to the free list.
 */
KVB_API int kvb_seq_release(kvb_seq *seq);

/**
 * @brief Tokens in the sequence.
 * Thread safety: one thread at a time per sequence. Ownership: none. Callbacks: none.
 */
KVB_API uint32_t kvb_seq_len(const kvb_seq *seq);

/**
 * @brief Blocks held (registered + allocated ahead).
 * Thread safety: one thread at a time per sequence. Ownership: none. Callbacks: none.
 */
KVB_API uint32_t kvb_seq_num_blocks(const kvb_seq *seq);

/**
 * @brief Leading full blocks that are registered (== len / block_size).
 * Thread safety: one thread at a time per sequence. Ownership: none. Callbacks: none.
 */
KVB_API uint32_t kvb_seq_num_registered(const kvb_seq *seq);

/**
 * @brief Tokens the held blocks can store (num_blocks * block_size).
 * Thread safety: one thread at a time per sequence. Ownership: none. Callbacks: none.
 */
KVB_API uint32_t kvb_seq_capacity(const kvb_seq *seq);

/**
 * @brief The block ids of the held blocks in logical order (num_blocks entries):
 * the row to give kvb_table_set_row.
 * @return a pointer into the sequence, valid until the next call that changes it;
 *         NULL for NULL.
 * Thread safety: one thread at a time per sequence. Ownership: none. Callbacks: none.
 */
KVB_API const uint32_t *kvb_seq_block_ids(const kvb_seq *seq);

/**
 * @brief The lineage hash of registered block i.
 * @return 0; -ERANGE when i >= num_registered; -EINVAL for NULL.
 * Thread safety: one thread at a time per sequence. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_seq_block_hash(const kvb_seq *seq, uint32_t i, kvb_hash *out);

/**
 * @brief The registered block references [0, num_registered) (e.g. to clone or
 * downgrade one); NULL for NULL.
 * Thread safety: one thread at a time per sequence.
 * Ownership: the handles stay owned by the sequence: never release them.
 * Callbacks: none.
 */
KVB_API const kvb_block *kvb_seq_blocks(const kvb_seq *seq);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* KVBLOCK_SEQ_H */
