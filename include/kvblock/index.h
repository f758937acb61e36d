/*
 * kvblock/index.h - the fleet index: which engine (worker, data-parallel rank)
 * caches which prefix, built from every engine's KV events, asked by a router
 * before it places a request (FLEET.md). Self-contained: includes kvblock.h for
 * the hash functions and kvb_allocator only. Not included by kvblock.h.
 *
 * Model.
 *  - A *stream* is one (worker name, dp_rank): one engine's cache. The index
 *    keeps, per stream, which *router hashes* it holds in which tier (device,
 *    host, disk) and how many copies of each (FLEET.md section 3).
 *  - A router hash is the 64-bit sequence hash of kvblock's Dynamo-compatible
 *    chain at the index's block_size and seed: kvb_index_hashes() computes the
 *    hashes of a request from its tokens, LoRA name and cache salt. A sequence
 *    hash names its whole prefix, so one flat map router hash -> holders is
 *    enough for prefix matching.
 *  - Streams of KVB_INDEX_HASHES_ROUTER (kvblock publishers) send router hashes
 *    directly. Streams of KVB_INDEX_HASHES_ENGINE (vLLM, SGLang) send their own
 *    hashes plus token ids: the index recomputes router hashes from the tokens
 *    and keeps a per-stream map engine hash -> router hash so that REMOVED
 *    (engine hashes only) can be applied. A STORED event whose parent's router
 *    hash is unknown cannot be chained and is dropped (counted).
 *  - The rule above all others: no false positives that last. When the index
 *    does not know a stream's state it drops what it had for that stream
 *    (kvb_index_stream_clear) and says so in the stream's state.
 *
 * Events come in normalized form (kvb_index_event). kvb_index_decode() turns a
 * raw msgpack payload of vLLM (map or legacy array layout), SGLang or kvblock
 * into that form; the subscriber (kvblock/subscriber.h) does sequence
 * tracking, gap replay and liveness over ZeroMQ and feeds the index.
 *
 * Concurrency (the measurements behind the choice are in docs/fleet.md):
 *  - Writers (kvb_index_apply, the stream_* calls, load of a stream's state)
 *    are serialised by one writer mutex; decoding happens before it, outside.
 *  - The key table is split in `shards` shards, each guarded by a reader-writer
 *    lock. A writer takes a shard's write lock only while it changes that
 *    shard's keys (one event's blocks at a time, in event order); a match takes
 *    each shard's read lock only while it reads one key's holders. A match
 *    therefore never waits for more than one event's worth of changes in one
 *    shard, and writers never wait for a whole match.
 *  - Exception, and the default (shards = 1, measured fastest on a 2-core
 *    host, see lib/index.c): with a single shard a match holds its read lock
 *    for the whole walk (one lock per match, lookups prefetched ahead), so a
 *    writer may wait for the matches in flight (a few microseconds); the lock
 *    prefers writers, so matches cannot starve them.
 *  - Every function is safe to call from any thread at any time, except that
 *    no call may run during or after kvb_index_destroy.
 *
 * Errors: negative errno as everywhere in kvblock; a failed call changes
 * nothing (kvb_index_apply included: it reserves what a batch needs before it
 * changes anything, so -ENOMEM leaves the index exactly as it was).
 */
#ifndef KVBLOCK_INDEX_H
#define KVBLOCK_INDEX_H

#include "../kvblock.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kvb_index kvb_index;

/** Longest worker name, including the terminating NUL. */
#define KVB_INDEX_NAME_MAX 64
/** dp_rank of a stream whose engine sends none (nil on the wire). */
#define KVB_INDEX_NO_RANK (-1)
/** Stream id that names no stream. */
#define KVB_INDEX_NO_STREAM UINT32_MAX

/** Memory tiers (FLEET.md section 3): medium "GPU" or absent -> DEVICE, "CPU" ->
 * HOST, "DISK" or "STORAGE" -> DISK. */
typedef enum {
    KVB_TIER_DEVICE = 0,
    KVB_TIER_HOST = 1,
    KVB_TIER_DISK = 2,
    KVB_TIER_COUNT = 3
} kvb_tier;

/** What a stream's block hashes are. */
typedef enum {
    /** Router hashes already (kvblock publishers: kvb_hash_current values). */
    KVB_INDEX_HASHES_ROUTER = 0,
    /** The engine's own hashes (vLLM, SGLang): router hashes are recomputed from
     * the events' token ids. */
    KVB_INDEX_HASHES_ENGINE = 1
} kvb_index_hashes_kind;

