/*
 * kvblock/events.h - KV cache events (DESIGN.md section 7). Included by kvblock.h.
 *
 * A pool configured with an event sink reports what a fleet-level KV-aware
 * router needs to index its content:
 *   STORED   a new primary was registered (duplicates never emit; a resurrection
 *            from the cache never emits: the content never left);
 *   REMOVED  cached content was evicted (by kvb_pool_allocate, or drained by
 *            kvb_pool_reset_inactive while primaries stay in the pool), or a
 *            primary was reset instead of cached (reset-on-release);
 *   CLEARED  the pool holds no content any more: its cache was drained with no
 *            primary left (kvb_pool_reset_inactive), or a pool whose cache was
 *            not empty was destroyed.
 * Replaying the stream into a set (STORED adds, REMOVED removes, CLEARED
 * empties) gives exactly the hashes the pool holds as PRIMARY or INACTIVE
 * (the "cached-or-active" set), once every event has been delivered.
 *
 * Order and numbering. The pool numbers every block-level change (one record
 * per block) under its lock, so the records have one total order that matches
 * the pool's history. The event module delivers them in that order, never
 * concurrently, never under the pool lock, coalescing consecutive records into
 * events (a chain of STORED blocks, a run of REMOVED blocks). kvb_event.seq is
 * assigned when an event is formed, under the delivery serialisation: it starts
 * at 1 and grows by exactly 1 per delivered event, so a consumer that sees a
 * jump knows it missed events. The only jump the library itself makes is after
 * records it had to drop for lack of memory (counted in kvb_event_stats.lost):
 * the next event's seq then skips one number, the signal to resynchronise.
 *
 * Who calls the sink. Deliveries are combined: the thread that completes the
 * next contiguous run of records (usually the thread that caused them, right
 * after the pool lock is dropped) delivers everything that is ready, including
 * records other threads handed over meanwhile; a thread whose records must wait
 * for an earlier one still in flight returns at once and its events are
 * delivered by that thread. With batch_delay_ms a small per-pool timer thread
 * may deliver a batch that became due. A sink may call back into the pool: the
 * records that call produces are delivered after the sink returns.
 */
#ifndef KVBLOCK_EVENTS_H
#define KVBLOCK_EVENTS_H

/* the core types and KVB_API (kvblock.h includes this header at its end, so either
 * may be included first) */
#include "../kvblock.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { KVB_EVENT_STORED = 1, KVB_EVENT_REMOVED, KVB_EVENT_CLEARED } kvb_event_type;

/** One event. Pointers are valid only during the sink call. */
typedef struct kvb_event {
    kvb_event_type type;
    uint64_t seq;              /**< per-pool, starts at 1, +1 per delivered event */
    uint32_t n;                /**< number of blocks (0 for CLEARED) */
    const kvb_hash *hashes;    /**< STORED/REMOVED: the blocks' hashes, n of them */
    const uint32_t *block_ids; /**< STORED/REMOVED: the blocks' ids, n of them */
    bool has_parent;           /**< STORED: parent of hashes[0] known (see parent) */
    /** STORED: hash of the parent of hashes[0]. Known when hashes[0] is not at
     * position 0 and the parent is content this stream reported as stored and not
     * removed, found by position and parent fragment (when several stored hashes
     * share those, as hashes built from small integers can, the parent is reported
     * unknown, never guessed); within one event each hash is the parent of the
     * next. */
    kvb_hash parent;
    uint32_t block_size; /**< tokens per block of the pool */
    /* ---- additions ---- */
    /** STORED with a tokens callback that knew every block: n * block_size token
     * ids, block after block; NULL otherwise. */
    const uint32_t *token_ids;
    /** kvb_event_config.medium ("GPU", "CPU", ...), or NULL when not set. */
    const char *medium;
} kvb_event;

typedef enum {
    KVB_EVENT_EMIT_ALL = 0,
    /** Only blocks at power-of-two positions within [pow2_min, pow2_max] (as Dynamo
     * samples for its fleet hub; both 0 means Dynamo's default range [16, 65536]);
     * CLEARED always. Position 0 is not a power of two. */
    KVB_EVENT_EMIT_POW2
} kvb_event_emit;

/** Largest medium string kept (longer ones are -EINVAL at pool create). */
#define KVB_EVENT_MEDIUM_MAX 31

typedef struct kvb_event_config {
    void *user;
    /** Receives events in sequence order, never concurrently for one pool, never with
     * the pool lock held (it may call back into the pool). Required. */
    void (*sink)(void *user, const kvb_pool *pool, const kvb_event *events, uint32_t n);
    kvb_event_emit emit;
    uint32_t pow2_min, pow2_max;
    uint32_t batch_max;      /**< deliver when this many events wait (0 = deliver at once) */
    uint32_t batch_delay_ms; /**< ... or when the oldest waiting event is this old (0 = no
                                  time bound: only batch_max, a flush or destroy deliver) */
    /* ---- additions ---- */
    /** Optional: fill out[0 .. block_size) with the token ids of a newly stored block
     * and return true, or return false when unknown. Called with no lock held, by the
     * delivering thread, before the STORED event reaches the sink. */
    bool (*tokens)(void *user, const kvb_pool *pool, kvb_hash hash, uint32_t block_id,
                   uint32_t *out);
    /** Optional storage medium label passed in every event ("GPU", "CPU"); copied at
     * create; at most KVB_EVENT_MEDIUM_MAX characters. */
    const char *medium;
    /** Most block hashes one delivery holds before it is sent early, whatever
     * batch_max says (bounds the event module's memory); 0 = default 4096. */
    uint32_t max_hashes;
} kvb_event_config;

/** Counters of a pool's event module (kvb_pool_events_stats). */
typedef struct kvb_event_stats {
    uint64_t records;            /**< block-level records received from the pool */
    uint64_t filtered;           /**< records the emission policy left out */
    uint64_t lost;               /**< records dropped for lack of memory (a seq jump follows) */
    uint64_t events;             /**< events delivered */
    uint64_t deliveries;         /**< sink calls */
    uint64_t last_seq;           /**< seq of the last event delivered (0 before the first) */
    uint32_t waiting;            /**< events formed but held back by batching */
    uint32_t unresolved_parents; /**< STORED events at position > 0 sent without a parent */
} kvb_event_stats;

/**
 * @brief Fill cfg with defaults: no sink, emit all, deliver at once.
 * Thread safety: touches only cfg.
 * Ownership: none.
 * Callbacks: none.
 */
KVB_API void kvb_event_config_init(kvb_event_config *cfg);

/**
 * @brief Deliver every event held back by batching, and every record already handed
 * over by calls that returned, now.
 * @return 0 (also for a pool without events); -EINVAL for NULL.
 * Thread safety: safe from any thread. Waits while another thread is delivering.
 *                From inside the sink it only asks for the flush, which the delivery
 *                in progress performs after the sink returns.
 * Ownership: none.
 * Callbacks: the event sink (outside any lock).
 */
KVB_API int kvb_pool_events_flush(kvb_pool *pool);

/**
 * @brief Snapshot of the pool's event counters.
 * @return 0; -EINVAL for NULL arguments; -ENOENT when the pool has no event sink.
 * Thread safety: safe from any thread (takes the event module's lock briefly).
 * Ownership: none.
 * Callbacks: none.
 */
KVB_API int kvb_pool_events_stats(kvb_pool *pool, kvb_event_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* KVBLOCK_EVENTS_H */
