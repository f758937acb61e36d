/*
 * kvblock/redis.h - router replicas that share one fleet index through Redis
 * (FLEET.md section 8). Not included by kvblock.h. Built with hiredis when it
 * was found at build time (mk/redis.mk); otherwise every function exists, the
 * entry encoding works, and everything that talks to Redis returns -ENOTSUP.
 *
 * Roles.
 *  - A *relay* subscribes to the fleet (kvb_subscriber, its index given by the
 *    relay) and appends every batch it accepts, and every clear / stale / live
 *    decision, to one Redis Stream per worker endpoint, `<prefix>stream:<worker>`
 *    (prefix "kvb:" by default). Entries have the fields seq (the worker's
 *    sequence number), inc (the relay's incarnation), ep and sub (see Positions),
 *    n (the entry's ordinal in its stream) and batch (kvb_redis_entry_encode).
 *    It writes snapshots (`<prefix>snapshot`: the index of kvb_index_save_mem
 *    plus the stream ids and positions it covers) every N entries or S seconds
 *    and trims each stream (XTRIM MINID) behind the snapshot before the newest.
 *  - Every relay starts as a *standby*: it follows the streams exactly as a
 *    replica does (snapshot, then the tail) until it holds the lease
 *    `<prefix>lease` (value: its incarnation, from INCR `<prefix>incarnation`,
 *    taken with SET NX PX lease_ms semantics, renewed every renew_ms by a
 *    compare-and-pexpire script). Once it holds the lease it reads every stream
 *    to its end, so its index holds exactly what the streams say, with each
 *    stream's last sequence number as the index's last_seq; then it is ACTIVE:
 *    kvb_redis_relay_index() returns that index, and a subscriber created on it
 *    resumes every worker from last_seq + 1 by replay (its snapshot-resume rule).
 *  - A *replica* owns an index that it loads from the newest snapshot, then
 *    XREAD BLOCKs every stream from the ids the snapshot covers (and streams
 *    created later, found by SCAN), applying entries in stream order. Matches
 *    run from memory. When Redis is unreachable it keeps serving, marks every
 *    stream that is not STALE as LAGGING (still matched), reconnects with
 *    backoff and resumes from its last ids; when Redis came back with less than
 *    it had read, it reloads the snapshot and reads again.
 *
 * Positions, fencing and gaps (what makes "nothing lost, nothing doubled, no
 * stale entry" hold across relay failovers and Redis restarts).
 *  - Every entry has a position (ep, seq, sub) compared lexicographically (FLEET.md
 *    asks for "seq above the stream's last seq"; a worker's sequence goes back at a
 *    restart, so the comparison is on the position). seq is the worker's sequence
 *    number; ep grows by one at every clear (after a clear the subscriber starts a
 *    new run whose sequence numbers may be lower); sub numbers the stale / live
 *    notes that follow batch seq.
 *  - All writes go through Lua scripts (EVALSHA, EVAL when the server lost its
 *    script cache) that refuse unless the caller's incarnation holds the lease.
 *    The append script also refuses an entry whose position is not above the
 *    stream's last entry, and numbers entries n = last n + 1.
 *  - A relay that lost its lease takes a new incarnation before it may append
 *    again, and only if no other relay appended meanwhile (otherwise it is
 *    FENCED for good: the process should exit and come back as a standby). After
 *    any Redis error the relay re-reads each stream's last entry before
 *    appending again (an append that timed out may have been applied; entries
 *    Redis lost are appended again from a bounded retention of the last appended
 *    ones or, when no longer retained, replaced by a clear of their worker); a
 *    Redis server that restarted (its run_id changed) voids the lease.
 *  - Readers (replicas, standby relays) skip entries whose incarnation is older
 *    than the newest seen on that stream and entries at or below the last applied
 *    position, and check that n grows by exactly one: a hole (entries trimmed
 *    before they were read, or lost by a Redis restart) reloads the snapshot, or,
 *    where a reload cannot help, clears that worker (RESYNCING). An entry that
 *    does not decode is counted, never trusted, and clears its worker.
 *  - When the relay's bounded queue overflows (Redis slow or away) the batch is
 *    not appended: the worker's streams are cleared in the relay's index and a
 *    clear (RESYNCING) entry goes to the log before the worker's next batch, so
 *    relay and replicas drop the same worker instead of silently diverging.
 *
 * Threads: a relay and a replica each own one thread and one hiredis connection.
 * The relay's subscriber callback only encodes and queues (it never waits for
 * Redis). Every function documents its thread safety.
 *
 * Wiring (what `kvb-indexer --redis URL --role relay|replica` does; see
 * tools/kvb-redis-node.c):
 *   relay:   kvb_redis_relay_create(&cfg, &relay);
 *            kvb_redis_relay_wait_active(relay, timeout);  (a standby until the lease)
 *            scfg.index = kvb_redis_relay_index(relay);
 *            scfg.callback = kvb_redis_relay_subscriber_cb; scfg.user = relay;
 *            kvb_subscriber_create(&scfg, &sub); kvb_subscriber_add_worker(sub, ...);
 *            FENCED (on_state, or wait_active -ECANCELED): exit; restart as a standby.
 *            Shutdown: kvb_subscriber_destroy(sub), then kvb_redis_relay_destroy(relay).
 *   replica: kvb_redis_replica_create(&cfg, &rep); per request
 *            idx = kvb_redis_replica_acquire(rep); kvb_index_match(idx, ...);
 *            kvb_redis_replica_release(rep, idx).
 */