/** Wire dialects kvb_index_decode() reads. */
typedef enum {
    /** vLLM: EventBatch as array [ts, events, dp_rank] or map {ts, events,
     * data_parallel_rank}; events as tagged maps ("type") or legacy tagged arrays;
     * hashes u64 (or 32-byte digests: the last 8 bytes, big-endian). */
    KVB_WIRE_VLLM = 0,
    /** SGLang: vLLM's shapes, attn_dp_rank in the batch's third slot, signed
     * 64-bit hashes, optional cache_salt, bigram [t, t+1] token pairs. */
    KVB_WIRE_SGLANG = 1,
    /** kvblock's publisher: vLLM's shapes; hashes are router hashes. */
    KVB_WIRE_KVBLOCK = 2
} kvb_wire_kind;

/** Stream states (FLEET.md sections 4 and 8). */
typedef enum {
    KVB_STREAM_LIVE = 0,      /**< current: matched */
    KVB_STREAM_RESYNCING = 1, /**< cleared after a gap it could not replay: matched
                                   with what it holds since (nothing stale) */
    KVB_STREAM_LAGGING = 2,   /**< replica cut off from its source: still matched */
    KVB_STREAM_STALE = 3      /**< transport down past stale_after: not matched */
} kvb_stream_state;

/** Why something was dropped or skipped; counted per stream. */
typedef enum {
    KVB_DROP_MALFORMED = 0,  /**< a batch or event that does not decode */
    KVB_DROP_UNKNOWN_TYPE,   /**< an event type the index does not know (skipped) */
    KVB_DROP_GROUP,          /**< not the main attention group (group_idx > 0) */
    KVB_DROP_MEDIUM,         /**< a medium that maps to no tier */
    KVB_DROP_MULTIMODAL,     /**< blocks with multimodal / prompt-embedding extra keys */
    KVB_DROP_UNKNOWN_PARENT, /**< ENGINE stream: parent's router hash unknown */
    KVB_DROP_NO_TOKENS,      /**< ENGINE stream: STORED without (enough) token ids */
    KVB_DROP_BLOCK_SIZE,     /**< a block size other than the stream's */
    KVB_DROP_CAPACITY,       /**< the stream reached max_entries_per_stream */
    KVB_DROP_UNKNOWN_BLOCK,  /**< REMOVED of a block the stream does not hold (harmless) */
    KVB_DROP_DUPLICATE,      /**< a batch whose sequence number was already applied */
    KVB_DROP_COUNT
} kvb_drop_reason;

/** Per-stream event counters that the caller (subscriber, replica) advances with
 * kvb_index_stream_count(); the index advances batches/events itself, and
 * KVB_COUNT_CLEARS too for the clears it performs (kvb_index_stream_clear, a
 * CLEARED event, a drop by kvb_index_tick): callers do not count those again. */
typedef enum {
    KVB_COUNT_GAPS = 0, /**< sequence gaps seen */
    KVB_COUNT_REPLAYS,  /**< batches applied from a replay */
    KVB_COUNT_RESTARTS, /**< publisher restarts detected */
    KVB_COUNT_CLEARS,   /**< clears (AllBlocksCleared, restart, unreplayable gap, drop) */
    KVB_COUNT_COUNT
} kvb_stream_counter;

typedef struct kvb_index_config {
    uint32_t block_size; /**< router block size, power of two 1..1024; default 16 */
    uint64_t seed;       /**< chain seed of unsalted blocks; default KVB_HASH_DYNAMO_SEED */
    /** Score weights per tier (FLEET.md section 5); default {1.0, 0.8, 0.5}. */
    double tier_weight[KVB_TIER_COUNT];
    /** Seconds a stream's transport may be down before it is STALE (kvb_index_tick);
     * default 30. */
    double stale_after_s;
    /** Seconds after which a STALE stream's entries are freed; default 300. */
    double drop_after_s;
    /** Largest number of streams; default 4096, at most 1 << 20. */
    uint32_t max_streams;
    /** Largest number of (key, tier) entries one stream may hold; STORED blocks past
     * it are dropped (KVB_DROP_CAPACITY): no engine can make the index grow without
     * bound. Default 1 << 24. */
    uint32_t max_entries_per_stream;
    /** Lock shards of the key table, power of two 1..1024; 0 = default, 1 (see
     * docs/fleet.md and lib/index.c for the measurement behind it). */
    uint32_t shards;
    kvb_allocator allocator; /**< NULL members: malloc/free */
} kvb_index_config;

