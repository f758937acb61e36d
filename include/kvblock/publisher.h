/*
 * kvblock/publisher.h - publish a pool's KV events over ZeroMQ in vLLM's
 * KV-event wire format, so that vLLM-compatible KV-aware routers can index a
 * kvblock pool (DESIGN.md section 7). Not included by kvblock.h: include it
 * where needed. Built when libzmq and msgpack-c were found at build time
 * (mk/zmq.mk); otherwise every function is present and kvb_publisher_create()
 * returns -ENOTSUP.
 *
 * Wire format (vllm/distributed/kv_events.py, ZmqEventPublisher; msgspec
 * structs with tag=True, omit_defaults=True):
 *   PUB socket, one multipart message per batch:
 *     [topic, 8-byte big-endian sequence number, msgpack payload]
 *   payload  = [timestamp_seconds (float64), [event, ...], data_parallel_rank | nil]
 *   events in the configured layout (kvb_publisher_config.layout):
 *   KVB_PUBLISHER_LAYOUT_MAP (default; current vLLM: events are tagged maps):
 *     event  = {"type": "BlockStored", "block_hashes": [hash, ...],
 *               "parent_block_hash": hash | nil, "token_ids": [token_id, ...],
 *               "block_size": n, "lora_id": id | nil, "medium": medium | nil,
 *               "lora_name": nil}
 *            | {"type": "BlockRemoved", "block_hashes": [hash, ...], "medium": medium | nil}
 *            | {"type": "AllBlocksCleared"}
 *     (vLLM's optional fields extra_keys, group_idx, kv_cache_spec_* are left
 *     out, as msgspec omits them at their default None.)
 *   KVB_PUBLISHER_LAYOUT_ARRAY (older vLLM, array_like=True: tag first, then the
 *     fields in declaration order):
 *     event  = ["BlockStored", [hash, ...], parent_hash | nil, [token_id, ...],
 *               block_size, lora_id | nil, medium | nil]
 *            | ["BlockRemoved", [hash, ...], medium | nil]
 *            | ["AllBlocksCleared"]
 *   The batch stays the array [ts, events, rank] in both layouts, as every
 *   captured vLLM stream has it. hashes are unsigned 64-bit integers:
 *   kvb_hash_current(), the router projection of DESIGN.md section 4;
 *   token_ids is [] when the pool has no tokens callback. kvb_index_decode()
 *   (kvblock/index.h) reads both layouts.
 * Sequence numbers start at 0 and grow by one per batch (one batch per sink
 * call). A batch the publisher had to drop (queue full, out of memory) still
 * consumes its number, so subscribers see the gap.
 * Replay: a ROUTER socket; a client (REQ or DEALER) sends an 8-byte big-endian
 * start sequence and receives [seq, payload] for every buffered batch with
 * seq >= start, then the end marker [-1 as 8 bytes, empty payload]. Requests
 * with the REQ empty delimiter are answered with it, requests without it
 * (a bare DEALER) without it.
 *
 * Threads: the sink (kvb_publisher_sink) copies the events into one
 * allocation and pushes it on a bounded queue (a mutex held for a few stores;
 * it never waits for the network, never blocks on a full queue: the batch is
 * dropped and counted). One publisher thread owns both sockets: it encodes
 * (msgpack-c), sends, keeps the last buffer_batches payloads for replay and
 * serves replay requests. Several pools may share one publisher.
 */
#ifndef KVBLOCK_PUBLISHER_H
#define KVBLOCK_PUBLISHER_H

#include "../kvblock.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kvb_publisher kvb_publisher;

/** data_parallel_rank value meaning "none" (sent as nil). */
#define KVB_PUBLISHER_NO_RANK (-1)

/** How the PUB socket attaches to its endpoint. */
typedef enum {
    /** vLLM's rule: bind when the endpoint contains '*' or "::" or starts with
     * ipc:// or inproc://, connect otherwise. */
    KVB_PUBLISHER_AUTO = 0,
    KVB_PUBLISHER_BIND,
    KVB_PUBLISHER_CONNECT
} kvb_publisher_attach;

/** How events are laid out in the payload (see the wire format above). */
typedef enum {
    /** Tagged maps with a "type" key and vLLM's field names (current vLLM). */
    KVB_PUBLISHER_LAYOUT_MAP = 0,
    /** Tagged arrays, fields in declaration order (vLLM before maps; kvblock's
     * only layout before the layout option existed). */
    KVB_PUBLISHER_LAYOUT_ARRAY = 1
} kvb_publisher_layout;

typedef struct kvb_publisher_config {
    /** PUB endpoint, required (bound or connected: see attach). */
    const char *endpoint;
    kvb_publisher_attach attach; /**< default KVB_PUBLISHER_AUTO */
    /** ROUTER endpoint for replay requests (always bound); NULL for none. */
    const char *replay_endpoint;
    const char *topic; /**< first frame of every message; default "" */
    /** Medium for events whose pool set none ("GPU", "CPU"); NULL: nil. */
    const char *medium;
    int64_t data_parallel_rank; /**< default KVB_PUBLISHER_NO_RANK (nil) */
    int64_t lora_id;            /**< BlockStored lora_id; negative (default -1): nil */
    uint32_t queue_batches;     /**< bounded queue, in batches; default 4096 */
    uint32_t buffer_batches;    /**< replay buffer, in batches; default 10000 */
    int hwm;                    /**< PUB send high-water mark; default 100000 */
    int linger_ms;              /**< how long destroy lets queued messages leave; default 1000 */
    /** vLLM's data-parallel convention: when true and data_parallel_rank > 0, both
     * endpoints are offset by the rank as kvb_publisher_offset_endpoint() does, so one
     * configuration serves every rank (each binds its own port). Default false. */
    bool offset_by_rank;
    /* ---- additions ---- */
    /** Event layout; default KVB_PUBLISHER_LAYOUT_MAP. Another value is -EINVAL. */
    kvb_publisher_layout layout;
} kvb_publisher_config;