#ifndef KVBLOCK_REDIS_H
#define KVBLOCK_REDIS_H

#include "index.h"
#include "subscriber.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the entry encoding ------------------------------------------------- */

/** Version of the entry encoding written by this build (byte 4 of an entry). */
#define KVB_REDIS_ENTRY_VERSION 1
/** Largest encoded entry accepted by the decoder and produced by the encoder. */
#define KVB_REDIS_ENTRY_MAX_BYTES (64u << 20)
/** Largest number of events in one entry. */
#define KVB_REDIS_ENTRY_MAX_EVENTS (1u << 20)

/** What an entry says. */
typedef enum {
    KVB_REDIS_ENTRY_BATCH = 1, /**< a batch the relay accepted: apply it to (worker, dp_rank) */
    KVB_REDIS_ENTRY_CLEAR = 2, /**< every stream of the worker cleared, left in `state` */
    KVB_REDIS_ENTRY_STALE = 3, /**< the worker's transport is down past stale_after */
    KVB_REDIS_ENTRY_LIVE = 4,  /**< the worker's transport is up again */
    KVB_REDIS_ENTRY_DROP = 5   /**< the worker was removed from the fleet: remove its streams */
} kvb_redis_entry_kind;

/** Why a CLEAR entry was written (counted by readers). */
typedef enum {
    KVB_REDIS_CLEAR_OTHER = 0,
    KVB_REDIS_CLEAR_RESTART = 1,  /**< the worker's sequence went backwards: new ep */
    KVB_REDIS_CLEAR_GAP = 2,      /**< a gap the worker's replay could not cover */
    KVB_REDIS_CLEAR_OVERFLOW = 3, /**< the relay's queue overflowed: batches not logged */
    KVB_REDIS_CLEAR_LOST = 4,     /**< Redis lost logged entries (restart without them) */
    KVB_REDIS_CLEAR_ANOMALY = 5   /**< a sequence the relay could not place */
} kvb_redis_clear_reason;

/** One log entry, decoded or to encode. */
typedef struct kvb_redis_entry {
    kvb_redis_entry_kind kind;
    /** Position (see the file comment). */
    uint64_t ep;
    int64_t seq;
    uint32_t sub;
    /** The worker's state after the entry: BATCH and LIVE: LIVE or RESYNCING; CLEAR:
     * LIVE (a restart), RESYNCING (a gap, an overflow, lost entries) or STALE
     * (dropped after drop_after); STALE: STALE; DROP: LIVE. Never LAGGING (a
     * reader's own state). */
    kvb_stream_state state;
    kvb_redis_clear_reason reason; /**< CLEAR only */
    /** BATCH: the stream (rank) and how to create it when a reader has not seen it. */
    int64_t dp_rank;
    kvb_index_hashes_kind hashes;
    uint32_t block_size;
    double ts;        /**< BATCH: the batch's own timestamp */
    int64_t relay_ns; /**< CLOCK_REALTIME of the relay when it queued the entry (lag) */
    uint32_t n_events;
    /** BATCH: the normalized events; decoded ones point into memory the entry owns. */
    const kvb_index_event *events;
    uint32_t dropped[KVB_DROP_COUNT]; /**< BATCH: what the decoder skipped */
    void *priv_;                      /**< owned memory of a decoded entry; private */
} kvb_redis_entry;