typedef struct kvb_index_stream_config {
    const char *name; /**< worker name, 1..KVB_INDEX_NAME_MAX-1 bytes, no NUL; copied */
    int64_t dp_rank;  /**< >= 0, or KVB_INDEX_NO_RANK */
    kvb_index_hashes_kind hashes;
    /** The engine's block size; 0 = the index's. An ENGINE stream must use the
     * index's block size (events with another are dropped, KVB_DROP_BLOCK_SIZE). */
    uint32_t block_size;
} kvb_index_stream_config;

typedef enum {
    KVB_INDEX_EV_STORED = 1,
    KVB_INDEX_EV_REMOVED = 2,
    KVB_INDEX_EV_CLEARED = 3
} kvb_index_ev_type;

/** One normalized event. Pointers are borrowed for the duration of the call. */
typedef struct kvb_index_event {
    kvb_index_ev_type type;
    kvb_tier tier;
    uint32_t n_hashes;
    const uint64_t *hashes; /**< engine hashes (router hashes on ROUTER streams) */
    bool has_parent;        /**< STORED: the first block has a parent */
    uint64_t parent;        /**< STORED: engine hash of the first block's parent */
    /** STORED on ENGINE streams: n_hashes * block_size token ids (bigram pairs
     * already reduced to their first token). Ignored on ROUTER streams. */
    const uint32_t *tokens;
    uint32_t n_tokens;
    uint32_t block_size; /**< the event's block size; 0 = the stream's */
    /** kvb_index_salt_key() of the blocks' LoRA and cache salt; 0 = plain text. */
    uint64_t salt_key;
} kvb_index_event;

/** A decoded batch (kvb_index_decode). Events point into memory the batch owns
 * until kvb_index_batch_fini. */
typedef struct kvb_index_batch {
    double ts;       /**< the batch's timestamp (seconds) */
    int64_t dp_rank; /**< KVB_INDEX_NO_RANK when nil or absent */
    uint32_t n_events;
    kvb_index_event *events;
    /** What the decoder skipped (unknown types, other groups, media, multimodal
     * blocks, ...): add these to the stream with kvb_index_stream_drop(). */
    uint32_t dropped[KVB_DROP_COUNT];
    void *priv_; /**< owned memory; private */
} kvb_index_batch;

/** One worker's answer to a match (FLEET.md section 5). */
typedef struct kvb_index_result {
    uint32_t stream; /**< stream id */
    int64_t dp_rank;
    uint32_t device;  /**< longest prefix held entirely on device */
    uint32_t host;    /**< longest prefix on device or host, minus device */
    uint32_t disk;    /**< longest prefix on any tier, minus device + host */
    double score;     /**< sum of tier_weight[t] * blocks of tier t */
    uint64_t entries; /**< the stream's entries (tie-break: least loaded cache first) */
    kvb_stream_state state;
    char worker[KVB_INDEX_NAME_MAX];
} kvb_index_result;

typedef struct kvb_index_stream_info {
    uint32_t stream;
    char worker[KVB_INDEX_NAME_MAX];
    int64_t dp_rank;
    kvb_index_hashes_kind hashes;
    uint32_t block_size;
    kvb_stream_state state;
    int64_t last_seq; /**< sequence number of the last applied batch; -1 before any */
    uint64_t batches; /**< batches applied */
    uint64_t events;  /**< events applied */
    uint64_t counters[KVB_COUNT_COUNT];
    uint64_t dropped[KVB_DROP_COUNT];
    uint64_t entries;      /**< (key, tier) entries held now */
    uint64_t engine_map;   /**< engine hash -> router hash entries (ENGINE streams) */
    int64_t last_heard_ns; /**< time of the last batch or heartbeat (kvb_index_now_ns) */
} kvb_index_stream_info;

typedef struct kvb_index_stats {
    uint32_t streams;
    uint64_t keys;           /**< distinct router hashes held by anyone */
    uint64_t entries;        /**< (key, stream) holder entries */
    uint64_t memory_bytes;   /**< bytes the index holds through its allocator */
    uint64_t batches;        /**< batches applied */
    uint64_t events;         /**< events applied */
    uint64_t block_ops;      /**< blocks stored + removed */
    uint64_t matches;        /**< match calls */
    uint64_t matched_blocks; /**< hashes looked up by matches */
} kvb_index_stats;

