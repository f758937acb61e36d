/*
 * kvblock/subscriber.h - feed a kvb_index from the fleet's ZeroMQ KV-event
 * streams (FLEET.md section 4). Not included by kvblock.h. Built when libzmq and
 * msgpack-c were found at build time (mk/zmq.mk); otherwise every function
 * exists and kvb_subscriber_create() returns -ENOTSUP.
 *
 * One subscriber owns one thread and every socket (ZeroMQ sockets are not thread
 * safe): per worker a SUB socket on the worker's PUB endpoint, a socket monitor
 * (connected / disconnected) and, when the worker has one, a DEALER socket on its
 * replay (ROUTER) endpoint. ZMTP heartbeats (ZMQ_HEARTBEAT_IVL / _TIMEOUT) detect
 * peers that hang without closing the connection.
 *
 * Per worker endpoint (one sequence space; its data-parallel ranks ride inside
 * the batches and each (worker, rank) is a stream of the index, created on first
 * sight with the worker's kind and block size):
 *  - next expected sequence number: 0 for a new subscriber, or the highest
 *    last_seq of the worker's streams + 1 when the index already has them (after
 *    a snapshot load), so batches missed while joining are replayed;
 *  - seq == expected: decode, apply, expected = seq + 1;
 *  - seq > expected (gap): request [expected, ...) on the replay socket
 *    (["", 8-byte big-endian start] from a DEALER; replies ["", seq, payload] then
 *    the end marker seq -1), apply the replayed batches below seq in order, then
 *    the triggering batch; a replayed batch below expected is a duplicate. When
 *    replay cannot cover the gap (no replay endpoint, timeout, the buffer no longer
 *    holds `expected`), every stream of the worker is cleared and marked
 *    RESYNCING; it becomes LIVE again with the next batch applied in order;
 *  - seq < expected on the live stream (or the first message of a publisher
 *    after a reconnect whose sequence went backwards): a restart: clear the
 *    worker, then apply (read from 0 by replay when there is a replay endpoint,
 *    so what the new incarnation published before it was noticed is not lost).
 *    A message below expected whose payload is byte for byte the one applied
 *    under that number (the last 256 are remembered), or, past those, one that
 *    moves forward on a connection whose catch-up replay proved the publisher's
 *    incarnation, is a duplicate instead (KVB_DROP_DUPLICATE): a PUB message
 *    that a catch-up replay already gave;
 *  - AllBlocksCleared: handled by kvb_index_apply (the rank's stream is cleared);
 *  - a payload that does not decode: dropped and counted (KVB_DROP_MALFORMED);
 *    the sequence still advances (the batch was received, it is just unusable).
 * Liveness: a worker whose connection is down is reported to the index
 * (kvb_index_stream_heard) and kvb_index_tick runs every tick_ms: STALE after
 * stale_after_s, entries freed after drop_after_s (the index's configuration).
 * Connection up (ZMQ_EVENT_HANDSHAKE_SUCCEEDED): a catch-up replay from the
 * expected sequence at once, not at the worker's next batch (an idle engine may
 * send none). On a reconnect it starts at expected - 1 and checks that the
 * publisher still holds that batch with the payload applied: another payload,
 * or nothing at or above it, is a restart; a buffer that starts above it proves
 * nothing: the worker is cleared (RESYNCING). A reconnect without a replay
 * endpoint, or whose catch-up fails, clears the worker (RESYNCING): its state
 * is unknown, and the next batch starts a new run (expected_seq -1 until then).
 * A connection that delivers nothing for 1 s after its catch-up gets a second
 * one (a batch the PUB socket sent before the subscription reached it).
 * kvb_subscriber_remove_worker without drop reports the worker's streams
 * disconnected, so the liveness timeouts retire them.
 */
#ifndef KVBLOCK_SUBSCRIBER_H
#define KVBLOCK_SUBSCRIBER_H

#include "index.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kvb_subscriber kvb_subscriber;

typedef struct kvb_subscriber_worker {
    const char *name;            /**< worker name (KVB_INDEX_NAME_MAX-1 bytes at most); copied */
    const char *endpoint;        /**< PUB endpoint to connect the SUB socket to; copied */
    const char *replay_endpoint; /**< ROUTER endpoint for replay; NULL for none; copied */
    kvb_wire_kind kind;          /**< default KVB_WIRE_VLLM (0) */
    uint32_t block_size;         /**< engine block size; 0 = the index's */
    const char *topic;           /**< subscription prefix; NULL or "" for every topic */
} kvb_subscriber_worker;

/** Called on the subscriber's thread after every batch the subscriber accepted and
 * applied (replayed ones included), and after every clear it decided. A relay uses
 * it to forward the stream (FLEET.md section 8). Must not call kvb_subscriber_*
 * functions of the same subscriber. */
typedef enum {
    KVB_SUB_BATCH = 0, /**< batch applied: seq, dp_rank, batch */
    KVB_SUB_CLEAR = 1, /**< every stream of the worker cleared: state says why
                            (LIVE for a restart, RESYNCING for an unreplayable gap) */
    KVB_SUB_STALE = 2, /**< the worker went stale (transport down past stale_after) */
    KVB_SUB_LIVE = 3   /**< the worker's transport is up again */
} kvb_sub_note;