/**
 * @brief Encode an entry (little-endian, versioned, with an XXH3-64 checksum).
 * @param buf where to write, may be NULL when cap is 0.
 * @return the encoded size; when it exceeds cap nothing is written (call again with
 *         a larger buffer). -EINVAL (NULL e, NULL events with n_events > 0, a bad
 *         kind, state, tier or event type, events on a control entry); -E2BIG (more
 *         than KVB_REDIS_ENTRY_MAX_EVENTS events or KVB_REDIS_ENTRY_MAX_BYTES).
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API long kvb_redis_entry_encode(const kvb_redis_entry *e, void *buf, size_t cap);

/**
 * @brief Strict decode of an encoded entry: every length checked against the
 * buffer before it is used, reserved bytes zero, known kind, state, tier and event
 * types, exact length, checksum. Allocates at most a small multiple of len.
 * @return 0 (free with kvb_redis_entry_fini); -EBADMSG (corrupt, truncated, another
 *         version: nothing to free); -EINVAL (NULL); -ENOMEM.
 * Thread safety: pure. Ownership: out owns its memory until kvb_redis_entry_fini.
 * Callbacks: none.
 */
KVB_API int kvb_redis_entry_decode(const void *buf, size_t len, kvb_redis_entry *out);

/**
 * @brief Free a decoded entry (safe on a zeroed or already finished entry).
 * Thread safety: touches only e. Ownership: e's memory is freed. Callbacks: none.
 */
KVB_API void kvb_redis_entry_fini(kvb_redis_entry *e);

/**
 * @brief "batch", "clear", "stale", "live", "drop" ("unknown" otherwise).
 * Thread safety: pure. Ownership: a static string. Callbacks: none.
 */
KVB_API const char *kvb_redis_entry_kind_name(kvb_redis_entry_kind k);

/**
 * @brief Whether this build of kvblock talks to Redis (hiredis found at build time).
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API bool kvb_redis_available(void);

/* ---- relay -------------------------------------------------------------- */

typedef struct kvb_redis_relay kvb_redis_relay;

typedef enum {
    KVB_REDIS_RELAY_STANDBY = 0, /**< following the log, waiting for the lease */
    KVB_REDIS_RELAY_ACTIVE = 1,  /**< holds the lease; appends */
    KVB_REDIS_RELAY_LOST = 2,    /**< lost the lease (Redis away or too slow): queues, retries */
    KVB_REDIS_RELAY_FENCED = 3,  /**< another relay appended after our lease lapsed: never
                                      appends again (the process should exit) */
    KVB_REDIS_RELAY_STOPPED = 4
} kvb_redis_relay_state;

/** Called on the relay's thread at every state change (inc = the incarnation the
 * relay holds or last held, 0 for none). Must not call kvb_redis_relay_destroy. */
typedef void (*kvb_redis_relay_state_cb)(void *user, kvb_redis_relay_state state, uint64_t inc);

typedef struct kvb_redis_relay_config {
    const char *url;    /**< redis://[[user]:password@]host[:port][/db]; required; copied */
    const char *prefix; /**< key prefix; default "kvb:"; copied */
    /** Index configuration (block_size and seed must be the fleet's: snapshots
     * written with another are refused). */
    kvb_index_config index;
    uint32_t lease_ms;           /**< lease time to live; default 2000 (FLEET.md) */
    uint32_t renew_ms;           /**< renewal period; default 500 */
    uint32_t acquire_poll_ms;    /**< how often a standby tries the lease; default 250 */
    uint32_t snapshot_entries;   /**< snapshot after N entries appended; default 100000; 0 never */
    uint32_t snapshot_ms;        /**< snapshot after S ms with appends; default 60000; 0 never */
    uint32_t queue_entries;      /**< bounded queue, entries; default 65536 */
    uint64_t queue_bytes;        /**< bounded queue, encoded bytes; default 256 MiB */
    uint32_t append_max_entries; /**< entries per append script call; default 256 */
    /** Bytes of appended entries kept to append them again when Redis comes back
     * without them (appendfsync everysec may lose about a second of acknowledged
     * writes); 0 = none (lost entries then become a clear of their worker).
     * Default 64 MiB. */
    uint64_t retain_bytes;
    uint32_t io_timeout_ms;            /**< socket timeout of every command; default 1000 */
    uint32_t snapshot_timeout_ms;      /**< socket timeout of a snapshot write; default 30000 */
    uint32_t block_ms;                 /**< standby: XREAD BLOCK; default 100 */
    uint32_t backoff_max_ms;           /**< reconnect backoff ceiling; default 2000 */
    kvb_redis_relay_state_cb on_state; /**< optional */
    void *user;
} kvb_redis_relay_config;