/**
 * @brief Fill cfg with the defaults.
 * Thread safety: touches only cfg. Ownership: none. Callbacks: none.
 */
KVB_API void kvb_index_config_init(kvb_index_config *cfg);

/**
 * @brief Create an empty index.
 * @return 0; -EINVAL (NULL out, bad block size, shards not a power of two, a negative
 *         weight, ...); -ENOMEM.
 * Thread safety: safe from any thread. Ownership: *out is the caller's until
 * kvb_index_destroy. Callbacks: none.
 */
KVB_API int kvb_index_create(const kvb_index_config *cfg, kvb_index **out);

/**
 * @brief Free the index and everything in it.
 * @return 0; -EINVAL for NULL.
 * Thread safety: no other call on idx may run during or after it.
 * Ownership: idx is freed. Callbacks: none.
 */
KVB_API int kvb_index_destroy(kvb_index *idx);

/**
 * @brief The configuration the index runs with (defaults filled in).
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_config_get(const kvb_index *idx, kvb_index_config *out);

/* ---- keys ---------------------------------------------------------------- */

/**
 * @brief The salt key of a LoRA adapter and a cache salt: 0 when both are absent
 * or empty (plain text); otherwise kvb_hash_chain(kvb_hash_salt(lora),
 * kvb_hash_salt(cache_salt)) | 1 (never 0). A LoRA known only by its numeric id
 * is named by the id in decimal ("7").
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API uint64_t kvb_index_salt_key(const char *lora_name, size_t lora_len, const char *cache_salt,
                                    size_t salt_len);

/**
 * @brief The chain seed of blocks with this salt key: the index's seed when
 * salt_key is 0, kvb_hash_chain(seed, salt_key) otherwise.
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API uint64_t kvb_index_block_seed(const kvb_index *idx, uint64_t salt_key);

/**
 * @brief Router hashes of a request: kvb_hash_current of kvb_hash_tokens with the
 * index's block size and the seed of (lora_name, cache_salt) (NULL for none).
 * @return the number of full blocks written (at most cap); -EINVAL.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_hashes(const kvb_index *idx, const uint32_t *tokens, size_t n_tokens,
                             const char *lora_name, const char *cache_salt, uint64_t *out,
                             size_t cap);

/* ---- streams ------------------------------------------------------------- */

/**
 * @brief Add a stream (worker, dp_rank), initially LIVE with last_seq -1.
 * @return 0 and *out = its id; -EEXIST (same name and rank; *out = the existing id);
 *         -EINVAL; -ENOSPC (max_streams); -ENOMEM.
 * Thread safety: safe from any thread (takes the writer mutex).
 * Ownership: the name is copied. Callbacks: none.
 */
KVB_API int kvb_index_stream_add(kvb_index *idx, const kvb_index_stream_config *cfg, uint32_t *out);

/**
 * @brief Find a stream by worker name and rank.
 * @return 0 and *out; -ENOENT; -EINVAL.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_stream_find(const kvb_index *idx, const char *name, int64_t dp_rank,
                                  uint32_t *out);

/**
 * @brief Remove a stream and free its entries, in time proportional to its own
 * entries (per-stream reverse index). Its id may be reused by a later add.
 * @return 0; -ENOENT.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_stream_remove(kvb_index *idx, uint32_t stream);

/**
 * @brief Remove every stream (every rank) of a worker.
 * @return the number of streams removed (0 when none); -EINVAL.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_worker_remove(kvb_index *idx, const char *name);

/**
 * @brief Drop everything a stream holds (entries and engine map), count a clear,
 * and set its state. Used for AllBlocksCleared (state LIVE), restarts (LIVE), gaps
 * that could not be replayed (RESYNCING) and drops of stale workers (STALE).
 * last_seq is kept.
 * @return 0; -ENOENT; -EINVAL (bad state).
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_stream_clear(kvb_index *idx, uint32_t stream, kvb_stream_state state);

/**
 * @brief Set a stream's state without touching its entries.
 * @return 0; -ENOENT; -EINVAL.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_stream_set_state(kvb_index *idx, uint32_t stream, kvb_stream_state state);

/**
 * @brief Set a stream's last applied sequence number (after a snapshot load or a
 * restart that begins a new sequence space).
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_stream_set_seq(kvb_index *idx, uint32_t stream, int64_t last_seq);

/**
 * @brief Advance one of the caller-kept counters of a stream by delta.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_stream_count(kvb_index *idx, uint32_t stream, kvb_stream_counter c,
                                   uint64_t delta);

/**
 * @brief Count drops of a stream (e.g. a decoded batch's dropped[] or a payload that
 * did not decode). dropped may hold KVB_DROP_COUNT values.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_stream_drop(kvb_index *idx, uint32_t stream,
                                  const uint32_t dropped[KVB_DROP_COUNT]);

/**
 * @brief Liveness input: the stream's transport went down (connected = false) or
 * came back / delivered something (true) at now_ns (kvb_index_now_ns clock).
 * A STALE stream that comes back becomes LIVE again (its entries were kept unless
 * drop_after passed; the caller resumes its sequence by replay or clears it).
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_stream_heard(kvb_index *idx, uint32_t stream, bool connected, int64_t now_ns);

/**
 * @brief Apply the liveness timeouts at now_ns: a stream whose transport has been
 * down for stale_after_s becomes STALE (excluded from matches); one down for
 * drop_after_s has its entries freed (a clear).
 * @return the number of streams whose state changed; -EINVAL.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_tick(kvb_index *idx, int64_t now_ns);

/** Monotonic clock in nanoseconds (CLOCK_MONOTONIC), the one liveness uses.
 * Thread safety: pure. Ownership: none. Callbacks: none. */