typedef void (*kvb_subscriber_cb)(void *user, kvb_sub_note note, const char *worker, int64_t seq,
                                  const kvb_index_batch *batch, kvb_stream_state state);

typedef struct kvb_subscriber_config {
    kvb_index *index;            /**< required; must outlive the subscriber */
    uint32_t replay_timeout_ms;  /**< default 2000 */
    uint32_t heartbeat_ivl_ms;   /**< ZMTP heartbeat interval; default 1000 (timeout 3x) */
    uint32_t tick_ms;            /**< liveness tick; default 100 */
    int64_t max_message_bytes;   /**< ZMQ_MAXMSGSIZE of every socket; default 64 MiB */
    uint32_t max_replay_batches; /**< batches accepted from one replay; default 100000 */
    int reconnect_ivl_ms;        /**< ZMQ_RECONNECT_IVL; default 100 */
    int reconnect_ivl_max_ms;    /**< ZMQ_RECONNECT_IVL_MAX; default 5000 */
    kvb_subscriber_cb callback;  /**< optional */
    void *user;
} kvb_subscriber_config;

typedef struct kvb_subscriber_worker_info {
    char name[KVB_INDEX_NAME_MAX];
    bool connected;        /**< the SUB socket's connection is up */
    bool heard;            /**< a batch arrived, a catch-up replay was answered, or the
                                worker was marked (stale) */
    int64_t expected_seq;  /**< next expected sequence number; -1: any (after a clear) */
    uint64_t messages;     /**< messages received on the SUB socket */
    uint64_t bad_messages; /**< messages that were not [topic, 8-byte seq, payload] */
    /** gaps seen on the SUB socket; replay requests sent (gaps, catch-ups); replays
     * that could not cover what they were for; restarts detected */
    uint64_t gaps, replays, replay_failures, restarts;
    /* ---- additions ---- */
    uint64_t bad_payloads; /**< payloads that did not decode (also KVB_DROP_MALFORMED on
                                the worker's first stream, if any), and batches whose rank
                                got no stream (index full, over 256 ranks per worker) */
} kvb_subscriber_worker_info;

/**
 * @brief Fill cfg with defaults (index must still be set).
 * Thread safety: touches only cfg. Ownership: none. Callbacks: none.
 */
KVB_API void kvb_subscriber_config_init(kvb_subscriber_config *cfg);

/**
 * @brief Create a subscriber and start its thread (no workers yet).
 * @return 0; -EINVAL; -ENOTSUP (built without ZeroMQ); -ENOMEM; another negative errno.
 * Thread safety: safe from any thread. Ownership: *out is the caller's.
 * Callbacks: none during the call (the callback runs on the subscriber thread).
 */
KVB_API int kvb_subscriber_create(const kvb_subscriber_config *cfg, kvb_subscriber **out);

/**
 * @brief Stop the thread, close every socket, free the subscriber. The index and its
 * streams are left as they are.
 * Thread safety: no other call on sub during or after it; not from the callback.
 * Ownership: sub is freed. Callbacks: none after it returns.
 */
KVB_API int kvb_subscriber_destroy(kvb_subscriber *sub);

/**
 * @brief Subscribe to a worker. Returns once the sockets are connecting.
 * @return 0; -EEXIST (a worker with that name); -EINVAL (bad name or endpoint);
 *         -ENOMEM; the negative errno of a failed connect.
 * Thread safety: safe from any thread but the callback. Ownership: strings copied.
 * Callbacks: none during the call.
 */
KVB_API int kvb_subscriber_add_worker(kvb_subscriber *sub, const kvb_subscriber_worker *w);

/**
 * @brief Unsubscribe from a worker; with drop = true also remove its streams from the
 * index (kvb_index_worker_remove).
 * @return 0; -ENOENT.
 * Thread safety: safe from any thread but the callback. Ownership: none.
 * Callbacks: none.
 */
KVB_API int kvb_subscriber_remove_worker(kvb_subscriber *sub, const char *name, bool drop);

/**
 * @brief Information about one worker.
 * @return 0; -ENOENT; -EINVAL.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API int kvb_subscriber_worker_info_get(kvb_subscriber *sub, const char *name,
                                           kvb_subscriber_worker_info *out);

/**
 * @brief Whether every worker has been heard from (a batch applied, a catch-up replay
 * answered) or marked (stale): the daemon's /healthz.
 * Thread safety: safe from any thread. Ownership: none. Callbacks: none.
 */
KVB_API bool kvb_subscriber_ready(kvb_subscriber *sub);

/**
 * @brief Wait until the subscriber thread has processed everything that had arrived
 * on its sockets when the call was made (tests, benchmarks).
 * @return 0; -ETIMEDOUT.
 * Thread safety: safe from any thread but the callback. Ownership: none.
 * Callbacks: none.
 */
KVB_API int kvb_subscriber_sync(kvb_subscriber *sub, uint32_t timeout_ms);

/** Whether this build of kvblock has the subscriber (ZeroMQ and msgpack-c).
 * Thread safety: pure. Ownership: none. Callbacks: none. */
KVB_API bool kvb_subscriber_available(void);

#ifdef __cplusplus
}
#endif

#endif /* KVBLOCK_SUBSCRIBER_H */