typedef struct kvb_redis_relay_stats {
    kvb_redis_relay_state state;
    uint64_t inc; /**< incarnation held (or last held); 0 before the first */
    bool connected;
    uint64_t queued; /**< entries waiting in the queue now */
    uint64_t queued_bytes;
    uint64_t enqueued;        /**< entries accepted by the callback */
    uint64_t appended;        /**< entries appended to Redis by this relay */
    uint64_t append_calls;    /**< append script calls */
    uint64_t refused;         /**< appends refused by the script (not holder / position) */
    uint64_t discarded;       /**< queued entries found already appended after an error */
    uint64_t overflows;       /**< batches not queued because the queue was full */
    uint64_t overflow_clears; /**< clear entries written because of overflows */
    uint64_t lost_clears;     /**< clear entries written because Redis lost entries
                                   that were no longer retained */
    uint64_t reappended;      /**< entries Redis lost, appended again from retention */
    uint64_t anomalies;       /**< subscriber sequences that could not be placed */
    uint64_t snapshots;       /**< snapshots written */
    uint64_t snapshot_bytes;  /**< size of the last one (index + meta) */
    double snapshot_seconds;  /**< time the last one took (save + write) */
    uint64_t trims;           /**< XTRIM calls */
    uint64_t trimmed;         /**< entries they removed */
    uint64_t errors;          /**< Redis errors (connection, timeout, protocol) */
    uint64_t reconnects;
    uint64_t lease_acquired; /**< times the lease was taken */
    uint64_t lease_lost;     /**< times it was lost */
    uint64_t followed;       /**< entries applied while following (standby) */
    int64_t takeover_ns;     /**< lease taken -> ACTIVE (catch-up) of the last takeover */
} kvb_redis_relay_stats;

/**
 * @brief Fill cfg with the defaults (url must still be set).
 * Thread safety: touches only cfg. Ownership: none. Callbacks: none.
 */
KVB_API void kvb_redis_relay_config_init(kvb_redis_relay_config *cfg);

/**
 * @brief Create a relay and start its thread as a standby: it connects (retrying
 * with backoff), loads the newest snapshot, follows the streams and tries to take
 * the lease. Returns at once.
 * @return 0; -EINVAL (NULL, bad URL, bad values); -ENOTSUP (built without hiredis);
 *         -ENOMEM; another negative errno (thread creation).
 * Thread safety: safe from any thread. Ownership: *out is the caller's until
 * kvb_redis_relay_destroy; strings are copied.
 * Callbacks: on_state, later, on the relay thread.
 */
KVB_API int kvb_redis_relay_create(const kvb_redis_relay_config *cfg, kvb_redis_relay **out);

/**
 * @brief Stop the thread (appending what is queued while the lease is held, at most
 * io_timeout_ms more), release the lease if held, free the relay and its index.
 * Destroy the subscriber that uses the index and callback first.
 * @return 0; -EINVAL for NULL.
 * Thread safety: no other call on relay during or after it (the subscriber callback
 * included). Ownership: relay and its index are freed. Callbacks: on_state
 * (STOPPED) before it returns.
 */
KVB_API int kvb_redis_relay_destroy(kvb_redis_relay *relay);

/**
 * @brief Wait until the relay is ACTIVE (holds the lease, its index caught up with
 * every stream).
 * @return 0; -ETIMEDOUT; -ECANCELED (FENCED or stopping); -EINVAL.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_redis_relay_wait_active(kvb_redis_relay *relay, uint32_t timeout_ms);

/**
 * @brief The relay's index once it has been ACTIVE (NULL before): hand it to
 * kvb_subscriber_create with kvb_redis_relay_subscriber_cb and the relay as user.
 * It stays the same object until kvb_redis_relay_destroy.
 * Thread safety: safe from any thread; the index is thread safe (index.h).
 * Ownership: the relay keeps it. Callbacks: none.
 */