KVB_API int64_t kvb_index_now_ns(void);

/**
 * @brief Information and counters of one stream.
 * @return 0; -ENOENT; -EINVAL.
 * Thread safety: safe from any thread (a coherent snapshot of that stream).
 * Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_stream_info_get(const kvb_index *idx, uint32_t stream,
                                      kvb_index_stream_info *out);

/**
 * @brief Ids of the current streams, ascending.
 * @return the number of streams (may exceed cap: only cap ids are written).
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_streams(const kvb_index *idx, uint32_t *ids, uint32_t cap);

/* ---- events -------------------------------------------------------------- */

/**
 * @brief Apply a batch of normalized events to one stream, in order, and record seq
 * as its last applied sequence number (seq < 0: keep it). STORED adds a copy of each
 * block in the event's tier; REMOVED takes one away (the block stays until its last
 * copy in that tier is removed); CLEARED drops everything the stream holds.
 * Events or blocks the index cannot use are dropped and counted per reason
 * (kvb_drop_reason); this is not an error.
 * @return 0; -ENOENT (no such stream); -EINVAL (NULL events with n > 0, a bad event
 *         type or tier); -ENOMEM (nothing applied, nothing counted).
 * Thread safety: safe from any thread; writers are serialised; matches run
 *                concurrently and see each event's blocks appear in event order.
 * Ownership: the events are read during the call only. Callbacks: none.
 */
KVB_API int kvb_index_apply(kvb_index *idx, uint32_t stream, const kvb_index_event *events,
                            uint32_t n, int64_t seq);

/**
 * @brief Decode one raw KV-event payload (the msgpack frame of a ZeroMQ message).
 * Unknown map keys are ignored; unknown event types, non-main attention groups,
 * unknown media and multimodal blocks are skipped and counted in out->dropped
 * (KVB_DROP_MULTIMODAL counts blocks, every other reason events; lib/wire.c has
 * the rules). A payload over 64 MiB, or one whose containers declare more
 * elements than it has bytes, is -EBADMSG before anything is allocated.
 * @return 0 (out filled; free with kvb_index_batch_fini); -EBADMSG (not a batch of
 *         any known layout: nothing to free); -ENOMEM; -EINVAL (NULL out, bad kind,
 *         NULL payload with len > 0); -ENOTSUP (built without msgpack-c). On every
 *         failure but a NULL out, *out is zeroed (kvb_index_batch_fini on it is a
 *         no-op).
 * Thread safety: pure (no index involved): decode on any thread.
 * Ownership: out owns its memory until kvb_index_batch_fini. Callbacks: none.
 */
KVB_API int kvb_index_decode(const void *payload, size_t len, kvb_wire_kind kind,
                             kvb_index_batch *out);

/**
 * @brief Free a decoded batch (safe on a zeroed or already finished batch).
 * Thread safety: touches only b. Ownership: b's memory is freed. Callbacks: none.
 */
KVB_API void kvb_index_batch_fini(kvb_index_batch *b);

/* ---- queries ------------------------------------------------------------- */

