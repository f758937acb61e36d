/*
 * kvblock/events.h - KV cache events (DESIGN.md section 7). Included by kvblock.h.
 *
 * A pool configured with an event sink reports what a fleet-level KV-aware
 * router needs to index its content:
 *   STORED   a new primary was registered (duplicates never emit);
 *   REMOVED  cached content was evicted, or a primary was reset (reset-on-release);
 *   CLEARED  the whole cache was drained (kvb_pool_reset_inactive, pool destroy).
 * Every event carries a per-pool sequence number assigned under the pool lock,
 * so the stream has one total order that matches the pool's history.
 */
#ifndef KVBLOCK_EVENTS_H
#define KVBLOCK_EVENTS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { KVB_EVENT_STORED = 1, KVB_EVENT_REMOVED, KVB_EVENT_CLEARED } kvb_event_type;

/** One event. Pointers are valid only during the sink call. */
typedef struct kvb_event {
    kvb_event_type type;
    uint64_t seq;              /**< per-pool, starts at 1, +1 per event */
    uint32_t n;                /**< number of hashes (0 for CLEARED) */
    const kvb_hash *hashes;    /**< STORED/REMOVED: the blocks' hashes */
    const uint32_t *block_ids; /**< STORED/REMOVED: the blocks' ids */
    bool has_parent;           /**< STORED: parent of hashes[0] known */
    kvb_hash parent;           /**< STORED: hash of the parent of hashes[0] */
    uint32_t block_size;       /**< tokens per block of the pool */
} kvb_event;

typedef enum {
    KVB_EVENT_EMIT_ALL = 0,
    /** Only blocks at power-of-two positions within [pow2_min, pow2_max] (as Dynamo
     * samples for its fleet hub); CLEARED always. */
    KVB_EVENT_EMIT_POW2
} kvb_event_emit;

typedef struct kvb_event_config {
    void *user;
    /** Receives events in sequence order, never concurrently for one pool, never with
     * the pool lock held (it may call back into the pool). */
    void (*sink)(void *user, const kvb_pool *pool, const kvb_event *events, uint32_t n);
    kvb_event_emit emit;
    uint32_t pow2_min, pow2_max;
    uint32_t batch_max;      /**< deliver when this many events wait (0 = deliver at once) */
    uint32_t batch_delay_ms; /**< ... or when the oldest waiting event is this old */
} kvb_event_config;

#ifdef __cplusplus
}
#endif

#endif /* KVBLOCK_EVENTS_H */