typedef struct kvb_publisher_stats {
    uint64_t enqueued;        /**< batches accepted by the sink */
    uint64_t dropped;         /**< batches dropped (queue full, out of memory) */
    uint64_t published;       /**< batches sent on the PUB socket */
    uint64_t events;          /**< events sent */
    uint64_t replay_requests; /**< replay requests served */
    uint64_t replayed;        /**< batches re-sent through replay */
    uint64_t bad_requests;    /**< malformed replay requests ignored */
    int64_t last_seq;         /**< sequence number of the last batch sent; -1 before */
} kvb_publisher_stats;

/**
 * @brief Fill cfg with defaults (endpoint must still be set).
 * Thread safety: touches only cfg.
 * Ownership: none.
 * Callbacks: none.
 */
KVB_API void kvb_publisher_config_init(kvb_publisher_config *cfg);

/**
 * @brief Create a publisher: bind or connect its sockets and start its thread.
 * @return 0; -EINVAL (no endpoint, a bad value); -ENOTSUP when kvblock was built
 *         without ZeroMQ; -ENOMEM; or the negative errno of a failed bind/connect
 *         (e.g. -EADDRINUSE).
 * Thread safety: safe from any thread.
 * Ownership: *out is owned by the caller until kvb_publisher_destroy; strings in
 *            cfg are copied.
 * Callbacks: none.
 */
KVB_API int kvb_publisher_create(const kvb_publisher_config *cfg, kvb_publisher **out);

/**
 * @brief Send what is queued (waiting at most linger_ms for it to leave), stop the
 * thread, close the sockets, free everything.
 * @return 0; -EINVAL for NULL.
 * Thread safety: no sink call may run or start during or after the call: destroy
 *                the pools that use it first (their CLEARED is then published).
 * Ownership: pub is freed.
 * Callbacks: none.
 */
KVB_API int kvb_publisher_destroy(kvb_publisher *pub);

/**
 * @brief The event sink: set kvb_event_config.sink to it and .user to the publisher
 * (or call kvb_publisher_event_config). Copies the events and queues one batch.
 * Thread safety: safe from any thread, for any number of pools; never blocks on the
 *                network or on a full queue (the batch is dropped and counted).
 * Ownership: none (the events are copied).
 * Callbacks: none.
 */
KVB_API void kvb_publisher_sink(void *user, const kvb_pool *pool, const kvb_event *events,
                                uint32_t n);

/**
 * @brief Point cfg's sink and user at this publisher (other fields untouched).
 * Thread safety: touches only cfg.
 * Ownership: none; pub must outlive the pools created with cfg.
 * Callbacks: none.
 */
KVB_API void kvb_publisher_event_config(kvb_publisher *pub, kvb_event_config *cfg);

/**
 * @brief Wait until every batch queued before the call has been sent.
 * @return 0; -ETIMEDOUT after timeout_ms; -EINVAL.
 * Thread safety: safe from any thread (not from the publisher's own thread).
 * Ownership: none.
 * Callbacks: none.
 */
KVB_API int kvb_publisher_flush(kvb_publisher *pub, uint32_t timeout_ms);

/**
 * @brief Snapshot of the publisher's counters.
 * @return 0; -EINVAL.
 * Thread safety: safe from any thread.
 * Ownership: none.
 * Callbacks: none.
 */
KVB_API int kvb_publisher_stats_get(kvb_publisher *pub, kvb_publisher_stats *out);

/**
 * @brief The endpoint a data-parallel rank uses, by vLLM's convention (its
 * ZmqEventPublisher.offset_endpoint_port): rank 0 keeps the endpoint;
 * "tcp://host:PORT" becomes "tcp://host:PORT+rank"; "inproc://name" and
 * "ipc://path" get "_dp<rank>" appended. A router computes the endpoints of the
 * ranks it subscribes to with the same call.
 * @return the length of the result written to out (NUL-terminated, out_size
 *         bytes at most); -EINVAL (NULL endpoint or out, negative rank, another
 *         scheme, a tcp endpoint without a numeric port, or PORT+rank > 65535);
 *         -ENOSPC when out_size is too small (out untouched).
 * Thread safety: pure. Ownership: none. Callbacks: none. Available without ZeroMQ.
 */
KVB_API int kvb_publisher_offset_endpoint(const char *endpoint, int64_t rank, char *out,
                                          size_t out_size);

/**
 * @brief Whether this build of kvblock has the ZeroMQ publisher.
 * Thread safety: pure. Ownership: none. Callbacks: none.
 */
KVB_API bool kvb_publisher_available(void);

#ifdef __cplusplus
}
#endif

#endif /* KVBLOCK_PUBLISHER_H */