/**
 * @brief Prefix match of a request's router hashes against every matched stream
 * (LIVE, RESYNCING, LAGGING; not STALE). Walks the hashes once and stops when no
 * stream holds the prefix any longer: the cost grows with the matched length and
 * the number of holders, not with the fleet or the index.
 * @param out up to k results, sorted by score (descending), then by fewest entries,
 *        then by worker name and rank; streams with no prefix are left out.
 * @return the number of streams with a non-empty prefix (may exceed k: only k are
 *         written); -EINVAL (NULL hashes with n > 0, NULL out with k > 0).
 * Thread safety: safe from any thread, concurrently with writers and other matches.
 * Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_match(kvb_index *idx, const uint64_t *hashes, uint32_t n,
                            kvb_index_result *out, uint32_t k);

/**
 * @brief kvb_index_hashes() then kvb_index_match(). *blocks (optional) receives the
 * number of full blocks of the request.
 * @return as kvb_index_match; -ENOMEM for a very long request (> 4096 blocks are
 *         hashed into a heap buffer).
 * Thread safety: as kvb_index_match. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_match_tokens(kvb_index *idx, const uint32_t *tokens, size_t n_tokens,
                                   const char *lora_name, const char *cache_salt,
                                   kvb_index_result *out, uint32_t k, uint32_t *blocks);

/* ---- snapshots (FLEET.md section 6) --------------------------------------- */

/**
 * @brief Write the index (every stream, its state, counters, last_seq, entries and
 * engine map) to path atomically: a temporary file in the same directory, fsync,
 * rename, fsync of the directory.
 * @return 0 and *bytes (optional) = the file's size; a negative errno of the file
 *         system (nothing replaced); -ENOMEM.
 * Thread safety: safe from any thread; a coherent cut (writers wait while the state
 *                is copied; matches do not). Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_save(kvb_index *idx, const char *path, size_t *bytes);

/**
 * @brief The same snapshot into memory: *buf (allocated with malloc, free() it) and
 * *len.
 * Thread safety: as kvb_index_save. Ownership: *buf is the caller's. Callbacks: none.
 */
KVB_API int kvb_index_save_mem(kvb_index *idx, void **buf, size_t *len);

/**
 * @brief Create an index from a snapshot file. cfg may be NULL (defaults, with the
 * snapshot's block_size and seed); otherwise its block_size and seed must equal the
 * snapshot's (-EINVAL otherwise: the keys would not mean the same), and its limits
 * must admit the snapshot's streams and entries (-EINVAL).
 * @return 0; -ENOENT and other errno of the file system; -EBADMSG (corrupt,
 *         truncated, another version: nothing loaded); -EINVAL; -ENOMEM.
 * Thread safety: safe from any thread. Ownership: *out is the caller's.
 * Callbacks: none.
 */
KVB_API int kvb_index_load(const char *path, const kvb_index_config *cfg, kvb_index **out);

/**
 * @brief kvb_index_load from memory.
 * Thread safety: as kvb_index_load. Ownership: buf is only read. Callbacks: none.
 */
KVB_API int kvb_index_load_mem(const void *buf, size_t len, const kvb_index_config *cfg,
                               kvb_index **out);

/* ---- stats --------------------------------------------------------------- */

/**
 * @brief Counters of the whole index.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_stats_get(const kvb_index *idx, kvb_index_stats *out);

/**
 * @brief Prometheus text exposition of the index and of every stream (labels
 * worker="...", dp_rank="..."), like snprintf.
 * @return the length of the full text (excluding NUL); -EINVAL.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_index_metrics_text(const kvb_index *idx, char *buf, size_t cap);

/** "live", "resyncing", "lagging", "stale" ("unknown" otherwise).
 * Thread safety: pure. Ownership: none; the string is static. Callbacks: none. */
KVB_API const char *kvb_stream_state_name(kvb_stream_state s);
/** "malformed", "unknown_type", "group", "medium", "multimodal", "unknown_parent",
 * "no_tokens", "block_size", "capacity", "unknown_block", "duplicate" ("unknown"
 * otherwise). Thread safety: pure. Ownership: none; static string. Callbacks: none. */
KVB_API const char *kvb_drop_reason_name(kvb_drop_reason r);
/** "device", "host", "disk" ("unknown" otherwise).
 * Thread safety: pure. Ownership: none; static string. Callbacks: none. */
KVB_API const char *kvb_tier_name(kvb_tier t);

#ifdef __cplusplus
}
#endif

#endif /* KVBLOCK_INDEX_H */