KVB_API kvb_index *kvb_redis_relay_index(kvb_redis_relay *relay);

/**
 * @brief The subscriber callback (kvb_subscriber_cb; user = the relay): encodes the
 * batch or decision and queues it. Never blocks on Redis; when the queue is full it
 * clears the worker in the relay's index and queues a clear for the log instead
 * (counted in overflows). Ignored unless the relay is ACTIVE or LOST.
 * Thread safety: called by one subscriber thread. Ownership: batch is read only
 * during the call. Callbacks: none.
 */
KVB_API void kvb_redis_relay_subscriber_cb(void *user, kvb_sub_note note, const char *worker,
                                           int64_t seq, const kvb_index_batch *batch,
                                           kvb_stream_state state);

/**
 * @brief Log the removal of a worker (after kvb_subscriber_remove_worker with drop):
 * readers remove its streams.
 * @return 0; -EINVAL; -EAGAIN (queue full); -ENOENT (not ACTIVE or LOST).
 * Thread safety: safe from any thread once the subscriber no longer calls back for
 * that worker (after kvb_subscriber_remove_worker returned). Ownership: none.
 * Callbacks: none.
 */
KVB_API int kvb_redis_relay_worker_removed(kvb_redis_relay *relay, const char *worker);

/**
 * @brief Wait until every entry queued before the call has been appended (or
 * discarded because the relay is FENCED).
 * @return 0; -ETIMEDOUT; -EINVAL.
 * Thread safety: safe from any thread but the subscriber callback. Ownership: none.
 * Callbacks: none.
 */
KVB_API int kvb_redis_relay_flush(kvb_redis_relay *relay, uint32_t timeout_ms);

/**
 * @brief Ask for a snapshot now (written by the relay thread when ACTIVE) and wait
 * for it.
 * @return 0 and *bytes (optional); -ETIMEDOUT; -EAGAIN (not ACTIVE); -EINVAL.
 * Thread safety: safe from any thread but the subscriber callback. Ownership: none.
 * Callbacks: none.
 */
KVB_API int kvb_redis_relay_snapshot(kvb_redis_relay *relay, uint32_t timeout_ms, size_t *bytes);

/**
 * @brief Counters and state of the relay.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_redis_relay_stats_get(kvb_redis_relay *relay, kvb_redis_relay_stats *out);

/**
 * @brief "standby", "active", "lost", "fenced", "stopped" ("unknown" otherwise).
 * Thread safety: pure. Ownership: a static string. Callbacks: none.
 */
KVB_API const char *kvb_redis_relay_state_name(kvb_redis_relay_state s);

/* ---- replica ------------------------------------------------------------ */

typedef struct kvb_redis_replica kvb_redis_replica;

typedef enum {
    KVB_REDIS_REPLICA_CONNECTING = 0, /**< never synced yet */
    KVB_REDIS_REPLICA_SYNCED = 1,     /**< read every stream to its end at least once;
                                           following */
    KVB_REDIS_REPLICA_LAGGING = 2,    /**< cut off from Redis: serving, streams LAGGING */
    KVB_REDIS_REPLICA_STOPPED = 3
} kvb_redis_replica_state;

typedef struct kvb_redis_replica_config {
    const char *url;              /**< as the relay's; required; copied */
    const char *prefix;           /**< default "kvb:"; copied */
    kvb_index_config index;       /**< for the empty index and snapshot loads (the fleet's
                                       block_size and seed) */
    uint32_t block_ms;            /**< XREAD BLOCK; default 100 */
    uint32_t read_count;          /**< COUNT per stream and read; default 1000 */
    uint32_t scan_ms;             /**< discovery of new streams, head refresh; default 500 */
    uint32_t io_timeout_ms;       /**< default 1000 (a blocked read waits block_ms more) */
    uint32_t snapshot_timeout_ms; /**< socket timeout of a snapshot read; default 30000 */
    uint32_t backoff_min_ms;      /**< default 50 */
    uint32_t backoff_max_ms;      /**< default 2000 */
} kvb_redis_replica_config;

typedef struct kvb_redis_replica_stats {
    kvb_redis_replica_state state;
    bool connected;
    uint32_t streams;           /**< Redis streams followed */
    uint64_t snapshot_loads;    /**< snapshots loaded (cold start, reloads) */
    uint64_t snapshot_bytes;    /**< size of the last one */
    double snapshot_seconds;    /**< time the last load took (read + load_mem) */
    uint64_t snapshots_refused; /**< snapshots that did not decode or did not fit the
                                     index configuration (streams then read from their
                                     start instead) */
    uint64_t entries;           /**< entries read */
    uint64_t applied;           /**< entries applied */
    uint64_t duplicates;        /**< skipped: position already applied */
    uint64_t fenced;            /**< skipped: incarnation older than the stream's newest */
    uint64_t corrupt;           /**< entries that did not decode (their worker cleared) */
    uint64_t holes;             /**< n did not grow by one (trimmed or lost entries) */
    uint64_t regressions;       /**< Redis came back with less than had been read */
    uint64_t reloads;           /**< snapshot reloads after a hole or a regression */
    uint64_t errors;            /**< Redis errors */
    uint64_t reconnects;
    uint64_t lag_entries;    /**< entries behind the streams' heads (last head refresh) */
    double lag_ms;           /**< age of the oldest unread head entry (stream-id clock) */
    double apply_lag_ms;     /**< relay queue -> applied here, last entry (same-clock hosts) */
    double apply_lag_ms_max; /**< its maximum since the last stats_get */
    int64_t synced_ns;       /**< create -> first SYNCED (kvb_index_now_ns clock); 0 before */
} kvb_redis_replica_stats;

/**
 * @brief Fill cfg with the defaults (url must still be set).
 * Thread safety: touches only cfg. Ownership: none. Callbacks: none.
 */
KVB_API void kvb_redis_replica_config_init(kvb_redis_replica_config *cfg);

/**
 * @brief Create a replica with an empty index and start its thread (connect, load the
 * newest snapshot, follow every stream). Returns at once.
 * @return 0; -EINVAL; -ENOTSUP (built without hiredis); -ENOMEM; another errno.
 * Thread safety: safe from any thread. Ownership: *out is the caller's.
 * Callbacks: none.
 */
KVB_API int kvb_redis_replica_create(const kvb_redis_replica_config *cfg, kvb_redis_replica **out);

/**
 * @brief Stop the thread, free the replica and its index. Every index acquired must
 * have been released.
 * @return 0; -EINVAL; -EBUSY (an index is still acquired: nothing done).
 * Thread safety: no other call on rep during or after it. Ownership: rep is freed.
 * Callbacks: none.
 */
KVB_API int kvb_redis_replica_destroy(kvb_redis_replica *rep);

/**
 * @brief Pin the replica's current index for reading (match, streams, stats,
 * metrics). A snapshot (re)load replaces the index by a new one: it waits until
 * every pinned index is released (matches are never served from a half-loaded
 * index), so hold it only for a request's duration. Never NULL on a live replica.
 * Thread safety: safe from any thread (a reader lock; writer-preferring).
 * Ownership: release it with kvb_redis_replica_release. Callbacks: none.
 */
KVB_API kvb_index *kvb_redis_replica_acquire(kvb_redis_replica *rep);

/**
 * @brief Unpin an index returned by kvb_redis_replica_acquire.
 * Thread safety: the thread that acquired it. Ownership: idx goes back.
 * Callbacks: none.
 */
KVB_API void kvb_redis_replica_release(kvb_redis_replica *rep, kvb_index *idx);

/**
 * @brief kvb_index_match on the current index (acquire, match, release).
 * @return as kvb_index_match.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_redis_replica_match(kvb_redis_replica *rep, const uint64_t *hashes, uint32_t n,
                                    kvb_index_result *out, uint32_t k);

/**
 * @brief Wait until the replica is SYNCED (snapshot loaded, every stream read to its
 * end once since it last connected).
 * @return 0; -ETIMEDOUT; -EINVAL.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_redis_replica_wait_synced(kvb_redis_replica *rep, uint32_t timeout_ms);

/**
 * @brief Counters, state and lag of the replica.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_redis_replica_stats_get(kvb_redis_replica *rep, kvb_redis_replica_stats *out);

/**
 * @brief "connecting", "synced", "lagging", "stopped" ("unknown" otherwise).
 * Thread safety: pure. Ownership: a static string. Callbacks: none.
 */
KVB_API const char *kvb_redis_replica_state_name(kvb_redis_replica_state s);

#ifdef __cplusplus
}
#endif

#endif /* KVBLOCK_REDIS_H */
